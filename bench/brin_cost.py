"""What migration 0016's BRIN indexes on created_at cost the writer: batches of journal rows
inserted the way the writer's one statement inserts them (unnest of arrays, 1000 rows a
statement, one transaction each) into two copies of `transfers` with its indexes, one with
the BRIN index and one without, alternately, in one run.

    .venv/bin/python -m bench.brin_cost [--batches 300] [--rows 1000] [--rounds 3]

Uses a scratch database `clearing_brin_<random>` on CLEARING_BENCH_DATABASE_URL (default the
local PostgreSQL), dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import secrets
import statistics
import time

import asyncpg

LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/postgres"

_TABLE = """
CREATE TABLE {name} (
    transfer_id bigint PRIMARY KEY, platform_id bigint NOT NULL, batch_id bigint NOT NULL,
    request_id text NOT NULL, debit_account_id bigint NOT NULL,
    credit_account_id bigint NOT NULL, amount bigint NOT NULL, currency_code char(3) NOT NULL,
    mode smallint NOT NULL, memo text NOT NULL DEFAULT '', created_at timestamptz NOT NULL);
CREATE INDEX ON {name} (debit_account_id, transfer_id);
CREATE INDEX ON {name} (credit_account_id, transfer_id);
"""

_INSERT = """
INSERT INTO {name} (transfer_id, platform_id, batch_id, request_id, debit_account_id,
                    credit_account_id, amount, currency_code, mode, created_at)
SELECT u.id, 1, $1, u.r, 1, u.c, u.a, 'CNY', 1, $2
FROM unnest($3::bigint[], $4::text[], $5::bigint[], $6::bigint[]) AS u(id, r, c, a)
"""


async def _batch(conn, name: str, batch: int, rows: int) -> float:
    ids = [batch * 65536 + i for i in range(rows)]
    t0 = time.perf_counter()
    async with conn.transaction():
        await conn.execute(_INSERT.format(name=name), batch, dt.datetime.now(dt.timezone.utc),
                           ids, [f"r{batch}-{i}" for i in range(rows)],
                           [2 + i % 500 for i in range(rows)], [100 + i for i in range(rows)])
    return time.perf_counter() - t0


async def main(args) -> None:
    admin = os.environ.get("CLEARING_BENCH_DATABASE_URL") or LOCAL_PG
    name = f"clearing_brin_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    head, _, tail = admin.partition("?")
    dsn = head.rsplit("/", 1)[0] + "/" + name + (("?" + tail) if tail else "")
    try:
        db = await asyncpg.connect(dsn)
        await db.execute(_TABLE.format(name="plain") + _TABLE.format(name="brin")
                         + "CREATE INDEX ON brin USING brin (created_at);")
        times: dict[str, list[float]] = {"plain": [], "brin": []}
        batch = 1
        for _ in range(args.rounds):
            for table in ("plain", "brin"):
                for _ in range(args.batches):
                    times[table].append(await _batch(db, table, batch, args.rows))
                    batch += 1
        await db.close()
    finally:
        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.close()
    plain, brin = (statistics.median(times[t]) * 1000 for t in ("plain", "brin"))
    print(f"{args.rounds * args.batches} statements of {args.rows} journal rows per table,"
          f" alternating; median ms per statement")
    print(f"  without BRIN {plain:8.2f} ms   with BRIN {brin:8.2f} ms   ratio {brin / plain:.3f}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, default=300)
    p.add_argument("--rows", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(p.parse_args()))
