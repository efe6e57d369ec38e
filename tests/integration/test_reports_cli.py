"""`clearing reports`: the file written (CSV and XLSX, read back), the progress line, a
month as a period, and an invalid request's field on stderr."""

from __future__ import annotations

import json

from tests.report_support import (EXPECTED_LEGS, b2b_world, read_csv, read_xlsx, summary_rows,
                                  three_splits, today)
from tests.support import cli


async def test_reports_command(channel, client, platform, database_url, running, tmp_path):
    world = await b2b_world(channel, client, database_url, platform)
    await three_splits(world)
    day = today().isoformat()
    out = tmp_path / "summary.csv"
    code, stdout, stderr = await cli(running, platform.key, "reports", "split_summary",
                                     "--from", day, "--to", day, "-o", str(out))
    assert code == 0, stderr
    assert "rows" in stderr and stderr.rstrip().endswith("done")
    assert json.loads(stdout)["row_count"] == str(len(EXPECTED_LEGS))
    assert summary_rows(read_csv(out.read_bytes())) == EXPECTED_LEGS
    xlsx = tmp_path / "summary.xlsx"
    code, _, stderr = await cli(running, platform.key, "reports", "split_summary", "--month",
                                day[:7], "--format", "xlsx", "-o", str(xlsx), "--quiet")
    assert code == 0, stderr
    assert summary_rows(read_xlsx(xlsx.read_bytes())) == EXPECTED_LEGS
    bad = tmp_path / "bad.csv"
    code, _, stderr = await cli(running, platform.key, "reports", "payouts", "--from", day,
                                "--to", "2000-01-01", "-o", str(bad))
    assert code == 1 and "INVALID_ARGUMENT" in stderr and "to_date:" in stderr
    assert not bad.exists() and not (tmp_path / "bad.csv.part").exists()
