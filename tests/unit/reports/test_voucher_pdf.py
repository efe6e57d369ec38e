"""The voucher renderer and the canonical form, without a database: the same content gives
the same bytes, the file carries its voucher id and digest (read back by VerifyVoucher),
Chinese text is embedded in the CJK font, and a content's digest covers every figure."""

from __future__ import annotations

import copy

import pytest

from clearing.errors import InvalidArgument
from clearing.reports import voucher_model as m
from clearing.reports import voucher_pdf
from clearing.reports.vouchers import voucher_id_in_pdf

PARTY = {"account_id": 3, "external_ref": "SUP_2025001", "display_name": "供应商甲",
         "bound_bank_account": "6225****1234"}
CONTENT = {
    "format": 1, "voucher_id": 7, "kind": "SPLIT", "issued_at": "2026-12-07T13:00:00.000000Z",
    "platform": {"platform_id": 1, "platform_name": "demo"}, "references": None,
    "order": {"order_id": "ORD202601200001", "amount_minor": 85_000_000,
              "currency_code": "CNY", "channel": "WECHAT_PAY", "channel_fee_minor": 600,
              "channel_transaction_id": "", "paid_time": "2026-01-20T08:00:00.000000Z"},
    "split": {"split_id": 65_536, "rule_set_name": "b2b", "rule_set_version": 1,
              "net_amount_minor": 84_999_400, "distributed_minor": 84_999_400,
              "fee_minor": 0, "created_at": "2026-12-07T13:00:00.000000Z"},
    "legs": [{"leg_index": 0, "kind": "SHARE", "label": "supplier", "party": PARTY,
              "amount_minor": 62_474_559, "held_minor": 0, "state": "RELEASED",
              "transfer_id": 65_537}],
    "transfers": [{"transfer_id": 65_537, "debit_account_id": 1, "credit_account_id": 3,
                   "amount_minor": 62_474_559, "currency_code": "CNY", "mode": "IMMEDIATE",
                   "pending_id": 0, "created_at": "2026-12-07T13:00:00.000000Z"}],
    "journal_batches": [{"seq": 1, "batch_id": 1, "rows_digest": "ab" * 32,
                         "chain_hash": "cd" * 32}],
}


@pytest.fixture(scope="module")
def pdf() -> bytes:
    return voucher_pdf.render(CONTENT, m.digest(m.canonical(CONTENT)).hex())


def test_rendering_is_deterministic(pdf):
    assert voucher_pdf.render(copy.deepcopy(CONTENT),
                              m.digest(m.canonical(CONTENT)).hex()) == pdf


def test_the_file_carries_its_voucher_id_and_digest(pdf):
    assert voucher_id_in_pdf(pdf) == 7
    assert m.pdf_marker(7, m.digest(m.canonical(CONTENT)).hex()).encode() in pdf
    with pytest.raises(InvalidArgument) as err:
        voucher_id_in_pdf(b"%PDF-1.4 nothing")
    assert [v.field for v in err.value.violations] == ["pdf"]


def test_the_cjk_font_is_embedded(pdf):
    assert b"NotoSansCJK" in pdf


def test_canonical_form_and_digest():
    text = m.canonical(CONTENT)
    assert '"display_name":"供应商甲"' in text and ", " not in text
    edited = copy.deepcopy(CONTENT)
    edited["legs"][0]["amount_minor"] += 1
    assert m.digest(m.canonical(edited)) != m.digest(text)
    assert m.differences(m.facts(CONTENT), m.facts(edited)) == [
        ("legs[0].amount_minor", "voucher 62474559, now 62474560")]
    renamed = copy.deepcopy(CONTENT)
    renamed["legs"][0]["party"]["display_name"] = "改名"
    assert m.differences(m.facts(CONTENT), m.facts(renamed)) == []
