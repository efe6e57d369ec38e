"""Vouchers: what one is (`Voucher`), what it is of (`VoucherKind`), what a verification
finds (`Problem`), and the one canonical form of a voucher's content and its digest.

A voucher's content is a JSON object of the domain's own (built by `voucher_content`,
rendered by `voucher_pdf`): amounts are integers in minor units, times ISO 8601 in UTC, ids
integers. Its canonical text is that object with sorted keys and no spaces, UTF-8 (not
ASCII-escaped, so a Chinese party name is stored as written); its digest is the SHA-256 of
that text. Keys listed in `DISPLAY_ONLY_KEYS` are what a voucher showed when issued and
may legitimately change later (an account's display name, the bank account bound to it,
the platform's name): VerifyVoucher compares everything else against the records.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

# The version of the content's layout; a new layout is a new number, never an edit.
CONTENT_FORMAT = 1
# The marker written into the PDF's Keywords metadata: `clearing-voucher:<id>:<digest>`.
PDF_MARKER = "clearing-voucher"
DISPLAY_ONLY_KEYS = frozenset({"display_name", "bound_bank_account", "platform_name"})


class VoucherKind(IntEnum):
    """What a voucher records. Equal to proto VoucherKind (stored in vouchers.kind)."""

    UNSPECIFIED = 0
    SPLIT = 1
    SPLIT_ACTION = 2
    PAYOUT = 3


class ProblemKind(IntEnum):
    """What a verification found. Equal to proto VoucherProblemKind."""

    UNSPECIFIED = 0
    PDF_EDITED = 1
    VOUCHER_EDITED = 2
    RECORD_EDITED = 3
    JOURNAL_EDITED = 4
    CHAIN_BROKEN = 5
    REFERENCE_BROKEN = 6


@dataclass(frozen=True, slots=True)
class Voucher:
    """An issued voucher (a row of `vouchers`)."""

    voucher_id: int
    platform_id: int
    kind: VoucherKind
    subject_id: int
    references_voucher_id: int  # 0: none
    content: str  # canonical JSON
    digest: bytes
    pdf_sha256: bytes
    issued_at: dt.datetime

    @property
    def digest_hex(self) -> str:
        return self.digest.hex()


@dataclass(frozen=True, slots=True)
class Problem:
    kind: ProblemKind
    detail: str


@dataclass(frozen=True, slots=True)
class Verification:
    voucher: Voucher
    problems: tuple[Problem, ...]
    pdf_checked: bool

    @property
    def valid(self) -> bool:
        return not self.problems


def canonical(content: dict[str, Any]) -> str:
    """The one canonical text of a voucher's content."""
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def utc_iso(at: dt.datetime | None) -> str:
    """A time as the content writes it: ISO 8601 in UTC to the microsecond, '' for none."""
    if at is None:
        return ""
    return at.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def pdf_marker(voucher_id: int, digest_hex: str) -> str:
    return f"{PDF_MARKER}:{voucher_id}:{digest_hex}"


def facts(value: Any) -> Any:
    """The content without its display-only keys: what verification compares."""
    if isinstance(value, dict):
        return {k: facts(v) for k, v in value.items() if k not in DISPLAY_ONLY_KEYS}
    if isinstance(value, list):
        return [facts(v) for v in value]
    return value


def differences(issued: Any, now: Any, path: str = "") -> list[tuple[str, str]]:
    """(path, 'voucher X, now Y') for every leaf where two contents differ."""
    if isinstance(issued, dict) and isinstance(now, dict):
        out: list[tuple[str, str]] = []
        for key in sorted(set(issued) | set(now)):
            sub = f"{path}.{key}" if path else key
            out += differences(issued.get(key), now.get(key), sub)
        return out
    if isinstance(issued, list) and isinstance(now, list) and len(issued) == len(now):
        out = []
        for i, (a, b) in enumerate(zip(issued, now)):
            out += differences(a, b, f"{path}[{i}]")
        return out
    if issued == now:
        return []
    return [(path, f"voucher {json.dumps(issued, ensure_ascii=False)}, "
                   f"now {json.dumps(now, ensure_ascii=False)}")]
