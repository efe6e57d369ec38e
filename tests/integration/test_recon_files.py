"""ImportStatement refuses bad files whole, nothing imported: a malformed file with the line
numbers and fields of its first problems, a file, a line or a line count beyond its limit,
a broken gzip stream, a bad header or message order. Nothing refused answers INTERNAL."""

from __future__ import annotations

import gzip

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from clearing.limits import STATEMENT_LINE_BYTES_MAX, STATEMENT_PROBLEMS_MAX
from clearing.recon import lines as recon_lines
from clearing.v1 import reconciliation_pb2 as rpb
from tests.recon_support import COLUMNS, ReconWorld, statement_day
from tests.support import CALL_TIMEOUT_S, Client, details, rid

HEADER = ",".join(COLUMNS)


@pytest.fixture
async def world(channel, client: Client, platform) -> ReconWorld:
    return ReconWorld(channel, client, platform.key)


def _line(day, **changes) -> str:
    values = {"channel": "WECHAT_PAY", "channel_transaction_id": "wx1", "order_id": "o1",
              "paid_time": f"{day.isoformat()}T10:00:00+08:00", "amount_minor": "1000",
              "channel_fee_minor": "6", "settled_minor": "994", "currency_code": "CNY",
              "settlement_date": day.isoformat(), "type": "payment"}
    values.update(changes)
    return ",".join(values[c] for c in COLUMNS)


async def _refused(world: ReconWorld, data: bytes, **kw) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await world.import_file(data, day=kw.pop("day", statement_day()), **kw)
    return err.value


async def _nothing_imported(world: ReconWorld, database_url: str, platform_id: int) -> None:
    runs = await world.call("ListReconciliationRuns", rpb.ListReconciliationRunsRequest())
    assert list(runs.runs) == []
    conn = await asyncpg.connect(database_url)
    try:
        count = await conn.fetchval(
            "SELECT count(*) FROM recon_statement_lines WHERE platform_id = $1", platform_id)
    finally:
        await conn.close()
    assert count == 0


def _violations(err: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(err)
    for d in status.details:
        if d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            d.Unpack(bad)
            return [(v.field, v.description) for v in bad.field_violations]
    return []


async def test_a_malformed_file_is_refused_whole_with_line_numbers(world, database_url,
                                                                   platform):
    day = statement_day()
    good = [_line(day, channel_transaction_id=f"wx{i}", order_id=f"o{i}") for i in range(50)]
    bad = list(good)
    bad[9] = _line(day, amount_minor="12.5")                       # file line 11
    bad[19] = _line(day, settled_minor="1000")                     # line 21
    bad[29] = _line(day, settlement_date="2020-01-01")             # line 31
    bad[39] = _line(day, paid_time="2026-12-06 10:00:00")          # line 41: no T, no offset
    bad.append("WECHAT_PAY,too,few")                               # line 52
    data = ("\n".join([HEADER, *bad]) + "\n").encode()
    err = await _refused(world, data, chunk_bytes=100)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(err)[0] == "STATEMENT_MALFORMED"
    assert [f for f, _ in _violations(err)] == [
        "lines[11].amount_minor", "lines[21].settled_minor", "lines[31].settlement_date",
        "lines[41].paid_time", "lines[52]"]
    await _nothing_imported(world, database_url, platform.platform_id)


async def test_problems_beyond_the_first_are_counted(world):
    day = statement_day()
    data = "\n".join([HEADER, *(_line(day, type="sale") for _ in range(100))]).encode()
    err = await _refused(world, data)
    fields = [f for f, _ in _violations(err)]
    assert fields == [f"lines[{n}].type" for n in range(2, 2 + STATEMENT_PROBLEMS_MAX)]
    assert "100" in str(rpc_status.from_call(err).details[0].value)  # problems_count


@pytest.mark.parametrize("data, field", [
    (b"", "lines[1]"),                                            # no header
    (b"order_id,amount\n", "lines[1]"),                           # another header
    (HEADER.encode() + b"\n\xff\xfe,x\n", "lines[2]"),            # not UTF-8
    (HEADER.encode() + b"\n\n", "lines[2]"),                      # an empty line
    (HEADER.encode() + b'\n"unclosed,quote\n', "lines[2]"),
    (b"\x1f\x8b\x08\x00garbage", "chunk"),                        # not gzip after its magic
    (gzip.compress(HEADER.encode() + b"\n", mtime=0)[:-6], "chunk"),        # truncated gzip
])
async def test_malformed_files(world, data, field):
    err = await _refused(world, data)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(err)[0] == "STATEMENT_MALFORMED"
    assert _violations(err)[0][0] == field


async def test_currency_channel_and_day_of_the_lines(world):
    day = statement_day()
    data = "\n".join([HEADER, _line(day), _line(day, currency_code="USD",
                                                channel_transaction_id="wx2"),
                      _line(day, channel="ALIPAY")]).encode()
    err = await _refused(world, data)
    assert [f for f, _ in _violations(err)] == ["lines[3].currency_code", "lines[4].channel"]


async def test_a_long_line_is_a_problem_of_its_line(world):
    day = statement_day()
    long_line = _line(day, order_id="x" * STATEMENT_LINE_BYTES_MAX)
    data = "\n".join([HEADER, _line(day), long_line, _line(day, order_id="o2")]).encode()
    err = await _refused(world, data)
    assert _violations(err)[0][0] == "lines[3]"


@pytest.mark.parametrize("limit, value, gzipped", [
    ("STATEMENT_BYTES_MAX", 2_000, False),
    ("STATEMENT_DECOMPRESSED_BYTES_MAX", 2_000, True),   # a small gzip that expands
    ("STATEMENT_LINES_MAX", 10, False),
])
async def test_a_file_beyond_a_limit_is_refused(world, database_url, platform, monkeypatch,
                                                limit, value, gzipped):
    monkeypatch.setattr(recon_lines, limit, value)
    day = statement_day()
    data = "\n".join([HEADER, *(_line(day, channel_transaction_id=f"wx{i}", order_id=f"o{i}")
                                for i in range(40))]).encode()
    err = await _refused(world, gzip.compress(data) if gzipped else data, chunk_bytes=500)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(err) == ("STATEMENT_TOO_LARGE", ["chunk"])
    await _nothing_imported(world, database_url, platform.platform_id)


async def _stream(world: ReconWorld, messages: list) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await world.recon.ImportStatement(iter(messages), metadata=world.metadata,
                                          timeout=CALL_TIMEOUT_S)
    return err.value


def _header(**changes) -> rpb.ImportStatementRequest:
    header = rpb.StatementHeader(request_id=rid(), channel="WECHAT_PAY",
                                 settlement_date=statement_day().isoformat(),
                                 format=rpb.STATEMENT_FORMAT_CANONICAL)
    for name, value in changes.items():
        setattr(header, name, value)
    return rpb.ImportStatementRequest(header=header)


@pytest.mark.parametrize("messages, fields", [
    ([], ["header"]),
    ([rpb.ImportStatementRequest(chunk=b"x")], ["header"]),
    ([_header(request_id="", channel="", settlement_date="2026-13-01", format=0)],
     ["header.request_id", "header.channel", "header.settlement_date", "header.format"]),
    ([_header(settlement_date="1999-12-31")], ["header.settlement_date"]),
    ([_header(settlement_date="9999-12-31")], ["header.settlement_date"]),
    ([_header(format=7)], ["header.format"]),
    ([_header(channel="a\0b")], ["header.channel"]),
    ([_header(), _header()], ["chunk"]),
    ([_header(), rpb.ImportStatementRequest(chunk=b"")], ["chunk"]),
    ([_header(), rpb.ImportStatementRequest()], ["chunk"]),
])
async def test_bad_headers_and_message_order(world, messages, fields):
    err = await _stream(world, messages)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(err)[1] == fields


async def test_an_oversized_chunk(world):
    err = await _stream(world, [_header(), rpb.ImportStatementRequest(chunk=b"x" * (1 << 20 | 1))])
    assert details(err) == ("STATEMENT_TOO_LARGE", ["chunk"])


async def test_a_statement_without_lines(world):
    run = (await world.import_file(HEADER.encode() + b"\n", day=statement_day())).run
    assert (run.statement.line_count, run.statement.currency_code, run.discrepancy_count,
            run.difference_minor) == (0, "", 0, 0)


FUZZ_IMPORTS = 150
BAD_CODES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
             grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.DATA_LOSS}
FIELD_NOISE = ("", "-1", "1e9", "９", "\u202e", "x" * 300, '"', "`1", "NaN", "2026-02-30",
               "2026-12-06T25:00:00Z", "99999999999999999999", "refund", "CNY", "\0", "0")


def _mutated_file(rng, day) -> bytes:
    lines = [HEADER] + [_line(day, channel_transaction_id=f"wx{i}", order_id=f"o{i}")
                        for i in range(rng.randrange(0, 8))]
    for _ in range(rng.randrange(0, 4)):
        i = rng.randrange(len(lines))
        fields = lines[i].split(",")
        fields[rng.randrange(len(fields))] = rng.choice(FIELD_NOISE)
        if rng.random() < 0.2:
            fields = fields[:rng.randrange(len(fields))]
        lines[i] = ",".join(fields)
    data = "\n".join(lines).encode()
    if rng.random() < 0.2:
        data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 200))) + data
    if rng.random() < 0.3:
        data = gzip.compress(data)
        if rng.random() < 0.5:
            data = data[:rng.randrange(len(data))]
    return data


async def test_no_import_answers_internal(world):
    """Random headers, layouts and mutated files: every answer is OK or a clear refusal."""
    import random

    rng = random.Random(20261207)
    day = statement_day()
    codes: dict[str, int] = {}
    for n in range(FUZZ_IMPORTS):
        data = _mutated_file(rng, day)
        fmt = rng.choice((1, 1, 1, 2, 0, 5))
        chunk = rng.choice((1, 7, 100, 4096))
        try:
            await world.import_file(data or b"x", day=day, fmt=fmt, chunk_bytes=chunk,
                                    channel=rng.choice(("WECHAT_PAY", "WECHAT_PAY", "")))
            code = "OK"
        except grpc.aio.AioRpcError as err:
            assert err.code() not in BAD_CODES, (n, err)
            code = err.code().name
        codes[code] = codes.get(code, 0) + 1
    assert codes.get("OK", 0) > 5 and codes.get("INVALID_ARGUMENT", 0) > 50, codes
