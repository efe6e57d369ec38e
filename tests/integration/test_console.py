"""The back-office console (clearing.console) over real HTTP (httpx) against the real app
served by uvicorn in this process, a client of a real gRPC server (`running`): sign-in and
sign-out, CSRF and cross-origin refusals, session expiry, the key never in a page, a cookie
or a log line, tenancy by URL, each page with data and empty, payout review by an approver
key and refused to a maker key, the split voucher as a PDF."""

from __future__ import annotations

import pytest

from clearing.v1 import payout_pb2 as ppb
from tests.console_support import (PAGES, PAYOUT_MINOR, csrf_of, empty_platform,
                                   make_world, party_key, sign_in)
from tests.console_support import console, world  # noqa: F401 - fixtures


async def test_sign_in_and_out_with_a_session_cookie(console, world):
    async with console.http() as http:
        assert (await http.get("/")).headers["location"].startswith("/signin")
        page = await http.get("/signin")
        assert page.status_code == 200 and 'type="password"' in page.text
        signed = await sign_in(http, world.platform.key)
        assert signed.status_code == 303 and signed.headers["location"] == "/"
        cookie = signed.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert "Secure" not in cookie  # plain HTTP here; under TLS it is (test below)
        assert world.platform.key not in cookie
        overview = await http.get("/")
        assert overview.status_code == 200 and "Overview" in overview.text
        out = await http.post("/signout", data={"csrf": csrf_of(overview.text)})
        assert out.status_code == 303 and out.headers["location"].startswith("/signin")
        assert (await http.get("/")).status_code == 303  # the session is gone


async def test_a_wrong_key_is_refused_and_never_shown(console):
    async with console.http() as http:
        bad = "ck_live_not-a-real-key-0123456789"
        page = await sign_in(http, bad)
        assert page.status_code == 401 and "not accepted" in page.text
        assert bad not in page.text and "session" not in str(http.cookies)


async def test_csrf_and_cross_origin_are_refused(console, world):
    async with console.http() as http:
        form = await http.get("/signin")
        refused = await http.post("/signin", data={"csrf": "forged",
                                                   "api_key": world.platform.key})
        assert refused.status_code == 403 and "CSRF" in refused.text
        assert csrf_of(form.text)
        await sign_in(http, world.platform.key)
        # a form without the session's token, or with another's, does nothing
        no = await http.post(f"/payouts/{world.payout.payout_id}/reject",
                             data={"reason": "x"})
        assert no.status_code == 403 and "CSRF" in no.text
        token = csrf_of((await http.get("/")).text)
        cross = await http.post("/signout", data={"csrf": token},
                                headers={"Origin": "http://evil.example"})
        assert cross.status_code == 403
        assert (await http.get("/")).status_code == 200  # still signed in


async def test_a_session_expires_when_idle_and_at_its_maximum(console, world):
    store = console.sessions
    now = [1_000.0]
    clock, store.clock = store.clock, lambda: now[0]
    try:
        async with console.http() as http:
            await sign_in(http, world.platform.key)
            now[0] += store.idle_s - 1
            assert (await http.get("/splits")).status_code == 200  # restarts the idle clock
            now[0] += store.idle_s + 1
            gone = await http.get("/splits")
            assert gone.status_code == 303 and "why=" in gone.headers["location"]
            await sign_in(http, world.platform.key)
            for _ in range(int(store.max_s // (store.idle_s - 1)) + 1):
                now[0] += store.idle_s - 1
                page = await http.get("/splits")
            assert page.status_code == 303  # max_s after sign-in, however active
            post = await http.post("/signout", data={"csrf": "x"})
            assert post.status_code == 403
    finally:
        store.clock = clock


async def test_pages_render_with_data(console, world):
    s = world.split
    async with console.http() as http:
        await sign_in(http, world.platform.key)
        for path in PAGES:
            page = await http.get(path)
            assert page.status_code == 200, (path, page.text[:2000])
            assert world.platform.key not in page.text
        overview = (await http.get("/")).text
        assert "chart-data" in overview and "CNY" in overview and "PENDING_REVIEW" in overview
        found = await http.get("/splits", params={"order_id": s.order_id})
        assert found.status_code == 303 and found.headers["location"] == f"/splits/{s.split_id}"
        split = (await http.get(f"/splits/{s.split_id}")).text
        assert s.order_id in split and "SUP_2025001" in split and "695.80 CNY" in split
        accounts = (await http.get("/accounts")).text
        assert "SUP_2025001" in accounts
        account = (await http.get(f"/accounts/{world.ids['SUP_2025001']}")).text
        assert "Statement" in account and "695.80 CNY" in account
        payouts = (await http.get("/payouts", params={"state": "pending_review"})).text
        assert f"/payouts/{world.payout.payout_id}" in payouts
        rules = (await http.get("/rules")).text
        assert "/rules/b2b/1" in rules
        yaml = (await http.get("/rules/b2b/1")).text
        assert "rule_name" in yaml
        diff = await http.get("/rules/b2b/1", params={"diff": 1})
        assert diff.status_code == 200 and "same rules" in diff.text
        events = (await http.get("/events", params={"type": "split.committed"})).text
        assert f'href="/splits/{s.split_id}"' in events and "split.committed" in events
        assert "<td>split.committed</td>" in events
        assert "<td>rule_set.activated</td>" not in events  # the filter
        ahead = await http.get("/events", params={"after": 10**12})
        assert ahead.status_code == 400 and "EVENT_CURSOR_AHEAD" in ahead.text
        bad = await http.get("/events", params={"type": "no.such"})
        assert bad.status_code == 400 and "type" in bad.text


async def test_pages_render_empty(console, database_url):
    empty = await empty_platform(database_url)
    async with console.http() as http:
        await sign_in(http, empty.key)
        for path in PAGES:
            page = await http.get(path)
            assert page.status_code == 200, (path, page.text[:2000])
        assert "No accounts yet" in (await http.get("/accounts")).text
        assert "No payouts" in (await http.get("/payouts")).text
        assert "No reconciliation runs" in (await http.get("/recon")).text
        assert "No risk events" in (await http.get("/risk")).text
        assert "No events" in (await http.get("/events")).text
        assert "No payments this month" in (await http.get("/")).text
        missing = await http.get("/splits", params={"order_id": "no-such-order"})
        assert missing.status_code == 404 and "NOT_FOUND" in missing.text


async def test_another_platforms_split_is_not_found_by_url(console, world):
    async with console.http() as http:
        await sign_in(http, world.platform.key)
        other = world.other_split.split_id
        for path in (f"/splits/{other}", f"/splits/{other}/voucher.pdf"):
            page = await http.get(path)
            assert page.status_code == 404, path
            assert "NOT_FOUND" in page.text and world.other_split.order_id not in page.text


async def test_a_party_key_sees_its_own_pages_only(console, world, database_url):
    """The supplier of the B2B split sees it (and its own account only); the merchant paid
    out by the payout sees its payout, not the split, whose URL answers not found."""
    supplier = world.ids["SUP_2025001"]
    merchant = world.payout.account_id
    async with console.http() as http:
        signed = await sign_in(http, await party_key(database_url, world.platform.platform_id,
                                                     supplier))
        assert signed.headers["location"] == "/splits"
        assert (await http.get("/")).headers["location"] == "/splits"
        page = await http.get("/splits")
        assert world.split.order_id in page.text
        nav = page.text.split("<nav>", 1)[1].split("</nav>", 1)[0]
        assert [label for label in ("Overview", "Splits", "Accounts", "Payouts",
                                    "Reconciliation", "Risk", "Rule sets", "Events")
                if f">{label}</a>" in nav] == ["Splits", "Accounts", "Payouts"]
        split = await http.get(f"/splits/{world.split.split_id}")
        assert split.status_code == 200 and "/release" not in split.text
        assert f'href="/accounts/{supplier}"' in split.text
        assert f'href="/accounts/{world.ids["PLAT_001"]}"' not in split.text
        accounts = await http.get("/accounts")
        assert f'href="/accounts/{supplier}"' in accounts.text
        assert f'href="/accounts/{world.ids["PLAT_001"]}"' not in accounts.text
        page = await http.get("/recon")
        assert page.status_code == 403 and "PARTY_KEY_METHOD_DENIED" in page.text
    async with console.http() as http:
        await sign_in(http, await party_key(database_url, world.platform.platform_id,
                                            merchant))
        assert world.split.order_id not in (await http.get("/splits")).text
        for path in (f"/splits/{world.split.split_id}",
                     f"/splits/{world.split.split_id}/voucher.pdf",
                     f"/splits?order_id={world.split.order_id}",
                     f"/accounts/{supplier}", f"/payouts?account_id={supplier}"):
            page = await http.get(path)
            if path.startswith("/payouts"):
                assert page.status_code == 200 and "/payouts/" not in page.text, path
                continue
            assert page.status_code == 404 and "NOT_FOUND" in page.text, path
            if "order_id" not in path:  # (a search shows the order id it was given)
                assert world.split.order_id not in page.text, path
        payouts = await http.get("/payouts")
        assert f'href="/payouts/{world.payout.payout_id}"' in payouts.text


async def test_bad_input_shows_the_field(console, world):
    async with console.http() as http:
        await sign_in(http, world.platform.key)
        page = await http.get("/payouts", params={"account_id": "abc"})
        assert page.status_code == 400 and "account_id" in page.text
        page = await http.get("/payouts", params={"page_token": "garbage!"})
        assert page.status_code == 400 and "INVALID_ARGUMENT" in page.text
        assert "page_token" in page.text


async def test_a_maker_key_is_refused_and_the_approver_approves(console, world):
    payout_id = world.payout.payout_id
    async with console.http() as maker:
        await sign_in(maker, world.platform.key)
        page = await maker.get(f"/payouts/{payout_id}")
        assert "PENDING_REVIEW" in page.text and "Approve" in page.text
        refused = await maker.post(f"/payouts/{payout_id}/approve",
                                   data={"csrf": csrf_of(page.text), "reason": "mine"})
        assert refused.status_code == 403
        assert "PERMISSION_DENIED" in refused.text and "approver" in refused.text
    async with console.http() as approver:
        await sign_in(approver, world.approver)
        page = await approver.get(f"/payouts/{payout_id}")
        done = await approver.post(f"/payouts/{payout_id}/approve",
                                   data={"csrf": csrf_of(page.text), "reason": "checked"})
        assert done.status_code == 303, done.text
        after = await approver.get(done.headers["location"])
        assert "Done: approved" in after.text and "PENDING_REVIEW" not in after.text
        assert f"{PAYOUT_MINOR // 100}.00 CNY" in after.text


async def test_the_split_voucher_is_a_pdf(console, world):
    async with console.http() as http:
        await sign_in(http, world.platform.key)
        pdf = await http.get(f"/splits/{world.split.split_id}/voucher.pdf")
        assert pdf.status_code == 200
        assert pdf.headers["content-type"] == "application/pdf"
        assert pdf.content.startswith(b"%PDF-")
        assert "attachment" in pdf.headers["content-disposition"]


async def test_the_cookie_is_secure_under_tls(running):
    from clearing.console.app import ConsoleConfig, create_app
    import httpx

    app = create_app(ConsoleConfig(target=f"127.0.0.1:{running.port}", credentials=None,
                                   secure_cookie=True))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://console") as http:
        page = await http.get("/signin")
        assert "Secure" in page.headers["set-cookie"]


def test_payout_state_names_are_the_api_ones():
    assert ppb.PayoutState.Name(ppb.PAYOUT_STATE_PENDING_REVIEW) == "PAYOUT_STATE_PENDING_REVIEW"


async def test_a_discrepancy_is_resolved_maker_then_checker(console, channel, database_url):
    from clearing.v1 import reconciliation_pb2 as rpb
    from tests.payout_support import keys
    from tests.recon_support import ReconWorld, hand_day
    from tests.support import Client, rid

    pid, key, approver = await keys(database_url)
    world = await ReconWorld.make(channel, Client(channel, key), database_url, pid, key)
    day = await hand_day(world)
    await world.call("PostSettlement", rpb.PostSettlementRequest(request_id=rid(),
                                                                 run_id=day.run.run_id))
    async with console.http() as maker:
        await sign_in(maker, key)
        runs = (await maker.get("/recon")).text
        assert f"/recon/discrepancies?run_id={day.run.run_id}" in runs
        listed = await maker.get("/recon/discrepancies", params={"run_id": day.run.run_id,
                                                                 "state": "open"})
        assert listed.status_code == 200 and day.g.order_id in listed.text
        ghost = [d for d in await world.discrepancies(run_id=day.run.run_id)
                 if d.order_id == day.g.order_id][0]
        proposed = await maker.post(
            f"/recon/discrepancies/{ghost.discrepancy_id}/propose",
            data={"csrf": csrf_of(listed.text), "action": "write_off", "note": "console"})
        assert proposed.status_code == 303, proposed.text
        location = proposed.headers["location"]
        page = await maker.get(location)
        assert "PROPOSED" in page.text and "WRITE_OFF" in page.text
        own = await maker.post(location.split("?")[0] + "/approve",
                               data={"csrf": csrf_of(page.text)})
        assert own.status_code == 403 and "PERMISSION_DENIED" in own.text
    async with console.http() as checker:
        await sign_in(checker, approver)
        page = await checker.get(location)
        done = await checker.post(location.split("?")[0] + "/approve",
                                  data={"csrf": csrf_of(page.text), "note": "agreed"})
        assert done.status_code == 303, done.text
        assert "APPROVED" in (await checker.get(done.headers["location"])).text


async def test_a_risk_event_is_shown_and_resolved_by_two_approvers(console, channel,
                                                                   database_url):
    from tests.payout_support import keys
    from tests.risk_support import limits
    from tests.risk_support import make_world as risk_world
    from tests.split_support import order
    from tests.support import Client

    pid, key, _ = await keys(database_url)
    world = await risk_world(channel, Client(channel, key), database_url, pid)
    await world.file_policy(limits=[limits(large_split_minor=50_000)])
    held = await world.splits.split(order(51_001, rule_set_name="to-m"))
    async with console.http() as first:
        await sign_in(first, world.approver_a.key)
        listed = (await first.get("/risk", params={"state": "open"})).text
        assert "LARGE_SPLIT" in listed and held.order_id in listed
        [event] = await world.approver_a.events()
        page = await first.get(f"/risk/{event.event_id}")
        assert "policy_version" in page.text and "OPEN" in page.text
        proposed = await first.post(f"/risk/{event.event_id}/resolve",
                                    data={"csrf": csrf_of(page.text), "decision": "release",
                                          "note": "known customer"})
        assert proposed.status_code == 303, proposed.text
        assert "RESOLUTION_PROPOSED" in (await first.get(proposed.headers["location"])).text
        missing = await first.post(f"/risk/{event.event_id}/resolve",
                                   data={"csrf": csrf_of(page.text), "decision": "release"})
        assert missing.status_code == 400 and "note" in missing.text
    async with console.http() as second:
        await sign_in(second, world.approver_b.key)
        page = await second.get(f"/risk/{event.event_id}")
        done = await second.post(f"/risk/{event.event_id}/resolve",
                                 data={"csrf": csrf_of(page.text), "decision": "release",
                                       "note": "agreed"})
        assert done.status_code == 303, done.text
        assert "RELEASED" in (await second.get(done.headers["location"])).text


async def test_split_release_and_refund_from_the_console(console, world):
    async with console.http() as http:
        await sign_in(http, world.platform.key)
        page = await http.get(f"/splits/{world.split.split_id}")
        nothing = await http.post(f"/splits/{world.split.split_id}/release",
                                  data={"csrf": csrf_of(page.text), "fraction_bps": "10000"})
        # everything was released when split: the API's refusal, shown with its status
        assert nothing.status_code == 409 and "FAILED_PRECONDITION" in nothing.text
        bad = await http.post(f"/splits/{world.split.split_id}/refund",
                              data={"csrf": csrf_of(page.text), "amount": "1.234"})
        assert bad.status_code == 400 and "amount" in bad.text
        refunded = await http.post(f"/splits/{world.split.split_id}/refund",
                                   data={"csrf": csrf_of(page.text), "amount": "10.00",
                                         "reason": "returned", "refund_ref": "RF-1"})
        assert refunded.status_code == 303, refunded.text
        after = (await http.get(refunded.headers["location"])).text
        assert "Done: refunded" in after and "10.00 CNY" in after


async def test_ids_out_of_range_are_not_found(console, world):
    async with console.http() as http:
        await sign_in(http, world.platform.key)
        for path in ("/splits/99999999999999999999", "/payouts/9223372036854775808",
                     "/splits/0"):
            page = await http.get(path)
            assert page.status_code == 404 and "NOT_FOUND" in page.text, path


async def test_the_key_is_never_logged(console, world):
    # runs after the others of this module: every sign-in, page and refusal above logged
    assert console.logs.lines, "nothing was logged"
    for key in (world.platform.key, world.approver):
        assert not [line for line in console.logs.lines if key in line]
