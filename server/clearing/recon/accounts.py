"""The accounts reconciliation posts to: the platform's custodial account of a currency
(the first one, as payouts take it), and the accounts the server opens on first use, both
allowed to go negative: a channel's clearing account per channel and currency
(AccountKind.CHANNEL_CLEARING, the counter-account of what the channel settles) and the
suspense account per currency (AccountKind.SUSPENSE, where write-offs go)."""

from __future__ import annotations

import asyncpg

from clearing.errors import AlreadyExists, FailedPrecondition
from clearing.ledger.model import AccountKind, OwnerType
from clearing.reasons import Reason

_SQL_CUSTODIAL = f"""
SELECT account_id FROM accounts
WHERE platform_id = $1 AND kind = {AccountKind.CUSTODIAL:d} AND currency_code = $2
ORDER BY account_id LIMIT 1
"""
_SQL_OPEN = """
INSERT INTO accounts (platform_id, external_ref, kind, owner_type, currency_code,
                      allow_negative, display_name)
VALUES ($1, $2, $3, $4, $5, true, $6) ON CONFLICT (platform_id, external_ref) DO NOTHING
"""
_SQL_BY_REF = """
SELECT account_id, kind, currency_code FROM accounts WHERE platform_id = $1 AND external_ref = $2
"""


def clearing_ref(channel: str, currency_code: str) -> str:
    return f"recon:channel-clearing:{channel}:{currency_code}"


def suspense_ref(currency_code: str) -> str:
    return f"recon:suspense:{currency_code}"


async def custodial(conn: asyncpg.Connection, platform_id: int, currency_code: str) -> int:
    """The custodial account of the currency; FAILED_PRECONDITION if there is none."""
    account_id = await conn.fetchval(_SQL_CUSTODIAL, platform_id, currency_code)
    if account_id is None:
        raise FailedPrecondition(f"the platform has no custodial account in {currency_code}",
                                 reason=Reason.CUSTODIAL_ACCOUNT_MISSING,
                                 metadata={"currency_code": currency_code})
    return account_id


async def ensure(pool: asyncpg.Pool, platform_id: int, external_ref: str, kind: AccountKind,
                 currency_code: str, display_name: str) -> int:
    """The account of `external_ref`, opened (and committed: the ledger writer's own
    transaction must see it) if it does not exist. A client's account under that ref of
    another kind or currency: ALREADY_EXISTS EXTERNAL_REF_TAKEN."""
    async with pool.acquire() as conn:
        await conn.execute(_SQL_OPEN, platform_id, external_ref, int(kind),
                           int(OwnerType.ENTERPRISE), currency_code, display_name)
        row = await conn.fetchrow(_SQL_BY_REF, platform_id, external_ref)
    if row["kind"] != kind or row["currency_code"] != currency_code:
        raise AlreadyExists(f"the account {external_ref!r} exists with another kind or currency",
                            reason=Reason.EXTERNAL_REF_TAKEN,
                            metadata={"external_ref": external_ref})
    return row["account_id"]


async def ensure_clearing(pool: asyncpg.Pool, platform_id: int, channel: str,
                          currency_code: str) -> int:
    return await ensure(pool, platform_id, clearing_ref(channel, currency_code),
                        AccountKind.CHANNEL_CLEARING, currency_code,
                        f"{channel} clearing ({currency_code})")


async def ensure_suspense(pool: asyncpg.Pool, platform_id: int, currency_code: str) -> int:
    return await ensure(pool, platform_id, suspense_ref(currency_code), AccountKind.SUSPENSE,
                        currency_code, f"suspense ({currency_code})")
