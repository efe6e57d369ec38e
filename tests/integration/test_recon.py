"""ReconciliationService through the generated stubs against real PostgreSQL: a generated
day with discrepancies of every class (counts and sums worked out by the generator), the
funds against information to the minor unit, discrepancies listed with filters and pages,
reruns answering the first run, a superseding file, gzip, and the WeChat Pay style bill."""

from __future__ import annotations

import asyncio
import gzip

import asyncpg
import grpc
import pytest

from clearing.v1 import reconciliation_pb2 as rpb
from clearing.limits import RECON_IMPORTS_MAX
from clearing.recon.model import STATEMENT_CLASSES
from clearing.tenancy import create_platform
from tests.recon_support import (CHANNEL, Day, ReconWorld, class_totals, expected_totals,
                                 generate_day, statement_day, wechat_bill)
from tests.split_support import new_key
from tests.support import Client, details, rid

MATCHED_PER_DAY = 20
PER_CLASS = 2


@pytest.fixture
async def world(channel, client: Client, database_url, platform) -> ReconWorld:
    return await ReconWorld.make(channel, client, database_url, platform.platform_id,
                                 platform.key)


@pytest.fixture
async def day(world: ReconWorld):
    return await generate_day(world, statement_day(), matched=MATCHED_PER_DAY,
                              per_class=PER_CLASS, seed=11)


def _check_run(run: rpb.ReconciliationRun, day) -> None:
    exp = day.expected
    assert class_totals(run) == expected_totals(exp)
    assert run.statement_settled_minor == exp.statement_settled_minor
    assert run.split_settled_minor == exp.split_settled_minor
    assert run.difference_minor == exp.statement_settled_minor - exp.split_settled_minor
    assert run.explained_minor == run.difference_minor
    assert run.discrepancy_count == exp.discrepancy_count
    assert run.statement.line_count == len(day.lines)
    assert run.statement.settled_minor == exp.statement_settled_minor
    assert run.time_zone == "Asia/Shanghai"


async def test_a_day_with_every_class(world: ReconWorld, day):
    response = await world.import_file(day.csv(), day=day.day)
    assert not response.replayed
    run = response.run
    _check_run(run, day)
    classes = set(class_totals(run))
    assert classes == {int(c) for c in STATEMENT_CLASSES}  # every class of a statement found
    found = await world.discrepancies(run_id=run.run_id)
    assert len(found) == day.expected.discrepancy_count
    assert len({d.discrepancy_id for d in found}) == len(found)
    by_class: dict[int, int] = {}
    for d in found:
        by_class[d.reconciliation_class] = by_class.get(d.reconciliation_class, 0) + 1
        assert d.state == rpb.DISCREPANCY_STATE_OPEN and d.run_id == run.run_id
    assert by_class == {c: n for c, n in day.expected.counts.items()
                        if c != rpb.RECONCILIATION_CLASS_MATCHED}
    assert sum(d.difference_minor for d in found) == run.difference_minor
    got = await world.call("GetReconciliationRun",
                           rpb.GetReconciliationRunRequest(run_id=run.run_id))
    assert got.run == run


async def test_the_same_file_again_answers_the_first_run(world: ReconWorld, day):
    first = (await world.import_file(day.csv(), day=day.day, request_id="imp-1")).run
    by_content = await world.import_file(day.csv(), day=day.day)  # a new request id
    by_request = await world.import_file(day.csv(), day=day.day, request_id="imp-1",
                                         chunk_bytes=333)
    as_gzip = await world.import_file(gzip.compress(day.csv()), day=day.day)
    for again in (by_content, by_request, as_gzip):
        assert again.replayed and again.run == first
    runs = await world.call("ListReconciliationRuns", rpb.ListReconciliationRunsRequest())
    assert [r.run_id for r in runs.runs] == [first.run_id]
    assert len(await world.discrepancies()) == day.expected.discrepancy_count
    with pytest.raises(grpc.aio.AioRpcError) as err:  # the request id with another file
        await world.import_file(day.csv() + day.csv().split(b"\n", 1)[1], day=day.day,
                                request_id="imp-1")
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert details(err.value)[0] == "REQUEST_ID_REUSED"


async def test_a_corrected_file_supersedes_the_first(world: ReconWorld, day):
    first = (await world.import_file(day.csv(), day=day.day)).run
    # the correction drops the lines of orders never split and the duplicated lines
    seen: set[tuple[str, str]] = set()
    kept = []
    for line in day.lines:
        key = (line.line_type, line.ctid)
        if line.order_id in day.orders and key not in seen:
            kept.append(line)
        seen.add(key)
    exp = day.expected
    counts = {c: n for c, n in exp.counts.items()
              if c not in (rpb.RECONCILIATION_CLASS_MISSING_SPLIT,
                           rpb.RECONCILIATION_CLASS_DUPLICATE)}
    corrected = Day(day.day, kept, exp, day.orders)
    second = (await world.import_file(corrected.csv(), day=day.day)).run
    assert second.run_id != first.run_id
    assert {t.reconciliation_class: t.item_count for t in second.class_totals} == counts
    assert second.statement.active and second.statement.line_count == len(kept)
    old = (await world.call("GetReconciliationRun",
                            rpb.GetReconciliationRunRequest(run_id=first.run_id))).run
    assert not old.statement.active
    assert old.statement.superseded_by_statement_id == second.statement.statement_id
    assert class_totals(old) == class_totals(first)  # the history stays as it was
    runs = await world.call("ListReconciliationRuns", rpb.ListReconciliationRunsRequest(
        channel=CHANNEL, settlement_date=day.day.isoformat()))
    assert [r.run_id for r in runs.runs] == [second.run_id, first.run_id]  # newest first
    # the first file again is a correction of the correction: a third run
    third = await world.import_file(day.csv(), day=day.day)
    assert not third.replayed and class_totals(third.run) == class_totals(first)


async def test_gzip_and_the_wechat_bill_give_the_same_figures(world: ReconWorld, day):
    run = (await world.import_file(gzip.compress(day.csv()), day=day.day,
                                   chunk_bytes=1000)).run
    _check_run(run, day)
    bill = wechat_bill(day.lines)
    wechat = (await world.import_file(bill, day=day.day, fmt=rpb.STATEMENT_FORMAT_WECHAT)).run
    assert wechat.statement.format == rpb.STATEMENT_FORMAT_WECHAT
    # another file (another layout): it supersedes, with the same figures
    assert wechat.run_id != run.run_id
    _check_run(wechat, day)


async def test_discrepancies_filter_and_page(world: ReconWorld, day):
    run = (await world.import_file(day.csv(), day=day.day)).run
    fee = await world.discrepancies(run_id=run.run_id,
                                    classes=[rpb.RECONCILIATION_CLASS_FEE_MISMATCH])
    assert len(fee) == PER_CLASS
    for d in fee:
        order = day.orders[d.order_id]
        assert (d.statement_amount_minor, d.statement_fee_minor, d.split_amount_minor,
                d.split_fee_minor, d.difference_minor) == (
            order.amount_minor, order.channel_fee_minor + 1, order.amount_minor,
            order.channel_fee_minor, -1)
        assert d.line_number >= 2 and d.split_id > 0
    missing = await world.discrepancies(
        classes=[rpb.RECONCILIATION_CLASS_MISSING_IN_STATEMENT],
        states=[rpb.DISCREPANCY_STATE_OPEN])
    assert len(missing) == PER_CLASS
    assert all(d.line_number == 0 and d.split_id > 0 and d.statement_currency_code == ""
               for d in missing)
    assert await world.discrepancies(states=[rpb.DISCREPANCY_STATE_RESOLVED]) == []
    for bad in ({"classes": [rpb.RECONCILIATION_CLASS_MATCHED]}, {"states": [9]},
                {"page_token": "forged"}, {"page_size": 5000}, {"run_id": -1}):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await world.call("ListDiscrepancies", rpb.ListDiscrepanciesRequest(**bad))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await world.call("ListDiscrepancies", rpb.ListDiscrepanciesRequest(run_id=10**12))
    assert details(err.value)[0] == "RECONCILIATION_RUN_NOT_FOUND"


async def test_another_platform_sees_nothing(world: ReconWorld, day, channel, database_url):
    run = (await world.import_file(day.csv(), day=day.day)).run
    conn = await asyncpg.connect(database_url)
    try:
        _, other_key = await create_platform(conn, f"p_{rid()[:12]}",
                                             frozenset({"gateway", "operator"}))
    finally:
        await conn.close()
    other = ReconWorld(channel, Client(channel, other_key), other_key)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await other.call("GetReconciliationRun",
                         rpb.GetReconciliationRunRequest(run_id=run.run_id))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await other.call("ListDiscrepancies", rpb.ListDiscrepanciesRequest(run_id=run.run_id))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert list((await other.call("ListReconciliationRuns",
                                  rpb.ListReconciliationRunsRequest())).runs) == []
    assert await other.discrepancies() == []
    # the same file imported by the other platform: none of its orders are theirs
    theirs = (await other.import_file(day.csv(), day=day.day)).run
    assert not theirs.statement.content_sha256 == "" and theirs.run_id != run.run_id
    assert {t.reconciliation_class for t in theirs.class_totals} <= {
        rpb.RECONCILIATION_CLASS_MISSING_SPLIT, rpb.RECONCILIATION_CLASS_DUPLICATE}


async def test_roles(world: ReconWorld, day, platform, database_url):
    gateway = (("authorization",
                f"Bearer {await new_key(database_url, platform.platform_id, {'gateway'})}"),)
    approver = (("authorization",
                 f"Bearer {await new_key(database_url, platform.platform_id, {'approver'})}"),)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await world.import_file(day.csv(), day=day.day, metadata=gateway)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    run = (await world.import_file(day.csv(), day=day.day)).run
    for key in (gateway, approver):
        got = await world.call("GetReconciliationRun",
                               rpb.GetReconciliationRunRequest(run_id=run.run_id), key)
        assert got.run == run


async def test_runs_page_newest_first(world: ReconWorld, day):
    made = []
    for n in range(3):  # three files of the day, each superseding the one before
        lines = day.lines[: len(day.lines) - n]
        made.append((await world.import_file(Day(day.day, lines, day.expected, day.orders).csv(),
                                              day=day.day)).run.run_id)
    seen, token = [], ""
    while True:
        page = await world.call("ListReconciliationRuns", rpb.ListReconciliationRunsRequest(
            page_size=1, page_token=token))
        seen += [r.run_id for r in page.runs]
        token = page.next_page_token
        if not token:
            break
    assert seen == made[::-1]
    active = [r for r in seen
              if (await world.call("GetReconciliationRun", rpb.GetReconciliationRunRequest(
                  run_id=r))).run.statement.active]
    assert active == [made[-1]]


async def test_concurrent_imports_of_one_day(world: ReconWorld, day):
    """Two different files of one day at once: both run, one supersedes the other."""
    files = [Day(day.day, day.lines[:-k], day.expected, day.orders).csv() for k in (1, 2)]
    runs = await asyncio.gather(*(world.import_file(f, day=day.day) for f in files))
    statements = [(await world.call("GetReconciliationRun", rpb.GetReconciliationRunRequest(
        run_id=r.run.run_id))).run.statement for r in runs]
    assert sorted(s.active for s in statements) == [False, True]
    older, newer = sorted(statements, key=lambda s: s.active)
    assert older.superseded_by_statement_id == newer.statement_id


async def test_imports_beyond_the_limit_are_refused(world: ReconWorld, day):
    """RECON_IMPORTS_MAX imports streaming at once; one more answers RESOURCE_EXHAUSTED."""
    header = rpb.ImportStatementRequest(header=rpb.StatementHeader(
        request_id=rid(), channel=CHANNEL, settlement_date=day.day.isoformat(),
        format=rpb.STATEMENT_FORMAT_CANONICAL))
    held = []
    for _ in range(RECON_IMPORTS_MAX):
        call = world.recon.ImportStatement(metadata=world.metadata, timeout=30)
        await call.write(header)
        await call.write(rpb.ImportStatementRequest(chunk=day.csv()[:10]))
        held.append(call)
    await asyncio.sleep(0.5)  # the server has taken them
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await world.import_file(day.csv(), day=day.day)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    for call in held:
        call.cancel()
