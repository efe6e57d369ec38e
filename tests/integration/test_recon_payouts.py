"""A bank's payout result file against the platform's payouts and bank transfers, through
the generated stubs against real PostgreSQL: payouts paid by the payout worker to the bank
simulator, the simulator's file of the day (clearing.dev.bank_file), one discrepancy of
every payout class injected (in the file as the bank would send it, or in the platform's
records), the run's counts, sums and funds against information worked out here; a malformed
file refused whole; the same file again answering the first run; the simulator's file
written by `clearing recon bank-file` and imported by `clearing recon import-payouts`; a day
of bank failures, lost answers and retries reconciling clean (file and sweep)."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import os
import sys
from zoneinfo import ZoneInfo

import grpc
import pytest

from clearing.clock import Clock
from clearing.config import BankSimSettings
from clearing.dev.bank_file import BANK, payout_result_file
from clearing.recon.model import PAYOUT_FILE_CLASSES
from clearing.v1 import payout_pb2 as ppb
from clearing.v1 import reconciliation_pb2 as rpb
from tests.recon_support import class_totals
from tests.payout_worker_support import FINAL
from tests.recon_sweep_support import own_database, payout_party, world
from tests.support import CALL_TIMEOUT_S, ROOT, cli, details, rid

C = rpb
ZONE = ZoneInfo("Asia/Shanghai")


def _rows(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode())))


def _csv(rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode()


async def _import(w, data: bytes, day: dt.date, request_id: str | None = None):
    header = rpb.StatementHeader(request_id=request_id or rid(), channel=BANK,
                                 settlement_date=day.isoformat(),
                                 format=rpb.STATEMENT_FORMAT_BANK_PAYOUTS)
    messages = [rpb.ImportStatementRequest(header=header),
                rpb.ImportStatementRequest(chunk=data)]
    return await w.recon.ImportStatement(iter(messages), metadata=w.metadata,
                                         timeout=CALL_TIMEOUT_S)


async def _paid(w, count: int) -> list[ppb.Payout]:
    account = await payout_party(w, 100_000)
    made = [await w.payouts.request(account, 1_000 + 100 * i) for i in range(count)]
    return [await w.payouts.wait_state(p.payout_id, (ppb.PAYOUT_STATE_SUCCEEDED,))
            for p in made]


async def test_a_day_of_payouts_with_every_class(pg_admin_dsn, redis_url, redis_prefix):
    async with own_database(pg_admin_dsn) as dsn, world(dsn, redis_url, redis_prefix) as w:
        paid = await _paid(w, 7)
        day = dt.datetime.now(ZONE).date()
        ids = [p.payout_id for p in paid]
        data = await payout_result_file(w.running.pool, Clock(), day, payout_ids=ids)
        header, *lines = _rows(data)
        assert header == ["bank", "bank_reference", "end_to_end_id", "payout_id",
                          "amount_minor", "currency_code", "status", "value_date"]
        by_payout = {int(r[3]): r for r in lines}
        assert sorted(by_payout) == sorted(ids) and len(lines) == 7
        for p in paid:
            r = by_payout[p.payout_id]
            assert r[0] == BANK and r[2] == f"po{p.payout_id}-t1-a1"
            assert r[4:] == [str(p.net_amount_minor), "CNY", "SUCCEEDED", day.isoformat()]

        p1, p2, p3, p4, p5, p6, p7 = paid
        n = {p.payout_id: p.net_amount_minor for p in paid}
        by_payout[p4.payout_id][4] = str(n[p4.payout_id] + 10)     # AMOUNT_MISMATCH
        by_payout[p5.payout_id][6] = "FAILED"                      # STATUS_MISMATCH
        del by_payout[p6.payout_id]                                # MISSING_IN_BANK_FILE
        await w.sql("UPDATE bank_transfers SET currency_code = 'USD' WHERE payout_id = $1",
                    p7.payout_id)                                  # CURRENCY_MISMATCH
        unknown = [BANK, "SIMUNKNOWN1", "po999999-t1-a1", "999999", "777", "CNY",
                   "SUCCEEDED", day.isoformat()]                   # UNKNOWN_BANK_TRANSFER
        body = [by_payout[i] for i in ids if i in by_payout]
        body.insert(2, list(by_payout[p1.payout_id]))              # DUPLICATE (after p1)
        body.append(unknown)
        run = (await _import(w, _csv([header] + body), day)).run

        assert class_totals(run) == {
            C.RECONCILIATION_CLASS_MATCHED: (3, n[p1.payout_id] + n[p2.payout_id]
                                             + n[p3.payout_id], 0),
            C.RECONCILIATION_CLASS_AMOUNT_MISMATCH: (1, n[p4.payout_id] + 10, 10),
            C.RECONCILIATION_CLASS_STATUS_MISMATCH: (1, n[p5.payout_id], -n[p5.payout_id]),
            C.RECONCILIATION_CLASS_MISSING_IN_BANK_FILE: (1, n[p6.payout_id], -n[p6.payout_id]),
            C.RECONCILIATION_CLASS_CURRENCY_MISMATCH: (1, n[p7.payout_id], n[p7.payout_id]),
            C.RECONCILIATION_CLASS_DUPLICATE: (1, n[p1.payout_id], n[p1.payout_id]),
            C.RECONCILIATION_CLASS_UNKNOWN_BANK_TRANSFER: (1, 777, 777)}
        assert set(class_totals(run)) == {int(c) for c in PAYOUT_FILE_CLASSES}
        stated = sum(n.values()) - n[p5.payout_id] - n[p6.payout_id] + 10 + n[p1.payout_id] + 777
        ours = sum(n.values()) - n[p7.payout_id]
        assert (run.statement_settled_minor, run.split_settled_minor) == (stated, ours)
        assert run.difference_minor == run.explained_minor == stated - ours
        assert run.discrepancy_count == 6 and run.statement.line_count == 8
        assert run.statement.format == rpb.STATEMENT_FORMAT_BANK_PAYOUTS

        found = await w.discrepancies(run_id=run.run_id)
        got = {d.reconciliation_class: d for d in found}
        assert len(found) == len(got) == 6
        assert sum(d.difference_minor for d in found) == run.difference_minor
        missing = got[C.RECONCILIATION_CLASS_MISSING_IN_BANK_FILE]
        assert (missing.payout_id, missing.order_id, missing.line_number,
                missing.split_amount_minor, missing.statement_amount_minor) == (
            p6.payout_id, f"po{p6.payout_id}-t1-a1", 0, n[p6.payout_id], 0)
        assert missing.bank_transfer_id == p6.transfers[0].bank_transfer_id
        status = got[C.RECONCILIATION_CLASS_STATUS_MISMATCH]
        assert (status.payout_id, status.description) == (
            p5.payout_id, "the bank says FAILED, the attempt is in state 4")
        assert status.line_type == rpb.STATEMENT_LINE_TYPE_PAYOUT
        stranger = got[C.RECONCILIATION_CLASS_UNKNOWN_BANK_TRANSFER]
        assert (stranger.payout_id, stranger.bank_transfer_id, stranger.channel_transaction_id,
                stranger.line_number) == (999999, 0, "SIMUNKNOWN1", 9)
        assert got[C.RECONCILIATION_CLASS_DUPLICATE].line_number == 4

        again = await _import(w, _csv([header] + body), day)
        assert again.replayed and again.run.run_id == run.run_id
        # the bank paid this money out: it is not a channel's money to settle
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await w.recon.PostSettlement(rpb.PostSettlementRequest(
                request_id="settle-a-bank-file", run_id=run.run_id), metadata=w.metadata,
                timeout=CALL_TIMEOUT_S)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert details(refused.value)[0] == "SETTLEMENT_NOT_APPLICABLE"


async def test_a_malformed_payout_file_is_refused_whole(pg_admin_dsn, redis_url,
                                                        redis_prefix):
    async with own_database(pg_admin_dsn) as dsn, world(dsn, redis_url, redis_prefix) as w:
        day = dt.datetime.now(ZONE).date()
        header = "bank,bank_reference,end_to_end_id,payout_id,amount_minor,currency_code," \
                 "status,value_date"
        good = f"{BANK},SIM1,po1-t1-a1,1,100,CNY,SUCCEEDED,{day}"
        bad = [f"OTHERBANK,SIM2,po2-t1-a1,2,100,CNY,SUCCEEDED,{day}",
               f"{BANK},SIM3,po3-t1-a1,3,0,CNY,PAID,{day}"]
        data = "\n".join([header, good, *bad]).encode()
        try:
            await _import(w, data, day)
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
            reason, fields = details(err)
            assert reason == "STATEMENT_MALFORMED"
            assert fields == ["lines[3].bank", "lines[4].amount_minor", "lines[4].status"]
        else:
            raise AssertionError("a malformed payout file was imported")
        assert await w.sql("SELECT 1 FROM recon_statement_lines") == []


async def test_the_simulators_file_by_the_commands(pg_admin_dsn, redis_url, redis_prefix,
                                                   tmp_path):
    async with own_database(pg_admin_dsn) as dsn, world(dsn, redis_url, redis_prefix) as w:
        paid = await _paid(w, 3)
        day = dt.datetime.now(ZONE).date().isoformat()
        [platform] = await w.sql("SELECT name FROM platforms WHERE platform_id = $1",
                                 w.platform_id)
        path = tmp_path / "banksim.csv"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "clearing.cli", "recon", "bank-file", "--date", day,
            "--platform", platform["name"], "--out", str(path), cwd=ROOT,
            env={**os.environ, "CLEARING_DATABASE_URL": dsn},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, err.decode()
        assert len(_rows(path.read_bytes())) == 1 + 3
        key = w.metadata[0][1].removeprefix("Bearer ")
        code, out, err = await cli(w.running, key, "recon", "import-payouts", str(path),
                                   "--date", day, "--quiet")
        assert code == 0, err
        run = json.loads(out)["run"]
        total = sum(p.net_amount_minor for p in paid)
        assert [(t["reconciliation_class"], int(t["item_count"]), int(t["amount_minor"]))
                for t in run["class_totals"]] == [("RECONCILIATION_CLASS_MATCHED", 3, total)]
        assert int(run["statement_settled_minor"]) == int(run["split_settled_minor"]) == total


async def test_a_chaotic_bank_day_is_clean(pg_admin_dsn, redis_url, redis_prefix):
    """Failures, lost answers and retries at the bank: once every payout is final, the
    bank's file matches the platform's records line for line and the sweep finds nothing."""
    chaos = BankSimSettings(failure_rate=0.3, timeout_rate=0.2, seed=11)
    async with own_database(pg_admin_dsn) as dsn, \
            world(dsn, redis_url, redis_prefix, bank=chaos) as w:
        account = await payout_party(w, 100_000)
        made = [await w.payouts.request(account, 1_000 + 100 * i) for i in range(12)]
        final = [await w.payouts.wait_state(p.payout_id, FINAL) for p in made]
        assert ppb.PAYOUT_STATE_SUCCEEDED in {p.state for p in final}
        day = dt.datetime.now(ZONE).date()
        data = await payout_result_file(w.running.pool, Clock(), day,
                                        payout_ids=[p.payout_id for p in made])
        run = (await _import(w, data, day)).run
        paid = sum(p.paid_minor for p in final)
        assert [t.reconciliation_class for t in run.class_totals] == [
            C.RECONCILIATION_CLASS_MATCHED]
        assert run.statement_settled_minor == run.split_settled_minor == paid
        attempts = sum(t.attempt_count for p in final for t in p.transfers)
        assert 12 < run.statement.line_count <= attempts  # failed attempts: FAILED lines
        swept = await w.sweeper().tick()
        assert (swept.checked, swept.inserted) == ({"split": 0, "payout": 12},
                                                   {"split": 0, "payout": 0})
