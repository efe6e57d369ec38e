"""PlatformService, the core's admin API, as typed methods of ClearingClient.

They answer admin keys only (`clearing admin init` makes the first one, var/admin.key): a
client made with an admin key calls these; a platform's key is refused (PERMISSION_DENIED
ROLE_REQUIRED). Retries are safe like every other call's: CreatePlatform, CreateApiKey and
SetPayoutConfig carry a request id (a new UUID unless given; a retry sends the same one,
and the server answers the first result: CreateApiKey's replay has `key_shown_before` set
and no key, a key being shown once: revoke it and make another). RevokeApiKey and
SetBusinessCalendar are idempotent. Approving or rejecting a change twice is refused
(FAILED_PRECONDITION PAYOUT_CONFIG_CHANGE_NOT_PENDING, its `metadata["state"]` the
decision made), so a retry after a lost answer never decides twice.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable

from clearing_client.v1 import platform_pb2


def _rid(request_id: str | None) -> str:
    from clearing_client.client import new_request_id  # client.py imports this module
    return request_id or new_request_id()


def _day(day: str | datetime.date) -> str:
    return day.isoformat() if isinstance(day, datetime.date) else day


class AdminMethods:
    """The PlatformService methods (mixed into ClearingClient: `self.call`,
    `self.platform`)."""

    async def create_platform(self, name: str, *,
                              request_id: str | None = None) -> platform_pb2.Platform:
        """A new platform (tenant): `name` 1 to 64 letters, digits, '.', '_' or '-'."""
        return (await self.call(self.platform.CreatePlatform, platform_pb2.CreatePlatformRequest(
            name=name, request_id=_rid(request_id)))).platform

    async def get_platform(self, platform_id: int = 0, *,
                           name: str = "") -> platform_pb2.Platform:
        """One platform, by id or by name."""
        return (await self.call(self.platform.GetPlatform, platform_pb2.GetPlatformRequest(
            platform_id=platform_id, name=name))).platform

    async def list_platforms(self, *, page_size: int = 0,
                             page_token: str = "") -> platform_pb2.ListPlatformsResponse:
        """A page of the platforms, by id (page_size 0: the server's default)."""
        return await self.call(self.platform.ListPlatforms, platform_pb2.ListPlatformsRequest(
            page_size=page_size, page_token=page_token))

    async def create_api_key(self, platform_id: int, roles: Iterable[str], *,
                             request_id: str | None = None
                             ) -> platform_pb2.CreateApiKeyResponse:
        """A new key of a platform with `roles` (gateway, operator, approver, ...). The
        response's `key` is the secret, shown once (empty with `key_shown_before` on a
        replay of the same request id)."""
        return await self.call(self.platform.CreateApiKey, platform_pb2.CreateApiKeyRequest(
            platform_id=platform_id, roles=list(roles),
            request_id=_rid(request_id)))

    async def list_api_keys(self, platform_id: int = 0, *, key_prefix: str = "",
                            page_size: int = 0,
                            page_token: str = "") -> platform_pb2.ListApiKeysResponse:
        """A page of API keys (never the secrets): a platform's (0: every platform's),
        those whose prefix is `key_prefix` when given."""
        return await self.call(self.platform.ListApiKeys, platform_pb2.ListApiKeysRequest(
            platform_id=platform_id, key_prefix=key_prefix, page_size=page_size,
            page_token=page_token))

    async def revoke_api_key(self, key_id: int) -> platform_pb2.RevokeApiKeyResponse:
        """Revoke a key (refused from then on); `revoked_before` if it already was."""
        return await self.call(self.platform.RevokeApiKey,
                               platform_pb2.RevokeApiKeyRequest(key_id=key_id))

    async def get_payout_config(self, platform_id: int, currency_code: str
                                ) -> platform_pb2.GetPayoutConfigResponse:
        """The payout configuration in force (`config`) and the change waiting for
        approval (`pending_change`, unset if none)."""
        return await self.call(self.platform.GetPayoutConfig,
                               platform_pb2.GetPayoutConfigRequest(
                                   platform_id=platform_id, currency_code=currency_code))

    async def set_payout_config(self, config: platform_pb2.PayoutConfig, *,
                                request_id: str | None = None
                                ) -> platform_pb2.PayoutConfigChange:
        """Set every field of a payout configuration (get it first, change what you mean
        to): the change is APPLIED, or PENDING another admin key's approval when it
        changes the fee."""
        return (await self.call(self.platform.SetPayoutConfig,
                                platform_pb2.SetPayoutConfigRequest(
                                    request_id=_rid(request_id),
                                    config=config))).change

    async def approve_payout_config_change(self, change_id: int, *, note: str = ""
                                           ) -> platform_pb2.PayoutConfigChange:
        """Approve (and apply) a pending change; not with the admin key that made it
        (PERMISSION_DENIED MAKER_CHECKER)."""
        return (await self.call(self.platform.ApprovePayoutConfigChange,
                                platform_pb2.ApprovePayoutConfigChangeRequest(
                                    change_id=change_id, note=note))).change

    async def reject_payout_config_change(self, change_id: int, *, note: str = ""
                                          ) -> platform_pb2.PayoutConfigChange:
        """Reject a pending change; nothing changes."""
        return (await self.call(self.platform.RejectPayoutConfigChange,
                                platform_pb2.RejectPayoutConfigChangeRequest(
                                    change_id=change_id, note=note))).change

    async def get_business_calendar(self, start_day: str | datetime.date,
                                    end_day: str | datetime.date
                                    ) -> list[platform_pb2.CalendarDay]:
        """The calendar's exceptions (holidays, working weekend days) between two days,
        both included."""
        return list((await self.call(self.platform.GetBusinessCalendar,
                                     platform_pb2.GetBusinessCalendarRequest(
                                         start_day=_day(start_day), end_day=_day(end_day)))
                     ).days)

    async def set_business_calendar(
            self, days: Iterable[platform_pb2.CalendarDay | tuple]
    ) -> list[platform_pb2.CalendarDay]:
        """Set days of the calendar in one transaction: CalendarDay messages or (day,
        kind, note) tuples (`kind`: CALENDAR_DAY_KIND_HOLIDAY, _WORKDAY, or _UNSET back to
        Monday to Friday). Answers the days as set."""
        items = [d if isinstance(d, platform_pb2.CalendarDay) else platform_pb2.CalendarDay(
            day=_day(d[0]), kind=d[1], note=d[2] if len(d) > 2 else "") for d in days]
        return list((await self.call(self.platform.SetBusinessCalendar,
                                     platform_pb2.SetBusinessCalendarRequest(days=items))
                     ).days)
