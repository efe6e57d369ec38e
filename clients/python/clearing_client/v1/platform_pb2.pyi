import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PayoutConfigChangeState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYOUT_CONFIG_CHANGE_STATE_UNSPECIFIED: _ClassVar[PayoutConfigChangeState]
    PAYOUT_CONFIG_CHANGE_STATE_PENDING: _ClassVar[PayoutConfigChangeState]
    PAYOUT_CONFIG_CHANGE_STATE_APPLIED: _ClassVar[PayoutConfigChangeState]
    PAYOUT_CONFIG_CHANGE_STATE_APPROVED: _ClassVar[PayoutConfigChangeState]
    PAYOUT_CONFIG_CHANGE_STATE_REJECTED: _ClassVar[PayoutConfigChangeState]
    PAYOUT_CONFIG_CHANGE_STATE_SUPERSEDED: _ClassVar[PayoutConfigChangeState]

class CalendarDayKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CALENDAR_DAY_KIND_UNSPECIFIED: _ClassVar[CalendarDayKind]
    CALENDAR_DAY_KIND_HOLIDAY: _ClassVar[CalendarDayKind]
    CALENDAR_DAY_KIND_WORKDAY: _ClassVar[CalendarDayKind]
    CALENDAR_DAY_KIND_UNSET: _ClassVar[CalendarDayKind]
PAYOUT_CONFIG_CHANGE_STATE_UNSPECIFIED: PayoutConfigChangeState
PAYOUT_CONFIG_CHANGE_STATE_PENDING: PayoutConfigChangeState
PAYOUT_CONFIG_CHANGE_STATE_APPLIED: PayoutConfigChangeState
PAYOUT_CONFIG_CHANGE_STATE_APPROVED: PayoutConfigChangeState
PAYOUT_CONFIG_CHANGE_STATE_REJECTED: PayoutConfigChangeState
PAYOUT_CONFIG_CHANGE_STATE_SUPERSEDED: PayoutConfigChangeState
CALENDAR_DAY_KIND_UNSPECIFIED: CalendarDayKind
CALENDAR_DAY_KIND_HOLIDAY: CalendarDayKind
CALENDAR_DAY_KIND_WORKDAY: CalendarDayKind
CALENDAR_DAY_KIND_UNSET: CalendarDayKind

class Platform(_message.Message):
    __slots__ = ("platform_id", "name", "create_time")
    PLATFORM_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    platform_id: int
    name: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, platform_id: _Optional[int] = ..., name: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreatePlatformRequest(_message.Message):
    __slots__ = ("name", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    request_id: str
    def __init__(self, name: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreatePlatformResponse(_message.Message):
    __slots__ = ("platform",)
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    platform: Platform
    def __init__(self, platform: _Optional[_Union[Platform, _Mapping]] = ...) -> None: ...

class GetPlatformRequest(_message.Message):
    __slots__ = ("platform_id", "name")
    PLATFORM_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    platform_id: int
    name: str
    def __init__(self, platform_id: _Optional[int] = ..., name: _Optional[str] = ...) -> None: ...

class GetPlatformResponse(_message.Message):
    __slots__ = ("platform",)
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    platform: Platform
    def __init__(self, platform: _Optional[_Union[Platform, _Mapping]] = ...) -> None: ...

class ListPlatformsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPlatformsResponse(_message.Message):
    __slots__ = ("platforms", "next_page_token")
    PLATFORMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    platforms: _containers.RepeatedCompositeFieldContainer[Platform]
    next_page_token: str
    def __init__(self, platforms: _Optional[_Iterable[_Union[Platform, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ApiKey(_message.Message):
    __slots__ = ("key_id", "platform_id", "key_prefix", "roles", "create_time", "last_use_time", "revoke_time", "party_account_ids")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_PREFIX_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_USE_TIME_FIELD_NUMBER: _ClassVar[int]
    REVOKE_TIME_FIELD_NUMBER: _ClassVar[int]
    PARTY_ACCOUNT_IDS_FIELD_NUMBER: _ClassVar[int]
    key_id: int
    platform_id: int
    key_prefix: str
    roles: _containers.RepeatedScalarFieldContainer[str]
    create_time: _timestamp_pb2.Timestamp
    last_use_time: _timestamp_pb2.Timestamp
    revoke_time: _timestamp_pb2.Timestamp
    party_account_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, key_id: _Optional[int] = ..., platform_id: _Optional[int] = ..., key_prefix: _Optional[str] = ..., roles: _Optional[_Iterable[str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_use_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoke_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., party_account_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class CreateApiKeyRequest(_message.Message):
    __slots__ = ("platform_id", "roles", "request_id", "party_account_ids")
    PLATFORM_ID_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PARTY_ACCOUNT_IDS_FIELD_NUMBER: _ClassVar[int]
    platform_id: int
    roles: _containers.RepeatedScalarFieldContainer[str]
    request_id: str
    party_account_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, platform_id: _Optional[int] = ..., roles: _Optional[_Iterable[str]] = ..., request_id: _Optional[str] = ..., party_account_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class CreateApiKeyResponse(_message.Message):
    __slots__ = ("api_key", "key", "key_shown_before")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_SHOWN_BEFORE_FIELD_NUMBER: _ClassVar[int]
    api_key: ApiKey
    key: str
    key_shown_before: bool
    def __init__(self, api_key: _Optional[_Union[ApiKey, _Mapping]] = ..., key: _Optional[str] = ..., key_shown_before: _Optional[bool] = ...) -> None: ...

class ListApiKeysRequest(_message.Message):
    __slots__ = ("platform_id", "page_size", "page_token", "key_prefix")
    PLATFORM_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    KEY_PREFIX_FIELD_NUMBER: _ClassVar[int]
    platform_id: int
    page_size: int
    page_token: str
    key_prefix: str
    def __init__(self, platform_id: _Optional[int] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., key_prefix: _Optional[str] = ...) -> None: ...

class ListApiKeysResponse(_message.Message):
    __slots__ = ("api_keys", "next_page_token")
    API_KEYS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    api_keys: _containers.RepeatedCompositeFieldContainer[ApiKey]
    next_page_token: str
    def __init__(self, api_keys: _Optional[_Iterable[_Union[ApiKey, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RevokeApiKeyRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: int
    def __init__(self, key_id: _Optional[int] = ...) -> None: ...

class RevokeApiKeyResponse(_message.Message):
    __slots__ = ("api_key", "revoked_before")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    REVOKED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    api_key: ApiKey
    revoked_before: bool
    def __init__(self, api_key: _Optional[_Union[ApiKey, _Mapping]] = ..., revoked_before: _Optional[bool] = ...) -> None: ...

class PayoutConfig(_message.Message):
    __slots__ = ("platform_id", "currency_code", "fee_fixed_minor", "fee_bps", "fee_account_id", "min_amount_minor", "max_amount_minor", "daily_max_minor", "review_threshold_minor", "bank_transfer_max_minor", "time_zone")
    PLATFORM_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    FEE_FIXED_MINOR_FIELD_NUMBER: _ClassVar[int]
    FEE_BPS_FIELD_NUMBER: _ClassVar[int]
    FEE_ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    MIN_AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    MAX_AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    DAILY_MAX_MINOR_FIELD_NUMBER: _ClassVar[int]
    REVIEW_THRESHOLD_MINOR_FIELD_NUMBER: _ClassVar[int]
    BANK_TRANSFER_MAX_MINOR_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    platform_id: int
    currency_code: str
    fee_fixed_minor: int
    fee_bps: int
    fee_account_id: int
    min_amount_minor: int
    max_amount_minor: int
    daily_max_minor: int
    review_threshold_minor: int
    bank_transfer_max_minor: int
    time_zone: str
    def __init__(self, platform_id: _Optional[int] = ..., currency_code: _Optional[str] = ..., fee_fixed_minor: _Optional[int] = ..., fee_bps: _Optional[int] = ..., fee_account_id: _Optional[int] = ..., min_amount_minor: _Optional[int] = ..., max_amount_minor: _Optional[int] = ..., daily_max_minor: _Optional[int] = ..., review_threshold_minor: _Optional[int] = ..., bank_transfer_max_minor: _Optional[int] = ..., time_zone: _Optional[str] = ...) -> None: ...

class PayoutConfigChange(_message.Message):
    __slots__ = ("change_id", "config", "state", "requested_by_admin_key_id", "create_time", "decided_by_admin_key_id", "decide_time", "note")
    CHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_BY_ADMIN_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DECIDED_BY_ADMIN_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    DECIDE_TIME_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    change_id: int
    config: PayoutConfig
    state: PayoutConfigChangeState
    requested_by_admin_key_id: int
    create_time: _timestamp_pb2.Timestamp
    decided_by_admin_key_id: int
    decide_time: _timestamp_pb2.Timestamp
    note: str
    def __init__(self, change_id: _Optional[int] = ..., config: _Optional[_Union[PayoutConfig, _Mapping]] = ..., state: _Optional[_Union[PayoutConfigChangeState, str]] = ..., requested_by_admin_key_id: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., decided_by_admin_key_id: _Optional[int] = ..., decide_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., note: _Optional[str] = ...) -> None: ...

class GetPayoutConfigRequest(_message.Message):
    __slots__ = ("platform_id", "currency_code")
    PLATFORM_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    platform_id: int
    currency_code: str
    def __init__(self, platform_id: _Optional[int] = ..., currency_code: _Optional[str] = ...) -> None: ...

class GetPayoutConfigResponse(_message.Message):
    __slots__ = ("config", "pending_change")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    PENDING_CHANGE_FIELD_NUMBER: _ClassVar[int]
    config: PayoutConfig
    pending_change: PayoutConfigChange
    def __init__(self, config: _Optional[_Union[PayoutConfig, _Mapping]] = ..., pending_change: _Optional[_Union[PayoutConfigChange, _Mapping]] = ...) -> None: ...

class SetPayoutConfigRequest(_message.Message):
    __slots__ = ("request_id", "config")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    config: PayoutConfig
    def __init__(self, request_id: _Optional[str] = ..., config: _Optional[_Union[PayoutConfig, _Mapping]] = ...) -> None: ...

class SetPayoutConfigResponse(_message.Message):
    __slots__ = ("change",)
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    change: PayoutConfigChange
    def __init__(self, change: _Optional[_Union[PayoutConfigChange, _Mapping]] = ...) -> None: ...

class ApprovePayoutConfigChangeRequest(_message.Message):
    __slots__ = ("change_id", "note")
    CHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    change_id: int
    note: str
    def __init__(self, change_id: _Optional[int] = ..., note: _Optional[str] = ...) -> None: ...

class ApprovePayoutConfigChangeResponse(_message.Message):
    __slots__ = ("change",)
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    change: PayoutConfigChange
    def __init__(self, change: _Optional[_Union[PayoutConfigChange, _Mapping]] = ...) -> None: ...

class RejectPayoutConfigChangeRequest(_message.Message):
    __slots__ = ("change_id", "note")
    CHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    change_id: int
    note: str
    def __init__(self, change_id: _Optional[int] = ..., note: _Optional[str] = ...) -> None: ...

class RejectPayoutConfigChangeResponse(_message.Message):
    __slots__ = ("change",)
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    change: PayoutConfigChange
    def __init__(self, change: _Optional[_Union[PayoutConfigChange, _Mapping]] = ...) -> None: ...

class CalendarDay(_message.Message):
    __slots__ = ("day", "kind", "note")
    DAY_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    day: str
    kind: CalendarDayKind
    note: str
    def __init__(self, day: _Optional[str] = ..., kind: _Optional[_Union[CalendarDayKind, str]] = ..., note: _Optional[str] = ...) -> None: ...

class GetBusinessCalendarRequest(_message.Message):
    __slots__ = ("start_day", "end_day")
    START_DAY_FIELD_NUMBER: _ClassVar[int]
    END_DAY_FIELD_NUMBER: _ClassVar[int]
    start_day: str
    end_day: str
    def __init__(self, start_day: _Optional[str] = ..., end_day: _Optional[str] = ...) -> None: ...

class GetBusinessCalendarResponse(_message.Message):
    __slots__ = ("days",)
    DAYS_FIELD_NUMBER: _ClassVar[int]
    days: _containers.RepeatedCompositeFieldContainer[CalendarDay]
    def __init__(self, days: _Optional[_Iterable[_Union[CalendarDay, _Mapping]]] = ...) -> None: ...

class SetBusinessCalendarRequest(_message.Message):
    __slots__ = ("days",)
    DAYS_FIELD_NUMBER: _ClassVar[int]
    days: _containers.RepeatedCompositeFieldContainer[CalendarDay]
    def __init__(self, days: _Optional[_Iterable[_Union[CalendarDay, _Mapping]]] = ...) -> None: ...

class SetBusinessCalendarResponse(_message.Message):
    __slots__ = ("days",)
    DAYS_FIELD_NUMBER: _ClassVar[int]
    days: _containers.RepeatedCompositeFieldContainer[CalendarDay]
    def __init__(self, days: _Optional[_Iterable[_Union[CalendarDay, _Mapping]]] = ...) -> None: ...
