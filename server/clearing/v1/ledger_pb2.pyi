import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AccountKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACCOUNT_KIND_UNSPECIFIED: _ClassVar[AccountKind]
    ACCOUNT_KIND_CUSTODIAL: _ClassVar[AccountKind]
    ACCOUNT_KIND_PLATFORM: _ClassVar[AccountKind]
    ACCOUNT_KIND_MERCHANT: _ClassVar[AccountKind]
    ACCOUNT_KIND_ORDINARY: _ClassVar[AccountKind]
    ACCOUNT_KIND_FEE: _ClassVar[AccountKind]
    ACCOUNT_KIND_MARKETING: _ClassVar[AccountKind]
    ACCOUNT_KIND_FUNCTIONAL: _ClassVar[AccountKind]
    ACCOUNT_KIND_CHANNEL_CLEARING: _ClassVar[AccountKind]
    ACCOUNT_KIND_SUSPENSE: _ClassVar[AccountKind]

class OwnerType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OWNER_TYPE_UNSPECIFIED: _ClassVar[OwnerType]
    OWNER_TYPE_ENTERPRISE: _ClassVar[OwnerType]
    OWNER_TYPE_INDIVIDUAL: _ClassVar[OwnerType]

class AccountStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACCOUNT_STATUS_UNSPECIFIED: _ClassVar[AccountStatus]
    ACCOUNT_STATUS_ACTIVE: _ClassVar[AccountStatus]
    ACCOUNT_STATUS_FROZEN: _ClassVar[AccountStatus]
    ACCOUNT_STATUS_CLOSED: _ClassVar[AccountStatus]

class TransferMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRANSFER_MODE_UNSPECIFIED: _ClassVar[TransferMode]
    TRANSFER_MODE_IMMEDIATE: _ClassVar[TransferMode]
    TRANSFER_MODE_PENDING: _ClassVar[TransferMode]
    TRANSFER_MODE_POST_PENDING: _ClassVar[TransferMode]
    TRANSFER_MODE_VOID_PENDING: _ClassVar[TransferMode]

class PendingState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PENDING_STATE_UNSPECIFIED: _ClassVar[PendingState]
    PENDING_STATE_OPEN: _ClassVar[PendingState]
    PENDING_STATE_POSTED: _ClassVar[PendingState]
    PENDING_STATE_VOIDED: _ClassVar[PendingState]

class EntrySide(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENTRY_SIDE_UNSPECIFIED: _ClassVar[EntrySide]
    ENTRY_SIDE_DEBIT: _ClassVar[EntrySide]
    ENTRY_SIDE_CREDIT: _ClassVar[EntrySide]
ACCOUNT_KIND_UNSPECIFIED: AccountKind
ACCOUNT_KIND_CUSTODIAL: AccountKind
ACCOUNT_KIND_PLATFORM: AccountKind
ACCOUNT_KIND_MERCHANT: AccountKind
ACCOUNT_KIND_ORDINARY: AccountKind
ACCOUNT_KIND_FEE: AccountKind
ACCOUNT_KIND_MARKETING: AccountKind
ACCOUNT_KIND_FUNCTIONAL: AccountKind
ACCOUNT_KIND_CHANNEL_CLEARING: AccountKind
ACCOUNT_KIND_SUSPENSE: AccountKind
OWNER_TYPE_UNSPECIFIED: OwnerType
OWNER_TYPE_ENTERPRISE: OwnerType
OWNER_TYPE_INDIVIDUAL: OwnerType
ACCOUNT_STATUS_UNSPECIFIED: AccountStatus
ACCOUNT_STATUS_ACTIVE: AccountStatus
ACCOUNT_STATUS_FROZEN: AccountStatus
ACCOUNT_STATUS_CLOSED: AccountStatus
TRANSFER_MODE_UNSPECIFIED: TransferMode
TRANSFER_MODE_IMMEDIATE: TransferMode
TRANSFER_MODE_PENDING: TransferMode
TRANSFER_MODE_POST_PENDING: TransferMode
TRANSFER_MODE_VOID_PENDING: TransferMode
PENDING_STATE_UNSPECIFIED: PendingState
PENDING_STATE_OPEN: PendingState
PENDING_STATE_POSTED: PendingState
PENDING_STATE_VOIDED: PendingState
ENTRY_SIDE_UNSPECIFIED: EntrySide
ENTRY_SIDE_DEBIT: EntrySide
ENTRY_SIDE_CREDIT: EntrySide

class Account(_message.Message):
    __slots__ = ("account_id", "external_ref", "kind", "owner_type", "currency_code", "status", "allow_negative", "display_name", "balance", "create_time")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_REF_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    OWNER_TYPE_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_NEGATIVE_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    account_id: int
    external_ref: str
    kind: AccountKind
    owner_type: OwnerType
    currency_code: str
    status: AccountStatus
    allow_negative: bool
    display_name: str
    balance: Balance
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, account_id: _Optional[int] = ..., external_ref: _Optional[str] = ..., kind: _Optional[_Union[AccountKind, str]] = ..., owner_type: _Optional[_Union[OwnerType, str]] = ..., currency_code: _Optional[str] = ..., status: _Optional[_Union[AccountStatus, str]] = ..., allow_negative: _Optional[bool] = ..., display_name: _Optional[str] = ..., balance: _Optional[_Union[Balance, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Balance(_message.Message):
    __slots__ = ("account_id", "currency_code", "posted_minor", "available_minor", "pending_credit_minor", "pending_debit_minor", "frozen_minor", "debits_posted_minor", "credits_posted_minor")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    POSTED_MINOR_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_MINOR_FIELD_NUMBER: _ClassVar[int]
    PENDING_CREDIT_MINOR_FIELD_NUMBER: _ClassVar[int]
    PENDING_DEBIT_MINOR_FIELD_NUMBER: _ClassVar[int]
    FROZEN_MINOR_FIELD_NUMBER: _ClassVar[int]
    DEBITS_POSTED_MINOR_FIELD_NUMBER: _ClassVar[int]
    CREDITS_POSTED_MINOR_FIELD_NUMBER: _ClassVar[int]
    account_id: int
    currency_code: str
    posted_minor: int
    available_minor: int
    pending_credit_minor: int
    pending_debit_minor: int
    frozen_minor: int
    debits_posted_minor: int
    credits_posted_minor: int
    def __init__(self, account_id: _Optional[int] = ..., currency_code: _Optional[str] = ..., posted_minor: _Optional[int] = ..., available_minor: _Optional[int] = ..., pending_credit_minor: _Optional[int] = ..., pending_debit_minor: _Optional[int] = ..., frozen_minor: _Optional[int] = ..., debits_posted_minor: _Optional[int] = ..., credits_posted_minor: _Optional[int] = ...) -> None: ...

class Transfer(_message.Message):
    __slots__ = ("transfer_id", "request_id", "debit_account_id", "credit_account_id", "amount_minor", "currency_code", "mode", "pending_transfer_id", "pending_state", "pending_remaining_minor", "memo", "create_time")
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DEBIT_ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CREDIT_ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PENDING_TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    PENDING_STATE_FIELD_NUMBER: _ClassVar[int]
    PENDING_REMAINING_MINOR_FIELD_NUMBER: _ClassVar[int]
    MEMO_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    transfer_id: int
    request_id: str
    debit_account_id: int
    credit_account_id: int
    amount_minor: int
    currency_code: str
    mode: TransferMode
    pending_transfer_id: int
    pending_state: PendingState
    pending_remaining_minor: int
    memo: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, transfer_id: _Optional[int] = ..., request_id: _Optional[str] = ..., debit_account_id: _Optional[int] = ..., credit_account_id: _Optional[int] = ..., amount_minor: _Optional[int] = ..., currency_code: _Optional[str] = ..., mode: _Optional[_Union[TransferMode, str]] = ..., pending_transfer_id: _Optional[int] = ..., pending_state: _Optional[_Union[PendingState, str]] = ..., pending_remaining_minor: _Optional[int] = ..., memo: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Entry(_message.Message):
    __slots__ = ("transfer_id", "account_id", "side", "counterparty_account_id", "amount_minor", "currency_code", "mode", "pending_transfer_id", "memo", "create_time")
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    COUNTERPARTY_ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PENDING_TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    MEMO_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    transfer_id: int
    account_id: int
    side: EntrySide
    counterparty_account_id: int
    amount_minor: int
    currency_code: str
    mode: TransferMode
    pending_transfer_id: int
    memo: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, transfer_id: _Optional[int] = ..., account_id: _Optional[int] = ..., side: _Optional[_Union[EntrySide, str]] = ..., counterparty_account_id: _Optional[int] = ..., amount_minor: _Optional[int] = ..., currency_code: _Optional[str] = ..., mode: _Optional[_Union[TransferMode, str]] = ..., pending_transfer_id: _Optional[int] = ..., memo: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateAccountRequest(_message.Message):
    __slots__ = ("request_id", "external_ref", "kind", "owner_type", "currency_code", "allow_negative", "display_name")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_REF_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    OWNER_TYPE_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    ALLOW_NEGATIVE_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    external_ref: str
    kind: AccountKind
    owner_type: OwnerType
    currency_code: str
    allow_negative: bool
    display_name: str
    def __init__(self, request_id: _Optional[str] = ..., external_ref: _Optional[str] = ..., kind: _Optional[_Union[AccountKind, str]] = ..., owner_type: _Optional[_Union[OwnerType, str]] = ..., currency_code: _Optional[str] = ..., allow_negative: _Optional[bool] = ..., display_name: _Optional[str] = ...) -> None: ...

class CreateAccountResponse(_message.Message):
    __slots__ = ("account",)
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    account: Account
    def __init__(self, account: _Optional[_Union[Account, _Mapping]] = ...) -> None: ...

class GetAccountRequest(_message.Message):
    __slots__ = ("account_id", "external_ref")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_REF_FIELD_NUMBER: _ClassVar[int]
    account_id: int
    external_ref: str
    def __init__(self, account_id: _Optional[int] = ..., external_ref: _Optional[str] = ...) -> None: ...

class GetAccountResponse(_message.Message):
    __slots__ = ("account",)
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    account: Account
    def __init__(self, account: _Optional[_Union[Account, _Mapping]] = ...) -> None: ...

class ListAccountsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "kind", "status")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    kind: AccountKind
    status: AccountStatus
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., kind: _Optional[_Union[AccountKind, str]] = ..., status: _Optional[_Union[AccountStatus, str]] = ...) -> None: ...

class ListAccountsResponse(_message.Message):
    __slots__ = ("accounts", "next_page_token")
    ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    accounts: _containers.RepeatedCompositeFieldContainer[Account]
    next_page_token: str
    def __init__(self, accounts: _Optional[_Iterable[_Union[Account, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class FreezeAccountRequest(_message.Message):
    __slots__ = ("request_id", "account_id", "amount_minor", "reason")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    account_id: int
    amount_minor: int
    reason: str
    def __init__(self, request_id: _Optional[str] = ..., account_id: _Optional[int] = ..., amount_minor: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class FreezeAccountResponse(_message.Message):
    __slots__ = ("account",)
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    account: Account
    def __init__(self, account: _Optional[_Union[Account, _Mapping]] = ...) -> None: ...

class UnfreezeAccountRequest(_message.Message):
    __slots__ = ("request_id", "account_id", "amount_minor", "reason")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    account_id: int
    amount_minor: int
    reason: str
    def __init__(self, request_id: _Optional[str] = ..., account_id: _Optional[int] = ..., amount_minor: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class UnfreezeAccountResponse(_message.Message):
    __slots__ = ("account",)
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    account: Account
    def __init__(self, account: _Optional[_Union[Account, _Mapping]] = ...) -> None: ...

class CloseAccountRequest(_message.Message):
    __slots__ = ("request_id", "account_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    account_id: int
    def __init__(self, request_id: _Optional[str] = ..., account_id: _Optional[int] = ...) -> None: ...

class CloseAccountResponse(_message.Message):
    __slots__ = ("account",)
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    account: Account
    def __init__(self, account: _Optional[_Union[Account, _Mapping]] = ...) -> None: ...

class GetBalanceRequest(_message.Message):
    __slots__ = ("account_id",)
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: int
    def __init__(self, account_id: _Optional[int] = ...) -> None: ...

class GetBalanceResponse(_message.Message):
    __slots__ = ("balance",)
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    balance: Balance
    def __init__(self, balance: _Optional[_Union[Balance, _Mapping]] = ...) -> None: ...

class ListEntriesRequest(_message.Message):
    __slots__ = ("account_id", "page_size", "page_token")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    account_id: int
    page_size: int
    page_token: str
    def __init__(self, account_id: _Optional[int] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListEntriesResponse(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[Entry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[Entry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class TransferRequest(_message.Message):
    __slots__ = ("request_id", "debit_account_id", "credit_account_id", "amount_minor", "currency_code", "mode", "pending_transfer_id", "memo")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DEBIT_ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CREDIT_ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PENDING_TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    MEMO_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    debit_account_id: int
    credit_account_id: int
    amount_minor: int
    currency_code: str
    mode: TransferMode
    pending_transfer_id: int
    memo: str
    def __init__(self, request_id: _Optional[str] = ..., debit_account_id: _Optional[int] = ..., credit_account_id: _Optional[int] = ..., amount_minor: _Optional[int] = ..., currency_code: _Optional[str] = ..., mode: _Optional[_Union[TransferMode, str]] = ..., pending_transfer_id: _Optional[int] = ..., memo: _Optional[str] = ...) -> None: ...

class TransferResponse(_message.Message):
    __slots__ = ("transfer",)
    TRANSFER_FIELD_NUMBER: _ClassVar[int]
    transfer: Transfer
    def __init__(self, transfer: _Optional[_Union[Transfer, _Mapping]] = ...) -> None: ...

class VerifyLedgerRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CurrencyTotals(_message.Message):
    __slots__ = ("currency_code", "debits_posted_minor", "credits_posted_minor", "debits_pending_minor", "credits_pending_minor", "balanced")
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    DEBITS_POSTED_MINOR_FIELD_NUMBER: _ClassVar[int]
    CREDITS_POSTED_MINOR_FIELD_NUMBER: _ClassVar[int]
    DEBITS_PENDING_MINOR_FIELD_NUMBER: _ClassVar[int]
    CREDITS_PENDING_MINOR_FIELD_NUMBER: _ClassVar[int]
    BALANCED_FIELD_NUMBER: _ClassVar[int]
    currency_code: str
    debits_posted_minor: int
    credits_posted_minor: int
    debits_pending_minor: int
    credits_pending_minor: int
    balanced: bool
    def __init__(self, currency_code: _Optional[str] = ..., debits_posted_minor: _Optional[int] = ..., credits_posted_minor: _Optional[int] = ..., debits_pending_minor: _Optional[int] = ..., credits_pending_minor: _Optional[int] = ..., balanced: _Optional[bool] = ...) -> None: ...

class VerifyLedgerResponse(_message.Message):
    __slots__ = ("ok", "totals", "account_count", "mismatched_account_ids", "chain_ok", "batch_count", "transfer_count", "first_bad_batch_seq", "audit_chain_ok", "audit_event_count", "first_bad_audit_seq")
    OK_FIELD_NUMBER: _ClassVar[int]
    TOTALS_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_COUNT_FIELD_NUMBER: _ClassVar[int]
    MISMATCHED_ACCOUNT_IDS_FIELD_NUMBER: _ClassVar[int]
    CHAIN_OK_FIELD_NUMBER: _ClassVar[int]
    BATCH_COUNT_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_COUNT_FIELD_NUMBER: _ClassVar[int]
    FIRST_BAD_BATCH_SEQ_FIELD_NUMBER: _ClassVar[int]
    AUDIT_CHAIN_OK_FIELD_NUMBER: _ClassVar[int]
    AUDIT_EVENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    FIRST_BAD_AUDIT_SEQ_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    totals: _containers.RepeatedCompositeFieldContainer[CurrencyTotals]
    account_count: int
    mismatched_account_ids: _containers.RepeatedScalarFieldContainer[int]
    chain_ok: bool
    batch_count: int
    transfer_count: int
    first_bad_batch_seq: int
    audit_chain_ok: bool
    audit_event_count: int
    first_bad_audit_seq: int
    def __init__(self, ok: _Optional[bool] = ..., totals: _Optional[_Iterable[_Union[CurrencyTotals, _Mapping]]] = ..., account_count: _Optional[int] = ..., mismatched_account_ids: _Optional[_Iterable[int]] = ..., chain_ok: _Optional[bool] = ..., batch_count: _Optional[int] = ..., transfer_count: _Optional[int] = ..., first_bad_batch_seq: _Optional[int] = ..., audit_chain_ok: _Optional[bool] = ..., audit_event_count: _Optional[int] = ..., first_bad_audit_seq: _Optional[int] = ...) -> None: ...
