"""The journal digest: the same rows give the same digest, any change gives another."""

from __future__ import annotations

import datetime as dt

from clearing.ledger import journal
from clearing.ledger.model import Mode, PendingState, TransferRecord
from clearing.values import decode_page_token, encode_page_token

NOW = dt.datetime(2026, 11, 11, 0, 0, 0, 123456, tzinfo=dt.timezone.utc)


def _record(**changes) -> TransferRecord:
    base = dict(transfer_id=65536, platform_id=1, request_id="r1", debit_account_id=1,
                credit_account_id=2, amount_minor=100, currency_code="CNY",
                mode=Mode.IMMEDIATE, pending_id=0, pending_remaining=0,
                pending_state=PendingState.NONE, memo="", created_at=NOW)
    base.update(changes)
    return TransferRecord(**base)


def _read_back(r: TransferRecord) -> tuple:
    return (r.transfer_id, r.platform_id, r.request_id, r.debit_account_id,
            r.credit_account_id, r.amount_minor, r.currency_code, int(r.mode), r.pending_id,
            r.pending_remaining, int(r.pending_state), r.memo, r.created_at)


def test_written_and_read_back_rows_digest_alike():
    import hashlib
    records = [_record(), _record(transfer_id=65537, memo="a|b\n", amount_minor=5)]
    written = journal.records_digest(records)
    h = hashlib.sha256()
    for r in records:
        h.update(journal.records_digest_line(_read_back(r)))
    assert written == h.digest()


def test_any_field_changes_the_digest():
    base = journal.records_digest([_record()])
    for change in ({"amount_minor": 101}, {"memo": "x"}, {"credit_account_id": 3},
                   {"request_id": "r2"}, {"created_at": NOW + dt.timedelta(microseconds=1)}):
        assert journal.records_digest([_record(**change)]) != base


def test_length_prefix_prevents_field_shifting():
    a = journal.records_digest([_record(request_id="ab", memo="c")])
    b = journal.records_digest([_record(request_id="a", memo="bc")])
    assert a != b


def test_page_tokens_are_bound_to_their_listing():
    import pytest
    from clearing.errors import InvalidArgument
    token = encode_page_token("entries", 7, 123)
    assert decode_page_token(token, "entries", 7) == (123,)
    assert decode_page_token("", "entries", 7) is None
    for kind, scope in (("entries", 8), ("accounts", 7)):
        with pytest.raises(InvalidArgument):
            decode_page_token(token, kind, scope)
