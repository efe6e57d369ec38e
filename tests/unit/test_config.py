"""The settings tree (clearing.config): one place that reads the environment, every setting's
bounds enforced at both ends, and the configuration table of docs/operations.md equal to
the one generated from the declarations."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from clearing import config
from clearing.config import (BANK_CONNECTOR_NONE, BANK_CONNECTOR_SIMULATOR, BankSimSettings,
                             Settings, WorkerSettings)

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "server" / "clearing"
# The only reads of the environment outside config.py (each line as it is written).
ALLOWED = {
    # must run before grpc is first imported, i.e. before any settings exist
    ("__init__.py", 'os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")'),
}
ENVIRON = re.compile(r"\benviron\b|\bgetenv\b|\bputenv\b")


def test_no_environment_reads_outside_config():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "v1" or rel == Path("config.py"):  # v1: generated code
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if ENVIRON.search(line) and (str(rel), line.strip()) not in ALLOWED:
                found.append(f"{rel}:{n}: {line.strip()}")
    assert not found, "read the setting in clearing.config instead:\n" + "\n".join(found)


def test_the_check_sees_a_read():
    assert ENVIRON.search('    key = os.environ.get("X")')
    assert ENVIRON.search("from os import environ")
    assert ENVIRON.search('os.getenv("X")')
    assert not ENVIRON.search("environment = 1")


DOC = ROOT / "docs" / "operations.md"  # where the configuration table is


def _doc_table() -> str:
    text = DOC.read_text()
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| variable"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")),
               len(lines))
    return "\n".join(lines[start:end])


def test_the_documented_table_is_generated_from_the_settings_tree():
    table = _doc_table()
    assert table == config.table(), (
        "docs/operations.md's configuration table differs from the settings tree: paste the "
        "output of `.venv/bin/python -m clearing.config`")
    named = set(re.findall(r"`(CLEARING_[A-Z0-9_]+)`", table))
    assert named == {var.name for var, _ in config.variables()}


def test_defaults_are_the_dataclass_defaults():
    assert Settings.from_env({}) == Settings()
    assert Settings.from_env({}).payout.bank.chosen == BANK_CONNECTOR_NONE


def test_every_setting_is_read_from_its_variable():
    """Each declared variable reaches its own field: set one at a time to a value other
    than its default, exactly one leaf of the tree changes."""
    base = _leaves(Settings())
    for var, default in config.variables():
        value = _other(var, default)
        raw = {var.name: value, **_COMPANIONS.get(var.name, {})}
        got = _leaves(Settings.from_env(raw))
        changed = {k for k in base if base[k] != got[k]}
        expected = 1 + len(_COMPANIONS.get(var.name, {}))
        assert len(changed) == expected, (var.name, changed)


# Settings checked together with another (the claim's lease must outlast a bank call; a
# payout's maximum must fit in the most bank transfers).
_COMPANIONS = {
    "CLEARING_PAYOUT_SUBMIT_TIMEOUT_MS": {"CLEARING_PAYOUT_STUCK_AFTER_MS": "86400000"},
    "CLEARING_PAYOUT_STUCK_AFTER_MS": {"CLEARING_PAYOUT_SUBMIT_TIMEOUT_MS": "1"},
    "CLEARING_PAYOUT_MAX_MINOR": {"CLEARING_PAYOUT_BANK_MAX_MINOR": str(10**15)},
    "CLEARING_PAYOUT_BANK_MAX_MINOR": {"CLEARING_PAYOUT_MAX_MINOR": "1"},
}


# Text settings with a format of their own: a value of that format.
_FORMATTED = {"CLEARING_PODS": "1=postgresql://127.0.0.1/pod1"}


def _other(var: config.Var, default) -> str:
    if var.name in _FORMATTED:
        return _FORMATTED[var.name]
    if var.choices:
        return next(c for c in var.choices if c and c != default)
    if isinstance(default, float):
        return "0.25" if default != 0.25 else "0.5"
    if isinstance(default, bool):
        return "0" if default else "1"
    if isinstance(default, int):
        return str(var.low if var.low is not None and var.low != default else default + 1)
    return "other-value"


def _leaves(obj, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for name in obj.__dataclass_fields__:
        value = getattr(obj, name)
        if hasattr(value, "__dataclass_fields__"):
            out.update(_leaves(value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = value
    return out


@pytest.mark.parametrize("var", [v for v, _ in config.variables() if v.low is not None],
                         ids=lambda v: v.name)
def test_bounds_accept_both_ends_and_refuse_beyond(var):
    companions = _COMPANIONS.get(var.name, {})
    for value in (var.low, var.high):
        Settings.from_env({var.name: str(value), **companions})
    for value in (var.low - 1, var.high + 1):
        with pytest.raises(SystemExit, match=var.name):
            Settings.from_env({var.name: str(value), **companions})
    with pytest.raises(SystemExit, match=var.name):
        Settings.from_env({var.name: "12x"})


def test_bank_connector_choices():
    read = lambda raw: Settings.from_env({"CLEARING_BANK_CONNECTOR": raw}).payout.bank  # noqa: E731
    assert read("").chosen == BANK_CONNECTOR_NONE  # unset or empty: none
    assert read("none").chosen == BANK_CONNECTOR_NONE
    assert read("simulator").chosen == BANK_CONNECTOR_SIMULATOR
    for bad in ("Simulator", "real", " none"):
        with pytest.raises(SystemExit, match="CLEARING_BANK_CONNECTOR"):
            read(bad)


def test_empty_means_default_except_for_text_settings():
    s = Settings.from_env({"CLEARING_WORKERS": "", "CLEARING_METRICS_ADDR": "",
                           "CLEARING_DATABASE_URL": "", "CLEARING_LOG_LEVEL": "debug"})
    assert (s.workers, s.metrics_addr, s.database_url, s.log_level) == (1, "", None, "DEBUG")


def test_cross_checks_stop_the_server():
    with pytest.raises(SystemExit, match="STUCK_AFTER_MS must exceed"):
        Settings.from_env({"CLEARING_PAYOUT_STUCK_AFTER_MS": "10000"})  # == submit timeout
    assert Settings.from_env({"CLEARING_PAYOUT_STUCK_AFTER_MS": "10001"}).payout \
        .worker_limits.stuck_after_ms == 10_001
    with pytest.raises(SystemExit, match="query_only_rate"):
        Settings.from_env({"CLEARING_BANK_SIM_QUERY_ONLY_RATE": "0.6",
                           "CLEARING_BANK_SIM_PROCESSING_RATE": "0.5"})
    # the maximum payout fits in TRANSFERS_PER_PAYOUT_MAX bank transfers, exactly or not at all
    assert Settings.from_env({"CLEARING_PAYOUT_MAX_MINOR": "1000000",
                              "CLEARING_PAYOUT_BANK_MAX_MINOR": "1000"}).payout \
        .max_amount_minor == 1_000_000
    with pytest.raises(SystemExit, match="at most 1000 bank transfers"):
        Settings.from_env({"CLEARING_PAYOUT_MAX_MINOR": "1000001",
                           "CLEARING_PAYOUT_BANK_MAX_MINOR": "1000"})
    defaults = Settings().payout
    assert defaults.max_amount_minor == 1000 * defaults.bank_transfer_max_minor
    with pytest.raises(ValueError):
        WorkerSettings(stuck_after_ms=100, submit_timeout_ms=100)
    with pytest.raises(ValueError):
        BankSimSettings(failure_rate=1.01)


def test_client_api_key():
    assert config.client_api_key({"CLEARING_API_KEY": "k1"}) == "k1"
    assert config.client_api_key({}) == ""


def test_pods_setting():
    """CLEARING_PODS: `ID=DSN` parts split by `;`, ids 1..POD_ID_MAX once each; anything else
    stops the server naming the variable."""
    read = lambda raw: Settings.from_env({"CLEARING_PODS": raw}).pod_dsns  # noqa: E731
    assert read("") == {}
    assert read(" 2=postgresql://h:5433/a ; 1=postgresql://h/b;") == {
        2: "postgresql://h:5433/a", 1: "postgresql://h/b"}
    for bad in ("postgresql://h/a", "0=postgresql://h/a", "1=", "x=postgresql://h/a",
                "1=postgresql://h/a;1=postgresql://h/b", f"{config.POD_ID_MAX + 1}=dsn"):
        with pytest.raises(SystemExit, match="CLEARING_PODS"):
            read(bad)
