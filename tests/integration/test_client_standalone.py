"""clients/python installs on its own: a fresh venv, `pip install clients/python` (its
dependencies from the package index), then calls of a running server from that venv, where
neither the server (`clearing`) nor its database drivers can be imported."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

# 13-20 s here (a venv, a wheel build, the dependencies from the pip cache or the index).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

VENV_TIMEOUT_S = 120.0
INSTALL_TIMEOUT_S = 300.0
SCRIPT_TIMEOUT_S = 60.0
CLIENT_DEPENDENCIES = {"grpcio", "grpcio-status", "protobuf", "googleapis-common-protos"}
AMOUNT_MINOR = 1234

# Runs in the fresh venv: argv[1] the server's address, argv[2] a platform's key.
SCRIPT = '''
import asyncio, importlib.metadata, importlib.util, json, re, sys

absent = [m for m in ("clearing", "asyncpg", "redis", "grpc_tools")
          if importlib.util.find_spec(m) is not None]

import clearing_client
from clearing_client import ClearingClient, ClearingRpcError
from clearing_client.v1 import ledger_pb2, payout_pb2, rule_set_pb2, split_pb2


async def main(addr, key, amount):
    async with ClearingClient(addr, key) as c:
        src = await c.create_account("standalone-src", kind=clearing_client.ACCOUNT_KIND_CUSTODIAL)
        dst = await c.create_account("standalone-dst", kind=clearing_client.ACCOUNT_KIND_MERCHANT)
        transfer = await c.transfer(src.account_id, dst.account_id, amount, "CNY")
        balance = await c.balance(dst.account_id)
        page = await c.list_accounts(page_size=10)
        try:
            await c.transfer(src.account_id, dst.account_id, -amount, "CNY")
            refused = None
        except ClearingRpcError as err:
            refused = {"code": err.code.name, "reason": err.reason,
                       "violations": [[v.field, v.description] for v in err.violations]}
        payouts = await c.list_payouts(page_size=5)
        rule_sets = await c.list_rule_sets(page_size=5)
        checked = await c.publish_rule_set(rule_set_pb2.RuleSet(
            name="standalone", currency_code="CNY", party_roles=["merchant"],
            rules=[rule_set_pb2.Rule(rule_name="all", priority=1, shares=[rule_set_pb2.Share(
                label="merchant", type=rule_set_pb2.SHARE_TYPE_REMAINDER,
                receiver=rule_set_pb2.Receiver(party_role="merchant"))])]),
            validate_only=True)
    return {
        "present": absent,
        "module": clearing_client.__file__,
        "requires": sorted(re.split(r"[ <>=!;\\[]", r, 1)[0].lower()
                           for r in importlib.metadata.requires("clearing-client")),
        "transfer_amount": transfer.amount_minor,
        "posted": balance.posted_minor,
        "refs": sorted(a.external_ref for a in page.accounts),
        "refused": refused,
        "payouts": len(payouts.payouts),
        "rule_sets": len(rule_sets.rule_sets),
        "checked": [type(checked).__module__, checked.name, checked.version],
        "class_module": type(transfer).__module__,
    }


print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))))
'''


async def _run(argv: list[str], timeout_s: float, env: dict[str, str],
               cwd: Path) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    text = out.decode(errors="replace")
    assert proc.returncode == 0, f"{argv} exited with {proc.returncode}:\n{text[-4000:]}"
    return text


async def test_client_installs_and_calls_the_server_without_the_server_package(
        running, platform, tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    source = tmp_path / "client-src"
    shutil.copytree(ROOT / "clients" / "python", source, ignore=shutil.ignore_patterns(
        "*.egg-info", "build", "__pycache__"))
    venv = tmp_path / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    await _run([base_python, "-m", "venv", str(venv)], VENV_TIMEOUT_S, env, tmp_path)
    python = str(venv / "bin" / "python")
    await _run([python, "-m", "pip", "install", "-q", str(source)], INSTALL_TIMEOUT_S, env,
               tmp_path)
    script = tmp_path / "call.py"
    script.write_text(SCRIPT)
    out = await _run([python, str(script), f"127.0.0.1:{running.port}", platform.key,
                      str(AMOUNT_MINOR)], SCRIPT_TIMEOUT_S, env, tmp_path)
    result = json.loads(out.strip().splitlines()[-1])

    assert result["present"] == []
    assert Path(result["module"]).is_relative_to(venv)
    assert set(result["requires"]) == CLIENT_DEPENDENCIES
    assert result["class_module"] == "clearing_client.v1.ledger_pb2"
    assert result["transfer_amount"] == AMOUNT_MINOR
    assert result["posted"] == AMOUNT_MINOR
    assert result["refs"] == ["standalone-dst", "standalone-src"]
    assert result["refused"]["code"] == "INVALID_ARGUMENT"
    assert result["refused"]["reason"] == "INVALID_ARGUMENT"
    fields = {field: text for field, text in result["refused"]["violations"]}
    assert "amount_minor" in fields and fields["amount_minor"]
    assert result["payouts"] == 0
    assert result["rule_sets"] == 0
    # the rule-set model is in its own module (rule_set.proto), installed with the rest
    assert result["checked"] == ["clearing_client.v1.rule_set_pb2", "standalone", 0]
