"""Vouchers through the generated stubs against real PostgreSQL: a split's, a release's
(referencing the split's) and a payout's voucher, read back from the PDF (pypdf) figure by
figure to the minor unit; one page rendered to PNG under the test's tmp dir; VerifyVoucher
valid, then an edited PDF, an edited split row and an edited journal row each reported as
such; the append-only table; NOT_FOUND for another platform's, INVALID_ARGUMENT with the
field for bad ids."""

from __future__ import annotations

import asyncio
import io
import json
import re

import asyncpg
import grpc
import pypdfium2
import pytest
from pypdf import PdfReader

from clearing.v1 import report_pb2 as rpb
from clearing.v1 import report_pb2_grpc
from clearing.tenancy import create_platform
from clearing.v1 import payout_pb2 as ppb
from clearing.v1 import split_pb2 as spb
from tests.payout_support import MASKED, Payouts, party, set_config
from tests.split_support import file_examples, new_key, order
from tests.support import AS_TAMPERING_SUPERUSER, CALL_TIMEOUT_S, Client, cli, details, rid

# The `held` example on 11.14 CNY with a channel fee of 0.06: 11.08 is split, PLAT_001 10%
# = 1.10 at once, SUP_2025001 the remaining 9.98 held (4.99 on SHIPPED, 4.99 on RECEIVED).
AMOUNT_MINOR, FEE_MINOR = 1_114, 6
PLATFORM_MINOR, HELD_MINOR, SHIPPED_MINOR = 110, 998, 499
PROBLEM = rpb.VoucherProblemKind


class Reports:
    def __init__(self, channel: grpc.aio.Channel, key: str) -> None:
        self.stub = report_pb2_grpc.ReportServiceStub(channel)
        self.metadata = (("authorization", f"Bearer {key}"),)

    async def get(self, **which) -> rpb.GetVoucherResponse:
        return await self.stub.GetVoucher(rpb.GetVoucherRequest(**which), metadata=self.metadata,
                                          timeout=CALL_TIMEOUT_S)

    async def verify(self, **which) -> rpb.VerifyVoucherResponse:
        return await self.stub.VerifyVoucher(rpb.VerifyVoucherRequest(**which),
                                             metadata=self.metadata, timeout=CALL_TIMEOUT_S)


def pdf_text(pdf: bytes) -> str:
    """The PDF's text as pypdf reads it, without whitespace (pypdf puts NULs and spaces
    between the glyphs of an embedded CID font): compare with `squash`ed expectations."""
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    return squash(text)


def squash(text: str) -> str:
    return re.sub(r"[\s\x00]+", "", text)


def assert_shows(pdf: bytes, *figures: str) -> None:
    text = pdf_text(pdf)
    missing = [f for f in figures if squash(f) not in text]
    assert not missing, f"not on the voucher: {missing}"


@pytest.fixture
async def world(channel, client: Client, database_url, platform):
    splits, ids = await file_examples(channel, client, database_url, platform.platform_id)
    split = await splits.split(order(AMOUNT_MINOR, rule_set_name="held",
                                     channel_fee_minor=FEE_MINOR))
    return splits, ids, split, Reports(channel, platform.key)


async def _batch(database_url: str, transfer_id: int) -> asyncpg.Record:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchrow(
            "SELECT b.seq, b.batch_id, b.rows_digest, b.hash FROM transfers t"
            " JOIN journal_batches b ON b.batch_id = t.batch_id WHERE t.transfer_id = $1",
            transfer_id)
    finally:
        await conn.close()


async def test_split_voucher_shows_every_figure(world, database_url, tmp_path):
    _, ids, split, reports = world
    first = await reports.get(split_id=split.split_id)
    v = first.voucher
    assert v.kind == rpb.VOUCHER_KIND_SPLIT and v.subject_id == split.split_id
    assert v.references_voucher_id == 0 and len(v.digest) == 64
    transfer_ids = [leg.transfer_ids[0] for leg in split.legs]
    batch = await _batch(database_url, transfer_ids[0])
    assert_shows(first.pdf, "分账电子凭证", f"Voucher id {v.voucher_id}",
                 split.order_id, "11.14 CNY", "Channel fee 0.06 CNY", "WECHAT_PAY",
                 f"Split id {split.split_id}", "Distributed 11.08 CNY",
                 f"PLAT_001 (#{ids['PLAT_001']})", "1.10 CNY 0.00 CNY RELEASED",
                 f"SUP_2025001 (#{ids['SUP_2025001']})", "9.98 CNY 9.98 CNY HELD",
                 *map(str, transfer_ids), batch["rows_digest"].hex(), batch["hash"].hex(),
                 f"Batch {batch['batch_id']} (seq {batch['seq']})", v.digest)
    content = json.loads(v.content_json)
    assert [(leg["amount_minor"], leg["held_minor"], leg["state"]) for leg in content["legs"]] \
        == [(PLATFORM_MINOR, 0, "RELEASED"), (HELD_MINOR, HELD_MINOR, "HELD")]
    assert content["order"]["amount_minor"] == AMOUNT_MINOR
    assert content["order"]["channel_fee_minor"] == FEE_MINOR
    # issued once: the same voucher and the same bytes, by subject and by id
    again = await reports.get(split_id=split.split_id)
    by_id = await reports.get(voucher_id=v.voucher_id)
    assert again.pdf == first.pdf == by_id.pdf and again.voucher == v == by_id.voucher
    # a page for a person to look at
    page = pypdfium2.PdfDocument(first.pdf)[0]
    png = tmp_path / "split-voucher.png"
    page.render(scale=2).to_pil().save(png)
    assert png.stat().st_size > 10_000
    ok = await reports.verify(pdf=first.pdf)
    assert ok.valid and ok.pdf_checked and not ok.problems and ok.voucher == v


# The seed's B2B order (REQUIREMENTS.md, worked example 1), with the parties' names in
# Chinese and the logistics party's bank card bound: docs/voucher-example.png is this page.
B2B_NAMES = {"GOV_ACCOUNT": "政府采购专户", "PLAT_001": "建材平台",
             "SUP_2025001": "华东建材供应有限公司", "LOGISTICS_B": "物流承运人 B"}


async def test_the_seed_b2b_split_voucher(world, channel, platform, database_url, tmp_path):
    splits, ids, _, reports = world
    await _sql(database_url, *(("UPDATE accounts SET display_name = $2 WHERE account_id = $1",
                                ids[ref], name) for ref, name in B2B_NAMES.items()))
    await Payouts(channel, platform.key).bind(ids["LOGISTICS_B"])
    split = await splits.split(order(
        85_000_000, order_id="ORD202601200001", channel="BANK_TRANSFER", rule_set_name="b2b",
        tags=["enterprise purchase", "government purchase"],
        attributes={"customer_type": "enterprise"}))
    got = await reports.get(split_id=split.split_id)
    legs = [(leg["party"]["external_ref"], leg["amount_minor"], leg["state"])
            for leg in json.loads(got.voucher.content_json)["legs"]]
    assert legs == [("GOV_ACCOUNT", 1_700_000, "RELEASED"), ("PLAT_001", 8_330_000, "RELEASED"),
                    ("SUP_2025001", 62_475_000, "RELEASED"),
                    ("LOGISTICS_B", 12_495_000, "RELEASED")]
    assert_shows(got.pdf, "ORD202601200001", "Amount 850000.00 CNY", "Channel fee 0.00 CNY",
                 "BANK_TRANSFER", "Distributed 850000.00 CNY", "b2b v1",
                 *(f"{ref} {name} (#{ids[ref]})" for ref, name in B2B_NAMES.items()),
                 "- 17000.00 CNY 0.00 CNY RELEASED", "- 83300.00 CNY 0.00 CNY RELEASED",
                 "- 624750.00 CNY 0.00 CNY RELEASED",
                 f"{MASKED} 124950.00 CNY 0.00 CNY RELEASED",
                 *(str(leg.transfer_ids[0]) for leg in split.legs))
    page = pypdfium2.PdfDocument(got.pdf)[0]
    page.render(scale=1.5).to_pil().save(tmp_path / "b2b-voucher.png")
    assert (await reports.verify(pdf=got.pdf)).valid


async def test_release_voucher_references_the_split_voucher(world):
    splits, ids, split, reports = world
    done = await splits.call("ReleaseSplit", spb.ReleaseSplitRequest(
        request_id=rid(), order_id=split.order_id, event_name="SHIPPED"))
    action = done.split.actions[-1]
    got = await reports.get(split_action_id=action.action_id)
    v = got.voucher
    split_voucher = (await reports.get(split_id=split.split_id)).voucher
    assert v.kind == rpb.VOUCHER_KIND_SPLIT_ACTION
    assert v.references_voucher_id == split_voucher.voucher_id
    content = json.loads(v.content_json)
    assert content["references"] == {"voucher_id": split_voucher.voucher_id,
                                     "digest": split_voucher.digest}
    assert [c["released_minor"] for c in content["leg_changes"]] == [SHIPPED_MINOR]
    assert_shows(got.pdf, "分账变更电子凭证", "Kind RELEASE", "Event SHIPPED",
                 f"Action id {action.action_id}", "Amount 4.99 CNY", "4.99 CNY 0.00 CNY",
                 f"SUP_2025001 (#{ids['SUP_2025001']})",
                 *(str(t) for c in action.leg_changes for t in c.transfer_ids),
                 f"voucher {split_voucher.voucher_id} digest {split_voucher.digest}")
    # the split's voucher did not change
    assert (await reports.get(split_id=split.split_id)).voucher == split_voucher
    result = await reports.verify(voucher_id=v.voucher_id)
    assert result.valid, result.problems


async def test_payout_voucher(channel, client: Client, platform, database_url):
    payouts = Payouts(channel, platform.key)
    who = await party(client, payouts, funds=200_000)
    await set_config(database_url, platform.platform_id, fee_fixed_minor=400,
                     fee_account_id=who.fee, bank_transfer_max_minor=60_000,
                     review_threshold_minor=100_000)
    p = await payouts.request(who.account, 150_000)
    assert p.state == ppb.PAYOUT_STATE_PENDING_REVIEW
    reports = Reports(channel, platform.key)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await reports.get(payout_id=p.payout_id)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(err.value)[0] == "VOUCHER_NOT_READY"
    approver = Payouts(channel, await new_key(database_url, platform.platform_id, {"approver"}))
    await approver.approve(p.payout_id)
    done = await payouts.wait_state(p.payout_id, (ppb.PAYOUT_STATE_SUCCEEDED,))
    got = await reports.get(payout_id=p.payout_id)
    refs = [a.bank_reference for t in done.transfers for a in t.attempts if a.bank_reference]
    assert len(done.transfers) == 3 and len(refs) >= 3
    assert_shows(got.pdf, "提现电子凭证", f"Payout id {p.payout_id}", "Amount 1500.00 CNY",
                 "Fee 4.00 CNY", "Net 1496.00 CNY", "Paid 1496.00 CNY", "SUCCEEDED",
                 f"Bank account {MASKED}", f"1 {MASKED} 600.00 CNY SUCCEEDED",
                 f"2 {MASKED} 600.00 CNY SUCCEEDED", f"3 {MASKED} 296.00 CNY SUCCEEDED",
                 *refs, str(done.hold_transfer_id))
    content = json.loads(got.voucher.content_json)
    assert [t["amount_minor"] for t in content["bank_transfers"]] == [60_000, 60_000, 29_600]
    modes = sorted(t["mode"] for t in content["transfers"])
    assert modes == ["PENDING", "PENDING", "POST_PENDING", "POST_PENDING", "POST_PENDING",
                     "POST_PENDING"]
    assert (await reports.verify(pdf=got.pdf)).valid


async def test_edited_pdf_is_reported(world):
    _, _, split, reports = world
    pdf = (await reports.get(split_id=split.split_id)).pdf
    edited = pdf.replace(b"/Title (Voucher ", b"/Title (Vouchex ", 1)
    assert edited != pdf
    result = await reports.verify(pdf=edited)
    assert not result.valid
    assert [p.kind for p in result.problems] == [PROBLEM.VOUCHER_PROBLEM_KIND_PDF_EDITED]


async def _sql(database_url: str, *statements: tuple, tamper: bool = False) -> None:
    """Run statements; `tamper`: as a superuser who switches the record tables' triggers off
    (migration 0017 refuses such edits to anyone else), to see verification catch it."""
    conn = await asyncpg.connect(database_url)
    try:
        if tamper:
            await conn.execute(AS_TAMPERING_SUPERUSER)
        for statement in statements:
            await conn.execute(*statement)
    finally:
        await conn.close()


async def test_edited_split_row_is_reported(world, database_url):
    _, _, split, reports = world
    v = (await reports.get(split_id=split.split_id)).voucher
    edit = "UPDATE splits SET channel_fee_minor = channel_fee_minor + $2 WHERE split_id = $1"
    await _sql(database_url, (edit, split.split_id, 1), tamper=True)
    try:
        result = await reports.verify(voucher_id=v.voucher_id)
    finally:
        await _sql(database_url, (edit, split.split_id, -1), tamper=True)
    assert not result.valid
    assert [(p.kind, p.detail.split(":")[0]) for p in result.problems] == [
        (PROBLEM.VOUCHER_PROBLEM_KIND_RECORD_EDITED, "order.channel_fee_minor")]
    assert "voucher 6, now 7" in result.problems[0].detail
    assert (await reports.verify(voucher_id=v.voucher_id)).valid


async def test_edited_journal_row_is_reported(world, database_url):
    _, _, split, reports = world
    v = (await reports.get(split_id=split.split_id)).voucher
    transfer_id = split.legs[0].transfer_ids[0]
    edit = "UPDATE transfers SET memo = $2 WHERE transfer_id = $1"
    memo = await _memo(database_url, transfer_id)
    await _sql(database_url, (edit, transfer_id, memo + "!"), tamper=True)
    try:
        memo_edited = await reports.verify(voucher_id=v.voucher_id)
        amount = "UPDATE transfers SET amount = amount + $2 WHERE transfer_id = $1"
        await _sql(database_url, (edit, transfer_id, memo), (amount, transfer_id, 1),
                   tamper=True)
        try:
            amount_edited = await reports.verify(voucher_id=v.voucher_id)
        finally:
            await _sql(database_url, (amount, transfer_id, -1), tamper=True)
    finally:
        await _sql(database_url, (edit, transfer_id, memo), tamper=True)
    assert [p.kind for p in memo_edited.problems] == [
        PROBLEM.VOUCHER_PROBLEM_KIND_JOURNAL_EDITED]
    assert "its rows hash to" in memo_edited.problems[0].detail
    assert [p.kind for p in amount_edited.problems] == [
        PROBLEM.VOUCHER_PROBLEM_KIND_JOURNAL_EDITED] * 2
    assert amount_edited.problems[0].detail.startswith("transfers[0].amount_minor")
    assert (await reports.verify(voucher_id=v.voucher_id)).valid


async def _memo(database_url: str, transfer_id: int) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval("SELECT memo FROM transfers WHERE transfer_id = $1",
                                   transfer_id)
    finally:
        await conn.close()


async def test_vouchers_are_append_only(world, database_url):
    _, _, split, reports = world
    v = (await reports.get(split_id=split.split_id)).voucher
    for statement in ("UPDATE vouchers SET content = '{}' WHERE voucher_id = $1",
                      "DELETE FROM vouchers WHERE voucher_id = $1"):
        with pytest.raises(asyncpg.RaiseError, match="vouchers is append-only"):
            await _sql(database_url, (statement, v.voucher_id))
    with pytest.raises(asyncpg.RaiseError, match="vouchers is append-only: TRUNCATE refused"):
        await _sql(database_url, ("TRUNCATE vouchers CASCADE",))


async def test_another_platforms_voucher_is_not_found(world, channel, database_url):
    _, _, split, reports = world
    v = (await reports.get(split_id=split.split_id)).voucher
    conn = await asyncpg.connect(database_url)
    try:
        _, key = await create_platform(conn, f"other_{rid()[:8]}", frozenset({"operator"}))
    finally:
        await conn.close()
    other = Reports(channel, key)
    for call in (other.get(voucher_id=v.voucher_id), other.get(split_id=split.split_id),
                 other.verify(voucher_id=v.voucher_id)):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert details(err.value)[0] == "VOUCHER_NOT_FOUND"


@pytest.mark.parametrize("request_fields, field", [
    ({}, "voucher_id"), ({"split_id": -1}, "split_id"), ({"payout_id": -5}, "payout_id"),
    ({"split_id": 1, "payout_id": 2}, "payout_id"), ({"voucher_id": -1}, "voucher_id"),
])
async def test_bad_ids_are_invalid(channel, platform, request_fields, field):
    reports = Reports(channel, platform.key)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await reports.get(**request_fields)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(err.value) == ("INVALID_ARGUMENT", [field])


@pytest.mark.parametrize("request_fields, field", [
    ({}, "voucher_id"), ({"voucher_id": -3}, "voucher_id"), ({"pdf": b"%PDF-1.3 no id"}, "pdf"),
    ({"voucher_id": 1, "pdf": b"%PDF-"}, "pdf"),
    # a crafted file whose id is beyond int64 (was INTERNAL; found in review)
    ({"pdf": b"%PDF-1.3 clearing-voucher:9999999999999999999:" + b"ab" * 32}, "pdf"),
    ({"pdf": b"%PDF-1.3 clearing-voucher:0:" + b"ab" * 32}, "pdf"),
])
async def test_bad_verify_requests_are_invalid(channel, platform, request_fields, field):
    reports = Reports(channel, platform.key)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await reports.verify(**request_fields)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(err.value) == ("INVALID_ARGUMENT", [field])


async def test_cli_gets_and_verifies_a_voucher(world, running, platform, tmp_path):
    _, _, split, _ = world
    out = tmp_path / "split.pdf"
    code, stdout, stderr = await cli(running, platform.key, "vouchers", "get",
                                     str(split.split_id), "--kind", "split", "-o", str(out),
                                     "--field", "voucher_id")
    assert code == 0, stderr
    voucher_id = int(stdout)
    assert_shows(out.read_bytes(), "分账电子凭证", f"Voucher id {voucher_id}", split.order_id)
    code, stdout, _ = await cli(running, platform.key, "vouchers", "verify", "--file", str(out),
                                "--field", "valid")
    assert (code, stdout.strip()) == (0, "True")
    code, stdout, _ = await cli(running, platform.key, "vouchers", "get", str(voucher_id),
                                "-o", str(tmp_path / "again.pdf"), "--field", "digest")
    assert code == 0 and (tmp_path / "again.pdf").read_bytes() == out.read_bytes()
    out.write_bytes(out.read_bytes().replace(b"/Title (Voucher ", b"/Title (Vouchex ", 1))
    code, stdout, _ = await cli(running, platform.key, "vouchers", "verify", "--file", str(out),
                                "--field", "problems.kind")
    assert (code, stdout.strip()) == (1, "VOUCHER_PROBLEM_KIND_PDF_EDITED")


async def test_refund_voucher_and_first_requests_at_once(world):
    splits, ids, split, reports = world
    # five first requests at once: one voucher is issued, all five answer it
    got = await asyncio.gather(*(reports.get(split_id=split.split_id) for _ in range(5)))
    assert len({g.voucher.voucher_id for g in got}) == 1 and len({g.pdf for g in got}) == 1
    split_voucher = got[0].voucher
    done = await splits.call("RefundSplit", spb.RefundSplitRequest(
        request_id=rid(), order_id=split.order_id, amount_minor=300, currency_code="CNY",
        refund_ref="RF-0001", reason="退货 returned"))
    refund = await reports.get(split_action_id=done.action.action_id)
    content = json.loads(refund.voucher.content_json)
    assert refund.voucher.references_voucher_id == split_voucher.voucher_id
    assert content["action"]["kind"] == "REFUND" and content["action"]["amount_minor"] == 300
    # 3.00 of the order reverses 1108 x 300 / 1114 = 2.98 of what the legs have (the rest
    # is the channel fee's share), in proportion: PLAT_001 0.30 posted, SUP_2025001 2.68 held
    assert [(c["leg_index"], c["refunded_held_minor"], c["refunded_posted_minor"])
            for c in content["leg_changes"]] == [(0, 0, 30), (1, 268, 0)]
    assert_shows(refund.pdf, "Kind REFUND", "Amount 3.00 CNY", "Refund ref RF-0001",
                 f"0 PLAT_001 (#{ids['PLAT_001']}) 0.00 CNY 0.00 CNY 0.00 CNY 0.30 CNY",
                 f"1 SUP_2025001 (#{ids['SUP_2025001']}) 0.00 CNY 0.00 CNY 2.68 CNY 0.00 CNY",
                 "退货 returned", f"voucher {split_voucher.voucher_id} digest"
                                 f" {split_voucher.digest}")
    assert (await reports.verify(voucher_id=refund.voucher.voucher_id)).valid
    assert (await reports.get(split_id=split.split_id)).voucher == split_voucher


async def test_a_rejected_payouts_voucher(channel, client: Client, platform, database_url):
    payouts = Payouts(channel, platform.key)
    who = await party(client, payouts, funds=200_000)
    await set_config(database_url, platform.platform_id, fee_fixed_minor=400,
                     fee_account_id=who.fee, review_threshold_minor=100_000)
    p = await payouts.request(who.account, 150_000)
    approver = Payouts(channel, await new_key(database_url, platform.platform_id, {"approver"}))
    await approver.reject(p.payout_id, reason="不符合 policy")
    reports = Reports(channel, platform.key)
    got = await reports.get(payout_id=p.payout_id)
    content = json.loads(got.voucher.content_json)
    assert content["payout"]["state"] == "FAILED" and content["payout"]["paid_minor"] == 0
    assert sorted(t["mode"] for t in content["transfers"]) == [
        "PENDING", "PENDING", "VOID_PENDING", "VOID_PENDING"]
    assert_shows(got.pdf, "State FAILED (REJECTED)", "Amount 1500.00 CNY", "Fee 4.00 CNY",
                 "Net 1496.00 CNY", "Paid 0.00 CNY", f"1 {MASKED} 1496.00 CNY FAILED 0 -")
    assert (await reports.verify(voucher_id=got.voucher.voucher_id)).valid
