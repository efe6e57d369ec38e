"""clearing.values: the one check per kind of value. Each bound is accepted at its exact
value and refused one past it; no input raises anything but the documented error."""

from __future__ import annotations

import base64
import datetime as dt

import pytest

from clearing import values
from clearing.errors import InvalidArgument

UTC = dt.timezone.utc
YEAR_1 = -62_135_596_800          # 0001-01-01T00:00:00Z
YEAR_9999_END = 253_402_300_799   # 9999-12-31T23:59:59Z


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


# ---- timestamps ---------------------------------------------------------------------------------

@pytest.mark.parametrize("seconds, nanos", [
    (YEAR_1, 0), (YEAR_9999_END, 999_999_999), (0, 0), (-1, 999_999_999),
    (1_796_414_400, 123_456_789)])
def test_timestamps_in_range_are_accepted(seconds, nanos):
    assert values.timestamp_problem(seconds, nanos) is None


@pytest.mark.parametrize("seconds, nanos, words", [
    (0, -1, "nanos"), (0, 1_000_000_000, "nanos"), (0, 2**31 - 1, "nanos"),
    (0, -2**31, "nanos"), (YEAR_1 - 1, 0, "0001-01-01"), (YEAR_9999_END + 1, 0, "9999"),
    (-2**63, 0, "0001-01-01"), (2**63 - 1, 0, "9999")])
def test_timestamps_out_of_range_are_refused(seconds, nanos, words):
    problem = values.timestamp_problem(seconds, nanos)
    assert problem is not None and words in problem


def test_timestamp_datetime_is_exact_to_the_microsecond():
    assert values.timestamp_datetime(YEAR_1, 0) == dt.datetime(1, 1, 1, tzinfo=UTC)
    assert values.timestamp_datetime(YEAR_9999_END, 999_999_999) == dt.datetime(
        9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    assert values.timestamp_datetime(-1, 999_999_999) == dt.datetime(
        1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    assert values.timestamp_datetime(1, 1_999) == dt.datetime(1970, 1, 1, 0, 0, 1, 1,
                                                              tzinfo=UTC)


# ---- time zones ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["Asia/Shanghai", "UTC", "America/New_York", "Etc/GMT+8",
                                  "America/Argentina/Buenos_Aires", "Europe/Paris"])
def test_time_zones_of_the_database_are_accepted(name):
    assert values.time_zone_problem(name) is None


@pytest.mark.parametrize("name", [
    "America", "Asia", "Etc", "America/Argentina",  # folders of the tz database
    "", "UTC/../x", "../../etc/passwd", "/etc/localtime", "Asia//Shanghai", "Asia/./Shanghai",
    "America/", "a\0b", "Asia/Shanghai\0", "zone.tab", "tzdata.zi", "Mars/Olympus",
    "asia shanghai", "A" * 65, "\u00e9t\u00e9", "Asia/Shanghai\n"])
def test_anything_else_is_refused(name):
    assert values.time_zone_problem(name) is not None


def test_a_time_zone_name_of_64_characters_is_checked_not_cut():
    assert "at most 64" in values.time_zone_problem("A/" + "b" * 63)
    assert "not an IANA time zone" in values.time_zone_problem("A/" + "b" * 62)


# ---- texts --------------------------------------------------------------------------------------

def test_texts():
    assert values.text_problem("x" * 128, 128) is None
    assert values.text_problem("", 128) is None
    assert values.text_problem("x" * 129, 128) == "longer than 128 characters"
    assert values.text_problem("a\0b", 128) == "must not contain NUL characters"


# ---- page tokens --------------------------------------------------------------------------------

def test_page_tokens_round_trip_at_their_bounds():
    for positions in ((0,), (2**63 - 1,), (1_796_414_400_000_000, 7), (0, 2**63 - 1)):
        token = values.encode_page_token("payouts", 42, *positions)
        assert values.decode_page_token(token, "payouts", 42, len(positions)) == positions
    assert values.decode_page_token("", "payouts", 42, 2) is None


def _forged(*parts) -> str:
    """A token in the server's format with a correct digest, made up by the caller."""
    kind, scope, *positions = parts
    return values.encode_page_token(kind, scope, *positions)


@pytest.mark.parametrize("token", [
    _forged("accounts", 42, 2**63), _forged("accounts", 42, 10**30),   # beyond int64
    _forged("accounts", 42, -1), _forged("accounts", 42, "+1"), _forged("accounts", 42, " 1"),
    _forged("accounts", 42, "1_0"), _forged("accounts", 42, "01"),
    _forged("accounts", 42, "\u0663"), _forged("accounts", 42, "1.5"),
    _forged("accounts", 42, ""), _forged("accounts", 42), _forged("accounts", 42, 1, 2),
    _forged("entries", 42, 1), _forged("accounts", 43, 1),             # another listing
    _forged("accounts", "042", 1), _forged("accounts", -42, 1),
    _b64("accounts:42:1"),                                              # no digest
    _b64("accounts:42:1:000000000000"),                                 # a wrong digest
    "garbage", "%%%", "====", "\u00e9t\u00e9", "a\0b", "A" * 300,
    base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode()])
def test_any_other_token_is_invalid_on_page_token(token):
    with pytest.raises(InvalidArgument) as caught:
        values.decode_page_token(token, "accounts", 42)
    assert [(v.field, v.description) for v in caught.value.violations] == [
        ("page_token", "not a token from this listing")]


def test_a_truncated_or_edited_token_is_refused_not_read_as_another_page():
    token = values.encode_page_token("accounts", 42, 123_456)
    for cut in range(1, len(token)):
        with pytest.raises(InvalidArgument):
            values.decode_page_token(token[:cut], "accounts", 42)
    for i in range(len(token)):
        for c in "AQg_-":
            edited = token[:i] + c + token[i + 1:]
            if edited != token:
                with pytest.raises(InvalidArgument):
                    values.decode_page_token(edited, "accounts", 42)
