"""Domain <-> protobuf conversion for the ledger."""

from __future__ import annotations

import datetime as dt

from google.protobuf.timestamp_pb2 import Timestamp

from clearing.ledger.model import Account, Balance, EntrySide, TransferRecord
from clearing.v1 import ledger_pb2 as pb


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def timestamp(value: dt.datetime) -> Timestamp:
    """An aware datetime as a Timestamp, in integer arithmetic (FromDatetime is slow)."""
    delta = value - _EPOCH
    return Timestamp(seconds=delta.days * 86_400 + delta.seconds,
                     nanos=delta.microseconds * 1000)


def nanoseconds(value: dt.datetime) -> int:
    """An aware datetime in nanoseconds since the epoch: `timestamp(value).ToNanoseconds()`
    without the message (every Split call's received time)."""
    delta = value - _EPOCH
    return ((delta.days * 86_400 + delta.seconds) * 1_000_000_000
            + delta.microseconds * 1000)


def balance(b: Balance) -> pb.Balance:
    return pb.Balance(
        account_id=b.account_id, currency_code=b.currency_code, posted_minor=b.posted,
        available_minor=b.available, pending_credit_minor=b.credits_pending,
        pending_debit_minor=b.debits_pending, frozen_minor=b.frozen,
        debits_posted_minor=b.debits_posted, credits_posted_minor=b.credits_posted)


def account(a: Account) -> pb.Account:
    return pb.Account(
        account_id=a.account_id, external_ref=a.external_ref, kind=int(a.kind),
        owner_type=int(a.owner_type), currency_code=a.currency_code, status=int(a.status),
        allow_negative=a.allow_negative, display_name=a.display_name,
        balance=balance(a.balance), create_time=timestamp(a.created_at))


def transfer(r: TransferRecord) -> pb.Transfer:
    return pb.Transfer(
        transfer_id=r.transfer_id, request_id=r.request_id,
        debit_account_id=r.debit_account_id, credit_account_id=r.credit_account_id,
        amount_minor=r.amount_minor, currency_code=r.currency_code, mode=int(r.mode),
        pending_transfer_id=r.pending_id, pending_state=int(r.pending_state),
        pending_remaining_minor=r.pending_remaining, memo=r.memo,
        create_time=timestamp(r.created_at))


def entry(r: TransferRecord, side: int) -> pb.Entry:
    debit = side == EntrySide.DEBIT
    return pb.Entry(
        transfer_id=r.transfer_id,
        account_id=r.debit_account_id if debit else r.credit_account_id,
        side=pb.ENTRY_SIDE_DEBIT if debit else pb.ENTRY_SIDE_CREDIT,
        counterparty_account_id=r.credit_account_id if debit else r.debit_account_id,
        amount_minor=r.amount_minor, currency_code=r.currency_code, mode=int(r.mode),
        pending_transfer_id=r.pending_id, memo=r.memo, create_time=timestamp(r.created_at))
