"""Payout domain types. Enum numbers equal the proto enum numbers (stored as smallint).

Life of a payout (PayoutState):

    REQUESTED --> QUEUED --> SUBMITTED --> SUCCEEDED
        |           ^            |
        v           | approve    v
    PENDING_REVIEW -+        MANUAL_REVIEW --approve--> SUBMITTED (a new round of attempts)
        |                        |
        +--reject--> FAILED <----+--reject

- REQUESTED: checked and held (one ledger posting of PENDING legs debiting the sub-account:
  net -> the platform's custodial account, fee -> the fee account). The payout row is
  written in the hold's transaction already routed, so REQUESTED is never stored: the
  row starts PENDING_REVIEW (amount above the review threshold) or QUEUED.
- PENDING_REVIEW: waits for ApprovePayout (-> QUEUED, its transfers due now) or
  RejectPayout (-> FAILED, REJECTED, the hold voided).
- QUEUED: its bank transfers are due; the payout worker claims them.
- SUBMITTED: the worker has sent at least one transfer; automatic retries happen here.
- SUCCEEDED: every transfer paid; the hold (net and fee) was posted. Terminal.
- FAILED: what was not paid was voided back to the account. Terminal.
- MANUAL_REVIEW: a transfer still failed after its retries; funds stay held until an
  approver retries (ApprovePayout) or rejects it (RejectPayout).

A payout's net amount is cut into bank transfers of at most the bank's per-transfer limit
(50,000,000 minor units in CNY): 1,200,000.00 -> 500,000 + 500,000 + 200,000. Each attempt
of a transfer has its own bank-side idempotency key (`attempt_key`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import IntEnum

from clearing.errors import invariant
from clearing.money import bps_of

# Who requested a scheduled payout.
SCHEDULER = "scheduler"


class BankAccountType(IntEnum):
    CORPORATE = 1
    PERSONAL = 2


class BankAccountStatus(IntEnum):
    ACTIVE = 1
    REPLACED = 2


class PayoutOrigin(IntEnum):
    REQUEST = 1
    SCHEDULE = 2


class PayoutState(IntEnum):
    REQUESTED = 1
    PENDING_REVIEW = 2
    QUEUED = 3
    SUBMITTED = 4
    SUCCEEDED = 5
    FAILED = 6
    MANUAL_REVIEW = 7

    @property
    def terminal(self) -> bool:
        return self in (PayoutState.SUCCEEDED, PayoutState.FAILED)


class TransferState(IntEnum):
    """BankTransferState: of a bank transfer and of one attempt."""

    QUEUED = 1
    SUBMITTED = 2
    UNKNOWN = 3
    SUCCEEDED = 4
    FAILED = 5


def mask_number(account_number: str) -> str:
    """The only form of an account number that leaves the server: 6225****1234."""
    return f"{account_number[:4]}****{account_number[-4:]}"


def attempt_key(payout_id: int, sequence: int, attempt: int) -> str:
    """The bank-side idempotency key of one attempt of one transfer of a payout."""
    return f"po{payout_id}-t{sequence}-a{attempt}"


def cut(net_minor: int, transfer_max_minor: int) -> list[int]:
    """The net amount as bank transfers of at most `transfer_max_minor`, the full ones first:
    cut(120_000_000, 50_000_000) == [50_000_000, 50_000_000, 20_000_000]."""
    invariant(net_minor > 0 and transfer_max_minor > 0, "cut: amounts must be positive")
    full, rest = divmod(net_minor, transfer_max_minor)
    return [transfer_max_minor] * full + ([rest] if rest else [])


@dataclass(frozen=True, slots=True)
class PayoutConfig:
    """A platform's payout rules for one currency (a payout_configs row, or the defaults)."""

    platform_id: int
    currency_code: str
    fee_fixed_minor: int
    fee_bps: int
    fee_account_id: int  # 0: no fee
    min_amount_minor: int
    max_amount_minor: int
    daily_max_minor: int
    review_threshold_minor: int
    bank_transfer_max_minor: int
    time_zone: str

    def fee(self, amount_minor: int) -> int:
        """fixed + bps of the amount (floored: the one rounding rule); 0 without an account."""
        if not self.fee_account_id:
            return 0
        return self.fee_fixed_minor + bps_of(amount_minor, self.fee_bps)


@dataclass(frozen=True, slots=True)
class BankAccount:
    bank_account_id: int
    platform_id: int
    account_id: int
    bank_code: str
    bank_name: str
    branch_code: str
    masked_number: str
    holder_name: str
    account_type: BankAccountType
    kyc_verified: bool
    status: BankAccountStatus
    created_at: dt.datetime
    replaced_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class Attempt:
    attempt_number: int
    idempotency_key: str
    state: TransferState
    bank_reference: str
    failure_code: str
    failure_message: str
    submitted_at: dt.datetime
    finished_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class BankTransfer:
    bank_transfer_id: int
    sequence: int
    amount_minor: int
    currency_code: str
    idempotency_key: str
    state: TransferState
    attempt_count: int
    next_attempt_at: dt.datetime | None
    created_at: dt.datetime
    finished_at: dt.datetime | None
    attempts: tuple[Attempt, ...] = ()


@dataclass(frozen=True, slots=True)
class Payout:
    payout_id: int
    platform_id: int
    request_id: str
    account_id: int
    external_ref: str
    bank_account_id: int
    masked_number: str
    currency_code: str
    amount_minor: int
    fee_minor: int
    net_minor: int
    paid_minor: int
    state: PayoutState
    origin: PayoutOrigin
    review_required: bool
    requested_by: str
    requested_key_id: int
    reviewed_by: str
    review_reason: str
    failure_reason: str
    failure_message: str
    hold_transfer_id: int
    fee_transfer_id: int
    fee_account_id: int
    memo: str
    created_at: dt.datetime
    updated_at: dt.datetime
    review_at: dt.datetime | None
    finished_at: dt.datetime | None
    transfers: tuple[BankTransfer, ...] = ()


@dataclass(slots=True)
class PayoutDraft:
    """A checked payout about to be held: the attachment of its ledger posting, which the
    payouts sink writes (with its bank transfers) in the hold's transaction."""

    payout_id: int
    platform_id: int
    request_id: str
    payload_hash: bytes
    account_id: int
    bank_account_id: int
    currency_code: str
    amount_minor: int
    fee_minor: int
    net_minor: int
    state: PayoutState
    origin: PayoutOrigin
    review_required: bool
    requested_by: str
    requested_key_id: int
    fee_account_id: int
    memo: str
    transfer_amounts: list[int] = field(default_factory=list)
    created_at: dt.datetime | None = None
    # What the payout's first response shows besides (`store.payout_of_draft`).
    external_ref: str = ""
    masked_number: str = ""
    transfer_ids: list[int] = field(default_factory=list)  # taken before the hold
