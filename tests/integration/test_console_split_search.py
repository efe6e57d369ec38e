"""The console's Splits page searches with ListSplits: each filter, the next-page link (one
API page at a time, the filters kept), bad input naming the field, another platform's
splits never shown; the order-id lookup unchanged."""

from __future__ import annotations

import re

import pytest

from clearing.limits import CONSOLE_PAGE_SIZE
from clearing.v1 import split_pb2 as pb
from tests.console_support import empty_platform, serve_console, sign_in
from tests.integration.test_list_splits import HOUR_NS, ts, world  # noqa: F401 - a fixture
from tests.split_support import order
from tests.support import rid

LINK = re.compile(r'<a href="/splits/(\d+)">')
NEXT = re.compile(r'<p class="pager"><a href="([^"]+)">')


@pytest.fixture
async def console(running):
    async with serve_console(running.port) as c:
        yield c


def _ids(html: str) -> list[int]:
    return [int(i) for i in LINK.findall(html)]


async def test_the_splits_page_searches(console, world, platform, database_url):  # noqa: F811
    gateway, _, ids, made = world
    every = [m.split_id for m in made]
    async with console.http() as http:
        await sign_in(http, platform.key)

        async def found(**params) -> list[int]:
            page = await http.get("/splits", params=params)
            assert page.status_code == 200, page.text[:2000]
            assert not NEXT.search(page.text)
            return _ids(page.text)

        assert await found() == every
        assert await found(state="cancelled") == [
            m.split_id for m in made if m.state == pb.SPLIT_STATUS_CANCELLED]
        # T0 is 08:00 on 2026-01-10 in Asia/Shanghai, the platform's time zone
        assert await found(**{"from": "2026-01-10", "to": "2026-01-10"}) == every
        assert await found(to="2026-01-09") == []
        assert "No splits match this search" in (await http.get(
            "/splits", params={"to": "2026-01-09"})).text
        assert await found(account_id=str(ids["DIST_01"])) == [
            m.split_id for m in made if "DIST_01" in m.refs]
        assert await found(min_amount="10", max_amount="20.00") == [
            m.split_id for m in made if 1_000 <= m.amount <= 2_000]
        assert await found(currency="cny", state="posted", min_amount="25") == [
            m.split_id for m in made if m.amount >= 2_500 and m.state == pb.SPLIT_STATUS_POSTED]
        # the order-id lookup is as it was
        got = await http.get("/splits", params={"order_id": (await gateway.call(
            "GetSplit", pb.GetSplitRequest(split_id=every[0]))).split.order_id})
        assert got.status_code == 303 and got.headers["location"] == f"/splits/{every[0]}"

        for params, field in (({"state": "preview"}, "state"), ({"state": "nope"}, "state"),
                              ({"from": "2026-13-01"}, "from"),
                              ({"from": "2026-01-11", "to": "2026-01-10"}, "to"),
                              ({"account_id": "-4"}, "account_id"),
                              ({"min_amount": "1.234"}, "min_amount"),
                              ({"max_amount": "0"}, "max_amount"),
                              ({"currency": "XYZ"}, "currency"),
                              ({"page_token": "garbage"}, "page_token")):
            page = await http.get("/splits", params=params)
            assert page.status_code == 400 and field in page.text, (params, page.text[:2000])
            assert "Traceback" not in page.text

        # more than a page: one API page at a time, the next link keeps the filters
        t0 = made[-1].paid_ns
        extra = CONSOLE_PAGE_SIZE + 3 - len(made)
        batch = await gateway.call("SplitBatch", pb.SplitBatchRequest(
            request_id=rid(), requests=[pb.SplitRequest(request_id=rid(), order=order(
                100 + i, rule_set_name="ls-a", paid_time=ts(t0 - (i + 1) * HOUR_NS)))
                for i in range(extra)]))
        added = [o.split.split_id for o in batch.outcomes]
        assert len(added) == extra and all(added)
        seen, url, pages = [], "/splits?min_amount=1.00", 0
        while url:
            page = await http.get(url.replace("&amp;", "&"))  # "?...": relative to /splits
            assert page.status_code == 200, page.text[:2000]
            seen += _ids(page.text)
            pages += 1
            url = ("/splits" + m.group(1) if (m := NEXT.search(page.text)) else "")
            assert not url or (url.startswith("/splits?min_amount=1.00&") and "state=" not in url)
        assert pages == 2 and seen == every + added and len(seen) == CONSOLE_PAGE_SIZE + 3
        # reusing the token with another filter is refused by the API, shown with its field
        first = (await http.get("/splits", params={"min_amount": "1.00"})).text
        token = re.search(r"page_token=([^\"&]+)", first).group(1)
        page = await http.get(f"/splits?min_amount=2.00&page_token={token}")
        assert page.status_code == 400 and "page_token" in page.text

    other = await empty_platform(database_url)
    async with console.http() as http:
        await sign_in(http, other.key)
        page = await http.get("/splits")
        assert page.status_code == 200 and _ids(page.text) == []
        assert "No splits." in page.text
