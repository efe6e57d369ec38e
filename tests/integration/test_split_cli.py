"""`clearing split ...` against the real server, run in-process (the CLI's own event loop in
a thread, so the server's loop keeps serving): preview, create (options and JSON), get,
release, cancel and refund with amounts worked out by hand; bad input refused with a clear
message and never a traceback; a batch of 300 CSV lines with failing lines (the failures file
checked exactly) and its re-run booking nothing twice."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json

import pytest

from clearing.cli import main
from tests.split_support import Splits, new_key, open_accounts
from tests.support import Client
from tests.unit.rules.examples import HELD
from tests.unit.rules.test_examples import BABY, TAKEAWAY

REFS = ["CUSTODIAL", "PLAT_001", "SUP_2025001", "DIST_01", "M_10086"]


async def cli(running, key: str, *argv: str) -> tuple[int, str, str]:
    """`clearing ARGV --addr ... --key KEY` in this process: (exit status, stdout, stderr)."""
    def run() -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([*argv, "--addr", f"127.0.0.1:{running.port}", "--key", key])
            except SystemExit as exc:  # as the interpreter reports it
                code = exc.code if isinstance(exc.code, int) else 1
                if not isinstance(exc.code, int) and exc.code is not None:
                    print(exc.code, file=err)
        return code, out.getvalue(), err.getvalue()
    return await asyncio.wait_for(asyncio.to_thread(run), timeout=60)


async def ok(running, key: str, *argv: str) -> dict:
    code, out, err = await cli(running, key, *argv)
    assert code == 0, err
    return json.loads(out)


@pytest.fixture
async def world(channel, client: Client, database_url, platform):
    """The accounts of baby, held and takeaway, those rule sets active; account ids by ref."""
    ids = await open_accounts(client, REFS)
    maker = Splits(channel, platform.key)
    checker = Splits(channel, await new_key(database_url, platform.platform_id, {"approver"}))
    for text in (BABY, HELD, TAKEAWAY):
        published = await maker.publish(text)
        await checker.activate(published.name, published.version)
    return ids


async def _posted(client: Client, ids, ref: str) -> int:
    return (await client.balance(ids[ref])).posted_minor


def _legs(split: dict) -> list[tuple[str, int, int]]:
    return [(leg["external_ref"], int(leg["amount_minor"]), int(leg.get("held_minor", 0)))
            for leg in split["legs"]]


async def test_preview_create_get_from_options_and_json(running, platform, client, world,
                                                        tmp_path):
    key, ids = platform.key, world
    # baby, 99.99: 1499.85 / 7499.25 / 999.90 floored to 1499 / 7499 / 999, the 2 fen left
    # to the largest discarded fractions (distributor .90, platform .85).
    preview = await ok(running, key, "split", "preview", "P-1", "--amount", "99.99",
                       "--channel", "WECHAT_PAY", "--rule-set", "baby")
    assert preview["split"]["status"] == "SPLIT_STATUS_PREVIEW"
    assert _legs(preview["split"]) == [("PLAT_001", 1_500, 0), ("SUP_2025001", 7_499, 0),
                                       ("DIST_01", 1_000, 0)]
    code, out, _ = await cli(running, key, "split", "preview", "P-1", "--amount", "99.99",
                             "--channel", "WECHAT_PAY", "--rule-set", "baby",
                             "--field", "split.legs.amount_minor")
    assert (code, out) == (0, "1500\n7499\n1000\n")
    assert await _posted(client, ids, "PLAT_001") == 0  # a dry run books nothing

    # takeaway, 100.00 with a channel fee of 2.00: 98.00 split, 15% = 14.70, 85% = 83.30.
    argv = ["split", "create", "T-1", "--amount", "100.00", "--channel-fee", "2.00",
            "--channel", "WECHAT_PAY", "--rule-set", "takeaway", "--party", "merchant=M_10086",
            "--tag", "lunch", "--paid-time", "2026-01-20T12:00:00+08:00",
            "--request-id", "cli-split-1"]
    created = await ok(running, key, *argv)
    split = created["split"]
    assert (split["amount_minor"], split["channel_fee_minor"], split["net_amount_minor"],
            split["status"]) == ("10000", "200", "9800", "SPLIT_STATUS_POSTED")
    assert _legs(split) == [("PLAT_001", 1_470, 0), ("M_10086", 8_330, 0)]
    assert split["order"]["paid_time"] == "2026-01-20T04:00:00Z"
    assert await ok(running, key, *argv) == created  # a replay: the first response
    assert await ok(running, key, "split", "get", "T-1") == created
    assert await ok(running, key, "split", "get", "--split-id", split["split_id"]) == created

    # The same from JSON (the Order message, minor units): baby, 1000.00 -> 15/75/10%.
    path = tmp_path / "order.json"
    path.write_text(json.dumps({"order_id": "J-1", "amount_minor": "100000",
                                "currency_code": "CNY", "channel": "ALIPAY",
                                "rule_set_name": "baby"}))
    created = await ok(running, key, "split", "create", "--json", str(path))
    assert _legs(created["split"]) == [("PLAT_001", 15_000, 0), ("SUP_2025001", 75_000, 0),
                                       ("DIST_01", 10_000, 0)]
    assert await _posted(client, ids, "PLAT_001") == 1_470 + 15_000
    assert await _posted(client, ids, "M_10086") == 8_330
    assert await _posted(client, ids, "CUSTODIAL") == -(9_800 + 100_000)


async def test_release_cancel_refund(running, platform, client, world):
    key, ids = platform.key, world
    # held, 10.00: PLAT_001 1.00 at once, SUP_2025001 9.00 held (4.50 on SHIPPED, 4.50 on
    # RECEIVED).
    split = (await ok(running, key, "split", "create", "H-1", "--amount", "10.00",
                      "--channel", "WECHAT_PAY", "--rule-set", "held"))["split"]
    assert _legs(split) == [("PLAT_001", 100, 0), ("SUP_2025001", 900, 900)]
    released = await ok(running, key, "split", "release", "H-1", "--event", "SHIPPED")
    assert released["action"]["amount_minor"] == "450"
    assert released["split"]["status"] == "SPLIT_STATUS_HOLDING"
    # 25% of the 9.00 held at split time: 2.25; then the rest (2.25) voided.
    released = await ok(running, key, "split", "release", "H-1", "--fraction-bps", "2500",
                        "--reason", "partial delivery")
    assert released["action"]["amount_minor"] == "225"
    cancelled = await ok(running, key, "split", "cancel", "H-1", "--reason", "order lost")
    assert (cancelled["action"]["amount_minor"], cancelled["split"]["status"]) == (
        "225", "SPLIT_STATUS_CANCELLED")
    assert await _posted(client, ids, "SUP_2025001") == 450 + 225
    code, _, err = await cli(running, key, "split", "cancel", "H-1", "--reason", "again")
    assert code == 1
    assert err.startswith("error: FAILED_PRECONDITION NOTHING_HELD: "), err

    # takeaway, 100.00 (fee 2.00): PLAT_001 14.70, M_10086 83.30. Refunding 50.00 of it
    # gives back half of the 98.00 the legs have: 49.00, in proportion: 7.35 and 41.65.
    await ok(running, key, "split", "create", "R-1", "--amount", "100.00", "--channel-fee",
             "2.00", "--channel", "WECHAT_PAY", "--rule-set", "takeaway", "--party",
             "merchant=M_10086")
    refunded = await ok(running, key, "split", "refund", "R-1", "--amount", "50.00",
                        "--reason", "returned", "--refund-ref", "RF-1")
    assert (refunded["split"]["status"], refunded["split"]["refunded_minor"],
            refunded["action"]["refund_ref"]) == ("SPLIT_STATUS_PARTLY_REFUNDED", "5000",
                                                  "RF-1")
    assert [int(leg["refunded_minor"]) for leg in refunded["split"]["legs"]] == [735, 4_165]
    assert await _posted(client, ids, "PLAT_001") == 100 + 1_470 - 735
    assert await _posted(client, ids, "M_10086") == 8_330 - 4_165
    code, _, err = await cli(running, key, "split", "refund", "R-1", "--amount", "50.01",
                             "--reason", "too much")
    assert code == 1
    assert err.startswith("error: FAILED_PRECONDITION REFUND_EXCEEDS_SPLIT: "), err
    report = await client.verify()
    assert report.ok and report.chain_ok


async def test_bad_input_is_refused_clearly(running, platform, world, tmp_path):
    key = platform.key
    order = ["split", "create", "B-1", "--channel", "WECHAT_PAY", "--rule-set", "baby"]
    refusals = [
        ([*order, "--amount", "12.345"], "error: --amount: '12.345' has more decimals than CNY"
                                         " allows\n"),
        ([*order, "--amount", "12,00"], "error: --amount: not a number: '12,00'\n"),
        ([*order, "--amount", "1.00", "--attr", "tier"],
         "error: --attr: expected KEY=VALUE, got 'tier'\n"),
        ([*order, "--amount", "1.00", "--paid-time", "2026-01-20T12:00:00"],
         "error: --paid-time: give the time's offset, e.g. 2026-01-20T12:00:00+08:00 or "
         "2026-01-20T12:00:00Z\n"),
        ([*order, "--amount", "1.00", "--coupon", "C1:2.00"],
         "error: --coupon: expected ID:AMOUNT:platform|seller, got 'C1:2.00'\n"),
        (["split", "refund", "B-1", "--amount", "1e400", "--reason", "r"],
         "error: --amount: '1e400' is out of range\n"),
    ]
    unknown = tmp_path / "unknown.json"
    unknown.write_text('{"order_id": "B-2", "amount": "1.00"}')
    broken = tmp_path / "broken.json"
    broken.write_text('{"order_id": "B-2",')
    listed = tmp_path / "listed.json"
    listed.write_text('[{"order_id": "B-2"}]')
    refusals += [
        (["split", "create", "--json", str(unknown)],
         f'error: {unknown}: Message type "clearing.v1.Order" has no field named "amount" at'
         ' "Order".\n'),
        (["split", "preview", "--json", str(broken)],
         f"error: {broken}: not JSON: Expecting property name enclosed in double quotes: "
         "line 1 column 20 (char 19)\n"),
        (["split", "create", "--json", str(listed)], f"error: {listed}: not a JSON object (an "
                                                     "Order message)\n"),
        (["split", "create", "--json", str(listed), "--channel", "ALIPAY"],
         "error: give the order either as --json or on the command line, not both\n"),
        (["split", "create", "--json", str(tmp_path / "none.json")],
         f"error: {tmp_path / 'none.json'}: no such file\n"),
    ]
    for argv, expected in refusals:
        code, out, err = await cli(running, key, *argv)
        assert (code, out, err) == (1, "", expected), argv
    code, _, err = await cli(running, key, *argv[:2], "--json", str(unknown), "X-1")
    assert (code, err) == (1, "error: give the order either as --json or on the command "
                              "line, not both\n")

    # Refused by the server: the status, the reason and every field violation.
    code, out, err = await cli(running, key, "split", "create", "B-3", "--amount", "1.00",
                               "--rule-set", "baby")
    assert (code, out) == (1, "")
    lines = err.splitlines()
    assert lines[0].startswith("error: INVALID_ARGUMENT"), err
    assert [line.split(":")[0] for line in lines[1:]] == ["  order.channel"], err

    # Batch files: every bad line with its number, and nothing sent.
    csv_path = tmp_path / "orders.csv"
    csv_path.write_text("order_id,amount,channel,rule_set\n"
                        "C-1,1.00,WECHAT_PAY,baby\n"
                        "C-2,1.00\n"
                        "C-3,1.001,WECHAT_PAY,baby\n")
    code, out, err = await cli(running, key, "split", "batch", str(csv_path))
    assert (code, out, err) == (1, "", (
        f"error: {csv_path}:3: 2 values, the header has 4 columns (missing: channel, "
        f"rule_set)\n{csv_path}:4: column amount: '1.001' has more decimals than CNY "
        "allows\nnothing was sent\n"))
    csv_path.write_text("order_id,amount,colour\nC-1,1.00,red\n")
    code, _, err = await cli(running, key, "split", "batch", str(csv_path))
    assert (code, err.splitlines()[0]) == (1, f"error: {csv_path}:1: unknown column 'colour' "
                                              "(columns: order_id, amount, currency, channel, "
                                              "channel_fee, channel_transaction_id, rule_set, "
                                              "paid_time, memo, tags, coupons, attributes.KEY, "
                                              "parties.ROLE)")
    jsonl = tmp_path / "orders.jsonl"
    jsonl.write_text('{"order_id": "L-1", "amount_minor": "100"}\n\nnot json\n')
    code, _, err = await cli(running, key, "split", "batch", str(jsonl))
    assert (code, err) == (1, f"error: {jsonl}:3: not JSON: Expecting value: line 1 column 1"
                              " (char 0)\nnothing was sent\n")
    code, _, err = await cli(running, key, "split", "batch", str(csv_path), "--batch-size",
                             "1001")
    assert (code, err) == (1, "error: --batch-size: 1 to 1000\n")
    code, _, err = await cli(running, key, "split", "batch", str(csv_path), "--attempts", "0")
    assert (code, err) == (1, "error: --attempts: 1 to 10\n")
    code, _, err = await cli(running, key, "split", "release", "B-1", "--fraction-bps", "1e3")
    assert code == 2 and err.endswith("argument --fraction-bps: not an integer: '1e3'\n"), err
    code, _, err = await cli(running, key, "split", "get", "B-1")
    assert code == 1 and err.startswith("error: NOT_FOUND SPLIT_NOT_FOUND: "), err


ORDERS = 300
MESSAGES = {"NO_ACTIVE_RULE_SET": "rule set 'nothing' has no active version",
            "INVALID_ORDER": "order.parties[merchant]: required: the rule set pays party role"
                             " 'merchant'",
            "ORDER_ALREADY_SPLIT": "order 'BATCH-0' is already split"}


def _batch_file(path) -> tuple[list[int], str]:
    """300 orders: baby splits of (i + 1).00 but for 13 failing lines; the amounts of the
    orders that split, and the failures file expected (line, order id, reason, message)."""
    rows, amounts, failing = [], [], []
    for i in range(ORDERS):
        line = i + 2  # the header is line 1
        if i % 50 == 7:
            rows.append(f"BATCH-{i},{i + 1}.00,WECHAT_PAY,nothing,")
            failing.append((line, f"BATCH-{i}", "NO_ACTIVE_RULE_SET"))
        elif i % 50 == 21:  # takeaway pays the merchant party, left empty
            rows.append(f"BATCH-{i},{i + 1}.00,WECHAT_PAY,takeaway,")
            failing.append((line, f"BATCH-{i}", "INVALID_ORDER"))
        elif i == 150:  # order BATCH-0 again, with another amount
            rows.append("BATCH-0,7.00,WECHAT_PAY,baby,")
            failing.append((line, "BATCH-0", "ORDER_ALREADY_SPLIT"))
        else:
            rows.append(f"BATCH-{i},{i + 1}.00,WECHAT_PAY,baby,")
            amounts.append((i + 1) * 100)
    path.write_text("order_id,amount,channel,rule_set,parties.merchant\n"
                    + "\n".join(rows) + "\n")
    return amounts, "line,order_id,reason,message\n" + "".join(
        f"{line},{order_id},{reason},{MESSAGES[reason]}\n"
        for line, order_id, reason in failing)


async def test_batch_with_failures_and_its_rerun(running, platform, client, world, tmp_path):
    key, ids = platform.key, world
    path, failures = tmp_path / "day.csv", tmp_path / "failures.csv"
    amounts, expected_failures = _batch_file(path)
    assert expected_failures.count("\n") == 1 + 13
    argv = ["split", "batch", str(path), "--batch-size", "128", "--failures", str(failures)]
    summary = {"order_count": 300, "split_count": 287, "failed_count": 13, "not_sent_count": 0,
               "call_count": 3, "failed_by_reason": {"INVALID_ORDER": 6,
                                                     "NO_ACTIVE_RULE_SET": 6,
                                                     "ORDER_ALREADY_SPLIT": 1}}
    balances = None
    for _run in range(2):  # the same file twice: the second run answers the first results
        code, out, err = await cli(running, key, *argv)
        assert code == 1, err
        assert json.loads(out) == summary
        assert err.startswith("\r[############..................] 128/300 orders, 6 failed"
                              "\r[#########################.....] 256/300 orders, 11 failed"
                              "\r[##############################] 300/300 orders, 13 failed"
                              "\n"), err
        assert err.endswith("300 orders: 287 split, 13 failed\n"
                            "  INVALID_ORDER                          6\n"
                            "  NO_ACTIVE_RULE_SET                     6\n"
                            "  ORDER_ALREADY_SPLIT                    1\n"
                            f"failures: {failures}\n"), err
        assert failures.read_text() == expected_failures
        got = {ref: await _posted(client, ids, ref) for ref in REFS}
        if balances is None:
            balances = got
        assert got == balances  # the re-run booked nothing
    total = sum(amounts)
    assert balances == {"CUSTODIAL": -total, "PLAT_001": total * 15 // 100,
                        "SUP_2025001": total * 75 // 100, "DIST_01": total * 10 // 100,
                        "M_10086": 0}
    # BATCH-0 was split once, with its first amount.
    got = await ok(running, key, "split", "get", "BATCH-0", "--field", "split.amount_minor")
    assert got == 100

    # JSON lines, every order good: exit status 0, a failures file of its header alone.
    jsonl = tmp_path / "more.jsonl"
    jsonl.write_text("".join(json.dumps({"order_id": f"JL-{i}", "amount_minor": "1000",
                                         "currency_code": "CNY", "channel": "ALIPAY",
                                         "rule_set_name": "baby"}) + "\n" for i in range(3)))
    code, out, err = await cli(running, key, "split", "batch", str(jsonl), "--quiet",
                               "--failures", str(failures), "--field", "split_count")
    assert (code, out, err) == (0, "3\n", "3 orders: 3 split, 0 failed\n")
    assert failures.read_text() == "line,order_id,reason,message\n"
    assert await _posted(client, ids, "PLAT_001") == total * 15 // 100 + 3 * 150


async def test_batch_edited_line_and_refused_call(running, platform, client, world, tmp_path):
    key, ids = platform.key, world
    path, failures = tmp_path / "day.csv", tmp_path / "failures.csv"
    path.write_text("order_id,amount,channel,rule_set,parties.merchant\n"
                    "E-1,10.00,WECHAT_PAY,baby,\n"
                    "E-2,22.00,WECHAT_PAY,takeaway,\n")
    code, out, _ = await cli(running, key, "split", "batch", str(path), "--quiet",
                             "--field", "failed_by_reason")
    assert (code, out) == (1, '{"INVALID_ORDER": 1}\n')
    # The failing line fixed: it splits (takeaway 22.00: 3.30 and 18.70), the other line
    # answers its first result.
    path.write_text(path.read_text().replace("takeaway,", "takeaway,M_10086"))
    code, out, err = await cli(running, key, "split", "batch", str(path), "--quiet",
                               "--failures", str(failures))
    assert code == 0, err
    assert (json.loads(out)["split_count"], failures.read_text()) == (
        2, "line,order_id,reason,message\n")
    assert await _posted(client, ids, "PLAT_001") == 150 + 330
    assert await _posted(client, ids, "M_10086") == 1_870

    # A call refused whole (here: an unknown key): its orders fail with its reason, the
    # later ones are not sent.
    code, out, err = await cli(running, "ck_not-a-key", "split", "batch", str(path), "--quiet",
                               "--batch-size", "1", "--failures", str(failures))
    assert code == 1
    assert json.loads(out) == {"order_count": 2, "split_count": 0, "failed_count": 1,
                               "not_sent_count": 1, "call_count": 2,
                               "failed_by_reason": {"API_KEY_INVALID": 1}}
    assert err == ("error: UNAUTHENTICATED API_KEY_INVALID: unknown or revoked API key\n"
                   "2 orders: 0 split, 1 failed, 1 not sent\n"
                   "  API_KEY_INVALID                        1\n"
                   f"failures: {failures}\n")
    assert failures.read_text() == ("line,order_id,reason,message\n"
                                    "2,E-1,API_KEY_INVALID,unknown or revoked API key\n")
