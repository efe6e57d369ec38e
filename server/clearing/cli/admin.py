"""Admin commands that work on the database directly (CLEARING_DATABASE_URL), no server
needed: migrate, platform create, keys create|list|revoke, platform payout-config,
calendar set|unset|list, verify --all."""

from __future__ import annotations

import asyncio

from clearing.cli.common import minor
from clearing.config import Settings


def _refused(exc) -> SystemExit:
    """An InvalidArgument as the command's last words: `field: description; ...`."""
    return SystemExit("; ".join(f"{v.field}: {v.description}" for v in exc.violations))


async def _admin_connect(settings: Settings):
    import asyncpg

    if not settings.database_url:
        raise SystemExit("CLEARING_DATABASE_URL is not set")
    return await asyncpg.connect(settings.database_url)


def cmd_migrate(args, settings: Settings) -> int:
    from clearing import db

    from clearing.api import split_upgrade

    async def go() -> list[str]:
        conn = await _admin_connect(settings)
        try:
            applied = await db.migrate(conn)
            await split_upgrade.upgrade(conn)
            return applied
        finally:
            await conn.close()

    applied = asyncio.run(go())
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    return 0


def cmd_platform_create(args, settings: Settings) -> int:
    from clearing import db
    from clearing.tenancy import create_platform

    async def go() -> tuple[int, str]:
        conn = await _admin_connect(settings)
        try:
            await db.migrate(conn)
            return await create_platform(conn, args.name, frozenset(args.roles.split(",")))
        finally:
            await conn.close()

    from clearing.errors import InvalidArgument

    try:
        platform_id, key = asyncio.run(go())
    except InvalidArgument as exc:
        raise _refused(exc) from None
    except Exception as exc:  # noqa: BLE001 - a CLI reports, it does not trace back
        import asyncpg
        if isinstance(exc, asyncpg.UniqueViolationError):
            raise SystemExit(f"platform {args.name!r} already exists") from None
        raise
    print(f"platform {args.name} (id {platform_id}) created; its API key (shown once):")
    print(key)
    return 0


def cmd_keys_create(args, settings: Settings) -> int:
    from clearing import tenancy

    async def go() -> str:
        conn = await _admin_connect(settings)
        try:
            pid = await tenancy.find_platform(conn, args.platform)
            if pid is None:
                raise SystemExit(f"no platform named {args.platform!r}")
            return await tenancy.create_key(conn, pid, frozenset(args.roles.split(",")))
        finally:
            await conn.close()

    from clearing.errors import InvalidArgument

    try:
        print(asyncio.run(go()))
    except InvalidArgument as exc:
        raise _refused(exc) from None
    return 0


def _key_line(k) -> str:
    revoked = k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "-"
    return (f"{k.key_id:>6}  {k.key_prefix:<8}  {','.join(k.roles):<24}  "
            f"{k.created_at.isoformat(timespec='seconds')}  {revoked}")


_KEY_HEADER = f"{'id':>6}  {'prefix':<8}  {'roles':<24}  {'created':<25}  revoked"


def cmd_keys_list(args, settings: Settings) -> int:
    """`clearing keys list --platform P`: a platform's keys (never the keys themselves;
    last use is not tracked)."""
    from clearing import tenancy

    async def go():
        conn = await _admin_connect(settings)
        try:
            if await tenancy.find_platform(conn, args.platform) is None:
                raise SystemExit(f"no platform named {args.platform!r}")
            return await tenancy.list_keys(conn, args.platform)
        finally:
            await conn.close()

    print(_KEY_HEADER)
    for k in asyncio.run(go()):
        print(_key_line(k))
    return 0


def cmd_keys_revoke(args, settings: Settings) -> int:
    """`clearing keys revoke KEY_PREFIX_OR_ID`: revoke one key, named by its id, its prefix
    (as `keys list` and the logs show it; it must name one key) or the whole key. Every
    server refuses it (UNAUTHENTICATED) within a second."""
    from clearing.tenancy import find_keys, revoke_key

    which = args.key.strip()
    if not which:
        raise SystemExit("name a key: its id, its prefix or the key")

    async def go():
        conn = await _admin_connect(settings)
        try:
            found = await find_keys(conn, which)
            if not found:
                raise SystemExit(f"no key matches {which!r}")
            active = [k for k in found if k.revoked_at is None]
            if len(found) > 1 and len(active) != 1:
                lines = "\n".join(_key_line(k) for k in found)
                raise SystemExit(f"{which!r} names {len(found)} keys; give its id:\n"
                                 f"{_KEY_HEADER}\n{lines}")
            key = active[0] if active else found[0]
            return key, await revoke_key(conn, key.key_id)
        finally:
            await conn.close()

    key, revoked = asyncio.run(go())
    if revoked:
        print(f"key {key.key_id} ({key.key_prefix}, platform {key.platform}) revoked")
    else:
        print(f"key {key.key_id} ({key.key_prefix}, platform {key.platform}) was revoked already")
    return 0


def cmd_verify_all(args, settings: Settings) -> int:
    """`clearing verify --all`: every platform's accounts and rows and the whole hash chain,
    read from the database directly (VerifyLedger shows a platform only its own)."""
    import json
    from dataclasses import asdict

    from clearing import audit
    from clearing.ledger import verify

    async def go() -> tuple[verify.Report, audit.ChainReport]:
        conn = await _admin_connect(settings)
        try:
            return await verify.verify_on(conn, None), await audit.verify_on(conn, None)
        finally:
            await conn.close()

    report, trail = asyncio.run(go())
    doc = {"ok": report.ok and trail.ok, **asdict(report), "audit": asdict(trail)}
    for t in doc["totals"]:
        t["balanced"] = t["debits_posted"] == t["credits_posted"] and (
            t["debits_pending"] == t["credits_pending"])
    print(json.dumps(doc, indent=2))
    return 0 if report.ok and trail.ok else 1


def cmd_payout_config(args, settings: Settings) -> int:
    """`clearing platform payout-config NAME`: set (or --show) a platform's payout rules for
    a currency; amounts in major units. Options not given keep their current value (or the
    server's default, CLEARING_PAYOUT_*)."""
    from dataclasses import asdict, replace

    from clearing.errors import InvalidArgument
    from clearing.money import format_minor
    from clearing import tenancy
    from clearing.payout import store

    cur = args.currency
    changes = {name: minor(getattr(args, name), cur) for name in (
        "fee_fixed_minor", "min_amount_minor", "max_amount_minor", "daily_max_minor",
        "review_threshold_minor", "bank_transfer_max_minor") if getattr(args, name)}
    for name in ("fee_bps", "fee_account_id"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.time_zone:
        changes["time_zone"] = args.time_zone

    async def go():
        conn = await _admin_connect(settings)
        try:
            pid = await tenancy.find_platform(conn, args.name)
            if pid is None:
                raise SystemExit(f"no platform named {args.name!r}")
            config = await store.load_config(conn, settings.payout, pid, cur)
            if not args.show:
                config = replace(config, **changes)
                await store.save_config(conn, config)
            return config
        finally:
            await conn.close()

    try:
        config = asyncio.run(go())
    except InvalidArgument as exc:
        raise _refused(exc) from None
    except Exception as exc:  # noqa: BLE001 - a database CHECK: report it, no traceback
        import asyncpg
        if isinstance(exc, asyncpg.CheckViolationError):
            raise SystemExit(f"refused by the database: {exc}") from None
        raise
    for key, value in asdict(config).items():
        shown = format_minor(value, cur) if key.endswith("_minor") else value
        print(f"{key}: {shown}")
    return 0


def cmd_calendar(args, settings: Settings) -> int:
    """`clearing calendar set|unset|list`: the business-day calendar of payout schedules
    (Monday-Friday, except holidays, plus make-up working days). Servers pick a change up
    within CLEARING_CALENDAR_REFRESH_S."""
    import datetime as dt

    from clearing.payout import schedule

    def day(text: str) -> dt.date:
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            raise SystemExit(f"{text!r} is not a date (YYYY-MM-DD)") from None

    async def go() -> int:
        conn = await _admin_connect(settings)
        try:
            if args.action == "set":
                await schedule.set_calendar_day(conn, day(args.day), args.workday,
                                                args.note or "")
                kind = "working day" if args.workday else "holiday"
                print(f"{args.day}: {kind}")
            elif args.action == "unset":
                found = await schedule.unset_calendar_day(conn, day(args.day))
                print(f"{args.day}: {'back to the default' if found else 'no exception'}")
            else:
                start = day(args.start) if args.start else dt.date.today() - dt.timedelta(30)
                end = day(args.end) if args.end else start + dt.timedelta(days=400)
                for d, business, note in await schedule.calendar_days(conn, start, end):
                    kind = "working day" if business else "holiday"
                    print(f"{d} {d.strftime('%a')} {kind}" + (f"  {note}" if note else ""))
            return 0
        finally:
            await conn.close()

    return asyncio.run(go())


# ---- argument parsing --------------------------------------------------------------------

def add_parsers(sub) -> None:
    """migrate, platform create|payout-config, keys create|list|revoke."""
    sub.add_parser("migrate", help="apply schema migrations").set_defaults(func=cmd_migrate)

    plat = sub.add_parser("platform", help="platforms (tenants)").add_subparsers(
        dest="action", required=True)
    p = plat.add_parser("create", help="create a platform and print its first API key")
    p.add_argument("name")
    p.add_argument("--roles", default="gateway,operator", help="comma-separated roles")
    p.set_defaults(func=cmd_platform_create)
    _payout_config_parser(plat)
    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    p = keys.add_parser("create", help="create another key for a platform")
    p.add_argument("platform")
    p.add_argument("--roles", required=True, help="comma-separated: gateway,operator,approver")
    p.set_defaults(func=cmd_keys_create)
    p = keys.add_parser("list", help="a platform's keys (prefix, roles, created, revoked)")
    p.add_argument("--platform", required=True)
    p.set_defaults(func=cmd_keys_list)
    p = keys.add_parser("revoke", help="revoke a key: every server refuses it within 1 s")
    p.add_argument("key", metavar="KEY_PREFIX_OR_ID",
                   help="the key's id, its prefix (as `keys list` shows it) or the key")
    p.set_defaults(func=cmd_keys_revoke)


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
