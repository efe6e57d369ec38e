"""`make bench-backtest`: SimulateRuleSet over --orders recorded orders (1,000,000 by
default) through the real server, beside the bare read of the same rows measured in the
same run. Target: under 60 s for 1,000,000 orders (issue 13).

1. a fresh database and the real server (`clearing serve`, one process) on it;
2. through the API: the B2B accounts, rule set `b2b` version 1 (server/clearing/rules/
   examples/b2b.yaml) activated, and version 2 published (the candidate: the promotion
   rule pays the supplier 72% and logistics 18% instead of 75% / 15%, and the base rule
   applies only from 100.00: smaller orders are refused);
3. template splits through SplitBatch, one per kind of order (a government purchase of
   850,000.00: 4 legs, an enterprise order of 600,000.00: 3 legs by the promotion, orders
   of 1,234.56 and 99.99 by the base rule), each with marked channel, channel transaction id
   and paid time (bench/recon_gen.py's Template);
4. the orders: --orders rows COPYed into `splits` as the server writes them (the templates'
   rows, round robin, with their own split id, order id, request id, payload hash, channel
   transaction id and paid time, spread over the last 6 days: what recon's bench does),
   then VACUUM ANALYZE;
5. the baseline: the bare read of the rows a backtest reads (`clearing.risk.backtest.
   read_only`: the same statement through the same server-side cursor, batches of 5,000,
   nothing decoded), from this process;
6. the CPU floor: decoding a stored order and evaluating it with the candidate, alone, in
   this process (100,000 times over the templates): how fast this machine is right now;
7. the measured run: SimulateRuleSet(b2b, 2, days=7) through the stubs, timed by the client;
8. every figure checked: the order count, each receiver's active total (the template's
   recorded legs times its rows) and candidate total (PreviewSplit of the template's order
   with version 2, times its rows), the refused and changed counts.

Prints orders/s, the wall time beside the bare read's and the target; writes
<out>/backtest.json and <out>/summary.txt. Exit status 0 when every figure is as expected
(a missed target is a result), 1 on a wrong figure or a failure, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

from bench import recon_gen as gen
from bench.harness import (_tail, begin, Bench, example_rule_set, new_platform,
                           publish_and_activate, run_and_report, RunFailed)

ORDERS_DEFAULT = 1_000_000
TARGET_S = 60.0
CALL_TIMEOUT_S = 600.0
HARD_TIMEOUT_S = 1800.0
COPY_ROWS = 10_000
DAYS = 7
SPREAD_S = 6 * 86_400  # paid times over the last 6 days (inside the 7 backtested)
REFS = {"CUSTODIAL": "custodial", "PLAT_001": "platform", "SUP_2025001": "merchant",
        "LOGISTICS_B": "ordinary", "GOV_ACCOUNT": "functional"}
# (label, amount_minor, tags, customer_type)
KINDS = (("government", 85_000_000, ["government purchase"], "enterprise"),
         ("enterprise", 60_000_000, [], "enterprise"),
         ("small", 123_456, [], "individual"),
         ("tiny", 9_999, [], "individual"))


def candidate_text() -> str:
    text = example_rule_set("b2b")
    for old, new in (("ratio_bps: 7500", "ratio_bps: 7200"),
                     ("ratio_bps: 1500", "ratio_bps: 1800"),
                     ("  - rule_name: base\n    priority: 3\n",
                      "  - rule_name: base\n    priority: 3\n    condition: {min_amount_minor:"
                      " 10000}\n")):
        if old not in text:
            raise RunFailed(f"b2b.yaml changed: {old!r} not found")
        text = text.replace(old, new, 1)
    return text


def _order(label: str, amount: int, tags: list[str], customer: str):
    from clearing.v1 import split_pb2 as spb

    o = spb.Order(order_id=f"TPL-{label}", amount_minor=amount, currency_code="CNY",
                  channel=gen.CHANNEL_MARK, channel_transaction_id=gen.CTID_MARK,
                  rule_set_name="b2b", tags=tags, attributes={"customer_type": customer})
    o.paid_time.FromNanoseconds(gen.PAID_NS_MARK)
    return o


async def set_up(ch, key: str, approver: str) -> dict[str, dict[str, tuple[int, int]]]:
    """Accounts, the two versions, the templates; per template order id, per receiver ref:
    (its recorded amount under version 1, its amount under version 2)."""
    import grpc

    from clearing.v1 import ledger_pb2 as lpb
    from clearing.v1 import ledger_pb2_grpc, split_pb2_grpc
    from clearing.v1 import split_pb2 as spb

    md = (("authorization", f"Bearer {key}"),)
    ledger = ledger_pb2_grpc.LedgerServiceStub(ch)
    for ref, kind in REFS.items():
        await ledger.CreateAccount(lpb.CreateAccountRequest(
            request_id=str(uuid.uuid4()), external_ref=ref,
            kind=lpb.AccountKind.Value(f"ACCOUNT_KIND_{kind.upper()}"),
            owner_type=lpb.OWNER_TYPE_ENTERPRISE, currency_code="CNY",
            allow_negative=kind == "custodial"), metadata=md, timeout=30)
    splits = split_pb2_grpc.SplitServiceStub(ch)
    await publish_and_activate(splits, example_rule_set("b2b"), key, approver, "bench")
    from clearing.api import rules_proto as proto

    await splits.PublishRuleSet(spb.PublishRuleSetRequest(
        request_id=str(uuid.uuid4()), rule_set=proto.rule_set_proto_from_yaml(
            candidate_text())), metadata=md, timeout=30)
    orders = [_order(*kind) for kind in KINDS]
    r = await splits.SplitBatch(spb.SplitBatchRequest(request_id=str(uuid.uuid4()), requests=[
        spb.SplitRequest(request_id=str(uuid.uuid4()), order=o) for o in orders]),
        metadata=md, timeout=60)
    expected: dict[str, dict[str, tuple[int, int]]] = {}
    for o, outcome in zip(orders, r.outcomes):
        if outcome.HasField("error"):
            raise RunFailed(f"template split refused: {outcome.error}")
        active = Counter()
        for leg in outcome.split.legs:
            active[leg.external_ref] += leg.amount_minor
        candidate = Counter()
        try:
            preview = (await splits.PreviewSplit(spb.PreviewSplitRequest(
                order=o, rule_set_version=2), metadata=md, timeout=30)).split
            for leg in preview.legs:
                candidate[leg.external_ref] += leg.amount_minor
        except grpc.aio.AioRpcError as exc:  # refused by version 2: counted as such
            if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
            candidate = Counter({"__refused__": 1})
        expected[o.order_id] = {ref: (active[ref], candidate[ref])
                                for ref in set(active) | set(candidate)}
    return expected


async def load_orders(conn, platform_id: int, orders: int, now_ns: int
                      ) -> tuple[Counter, float]:
    """--orders rows COPYed from the templates, round robin; rows per template order id."""
    rows = await conn.fetch("SELECT * FROM splits WHERE platform_id = $1 ORDER BY order_id",
                            platform_id)
    templates = [(r["order_id"], gen.Template.of_row(dict(r))) for r in rows]
    if len(templates) != len(KINDS):
        raise RunFailed(f"{len(templates)} template splits, expected {len(KINDS)}")
    per_template: Counter = Counter()
    first_id = gen.SPLIT_ID_BASE + platform_id * gen.SPLIT_IDS_PER_PLATFORM
    step_ns = SPREAD_S * 10**9 // max(orders, 1)

    def batches():
        lines = []
        for i in range(orders):
            tpl_id, tpl = templates[i % len(templates)]
            per_template[tpl_id] += 1
            paid_ns = now_ns - 60 * 10**9 - i * step_ns
            paid = dt.datetime.fromtimestamp(paid_ns / 1e9, dt.timezone.utc).isoformat()
            lines.append(tpl.row(first_id + i, f"BT-{i:010d}", gen.CHANNEL,
                                 f"{i * gen.CTID_SPREAD % 10**10:010d}", paid_ns, paid, 0,
                                 tpl.status))
            if len(lines) == COPY_ROWS:
                yield "".join(lines).encode()
                lines = []
        if lines:
            yield "".join(lines).encode()

    async def source():
        for chunk in batches():
            yield chunk

    t0 = time.monotonic()
    await conn.copy_to_table("splits", source=source(), columns=gen.SPLIT_COLUMNS,
                             format="text")
    await conn.execute("VACUUM (ANALYZE) splits")
    return per_template, time.monotonic() - t0


EVAL_SAMPLE = 100_000


async def evaluation_alone(conn, platform_id: int) -> float:
    """Microseconds per order to decode a stored order and evaluate it with the candidate
    (the backtest's CPU per order, without reading or totalling), in this process, on the
    template splits round robin: the machine's speed in the same run."""
    from clearing.errors import ClearingError
    from clearing.risk import backtest
    from clearing.rules import compile as plans
    from clearing.rules.evaluate import evaluate

    plan = plans.from_bytes(await conn.fetchval(
        "SELECT plan FROM rule_sets WHERE platform_id = $1 AND name = 'b2b' AND version = 2",
        platform_id))
    rows = await conn.fetch("SELECT order_id, detail FROM splits WHERE platform_id = $1"
                            " AND order_id LIKE 'TPL-%'", platform_id)
    texts = [(r["order_id"], r["detail"]) for r in rows]
    t0 = time.perf_counter()
    for i in range(EVAL_SAMPLE):
        order_id, text = texts[i % len(texts)]
        order = backtest._order(order_id, backtest._DECODE_DOC(text))
        try:
            evaluate(plan, order, {}, accounts={})
        except ClearingError:
            pass
    return (time.perf_counter() - t0) / EVAL_SAMPLE * 1e6


def expected_figures(expected: dict, per_template: Counter) -> dict:
    active, candidate = Counter(), Counter()
    refused = 0
    for tpl_id, by_ref in expected.items():
        n = per_template[tpl_id]
        for ref, (a, c) in by_ref.items():
            if ref == "__refused__":
                refused += n
                continue
            active[ref] += a * n
            candidate[ref] += c * n
    return {"active": dict(active), "candidate": dict(candidate), "refused": refused}


def check(response, orders: int, want: dict) -> list[str]:
    problems = []
    got_active = {r.external_ref: r.active_minor for r in response.receivers if r.active_minor}
    got_candidate = {r.external_ref: r.candidate_minor for r in response.receivers
                     if r.candidate_minor}
    want_active = {k: v for k, v in want["active"].items() if v}
    want_candidate = {k: v for k, v in want["candidate"].items() if v}
    for name, got, wanted in (("order_count", response.order_count, orders),
                              ("truncated", response.truncated, False),
                              ("candidate_refused_count", response.candidate_refused_count,
                               want["refused"]),
                              ("active totals", got_active, want_active),
                              ("candidate totals", got_candidate, want_candidate)):
        if got != wanted:
            problems.append(f"{name}: got {got}, expected {wanted}")
    return problems


class BacktestBench(Bench):
    async def run(self, out: Path) -> dict:
        import asyncpg
        import grpc

        from clearing.risk import backtest

        a = self.args
        async with self.new_database() as conn:
            platform_id, key, approver = await new_platform(conn, "backtest-bench")
        self.server_addr, self.server = await self.start_server(self.dsn, 1)
        async with grpc.aio.insecure_channel(self.server_addr) as ch:
            expected = await set_up(ch, key, approver)
        now_ns = time.time_ns()
        conn = await asyncpg.connect(self.dsn)
        try:
            print(f"bench-backtest: COPYing {a.orders:,} orders", file=sys.stderr, flush=True)
            per_template, load_s = await load_orders(conn, platform_id, a.orders, now_ns)
            print(f"bench-backtest: loaded in {load_s:.1f} s; the bare read", file=sys.stderr,
                  flush=True)
            end_ns = time.time_ns()
            t0 = time.monotonic()
            read = await backtest.read_only(conn, platform_id, "b2b",
                                            start_ns=end_ns - DAYS * 86_400 * 10**9,
                                            end_ns=end_ns)
            read_s = time.monotonic() - t0
            eval_us = await evaluation_alone(conn, platform_id)
        finally:
            await conn.close()
        total = a.orders  # the templates were paid in 2000: not in the period
        if read != total:
            raise RunFailed(f"the bare read found {read} rows, expected {total}")
        print(f"bench-backtest: bare read {read_s:.1f} s; SimulateRuleSet", file=sys.stderr,
              flush=True)
        response, wall_s = await self.simulate(key)
        problems = check(response, total, expected_figures(expected, per_template))
        return {
            "orders": total, "setup_load_s": round(load_s, 1),
            "bare_read_s": round(read_s, 2), "backtest_wall_s": round(wall_s, 2),
            "orders_per_s": round(total / wall_s), "ratio": round(wall_s / read_s, 2),
            "bare_read_orders_per_s": round(total / read_s),
            "decode_evaluate_us": round(eval_us, 1),
            "backtest_us_per_order": round(wall_s / total * 1e6, 1),
            "changed_rule_count": response.changed_rule_count,
            "candidate_refused_count": response.candidate_refused_count,
            "max_swing_bps": response.max_swing_bps, "swing_exceeded": response.swing_exceeded,
            "target_s": TARGET_S, "target_met": a.orders < ORDERS_DEFAULT or wall_s < TARGET_S,
            "problems": problems,
            "machine": {"cpus": os.cpu_count(), "load_1m_after": os.getloadavg()[0]},
            "parameters": {k: v for k, v in vars(a).items() if k != "server_env"},
        }

    async def simulate(self, key: str):
        import grpc

        from clearing.v1 import split_pb2 as spb
        from clearing.v1 import split_pb2_grpc

        async with grpc.aio.insecure_channel(self.server_addr) as ch:
            stub = split_pb2_grpc.SplitServiceStub(ch)
            t0 = time.monotonic()
            try:
                response = await stub.SimulateRuleSet(spb.SimulateRuleSetRequest(
                    rule_set_name="b2b", rule_set_version=2, days=DAYS),
                    metadata=(("authorization", f"Bearer {key}"),), timeout=CALL_TIMEOUT_S)
            except grpc.aio.AioRpcError as exc:
                raise RunFailed(f"SimulateRuleSet answered {exc.code().name} "
                                f"{exc.details()!r}; the server's log:\n"
                                f"{_tail(self.tmp / 'server.log', 40)}") from None
            return response, time.monotonic() - t0


def summary(f: dict) -> str:
    rows = [
        ("orders", f"{f['orders']:,} (COPYed as the server writes them)"),
        ("baseline: bare read of the same rows",
         f"{f['bare_read_s']:.1f} s, {f['bare_read_orders_per_s']:,} rows/s"),
        ("SimulateRuleSet (read + decode + evaluate)",
         f"{f['backtest_wall_s']:.1f} s, {f['orders_per_s']:,} orders/s, "
         f"{f['ratio']:.2f} x the bare read"),
        ("  per order", f"{f['backtest_us_per_order']:.1f} us; decode + evaluate alone "
                        f"{f['decode_evaluate_us']:.1f} us (this process, same run)"),
        ("changed rules / refused", f"{f['changed_rule_count']:,} / "
                                    f"{f['candidate_refused_count']:,}"),
        (f"target: 1,000,000 orders < {f['target_s']:.0f} s",
         "met" if f["target_met"] else "missed"),
        ("figures", "every total as expected" if not f["problems"] else "MISMATCH"),
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench.backtest", description=__doc__.split("\n")[0])
    p.add_argument("--orders", type=int, default=ORDERS_DEFAULT,
                   help="recorded orders to backtest (default %(default)s)")
    p.add_argument("--out", default=None, help="results directory")
    p.add_argument("--timeout", type=float, default=HARD_TIMEOUT_S, help="hard limit, s")
    p.add_argument("--server-env", action="append", default=[], metavar="CLEARING_X=V")
    a = p.parse_args(argv)
    a.warmup, a.call_timeout, a.profile, a.profile_native = 0.0, CALL_TIMEOUT_S, None, False
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _, out = begin(args.out)
    return run_and_report("bench-backtest", BacktestBench(args), out, args.timeout, summary, "backtest.json")


if __name__ == "__main__":
    raise SystemExit(main())
