import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RuleSetStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RULE_SET_STATUS_UNSPECIFIED: _ClassVar[RuleSetStatus]
    RULE_SET_STATUS_PUBLISHED: _ClassVar[RuleSetStatus]
    RULE_SET_STATUS_ACTIVE: _ClassVar[RuleSetStatus]
    RULE_SET_STATUS_SUPERSEDED: _ClassVar[RuleSetStatus]

class ShareType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SHARE_TYPE_UNSPECIFIED: _ClassVar[ShareType]
    SHARE_TYPE_RATIO: _ClassVar[ShareType]
    SHARE_TYPE_FIXED: _ClassVar[ShareType]
    SHARE_TYPE_REMAINDER: _ClassVar[ShareType]

class AttributeComparison(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ATTRIBUTE_COMPARISON_UNSPECIFIED: _ClassVar[AttributeComparison]
    ATTRIBUTE_COMPARISON_EQUALS: _ClassVar[AttributeComparison]
    ATTRIBUTE_COMPARISON_NOT_EQUALS: _ClassVar[AttributeComparison]
    ATTRIBUTE_COMPARISON_IN: _ClassVar[AttributeComparison]
    ATTRIBUTE_COMPARISON_NOT_IN: _ClassVar[AttributeComparison]

class CounterMetric(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COUNTER_METRIC_UNSPECIFIED: _ClassVar[CounterMetric]
    COUNTER_METRIC_ORDER_COUNT: _ClassVar[CounterMetric]
    COUNTER_METRIC_AMOUNT_MINOR: _ClassVar[CounterMetric]

class CounterPeriod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COUNTER_PERIOD_UNSPECIFIED: _ClassVar[CounterPeriod]
    COUNTER_PERIOD_DAY: _ClassVar[CounterPeriod]
    COUNTER_PERIOD_WEEK: _ClassVar[CounterPeriod]
    COUNTER_PERIOD_MONTH: _ClassVar[CounterPeriod]
    COUNTER_PERIOD_YEAR: _ClassVar[CounterPeriod]
    COUNTER_PERIOD_LIFETIME: _ClassVar[CounterPeriod]

class TierEffect(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TIER_EFFECT_UNSPECIFIED: _ClassVar[TierEffect]
    TIER_EFFECT_ADD: _ClassVar[TierEffect]
    TIER_EFFECT_REPLACE: _ClassVar[TierEffect]

class SubsidyBasis(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUBSIDY_BASIS_UNSPECIFIED: _ClassVar[SubsidyBasis]
    SUBSIDY_BASIS_PLATFORM_COUPONS: _ClassVar[SubsidyBasis]
    SUBSIDY_BASIS_FIXED: _ClassVar[SubsidyBasis]
    SUBSIDY_BASIS_RATIO: _ClassVar[SubsidyBasis]

class SubsidyTarget(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUBSIDY_TARGET_UNSPECIFIED: _ClassVar[SubsidyTarget]
    SUBSIDY_TARGET_RECEIVER: _ClassVar[SubsidyTarget]
    SUBSIDY_TARGET_SPLIT_BASE: _ClassVar[SubsidyTarget]
RULE_SET_STATUS_UNSPECIFIED: RuleSetStatus
RULE_SET_STATUS_PUBLISHED: RuleSetStatus
RULE_SET_STATUS_ACTIVE: RuleSetStatus
RULE_SET_STATUS_SUPERSEDED: RuleSetStatus
SHARE_TYPE_UNSPECIFIED: ShareType
SHARE_TYPE_RATIO: ShareType
SHARE_TYPE_FIXED: ShareType
SHARE_TYPE_REMAINDER: ShareType
ATTRIBUTE_COMPARISON_UNSPECIFIED: AttributeComparison
ATTRIBUTE_COMPARISON_EQUALS: AttributeComparison
ATTRIBUTE_COMPARISON_NOT_EQUALS: AttributeComparison
ATTRIBUTE_COMPARISON_IN: AttributeComparison
ATTRIBUTE_COMPARISON_NOT_IN: AttributeComparison
COUNTER_METRIC_UNSPECIFIED: CounterMetric
COUNTER_METRIC_ORDER_COUNT: CounterMetric
COUNTER_METRIC_AMOUNT_MINOR: CounterMetric
COUNTER_PERIOD_UNSPECIFIED: CounterPeriod
COUNTER_PERIOD_DAY: CounterPeriod
COUNTER_PERIOD_WEEK: CounterPeriod
COUNTER_PERIOD_MONTH: CounterPeriod
COUNTER_PERIOD_YEAR: CounterPeriod
COUNTER_PERIOD_LIFETIME: CounterPeriod
TIER_EFFECT_UNSPECIFIED: TierEffect
TIER_EFFECT_ADD: TierEffect
TIER_EFFECT_REPLACE: TierEffect
SUBSIDY_BASIS_UNSPECIFIED: SubsidyBasis
SUBSIDY_BASIS_PLATFORM_COUPONS: SubsidyBasis
SUBSIDY_BASIS_FIXED: SubsidyBasis
SUBSIDY_BASIS_RATIO: SubsidyBasis
SUBSIDY_TARGET_UNSPECIFIED: SubsidyTarget
SUBSIDY_TARGET_RECEIVER: SubsidyTarget
SUBSIDY_TARGET_SPLIT_BASE: SubsidyTarget

class RuleSet(_message.Message):
    __slots__ = ("rule_set_id", "name", "version", "currency_code", "description", "rules", "attributes", "party_roles", "counters", "status", "content_sha256", "published_by", "publish_time", "activated_by", "activate_time", "supersede_time", "level_count")
    RULE_SET_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    PARTY_ROLES_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_BY_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_TIME_FIELD_NUMBER: _ClassVar[int]
    ACTIVATED_BY_FIELD_NUMBER: _ClassVar[int]
    ACTIVATE_TIME_FIELD_NUMBER: _ClassVar[int]
    SUPERSEDE_TIME_FIELD_NUMBER: _ClassVar[int]
    LEVEL_COUNT_FIELD_NUMBER: _ClassVar[int]
    rule_set_id: int
    name: str
    version: int
    currency_code: str
    description: str
    rules: _containers.RepeatedCompositeFieldContainer[Rule]
    attributes: _containers.RepeatedCompositeFieldContainer[AttributeDeclaration]
    party_roles: _containers.RepeatedScalarFieldContainer[str]
    counters: _containers.RepeatedCompositeFieldContainer[CounterDefinition]
    status: RuleSetStatus
    content_sha256: str
    published_by: str
    publish_time: _timestamp_pb2.Timestamp
    activated_by: str
    activate_time: _timestamp_pb2.Timestamp
    supersede_time: _timestamp_pb2.Timestamp
    level_count: int
    def __init__(self, rule_set_id: _Optional[int] = ..., name: _Optional[str] = ..., version: _Optional[int] = ..., currency_code: _Optional[str] = ..., description: _Optional[str] = ..., rules: _Optional[_Iterable[_Union[Rule, _Mapping]]] = ..., attributes: _Optional[_Iterable[_Union[AttributeDeclaration, _Mapping]]] = ..., party_roles: _Optional[_Iterable[str]] = ..., counters: _Optional[_Iterable[_Union[CounterDefinition, _Mapping]]] = ..., status: _Optional[_Union[RuleSetStatus, str]] = ..., content_sha256: _Optional[str] = ..., published_by: _Optional[str] = ..., publish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., activated_by: _Optional[str] = ..., activate_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., supersede_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., level_count: _Optional[int] = ...) -> None: ...

class AttributeDeclaration(_message.Message):
    __slots__ = ("key", "allowed_values", "description")
    KEY_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_VALUES_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    key: str
    allowed_values: _containers.RepeatedScalarFieldContainer[str]
    description: str
    def __init__(self, key: _Optional[str] = ..., allowed_values: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ...) -> None: ...

class CounterDefinition(_message.Message):
    __slots__ = ("name", "metric", "period", "account_ref", "party_role", "attribute_key", "time_zone")
    NAME_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_REF_FIELD_NUMBER: _ClassVar[int]
    PARTY_ROLE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTE_KEY_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    name: str
    metric: CounterMetric
    period: CounterPeriod
    account_ref: str
    party_role: str
    attribute_key: str
    time_zone: str
    def __init__(self, name: _Optional[str] = ..., metric: _Optional[_Union[CounterMetric, str]] = ..., period: _Optional[_Union[CounterPeriod, str]] = ..., account_ref: _Optional[str] = ..., party_role: _Optional[str] = ..., attribute_key: _Optional[str] = ..., time_zone: _Optional[str] = ...) -> None: ...

class Rule(_message.Message):
    __slots__ = ("rule_name", "priority", "description", "start_time", "end_time", "condition", "top_slice", "fees", "shares", "subsidies")
    RULE_NAME_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    TOP_SLICE_FIELD_NUMBER: _ClassVar[int]
    FEES_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    SUBSIDIES_FIELD_NUMBER: _ClassVar[int]
    rule_name: str
    priority: int
    description: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    condition: RuleCondition
    top_slice: bool
    fees: _containers.RepeatedCompositeFieldContainer[Fee]
    shares: _containers.RepeatedCompositeFieldContainer[Share]
    subsidies: _containers.RepeatedCompositeFieldContainer[Subsidy]
    def __init__(self, rule_name: _Optional[str] = ..., priority: _Optional[int] = ..., description: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., condition: _Optional[_Union[RuleCondition, _Mapping]] = ..., top_slice: _Optional[bool] = ..., fees: _Optional[_Iterable[_Union[Fee, _Mapping]]] = ..., shares: _Optional[_Iterable[_Union[Share, _Mapping]]] = ..., subsidies: _Optional[_Iterable[_Union[Subsidy, _Mapping]]] = ...) -> None: ...

class RuleCondition(_message.Message):
    __slots__ = ("min_amount_minor", "max_amount_minor", "currency_codes", "channels", "tags_any", "tags_all", "tags_none", "attributes")
    MIN_AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    MAX_AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODES_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    TAGS_ANY_FIELD_NUMBER: _ClassVar[int]
    TAGS_ALL_FIELD_NUMBER: _ClassVar[int]
    TAGS_NONE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    min_amount_minor: int
    max_amount_minor: int
    currency_codes: _containers.RepeatedScalarFieldContainer[str]
    channels: _containers.RepeatedScalarFieldContainer[str]
    tags_any: _containers.RepeatedScalarFieldContainer[str]
    tags_all: _containers.RepeatedScalarFieldContainer[str]
    tags_none: _containers.RepeatedScalarFieldContainer[str]
    attributes: _containers.RepeatedCompositeFieldContainer[AttributeCondition]
    def __init__(self, min_amount_minor: _Optional[int] = ..., max_amount_minor: _Optional[int] = ..., currency_codes: _Optional[_Iterable[str]] = ..., channels: _Optional[_Iterable[str]] = ..., tags_any: _Optional[_Iterable[str]] = ..., tags_all: _Optional[_Iterable[str]] = ..., tags_none: _Optional[_Iterable[str]] = ..., attributes: _Optional[_Iterable[_Union[AttributeCondition, _Mapping]]] = ...) -> None: ...

class AttributeCondition(_message.Message):
    __slots__ = ("key", "comparison", "values")
    KEY_FIELD_NUMBER: _ClassVar[int]
    COMPARISON_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    key: str
    comparison: AttributeComparison
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, key: _Optional[str] = ..., comparison: _Optional[_Union[AttributeComparison, str]] = ..., values: _Optional[_Iterable[str]] = ...) -> None: ...

class Receiver(_message.Message):
    __slots__ = ("account_ref", "party_role", "rule_set")
    ACCOUNT_REF_FIELD_NUMBER: _ClassVar[int]
    PARTY_ROLE_FIELD_NUMBER: _ClassVar[int]
    RULE_SET_FIELD_NUMBER: _ClassVar[int]
    account_ref: str
    party_role: str
    rule_set: SubRuleSetRef
    def __init__(self, account_ref: _Optional[str] = ..., party_role: _Optional[str] = ..., rule_set: _Optional[_Union[SubRuleSetRef, _Mapping]] = ...) -> None: ...

class SubRuleSetRef(_message.Message):
    __slots__ = ("rule_set_name", "rule_set_version")
    RULE_SET_NAME_FIELD_NUMBER: _ClassVar[int]
    RULE_SET_VERSION_FIELD_NUMBER: _ClassVar[int]
    rule_set_name: str
    rule_set_version: int
    def __init__(self, rule_set_name: _Optional[str] = ..., rule_set_version: _Optional[int] = ...) -> None: ...

class Fee(_message.Message):
    __slots__ = ("label", "ratio_bps", "fixed_minor", "min_minor", "max_minor", "account_ref", "release")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    RATIO_BPS_FIELD_NUMBER: _ClassVar[int]
    FIXED_MINOR_FIELD_NUMBER: _ClassVar[int]
    MIN_MINOR_FIELD_NUMBER: _ClassVar[int]
    MAX_MINOR_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_REF_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    label: str
    ratio_bps: int
    fixed_minor: int
    min_minor: int
    max_minor: int
    account_ref: str
    release: ReleasePolicy
    def __init__(self, label: _Optional[str] = ..., ratio_bps: _Optional[int] = ..., fixed_minor: _Optional[int] = ..., min_minor: _Optional[int] = ..., max_minor: _Optional[int] = ..., account_ref: _Optional[str] = ..., release: _Optional[_Union[ReleasePolicy, _Mapping]] = ...) -> None: ...

class Share(_message.Message):
    __slots__ = ("label", "type", "ratio_bps", "fixed_minor", "receiver", "release", "tiers")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    RATIO_BPS_FIELD_NUMBER: _ClassVar[int]
    FIXED_MINOR_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    label: str
    type: ShareType
    ratio_bps: int
    fixed_minor: int
    receiver: Receiver
    release: ReleasePolicy
    tiers: TierTable
    def __init__(self, label: _Optional[str] = ..., type: _Optional[_Union[ShareType, str]] = ..., ratio_bps: _Optional[int] = ..., fixed_minor: _Optional[int] = ..., receiver: _Optional[_Union[Receiver, _Mapping]] = ..., release: _Optional[_Union[ReleasePolicy, _Mapping]] = ..., tiers: _Optional[_Union[TierTable, _Mapping]] = ...) -> None: ...

class TierTable(_message.Message):
    __slots__ = ("counter_name", "effect", "tiers")
    COUNTER_NAME_FIELD_NUMBER: _ClassVar[int]
    EFFECT_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    counter_name: str
    effect: TierEffect
    tiers: _containers.RepeatedCompositeFieldContainer[Tier]
    def __init__(self, counter_name: _Optional[str] = ..., effect: _Optional[_Union[TierEffect, str]] = ..., tiers: _Optional[_Iterable[_Union[Tier, _Mapping]]] = ...) -> None: ...

class Tier(_message.Message):
    __slots__ = ("min_counter_value", "ratio_bps")
    MIN_COUNTER_VALUE_FIELD_NUMBER: _ClassVar[int]
    RATIO_BPS_FIELD_NUMBER: _ClassVar[int]
    min_counter_value: int
    ratio_bps: int
    def __init__(self, min_counter_value: _Optional[int] = ..., ratio_bps: _Optional[int] = ...) -> None: ...

class ReleasePolicy(_message.Message):
    __slots__ = ("steps",)
    STEPS_FIELD_NUMBER: _ClassVar[int]
    steps: _containers.RepeatedCompositeFieldContainer[ReleaseStep]
    def __init__(self, steps: _Optional[_Iterable[_Union[ReleaseStep, _Mapping]]] = ...) -> None: ...

class ReleaseStep(_message.Message):
    __slots__ = ("event_name", "fraction_bps")
    EVENT_NAME_FIELD_NUMBER: _ClassVar[int]
    FRACTION_BPS_FIELD_NUMBER: _ClassVar[int]
    event_name: str
    fraction_bps: int
    def __init__(self, event_name: _Optional[str] = ..., fraction_bps: _Optional[int] = ...) -> None: ...

class Subsidy(_message.Message):
    __slots__ = ("label", "source_account_ref", "basis", "fixed_minor", "ratio_bps", "cap_minor", "target", "receiver", "release")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ACCOUNT_REF_FIELD_NUMBER: _ClassVar[int]
    BASIS_FIELD_NUMBER: _ClassVar[int]
    FIXED_MINOR_FIELD_NUMBER: _ClassVar[int]
    RATIO_BPS_FIELD_NUMBER: _ClassVar[int]
    CAP_MINOR_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    label: str
    source_account_ref: str
    basis: SubsidyBasis
    fixed_minor: int
    ratio_bps: int
    cap_minor: int
    target: SubsidyTarget
    receiver: Receiver
    release: ReleasePolicy
    def __init__(self, label: _Optional[str] = ..., source_account_ref: _Optional[str] = ..., basis: _Optional[_Union[SubsidyBasis, str]] = ..., fixed_minor: _Optional[int] = ..., ratio_bps: _Optional[int] = ..., cap_minor: _Optional[int] = ..., target: _Optional[_Union[SubsidyTarget, str]] = ..., receiver: _Optional[_Union[Receiver, _Mapping]] = ..., release: _Optional[_Union[ReleasePolicy, _Mapping]] = ...) -> None: ...
