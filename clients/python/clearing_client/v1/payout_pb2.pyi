import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BankAccountType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BANK_ACCOUNT_TYPE_UNSPECIFIED: _ClassVar[BankAccountType]
    BANK_ACCOUNT_TYPE_CORPORATE: _ClassVar[BankAccountType]
    BANK_ACCOUNT_TYPE_PERSONAL: _ClassVar[BankAccountType]

class BankAccountStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BANK_ACCOUNT_STATUS_UNSPECIFIED: _ClassVar[BankAccountStatus]
    BANK_ACCOUNT_STATUS_ACTIVE: _ClassVar[BankAccountStatus]
    BANK_ACCOUNT_STATUS_REPLACED: _ClassVar[BankAccountStatus]

class PayoutCycle(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYOUT_CYCLE_UNSPECIFIED: _ClassVar[PayoutCycle]
    PAYOUT_CYCLE_D0: _ClassVar[PayoutCycle]
    PAYOUT_CYCLE_T_PLUS_1: _ClassVar[PayoutCycle]
    PAYOUT_CYCLE_WEEKLY: _ClassVar[PayoutCycle]
    PAYOUT_CYCLE_MONTHLY: _ClassVar[PayoutCycle]
    PAYOUT_CYCLE_MANUAL: _ClassVar[PayoutCycle]

class PayoutOrigin(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYOUT_ORIGIN_UNSPECIFIED: _ClassVar[PayoutOrigin]
    PAYOUT_ORIGIN_REQUEST: _ClassVar[PayoutOrigin]
    PAYOUT_ORIGIN_SCHEDULE: _ClassVar[PayoutOrigin]

class PayoutState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYOUT_STATE_UNSPECIFIED: _ClassVar[PayoutState]
    PAYOUT_STATE_REQUESTED: _ClassVar[PayoutState]
    PAYOUT_STATE_PENDING_REVIEW: _ClassVar[PayoutState]
    PAYOUT_STATE_QUEUED: _ClassVar[PayoutState]
    PAYOUT_STATE_SUBMITTED: _ClassVar[PayoutState]
    PAYOUT_STATE_SUCCEEDED: _ClassVar[PayoutState]
    PAYOUT_STATE_FAILED: _ClassVar[PayoutState]
    PAYOUT_STATE_MANUAL_REVIEW: _ClassVar[PayoutState]

class BankTransferState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BANK_TRANSFER_STATE_UNSPECIFIED: _ClassVar[BankTransferState]
    BANK_TRANSFER_STATE_QUEUED: _ClassVar[BankTransferState]
    BANK_TRANSFER_STATE_SUBMITTED: _ClassVar[BankTransferState]
    BANK_TRANSFER_STATE_UNKNOWN: _ClassVar[BankTransferState]
    BANK_TRANSFER_STATE_SUCCEEDED: _ClassVar[BankTransferState]
    BANK_TRANSFER_STATE_FAILED: _ClassVar[BankTransferState]
BANK_ACCOUNT_TYPE_UNSPECIFIED: BankAccountType
BANK_ACCOUNT_TYPE_CORPORATE: BankAccountType
BANK_ACCOUNT_TYPE_PERSONAL: BankAccountType
BANK_ACCOUNT_STATUS_UNSPECIFIED: BankAccountStatus
BANK_ACCOUNT_STATUS_ACTIVE: BankAccountStatus
BANK_ACCOUNT_STATUS_REPLACED: BankAccountStatus
PAYOUT_CYCLE_UNSPECIFIED: PayoutCycle
PAYOUT_CYCLE_D0: PayoutCycle
PAYOUT_CYCLE_T_PLUS_1: PayoutCycle
PAYOUT_CYCLE_WEEKLY: PayoutCycle
PAYOUT_CYCLE_MONTHLY: PayoutCycle
PAYOUT_CYCLE_MANUAL: PayoutCycle
PAYOUT_ORIGIN_UNSPECIFIED: PayoutOrigin
PAYOUT_ORIGIN_REQUEST: PayoutOrigin
PAYOUT_ORIGIN_SCHEDULE: PayoutOrigin
PAYOUT_STATE_UNSPECIFIED: PayoutState
PAYOUT_STATE_REQUESTED: PayoutState
PAYOUT_STATE_PENDING_REVIEW: PayoutState
PAYOUT_STATE_QUEUED: PayoutState
PAYOUT_STATE_SUBMITTED: PayoutState
PAYOUT_STATE_SUCCEEDED: PayoutState
PAYOUT_STATE_FAILED: PayoutState
PAYOUT_STATE_MANUAL_REVIEW: PayoutState
BANK_TRANSFER_STATE_UNSPECIFIED: BankTransferState
BANK_TRANSFER_STATE_QUEUED: BankTransferState
BANK_TRANSFER_STATE_SUBMITTED: BankTransferState
BANK_TRANSFER_STATE_UNKNOWN: BankTransferState
BANK_TRANSFER_STATE_SUCCEEDED: BankTransferState
BANK_TRANSFER_STATE_FAILED: BankTransferState

class BankAccount(_message.Message):
    __slots__ = ("bank_account_id", "account_id", "bank_code", "bank_name", "branch_code", "masked_account_number", "holder_name", "account_type", "kyc_verified", "status", "create_time", "replace_time")
    BANK_ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    BANK_CODE_FIELD_NUMBER: _ClassVar[int]
    BANK_NAME_FIELD_NUMBER: _ClassVar[int]
    BRANCH_CODE_FIELD_NUMBER: _ClassVar[int]
    MASKED_ACCOUNT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    HOLDER_NAME_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_TYPE_FIELD_NUMBER: _ClassVar[int]
    KYC_VERIFIED_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    REPLACE_TIME_FIELD_NUMBER: _ClassVar[int]
    bank_account_id: int
    account_id: int
    bank_code: str
    bank_name: str
    branch_code: str
    masked_account_number: str
    holder_name: str
    account_type: BankAccountType
    kyc_verified: bool
    status: BankAccountStatus
    create_time: _timestamp_pb2.Timestamp
    replace_time: _timestamp_pb2.Timestamp
    def __init__(self, bank_account_id: _Optional[int] = ..., account_id: _Optional[int] = ..., bank_code: _Optional[str] = ..., bank_name: _Optional[str] = ..., branch_code: _Optional[str] = ..., masked_account_number: _Optional[str] = ..., holder_name: _Optional[str] = ..., account_type: _Optional[_Union[BankAccountType, str]] = ..., kyc_verified: _Optional[bool] = ..., status: _Optional[_Union[BankAccountStatus, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., replace_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PayoutSchedule(_message.Message):
    __slots__ = ("account_id", "cycle", "weekday", "month_day", "min_amount_minor", "currency_code", "time_zone", "next_run_time", "update_time")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CYCLE_FIELD_NUMBER: _ClassVar[int]
    WEEKDAY_FIELD_NUMBER: _ClassVar[int]
    MONTH_DAY_FIELD_NUMBER: _ClassVar[int]
    MIN_AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    NEXT_RUN_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    account_id: int
    cycle: PayoutCycle
    weekday: int
    month_day: int
    min_amount_minor: int
    currency_code: str
    time_zone: str
    next_run_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, account_id: _Optional[int] = ..., cycle: _Optional[_Union[PayoutCycle, str]] = ..., weekday: _Optional[int] = ..., month_day: _Optional[int] = ..., min_amount_minor: _Optional[int] = ..., currency_code: _Optional[str] = ..., time_zone: _Optional[str] = ..., next_run_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Payout(_message.Message):
    __slots__ = ("payout_id", "request_id", "account_id", "external_ref", "bank_account_id", "masked_account_number", "currency_code", "amount_minor", "fee_minor", "net_amount_minor", "paid_minor", "state", "origin", "transfers", "review_required", "requested_by", "reviewed_by", "review_reason", "failure_reason", "failure_message", "hold_transfer_id", "fee_account_id", "memo", "create_time", "update_time", "review_time", "finish_time", "waiting_reason")
    PAYOUT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_REF_FIELD_NUMBER: _ClassVar[int]
    BANK_ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    MASKED_ACCOUNT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    FEE_MINOR_FIELD_NUMBER: _ClassVar[int]
    NET_AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    PAID_MINOR_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    TRANSFERS_FIELD_NUMBER: _ClassVar[int]
    REVIEW_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_BY_FIELD_NUMBER: _ClassVar[int]
    REVIEWED_BY_FIELD_NUMBER: _ClassVar[int]
    REVIEW_REASON_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    FAILURE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    HOLD_TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    FEE_ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    MEMO_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    REVIEW_TIME_FIELD_NUMBER: _ClassVar[int]
    FINISH_TIME_FIELD_NUMBER: _ClassVar[int]
    WAITING_REASON_FIELD_NUMBER: _ClassVar[int]
    payout_id: int
    request_id: str
    account_id: int
    external_ref: str
    bank_account_id: int
    masked_account_number: str
    currency_code: str
    amount_minor: int
    fee_minor: int
    net_amount_minor: int
    paid_minor: int
    state: PayoutState
    origin: PayoutOrigin
    transfers: _containers.RepeatedCompositeFieldContainer[BankTransfer]
    review_required: bool
    requested_by: str
    reviewed_by: str
    review_reason: str
    failure_reason: str
    failure_message: str
    hold_transfer_id: int
    fee_account_id: int
    memo: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    review_time: _timestamp_pb2.Timestamp
    finish_time: _timestamp_pb2.Timestamp
    waiting_reason: str
    def __init__(self, payout_id: _Optional[int] = ..., request_id: _Optional[str] = ..., account_id: _Optional[int] = ..., external_ref: _Optional[str] = ..., bank_account_id: _Optional[int] = ..., masked_account_number: _Optional[str] = ..., currency_code: _Optional[str] = ..., amount_minor: _Optional[int] = ..., fee_minor: _Optional[int] = ..., net_amount_minor: _Optional[int] = ..., paid_minor: _Optional[int] = ..., state: _Optional[_Union[PayoutState, str]] = ..., origin: _Optional[_Union[PayoutOrigin, str]] = ..., transfers: _Optional[_Iterable[_Union[BankTransfer, _Mapping]]] = ..., review_required: _Optional[bool] = ..., requested_by: _Optional[str] = ..., reviewed_by: _Optional[str] = ..., review_reason: _Optional[str] = ..., failure_reason: _Optional[str] = ..., failure_message: _Optional[str] = ..., hold_transfer_id: _Optional[int] = ..., fee_account_id: _Optional[int] = ..., memo: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., review_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., waiting_reason: _Optional[str] = ...) -> None: ...

class BankTransfer(_message.Message):
    __slots__ = ("bank_transfer_id", "sequence", "amount_minor", "currency_code", "idempotency_key", "state", "attempt_count", "attempts", "next_attempt_time", "create_time", "finish_time")
    BANK_TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_COUNT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    FINISH_TIME_FIELD_NUMBER: _ClassVar[int]
    bank_transfer_id: int
    sequence: int
    amount_minor: int
    currency_code: str
    idempotency_key: str
    state: BankTransferState
    attempt_count: int
    attempts: _containers.RepeatedCompositeFieldContainer[BankTransferAttempt]
    next_attempt_time: _timestamp_pb2.Timestamp
    create_time: _timestamp_pb2.Timestamp
    finish_time: _timestamp_pb2.Timestamp
    def __init__(self, bank_transfer_id: _Optional[int] = ..., sequence: _Optional[int] = ..., amount_minor: _Optional[int] = ..., currency_code: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., state: _Optional[_Union[BankTransferState, str]] = ..., attempt_count: _Optional[int] = ..., attempts: _Optional[_Iterable[_Union[BankTransferAttempt, _Mapping]]] = ..., next_attempt_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class BankTransferAttempt(_message.Message):
    __slots__ = ("attempt_number", "idempotency_key", "state", "bank_reference", "failure_code", "failure_message", "submit_time", "finish_time")
    ATTEMPT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    BANK_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_CODE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SUBMIT_TIME_FIELD_NUMBER: _ClassVar[int]
    FINISH_TIME_FIELD_NUMBER: _ClassVar[int]
    attempt_number: int
    idempotency_key: str
    state: BankTransferState
    bank_reference: str
    failure_code: str
    failure_message: str
    submit_time: _timestamp_pb2.Timestamp
    finish_time: _timestamp_pb2.Timestamp
    def __init__(self, attempt_number: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., state: _Optional[_Union[BankTransferState, str]] = ..., bank_reference: _Optional[str] = ..., failure_code: _Optional[str] = ..., failure_message: _Optional[str] = ..., submit_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class BindBankAccountRequest(_message.Message):
    __slots__ = ("request_id", "account_id", "bank_code", "bank_name", "branch_code", "account_number", "holder_name", "account_type", "kyc_verified")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    BANK_CODE_FIELD_NUMBER: _ClassVar[int]
    BANK_NAME_FIELD_NUMBER: _ClassVar[int]
    BRANCH_CODE_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    HOLDER_NAME_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_TYPE_FIELD_NUMBER: _ClassVar[int]
    KYC_VERIFIED_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    account_id: int
    bank_code: str
    bank_name: str
    branch_code: str
    account_number: str
    holder_name: str
    account_type: BankAccountType
    kyc_verified: bool
    def __init__(self, request_id: _Optional[str] = ..., account_id: _Optional[int] = ..., bank_code: _Optional[str] = ..., bank_name: _Optional[str] = ..., branch_code: _Optional[str] = ..., account_number: _Optional[str] = ..., holder_name: _Optional[str] = ..., account_type: _Optional[_Union[BankAccountType, str]] = ..., kyc_verified: _Optional[bool] = ...) -> None: ...

class BindBankAccountResponse(_message.Message):
    __slots__ = ("bank_account",)
    BANK_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    bank_account: BankAccount
    def __init__(self, bank_account: _Optional[_Union[BankAccount, _Mapping]] = ...) -> None: ...

class SetPayoutScheduleRequest(_message.Message):
    __slots__ = ("request_id", "schedule")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    schedule: PayoutSchedule
    def __init__(self, request_id: _Optional[str] = ..., schedule: _Optional[_Union[PayoutSchedule, _Mapping]] = ...) -> None: ...

class SetPayoutScheduleResponse(_message.Message):
    __slots__ = ("schedule",)
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    schedule: PayoutSchedule
    def __init__(self, schedule: _Optional[_Union[PayoutSchedule, _Mapping]] = ...) -> None: ...

class RequestPayoutRequest(_message.Message):
    __slots__ = ("request_id", "account_id", "amount_minor", "currency_code", "memo")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    MEMO_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    account_id: int
    amount_minor: int
    currency_code: str
    memo: str
    def __init__(self, request_id: _Optional[str] = ..., account_id: _Optional[int] = ..., amount_minor: _Optional[int] = ..., currency_code: _Optional[str] = ..., memo: _Optional[str] = ...) -> None: ...

class RequestPayoutResponse(_message.Message):
    __slots__ = ("payout",)
    PAYOUT_FIELD_NUMBER: _ClassVar[int]
    payout: Payout
    def __init__(self, payout: _Optional[_Union[Payout, _Mapping]] = ...) -> None: ...

class GetPayoutRequest(_message.Message):
    __slots__ = ("payout_id",)
    PAYOUT_ID_FIELD_NUMBER: _ClassVar[int]
    payout_id: int
    def __init__(self, payout_id: _Optional[int] = ...) -> None: ...

class GetPayoutResponse(_message.Message):
    __slots__ = ("payout",)
    PAYOUT_FIELD_NUMBER: _ClassVar[int]
    payout: Payout
    def __init__(self, payout: _Optional[_Union[Payout, _Mapping]] = ...) -> None: ...

class ListPayoutsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "account_id", "states", "start_time", "end_time")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    account_id: int
    states: _containers.RepeatedScalarFieldContainer[PayoutState]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., account_id: _Optional[int] = ..., states: _Optional[_Iterable[_Union[PayoutState, str]]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListPayoutsResponse(_message.Message):
    __slots__ = ("payouts", "next_page_token")
    PAYOUTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    payouts: _containers.RepeatedCompositeFieldContainer[Payout]
    next_page_token: str
    def __init__(self, payouts: _Optional[_Iterable[_Union[Payout, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ApprovePayoutRequest(_message.Message):
    __slots__ = ("request_id", "payout_id", "reason")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PAYOUT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    payout_id: int
    reason: str
    def __init__(self, request_id: _Optional[str] = ..., payout_id: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class ApprovePayoutResponse(_message.Message):
    __slots__ = ("payout",)
    PAYOUT_FIELD_NUMBER: _ClassVar[int]
    payout: Payout
    def __init__(self, payout: _Optional[_Union[Payout, _Mapping]] = ...) -> None: ...

class RejectPayoutRequest(_message.Message):
    __slots__ = ("request_id", "payout_id", "reason")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PAYOUT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    payout_id: int
    reason: str
    def __init__(self, request_id: _Optional[str] = ..., payout_id: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class RejectPayoutResponse(_message.Message):
    __slots__ = ("payout",)
    PAYOUT_FIELD_NUMBER: _ClassVar[int]
    payout: Payout
    def __init__(self, payout: _Optional[_Union[Payout, _Mapping]] = ...) -> None: ...
