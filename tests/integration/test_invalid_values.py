"""Hostile values of each kind the contract carries, on SplitService and PayoutService:
timestamps, time zones, page tokens, rule-set versions, account refs and order parties.
Each answers INVALID_ARGUMENT with its field path (never INTERNAL) and changes nothing,
and the bounds themselves are accepted. Regressions of what the outside review of issue 9
and the API fuzz test (test_fuzz.py) found answering INTERNAL.

The world: a CNY custodial account, a platform account, two sellers, a marketing account
and the rule set "default": 10% to `platform` at once, the rest to the order's `seller`
party held until SHIPPED, plus the order's platform coupons paid to the seller from
`marketing`; a day counter of the seller's orders in the rule set's time zone.
"""

from __future__ import annotations

import base64
import datetime as dt
import textwrap
import time

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from clearing import values
from clearing.api import rules_proto
from clearing.v1 import ledger_pb2 as lpb
from clearing.v1 import payout_pb2 as ppb
from clearing.v1 import rule_set_pb2
from clearing.v1 import split_pb2 as pb
from tests.payout_support import Payouts
from tests.split_support import Splits, new_key
from tests.support import Client, admin_cli, details, new_admin_key, rid

UTC = dt.timezone.utc
YEAR_1 = -62_135_596_800
YEAR_9999_END = 253_402_300_799
INT64_MAX, INT64_MIN = 2**63 - 1, -2**63
VERSION_MAX = 2**31 - 1
PAID_TIME_MIN = 946_684_800  # 2000-01-01T00:00:00Z

RULE_SET = """
name: default
currency_code: CNY
party_roles: [seller]
counters:
  - {name: seller_orders, metric: COUNTER_METRIC_ORDER_COUNT, period: COUNTER_PERIOD_DAY,
     party_role: seller, time_zone: TIME_ZONE}
rules:
  - rule_name: main
    priority: 1
    shares:
      - {label: platform, type: SHARE_TYPE_RATIO, ratio_bps: 1000,
         receiver: {account_ref: platform}}
      - label: seller
        type: SHARE_TYPE_REMAINDER
        receiver: {party_role: seller}
        release: {steps: [{event_name: SHIPPED, fraction_bps: 10000}]}
    subsidies:
      - {label: coupon, source_account_ref: marketing, basis: SUBSIDY_BASIS_PLATFORM_COUPONS,
         target: SUBSIDY_TARGET_RECEIVER, receiver: {party_role: seller}}
"""

BAD_TIMESTAMPS = [
    pytest.param((1_796_414_400, -1), id="negative-nanos"),
    pytest.param((1_796_414_400, 1_000_000_000), id="nanos-1e9"),
    pytest.param((1_796_414_400, -2**31), id="nanos-int32-min"),
    pytest.param((YEAR_1 - 1, 0), id="before-year-1"),
    pytest.param((YEAR_9999_END + 1, 0), id="after-year-9999"),
    pytest.param((INT64_MIN, 0), id="seconds-int64-min"),
    pytest.param((INT64_MAX, 0), id="seconds-int64-max"),
]
FOLDERS_AND_PATHS = ["America", "Asia", "Etc", "UTC/../x", "a\0b", "../../etc/passwd",
                     "zone.tab", "America/"]


def _ts(seconds: int, nanos: int = 0):
    from google.protobuf.timestamp_pb2 import Timestamp
    return Timestamp(seconds=seconds, nanos=nanos)


class World:
    def __init__(self, client, splits, approver, payouts, ids, platform):
        self.client, self.splits, self.approver = client, splits, approver
        self.payouts, self.ids, self.platform = payouts, ids, platform

    def order(self, **over) -> pb.Order:
        return pb.Order(**{"order_id": rid(), "amount_minor": 10_000, "currency_code": "CNY",
                           "channel": "WECHAT_PAY", "parties": {"seller": "seller-1"},
                           **over})


async def _publish(w: World, text: str, *, activate: bool = True) -> rule_set_pb2.RuleSet:
    msg = rules_proto.rule_set_proto_from_yaml(textwrap.dedent(text))
    published = (await w.splits.call("PublishRuleSet", pb.PublishRuleSetRequest(
        request_id=rid(), rule_set=msg))).rule_set
    if activate:
        await w.approver.call("ActivateRuleSet", pb.ActivateRuleSetRequest(
            request_id=rid(), rule_set_name=published.name,
            rule_set_version=published.version))
    return published


@pytest.fixture
async def world(channel, client: Client, database_url, platform) -> World:
    ids = {}
    for ref, kind in (("custodial", lpb.ACCOUNT_KIND_CUSTODIAL),
                      ("platform", lpb.ACCOUNT_KIND_PLATFORM),
                      ("marketing", lpb.ACCOUNT_KIND_MARKETING),
                      ("seller-1", lpb.ACCOUNT_KIND_MERCHANT),
                      ("seller-2", lpb.ACCOUNT_KIND_MERCHANT)):
        extra = {"allow_negative": True} if kind == lpb.ACCOUNT_KIND_MARKETING else {}
        ids[ref] = (await client.open(ref, kind=kind, **extra)).account_id
    w = World(client, Splits(channel, platform.key),
              Splits(channel, await new_key(database_url, platform.platform_id, {"approver"})),
              Payouts(channel, platform.key), ids, platform)
    await _publish(w, RULE_SET.replace("TIME_ZONE", "Asia/Shanghai"))
    return w


async def _invalid(call, fields: list[str], reason: str | None = None) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    err = caught.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
    got_reason, got_fields = details(err)
    assert got_fields == fields, (got_fields, err.details())
    if reason is not None:
        assert got_reason == reason
    return err


async def _not_split(w: World, order_id: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await w.splits.call("GetSplit", pb.GetSplitRequest(order_id=order_id))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


# ---- timestamps ---------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", BAD_TIMESTAMPS)
async def test_a_bad_paid_time_is_invalid_on_every_split_method(world: World, bad):
    w = world
    order = w.order(paid_time=_ts(*bad))
    await _invalid(w.splits.call("Split", pb.SplitRequest(request_id=rid(), order=order)),
                   ["order.paid_time"])
    await _invalid(w.splits.call("PreviewSplit", pb.PreviewSplitRequest(order=order)),
                   ["order.paid_time"])
    good = w.order()
    batch = await w.splits.call("SplitBatch", pb.SplitBatchRequest(request_id=rid(), requests=[
        pb.SplitRequest(request_id=rid(), order=order),
        pb.SplitRequest(request_id=rid(), order=good)]))
    bad_outcome, good_outcome = batch.outcomes
    assert bad_outcome.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert [v.field for v in bad_outcome.error.field_violations] == ["order.paid_time"]
    assert good_outcome.split.legs[0].amount_minor == 1_000  # one bad order fails alone
    streamed = [r async for r in w.splits.stub.SplitStream(
        iter([pb.SplitStreamRequest(request_id=rid(), order=order)]),
        metadata=w.splits.metadata, timeout=30)]
    assert [v.field for v in streamed[0].outcome.error.field_violations] == ["order.paid_time"]
    await _not_split(w, order.order_id)


async def test_paid_time_bounds(world: World):
    """2000-01-01T00:00:00Z and 300 s ahead are accepted; one second before and after are
    not (an order "paid" in year 1 made counters of zones west of UTC overflow)."""
    w = world
    now = int(time.time())
    for seconds in (PAID_TIME_MIN, now - 86_400, now + 290):
        split = await w.splits.split(w.order(paid_time=_ts(seconds)))
        assert split.order.paid_time.seconds == seconds
    for seconds in (PAID_TIME_MIN - 1, YEAR_1, now + 400):
        order = w.order(paid_time=_ts(seconds))
        await _invalid(w.splits.call("Split", pb.SplitRequest(request_id=rid(), order=order)),
                       ["order.paid_time"])
        await _not_split(w, order.order_id)


async def test_year_one_with_a_counter_west_of_utc_is_refused_not_a_crash(world: World):
    w = world
    await _publish(w, RULE_SET.replace("TIME_ZONE", "America/New_York"))
    await _invalid(w.splits.call("PreviewSplit", pb.PreviewSplitRequest(
        order=w.order(paid_time=_ts(YEAR_1)))), ["order.paid_time"])
    split = await w.splits.split(w.order())  # the zone itself is fine: the order is counted
    assert [leg.amount_minor for leg in split.legs] == [1_000, 9_000]


@pytest.mark.parametrize("bad", BAD_TIMESTAMPS)
async def test_a_bad_rule_window_is_a_rule_set_problem(world: World, bad):
    w = world
    msg = rules_proto.rule_set_proto_from_yaml(
        textwrap.dedent(RULE_SET.replace("TIME_ZONE", "UTC")))
    msg.rules[0].start_time.CopyFrom(_ts(*bad))
    msg.rules[0].end_time.CopyFrom(_ts(*bad))
    await _invalid(w.splits.call("PublishRuleSet", pb.PublishRuleSetRequest(
        request_id=rid(), rule_set=msg)),
        ["rule_set.rules[0].start_time", "rule_set.rules[0].end_time"], "RULE_SET_INVALID")
    listed = await w.splits.call("ListRuleSets", pb.ListRuleSetsRequest(
        rule_set_name="default"))
    assert [r.version for r in listed.rule_sets] == [1]  # nothing filed


async def test_rule_windows_at_the_bounds_are_filed(world: World):
    w = world
    msg = rules_proto.rule_set_proto_from_yaml(
        textwrap.dedent(RULE_SET.replace("TIME_ZONE", "UTC")))
    msg.rules[0].start_time.CopyFrom(_ts(YEAR_1, 0))
    msg.rules[0].end_time.CopyFrom(_ts(YEAR_9999_END, 999_999_999))
    filed = (await w.splits.call("PublishRuleSet", pb.PublishRuleSetRequest(
        request_id=rid(), rule_set=msg))).rule_set
    assert filed.version == 2
    assert (filed.rules[0].start_time.seconds, filed.rules[0].end_time.nanos) == (
        YEAR_1, 999_999_999)


@pytest.mark.parametrize("bad", BAD_TIMESTAMPS)
async def test_a_bad_event_time_is_invalid_and_releases_nothing(world: World, bad):
    w = world
    split = await w.splits.split(w.order())
    await _invalid(w.splits.call("ReleaseSplit", pb.ReleaseSplitRequest(
        request_id=rid(), order_id=split.order_id, event_name="SHIPPED",
        event_time=_ts(*bad))), ["event_time"])
    after = (await w.splits.call("GetSplit", pb.GetSplitRequest(
        order_id=split.order_id))).split
    assert after.held_minor == 9_000 and len(after.actions) == 1


async def test_the_event_time_is_recorded_in_the_release(world: World):
    """The request's event_time is the action's and the released step's time; without one
    they are the commit time; at most 300 s ahead."""
    w = world
    first, second, third = [await w.splits.split(w.order()) for _ in range(3)]
    shipped_at = _ts(1_796_000_000, 123_000)
    done = await w.splits.call("ReleaseSplit", pb.ReleaseSplitRequest(
        request_id=rid(), order_id=first.order_id, event_name="SHIPPED",
        event_time=shipped_at))
    assert done.action.event_time == shipped_at
    assert done.split.legs[1].release_steps[0].release_time == shipped_at
    read = (await w.splits.call("GetSplit", pb.GetSplitRequest(
        order_id=first.order_id))).split
    assert read.actions[1].event_time == shipped_at
    assert read.legs[1].release_steps[0].release_time == shipped_at

    now = await w.splits.call("ReleaseSplit", pb.ReleaseSplitRequest(
        request_id=rid(), order_id=second.order_id, event_name="SHIPPED"))
    assert now.action.event_time == now.action.create_time
    assert now.split.legs[1].release_steps[0].release_time == now.action.create_time

    soon = _ts(int(time.time()) + 290)
    ahead = await w.splits.call("ReleaseSplit", pb.ReleaseSplitRequest(
        request_id=rid(), order_id=third.order_id, fraction_bps=5000, event_time=soon))
    assert ahead.action.event_time == soon
    await _invalid(w.splits.call("ReleaseSplit", pb.ReleaseSplitRequest(
        request_id=rid(), order_id=third.order_id, fraction_bps=5000,
        event_time=_ts(int(time.time()) + 400))), ["event_time"])


@pytest.mark.parametrize("bad", BAD_TIMESTAMPS)
async def test_bad_list_payouts_times_are_invalid(world: World, bad):
    await _invalid(world.payouts.call("ListPayouts", ppb.ListPayoutsRequest(
        start_time=_ts(*bad), end_time=_ts(*bad))), ["start_time", "end_time"])


# ---- time zones ---------------------------------------------------------------------------------

@pytest.mark.parametrize("zone", FOLDERS_AND_PATHS)
async def test_a_time_zone_that_is_not_a_zone_is_invalid(world: World, zone):
    w = world
    await _invalid(w.payouts.call("SetPayoutSchedule", ppb.SetPayoutScheduleRequest(
        request_id=rid(), schedule=ppb.PayoutSchedule(
            account_id=w.ids["seller-1"], cycle=ppb.PAYOUT_CYCLE_T_PLUS_1, time_zone=zone))),
        ["schedule.time_zone"])
    msg = rules_proto.rule_set_proto_from_yaml(
        textwrap.dedent(RULE_SET.replace("TIME_ZONE", "UTC")))
    msg.counters[0].time_zone = zone
    await _invalid(w.splits.call("PublishRuleSet", pb.PublishRuleSetRequest(
        request_id=rid(), rule_set=msg)), ["rule_set.counters[0].time_zone"],
        "RULE_SET_INVALID")


async def test_an_empty_time_zone_is_the_default(world: World):
    w = world
    saved = (await w.payouts.call("SetPayoutSchedule", ppb.SetPayoutScheduleRequest(
        request_id=rid(), schedule=ppb.PayoutSchedule(
            account_id=w.ids["seller-1"], cycle=ppb.PAYOUT_CYCLE_T_PLUS_1)))).schedule
    assert saved.time_zone == "Asia/Shanghai"
    msg = rules_proto.rule_set_proto_from_yaml(
        textwrap.dedent(RULE_SET.replace("TIME_ZONE", "UTC")))
    msg.counters[0].time_zone = ""
    assert (await w.splits.call("PublishRuleSet", pb.PublishRuleSetRequest(
        request_id=rid(), rule_set=msg))).rule_set.version == 2


async def test_payout_config_refuses_a_time_zone_folder(platform, database_url, running):
    admin_key = await new_admin_key(database_url)
    for zone in ("America", "UTC/../x"):
        code, _, err = await admin_cli(running.port, admin_key, "platform", "payout-config",
                                       platform.name, "--time-zone", zone)
        assert code != 0 and "time_zone:" in err and "IANA" in err, err
        assert "Traceback" not in err, err
    code, out, err = await admin_cli(running.port, admin_key, "platform", "payout-config",
                                     platform.name, "--time-zone", "Europe/Paris")
    assert code == 0 and "time_zone: Europe/Paris" in out, err


# ---- page tokens --------------------------------------------------------------------------------

def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


async def test_forged_and_foreign_page_tokens_are_invalid_on_every_list(world: World):
    w = world
    pid = w.platform.platform_id
    for amount in (150, 250):  # two payouts and two rule-set versions: each listing pages
        await w.client.transfer(w.ids["custodial"], w.ids["seller-1"], amount * 100)
    await w.payouts.bind(w.ids["seller-1"])
    for amount in (150, 250):
        await w.payouts.request(w.ids["seller-1"], amount)
    await _publish(w, RULE_SET.replace("TIME_ZONE", "UTC"), activate=False)
    real = {
        "ListPayouts": (await w.payouts.call("ListPayouts", ppb.ListPayoutsRequest(
            page_size=1))).next_page_token,
        "ListRuleSets": (await w.splits.call("ListRuleSets", pb.ListRuleSetsRequest(
            page_size=1))).next_page_token,
        "ListAccounts": (await w.client.call("ListAccounts", lpb.ListAccountsRequest(
            page_size=1))).next_page_token,
    }
    assert all(real.values()), real
    lists = {
        "ListPayouts": lambda t: w.payouts.call("ListPayouts", ppb.ListPayoutsRequest(
            page_token=t)),
        "ListRuleSets": lambda t: w.splits.call("ListRuleSets", pb.ListRuleSetsRequest(
            page_token=t)),
        "ListAccounts": lambda t: w.client.call("ListAccounts", lpb.ListAccountsRequest(
            page_token=t)),
    }
    forged = [  # in the server's format, digest right
        values.encode_page_token("payouts", pid, 1796414400000000, 2**63),  # id > int64
        values.encode_page_token("payouts", pid, 2**63, 1),
        values.encode_page_token("payouts", pid, 2**62, 1),  # after year 9999
        values.encode_page_token("payouts", pid, 1796414400000000, 0),
        values.encode_page_token("payouts", pid, "+1", 1),
        values.encode_page_token("payouts", pid, 1),
        values.encode_page_token("rule_sets", pid, 2**63),
        values.encode_page_token("rule_sets", pid, " 1"),
        values.encode_page_token("accounts", pid, 2**64),
        values.encode_page_token("accounts", pid, "1_0"),
        _b64(f"payouts:{pid}:1796414400000000:1"),  # the old format, no digest
        "garbage", "%%%", "\u00e9t\u00e9", "a\0b", "x" * 5000,
    ]
    for name, call in lists.items():
        for token in forged + [t for other, t in real.items() if other != name] + [
                real[name][:-1], real[name][:-2], real[name] + "AA"]:
            await _invalid(call(token), ["page_token"])
        await call(real[name])  # its own token pages
    # the bounds: the largest positions are a valid (empty) page
    for name, token in (("ListAccounts", values.encode_page_token("accounts", pid, INT64_MAX)),
                        ("ListRuleSets", values.encode_page_token("rule_sets", pid, INT64_MAX)),
                        ("ListPayouts", values.encode_page_token("payouts", pid, 1, INT64_MAX))):
        page = await lists[name](token)
        assert not page.next_page_token


# ---- rule-set versions, refs and parties --------------------------------------------------------

async def test_versions_beyond_the_largest_are_invalid(world: World):
    w = world
    for version in (VERSION_MAX + 1, INT64_MAX):
        await _invalid(w.splits.call("GetRuleSet", pb.GetRuleSetRequest(
            rule_set_name="default", rule_set_version=version)), ["rule_set_version"])
        await _invalid(w.splits.call("PreviewSplit", pb.PreviewSplitRequest(
            order=w.order(), rule_set_version=version)), ["rule_set_version"])
        await _invalid(w.approver.call("ActivateRuleSet", pb.ActivateRuleSetRequest(
            request_id=rid(), rule_set_name="default", rule_set_version=version)),
            ["rule_set_version"])
        await _invalid(w.approver.call("ActivateRuleSet", pb.ActivateRuleSetRequest(
            request_id=rid(), rule_set_name="default", rule_set_version=1,
            expected_active_version=version)), ["expected_active_version"])
        msg = rules_proto.rule_set_proto_from_yaml(
            textwrap.dedent(RULE_SET.replace("TIME_ZONE", "UTC")))
        msg.rules[0].shares[1].receiver.rule_set.rule_set_name = "default"
        msg.rules[0].shares[1].receiver.rule_set.rule_set_version = version
        await _invalid(w.splits.call("PublishRuleSet", pb.PublishRuleSetRequest(
            request_id=rid(), rule_set=msg)),
            ["rule_set.rules[0].shares[1].receiver.rule_set.rule_set_version",
             "rule_set.rules[0].shares[1].receiver.rule_set"],  # and: no such version
            "RULE_SET_INVALID")
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # the largest is only not there
        await w.splits.call("GetRuleSet", pb.GetRuleSetRequest(
            rule_set_name="default", rule_set_version=VERSION_MAX))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_an_account_ref_with_nul_is_a_rule_set_problem(world: World):
    w = world
    msg = rules_proto.rule_set_proto_from_yaml(
        textwrap.dedent(RULE_SET.replace("TIME_ZONE", "UTC")))
    msg.rules[0].shares[0].receiver.account_ref = "plat\0form"
    msg.rules[0].subsidies[0].source_account_ref = "m" * 129
    await _invalid(w.splits.call("PublishRuleSet", pb.PublishRuleSetRequest(
        request_id=rid(), rule_set=msg, validate_only=True)),
        ["rule_set.rules[0].shares[0].receiver.account_ref",
         "rule_set.rules[0].subsidies[0].source_account_ref"], "RULE_SET_INVALID")


@pytest.mark.parametrize("ref, why", [("custodial", "custodial account"),
                                      ("marketing", "subsidy's source")])
async def test_a_party_cannot_be_the_account_that_pays_its_leg(world: World, ref, why):
    """A party naming the custodial account (which pays the shares) or the subsidy's
    source made a leg from an account to itself: the batch it shared failed INTERNAL."""
    w = world
    coupons = [pb.Coupon(coupon_id="c", amount_minor=100, funding=pb.COUPON_FUNDING_PLATFORM)]
    bad = w.order(parties={"seller": ref}, coupons=coupons)
    err = await _invalid(w.splits.call("Split", pb.SplitRequest(request_id=rid(), order=bad)),
                         ["order.parties[seller]"], "INVALID_ORDER")
    assert why in err.details()
    good = w.order()
    batch = await w.splits.call("SplitBatch", pb.SplitBatchRequest(request_id=rid(), requests=[
        pb.SplitRequest(request_id=rid(), order=good),
        pb.SplitRequest(request_id=rid(), order=w.order(parties={"seller": ref},
                                                        coupons=coupons))]))
    assert batch.outcomes[0].split.split_id and batch.outcomes[1].error.reason == "INVALID_ORDER"
    await _not_split(w, bad.order_id)
    assert (await w.client.verify()).ok


# ---- the status itself --------------------------------------------------------------------------

async def test_a_thousand_problems_still_make_a_readable_status(world: World):
    """Every violation of a huge request used to go into the trailers, over the clients'
    8 KiB limit: the call then failed with RESOURCE_EXHAUSTED and no detail. The status
    shows the first problems and counts the others."""
    w = world
    order = w.order(tags=["t" * 65] * 1000)  # 1001 problems: the count, then each tag
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await w.splits.call("Split", pb.SplitRequest(request_id=rid(), order=order))
    err = caught.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert err.details() == "order.tags: more than 32 tags (+1000 more)"
    status = rpc_status.from_call(err)
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    fields = details(err)[1]
    assert fields == ["order.tags"] + [f"order.tags[{i}]" for i in range(len(fields) - 1)]
    assert 10 < len(fields) < 1001
    assert info.metadata["field_violations_left_out"] == str(1001 - len(fields))
    await _not_split(w, order.order_id)


# ---- amounts ------------------------------------------------------------------------------------

async def test_rule_set_and_coupon_amounts_beyond_the_maximum_are_invalid(world: World):
    """A FIXED subsidy of INT64_MAX was filed, then every split by it answered INTERNAL
    (its legs did not fit the message); a coupon of INT64_MAX did the same through a
    PLATFORM_COUPONS subsidy. Amounts are at most 10^15 (orders and coupons 9 x 10^14)."""
    w = world
    fixed = RULE_SET.replace("TIME_ZONE", "UTC").replace(
        "basis: SUBSIDY_BASIS_PLATFORM_COUPONS,",
        "basis: SUBSIDY_BASIS_FIXED, fixed_minor: AMOUNT,")
    for bad in (10**15 + 1, INT64_MAX):
        msg = rules_proto.rule_set_proto_from_yaml(
            textwrap.dedent(fixed.replace("AMOUNT", str(bad))))
        await _invalid(w.splits.call("PublishRuleSet", pb.PublishRuleSetRequest(
            request_id=rid(), rule_set=msg)), ["rule_set.rules[0].subsidies[0].fixed_minor"],
            "RULE_SET_INVALID")
    filed = await _publish(w, fixed.replace("AMOUNT", str(10**15)))
    preview = await w.splits.preview(w.order(), rule_set_version=filed.version)
    assert [leg.amount_minor for leg in preview.legs] == [1_000, 9_000, 10**15]

    order_max = 900_000_000_000_000
    for coupons, field in (([INT64_MAX], "order.coupons[0].amount_minor"),
                           ([order_max + 1], "order.coupons[0].amount_minor"),
                           ([order_max // 2 + 1, order_max // 2], "order.coupons")):
        order = w.order(coupons=[pb.Coupon(coupon_id=f"c{i}", amount_minor=a,
                                           funding=pb.COUPON_FUNDING_PLATFORM)
                                 for i, a in enumerate(coupons)])
        await _invalid(w.splits.call("PreviewSplit", pb.PreviewSplitRequest(
            order=order, rule_set_version=1)), [field])
    order = w.order(coupons=[pb.Coupon(coupon_id="c", amount_minor=order_max,
                                       funding=pb.COUPON_FUNDING_PLATFORM)])
    preview = await w.splits.preview(order, rule_set_version=1)
    assert [leg.amount_minor for leg in preview.legs] == [1_000, 9_000, order_max]
