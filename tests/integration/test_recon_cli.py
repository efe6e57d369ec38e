"""`clearing recon import|import-payouts|runs|discrepancies|settle|propose|approve|reject|
resolution` end to end (the real command, a subprocess, through clearing_client): a generated day imported from a gzip file with its progress and
counts, again (replayed), as a WeChat bill; the runs and discrepancies listed; a malformed
file's problems on stderr by line."""

from __future__ import annotations

import gzip
import json

import pytest

from clearing.v1 import reconciliation_pb2 as rpb
from tests.recon_support import ReconWorld, generate_day, hand_day, statement_day, wechat_bill
from tests.split_support import new_key
from tests.support import Client, cli


@pytest.fixture
async def world(channel, client: Client, database_url, platform) -> ReconWorld:
    return await ReconWorld.make(channel, client, database_url, platform.platform_id,
                                 platform.key)


async def test_import_list_and_discrepancies(running, world: ReconWorld, platform, tmp_path):
    day = await generate_day(world, statement_day(), matched=10, per_class=1, seed=5)
    path = tmp_path / "wechat-pay.csv.gz"
    path.write_bytes(gzip.compress(day.csv()))
    argv = ("recon", "import", str(path), "--channel", "WECHAT_PAY", "--date",
            day.day.isoformat())
    code, out, err = await cli(running, platform.key, *argv, "--request-id", "cli-imp-1")
    assert code == 0, err
    run = json.loads(out)["run"]
    exp = day.expected
    assert {t["reconciliation_class"].removeprefix("RECONCILIATION_CLASS_"): int(t["item_count"])
            for t in run["class_totals"]} == {
        rpb.ReconciliationClass.Name(c).removeprefix("RECONCILIATION_CLASS_"): n
        for c, n in exp.counts.items()}
    assert int(run["difference_minor"]) == int(run["explained_minor"]) == (
        exp.statement_settled_minor - exp.split_settled_minor)
    assert "bytes" in err and "MISSING_IN_STATEMENT" in err and f"run {run['run_id']}" in err

    code, out, err = await cli(running, platform.key, *argv, "--request-id", "cli-imp-1",
                               "--quiet")
    assert code == 0 and json.loads(out)["replayed"] is True
    assert json.loads(out)["run"] == run

    bill = tmp_path / "bill.csv"
    bill.write_bytes(wechat_bill(day.lines))
    code, out, err = await cli(running, platform.key, "recon", "import", str(bill),
                               "--channel", "WECHAT_PAY", "--date", day.day.isoformat(),
                               "--format", "wechat", "--quiet")
    assert code == 0, err
    second = json.loads(out)["run"]
    assert second["class_totals"] == run["class_totals"]

    code, out, err = await cli(running, platform.key, "recon", "runs", "--channel",
                               "WECHAT_PAY")
    assert code == 0, err
    assert [r["run_id"] for r in json.loads(out)["runs"]] == [second["run_id"], run["run_id"]]
    code, out, err = await cli(running, platform.key, "recon", "discrepancies", "--run",
                               run["run_id"], "--class", "fee_mismatch", "--state", "open")
    assert code == 0, err
    found = json.loads(out)["discrepancies"]
    assert [d["reconciliation_class"] for d in found] == ["RECONCILIATION_CLASS_FEE_MISMATCH"]


async def test_a_malformed_file_shows_its_problems(running, platform, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("channel,order_id\n")
    code, out, err = await cli(running, platform.key, "recon", "import", str(path),
                               "--channel", "WECHAT_PAY", "--date",
                               statement_day().isoformat(), "--quiet")
    assert code == 1 and out == ""
    assert "INVALID_ARGUMENT" in err and "lines[1]: the header must be" in err


async def test_settle_propose_and_review(running, world: ReconWorld, platform, database_url,
                                         tmp_path):
    """The hand-worked day (recon_support.HandDay): settled, g's surplus written off by one
    key and approved by another, b's refund proposed and rejected."""
    day = await hand_day(world)
    key = await new_key(database_url, platform.platform_id, {"operator", "approver"})
    approver = await new_key(database_url, platform.platform_id, {"approver"})
    code, out, err = await cli(running, key, "recon", "settle", str(day.run.run_id))
    assert code == 0, err
    settlement = json.loads(out)["run"]["settlement"]
    assert int(settlement["amount_minor"]) == 168_979
    found = {d["order_id"]: d for d in json.loads((await cli(
        running, key, "recon", "discrepancies", "--run", str(day.run.run_id)))[1])[
            "discrepancies"]}

    g = found[day.g.order_id]["discrepancy_id"]
    code, out, err = await cli(running, key, "recon", "propose", str(g), "--action",
                               "write_off", "--note", "unknown order")
    assert code == 0, err
    proposed = json.loads(out)["resolution"]
    assert int(proposed["amount_minor"]) == 19_880
    code, out, err = await cli(running, key, "recon", "approve", proposed["resolution_id"])
    assert code == 1 and "PERMISSION_DENIED" in err and "proposed" in err
    code, out, err = await cli(running, approver, "recon", "approve",
                               proposed["resolution_id"], "--note", "ok")
    assert code == 0, err
    assert json.loads(out)["resolution"]["state"] == "RESOLUTION_STATE_APPROVED"
    code, out, err = await cli(running, key, "recon", "resolution", proposed["resolution_id"])
    assert [e["step"] for e in json.loads(out)["resolution"]["events"]] == [
        "RESOLUTION_STEP_PROPOSED", "RESOLUTION_STEP_APPROVED"]

    b = found[day.b.order_id]["discrepancy_id"]
    code, out, err = await cli(running, key, "recon", "propose", str(b), "--action", "refund",
                               "--amount", "10.00", "--note", "charged twice")
    assert code == 0, err
    refund = json.loads(out)["resolution"]
    assert int(refund["amount_minor"]) == 1_000
    code, out, err = await cli(running, approver, "recon", "reject", refund["resolution_id"],
                               "--note", "not agreed")
    assert code == 0, err
    assert json.loads(out)["resolution"]["state"] == "RESOLUTION_STATE_REJECTED"


async def test_import_payouts(running, platform, tmp_path):
    day = statement_day().isoformat()
    path = tmp_path / "bank-payouts.csv"
    path.write_text("bank,bank_reference,end_to_end_id,payout_id,amount_minor,currency_code,"
                    f"status,value_date\nBANKSIM,SIM1,po77-t1-a1,77,500,CNY,SUCCEEDED,{day}\n"
                    f"BANKSIM,SIM1,po77-t1-a1,77,500,CNY,SUCCEEDED,{day}\n")
    code, out, err = await cli(running, platform.key, "recon", "import-payouts", str(path),
                               "--date", day, "--quiet")
    assert code == 0, err
    run = json.loads(out)["run"]
    assert run["statement"]["format"] == "STATEMENT_FORMAT_BANK_PAYOUTS"
    assert run["statement"]["channel"] == "BANKSIM"
    assert {t["reconciliation_class"]: int(t["item_count"]) for t in run["class_totals"]} == {
        "RECONCILIATION_CLASS_DUPLICATE": 1, "RECONCILIATION_CLASS_UNKNOWN_BANK_TRANSFER": 1}
    assert int(run["statement_settled_minor"]) == 1000 and int(run["difference_minor"]) == 1000
    assert "UNKNOWN_BANK_TRANSFER" in err
    code, out, err = await cli(running, platform.key, "recon", "discrepancies", "--run",
                               run["run_id"], "--class", "unknown_bank_transfer")
    assert code == 0, err
    [found] = json.loads(out)["discrepancies"]
    assert (found["payout_id"], found["order_id"]) == ("77", "po77-t1-a1")
