"""The bank simulator's daily payout result file (`clearing.dev.bank_sim`'s books, schema
`banksim`): one CSV line per order the bank finished on a day, in the layout
`clearing.recon.payout_file` reads (docs/recon.md, "The bank's payout result file").

An order is in the file of the day (in `time_zone`) of its `completes_at`, once it is final
as of the clock's now (SUCCEEDED or FAILED; an order still PROCESSING is in no file yet); its
end-to-end id is the idempotency key it was sent with (`po{payout}-t{sequence}-a{attempt}`,
whence the payout id). One file per currency, as a bank sends one per account. The
simulator is one bank for every platform on the database: `payout_ids` keeps the lines of
those payouts only (a real bank's file is of one customer's account)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Collection
from zoneinfo import ZoneInfo

import asyncpg

from clearing.clock import Clock
from clearing.limits import DEFAULT_TIME_ZONE
from clearing.payout.bank import BankState
from clearing.recon.payout_file import COLUMNS, FAILED, SUCCEEDED

BANK = "BANKSIM"  # the simulator's name in its files (the import's channel)
_KEY = re.compile(r"po([0-9]+)-t[0-9]+-a[0-9]+")
_STATUS = {BankState.SUCCEEDED: SUCCEEDED, BankState.FAILED: FAILED}


async def payout_result_file(db: asyncpg.Pool | asyncpg.Connection, clock: Clock,
                             day: dt.date, *,
                             currency_code: str = "CNY", time_zone: str = DEFAULT_TIME_ZONE,
                             payout_ids: Collection[int] | None = None,
                             bank: str = BANK) -> bytes:
    """The file of `day` as CSV bytes (UTF-8, a header row, lines in order of completion)."""
    zone = ZoneInfo(time_zone)
    start = dt.datetime.combine(day, dt.time(), zone)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), zone)
    now = clock.now()
    rows = await db.fetch(
        "SELECT idempotency_key, bank_reference, amount_minor, currency_code,"
        f" CASE WHEN state = {BankState.PROCESSING:d} THEN final_state ELSE state END"
        " AS final FROM banksim.transfers"
        " WHERE completes_at >= $1 AND completes_at < $2 AND currency_code = $3"
        f" AND (state <> {BankState.PROCESSING:d} OR completes_at <= $4)"
        " ORDER BY completes_at, idempotency_key", start, end, currency_code, now)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    wanted = None if payout_ids is None else set(payout_ids)
    for r in rows:
        m = _KEY.fullmatch(r["idempotency_key"])
        if m is None or (wanted is not None and int(m.group(1)) not in wanted):
            continue
        writer.writerow((bank, r["bank_reference"], r["idempotency_key"], m.group(1),
                         r["amount_minor"], r["currency_code"],
                         _STATUS[BankState(r["final"])], day.isoformat()))
    return out.getvalue().encode()
