"""A frozen account never sends nor receives, a closed one never again: every posting
checks both sides (immediate, pending and post-pending alike), a void is never refused,
and money held by a pending transfer cannot be spent twice. Through the generated stubs
against the session's server; every balance asserted exactly, worked out from the rule."""

from __future__ import annotations

import grpc
import pytest

from clearing.v1 import ledger_pb2 as pb
from tests.support import Client, details, rid

POST = pb.TRANSFER_MODE_POST_PENDING
VOID = pb.TRANSFER_MODE_VOID_PENDING
PENDING = pb.TRANSFER_MODE_PENDING


async def _setup(client: Client, funds: int) -> tuple[int, int, int]:
    """(custodial, merchant funded with `funds`, seller) account ids."""
    custodial = (await client.open("custodial", kind=pb.ACCOUNT_KIND_CUSTODIAL)).account_id
    merchant = (await client.open("merchant")).account_id
    seller = (await client.open("seller")).account_id
    await client.transfer(custodial, merchant, funds)
    return custodial, merchant, seller


async def _freeze(client: Client, account_id: int) -> None:
    r = await client.call("FreezeAccount", pb.FreezeAccountRequest(
        request_id=rid(), account_id=account_id, reason="court order"))
    assert r.account.status == pb.ACCOUNT_STATUS_FROZEN


async def _unfreeze(client: Client, account_id: int) -> None:
    r = await client.call("UnfreezeAccount", pb.UnfreezeAccountRequest(
        request_id=rid(), account_id=account_id, reason="lifted"))
    assert r.account.status == pb.ACCOUNT_STATUS_ACTIVE


async def _refused(call, reason: str, code=grpc.StatusCode.FAILED_PRECONDITION) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert (err.value.code(), details(err.value)[0]) == (code, reason)


async def _state(client: Client, account_id: int) -> tuple[int, int, int, int]:
    """(posted, available, pending debit, pending credit)."""
    b = await client.balance(account_id)
    return b.posted_minor, b.available_minor, b.pending_debit_minor, b.pending_credit_minor


async def _post(client: Client, pending_id: int, amount: int):
    return await client.transfer(0, 0, amount, currency="", mode=POST,
                                 pending_transfer_id=pending_id)


async def _void(client: Client, pending_id: int):
    return await client.transfer(0, 0, 0, currency="", mode=VOID,
                                 pending_transfer_id=pending_id)


async def _verify(client: Client) -> None:
    report = await client.verify()
    assert report.ok and report.chain_ok and not report.mismatched_account_ids, report


async def test_pending_opened_then_debit_frozen_cannot_be_posted(client: Client):
    custodial, merchant, seller = await _setup(client, 1_000)
    pending = await client.transfer(merchant, seller, 600, mode=PENDING)
    await _freeze(client, merchant)
    for amount in (1, 250, 600):  # a part, and the whole of what is held
        await _refused(_post(client, pending.transfer_id, amount), "ACCOUNT_FROZEN")
    # nothing moved: the hold is where it was
    assert await _state(client, merchant) == (1_000, 400, 600, 0)
    assert await _state(client, seller) == (0, 0, 0, 600)
    await _unfreeze(client, merchant)
    posted = await _post(client, pending.transfer_id, 600)
    assert (posted.amount_minor, posted.debit_account_id) == (600, merchant)
    assert await _state(client, merchant) == (400, 400, 0, 0)
    assert await _state(client, seller) == (600, 600, 0, 0)
    await _verify(client)


async def test_pending_into_a_credit_frozen_since_cannot_be_posted(client: Client):
    custodial, merchant, seller = await _setup(client, 1_000)
    pending = await client.transfer(merchant, seller, 600, mode=PENDING)
    await _freeze(client, seller)
    await _refused(_post(client, pending.transfer_id, 600), "ACCOUNT_FROZEN")
    assert await _state(client, merchant) == (1_000, 400, 600, 0)
    assert await _state(client, seller) == (0, 0, 0, 600)
    await _unfreeze(client, seller)
    await _post(client, pending.transfer_id, 599)  # the boundary: all but one unit
    assert await _state(client, seller) == (599, 599, 0, 1)
    assert await _state(client, merchant) == (401, 400, 1, 0)
    await _verify(client)


async def test_a_hold_out_of_or_into_a_frozen_account_can_be_voided(client: Client):
    """Voiding moves no money (the hold goes back to the debit account), so a freeze on
    either side does not stop it."""
    custodial, merchant, seller = await _setup(client, 1_000)
    out = await client.transfer(merchant, seller, 300, mode=PENDING)
    into = await client.transfer(merchant, seller, 200, mode=PENDING)
    await _freeze(client, merchant)
    assert (await _void(client, out.transfer_id)).amount_minor == 300
    await _unfreeze(client, merchant)
    await _freeze(client, seller)
    assert (await _void(client, into.transfer_id)).amount_minor == 200
    assert await _state(client, merchant) == (1_000, 1_000, 0, 0)
    assert await _state(client, seller) == (0, 0, 0, 0)
    await _verify(client)


async def test_immediate_and_pending_out_of_or_into_frozen_are_refused(client: Client):
    custodial, merchant, seller = await _setup(client, 1_000)
    await _freeze(client, merchant)
    for mode in (pb.TRANSFER_MODE_IMMEDIATE, PENDING):
        await _refused(client.transfer(merchant, seller, 1, mode=mode), "ACCOUNT_FROZEN")
        await _refused(client.transfer(seller, merchant, 1, mode=mode), "ACCOUNT_FROZEN")
        await _refused(client.transfer(custodial, merchant, 1, mode=mode), "ACCOUNT_FROZEN")
    assert await _state(client, merchant) == (1_000, 1_000, 0, 0)
    assert await _state(client, seller) == (0, 0, 0, 0)
    await _unfreeze(client, merchant)
    await client.transfer(merchant, seller, 1_000)  # all of it, once active again
    assert await _state(client, merchant) == (0, 0, 0, 0)


async def test_closed_account_neither_sends_nor_receives(client: Client):
    custodial, merchant, seller = await _setup(client, 10)
    await client.transfer(merchant, custodial, 10)
    closed = await client.call("CloseAccount", pb.CloseAccountRequest(
        request_id=rid(), account_id=merchant))
    assert closed.account.status == pb.ACCOUNT_STATUS_CLOSED
    for mode in (pb.TRANSFER_MODE_IMMEDIATE, PENDING):
        # out of it: the status answers before the (empty) balance would
        await _refused(client.transfer(merchant, seller, 1, mode=mode), "ACCOUNT_CLOSED")
        await _refused(client.transfer(custodial, merchant, 1, mode=mode), "ACCOUNT_CLOSED")
    # a custodial account (allowed to go negative) closed: nothing leaves it either
    other = (await client.open("custodial-2", kind=pb.ACCOUNT_KIND_CUSTODIAL)).account_id
    await client.call("CloseAccount", pb.CloseAccountRequest(request_id=rid(),
                                                             account_id=other))
    await _refused(client.transfer(other, seller, 1), "ACCOUNT_CLOSED")
    assert await _state(client, seller) == (0, 0, 0, 0)
    await _verify(client)


async def test_an_account_with_an_open_hold_on_either_side_cannot_close(client: Client):
    """So no open pending transfer can point out of or into a closed account (were one to,
    the writer's rule refuses its post: tests/unit/ledger/test_writer_status.py)."""
    source = (await client.open("custodial", kind=pb.ACCOUNT_KIND_CUSTODIAL)).account_id
    seller = (await client.open("seller")).account_id
    pending = await client.transfer(source, seller, 50, mode=PENDING)
    # each is at 0 posted; only the hold (pending debit, pending credit) keeps it open
    assert await _state(client, source) == (0, -50, 50, 0)
    assert await _state(client, seller) == (0, 0, 0, 50)
    for account_id in (source, seller):
        await _refused(client.call("CloseAccount", pb.CloseAccountRequest(
            request_id=rid(), account_id=account_id)), "ACCOUNT_NOT_EMPTY")
    await _void(client, pending.transfer_id)
    for account_id in (source, seller):
        closed = await client.call("CloseAccount", pb.CloseAccountRequest(
            request_id=rid(), account_id=account_id))
        assert closed.account.status == pb.ACCOUNT_STATUS_CLOSED


async def test_spending_money_held_by_a_pending_transfer_is_insufficient_funds(
        client: Client):
    custodial, merchant, seller = await _setup(client, 1_000)
    hold = await client.transfer(merchant, seller, 600, mode=PENDING)
    assert await _state(client, merchant) == (1_000, 400, 600, 0)
    for mode in (pb.TRANSFER_MODE_IMMEDIATE, PENDING):
        await _refused(client.transfer(merchant, custodial, 401, mode=mode),
                       "INSUFFICIENT_FUNDS")
    # a freeze of an amount counts too: 400 - 100 frozen = 300 left
    await client.call("FreezeAccount", pb.FreezeAccountRequest(
        request_id=rid(), account_id=merchant, amount_minor=100, reason="dispute"))
    await _refused(client.transfer(merchant, custodial, 301), "INSUFFICIENT_FUNDS")
    await _refused(client.call("FreezeAccount", pb.FreezeAccountRequest(
        request_id=rid(), account_id=merchant, amount_minor=301, reason="more")),
        "INSUFFICIENT_FUNDS")
    # what the seller has pending is not his to spend either
    await _refused(client.transfer(seller, custodial, 1), "INSUFFICIENT_FUNDS")
    # exactly what is left is accepted, and the hold can still be posted in full
    await client.transfer(merchant, custodial, 300)
    assert await _state(client, merchant) == (700, 0, 600, 0)
    await _refused(client.transfer(merchant, custodial, 1), "INSUFFICIENT_FUNDS")
    await _post(client, hold.transfer_id, 600)
    assert await _state(client, merchant) == (100, 0, 0, 0)
    assert await _state(client, seller) == (600, 600, 0, 0)
    await _verify(client)
