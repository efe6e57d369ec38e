import datetime

from clearing.v1 import split_pb2 as _split_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StatementFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATEMENT_FORMAT_UNSPECIFIED: _ClassVar[StatementFormat]
    STATEMENT_FORMAT_CANONICAL: _ClassVar[StatementFormat]
    STATEMENT_FORMAT_WECHAT: _ClassVar[StatementFormat]
    STATEMENT_FORMAT_BANK_PAYOUTS: _ClassVar[StatementFormat]

class StatementLineType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATEMENT_LINE_TYPE_UNSPECIFIED: _ClassVar[StatementLineType]
    STATEMENT_LINE_TYPE_PAYMENT: _ClassVar[StatementLineType]
    STATEMENT_LINE_TYPE_REFUND: _ClassVar[StatementLineType]
    STATEMENT_LINE_TYPE_PAYOUT: _ClassVar[StatementLineType]

class ReconciliationClass(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RECONCILIATION_CLASS_UNSPECIFIED: _ClassVar[ReconciliationClass]
    RECONCILIATION_CLASS_MATCHED: _ClassVar[ReconciliationClass]
    RECONCILIATION_CLASS_MISSING_SPLIT: _ClassVar[ReconciliationClass]
    RECONCILIATION_CLASS_MISSING_IN_STATEMENT: _ClassVar[ReconciliationClass]
    RECONCILIATION_CLASS_AMOUNT_MISMATCH: _ClassVar[ReconciliationClass]
    RECONCILIATION_CLASS_FEE_MISMATCH: _ClassVar[ReconciliationClass]
    RECONCILIATION_CLASS_CURRENCY_MISMATCH: _ClassVar[ReconciliationClass]
    RECONCILIATION_CLASS_DUPLICATE: _ClassVar[ReconciliationClass]
    RECONCILIATION_CLASS_SPLIT_LEDGER_MISMATCH: _ClassVar[ReconciliationClass]
    RECONCILIATION_CLASS_PAYOUT_BANK_MISMATCH: _ClassVar[ReconciliationClass]
    RECONCILIATION_CLASS_MISSING_IN_BANK_FILE: _ClassVar[ReconciliationClass]
    RECONCILIATION_CLASS_UNKNOWN_BANK_TRANSFER: _ClassVar[ReconciliationClass]
    RECONCILIATION_CLASS_STATUS_MISMATCH: _ClassVar[ReconciliationClass]

class DiscrepancyState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DISCREPANCY_STATE_UNSPECIFIED: _ClassVar[DiscrepancyState]
    DISCREPANCY_STATE_OPEN: _ClassVar[DiscrepancyState]
    DISCREPANCY_STATE_RESOLVED: _ClassVar[DiscrepancyState]
    DISCREPANCY_STATE_RESOLUTION_PROPOSED: _ClassVar[DiscrepancyState]

class ResolutionAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESOLUTION_ACTION_UNSPECIFIED: _ClassVar[ResolutionAction]
    RESOLUTION_ACTION_SPLIT_NOW: _ClassVar[ResolutionAction]
    RESOLUTION_ACTION_REFUND: _ClassVar[ResolutionAction]
    RESOLUTION_ACTION_WRITE_OFF: _ClassVar[ResolutionAction]
    RESOLUTION_ACTION_ACCEPT: _ClassVar[ResolutionAction]

class ResolutionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESOLUTION_STATE_UNSPECIFIED: _ClassVar[ResolutionState]
    RESOLUTION_STATE_PROPOSED: _ClassVar[ResolutionState]
    RESOLUTION_STATE_APPROVED: _ClassVar[ResolutionState]
    RESOLUTION_STATE_REJECTED: _ClassVar[ResolutionState]

class ResolutionStep(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESOLUTION_STEP_UNSPECIFIED: _ClassVar[ResolutionStep]
    RESOLUTION_STEP_PROPOSED: _ClassVar[ResolutionStep]
    RESOLUTION_STEP_APPROVED: _ClassVar[ResolutionStep]
    RESOLUTION_STEP_REJECTED: _ClassVar[ResolutionStep]
    RESOLUTION_STEP_POSTING_REFUSED: _ClassVar[ResolutionStep]
STATEMENT_FORMAT_UNSPECIFIED: StatementFormat
STATEMENT_FORMAT_CANONICAL: StatementFormat
STATEMENT_FORMAT_WECHAT: StatementFormat
STATEMENT_FORMAT_BANK_PAYOUTS: StatementFormat
STATEMENT_LINE_TYPE_UNSPECIFIED: StatementLineType
STATEMENT_LINE_TYPE_PAYMENT: StatementLineType
STATEMENT_LINE_TYPE_REFUND: StatementLineType
STATEMENT_LINE_TYPE_PAYOUT: StatementLineType
RECONCILIATION_CLASS_UNSPECIFIED: ReconciliationClass
RECONCILIATION_CLASS_MATCHED: ReconciliationClass
RECONCILIATION_CLASS_MISSING_SPLIT: ReconciliationClass
RECONCILIATION_CLASS_MISSING_IN_STATEMENT: ReconciliationClass
RECONCILIATION_CLASS_AMOUNT_MISMATCH: ReconciliationClass
RECONCILIATION_CLASS_FEE_MISMATCH: ReconciliationClass
RECONCILIATION_CLASS_CURRENCY_MISMATCH: ReconciliationClass
RECONCILIATION_CLASS_DUPLICATE: ReconciliationClass
RECONCILIATION_CLASS_SPLIT_LEDGER_MISMATCH: ReconciliationClass
RECONCILIATION_CLASS_PAYOUT_BANK_MISMATCH: ReconciliationClass
RECONCILIATION_CLASS_MISSING_IN_BANK_FILE: ReconciliationClass
RECONCILIATION_CLASS_UNKNOWN_BANK_TRANSFER: ReconciliationClass
RECONCILIATION_CLASS_STATUS_MISMATCH: ReconciliationClass
DISCREPANCY_STATE_UNSPECIFIED: DiscrepancyState
DISCREPANCY_STATE_OPEN: DiscrepancyState
DISCREPANCY_STATE_RESOLVED: DiscrepancyState
DISCREPANCY_STATE_RESOLUTION_PROPOSED: DiscrepancyState
RESOLUTION_ACTION_UNSPECIFIED: ResolutionAction
RESOLUTION_ACTION_SPLIT_NOW: ResolutionAction
RESOLUTION_ACTION_REFUND: ResolutionAction
RESOLUTION_ACTION_WRITE_OFF: ResolutionAction
RESOLUTION_ACTION_ACCEPT: ResolutionAction
RESOLUTION_STATE_UNSPECIFIED: ResolutionState
RESOLUTION_STATE_PROPOSED: ResolutionState
RESOLUTION_STATE_APPROVED: ResolutionState
RESOLUTION_STATE_REJECTED: ResolutionState
RESOLUTION_STEP_UNSPECIFIED: ResolutionStep
RESOLUTION_STEP_PROPOSED: ResolutionStep
RESOLUTION_STEP_APPROVED: ResolutionStep
RESOLUTION_STEP_REJECTED: ResolutionStep
RESOLUTION_STEP_POSTING_REFUSED: ResolutionStep

class StatementHeader(_message.Message):
    __slots__ = ("request_id", "channel", "settlement_date", "format")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    SETTLEMENT_DATE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    channel: str
    settlement_date: str
    format: StatementFormat
    def __init__(self, request_id: _Optional[str] = ..., channel: _Optional[str] = ..., settlement_date: _Optional[str] = ..., format: _Optional[_Union[StatementFormat, str]] = ...) -> None: ...

class ImportStatementRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: StatementHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[StatementHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class ImportStatementResponse(_message.Message):
    __slots__ = ("run", "replayed")
    RUN_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    run: ReconciliationRun
    replayed: bool
    def __init__(self, run: _Optional[_Union[ReconciliationRun, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class Statement(_message.Message):
    __slots__ = ("statement_id", "channel", "settlement_date", "format", "content_sha256", "size_bytes", "line_count", "currency_code", "settled_minor", "active", "superseded_by_statement_id", "imported_by_key_id", "request_id", "import_time")
    STATEMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    SETTLEMENT_DATE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    LINE_COUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    SETTLED_MINOR_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    SUPERSEDED_BY_STATEMENT_ID_FIELD_NUMBER: _ClassVar[int]
    IMPORTED_BY_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    IMPORT_TIME_FIELD_NUMBER: _ClassVar[int]
    statement_id: int
    channel: str
    settlement_date: str
    format: StatementFormat
    content_sha256: str
    size_bytes: int
    line_count: int
    currency_code: str
    settled_minor: int
    active: bool
    superseded_by_statement_id: int
    imported_by_key_id: int
    request_id: str
    import_time: _timestamp_pb2.Timestamp
    def __init__(self, statement_id: _Optional[int] = ..., channel: _Optional[str] = ..., settlement_date: _Optional[str] = ..., format: _Optional[_Union[StatementFormat, str]] = ..., content_sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., line_count: _Optional[int] = ..., currency_code: _Optional[str] = ..., settled_minor: _Optional[int] = ..., active: _Optional[bool] = ..., superseded_by_statement_id: _Optional[int] = ..., imported_by_key_id: _Optional[int] = ..., request_id: _Optional[str] = ..., import_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ClassTotal(_message.Message):
    __slots__ = ("reconciliation_class", "item_count", "amount_minor", "difference_minor")
    RECONCILIATION_CLASS_FIELD_NUMBER: _ClassVar[int]
    ITEM_COUNT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    DIFFERENCE_MINOR_FIELD_NUMBER: _ClassVar[int]
    reconciliation_class: ReconciliationClass
    item_count: int
    amount_minor: int
    difference_minor: int
    def __init__(self, reconciliation_class: _Optional[_Union[ReconciliationClass, str]] = ..., item_count: _Optional[int] = ..., amount_minor: _Optional[int] = ..., difference_minor: _Optional[int] = ...) -> None: ...

class ReconciliationRun(_message.Message):
    __slots__ = ("run_id", "statement", "time_zone", "class_totals", "statement_settled_minor", "split_settled_minor", "difference_minor", "explained_minor", "discrepancy_count", "create_time", "settlement")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    CLASS_TOTALS_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_SETTLED_MINOR_FIELD_NUMBER: _ClassVar[int]
    SPLIT_SETTLED_MINOR_FIELD_NUMBER: _ClassVar[int]
    DIFFERENCE_MINOR_FIELD_NUMBER: _ClassVar[int]
    EXPLAINED_MINOR_FIELD_NUMBER: _ClassVar[int]
    DISCREPANCY_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    SETTLEMENT_FIELD_NUMBER: _ClassVar[int]
    run_id: int
    statement: Statement
    time_zone: str
    class_totals: _containers.RepeatedCompositeFieldContainer[ClassTotal]
    statement_settled_minor: int
    split_settled_minor: int
    difference_minor: int
    explained_minor: int
    discrepancy_count: int
    create_time: _timestamp_pb2.Timestamp
    settlement: Settlement
    def __init__(self, run_id: _Optional[int] = ..., statement: _Optional[_Union[Statement, _Mapping]] = ..., time_zone: _Optional[str] = ..., class_totals: _Optional[_Iterable[_Union[ClassTotal, _Mapping]]] = ..., statement_settled_minor: _Optional[int] = ..., split_settled_minor: _Optional[int] = ..., difference_minor: _Optional[int] = ..., explained_minor: _Optional[int] = ..., discrepancy_count: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., settlement: _Optional[_Union[Settlement, _Mapping]] = ...) -> None: ...

class Settlement(_message.Message):
    __slots__ = ("transfer_id", "amount_minor", "posted_before_minor", "currency_code", "channel_clearing_account_id", "custodial_account_id", "posting_request_id", "request_id", "posted_by_key_id", "create_time")
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    POSTED_BEFORE_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_CLEARING_ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTODIAL_ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    POSTING_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    POSTED_BY_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    transfer_id: int
    amount_minor: int
    posted_before_minor: int
    currency_code: str
    channel_clearing_account_id: int
    custodial_account_id: int
    posting_request_id: str
    request_id: str
    posted_by_key_id: int
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, transfer_id: _Optional[int] = ..., amount_minor: _Optional[int] = ..., posted_before_minor: _Optional[int] = ..., currency_code: _Optional[str] = ..., channel_clearing_account_id: _Optional[int] = ..., custodial_account_id: _Optional[int] = ..., posting_request_id: _Optional[str] = ..., request_id: _Optional[str] = ..., posted_by_key_id: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Discrepancy(_message.Message):
    __slots__ = ("discrepancy_id", "run_id", "reconciliation_class", "state", "order_id", "channel_transaction_id", "line_number", "line_type", "split_id", "statement_amount_minor", "statement_fee_minor", "statement_currency_code", "split_amount_minor", "split_fee_minor", "split_currency_code", "difference_minor", "create_time", "resolution_id", "description", "payout_id", "bank_transfer_id")
    DISCREPANCY_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    RECONCILIATION_CLASS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    LINE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    LINE_TYPE_FIELD_NUMBER: _ClassVar[int]
    SPLIT_ID_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_FEE_MINOR_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    SPLIT_AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FEE_MINOR_FIELD_NUMBER: _ClassVar[int]
    SPLIT_CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    DIFFERENCE_MINOR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PAYOUT_ID_FIELD_NUMBER: _ClassVar[int]
    BANK_TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    discrepancy_id: int
    run_id: int
    reconciliation_class: ReconciliationClass
    state: DiscrepancyState
    order_id: str
    channel_transaction_id: str
    line_number: int
    line_type: StatementLineType
    split_id: int
    statement_amount_minor: int
    statement_fee_minor: int
    statement_currency_code: str
    split_amount_minor: int
    split_fee_minor: int
    split_currency_code: str
    difference_minor: int
    create_time: _timestamp_pb2.Timestamp
    resolution_id: int
    description: str
    payout_id: int
    bank_transfer_id: int
    def __init__(self, discrepancy_id: _Optional[int] = ..., run_id: _Optional[int] = ..., reconciliation_class: _Optional[_Union[ReconciliationClass, str]] = ..., state: _Optional[_Union[DiscrepancyState, str]] = ..., order_id: _Optional[str] = ..., channel_transaction_id: _Optional[str] = ..., line_number: _Optional[int] = ..., line_type: _Optional[_Union[StatementLineType, str]] = ..., split_id: _Optional[int] = ..., statement_amount_minor: _Optional[int] = ..., statement_fee_minor: _Optional[int] = ..., statement_currency_code: _Optional[str] = ..., split_amount_minor: _Optional[int] = ..., split_fee_minor: _Optional[int] = ..., split_currency_code: _Optional[str] = ..., difference_minor: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., resolution_id: _Optional[int] = ..., description: _Optional[str] = ..., payout_id: _Optional[int] = ..., bank_transfer_id: _Optional[int] = ...) -> None: ...

class ResolutionEvent(_message.Message):
    __slots__ = ("step", "key_id", "request_id", "note", "transfer_id", "create_time")
    STEP_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    step: ResolutionStep
    key_id: int
    request_id: str
    note: str
    transfer_id: int
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, step: _Optional[_Union[ResolutionStep, str]] = ..., key_id: _Optional[int] = ..., request_id: _Optional[str] = ..., note: _Optional[str] = ..., transfer_id: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Resolution(_message.Message):
    __slots__ = ("resolution_id", "discrepancy_id", "action", "state", "note", "amount_minor", "currency_code", "order", "proposed_by_key_id", "reviewed_by_key_id", "review_note", "posting_request_id", "transfer_id", "split_id", "events", "create_time")
    RESOLUTION_ID_FIELD_NUMBER: _ClassVar[int]
    DISCREPANCY_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    PROPOSED_BY_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    REVIEWED_BY_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    REVIEW_NOTE_FIELD_NUMBER: _ClassVar[int]
    POSTING_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    SPLIT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    resolution_id: int
    discrepancy_id: int
    action: ResolutionAction
    state: ResolutionState
    note: str
    amount_minor: int
    currency_code: str
    order: _split_pb2.Order
    proposed_by_key_id: int
    reviewed_by_key_id: int
    review_note: str
    posting_request_id: str
    transfer_id: int
    split_id: int
    events: _containers.RepeatedCompositeFieldContainer[ResolutionEvent]
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, resolution_id: _Optional[int] = ..., discrepancy_id: _Optional[int] = ..., action: _Optional[_Union[ResolutionAction, str]] = ..., state: _Optional[_Union[ResolutionState, str]] = ..., note: _Optional[str] = ..., amount_minor: _Optional[int] = ..., currency_code: _Optional[str] = ..., order: _Optional[_Union[_split_pb2.Order, _Mapping]] = ..., proposed_by_key_id: _Optional[int] = ..., reviewed_by_key_id: _Optional[int] = ..., review_note: _Optional[str] = ..., posting_request_id: _Optional[str] = ..., transfer_id: _Optional[int] = ..., split_id: _Optional[int] = ..., events: _Optional[_Iterable[_Union[ResolutionEvent, _Mapping]]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PostSettlementRequest(_message.Message):
    __slots__ = ("request_id", "run_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    run_id: int
    def __init__(self, request_id: _Optional[str] = ..., run_id: _Optional[int] = ...) -> None: ...

class PostSettlementResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: ReconciliationRun
    def __init__(self, run: _Optional[_Union[ReconciliationRun, _Mapping]] = ...) -> None: ...

class ProposeResolutionRequest(_message.Message):
    __slots__ = ("request_id", "discrepancy_id", "action", "note", "amount_minor", "order")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DISCREPANCY_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    discrepancy_id: int
    action: ResolutionAction
    note: str
    amount_minor: int
    order: _split_pb2.Order
    def __init__(self, request_id: _Optional[str] = ..., discrepancy_id: _Optional[int] = ..., action: _Optional[_Union[ResolutionAction, str]] = ..., note: _Optional[str] = ..., amount_minor: _Optional[int] = ..., order: _Optional[_Union[_split_pb2.Order, _Mapping]] = ...) -> None: ...

class ProposeResolutionResponse(_message.Message):
    __slots__ = ("resolution",)
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    resolution: Resolution
    def __init__(self, resolution: _Optional[_Union[Resolution, _Mapping]] = ...) -> None: ...

class ApproveResolutionRequest(_message.Message):
    __slots__ = ("request_id", "resolution_id", "note")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_ID_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    resolution_id: int
    note: str
    def __init__(self, request_id: _Optional[str] = ..., resolution_id: _Optional[int] = ..., note: _Optional[str] = ...) -> None: ...

class ApproveResolutionResponse(_message.Message):
    __slots__ = ("resolution",)
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    resolution: Resolution
    def __init__(self, resolution: _Optional[_Union[Resolution, _Mapping]] = ...) -> None: ...

class RejectResolutionRequest(_message.Message):
    __slots__ = ("request_id", "resolution_id", "note")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_ID_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    resolution_id: int
    note: str
    def __init__(self, request_id: _Optional[str] = ..., resolution_id: _Optional[int] = ..., note: _Optional[str] = ...) -> None: ...

class RejectResolutionResponse(_message.Message):
    __slots__ = ("resolution",)
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    resolution: Resolution
    def __init__(self, resolution: _Optional[_Union[Resolution, _Mapping]] = ...) -> None: ...

class GetResolutionRequest(_message.Message):
    __slots__ = ("resolution_id",)
    RESOLUTION_ID_FIELD_NUMBER: _ClassVar[int]
    resolution_id: int
    def __init__(self, resolution_id: _Optional[int] = ...) -> None: ...

class GetResolutionResponse(_message.Message):
    __slots__ = ("resolution",)
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    resolution: Resolution
    def __init__(self, resolution: _Optional[_Union[Resolution, _Mapping]] = ...) -> None: ...

class GetReconciliationRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: int
    def __init__(self, run_id: _Optional[int] = ...) -> None: ...

class GetReconciliationRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: ReconciliationRun
    def __init__(self, run: _Optional[_Union[ReconciliationRun, _Mapping]] = ...) -> None: ...

class ListReconciliationRunsRequest(_message.Message):
    __slots__ = ("channel", "settlement_date", "page_size", "page_token")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    SETTLEMENT_DATE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    channel: str
    settlement_date: str
    page_size: int
    page_token: str
    def __init__(self, channel: _Optional[str] = ..., settlement_date: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListReconciliationRunsResponse(_message.Message):
    __slots__ = ("runs", "next_page_token")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[ReconciliationRun]
    next_page_token: str
    def __init__(self, runs: _Optional[_Iterable[_Union[ReconciliationRun, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListDiscrepanciesRequest(_message.Message):
    __slots__ = ("run_id", "classes", "states", "page_size", "page_token")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    run_id: int
    classes: _containers.RepeatedScalarFieldContainer[ReconciliationClass]
    states: _containers.RepeatedScalarFieldContainer[DiscrepancyState]
    page_size: int
    page_token: str
    def __init__(self, run_id: _Optional[int] = ..., classes: _Optional[_Iterable[_Union[ReconciliationClass, str]]] = ..., states: _Optional[_Iterable[_Union[DiscrepancyState, str]]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDiscrepanciesResponse(_message.Message):
    __slots__ = ("discrepancies", "next_page_token")
    DISCREPANCIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    discrepancies: _containers.RepeatedCompositeFieldContainer[Discrepancy]
    next_page_token: str
    def __init__(self, discrepancies: _Optional[_Iterable[_Union[Discrepancy, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
