"""The overview's figures, from the API: the month's days from ExportReport's
channel_analysis (CSV), payouts, open discrepancies and risk events counted one list page
at a time (CONSOLE_COUNT_MAX at most: more shows as "N+"), and an SVG bar chart rendered
here (no script, no CDN)."""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass, field
from html import escape
from zoneinfo import ZoneInfo

from clearing.limits import DEFAULT_TIME_ZONE
from clearing.money import format_minor


def platform_today(now: dt.datetime | None = None) -> dt.date:
    """Today in the platforms' time zone (every platform's is DEFAULT_TIME_ZONE today)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return now.astimezone(ZoneInfo(DEFAULT_TIME_ZONE)).date()


@dataclass
class Volume:
    """Per currency: the month's days (day -> amount, payment count) and totals."""

    days: dict[str, dict[dt.date, tuple[int, int]]] = field(default_factory=dict)

    def add(self, currency: str, day: dt.date, amount: int, count: int) -> None:
        per_day = self.days.setdefault(currency, {})
        a, c = per_day.get(day, (0, 0))
        per_day[day] = (a + amount, c + count)

    def total(self, currency: str, since: dt.date) -> tuple[int, int]:
        amount = count = 0
        for day, (a, c) in self.days.get(currency, {}).items():
            if day >= since:
                amount, count = amount + a, count + c
        return amount, count


def parse_channel_analysis(data: bytes) -> Volume:
    """channel_analysis CSV: one row per day and channel (totals rows have no day)."""
    out = Volume()
    for row in csv.DictReader(io.StringIO(data.decode("utf-8-sig"))):
        if not row.get("day"):
            continue
        out.add(row["currency_code"], dt.date.fromisoformat(row["day"]),
                int(row["amount_minor"] or 0), int(row["payment_count"] or 0))
    return out


def _major(amount: int, currency: str) -> str:
    try:
        return format_minor(amount, currency)
    except (KeyError, ValueError):  # a currency this server does not know: minor units
        return str(amount)


def bar_chart(currency: str, per_day: dict[dt.date, tuple[int, int]], first: dt.date,
              last: dt.date, *, width: int = 640, height: int = 180) -> str:
    """An inline SVG of the daily amounts from `first` to `last` (one bar a day)."""
    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    top = max((per_day.get(d, (0, 0))[0] for d in days), default=0) or 1
    pad, base = 40, height - 24
    slot = (width - pad) / max(len(days), 1)
    bars = []
    for i, d in enumerate(days):
        amount, count = per_day.get(d, (0, 0))
        h = round((base - 10) * max(amount, 0) / top)
        x = pad + i * slot
        label = escape(f"{d.isoformat()}: {_major(amount, currency)} {currency}, "
                       f"{count} payments")
        bars.append(f'<rect x="{x + 1:.1f}" y="{base - h}" width="{max(slot - 2, 1):.1f}" '
                    f'height="{h}" class="bar"><title>{label}</title></rect>')
        if i % 5 == 0 or i == len(days) - 1:
            bars.append(f'<text x="{x + slot / 2:.1f}" y="{height - 8}" '
                        f'text-anchor="middle">{d.day}</text>')
    return (f'<svg role="img" aria-label="daily volume {escape(currency)}" viewBox="0 0 '
            f'{width} {height}" width="{width}" height="{height}" class="chart">'
            f'<text x="0" y="12">{escape(_major(top, currency))}</text>'
            f'<line x1="{pad}" y1="{base}" x2="{width}" y2="{base}" class="axis"/>'
            + "".join(bars) + "</svg>")
