"""The problems of a malformed statement: the first STATEMENT_PROBLEMS_MAX kept with their
line numbers and fields, all of them counted; raised at the end as one error."""

from __future__ import annotations

from clearing.errors import FieldViolation, InvalidArgument
from clearing.limits import STATEMENT_PROBLEMS_MAX
from clearing.reasons import Reason


def line_field(number: int, field: str) -> str:
    """The field path of a problem: `lines[N].field` (N: the file's line number, from 1);
    `lines[N]` for the line as a whole."""
    return f"lines[{number}].{field}" if field else f"lines[{number}]"


class Problems:
    """Collects problems; `error()` is the STATEMENT_MALFORMED error of them all."""

    def __init__(self) -> None:
        self.count = 0
        self.items: list[FieldViolation] = []

    def __bool__(self) -> bool:
        return self.count > 0

    def add(self, number: int, field: str, description: str) -> None:
        self.add_path(line_field(number, field), description)

    def add_path(self, path: str, description: str) -> None:
        self.count += 1
        if len(self.items) < STATEMENT_PROBLEMS_MAX:
            self.items.append(FieldViolation(path, description))

    def error(self) -> InvalidArgument:
        err = InvalidArgument(self.items, reason=Reason.STATEMENT_MALFORMED)
        err.metadata["problems_count"] = str(self.count)
        return err
