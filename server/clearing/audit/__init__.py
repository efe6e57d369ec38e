"""The audit trail (docs/audit.md): one append-only, hash-chained record of every operator
action, written by `record(conn, actor, ...)` inside the transaction of the change it
records, so there is never a change without its record nor a record without its change.

Each platform's events form one chain: hash = sha256(previous hash || canonical line of the
event), from 32 zero bytes. `audit_head` holds the last link of each platform; `record`
locks that row, so one platform's operator actions are ordered (they are rare, and a split
never writes here). `verify` recomputes a platform's chain (or every chain).

Call `record` last in the transaction, after the change, and never wait for the ledger
writer after it: the head's lock is then held for the commit only, and a writer batch (whose
`AuditSink` takes the same lock for a Transfer) never waits on a transaction that waits on
the writer.

Nothing sensitive is written: `sanitize` masks bank account numbers and drops keys, secrets
and hashes of them from the before/after documents, whoever the caller.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from clearing import logs
from clearing.ledger.model import Principal

GENESIS = bytes(32)
CORE_ADMIN_ROLE = "core-admin"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_CURSOR_PREFETCH = 2_000
# Keys whose values never enter the trail (a key, a secret, a digest of one).
_DROPPED = ("secret", "password", "api_key", "key_hash", "token", "plaintext")
# Keys whose values are bank account numbers: masked 6225****1234.
_MASKED = ("account_number", "bank_account_number", "number")
# The subject (RFC 4514) of the current call's client certificate under mutual TLS ("" with
# none), set by the interceptor (clearing.api.interceptor.CERT_SUBJECT is this variable):
# what `Actor.of` records as the certificate.
CERT_SUBJECT: contextvars.ContextVar[str] = contextvars.ContextVar("clearing_cert_subject",
                                                                   default="")


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acted: a platform's API key (key_id > 0) or the core's admin at the CLI
    (key_id 0). `cert_subject` is the client certificate's subject under mutual TLS."""

    platform_id: int
    key_id: int
    roles: tuple[str, ...]
    cert_subject: str = ""

    @classmethod
    def of(cls, principal: Principal, cert_subject: str = "") -> "Actor":
        """The actor of an authenticated call; the certificate subject, unless given, is
        the current call's (CERT_SUBJECT)."""
        return cls(principal.platform_id, principal.key_id, tuple(sorted(principal.roles)),
                   cert_subject or CERT_SUBJECT.get())

    @classmethod
    def core_admin(cls, platform_id: int) -> "Actor":
        """The core's operator at the `clearing` CLI (direct database access)."""
        return cls(platform_id, 0, (CORE_ADMIN_ROLE,))


@dataclass(frozen=True, slots=True)
class Event:
    event_id: int
    platform_id: int
    seq: int
    key_id: int
    key_prefix: str
    roles: tuple[str, ...]
    cert_subject: str
    method: str
    resource: str
    before: Any
    after: Any
    request_id: str
    created_at: dt.datetime
    hash: bytes


def mask(number: str) -> str:
    """A bank account number as the trail shows it: 6225****1234."""
    number = str(number)
    if len(number) > 8:
        return f"{number[:4]}****{number[-4:]}"
    return "****" + (number[-4:] if len(number) > 6 else "")


def sanitize(value: Any) -> Any:
    """A JSON-able copy of `value` with bank numbers masked and secrets dropped."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            name = str(k).lower()
            if any(d in name for d in _DROPPED) or name == "key":
                continue
            if name in _MASKED and isinstance(v, (str, int)) and v != "":
                out[str(k)] = mask(str(v))
            else:
                out[str(k)] = sanitize(v)
        return out
    if isinstance(value, (list, tuple)):
        return [sanitize(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "name") and hasattr(value, "value"):  # an enum
        return value.name
    return str(value)


def canonical(doc: Any) -> str:
    """The one text of a JSON document the hash covers (sorted keys, no spaces)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _micros(ts: dt.datetime) -> int:
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _text(s: str) -> str:
    return f"{len(s)}:{s}"


def line(*, platform_id: int, seq: int, key_id: int, key_prefix: str, roles: tuple[str, ...],
         cert_subject: str, method: str, resource: str, before: str, after: str,
         request_id: str, created_at: dt.datetime) -> bytes:
    """An event's canonical line (length-prefixed texts: no field can forge another)."""
    return "|".join((
        str(platform_id), str(seq), str(key_id), _text(key_prefix),
        _text(",".join(roles)), _text(cert_subject), _text(method), _text(resource),
        _text(before), _text(after), _text(request_id), str(_micros(created_at)),
    )).encode()


def link(prev: bytes, event_line: bytes) -> bytes:
    return hashlib.sha256(prev + event_line).digest()


_SQL_HEAD = (
    "INSERT INTO audit_head (platform_id, seq, hash) VALUES ($1, 0, $2)"
    " ON CONFLICT (platform_id) DO UPDATE SET seq = audit_head.seq"
    " RETURNING seq, hash, (SELECT key_prefix FROM api_keys WHERE key_id = $3),"
    " clock_timestamp()")
_SQL_APPEND = """
WITH e AS (
  INSERT INTO audit_events (platform_id, seq, key_id, key_prefix, roles, cert_subject, method,
                            resource, before, after, request_id, created_at, hash)
  VALUES ($1, $2, nullif($3, 0), $4, $5, $6, $7, $8, $9::jsonb, $10::jsonb, $11, $12, $13)
  RETURNING event_id
)
UPDATE audit_head SET seq = $2, hash = $13 WHERE platform_id = $1
RETURNING (SELECT event_id FROM e)
"""


async def record(conn: asyncpg.Connection, actor: Actor, method: str, resource: str, *,
                 before: Any = None, after: Any = None, request_id: str = "",
                 platform_id: int | None = None, at: dt.datetime | None = None) -> int:
    """Append one event to the platform's chain; returns its event id. Call it inside the
    transaction of the change it records (it fails outside one). `platform_id` is the
    platform the change belongs to (the actor's by default); `request_id` is the current
    call's by default; `at` the database's clock once the head is locked (so a chain's
    times never go back) unless given."""
    if not conn.is_in_transaction():
        raise RuntimeError("audit.record must run in the transaction of the change it records")
    pid = actor.platform_id if platform_id is None else platform_id
    if not request_id:
        call = logs.CALL.get()
        request_id = call[1] if call is not None else ""
    head = await conn.fetchrow(_SQL_HEAD, pid, GENESIS, actor.key_id or None)
    seq = head[0] + 1
    prefix = head[2] or ""
    b = canonical(sanitize(before)) if before is not None else ""
    a = canonical(sanitize(after)) if after is not None else ""
    created_at = at or head[3]  # the database's clock, read under the head's lock
    h = link(head[1], line(platform_id=pid, seq=seq, key_id=actor.key_id, key_prefix=prefix,
                           roles=actor.roles, cert_subject=actor.cert_subject, method=method,
                           resource=resource, before=b, after=a, request_id=request_id,
                           created_at=created_at))
    return await conn.fetchval(
        _SQL_APPEND, pid, seq, actor.key_id, prefix, list(actor.roles), actor.cert_subject,
        method, resource, b or None, a or None, request_id, created_at, h)


# ---- verification ----------------------------------------------------------------------------

@dataclass(slots=True)
class ChainReport:
    """The audit chains' verification: `event_count` events in `platform_count` chains;
    `first_bad_seq` (with its platform) the first event whose link does not recompute."""

    ok: bool = True
    event_count: int = 0
    platform_count: int = 0
    first_bad_seq: int = 0
    first_bad_platform_id: int = 0
    bad_platform_ids: list[int] = field(default_factory=list)

    def bad(self, platform_id: int, seq: int) -> None:
        self.ok = False
        if platform_id not in self.bad_platform_ids:
            self.bad_platform_ids.append(platform_id)
        if not self.first_bad_seq:
            self.first_bad_seq, self.first_bad_platform_id = seq, platform_id


_SQL_EVENTS = (
    "SELECT platform_id, seq, coalesce(key_id, 0), key_prefix, roles, cert_subject, method,"
    " resource, before::text, after::text, request_id, created_at, hash FROM audit_events"
    " WHERE $1::bigint IS NULL OR platform_id = $1 ORDER BY platform_id, seq")


def _stored(doc: str | None) -> str:
    return canonical(json.loads(doc)) if doc is not None else ""


async def verify(pool: asyncpg.Pool, platform_id: int | None) -> ChainReport:
    async with pool.acquire() as conn:
        return await verify_on(conn, platform_id)


async def verify_on(conn: asyncpg.Connection, platform_id: int | None) -> ChainReport:
    """Recompute the platform's chain (every platform's with None) in one snapshot: every
    link, the positions 1..n without a gap, and the head against the last event."""
    report = ChainReport()
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        heads = {r[0]: (r[1], r[2]) for r in await conn.fetch(
            "SELECT platform_id, seq, hash FROM audit_head"
            " WHERE $1::bigint IS NULL OR platform_id = $1", platform_id)}
        current, prev, n = None, GENESIS, 0
        seen: set[int] = set()

        def close(pid: int) -> None:
            head = heads.get(pid)
            if head is None:
                report.bad(pid, 1)
            elif head[0] != n:  # events lost after the head's position, or forged beyond it
                report.bad(pid, min(head[0], n) + 1)
            elif head[1] != prev:
                report.bad(pid, n)

        async for r in conn.cursor(_SQL_EVENTS, platform_id, prefetch=_CURSOR_PREFETCH):
            pid = r[0]
            if pid != current:
                if current is not None:
                    close(current)
                current, prev, n = pid, GENESIS, 0
                seen.add(pid)
            n += 1
            report.event_count += 1
            expected = link(prev, line(
                platform_id=pid, seq=r[1], key_id=r[2], key_prefix=r[3], roles=tuple(r[4]),
                cert_subject=r[5], method=r[6], resource=r[7], before=_stored(r[8]),
                after=_stored(r[9]), request_id=r[10], created_at=r[11]))
            if r[1] != n or expected != r[12]:
                report.bad(pid, r[1])
            prev = r[12]
        if current is not None:
            close(current)
        for pid, (seq, _) in heads.items():  # a head whose events are all gone
            if pid not in seen and seq != 0:
                report.bad(pid, 1)
        report.platform_count = len(seen)
    return report


# ---- reading ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Filter:
    resource: str = ""         # exact, or a prefix ending in '/' or ':' (e.g. "account:")
    key_id: int = 0
    method: str = ""
    start: dt.datetime | None = None
    end: dt.datetime | None = None


_COLUMNS = ("event_id, platform_id, seq, coalesce(key_id, 0), key_prefix, roles, cert_subject,"
            " method, resource, before::text, after::text, request_id, created_at, hash")


def _event(r) -> Event:
    return Event(r[0], r[1], r[2], r[3], r[4], tuple(r[5]), r[6], r[7], r[8],
                 json.loads(r[9]) if r[9] is not None else None,
                 json.loads(r[10]) if r[10] is not None else None, r[11], r[12], bytes(r[13]))


async def list_events(conn: asyncpg.Connection, platform_id: int | None, flt: Filter, *,
                      after_event_id: int = 0, limit: int) -> list[Event]:
    """Events of the platform (every platform's with None) matching `flt`, in event-id
    order from `after_event_id` (exclusive), at most `limit`."""
    where = ["event_id > $1", "($2::bigint IS NULL OR platform_id = $2)"]
    args: list[Any] = [after_event_id, platform_id]
    if flt.resource:
        args.append(flt.resource)
        if flt.resource.endswith((":", "/")):
            where.append(f"starts_with(resource, ${len(args)})")
        else:
            where.append(f"resource = ${len(args)}")
    if flt.key_id:
        args.append(flt.key_id)
        where.append(f"key_id = ${len(args)}")
    if flt.method:
        args.append(flt.method)
        where.append(f"method = ${len(args)}")
    if flt.start is not None:
        args.append(flt.start)
        where.append(f"created_at >= ${len(args)}")
    if flt.end is not None:
        args.append(flt.end)
        where.append(f"created_at < ${len(args)}")
    args.append(limit)
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM audit_events WHERE {' AND '.join(where)}"
        f" ORDER BY event_id LIMIT ${len(args)}", *args)
    return [_event(r) for r in rows]


# ---- Transfer: recorded by the ledger writer's sink, in the batch's transaction ------------

SINK_NAME = "audit"
# A batch's events in one statement, then the heads moved (each platform's once).
_SQL_HEADS = (
    "INSERT INTO audit_head (platform_id, seq, hash) SELECT p, 0, $2 FROM unnest($1::bigint[]) p"
    " ON CONFLICT (platform_id) DO UPDATE SET seq = audit_head.seq"
    " RETURNING platform_id, seq, hash, clock_timestamp()")
_SQL_APPEND_MANY = """
WITH e AS (
  INSERT INTO audit_events (platform_id, seq, key_id, key_prefix, roles, cert_subject, method,
                            resource, before, after, request_id, created_at, hash)
  SELECT u.p, u.seq, nullif(u.k, 0), u.kp, string_to_array(u.r, ','), u.cs, u.m, u.res,
         NULL, u.a::jsonb, u.rid, u.at, u.h
  FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[],
              $7::text[], $8::text[], $9::text[], $10::text[], $11::timestamptz[],
              $12::bytea[]) AS u(p, seq, k, kp, r, cs, m, res, a, rid, at, h)
  RETURNING 1
)
UPDATE audit_head h SET seq = x.seq, hash = x.hash
FROM unnest($13::bigint[], $14::bigint[], $15::bytea[]) AS x(p, seq, hash)
WHERE h.platform_id = x.p
RETURNING (SELECT count(*) FROM e)
"""


class AuditSink:
    """The ledger writer's sink for postings made by Transfer (attachment: the caller's
    `Actor`): one event per posting, all of a batch's in one statement, in the batch's
    transaction (three round trips per batch, none per posting). Only Transfer postings
    name this sink; a batch of splits never reaches it (no audit write, no lock of an
    audit head on the split path)."""

    async def write(self, conn: asyncpg.Connection, committed: list) -> None:
        platforms = sorted({posting.platform_id for posting, _ in committed})
        heads = {r[0]: [r[1], bytes(r[2]), r[3]] for r in await conn.fetch(
            _SQL_HEADS, platforms, GENESIS)}  # locked in platform order: no deadlock
        key_ids = sorted({p.attachment.key_id for p, _ in committed
                          if isinstance(p.attachment, Actor) and p.attachment.key_id})
        prefixes = dict(await conn.fetch(
            "SELECT key_id, key_prefix FROM api_keys WHERE key_id = ANY($1::bigint[])",
            key_ids)) if key_ids else {}
        rows: list[tuple] = []
        for posting, records in committed:
            actor = posting.attachment
            if not isinstance(actor, Actor):
                raise TypeError("the audit sink got a foreign attachment")
            r = records[0]
            head = heads[posting.platform_id]
            head[0] += 1
            after = canonical(sanitize({
                "transfer_id": r.transfer_id, "debit_account_id": r.debit_account_id,
                "credit_account_id": r.credit_account_id, "amount_minor": r.amount_minor,
                "currency_code": r.currency_code, "mode": r.mode.name,
                "pending_transfer_id": r.pending_id, "memo": r.memo}))
            prefix = prefixes.get(actor.key_id, "")
            resource = f"transfer:{r.transfer_id}"
            head[1] = link(head[1], line(
                platform_id=posting.platform_id, seq=head[0], key_id=actor.key_id,
                key_prefix=prefix, roles=actor.roles, cert_subject=actor.cert_subject,
                method=posting.method, resource=resource, before="", after=after,
                request_id=posting.request_id, created_at=r.created_at))
            rows.append((posting.platform_id, head[0], actor.key_id, prefix,
                         ",".join(actor.roles), actor.cert_subject, posting.method, resource,
                         after, posting.request_id, r.created_at, head[1]))
        moved = [(pid, h[0], h[1]) for pid, h in heads.items()]
        written = await conn.fetchval(_SQL_APPEND_MANY, *_columns(rows, 12),
                                      *_columns(moved, 3))
        if written != len(rows):
            raise RuntimeError(f"audit sink wrote {written} events of {len(rows)}")


def _columns(rows: list[tuple], width: int) -> list[list]:
    return [[row[i] for row in rows] for i in range(width)] if rows else [[]] * width
