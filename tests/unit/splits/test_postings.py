"""A split's posting (`clearing.splits.postings.prepare`) and the objects made for it are
freed when the last reference goes, without the cyclic collector: a posting whose respond
refers back to what holds the posting made every order's objects (about 20: the order,
its evaluation, its messages) cyclic garbage, and the collector's passes over a batch's
worth of them were about a tenth of the server's CPU in a SplitBatch (docs/scaling.md)."""

from __future__ import annotations

import datetime as dt
import gc

from clearing.ledger.model import TransferRecord
from clearing.splits.postings import SplitCommand, prepare
from clearing.splits.model import Split

from tests.unit.rules.helpers import ACCOUNTS, id_of, order, plan_of

PLAN = """
name: default
currency_code: CNY
rules:
  - rule_name: all
    priority: 1
    fees: [{label: fee, ratio_bps: 100, account_ref: PLAT_FEE}]
    shares:
      - {label: rest, type: SHARE_TYPE_REMAINDER, receiver: {account_ref: SUP_2025001}}
"""
AT = dt.datetime(2026, 12, 7, tzinfo=dt.timezone.utc)


def _committed_split(plan) -> tuple[bytes, Split]:
    o = order(10_000, paid_time_ns=1_765_000_000_000_000_000)
    answered: list[Split] = []

    def respond(split: Split) -> bytes:
        answered.append(split)
        return b"first response"

    prepared = prepare(1, SplitCommand("r1", b"h" * 32, o), o, plan, id_of("CUSTODIAL"),
                       ACCOUNTS, [], respond)
    posting = prepared.posting
    sent = [TransferRecord(7 * 65536 + i, 1, "r1", leg.debit_account_id,
                           leg.credit_account_id, leg.amount_minor, leg.currency_code,
                           leg.mode, 0, 0, 0, leg.memo, AT)
            for i, leg in enumerate(posting.legs)]
    response = posting.respond(sent)  # what the writer's batch does
    assert prepared.committed(sent) and prepared.split is answered[0]
    assert prepared.record.response == response
    assert sum(leg.amount_minor for leg in posting.legs) == 10_000
    return response, prepared.split


def test_a_prepared_split_leaves_no_reference_cycle():
    plan = plan_of(PLAN)  # compiled once per rule set version, kept by the plan cache
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        response, split = _committed_split(plan)
        del split
        assert gc.collect() == 0  # nothing unreachable was left for the collector
    finally:
        if was:
            gc.enable()
    assert response == b"first response"
