"""No state, status, kind or mode number is written as a literal in the server's SQL: the
queries are built from the domain enums (clearing.db.sql_list, `{Enum.MEMBER:d}`), so that
the SQL reads in names and moves with the enums. The migrations are history and keep their
numbers; their partial indexes are checked against the enums here instead."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import clearing
from clearing import db
from clearing.ledger.model import AccountKind, AccountStatus, Mode, OwnerType
from clearing.payout.calendar import PayoutCycle
from clearing.payout.model import (BankAccountStatus, BankAccountType, PayoutOrigin,
                                   PayoutState, TransferState)
from clearing.payout.claim import DUE

ROOT = Path(clearing.__file__).parent
SQL_WORD = re.compile(r"\b(SELECT|UPDATE|INSERT|DELETE|WHERE)\b")
ENUM_COLUMN = r"\b(state|status|kind|mode|origin|cycle|account_type|pending_state|\w+_state)"
LITERAL = re.compile(
    ENUM_COLUMN + r"\s*(=|<>|!=)\s*\d"            # state = 4
    + r"|" + ENUM_COLUMN + r"\s+(NOT\s+)?IN\s*\(\s*\d"  # state IN (2, 3)
    + r"|\bCASE\s+\w*\.?" + ENUM_COLUMN + r"\s+WHEN\s+\d"  # CASE mode WHEN 2
    + r"|\bTHEN\s+\d+\s+ELSE\s+\d+\s+END",          # a state chosen by number
    re.IGNORECASE)


def _sql_texts(path: Path):
    """(line, text) of every string constant in the file that looks like SQL (the literal
    parts of f-strings included: what is substituted is not a literal)."""
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if SQL_WORD.search(node.value) or LITERAL.search(node.value):
                yield node.lineno, node.value


def _offenders(source_root: Path) -> list[str]:
    found = []
    for path in sorted(source_root.rglob("*.py")):
        if "v1" in path.relative_to(source_root).parts:
            continue
        for line, text in _sql_texts(path):
            for m in LITERAL.finditer(text):
                found.append(f"{path.relative_to(source_root)}:{line}: {m.group(0)!r}")
    return found


def test_no_enum_number_literal_in_sql():
    assert _offenders(ROOT) == []


def test_the_check_finds_literals(tmp_path):
    (tmp_path / "bad.py").write_text(
        'A = """UPDATE payouts SET state = 4 WHERE state IN (3, 7)"""\n'
        'B = "SELECT 1 FROM transfers WHERE mode = 2"\n'
        'C = f"SELECT CASE mode WHEN 2 THEN amount END FROM t WHERE p = {x}"\n'
        'D = "UPDATE t SET state = CASE WHEN EXISTS (SELECT 1) THEN 3 ELSE 1 END"\n'
        'E = f"UPDATE t SET state = {S.X:d} WHERE kind = {K.Y:d} LIMIT 1"\n')
    found = _offenders(tmp_path)
    assert sorted(f.split(": ", 1)[1] for f in found) == sorted([
        "'state = 4'", "'state IN (3'", "'mode = 2'", "'CASE mode WHEN 2'", "'THEN 3 ELSE 1 END'"])


def test_sql_list():
    assert db.sql_list((TransferState.SUBMITTED, TransferState.UNKNOWN)) == "2, 3"
    assert f"{PayoutState.MANUAL_REVIEW:d}" == "7"


def _migrations() -> str:
    return "\n".join(sql for _, _, sql in db.migration_files())


def _index_predicate(name: str) -> str:
    m = re.search(rf"CREATE (UNIQUE )?INDEX {name} ON .*?WHERE (.*?);", _migrations(), re.S)
    assert m, name
    return " ".join(m.group(2).split())


def test_partial_indexes_agree_with_the_enums():
    # The worker's claim (`t.state IN DUE`) is served by this index only while the two
    # predicates are the same numbers.
    assert _index_predicate("bank_transfers_due_idx") == f"state IN ({db.sql_list(DUE)})"
    assert _index_predicate("bank_accounts_active_idx") == (
        f"status = {BankAccountStatus.ACTIVE:d}")


def test_check_ranges_agree_with_the_enums():
    """The migrations' `CHECK (col BETWEEN 1 AND n)` of enum columns are the enums' ranges."""
    sql = _migrations()
    ranges = {(m.group(1), int(m.group(2)), int(m.group(3)))
              for m in re.finditer(r"CHECK \((\w+) BETWEEN (\d+) AND (\d+)\)", sql)}
    for column, enum in (("kind", AccountKind), ("owner_type", OwnerType),
                         ("status", AccountStatus), ("mode", Mode),
                         ("account_type", BankAccountType), ("status", BankAccountStatus),
                         ("state", PayoutState), ("origin", PayoutOrigin),
                         ("state", TransferState), ("cycle", PayoutCycle)):
        values = sorted(int(m) for m in enum)
        assert values == list(range(values[0], values[-1] + 1)), enum
        assert (column, values[0], values[-1]) in ranges, (column, enum)
