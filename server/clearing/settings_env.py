"""How a setting of the tree (clearing.config) is declared and read: `env(...)` declares one
(its variable, default, bounds and meaning), `group(...)` a nested group, `load` reads a tree
from a mapping of variables; `shown` and `markdown_table` write the configuration table of
docs/operations.md. The tree itself, and the one read of the process environment, are in
clearing.config."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping


@dataclass(frozen=True, slots=True)
class Var:
    """How one setting is read: variable name, meaning, bounds or choices, and the default
    as the table shows it when the value alone would not say it."""

    name: str
    meaning: str
    low: int | None = None
    high: int | None = None
    choices: tuple[str, ...] = ()
    shown: str | None = None
    upper: bool = False


def env(name: str, default: Any, meaning: str, **how: Any) -> Any:
    """A setting read from the variable `name` (see `Var`)."""
    return field(default=default, metadata={"var": Var(name, meaning, **how)})


def group(cls: type) -> Any:
    """A nested group of settings (its own dataclass)."""
    return field(default_factory=cls, metadata={"group": cls})


def _value(var: Var, default: Any, raw_env: Mapping[str, str]) -> Any:
    if isinstance(default, str) or default is None:
        if default is None:
            return raw_env.get(var.name) or None
        value = raw_env.get(var.name, default)
        value = value.strip().upper() if var.upper else value
        if var.choices and value not in var.choices:
            raise SystemExit(f"{var.name}={value!r} is not one of "
                             f"{', '.join(repr(c) for c in var.choices)}")
        return value
    raw = raw_env.get(var.name, "").strip()
    if not raw:
        return default
    if isinstance(default, Path):
        return Path(raw)
    kind = float if isinstance(default, float) else int
    try:
        value = kind(raw)
    except ValueError:
        what = "a number" if kind is float else "an integer"
        raise SystemExit(f"{var.name}={raw!r} is not {what}") from None
    if var.low is not None and not var.low <= value <= var.high:
        raise SystemExit(f"{var.name}={value} is outside {var.low}..{var.high}")
    return value == 1 if isinstance(default, bool) else value


def load(cls: type, raw_env: Mapping[str, str]) -> Any:
    """An instance of the settings dataclass `cls` (and its groups) from `raw_env`."""
    values: dict[str, Any] = {}
    for f in fields(cls):
        if "group" in f.metadata:
            values[f.name] = load(f.metadata["group"], raw_env)
        elif "var" in f.metadata:
            values[f.name] = _value(f.metadata["var"], f.default, raw_env)
    try:
        return cls(**values)
    except ValueError as exc:
        raise SystemExit(f"{cls.__name__}: {exc}") from None


def shown(var: Var, default: Any) -> str:
    if var.shown is not None:
        return var.shown
    if isinstance(default, bool):
        return str(int(default))
    if default is None:
        return "(none)"
    if default == "":
        return '""'
    return str(default)


def markdown_table(rows: list[tuple[str, str, str]]) -> str:
    """A markdown table of (variable, default, meaning) rows, columns padded."""
    head = ("variable", "default", "meaning")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]

    def line(cells) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *(line(r) for r in rows)])


def check_rate(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}={value!r} must be between 0 and 1")


def check_bounded(name: str, value: int, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{name}={value!r} must be an integer in {low}..{high}")
