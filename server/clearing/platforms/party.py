"""Whether a record concerns a party: a set of a platform's accounts (a party key's,
clearing.api.party). One query each; a record of another platform is nobody's."""

from __future__ import annotations

import asyncpg

from clearing.reports.voucher_model import VoucherKind

# A split concerns a party when one of its legs credits one of the party's accounts.
_SQL_SPLIT = """
SELECT EXISTS (SELECT 1 FROM splits s JOIN split_legs l ON l.split_id = s.split_id
               WHERE s.platform_id = $1 AND s.split_id = $2
                 AND l.account_id = ANY($3::bigint[]))"""
_SQL_ACTION = """
SELECT EXISTS (SELECT 1 FROM split_actions a JOIN split_legs l ON l.split_id = a.split_id
               WHERE a.platform_id = $1 AND a.action_id = $2
                 AND l.account_id = ANY($3::bigint[]))"""
_SQL_PAYOUT = """
SELECT EXISTS (SELECT 1 FROM payouts WHERE platform_id = $1 AND payout_id = $2
                 AND account_id = ANY($3::bigint[]))"""
_SQL_BY_KIND = {VoucherKind.SPLIT: _SQL_SPLIT, VoucherKind.SPLIT_ACTION: _SQL_ACTION,
                VoucherKind.PAYOUT: _SQL_PAYOUT}


async def concerns(conn: asyncpg.Connection | asyncpg.Pool, platform_id: int,
                   kind: VoucherKind, subject_id: int, account_ids: frozenset[int]) -> bool:
    """Whether the platform's split, split action or payout `subject_id` (a voucher's
    subject) concerns the party of `account_ids`."""
    return bool(await conn.fetchval(_SQL_BY_KIND[kind], platform_id, subject_id,
                                    sorted(account_ids)))
