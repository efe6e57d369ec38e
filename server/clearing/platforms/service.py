"""The admin API's domain: reads, and one function per change.

Every change (create a platform, create or revoke a key, set a payout configuration,
approve or reject its change, set calendar days) is one function that takes the connection,
runs in one transaction and, inside it, calls `audit(...)` with who (the admin key id), what
and the details: the audit trail writes its row there, in the same transaction as the
change. Reads are not audited.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import asyncpg

from clearing import audit as audit_trail
from clearing import tenancy, values
from clearing.config import PayoutSettings
from clearing.errors import AlreadyExists, FailedPrecondition, NotFound, PermissionDenied
from clearing.payout import schedule
from clearing.payout import store as payout_store
from clearing.payout.model import PayoutConfig
from clearing.platforms.model import (FEE_FIELDS, ApiKey, CalendarDay, ChangeState,
                                      ConfigChange, DayKind, Platform)
from clearing.reasons import Reason

_PLATFORMS_KIND = "platforms"
_KEYS_KIND = "api-keys"


async def audit(conn: asyncpg.Connection, admin_key_id: int, action: str,
                subject: dict[str, object], *, resource: str = "") -> None:
    """The one place every admin change passes, inside its transaction, with who made it
    (`admin_key_id`), what (`action`: the PlatformService method) and on what (`subject`):
    one event in the audit trail of the platform it concerns (platform 0, the core's own
    chain, for the business calendar), same connection, same transaction, so a change and
    its record commit together."""
    platform_id = int(subject.get("platform_id") or 0)  # type: ignore[call-overload]
    await audit_trail.record(conn, admin_actor(admin_key_id, platform_id), action,
                             resource or action_resource(action, subject), after=subject,
                             platform_id=platform_id)


def admin_actor(admin_key_id: int, platform_id: int) -> audit_trail.Actor:
    """An admin key as the audit trail records it (admin keys are not platform keys: the
    role names the admin key, key_id stays 0)."""
    return audit_trail.Actor(platform_id, 0, (f"{ADMIN_ROLE_PREFIX}{admin_key_id}",))


ADMIN_ROLE_PREFIX = "admin-key:"


def action_resource(action: str, subject: dict[str, object]) -> str:
    for key, kind in (("change_id", "payout_config_change"), ("key_id", "api_key"),
                      ("platform_id", "platform")):
        if key in subject:
            return f"{kind}:{subject[key]}"
    return "business_calendar" if action == "SetBusinessCalendar" else action


# ---- platforms -------------------------------------------------------------------------------

def _platform(row) -> Platform:
    return Platform(row["platform_id"], row["name"], row["created_at"])


async def create_platform(conn: asyncpg.Connection, admin_key_id: int, name: str) -> Platform:
    """A new platform (no key yet); AlreadyExists if the name is taken."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "INSERT INTO platforms (name) VALUES ($1) ON CONFLICT (name) DO NOTHING"
            " RETURNING platform_id, name, created_at", name)
        if row is None:
            raise AlreadyExists(f"a platform named {name!r} exists", metadata={"name": name})
        platform = _platform(row)
        await audit(conn, admin_key_id, "CreatePlatform",
                    {"platform_id": platform.platform_id, "name": name})
    return platform


async def get_platform(conn: asyncpg.Connection, platform_id: int = 0,
                       name: str = "") -> Platform:
    """A platform by id (> 0) or else by name; NotFound (PLATFORM_NOT_FOUND)."""
    if platform_id:
        row = await conn.fetchrow("SELECT platform_id, name, created_at FROM platforms"
                                  " WHERE platform_id = $1", platform_id)
        what = {"platform_id": str(platform_id)}
    else:
        row = await conn.fetchrow("SELECT platform_id, name, created_at FROM platforms"
                                  " WHERE name = $1", name)
        what = {"name": name}
    if row is None:
        raise NotFound("no such platform", reason=Reason.PLATFORM_NOT_FOUND, metadata=what)
    return _platform(row)


async def list_platforms(conn: asyncpg.Connection, *, page_size: int,
                         page_token: str) -> tuple[list[Platform], str]:
    """Oldest first (by id); the token resumes after the page's last platform."""
    after = values.decode_page_token(page_token, _PLATFORMS_KIND, 0)
    rows = await conn.fetch("SELECT platform_id, name, created_at FROM platforms"
                            " WHERE platform_id > $1 ORDER BY platform_id LIMIT $2",
                            after[0] if after else 0, page_size + 1)
    platforms = [_platform(r) for r in rows[:page_size]]
    token = ""
    if len(rows) > page_size:
        token = values.encode_page_token(_PLATFORMS_KIND, 0, platforms[-1].platform_id)
    return platforms, token


async def _lock_platform(conn: asyncpg.Connection, platform_id: int) -> None:
    """Lock the platform's row for the transaction (its changes are serialised);
    NotFound if there is none. FOR NO KEY UPDATE: a row inserted naming the platform (the
    ledger writer's payouts) checks its foreign key without waiting for the change."""
    if await conn.fetchval("SELECT true FROM platforms WHERE platform_id = $1"
                           " FOR NO KEY UPDATE", platform_id) is None:
        raise NotFound("no such platform", reason=Reason.PLATFORM_NOT_FOUND,
                       metadata={"platform_id": str(platform_id)})


# ---- API keys --------------------------------------------------------------------------------

_SQL_KEY = ("SELECT key_id, platform_id, key_prefix, roles, created_at, last_used_at,"
            " revoked_at, party_account_ids FROM api_keys")


def _key(row) -> ApiKey:
    return ApiKey(row["key_id"], row["platform_id"], row["key_prefix"], tuple(row["roles"]),
                  row["created_at"], row["last_used_at"], row["revoked_at"],
                  tuple(row["party_account_ids"] or ()))


async def create_api_key(conn: asyncpg.Connection, admin_key_id: int, platform_id: int,
                         roles: frozenset[str], *,
                         party_account_ids: tuple[int, ...] = ()) -> tuple[ApiKey, str]:
    """A new key of the platform (with `party_account_ids`, a party key bound to those
    accounts of the platform); returns it as listed and the key itself (shown once)."""
    async with conn.transaction():
        await _lock_platform(conn, platform_id)
        key_id, key = await tenancy.insert_key(  # recorded there, by this admin key
            conn, platform_id, roles, actor=admin_actor(admin_key_id, platform_id),
            party_account_ids=party_account_ids)
        info = _key(await conn.fetchrow(f"{_SQL_KEY} WHERE key_id = $1", key_id))
    return info, key


async def list_api_keys(conn: asyncpg.Connection, platform_id: int, *, page_size: int,
                        page_token: str, key_prefix: str = "") -> tuple[list[ApiKey], str]:
    """The platform's keys (platform_id 0: every platform's), only those whose prefix starts
    with `key_prefix` if given, oldest first; NotFound if there is no such platform."""
    if platform_id:
        await get_platform(conn, platform_id)
    after = values.decode_page_token(page_token, _KEYS_KIND, platform_id)
    rows = await conn.fetch(f"{_SQL_KEY} WHERE ($1 = 0 OR platform_id = $1) AND key_id > $2"
                            " AND starts_with(key_prefix, $3) ORDER BY key_id LIMIT $4",
                            platform_id, after[0] if after else 0, key_prefix, page_size + 1)
    keys = [_key(r) for r in rows[:page_size]]
    token = ""
    if len(rows) > page_size:
        token = values.encode_page_token(_KEYS_KIND, platform_id, keys[-1].key_id)
    return keys, token


async def revoke_api_key(conn: asyncpg.Connection, admin_key_id: int,
                         key_id: int) -> tuple[ApiKey, bool]:
    """Revoke a key; returns it and whether it was revoked before (then nothing changes).
    Every server refuses it within clearing.api.auth.REVOCATION_BOUND_S. NotFound
    (API_KEY_NOT_FOUND)."""
    async with conn.transaction():
        row = await conn.fetchrow(f"{_SQL_KEY} WHERE key_id = $1 FOR UPDATE", key_id)
        if row is None:
            raise NotFound("no such API key", reason=Reason.API_KEY_NOT_FOUND,
                           metadata={"key_id": str(key_id)})
        if row["revoked_at"] is not None:
            return _key(row), True
        await tenancy.revoke_key(  # recorded there, by this admin key
            conn, key_id, actor=admin_actor(admin_key_id, row["platform_id"]))
        info = _key(await conn.fetchrow(f"{_SQL_KEY} WHERE key_id = $1", key_id))
    return info, False


# ---- payout configuration (maker-checker for fees) --------------------------------------------

_CONFIG_COLUMNS = ("fee_fixed_minor, fee_bps, fee_account_id, min_amount_minor,"
                   " max_amount_minor, daily_max_minor, review_threshold_minor,"
                   " bank_transfer_max_minor, time_zone")
_SQL_CHANGE = (f"SELECT change_id, payload_hash, platform_id, currency_code, {_CONFIG_COLUMNS},"
               " state, requested_by, created_at, decided_by, decided_at, note"
               " FROM payout_config_changes")


def _change(row) -> ConfigChange:
    config = PayoutConfig(row["platform_id"], row["currency_code"].strip(),
                          row["fee_fixed_minor"], row["fee_bps"], row["fee_account_id"] or 0,
                          row["min_amount_minor"], row["max_amount_minor"],
                          row["daily_max_minor"], row["review_threshold_minor"],
                          row["bank_transfer_max_minor"], row["time_zone"])
    return ConfigChange(row["change_id"], config, ChangeState(row["state"]),
                        row["requested_by"], row["created_at"], row["decided_by"] or 0,
                        row["decided_at"], row["note"])


async def get_payout_config(conn: asyncpg.Connection, settings: PayoutSettings,
                            platform_id: int,
                            currency_code: str) -> tuple[PayoutConfig, ConfigChange | None]:
    """The configuration in force (the defaults if none was set) and the pending change."""
    await get_platform(conn, platform_id)
    config = await payout_store.load_config(conn, settings, platform_id, currency_code)
    row = await conn.fetchrow(
        f"{_SQL_CHANGE} WHERE platform_id = $1 AND currency_code = $2"
        f" AND state = {ChangeState.PENDING:d} ORDER BY change_id DESC LIMIT 1",
        platform_id, currency_code)
    return config, None if row is None else _change(row)


async def set_payout_config(conn: asyncpg.Connection, admin_key_id: int,
                            settings: PayoutSettings, *, request_id: str,
                            payload_hash: bytes, config: PayoutConfig) -> ConfigChange:
    """Record a change of a payout configuration: applied at once (APPLIED) when the fee
    (FEE_FIELDS) stays as it is, else PENDING until another admin key approves it. A
    pending change of the same platform and currency is SUPERSEDED. Once per request id (a
    retry answers the recorded change; another payload: AlreadyExists REQUEST_ID_REUSED).
    InvalidArgument names the field as `config.<field>`."""
    for _ in range(2):  # a concurrent first use of the request id: read what it recorded
        row = await conn.fetchrow(f"{_SQL_CHANGE} WHERE request_id = $1", request_id)
        if row is not None:
            if row["payload_hash"] != payload_hash:
                raise AlreadyExists("request_id was used with another request",
                                    reason=Reason.REQUEST_ID_REUSED)
            return _change(row)
        try:
            return await _set_payout_config(conn, admin_key_id, settings, request_id,
                                            payload_hash, config)
        except asyncpg.UniqueViolationError:
            continue
    raise AlreadyExists("request_id is in use", reason=Reason.REQUEST_ID_REUSED)


async def _set_payout_config(conn, admin_key_id: int, settings: PayoutSettings,
                             request_id: str, payload_hash: bytes,
                             config: PayoutConfig) -> ConfigChange:
    async with conn.transaction():
        await _lock_platform(conn, config.platform_id)
        await payout_store.check_config(conn, config, "config.")
        current = await payout_store.load_config(conn, settings, config.platform_id,
                                                 config.currency_code)
        fee_changed = any(getattr(current, f) != getattr(config, f) for f in FEE_FIELDS)
        await conn.execute(
            f"UPDATE payout_config_changes SET state = {ChangeState.SUPERSEDED:d},"
            " decided_at = now() WHERE platform_id = $1 AND currency_code = $2"
            f" AND state = {ChangeState.PENDING:d}", config.platform_id, config.currency_code)
        state = ChangeState.PENDING if fee_changed else ChangeState.APPLIED
        row = await conn.fetchrow(
            f"INSERT INTO payout_config_changes (request_id, payload_hash, platform_id,"
            f" currency_code, {_CONFIG_COLUMNS}, state, requested_by, decided_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, NULLIF($7, 0), $8, $9, $10, $11, $12, $13, $14,"
            " $15, CASE WHEN $16 THEN NULL ELSE now() END) RETURNING change_id",
            request_id, payload_hash, config.platform_id, config.currency_code,
            config.fee_fixed_minor, config.fee_bps, config.fee_account_id,
            config.min_amount_minor, config.max_amount_minor, config.daily_max_minor,
            config.review_threshold_minor, config.bank_transfer_max_minor, config.time_zone,
            int(state), admin_key_id, fee_changed)
        if state is ChangeState.APPLIED:
            await payout_store.save_config(
                conn, config, actor=admin_actor(admin_key_id, config.platform_id))
        change = _change(await conn.fetchrow(f"{_SQL_CHANGE} WHERE change_id = $1",
                                             row["change_id"]))
        await audit(conn, admin_key_id, "SetPayoutConfig",
                    {"change_id": change.change_id, "platform_id": config.platform_id,
                     "state": state.name, "config": dataclasses.asdict(config)})
    return change


async def approve_payout_config_change(conn: asyncpg.Connection, admin_key_id: int,
                                       change_id: int, note: str = "") -> ConfigChange:
    """Apply a pending change; not by the admin key that made it (PermissionDenied,
    MAKER_CHECKER)."""
    return await _decide(conn, admin_key_id, change_id, note, approve=True)


async def reject_payout_config_change(conn: asyncpg.Connection, admin_key_id: int,
                                      change_id: int, note: str = "") -> ConfigChange:
    """Reject a pending change (any admin key, its maker included); nothing changes."""
    return await _decide(conn, admin_key_id, change_id, note, approve=False)


async def _decide(conn, admin_key_id: int, change_id: int, note: str, *,
                  approve: bool) -> ConfigChange:
    async with conn.transaction():
        # The platform's row first, as SetPayoutConfig takes it: a change set meanwhile
        # waits for this decision and compares its fee with the one approved here (found in
        # review: it read the fee before, then applied the old fee again, APPLIED).
        platform_id = await conn.fetchval(
            "SELECT platform_id FROM payout_config_changes WHERE change_id = $1", change_id)
        if platform_id is not None:
            await _lock_platform(conn, platform_id)
        row = await conn.fetchrow(f"{_SQL_CHANGE} WHERE change_id = $1 FOR UPDATE", change_id)
        if row is None:
            raise NotFound("no such payout configuration change",
                           reason=Reason.PAYOUT_CONFIG_CHANGE_NOT_FOUND,
                           metadata={"change_id": str(change_id)})
        change = _change(row)
        if change.state is not ChangeState.PENDING:
            raise FailedPrecondition(f"the change is {change.state.name}, not PENDING",
                                     reason=Reason.PAYOUT_CONFIG_CHANGE_NOT_PENDING,
                                     metadata={"state": change.state.name})
        if approve and change.requested_by == admin_key_id:
            raise PermissionDenied("the admin key that made a fee change may not approve it",
                                   reason=Reason.MAKER_CHECKER)
        if approve:
            await payout_store.save_config(
                conn, change.config,
                actor=admin_actor(admin_key_id, change.config.platform_id))
        state = ChangeState.APPROVED if approve else ChangeState.REJECTED
        await conn.execute(
            "UPDATE payout_config_changes SET state = $2, decided_by = $3, decided_at = now(),"
            " note = $4 WHERE change_id = $1", change_id, int(state), admin_key_id, note)
        change = _change(await conn.fetchrow(f"{_SQL_CHANGE} WHERE change_id = $1", change_id))
        await audit(conn, admin_key_id,
                    "ApprovePayoutConfigChange" if approve else "RejectPayoutConfigChange",
                    {"change_id": change_id, "platform_id": change.config.platform_id,
                     "currency_code": change.config.currency_code, "note": note})
    return change


# ---- the business calendar ---------------------------------------------------------------------

async def get_calendar(conn: asyncpg.Connection, start: dt.date,
                       end: dt.date) -> list[CalendarDay]:
    return [CalendarDay(d, DayKind.WORKDAY if business else DayKind.HOLIDAY, note)
            for d, business, note in await schedule.calendar_days(conn, start, end)]


async def set_calendar(conn: asyncpg.Connection, admin_key_id: int,
                       days: list[CalendarDay]) -> list[CalendarDay]:
    """Set (HOLIDAY, WORKDAY) or unset (UNSET) days, all in one transaction."""
    async with conn.transaction():
        for d in days:
            if d.kind is DayKind.UNSET:
                await schedule.unset_calendar_day(conn, d.day)
            else:
                await schedule.set_calendar_day(conn, d.day, d.kind is DayKind.WORKDAY, d.note)
        await audit(conn, admin_key_id, "SetBusinessCalendar",
                    {"days": [(d.day.isoformat(), d.kind.name, d.note) for d in days]})
    return days
