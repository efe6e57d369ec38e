"""The console in a real browser: Debian's Chromium (/usr/bin/chromium, headless) driven
by Playwright (no browser downloaded): sign in, find the seed's B2B split by its order id
and download its voucher, see a payout's approval refused with the maker's key, then
approve it with the approver's; the overview's charts drawn by Chart.js (no CSP
violation); a rule-set version published with an error shown at its field path, then a
valid one, backtested; a discrepancy resolved (the maker proposes, the approver approves); a party key (bound to
the merchant paid out) sees its payout but not the B2B split, neither in the list nor by its
URL.
Screenshots of every page go under the test's tmp dir; with CLEARING_CONSOLE_SCREENSHOTS=DIR
the two the README shows are written there too (`make console-screenshots` refreshes
docs/). A missing browser fails the test (`.ci/run` installs it)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.console_support import PAGES, party_key
from tests.console_support import console, world  # noqa: F401 - fixtures
from tests.report_support import B2B

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]


@pytest.fixture
async def browser():
    assert CHROMIUM.exists() and os.access(CHROMIUM, os.X_OK), (
        "Debian's chromium is not installed: apt-get install -y chromium (.ci/run does)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            yield b
        finally:
            await b.close()


# The screenshots the README shows, by the name the test gives them.
README_SHOTS = {"overview.png": "console-overview.png",
                "payout-refused.png": "console-payout-refused.png"}


def keep_for_docs(shots: Path) -> None:
    """Copy the README's screenshots to $CLEARING_CONSOLE_SCREENSHOTS, when set."""
    target = os.environ.get("CLEARING_CONSOLE_SCREENSHOTS")
    if target:
        for name, doc_name in README_SHOTS.items():
            (Path(target) / doc_name).write_bytes((shots / name).read_bytes())


async def sign_in(page, url: str, key: str) -> None:
    await page.goto(url + "/signin")
    await page.fill("input[name=api_key]", key)
    await page.click("button[type=submit]")
    await page.wait_for_url(url + "/")


async def test_find_a_split_download_its_voucher_and_review_a_payout(console, world, browser,
                                                                     tmp_path):
    shots = tmp_path / "screenshots"
    shots.mkdir()
    url = console.url
    maker = await browser.new_context(accept_downloads=True)
    page = await maker.new_page()
    console_errors: list[str] = []
    page.on("console", lambda m: m.type in ("error", "warning") and console_errors.append(m.text))
    await sign_in(page, url, world.platform.key)
    await page.screenshot(path=shots / "overview.png", full_page=True)
    # every chart drawn by Chart.js from its data (the volume, splits per minute, receivers)
    drawn = await page.evaluate("""() => [...document.querySelectorAll('figure.chart')]
        .map(f => [f.id, Chart.getChart(f.querySelector('canvas')).data.datasets[0].data
                   .reduce((a, b) => a + b, 0)])""")
    drawn = dict(drawn)
    # one split today; the receivers today: 695.80 + 198.80 + 99.40 (drawn as numbers)
    assert drawn["minutes"] == 1 and abs(drawn["receivers-1"] - 994.0) < 1e-9, drawn
    assert "volume-CNY" in drawn
    assert not [m for m in console_errors if "Content Security Policy" in m], console_errors

    await page.click("nav >> text=Splits")
    await page.fill("input[name=order_id]", world.split.order_id)
    await page.click("form.search button")
    await page.wait_for_url(f"{url}/splits/{world.split.split_id}")
    assert world.split.order_id in await page.inner_text("h1")
    await page.screenshot(path=shots / "split.png", full_page=True)
    async with page.expect_download() as info:
        await page.click("text=Download voucher (PDF)")
    download = await info.value
    saved = tmp_path / download.suggested_filename
    await download.save_as(saved)
    assert saved.read_bytes().startswith(b"%PDF-")

    for path in PAGES:  # every page of the menu renders in the browser
        response = await page.goto(url + path)
        assert response.status == 200, path
        await page.screenshot(path=shots / f"page-{path.strip('/').replace('/', '-') or 'home'}.png",
                              full_page=True)

    payout = f"{url}/payouts/{world.payout.payout_id}"
    await page.goto(payout)
    await page.click("button[name=approve]")
    await page.wait_for_load_state()
    alert = await page.inner_text("[role=alert]")
    assert "PERMISSION_DENIED" in alert and "approver" in alert
    await page.screenshot(path=shots / "payout-refused.png", full_page=True)
    await maker.close()

    approver = await browser.new_context()
    page = await approver.new_page()
    await sign_in(page, url, world.approver)
    await page.goto(payout)
    await page.fill("form[action$=approve] input[name=reason]", "checked in the browser")
    await page.click("button[name=approve]")
    await page.wait_for_url(payout + "?done=approved")
    assert "Done: approved" in await page.inner_text("main")
    await page.screenshot(path=shots / "payout-approved.png", full_page=True)
    await approver.close()
    assert len(list(shots.iterdir())) == 4 + len(PAGES)
    keep_for_docs(shots)


async def test_publish_a_rule_set_version_with_an_error_then_a_valid_one(console, world,
                                                                         browser, tmp_path):
    url = console.url
    context = await browser.new_context()
    page = await context.new_page()
    await sign_in(page, url, world.platform.key)
    await page.click("nav >> text=Rule sets")
    await page.click("text=Publish a new version")
    await page.wait_for_url(url + "/rules/new")
    head, base = B2B.split("- rule_name: base")
    over = head + "- rule_name: base" + base.replace("ratio_bps: 7000", "ratio_bps: 9000")
    await page.fill("textarea[name=yaml]", over)
    await page.click("button[name=publish]")
    await page.wait_for_load_state()
    alert = await page.inner_text("[role=alert]")
    assert "RULE_SET_INVALID" in alert and "rule_set.rules[2].shares" in alert
    assert "(line " in alert
    # the text comes back as typed, to be fixed in place
    assert await page.input_value("textarea[name=yaml]") == over
    await page.screenshot(path=tmp_path / "rule-publish-refused.png", full_page=True)
    fixed = head + "- rule_name: base" + base.replace("ratio_bps: 1000", "ratio_bps: 1200") \
        .replace("ratio_bps: 7000", "ratio_bps: 6800")
    await page.fill("textarea[name=yaml]", fixed)
    await page.click("button[name=publish]")
    await page.wait_for_url(f"{url}/rules/b2b/2?done=published+version+2")
    assert "v2 · PUBLISHED" in await page.inner_text("h1")
    await page.screenshot(path=tmp_path / "rule-set.png", full_page=True)
    await page.click("form.backtest button")
    await page.wait_for_url(f"{url}/rules/b2b/2/backtest?days=7")
    first = page.locator("table.backtest tbody tr").first
    assert (await first.locator("td").all_inner_texts())[:3] == [
        "PLAT_001", "99.40 CNY", "119.28 CNY"]
    await page.screenshot(path=tmp_path / "rule-backtest.png", full_page=True)
    await context.close()


async def test_resolve_a_discrepancy_maker_then_approver(console, browser, channel,
                                                        database_url, tmp_path):
    from clearing.v1 import reconciliation_pb2 as rpb
    from tests.payout_support import keys
    from tests.recon_support import ReconWorld, hand_day
    from tests.support import Client, rid

    pid, key, approver_key = await keys(database_url)
    recon = await ReconWorld.make(channel, Client(channel, key), database_url, pid, key)
    day = await hand_day(recon)
    await recon.call("PostSettlement", rpb.PostSettlementRequest(request_id=rid(),
                                                                 run_id=day.run.run_id))
    url = console.url
    maker = await browser.new_context()
    page = await maker.new_page()
    await sign_in(page, url, key)
    await page.click("nav >> text=Reconciliation")
    await page.click(f"a[href='/recon/discrepancies?run_id={day.run.run_id}']")
    await page.screenshot(path=tmp_path / "discrepancies.png", full_page=True)
    row = page.locator("tr", has_text=day.g.order_id)
    await row.locator("select[name=action]").select_option("write_off")
    await row.locator("input[name=note]").fill("not ours: written off")
    await row.locator("button", has_text="Propose").click()
    await page.wait_for_url(re.compile(r".*/recon/resolutions/\d+\?done=proposed$"))
    resolution = page.url.split("?")[0]
    assert await page.inner_text("td.state") == "PROPOSED"
    await page.screenshot(path=tmp_path / "resolution-proposed.png", full_page=True)
    await page.click("form[action$=approve] button")  # the maker's own: refused
    await page.wait_for_load_state()
    assert "PERMISSION_DENIED" in await page.inner_text("[role=alert]")
    await maker.close()

    checker = await browser.new_context()
    page = await checker.new_page()
    await sign_in(page, url, approver_key)
    await page.goto(resolution)
    await page.fill("form[action$=approve] input[name=note]", "agreed in the browser")
    await page.click("form[action$=approve] button")
    await page.wait_for_url(resolution + "?done=approved")
    assert await page.inner_text("td.state") == "APPROVED"
    await page.screenshot(path=tmp_path / "resolution-approved.png", full_page=True)
    await checker.close()


async def test_a_party_key_cannot_see_another_partys_split(console, world, browser, tmp_path,
                                                           database_url):
    shots = tmp_path / "screenshots"
    shots.mkdir()
    url = console.url
    key = await party_key(database_url, world.platform.platform_id, world.payout.account_id)
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(url + "/signin")
    await page.fill("input[name=api_key]", key)
    await page.click("button[type=submit]")
    await page.wait_for_url(url + "/splits")
    assert await page.locator("nav a").all_inner_texts() == ["Splits", "Accounts", "Payouts"]
    assert world.split.order_id not in await page.inner_text("main")
    await page.screenshot(path=shots / "party-splits.png", full_page=True)

    await page.fill("input[name=order_id]", world.split.order_id)  # searched by order id
    await page.click("form.search button")
    await page.wait_for_load_state()
    assert "SPLIT_NOT_FOUND" in await page.inner_text("[role=alert]")

    response = await page.goto(f"{url}/splits/{world.split.split_id}")  # and by its URL
    assert response.status == 404
    alert = await page.inner_text("[role=alert]")
    assert "NOT_FOUND" in alert and "SPLIT_NOT_FOUND" in alert
    assert world.split.order_id not in await page.inner_text("main")
    await page.screenshot(path=shots / "party-split-not-found.png", full_page=True)

    await page.click("nav >> text=Payouts")
    await page.wait_for_url(url + "/payouts")
    await page.click(f"a[href='/payouts/{world.payout.payout_id}']")
    await page.wait_for_url(f"{url}/payouts/{world.payout.payout_id}")
    assert await page.locator("button[name=approve]").count() == 0  # read-only
    await page.screenshot(path=shots / "party-payout.png", full_page=True)
    await context.close()
    assert len(list(shots.iterdir())) == 3
