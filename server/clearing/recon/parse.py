"""A statement as it streams in: chunks -> lines (`lines.LineReader`, the limits) ->
checked StatementLines (the format's layout), with the statement's totals and its problems.
Owns the rules that span lines: one currency per statement. The caller writes each batch
of lines as it comes and, if `problems` is not empty at the end, throws them all away."""

from __future__ import annotations

from dataclasses import dataclass

from clearing.errors import invariant
from clearing.limits import STATEMENT_AMOUNTS_MINOR_MAX
from clearing.recon.lines import too_large
from clearing.recon.canonical import CanonicalLayout
from clearing.recon.lines import LineReader, RawLine
from clearing.recon.model import ImportHeader, StatementFormat, StatementLine
from clearing.recon.problems import Problems
from clearing.recon.payout_file import PayoutFileLayout
from clearing.recon.wechat import WechatLayout

LAYOUTS = {StatementFormat.CANONICAL: CanonicalLayout, StatementFormat.WECHAT: WechatLayout,
           StatementFormat.BANK_PAYOUTS: PayoutFileLayout}


@dataclass(slots=True)
class Totals:
    """What a statement adds up to: its lines, their currency, the settled total."""

    line_count: int = 0
    currency_code: str = ""
    settled_minor: int = 0
    amounts_minor: int = 0  # the sum of the lines' amounts


class StatementParser:
    """Feed it the file's chunks in order, then `finish()`; each returns the lines it
    completed (to be written in batches)."""

    def __init__(self, header: ImportHeader) -> None:
        invariant(header.format in LAYOUTS, f"no layout for {header.format!r}")
        self.header = header
        self.reader = LineReader()
        self.problems = Problems()
        self.totals = Totals()
        self._layout = LAYOUTS[header.format](header)

    def feed(self, chunk: bytes) -> list[StatementLine]:
        return self._checked(self.reader.feed(chunk))

    def finish(self) -> list[StatementLine]:
        out = self._checked(self.reader.finish())
        if self.reader.problem is not None:
            self.problems.add_path("chunk", self.reader.problem)
        self._layout.finish(self.problems)
        return out

    def _checked(self, raws: list[RawLine]) -> list[StatementLine]:
        out = []
        for raw in raws:
            line = self._layout.line(raw, self.problems)
            if line is not None and self._count(line):
                out.append(line)
        return out if not self.problems else []  # malformed: nothing more is written

    def _count(self, line: StatementLine) -> bool:
        t = self.totals
        if not t.currency_code:
            t.currency_code = line.currency_code
        elif line.currency_code != t.currency_code:
            self.problems.add(line.line_number, "currency_code",
                              f"a statement is in one currency: {t.currency_code}")
            return False
        t.amounts_minor += line.amount_minor
        if t.amounts_minor > STATEMENT_AMOUNTS_MINOR_MAX:
            raise too_large(f"the amounts of the lines add up beyond "
                            f"{STATEMENT_AMOUNTS_MINOR_MAX} minor units")
        t.line_count += 1
        t.settled_minor += line.signed_settled_minor()
        return True
