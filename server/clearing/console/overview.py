"""The overview's figures, from the API, and its charts.

- Volume: the month's days from ExportReport's channel_analysis (CSV).
- Amounts per receiver: ExportReport's split_summary (CSV) of today and of the month, the
  legs' amounts summed per receiving account; the top CONSOLE_TOP_RECEIVERS of the month.
- Splits per minute: ExportReport's split_minutes (CSV) of today: splits per minute of
  their paid time, counted by the server (every split of the day, however many).
- Payouts, open discrepancies and risk events: counted one list page at a time
  (CONSOLE_COUNT_MAX at most: more shows as "N+"), in app.py.

Days and minutes are the platform's time zone's. The exports run one after the other (a
server streams a few at once) and their figures are kept CONSOLE_VOLUME_CACHE_S per session.

Charts are drawn in the browser by Chart.js (static/chart.umd.min.js, vendored from its npm
package with its license; no CDN, no build): a page holds each chart's data as a JSON block
(`chart_spec`) that static/charts.js draws. Bar heights are major units as numbers (drawing
only); every figure a person reads (tooltips, the tables beside) is formatted exactly from
the integers."""

from __future__ import annotations

import csv
import datetime as dt
import io
import time
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import grpc

from clearing.limits import CONSOLE_TOP_RECEIVERS, CONSOLE_VOLUME_CACHE_S, DEFAULT_TIME_ZONE
from clearing.money import exponent, format_minor
from clearing_client import ClearingClient, ClearingRpcError
from clearing_client.v1 import report_pb2

ZONE = ZoneInfo(DEFAULT_TIME_ZONE)


def platform_today(now: dt.datetime | None = None) -> dt.date:
    """Today in the platforms' time zone (every platform's is DEFAULT_TIME_ZONE today)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return now.astimezone(ZONE).date()


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


@dataclass(frozen=True)
class Receiver:
    currency: str
    account_id: int
    external_ref: str
    today_minor: int
    month_minor: int


def parse_split_summary(data: bytes) -> dict[tuple[str, int, str], int]:
    """split_summary CSV: (currency, account id, external ref) -> the sum of its rows."""
    out: dict[tuple[str, int, str], int] = {}
    for row in csv.DictReader(io.StringIO(data.decode("utf-8-sig"))):
        if row.get("line") == "total" or not row.get("account_id"):
            continue
        key = (row["currency_code"], int(row["account_id"]), row["external_ref"])
        out[key] = out.get(key, 0) + int(row["amount_minor"] or 0)
    return out


def top_receivers(today: dict, month: dict, n: int = CONSOLE_TOP_RECEIVERS) -> list[Receiver]:
    """The n receiving accounts of the month with the most, per currency (ties: account id)."""
    out = []
    for currency in sorted({k[0] for k in month}):
        keys = sorted((k for k in month if k[0] == currency),
                      key=lambda k: (-month[k], k[1]))[:n]
        out += [Receiver(currency, k[1], k[2], today.get(k, 0), month[k]) for k in keys]
    return out


def parse_split_minutes(data: bytes, day: dt.date) -> dict[int, int]:
    """split_minutes CSV: minute of `day` (0 to 1439, local) -> its splits, every currency."""
    out: dict[int, int] = {}
    for row in csv.DictReader(io.StringIO(data.decode())):
        if row["line"] != "detail":
            continue
        stamp = dt.datetime.strptime(row["minute"], "%Y-%m-%dT%H:%M")
        if stamp.date() == day:
            minute = stamp.hour * 60 + stamp.minute
            out[minute] = out.get(minute, 0) + int(row["split_count"])
    return out


def minute_counts(per_minute: dict[int, int], day: dt.date,
                  now: dt.datetime) -> tuple[list[str], list[int]]:
    """Splits per minute of `day` (local), from its first minute with a split (else its
    first minute) to `now`'s minute (else the day's last): labels HH:MM and counts."""
    now_local = now.astimezone(ZONE)
    last = now_local.hour * 60 + now_local.minute if now_local.date() == day else 1439
    first = min(min(per_minute) if per_minute else 0, last)
    counts = [per_minute.get(m, 0) for m in range(first, last + 1)]
    return [f"{m // 60:02d}:{m % 60:02d}" for m in range(first, last + 1)], counts


def _major(amount: int, currency: str) -> str:
    try:
        return format_minor(amount, currency)
    except (KeyError, ValueError):  # a currency this server does not know: minor units
        return str(amount)


def _number(amount: int, currency: str) -> float:
    """Major units as a number, for a bar's height only (never shown as a figure)."""
    try:
        return amount / 10 ** exponent(currency)
    except (KeyError, ValueError):
        return float(amount)


def chart_spec(kind: str, title: str, labels: list[str], datasets: list[dict]) -> dict:
    """One chart's data for static/charts.js: a Chart.js type, labels, and datasets each
    with `label`, `data` (numbers) and `tips` (the exact text of each point)."""
    return {"type": kind, "title": title, "labels": labels, "datasets": datasets}


def daily_chart(currency: str, per_day: dict[dt.date, tuple[int, int]], first: dt.date,
                last: dt.date) -> dict:
    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    values = [per_day.get(d, (0, 0)) for d in days]
    return chart_spec("bar", f"Daily volume, {currency}", [d.isoformat() for d in days], [{
        "label": currency, "data": [_number(a, currency) for a, _ in values],
        "tips": [f"{_major(a, currency)} {currency}, {n} payments" for a, n in values]}])


def receivers_chart(currency: str, receivers: list[Receiver]) -> dict:
    mine = [r for r in receivers if r.currency == currency]
    return chart_spec("bar", f"Amounts per receiver, {currency}",
                      [r.external_ref or str(r.account_id) for r in mine], [
        {"label": "today", "data": [_number(r.today_minor, currency) for r in mine],
         "tips": [f"today {_major(r.today_minor, currency)} {currency}" for r in mine]},
        {"label": "this month", "data": [_number(r.month_minor, currency) for r in mine],
         "tips": [f"this month {_major(r.month_minor, currency)} {currency}" for r in mine]}])


def minutes_chart(labels: list[str], counts: list[int]) -> dict:
    return chart_spec("bar", "Splits per minute, today", labels, [{
        "label": "splits", "data": counts,
        "tips": [f"{label}: {n} splits" for label, n in zip(labels, counts)]}])


async def export_csv(c: ClearingClient, report: str, first: dt.date, last: dt.date,
                     timeout_s: float) -> bytes:
    """One report of the period as CSV bytes (raises ClearingRpcError)."""
    try:
        chunks = []
        stream = c.report.ExportReport(report_pb2.ExportReportRequest(
            report_name=report, from_date=first.isoformat(), to_date=last.isoformat(),
            format=report_pb2.REPORT_FORMAT_CSV), metadata=c.metadata, timeout=timeout_s)
        async for message in stream:
            chunks.append(message.chunk)
        return b"".join(chunks)
    except grpc.aio.AioRpcError as err:
        raise ClearingRpcError.from_call(err) from None


def _failed(err: ClearingRpcError) -> str:
    return f"{err.code.name} {err.reason}: {err.message}"


async def figures(c: ClearingClient, cache: dict, timeout_s: float,
                  now: dt.datetime | None = None) -> dict:
    """The overview's volume, receivers and minutes (the template's context), read once per
    CONSOLE_VOLUME_CACHE_S per session (`cache`: the session's): a reload starts no export."""
    now = now or dt.datetime.now(dt.timezone.utc)
    today = platform_today(now)
    first = today.replace(day=1)
    cached = cache.get("overview")
    if cached and cached[0] > time.monotonic() and cached[1] == today:
        return cached[2]
    out: dict = {"today": today, "first": first, "currencies": [], "volume_error": "",
                 "receivers": [], "receiver_charts": [], "receivers_error": "",
                 "minutes_chart": None, "minutes_total": 0, "minutes_error": ""}
    try:
        volume = parse_channel_analysis(await export_csv(c, "channel_analysis", first, today,
                                                         timeout_s))
        for currency in sorted(volume.days):
            out["currencies"].append({
                "currency": currency, "today": volume.total(currency, today),
                "month": volume.total(currency, first),
                "chart": daily_chart(currency, volume.days[currency], first, today)})
    except ClearingRpcError as err:
        out["volume_error"] = _failed(err)
    try:
        month = parse_split_summary(await export_csv(c, "split_summary", first, today,
                                                     timeout_s))
        day = parse_split_summary(await export_csv(c, "split_summary", today, today,
                                                   timeout_s))
        out["receivers"] = top_receivers(day, month)
        out["receiver_charts"] = [receivers_chart(cur, out["receivers"])
                                  for cur in sorted({r.currency for r in out["receivers"]})]
    except ClearingRpcError as err:
        out["receivers_error"] = _failed(err)
    try:
        per_minute = parse_split_minutes(await export_csv(c, "split_minutes", today, today,
                                                          timeout_s), today)
        labels, counts = minute_counts(per_minute, today, now)
        out.update(minutes_chart=minutes_chart(labels, counts) if per_minute else None,
                   minutes_total=sum(per_minute.values()))
    except ClearingRpcError as err:
        out["minutes_error"] = _failed(err)
    cache["overview"] = (time.monotonic() + CONSOLE_VOLUME_CACHE_S, today, out)
    return out
