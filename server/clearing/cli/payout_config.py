"""Admin commands of payouts, through PlatformService with an admin key (as cli/admin.py's):
`platform payout-config|approve-change|reject-change` and `calendar set|unset|list`."""

from __future__ import annotations

import sys

from clearing.cli.admin import _admin_options, _admin_run, _platform
from clearing.cli.common import minor
from clearing.config import Settings

_CONFIG_AMOUNTS = ("fee_fixed_minor", "min_amount_minor", "max_amount_minor", "daily_max_minor",
                   "review_threshold_minor", "bank_transfer_max_minor")


def _print_config(config, currency: str) -> None:
    from clearing.money import format_minor

    for name in ("platform_id", "currency_code", "fee_fixed_minor", "fee_bps", "fee_account_id",
                 "min_amount_minor", "max_amount_minor", "daily_max_minor",
                 "review_threshold_minor", "bank_transfer_max_minor", "time_zone"):
        value = getattr(config, name)
        print(f"{name}: {format_minor(value, currency) if name in _CONFIG_AMOUNTS else value}")


def _print_change(change) -> None:
    from clearing_client.v1 import platform_pb2 as pb

    state = pb.PayoutConfigChangeState.Name(change.state).removeprefix(
        "PAYOUT_CONFIG_CHANGE_STATE_")
    print(f"change {change.change_id}: {state}")
    if state == "PENDING":
        print(f"  the fee changes: another admin key approves it: clearing platform "
              f"approve-change {change.change_id} --admin-key-file var/admin-approver.key",
              file=sys.stderr)


def cmd_payout_config(args, settings: Settings) -> int:
    """`clearing platform payout-config NAME`: set (or --show) a platform's payout rules for
    a currency through PlatformService; amounts in major units. Options not given keep
    their current value (or the server's default, CLEARING_PAYOUT_*). A change of the fee
    waits for another admin key (`platform approve-change`); other changes apply at once."""
    import uuid

    from clearing_client.v1 import platform_pb2 as pb

    cur = args.currency
    changes = {name: minor(getattr(args, name), cur) for name in _CONFIG_AMOUNTS
               if getattr(args, name)}
    for name in ("fee_bps", "fee_account_id"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.time_zone:
        changes["time_zone"] = args.time_zone

    async def work(client) -> int:
        platform = await _platform(client, args.name)
        got = await client.call(client.platform.GetPayoutConfig, pb.GetPayoutConfigRequest(
            platform_id=platform.platform_id, currency_code=cur))
        config = got.config
        if args.show:
            _print_config(config, cur)
            if got.HasField("pending_change"):
                _print_change(got.pending_change)
            return 0
        for name, value in changes.items():
            setattr(config, name, value)
        change = (await client.call(client.platform.SetPayoutConfig, pb.SetPayoutConfigRequest(
            request_id=args.request_id or str(uuid.uuid4()), config=config))).change
        _print_config(change.config, cur)
        _print_change(change)
        return 0

    return _admin_run(args, settings, work)


def cmd_config_decision(args, settings: Settings) -> int:
    """`clearing platform approve-change|reject-change CHANGE_ID`: decide a pending payout
    configuration change (approval: not by the admin key that made it)."""
    from clearing_client.v1 import platform_pb2 as pb

    async def work(client) -> int:
        if args.action == "approve-change":
            done = await client.call(client.platform.ApprovePayoutConfigChange,
                                     pb.ApprovePayoutConfigChangeRequest(
                                         change_id=args.change_id, note=args.note or ""))
        else:
            done = await client.call(client.platform.RejectPayoutConfigChange,
                                     pb.RejectPayoutConfigChangeRequest(
                                         change_id=args.change_id, note=args.note or ""))
        _print_change(done.change)
        return 0

    return _admin_run(args, settings, work)


def cmd_calendar(args, settings: Settings) -> int:
    """`clearing calendar set|unset|list`: the business-day calendar of payout schedules
    (Monday-Friday, except holidays, plus make-up working days), through PlatformService.
    Servers pick a change up within CLEARING_CALENDAR_REFRESH_S."""
    import datetime as dt

    from clearing_client.v1 import platform_pb2 as pb

    def day(text: str) -> dt.date:
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            raise SystemExit(f"{text!r} is not a date (YYYY-MM-DD)") from None

    async def work(client) -> int:
        if args.action == "set":
            kind = pb.CALENDAR_DAY_KIND_WORKDAY if args.workday else pb.CALENDAR_DAY_KIND_HOLIDAY
            await client.call(client.platform.SetBusinessCalendar, pb.SetBusinessCalendarRequest(
                days=[pb.CalendarDay(day=day(args.day).isoformat(), kind=kind,
                                     note=args.note or "")]))
            print(f"{args.day}: {'working day' if args.workday else 'holiday'}")
        elif args.action == "unset":
            start = day(args.day).isoformat()
            had = (await client.call(client.platform.GetBusinessCalendar,
                                     pb.GetBusinessCalendarRequest(start_day=start,
                                                                   end_day=start))).days
            await client.call(client.platform.SetBusinessCalendar, pb.SetBusinessCalendarRequest(
                days=[pb.CalendarDay(day=start, kind=pb.CALENDAR_DAY_KIND_UNSET)]))
            print(f"{args.day}: {'back to the default' if had else 'no exception'}")
        else:
            start = day(args.start) if args.start else dt.date.today() - dt.timedelta(30)
            end = day(args.end) if args.end else start + dt.timedelta(days=400)
            days = (await client.call(client.platform.GetBusinessCalendar,
                                      pb.GetBusinessCalendarRequest(
                                          start_day=start.isoformat(),
                                          end_day=end.isoformat()))).days
            for d in days:
                when = dt.date.fromisoformat(d.day)
                kind = "working day" if d.kind == pb.CALENDAR_DAY_KIND_WORKDAY else "holiday"
                print(f"{when} {when.strftime('%a')} {kind}" + (f"  {d.note}" if d.note else ""))
        return 0

    return _admin_run(args, settings, work)


def _payout_config_parser(plat) -> None:
    p = plat.add_parser("payout-config", help="a platform's payout rules for a currency "
                                              "(amounts in major units)")
    p.add_argument("name", help="the platform's name")
    p.add_argument("--currency", default="CNY")
    p.add_argument("--show", action="store_true", help="print the rules, change nothing")
    p.add_argument("--fee-fixed", dest="fee_fixed_minor")
    p.add_argument("--fee-bps", type=int, help="basis points of the amount (100 = 1%%)")
    p.add_argument("--fee-account-id", type=int, help="account credited with fees (0: none)")
    p.add_argument("--min", dest="min_amount_minor")
    p.add_argument("--max", dest="max_amount_minor")
    p.add_argument("--daily-max", dest="daily_max_minor")
    p.add_argument("--review-threshold", dest="review_threshold_minor",
                   help="payouts above it wait for an approver")
    p.add_argument("--bank-max", dest="bank_transfer_max_minor",
                   help="the bank's per-transfer limit (500000.00 in CNY)")
    p.add_argument("--time-zone", help="IANA zone of the daily maximum's day")
    p.add_argument("--request-id", help="idempotency key (default: a new UUID)")
    p.set_defaults(func=cmd_payout_config)


def add_calendar_parser(sub) -> None:
    """calendar set|unset|list."""
    cal = sub.add_parser("calendar", help="business days of payout schedules").add_subparsers(
        dest="action", required=True)
    p = cal.add_parser("set", help="mark a day a holiday or a make-up working day")
    p.add_argument("day", help="YYYY-MM-DD")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--holiday", action="store_true", help="not a business day")
    which.add_argument("--workday", action="store_true", help="a business day (even a weekend)")
    p.add_argument("--note", help="e.g. the holiday's name")
    p = cal.add_parser("unset", help="back to the default (Monday to Friday)")
    p.add_argument("day", help="YYYY-MM-DD")
    p = cal.add_parser("list", help="the exceptions between two days")
    p.add_argument("--from", dest="start", help="YYYY-MM-DD (default: 30 days ago)")
    p.add_argument("--to", dest="end", help="YYYY-MM-DD (default: --from + 400 days)")
    for sp in cal.choices.values():
        sp.set_defaults(func=cmd_calendar)
        _admin_options(sp)
