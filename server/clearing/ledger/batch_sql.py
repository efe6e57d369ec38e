"""The ledger writer's one write statement, and the encoding of a batch's writes
(`clearing.ledger.batch.BatchWrites`) as its parameters.

Every write of a batch goes in ONE statement (one round trip): the journal rows, the
touched accounts' new totals, the older pending transfers acted on, the idempotency records
and the hash-chain link. Every array column travels as ONE PostgreSQL array literal
(`int_array`, `bool_array`, `text_array`, `bytea_array`: `$n::text::bigint[]`,
`$n::text::text[]`, ...), joined in C by str.join; asyncpg encodes a list parameter element
by element, with a Python-level `isinstance(element, collections.abc.Iterable)` check on
each (integers, strings and bytes alike), which was 7% of the server's samples in a
SplitBatch profile for the text and bytea columns alone.

But for long values: PostgreSQL parses a literal character by character (about 20 ns a
character here), so the idempotency records' first responses (a split's: about 800 bytes,
1,600 hex characters) go in asyncpg's binary bytea[] encoding: in 600-row statements,
5.8-7.5 µs of PostgreSQL's CPU a row in binary against 31.7-42.9 µs as a literal, and less
of the server's too (3.9-4.4 against 8.4-9.2 µs; `python -m bench.long_values`,
2026-12-08, bench/README.md "What the split path gained since 11-22, and long values in
binary").
"""

from __future__ import annotations

from operator import attrgetter
from typing import Iterable, Mapping

from clearing.errors import invariant
from clearing.ledger import journal
from clearing.ledger.batch import BatchWrites

# Data-modifying CTEs cannot see each other's rows, so a pending transfer created in this
# batch is inserted with its final remainder instead of being updated.
WRITE_BATCH = """
WITH t AS (
  INSERT INTO transfers (transfer_id, platform_id, batch_id, request_id, debit_account_id,
                         credit_account_id, amount, currency_code, mode, pending_id,
                         pending_remaining, pending_state, memo, created_at)
  SELECT u.id, u.p, $1, u.r, u.d, u.c, u.a, u.cur, u.m, u.pid, u.rem, u.st, u.memo, $2
  FROM unnest($3::text::bigint[], $4::text::bigint[], $5::text::text[],
              $6::text::bigint[], $7::text::bigint[], $8::text::bigint[], $9::text::text[],
              $10::text::smallint[], $11::text::bigint[], $12::text::bigint[],
              $13::text::smallint[], $14::text::text[])
       AS u(id, p, r, d, c, a, cur, m, pid, rem, st, memo)
  RETURNING 1
), acc AS (
  UPDATE accounts AS a
  SET debits_posted = u.dp, credits_posted = u.cp,
      debits_pending = u.dpend, credits_pending = u.cpend
  FROM unnest($15::text::bigint[], $16::text::bigint[], $17::text::bigint[],
              $18::text::bigint[], $19::text::bigint[])
       AS u(account_id, dp, cp, dpend, cpend)
  WHERE a.account_id = u.account_id
  RETURNING 1
), pend AS (
  UPDATE transfers AS x SET pending_remaining = u.remaining, pending_state = u.state
  FROM unnest($20::text::bigint[], $21::text::bigint[], $22::text::smallint[])
       AS u(transfer_id, remaining, state)
  WHERE x.transfer_id = u.transfer_id
  RETURNING 1
), req AS (
  INSERT INTO requests (platform_id, request_id, method, payload_hash, ok, result_ids,
                        error_code, error_reason, error_message, response, error)
  SELECT u.p, u.r, u.m, u.h, u.ok, string_to_array(u.ids, ',')::bigint[], u.c, u.rs, u.msg,
         u.resp, u.err
  FROM unnest($23::text::bigint[], $24::text::text[], $25::text::text[],
              $26::text::bytea[], $27::text::bool[], $28::text::text[], $29::text::text[],
              $30::text::text[], $31::text::text[], $34::bytea[], $35::text::text[])
       AS u(p, r, m, h, ok, ids, c, rs, msg, resp, err)
  ON CONFLICT DO NOTHING
  RETURNING 1
), head AS (
  UPDATE journal_head SET seq = seq + 1, hash = sha256(hash || $32::bytea)
  WHERE $33::integer > 0
  RETURNING seq, hash
), link AS (
  INSERT INTO journal_batches (seq, batch_id, transfer_count, rows_digest, hash)
  SELECT seq, $1, $33, $32, hash FROM head
  RETURNING 1
)
SELECT (SELECT count(*) FROM req) AS recorded, (SELECT count(*) FROM t) AS journal,
       (SELECT count(*) FROM acc) AS balances, (SELECT count(*) FROM pend) AS pendings,
       (SELECT count(*) FROM link) AS links
"""


# Lock late (CLEARING_WRITER_LOCK_LATE=1): the batch is written in two statements. First
# everything that locks no shared row: the journal rows, the older pending transfers acted
# on (locked by the writer already) and the idempotency records; the sinks' attachments
# follow. Then, last before COMMIT, the rows every batch contends for: the touched
# accounts' balance rows, locked in id order (`lk`; the debited ones that may not go
# negative are locked by the writer already), then the journal head (hash chain: its
# sub-select makes it wait for `lk`), then the balances updated by increments (`deltas`:
# they wait for `head`), so an account read without a lock ends exact whatever committed
# since it was read. A writer that waits for a balance row does not hold the head. An
# account whose status changed since it was read is not updated (`a.status = u.st`): fewer
# balances than sent, and the writer redoes the batch (clearing.ledger.writer, "Lock
# late").
WRITE_ROWS = """
WITH t AS (
  INSERT INTO transfers (transfer_id, platform_id, batch_id, request_id, debit_account_id,
                         credit_account_id, amount, currency_code, mode, pending_id,
                         pending_remaining, pending_state, memo, created_at)
  SELECT u.id, u.p, $1, u.r, u.d, u.c, u.a, u.cur, u.m, u.pid, u.rem, u.st, u.memo, $2
  FROM unnest($3::text::bigint[], $4::text::bigint[], $5::text::text[],
              $6::text::bigint[], $7::text::bigint[], $8::text::bigint[], $9::text::text[],
              $10::text::smallint[], $11::text::bigint[], $12::text::bigint[],
              $13::text::smallint[], $14::text::text[])
       AS u(id, p, r, d, c, a, cur, m, pid, rem, st, memo)
  RETURNING 1
), pend AS (
  UPDATE transfers AS x SET pending_remaining = u.remaining, pending_state = u.state
  FROM unnest($15::text::bigint[], $16::text::bigint[], $17::text::smallint[])
       AS u(transfer_id, remaining, state)
  WHERE x.transfer_id = u.transfer_id
  RETURNING 1
), req AS (
  INSERT INTO requests (platform_id, request_id, method, payload_hash, ok, result_ids,
                        error_code, error_reason, error_message, response, error)
  SELECT u.p, u.r, u.m, u.h, u.ok, string_to_array(u.ids, ',')::bigint[], u.c, u.rs, u.msg,
         u.resp, u.err
  FROM unnest($18::text::bigint[], $19::text::text[], $20::text::text[],
              $21::text::bytea[], $22::text::bool[], $23::text::text[], $24::text::text[],
              $25::text::text[], $26::text::text[], $27::bytea[], $28::text::text[])
       AS u(p, r, m, h, ok, ids, c, rs, msg, resp, err)
  ON CONFLICT DO NOTHING
  RETURNING 1
)
SELECT (SELECT count(*) FROM req) AS recorded, (SELECT count(*) FROM t) AS journal,
       (SELECT count(*) FROM pend) AS pendings
"""
WRITE_LATE = """
WITH lk AS (
  SELECT account_id FROM accounts WHERE account_id = ANY($4::text::bigint[])
  ORDER BY account_id FOR UPDATE
), head AS (
  UPDATE journal_head SET seq = seq + 1, hash = sha256(hash || $2::bytea)
  WHERE $3::integer > 0 AND (SELECT count(*) FROM lk) >= 0
  RETURNING seq, hash
), link AS (
  INSERT INTO journal_batches (seq, batch_id, transfer_count, rows_digest, hash)
  SELECT seq, $1, $3, $2, hash FROM head
  RETURNING 1
), acc AS (
  UPDATE accounts AS a
  SET debits_posted = a.debits_posted + u.dp, credits_posted = a.credits_posted + u.cp,
      debits_pending = a.debits_pending + u.dpend,
      credits_pending = a.credits_pending + u.cpend
  FROM (SELECT * FROM unnest($4::text::bigint[], $5::text::bigint[], $6::text::bigint[],
                             $7::text::bigint[], $8::text::bigint[], $9::text::smallint[])
                      AS v(account_id, dp, cp, dpend, cpend, st)
        ORDER BY account_id) AS u
  WHERE a.account_id = u.account_id AND a.status = u.st
    AND (SELECT count(*) FROM head) >= 0
  RETURNING 1
)
SELECT (SELECT count(*) FROM acc) AS balances, (SELECT count(*) FROM link) AS links
"""


def int_array(values: Iterable[int]) -> str:
    """Integers as one PostgreSQL array literal, for a `$n::text::bigint[]` parameter:
    asyncpg encodes a list parameter element by element (an abc.Iterable check each), which
    costs the writer's process about twice the time of printing the list, while the
    server parses the literal in C. The list's repr ("[1, -2]": PostgreSQL allows the
    spaces), a quarter cheaper than joining str() of each: so the elements are plain ints
    (a bool or an IntEnum member would print its repr, which PostgreSQL refuses)."""
    return "{" + repr(values if type(values) is list else list(values))[1:-1] + "}"


def bool_array(values: Iterable[bool]) -> str:
    """Booleans as one PostgreSQL array literal (see `int_array`)."""
    return "{" + ",".join("t" if v else "f" for v in values) + "}"


def text_array(values: list[str | None]) -> str:
    """Strings (None: NULL) as one PostgreSQL array literal, for a `$n::text::text[]`
    parameter (see `int_array`): every element double-quoted (so an empty string, "NULL",
    commas, braces and spaces are themselves), a double quote or backslash escaped with a
    backslash (the only escapes a quoted element has)."""
    if not values:
        return "{}"
    try:
        probe = "".join(values)
    except TypeError:  # a None among them: element by element
        return "{" + ",".join("NULL" if v is None else text_array([v])[1:-1]
                              for v in values) + "}"
    if '"' in probe or "\\" in probe:
        values = [v.replace("\\", "\\\\").replace('"', '\\"') for v in values]
    return '{"' + '","'.join(values) + '"}'


def bytea_array(values: list[bytes | None]) -> str:
    """Byte strings (None: NULL) as one PostgreSQL array literal of hex-format bytea
    elements, for a `$n::text::bytea[]` parameter (see `int_array`)."""
    if not values:
        return "{}"
    if None not in values:
        return '{"\\\\x' + '","\\\\x'.join([v.hex() for v in values]) + '"}'
    return "{" + ",".join("NULL" if v is None else '"\\\\x' + v.hex() + '"'
                          for v in values) + "}"


def _ints(field: str, rows: list) -> str:
    return int_array(map(attrgetter(field), rows))


def _enums(field: str, rows: list) -> str:
    return int_array(map(int, map(attrgetter(field), rows)))


def _texts(field: str, rows: list) -> str:
    return text_array(list(map(attrgetter(field), rows)))


def _bytes(field: str, rows: list) -> str:
    return bytea_array(list(map(attrgetter(field), rows)))


def write_arguments(writes: BatchWrites) -> tuple:
    """The parameters of `WRITE_BATCH` ($1 .. $35) for a batch's writes."""
    rows, balances, updates = writes.journal, writes.balances, writes.pending_updates
    requests = writes.requests
    digest = journal.records_digest(rows) if rows else b""
    return (
        writes.batch_id, writes.created_at,
        # $3 .. $14: the journal rows
        _ints("transfer_id", rows), _ints("platform_id", rows), _texts("request_id", rows),
        _ints("debit_account_id", rows), _ints("credit_account_id", rows),
        _ints("amount_minor", rows), _texts("currency_code", rows), _enums("mode", rows),
        _ints("pending_id", rows), _ints("pending_remaining", rows),
        _enums("pending_state", rows), _texts("memo", rows),
        # $15 .. $19: the touched accounts' new totals
        _ints("account_id", balances), _ints("debits_posted", balances),
        _ints("credits_posted", balances), _ints("debits_pending", balances),
        _ints("credits_pending", balances),
        # $20 .. $22: the older pending transfers acted on
        _ints("transfer_id", updates), _ints("remaining", updates), _enums("state", updates),
        # $23 .. $31: the idempotency records
        _ints("platform_id", requests), _texts("request_id", requests),
        _texts("method", requests), _bytes("payload_hash", requests),
        bool_array(r.ok for r in requests),
        text_array([",".join(map(str, r.result_ids)) for r in requests]),
        _texts("error_code", requests), _texts("error_reason", requests),
        _texts("error_message", requests),
        # $32, $33: the hash-chain link (none for a batch without rows)
        digest, len(rows),
        # $34, $35: the records' first responses (binary: see the module docstring) and
        # recorded failures
        [r.response for r in requests], _texts("error", requests),
    )


def rows_arguments(writes: BatchWrites) -> tuple:
    """The parameters of `WRITE_ROWS` ($1 .. $28) for a batch's writes."""
    rows, updates, requests = writes.journal, writes.pending_updates, writes.requests
    return (
        writes.batch_id, writes.created_at,
        # $3 .. $14: the journal rows
        _ints("transfer_id", rows), _ints("platform_id", rows), _texts("request_id", rows),
        _ints("debit_account_id", rows), _ints("credit_account_id", rows),
        _ints("amount_minor", rows), _texts("currency_code", rows), _enums("mode", rows),
        _ints("pending_id", rows), _ints("pending_remaining", rows),
        _enums("pending_state", rows), _texts("memo", rows),
        # $15 .. $17: the older pending transfers acted on
        _ints("transfer_id", updates), _ints("remaining", updates), _enums("state", updates),
        # $18 .. $28: the idempotency records
        _ints("platform_id", requests), _texts("request_id", requests),
        _texts("method", requests), _bytes("payload_hash", requests),
        bool_array(r.ok for r in requests),
        text_array([",".join(map(str, r.result_ids)) for r in requests]),
        _texts("error_code", requests), _texts("error_reason", requests),
        _texts("error_message", requests), [r.response for r in requests],
        _texts("error", requests),
    )


# What an account's totals were when the batch read it: (debits_posted, credits_posted,
# debits_pending, credits_pending, status).
Initial = tuple[int, int, int, int, int]


def late_arguments(writes: BatchWrites, initial: Mapping[int, Initial]) -> tuple:
    """The parameters of `WRITE_LATE` ($1 .. $9): the hash-chain link, and each touched
    account's increments since it was read (`initial`), with the status it was read with."""
    rows, balances = writes.journal, writes.balances
    digest = journal.records_digest(rows) if rows else b""
    deltas = []
    for a in balances:
        dp, cp, dpend, cpend, st = initial[a.account_id]
        deltas.append((a.account_id, a.debits_posted - dp, a.credits_posted - cp,
                       a.debits_pending - dpend, a.credits_pending - cpend, st))
    return (writes.batch_id, digest, len(rows),
            *(int_array(d[i] for d in deltas) for i in range(6)))


# `late_and_commit`: WRITE_LATE and COMMIT sent as ONE message (simple query protocol), so
# PostgreSQL commits as soon as the balances are updated, without waiting for the writer's
# event loop to read the answer and send COMMIT: the rows' locks are held for the statement
# and the WAL flush only. A stale status (fewer balances updated than sent) raises
# LATE_STALE, which aborts the transaction before the COMMIT of the same message runs.
LATE_STALE = "CLW01"  # SQLSTATE: an account read without a lock changed its status
LATE_LINKS = "CLW02"  # SQLSTATE: the chain link count is not the batch's (a bug)
_LATE_BLOCK = """DO $late$
DECLARE balances bigint; links bigint;
BEGIN
{statement}
  SELECT (SELECT count(*) FROM acc), (SELECT count(*) FROM link) INTO balances, links;
  IF links <> {links} THEN
    RAISE EXCEPTION 'clearing writer: % chain links written, {links} expected', links
      USING ERRCODE = '{links_code}';
  END IF;
  IF balances <> {balances} THEN
    RAISE EXCEPTION 'clearing writer: % of {balances} balances updated (a status changed)',
      balances USING ERRCODE = '{stale_code}';
  END IF;
END
$late$;
COMMIT"""


def late_and_commit(writes: BatchWrites, initial: Mapping[int, Initial]) -> str:
    """`WRITE_LATE` with its parameters as literals (integers, integer array literals and
    the digest decoded from hex: nothing a caller typed), checked in PL/pgSQL, then COMMIT: one
    simple-protocol message (see LATE_STALE)."""
    args = late_arguments(writes, initial)
    literals = [str(int(args[0])), f"decode('{args[1].hex()}', 'hex')", str(int(args[2]))]
    for array in args[3:]:
        invariant(set(array) <= set("{}, -0123456789"), "an integer array literal")
        literals.append(f"'{array}'")
    statement = WRITE_LATE.rsplit("SELECT (SELECT count(*) FROM acc)", 1)[0].strip()
    for n in range(len(literals), 0, -1):  # $9 before $1
        statement = statement.replace(f"${n}", literals[n - 1])
    return _LATE_BLOCK.format(statement=statement, links=1 if writes.journal else 0,
                              balances=len(writes.balances), links_code=LATE_LINKS,
                              stale_code=LATE_STALE)


def check_row_counts(counts: Mapping[str, int], writes: BatchWrites) -> None:
    """`WRITE_ROWS`'s counts but `recorded` (see `check_counts`) are the batch's."""
    invariant(counts["journal"] == len(writes.journal)
              and counts["pendings"] == len(writes.pending_updates),
              f"batch row counts differ: {dict(counts)}")


def check_counts(counts: Mapping[str, int], writes: BatchWrites) -> None:
    """The write statement's counts (but `recorded`, which the writer checks first: fewer
    means another process recorded a request id first) are the batch's."""
    invariant(counts["journal"] == len(writes.journal)
              and counts["balances"] == len(writes.balances)
              and counts["pendings"] == len(writes.pending_updates)
              and counts["links"] == (1 if writes.journal else 0),
              f"batch write counts differ: {dict(counts)}")
