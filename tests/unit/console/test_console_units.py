"""The console's parts without a server: sessions (expiry, bound, CSRF), the overview's
parsing of the channel_analysis CSV and its chart."""

from __future__ import annotations

import datetime as dt

from clearing.console.overview import bar_chart, parse_channel_analysis
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
    made = [store.create(f"k{i}") for i in range(5)]
    assert len(store) == 3
    assert store.get(made[0].session_id) is None and store.get(made[4].session_id)
    assert len({m.session_id for m in made} | {m.csrf for m in made}) == 10
    assert all(len(m.session_id) >= 40 for m in made)
    assert "k4" not in repr(made[4])  # the key is never in a repr (a log line, a traceback)


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


def test_the_chart_has_a_bar_a_day_and_escapes_its_labels():
    volume = parse_channel_analysis(CSV)
    svg = bar_chart("CNY", volume.days["CNY"], dt.date(2026, 12, 1), dt.date(2026, 12, 4))
    assert svg.startswith("<svg") and svg.count("<rect") == 4
    assert "2026-12-01: 2500.00 CNY, 3 payments" in svg
    empty = bar_chart("CNY", {}, dt.date(2026, 12, 1), dt.date(2026, 12, 1))
    assert empty.count("<rect") == 1 and 'height="0"' in empty
    assert "<script" not in bar_chart("<script>", {}, dt.date(2026, 12, 1),
                                      dt.date(2026, 12, 1))
