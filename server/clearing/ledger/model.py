"""Ledger domain types. Enum numbers equal the proto enum numbers (stored as smallint)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import IntEnum
from typing import Callable


class AccountKind(IntEnum):
    CUSTODIAL = 1
    PLATFORM = 2
    MERCHANT = 3
    ORDINARY = 4
    FEE = 5
    MARKETING = 6
    FUNCTIONAL = 7
    CHANNEL_CLEARING = 8
    SUSPENSE = 9


class OwnerType(IntEnum):
    ENTERPRISE = 1
    INDIVIDUAL = 2


class AccountStatus(IntEnum):
    ACTIVE = 1
    FROZEN = 2
    CLOSED = 3


class Mode(IntEnum):
    """What a transfer does; equal to proto TransferMode."""

    IMMEDIATE = 1
    PENDING = 2
    POST_PENDING = 3
    VOID_PENDING = 4


class PendingState(IntEnum):
    NONE = 0
    OPEN = 1
    POSTED = 2
    VOIDED = 3


class EntrySide(IntEnum):
    """The side of an account a journal entry is on."""

    DEBIT = 1
    CREDIT = 2


class Role:
    GATEWAY = "gateway"
    OPERATOR = "operator"
    APPROVER = "approver"
    ALL = frozenset({GATEWAY, OPERATOR, APPROVER})
    # A party key's only role: it reads what concerns its accounts (Principal.party_account_ids;
    # clearing.api.party) and nothing else. Never combined with another role.
    PARTY = "party"
    # An admin key's only role (the operator of the core, PlatformService): never a
    # platform key's, and a key with it is refused by every platform service.
    ADMIN = "admin"


# Not frozen (hashable and compared by value all the same): the split path makes one or more
# per order, and a frozen dataclass's construction (object.__setattr__ per field) costs 4
# to 5 times as much (TransferRecord 2.1 us against 0.45 us). Not changed after it is made.
@dataclass(slots=True, unsafe_hash=True)
class Leg:
    """One transfer asked of the writer. For POST/VOID, accounts and currency may be 0/""
    (taken from the pending transfer) or must match it."""

    debit_account_id: int
    credit_account_id: int
    amount_minor: int
    currency_code: str
    mode: Mode
    pending_id: int = 0
    memo: str = ""


# Not frozen: see Leg.
@dataclass(slots=True, unsafe_hash=True)
class Claim:
    """A key a posting takes for good if it commits (e.g. `order:ORD1`: an order is split
    once). A posting whose claim is taken fails with AlreadyExists(reason)."""

    key: str
    reason: str
    message: str

    # Claim keys share the idempotency table with request ids; this prefix is not printable,
    # and request ids must be, so a client's request id can never take a claim's key.
    PREFIX = "\x1f"

    @classmethod
    def of(cls, kind: str, value: str, reason: str, message: str) -> "Claim":
        return cls(f"{cls.PREFIX}{kind}:{value}", reason, message)


# Not frozen: see Leg.
@dataclass(slots=True, unsafe_hash=True)
class Posting:
    """An all-or-nothing group of legs under one request id.

    `claims` are taken with it; `attachment` is handed, with the committed records, to the
    writer's sink named `sink`, which writes it in the same transaction.

    `books_external`: the posting books money that already moved outside the ledger (a
    payout's bank transfer the bank has paid): the accounts' statuses cannot refuse it
    (see `clearing.ledger.status`). Funds, currency and pending amounts are checked as
    for any posting.

    A failure is recorded under the request id (a retry gets the same failure) when
    `clearing.idempotency.recorded` says so and its reason is not in `unrecorded_reasons`;
    else it leaves no trace at all, so the caller may fix what it planned from (e.g. a
    receiver's status it read from a cache) and submit again under the same request id.

    `respond`, if given, makes the first response from the committed records, in memory
    (no I/O: it runs in the batch, before the batch's one write); its bytes are recorded
    with the postings in the same transaction, and a retry of the request id is answered
    `Replay(those bytes)` instead of records. It must not fail (a failure is a bug that
    fails the batch).
    """

    platform_id: int
    request_id: str
    method: str
    payload_hash: bytes
    legs: tuple[Leg, ...]
    claims: tuple[Claim, ...] = ()
    sink: str = ""
    attachment: object = None
    unrecorded_reasons: frozenset[str] = frozenset()
    books_external: bool = False
    respond: Callable[[list["TransferRecord"]], bytes] | None = None


@dataclass(frozen=True, slots=True)
class Replay:
    """The writer's answer to a posting whose request id already has a first response
    (made by `Posting.respond`): that response's bytes."""

    response: bytes


# Not frozen: see Leg.
@dataclass(slots=True, unsafe_hash=True)
class TransferRecord:
    """A committed journal row."""

    transfer_id: int
    platform_id: int
    request_id: str
    debit_account_id: int
    credit_account_id: int
    amount_minor: int
    currency_code: str
    mode: Mode
    pending_id: int
    pending_remaining: int
    pending_state: PendingState
    memo: str
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Balance:
    account_id: int
    currency_code: str
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int
    frozen: int

    @property
    def posted(self) -> int:
        return self.credits_posted - self.debits_posted

    @property
    def available(self) -> int:
        return self.credits_posted - self.debits_posted - self.debits_pending - self.frozen


@dataclass(frozen=True, slots=True)
class Account:
    account_id: int
    platform_id: int
    external_ref: str
    kind: AccountKind
    owner_type: OwnerType
    currency_code: str
    status: AccountStatus
    allow_negative: bool
    display_name: str
    balance: Balance
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the platform and the roles of the API key."""

    platform_id: int
    key_id: int
    roles: frozenset[str]
    # A party key's accounts (its role Role.PARTY); empty for every other key.
    party_account_ids: frozenset[int] = frozenset()

    @property
    def is_party(self) -> bool:
        """A party key: reads only what concerns party_account_ids."""
        return Role.PARTY in self.roles

    @property
    def is_admin(self) -> bool:
        """An admin key (platform_id 0, key_id the admin key's id): PlatformService only."""
        return Role.ADMIN in self.roles
