"""What the admin API reads and changes: platforms, API keys as listed, payout
configuration changes and calendar days."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from clearing.payout.model import PayoutConfig


@dataclass(frozen=True, slots=True)
class Platform:
    platform_id: int
    name: str
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A platform's API key as listed (never the key itself)."""

    key_id: int
    platform_id: int
    key_prefix: str
    roles: tuple[str, ...]
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None
    # A party key's accounts, ascending (its role is party); () for any other key.
    party_account_ids: tuple[int, ...] = ()


class ChangeState(enum.IntEnum):
    """A payout configuration change's state (mirrors PayoutConfigChangeState)."""

    UNSPECIFIED = 0
    PENDING = 1      # a fee change waiting for another admin key
    APPLIED = 2      # applied when made (the fee unchanged)
    APPROVED = 3     # approved by another admin key, and applied
    REJECTED = 4
    SUPERSEDED = 5   # a later change replaced it while it was pending


@dataclass(frozen=True, slots=True)
class ConfigChange:
    change_id: int
    config: PayoutConfig
    state: ChangeState
    requested_by: int  # admin key id
    created_at: dt.datetime
    decided_by: int    # admin key id, 0 if none
    decided_at: dt.datetime | None
    note: str


class DayKind(enum.IntEnum):
    """A calendar exception (mirrors CalendarDayKind); UNSET only in a change."""

    UNSPECIFIED = 0
    HOLIDAY = 1
    WORKDAY = 2
    UNSET = 3


@dataclass(frozen=True, slots=True)
class CalendarDay:
    day: dt.date
    kind: DayKind
    note: str = ""


# The fields of a payout configuration whose change needs another admin key's approval.
FEE_FIELDS = ("fee_fixed_minor", "fee_bps", "fee_account_id")
