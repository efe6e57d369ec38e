"""clearing.audit without a database: masking and dropping of secrets, the canonical line."""

from __future__ import annotations

import datetime as dt

from clearing import audit

AT = dt.datetime(2026, 12, 7, 12, 0, 0, 123456, tzinfo=dt.timezone.utc)


def test_bank_numbers_are_masked_and_secrets_dropped_at_any_depth():
    doc = {"account_number": "6225880212341234", "bank_code": "ICBC",
           "nested": [{"number": "6225880212341234", "api_key": "ck_secret",
                       "key": "ck_whole", "key_hash": b"\x01", "client_secret": "s",
                       "key_prefix": "ck_abcde", "page_token": "t"}],
           "short": {"account_number": "1234567"}}
    assert audit.sanitize(doc) == {
        "account_number": "6225****1234", "bank_code": "ICBC",
        "nested": [{"number": "6225****1234", "key_prefix": "ck_abcde"}],
        "short": {"account_number": "****4567"}}
    assert "6225880212341234" not in audit.canonical(audit.sanitize(doc))


def test_values_become_json():
    class E:
        name, value = "FROZEN", 2
    assert audit.sanitize({"at": AT, "state": E(), "digest": b"\xab", "n": 3, "t": (1, 2)}) == {
        "at": AT.isoformat(), "state": "FROZEN", "digest": "ab", "n": 3, "t": [1, 2]}
    assert audit.canonical({"b": 1, "a": [2, "é"]}) == '{"a":[2,"é"],"b":1}'


def _line(**changes) -> bytes:
    fields = dict(platform_id=1, seq=1, key_id=7, key_prefix="ck_abcde", roles=("operator",),
                  cert_subject="", method="FreezeAccount", resource="account:1",
                  before="", after='{"a":1}', request_id="r", created_at=AT)
    fields.update(changes)
    return audit.line(**fields)


def test_every_field_is_in_the_line_and_none_can_forge_another():
    base = _line()
    for change in ({"seq": 2}, {"key_id": 8}, {"roles": ("approver",)}, {"cert_subject": "CN=x"},
                   {"method": "UnfreezeAccount"}, {"resource": "account:2"},
                   {"before": "{}"}, {"after": '{"a":2}'}, {"request_id": "s"},
                   {"created_at": AT + dt.timedelta(microseconds=1)}, {"platform_id": 2},
                   {"key_prefix": "ck_abcdf"}):
        assert _line(**change) != base, change
    # moving text between neighbouring fields changes the line (length prefixes)
    assert _line(method="Freeze", resource="Account|account:1") != base
    assert _line(before='{"a":1}', after="") != base


def test_the_chain_links():
    one = audit.link(audit.GENESIS, _line())
    assert one != audit.link(audit.GENESIS, _line(seq=2))
    assert audit.link(one, _line(seq=2)) != audit.link(audit.GENESIS, _line(seq=2))
