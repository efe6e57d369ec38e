from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

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
    __slots__ = ("report_name",)
    REPORT_NAME_FIELD_NUMBER: _ClassVar[int]
    report_name: str
    def __init__(self, report_name: _Optional[str] = ...) -> None: ...

class ExportReportResponse(_message.Message):
    __slots__ = ("chunk",)
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    chunk: bytes
    def __init__(self, chunk: _Optional[bytes] = ...) -> None: ...
