"""The SplitBatch baseline, one process (uvloop, asyncpg), driven by bench.driver with
bench.loadgen's protocol (config JSON, READY, GO, result JSON).

`callers` connections, closed loop: each inserts one batch of `batch_size` splits per
transaction (synchronous commit, the database's default) and starts the next when it has
committed. A batch is the rows the server writes for that many splits, into copies of its
tables (`bl_transfers`, `bl_splits`, `bl_split_legs`, and `bl_requests` when the server
writes an idempotency row per split): one journal row and one split_legs row per leg (4
legs for a government order, 3 otherwise, the same mix as the load), one splits row with a
body of the server's mean size. One multi-row INSERT ... SELECT FROM unnest(...) per table,
like the server's writer. No evaluation, no hash chain, no balance updates, no gRPC.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import time
from collections import Counter

from bench import loadgen

INS_TRANSFERS = """
INSERT INTO bl_transfers (transfer_id, platform_id, batch_id, request_id, debit_account_id,
                          credit_account_id, amount, currency_code, mode, created_at)
SELECT t, $1, $2, r, $3, c, a, 'CNY', 1, $4
FROM unnest($5::bigint[], $6::text[], $7::bigint[], $8::bigint[]) AS u(t, r, c, a)"""
INS_SPLITS = """
INSERT INTO bl_splits (split_id, platform_id, order_id, request_id, payload_hash, status,
                       rule_set_name, rule_set_version, currency_code, amount_minor,
                       channel_fee_minor, distributed_minor, subsidy_minor, fee_minor,
                       counter_values, body, created_at, updated_at)
SELECT s, $1, o, r, h, 1, 'b2b', 1, 'CNY', a, 0, a, 0, 0, '[]'::jsonb, b, $2, $2
FROM unnest($3::bigint[], $4::text[], $5::text[], $6::bytea[], $7::bigint[], $8::bytea[])
  AS u(s, o, r, h, a, b)"""
INS_LEGS = """
INSERT INTO bl_split_legs (split_id, leg_index, kind, account_id, debit_account_id,
                           amount_minor, held_minor, released_minor, hold_reason, transfer_ids)
SELECT s, i, 1, c, $1, a, 0, a, 0, ARRAY[t]
FROM unnest($2::bigint[], $3::int[], $4::bigint[], $5::bigint[], $6::bigint[])
  AS u(s, i, c, a, t)"""
INS_REQUESTS = """
INSERT INTO bl_requests (platform_id, request_id, method, payload_hash, ok, result_ids)
SELECT $1, r, 'Split', h, true, ARRAY[s]
FROM unnest($2::text[], $3::bytea[], $4::bigint[]) AS u(r, h, s)"""


class Batches:
    def __init__(self, cfg: dict, worker: int) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg["seed"] + worker)
        self.prefix = f"{cfg['rid_prefix']}{worker:03d}-"
        self.batch_no = (worker + 1) * 10_000_000
        self.orders = 0
        a = cfg["accounts"]
        self.custodial = a["CUSTODIAL"]
        self.gov_account = a["GOV_ACCOUNT"]
        self.plain_accounts = [a["PLAT_001"], a["SUP_2025001"], a["LOGISTICS_B"]]
        self.body_len = cfg["body_bytes"]

    def next(self) -> dict:
        """Column arrays of one batch of splits."""
        self.batch_no += 1
        span = self.cfg["batch_span"]
        pos = 0
        t_ids, t_rids, t_credit, t_amount = [], [], [], []
        s_ids, s_orders, s_rids, s_hash, s_amount, s_body = [], [], [], [], [], []
        l_split, l_index, l_credit, l_amount, l_tid = [], [], [], [], []
        rng = self.rng
        body_len = self.body_len
        for _ in range(self.cfg["batch_size"]):
            self.orders += 1
            tag = f"{self.prefix}{self.orders:010x}"
            rid = "r" + tag
            amount = rng.randint(100_000, 90_000_000)
            gov = rng.random() < self.cfg["gov_fraction"]
            credits = ([self.gov_account] if gov else []) + self.plain_accounts
            legs = len(credits)
            each = amount // legs
            split_id = self.batch_no * span + pos
            for i, credit in enumerate(credits):
                tid = self.batch_no * span + pos
                pos += 1
                leg_amount = each if i else amount - each * (legs - 1)
                t_ids.append(tid)
                t_rids.append(rid)
                t_credit.append(credit)
                t_amount.append(leg_amount)
                l_split.append(split_id)
                l_index.append(i)
                l_credit.append(credit)
                l_amount.append(leg_amount)
                l_tid.append(tid)
            s_ids.append(split_id)
            s_orders.append("o" + tag)
            s_rids.append(rid)
            s_hash.append(os.urandom(32))
            s_amount.append(amount)
            s_body.append(os.urandom(body_len))
        return {"batch_id": self.batch_no, "t": (t_ids, t_rids, t_credit, t_amount),
                "s": (s_ids, s_orders, s_rids, s_hash, s_amount, s_body),
                "l": (l_split, l_index, l_credit, l_amount, l_tid)}


async def insert(conn, cfg: dict, b: dict, custodial: int) -> None:
    pid = cfg["platform_id"]
    now = dt.datetime.now(dt.timezone.utc)
    async with conn.transaction():
        await conn.execute(INS_TRANSFERS, pid, b["batch_id"], custodial, now, *b["t"])
        await conn.execute(INS_SPLITS, pid, now, *b["s"])
        await conn.execute(INS_LEGS, custodial, *b["l"])
        if cfg["requests_rows"]:
            s_ids, _, s_rids, s_hash, _, _ = b["s"]
            await conn.execute(INS_REQUESTS, pid, s_rids, s_hash, s_ids)


async def main_async(cfg: dict) -> dict:
    import asyncpg

    conns = [await asyncpg.connect(cfg["dsn"]) for _ in range(cfg["concurrency"])]
    try:
        start = await loadgen.ready_then_go()
        warm_end = start + cfg["warmup_s"]
        end = warm_end + cfg["duration_s"]
        perf = time.perf_counter
        rec = loadgen.Recorder()
        warmup_codes: Counter[str] = Counter()
        sent = 0

        async def caller(i: int) -> None:
            nonlocal sent
            gen = Batches(cfg, i)
            conn = conns[i]
            while True:
                batch = gen.next()  # built before the clock starts: the client's own cost
                t0 = perf()
                if t0 >= end:
                    return
                sent += 1
                try:
                    await insert(conn, cfg, batch, gen.custodial)
                    code, detail = "OK", ""
                except Exception as exc:  # noqa: BLE001 - counted; the run then fails
                    code, detail = f"CLIENT_{type(exc).__name__}", str(exc)
                t1 = perf()
                if warm_end <= t1 <= end:
                    if code == "OK":
                        rec.ok(t1 - t0)
                    else:
                        rec.error(code, detail)
                elif code != "OK":
                    warmup_codes[code] += 1

        await asyncio.sleep(max(0.0, start - perf()))
        sampler = asyncio.ensure_future(loadgen.window_cpu_s(warm_end, end))
        await asyncio.gather(*(caller(i) for i in range(cfg["concurrency"])))
        return {"codes": dict(rec.codes), "lat_us": rec.lat_us, "error_samples": rec.error_samples,
                "warmup_codes": dict(warmup_codes), "resp_bytes": 0, "sent": sent,
                "window_s": cfg["duration_s"], "cpu_s": await sampler}
    finally:
        for c in conns:
            await c.close()


def main() -> None:
    loadgen.run_child(main_async)


if __name__ == "__main__":
    main()
