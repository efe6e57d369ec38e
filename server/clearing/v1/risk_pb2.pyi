import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RiskRule(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RISK_RULE_UNSPECIFIED: _ClassVar[RiskRule]
    RISK_RULE_LARGE_SPLIT: _ClassVar[RiskRule]
    RISK_RULE_FREQUENCY: _ClassVar[RiskRule]
    RISK_RULE_DAILY_INFLOW: _ClassVar[RiskRule]
    RISK_RULE_RATIO_SWING: _ClassVar[RiskRule]

class RiskAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RISK_ACTION_UNSPECIFIED: _ClassVar[RiskAction]
    RISK_ACTION_HOLD_SHARE: _ClassVar[RiskAction]
    RISK_ACTION_REVIEW_ONLY: _ClassVar[RiskAction]

class RiskEventState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RISK_EVENT_STATE_UNSPECIFIED: _ClassVar[RiskEventState]
    RISK_EVENT_STATE_OPEN: _ClassVar[RiskEventState]
    RISK_EVENT_STATE_RESOLUTION_PROPOSED: _ClassVar[RiskEventState]
    RISK_EVENT_STATE_RELEASED: _ClassVar[RiskEventState]
    RISK_EVENT_STATE_REJECTED: _ClassVar[RiskEventState]

class RiskDecision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RISK_DECISION_UNSPECIFIED: _ClassVar[RiskDecision]
    RISK_DECISION_RELEASE: _ClassVar[RiskDecision]
    RISK_DECISION_REJECT: _ClassVar[RiskDecision]
RISK_RULE_UNSPECIFIED: RiskRule
RISK_RULE_LARGE_SPLIT: RiskRule
RISK_RULE_FREQUENCY: RiskRule
RISK_RULE_DAILY_INFLOW: RiskRule
RISK_RULE_RATIO_SWING: RiskRule
RISK_ACTION_UNSPECIFIED: RiskAction
RISK_ACTION_HOLD_SHARE: RiskAction
RISK_ACTION_REVIEW_ONLY: RiskAction
RISK_EVENT_STATE_UNSPECIFIED: RiskEventState
RISK_EVENT_STATE_OPEN: RiskEventState
RISK_EVENT_STATE_RESOLUTION_PROPOSED: RiskEventState
RISK_EVENT_STATE_RELEASED: RiskEventState
RISK_EVENT_STATE_REJECTED: RiskEventState
RISK_DECISION_UNSPECIFIED: RiskDecision
RISK_DECISION_RELEASE: RiskDecision
RISK_DECISION_REJECT: RiskDecision

class RiskCurrencyLimits(_message.Message):
    __slots__ = ("currency_code", "large_split_minor", "frequency_amount_minor", "daily_inflow_cap_minor")
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    LARGE_SPLIT_MINOR_FIELD_NUMBER: _ClassVar[int]
    FREQUENCY_AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    DAILY_INFLOW_CAP_MINOR_FIELD_NUMBER: _ClassVar[int]
    currency_code: str
    large_split_minor: int
    frequency_amount_minor: int
    daily_inflow_cap_minor: int
    def __init__(self, currency_code: _Optional[str] = ..., large_split_minor: _Optional[int] = ..., frequency_amount_minor: _Optional[int] = ..., daily_inflow_cap_minor: _Optional[int] = ...) -> None: ...

class RiskPolicy(_message.Message):
    __slots__ = ("version", "limits", "frequency_count_max", "frequency_window_s", "swing_threshold_bps", "action", "active", "published_at", "activated_at")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    FREQUENCY_COUNT_MAX_FIELD_NUMBER: _ClassVar[int]
    FREQUENCY_WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    SWING_THRESHOLD_BPS_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ACTIVATED_AT_FIELD_NUMBER: _ClassVar[int]
    version: int
    limits: _containers.RepeatedCompositeFieldContainer[RiskCurrencyLimits]
    frequency_count_max: int
    frequency_window_s: int
    swing_threshold_bps: int
    action: RiskAction
    active: bool
    published_at: _timestamp_pb2.Timestamp
    activated_at: _timestamp_pb2.Timestamp
    def __init__(self, version: _Optional[int] = ..., limits: _Optional[_Iterable[_Union[RiskCurrencyLimits, _Mapping]]] = ..., frequency_count_max: _Optional[int] = ..., frequency_window_s: _Optional[int] = ..., swing_threshold_bps: _Optional[int] = ..., action: _Optional[_Union[RiskAction, str]] = ..., active: _Optional[bool] = ..., published_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., activated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RiskEventStep(_message.Message):
    __slots__ = ("step", "key_id", "note", "at")
    STEP_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    step: str
    key_id: int
    note: str
    at: _timestamp_pb2.Timestamp
    def __init__(self, step: _Optional[str] = ..., key_id: _Optional[int] = ..., note: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RiskEvent(_message.Message):
    __slots__ = ("event_id", "rule", "state", "account_id", "split_id", "order_id", "currency_code", "amount_minor", "held_minor", "observed", "limit", "evidence_json", "decision", "steps", "created_at")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SPLIT_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    HELD_MINOR_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_JSON_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    event_id: int
    rule: RiskRule
    state: RiskEventState
    account_id: int
    split_id: int
    order_id: str
    currency_code: str
    amount_minor: int
    held_minor: int
    observed: int
    limit: int
    evidence_json: str
    decision: RiskDecision
    steps: _containers.RepeatedCompositeFieldContainer[RiskEventStep]
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, event_id: _Optional[int] = ..., rule: _Optional[_Union[RiskRule, str]] = ..., state: _Optional[_Union[RiskEventState, str]] = ..., account_id: _Optional[int] = ..., split_id: _Optional[int] = ..., order_id: _Optional[str] = ..., currency_code: _Optional[str] = ..., amount_minor: _Optional[int] = ..., held_minor: _Optional[int] = ..., observed: _Optional[int] = ..., limit: _Optional[int] = ..., evidence_json: _Optional[str] = ..., decision: _Optional[_Union[RiskDecision, str]] = ..., steps: _Optional[_Iterable[_Union[RiskEventStep, _Mapping]]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PublishRiskPolicyRequest(_message.Message):
    __slots__ = ("request_id", "policy")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    policy: RiskPolicy
    def __init__(self, request_id: _Optional[str] = ..., policy: _Optional[_Union[RiskPolicy, _Mapping]] = ...) -> None: ...

class PublishRiskPolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: RiskPolicy
    def __init__(self, policy: _Optional[_Union[RiskPolicy, _Mapping]] = ...) -> None: ...

class ActivateRiskPolicyRequest(_message.Message):
    __slots__ = ("request_id", "version")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    version: int
    def __init__(self, request_id: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class ActivateRiskPolicyResponse(_message.Message):
    __slots__ = ("policy", "previous_version")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    policy: RiskPolicy
    previous_version: int
    def __init__(self, policy: _Optional[_Union[RiskPolicy, _Mapping]] = ..., previous_version: _Optional[int] = ...) -> None: ...

class GetRiskPolicyRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class GetRiskPolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: RiskPolicy
    def __init__(self, policy: _Optional[_Union[RiskPolicy, _Mapping]] = ...) -> None: ...

class ListRiskEventsRequest(_message.Message):
    __slots__ = ("state", "rule", "account_id", "page_size", "page_token")
    STATE_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    state: RiskEventState
    rule: RiskRule
    account_id: int
    page_size: int
    page_token: str
    def __init__(self, state: _Optional[_Union[RiskEventState, str]] = ..., rule: _Optional[_Union[RiskRule, str]] = ..., account_id: _Optional[int] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRiskEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[RiskEvent]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[RiskEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetRiskEventRequest(_message.Message):
    __slots__ = ("event_id",)
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: int
    def __init__(self, event_id: _Optional[int] = ...) -> None: ...

class GetRiskEventResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: RiskEvent
    def __init__(self, event: _Optional[_Union[RiskEvent, _Mapping]] = ...) -> None: ...

class ResolveRiskEventRequest(_message.Message):
    __slots__ = ("request_id", "event_id", "decision", "note")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    event_id: int
    decision: RiskDecision
    note: str
    def __init__(self, request_id: _Optional[str] = ..., event_id: _Optional[int] = ..., decision: _Optional[_Union[RiskDecision, str]] = ..., note: _Optional[str] = ...) -> None: ...

class ResolveRiskEventResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: RiskEvent
    def __init__(self, event: _Optional[_Union[RiskEvent, _Mapping]] = ...) -> None: ...
