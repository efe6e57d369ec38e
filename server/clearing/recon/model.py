"""The reconciliation domain's values: formats, line types, classes, states, resolution
actions and steps (mirrors of the proto enums in reconciliation.proto), a parsed statement
line, a statement, a run with its settlement, a discrepancy and a resolution as stored."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass


class StatementFormat(enum.IntEnum):
    """The layout of a statement file (proto StatementFormat)."""

    UNSPECIFIED = 0
    CANONICAL = 1
    WECHAT = 2
    BANK_PAYOUTS = 3


class LineType(enum.IntEnum):
    """What a statement line records (proto StatementLineType)."""

    UNSPECIFIED = 0
    PAYMENT = 1
    REFUND = 2
    PAYOUT = 3


class MatchClass(enum.IntEnum):
    """The outcome of matching a line or a split (proto ReconciliationClass); every class
    but MATCHED is a discrepancy."""

    UNSPECIFIED = 0
    MATCHED = 1
    MISSING_SPLIT = 2
    MISSING_IN_STATEMENT = 3
    AMOUNT_MISMATCH = 4
    FEE_MISMATCH = 5
    CURRENCY_MISMATCH = 6
    DUPLICATE = 7
    SPLIT_LEDGER_MISMATCH = 8
    PAYOUT_BANK_MISMATCH = 9
    MISSING_IN_BANK_FILE = 10
    UNKNOWN_BANK_TRANSFER = 11
    STATUS_MISMATCH = 12


DISCREPANCY_CLASSES = tuple(c for c in MatchClass if c not in (MatchClass.UNSPECIFIED,
                                                               MatchClass.MATCHED))
# The classes of a channel statement's run, of a bank payout file's run, of the 7x24 sweep.
STATEMENT_CLASSES = (MatchClass.MATCHED, MatchClass.MISSING_SPLIT,
                     MatchClass.MISSING_IN_STATEMENT, MatchClass.AMOUNT_MISMATCH,
                     MatchClass.FEE_MISMATCH, MatchClass.CURRENCY_MISMATCH,
                     MatchClass.DUPLICATE)
PAYOUT_FILE_CLASSES = (MatchClass.MATCHED, MatchClass.AMOUNT_MISMATCH,
                       MatchClass.CURRENCY_MISMATCH, MatchClass.DUPLICATE,
                       MatchClass.MISSING_IN_BANK_FILE, MatchClass.UNKNOWN_BANK_TRANSFER,
                       MatchClass.STATUS_MISMATCH)
SWEEP_CLASSES = (MatchClass.SPLIT_LEDGER_MISMATCH, MatchClass.PAYOUT_BANK_MISMATCH)
# The classes of items that are not lines of the file (a split, a bank transfer).
NOT_IN_FILE_CLASSES = (MatchClass.MISSING_IN_STATEMENT, MatchClass.MISSING_IN_BANK_FILE)


class DiscrepancyState(enum.IntEnum):
    """Where a discrepancy is in its handling (proto DiscrepancyState)."""

    UNSPECIFIED = 0
    OPEN = 1
    RESOLVED = 2
    RESOLUTION_PROPOSED = 3


class ResolutionAction(enum.IntEnum):
    """What a resolution does (proto ResolutionAction)."""

    UNSPECIFIED = 0
    SPLIT_NOW = 1
    REFUND = 2
    WRITE_OFF = 3
    ACCEPT = 4


class ResolutionState(enum.IntEnum):
    """Where a resolution is (proto ResolutionState)."""

    UNSPECIFIED = 0
    PROPOSED = 1
    APPROVED = 2
    REJECTED = 3


class ResolutionStep(enum.IntEnum):
    """One step of a resolution's history (proto ResolutionStep)."""

    UNSPECIFIED = 0
    PROPOSED = 1
    APPROVED = 2
    REJECTED = 3
    POSTING_REFUSED = 4


@dataclass(frozen=True, slots=True)
class StatementLine:
    """One payment or refund of a statement, checked (amounts in minor units, all >= 0:
    the type gives the direction; settled_minor == amount_minor - channel_fee_minor). A
    PAYOUT line of a bank's payout result file (`payout_file`) has no fee and settled_minor
    what the bank paid: amount_minor if SUCCEEDED, 0 if FAILED; payout_id the payout the
    bank names (0 on other lines)."""

    line_number: int
    line_type: LineType
    channel_transaction_id: str
    order_id: str
    paid_at: dt.datetime
    amount_minor: int
    channel_fee_minor: int
    settled_minor: int
    currency_code: str
    payout_id: int = 0

    def signed_settled_minor(self) -> int:
        """What the line adds to the statement's settled total."""
        return -self.settled_minor if self.line_type == LineType.REFUND else self.settled_minor


@dataclass(frozen=True, slots=True)
class ImportHeader:
    """What an import names: the channel, the day, the layout, the request id."""

    request_id: str
    channel: str
    settlement_date: dt.date
    format: StatementFormat


@dataclass(frozen=True, slots=True)
class Statement:
    """An imported statement (a row of recon_statements)."""

    statement_id: int
    channel: str
    settlement_date: dt.date
    format: StatementFormat
    content_sha256: bytes
    size_bytes: int
    line_count: int
    currency_code: str
    settled_minor: int
    superseded_by: int | None
    imported_by_key_id: int
    request_id: str
    imported_at: dt.datetime

    @property
    def active(self) -> bool:
        return self.superseded_by is None


@dataclass(frozen=True, slots=True)
class ClassTotal:
    """What a run found of one class."""

    match_class: MatchClass
    item_count: int
    amount_minor: int
    difference_minor: int


@dataclass(frozen=True, slots=True)
class Settlement:
    """The settlement posting of a statement (a row of recon_settlements): amount_minor
    moved into the custodial account (negative: out of it), after posted_before_minor by
    earlier statements of the channel and day; transfer_id 0 when nothing was posted."""

    transfer_id: int
    amount_minor: int
    posted_before_minor: int
    currency_code: str
    channel_clearing_account_id: int
    custodial_account_id: int
    posting_request_id: str
    request_id: str
    key_id: int
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Run:
    """A reconciliation run: a statement matched against the splits."""

    run_id: int
    statement: Statement
    time_zone: str
    class_totals: tuple[ClassTotal, ...]
    statement_settled_minor: int
    split_settled_minor: int
    explained_minor: int
    created_at: dt.datetime
    settlement: Settlement | None = None

    @property
    def difference_minor(self) -> int:
        return self.statement_settled_minor - self.split_settled_minor

    @property
    def discrepancy_count(self) -> int:
        return sum(t.item_count for t in self.class_totals
                   if t.match_class != MatchClass.MATCHED)


@dataclass(frozen=True, slots=True)
class Discrepancy:
    """A line or split that did not match (a row of recon_discrepancies); run_id 0 for
    the 7x24 sweep's."""

    discrepancy_id: int
    run_id: int
    match_class: MatchClass
    state: DiscrepancyState
    order_id: str
    channel_transaction_id: str
    line_number: int
    line_type: LineType
    split_id: int
    statement_amount_minor: int
    statement_fee_minor: int
    statement_currency_code: str
    split_amount_minor: int
    split_fee_minor: int
    split_currency_code: str
    difference_minor: int
    created_at: dt.datetime
    resolution_id: int = 0
    description: str = ""
    payout_id: int = 0
    bank_transfer_id: int = 0

    @property
    def currency_code(self) -> str:
        """The currency of its difference: the statement's (a split's without one)."""
        return self.statement_currency_code or self.split_currency_code


@dataclass(frozen=True, slots=True)
class ResolutionEvent:
    """One step of a resolution (a row of recon_resolution_events, never changed)."""

    step: ResolutionStep
    key_id: int
    request_id: str
    note: str
    transfer_id: int
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Resolution:
    """A proposed resolution of a discrepancy and its review (a row of recon_resolutions).
    `order_message`: SPLIT_NOW's order as the API layer serialized it (opaque here)."""

    resolution_id: int
    discrepancy_id: int
    action: ResolutionAction
    state: ResolutionState
    note: str
    amount_minor: int
    currency_code: str
    order_message: bytes | None
    proposed_by_key_id: int
    request_id: str
    attempt: int
    reviewed_by_key_id: int
    review_note: str
    transfer_id: int
    split_id: int
    created_at: dt.datetime
    events: tuple[ResolutionEvent, ...] = ()
