"""The journal's row format: the columns read, record conversion, and the batch digest.

The digest covers the immutable columns of every row of a batch, in transfer-id order;
`pending_remaining` and `pending_state` change later and are checked by the trial balance
instead. Text fields are length-prefixed, so no memo can forge a row boundary.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from clearing.ledger.model import Mode, PendingState, TransferRecord

TRANSFER_COLUMNS = (
    "transfer_id, platform_id, request_id, debit_account_id, credit_account_id, amount,"
    " currency_code, mode, pending_id, pending_remaining, pending_state, memo, created_at"
)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def record_from_row(row) -> TransferRecord:
    """A record from a row selected with `TRANSFER_COLUMNS`."""
    return TransferRecord(
        row["transfer_id"], row["platform_id"], row["request_id"], row["debit_account_id"],
        row["credit_account_id"], row["amount"], row["currency_code"], Mode(row["mode"]),
        row["pending_id"], row["pending_remaining"], PendingState(row["pending_state"]),
        row["memo"], row["created_at"])


def _micros(ts: dt.datetime) -> int:
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _line(transfer_id: int, platform_id: int, request_id: str, debit: int, credit: int,
          amount: int, currency: str, mode: int, pending_id: int, memo: str,
          created_at: dt.datetime) -> bytes:
    return (f"{transfer_id}|{platform_id}|{len(request_id)}:{request_id}|{debit}|{credit}|"
            f"{amount}|{currency}|{mode}|{pending_id}|{len(memo)}:{memo}|"
            f"{_micros(created_at)}\n").encode()


def records_digest(records: list[TransferRecord]) -> bytes:
    """SHA-256 of a batch's records as written, in position order."""
    h = hashlib.sha256()
    for r in records:
        h.update(_line(r.transfer_id, r.platform_id, r.request_id, r.debit_account_id,
                       r.credit_account_id, r.amount_minor, r.currency_code, int(r.mode),
                       r.pending_id, r.memo, r.created_at))
    return h.digest()


def records_digest_line(r) -> bytes:
    """One row's contribution to its batch digest, from a row read with `TRANSFER_COLUMNS`
    (rows of a batch must be fed in transfer-id order)."""
    return _line(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[11], r[12])
