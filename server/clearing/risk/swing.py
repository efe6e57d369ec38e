"""The ratio swing: how much a receiver's effective share moves between two versions of a
rule set, measured on the same orders (a backtest, `clearing.risk.backtest`).

A receiver's effective share under a version is what it gets over what every receiver
gets, on the orders backtested. Its swing is relative to its share under the active
version: |candidate share - active share| / active share. With a = its active total,
A = every receiver's active total, c and C the same under the candidate:

    swing = |c*A - a*C| / (a*C)

computed exactly with integers; `swing_bps` is it in basis points rounded down, and a
swing *exceeds* the threshold when 10000 * |c*A - a*C| > threshold_bps * a*C, so a swing
of exactly the threshold does not. Special cases: a receiver the active version pays
nothing (a = 0) and the candidate pays (c > 0) is *new*: its swing is unbounded and
always exceeds; when the candidate pays nobody (C = 0), every paid receiver's share
falls to 0: a swing of 10000 bps (100%).

The activation rule (ActivateRuleSet, split.proto): a version whose backtest exceeds the
threshold for any receiver needs a second approver. The first approver's call records its
approval (`rule_set_swing_approvals`, `record_approval`) and is refused with
`second_approver_needed`; a call by a key that is neither the publisher nor a recorded
approver activates (`other_approver`).

The figures are pure functions, integers only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

import asyncpg

from clearing.errors import FailedPrecondition, invariant
from clearing.reasons import Reason

if TYPE_CHECKING:  # backtest imports this module
    from clearing.risk.backtest import Backtest

BPS = 10_000


class ReceiverSwing(NamedTuple):
    """One receiver's totals under both versions and the swing of its share."""

    account_id: int
    external_ref: str
    active_minor: int
    candidate_minor: int
    active_share_bps: int  # rounded down
    candidate_share_bps: int  # rounded down
    swing_bps: int  # rounded down; 0 for a new receiver
    new_receiver: bool
    exceeded: bool


def share_bps(part: int, total: int) -> int:
    """`part` of `total` in basis points, rounded down (0 of nothing)."""
    return part * BPS // total if total else 0


def swing(active_minor: int, active_total: int, candidate_minor: int, candidate_total: int,
          threshold_bps: int) -> tuple[int, bool, bool]:
    """(swing_bps rounded down, new receiver, exceeds the threshold) of one receiver."""
    a, big_a, c, big_c = active_minor, active_total, candidate_minor, candidate_total
    invariant(min(a, big_a, c, big_c, threshold_bps) >= 0 and a <= big_a and c <= big_c,
              f"swing of {a}/{big_a} -> {c}/{big_c}")
    if a == 0:
        return 0, c > 0, c > 0
    if big_c == 0:
        return BPS, False, BPS > threshold_bps
    diff = abs(c * big_a - a * big_c)
    denominator = a * big_c
    return diff * BPS // denominator, False, diff * BPS > threshold_bps * denominator


def receiver_swings(totals: Iterable[tuple[int, str, int, int]], active_total: int,
                    candidate_total: int, threshold_bps: int) -> list[ReceiverSwing]:
    """Each receiver's swing from (account_id, external_ref, active_minor,
    candidate_minor), the largest first: new receivers, then by swing, then by account."""
    out = []
    for account_id, ref, a, c in totals:
        bps, new, exceeded = swing(a, active_total, c, candidate_total, threshold_bps)
        out.append(ReceiverSwing(account_id, ref, a, c, share_bps(a, active_total),
                                 share_bps(c, candidate_total), bps, new, exceeded))
    out.sort(key=lambda r: (not r.new_receiver, -r.swing_bps, not r.exceeded, r.account_id,
                            r.external_ref))
    return out


# ---- the activation rule ----------------------------------------------------------------------

def second_approver_needed(result: Backtest, key_id: int, days: int) -> FailedPrecondition:
    """The refusal of an activation whose backtest exceeds the threshold, with its
    figures in the metadata (units in the keys)."""
    top = result.largest
    invariant(top is not None and result.swing_exceeded, "no swing over the threshold")
    over = sum(1 for r in result.receivers if r.exceeded)
    what = ("is a new receiver" if top.new_receiver
            else f"moves its share by {top.swing_bps} bps")
    return FailedPrecondition(
        f"rule set {result.rule_set_name!r} version {result.candidate_version}: receiver "
        f"{top.external_ref or top.account_id} {what} against version "
        f"{result.active_version} (threshold {result.threshold_bps} bps, {result.order_count}"
        f" orders of the last {days} days): another approver must activate it",
        reason=Reason.RATIO_SWING_NEEDS_SECOND_APPROVER,
        metadata={"swing_threshold_bps": str(result.threshold_bps),
                  "max_swing_bps": str(result.max_swing_bps),
                  "receiver_account_id": str(top.account_id),
                  "receiver_external_ref": top.external_ref,
                  "receiver_new": "true" if top.new_receiver else "false",
                  "active_share_bps": str(top.active_share_bps),
                  "candidate_share_bps": str(top.candidate_share_bps),
                  "receivers_over_threshold": str(over),
                  "order_count": str(result.order_count),
                  "active_version": str(result.active_version),
                  "first_approver_key_id": str(key_id),
                  "period_days": str(days)})


async def approvers(conn: asyncpg.Connection, platform_id: int, name: str,
                    version: int) -> list[int]:
    """The keys whose first approval of a version is recorded, oldest first."""
    rows = await conn.fetch(
        "SELECT key_id FROM rule_set_swing_approvals WHERE platform_id = $1 AND name = $2"
        " AND version = $3 ORDER BY created_at, key_id", platform_id, name, version)
    return [r["key_id"] for r in rows]


def other_approver(recorded: list[int], key_id: int) -> int:
    """The first recorded approver that is not `key_id` (0: none)."""
    return next((k for k in recorded if k != key_id), 0)


async def record_approval(conn: asyncpg.Connection, platform_id: int, result: Backtest,
                          key_id: int, comment: str) -> None:
    """Record `key_id`'s approval of the candidate (once per key)."""
    top = result.largest
    invariant(top is not None, "an approval without figures")
    await conn.execute(
        "INSERT INTO rule_set_swing_approvals (platform_id, name, version, key_id,"
        " active_version, max_swing_bps, receiver_ref, order_count, comment)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
        platform_id, result.rule_set_name, result.candidate_version, key_id,
        result.active_version, result.max_swing_bps, top.external_ref, result.order_count,
        comment)
