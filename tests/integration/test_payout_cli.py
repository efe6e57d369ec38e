"""`clearing platform payout-config`: a platform's payout rules set and read from the
command line (through PlatformService, with an admin key), in major units, exactly; a fee
change waits for another admin key (`platform approve-change`); a bad fee account refused
with its field."""

from __future__ import annotations

import re

import asyncpg

from clearing.config import PayoutSettings
from clearing.payout import store
from tests.support import Client, admin_cli, new_admin_key


async def test_payout_config_is_set_and_shown_in_major_units(client: Client, platform,
                                                             database_url, running):
    maker, checker = await new_admin_key(database_url), await new_admin_key(database_url)

    async def _cli(*args: str, key: str = maker) -> tuple[int, str, str]:
        return await admin_cli(running.port, key, "platform", "payout-config", *args)

    fee_account = (await client.open("fees", kind=4)).account_id
    code, out, err = await _cli(platform.name, "--fee-fixed", "0.04",
                                "--fee-bps", "15", "--fee-account-id", str(fee_account),
                                "--min", "1.00", "--max", "2000000.00", "--daily-max",
                                "5000000.00", "--review-threshold", "100000.00")
    assert code == 0, err
    assert "fee_fixed_minor: 0.04" in out and "review_threshold_minor: 100000.00" in out
    change = re.search(r"change (\d+): PENDING", out).group(1)
    assert "approve-change" in err
    code, _, err = await admin_cli(running.port, maker, "platform", "approve-change", change)
    assert code != 0 and "MAKER_CHECKER" in err
    code, out, err = await admin_cli(running.port, checker, "platform", "approve-change",
                                     change)
    assert code == 0 and f"change {change}: APPROVED" in out, err
    conn = await asyncpg.connect(database_url)
    try:
        config = await store.load_config(conn, PayoutSettings(), platform.platform_id, "CNY")
    finally:
        await conn.close()
    assert (config.fee_fixed_minor, config.fee_bps, config.fee_account_id,
            config.min_amount_minor, config.max_amount_minor, config.daily_max_minor,
            config.review_threshold_minor, config.bank_transfer_max_minor) == (
        4, 15, fee_account, 100, 200_000_000, 500_000_000, 10_000_000, 50_000_000)
    code, out, _ = await _cli(platform.name, "--show")
    assert code == 0 and "fee_bps: 15" in out
    code, out, err = await _cli(platform.name, "--daily-max", "6000000.00")
    assert code == 0 and re.search(r"change \d+: APPLIED", out), err  # the fee unchanged
    code, _, err = await _cli(platform.name, "--fee-account-id", "999999999")
    assert code != 0 and "fee_account_id" in err
