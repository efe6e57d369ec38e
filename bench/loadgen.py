"""One load-generator process (uvloop, grpc.aio), driven by bench.harness.Bench.run_load.

Protocol on stdin/stdout (one line each):
  <- config JSON          (see bench.driver.Driver.cfgs)
  -> READY                (channels connected)
  <- GO <time.monotonic() of the start>
  -> result JSON          (counts, latencies in microseconds, CPU seconds)

Kinds (config `kind`): "transfer" (LedgerService.Transfer: custodial -> random merchant, or
an `m2m_fraction` merchant -> merchant), "split" (SplitService.Split), "batch" (SplitBatch of
`batch_size` orders), "stream" (SplitStream). Orders match the B2B rule set: a
`gov_fraction` of them carry the "government purchase" tag (top-slice rule), amounts from
1,000.00 to 900,000.00 CNY with customer_type enterprise. Every order has a unique order id
and every request a unique request id.

Closed loop: `concurrency` callers, each sends its next request as soon as the previous one
is answered, round-robin over `channels` channels. Only calls answered inside the
measurement window [start + warmup, start + warmup + duration] count; callers stop
sending at its end.

Open loop: request i is due at start + i / rate, whatever happened to earlier ones; its
latency is measured from that scheduled time, so queueing anywhere (client loop, network,
server) shows up in the figures instead of lowering the send rate. Requests due inside the
measurement window count.

For SplitBatch one call is one batch; a call whose outcomes are not all splits counts as a
failed call (CLIENT_BatchItemFailed) with the first item error as its sample.

SplitStream: `concurrency` bidirectional streams (round-robin over the channels); every
order is one unit (one latency, one count). Closed loop: each stream keeps `stream_window`
orders in flight and sends the next when an outcome comes back; latency from the write to
the outcome. Open loop: order i is due at start + i / rate on stream i mod `concurrency`
(each stream has one writer task), latency from its scheduled time; more than
`outstanding_max` orders without an outcome count as CLIENT_OVERFLOW. An outcome that is
an error counts under ITEM_<reason>; a broken stream under its status code.

The same code drives the real server and the echo baseline: same method paths, same
request messages, same metadata.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import resource
import sys
import time
from collections import Counter

import grpc

from clearing.v1 import ledger_pb2 as pb
from clearing.v1 import split_pb2 as spb

ERROR_SAMPLES_MAX = 5


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def window_cpu_s(warm_end: float, end: float) -> float:
    """This process's CPU seconds over the measurement window [warm_end, end] (perf_counter's
    clock): sleeps to its start, then to its end. Run it as a task beside the load."""
    perf = time.perf_counter
    await asyncio.sleep(max(0.0, warm_end - perf()))
    start = _cpu_s()
    await asyncio.sleep(max(0.0, end - perf()))
    return _cpu_s() - start


async def due_times(start: float, end: float, rate: float):
    """The open loop's clock: yields (t_sched, now) for request i = 0, 1, ... due at
    t_sched = start + i / rate, every one before `end`, each once its time has come (after a
    late wake-up, all that are due at once, in order, with the same `now`). now - t_sched is
    how late it goes out; the consumer must not await between two of them."""
    interval = 1.0 / rate
    perf = time.perf_counter
    n = 0
    while True:
        t_sched = start + n * interval
        if t_sched >= end:
            return
        now = perf()
        if t_sched > now:
            await asyncio.sleep(t_sched - now)
            now = perf()
        while t_sched <= now and t_sched < end:
            yield t_sched, now
            n += 1
            t_sched = start + n * interval


class Requests:
    """Transfer requests with unique request ids: custodial -> random merchant, or (a
    fraction) merchant -> merchant."""

    def __init__(self, cfg: dict) -> None:
        self._rng = random.Random(cfg["seed"])
        self._prefix = cfg["rid_prefix"]
        self._custodial = cfg["custodial_id"]
        self._merchants = cfg["merchant_ids"]
        self._m2m = cfg["m2m_fraction"]
        self._currency = cfg["currency"]
        self._n = 0

    def next(self) -> pb.TransferRequest:
        self._n += 1
        rng = self._rng
        credit = rng.choice(self._merchants)
        debit = self._custodial
        if self._m2m and rng.random() < self._m2m:
            debit = rng.choice(self._merchants)
            while debit == credit:
                debit = rng.choice(self._merchants)
        return pb.TransferRequest(
            request_id=f"{self._prefix}{self._n:012x}", debit_account_id=debit,
            credit_account_id=credit, amount_minor=rng.randint(1, 10_000),
            currency_code=self._currency, mode=pb.TRANSFER_MODE_IMMEDIATE)


class Recorder:
    def __init__(self) -> None:
        self.codes: Counter[str] = Counter()
        self.lat_us: list[int] = []
        self.error_samples: list[str] = []
        self.resp_bytes = 0

    def ok(self, latency_s: float) -> None:
        self.codes["OK"] += 1
        self.lat_us.append(int(latency_s * 1e6))

    def error(self, code: str, detail: str) -> None:
        self.codes[code] += 1
        if len(self.error_samples) < ERROR_SAMPLES_MAX:
            self.error_samples.append(f"{code}: {detail[:300]}")


async def _call(call, request, metadata, timeout_s: float) -> tuple[str, str, object]:
    try:
        response = await call(request, metadata=metadata, timeout=timeout_s)
        return "OK", "", response
    except grpc.aio.AioRpcError as err:
        return err.code().name, err.details() or "", None
    except Exception as exc:  # noqa: BLE001 - counted, the run is then reported failed
        return f"CLIENT_{type(exc).__name__}", str(exc), None


class SplitRequests:
    """Split, SplitBatch or SplitStream requests (config `kind`) of B2B orders, each with a
    unique order id and request id."""

    def __init__(self, cfg: dict) -> None:
        self._rng = random.Random(cfg["seed"])
        self._prefix = cfg["rid_prefix"]
        self._kind = cfg["kind"]
        self._batch_size = cfg.get("batch_size", 1)
        self._rule_set = cfg["rule_set_name"]
        self._gov = cfg["gov_fraction"]
        self._currency = cfg["currency"]
        self._n = 0  # calls made
        self._orders = 0

    def _one(self) -> spb.SplitRequest:
        self._orders += 1
        rng = self._rng
        tag = f"{self._prefix}{self._orders:010x}"
        tags = ["enterprise purchase"]
        if rng.random() < self._gov:
            tags.append("government purchase")
        return spb.SplitRequest(request_id="r" + tag, order=spb.Order(
            order_id="o" + tag, amount_minor=rng.randint(100_000, 90_000_000),
            currency_code=self._currency, channel="UNIONPAY", tags=tags,
            attributes={"customer_type": "enterprise"}, rule_set_name=self._rule_set))

    def next(self):
        self._n += 1
        if self._kind == "split":
            return self._one()
        if self._kind == "stream":
            one = self._one()
            return spb.SplitStreamRequest(request_id=one.request_id, order=one.order)
        return spb.SplitBatchRequest(request_id=f"b{self._prefix}{self._n:08x}",
                                    requests=[self._one() for _ in range(self._batch_size)])


class BatchItemFailed(Exception):
    """A SplitBatch answered OK with an outcome that is not a split."""


def _checked(call):
    async def wrapped(request, *, metadata, timeout):
        response = await call(request, metadata=metadata, timeout=timeout)
        for o in response.outcomes:
            if o.WhichOneof("result") != "split":
                raise BatchItemFailed(f"{o.error.reason}: {o.error.message}")
        if len(response.outcomes) != len(request.requests):
            raise BatchItemFailed(f"{len(response.outcomes)} outcomes for "
                                  f"{len(request.requests)} orders")
        return response
    return wrapped


async def stream_loop(cfg: dict, channels: list, start: float) -> dict:
    """SplitStream, closed or open loop (see the module's docstring)."""
    reqs = SplitRequests(cfg)
    rec = Recorder()
    warmup_codes: Counter[str] = Counter()
    is_open = cfg["mode"] == "open"
    warm_end = start + cfg["warmup_s"]
    end = warm_end + cfg["duration_s"]
    metadata = (("authorization", f"Bearer {cfg['key']}"),)
    # The stream lives through the whole phase; its deadline is the phase plus one call's.
    stream_timeout = end - time.perf_counter() + cfg["call_timeout_s"]
    n_streams = cfg["concurrency"]
    window = cfg.get("stream_window", 100)
    outstanding_max = cfg.get("outstanding_max", 20_000)
    perf = time.perf_counter
    sent_at: dict[str, tuple[float, bool]] = {}  # request id -> (clock start, measured)
    stats = {"late_max": 0.0, "overflow": 0, "peak": 0, "sent": 0}
    queues: list[asyncio.Queue] = [asyncio.Queue() for _ in range(n_streams)]

    def record(outcome, t1: float) -> None:
        t0, measured = sent_at.pop(outcome.request_id, (None, False))
        code = "OK" if outcome.WhichOneof("result") == "split" else \
            f"ITEM_{outcome.error.reason or 'ERROR'}"
        if t0 is None:
            code = "CLIENT_UnknownOutcome"
            measured = warm_end <= t1 <= end
        elif not is_open:
            measured = warm_end <= t1 <= end
        if not measured:
            if code != "OK":
                warmup_codes[code] += 1
            return
        if code == "OK":
            rec.ok(t1 - t0)
            if not rec.resp_bytes:
                rec.resp_bytes = outcome.ByteSize()
        else:
            rec.error(code, f"{outcome.order_id}: {outcome.error.message}")

    async def one_stream(i: int) -> None:
        ch = channels[i % len(channels)]
        call = ch.stream_stream(
            cfg["method"], request_serializer=spb.SplitStreamRequest.SerializeToString,
            response_deserializer=spb.SplitStreamResponse.FromString)(
            metadata=metadata, timeout=stream_timeout)
        slots = asyncio.Semaphore(window)

        async def send_closed() -> None:
            while True:
                await slots.acquire()
                t0 = perf()
                if t0 >= end:
                    break
                req = reqs.next()
                sent_at[req.request_id] = (t0, False)
                stats["sent"] += 1
                await call.write(req)
            await call.done_writing()

        async def send_open() -> None:
            q = queues[i]
            while (item := await q.get()) is not None:
                t_sched, req = item
                await call.write(req)
            await call.done_writing()

        sender = asyncio.create_task(send_open() if is_open else send_closed())
        try:
            async for response in call:
                record(response.outcome, perf())
                slots.release()
            await sender
        except grpc.aio.AioRpcError as err:  # a broken stream fails the phase, whenever
            rec.error(err.code().name, err.details() or "")
        except Exception as exc:  # noqa: BLE001 - counted, the run is then reported failed
            rec.error(f"CLIENT_{type(exc).__name__}", str(exc))
        finally:
            sender.cancel()

    async def schedule() -> None:
        """Open loop: put order i on stream i mod n at start + i / rate."""
        n = 0
        async for t_sched, now in due_times(start, end, cfg["rate"]):
            measured = t_sched >= warm_end
            if measured:
                stats["late_max"] = max(stats["late_max"], now - t_sched)
            if len(sent_at) >= outstanding_max:
                stats["overflow"] += 1
                if measured:
                    rec.error("CLIENT_OVERFLOW",
                              f"more than {outstanding_max} orders without an outcome")
            else:
                req = reqs.next()
                sent_at[req.request_id] = (t_sched, measured)
                queues[n % n_streams].put_nowait((t_sched, req))
                stats["peak"] = max(stats["peak"], len(sent_at))
            n += 1
        stats["sent"] = n
        for q in queues:
            q.put_nowait(None)

    await asyncio.sleep(max(0.0, start - perf()))
    sampler = asyncio.ensure_future(window_cpu_s(warm_end, end))
    jobs = [one_stream(i) for i in range(n_streams)]
    if is_open:
        jobs.append(schedule())
    await asyncio.gather(*jobs)
    cpu_s = await sampler
    # Orders sent in the window without an outcome: lost with a broken stream.
    lost = sum(1 for _, measured in sent_at.values() if measured or not is_open)
    if lost:
        rec.codes["CLIENT_NoOutcome"] += lost
    out = {"codes": dict(rec.codes), "lat_us": rec.lat_us, "error_samples": rec.error_samples,
           "warmup_codes": dict(warmup_codes), "resp_bytes": rec.resp_bytes,
           "sent": stats["sent"], "window_s": cfg["duration_s"], "cpu_s": cpu_s}
    if is_open:
        out.update({"late_max_ms": stats["late_max"] * 1e3, "overflow": stats["overflow"],
                    "outstanding_peak": stats["peak"]})
    return out


async def closed_loop(cfg: dict, calls: list, start: float,
                      requests: type = Requests) -> dict:
    """`requests` builds each call's request (Transfers here; the split bench passes its own)."""
    reqs = requests(cfg)
    rec = Recorder()
    warm_end = start + cfg["warmup_s"]
    end = warm_end + cfg["duration_s"]
    metadata = (("authorization", f"Bearer {cfg['key']}"),)
    timeout_s = cfg["call_timeout_s"]
    warmup_codes: Counter[str] = Counter()
    perf = time.perf_counter

    async def caller(i: int) -> None:
        call = calls[i % len(calls)]
        while True:
            t0 = perf()
            if t0 >= end:
                return
            code, detail, response = await _call(call, reqs.next(), metadata, timeout_s)
            t1 = perf()
            if warm_end <= t1 <= end:
                if code == "OK":
                    rec.ok(t1 - t0)
                    if not rec.resp_bytes:
                        rec.resp_bytes = response.ByteSize()
                else:
                    rec.error(code, detail)
            elif code != "OK":
                warmup_codes[code] += 1

    await asyncio.sleep(max(0.0, start - perf()))
    sampler = asyncio.ensure_future(window_cpu_s(warm_end, end))
    await asyncio.gather(*(caller(i) for i in range(cfg["concurrency"])))
    return {"codes": dict(rec.codes), "lat_us": rec.lat_us, "error_samples": rec.error_samples,
            "warmup_codes": dict(warmup_codes), "resp_bytes": rec.resp_bytes,
            "sent": reqs._n, "window_s": cfg["duration_s"], "cpu_s": await sampler}


async def open_loop(cfg: dict, calls: list, start: float,
                    requests: type = Requests) -> dict:
    """`requests` builds each call's request, as for closed_loop."""
    reqs = requests(cfg)
    rec = Recorder()
    warm_end = start + cfg["warmup_s"]
    end = warm_end + cfg["duration_s"]
    metadata = (("authorization", f"Bearer {cfg['key']}"),)
    timeout_s = cfg["call_timeout_s"]
    outstanding_max = cfg["outstanding_max"]
    perf = time.perf_counter
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task] = set()
    late_max = 0.0
    overflow = 0
    outstanding_peak = 0
    warmup_codes: Counter[str] = Counter()

    async def one(t_sched: float, call, measured: bool) -> None:
        code, detail, response = await _call(call, reqs.next(), metadata, timeout_s)
        if not measured:
            if code != "OK":
                warmup_codes[code] += 1
            return
        if code == "OK":
            rec.ok(perf() - t_sched)
            if not rec.resp_bytes:
                rec.resp_bytes = response.ByteSize()
        else:
            rec.error(code, detail)

    cpu_start = None
    n = 0
    n_calls = len(calls)
    async for t_sched, now in due_times(start, end, cfg["rate"]):
        measured = t_sched >= warm_end
        if measured:
            if cpu_start is None:
                cpu_start = _cpu_s()
            late_max = max(late_max, now - t_sched)
        if len(tasks) >= outstanding_max:
            overflow += 1
            if measured:
                rec.error("CLIENT_OVERFLOW", f"more than {outstanding_max} calls in flight")
        else:
            task = loop.create_task(one(t_sched, calls[n % n_calls], measured))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            outstanding_peak = max(outstanding_peak, len(tasks))
        n += 1
    cpu_end = _cpu_s()
    if tasks:
        await asyncio.wait(tasks, timeout=timeout_s + 5)
    return {"codes": dict(rec.codes), "lat_us": rec.lat_us, "error_samples": rec.error_samples,
            "warmup_codes": dict(warmup_codes), "resp_bytes": rec.resp_bytes,
            "sent": n, "window_s": cfg["duration_s"],
            "cpu_s": cpu_end - (cpu_start if cpu_start is not None else cpu_end),
            "late_max_ms": late_max * 1e3, "overflow": overflow,
            "outstanding_peak": outstanding_peak}


CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1), ("grpc.keepalive_time_ms", 60_000),
                   ("grpc.max_receive_message_length", 16 * 1024 * 1024),
                   ("grpc.max_send_message_length", 16 * 1024 * 1024)]
UNARY = {"transfer": (Requests, pb.TransferRequest, pb.TransferResponse),
         "split": (SplitRequests, spb.SplitRequest, spb.SplitResponse),
         "batch": (SplitRequests, spb.SplitBatchRequest, spb.SplitBatchResponse)}


def _channel(cfg: dict) -> grpc.aio.Channel:
    """A channel to the target: TLS trusting cfg["ca"] (a PEM file) when set."""
    if not cfg.get("ca"):
        return grpc.aio.insecure_channel(cfg["target"], options=CHANNEL_OPTIONS)
    with open(cfg["ca"], "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    return grpc.aio.secure_channel(cfg["target"], creds, options=CHANNEL_OPTIONS)


async def main_async(cfg: dict) -> dict:
    channels = [_channel(cfg) for _ in range(cfg["channels"])]
    try:
        for ch in channels:
            await asyncio.wait_for(ch.channel_ready(), timeout=cfg["connect_timeout_s"])
        kind = cfg.get("kind", "transfer")
        if kind == "stream":
            start = await ready_then_go()
            return await stream_loop(cfg, channels, start)
        requests, req_type, resp_type = UNARY[kind]
        calls = [ch.unary_unary(cfg["method"], request_serializer=req_type.SerializeToString,
                                response_deserializer=resp_type.FromString) for ch in channels]
        if kind == "batch":
            calls = [_checked(c) for c in calls]
        start = await ready_then_go()
        loop = open_loop if cfg["mode"] == "open" else closed_loop
        return await loop(cfg, calls, start, requests=requests)
    finally:
        for ch in channels:
            await ch.close()


async def ready_then_go() -> float:
    """Say READY, wait for `GO <monotonic start>`; returns the start on perf_counter's clock.

    Long-lived objects (modules, channels) are moved out of the collector's way first: a full
    collection of them takes tens of ms and would show up as client latency."""
    gc.collect()
    gc.freeze()
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if not line.startswith("GO "):
        raise SystemExit(f"{sys.argv[0]}: expected GO, got {line!r}")
    return time.perf_counter() + (float(line.split()[1]) - time.monotonic())


def run_child(main_async) -> None:
    """The body of every load process: its config as one JSON line on stdin, its result as
    one JSON line on stdout (`main_async(cfg)` on uvloop)."""
    import uvloop

    cfg = json.loads(sys.stdin.readline())
    try:
        result = uvloop.run(main_async(cfg))
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    # A result is up to a few MB (every latency): never let a non-blocking pipe cut it short.
    os.set_blocking(sys.stdout.fileno(), True)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def main() -> None:
    run_child(main_async)


if __name__ == "__main__":
    main()
