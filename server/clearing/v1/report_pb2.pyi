import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VoucherKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VOUCHER_KIND_UNSPECIFIED: _ClassVar[VoucherKind]
    VOUCHER_KIND_SPLIT: _ClassVar[VoucherKind]
    VOUCHER_KIND_SPLIT_ACTION: _ClassVar[VoucherKind]
    VOUCHER_KIND_PAYOUT: _ClassVar[VoucherKind]

class VoucherProblemKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VOUCHER_PROBLEM_KIND_UNSPECIFIED: _ClassVar[VoucherProblemKind]
    VOUCHER_PROBLEM_KIND_PDF_EDITED: _ClassVar[VoucherProblemKind]
    VOUCHER_PROBLEM_KIND_VOUCHER_EDITED: _ClassVar[VoucherProblemKind]
    VOUCHER_PROBLEM_KIND_RECORD_EDITED: _ClassVar[VoucherProblemKind]
    VOUCHER_PROBLEM_KIND_JOURNAL_EDITED: _ClassVar[VoucherProblemKind]
    VOUCHER_PROBLEM_KIND_CHAIN_BROKEN: _ClassVar[VoucherProblemKind]
    VOUCHER_PROBLEM_KIND_REFERENCE_BROKEN: _ClassVar[VoucherProblemKind]

class ReportFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPORT_FORMAT_UNSPECIFIED: _ClassVar[ReportFormat]
    REPORT_FORMAT_CSV: _ClassVar[ReportFormat]
    REPORT_FORMAT_XLSX: _ClassVar[ReportFormat]
VOUCHER_KIND_UNSPECIFIED: VoucherKind
VOUCHER_KIND_SPLIT: VoucherKind
VOUCHER_KIND_SPLIT_ACTION: VoucherKind
VOUCHER_KIND_PAYOUT: VoucherKind
VOUCHER_PROBLEM_KIND_UNSPECIFIED: VoucherProblemKind
VOUCHER_PROBLEM_KIND_PDF_EDITED: VoucherProblemKind
VOUCHER_PROBLEM_KIND_VOUCHER_EDITED: VoucherProblemKind
VOUCHER_PROBLEM_KIND_RECORD_EDITED: VoucherProblemKind
VOUCHER_PROBLEM_KIND_JOURNAL_EDITED: VoucherProblemKind
VOUCHER_PROBLEM_KIND_CHAIN_BROKEN: VoucherProblemKind
VOUCHER_PROBLEM_KIND_REFERENCE_BROKEN: VoucherProblemKind
REPORT_FORMAT_UNSPECIFIED: ReportFormat
REPORT_FORMAT_CSV: ReportFormat
REPORT_FORMAT_XLSX: ReportFormat

class GetVoucherRequest(_message.Message):
    __slots__ = ("voucher_id", "split_id", "split_action_id", "payout_id")
    VOUCHER_ID_FIELD_NUMBER: _ClassVar[int]
    SPLIT_ID_FIELD_NUMBER: _ClassVar[int]
    SPLIT_ACTION_ID_FIELD_NUMBER: _ClassVar[int]
    PAYOUT_ID_FIELD_NUMBER: _ClassVar[int]
    voucher_id: int
    split_id: int
    split_action_id: int
    payout_id: int
    def __init__(self, voucher_id: _Optional[int] = ..., split_id: _Optional[int] = ..., split_action_id: _Optional[int] = ..., payout_id: _Optional[int] = ...) -> None: ...

class GetVoucherResponse(_message.Message):
    __slots__ = ("pdf", "voucher")
    PDF_FIELD_NUMBER: _ClassVar[int]
    VOUCHER_FIELD_NUMBER: _ClassVar[int]
    pdf: bytes
    voucher: Voucher
    def __init__(self, pdf: _Optional[bytes] = ..., voucher: _Optional[_Union[Voucher, _Mapping]] = ...) -> None: ...

class Voucher(_message.Message):
    __slots__ = ("voucher_id", "kind", "subject_id", "references_voucher_id", "digest", "issue_time", "content_json", "pdf_sha256")
    VOUCHER_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    REFERENCES_VOUCHER_ID_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    ISSUE_TIME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_JSON_FIELD_NUMBER: _ClassVar[int]
    PDF_SHA256_FIELD_NUMBER: _ClassVar[int]
    voucher_id: int
    kind: VoucherKind
    subject_id: int
    references_voucher_id: int
    digest: str
    issue_time: _timestamp_pb2.Timestamp
    content_json: str
    pdf_sha256: str
    def __init__(self, voucher_id: _Optional[int] = ..., kind: _Optional[_Union[VoucherKind, str]] = ..., subject_id: _Optional[int] = ..., references_voucher_id: _Optional[int] = ..., digest: _Optional[str] = ..., issue_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., content_json: _Optional[str] = ..., pdf_sha256: _Optional[str] = ...) -> None: ...

class VerifyVoucherRequest(_message.Message):
    __slots__ = ("voucher_id", "pdf")
    VOUCHER_ID_FIELD_NUMBER: _ClassVar[int]
    PDF_FIELD_NUMBER: _ClassVar[int]
    voucher_id: int
    pdf: bytes
    def __init__(self, voucher_id: _Optional[int] = ..., pdf: _Optional[bytes] = ...) -> None: ...

class VoucherProblem(_message.Message):
    __slots__ = ("kind", "detail")
    KIND_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    kind: VoucherProblemKind
    detail: str
    def __init__(self, kind: _Optional[_Union[VoucherProblemKind, str]] = ..., detail: _Optional[str] = ...) -> None: ...

class VerifyVoucherResponse(_message.Message):
    __slots__ = ("valid", "voucher", "problems", "pdf_checked")
    VALID_FIELD_NUMBER: _ClassVar[int]
    VOUCHER_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    PDF_CHECKED_FIELD_NUMBER: _ClassVar[int]
    valid: bool
    voucher: Voucher
    problems: _containers.RepeatedCompositeFieldContainer[VoucherProblem]
    pdf_checked: bool
    def __init__(self, valid: _Optional[bool] = ..., voucher: _Optional[_Union[Voucher, _Mapping]] = ..., problems: _Optional[_Iterable[_Union[VoucherProblem, _Mapping]]] = ..., pdf_checked: _Optional[bool] = ...) -> None: ...

class ExportReportRequest(_message.Message):
    __slots__ = ("report_name", "from_date", "to_date", "format")
    REPORT_NAME_FIELD_NUMBER: _ClassVar[int]
    FROM_DATE_FIELD_NUMBER: _ClassVar[int]
    TO_DATE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    report_name: str
    from_date: str
    to_date: str
    format: ReportFormat
    def __init__(self, report_name: _Optional[str] = ..., from_date: _Optional[str] = ..., to_date: _Optional[str] = ..., format: _Optional[_Union[ReportFormat, str]] = ...) -> None: ...

class ExportReportResponse(_message.Message):
    __slots__ = ("chunk", "row_count", "info", "done")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    chunk: bytes
    row_count: int
    info: ReportInfo
    done: bool
    def __init__(self, chunk: _Optional[bytes] = ..., row_count: _Optional[int] = ..., info: _Optional[_Union[ReportInfo, _Mapping]] = ..., done: _Optional[bool] = ...) -> None: ...

class ReportInfo(_message.Message):
    __slots__ = ("report_name", "from_date", "to_date", "time_zone", "columns", "content_type", "file_name")
    REPORT_NAME_FIELD_NUMBER: _ClassVar[int]
    FROM_DATE_FIELD_NUMBER: _ClassVar[int]
    TO_DATE_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    report_name: str
    from_date: str
    to_date: str
    time_zone: str
    columns: _containers.RepeatedScalarFieldContainer[str]
    content_type: str
    file_name: str
    def __init__(self, report_name: _Optional[str] = ..., from_date: _Optional[str] = ..., to_date: _Optional[str] = ..., time_zone: _Optional[str] = ..., columns: _Optional[_Iterable[str]] = ..., content_type: _Optional[str] = ..., file_name: _Optional[str] = ...) -> None: ...
