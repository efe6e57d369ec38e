"""Vouchers: issued at the first request for their subject, then frozen; verified against
the records, the ledger and the hash chain.

Issue (`get_by_subject`): the body is built from the records (`voucher_content`), a
voucher id is taken from the sequence, the header added, the content's canonical text and
digest computed, the PDF rendered and its SHA-256 taken, and the row inserted (append-only
table, migration 0015). Two first requests at once: one insert wins, the other reads the
winner's row (within a process, requests for one subject at once share one issue, and
requests for one voucher share one render: `_Renders`). An action's voucher references
its split's voucher, issued first if need be.

Verify (`verify`): (1) the stored content hashes to the stored digest, (2) a file given is
the file issued (its SHA-256), (3) the body built now from the records equals the issued
one but for display-only keys (`voucher_model.facts`), each difference classed by where it
lies (transfers: the journal; journal batches: the chain; the rest: the records), (4) each
journal batch listed still hashes to its rows digest from its rows, and links to the batch
before and after it in the chain, (5) a referenced voucher's digest is the one recorded and
its content still hashes to it. The full chain from genesis to head is VerifyLedger's.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from clearing.clock import Clock
from clearing.errors import FieldViolation, InvalidArgument, NotFound, invariant
from clearing.ledger import journal
from clearing.limits import (BATCH_SPAN, INT64_MAX, VOUCHER_PDF_CACHE_MAX, VOUCHER_PROBLEMS_MAX,
                             VOUCHER_RENDERS_MAX)
from clearing.reasons import Reason
from clearing.reports import voucher_content as content_of
from clearing.reports import voucher_pdf
from clearing.reports.voucher_model import (PDF_MARKER, Problem, ProblemKind, Verification,
                                            Voucher, VoucherKind, canonical, differences,
                                            digest, facts)

_GENESIS = bytes(32)
_MARKER = re.compile(PDF_MARKER.encode() + rb":(\d{1,19}):([0-9a-f]{64})")
_COLUMNS = ("voucher_id, platform_id, kind, subject_id, references_voucher_id, content,"
            " digest, pdf_sha256, issued_at")
_SQL_INSERT = f"""
INSERT INTO vouchers ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (platform_id, kind, subject_id) DO NOTHING
"""
_FIELDS = {VoucherKind.SPLIT: "split_id", VoucherKind.SPLIT_ACTION: "split_action_id",
           VoucherKind.PAYOUT: "payout_id"}


class _Renders:
    """An event loop's rendering: at most VOUCHER_RENDERS_MAX at once, one flight per
    voucher or subject however many requests ask at once (the others await its result),
    and the last VOUCHER_PDF_CACHE_MAX files, each checked against its pdf_sha256."""

    def __init__(self) -> None:
        self.gate = asyncio.Semaphore(VOUCHER_RENDERS_MAX)
        self.flights: dict[object, asyncio.Future] = {}
        self.pdfs: OrderedDict[int, bytes] = OrderedDict()

    def keep(self, voucher_id: int, pdf: bytes) -> None:
        self.pdfs[voucher_id] = pdf
        self.pdfs.move_to_end(voucher_id)
        while len(self.pdfs) > VOUCHER_PDF_CACHE_MAX:
            self.pdfs.popitem(last=False)

    async def once(self, key: object, make: Callable[[], Awaitable[Any]]) -> Any:
        """`make()`'s result; a call while another with the same key runs awaits that one."""
        flight = self.flights.get(key)
        if flight is not None:
            try:
                return await asyncio.shield(flight)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if flight.cancelled() and task is not None and not task.cancelling():
                    return await self.once(key, make)  # its owner was cancelled, not us
                raise
        flight = asyncio.get_running_loop().create_future()
        self.flights[key] = flight
        try:
            result = await make()
        except asyncio.CancelledError:
            flight.cancel()
            raise
        except BaseException as exc:
            flight.set_exception(exc)
            flight.exception()  # retrieved: a flight nobody awaited is not an error
            raise
        finally:
            del self.flights[key]
        flight.set_result(result)
        return result


# One per event loop (a semaphore and futures belong to the loop they are used in).
_RENDERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Renders] = (
    weakref.WeakKeyDictionary())


def _renders() -> _Renders:
    loop = asyncio.get_running_loop()
    if loop not in _RENDERS:
        _RENDERS[loop] = _Renders()
    return _RENDERS[loop]


async def render(voucher: Voucher) -> bytes:
    """The voucher's PDF, rendered in a thread (VOUCHER_RENDERS_MAX at a time)."""
    async with _renders().gate:
        return await asyncio.to_thread(voucher_pdf.render, json.loads(voucher.content),
                                       voucher.digest_hex)


async def pdf_of(voucher: Voucher) -> bytes:
    """An issued voucher's PDF: the file issued, byte for byte (checked)."""
    renders = _renders()
    if voucher.voucher_id in renders.pdfs:
        renders.pdfs.move_to_end(voucher.voucher_id)
        return renders.pdfs[voucher.voucher_id]

    async def make() -> bytes:
        pdf = await render(voucher)
        invariant(hashlib.sha256(pdf).digest() == voucher.pdf_sha256,
                  f"voucher {voucher.voucher_id} no longer renders to the file issued"
                  " (VerifyVoucher it)")
        renders.keep(voucher.voucher_id, pdf)
        return pdf

    return await renders.once(("pdf", voucher.voucher_id), make)


def _voucher(row: asyncpg.Record) -> Voucher:
    return Voucher(row["voucher_id"], row["platform_id"], VoucherKind(row["kind"]),
                   row["subject_id"], row["references_voucher_id"] or 0, row["content"],
                   row["digest"], row["pdf_sha256"], row["issued_at"])


async def _load(conn: asyncpg.Connection, platform_id: int, where: str,
                *args: object) -> Voucher | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM vouchers WHERE platform_id = $1 AND {where}", platform_id,
        *args)
    return None if row is None else _voucher(row)


def _not_found(field: str, value: int) -> NotFound:
    return NotFound(f"no voucher for {field} {value}", reason=Reason.VOUCHER_NOT_FOUND,
                    metadata={field: str(value)})


async def get_by_id(pool: asyncpg.Pool, platform_id: int,
                    voucher_id: int) -> tuple[Voucher, bytes]:
    async with pool.acquire() as conn:
        voucher = await _load(conn, platform_id, "voucher_id = $2", voucher_id)
    if voucher is None:
        raise _not_found("voucher_id", voucher_id)
    return voucher, await pdf_of(voucher)


async def get_by_subject(pool: asyncpg.Pool, clock: Clock, platform_id: int,
                         kind: VoucherKind, subject_id: int) -> tuple[Voucher, bytes]:
    """The subject's voucher, issued now if it has none."""

    async def load_or_issue() -> Voucher:
        async with pool.acquire() as conn:
            voucher = await _load(conn, platform_id, "kind = $2 AND subject_id = $3", kind,
                                  subject_id)
            return voucher or await _issue(conn, clock, platform_id, kind, subject_id)

    voucher = await _renders().once(("subject", platform_id, kind, subject_id), load_or_issue)
    return voucher, await pdf_of(voucher)


async def _body(conn: asyncpg.Connection, platform_id: int, kind: VoucherKind,
                subject_id: int, *, for_issue: bool) -> dict[str, Any] | None:
    if kind == VoucherKind.SPLIT:
        return await content_of.split_body(conn, platform_id, subject_id)
    if kind == VoucherKind.SPLIT_ACTION:
        return await content_of.action_body(conn, platform_id, subject_id)
    return await content_of.payout_body(conn, platform_id, subject_id, for_issue=for_issue)


async def _issue(conn: asyncpg.Connection, clock: Clock, platform_id: int, kind: VoucherKind,
                 subject_id: int) -> Voucher:
    """Issue the subject's voucher (its PDF is kept for the request), or answer the voucher
    another process issued first."""
    reference = None
    if kind == VoucherKind.SPLIT_ACTION:
        split_id = await content_of.action_split_id(conn, platform_id, subject_id)
        split_voucher = await _load(conn, platform_id, "kind = $2 AND subject_id = $3",
                                    VoucherKind.SPLIT, split_id)
        if split_voucher is None:
            split_voucher = await _issue(conn, clock, platform_id, VoucherKind.SPLIT,
                                         split_id)
        reference = (split_voucher.voucher_id, split_voucher.digest_hex)
    body = await _body(conn, platform_id, kind, subject_id, for_issue=True)
    if body is None:
        raise _not_found(_FIELDS[kind], subject_id)
    voucher_id = await conn.fetchval("SELECT nextval('vouchers_voucher_id_seq')")
    issued_at = clock.now()
    head = content_of.header(kind, voucher_id, issued_at, platform_id,
                             await content_of.platform_name(conn, platform_id), reference)
    text = canonical({**head, **body})
    voucher = Voucher(voucher_id, platform_id, kind, subject_id,
                      reference[0] if reference else 0, text, digest(text), b"", issued_at)
    pdf = await render(voucher)
    status = await conn.execute(
        _SQL_INSERT, voucher_id, platform_id, int(kind), subject_id,
        reference[0] if reference else None, text, voucher.digest,
        hashlib.sha256(pdf).digest(), issued_at)
    if status == "INSERT 0 1":
        stored = await _load(conn, platform_id, "voucher_id = $2", voucher_id)
        invariant(stored is not None, f"voucher {voucher_id} inserted but not read back")
        _renders().keep(voucher_id, pdf)
        return stored
    winner = await _load(conn, platform_id, "kind = $2 AND subject_id = $3", kind, subject_id)
    invariant(winner is not None, f"voucher of {kind.name} {subject_id}: conflict, no row")
    return winner


# ---- verification ----------------------------------------------------------------------------

def voucher_id_in_pdf(pdf: bytes) -> int:
    """The voucher id a voucher file carries; INVALID_ARGUMENT on `pdf` if none."""
    found = _MARKER.search(pdf) if pdf.startswith(b"%PDF-") else None
    if found is None:
        raise InvalidArgument([FieldViolation("pdf", "not a voucher PDF: it carries no"
                                                     " voucher id")])
    voucher_id = int(found.group(1))
    if not 1 <= voucher_id <= INT64_MAX:  # an edited file: no voucher has such an id
        raise InvalidArgument([FieldViolation("pdf", f"the voucher id it carries, {voucher_id},"
                                                     " is out of range")])
    return voucher_id


async def verify(pool: asyncpg.Pool, platform_id: int, voucher_id: int,
                 pdf: bytes | None) -> Verification:
    async with pool.acquire() as conn:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            voucher = await _load(conn, platform_id, "voucher_id = $2", voucher_id)
            if voucher is None:
                raise _not_found("voucher_id", voucher_id)
            problems = await _problems(conn, voucher, pdf)
    return Verification(voucher, tuple(problems[:VOUCHER_PROBLEMS_MAX]), pdf is not None)


async def _problems(conn: asyncpg.Connection, voucher: Voucher,
                    pdf: bytes | None) -> list[Problem]:
    problems: list[Problem] = []
    if digest(voucher.content) != voucher.digest:
        problems.append(Problem(ProblemKind.VOUCHER_EDITED,
                                f"content hashes to {digest(voucher.content).hex()},"
                                f" the stored digest is {voucher.digest_hex}"))
    if pdf is not None and hashlib.sha256(pdf).digest() != voucher.pdf_sha256:
        problems.append(Problem(ProblemKind.PDF_EDITED,
                                f"file SHA-256 {hashlib.sha256(pdf).hexdigest()}, issued"
                                f" {voucher.pdf_sha256.hex()}"))
    issued = json.loads(voucher.content)
    now = await _body(conn, voucher.platform_id, voucher.kind, voucher.subject_id,
                      for_issue=False)
    if now is None:
        problems.append(Problem(ProblemKind.RECORD_EDITED,
                                f"{voucher.kind.name} {voucher.subject_id} no longer exists"))
    else:
        body = {k: v for k, v in issued.items() if k in now}
        for path, what in differences(facts(body), facts(now)):
            problems.append(Problem(_class_of(path), f"{path}: {what}"))
    problems += await _chain_problems(conn, issued.get("journal_batches", []))
    problems += await _reference_problems(conn, voucher, issued.get("references"))
    return problems


def _class_of(path: str) -> ProblemKind:
    if path.startswith("transfers"):
        return ProblemKind.JOURNAL_EDITED
    if path.startswith("journal_batches"):
        return ProblemKind.CHAIN_BROKEN
    return ProblemKind.RECORD_EDITED


async def _chain_problems(conn: asyncpg.Connection,
                          batches: list[dict[str, Any]]) -> list[Problem]:
    """Each batch the voucher lists: its rows against its rows digest, its hash against the
    batch before it, the batch after it against its hash."""
    problems: list[Problem] = []
    for b in batches:
        seq = b["seq"]
        rows = await conn.fetch(
            f"SELECT {journal.TRANSFER_COLUMNS} FROM transfers WHERE transfer_id >= $1"
            " AND transfer_id < $2 ORDER BY transfer_id",
            b["batch_id"] * BATCH_SPAN, (b["batch_id"] + 1) * BATCH_SPAN)
        h = hashlib.sha256()
        for row in rows:
            h.update(journal.records_digest_line(row))
        links = {r["seq"]: r for r in await conn.fetch(
            "SELECT seq, rows_digest, hash FROM journal_batches WHERE seq BETWEEN $1 AND $2",
            seq - 1, seq + 1)}
        this = links.get(seq)
        if this is None:
            problems.append(Problem(ProblemKind.CHAIN_BROKEN, f"batch seq {seq} is gone"))
            continue
        if h.digest() != this["rows_digest"]:
            problems.append(Problem(ProblemKind.JOURNAL_EDITED,
                                    f"batch {b['batch_id']} (seq {seq}): its rows hash to"
                                    f" {h.hexdigest()}, its rows digest is"
                                    f" {this['rows_digest'].hex()}"))
        prev = links[seq - 1]["hash"] if seq - 1 in links else _GENESIS
        if hashlib.sha256(prev + this["rows_digest"]).digest() != this["hash"]:
            problems.append(Problem(ProblemKind.CHAIN_BROKEN,
                                    f"batch seq {seq} does not link to seq {seq - 1}"))
        after = links.get(seq + 1)
        if after is not None and hashlib.sha256(
                this["hash"] + after["rows_digest"]).digest() != after["hash"]:
            problems.append(Problem(ProblemKind.CHAIN_BROKEN,
                                    f"batch seq {seq + 1} does not link to seq {seq}"))
    return problems


async def _reference_problems(conn: asyncpg.Connection, voucher: Voucher,
                              reference: dict[str, Any] | None) -> list[Problem]:
    if reference is None:
        return []
    first = await _load(conn, voucher.platform_id, "voucher_id = $2", reference["voucher_id"])
    if first is None:
        return [Problem(ProblemKind.REFERENCE_BROKEN,
                        f"voucher {reference['voucher_id']} is gone")]
    if first.digest_hex != reference["digest"] or digest(first.content) != first.digest:
        return [Problem(ProblemKind.REFERENCE_BROKEN,
                        f"voucher {first.voucher_id}: recorded digest {reference['digest']},"
                        f" stored {first.digest_hex}, its content hashes to"
                        f" {digest(first.content).hex()}")]
    return []
