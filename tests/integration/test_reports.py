"""ExportReport through the generated stubs against real PostgreSQL: each report's rows and
totals exact (worked out here), tied to the ledger by SQL on the journal and by GetBalance
(computed here, not by the report code), CSV and XLSX read back, the stream chunked, roles,
invalid input."""

from __future__ import annotations

import datetime as dt

import asyncpg
import grpc
import pytest

from clearing.v1 import report_pb2 as pb
from clearing.v1 import reconciliation_pb2 as rpb
from clearing.v1 import reconciliation_pb2_grpc
from tests.recon_support import Line, canonical_csv
from tests.report_support import (EXPECTED_LEGS, SPLIT_TOTAL, Reports, b2b_world, day_bounds,
                                  read_csv, summary_rows, three_splits, today, totals)
from tests.split_support import new_key
from tests.support import CALL_TIMEOUT_S, details, rid


async def _journal(database_url: str, sql: str, *args):
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def test_split_summary_rows_totals_and_the_ledger(channel, client, platform, database_url):
    world = await b2b_world(channel, client, database_url, platform)
    await three_splits(world)
    day = today()
    for fmt in (pb.REPORT_FORMAT_CSV, pb.REPORT_FORMAT_XLSX):
        rows = await world.reports.rows("split_summary", day, day, fmt)
        assert summary_rows(rows) == EXPECTED_LEGS
        total = totals(rows)["CNY"]
        assert (int(total["leg_count"]), int(total["amount_minor"])) == (10, SPLIT_TOTAL)
        assert total["amount"] == "852994.00"
        detail = next(r for r in rows if r["external_ref"] == "GOV_ACCOUNT")
        assert (detail["amount_minor"], detail["amount"]) == ("1700000", "17000.00")
    # the ledger: what the journal moved out of the custodial account in the day (every
    # leg has a transfer), and per receiver what it was credited
    lo, hi = day_bounds(day, day)
    moved = await _journal(
        database_url, "SELECT credit_account_id, sum(amount) AS s FROM transfers"
        " WHERE platform_id = $1 AND debit_account_id = $2 AND mode IN (1, 2)"
        " AND created_at >= $3 AND created_at < $4 GROUP BY 1",
        platform.platform_id, world.ids["custodial"], lo, hi)
    by_account = {r["credit_account_id"]: r["s"] for r in moved}
    assert sum(by_account.values()) == SPLIT_TOTAL
    for ref in ("PLAT_001", "SUP_2025001", "LOGISTICS_B", "GOV_ACCOUNT"):
        assert by_account[world.ids[ref]] == sum(
            amount for (r, _, _), (_, amount) in EXPECTED_LEGS.items() if r == ref)
    # another day has nothing
    yesterday = day - dt.timedelta(days=1)
    rows = await world.reports.rows("split_summary", yesterday, yesterday)
    assert rows == []


async def test_transaction_flow_ties_to_balances_and_journal(channel, client, platform,
                                                             database_url):
    world = await b2b_world(channel, client, database_url, platform)
    await three_splits(world)
    # a movement that is not a split: the platform pays the supplier 1.00
    await client.transfer(world.ids["PLAT_001"], world.ids["SUP_2025001"], 100)
    day = today()
    rows = [r for r in await world.reports.rows("transaction_flow", day, day)
            if r["line"] == "detail"]
    assert [r["external_ref"] for r in rows] == [
        "custodial", "PLAT_001", "SUP_2025001", "LOGISTICS_B", "GOV_ACCOUNT"]
    lo, hi = day_bounds(day, day)
    sums = await _journal(
        database_url, "SELECT a.account_id,"
        " (SELECT coalesce(sum(amount), 0) FROM transfers t WHERE t.debit_account_id ="
        "  a.account_id AND mode IN (1, 3) AND created_at >= $2 AND created_at < $3) AS d,"
        " (SELECT coalesce(sum(amount), 0) FROM transfers t WHERE t.credit_account_id ="
        "  a.account_id AND mode IN (1, 3) AND created_at >= $2 AND created_at < $3) AS c,"
        " (SELECT coalesce(sum(CASE WHEN t.credit_account_id = a.account_id THEN amount"
        "  ELSE -amount END), 0) FROM transfers t WHERE (t.credit_account_id = a.account_id"
        "  OR t.debit_account_id = a.account_id) AND mode IN (1, 3) AND created_at < $2)"
        "  AS opening FROM accounts a WHERE platform_id = $1",
        platform.platform_id, lo, hi)
    journal = {r["account_id"]: r for r in sums}
    for r in rows:
        account = int(r["account_id"])
        balance = await client.balance(account)
        assert int(r["closing_minor"]) == balance.posted_minor
        assert int(r["opening_minor"]) == journal[account]["opening"] == 0
        assert int(r["debits_minor"]) == journal[account]["d"]
        assert int(r["credits_minor"]) == journal[account]["c"]
    sup = next(r for r in rows if r["external_ref"] == "SUP_2025001")
    assert (sup["credit_count"], sup["credits_minor"]) == ("4", str(62_475_000 + 69_580
                                                                     + 140_000 + 100))
    total = next(r for r in await world.reports.rows("transaction_flow", day, day)
                 if r["line"] == "total")
    assert total["debits_minor"] == total["credits_minor"] == str(SPLIT_TOTAL + 100)
    assert total["opening_minor"] == total["closing_minor"] == "0"
    # the next day opens with today's closing balances and moves nothing; yesterday is empty
    tomorrow = day + dt.timedelta(days=1)
    after = {r["external_ref"]: r for r in await world.reports.rows(
        "transaction_flow", tomorrow, tomorrow) if r["line"] == "detail"}
    for r in rows:
        nxt = after[r["external_ref"]]
        assert nxt["opening_minor"] == nxt["closing_minor"] == r["closing_minor"]
        assert nxt["debits_minor"] == nxt["credits_minor"] == "0"
    week = [r for r in await world.reports.rows(
        "transaction_flow", day - dt.timedelta(days=6), day) if r["line"] == "detail"]
    assert [(r["opening_minor"], r["closing_minor"]) for r in week] == [
        (r["opening_minor"], r["closing_minor"]) for r in rows]


async def test_channel_analysis_from_splits_then_from_the_statement(channel, client, platform,
                                                                    database_url):
    world = await b2b_world(channel, client, database_url, platform)
    made = await three_splits(world)
    day = today()
    rows = [r for r in await world.reports.rows("channel_analysis", day, day)
            if r["line"] == "detail"]
    got = {r["channel"]: (r["source"], r["payment_count"], r["amount_minor"],
                          r["channel_fee_minor"], r["settled_minor"]) for r in rows}
    assert got == {"ALIPAY": ("splits", "1", "100000", "600", "99400"),
                   "WECHAT_PAY": ("splits", "2", "85200000", "0", "85200000")}
    # settled (amount less the channel's fee) is what the splits moved out of custodial
    lo, hi = day_bounds(day, day)
    moved = (await _journal(
        database_url, "SELECT sum(amount) AS s FROM transfers WHERE platform_id = $1"
        " AND debit_account_id = $2 AND mode IN (1, 2) AND created_at >= $3"
        " AND created_at < $4", platform.platform_id, world.ids["custodial"], lo, hi))[0]["s"]
    total = next(r for r in await world.reports.rows("channel_analysis", day, day)
                 if r["line"] == "total")
    assert int(total["settled_minor"]) == moved == SPLIT_TOTAL
    # ALIPAY's statement of the day: its row now comes from the statement's lines
    b = made[1]
    paid = dt.datetime.now(dt.timezone.utc)
    data = canonical_csv([Line("ali-1", b.order_id, paid, 100_000, 600),
                          Line("ali-2", "refund-of-x", paid, 5_000, 30, line_type="refund")],
                         "ALIPAY", day)
    recon = reconciliation_pb2_grpc.ReconciliationServiceStub(channel)
    header = rpb.StatementHeader(request_id=rid(), channel="ALIPAY",
                                 settlement_date=day.isoformat(),
                                 format=rpb.STATEMENT_FORMAT_CANONICAL)
    await recon.ImportStatement(iter([rpb.ImportStatementRequest(header=header),
                                      rpb.ImportStatementRequest(chunk=data)]),
                                metadata=world.reports.metadata, timeout=CALL_TIMEOUT_S)
    rows = [r for r in await world.reports.rows("channel_analysis", day, day)
            if r["line"] == "detail"]
    got = {r["channel"]: (r["source"], r["payment_count"], r["refund_count"],
                          r["amount_minor"], r["channel_fee_minor"], r["settled_minor"])
           for r in rows}
    assert got["ALIPAY"] == ("statement", "1", "1", "95000", "570", "94430")
    assert got["WECHAT_PAY"][0] == "splits"


async def test_payouts_per_party(channel, client, platform, database_url):
    from tests.payout_support import Payouts, party, set_config
    from clearing.v1 import payout_pb2 as ppb

    payouts = Payouts(channel, platform.key)
    p = await party(client, payouts, funds=1_000_000)
    await set_config(database_url, platform.platform_id, fee_fixed_minor=200,
                     fee_account_id=p.fee, review_threshold_minor=300_000)
    first = await payouts.request(p.account, 100_000)
    second = await payouts.request(p.account, 50_000)
    big = await payouts.request(p.account, 400_000)  # above the review threshold
    checker = Payouts(channel, await new_key(database_url, platform.platform_id, {"approver"}))
    await checker.reject(big.payout_id)
    for done in (first, second):
        await payouts.wait_state(done.payout_id, {ppb.PAYOUT_STATE_SUCCEEDED})
    day = today()
    reports = Reports(channel, platform.key)
    rows = [r for r in await reports.rows("payouts", day, day) if r["line"] == "detail"]
    assert len(rows) == 1
    r = rows[0]
    assert (r["external_ref"], r["payout_count"], r["amount_minor"], r["fee_minor"],
            r["net_minor"], r["paid_minor"], r["succeeded_count"], r["failed_count"],
            r["failed_minor"], r["open_count"]) == (
        "merchant", "3", "550000", "600", "549400", "149600", "2", "1", "400000", "0")
    # the ledger: the holds opened on the party's account (net to custodial, fee to the fee
    # account), and what was posted out of it
    lo, hi = day_bounds(day, day)
    held = await _journal(
        database_url, "SELECT mode, sum(amount) AS s FROM transfers WHERE platform_id = $1"
        " AND debit_account_id = $2 AND mode IN (2, 3) AND created_at >= $3"
        " AND created_at < $4 GROUP BY mode", platform.platform_id, p.account, lo, hi)
    by_mode = {x["mode"]: x["s"] for x in held}
    assert by_mode[2] == 550_000
    assert by_mode[3] == 149_600 + 400  # the two paid payouts' nets and fees


async def test_the_stream_is_chunked(channel, client, platform, database_url):
    world = await b2b_world(channel, client, database_url, platform)
    for i in range(1500):  # 1500 accounts: a transaction flow of about 130 KB of CSV
        await client.open(f"acct-{i:05d}-{'x' * 40}")
    day = today()
    info, data, messages = await world.reports.export("transaction_flow", day, day)
    assert info.content_type.startswith("text/csv") and info.time_zone == "Asia/Shanghai"
    assert info.file_name == f"transaction_flow_{day}_{day}.csv"
    assert len(data) > 100_000
    chunks = [m for m in messages if m.chunk]
    assert len(chunks) >= 3 and max(len(m.chunk) for m in chunks) <= 64 * 1024
    assert messages[-1].done and messages[-1].row_count == 1505
    assert [m.done for m in messages].count(True) == 1
    rows = read_csv(data)
    assert len([r for r in rows if r["line"] == "detail"]) == 1505
    assert list(rows[0])[:4] == list(info.columns)[:4]


async def test_roles(channel, platform, database_url):
    day = today()
    for roles, ok in (({"gateway"}, False), ({"operator"}, True), ({"approver"}, True)):
        reports = Reports(channel, await new_key(database_url, platform.platform_id, roles))
        if ok:
            await reports.export("payouts", day, day)
            continue
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await reports.export("payouts", day, day)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("name, first, last, fmt, fields", [
    ("balance_sheet", "2026-01-01", "2026-01-01", pb.REPORT_FORMAT_CSV, ["report_name"]),
    ("payouts", "2026-13-01", "2026-01-01", pb.REPORT_FORMAT_CSV, ["from_date"]),
    ("payouts", "", "2026/01/01", pb.REPORT_FORMAT_CSV, ["from_date", "to_date"]),
    ("payouts", "2026-02-01", "2026-01-31", pb.REPORT_FORMAT_CSV, ["to_date"]),
    ("payouts", "2025-01-01", "2026-01-02", pb.REPORT_FORMAT_CSV, ["to_date"]),
    ("payouts", "2026-01-01", "2026-01-01", pb.REPORT_FORMAT_UNSPECIFIED, ["format"]),
    ("payouts", "2026-01-01", "2026-01-01", 7, ["format"]),
])
async def test_invalid_input(channel, platform, name, first, last, fmt, fields):
    reports = Reports(channel, platform.key)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await reports.export(name, first, last, fmt)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(err.value) == ("INVALID_ARGUMENT", fields)


async def test_a_year_is_allowed(channel, platform):
    reports = Reports(channel, platform.key)
    info, data, _ = await reports.export("payouts", "2024-01-01", "2024-12-31")
    assert read_csv(data) == [] and info.to_date == "2024-12-31"


async def test_split_minutes_per_local_minute_and_currency(channel, client, platform,
                                                           database_url):
    """split_minutes (the console's splits-per-minute chart): splits counted and summed per
    minute of their paid time in the platform's zone, worked out here from the paid times."""
    from tests.report_support import ZONE
    from tests.split_support import order

    world = await b2b_world(channel, client, database_url, platform)
    now = dt.datetime.now(ZONE).replace(second=0, microsecond=0)
    early, late = now - dt.timedelta(minutes=3), now - dt.timedelta(minutes=1)
    paid = [(early + dt.timedelta(seconds=5), 200_000), (early + dt.timedelta(seconds=59), 300_000),
            (late, 400_000)]
    for when, amount in paid:
        o = order(amount, channel="WECHAT_PAY", rule_set_name="b2b")
        o.paid_time.FromDatetime(when.astimezone(dt.timezone.utc))
        await world.splits.split(o)
    first, last = (now - dt.timedelta(days=1)).date(), now.date()
    rows = await world.reports.rows("split_minutes", first, last)
    got = [(r["minute"], int(r["split_count"]), int(r["amount_minor"]), r["amount"])
           for r in rows if r["line"] == "detail"]
    assert got == [(early.strftime("%Y-%m-%dT%H:%M"), 2, 500_000, "5000.00"),
                   (late.strftime("%Y-%m-%dT%H:%M"), 1, 400_000, "4000.00")]
    total = totals(rows)["CNY"]
    assert (int(total["split_count"]), int(total["amount_minor"])) == (3, 900_000)
    # a week at most (one row per minute, read from the splits): 7 days taken, 8 refused
    reports = Reports(channel, platform.key)
    await reports.export("split_minutes", "2026-01-01", "2026-01-07")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await reports.export("split_minutes", "2026-01-01", "2026-01-08")
    assert details(err.value) == ("INVALID_ARGUMENT", ["to_date"])
