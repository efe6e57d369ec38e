"""request_id (clearing.idempotency): a retry with the same id and payload answers the first
response byte for byte, success or recorded failure; another payload is REQUEST_ID_REUSED."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from clearing.v1 import ledger_pb2 as pb
from tests.support import Client, details, rid



async def test_transfer_replay_returns_first_result(client: Client):
    custodial = await client.open("c", kind=pb.ACCOUNT_KIND_CUSTODIAL)
    merchant = await client.open("m")
    key = rid()
    first = await client.transfer(custodial.account_id, merchant.account_id, 700, request_id=key)
    again = await client.transfer(custodial.account_id, merchant.account_id, 700, request_id=key)
    assert again == first
    assert (await client.balance(merchant.account_id)).posted_minor == 700


async def test_concurrent_duplicates_commit_once(client: Client):
    custodial = await client.open("c", kind=pb.ACCOUNT_KIND_CUSTODIAL)
    merchant = await client.open("m")
    key = rid()
    results = await asyncio.gather(*[
        client.transfer(custodial.account_id, merchant.account_id, 5, request_id=key)
        for _ in range(20)])
    assert len({r.transfer_id for r in results}) == 1
    assert (await client.balance(merchant.account_id)).posted_minor == 5


async def test_reuse_with_different_payload_is_already_exists(client: Client):
    custodial = await client.open("c", kind=pb.ACCOUNT_KIND_CUSTODIAL)
    merchant = await client.open("m")
    key = rid()
    await client.transfer(custodial.account_id, merchant.account_id, 700, request_id=key)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.transfer(custodial.account_id, merchant.account_id, 701, request_id=key)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert details(err.value)[0] == "REQUEST_ID_REUSED"
    # the same id on another method is a reuse too
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.call("CreateAccount", pb.CreateAccountRequest(
            request_id=key, external_ref="x", kind=pb.ACCOUNT_KIND_MERCHANT,
            owner_type=pb.OWNER_TYPE_ENTERPRISE, currency_code="CNY"))
    assert details(err.value)[0] == "REQUEST_ID_REUSED"
    assert (await client.balance(merchant.account_id)).posted_minor == 700


async def test_failed_transfer_replays_its_error(client: Client):
    custodial = await client.open("c", kind=pb.ACCOUNT_KIND_CUSTODIAL)
    merchant = await client.open("m")
    key = rid()
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.transfer(merchant.account_id, custodial.account_id, 1, request_id=key)
        assert details(err.value)[0] == "INSUFFICIENT_FUNDS"


async def test_create_account_replay(client: Client):
    req = pb.CreateAccountRequest(request_id=rid(), external_ref="once",
                                  kind=pb.ACCOUNT_KIND_MERCHANT,
                                  owner_type=pb.OWNER_TYPE_ENTERPRISE, currency_code="CNY")
    a = await client.call("CreateAccount", req)
    b = await client.call("CreateAccount", req)
    assert a.account.account_id == b.account.account_id
    listed = await client.call("ListAccounts", pb.ListAccountsRequest())
    assert [x.external_ref for x in listed.accounts] == ["once"]


async def test_request_ids_are_per_platform(client: Client, channel, database_url):
    import asyncpg, secrets
    from clearing.tenancy import create_platform
    conn = await asyncpg.connect(database_url)
    try:
        _, key = await create_platform(conn, f"p_{secrets.token_hex(5)}",
                                       frozenset({"operator"}))
    finally:
        await conn.close()
    other = Client(channel, key)
    shared = rid()
    for c in (client, other):
        cust = await c.open("c", kind=pb.ACCOUNT_KIND_CUSTODIAL)
        m = await c.open("m")
        t = await c.transfer(cust.account_id, m.account_id, 3, request_id=shared)
        assert t.amount_minor == 3


# ---- the one rule, for every write method (clearing.idempotency) ---------------------------
# A retry with the same request id and payload answers the first response byte for byte,
# even after a later action changed the resource; another payload is REQUEST_ID_REUSED; a
# recorded refusal is answered again after its cause is gone; INVALID_ARGUMENT is not
# recorded.

import dataclasses  # noqa: E402
from collections.abc import Awaitable, Callable  # noqa: E402

from google.rpc import error_details_pb2  # noqa: E402
from grpc_status import rpc_status  # noqa: E402

from clearing.api import rules_proto as rule_proto  # noqa: E402
from clearing.v1 import payout_pb2 as ppb  # noqa: E402
from clearing.v1 import rule_set_pb2  # noqa: E402
from clearing.v1 import split_pb2 as spb  # noqa: E402
from tests.payout_support import Payouts, set_config  # noqa: E402
from tests.split_support import Splits, new_key, open_accounts, order  # noqa: E402
from tests.unit.rules.examples import HELD  # noqa: E402

# The held example: 1_114 splits as PLAT_001 111 at once, SUP_2025001 1_003 held (501 on
# SHIPPED, 502 on RECEIVED).
HELD_ORDER_MINOR = 1_114


@dataclasses.dataclass
class World:
    client: Client  # ledger, gateway + operator
    splits: Splits  # gateway + operator
    approver: Splits
    payouts: Payouts
    payout_approver: Payouts
    ids: dict[str, int]
    database_url: str
    platform_id: int

    async def held_rule_set(self, name: str = "held") -> rule_set_pb2.RuleSet:
        msg = rule_proto.rule_set_proto_from_yaml(HELD.replace("name: held", f"name: {name}"))
        return (await self.splits.call("PublishRuleSet", spb.PublishRuleSetRequest(
            request_id=rid(), rule_set=msg))).rule_set

    async def activate(self, published: rule_set_pb2.RuleSet) -> None:
        await self.approver.activate(published.name, published.version)

    async def held_split(self) -> spb.Split:
        return await self.splits.split(order(HELD_ORDER_MINOR, rule_set_name="held"))

    async def payout_account(self, funds: int = 100_000, bind: bool = True) -> int:
        custodial = self.ids["CUSTODIAL"]
        account = (await self.client.open(f"payee-{rid()[:8]}")).account_id
        if funds:
            await self.client.transfer(custodial, account, funds)
        if bind:
            await self.payouts.bind(account)
        return account


@pytest.fixture
async def world(channel, client: Client, database_url, platform) -> World:
    ids = await open_accounts(client)
    approver_key = await new_key(database_url, platform.platform_id, {"approver"})
    w = World(client, Splits(channel, platform.key), Splits(channel, approver_key),
              Payouts(channel, platform.key), Payouts(channel, approver_key), ids,
              database_url, platform.platform_id)
    await w.activate(await w.held_rule_set())
    await set_config(database_url, platform.platform_id, review_threshold_minor=5_000)
    return w


def _bytes(message) -> bytes:
    return message.SerializeToString(deterministic=True)


def _status(err: grpc.aio.AioRpcError) -> tuple:
    """Everything a failure shows: code, message, ErrorInfo (reason, metadata), BadRequest."""
    status = rpc_status.from_call(err)
    shown: list = [err.code(), status.message]
    for d in status.details:
        for cls in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest):
            if d.Is(cls.DESCRIPTOR):
                m = cls()
                d.Unpack(m)
                shown.append(m)
    return tuple(shown)


async def _refusal(coro) -> tuple:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await coro
    return _status(err.value)


@dataclasses.dataclass
class Case:
    """One write: `send(request)` calls it; `request` is the first call, `other` the same
    request id with another payload; `later(first_response)` changes the resource."""

    send: Callable[[object], Awaitable[object]]
    request: object
    other: object
    later: Callable[[object], Awaitable[None]] | None = None


def _with(request, **changes):
    other = type(request)()
    other.CopyFrom(request)
    for k, v in changes.items():
        setattr(other, k, v)
    return other


async def _create_account(w: World) -> Case:
    req = pb.CreateAccountRequest(request_id=rid(), external_ref=f"a-{rid()[:8]}",
                                  kind=pb.ACCOUNT_KIND_MERCHANT,
                                  owner_type=pb.OWNER_TYPE_ENTERPRISE, currency_code="CNY")

    async def later(first):
        await w.client.transfer(w.ids["CUSTODIAL"], first.account.account_id, 55)
        await w.client.call("FreezeAccount", pb.FreezeAccountRequest(
            request_id=rid(), account_id=first.account.account_id, reason="later"))
    return Case(lambda r: w.client.call("CreateAccount", r), req,
                _with(req, display_name="other"), later)


async def _freeze(w: World) -> Case:
    account = (await w.client.open(f"f-{rid()[:8]}")).account_id
    req = pb.FreezeAccountRequest(request_id=rid(), account_id=account, reason="audit")

    async def later(first):
        await w.client.call("UnfreezeAccount", pb.UnfreezeAccountRequest(
            request_id=rid(), account_id=account, reason="cleared"))
    return Case(lambda r: w.client.call("FreezeAccount", r), req, _with(req, reason="x"), later)


async def _unfreeze(w: World) -> Case:
    account = (await w.client.open(f"u-{rid()[:8]}")).account_id
    await w.client.call("FreezeAccount", pb.FreezeAccountRequest(
        request_id=rid(), account_id=account, reason="audit"))
    req = pb.UnfreezeAccountRequest(request_id=rid(), account_id=account, reason="cleared")

    async def later(first):
        await w.client.call("FreezeAccount", pb.FreezeAccountRequest(
            request_id=rid(), account_id=account, reason="again"))
    return Case(lambda r: w.client.call("UnfreezeAccount", r), req, _with(req, reason="x"),
                later)


async def _close(w: World) -> Case:
    account = (await w.client.open(f"c-{rid()[:8]}")).account_id
    req = pb.CloseAccountRequest(request_id=rid(), account_id=account)
    other = (await w.client.open(f"c2-{rid()[:8]}")).account_id
    return Case(lambda r: w.client.call("CloseAccount", r), req, _with(req, account_id=other))


async def _transfer(w: World) -> Case:
    merchant = (await w.client.open(f"t-{rid()[:8]}")).account_id
    req = pb.TransferRequest(request_id=rid(), debit_account_id=w.ids["CUSTODIAL"],
                             credit_account_id=merchant, amount_minor=700, currency_code="CNY",
                             mode=pb.TRANSFER_MODE_PENDING)

    async def later(first):  # the pending transfer is posted: it is POSTED now
        await w.client.call("Transfer", pb.TransferRequest(
            request_id=rid(), mode=pb.TRANSFER_MODE_POST_PENDING, amount_minor=700,
            pending_transfer_id=first.transfer.transfer_id))
    return Case(lambda r: w.client.call("Transfer", r), req, _with(req, amount_minor=701), later)


async def _publish(w: World) -> Case:
    name = f"h-{rid()[:8]}"
    msg = rule_proto.rule_set_proto_from_yaml(HELD.replace("name: held", f"name: {name}"))
    req = spb.PublishRuleSetRequest(request_id=rid(), rule_set=msg)
    other = _with(req)
    other.rule_set.rules[0].rule_name = "changed"

    async def later(first):  # activated: its status is ACTIVE now
        await w.approver.activate(name, first.rule_set.version)
    return Case(lambda r: w.splits.call("PublishRuleSet", r), req, other, later)


async def _activate(w: World) -> Case:
    name = f"h-{rid()[:8]}"
    published = await w.held_rule_set(name)
    req = spb.ActivateRuleSetRequest(request_id=rid(), rule_set_name=name,
                                     rule_set_version=published.version)

    async def later(first):  # v2 activated: v1 is superseded now
        await w.activate(await w.held_rule_set(name))
    return Case(lambda r: w.approver.call("ActivateRuleSet", r), req,
                _with(req, comment="other"), later)


async def _split(w: World) -> Case:
    req = spb.SplitRequest(request_id=rid(), order=order(HELD_ORDER_MINOR, rule_set_name="held"))
    other = _with(req)
    other.order.memo = "other"

    async def later(first):
        await w.splits.call("ReleaseSplit", spb.ReleaseSplitRequest(
            request_id=rid(), order_id=req.order.order_id, event_name="SHIPPED"))
    return Case(lambda r: w.splits.call("Split", r), req, other, later)


async def _split_batch(w: World) -> Case:
    items = [spb.SplitRequest(request_id=rid(), order=order(HELD_ORDER_MINOR,
                                                            rule_set_name="held"))
             for _ in range(2)]
    req = spb.SplitBatchRequest(request_id=rid(), requests=items)
    other = _with(req)
    other.requests[1].order.memo = "other"

    async def later(first):
        await w.splits.call("RefundSplit", spb.RefundSplitRequest(
            request_id=rid(), order_id=items[0].order.order_id, amount_minor=100,
            currency_code="CNY",
            reason="returned"))
    return Case(lambda r: w.splits.call("SplitBatch", r), req, other, later)


async def _release(w: World) -> Case:
    split = await w.held_split()
    req = spb.ReleaseSplitRequest(request_id=rid(), order_id=split.order_id,
                                  event_name="SHIPPED")

    async def later(first):
        await w.splits.call("ReleaseSplit", spb.ReleaseSplitRequest(
            request_id=rid(), order_id=split.order_id, event_name="RECEIVED"))
    return Case(lambda r: w.splits.call("ReleaseSplit", r), req,
                _with(req, event_name="RECEIVED"), later)


async def _cancel(w: World) -> Case:
    split = await w.held_split()
    req = spb.CancelSplitRequest(request_id=rid(), order_id=split.order_id, reason="dispute")
    return Case(lambda r: w.splits.call("CancelSplit", r), req, _with(req, reason="other"))


async def _refund(w: World) -> Case:
    split = await w.held_split()
    req = spb.RefundSplitRequest(request_id=rid(), order_id=split.order_id, amount_minor=100,
                                 currency_code="CNY", reason="returned")

    async def later(first):  # a second refund: the split has refunded 200 now
        await w.splits.call("RefundSplit", spb.RefundSplitRequest(
            request_id=rid(), order_id=split.order_id, amount_minor=100, currency_code="CNY",
            reason="returned"))
    return Case(lambda r: w.splits.call("RefundSplit", r), req, _with(req, amount_minor=101),
                later)


async def _bind(w: World) -> Case:
    account = await w.payout_account(funds=0, bind=False)
    req = ppb.BindBankAccountRequest(
        request_id=rid(), account_id=account, bank_code="ICBC", bank_name="ICBC",
        account_number="6225880212341234", holder_name="Holder Co.",
        account_type=ppb.BANK_ACCOUNT_TYPE_CORPORATE, kyc_verified=True)

    async def later(first):  # another binding: the first one is REPLACED now
        await w.payouts.bind(account, number="6225880299998888")
    return Case(lambda r: w.payouts.call("BindBankAccount", r), req,
                _with(req, holder_name="Other Co."), later)


async def _schedule(w: World) -> Case:
    account = await w.payout_account(funds=0)
    req = ppb.SetPayoutScheduleRequest(request_id=rid(), schedule=ppb.PayoutSchedule(
        account_id=account, cycle=ppb.PAYOUT_CYCLE_WEEKLY, weekday=3))
    other = _with(req)
    other.schedule.weekday = 4

    async def later(first):
        await w.payouts.call("SetPayoutSchedule", ppb.SetPayoutScheduleRequest(
            request_id=rid(), schedule=ppb.PayoutSchedule(account_id=account,
                                                          cycle=ppb.PAYOUT_CYCLE_MANUAL)))
    return Case(lambda r: w.payouts.call("SetPayoutSchedule", r), req, other, later)


async def _request_payout(w: World) -> Case:
    account = await w.payout_account()
    req = ppb.RequestPayoutRequest(request_id=rid(), account_id=account, amount_minor=1_000,
                                   currency_code="CNY")

    async def later(first):  # the worker pays it: SUCCEEDED, with its attempts, now
        await w.payouts.wait_state(first.payout.payout_id, (ppb.PAYOUT_STATE_SUCCEEDED,))
    return Case(lambda r: w.payouts.call("RequestPayout", r), req,
                _with(req, amount_minor=1_001), later)


async def _in_review(w: World) -> int:
    account = await w.payout_account()
    payout = await w.payouts.request(account, 6_000)  # above the review threshold (5_000)
    assert payout.state == ppb.PAYOUT_STATE_PENDING_REVIEW
    return payout.payout_id


async def _approve(w: World) -> Case:
    payout_id = await _in_review(w)
    req = ppb.ApprovePayoutRequest(request_id=rid(), payout_id=payout_id, reason="ok")

    async def later(first):  # paid: SUCCEEDED now
        await w.payouts.wait_state(payout_id, (ppb.PAYOUT_STATE_SUCCEEDED,))
    return Case(lambda r: w.payout_approver.call("ApprovePayout", r), req,
                _with(req, reason="other"), later)


async def _reject(w: World) -> Case:
    payout_id = await _in_review(w)
    req = ppb.RejectPayoutRequest(request_id=rid(), payout_id=payout_id, reason="no")
    return Case(lambda r: w.payout_approver.call("RejectPayout", r), req,
                _with(req, reason="other"))


WRITES = {
    "CreateAccount": _create_account, "FreezeAccount": _freeze,
    "UnfreezeAccount": _unfreeze, "CloseAccount": _close, "Transfer": _transfer,
    "PublishRuleSet": _publish, "ActivateRuleSet": _activate, "Split": _split,
    "SplitBatch": _split_batch, "ReleaseSplit": _release, "CancelSplit": _cancel,
    "RefundSplit": _refund, "BindBankAccount": _bind, "SetPayoutSchedule": _schedule,
    "RequestPayout": _request_payout, "ApprovePayout": _approve, "RejectPayout": _reject,
}


@pytest.mark.parametrize("method", sorted(WRITES))
async def test_replay_answers_the_first_response_byte_for_byte(world: World, method: str):
    case = await WRITES[method](world)
    first = await case.send(case.request)
    if case.later is not None:
        await case.later(first)
    again = await case.send(case.request)
    assert _bytes(again) == _bytes(first)
    assert (await world.client.verify()).ok


@pytest.mark.parametrize("method", sorted(WRITES))
async def test_same_request_id_other_payload_is_reused(world: World, method: str):
    case = await WRITES[method](world)
    first = await case.send(case.request)
    code, _, info = (await _refusal(case.send(case.other)))[:3]
    assert (code, info.reason) == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")
    assert _bytes(await case.send(case.request)) == _bytes(first)


async def test_replayed_refusals_outlive_their_cause(world: World):
    """FAILED_PRECONDITION and NOT_FOUND are first responses: the same request id answers
    the same failure (code, message, reason, metadata) after its cause is gone."""
    w = world
    custodial = w.ids["CUSTODIAL"]
    poor = (await w.client.open(f"poor-{rid()[:8]}")).account_id
    sink = (await w.client.open(f"sink-{rid()[:8]}")).account_id
    transfer = pb.TransferRequest(request_id=rid(), debit_account_id=poor,
                                  credit_account_id=sink, amount_minor=50, currency_code="CNY",
                                  mode=pb.TRANSFER_MODE_IMMEDIATE)
    frozen = (await w.client.open(f"frz-{rid()[:8]}")).account_id
    await w.client.call("FreezeAccount", pb.FreezeAccountRequest(
        request_id=rid(), account_id=frozen, reason="audit"))
    freeze = pb.FreezeAccountRequest(request_id=rid(), account_id=frozen, reason="twice")
    full = (await w.client.open(f"full-{rid()[:8]}")).account_id
    await w.client.transfer(custodial, full, 9)
    close = pb.CloseAccountRequest(request_id=rid(), account_id=full)
    missing = f"m-{rid()[:8]}"
    activate = spb.ActivateRuleSetRequest(request_id=rid(), rule_set_name=missing,
                                          rule_set_version=1)
    no_rules = spb.SplitRequest(request_id=rid(), order=order(500, rule_set_name=missing))
    later_order = order(HELD_ORDER_MINOR, rule_set_name="held")
    release = spb.ReleaseSplitRequest(request_id=rid(), order_id=later_order.order_id,
                                      event_name="SHIPPED")
    unbound = await w.payout_account(bind=False)
    no_bank = ppb.RequestPayoutRequest(request_id=rid(), account_id=unbound, amount_minor=100,
                                       currency_code="CNY")
    broke = await w.payout_account(funds=10)
    no_funds = ppb.RequestPayoutRequest(request_id=rid(), account_id=broke, amount_minor=100,
                                        currency_code="CNY")
    calls = [
        (lambda: w.client.call("Transfer", transfer), "INSUFFICIENT_FUNDS"),
        (lambda: w.client.call("FreezeAccount", freeze), "ACCOUNT_FROZEN"),
        (lambda: w.client.call("CloseAccount", close), "ACCOUNT_NOT_EMPTY"),
        (lambda: w.approver.call("ActivateRuleSet", activate), "RULE_SET_NOT_FOUND"),
        (lambda: w.splits.call("Split", no_rules), "NO_ACTIVE_RULE_SET"),
        (lambda: w.splits.call("ReleaseSplit", release), "SPLIT_NOT_FOUND"),
        (lambda: w.payouts.call("RequestPayout", no_bank), "NO_BANK_ACCOUNT"),
        (lambda: w.payouts.call("RequestPayout", no_funds), "INSUFFICIENT_FUNDS"),
    ]
    firsts = []
    for send, reason in calls:
        first = await _refusal(send())
        assert first[2].reason == reason
        firsts.append(first)
    # every cause goes away
    await w.client.transfer(custodial, poor, 50)
    await w.client.call("UnfreezeAccount", pb.UnfreezeAccountRequest(
        request_id=rid(), account_id=frozen, reason="cleared"))
    await w.client.transfer(full, sink, 9)
    published = await w.held_rule_set(missing)
    await w.activate(published)
    await w.splits.split(later_order)
    await w.payouts.bind(unbound)
    await w.client.transfer(custodial, broke, 1_000)
    for (send, _), first in zip(calls, firsts):
        assert await _refusal(send()) == first
    # the same requests under new request ids go through
    moved = await w.client.call("Transfer", _with(transfer, request_id=rid()))
    assert moved.transfer.amount_minor == 50
    await w.client.call("CloseAccount", _with(close, request_id=rid()))
    assert (await w.splits.call("Split", _with(no_rules, request_id=rid()))).split.split_id
    paid = await w.payouts.call("RequestPayout", _with(no_funds, request_id=rid()))
    assert paid.payout.amount_minor == 100
    assert (await w.client.verify()).ok


async def test_invalid_argument_is_not_recorded(world: World):
    """Nothing was accepted: the same request id goes through once the request is valid
    against the state (here: unfreezing more than is frozen, then enough is frozen)."""
    w = world
    account = (await w.client.open(f"ia-{rid()[:8]}")).account_id
    await w.client.transfer(w.ids["CUSTODIAL"], account, 300)
    unfreeze = pb.UnfreezeAccountRequest(request_id=rid(), account_id=account,
                                         amount_minor=200, reason="release")
    code, _, info = (await _refusal(w.client.call("UnfreezeAccount", unfreeze)))[:3]
    assert (code, info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "AMOUNT_EXCEEDS_FROZEN")
    await w.client.call("FreezeAccount", pb.FreezeAccountRequest(
        request_id=rid(), account_id=account, amount_minor=200, reason="hold"))
    done = await w.client.call("UnfreezeAccount", unfreeze)
    assert done.account.balance.frozen_minor == 0
    assert _bytes(await w.client.call("UnfreezeAccount", unfreeze)) == _bytes(done)


async def test_split_batch_orders_share_the_unary_first_response(world: World):
    """An order of a batch and the unary Split with its request id are one request: each
    answers the other's first response."""
    w = world
    item = spb.SplitRequest(request_id=rid(), order=order(HELD_ORDER_MINOR,
                                                          rule_set_name="held"))
    batch = await w.splits.call("SplitBatch", spb.SplitBatchRequest(request_id=rid(),
                                                                    requests=[item]))
    await w.splits.call("ReleaseSplit", spb.ReleaseSplitRequest(
        request_id=rid(), order_id=item.order.order_id, event_name="SHIPPED"))
    unary = await w.splits.call("Split", item)
    assert _bytes(unary.split) == _bytes(batch.outcomes[0].split)


async def test_first_responses_are_the_state_then(world: World):
    """The recorded response of an action equals what GetSplit / GetPayout read right after
    it (the first response is made in memory in the writer's batch)."""
    w = world
    split = await w.held_split()
    shipped = await w.splits.call("ReleaseSplit", spb.ReleaseSplitRequest(
        request_id=rid(), order_id=split.order_id, event_name="SHIPPED"))
    got = (await w.splits.call("GetSplit", spb.GetSplitRequest(order_id=split.order_id))).split
    assert _bytes(shipped.split) == _bytes(got)
    refunded = await w.splits.call("RefundSplit", spb.RefundSplitRequest(
        request_id=rid(), order_id=split.order_id, amount_minor=700, currency_code="CNY",
        reason="returned"))
    got = (await w.splits.call("GetSplit", spb.GetSplitRequest(order_id=split.order_id))).split
    assert _bytes(refunded.split) == _bytes(got)
    payout_id = await _in_review(w)
    made = await w.payouts.get(payout_id)
    account = made.account_id
    again = await w.payouts.call("RequestPayout", ppb.RequestPayoutRequest(
        request_id=made.request_id, account_id=account, amount_minor=6_000,
        currency_code="CNY"))
    assert _bytes(again.payout) == _bytes(made)


@pytest.mark.parametrize("method", ["CreateAccount", "Split", "RefundSplit", "RequestPayout",
                                    "ApprovePayout"])
async def test_concurrent_retries_answer_one_first_response(world: World, method: str):
    """The same request sent 8 times at once does its work once; all answers are equal."""
    case = await WRITES[method](world)
    answers = await asyncio.gather(*[case.send(case.request) for _ in range(8)])
    assert len({_bytes(a) for a in answers}) == 1
    assert _bytes(await case.send(case.request)) == _bytes(answers[0])
    assert (await world.client.verify()).ok
