"""The reconciliation's events in the feed (docs/events.md): an import writes one
discrepancy.opened per discrepancy its run found, with the discrepancy as ListDiscrepancies
shows it, in the import's transaction (a refused or replayed import writes none; a
correction's run writes its own, the superseded run's discrepancies change no state); an
approved resolution writes discrepancy.resolved (a proposal and a rejection none). The
sweep's discrepancy.opened is tested in test_recon_sweep.py."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from clearing.v1 import reconciliation_pb2 as rpb
from tests.events_support import Events, wait_events
from tests.recon_support import CHANNEL, ReconWorld, canonical_csv, hand_day
from tests.split_support import new_key
from tests.support import Client, rid

OPENED, RESOLVED = "discrepancy.opened", "discrepancy.resolved"
TYPES = (OPENED, RESOLVED)


@pytest.fixture
async def world(channel, client: Client, database_url, platform) -> ReconWorld:
    return await ReconWorld.make(channel, client, database_url, platform.platform_id,
                                 platform.key)


@pytest.fixture
def events(channel, platform) -> Events:
    return Events(channel, platform.key)


async def _nothing_more(events: Events, count: int) -> None:
    """Give the sequencer time to number anything else, then check there is nothing."""
    await asyncio.sleep(0.3)
    assert len(await events.all(0, TYPES)) == count


async def test_an_import_opens_one_event_per_discrepancy(world: ReconWorld, events: Events):
    day = await hand_day(world)  # FEE_MISMATCH b, MISSING_IN_STATEMENT m, MISSING_SPLIT g
    listed = await world.discrepancies(run_id=day.run.run_id)
    assert len(listed) == 3
    got = await wait_events(events, 3, types=TYPES)
    assert [e.type for e in got] == [OPENED] * 3
    assert {e.resource_id: e.discrepancy for e in got} == {
        str(d.discrepancy_id): d for d in listed}
    assert all(e.discrepancy.state == rpb.DISCREPANCY_STATE_OPEN for e in got)
    assert len({e.request_id for e in got}) == 1 and got[0].request_id
    assert got == sorted(got, key=lambda e: e.seq)

    # a refused import (a malformed line) and the same file again write nothing
    bad = day.csv().replace(str(day.b.amount_minor).encode(), b"12x", 1)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await world.import_file(bad, day=day.day)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    again = await world.import_file(day.csv(), day=day.day)
    assert again.run.run_id == day.run.run_id
    await _nothing_more(events, 3)

    # a correction (b's fee right): its run opens its own two; the superseded run's three
    # stay as they were (no state change, no event)
    fixed = [day.lines[0], day.lines[1].__class__(**{**day.lines[1].__dict__, "fee_minor": 300}),
             day.lines[2]]
    second = (await world.import_file(canonical_csv(fixed, CHANNEL, day.day), day=day.day,
                                      request_id="correction-1")).run
    newer = await world.discrepancies(run_id=second.run_id)
    assert len(newer) == 2
    got = await wait_events(events, 5, types=TYPES)
    assert [e.type for e in got] == [OPENED] * 5
    assert {e.resource_id: e.discrepancy for e in got[3:]} == {
        str(d.discrepancy_id): d for d in newer}
    assert {e.request_id for e in got[3:]} == {"correction-1"}
    assert [d.state for d in await world.discrepancies(run_id=day.run.run_id)] == [
        rpb.DISCREPANCY_STATE_OPEN] * 3
    await _nothing_more(events, 5)


async def test_an_approved_resolution_writes_discrepancy_resolved(
        world: ReconWorld, events: Events, database_url, platform):
    day = await hand_day(world)
    approver = (("authorization",
                 f"Bearer {await new_key(database_url, platform.platform_id, {'approver'})}"),)
    start = (await wait_events(events, 3, types=TYPES))[-1].seq
    [of_g] = [d for d in await world.discrepancies(run_id=day.run.run_id)
              if d.order_id == day.g.order_id]

    async def propose() -> int:
        return (await world.call("ProposeResolution", rpb.ProposeResolutionRequest(
            request_id=rid(), discrepancy_id=of_g.discrepancy_id,
            action=rpb.RESOLUTION_ACTION_ACCEPT, note="known to the channel"))
        ).resolution.resolution_id

    # proposed then rejected: no event
    first = await propose()
    await world.call("RejectResolution", rpb.RejectResolutionRequest(
        request_id=rid(), resolution_id=first, note="not agreed"), approver)
    second = await propose()
    done = (await world.call("ApproveResolution", rpb.ApproveResolutionRequest(
        request_id="approve-g", resolution_id=second, note="fine"), approver)).resolution
    assert done.state == rpb.RESOLUTION_STATE_APPROVED

    [resolved] = await wait_events(events, 1, cursor=start, types=TYPES)
    [now] = [d for d in await world.discrepancies(run_id=day.run.run_id)
             if d.order_id == day.g.order_id]
    assert (resolved.type, resolved.resource_id, resolved.request_id) == (
        RESOLVED, str(of_g.discrepancy_id), "approve-g")
    assert resolved.discrepancy == now
    assert (now.state, now.resolution_id) == (rpb.DISCREPANCY_STATE_RESOLVED, second)
    # the approval again (same request id): its first answer, no second event
    await world.call("ApproveResolution", rpb.ApproveResolutionRequest(
        request_id="approve-g", resolution_id=second, note="fine"), approver)
    await _nothing_more(events, 4)
