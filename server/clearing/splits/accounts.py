"""The accounts a split touches: the receivers its plan and order name and the platform's
custodial account of the order's currency, read through a short-lived in-process cache
(`AccountDirectory`), and the statuses and spendable balances that releases and refunds
plan from."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import asyncpg

from clearing.errors import FailedPrecondition
from clearing.ledger.model import AccountKind, AccountStatus
from clearing.limits import (ACCOUNT_CACHE_ENTRIES_MAX, ACCOUNT_CACHE_PLANS_MAX,
                             ACCOUNT_CACHE_TTL_S, EXTERNAL_REF_LEN_MAX)
from clearing.reasons import Reason
from clearing.rules.compile import Plan, Target
from clearing.rules.model import AccountInfo, Order
from clearing.values import text_problem


def _target_refs(targets: Iterable[Target]) -> set[str]:
    return {t.external_ref for t in targets if t.external_ref}


def plan_refs(plan: Plan) -> frozenset[str]:
    """Every account external_ref the plan names (for the receivers' states)."""
    targets: list[Target] = []
    for unit in plan.units:
        for rule in unit.rules:
            targets += [f.target for f in rule.fees]
            targets += [s.target for s in rule.shares]
            targets += [s.target for s in rule.subsidies] + [s.source for s in rule.subsidies]
    return frozenset(_target_refs(targets))


_SQL_SPLIT_ACCOUNTS = """
SELECT account_id, external_ref, currency_code, status, kind FROM accounts
WHERE platform_id = $1 AND (external_ref = ANY($2::text[]) OR (kind = $3 AND currency_code = $4))
ORDER BY account_id
"""


async def split_accounts(pool: asyncpg.Pool, platform_id: int, plan: Plan, order: Order,
                         refs: Iterable[str] | None = None) -> tuple[int, dict[str, AccountInfo]]:
    """(the custodial account id of the order's currency or 0 if the platform has none,
    accounts by external_ref) for every account the plan or the order's parties name
    (`refs`, when the caller has them already)."""
    refs = sorted(refs if refs is not None else plan_refs(plan) | set(order.parties.values()))
    rows = await pool.fetch(_SQL_SPLIT_ACCOUNTS, platform_id, refs, int(AccountKind.CUSTODIAL),
                            order.currency_code)
    custodial = next((r["account_id"] for r in rows if r["kind"] == AccountKind.CUSTODIAL
                      and r["currency_code"] == order.currency_code), 0)
    wanted = set(refs)
    return custodial, {r["external_ref"]: AccountInfo(r["account_id"], r["currency_code"],
                                                      r["status"], r["kind"])
                       for r in rows if r["external_ref"] in wanted}


# Statuses a split may use from the directory's cache, and how many entries it keeps.
# Writer failures that mean "a receiver read as active is no longer": not recorded under
# the request id, so the split reads its accounts afresh and is submitted again.
STALE_ACCOUNT_REASONS = frozenset({Reason.ACCOUNT_FROZEN, Reason.ACCOUNT_CLOSED})


class AccountDirectory:
    """The accounts splits touch, read through a short-lived in-process cache.

    An account's id, currency and kind never change; its status does (freeze, unfreeze,
    close, through any server process). Only ACTIVE accounts are cached, for at most
    `ttl_s`; an account missing or not active is always read from the database. So the
    one stale answer possible is "active" for an account frozen or closed since, and the
    ledger writer catches it: it refuses the credit (ACCOUNT_FROZEN / ACCOUNT_CLOSED)
    without recording the failure (`STALE_ACCOUNT_REASONS`), and the split is evaluated
    again from a fresh read (`lookup(..., fresh=True)`). A split therefore sees the same
    statuses as with a database read per order, without the round trip.
    """

    def __init__(self, pool: asyncpg.Pool, *, ttl_s: float = ACCOUNT_CACHE_TTL_S,
                 entries_max: int = ACCOUNT_CACHE_ENTRIES_MAX,
                 monotonic: Callable[[], float] | None = None) -> None:
        self._pool = pool
        self._ttl_s = ttl_s
        self._entries_max = entries_max
        self._now = monotonic or time.monotonic
        self._accounts: dict[tuple[int, str], tuple[float, AccountInfo]] = {}
        self._custodial: dict[tuple[int, str], tuple[float, int]] = {}
        self._refs: dict[int, tuple[Plan, frozenset[str]]] = {}

    async def lookup(self, platform_id: int, plan: Plan, order: Order, *,
                     fresh: bool = False) -> tuple[int, dict[str, AccountInfo]]:
        """As `split_accounts`: (custodial account id or 0, accounts by external_ref)."""
        refs = self._plan_refs(plan) | set(order.parties.values())
        if fresh or self._ttl_s <= 0:
            custodial, found = await split_accounts(self._pool, platform_id, plan, order, refs)
            self._keep(platform_id, order.currency_code, custodial, found)
            return custodial, found
        now = self._now()
        found: dict[str, AccountInfo] = {}
        for ref in refs:
            hit = self._accounts.get((platform_id, ref))
            if hit is not None and hit[0] > now:
                found[ref] = hit[1]
        custodial_hit = self._custodial.get((platform_id, order.currency_code))
        if len(found) == len(refs) and custodial_hit is not None and custodial_hit[0] > now:
            return custodial_hit[1], found
        custodial, fetched = await split_accounts(self._pool, platform_id, plan, order, refs)
        self._keep(platform_id, order.currency_code, custodial, fetched)
        return custodial, fetched

    def _keep(self, platform_id: int, currency_code: str, custodial: int,
              found: dict[str, AccountInfo]) -> None:
        if self._ttl_s <= 0:
            return
        if len(self._accounts) >= self._entries_max:
            self._accounts.clear()
            self._custodial.clear()
        until = self._now() + self._ttl_s
        for ref, info in found.items():
            if info.status == AccountStatus.ACTIVE:
                self._accounts[(platform_id, ref)] = (until, info)
            else:
                self._accounts.pop((platform_id, ref), None)
        if custodial:
            self._custodial[(platform_id, currency_code)] = (until, custodial)

    def _plan_refs(self, plan: Plan) -> frozenset[str]:
        kept = self._refs.get(id(plan))
        if kept is None or kept[0] is not plan:
            if len(self._refs) >= ACCOUNT_CACHE_PLANS_MAX:
                self._refs.clear()
            kept = self._refs[id(plan)] = (plan, plan_refs(plan))
        return kept[1]


def require_custodial(custodial_id: int, currency_code: str) -> int:
    """The custodial account a split debits; FailedPrecondition if there is none."""
    if not custodial_id:
        raise FailedPrecondition(
            f"the platform has no custodial account in {currency_code}",
            reason=Reason.CUSTODIAL_ACCOUNT_MISSING, metadata={"currency_code": currency_code})
    return custodial_id


async def accounts_by_ref(conn: asyncpg.Connection, platform_id: int,
                          refs: Iterable[str]) -> dict[str, AccountInfo]:
    """The platform's accounts among `refs`, by external_ref (a ref that cannot be one, e.g.
    with NUL, is not looked up: it names no account)."""
    refs = sorted(r for r in refs if text_problem(r, EXTERNAL_REF_LEN_MAX) is None)
    rows = await conn.fetch(
        "SELECT account_id, external_ref, currency_code, status, kind FROM accounts"
        " WHERE platform_id = $1 AND external_ref = ANY($2::text[])", platform_id, refs)
    return {r["external_ref"]: AccountInfo(r["account_id"], r["currency_code"], r["status"],
                                           r["kind"]) for r in rows}



@dataclass(frozen=True, slots=True)
class AccountState:
    """What a release or refund plans from: an account's status and its available balance
    (posted, less pending debits and frozen; None for an account allowed to go negative)."""

    status: AccountStatus
    spendable_minor: int | None


async def account_states(conn: asyncpg.Connection,
                         account_ids: Iterable[int]) -> dict[int, AccountState]:
    """The state of each account, by account id."""
    rows = await conn.fetch(
        "SELECT account_id, status, allow_negative,"
        " credits_posted - debits_posted - debits_pending - frozen AS spendable"
        " FROM accounts WHERE account_id = ANY($1::bigint[])", sorted(set(account_ids)))
    return {r["account_id"]: AccountState(AccountStatus(r["status"]),
                                          None if r["allow_negative"] else r["spendable"])
            for r in rows}
