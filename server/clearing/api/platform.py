"""PlatformService (admin keys only): validation and conversion; the domain is
`clearing.platforms`."""

from __future__ import annotations

import datetime as dt
import re

import asyncpg

from clearing import idempotency
from clearing.api import validate
from clearing.api.replies import encode
from clearing.api.convert import timestamp
from clearing.api.interceptor import principal
from clearing.config import PayoutSettings
from clearing.errors import FailedPrecondition, Violations
from clearing.ledger.model import Role
from clearing.limits import (BPS_MAX, CALENDAR_DAYS_PER_CHANGE_MAX,
                             CALENDAR_NOTE_LEN_MAX, CALENDAR_RANGE_DAYS_MAX,
                             DECISION_NOTE_LEN_MAX, PARTY_ACCOUNTS_MAX,
                             PLATFORM_NAME_LEN_MAX)
from clearing.payout.model import PayoutConfig
from clearing.platforms import service
from clearing.reasons import Reason
from clearing.tenancy import PREFIX_LEN
from clearing.platforms.model import ApiKey, CalendarDay, ConfigChange, DayKind, Platform
from clearing.v1 import platform_pb2 as pb
from clearing.v1 import platform_pb2_grpc

_SERVICE = "/clearing.v1.PlatformService/"
_ADMIN = frozenset({Role.ADMIN})
# Every method: an admin key (the interceptor refuses platform keys, and admin keys
# everywhere else).
METHOD_ROLES: dict[str, frozenset[str]] = {
    _SERVICE + m.name: _ADMIN
    for m in pb.DESCRIPTOR.services_by_name["PlatformService"].methods}

_NAME = re.compile(r"[A-Za-z0-9._-]+")
# The request ids of admin writes (CreatePlatform, CreateApiKey) are recorded in `requests`
# under platform 0, the core's own (as its audit chain): one namespace for every admin key.
ADMIN_REQUESTS_PLATFORM = 0


def platform_message(p: Platform) -> pb.Platform:
    return pb.Platform(platform_id=p.platform_id, name=p.name,
                       create_time=timestamp(p.created_at))


def key_message(k: ApiKey) -> pb.ApiKey:
    out = pb.ApiKey(key_id=k.key_id, platform_id=k.platform_id, key_prefix=k.key_prefix,
                    roles=list(k.roles), create_time=timestamp(k.created_at))
    if k.last_used_at is not None:
        out.last_use_time.CopyFrom(timestamp(k.last_used_at))
    if k.revoked_at is not None:
        out.revoke_time.CopyFrom(timestamp(k.revoked_at))
    out.party_account_ids.extend(k.party_account_ids)
    return out


def config_message(c: PayoutConfig) -> pb.PayoutConfig:
    return pb.PayoutConfig(
        platform_id=c.platform_id, currency_code=c.currency_code,
        fee_fixed_minor=c.fee_fixed_minor, fee_bps=c.fee_bps, fee_account_id=c.fee_account_id,
        min_amount_minor=c.min_amount_minor, max_amount_minor=c.max_amount_minor,
        daily_max_minor=c.daily_max_minor, review_threshold_minor=c.review_threshold_minor,
        bank_transfer_max_minor=c.bank_transfer_max_minor, time_zone=c.time_zone)


def change_message(c: ConfigChange) -> pb.PayoutConfigChange:
    out = pb.PayoutConfigChange(
        change_id=c.change_id, config=config_message(c.config), state=int(c.state),
        requested_by_admin_key_id=c.requested_by, create_time=timestamp(c.created_at),
        decided_by_admin_key_id=c.decided_by, note=c.note)
    if c.decided_at is not None:
        out.decide_time.CopyFrom(timestamp(c.decided_at))
    return out


def _config_violations(v: Violations, c: pb.PayoutConfig) -> None:
    """Each field's range (the cross checks, fee account and time zone, are the domain's)."""
    validate.object_id(v, c.platform_id, "config.platform_id")
    validate.currency(v, c.currency_code, "config.currency_code")
    validate.amount_or_zero(v, c.fee_fixed_minor, "config.fee_fixed_minor")
    if not 0 <= c.fee_bps <= BPS_MAX:
        v.add("config.fee_bps", f"must be between 0 and {BPS_MAX}")
    validate.object_id(v, c.fee_account_id, "config.fee_account_id", required=False)
    if (c.fee_fixed_minor or c.fee_bps) and not c.fee_account_id:
        v.add("config.fee_account_id", "required with a fee: the account credited with fees")
    validate.amount(v, c.min_amount_minor, "config.min_amount_minor")
    validate.amount(v, c.max_amount_minor, "config.max_amount_minor")
    if 0 < c.max_amount_minor < c.min_amount_minor:
        v.add("config.max_amount_minor", "must not be below min_amount_minor")
    validate.amount(v, c.daily_max_minor, "config.daily_max_minor")
    validate.amount_or_zero(v, c.review_threshold_minor, "config.review_threshold_minor")
    validate.amount(v, c.bank_transfer_max_minor, "config.bank_transfer_max_minor")
    if not c.time_zone:
        v.add("config.time_zone", "required: an IANA time zone such as Asia/Shanghai")


def _day(v: Violations, text: str, field: str) -> dt.date | None:
    try:
        if len(text) == 10:
            return dt.date.fromisoformat(text)
    except ValueError:
        pass
    v.add(field, "required: a day as YYYY-MM-DD")
    return None


def _key_roles(v: Violations, request: pb.CreateApiKeyRequest) -> frozenset[str]:
    """The roles of the key CreateApiKey makes: `roles` (of Role.ALL), or the one role
    party for a key with party_account_ids (then `roles` is empty or ['party'])."""
    party = request.party_account_ids
    if party:
        if len(party) > PARTY_ACCOUNTS_MAX:
            v.add("party_account_ids", f"at most {PARTY_ACCOUNTS_MAX} accounts")
        seen: set[int] = set()
        for i, account_id in enumerate(party):
            validate.object_id(v, account_id, f"party_account_ids[{i}]")
            if account_id in seen:
                v.add(f"party_account_ids[{i}]", f"account {account_id} is named twice")
            seen.add(account_id)
        if list(request.roles) not in ([], [Role.PARTY]):
            v.add("roles", f"a key with party_account_ids has the one role {Role.PARTY!r}:"
                           " leave roles empty or set it to ['party']")
        return frozenset({Role.PARTY})
    if not request.roles:
        v.add("roles", f"required: one or more of {sorted(Role.ALL)}")
    for i, role in enumerate(request.roles):
        if role == Role.PARTY:
            v.add(f"roles[{i}]", "a party key needs party_account_ids: the accounts it reads")
        elif role not in Role.ALL:
            v.add(f"roles[{i}]", f"{role!r} is not one of {sorted(Role.ALL)}")
    return frozenset(request.roles)


class PlatformServicer(platform_pb2_grpc.PlatformServiceServicer):
    """Platforms, their keys and payout configuration, and the calendar, for the operator."""

    def __init__(self, pool: asyncpg.Pool, payout_settings: PayoutSettings,
                 routes=None) -> None:
        self._pool = pool
        self._payout = payout_settings
        self._routes = routes  # clearing.pods.Routes with more than one pod, else None

    async def _on_home_pod(self, platform_id: int) -> None:
        """The payout configuration is kept in the home pod only (not pod-aware yet): a
        platform of another pod is refused, never configured where its payouts do not look
        (docs/scaling.md, "What is not pod-aware yet")."""
        if self._routes is None:  # (the interceptor has read a stale table again already)
            return
        pod_id = self._routes.route(platform_id).pod_id
        if pod_id != 0:
            raise FailedPrecondition(
                f"platform {platform_id} lives on pod {pod_id}: its payout configuration is "
                "not set through PlatformService yet (docs/scaling.md)",
                reason=Reason.PAYOUT_CONFIG_NOT_ON_HOME_POD, metadata={"pod_id": str(pod_id)})

    async def _change_on_home_pod(self, change_id: int) -> None:
        if self._routes is not None:
            platform_id = await self._pool.fetchval(
                "SELECT platform_id FROM payout_config_changes WHERE change_id = $1", change_id)
            if platform_id is not None:
                await self._on_home_pod(platform_id)

    async def CreatePlatform(self, request: pb.CreatePlatformRequest,
                             context) -> pb.CreatePlatformResponse:
        v = Violations()
        validate.request_id(v, request.request_id)
        if not request.name:
            v.add("name", "required")
        elif len(request.name) > PLATFORM_NAME_LEN_MAX or not _NAME.fullmatch(request.name):
            v.add("name", f"1 to {PLATFORM_NAME_LEN_MAX} letters, digits, '.', '_' or '-'")
        v.raise_if_any()
        admin_key_id = principal().key_id

        async def op(conn) -> bytes:
            p = await service.create_platform(conn, admin_key_id, request.name)
            return encode(pb.CreatePlatformResponse(platform=platform_message(p)))

        return pb.CreatePlatformResponse.FromString(await idempotency.run(
            self._pool, ADMIN_REQUESTS_PLATFORM, request.request_id, "CreatePlatform",
            validate.payload_hash("CreatePlatform", request), op))

    async def GetPlatform(self, request: pb.GetPlatformRequest,
                          context) -> pb.GetPlatformResponse:
        v = Violations()
        validate.object_id(v, request.platform_id, "platform_id", required=False)
        if not request.platform_id and not request.name:
            v.add("platform_id", "required: a platform id, or its name")
        validate.text(v, request.name, "name", length_max=PLATFORM_NAME_LEN_MAX)
        v.raise_if_any()
        async with self._pool.acquire() as conn:
            p = await service.get_platform(conn, request.platform_id, request.name)
        return pb.GetPlatformResponse(platform=platform_message(p))

    async def ListPlatforms(self, request: pb.ListPlatformsRequest,
                            context) -> pb.ListPlatformsResponse:
        v = Violations()
        size = validate.page_size(v, request.page_size)
        v.raise_if_any()
        async with self._pool.acquire() as conn:
            found, token = await service.list_platforms(conn, page_size=size,
                                                        page_token=request.page_token)
        return pb.ListPlatformsResponse(platforms=[platform_message(p) for p in found],
                                        next_page_token=token)

    async def CreateApiKey(self, request: pb.CreateApiKeyRequest,
                           context) -> pb.CreateApiKeyResponse:
        v = Violations()
        validate.request_id(v, request.request_id)
        validate.object_id(v, request.platform_id, "platform_id")
        roles = _key_roles(v, request)
        v.raise_if_any()
        admin_key_id = principal().key_id
        party = tuple(request.party_account_ids)
        made: dict[int, str] = {}  # key id -> the key, of the keys this call made

        async def op(conn) -> bytes:
            # The recorded response is a replay's: the key is never stored (only its hash).
            info, key = await service.create_api_key(conn, admin_key_id, request.platform_id,
                                                     roles, party_account_ids=party)
            made[info.key_id] = key
            return encode(pb.CreateApiKeyResponse(api_key=key_message(info),
                                                  key_shown_before=True))

        out = pb.CreateApiKeyResponse.FromString(await idempotency.run(
            self._pool, ADMIN_REQUESTS_PLATFORM, request.request_id, "CreateApiKey",
            validate.payload_hash("CreateApiKey", request), op))
        # A key made by an attempt that committed is this call's: shown now, and only now.
        # (An attempt the database aborted left no key; a concurrent retry that committed
        # first answers its key id, not one of ours.)
        key = made.get(out.api_key.key_id)
        if key is not None:
            out.key = key
            out.key_shown_before = False
        return out

    async def ListApiKeys(self, request: pb.ListApiKeysRequest,
                          context) -> pb.ListApiKeysResponse:
        v = Violations()
        validate.object_id(v, request.platform_id, "platform_id", required=False)
        size = validate.page_size(v, request.page_size)
        validate.text(v, request.key_prefix, "key_prefix", length_max=PREFIX_LEN)
        v.raise_if_any()
        async with self._pool.acquire() as conn:
            found, token = await service.list_api_keys(conn, request.platform_id,
                                                       page_size=size,
                                                       page_token=request.page_token,
                                                       key_prefix=request.key_prefix)
        return pb.ListApiKeysResponse(api_keys=[key_message(k) for k in found],
                                      next_page_token=token)

    async def RevokeApiKey(self, request: pb.RevokeApiKeyRequest,
                           context) -> pb.RevokeApiKeyResponse:
        v = Violations()
        validate.object_id(v, request.key_id, "key_id")
        v.raise_if_any()
        async with self._pool.acquire() as conn:
            info, before = await service.revoke_api_key(conn, principal().key_id,
                                                        request.key_id)
        return pb.RevokeApiKeyResponse(api_key=key_message(info), revoked_before=before)

    async def GetPayoutConfig(self, request: pb.GetPayoutConfigRequest,
                              context) -> pb.GetPayoutConfigResponse:
        v = Violations()
        validate.object_id(v, request.platform_id, "platform_id")
        validate.currency(v, request.currency_code)
        v.raise_if_any()
        await self._on_home_pod(request.platform_id)
        async with self._pool.acquire() as conn:
            config, pending = await service.get_payout_config(
                conn, self._payout, request.platform_id, request.currency_code)
        out = pb.GetPayoutConfigResponse(config=config_message(config))
        if pending is not None:
            out.pending_change.CopyFrom(change_message(pending))
        return out

    async def SetPayoutConfig(self, request: pb.SetPayoutConfigRequest,
                              context) -> pb.SetPayoutConfigResponse:
        v = Violations()
        validate.request_id(v, request.request_id)
        if not request.HasField("config"):
            v.add("config", "required: every field of the new configuration")
        else:
            _config_violations(v, request.config)
        v.raise_if_any()
        c = request.config
        config = PayoutConfig(c.platform_id, c.currency_code, c.fee_fixed_minor, c.fee_bps,
                              c.fee_account_id, c.min_amount_minor, c.max_amount_minor,
                              c.daily_max_minor, c.review_threshold_minor,
                              c.bank_transfer_max_minor, c.time_zone)
        await self._on_home_pod(c.platform_id)
        async with self._pool.acquire() as conn:
            change = await service.set_payout_config(
                conn, principal().key_id, self._payout, request_id=request.request_id,
                payload_hash=validate.payload_hash("SetPayoutConfig", request), config=config)
        return pb.SetPayoutConfigResponse(change=change_message(change))

    def _decision(self, request) -> None:
        v = Violations()
        validate.object_id(v, request.change_id, "change_id")
        validate.text(v, request.note, "note", length_max=DECISION_NOTE_LEN_MAX)
        v.raise_if_any()

    async def ApprovePayoutConfigChange(self, request: pb.ApprovePayoutConfigChangeRequest,
                                        context) -> pb.ApprovePayoutConfigChangeResponse:
        self._decision(request)
        await self._change_on_home_pod(request.change_id)
        async with self._pool.acquire() as conn:
            change = await service.approve_payout_config_change(
                conn, principal().key_id, request.change_id, request.note)
        return pb.ApprovePayoutConfigChangeResponse(change=change_message(change))

    async def RejectPayoutConfigChange(self, request: pb.RejectPayoutConfigChangeRequest,
                                       context) -> pb.RejectPayoutConfigChangeResponse:
        self._decision(request)
        await self._change_on_home_pod(request.change_id)
        async with self._pool.acquire() as conn:
            change = await service.reject_payout_config_change(
                conn, principal().key_id, request.change_id, request.note)
        return pb.RejectPayoutConfigChangeResponse(change=change_message(change))

    async def GetBusinessCalendar(self, request: pb.GetBusinessCalendarRequest,
                                  context) -> pb.GetBusinessCalendarResponse:
        v = Violations()
        start = _day(v, request.start_day, "start_day")
        end = _day(v, request.end_day, "end_day")
        if start and end and not 0 <= (end - start).days <= CALENDAR_RANGE_DAYS_MAX:
            v.add("end_day", f"must be 0 to {CALENDAR_RANGE_DAYS_MAX} days after start_day")
        v.raise_if_any()
        async with self._pool.acquire() as conn:
            days = await service.get_calendar(conn, start, end)
        return pb.GetBusinessCalendarResponse(days=[
            pb.CalendarDay(day=d.day.isoformat(), kind=int(d.kind), note=d.note)
            for d in days])

    async def SetBusinessCalendar(self, request: pb.SetBusinessCalendarRequest,
                                  context) -> pb.SetBusinessCalendarResponse:
        v = Violations()
        if not 1 <= len(request.days) <= CALENDAR_DAYS_PER_CHANGE_MAX:
            v.add("days", f"1 to {CALENDAR_DAYS_PER_CHANGE_MAX} days")
        days: list[CalendarDay] = []
        seen: set[dt.date] = set()
        for i, d in enumerate(request.days[:CALENDAR_DAYS_PER_CHANGE_MAX]):
            day = _day(v, d.day, f"days[{i}].day")
            if day in seen:
                v.add(f"days[{i}].day", "given twice")
            validate.enum(v, d.kind, DayKind, f"days[{i}].kind")
            validate.text(v, d.note, f"days[{i}].note", length_max=CALENDAR_NOTE_LEN_MAX)
            if day is not None and d.kind in DayKind._value2member_map_:
                seen.add(day)
                days.append(CalendarDay(day, DayKind(d.kind), d.note))
        v.raise_if_any()
        async with self._pool.acquire() as conn:
            done = await service.set_calendar(conn, principal().key_id, days)
        return pb.SetBusinessCalendarResponse(days=[
            pb.CalendarDay(day=d.day.isoformat(), kind=int(d.kind), note=d.note) for d in done])
