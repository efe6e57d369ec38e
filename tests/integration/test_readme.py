"""Every command README.md shows is run by a test.

The README's shell blocks are read from the file. The blocks marked `run by
tests/integration/test_readme.py` (the quick start's first split, then the reconciliation
of a day on the same platform, then its voucher and reports) are run here as written, in
order,
with bash, against a test server over TLS, from a directory laid out like the repository
after `make run`: `.venv` and `server` linked to the real ones, `var/tls/` the development
CA and certificates the server uses, `var/demo.key` (gateway and operator) and
`var/demo-approver.key` (approver) holding keys of a fresh platform. Every
other command line must be one that another test runs (RUN_ELSEWHERE, each checked to be
still so); a new command in the README fails here until a test runs it. And every relative
link of the README, bench/README.md and docs/ leads to a file and heading that exist.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import sys
from pathlib import Path

import pytest

from tests.split_support import new_key
from tests.support import ROOT

pytestmark = [pytest.mark.timeout(180)]

README = ROOT / "README.md"
RUN_HERE = "<!-- run by tests/integration/test_readme.py -->"
SHELLS = {"sh", "bash", "shell", "console", "zsh"}
BLOCK = re.compile(r"^```([A-Za-z]*)\n(.*?)^```", re.M | re.S)
VENV = Path(sys.executable).parent.parent
BLOCK_TIMEOUT_S = 120.0


def _makefile_recipe(target: str) -> str:
    text = (ROOT / "Makefile").read_text()
    found = re.search(rf"^{re.escape(target)}:[^\n]*\n((?:\t[^\n]*\n)+)", text, re.M)
    assert found, f"no `{target}` target in the Makefile"
    return found.group(1)


def _make_run_is_the_dev_run() -> None:
    # `make run` is `clearing serve --dev`, which test_dev_run starts, drives and stops.
    assert "-m clearing.cli serve --dev" in _makefile_recipe("run")
    test = (ROOT / "tests" / "adversity" / "test_dev_run.py").read_text()
    assert '"-m", "clearing.cli", "serve", "--dev"' in test


def _make_test_is_ci() -> None:
    # `make test` is the suite itself; CI runs exactly it.
    recipe = _makefile_recipe("test")
    assert "$(PYTEST)" in recipe, recipe
    pytest_line = re.search(r"^PYTEST :=.*$", (ROOT / "Makefile").read_text(), re.M)
    assert pytest_line and "-m pytest -q" in pytest_line.group(0)
    assert re.search(r"^\s*make test\b", (ROOT / ".ci" / "run").read_text(), re.M)


def _make_demo_is_tested() -> None:
    # `make demo` is clearing.dev.demo, which test_demo runs (twice) against a test server.
    assert "-m clearing.dev.demo" in _makefile_recipe("demo")
    test = (ROOT / "tests" / "integration" / "test_demo.py").read_text()
    assert "await demo.run(" in test


# Commands the README shows that other tests run, with the check that they still do.
RUN_ELSEWHERE = {
    "make run": _make_run_is_the_dev_run,
    "make test": _make_test_is_ci,
    "make demo": _make_demo_is_tested,
}


def shell_blocks(text: str) -> list[tuple[bool, str]]:
    """(marked to run here, body) of every shell code block."""
    out = []
    for match in BLOCK.finditer(text):
        if match.group(1) in SHELLS:
            before = text[:match.start()].rstrip().rsplit("\n", 1)[-1]
            out.append((before.strip() == RUN_HERE, match.group(2)))
    return out


def command_lines(body: str) -> list[str]:
    """A block's commands: comments dropped, continued lines joined, a here-document kept
    with its command."""
    commands: list[str] = []
    lines = iter(body.splitlines())
    for line in lines:
        line = re.sub(r"\s+#.*$", "", line).rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.endswith("\\"):
            line = line[:-1].rstrip() + " " + next(lines).strip()
        heredoc = re.search(r"<<-?'?(\w+)'?", line)
        if heredoc:
            end = heredoc.group(1)
            for inner in lines:
                if inner.strip() == end:
                    break
        commands.append(line.strip())
    return commands


def test_the_parser_sees_blocks_and_commands():
    text = ("x\n\n" + RUN_HERE + "\n```sh\na --b  # c\n# d\nx \\\n  y\npy - <<'EOF'\n"
            "print(1)\nEOF\n```\n\n```\nnot a shell block\n```\n```bash\nmake run\n```\n")
    blocks = shell_blocks(text)
    assert [marked for marked, _ in blocks] == [True, False]
    assert command_lines(blocks[0][1]) == ["a --b", "x y", "py - <<'EOF'"]
    assert command_lines(blocks[1][1]) == ["make run"]


def test_every_readme_command_is_run_by_a_test():
    blocks = shell_blocks(README.read_text())
    assert sum(marked for marked, _ in blocks) == 3, "three blocks of the README run here"
    unrun = [cmd for marked, body in blocks if not marked for cmd in command_lines(body)
             if cmd not in RUN_ELSEWHERE]
    assert not unrun, ("README commands no test runs (run them in a test and list them in "
                       f"RUN_ELSEWHERE, or in the block run here): {unrun}")
    for command, still_run in RUN_ELSEWHERE.items():
        still_run()


def _json_documents(text: str) -> list[dict]:
    """The JSON objects in the output, in order (other lines skipped)."""
    decoder, out, at = json.JSONDecoder(), [], 0
    while (at := text.find("{", at)) != -1:
        try:
            doc, end = decoder.raw_decode(text, at)
        except json.JSONDecodeError:
            at += 1
            continue
        out.append(doc)
        at = end
    return out


@pytest.fixture
async def tls_running(database_url, redis_url, redis_prefix, tmp_path):
    """A server over TLS, as `make run` serves: the development CA and certificates made by
    clearing.tls.ensure_dev_pki under <tmp>/var/tls, as under the repository's var/."""
    from clearing import server
    from clearing.config import TlsSettings
    from clearing.tls import ensure_dev_pki
    from tests.conftest import server_settings

    pki, _ = ensure_dev_pki(tmp_path / "repo" / "var" / "tls")
    srv = await server.start(server_settings(
        database_url, redis_url, redis_prefix,
        tls=TlsSettings(cert=str(pki.server_cert), key=str(pki.server_key))), migrate=False)
    yield srv
    await srv.stop()


async def test_the_quick_start_first_split_runs_as_written(tls_running, database_url,
                                                           platform, tmp_path):
    assert (VENV / "bin" / "clearing").exists(), f"no {VENV}/bin/clearing (make venv)"
    first, recon, reports = [body for marked, body in shell_blocks(README.read_text()) if marked]
    repo = tmp_path / "repo"
    (repo / "var").mkdir(parents=True, exist_ok=True)  # var/tls: the server's (TLS)
    (repo / ".venv").symlink_to(VENV)
    (repo / "server").symlink_to(ROOT / "server")
    (repo / "var" / "demo.key").write_text(platform.key + "\n")
    approver = await new_key(database_url, platform.platform_id, {"approver"})
    (repo / "var" / "demo-approver.key").write_text(approver + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEARING_")}
    env["CLEARING_GRPC_ADDR"] = f"127.0.0.1:{tls_running.port}"

    stdout, _ = await _bash(first, repo, env)

    # B2B, 850,000.00 CNY, government purchase by an enterprise: 2% top-slice, then the
    # promotion rule's 10% / 75% / 15% of the remaining 833,000.00.
    amount = 85_000_000
    gov = amount * 200 // 10_000
    rest = amount - gov
    legs = [("GOV_ACCOUNT", gov), ("PLAT_001", rest * 1000 // 10_000),
            ("SUP_2025001", rest * 7500 // 10_000), ("LOGISTICS_B", rest * 1500 // 10_000)]
    assert sum(minor for _, minor in legs) == amount
    printed = [(d["external_ref"], int(d["amount_minor"])) for d in _json_documents(stdout)
               if "leg_index" in d or "amount_minor" in d and "external_ref" in d]
    assert printed == legs
    readme = README.read_text()
    for ref, minor in legs:  # what the README says the block prints
        assert f"`{ref} {minor}`" in readme

    docs = _json_documents(stdout)
    published = next(d["rule_set"] for d in docs if "rule_set" in d)
    assert (published["name"], int(published["version"])) == ("b2b", 1)
    plat = docs[-1]["account"]  # accounts get PLAT_001, the block's last command
    assert plat["external_ref"] == "PLAT_001"
    assert int(plat["balance"]["posted_minor"]) == rest * 1000 // 10_000

    # The reconciliation example, on the same platform after the first split.
    stdout, stderr = await _bash(recon, repo, env)
    _check_recon_example(stdout, stderr)

    # Vouchers and reports, of the same day.
    stdout, _ = await _bash(reports, repo, env)
    _check_reports_example(stdout, repo / "var")


def _check_reports_example(stdout: str, var: Path) -> None:
    """The voucher verifies; the reports of yesterday (the statement's day) and today (when
    the quick start's split and the day's splits were made), worked out here: the splits
    distribute their amount less the channel's fee (0.6%; none on the BANK_TRANSFER order)."""
    fee = lambda minor: minor * 6 // 1000  # noqa: E731
    digest, valid, *row_counts = stdout.split()
    assert re.fullmatch(r"[0-9a-f]{64}", digest) and valid == "True", stdout
    # 9 receivers and rules (PLAT_001, SUP_2025001, LOGISTICS_B under the base rule and the
    # promotion, GOV_ACCOUNT's top slice; two USD receivers), 10 accounts, 4 channel days
    # (the statement's; today BANK_TRANSFER, WECHAT_PAY in CNY and in USD); no payout.
    assert row_counts == ["9", "10", "4"], stdout

    def rows(name: str) -> list[dict[str, str]]:
        return list(csv.DictReader(io.StringIO((var / f"{name}.csv").read_text("utf-8"))))

    cny = 85_000_000 + sum(a - fee(a) for a in (12_000_000, 56_000_000, 8_000_000, 3_000_000,
                                                 4_500_000, 980_000))  # RD06: SPLIT_NOW
    totals = {r["currency_code"]: int(r["amount_minor"]) for r in rows("split_summary")
              if r["line"] == "total"}
    assert totals == {"CNY": cny, "USD": 200_000 - fee(200_000)}
    for r in rows("transaction_flow"):
        if r["line"] == "total":  # double entry: every debit is someone's credit
            assert r["debits_minor"] == r["credits_minor"] and r["closing_minor"] == "0", r
    [statement] = [r for r in rows("channel_analysis") if r["source"] == "statement"]
    assert int(statement["settled_minor"]) == 135_363_019  # the statement's settled total
    assert [r["line"] for r in rows("payouts")] == []


async def _bash(body: str, repo: Path, env: dict[str, str]) -> tuple[str, str]:
    proc = await asyncio.create_subprocess_exec(
        "bash", "-euo", "pipefail", "-c", body, cwd=repo, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=BLOCK_TIMEOUT_S)
    assert proc.returncode == 0, f"{out.decode()}\n{err.decode()}"
    return out.decode(), err.decode()


def _check_recon_example(stdout: str, stderr: str) -> None:
    """The day of clearing.dev.recon_day, worked out here from its table: orders of
    120,000.00, 560,000.00, 80,000.00, 30,000.00, 45,000.00 and 2,000.00 USD split, 9,800.00
    paid and not split; the channel's fee 0.6%."""
    fee = lambda minor: minor * 6 // 1000  # noqa: E731
    lines = {  # class -> [(amount, fee)] of its statement lines
        "MATCHED": [(12_000_000, fee(12_000_000)), (56_000_000, fee(56_000_000))],
        "DUPLICATE": [(56_000_000, fee(56_000_000))],
        "AMOUNT_MISMATCH": [(8_000_100, fee(8_000_000))],
        "FEE_MISMATCH": [(3_000_000, fee(3_000_000) + 1)],
        "MISSING_SPLIT": [(980_000, fee(980_000))],
        "CURRENCY_MISMATCH": [(200_000, fee(200_000))],
    }
    settled = sum(a - f for found in lines.values() for a, f in found)
    # what the splits say of the lines compared by amount, and of the split with no line
    splits = [12_000_000, 56_000_000, 8_000_000, 3_000_000, 4_500_000]
    info = sum(a - fee(a) for a in splits)
    printed = stdout.split()
    # settle prints the settlement's amount; the approvals their state; the last command
    # the classes still open, in the order they were found.
    assert printed[0] == str(settled), stdout
    assert printed[1:3] == ["RESOLUTION_STATE_APPROVED"] * 2, stdout
    still_open = sorted(printed[3:])
    assert still_open == sorted(f"RECONCILIATION_CLASS_{c}" for c in (
        "DUPLICATE", "AMOUNT_MISMATCH", "MISSING_IN_STATEMENT", "CURRENCY_MISMATCH")), stdout
    readme = README.read_text()
    assert (f"  statement settled {settled}, splits {info}, difference {settled - info}, "
            f"explained {settled - info}") in stderr.splitlines(), stderr
    assert f"```\n{stdout}```" in readme, f"the README does not show what it prints:\n{stdout}"
    for line in stderr.splitlines():
        if line.startswith("  "):  # the import's counts per class
            assert line.rstrip() in readme, f"the README does not show: {line!r}"


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a document's headings."""
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"(?m)^#+ (.+)$", re.sub(r"(?ms)^```.*?^```", "", markdown))}


def test_the_readme_and_docs_link_only_to_what_exists():
    docs = [README, ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert {p.name for p in docs} >= {"splits.md", "payouts.md", "operations.md",
                                      "scaling.md", "testing.md", "recon.md"}
    broken = []
    for doc in docs:
        prose = re.sub(r"(?ms)^```.*?^```", "", doc.read_text())
        for link in re.findall(r"\]\(([^)\s]+)\)", prose):
            if re.match(r"[a-z]+://", link):
                continue
            path, _, anchor = link.partition("#")
            target = (doc.parent / path) if path else doc
            if not target.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {link}")
            elif anchor and target.suffix == ".md" and anchor not in _anchors(
                    target.read_text()):
                broken.append(f"{doc.relative_to(ROOT)}: {link} (no such heading)")
    assert not broken, broken
