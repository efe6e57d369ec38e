"""The console in a real browser: Debian's Chromium (/usr/bin/chromium, headless) driven
by Playwright (no browser downloaded): sign in, find the seed's B2B split by its order id
and download its voucher, see a payout's approval refused with the maker's key, then
approve it with the approver's; a party key (bound to the merchant paid out) sees its
payout but not the B2B split, neither in the list nor by its URL. Screenshots of every page
go under the test's tmp dir.
A missing browser fails the test (`.ci/run` installs it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.console_support import PAGES, make_world, party_key, serve_console

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
async def world(channel, database_url):
    return await make_world(channel, database_url)


@pytest.fixture(scope="module")
async def console(running):
    async with serve_console(running.port) as c:
        yield c


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
    await sign_in(page, url, world.platform.key)
    await page.screenshot(path=shots / "overview.png", full_page=True)
    assert await page.locator("svg.chart").count() >= 1

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
