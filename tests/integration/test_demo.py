"""`make demo` (clearing.dev.demo) against a test server, twice: the seed's B2B order split
into its four legs, the withdrawal fee set through maker-checker, the supplier paid out in two
bank transfers, the balances and VerifyLedger; the second run changes nothing and prints the
same."""

from __future__ import annotations

import io
import re
import secrets

from clearing.dev import demo
from tests.support import ROOT, cli, new_admin_key


def _makefile_recipe(target: str) -> str:
    text = (ROOT / "Makefile").read_text()
    found = re.search(rf"^{re.escape(target)}:[^\n]*\n((?:\t[^\n]*\n)+)", text, re.M)
    assert found, f"no `{target}` target in the Makefile"
    return found.group(1)


async def test_the_demo_runs_twice_and_prints_the_seeds_figures(running, database_url,
                                                               tmp_path):
    assert "-m clearing.dev.demo" in _makefile_recipe("demo")
    for name in ("admin.key", "admin-approver.key"):
        (tmp_path / name).write_text(await new_admin_key(database_url) + "\n")
    name = f"b2b-{secrets.token_hex(4)}"
    runs = []
    for _ in range(2):
        out = io.StringIO()
        assert await demo.run(f"127.0.0.1:{running.port}", tmp_path, out, platform_name=name)
        runs.append(out.getvalue())
    assert runs[0] == runs[1]
    lines = runs[0].splitlines()
    legs = [line.split() for line in lines[lines.index(next(
        x for x in lines if x.startswith("split ORD202601200001 850,000.00 CNY"))) + 1:][:4]]
    assert legs == [["GOV_ACCOUNT", "government", "17,000.00"],
                    ["PLAT_001", "platform", "83,300.00"],
                    ["SUP_2025001", "supplier", "624,750.00"],
                    ["LOGISTICS_B", "logistics", "124,950.00"]]
    assert re.search(r"^withdrawal fee 4\.00: change \d+ set by admin key \d+, approved by "
                     r"admin key \d+$", runs[0], re.M)
    assert re.search(r"^payout \d+ of SUP_2025001: amount 600,000\.00, fee 4\.00, net "
                     r"599,996\.00, SUCCEEDED$", runs[0], re.M)
    transfers = [line.split()[-2:] for line in lines if line.startswith("  bank transfer")]
    assert transfers == [["500,000.00", "SUCCEEDED"], ["99,996.00", "SUCCEEDED"]]
    start = lines.index("balances (posted):")
    balances = dict(line.split() for line in lines[start + 1:start + 7])
    assert balances == {"custodial": "-250,004.00", "PLAT_001": "83,300.00",
                        "SUP_2025001": "24,750.00", "LOGISTICS_B": "124,950.00",
                        "GOV_ACCOUNT": "17,000.00", "FEES": "4.00"}
    assert lines[-1] == "VerifyLedger: ok (6 accounts, chain ok)"
    for key in (f"{name}.key", f"{name}-approver.key", f"{name}-supplier.key"):
        assert (tmp_path / key).stat().st_mode & 0o777 == 0o600
    assert f"party key {name}-supplier.key: SUP_2025001's splits" in runs[0]
    await _the_reruns_made_no_second_key(f"127.0.0.1:{running.port}", tmp_path, name)


async def _the_reruns_made_no_second_key(addr: str, data_dir, name: str) -> None:
    """The demo's stable request ids: two runs made three keys (the third the supplier's
    party key, bound to SUP_2025001 only); a lost key file makes one more
    (the next request id of its chain) and revokes the lost key, nobody's to use."""
    from clearing_client import ClearingClient
    from clearing_client.v1 import platform_pb2 as pb

    async def keys(admin, platform_id: int):
        return (await admin.call(admin.platform.ListApiKeys, pb.ListApiKeysRequest(
            platform_id=platform_id))).api_keys

    admin_key = (data_dir / "admin.key").read_text().strip()
    async with ClearingClient(addr, admin_key) as admin:
        platform = (await admin.call(admin.platform.GetPlatform,
                                     pb.GetPlatformRequest(name=name))).platform
        before = await keys(admin, platform.platform_id)
        assert len(before) == 3 and not any(k.HasField("revoke_time") for k in before)
        assert [list(k.roles) for k in before][2] == ["party"]
        assert len(before[2].party_account_ids) == 1
        path = data_dir / f"{name}-approver.key"
        path.unlink()
        made = await demo._key(admin, addr, platform.platform_id, path, ["approver"])
        assert made.startswith("ck_") and path.read_text().strip() == made
        assert await demo._key(admin, addr, platform.platform_id, path, ["approver"]) == made
        after = await keys(admin, platform.platform_id)
        assert [k.key_id for k in after[:3]] == [k.key_id for k in before] and len(after) == 4
        assert [k.HasField("revoke_time") for k in after] == [False, True, False, False]


async def test_publishing_the_b2b_rule_set_names_each_missing_account(running, platform):
    """The README's `clearing rules publish ...b2b.yaml` before the accounts exist says
    which accounts to open (the demo and the quick start open them first)."""
    code, _, err = await cli(running, platform.key, "rules", "publish",
                             "server/clearing/rules/examples/b2b.yaml")
    assert code == 1
    for ref in ("GOV_ACCOUNT", "PLAT_001", "SUP_2025001", "LOGISTICS_B"):
        assert f"unknown account {ref!r}" in err and f"--ref {ref}" in err, err
    assert "open it first" in err
