"""The unary Split handler's own steps per call, in process (issue 16, section 3).

    .venv/bin/python -m bench.split_handler [--calls 20000] [--repeat 5]
    PYTHONPATH=<other checkout>/server .venv/bin/python -m bench.split_handler   # a baseline

`SplitServicer.Split` called one call at a time on uvloop: validation, the command (payload
hash, the order), the unary group (api/split_group.py) with a `split_many` that answers at
once with a recorded first response, the answer. No gRPC, ledger writer or database: what
the call costs in the handler's own Python, free of the shared machine's noise that
`make bench-unary` cannot see through. Prints the process CPU per call of each repetition
and the best. Alternate it with a baseline's code on PYTHONPATH to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import uvloop

import clearing
from clearing.api import split as split_api
from clearing.api.interceptor import PRINCIPAL
from clearing.api.split_group import UnaryGroups
from clearing.clock import Clock
from clearing.ledger.model import Principal, Replay, Role
from clearing.v1 import split_pb2 as pb

FIRST_RESPONSE = pb.Split(split_id=7).SerializeToString()


async def _split_many(platform_id, commands, responds, *, on_submit):
    on_submit()
    await asyncio.sleep(0)
    return [Replay(FIRST_RESPONSE)] * len(commands)


async def measure(calls: int, repeat: int) -> list[float]:
    servicer = split_api.SplitServicer(None, None, None, None, Clock())
    servicer._split_one = UnaryGroups(_split_many, group_max=256, queue_max=10_000).split
    PRINCIPAL.set(Principal(1, 1, frozenset({Role.GATEWAY})))
    requests = [pb.SplitRequest(request_id=f"r{i:012d}", order=pb.Order(
        order_id=f"o{i:012d}", amount_minor=1_234_567 + i, currency_code="CNY",
        channel="UNIONPAY", tags=["enterprise purchase"],
        attributes={"customer_type": "enterprise"}, rule_set_name="b2b"))
        for i in range(calls)]
    out = []
    for _ in range(repeat):
        started = time.process_time()
        for request in requests:
            await servicer.Split(request, None)
        out.append((time.process_time() - started) / calls * 1e6)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args(argv)
    us = uvloop.run(measure(a.calls, a.repeat))
    print(f"{clearing.__file__}: " + " ".join(f"{x:.1f}" for x in us)
          + f" us a call; best {min(us):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
