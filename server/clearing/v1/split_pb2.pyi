import datetime

from clearing.v1 import rule_set_pb2 as _rule_set_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CouponFunding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COUPON_FUNDING_UNSPECIFIED: _ClassVar[CouponFunding]
    COUPON_FUNDING_PLATFORM: _ClassVar[CouponFunding]
    COUPON_FUNDING_SELLER: _ClassVar[CouponFunding]

class SplitStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SPLIT_STATUS_UNSPECIFIED: _ClassVar[SplitStatus]
    SPLIT_STATUS_POSTED: _ClassVar[SplitStatus]
    SPLIT_STATUS_HOLDING: _ClassVar[SplitStatus]
    SPLIT_STATUS_CANCELLED: _ClassVar[SplitStatus]
    SPLIT_STATUS_PARTLY_REFUNDED: _ClassVar[SplitStatus]
    SPLIT_STATUS_REFUNDED: _ClassVar[SplitStatus]
    SPLIT_STATUS_PREVIEW: _ClassVar[SplitStatus]

class LegKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEG_KIND_UNSPECIFIED: _ClassVar[LegKind]
    LEG_KIND_SHARE: _ClassVar[LegKind]
    LEG_KIND_FEE: _ClassVar[LegKind]
    LEG_KIND_SUBSIDY: _ClassVar[LegKind]

class ReleaseState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RELEASE_STATE_UNSPECIFIED: _ClassVar[ReleaseState]
    RELEASE_STATE_RELEASED: _ClassVar[ReleaseState]
    RELEASE_STATE_HELD: _ClassVar[ReleaseState]
    RELEASE_STATE_PARTLY_RELEASED: _ClassVar[ReleaseState]
    RELEASE_STATE_VOIDED: _ClassVar[ReleaseState]

class HoldReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HOLD_REASON_UNSPECIFIED: _ClassVar[HoldReason]
    HOLD_REASON_RELEASE_POLICY: _ClassVar[HoldReason]
    HOLD_REASON_RECEIVER_UNAVAILABLE: _ClassVar[HoldReason]
    HOLD_REASON_RISK_REVIEW: _ClassVar[HoldReason]

class CounterSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COUNTER_SOURCE_UNSPECIFIED: _ClassVar[CounterSource]
    COUNTER_SOURCE_LIVE: _ClassVar[CounterSource]
    COUNTER_SOURCE_OVERRIDE: _ClassVar[CounterSource]
    COUNTER_SOURCE_FALLBACK: _ClassVar[CounterSource]

class SplitActionKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SPLIT_ACTION_KIND_UNSPECIFIED: _ClassVar[SplitActionKind]
    SPLIT_ACTION_KIND_SPLIT: _ClassVar[SplitActionKind]
    SPLIT_ACTION_KIND_RELEASE: _ClassVar[SplitActionKind]
    SPLIT_ACTION_KIND_CANCEL: _ClassVar[SplitActionKind]
    SPLIT_ACTION_KIND_REFUND: _ClassVar[SplitActionKind]
COUPON_FUNDING_UNSPECIFIED: CouponFunding
COUPON_FUNDING_PLATFORM: CouponFunding
COUPON_FUNDING_SELLER: CouponFunding
SPLIT_STATUS_UNSPECIFIED: SplitStatus
SPLIT_STATUS_POSTED: SplitStatus
SPLIT_STATUS_HOLDING: SplitStatus
SPLIT_STATUS_CANCELLED: SplitStatus
SPLIT_STATUS_PARTLY_REFUNDED: SplitStatus
SPLIT_STATUS_REFUNDED: SplitStatus
SPLIT_STATUS_PREVIEW: SplitStatus
LEG_KIND_UNSPECIFIED: LegKind
LEG_KIND_SHARE: LegKind
LEG_KIND_FEE: LegKind
LEG_KIND_SUBSIDY: LegKind
RELEASE_STATE_UNSPECIFIED: ReleaseState
RELEASE_STATE_RELEASED: ReleaseState
RELEASE_STATE_HELD: ReleaseState
RELEASE_STATE_PARTLY_RELEASED: ReleaseState
RELEASE_STATE_VOIDED: ReleaseState
HOLD_REASON_UNSPECIFIED: HoldReason
HOLD_REASON_RELEASE_POLICY: HoldReason
HOLD_REASON_RECEIVER_UNAVAILABLE: HoldReason
HOLD_REASON_RISK_REVIEW: HoldReason
COUNTER_SOURCE_UNSPECIFIED: CounterSource
COUNTER_SOURCE_LIVE: CounterSource
COUNTER_SOURCE_OVERRIDE: CounterSource
COUNTER_SOURCE_FALLBACK: CounterSource
SPLIT_ACTION_KIND_UNSPECIFIED: SplitActionKind
SPLIT_ACTION_KIND_SPLIT: SplitActionKind
SPLIT_ACTION_KIND_RELEASE: SplitActionKind
SPLIT_ACTION_KIND_CANCEL: SplitActionKind
SPLIT_ACTION_KIND_REFUND: SplitActionKind

class Order(_message.Message):
    __slots__ = ("order_id", "amount_minor", "currency_code", "channel", "channel_fee_minor", "channel_transaction_id", "tags", "attributes", "parties", "coupons", "rule_set_name", "paid_time", "memo")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class PartiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FEE_MINOR_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    PARTIES_FIELD_NUMBER: _ClassVar[int]
    COUPONS_FIELD_NUMBER: _ClassVar[int]
    RULE_SET_NAME_FIELD_NUMBER: _ClassVar[int]
    PAID_TIME_FIELD_NUMBER: _ClassVar[int]
    MEMO_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    amount_minor: int
    currency_code: str
    channel: str
    channel_fee_minor: int
    channel_transaction_id: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    attributes: _containers.ScalarMap[str, str]
    parties: _containers.ScalarMap[str, str]
    coupons: _containers.RepeatedCompositeFieldContainer[Coupon]
    rule_set_name: str
    paid_time: _timestamp_pb2.Timestamp
    memo: str
    def __init__(self, order_id: _Optional[str] = ..., amount_minor: _Optional[int] = ..., currency_code: _Optional[str] = ..., channel: _Optional[str] = ..., channel_fee_minor: _Optional[int] = ..., channel_transaction_id: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., attributes: _Optional[_Mapping[str, str]] = ..., parties: _Optional[_Mapping[str, str]] = ..., coupons: _Optional[_Iterable[_Union[Coupon, _Mapping]]] = ..., rule_set_name: _Optional[str] = ..., paid_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., memo: _Optional[str] = ...) -> None: ...

class Coupon(_message.Message):
    __slots__ = ("coupon_id", "amount_minor", "funding")
    COUPON_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    FUNDING_FIELD_NUMBER: _ClassVar[int]
    coupon_id: str
    amount_minor: int
    funding: CouponFunding
    def __init__(self, coupon_id: _Optional[str] = ..., amount_minor: _Optional[int] = ..., funding: _Optional[_Union[CouponFunding, str]] = ...) -> None: ...

class Split(_message.Message):
    __slots__ = ("split_id", "order_id", "request_id", "status", "currency_code", "amount_minor", "channel_fee_minor", "net_amount_minor", "subsidy_minor", "distributed_minor", "fee_minor", "held_minor", "released_minor", "voided_minor", "refunded_minor", "rule_set_name", "rule_set_version", "legs", "matched_rules", "counter_values", "alerts", "actions", "order", "create_time", "update_time")
    SPLIT_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FEE_MINOR_FIELD_NUMBER: _ClassVar[int]
    NET_AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    SUBSIDY_MINOR_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTED_MINOR_FIELD_NUMBER: _ClassVar[int]
    FEE_MINOR_FIELD_NUMBER: _ClassVar[int]
    HELD_MINOR_FIELD_NUMBER: _ClassVar[int]
    RELEASED_MINOR_FIELD_NUMBER: _ClassVar[int]
    VOIDED_MINOR_FIELD_NUMBER: _ClassVar[int]
    REFUNDED_MINOR_FIELD_NUMBER: _ClassVar[int]
    RULE_SET_NAME_FIELD_NUMBER: _ClassVar[int]
    RULE_SET_VERSION_FIELD_NUMBER: _ClassVar[int]
    LEGS_FIELD_NUMBER: _ClassVar[int]
    MATCHED_RULES_FIELD_NUMBER: _ClassVar[int]
    COUNTER_VALUES_FIELD_NUMBER: _ClassVar[int]
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    split_id: int
    order_id: str
    request_id: str
    status: SplitStatus
    currency_code: str
    amount_minor: int
    channel_fee_minor: int
    net_amount_minor: int
    subsidy_minor: int
    distributed_minor: int
    fee_minor: int
    held_minor: int
    released_minor: int
    voided_minor: int
    refunded_minor: int
    rule_set_name: str
    rule_set_version: int
    legs: _containers.RepeatedCompositeFieldContainer[SplitLeg]
    matched_rules: _containers.RepeatedCompositeFieldContainer[MatchedRule]
    counter_values: _containers.RepeatedCompositeFieldContainer[CounterValue]
    alerts: _containers.RepeatedCompositeFieldContainer[SplitAlert]
    actions: _containers.RepeatedCompositeFieldContainer[SplitAction]
    order: Order
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, split_id: _Optional[int] = ..., order_id: _Optional[str] = ..., request_id: _Optional[str] = ..., status: _Optional[_Union[SplitStatus, str]] = ..., currency_code: _Optional[str] = ..., amount_minor: _Optional[int] = ..., channel_fee_minor: _Optional[int] = ..., net_amount_minor: _Optional[int] = ..., subsidy_minor: _Optional[int] = ..., distributed_minor: _Optional[int] = ..., fee_minor: _Optional[int] = ..., held_minor: _Optional[int] = ..., released_minor: _Optional[int] = ..., voided_minor: _Optional[int] = ..., refunded_minor: _Optional[int] = ..., rule_set_name: _Optional[str] = ..., rule_set_version: _Optional[int] = ..., legs: _Optional[_Iterable[_Union[SplitLeg, _Mapping]]] = ..., matched_rules: _Optional[_Iterable[_Union[MatchedRule, _Mapping]]] = ..., counter_values: _Optional[_Iterable[_Union[CounterValue, _Mapping]]] = ..., alerts: _Optional[_Iterable[_Union[SplitAlert, _Mapping]]] = ..., actions: _Optional[_Iterable[_Union[SplitAction, _Mapping]]] = ..., order: _Optional[_Union[Order, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SplitLeg(_message.Message):
    __slots__ = ("leg_index", "kind", "account_id", "external_ref", "debit_account_id", "amount_minor", "held_minor", "released_minor", "voided_minor", "refunded_minor", "release_state", "hold_reason", "release_steps", "rule_set_name", "rule_set_version", "rule_name", "label", "level", "ratio_bps", "transfer_ids")
    LEG_INDEX_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_REF_FIELD_NUMBER: _ClassVar[int]
    DEBIT_ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    HELD_MINOR_FIELD_NUMBER: _ClassVar[int]
    RELEASED_MINOR_FIELD_NUMBER: _ClassVar[int]
    VOIDED_MINOR_FIELD_NUMBER: _ClassVar[int]
    REFUNDED_MINOR_FIELD_NUMBER: _ClassVar[int]
    RELEASE_STATE_FIELD_NUMBER: _ClassVar[int]
    HOLD_REASON_FIELD_NUMBER: _ClassVar[int]
    RELEASE_STEPS_FIELD_NUMBER: _ClassVar[int]
    RULE_SET_NAME_FIELD_NUMBER: _ClassVar[int]
    RULE_SET_VERSION_FIELD_NUMBER: _ClassVar[int]
    RULE_NAME_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    RATIO_BPS_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_IDS_FIELD_NUMBER: _ClassVar[int]
    leg_index: int
    kind: LegKind
    account_id: int
    external_ref: str
    debit_account_id: int
    amount_minor: int
    held_minor: int
    released_minor: int
    voided_minor: int
    refunded_minor: int
    release_state: ReleaseState
    hold_reason: HoldReason
    release_steps: _containers.RepeatedCompositeFieldContainer[LegReleaseStep]
    rule_set_name: str
    rule_set_version: int
    rule_name: str
    label: str
    level: int
    ratio_bps: int
    transfer_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, leg_index: _Optional[int] = ..., kind: _Optional[_Union[LegKind, str]] = ..., account_id: _Optional[int] = ..., external_ref: _Optional[str] = ..., debit_account_id: _Optional[int] = ..., amount_minor: _Optional[int] = ..., held_minor: _Optional[int] = ..., released_minor: _Optional[int] = ..., voided_minor: _Optional[int] = ..., refunded_minor: _Optional[int] = ..., release_state: _Optional[_Union[ReleaseState, str]] = ..., hold_reason: _Optional[_Union[HoldReason, str]] = ..., release_steps: _Optional[_Iterable[_Union[LegReleaseStep, _Mapping]]] = ..., rule_set_name: _Optional[str] = ..., rule_set_version: _Optional[int] = ..., rule_name: _Optional[str] = ..., label: _Optional[str] = ..., level: _Optional[int] = ..., ratio_bps: _Optional[int] = ..., transfer_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class LegReleaseStep(_message.Message):
    __slots__ = ("event_name", "fraction_bps", "amount_minor", "released", "release_time")
    EVENT_NAME_FIELD_NUMBER: _ClassVar[int]
    FRACTION_BPS_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    RELEASE_TIME_FIELD_NUMBER: _ClassVar[int]
    event_name: str
    fraction_bps: int
    amount_minor: int
    released: bool
    release_time: _timestamp_pb2.Timestamp
    def __init__(self, event_name: _Optional[str] = ..., fraction_bps: _Optional[int] = ..., amount_minor: _Optional[int] = ..., released: _Optional[bool] = ..., release_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class MatchedRule(_message.Message):
    __slots__ = ("match_index", "rule_set_name", "rule_set_version", "rule_name", "priority", "level", "parent_match_index", "top_slice", "base_minor", "fee_minor", "passed_on_minor")
    MATCH_INDEX_FIELD_NUMBER: _ClassVar[int]
    RULE_SET_NAME_FIELD_NUMBER: _ClassVar[int]
    RULE_SET_VERSION_FIELD_NUMBER: _ClassVar[int]
    RULE_NAME_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    PARENT_MATCH_INDEX_FIELD_NUMBER: _ClassVar[int]
    TOP_SLICE_FIELD_NUMBER: _ClassVar[int]
    BASE_MINOR_FIELD_NUMBER: _ClassVar[int]
    FEE_MINOR_FIELD_NUMBER: _ClassVar[int]
    PASSED_ON_MINOR_FIELD_NUMBER: _ClassVar[int]
    match_index: int
    rule_set_name: str
    rule_set_version: int
    rule_name: str
    priority: int
    level: int
    parent_match_index: int
    top_slice: bool
    base_minor: int
    fee_minor: int
    passed_on_minor: int
    def __init__(self, match_index: _Optional[int] = ..., rule_set_name: _Optional[str] = ..., rule_set_version: _Optional[int] = ..., rule_name: _Optional[str] = ..., priority: _Optional[int] = ..., level: _Optional[int] = ..., parent_match_index: _Optional[int] = ..., top_slice: _Optional[bool] = ..., base_minor: _Optional[int] = ..., fee_minor: _Optional[int] = ..., passed_on_minor: _Optional[int] = ...) -> None: ...

class CounterValue(_message.Message):
    __slots__ = ("counter_name", "subject", "period_start_time", "value", "source")
    COUNTER_NAME_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    PERIOD_START_TIME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    counter_name: str
    subject: str
    period_start_time: _timestamp_pb2.Timestamp
    value: int
    source: CounterSource
    def __init__(self, counter_name: _Optional[str] = ..., subject: _Optional[str] = ..., period_start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., value: _Optional[int] = ..., source: _Optional[_Union[CounterSource, str]] = ...) -> None: ...

class SplitAlert(_message.Message):
    __slots__ = ("reason", "account_id", "leg_index", "message")
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    LEG_INDEX_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    reason: str
    account_id: int
    leg_index: int
    message: str
    def __init__(self, reason: _Optional[str] = ..., account_id: _Optional[int] = ..., leg_index: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class SplitAction(_message.Message):
    __slots__ = ("action_id", "kind", "request_id", "event_name", "fraction_bps", "amount_minor", "refund_ref", "reason", "leg_changes", "create_time", "event_time")
    ACTION_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_NAME_FIELD_NUMBER: _ClassVar[int]
    FRACTION_BPS_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    REFUND_REF_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LEG_CHANGES_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    action_id: int
    kind: SplitActionKind
    request_id: str
    event_name: str
    fraction_bps: int
    amount_minor: int
    refund_ref: str
    reason: str
    leg_changes: _containers.RepeatedCompositeFieldContainer[LegChange]
    create_time: _timestamp_pb2.Timestamp
    event_time: _timestamp_pb2.Timestamp
    def __init__(self, action_id: _Optional[int] = ..., kind: _Optional[_Union[SplitActionKind, str]] = ..., request_id: _Optional[str] = ..., event_name: _Optional[str] = ..., fraction_bps: _Optional[int] = ..., amount_minor: _Optional[int] = ..., refund_ref: _Optional[str] = ..., reason: _Optional[str] = ..., leg_changes: _Optional[_Iterable[_Union[LegChange, _Mapping]]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class LegChange(_message.Message):
    __slots__ = ("leg_index", "account_id", "held_minor", "released_minor", "voided_minor", "refunded_held_minor", "refunded_posted_minor", "shortfall_minor", "shortfall_account_id", "transfer_ids")
    LEG_INDEX_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    HELD_MINOR_FIELD_NUMBER: _ClassVar[int]
    RELEASED_MINOR_FIELD_NUMBER: _ClassVar[int]
    VOIDED_MINOR_FIELD_NUMBER: _ClassVar[int]
    REFUNDED_HELD_MINOR_FIELD_NUMBER: _ClassVar[int]
    REFUNDED_POSTED_MINOR_FIELD_NUMBER: _ClassVar[int]
    SHORTFALL_MINOR_FIELD_NUMBER: _ClassVar[int]
    SHORTFALL_ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_IDS_FIELD_NUMBER: _ClassVar[int]
    leg_index: int
    account_id: int
    held_minor: int
    released_minor: int
    voided_minor: int
    refunded_held_minor: int
    refunded_posted_minor: int
    shortfall_minor: int
    shortfall_account_id: int
    transfer_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, leg_index: _Optional[int] = ..., account_id: _Optional[int] = ..., held_minor: _Optional[int] = ..., released_minor: _Optional[int] = ..., voided_minor: _Optional[int] = ..., refunded_held_minor: _Optional[int] = ..., refunded_posted_minor: _Optional[int] = ..., shortfall_minor: _Optional[int] = ..., shortfall_account_id: _Optional[int] = ..., transfer_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class SplitError(_message.Message):
    __slots__ = ("reason", "message", "code", "field_violations", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class FieldViolation(_message.Message):
        __slots__ = ("field", "description")
        FIELD_FIELD_NUMBER: _ClassVar[int]
        DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
        field: str
        description: str
        def __init__(self, field: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    FIELD_VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    reason: str
    message: str
    code: int
    field_violations: _containers.RepeatedCompositeFieldContainer[SplitError.FieldViolation]
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, reason: _Optional[str] = ..., message: _Optional[str] = ..., code: _Optional[int] = ..., field_violations: _Optional[_Iterable[_Union[SplitError.FieldViolation, _Mapping]]] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SplitOutcome(_message.Message):
    __slots__ = ("order_id", "request_id", "split", "error")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    request_id: str
    split: Split
    error: SplitError
    def __init__(self, order_id: _Optional[str] = ..., request_id: _Optional[str] = ..., split: _Optional[_Union[Split, _Mapping]] = ..., error: _Optional[_Union[SplitError, _Mapping]] = ...) -> None: ...

class PublishRuleSetRequest(_message.Message):
    __slots__ = ("request_id", "rule_set", "validate_only")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RULE_SET_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    rule_set: _rule_set_pb2.RuleSet
    validate_only: bool
    def __init__(self, request_id: _Optional[str] = ..., rule_set: _Optional[_Union[_rule_set_pb2.RuleSet, _Mapping]] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class PublishRuleSetResponse(_message.Message):
    __slots__ = ("rule_set",)
    RULE_SET_FIELD_NUMBER: _ClassVar[int]
    rule_set: _rule_set_pb2.RuleSet
    def __init__(self, rule_set: _Optional[_Union[_rule_set_pb2.RuleSet, _Mapping]] = ...) -> None: ...

class ActivateRuleSetRequest(_message.Message):
    __slots__ = ("request_id", "rule_set_name", "rule_set_version", "content_sha256", "expected_active_version", "comment")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RULE_SET_NAME_FIELD_NUMBER: _ClassVar[int]
    RULE_SET_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_ACTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    rule_set_name: str
    rule_set_version: int
    content_sha256: str
    expected_active_version: int
    comment: str
    def __init__(self, request_id: _Optional[str] = ..., rule_set_name: _Optional[str] = ..., rule_set_version: _Optional[int] = ..., content_sha256: _Optional[str] = ..., expected_active_version: _Optional[int] = ..., comment: _Optional[str] = ...) -> None: ...

class ActivateRuleSetResponse(_message.Message):
    __slots__ = ("rule_set", "previous_active_version", "ratio_swing")
    RULE_SET_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_ACTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    RATIO_SWING_FIELD_NUMBER: _ClassVar[int]
    rule_set: _rule_set_pb2.RuleSet
    previous_active_version: int
    ratio_swing: RatioSwingCheck
    def __init__(self, rule_set: _Optional[_Union[_rule_set_pb2.RuleSet, _Mapping]] = ..., previous_active_version: _Optional[int] = ..., ratio_swing: _Optional[_Union[RatioSwingCheck, _Mapping]] = ...) -> None: ...

class RatioSwingCheck(_message.Message):
    __slots__ = ("swing_threshold_bps", "max_swing_bps", "receiver_account_id", "receiver_external_ref", "swing_exceeded", "order_count", "first_approver_key_id", "period_days")
    SWING_THRESHOLD_BPS_FIELD_NUMBER: _ClassVar[int]
    MAX_SWING_BPS_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_EXTERNAL_REF_FIELD_NUMBER: _ClassVar[int]
    SWING_EXCEEDED_FIELD_NUMBER: _ClassVar[int]
    ORDER_COUNT_FIELD_NUMBER: _ClassVar[int]
    FIRST_APPROVER_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PERIOD_DAYS_FIELD_NUMBER: _ClassVar[int]
    swing_threshold_bps: int
    max_swing_bps: int
    receiver_account_id: int
    receiver_external_ref: str
    swing_exceeded: bool
    order_count: int
    first_approver_key_id: int
    period_days: int
    def __init__(self, swing_threshold_bps: _Optional[int] = ..., max_swing_bps: _Optional[int] = ..., receiver_account_id: _Optional[int] = ..., receiver_external_ref: _Optional[str] = ..., swing_exceeded: _Optional[bool] = ..., order_count: _Optional[int] = ..., first_approver_key_id: _Optional[int] = ..., period_days: _Optional[int] = ...) -> None: ...

class SimulateRuleSetRequest(_message.Message):
    __slots__ = ("rule_set_name", "rule_set_version", "days", "order_count_max")
    RULE_SET_NAME_FIELD_NUMBER: _ClassVar[int]
    RULE_SET_VERSION_FIELD_NUMBER: _ClassVar[int]
    DAYS_FIELD_NUMBER: _ClassVar[int]
    ORDER_COUNT_MAX_FIELD_NUMBER: _ClassVar[int]
    rule_set_name: str
    rule_set_version: int
    days: int
    order_count_max: int
    def __init__(self, rule_set_name: _Optional[str] = ..., rule_set_version: _Optional[int] = ..., days: _Optional[int] = ..., order_count_max: _Optional[int] = ...) -> None: ...

class SimulateRuleSetResponse(_message.Message):
    __slots__ = ("rule_set_name", "active_version", "candidate_version", "currency_code", "period_start_time", "period_end_time", "order_count", "truncated", "candidate_split_count", "candidate_refused_count", "active_refused_count", "changed_rule_count", "counter_unrecorded_count", "active_total_minor", "candidate_total_minor", "receivers", "receiver_count", "max_swing_bps", "swing_threshold_bps", "swing_exceeded", "changed_orders", "refused_orders", "refused_count_by_reason")
    class RefusedCountByReasonEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    RULE_SET_NAME_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    PERIOD_START_TIME_FIELD_NUMBER: _ClassVar[int]
    PERIOD_END_TIME_FIELD_NUMBER: _ClassVar[int]
    ORDER_COUNT_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_SPLIT_COUNT_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_REFUSED_COUNT_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_REFUSED_COUNT_FIELD_NUMBER: _ClassVar[int]
    CHANGED_RULE_COUNT_FIELD_NUMBER: _ClassVar[int]
    COUNTER_UNRECORDED_COUNT_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_TOTAL_MINOR_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_TOTAL_MINOR_FIELD_NUMBER: _ClassVar[int]
    RECEIVERS_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_COUNT_FIELD_NUMBER: _ClassVar[int]
    MAX_SWING_BPS_FIELD_NUMBER: _ClassVar[int]
    SWING_THRESHOLD_BPS_FIELD_NUMBER: _ClassVar[int]
    SWING_EXCEEDED_FIELD_NUMBER: _ClassVar[int]
    CHANGED_ORDERS_FIELD_NUMBER: _ClassVar[int]
    REFUSED_ORDERS_FIELD_NUMBER: _ClassVar[int]
    REFUSED_COUNT_BY_REASON_FIELD_NUMBER: _ClassVar[int]
    rule_set_name: str
    active_version: int
    candidate_version: int
    currency_code: str
    period_start_time: _timestamp_pb2.Timestamp
    period_end_time: _timestamp_pb2.Timestamp
    order_count: int
    truncated: bool
    candidate_split_count: int
    candidate_refused_count: int
    active_refused_count: int
    changed_rule_count: int
    counter_unrecorded_count: int
    active_total_minor: int
    candidate_total_minor: int
    receivers: _containers.RepeatedCompositeFieldContainer[ReceiverBacktest]
    receiver_count: int
    max_swing_bps: int
    swing_threshold_bps: int
    swing_exceeded: bool
    changed_orders: _containers.RepeatedCompositeFieldContainer[BacktestChangedOrder]
    refused_orders: _containers.RepeatedCompositeFieldContainer[BacktestRefusedOrder]
    refused_count_by_reason: _containers.ScalarMap[str, int]
    def __init__(self, rule_set_name: _Optional[str] = ..., active_version: _Optional[int] = ..., candidate_version: _Optional[int] = ..., currency_code: _Optional[str] = ..., period_start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., period_end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., order_count: _Optional[int] = ..., truncated: _Optional[bool] = ..., candidate_split_count: _Optional[int] = ..., candidate_refused_count: _Optional[int] = ..., active_refused_count: _Optional[int] = ..., changed_rule_count: _Optional[int] = ..., counter_unrecorded_count: _Optional[int] = ..., active_total_minor: _Optional[int] = ..., candidate_total_minor: _Optional[int] = ..., receivers: _Optional[_Iterable[_Union[ReceiverBacktest, _Mapping]]] = ..., receiver_count: _Optional[int] = ..., max_swing_bps: _Optional[int] = ..., swing_threshold_bps: _Optional[int] = ..., swing_exceeded: _Optional[bool] = ..., changed_orders: _Optional[_Iterable[_Union[BacktestChangedOrder, _Mapping]]] = ..., refused_orders: _Optional[_Iterable[_Union[BacktestRefusedOrder, _Mapping]]] = ..., refused_count_by_reason: _Optional[_Mapping[str, int]] = ...) -> None: ...

class ReceiverBacktest(_message.Message):
    __slots__ = ("account_id", "external_ref", "active_minor", "candidate_minor", "active_share_bps", "candidate_share_bps", "swing_bps", "new_receiver", "swing_exceeded")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_REF_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_MINOR_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_MINOR_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_SHARE_BPS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_SHARE_BPS_FIELD_NUMBER: _ClassVar[int]
    SWING_BPS_FIELD_NUMBER: _ClassVar[int]
    NEW_RECEIVER_FIELD_NUMBER: _ClassVar[int]
    SWING_EXCEEDED_FIELD_NUMBER: _ClassVar[int]
    account_id: int
    external_ref: str
    active_minor: int
    candidate_minor: int
    active_share_bps: int
    candidate_share_bps: int
    swing_bps: int
    new_receiver: bool
    swing_exceeded: bool
    def __init__(self, account_id: _Optional[int] = ..., external_ref: _Optional[str] = ..., active_minor: _Optional[int] = ..., candidate_minor: _Optional[int] = ..., active_share_bps: _Optional[int] = ..., candidate_share_bps: _Optional[int] = ..., swing_bps: _Optional[int] = ..., new_receiver: _Optional[bool] = ..., swing_exceeded: _Optional[bool] = ...) -> None: ...

class BacktestChangedOrder(_message.Message):
    __slots__ = ("order_id", "active", "candidate")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    active: Split
    candidate: Split
    def __init__(self, order_id: _Optional[str] = ..., active: _Optional[_Union[Split, _Mapping]] = ..., candidate: _Optional[_Union[Split, _Mapping]] = ...) -> None: ...

class BacktestRefusedOrder(_message.Message):
    __slots__ = ("order_id", "error")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    error: SplitError
    def __init__(self, order_id: _Optional[str] = ..., error: _Optional[_Union[SplitError, _Mapping]] = ...) -> None: ...

class GetRuleSetRequest(_message.Message):
    __slots__ = ("rule_set_name", "rule_set_version")
    RULE_SET_NAME_FIELD_NUMBER: _ClassVar[int]
    RULE_SET_VERSION_FIELD_NUMBER: _ClassVar[int]
    rule_set_name: str
    rule_set_version: int
    def __init__(self, rule_set_name: _Optional[str] = ..., rule_set_version: _Optional[int] = ...) -> None: ...

class GetRuleSetResponse(_message.Message):
    __slots__ = ("rule_set",)
    RULE_SET_FIELD_NUMBER: _ClassVar[int]
    rule_set: _rule_set_pb2.RuleSet
    def __init__(self, rule_set: _Optional[_Union[_rule_set_pb2.RuleSet, _Mapping]] = ...) -> None: ...

class ListRuleSetsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "rule_set_name", "status", "include_rules")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    RULE_SET_NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_RULES_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    rule_set_name: str
    status: _rule_set_pb2.RuleSetStatus
    include_rules: bool
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., rule_set_name: _Optional[str] = ..., status: _Optional[_Union[_rule_set_pb2.RuleSetStatus, str]] = ..., include_rules: _Optional[bool] = ...) -> None: ...

class ListRuleSetsResponse(_message.Message):
    __slots__ = ("rule_sets", "next_page_token")
    RULE_SETS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    rule_sets: _containers.RepeatedCompositeFieldContainer[_rule_set_pb2.RuleSet]
    next_page_token: str
    def __init__(self, rule_sets: _Optional[_Iterable[_Union[_rule_set_pb2.RuleSet, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class PreviewSplitRequest(_message.Message):
    __slots__ = ("order", "rule_set_version", "counter_overrides")
    class CounterOverridesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ORDER_FIELD_NUMBER: _ClassVar[int]
    RULE_SET_VERSION_FIELD_NUMBER: _ClassVar[int]
    COUNTER_OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    order: Order
    rule_set_version: int
    counter_overrides: _containers.ScalarMap[str, int]
    def __init__(self, order: _Optional[_Union[Order, _Mapping]] = ..., rule_set_version: _Optional[int] = ..., counter_overrides: _Optional[_Mapping[str, int]] = ...) -> None: ...

class PreviewSplitResponse(_message.Message):
    __slots__ = ("split",)
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    split: Split
    def __init__(self, split: _Optional[_Union[Split, _Mapping]] = ...) -> None: ...

class SplitRequest(_message.Message):
    __slots__ = ("request_id", "order")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    order: Order
    def __init__(self, request_id: _Optional[str] = ..., order: _Optional[_Union[Order, _Mapping]] = ...) -> None: ...

class SplitResponse(_message.Message):
    __slots__ = ("split",)
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    split: Split
    def __init__(self, split: _Optional[_Union[Split, _Mapping]] = ...) -> None: ...

class SplitBatchRequest(_message.Message):
    __slots__ = ("request_id", "requests")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    requests: _containers.RepeatedCompositeFieldContainer[SplitRequest]
    def __init__(self, request_id: _Optional[str] = ..., requests: _Optional[_Iterable[_Union[SplitRequest, _Mapping]]] = ...) -> None: ...

class SplitBatchResponse(_message.Message):
    __slots__ = ("outcomes",)
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[SplitOutcome]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[SplitOutcome, _Mapping]]] = ...) -> None: ...

class SplitStreamRequest(_message.Message):
    __slots__ = ("request_id", "order")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    order: Order
    def __init__(self, request_id: _Optional[str] = ..., order: _Optional[_Union[Order, _Mapping]] = ...) -> None: ...

class SplitStreamResponse(_message.Message):
    __slots__ = ("outcome",)
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    outcome: SplitOutcome
    def __init__(self, outcome: _Optional[_Union[SplitOutcome, _Mapping]] = ...) -> None: ...

class GetSplitRequest(_message.Message):
    __slots__ = ("order_id", "split_id")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    SPLIT_ID_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    split_id: int
    def __init__(self, order_id: _Optional[str] = ..., split_id: _Optional[int] = ...) -> None: ...

class GetSplitResponse(_message.Message):
    __slots__ = ("split",)
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    split: Split
    def __init__(self, split: _Optional[_Union[Split, _Mapping]] = ...) -> None: ...

class ListSplitsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "state", "paid_time_start", "paid_time_end", "account_id", "amount_min_minor", "amount_max_minor", "currency_code")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PAID_TIME_START_FIELD_NUMBER: _ClassVar[int]
    PAID_TIME_END_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MIN_MINOR_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MAX_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    state: SplitStatus
    paid_time_start: _timestamp_pb2.Timestamp
    paid_time_end: _timestamp_pb2.Timestamp
    account_id: int
    amount_min_minor: int
    amount_max_minor: int
    currency_code: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., state: _Optional[_Union[SplitStatus, str]] = ..., paid_time_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., paid_time_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., account_id: _Optional[int] = ..., amount_min_minor: _Optional[int] = ..., amount_max_minor: _Optional[int] = ..., currency_code: _Optional[str] = ...) -> None: ...

class ListSplitsResponse(_message.Message):
    __slots__ = ("splits", "next_page_token")
    SPLITS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    splits: _containers.RepeatedCompositeFieldContainer[Split]
    next_page_token: str
    def __init__(self, splits: _Optional[_Iterable[_Union[Split, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ReleaseSplitRequest(_message.Message):
    __slots__ = ("request_id", "order_id", "event_name", "fraction_bps", "account_ids", "event_time", "reason")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_NAME_FIELD_NUMBER: _ClassVar[int]
    FRACTION_BPS_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_IDS_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    order_id: str
    event_name: str
    fraction_bps: int
    account_ids: _containers.RepeatedScalarFieldContainer[int]
    event_time: _timestamp_pb2.Timestamp
    reason: str
    def __init__(self, request_id: _Optional[str] = ..., order_id: _Optional[str] = ..., event_name: _Optional[str] = ..., fraction_bps: _Optional[int] = ..., account_ids: _Optional[_Iterable[int]] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class ReleaseSplitResponse(_message.Message):
    __slots__ = ("split", "action")
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    split: Split
    action: SplitAction
    def __init__(self, split: _Optional[_Union[Split, _Mapping]] = ..., action: _Optional[_Union[SplitAction, _Mapping]] = ...) -> None: ...

class CancelSplitRequest(_message.Message):
    __slots__ = ("request_id", "order_id", "reason")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    order_id: str
    reason: str
    def __init__(self, request_id: _Optional[str] = ..., order_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelSplitResponse(_message.Message):
    __slots__ = ("split", "action")
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    split: Split
    action: SplitAction
    def __init__(self, split: _Optional[_Union[Split, _Mapping]] = ..., action: _Optional[_Union[SplitAction, _Mapping]] = ...) -> None: ...

class RefundSplitRequest(_message.Message):
    __slots__ = ("request_id", "order_id", "amount_minor", "currency_code", "refund_ref", "reason", "shortfall_account_ref")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    REFUND_REF_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SHORTFALL_ACCOUNT_REF_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    order_id: str
    amount_minor: int
    currency_code: str
    refund_ref: str
    reason: str
    shortfall_account_ref: str
    def __init__(self, request_id: _Optional[str] = ..., order_id: _Optional[str] = ..., amount_minor: _Optional[int] = ..., currency_code: _Optional[str] = ..., refund_ref: _Optional[str] = ..., reason: _Optional[str] = ..., shortfall_account_ref: _Optional[str] = ...) -> None: ...

class RefundSplitResponse(_message.Message):
    __slots__ = ("split", "action")
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    split: Split
    action: SplitAction
    def __init__(self, split: _Optional[_Union[Split, _Mapping]] = ..., action: _Optional[_Union[SplitAction, _Mapping]] = ...) -> None: ...
