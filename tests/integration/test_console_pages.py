"""The console's rule-set pages (publish with the validator's messages at their field paths,
backtest, activation with the swing shown, a maker key refused), the account statement as
CSV and XLSX (exact content), and the overview's charts (splits per minute, amounts per
receiver): the real app over HTTP against a real gRPC server, on the seed's B2B world (one
split of order B: 994.00 distributed 10/70/20)."""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import json
import re

import pytest

from clearing.console import exports
from clearing.console.overview import ZONE
from clearing.console.rule_pages import yaml_line
from clearing_client import ClearingClient
from tests.console_support import csrf_of, make_world, sign_in
from tests.console_support import console, world  # noqa: F401 - fixtures
from tests.report_support import B2B


def base_rule(text: str, platform_bps: int, supplier_bps: int) -> str:
    """B2B with its base rule's platform and supplier ratios changed."""
    head, base = text.split("- rule_name: base")
    base = base.replace("ratio_bps: 1000", f"ratio_bps: {platform_bps}").replace(
        "ratio_bps: 7000", f"ratio_bps: {supplier_bps}")
    return head + "- rule_name: base" + base


def line_of(text: str, needle: str, occurrence: int) -> int:
    """The 1-based line of the `occurrence`-th line of `text` containing `needle`."""
    lines = [i + 1 for i, line in enumerate(text.splitlines()) if needle in line]
    return lines[occurrence]


def test_yaml_line_follows_a_field_path():
    # rules[2] is base; its shares[1] is the supplier, whose ratio_bps is the 5th
    # "ratio_bps" of the file (government, promotion's three, base's platform, supplier)
    assert yaml_line(B2B, "rule_set.rules[2].shares[1].ratio_bps") == line_of(
        B2B, "ratio_bps:", 5)
    assert yaml_line(B2B, "rule_set.rules[2]") == line_of(B2B, "rule_name: base", 0)
    assert yaml_line(B2B, "rule_set.rules[9].shares") == line_of(B2B, "rules:", 0)
    assert yaml_line("not: [valid", "rule_set.name") == 0


async def test_publish_shows_errors_at_their_paths_then_files_a_version(console, world):
    bad = base_rule(B2B, 1000, 9000)  # 10% + 90% + 20%: over 100%
    async with console.http() as http:
        await sign_in(http, world.platform.key)
        form = await http.get("/rules/new", params={"from": "b2b", "version": 1})
        assert form.status_code == 200 and "rule_name: base" in html.unescape(form.text)
        refused = await http.post("/rules/new", data={"csrf": csrf_of(form.text),
                                                      "yaml": bad})
        assert refused.status_code == 400, refused.text
        page = html.unescape(refused.text)
        assert "RULE_SET_INVALID" in page and "rule_set.rules[2].shares" in page
        fields = re.findall(r'<code class="field">([^<]+)</code> <span class="line">'
                            r'\(line (\d+)\)', refused.text)
        assert fields, refused.text
        for field, line in fields:
            assert int(line) == yaml_line(bad, field)
        assert bad.splitlines()[0] in page  # the YAML is given back to be fixed
        not_yaml = await http.post("/rules/new", data={"csrf": csrf_of(form.text),
                                                       "yaml": "name: [b2b"})
        assert not_yaml.status_code == 400 and "not valid YAML" in not_yaml.text
        checked = await http.post("/rules/new", data={
            "csrf": csrf_of(form.text), "yaml": base_rule(B2B, 1200, 6800),
            "validate_only": "1"})
        assert checked.status_code == 200 and "Nothing was stored" in checked.text
        published = await http.post("/rules/new", data={
            "csrf": csrf_of(form.text), "yaml": base_rule(B2B, 1200, 6800)})
        assert published.status_code == 303, published.text
        assert published.headers["location"].startswith("/rules/b2b/2?")
        page = (await http.get(published.headers["location"])).text
        assert "v2 · PUBLISHED" in page and "Done: published version 2" in page
        # v3 never existed: the validate-only call stored nothing
        assert (await http.get("/rules/b2b/3")).status_code == 404


async def test_backtest_then_activation_with_the_swing(console, world):
    # Run after the publish test (same module, in order): b2b v2 is published, with the
    # base rule at 12/68/20. Order B's 994.00 under v1: 99.40 / 695.80 / 198.80; under v2
    # 119.28 / 675.92 / 198.80. Shares: platform 1000 -> 1200 bps (swing 2000 bps),
    # supplier 7000 -> 6800 (1988 / 69580 of it: 285 bps, floored), logistics 0.
    async with console.http() as maker:
        await sign_in(maker, world.platform.key)
        result = await maker.get("/rules/b2b/2/backtest", params={"days": 7})
        assert result.status_code == 200, result.text
        rows = re.findall(r"<tr(?: class=\"over\")?><td><a href=\"/accounts/\d+\">([^<]+)</a>"
                          r"</td><td class=\"num\">([^<]+)</td><td class=\"num\">([^<]+)</td>"
                          r"<td class=\"num\">(\d+) bps</td><td class=\"num\">(\d+) bps</td>"
                          r"<td class=\"num\">([^<]+)</td>", result.text)
        assert rows == [
            ("PLAT_001", "99.40 CNY", "119.28 CNY", "1000", "1200", "2000 bps"),
            ("SUP_2025001", "695.80 CNY", "675.92 CNY", "7000", "6800", "285 bps"),
            ("LOGISTICS_B", "198.80 CNY", "198.80 CNY", "2000", "2000", "0 bps"),
        ], result.text
        assert "2000 bps (threshold 3000 bps)" in result.text
        page = await maker.get("/rules/b2b/2")
        refused = await maker.post("/rules/b2b/2/activate", data={
            "csrf": csrf_of(page.text), "content_sha256": "", "comment": "mine"})
        assert refused.status_code == 403
        assert "PERMISSION_DENIED" in refused.text and "ROLE_REQUIRED" in refused.text
    async with console.http() as approver:
        await sign_in(approver, world.approver)
        page = await approver.get("/rules/b2b/2")
        sha = re.search(r'name="content_sha256" value="([0-9a-f]+)"', page.text).group(1)
        stale = await approver.post("/rules/b2b/2/activate", data={
            "csrf": csrf_of(page.text), "content_sha256": "0" * 64})
        assert stale.status_code == 409 and "CONTENT_CHANGED" in stale.text
        done = await approver.post("/rules/b2b/2/activate", data={
            "csrf": csrf_of(page.text), "content_sha256": sha, "comment": "reviewed"})
        assert done.status_code == 200, done.text
        facts = {html.unescape(k): v for k, v in re.findall(
            r"<tr><th>([^<]+)</th><td[^>]*>([^<]+)</td></tr>", done.text)}
        assert "v2 is the active version (v1 is superseded)" in done.text
        assert facts["Largest swing of a receiver's share"] == "2000 bps"
        assert facts["Threshold"] == "3000 bps"
        assert facts["Receiver"].startswith("PLAT_001 (")
        assert facts["Orders backtested"] == "1 (last 7 days)"
        assert facts["Second approver needed"] == "no"
        assert "v2 · ACTIVE" in done.text


async def test_statement_exports_are_exact(console, world):
    sup = world.ids["SUP_2025001"]
    async with console.http() as http:
        await sign_in(http, world.platform.key)
        page = (await http.get(f"/accounts/{sup}")).text
        assert f"/accounts/{sup}/statement.csv" in page
        got = await http.get(f"/accounts/{sup}/statement.csv")
        assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
        assert f'filename="statement-{sup}.csv"' in got.headers["content-disposition"]
        rows = list(csv.reader(io.StringIO(got.text)))
        assert got.text.endswith("\r\n")
        assert rows[0] == list(exports.COLUMNS)
        assert len(rows) == 2  # the split's one leg to the supplier: 70% of 994.00
        row = dict(zip(rows[0], rows[1]))
        assert (row["side"], row["amount_minor"], row["amount"], row["currency_code"]) == (
            "CREDIT", "69580", "695.80", "CNY")
        assert row["counterparty_account_id"] not in ("", "0", str(sup))
        xlsx = await http.get(f"/accounts/{sup}/statement.xlsx")
        assert xlsx.status_code == 200 and xlsx.content.startswith(b"PK")
        import openpyxl

        book = openpyxl.load_workbook(io.BytesIO(xlsx.content), read_only=True)
        sheet = [list(r) for r in book.active.iter_rows(values_only=True)]
        assert sheet[0] == list(exports.COLUMNS) and len(sheet) == 2
        cells = dict(zip(sheet[0], sheet[1]))
        assert cells["amount_minor"] == 69580 and cells["amount"] == "695.80"
        assert cells["transfer_id"] == int(row["transfer_id"])
        assert cells["create_time"] == row["create_time"]
        foreign = world.other_split.legs[0].account_id
        refused = await http.get(f"/accounts/{foreign}/statement.csv")
        assert refused.status_code == 404 and "NOT_FOUND" in refused.text


async def test_a_statement_stops_at_its_maximum_with_a_truncated_row(running, world):
    # the account with the most entries (the custodial one: debited by the split's three
    # legs and by the payout party's funding in make_world): more than two
    async with ClearingClient(f"127.0.0.1:{running.port}", world.platform.key) as c:
        accounts = (await c.list_accounts(page_size=100)).accounts
        counts = {}
        for a in accounts:
            counts[a.account_id] = len((await c.list_entries(a.account_id,
                                                             page_size=100)).entries)
        busy = max(counts, key=counts.get)
        assert counts[busy] >= 3
        first = await c.list_entries(busy, page_size=2)
        batches = [b async for b in exports.statement_rows(c, busy, first, rows_max=2)]
    rows = [r for b in batches for r in b]
    assert len(rows) == 3 and rows[2][0] == "truncated"
    assert rows[2][1] == "more than 2 entries: the newest 2 are here"
    assert [r[0] for r in rows[:2]] == [e.transfer_id for e in first.entries]


async def test_overview_charts_splits_per_minute_and_receivers(console, world):
    paid = world.split.order.paid_time if world.split.order.HasField("paid_time") else (
        world.split.create_time)
    minute = paid.ToDatetime(dt.timezone.utc).astimezone(ZONE).strftime("%H:%M")
    async with console.http() as http:
        await sign_in(http, world.platform.key)
        page = (await http.get("/")).text
    specs = {m.group(1): json.loads(html.unescape(m.group(2))) for m in re.finditer(
        r'<figure class="chart" id="([^"]+)">.*?<script type="application/json" '
        r'class="chart-data">(.*?)</script>', page, re.S)}
    minutes = specs["minutes"]
    assert minutes["type"] == "bar" and minutes["labels"][0] == minute
    assert minutes["datasets"][0]["data"][0] == 1 and sum(minutes["datasets"][0]["data"]) == 1
    assert minutes["datasets"][0]["tips"][0] == f"{minute}: 1 splits"
    assert "Splits today: 1." in page
    receivers = specs["receivers-1"]
    assert receivers["labels"] == ["SUP_2025001", "LOGISTICS_B", "PLAT_001"]
    assert receivers["datasets"][1]["tips"] == [
        "this month 695.80 CNY", "this month 198.80 CNY", "this month 99.40 CNY"]
    assert receivers["datasets"][0]["tips"][0] == "today 695.80 CNY"
    table = re.findall(r'<tr><td><a href="/accounts/\d+">([^<]+)</a></td><td class="num">'
                       r'([^<]+)</td><td class="num">([^<]+)</td></tr>', page)
    assert table == [("SUP_2025001", "695.80 CNY", "695.80 CNY"),
                     ("LOGISTICS_B", "198.80 CNY", "198.80 CNY"),
                     ("PLAT_001", "99.40 CNY", "99.40 CNY")]
    assert "volume-CNY" in specs and '<script src="/static/chart.umd.min.js">' in page


async def test_a_large_swing_needs_a_second_approver_and_shows_its_figures(console, world):
    # After the activation above (v2 active, base 12/68/20), v3 moves the base rule to
    # 50/30/20. Order B (recorded under v1) counts under v2: platform 119.28 of 994.00
    # (1200 bps); under v3 497.00 (5000 bps): a swing of 37,772 / 11,928 = 3.1666...,
    # 31666 bps floored, over the 3000 bps threshold.
    async with console.http() as maker:
        await sign_in(maker, world.platform.key)
        form = await maker.get("/rules/new")
        published = await maker.post("/rules/new", data={
            "csrf": csrf_of(form.text), "yaml": base_rule(B2B, 5000, 3000)})
        assert published.headers["location"].startswith("/rules/b2b/3?"), published.text
    async with console.http() as approver:
        await sign_in(approver, world.approver)
        page = await approver.get("/rules/b2b/3")
        first = await approver.post("/rules/b2b/3/activate", data={"csrf": csrf_of(page.text)})
        assert first.status_code == 409, first.text
        assert "RATIO_SWING_NEEDS_SECOND_APPROVER" in first.text
        facts = dict(re.findall(r"<tr><th>([a-z_]+)</th><td>([^<]+)</td></tr>", first.text))
        assert (facts["max_swing_bps"], facts["swing_threshold_bps"],
                facts["receiver_external_ref"], facts["active_share_bps"],
                facts["candidate_share_bps"], facts["order_count"],
                facts["active_version"]) == ("31666", "3000", "PLAT_001", "1200", "5000", "1",
                                             "2")
        assert "v3 · PUBLISHED" in first.text

