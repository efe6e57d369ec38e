"""Ledger reads and account operations (everything but transfers, which go through the
group-commit writer); servicers run the operations through `clearing.idempotency`. All
queries are scoped by platform: another platform's rows are indistinguishable from rows
that do not exist."""

from __future__ import annotations

import datetime as dt


import asyncpg

from clearing import audit
from clearing.events import outbox
from clearing.events.model import EventType
from clearing.errors import (AlreadyExists, FailedPrecondition, FieldViolation,
                             InvalidArgument, NotFound)
from clearing.ledger.model import (Account, AccountKind, AccountStatus, Balance, EntrySide, Mode,
                                   OwnerType, Principal, TransferRecord)
from clearing.ledger import journal
from clearing.limits import INT64_MAX
from clearing.values import decode_page_token, encode_page_token
from clearing.reasons import Reason

_ACCOUNT_COLUMNS = (
    "account_id, platform_id, external_ref, kind, owner_type, currency_code, status,"
    " allow_negative, display_name, debits_posted, credits_posted, debits_pending,"
    " credits_pending, frozen, created_at")


def account_from_row(r: asyncpg.Record) -> Account:
    balance = Balance(r["account_id"], r["currency_code"], r["debits_posted"],
                      r["credits_posted"], r["debits_pending"], r["credits_pending"],
                      r["frozen"])
    return Account(r["account_id"], r["platform_id"], r["external_ref"], AccountKind(r["kind"]),
                   OwnerType(r["owner_type"]), r["currency_code"], AccountStatus(r["status"]),
                   r["allow_negative"], r["display_name"], balance, r["created_at"])


def _not_found(account_id: int | str) -> NotFound:
    return NotFound(f"account {account_id} not found", reason=Reason.ACCOUNT_NOT_FOUND,
                    metadata={"account": str(account_id)})


async def insert_account(conn: asyncpg.Connection, platform_id: int, external_ref: str,
                         kind: AccountKind, owner_type: OwnerType, currency_code: str,
                         allow_negative: bool, display_name: str) -> int:
    try:
        return await conn.fetchval(
            "INSERT INTO accounts (platform_id, external_ref, kind, owner_type, currency_code,"
            " allow_negative, display_name) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            " RETURNING account_id",
            platform_id, external_ref, int(kind), int(owner_type), currency_code,
            allow_negative, display_name)
    except asyncpg.UniqueViolationError:
        raise AlreadyExists(f"an account with external_ref {external_ref!r} exists",
                            reason=Reason.EXTERNAL_REF_TAKEN,
                            metadata={"external_ref": external_ref}) from None


async def _lock_account(conn, platform_id: int, account_id: int) -> asyncpg.Record:
    row = await conn.fetchrow(
        f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE account_id = $1 AND platform_id = $2"
        " FOR UPDATE", account_id, platform_id)
    if row is None:
        raise _not_found(account_id)
    return row


def _state(acct: Account) -> dict:
    """An account's operator-visible state, as the audit trail records it."""
    return {"status": acct.status.name, "frozen_minor": acct.balance.frozen}


async def _event(conn, principal: Principal, account_id: int, action: str, amount: int,
                 reason: str, before: Account, method: str) -> None:
    await conn.execute(
        "INSERT INTO account_events (platform_id, account_id, action, amount, reason, key_id)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        principal.platform_id, account_id, action, amount, reason, principal.key_id)
    after = await get_account(conn, principal.platform_id, account_id=account_id)
    if outbox.enabled():  # the account as the change left it (clearing.events)
        await outbox.write_one(conn, principal.platform_id, _EVENT_TYPES[action], account_id,
                               "", after, dt.datetime.now(dt.timezone.utc))
    await audit.record(conn, audit.Actor.of(principal), method, f"account:{account_id}",
                       before=_state(before), after={**_state(after), "amount_minor": amount,
                                                    "reason": reason})


_EVENT_TYPES = {"freeze": EventType.ACCOUNT_FROZEN, "unfreeze": EventType.ACCOUNT_UNFROZEN,
                "close": EventType.ACCOUNT_CLOSED}


async def freeze(conn, principal: Principal, account_id: int, amount: int, reason: str) -> int:
    """Freeze the account (amount 0) or `amount` of its available funds."""
    acct = account_from_row(await _lock_account(conn, principal.platform_id, account_id))
    if acct.status is AccountStatus.CLOSED:
        raise FailedPrecondition(f"account {account_id} is closed", reason=Reason.ACCOUNT_CLOSED)
    if amount == 0:
        if acct.status is AccountStatus.FROZEN:
            raise FailedPrecondition(f"account {account_id} is already frozen",
                                     reason=Reason.ACCOUNT_FROZEN)
        await conn.execute("UPDATE accounts SET status = $2 WHERE account_id = $1",
                           account_id, int(AccountStatus.FROZEN))
    else:
        if acct.balance.available < amount:
            raise FailedPrecondition(
                f"account {account_id} has {acct.balance.available} available, "
                f"cannot freeze {amount}", reason=Reason.INSUFFICIENT_FUNDS)
        await conn.execute("UPDATE accounts SET frozen = frozen + $2 WHERE account_id = $1",
                           account_id, amount)
    await _event(conn, principal, account_id, "freeze", amount, reason, acct, "FreezeAccount")
    return account_id


async def unfreeze(conn, principal: Principal, account_id: int, amount: int,
                   reason: str) -> int:
    """Lift the account freeze (amount 0) or release `amount` of frozen funds."""
    acct = account_from_row(await _lock_account(conn, principal.platform_id, account_id))
    if amount == 0:
        if acct.status is not AccountStatus.FROZEN:
            raise FailedPrecondition(f"account {account_id} is not frozen",
                                     reason=Reason.ACCOUNT_NOT_FROZEN)
        await conn.execute("UPDATE accounts SET status = $2 WHERE account_id = $1",
                           account_id, int(AccountStatus.ACTIVE))
    else:
        if amount > acct.balance.frozen:
            raise InvalidArgument([FieldViolation(
                "amount_minor", f"exceeds the {acct.balance.frozen} frozen")],
                reason=Reason.AMOUNT_EXCEEDS_FROZEN)
        await conn.execute("UPDATE accounts SET frozen = frozen - $2 WHERE account_id = $1",
                           account_id, amount)
    await _event(conn, principal, account_id, "unfreeze", amount, reason, acct,
                 "UnfreezeAccount")
    return account_id


async def close(conn, principal: Principal, account_id: int) -> int:
    """Close an account whose balances are all zero."""
    acct = account_from_row(await _lock_account(conn, principal.platform_id, account_id))
    b = acct.balance
    if acct.status is AccountStatus.CLOSED:
        raise FailedPrecondition(f"account {account_id} is already closed",
                                 reason=Reason.ACCOUNT_CLOSED)
    if b.posted or b.debits_pending or b.credits_pending or b.frozen:
        raise FailedPrecondition(
            f"account {account_id} still has balances (posted {b.posted}, pending "
            f"{b.debits_pending}/{b.credits_pending}, frozen {b.frozen})",
            reason=Reason.ACCOUNT_NOT_EMPTY)
    await conn.execute("UPDATE accounts SET status = $2 WHERE account_id = $1",
                       account_id, int(AccountStatus.CLOSED))
    await _event(conn, principal, account_id, "close", 0, "", acct, "CloseAccount")
    return account_id


# ---- reads --------------------------------------------------------------------------------

async def get_account(conn, platform_id: int, *, account_id: int = 0,
                      external_ref: str = "") -> Account:
    if account_id:
        row = await conn.fetchrow(
            f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE account_id = $1"
            " AND platform_id = $2", account_id, platform_id)
    else:
        row = await conn.fetchrow(
            f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE external_ref = $1"
            " AND platform_id = $2", external_ref, platform_id)
    if row is None:
        raise _not_found(account_id or external_ref)
    return account_from_row(row)


async def list_accounts(conn, platform_id: int, *, page_size: int, page_token: str,
                        kind: int, status: int,
                        account_ids: frozenset[int] | None = None) -> tuple[list[Account], str]:
    """By id; `account_ids` (a party key's accounts): only those."""
    after, = decode_page_token(page_token, "accounts", platform_id) or (0,)
    rows = await conn.fetch(
        f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE platform_id = $1 AND account_id > $2"
        " AND ($3 = 0 OR kind = $3) AND ($4 = 0 OR status = $4)"
        " AND ($6::bigint[] IS NULL OR account_id = ANY($6::bigint[]))"
        " ORDER BY account_id LIMIT $5", platform_id, after, kind, status, page_size + 1,
        None if account_ids is None else sorted(account_ids))
    accounts = [account_from_row(r) for r in rows[:page_size]]
    more = len(rows) > page_size
    token = encode_page_token("accounts", platform_id, accounts[-1].account_id) if more else ""
    return accounts, token


_SQL_ENTRIES = f"""
SELECT * FROM (
  (SELECT {journal.TRANSFER_COLUMNS}, {EntrySide.DEBIT:d} AS side FROM transfers
   WHERE debit_account_id = $1 AND transfer_id < $2 ORDER BY transfer_id DESC LIMIT $3)
  UNION ALL
  (SELECT {journal.TRANSFER_COLUMNS}, {EntrySide.CREDIT:d} AS side FROM transfers
   WHERE credit_account_id = $1 AND transfer_id < $2 ORDER BY transfer_id DESC LIMIT $3)
) e ORDER BY transfer_id DESC LIMIT $3
"""


async def list_entries(conn, platform_id: int, account_id: int, *, page_size: int,
                       page_token: str) -> tuple[list[tuple[TransferRecord, int]], str]:
    """(record, EntrySide) pairs, newest first (the side of this account)."""
    await get_account(conn, platform_id, account_id=account_id)
    before, = decode_page_token(page_token, "entries", account_id) or (INT64_MAX,)
    rows = await conn.fetch(_SQL_ENTRIES, account_id, before, page_size + 1)
    entries = [(journal.record_from_row(r), EntrySide(r["side"])) for r in rows[:page_size]]
    more = len(rows) > page_size
    token = encode_page_token("entries", account_id, entries[-1][0].transfer_id) if more else ""
    return entries, token


async def get_transfers(conn, platform_id: int, transfer_ids: list[int]) -> list[TransferRecord]:
    rows = await conn.fetch(
        f"SELECT {journal.TRANSFER_COLUMNS} FROM transfers WHERE transfer_id = ANY($1::bigint[])"
        " AND platform_id = $2 ORDER BY transfer_id", transfer_ids, platform_id)
    return [journal.record_from_row(r) for r in rows]


__all__ = ["Mode"]
