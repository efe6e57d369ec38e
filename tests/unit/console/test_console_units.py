"""The console's parts without a server: sessions (expiry, bound, CSRF), the overview's
parsing of the channel_analysis CSV and its chart."""

from __future__ import annotations

import datetime as dt

from clearing.console.overview import (ZONE, chart_spec, daily_chart, minute_counts,
                                       parse_split_minutes,
                                       parse_channel_analysis, parse_split_summary,
                                       receivers_chart, top_receivers)
from clearing.console.sessions import SessionStore


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_session_ends_when_idle_or_at_its_maximum():
    clock = Clock()
    store = SessionStore(idle_s=10, max_s=25, clock=clock)
    s = store.create("key")
    assert store.get(s.session_id) is s
    clock.now = 9.5
    assert store.get(s.session_id) is s  # seen: the idle clock restarts
    clock.now = 19
    assert store.get(s.session_id) is s
    clock.now = 26  # active, but past max_s
    assert store.get(s.session_id) is None and len(store) == 0
    t = store.create("key")
    clock.now += 10.5
    assert store.get(t.session_id) is None


def test_sessions_are_bounded_and_ids_and_tokens_are_random():
    store = SessionStore(idle_s=10, max_s=100, clock=Clock(), sessions_max=3)
    # keys with characters no random id or token (URL-safe base64) can hold: a key "k4"
    # was found inside a random session id of the repr (a 1-in-100 flake)
    made = [store.create(f"secret key #{i}!") for i in range(5)]
    assert len(store) == 3
    assert store.get(made[0].session_id) is None and store.get(made[4].session_id)
    assert len({m.session_id for m in made} | {m.csrf for m in made}) == 10
    assert all(len(m.session_id) >= 40 for m in made)
    assert "secret key #4!" not in repr(made[4])  # never in a repr (a log, a traceback)


def test_csrf_check():
    s = SessionStore(idle_s=10, max_s=100).create("key")
    assert s.csrf_ok(s.csrf)
    assert not s.csrf_ok("") and not s.csrf_ok(s.csrf[:-1]) and not s.csrf_ok("x" * 43)


def test_drop_and_unknown_ids():
    store = SessionStore(idle_s=10, max_s=100)
    s = store.create("key")
    store.drop(s.session_id)
    store.drop("nothing")
    store.drop(None)
    assert store.get(s.session_id) is None and store.get(None) is None and store.get("") is None


CSV = (b"\xef\xbb\xbfline,currency_code,day,channel,source,payment_count,refund_count,"
       b"amount_minor,amount,channel_fee_minor,channel_fee,settled_minor,settled\n"
       b"1,CNY,2026-12-01,WECHAT_PAY,splits,2,0,150000,1500.00,900,9.00,149100,1491.00\n"
       b"2,CNY,2026-12-01,ALIPAY,splits,1,0,100000,1000.00,600,6.00,99400,994.00\n"
       b"3,CNY,2026-12-03,ALIPAY,statement,1,1,5000,50.00,30,0.30,4970,49.70\n"
       b"4,USD,2026-12-03,CARD,splits,1,0,700,7.00,0,0.00,700,7.00\n"
       b"total,CNY,,,,4,1,255000,2550.00,1530,15.30,253470,2534.70\n")


def test_the_channel_analysis_csv_by_currency_and_day():
    volume = parse_channel_analysis(CSV)
    assert volume.days["CNY"] == {dt.date(2026, 12, 1): (250_000, 3),
                                  dt.date(2026, 12, 3): (5_000, 1)}
    assert volume.total("CNY", dt.date(2026, 12, 1)) == (255_000, 4)
    assert volume.total("CNY", dt.date(2026, 12, 3)) == (5_000, 1)
    assert volume.total("USD", dt.date(2026, 12, 1)) == (700, 1)
    assert volume.total("EUR", dt.date(2026, 12, 1)) == (0, 0)


def test_the_daily_chart_has_a_bar_a_day_with_exact_tips():
    volume = parse_channel_analysis(CSV)
    spec = daily_chart("CNY", volume.days["CNY"], dt.date(2026, 12, 1), dt.date(2026, 12, 4))
    assert spec["type"] == "bar"
    assert spec["labels"] == ["2026-12-01", "2026-12-02", "2026-12-03", "2026-12-04"]
    [data] = spec["datasets"]
    assert data["data"] == [2500.0, 0.0, 50.0, 0.0]
    assert data["tips"] == ["2500.00 CNY, 3 payments", "0.00 CNY, 0 payments",
                            "50.00 CNY, 1 payments", "0.00 CNY, 0 payments"]


def test_a_chart_in_a_page_cannot_close_its_script_block():
    import jinja2

    spec = chart_spec("bar", "x", ["</script><script>alert(1)</script>"], [])
    env = jinja2.Environment(autoescape=True)
    out = env.from_string('<script type="application/json">{{ s | tojson }}</script>'
                          ).render(s=spec)
    assert out.count("</script>") == 1 and "<script>" not in out.split(">", 1)[1]


SUMMARY = (b"line,currency_code,account_id,external_ref,rule_set_name,rule_set_version,"
           b"rule_name,leg_count,amount_minor,amount\r\n"
           b"detail,CNY,11,SUP,b2b,1,base,2,139160,1391.60\r\n"
           b"detail,CNY,11,SUP,b2b,2,base,1,1000,10.00\r\n"
           b"detail,CNY,12,LOG,b2b,1,base,2,39760,397.60\r\n"
           b"detail,CNY,13,PLAT,b2b,1,base,2,39760,397.60\r\n"
           b"detail,USD,21,US,us,1,base,1,500,5.00\r\n"
           b"total,CNY,,,,,,7,219680,2196.80\r\n")


def test_top_receivers_of_the_month_with_today_beside():
    month = parse_split_summary(SUMMARY)
    assert month[("CNY", 11, "SUP")] == 140_160
    today = {("CNY", 12, "LOG"): 19_880}
    top = top_receivers(today, month, n=2)
    # CNY: SUP 1401.60, then LOG and PLAT tied at 397.60: the lower account id first
    assert [(r.currency, r.account_id, r.today_minor, r.month_minor) for r in top] == [
        ("CNY", 11, 0, 140_160), ("CNY", 12, 19_880, 39_760), ("USD", 21, 0, 500)]
    spec = receivers_chart("CNY", top)
    assert spec["labels"] == ["SUP", "LOG"]
    assert spec["datasets"][1]["tips"] == ["this month 1401.60 CNY", "this month 397.60 CNY"]


def test_minute_counts_are_local_minutes_of_the_day_up_to_now():
    day = dt.date(2026, 12, 8)

    def at(d: int, h: int, m: int, s: int) -> dt.datetime:
        return dt.datetime(2026, 12, d, h, m, s, tzinfo=ZONE).astimezone(dt.timezone.utc)

    report = ("line,currency_code,minute,split_count,amount_minor,amount\r\n"
              "detail,CNY,2026-12-07T23:59,4,400,4.00\r\n"   # the day before: not counted
              "detail,CNY,2026-12-08T10:03,2,200,2.00\r\n"
              "detail,CNY,2026-12-08T10:05,1,100,1.00\r\n"
              "detail,USD,2026-12-08T10:03,3,300,3.00\r\n"   # every currency counts
              "total,CNY,,7,700,7.00\r\n").encode()
    per_minute = parse_split_minutes(report, day)
    assert per_minute == {603: 5, 605: 1}
    assert minute_counts(per_minute, day, at(8, 10, 5, 31)) == (
        ["10:03", "10:04", "10:05"], [5, 0, 1])
    # a past day runs to its last minute
    labels, counts = minute_counts(per_minute, day, at(9, 1, 0, 0))
    assert labels[0] == "10:03" and labels[-1] == "23:59" and sum(counts) == 6
    assert minute_counts({}, day, at(8, 0, 2, 0)) == (["00:00", "00:01", "00:02"], [0, 0, 0])
