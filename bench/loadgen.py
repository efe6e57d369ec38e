"""One load-generator process (uvloop, grpc.aio), driven by bench.ledger_bench.

Protocol on stdin/stdout (one line each):
  <- config JSON          (see ledger_bench.LoadConfig)
  -> READY                (channels connected)
  <- GO <time.monotonic() of the start>
  -> result JSON          (counts, latencies in microseconds, CPU seconds)

Closed loop: `concurrency` callers, each sends its next request as soon as the previous one
is answered, round-robin over `channels` channels. Only calls answered inside the
measurement window [start + warmup, start + warmup + duration] count; callers stop
sending at its end.

Open loop: request i is due at start + i / rate, whatever happened to earlier ones; its
latency is measured from that scheduled time, so queueing anywhere (client loop, network,
server) shows up in the figures instead of lowering the send rate. Requests due inside the
measurement window count.

The same code drives the real server and the echo baseline: same method path, same
request messages, same metadata.
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import resource
import sys
import time
from collections import Counter

import grpc

from clearing.v1 import ledger_pb2 as pb

ERROR_SAMPLES_MAX = 5


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


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

    cpu = {}

    async def sample_cpu() -> None:
        await asyncio.sleep(max(0.0, warm_end - perf()))
        cpu["start"] = _cpu_s()
        await asyncio.sleep(max(0.0, end - perf()))
        cpu["end"] = _cpu_s()

    await asyncio.sleep(max(0.0, start - perf()))
    sampler = asyncio.ensure_future(sample_cpu())
    await asyncio.gather(*(caller(i) for i in range(cfg["concurrency"])))
    await sampler
    return {"codes": dict(rec.codes), "lat_us": rec.lat_us, "error_samples": rec.error_samples,
            "warmup_codes": dict(warmup_codes), "resp_bytes": rec.resp_bytes,
            "sent": reqs._n, "window_s": cfg["duration_s"],
            "cpu_s": cpu.get("end", 0.0) - cpu.get("start", 0.0)}


async def open_loop(cfg: dict, calls: list, start: float) -> dict:
    reqs = Requests(cfg)
    rec = Recorder()
    rate = cfg["rate"]
    interval = 1.0 / rate
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

    await asyncio.sleep(max(0.0, start - perf()))
    cpu_start = None
    n = 0
    n_calls = len(calls)
    while True:
        t_sched = start + n * interval
        if t_sched >= end:
            break
        now = perf()
        if t_sched > now:
            await asyncio.sleep(t_sched - now)
            now = perf()
        while t_sched <= now and t_sched < end:
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
            t_sched = start + n * interval
    cpu_end = _cpu_s()
    if tasks:
        await asyncio.wait(tasks, timeout=timeout_s + 5)
    return {"codes": dict(rec.codes), "lat_us": rec.lat_us, "error_samples": rec.error_samples,
            "warmup_codes": dict(warmup_codes), "resp_bytes": rec.resp_bytes,
            "sent": n, "window_s": cfg["duration_s"],
            "cpu_s": cpu_end - (cpu_start if cpu_start is not None else cpu_end),
            "late_max_ms": late_max * 1e3, "overflow": overflow,
            "outstanding_peak": outstanding_peak}


async def main_async(cfg: dict) -> dict:
    channels = [grpc.aio.insecure_channel(cfg["target"], options=[
        ("grpc.use_local_subchannel_pool", 1), ("grpc.keepalive_time_ms", 60_000)])
        for _ in range(cfg["channels"])]
    try:
        for ch in channels:
            await asyncio.wait_for(ch.channel_ready(), timeout=cfg["connect_timeout_s"])
        calls = [ch.unary_unary(cfg["method"],
                                request_serializer=pb.TransferRequest.SerializeToString,
                                response_deserializer=pb.TransferResponse.FromString)
                 for ch in channels]
        start = await ready_then_go()
        if cfg["mode"] == "closed":
            result = await closed_loop(cfg, calls, start)
        else:
            result = await open_loop(cfg, calls, start)
        return result
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
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def main() -> None:
    run_child(main_async)


if __name__ == "__main__":
    main()
