"""`clearing platform payout-config`: a platform's payout rules set and read from the
command line, in major units, exactly; a bad fee account refused with its field."""

from __future__ import annotations

import asyncio
import os
import sys

import asyncpg

from clearing.config import PayoutSettings
from clearing.payout import store
from tests.support import ROOT, Client


async def _cli(database_url: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clearing.cli", "platform", "payout-config", *args,
        env={**os.environ, "CLEARING_DATABASE_URL": database_url}, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def test_payout_config_is_set_and_shown_in_major_units(client: Client, platform,
                                                             database_url):
    fee_account = (await client.open("fees", kind=4)).account_id
    code, out, err = await _cli(database_url, platform.name, "--fee-fixed", "0.04",
                                "--fee-bps", "15", "--fee-account-id", str(fee_account),
                                "--min", "1.00", "--max", "2000000.00", "--daily-max",
                                "5000000.00", "--review-threshold", "100000.00")
    assert code == 0, err
    assert "fee_fixed_minor: 0.04" in out and "review_threshold_minor: 100000.00" in out
    conn = await asyncpg.connect(database_url)
    try:
        config = await store.load_config(conn, PayoutSettings(), platform.platform_id, "CNY")
    finally:
        await conn.close()
    assert (config.fee_fixed_minor, config.fee_bps, config.fee_account_id,
            config.min_amount_minor, config.max_amount_minor, config.daily_max_minor,
            config.review_threshold_minor, config.bank_transfer_max_minor) == (
        4, 15, fee_account, 100, 200_000_000, 500_000_000, 10_000_000, 50_000_000)
    code, out, _ = await _cli(database_url, platform.name, "--show")
    assert code == 0 and "fee_bps: 15" in out
    code, _, err = await _cli(database_url, platform.name, "--fee-account-id", "999999999")
    assert code != 0 and "fee_account_id" in err
