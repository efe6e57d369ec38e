"""The match's rules line by line, against a reference written here from docs/recon.md (not
from the SQL): a statement of hand-picked cases the generated days do not hold (a duplicate
of a mismatched line, of a refund line, of a line of another order, of a line with no split;
a split of another day or channel named by a line; a split named by a refund line only; two
payments of one order; triples; a duplicate refund line naming another order, which must not
count in that order's refunded sum), imported through the API; then the same statement
matched again by the match's own statements with parallel workers forced on (a small
statement never gets them by cost), with and without workers to run them, and again on one
connection after matches that failed half-way, which must classify every line the same.

The rules, in order: DUPLICATE (an earlier line has the same type and channel transaction
id), MISSING_SPLIT (the platform has no split of the order), CURRENCY_MISMATCH, for a payment
AMOUNT_MISMATCH then FEE_MISMATCH against its split, for a refund AMOUNT_MISMATCH when the
order's refund lines that are not duplicates sum to more than the split has refunded, else
MATCHED; MISSING_IN_STATEMENT for each split of the channel paid on the day that no payment
line (duplicates included) names."""

from __future__ import annotations

import dataclasses
import datetime as dt

import asyncpg
import pytest

from clearing.recon import match, service
from clearing.v1 import reconciliation_pb2 as rpb
from clearing.v1 import split_pb2 as spb
from tests.recon_support import (CHANNEL, OTHER_CHANNEL, Line, ReconWorld, canonical_csv,
                                 local, statement_day)

C = rpb
FIRST_LINE = 2  # the header is line 1


@dataclasses.dataclass
class Split:
    order: spb.Order
    refunded_minor: int = 0
    of_the_day: bool = True  # of the statement's channel and paid on its day


def reference(lines: list[Line], splits: dict[str, Split]) -> dict[object, int]:
    """The class of every line (by line number) and of every split no payment line names
    (by order id: MISSING_IN_STATEMENT), from the rules in the module's docstring."""
    seen: set[tuple[str, str]] = set()
    duplicate: set[int] = set()
    for n, line in enumerate(lines, FIRST_LINE):
        key = (line.line_type, line.ctid)
        if key in seen:
            duplicate.add(n)
        seen.add(key)
    refunds: dict[str, int] = {}
    for n, line in enumerate(lines, FIRST_LINE):
        if line.line_type == "refund" and n not in duplicate:
            refunds[line.order_id] = refunds.get(line.order_id, 0) + line.amount_minor
    out: dict[object, int] = {}
    for n, line in enumerate(lines, FIRST_LINE):
        split = splits.get(line.order_id)
        if n in duplicate:
            out[n] = C.RECONCILIATION_CLASS_DUPLICATE
        elif split is None:
            out[n] = C.RECONCILIATION_CLASS_MISSING_SPLIT
        elif line.currency_code != split.order.currency_code:
            out[n] = C.RECONCILIATION_CLASS_CURRENCY_MISMATCH
        elif line.line_type == "payment" and line.amount_minor != split.order.amount_minor:
            out[n] = C.RECONCILIATION_CLASS_AMOUNT_MISMATCH
        elif (line.line_type == "payment"
              and line.fee_minor != split.order.channel_fee_minor):
            out[n] = C.RECONCILIATION_CLASS_FEE_MISMATCH
        elif line.line_type == "refund" and refunds[line.order_id] > split.refunded_minor:
            out[n] = C.RECONCILIATION_CLASS_AMOUNT_MISMATCH
        else:
            out[n] = C.RECONCILIATION_CLASS_MATCHED
    named = {line.order_id for line in lines if line.line_type == "payment"}
    for order_id, split in splits.items():
        if split.of_the_day and order_id not in named:
            out[order_id] = C.RECONCILIATION_CLASS_MISSING_IN_STATEMENT
    return out


@dataclasses.dataclass
class Case:
    day: dt.date
    lines: list[Line]
    splits: dict[str, Split]
    names: dict[str, str]  # the order id of each named order
    run: rpb.ReconciliationRun


@pytest.fixture
async def case(channel, client, database_url, platform) -> Case:
    world = await ReconWorld.make(channel, client, database_url, platform.platform_id,
                                  platform.key)
    day = statement_day()
    clock = iter(range(600, 86_400, 600))
    o = {name: world.order(local(day, next(clock)), amount)
         for name, amount in (("plain", 10_000), ("amount", 20_000), ("refunded", 30_000),
                              ("refund_over", 40_000), ("named_by_duplicate", 50_000),
                              ("fee", 60_000), ("unnamed", 70_000), ("refund_only", 80_000),
                              ("twice", 90_000), ("named_late", 15_000))}
    o["usd"] = world.order(local(day, next(clock)), 11_000, currency="USD")
    o["day_before"] = world.order(local(day, -600), 12_000)
    o["other_channel"] = world.order(local(day, next(clock)), 13_000, channel=OTHER_CHANNEL)
    await world.split_all(list(o.values()))
    splits = {x.order_id: Split(x, of_the_day=name not in ("day_before", "other_channel"))
              for name, x in o.items()}
    for name, share in (("refunded", 2), ("refund_over", 3), ("refund_only", 2)):
        await world.refund(o[name], o[name].amount_minor // share)
        splits[o[name].order_id].refunded_minor = o[name].amount_minor // share
    ghost = world.order(local(day, next(clock)), 14_000)  # never split

    def pay(x: spb.Order, *, amount: int | None = None, fee: int | None = None,
            currency: str = "CNY", ctid: str | None = None, order_id: str | None = None
            ) -> Line:
        return Line(ctid or x.channel_transaction_id, order_id or x.order_id,
                    x.paid_time.ToDatetime(dt.timezone.utc),
                    x.amount_minor if amount is None else amount,
                    x.channel_fee_minor if fee is None else fee, currency)

    def refund(x: spb.Order, amount: int, ctid: str) -> Line:
        return Line(ctid, x.order_id, local(day, 80_000), amount, 0, line_type="refund")

    half, third = o["refunded"].amount_minor // 2, o["refund_over"].amount_minor // 3
    lines = [
        pay(o["plain"]),
        pay(o["amount"], amount=20_001),
        pay(o["amount"], amount=20_001),                      # its duplicate
        pay(o["refunded"]),
        refund(o["refunded"], half, "rf-1"),
        refund(o["refunded"], half, "rf-1"),                  # counted once: MATCHED first
        pay(o["refund_over"]),
        refund(o["refund_over"], third, "rf-2"),
        refund(o["refund_over"], 1, "rf-3"),                  # together above the refunded
        pay(o["plain"], ctid=o["plain"].channel_transaction_id,
            order_id=o["named_by_duplicate"].order_id),       # a duplicate naming another
        pay(o["fee"], fee=o["fee"].channel_fee_minor + 1),
        pay(o["usd"], currency="CNY"),
        pay(o["usd"], currency="CNY"),                        # its duplicate
        pay(ghost),
        pay(ghost),                                           # its duplicate
        refund(ghost, 100, "rf-4"),                           # a refund of no split
        pay(o["day_before"]),                                 # looked up by its order
        pay(o["other_channel"]),
        refund(o["refund_only"], o["refund_only"].amount_minor // 2, "rf-5"),
        pay(o["twice"], ctid="tw-1"),
        pay(o["twice"], ctid="tw-2"),                         # two payments, one split
        pay(o["plain"]),                                      # a triple
        refund(o["refunded"], half, "rf-1"),                  # a triple of a refund line
        refund(o["refund_only"], 5, "rf-1"),                  # naming another order: not summed
        pay(o["other_channel"]),                              # of a split of another channel
        pay(o["day_before"], amount=1, fee=0),                # mismatched, of another day
        pay(o["plain"], ctid="zz", fee=0),
        pay(o["named_late"], ctid="zz"),                      # the only line naming its split
    ]
    response = await world.import_file(canonical_csv(lines, CHANNEL, day), day=day)
    return Case(day, lines, splits, {name: x.order_id for name, x in o.items()},
                response.run)


def found_classes(rows) -> dict[object, int]:
    """The classes of a run's discrepancies, by line number (by order id for a split with
    no line), the MATCHED lines filled in."""
    out = {r.line_number or r.order_id: r.reconciliation_class for r in rows}
    assert len(out) == len(rows)  # one discrepancy per line, per split with no line
    return out


def with_matched(found: dict[object, int], lines: list[Line]) -> dict[object, int]:
    return {**{n: C.RECONCILIATION_CLASS_MATCHED
               for n in range(FIRST_LINE, FIRST_LINE + len(lines))}, **found}


async def test_every_line_is_classified_by_the_rules(case: Case, channel, platform):
    from clearing.v1 import reconciliation_pb2_grpc

    stub = reconciliation_pb2_grpc.ReconciliationServiceStub(channel)
    rows = (await stub.ListDiscrepancies(
        rpb.ListDiscrepanciesRequest(run_id=case.run.run_id, page_size=100),
        metadata=(("authorization", f"Bearer {platform.key}"),), timeout=30)).discrepancies
    want = reference(case.lines, case.splits)
    assert with_matched(found_classes(rows), case.lines) == want
    # the reference's own reading of the hand-picked cases, line by line
    assert [want[n] for n in range(FIRST_LINE, FIRST_LINE + len(case.lines))] == [
        C.RECONCILIATION_CLASS_MATCHED, C.RECONCILIATION_CLASS_AMOUNT_MISMATCH,
        C.RECONCILIATION_CLASS_DUPLICATE, C.RECONCILIATION_CLASS_MATCHED,
        C.RECONCILIATION_CLASS_MATCHED, C.RECONCILIATION_CLASS_DUPLICATE,
        C.RECONCILIATION_CLASS_MATCHED, C.RECONCILIATION_CLASS_AMOUNT_MISMATCH,
        C.RECONCILIATION_CLASS_AMOUNT_MISMATCH, C.RECONCILIATION_CLASS_DUPLICATE,
        C.RECONCILIATION_CLASS_FEE_MISMATCH, C.RECONCILIATION_CLASS_CURRENCY_MISMATCH,
        C.RECONCILIATION_CLASS_DUPLICATE, C.RECONCILIATION_CLASS_MISSING_SPLIT,
        C.RECONCILIATION_CLASS_DUPLICATE, C.RECONCILIATION_CLASS_MISSING_SPLIT,
        C.RECONCILIATION_CLASS_MATCHED, C.RECONCILIATION_CLASS_MATCHED,
        C.RECONCILIATION_CLASS_MATCHED, C.RECONCILIATION_CLASS_MATCHED,
        C.RECONCILIATION_CLASS_MATCHED, C.RECONCILIATION_CLASS_DUPLICATE,
        C.RECONCILIATION_CLASS_DUPLICATE, C.RECONCILIATION_CLASS_DUPLICATE,
        C.RECONCILIATION_CLASS_DUPLICATE, C.RECONCILIATION_CLASS_DUPLICATE,
        C.RECONCILIATION_CLASS_FEE_MISMATCH, C.RECONCILIATION_CLASS_DUPLICATE]
    assert {k for k in want if isinstance(k, str)} == {
        case.names["unnamed"], case.names["refund_only"]}  # no payment line names them
    totals = {t.reconciliation_class: t.item_count for t in case.run.class_totals}
    assert totals[C.RECONCILIATION_CLASS_MATCHED] == sum(
        1 for v in want.values() if v == C.RECONCILIATION_CLASS_MATCHED)
    assert case.run.explained_minor == case.run.difference_minor


# Parallel plans forced on (the hash joins too: with the other tests' rows in the database,
# a split estimated alone made a nested loop of the join in the leader).
FORCE_PARALLEL = ("SET LOCAL min_parallel_table_scan_size = 0",
                  "SET LOCAL min_parallel_index_scan_size = 0",
                  "SET LOCAL parallel_tuple_cost = 0",
                  "SET LOCAL max_parallel_workers_per_gather = 2",
                  "SET LOCAL enable_nestloop = off", "SET LOCAL enable_mergejoin = off")


async def match_again(conn: asyncpg.Connection, case: Case, platform, settings=(),
                      fail: str = "", commit: bool = False) -> dict[object, int] | None:
    """The statement's match again on `conn` (the import's settings, then `settings`), in a
    transaction rolled back (committed with `commit`, as an import's): the class of each
    discrepancy by line number (order id for a split with no line). `fail`: the match stops
    half-way instead (None): "timeout" after its first step, "error" in its first step again
    (its table exists)."""
    st = (await conn.fetchrow("SELECT statement_id, channel, currency_code, imported_at"
                              " FROM recon_statements WHERE platform_id = $1",
                              platform.platform_id))
    start, end = service.day_bounds(case.day, case.run.time_zone)
    tx = conn.transaction()
    await tx.start()
    try:
        for sql in match.SQL_BEFORE_MATCH[:-2] + tuple(settings):
            await conn.execute(sql)
        if fail:
            await conn.execute(match.SQL_DUPLICATES, st["statement_id"])
            with pytest.raises((TimeoutError, asyncpg.PostgresError)):
                if fail == "timeout":
                    await conn.execute("SELECT pg_sleep(5)", timeout=0.05)
                await conn.execute(match.SQL_DUPLICATES, st["statement_id"])
            await tx.rollback()
            return None
        before = await conn.fetchval("SELECT max(discrepancy_id) FROM recon_discrepancies")
        await match.match_statement(
            conn, st["statement_id"], platform.platform_id, case.run.run_id, st["channel"],
            (service._ns(start), service._ns(end)), (start, end), st["currency_code"],
            st["imported_at"], 60)
        rows = await conn.fetch(
            "SELECT line_number, order_id, class FROM recon_discrepancies"
            " WHERE run_id = $1 AND discrepancy_id > $2", case.run.run_id, before)
    except BaseException:
        await tx.rollback()
        raise
    else:
        await (tx.commit() if commit else tx.rollback())
    found = {r["line_number"] or r["order_id"]: r["class"] for r in rows}
    assert len(found) == len(rows)
    return with_matched(found, case.lines)


@pytest.mark.parametrize("workers", [None, 0])
async def test_parallel_workers_classify_the_same(case: Case, database_url, platform, workers):
    """The match's statements again, in a transaction rolled back, with parallel plans
    forced on: the same classes for every line and split; also when no worker can be had
    (max_parallel_workers 0: the server's backend runs the parallel plans alone)."""
    conn = await asyncpg.connect(database_url)
    try:
        settings = FORCE_PARALLEL + (
            () if workers is None else (f"SET LOCAL max_parallel_workers = {workers}",))
        st = (await conn.fetchrow("SELECT statement_id, channel FROM recon_statements"
                                  " WHERE platform_id = $1", platform.platform_id))
        start, end = service.day_bounds(case.day, case.run.time_zone)
        async with conn.transaction():
            for sql in match.SQL_BEFORE_MATCH[:-2] + settings:
                await conn.execute(sql)
            plan = "\n".join(r[0] for r in await conn.fetch(
                "EXPLAIN " + match.SQL_UNSURE.replace("CREATE TEMPORARY TABLE recon_match_unsure"
                                                      " ON COMMIT DROP AS", ""),
                st["statement_id"], platform.platform_id, st["channel"],
                service._ns(start), service._ns(end), start, end))
        assert "Parallel Hash" in plan and "Gather" in plan, plan
        found = await match_again(conn, case, platform, settings)
    finally:
        await conn.close()
    assert found == reference(case.lines, case.splits)


async def test_a_connection_matches_again_after_a_match_failed_half_way(case: Case,
                                                                         database_url, platform):
    """The match's temporary tables (ON COMMIT DROP) and the prepared statements the
    connection caches: one connection matches, fails half-way (a timeout, an error), and
    matches again, the same classes every time."""
    conn = await asyncpg.connect(database_url)
    try:
        want = reference(case.lines, case.splits)
        assert await match_again(conn, case, platform, commit=True) == want
        assert await match_again(conn, case, platform, commit=True) == want
        assert await match_again(conn, case, platform, fail="timeout") is None
        assert await match_again(conn, case, platform, fail="error") is None
        assert await match_again(conn, case, platform, commit=True) == want
    finally:
        await conn.close()


async def test_an_import_leaves_no_range_of_lines_unsummarised(channel, client, database_url,
                                                              platform):
    """The lines' BRIN index answers a page range it has not summarised for any statement
    (migration 0032): the import summarises what it wrote (20,000 lines: several ranges of
    128 pages), so nothing is left for a later read to scan whole (autovacuum may be off, as
    on the development machine). Without it the check below summarises those ranges."""
    world = await ReconWorld.make(channel, client, database_url, platform.platform_id,
                                  platform.key)
    day = statement_day()
    lines = [Line(f"wx-{i}", f"never-split-{i}", local(day, 3_600), 10_000 + i, 60)
             for i in range(20_000)]
    run = (await world.import_file(canonical_csv(lines, CHANNEL, day), day=day)).run
    assert run.statement.line_count == 20_000
    conn = await asyncpg.connect(database_url)
    try:
        pages = await conn.fetchval("SELECT pg_relation_size('recon_statement_lines') / 8192")
        left = await conn.fetchval(
            "SELECT brin_summarize_new_values('recon_statement_lines_statement_brin')")
    finally:
        await conn.close()
    assert pages > 2 * 128  # the test writes more than one range
    assert left == 0
