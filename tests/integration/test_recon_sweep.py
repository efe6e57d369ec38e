"""The 7x24 sweep against real PostgreSQL, splits and payouts made through the generated
stubs, tampering done in SQL: a clean system gives no discrepancy; each tampered split or
payout exactly one, with what is wrong in its description; a split changed after it was
checked is checked again; two sweepers at once, and two server processes, check each item
once; the server's own background sweep raises the discrepancy by itself. Each test has a database of its own
(tests/recon_sweep_support.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import urllib.request

import grpc
import pytest

from clearing.ledger.model import Mode, PendingState
from clearing.payout.model import TransferState
from clearing.v1 import ledger_pb2 as lpb
from clearing.v1 import payout_pb2 as ppb
from clearing.v1 import reconciliation_pb2 as rpb
from clearing.v1 import split_pb2 as spb
from tests.events_support import Events, wait_events
from tests.recon_sweep_support import (SWEEP, own_database, payout_fee, payout_party,
                                       tampered_detail, world)
from tests.support import CALL_TIMEOUT_S, ServerProcess, free_port, rid, wait_for

SPLIT_MISMATCH = rpb.RECONCILIATION_CLASS_SPLIT_LEDGER_MISMATCH
PAYOUT_MISMATCH = rpb.RECONCILIATION_CLASS_PAYOUT_BANK_MISMATCH
NOTHING = {"split": 0, "payout": 0}


async def test_splits_against_their_ledger_transfers(pg_admin_dsn, redis_url, redis_prefix):
    async with own_database(pg_admin_dsn) as dsn, world(dsn, redis_url, redis_prefix) as w:
        clean = [await w.split(11_130 + i) for i in range(5)]
        await w.release(clean[0].order_id, "SHIPPED")        # partly released
        await w.release(clean[1].order_id, "SHIPPED")        # released in full
        await w.release(clean[1].order_id, "RECEIVED")
        await w.refund(clean[2].order_id, 3_000)             # part of the hold refunded
        await w.splits.call("CancelSplit", spb.CancelSplitRequest(  # the hold voided
            request_id=rid(), order_id=clean[3].order_id, reason="cancelled"))
        await w.release(clean[4].order_id, "SHIPPED")        # released, then refunded
        await w.release(clean[4].order_id, "RECEIVED")
        await w.refund(clean[4].order_id, 11_134)
        seller = w.accounts["sweep-seller"]
        await w.client.call("FreezeAccount", lpb.FreezeAccountRequest(
            request_id=rid(), account_id=seller, reason="kyc"))
        custody = await w.split(11_135)                      # the seller's share in custody
        assert custody.legs[1].hold_reason == spb.HOLD_REASON_RECEIVER_UNAVAILABLE
        await w.client.call("UnfreezeAccount", lpb.UnfreezeAccountRequest(
            request_id=rid(), account_id=seller, reason="kyc done"))
        await w.release(custody.order_id, "SHIPPED")         # paid from custody
        sweeper = w.sweeper()
        first = await sweeper.tick()
        assert (first.checked, first.inserted) == ({"split": 6, "payout": 0}, NOTHING)
        assert await w.discrepancies() == []
        assert (await sweeper.tick()).checked == NOTHING    # each version is checked once

        a, b, c = [await w.split(20_000) for _ in range(3)]
        cust, plat = w.accounts["sweep-custodial"], w.accounts["sweep-platform"]
        a_legs, b_legs = await w.legs(a.split_id), await w.legs(b.split_id)
        a_t, b_t = a_legs[0]["transfer_ids"][0], b_legs[1]["transfer_ids"][0]
        await w.sql("UPDATE transfers SET amount = amount + 7 WHERE transfer_id = $1", a_t)
        await w.sql("UPDATE transfers SET pending_state = $2, pending_remaining = 0"
                    " WHERE transfer_id = $1", b_t, int(PendingState.POSTED))
        [row] = await w.sql("SELECT detail FROM splits WHERE split_id = $1", c.split_id)
        await w.sql("UPDATE splits SET detail = $2 WHERE split_id = $1", c.split_id,
                    tampered_detail(row["detail"], 1, 18_005))
        second = await sweeper.tick()
        assert (second.checked, second.inserted) == ({"split": 3, "payout": 0},
                                                     {"split": 3, "payout": 0})
        found = await w.discrepancies()
        assert [(d.split_id, d.order_id, d.description) for d in found] == [
            (a.split_id, a.order_id, f"leg 0: transfer {a_t} is {cust} -> {plat} 2007 CNY"
                                     f" mode 1, the leg {cust} -> {plat} 2000 CNY mode 1"),
            (b.split_id, b.order_id, f"leg 1: holds 18000, its pending transfer {b_t} is in"
                                     " state 2 with 0 left"),
            (c.split_id, c.order_id, "leg 1: amount 18000, the detail says 18005; legs add up"
                                     " to 20005, the split distributes 20000 (with its"
                                     " subsidy)")]
        for d in found:
            assert (d.reconciliation_class, d.state, d.run_id) == (
                SPLIT_MISMATCH, rpb.DISCREPANCY_STATE_OPEN, 0)
            assert (d.split_amount_minor, d.split_currency_code) == (20_000, "CNY")
        assert [d.split_id for d in await w.discrepancies(classes=[PAYOUT_MISMATCH])] == []

        # A split checked, then tampered: not seen until it changes; then checked again.
        partly = clean[0]
        t0 = (await w.legs(partly.split_id))[0]["transfer_ids"][0]
        await w.sql("UPDATE transfers SET amount = amount + 1 WHERE transfer_id = $1", t0)
        assert (await sweeper.tick()).checked == NOTHING
        await w.release(partly.order_id, "RECEIVED")
        third = await sweeper.tick()
        assert (third.checked, third.inserted) == ({"split": 1, "payout": 0},
                                                   {"split": 1, "payout": 0})
        [late] = [d for d in await w.discrepancies() if d.split_id == partly.split_id]
        assert late.description.startswith(f"leg 0: transfer {t0} is {cust} -> {plat} 1114")
        # Still wrong and changed again: no second OPEN discrepancy of the split.
        await w.refund(partly.order_id, 100)
        fourth = await sweeper.tick()
        assert (fourth.checked, fourth.inserted) == ({"split": 1, "payout": 0}, NOTHING)
        assert len(await w.discrepancies()) == 4
        [cursor] = await w.sql("SELECT checked_count, discrepancy_count FROM recon_sweep_cursors"
                               " WHERE item_kind = 'split'")
        assert tuple(cursor) == (6 + 3 + 1 + 1, 4)


async def test_payouts_against_their_bank_transfers(pg_admin_dsn, redis_url, redis_prefix):
    async with own_database(pg_admin_dsn) as dsn, world(dsn, redis_url, redis_prefix) as w:
        account = await payout_party(w, 100_000)
        await payout_fee(w, 4)  # the clean ones with a fee: a hold and a fee hold each
        made = [await w.payouts.request(account, 1_000 + i) for i in range(4)]
        for p in made:
            done = await w.payouts.wait_state(p.payout_id, (ppb.PAYOUT_STATE_SUCCEEDED,))
            assert (done.fee_minor, done.paid_minor) == (4, p.net_amount_minor)
        await payout_fee(w, 0)
        sweeper = w.sweeper()
        first = await sweeper.tick()
        assert (first.checked, first.inserted) == ({"split": 0, "payout": 4}, NOTHING)

        more = [await w.payouts.request(account, 2_000 + i) for i in range(3)]
        for p in more:
            await w.payouts.wait_state(p.payout_id, (ppb.PAYOUT_STATE_SUCCEEDED,))
        short, unpaid, loose = more
        await w.sql("UPDATE bank_transfers SET amount_minor = amount_minor - 5"
                    " WHERE payout_id = $1", short.payout_id)
        [t] = await w.sql("SELECT bank_transfer_id FROM bank_transfers WHERE payout_id = $1",
                          unpaid.payout_id)
        await w.sql("UPDATE bank_transfer_attempts SET state = $2 WHERE bank_transfer_id = $1",
                    t["bank_transfer_id"], int(TransferState.FAILED))
        [hold] = await w.sql("SELECT hold_transfer_id FROM payouts WHERE payout_id = $1",
                             loose.payout_id)
        await w.sql("UPDATE transfers SET pending_state = $2 WHERE transfer_id = $1",
                    hold["hold_transfer_id"], int(PendingState.OPEN))
        second = await sweeper.tick()
        assert (second.checked, second.inserted) == ({"split": 0, "payout": 3},
                                                     {"split": 0, "payout": 3})
        found = sorted(await w.discrepancies(classes=[PAYOUT_MISMATCH]),
                       key=lambda d: d.payout_id)  # written in order of their last change
        assert [(d.payout_id, d.description) for d in found] == [
            (short.payout_id, "bank transfers add up to 1995, the payout's net amount is 2000;"
                              " paid 2000, its succeeded bank transfers add up to 1995"),
            (unpaid.payout_id, f"bank transfer {t['bank_transfer_id']} in state 4 with 0"
                               " succeeded attempts"),
            (loose.payout_id, f"hold transfer {hold['hold_transfer_id']} is 2002 mode"
                              f" {Mode.PENDING:d} in state 1, the payout 2002 CNY in state 5")]
        for d in found:
            assert (d.run_id, d.split_id, d.state) == (0, 0, rpb.DISCREPANCY_STATE_OPEN)
        assert [d.split_amount_minor for d in found] == [2_000, 2_001, 2_002]



async def test_an_item_that_cannot_be_read_is_raised_and_passed(pg_admin_dsn, redis_url,
                                                                redis_prefix):
    async with own_database(pg_admin_dsn) as dsn, world(dsn, redis_url, redis_prefix) as w:
        made = [await w.split(6_000 + i) for i in range(7)]
        garbled, lettered = made[1], made[5]
        await w.sql("UPDATE splits SET detail = 'not json' WHERE split_id = $1",
                    garbled.split_id)
        [row] = await w.sql("SELECT detail FROM splits WHERE split_id = $1", lettered.split_id)
        await w.sql("UPDATE splits SET detail = $2 WHERE split_id = $1", lettered.split_id,
                    row["detail"].replace(f",{lettered.legs[0].amount_minor},", ',"x",', 1))
        t = (await w.legs(made[3].split_id))[0]["transfer_ids"][0]
        await w.sql("UPDATE transfers SET amount = amount + 1 WHERE transfer_id = $1", t)
        out = await w.sweeper().tick()  # batches of 4: each of the first two has a bad item
        assert (out.checked, out.inserted) == ({"split": 7, "payout": 0},
                                               {"split": 3, "payout": 0})
        found = {d.split_id: d.description for d in await w.discrepancies()}
        assert found[garbled.split_id].startswith(
            "cannot be checked: invalid input syntax for type json")
        assert found[lettered.split_id] == (
            'cannot be checked: invalid input syntax for type bigint: "x"')
        assert found[made[3].split_id].startswith("leg 0: transfer")
        assert len(found) == 3
        assert (await w.sweeper().tick()).checked == NOTHING

async def test_two_sweepers_check_each_item_once(pg_admin_dsn, redis_url, redis_prefix):
    async with own_database(pg_admin_dsn) as dsn, world(dsn, redis_url, redis_prefix) as w:
        made = [await w.split(5_000 + i) for i in range(11)]
        t = (await w.legs(made[6].split_id))[0]["transfer_ids"][0]
        await w.sql("UPDATE transfers SET amount = amount + 1 WHERE transfer_id = $1", t)
        one = dataclasses.replace(SWEEP, sweep_batch_max=2)
        first, second = w.sweeper(one), w.sweeper(one)
        outcomes = []
        for _ in range(4):  # rounds of both at once, until there is nothing left
            outcomes += await asyncio.gather(first.tick(), second.tick())
        assert sum(o.checked["split"] for o in outcomes) == 11
        assert sum(o.inserted["split"] for o in outcomes) == 1
        [found] = await w.discrepancies()
        assert found.split_id == made[6].split_id
        [cursor] = await w.sql("SELECT checked_count, discrepancy_count FROM recon_sweep_cursors"
                               " WHERE item_kind = 'split'")
        assert tuple(cursor) == (11, 1)


async def test_the_servers_own_sweep_raises_the_alert(pg_admin_dsn, redis_url, redis_prefix):
    on = dataclasses.replace(SWEEP, sweep=True)
    async with own_database(pg_admin_dsn) as dsn, \
            world(dsn, redis_url, redis_prefix, recon=on) as w:
        assert w.running.sweeper is not None
        made = await w.split(9_000)
        await wait_for(lambda: _checked(w), timeout_s=10.0)
        assert await w.discrepancies() == []
        tampered = await w.split(9_001)
        t = (await w.legs(tampered.split_id))[1]["transfer_ids"][0]
        await w.sql("UPDATE transfers SET amount = amount - 1 WHERE transfer_id = $1", t)
        # the sweep may have checked the split before the tampering: a release changes it
        await w.release(tampered.order_id, "SHIPPED")

        async def raised() -> bool:
            return len(await w.discrepancies()) == 1

        await wait_for(raised, timeout_s=10)
        [found] = await w.discrepancies()
        assert (found.split_id, found.reconciliation_class) == (tampered.split_id,
                                                                SPLIT_MISMATCH)
        assert made.split_id != tampered.split_id


async def test_a_sweep_discrepancy_is_resolved_by_accept_only(pg_admin_dsn, redis_url,
                                                              redis_prefix):
    """A sweep's discrepancy belongs to no statement: no money action applies (its cause is
    fixed, then it is accepted with a note, by one key and approved by another)."""
    async with own_database(pg_admin_dsn) as dsn, world(dsn, redis_url, redis_prefix) as w:
        tampered = await w.split(9_002)
        t = (await w.legs(tampered.split_id))[0]["transfer_ids"][0]
        await w.sql("UPDATE transfers SET amount = amount + 3 WHERE transfer_id = $1", t)
        await w.sweeper().tick()
        [found] = await w.discrepancies()
        assert found.run_id == 0 and found.reconciliation_class == SPLIT_MISMATCH
        for action in (rpb.RESOLUTION_ACTION_WRITE_OFF, rpb.RESOLUTION_ACTION_REFUND,
                       rpb.RESOLUTION_ACTION_SPLIT_NOW):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await w.recon.ProposeResolution(rpb.ProposeResolutionRequest(
                    request_id=rid(), discrepancy_id=found.discrepancy_id, action=action,
                    note="move money", amount_minor=1), metadata=w.metadata,
                    timeout=CALL_TIMEOUT_S)
            assert refused.value.code() in (grpc.StatusCode.FAILED_PRECONDITION,
                                            grpc.StatusCode.INVALID_ARGUMENT), action
        proposed = (await w.recon.ProposeResolution(rpb.ProposeResolutionRequest(
            request_id=rid(), discrepancy_id=found.discrepancy_id,
            action=rpb.RESOLUTION_ACTION_ACCEPT, note="transfer repaired from the journal"),
            metadata=w.metadata, timeout=CALL_TIMEOUT_S)).resolution
        approved = (await w.recon.ApproveResolution(rpb.ApproveResolutionRequest(
            request_id="accept-1", resolution_id=proposed.resolution_id, note="checked"),
            metadata=w.approver_metadata, timeout=CALL_TIMEOUT_S)).resolution
        assert approved.state == rpb.RESOLUTION_STATE_APPROVED
        [after] = await w.discrepancies()
        assert after.state == rpb.DISCREPANCY_STATE_RESOLVED
        # the feed: opened by the sweep (its batch's transaction), resolved by the approval
        feed = Events(w.channel, w.metadata[0][1].split(" ", 1)[1])
        opened, resolved = await wait_events(
            feed, 2, types=["discrepancy.opened", "discrepancy.resolved"])
        assert (opened.type, opened.resource_id, opened.request_id) == (
            "discrepancy.opened", str(found.discrepancy_id), "")
        assert opened.discrepancy == found
        assert (resolved.type, resolved.request_id, resolved.discrepancy) == (
            "discrepancy.resolved", "accept-1", after)


async def _checked(w) -> bool:
    [row] = await w.sql("SELECT checked_count FROM recon_sweep_cursors WHERE item_kind = 'split'")
    return row["checked_count"] >= 1


def _scrape(port: int) -> float:
    """clearing_recon_sweep_checked_total{kind="split"} of the process on `port`."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith('clearing_recon_sweep_checked_total{kind="split"}'):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_two_server_processes_check_each_split_once(pg_admin_dsn, redis_url,
                                                          redis_prefix):
    async with own_database(pg_admin_dsn) as dsn, world(dsn, redis_url, redis_prefix) as w:
        made = [await w.split(7_000)]  # wrong before any sweep runs
        t = (await w.legs(made[0].split_id))[0]["transfer_ids"][0]
        await w.sql("UPDATE transfers SET amount = amount + 3 WHERE transfer_id = $1", t)
        ports = [free_port(), free_port()]
        procs = [ServerProcess(dsn, redis_url, extra_env={
            "CLEARING_RECON_SWEEP": "1", "CLEARING_RECON_SETTLE_S": "0",
            "CLEARING_RECON_SWEEP_INTERVAL_MS": "10", "CLEARING_RECON_SWEEP_BATCH": "2",
            "CLEARING_PAYOUT_WORKER": "0", "CLEARING_PAYOUT_SCHEDULER": "0",
            "CLEARING_REDIS_PREFIX": f"{redis_prefix}sw{i}:",
            "CLEARING_METRICS_ADDR": f"127.0.0.1:{port}"}) for i, port in enumerate(ports)]
        try:
            await asyncio.gather(*(asyncio.to_thread(p.start) for p in procs))
            # both sweep while the other splits are made
            made += [await w.split(7_001 + i) for i in range(29)]

            async def all_checked() -> bool:
                [row] = await w.sql("SELECT checked_count FROM recon_sweep_cursors"
                                    " WHERE item_kind = 'split'")
                return row["checked_count"] >= 30

            await wait_for(all_checked, timeout_s=20.0)
            await asyncio.sleep(0.3)  # more sweeps of both: nothing more is checked
            counts = [await asyncio.to_thread(_scrape, port) for port in ports]
            [row] = await w.sql("SELECT checked_count, discrepancy_count FROM"
                                " recon_sweep_cursors WHERE item_kind = 'split'")
            assert tuple(row) == (30, 1)
            assert sum(counts) == 30
            [found] = await w.discrepancies()
            assert found.split_id == made[0].split_id
        finally:
            for p in procs:
                p.terminate()
