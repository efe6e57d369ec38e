"""A voucher's content, built from the records: the body of a split's, an action's or a
payout's voucher (`split_body`, `action_body`, `payout_body`), and the header that issuing
adds (`header`). VerifyVoucher builds the body again the same way and compares.

Only what does not change once made goes into a body, so that the body built at any later
time equals the one issued unless a record was edited: a split as it was made (its order,
each leg's amount and what it held at split time, the split's transfers; not the live
release state), an action as committed, a payout once finished (SUCCEEDED or FAILED).
Besides those, each leg or payout shows who the party is (`DISPLAY_ONLY_KEYS`: its display
name, the bank account bound to it when the voucher was issued), which is not compared.

The evidence of a body is its ledger transfers as the journal holds them and, for each
journal batch holding one, the batch's sequence number, rows digest and chain hash.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg

from clearing.errors import FailedPrecondition, NotFound
from clearing.ledger.model import Mode
from clearing.limits import BATCH_SPAN
from clearing.payout import store as payout_store
from clearing.payout.model import BankAccountStatus, PayoutState, TransferState
from clearing.reasons import Reason
from clearing.reports.voucher_model import CONTENT_FORMAT, VoucherKind, utc_iso
from clearing.splits.model import ActionKind, ReleaseState, Split
from clearing.splits.store import load_split

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_SQL_SPLIT_COLUMNS = """
SELECT split_id, order_id, currency_code, amount_minor, channel_fee_minor, channel,
       channel_transaction_id, paid_time_ns, rule_set_name, rule_set_version, created_at
FROM splits WHERE platform_id = $1 AND split_id = $2
"""
_SQL_ACCOUNTS = """
SELECT a.account_id, a.external_ref, a.display_name, coalesce(b.masked_number, '') AS masked
FROM accounts a
LEFT JOIN bank_accounts b ON b.account_id = a.account_id AND b.status = {active:d}
WHERE a.platform_id = $1 AND a.account_id = ANY($2::bigint[])
"""
_SQL_TRANSFERS = """
SELECT transfer_id, debit_account_id, credit_account_id, amount, currency_code, mode,
       pending_id, created_at
FROM transfers WHERE platform_id = $1 AND transfer_id = ANY($2::bigint[]) ORDER BY transfer_id
"""
_SQL_BATCHES = """
SELECT seq, batch_id, rows_digest, hash FROM journal_batches
WHERE batch_id = ANY($1::bigint[]) ORDER BY seq
"""
_SQL_PAYOUT_SETTLEMENTS = """
SELECT transfer_id FROM transfers
WHERE platform_id = $1 AND pending_id = ANY($2::bigint[]) AND mode IN ({post:d}, {void:d})
ORDER BY transfer_id
"""


def header(kind: VoucherKind, voucher_id: int, issued_at: dt.datetime, platform_id: int,
           platform_name: str, reference: tuple[int, str] | None) -> dict[str, Any]:
    """What issuing adds to a body: the voucher's identity and what it references."""
    return {"format": CONTENT_FORMAT, "voucher_id": voucher_id, "kind": kind.name,
            "issued_at": utc_iso(issued_at),
            "platform": {"platform_id": platform_id, "platform_name": platform_name},
            "references": None if reference is None else {
                "voucher_id": reference[0], "digest": reference[1]}}


async def platform_name(conn: asyncpg.Connection, platform_id: int) -> str:
    return await conn.fetchval("SELECT name FROM platforms WHERE platform_id = $1",
                               platform_id) or ""


# ---- parties, transfers, evidence ----------------------------------------------------------

async def _parties(conn: asyncpg.Connection, platform_id: int,
                   account_ids: set[int]) -> dict[int, dict[str, Any]]:
    rows = await conn.fetch(_SQL_ACCOUNTS.format(active=BankAccountStatus.ACTIVE),
                            platform_id, sorted(account_ids))
    return {r["account_id"]: {"account_id": r["account_id"], "external_ref": r["external_ref"],
                              "display_name": r["display_name"],
                              "bound_bank_account": r["masked"]} for r in rows}


def _party(parties: dict[int, dict[str, Any]], account_id: int) -> dict[str, Any]:
    return parties.get(account_id) or {"account_id": account_id, "external_ref": "",
                                       "display_name": "", "bound_bank_account": ""}


async def evidence(conn: asyncpg.Connection, platform_id: int,
                   transfer_ids: list[int]) -> dict[str, Any]:
    """The transfers as the journal holds them and the batches that hold them."""
    rows = await conn.fetch(_SQL_TRANSFERS, platform_id, sorted(set(transfer_ids)))
    transfers = [{"transfer_id": r["transfer_id"], "debit_account_id": r["debit_account_id"],
                  "credit_account_id": r["credit_account_id"], "amount_minor": r["amount"],
                  "currency_code": r["currency_code"].strip(), "mode": Mode(r["mode"]).name,
                  "pending_id": r["pending_id"], "created_at": utc_iso(r["created_at"])}
                 for r in rows]
    found = {t["transfer_id"] for t in transfers}
    transfers += [{"transfer_id": t, "missing": True} for t in sorted(set(transfer_ids) - found)]
    batch_ids = sorted({t // BATCH_SPAN for t in transfer_ids})
    batches = [{"seq": b["seq"], "batch_id": b["batch_id"],
                "rows_digest": b["rows_digest"].hex(), "chain_hash": b["hash"].hex()}
               for b in await conn.fetch(_SQL_BATCHES, batch_ids)]
    return {"transfers": transfers, "journal_batches": batches}


# ---- splits and their actions ----------------------------------------------------------------

def _ns_iso(ns: int | None) -> str:
    return "" if ns is None else utc_iso(_EPOCH + dt.timedelta(microseconds=ns // 1000))


async def _split(conn: asyncpg.Connection, platform_id: int,
                 split_id: int) -> tuple[asyncpg.Record, Split] | None:
    row = await conn.fetchrow(_SQL_SPLIT_COLUMNS, platform_id, split_id)
    if row is None:
        return None
    split = await load_split(conn, platform_id, "split_id", split_id)
    return (row, split) if split is not None else None


def _order(row: asyncpg.Record) -> dict[str, Any]:
    return {"order_id": row["order_id"], "amount_minor": row["amount_minor"],
            "currency_code": row["currency_code"], "channel": row["channel"],
            "channel_fee_minor": row["channel_fee_minor"],
            "channel_transaction_id": row["channel_transaction_id"],
            "paid_time": _ns_iso(row["paid_time_ns"])}


def _state_at_split(amount_minor: int, held_minor: int, in_custody: bool) -> str:
    if in_custody:
        return "IN_CUSTODY"
    if held_minor == amount_minor:
        return ReleaseState.HELD.name
    return ReleaseState.PARTLY_RELEASED.name if held_minor else ReleaseState.RELEASED.name


async def split_body(conn: asyncpg.Connection, platform_id: int,
                     split_id: int) -> dict[str, Any] | None:
    """The body of a split's voucher; None if the platform has no such split."""
    found = await _split(conn, platform_id, split_id)
    if found is None:
        return None
    row, split = found
    parties = await _parties(conn, platform_id, {leg.account_id for leg in split.legs})
    legs, transfer_ids = [], []
    for ev_leg, state in zip(split.evaluation.legs, split.legs):
        split_transfer = 0 if state.in_custody or not state.transfer_ids else state.transfer_ids[0]
        if split_transfer:
            transfer_ids.append(split_transfer)
        legs.append({"leg_index": state.leg_index, "kind": ev_leg.kind.name,
                     "label": ev_leg.label, "party": _party(parties, state.account_id),
                     "amount_minor": state.amount_minor, "held_minor": ev_leg.held_minor,
                     "state": _state_at_split(state.amount_minor, ev_leg.held_minor,
                                              state.in_custody),
                     "transfer_id": split_transfer})
    ev = split.evaluation
    return {"order": _order(row),
            "split": {"split_id": split_id, "rule_set_name": row["rule_set_name"],
                      "rule_set_version": row["rule_set_version"],
                      "net_amount_minor": ev.net_amount_minor,
                      "distributed_minor": ev.distributed_minor, "fee_minor": ev.fee_minor,
                      "created_at": utc_iso(row["created_at"])},
            "legs": legs, **await evidence(conn, platform_id, transfer_ids)}


async def action_split_id(conn: asyncpg.Connection, platform_id: int, action_id: int) -> int:
    """The split an action belongs to; NotFound if the platform has no such action."""
    split_id = await conn.fetchval(
        "SELECT split_id FROM split_actions WHERE platform_id = $1 AND action_id = $2",
        platform_id, action_id)
    if split_id is None:
        raise NotFound(f"split action {action_id} not found", reason=Reason.VOUCHER_NOT_FOUND,
                       metadata={"split_action_id": str(action_id)})
    return split_id


async def action_body(conn: asyncpg.Connection, platform_id: int,
                      action_id: int) -> dict[str, Any] | None:
    """The body of an action's voucher; None if the action or its split is gone."""
    split_id = await conn.fetchval(
        "SELECT split_id FROM split_actions WHERE platform_id = $1 AND action_id = $2",
        platform_id, action_id)
    found = None if split_id is None else await _split(conn, platform_id, split_id)
    if found is None:
        return None
    row, split = found
    action = next((a for a in split.actions if a.action_id == action_id), None)
    if action is None:
        return None
    parties = await _parties(conn, platform_id, {c.account_id for c in action.leg_changes})
    changes, transfer_ids = [], []
    for c in action.leg_changes:
        transfer_ids += c.transfer_ids
        changes.append({"leg_index": c.leg_index, "party": _party(parties, c.account_id),
                        "released_minor": c.released_minor, "voided_minor": c.voided_minor,
                        "refunded_held_minor": c.refunded_held_minor,
                        "refunded_posted_minor": c.refunded_posted_minor,
                        "shortfall_minor": c.shortfall_minor,
                        "transfer_ids": list(c.transfer_ids)})
    return {"order": _order(row),
            "action": {"action_id": action_id, "split_id": split_id,
                       "kind": ActionKind(action.kind).name,
                       "amount_minor": action.amount_minor, "event_name": action.event_name,
                       "fraction_bps": action.fraction_bps, "refund_ref": action.refund_ref,
                       "reason": action.reason_text,
                       "created_at": utc_iso(action.created_at)},
            "leg_changes": changes, **await evidence(conn, platform_id, transfer_ids)}


# ---- payouts ------------------------------------------------------------------------------------

async def payout_body(conn: asyncpg.Connection, platform_id: int,
                      payout_id: int, *, for_issue: bool) -> dict[str, Any] | None:
    """The body of a finished payout's voucher; None if the platform has no such payout.
    `for_issue`: a payout not yet SUCCEEDED or FAILED is refused (VOUCHER_NOT_READY)."""
    try:
        p = await payout_store.get_payout(conn, platform_id, payout_id)
    except NotFound:
        return None
    if for_issue and not p.state.terminal:
        raise FailedPrecondition(
            f"payout {payout_id} is {p.state.name}: its voucher is issued once it is"
            " SUCCEEDED or FAILED", reason=Reason.VOUCHER_NOT_READY,
            metadata={"payout_id": str(payout_id), "state": p.state.name})
    holds = [t for t in (p.hold_transfer_id, p.fee_transfer_id) if t]
    settled = [r["transfer_id"] for r in await conn.fetch(
        _SQL_PAYOUT_SETTLEMENTS.format(post=Mode.POST_PENDING, void=Mode.VOID_PENDING),
        platform_id, holds)]
    parties = await _parties(conn, platform_id, {p.account_id})
    bank_transfers = []
    for t in p.transfers:
        refs = [a.bank_reference for a in t.attempts
                if a.state == TransferState.SUCCEEDED and a.bank_reference]
        bank_transfers.append({"sequence": t.sequence, "masked_account": p.masked_number,
                               "amount_minor": t.amount_minor, "state": t.state.name,
                               "attempt_count": t.attempt_count, "bank_references": refs})
    return {"payout": {"payout_id": payout_id, "party": _party(parties, p.account_id),
                       "masked_account": p.masked_number, "currency_code": p.currency_code,
                       "amount_minor": p.amount_minor, "fee_minor": p.fee_minor,
                       "net_minor": p.net_minor, "paid_minor": p.paid_minor,
                       "state": PayoutState(p.state).name, "failure_reason": p.failure_reason,
                       "hold_transfer_id": p.hold_transfer_id,
                       "fee_transfer_id": p.fee_transfer_id,
                       "created_at": utc_iso(p.created_at),
                       "finished_at": utc_iso(p.finished_at)},
            "bank_transfers": bank_transfers,
            **await evidence(conn, platform_id, holds + settled)}

