"""Micro-benchmark: evaluation time per order for the compiled B2B rule set, warm.

    .venv/bin/python tests/unit/rules/bench_evaluate.py [--orders N] [--repeats R]

Not collected by pytest (the name does not start with `test_`). The plan is compiled once
and decoded from its cached bytes, as a server would hold it; the order, counters and
accounts are built once (warm data), so the figure is evaluate() alone: matching the three
rules, the top-slice and promotion shares, the legs, and the invariant checks.

Baseline, measured in the same run: the same four amounts computed by straight-line code
(two `bps_of` and one `allocate`, no plan, no records), i.e. the arithmetic alone. The
ratio says what the plan walk, the records and the checks cost on top of it.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from pathlib import Path

import clearing.rules
from clearing.ledger.model import AccountKind, AccountStatus
from clearing.money import allocate, bps_of
from clearing.rules import compile as plans
from clearing.api import rules_proto as proto
from clearing.rules.evaluate import evaluate
from clearing.rules.model import AccountInfo, Order

TARGET_US = 20.0
B2B = Path(clearing.rules.__file__).parent / "examples" / "b2b.yaml"
REFS = ("GOV_ACCOUNT", "PLAT_001", "SUP_2025001", "LOGISTICS_B")


def _setup():
    accounts = {ref: AccountInfo(100 + i, "CNY", AccountStatus.ACTIVE, AccountKind.MERCHANT)
                for i, ref in enumerate(REFS)}
    plan = plans.compile_plan(proto.rule_set_from_yaml(B2B.read_text()), accounts)
    plan = plans.from_bytes(plans.to_bytes(plan))  # as held after a cache load
    order = Order("ORD202601200001", 85_000_000, "CNY", channel="UNIONPAY",
                  tags=("enterprise purchase", "government purchase"),
                  attributes={"customer_type": "enterprise"})
    return plan, order, accounts


def _baseline(order: Order) -> list[int]:
    gov = bps_of(order.amount_minor, 200)
    return [gov, *allocate(order.amount_minor - gov, [1000, 7500, 1500])]


def _per_order_us(fn, orders_count: int, repeats: int) -> tuple[float, float]:
    """(mean over all runs, best run), in microseconds per call."""
    runs = []
    for _ in range(repeats):
        gc.disable()
        started = time.perf_counter_ns()
        for _ in range(orders_count):
            fn()
        runs.append((time.perf_counter_ns() - started) / orders_count / 1000)
        gc.enable()
    return statistics.fmean(runs), min(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=50_000, help="orders per run")
    parser.add_argument("--repeats", type=int, default=7, help="runs")
    args = parser.parse_args()
    plan, order, accounts = _setup()
    ev = evaluate(plan, order, {}, accounts=accounts)
    legs = [(leg.external_ref, leg.amount_minor) for leg in ev.legs]
    assert [a for _, a in legs] == _baseline(order) == [1_700_000, 8_330_000, 62_475_000,
                                                        12_495_000], legs
    counters: dict[str, int] = {}
    mean, best = _per_order_us(lambda: evaluate(plan, order, counters, accounts=accounts),
                                 args.orders, args.repeats)
    base_mean, base_best = _per_order_us(lambda: _baseline(order), args.orders,
                                           args.repeats)
    print(f"rule set b2b: {len(plan.units[0].rules)} rules, legs {legs}")
    print(f"evaluate   : {mean:6.2f} us/order mean, {best:6.2f} best run "
          f"({args.repeats} runs x {args.orders} orders; target < {TARGET_US:.0f} us)")
    print(f"baseline   : {base_mean:6.2f} us/order mean, {base_best:6.2f} best run "
          f"(the same amounts by straight-line arithmetic)")
    print(f"ratio      : {mean / base_mean:6.1f}x the arithmetic alone; "
          f"{'OK' if mean < TARGET_US else 'OVER TARGET'}")


if __name__ == "__main__":
    main()
