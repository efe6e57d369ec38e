"""A voucher's PDF, rendered from its canonical content and nothing else (fpdf2).

Deterministic: the same content gives the same bytes (the creation date is the issue time,
fpdf2's document id is derived from the content, the font is the one file a pinned package
ships), so a file can be checked against the SHA-256 recorded at issue. The voucher id and
digest are printed on every page and written into the Keywords metadata as
`clearing-voucher:<id>:<digest>`, which VerifyVoucher reads back.

Text is set in Noto Sans CJK (SIL Open Font License 1.1), the font file the PyPI package
cvttf-NotoSansCJK-Regular ships, embedded as a subset of the glyphs used: Chinese renders
in any viewer and nothing is downloaded. Reading that 16 MB font takes most of a render's
second; `clearing.reports.vouchers` renders in a thread, VOUCHER_RENDERS_MAX at a time.
Amounts are printed in major units with their currency (`clearing.money.format_minor`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import cvttf_NotoSansCJK_Regular as noto
from fpdf import FPDF
from fpdf.enums import XPos, YPos
from fpdf.fonts import FontFace

from clearing.money import format_minor
from clearing.reports.voucher_model import pdf_marker

FONT_FAMILY = "noto"
_TITLES = {"SPLIT": "分账电子凭证 Split voucher",
           "SPLIT_ACTION": "分账变更电子凭证 Split action voucher",
           "PAYOUT": "提现电子凭证 Payout voucher"}
_LINE_MM = 5.0
_BODY_PT = 8
_TITLE_PT = 14


def font_path() -> str:
    return noto.get_TTF_path()


class _Doc:
    """A voucher page being written: headings, label/value lines and tables."""

    def __init__(self, content: dict[str, Any], digest_hex: str) -> None:
        pdf = FPDF(orientation="P", unit="mm", format="A4")
        pdf.set_creation_date(dt.datetime.fromisoformat(content["issued_at"]))
        pdf.set_title(f"Voucher {content['voucher_id']}")
        pdf.set_author(content["platform"]["platform_name"])
        pdf.set_subject(_TITLES[content["kind"]])
        pdf.set_keywords(pdf_marker(content["voucher_id"], digest_hex))
        pdf.add_font(FONT_FAMILY, fname=font_path())
        pdf.set_auto_page_break(auto=True, margin=15)
        pdf.set_margins(12, 12, 12)
        footer_text = f"Voucher {content['voucher_id']}  digest {digest_hex}"
        pdf.footer = lambda: _footer(pdf, footer_text)  # type: ignore[method-assign]
        pdf.add_page()
        self.pdf = pdf

    def title(self, text: str) -> None:
        self.pdf.set_font(FONT_FAMILY, size=_TITLE_PT)
        self.pdf.cell(0, 9, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def heading(self, text: str) -> None:
        self.pdf.ln(2)
        self.pdf.set_font(FONT_FAMILY, size=_BODY_PT + 2)
        self.pdf.cell(0, 7, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.pdf.set_font(FONT_FAMILY, size=_BODY_PT)

    def pairs(self, items: list[tuple[str, str]]) -> None:
        self.pdf.set_font(FONT_FAMILY, size=_BODY_PT)
        for label, value in items:
            self.pdf.cell(48, _LINE_MM, label)
            self.pdf.multi_cell(0, _LINE_MM, value, new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def table(self, widths: tuple[int, ...], head: tuple[str, ...],
              rows: list[tuple[str, ...]]) -> None:
        self.pdf.set_font(FONT_FAMILY, size=_BODY_PT - 1)
        headings = FontFace(emphasis="", fill_color=(230, 230, 230))
        with self.pdf.table(col_widths=widths, line_height=_LINE_MM - 1,
                            headings_style=headings, first_row_as_headings=True) as table:
            for values in [head, *rows]:
                row = table.row()
                for value in values:
                    row.cell(value)
        self.pdf.set_font(FONT_FAMILY, size=_BODY_PT)


def _footer(pdf: FPDF, text: str) -> None:
    pdf.set_y(-12)
    pdf.set_font(FONT_FAMILY, size=6)
    pdf.cell(0, 5, f"{text}  page {pdf.page_no()}", align="C")


def _money(amount_minor: int, currency_code: str) -> str:
    return f"{format_minor(amount_minor, currency_code)} {currency_code}"


def _party(p: dict[str, Any]) -> str:
    name = f" {p['display_name']}" if p["display_name"] else ""
    return f"{p['external_ref']}{name} (#{p['account_id']})"


def _order(doc: _Doc, o: dict[str, Any]) -> None:
    cur = o["currency_code"]
    doc.heading("订单 Order")
    doc.pairs([("订单号 Order id", o["order_id"]),
               ("订单金额 Amount", _money(o["amount_minor"], cur)),
               ("支付时间 Paid time (UTC)", o["paid_time"] or "-"),
               ("支付渠道 Channel", o["channel"] or "-"),
               ("渠道交易号 Channel transaction", o["channel_transaction_id"] or "-"),
               ("渠道手续费 Channel fee", _money(o["channel_fee_minor"], cur))])


def _split(doc: _Doc, c: dict[str, Any]) -> None:
    cur, s = c["order"]["currency_code"], c["split"]
    _order(doc, c["order"])
    doc.heading("分账 Split")
    doc.pairs([("分账号 Split id", str(s["split_id"])),
               ("规则 Rule set", f"{s['rule_set_name']} v{s['rule_set_version']}"),
               ("分账金额 Distributed", _money(s["distributed_minor"], cur)),
               ("分账时间 Split time (UTC)", s["created_at"])])
    doc.heading("分账明细 Legs")
    doc.table((6, 40, 24, 26, 26, 22, 28),
              ("#", "收款方 Party", "银行卡 Bank card", "金额 Amount", "冻结 Held",
               "状态 State", "转账 Transfer"),
              [(str(leg["leg_index"]), _party(leg["party"]),
                leg["party"]["bound_bank_account"] or "-", _money(leg["amount_minor"], cur),
                _money(leg["held_minor"], cur), leg["state"], str(leg["transfer_id"] or "-"))
               for leg in c["legs"]])


def _action(doc: _Doc, c: dict[str, Any]) -> None:
    cur, a = c["order"]["currency_code"], c["action"]
    _order(doc, c["order"])
    doc.heading("变更 Action")
    doc.pairs([("变更号 Action id", str(a["action_id"])), ("类型 Kind", a["kind"]),
               ("分账号 Split id", str(a["split_id"])),
               ("金额 Amount", _money(a["amount_minor"], cur)),
               ("事件 Event", a["event_name"] or "-"), ("退款号 Refund ref", a["refund_ref"] or "-"),
               ("原因 Reason", a["reason"] or "-"), ("时间 Time (UTC)", a["created_at"])])
    doc.heading("明细 Leg changes")
    doc.table((6, 44, 24, 24, 24, 24, 26),
              ("#", "收款方 Party", "放款 Released", "撤销 Voided", "退冻结 Refunded held",
               "退已付 Refunded paid", "转账 Transfers"),
              [(str(ch["leg_index"]), _party(ch["party"]), _money(ch["released_minor"], cur),
                _money(ch["voided_minor"], cur), _money(ch["refunded_held_minor"], cur),
                _money(ch["refunded_posted_minor"], cur),
                " ".join(str(t) for t in ch["transfer_ids"]) or "-")
               for ch in c["leg_changes"]])


def _payout(doc: _Doc, c: dict[str, Any]) -> None:
    p = c["payout"]
    cur = p["currency_code"]
    doc.heading("提现 Payout")
    doc.pairs([("提现号 Payout id", str(p["payout_id"])), ("收款方 Party", _party(p["party"])),
               ("银行账户 Bank account", p["masked_account"]),
               ("提现金额 Amount", _money(p["amount_minor"], cur)),
               ("手续费 Fee", _money(p["fee_minor"], cur)),
               ("到账金额 Net", _money(p["net_minor"], cur)),
               ("已付 Paid", _money(p["paid_minor"], cur)),
               ("状态 State", p["state"] + (f" ({p['failure_reason']})"
                                            if p["failure_reason"] else "")),
               ("申请时间 Requested (UTC)", p["created_at"]),
               ("完成时间 Finished (UTC)", p["finished_at"] or "-")])
    doc.heading("银行转账 Bank transfers")
    doc.table((10, 34, 34, 26, 18, 58),
              ("#", "银行账户 Bank account", "金额 Amount", "状态 State", "尝试 Attempts",
               "银行流水号 Bank references"),
              [(str(t["sequence"]), t["masked_account"], _money(t["amount_minor"], cur),
                t["state"], str(t["attempt_count"]), " ".join(t["bank_references"]) or "-")
               for t in c["bank_transfers"]])


def _evidence(doc: _Doc, c: dict[str, Any], digest_hex: str) -> None:
    doc.heading("账务转账 Ledger transfers")
    doc.table((34, 26, 26, 40, 30, 30),
              ("转账 Transfer", "借方 Debit", "贷方 Credit", "金额 Amount", "类型 Mode",
               "原挂账 Pending id"),
              [(str(t["transfer_id"]), str(t.get("debit_account_id", "-")),
                str(t.get("credit_account_id", "-")),
                _money(t["amount_minor"], t["currency_code"]) if "amount_minor" in t else "-",
                t.get("mode", "MISSING"), str(t.get("pending_id") or "-"))
               for t in c["transfers"]])
    doc.heading("存证 Evidence: journal batches (hash chain)")
    for b in c["journal_batches"]:
        doc.pairs([(f"批次 Batch {b['batch_id']} (seq {b['seq']})", ""),
                   ("  Rows digest (SHA-256)", b["rows_digest"]),
                   ("  Chain hash (SHA-256)", b["chain_hash"])])
    doc.heading("凭证摘要 Voucher digest")
    ref = c["references"]
    doc.pairs([("凭证摘要 Digest (SHA-256)", digest_hex)]
              + ([("引用凭证 References", f"voucher {ref['voucher_id']} digest {ref['digest']}")]
                 if ref else []))


def render(content: dict[str, Any], digest_hex: str) -> bytes:
    """The PDF of a voucher's content (its canonical form hashes to `digest_hex`)."""
    doc = _Doc(content, digest_hex)
    doc.title(_TITLES[content["kind"]])
    doc.pairs([("凭证号 Voucher id", str(content["voucher_id"])),
               ("开具时间 Issued (UTC)", content["issued_at"]),
               ("平台 Platform", f"{content['platform']['platform_name']}"
                                 f" (#{content['platform']['platform_id']})")])
    {"SPLIT": _split, "SPLIT_ACTION": _action, "PAYOUT": _payout}[content["kind"]](doc, content)
    _evidence(doc, content, digest_hex)
    return bytes(doc.pdf.output())
