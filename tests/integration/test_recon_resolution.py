"""Resolution of discrepancies, maker-checker, through the generated stubs against real
PostgreSQL and the real ledger and split service: an operator proposes, another key with
the approver role approves (the money moves, once) or rejects (OPEN again). The day is
`recon_support.HandDay`, settled first: the custodial account then stands at the run's
difference, -9,941 (b -1, m -29,820, g +19,880), and each resolution's movement is worked
out by hand below."""

from __future__ import annotations

import asyncio

import asyncpg
import grpc
import pytest

from clearing.recon import accounts, resolve
from clearing.recon import resolution_store as rstore
from clearing.v1 import ledger_pb2 as lpb
from clearing.v1 import reconciliation_pb2 as rpb
from clearing.v1 import split_pb2 as spb
from tests.recon_support import CHANNEL, HandDay, ReconWorld, hand_day
from tests.split_support import new_key
from tests.support import Client, details, rid

CLEARING_REF = f"recon:channel-clearing:{CHANNEL}:CNY"
SUSPENSE_REF = "recon:suspense:CNY"
A = rpb  # ResolutionAction, ResolutionState, ResolutionStep constants


class Desk:
    """The day settled, its discrepancies by order, and three keys of the platform: the
    world's operator (maker), an approver (checker), and a key with both roles."""

    def __init__(self, world: ReconWorld, day: HandDay, approver: str, both: str) -> None:
        self.world = world
        self.day = day
        self.approver = (("authorization", f"Bearer {approver}"),)
        self.both = (("authorization", f"Bearer {both}"),)
        self.by_order: dict[str, rpb.Discrepancy] = {}

    async def load(self) -> None:
        found = await self.world.discrepancies(run_id=self.day.run.run_id)
        self.by_order = {d.order_id: d for d in found}

    def of(self, order: spb.Order) -> rpb.Discrepancy:
        return self.by_order[order.order_id]

    async def discrepancy(self, order: spb.Order) -> rpb.Discrepancy:
        await self.load()
        return self.of(order)

    async def propose(self, of: spb.Order, action: int, *, metadata=None,
                      request_id: str | None = None, **fields) -> rpb.Resolution:
        """Propose a resolution of the discrepancy of order `of`."""
        fields.setdefault("note", "checked with the channel")
        return (await self.world.call("ProposeResolution", rpb.ProposeResolutionRequest(
            request_id=request_id or rid(), discrepancy_id=self.of(of).discrepancy_id,
            action=action, **fields), metadata)).resolution

    async def approve(self, resolution_id: int, *, metadata=None,
                      request_id: str | None = None, note: str = "") -> rpb.Resolution:
        return (await self.world.call("ApproveResolution", rpb.ApproveResolutionRequest(
            request_id=request_id or rid(), resolution_id=resolution_id, note=note),
            metadata or self.approver)).resolution

    async def reject(self, resolution_id: int, *, metadata=None,
                     note: str = "not agreed") -> rpb.Resolution:
        return (await self.world.call("RejectResolution", rpb.RejectResolutionRequest(
            request_id=rid(), resolution_id=resolution_id, note=note),
            metadata or self.approver)).resolution


@pytest.fixture
async def desk(channel, client: Client, database_url, platform) -> Desk:
    world = await ReconWorld.make(channel, client, database_url, platform.platform_id,
                                  platform.key)
    day = await hand_day(world)
    await world.call("PostSettlement", rpb.PostSettlementRequest(request_id=rid(),
                                                                 run_id=day.run.run_id))
    desk = Desk(world, day, await new_key(database_url, platform.platform_id, {"approver"}),
                await new_key(database_url, platform.platform_id, {"operator", "approver"}))
    await desk.load()
    return desk


async def posted(client: Client, ref: str) -> int:
    account = (await client.call("GetAccount", lpb.GetAccountRequest(external_ref=ref))).account
    return (await client.balance(account.account_id)).posted_minor


async def refused(call) -> tuple[grpc.StatusCode, str, list[str]]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    reason, fields = details(err.value)
    return err.value.code(), reason, fields


def steps(r: rpb.Resolution) -> list[int]:
    return [e.step for e in r.events]


async def test_write_off_both_ways(desk: Desk, client: Client):
    g, b = desk.day.g, desk.day.b
    on_g = await desk.propose(g, A.RESOLUTION_ACTION_WRITE_OFF, request_id="wo-g")
    assert (on_g.state, on_g.amount_minor, on_g.currency_code) == (
        A.RESOLUTION_STATE_PROPOSED, 19_880, "CNY")
    assert on_g.transfer_id == 0 and steps(on_g) == [A.RESOLUTION_STEP_PROPOSED]
    assert (await desk.discrepancy(g)).state == rpb.DISCREPANCY_STATE_RESOLUTION_PROPOSED
    assert desk.of(g).resolution_id == on_g.resolution_id
    # the same proposal again: the first response; nothing new
    assert await desk.propose(g, A.RESOLUTION_ACTION_WRITE_OFF, request_id="wo-g") == on_g
    assert await posted(client, "custodial-CNY") == -9_941  # nothing moved yet

    done = await desk.approve(on_g.resolution_id, request_id="ok-g", note="fine")
    assert (done.state, done.review_note) == (A.RESOLUTION_STATE_APPROVED, "fine")
    assert done.transfer_id > 0 and done.reviewed_by_key_id > 0
    assert steps(done) == [A.RESOLUTION_STEP_PROPOSED, A.RESOLUTION_STEP_APPROVED]
    assert done.events[1].transfer_id == done.transfer_id
    assert done.events[1].request_id == "ok-g"
    # g's surplus of 19,880 left the custodial account for suspense
    assert await posted(client, "custodial-CNY") == -9_941 - 19_880 == -29_821
    assert await posted(client, SUSPENSE_REF) == 19_880
    assert (await desk.discrepancy(g)).state == rpb.DISCREPANCY_STATE_RESOLVED
    assert await desk.approve(on_g.resolution_id, request_id="ok-g", note="fine") == done

    # b's shortfall of 1 comes from suspense
    on_b = await desk.propose(b, A.RESOLUTION_ACTION_WRITE_OFF)
    assert on_b.amount_minor == 1
    await desk.approve(on_b.resolution_id)
    assert await posted(client, "custodial-CNY") == -29_821 + 1 == -29_820  # m's, still open
    assert await posted(client, SUSPENSE_REF) == 19_879
    suspense = (await client.call("GetAccount", lpb.GetAccountRequest(
        external_ref=SUSPENSE_REF))).account
    assert suspense.kind == lpb.ACCOUNT_KIND_SUSPENSE and suspense.allow_negative
    got = (await desk.world.call("GetResolution", rpb.GetResolutionRequest(
        resolution_id=on_g.resolution_id))).resolution
    assert got == done
    assert (await client.verify()).ok


async def test_refund_and_split_now(desk: Desk, client: Client):
    g, b = desk.day.g, desk.day.b
    # b's line settled 49,699: a refund can give back at most that
    code, reason, _ = await refused(desk.propose(b, A.RESOLUTION_ACTION_REFUND,
                                                 amount_minor=49_700))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "RESOLUTION_NOT_APPLICABLE")
    refund = await desk.propose(b, A.RESOLUTION_ACTION_REFUND, amount_minor=1_000)
    await desk.approve(refund.resolution_id)
    assert await posted(client, "custodial-CNY") == -9_941 - 1_000 == -10_941
    assert await posted(client, CLEARING_REF) == -168_979 + 1_000 == -167_979

    assert await refused(desk.propose(b, A.RESOLUTION_ACTION_ACCEPT)) == (
        grpc.StatusCode.FAILED_PRECONDITION, "DISCREPANCY_NOT_OPEN", [])
    code, reason, _ = await refused(desk.propose(desk.day.m, A.RESOLUTION_ACTION_SPLIT_NOW,
                                                 order=desk.day.m))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "RESOLUTION_NOT_APPLICABLE")
    code, _, fields = await refused(desk.propose(g, A.RESOLUTION_ACTION_SPLIT_NOW,
                                                 order=desk.day.a))
    assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["order.order_id"])
    other = spb.Order()
    other.CopyFrom(g)
    other.channel_fee_minor += 1  # the line's fee is 120
    code, _, fields = await refused(desk.propose(g, A.RESOLUTION_ACTION_SPLIT_NOW,
                                                 order=other))
    assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["order.channel_fee_minor"])

    split_now = await desk.propose(g, A.RESOLUTION_ACTION_SPLIT_NOW, order=g)
    assert split_now.order == g and split_now.amount_minor == 0
    done = await desk.approve(split_now.resolution_id)
    assert done.split_id > 0 and done.transfer_id == 0
    assert done.events[-1].transfer_id == done.split_id
    split = (await desk.world.splits.call("GetSplit", spb.GetSplitRequest(
        order_id=g.order_id))).split
    assert split.split_id == done.split_id and split.amount_minor == 20_000
    # the split distributes g's 19,880 (its amount net of the fee) out of custodial
    assert await posted(client, "custodial-CNY") == -10_941 - 19_880 == -30_821
    assert (await desk.discrepancy(g)).state == rpb.DISCREPANCY_STATE_RESOLVED
    assert (await client.verify()).ok


async def test_maker_checker_and_roles(desk: Desk, client: Client):
    m = desk.day.m
    # a key with both roles proposes: it cannot review its own proposal
    mine = await desk.propose(m, A.RESOLUTION_ACTION_ACCEPT, metadata=desk.both)
    for call in (desk.approve(mine.resolution_id, metadata=desk.both),
                 desk.reject(mine.resolution_id, metadata=desk.both)):
        assert await refused(call) == (grpc.StatusCode.PERMISSION_DENIED, "MAKER_CHECKER", [])
    # the operator (no approver role) cannot review; the approver cannot propose
    code, reason, _ = await refused(desk.approve(mine.resolution_id,
                                                 metadata=desk.world.metadata))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_REQUIRED")
    code, _, _ = await refused(desk.propose(desk.day.b, A.RESOLUTION_ACTION_ACCEPT,
                                            metadata=desk.approver))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    # another approver key may
    done = await desk.approve(mine.resolution_id)
    assert done.state == A.RESOLUTION_STATE_APPROVED and done.posting_request_id == ""
    assert await posted(client, "custodial-CNY") == -9_941  # ACCEPT moves nothing


async def test_rejection_reopens_and_wrong_states(desk: Desk, client: Client):
    m = desk.day.m
    first = await desk.propose(m, A.RESOLUTION_ACTION_WRITE_OFF)
    assert await refused(desk.propose(m, A.RESOLUTION_ACTION_ACCEPT)) == (
        grpc.StatusCode.FAILED_PRECONDITION, "DISCREPANCY_NOT_OPEN", [])
    code, _, fields = await refused(desk.reject(first.resolution_id, note=""))
    assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["note"])
    rejected = await desk.reject(first.resolution_id, note="the channel will pay")
    assert rejected.state == A.RESOLUTION_STATE_REJECTED
    assert steps(rejected) == [A.RESOLUTION_STEP_PROPOSED, A.RESOLUTION_STEP_REJECTED]
    assert rejected.events[1].note == "the channel will pay"
    assert (await desk.discrepancy(m)).state == rpb.DISCREPANCY_STATE_OPEN
    for call in (desk.approve(first.resolution_id), desk.reject(first.resolution_id)):
        assert await refused(call) == (
            grpc.StatusCode.FAILED_PRECONDITION, "RESOLUTION_NOT_PROPOSED", [])
    assert await posted(client, "custodial-CNY") == -9_941  # nothing moved

    second = await desk.propose(m, A.RESOLUTION_ACTION_ACCEPT, note="known delay")
    assert second.resolution_id != first.resolution_id
    await desk.approve(second.resolution_id)
    assert (await desk.discrepancy(m)).state == rpb.DISCREPANCY_STATE_RESOLVED
    assert desk.of(m).resolution_id == second.resolution_id
    assert await refused(desk.propose(m, A.RESOLUTION_ACTION_ACCEPT)) == (
        grpc.StatusCode.FAILED_PRECONDITION, "DISCREPANCY_NOT_OPEN", [])
    # the rejected one is kept as it was
    kept = (await desk.world.call("GetResolution", rpb.GetResolutionRequest(
        resolution_id=first.resolution_id))).resolution
    assert kept == rejected
    resolved = await desk.world.discrepancies(states=[rpb.DISCREPANCY_STATE_RESOLVED])
    assert [d.order_id for d in resolved] == [m.order_id]


async def test_unknown_ids_and_invalid_input(desk: Desk):
    world, g = desk.world, desk.day.g
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await world.call("ProposeResolution", rpb.ProposeResolutionRequest(
            request_id=rid(), discrepancy_id=10**12, action=A.RESOLUTION_ACTION_ACCEPT,
            note="x"))
    assert (err.value.code(), details(err.value)[0]) == (grpc.StatusCode.NOT_FOUND,
                                                         "DISCREPANCY_NOT_FOUND")
    for call in (desk.approve(10**12), desk.reject(10**12),
                 world.call("GetResolution", rpb.GetResolutionRequest(resolution_id=10**12))):
        assert await refused(call) == (grpc.StatusCode.NOT_FOUND, "RESOLUTION_NOT_FOUND", [])
    cases = [({"action": 0}, "action"), ({"note": ""}, "note"),
             ({"action": A.RESOLUTION_ACTION_REFUND}, "amount_minor"),
             ({"action": A.RESOLUTION_ACTION_ACCEPT, "amount_minor": 5}, "amount_minor"),
             ({"action": A.RESOLUTION_ACTION_SPLIT_NOW}, "order"),
             ({"action": A.RESOLUTION_ACTION_ACCEPT, "order": g}, "order"),
             ({"action": 99}, "action")]
    for fields, field in cases:
        request = rpb.ProposeResolutionRequest(request_id=rid(),
                                               discrepancy_id=desk.of(g).discrepancy_id,
                                               action=A.RESOLUTION_ACTION_WRITE_OFF, note="n")
        for name, value in fields.items():
            if name == "order":
                request.order.CopyFrom(value)
            else:
                setattr(request, name, value)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await world.call("ProposeResolution", request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, fields
        assert details(err.value)[1] == [field], fields
    assert (await desk.discrepancy(g)).state == rpb.DISCREPANCY_STATE_OPEN


async def test_a_refused_posting_moves_to_the_next_request_id(desk: Desk, client: Client):
    g = desk.day.g
    suspense = await client.open(SUSPENSE_REF, kind=lpb.ACCOUNT_KIND_SUSPENSE,
                                 allow_negative=True)
    await client.call("FreezeAccount", lpb.FreezeAccountRequest(
        request_id=rid(), account_id=suspense.account_id, reason="audit"))
    proposal = await desk.propose(g, A.RESOLUTION_ACTION_WRITE_OFF)
    assert proposal.posting_request_id.endswith(f"recon-resolution:{proposal.resolution_id}:1")
    assert await refused(desk.approve(proposal.resolution_id, request_id="try-1")) == (
        grpc.StatusCode.FAILED_PRECONDITION, "ACCOUNT_FROZEN", [])
    now = (await desk.world.call("GetResolution", rpb.GetResolutionRequest(
        resolution_id=proposal.resolution_id))).resolution
    assert now.state == A.RESOLUTION_STATE_PROPOSED
    assert steps(now) == [A.RESOLUTION_STEP_PROPOSED, A.RESOLUTION_STEP_POSTING_REFUSED]
    assert now.events[1].note.startswith("ACCOUNT_FROZEN")
    assert now.posting_request_id.endswith(f"recon-resolution:{proposal.resolution_id}:2")
    # the same request id answers the same refusal, and does not move the attempt on
    assert (await refused(desk.approve(proposal.resolution_id, request_id="try-1")))[1] == \
        "ACCOUNT_FROZEN"
    assert len((await desk.world.call("GetResolution", rpb.GetResolutionRequest(
        resolution_id=proposal.resolution_id))).resolution.events) == 2
    await client.call("UnfreezeAccount", lpb.UnfreezeAccountRequest(
        request_id=rid(), account_id=suspense.account_id, reason="done"))
    done = await desk.approve(proposal.resolution_id, request_id="try-2")
    assert done.state == A.RESOLUTION_STATE_APPROVED
    assert await posted(client, SUSPENSE_REF) == 19_880
    assert await posted(client, "custodial-CNY") == -29_821


async def test_a_crash_after_the_posting_moves_nothing_twice(desk: Desk, client: Client,
                                                             running, platform):
    """The write-off's posting committed, its approval not (the server died in between):
    a rejection is refused, and the next approval records the committed transfer."""
    proposal = await desk.propose(desk.day.g, A.RESOLUTION_ACTION_WRITE_OFF)
    pid = platform.platform_id
    suspense_id = await accounts.ensure_suspense(running.pool, pid, "CNY")
    async with running.pool.acquire() as conn:
        r = await rstore.load(conn, pid, proposal.resolution_id)
        d = await rstore.lock_discrepancy(conn, pid, r.discrepancy_id)
        custodial_id = await accounts.custodial(conn, pid, "CNY")
    sent = await running.writer.submit(resolve.resolution_posting(pid, r, d, custodial_id,
                                                                  suspense_id))
    assert await posted(client, SUSPENSE_REF) == 19_880
    assert await refused(desk.reject(proposal.resolution_id)) == (
        grpc.StatusCode.FAILED_PRECONDITION, "RESOLUTION_POSTED", [])
    done = await desk.approve(proposal.resolution_id)
    assert done.transfer_id == sent[0].transfer_id
    assert await posted(client, SUSPENSE_REF) == 19_880
    assert await posted(client, "custodial-CNY") == -29_821


async def test_a_posted_resolution_is_finished_after_a_correction(desk: Desk, client: Client,
                                                                   running, platform):
    """The write-off's posting committed, its approval not; then a corrected file supersedes
    the statement: the next approval still finishes it (its money moved), once."""
    proposal = await desk.propose(desk.day.g, A.RESOLUTION_ACTION_WRITE_OFF)
    pid = platform.platform_id
    suspense_id = await accounts.ensure_suspense(running.pool, pid, "CNY")
    async with running.pool.acquire() as conn:
        r = await rstore.load(conn, pid, proposal.resolution_id)
        d = await rstore.lock_discrepancy(conn, pid, r.discrepancy_id)
        custodial_id = await accounts.custodial(conn, pid, "CNY")
    sent = await running.writer.submit(resolve.resolution_posting(pid, r, d, custodial_id,
                                                                  suspense_id))
    await desk.world.import_file(desk.day.csv(desk.day.lines[:2]), day=desk.day.day)
    done = await desk.approve(proposal.resolution_id)
    assert (done.state, done.transfer_id) == (A.RESOLUTION_STATE_APPROVED, sent[0].transfer_id)
    assert await posted(client, SUSPENSE_REF) == 19_880
    assert await posted(client, "custodial-CNY") == -29_821


async def test_concurrent_approvals_move_money_once(desk: Desk, client: Client, database_url,
                                                    platform):
    second = (("authorization",
               f"Bearer {await new_key(database_url, platform.platform_id, {'approver'})}"),)
    proposal = await desk.propose(desk.day.g, A.RESOLUTION_ACTION_WRITE_OFF)
    outcomes = await asyncio.gather(
        *(desk.approve(proposal.resolution_id, metadata=key)
          for key in (desk.approver, second, desk.approver, second)), return_exceptions=True)
    ok = [o for o in outcomes if isinstance(o, rpb.Resolution)]
    assert len(ok) == 1, outcomes
    for o in outcomes:
        if o is not ok[0]:
            assert details(o)[0] == "RESOLUTION_NOT_PROPOSED"
    assert await posted(client, SUSPENSE_REF) == 19_880
    assert await posted(client, "custodial-CNY") == -29_821


async def test_a_superseded_statement_s_discrepancies_are_history(desk: Desk, client: Client):
    g, m = desk.day.g, desk.day.m
    waiting = await desk.propose(m, A.RESOLUTION_ACTION_ACCEPT)
    # a corrected file of the day supersedes the statement
    await desk.world.import_file(desk.day.csv(desk.day.lines[:2]), day=desk.day.day)
    assert await refused(desk.propose(g, A.RESOLUTION_ACTION_WRITE_OFF)) == (
        grpc.StatusCode.FAILED_PRECONDITION, "STATEMENT_SUPERSEDED", [])
    assert await refused(desk.approve(waiting.resolution_id)) == (
        grpc.StatusCode.FAILED_PRECONDITION, "STATEMENT_SUPERSEDED", [])
    rejected = await desk.reject(waiting.resolution_id)
    assert rejected.state == A.RESOLUTION_STATE_REJECTED
    assert await posted(client, "custodial-CNY") == -9_941


async def test_the_audit_trail_cannot_be_changed(desk: Desk, running):
    proposal = await desk.propose(desk.day.m, A.RESOLUTION_ACTION_ACCEPT)
    async with running.pool.acquire() as conn:
        for sql in ("UPDATE recon_resolution_events SET note = 'x' WHERE resolution_id = $1",
                    "DELETE FROM recon_resolution_events WHERE resolution_id = $1"):
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await conn.execute(sql, proposal.resolution_id)
        assert await conn.fetchval("SELECT count(*) FROM recon_resolution_events"
                                   " WHERE resolution_id = $1", proposal.resolution_id) == 1
