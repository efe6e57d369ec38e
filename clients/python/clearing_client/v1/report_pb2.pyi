from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReportFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPORT_FORMAT_UNSPECIFIED: _ClassVar[ReportFormat]
    REPORT_FORMAT_CSV: _ClassVar[ReportFormat]
    REPORT_FORMAT_XLSX: _ClassVar[ReportFormat]
REPORT_FORMAT_UNSPECIFIED: ReportFormat
REPORT_FORMAT_CSV: ReportFormat
REPORT_FORMAT_XLSX: ReportFormat

class GetVoucherRequest(_message.Message):
    __slots__ = ("voucher_id",)
    VOUCHER_ID_FIELD_NUMBER: _ClassVar[int]
    voucher_id: int
    def __init__(self, voucher_id: _Optional[int] = ...) -> None: ...

class GetVoucherResponse(_message.Message):
    __slots__ = ("pdf",)
    PDF_FIELD_NUMBER: _ClassVar[int]
    pdf: bytes
    def __init__(self, pdf: _Optional[bytes] = ...) -> None: ...

class VerifyVoucherRequest(_message.Message):
    __slots__ = ("voucher_id",)
    VOUCHER_ID_FIELD_NUMBER: _ClassVar[int]
    voucher_id: int
    def __init__(self, voucher_id: _Optional[int] = ...) -> None: ...

class VerifyVoucherResponse(_message.Message):
    __slots__ = ("valid",)
    VALID_FIELD_NUMBER: _ClassVar[int]
    valid: bool
    def __init__(self, valid: _Optional[bool] = ...) -> None: ...

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
