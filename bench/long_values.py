"""What a column costs as one array literal (`$n::text::bytea[]`, `clearing.ledger.batch_sql`)
against asyncpg's binary array encoding (`$n::bytea[]`), by value length: the CPU of the
server (this process) and of PostgreSQL (the connection's backend, from /proc) per row, for
multi-row INSERTs like the ledger writer's.

    .venv/bin/python -m bench.long_values                 # ~30 s; 600-row statements
    .venv/bin/python -m bench.long_values --statements 5  # a smoke run

A database of its own (CLEARING_BENCH_DATABASE_URL's server, else 127.0.0.1:5432), dropped
at the end. Found 2026-12-08: PostgreSQL parses a literal a character at a time, so a split's
first response (about 800 bytes, 1,600 hex characters) cost it 31.7-42.9 µs a row as a
literal against 5.8-7.5 µs in binary; for values of a few dozen characters the two are
alike (bench/README.md "What the split path gained since 11-22, and long values in
binary"). The two forms run in turn, the first alternating round by round.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import time

import asyncpg

from bench.harness import LOCAL_PG, _replace_db
from clearing import db
from clearing.ledger.batch_sql import bytea_array, text_array

CASES = (  # name, SQL type, value length, literal encoder
    ("bytea, 800 bytes (a split's first response)", "bytea", 800, bytea_array),
    ("bytea, 32 bytes (a payload hash)", "bytea", 32, bytea_array),
    ("text, 400 characters", "text", 400, text_array),
    ("text, 17 characters (an order id)", "text", 17, text_array),
)


def _values(kind: str, length: int, rows: int) -> list:
    if kind == "bytea":
        return [os.urandom(length) for _ in range(rows)]
    return [secrets.token_urlsafe(length)[:length] for _ in range(rows)]


def _backend_cpu_s(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _measure(conn: asyncpg.Connection, sql: str, arg, statements: int,
                   rows: int) -> tuple[float, float]:
    """(server µs, PostgreSQL µs) of CPU per row."""
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    pg0, py0 = _backend_cpu_s(pid), time.process_time()
    for _ in range(statements):
        await conn.execute(sql, arg())
    py1, pg1 = time.process_time(), _backend_cpu_s(pid)
    per = 1e6 / (statements * rows)
    return (py1 - py0) * per, (pg1 - pg0) * per


async def run(a: argparse.Namespace) -> list[dict]:
    admin = os.environ.get("CLEARING_BENCH_DATABASE_URL") or LOCAL_PG
    name = f"clearing_bench_longvalues_{secrets.token_hex(4)}"
    await db.ensure_database(admin, name)
    out: list[dict] = []
    try:
        conn = await asyncpg.connect(_replace_db(admin, name))
        try:
            await conn.execute("CREATE TABLE v (b bytea, t text)")
            for round_ in range(a.rounds):
                for label, kind, length, literal in CASES:
                    col = "b" if kind == "bytea" else "t"
                    values = _values(kind, length, a.rows)
                    forms = {
                        "literal": (f"INSERT INTO v ({col}) SELECT unnest($1::text::{kind}[])",
                                    lambda: literal(values)),
                        "binary": (f"INSERT INTO v ({col}) SELECT unnest($1::{kind}[])",
                                   lambda: values)}
                    order = ("literal", "binary") if round_ % 2 == 0 else ("binary", "literal")
                    got = {form: await _measure(conn, *forms[form], a.statements, a.rows)
                           for form in order}
                    lit, binary = got["literal"], got["binary"]
                    out.append({"round": round_ + 1, "case": label,
                                "literal_server_us": round(lit[0], 2),
                                "literal_postgres_us": round(lit[1], 2),
                                "binary_server_us": round(binary[0], 2),
                                "binary_postgres_us": round(binary[1], 2)})
                    await conn.execute("TRUNCATE v")
        finally:
            await conn.close()
    finally:
        await db.drop_database(admin, name)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.long_values",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=600, help="rows per statement (600)")
    ap.add_argument("--statements", type=int, default=40, help="statements per case (40)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of every case (2)")
    a = ap.parse_args(argv)
    if not (1 <= a.rows <= 10_000 and 1 <= a.statements <= 1_000 and 1 <= a.rounds <= 10):
        ap.error("--rows 1..10000, --statements 1..1000, --rounds 1..10")
    rows = asyncio.run(run(a))
    print(f"CPU per row, {a.rows}-row INSERTs, {a.statements} statements a case "
          "(server = this process; PostgreSQL = its backend):")
    print(f"{'round':>5}  {'case':<46} {'literal srv/pg µs':>18} {'binary srv/pg µs':>18}")
    for r in rows:
        print(f"{r['round']:>5}  {r['case']:<46} "
              f"{r['literal_server_us']:>8.2f} / {r['literal_postgres_us']:<7.2f} "
              f"{r['binary_server_us']:>8.2f} / {r['binary_postgres_us']:<7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
