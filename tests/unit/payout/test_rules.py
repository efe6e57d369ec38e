"""The payout rules without a server: the fee, cutting into bank transfers, the limits of
one payout (each accepted at its boundary, refused one unit past it), the local day of the
daily maximum, who may be paid out, masking and attempt keys. Expected values from the
rules in payout/model.py's docstring and REQUIREMENTS.md."""

from __future__ import annotations

import datetime as dt

import pytest

from clearing.errors import FailedPrecondition, InvalidArgument, InvariantViolation
from clearing.ledger.model import AccountKind, AccountStatus
from clearing.payout import service
from clearing.payout.model import PayoutConfig, PayoutState, attempt_key, cut, mask_number
from clearing.limits import TRANSFERS_PER_PAYOUT_MAX

UTC = dt.timezone.utc


def config(**kw) -> PayoutConfig:
    base = dict(platform_id=1, currency_code="CNY", fee_fixed_minor=0, fee_bps=0,
                fee_account_id=0, min_amount_minor=1, max_amount_minor=10**12,
                daily_max_minor=10**13, review_threshold_minor=10**12,
                bank_transfer_max_minor=50_000_000, time_zone="Asia/Shanghai")
    base.update(kw)
    return PayoutConfig(**base)


@pytest.mark.parametrize("net,transfer_max,parts", [
    (120_000_000, 50_000_000, [50_000_000, 50_000_000, 20_000_000]),
    (100_000_000, 50_000_000, [50_000_000, 50_000_000]),  # exact multiple: no transfer of 0
    (50_000_000, 50_000_000, [50_000_000]),
    (50_000_001, 50_000_000, [50_000_000, 1]),
    (49_999_999, 50_000_000, [49_999_999]),
    (1, 50_000_000, [1]), (1, 1, [1]), (3, 1, [1, 1, 1])])
def test_cut(net, transfer_max, parts):
    assert cut(net, transfer_max) == parts


@pytest.mark.parametrize("net,transfer_max", [(0, 10), (-5, 10), (10, 0), (10, -1)])
def test_cut_refuses_non_positive_amounts(net, transfer_max):
    with pytest.raises(InvariantViolation) as err:
        cut(net, transfer_max)
    assert str(err.value) == "cut: amounts must be positive"


def test_fee_is_fixed_plus_floored_basis_points_and_zero_without_an_account():
    c = config(fee_fixed_minor=3, fee_bps=60, fee_account_id=9)
    assert c.fee(12_345) == 3 + 74  # 0.6% of 12,345 = 74.07, floored
    assert c.fee(16_666) == 3 + 99  # 99.996 -> 99
    assert c.fee(1) == 3
    assert config(fee_fixed_minor=3, fee_bps=60, fee_account_id=0).fee(12_345) == 0
    assert config(fee_bps=10_000, fee_account_id=9).fee(500) == 500


def _refusal(cfg: PayoutConfig, amount: int, description: str = "") -> str:
    with pytest.raises(InvalidArgument) as err:
        service._check_amount(cfg, amount)
    assert [v.field for v in err.value.violations] == ["amount_minor"]
    if description:
        assert err.value.violations[0].description == description
    return err.value.reason


def test_minimum_and_maximum_are_accepted_exactly():
    cfg = config(min_amount_minor=100, max_amount_minor=4_000)
    assert _refusal(cfg, 99, "below the minimum payout of 100") == "AMOUNT_BELOW_MINIMUM"
    assert service._check_amount(cfg, 100) == 0
    assert service._check_amount(cfg, 4_000) == 0
    assert _refusal(cfg, 4_001, "above the maximum payout of 4000") == "AMOUNT_ABOVE_MAXIMUM"


def test_the_amount_must_be_above_its_fee():
    cfg = config(fee_fixed_minor=50, fee_account_id=9)
    assert _refusal(cfg, 50, "not above the payout fee of 50") == "AMOUNT_NOT_ABOVE_FEE"
    assert _refusal(cfg, 49) == "AMOUNT_NOT_ABOVE_FEE"
    assert service._check_amount(cfg, 51) == 50  # returns the fee


def test_at_most_the_maximum_number_of_bank_transfers():
    assert TRANSFERS_PER_PAYOUT_MAX == 1000
    cfg = config(fee_fixed_minor=7, fee_account_id=9, bank_transfer_max_minor=100)
    # net = amount - fee; 1000 transfers of 100 = 100,000 net: accepted; one unit more needs
    # a 1001st transfer
    assert service._check_amount(cfg, 100_007) == 7
    assert _refusal(cfg, 100_008, "more than 1000 bank transfers") == "AMOUNT_ABOVE_MAXIMUM"
    # a net just below a full transfer count rounds up: 99,901 net needs 1000 transfers
    assert service._check_amount(cfg, 99_908) == 7
    no_fee = config(bank_transfer_max_minor=100)
    assert service._check_amount(no_fee, 100_000) == 0
    assert _refusal(no_fee, 100_001) == "AMOUNT_ABOVE_MAXIMUM"


@pytest.mark.parametrize("now,zone,start", [
    # 23:30 in Shanghai on 10 March is 15:30 UTC: the day began at 16:00 UTC on 9 March
    (dt.datetime(2099, 3, 10, 15, 30, tzinfo=UTC), "Asia/Shanghai",
     dt.datetime(2099, 3, 9, 16, 0, tzinfo=UTC)),
    # 00:30 in Shanghai on 11 March is 16:30 UTC on 10 March: its day began at 16:00
    (dt.datetime(2099, 3, 10, 16, 30, tzinfo=UTC), "Asia/Shanghai",
     dt.datetime(2099, 3, 10, 16, 0, tzinfo=UTC)),
    # exactly midnight is the start of the new day
    (dt.datetime(2099, 3, 10, 16, 0, tzinfo=UTC), "Asia/Shanghai",
     dt.datetime(2099, 3, 10, 16, 0, tzinfo=UTC)),
    (dt.datetime(2099, 1, 15, 4, 30, 59, 999_999, tzinfo=UTC), "America/New_York",
     dt.datetime(2099, 1, 14, 5, 0, tzinfo=UTC)),
    (dt.datetime(2099, 1, 15, 5, 30, tzinfo=UTC), "America/New_York",
     dt.datetime(2099, 1, 15, 5, 0, tzinfo=UTC)),
    (dt.datetime(2099, 1, 15, 23, 59, 59, tzinfo=UTC), "UTC",
     dt.datetime(2099, 1, 15, 0, 0, tzinfo=UTC))])
def test_day_start_is_local_midnight(now, zone, start):
    got = service._day_start(now, zone)
    assert got == start
    assert got.utcoffset() is not None  # aware


def _acct(kind=AccountKind.MERCHANT, status=AccountStatus.ACTIVE):
    return {"account_id": 42, "kind": kind, "status": status}


def test_who_may_be_paid_out():
    service.check_payable(_acct())
    service.check_payable(_acct(kind=AccountKind.ORDINARY))
    service.check_payable(_acct(status=AccountStatus.FROZEN), frozen_ok=True)
    for acct, reason in ((_acct(kind=AccountKind.CUSTODIAL), "ACCOUNT_KIND_NOT_PAYABLE"),
                         (_acct(status=AccountStatus.FROZEN), "ACCOUNT_FROZEN"),
                         (_acct(status=AccountStatus.CLOSED), "ACCOUNT_CLOSED")):
        with pytest.raises(FailedPrecondition) as err:
            service.check_payable(acct)
        assert err.value.reason == reason
        assert err.value.message == {
            "ACCOUNT_KIND_NOT_PAYABLE": "a custodial account cannot be paid out",
            "ACCOUNT_FROZEN": "account 42 is frozen",
            "ACCOUNT_CLOSED": "account 42 is closed"}[reason]
    with pytest.raises(FailedPrecondition) as err:
        service.check_payable(_acct(status=AccountStatus.CLOSED), frozen_ok=True)
    assert err.value.reason == "ACCOUNT_CLOSED"


def test_masking_attempt_keys_and_terminal_states():
    assert mask_number("6225880212341234") == "6225****1234"
    assert mask_number("12345678") == "1234****5678"
    assert attempt_key(17, 2, 3) == "po17-t2-a3"
    assert [s for s in PayoutState if s.terminal] == [PayoutState.SUCCEEDED, PayoutState.FAILED]
