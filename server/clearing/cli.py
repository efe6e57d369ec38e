"""The `clearing` command: runs the server, administers it, and is a gRPC client too.

    clearing serve [--dev] [--workers N]      run the server
    clearing migrate                          apply schema migrations
    clearing platform create NAME             create a platform; prints its API key once
    clearing keys create PLATFORM --roles R   another key for a platform
    clearing keys list --platform P           its keys: id, prefix, roles, created, revoked
    clearing keys revoke KEY_PREFIX_OR_ID     refused by every server within a second
    clearing accounts create|list|get|freeze|unfreeze|close ...
    clearing balance ACCOUNT_ID               balances of an account
    clearing entries ACCOUNT_ID               its statement
    clearing transfer --from A --to B --amount 12.34 [--currency CNY] [--pending]
    clearing post PENDING_ID --amount X | clearing void PENDING_ID
    clearing verify                           the key's platform: trial balance and chain
    clearing verify --all                     the whole system, from the database (operator
                                              of the core); exits 1 if anything fails
    clearing rules publish FILE.yaml          file a rule-set version (operator key)
    clearing rules activate NAME VERSION      activate it (another key, approver role:
                                              --key-file var/demo-approver.key)
    clearing rules list|get ...               rule-set versions
    clearing platform payout-config NAME ...  a platform's payout fee, limits and review
                                              threshold per currency (--show to read)
    clearing payouts bind|request|get|list|approve|reject ...
                                              PayoutService (approve/reject: approver key)
    clearing calendar set DAY --holiday|--workday [--note N]
                                              a business-day exception (payout schedules)
    clearing calendar unset DAY | list [--from DAY] [--to DAY]

Client commands talk to CLEARING_GRPC_ADDR with the key in --key, CLEARING_API_KEY or
--key-file (default: var/demo.key, written by `make run`). Amounts are in major units
("12.34"), converted exactly to minor units.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import signal
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

from clearing.config import BANK_CONNECTOR_SIMULATOR, Settings, client_api_key

DEV_DATABASE = "clearing"
DEMO_PLATFORM = "demo"


# ---- server side ------------------------------------------------------------------------

async def _admin_connect(settings: Settings):
    import asyncpg

    if not settings.database_url:
        raise SystemExit("CLEARING_DATABASE_URL is not set")
    return await asyncpg.connect(settings.database_url)


def cmd_migrate(args, settings: Settings) -> int:
    from clearing import db

    async def go() -> list[str]:
        conn = await _admin_connect(settings)
        try:
            return await db.migrate(conn)
        finally:
            await conn.close()

    applied = asyncio.run(go())
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    return 0


def cmd_platform_create(args, settings: Settings) -> int:
    from clearing import db
    from clearing.api.auth import create_platform

    async def go() -> tuple[int, str]:
        conn = await _admin_connect(settings)
        try:
            await db.migrate(conn)
            return await create_platform(conn, args.name, frozenset(args.roles.split(",")))
        finally:
            await conn.close()

    try:
        platform_id, key = asyncio.run(go())
    except Exception as exc:  # noqa: BLE001 - a CLI reports, it does not trace back
        import asyncpg
        if isinstance(exc, asyncpg.UniqueViolationError):
            raise SystemExit(f"platform {args.name!r} already exists") from None
        raise
    print(f"platform {args.name} (id {platform_id}) created; its API key (shown once):")
    print(key)
    return 0


def cmd_keys_create(args, settings: Settings) -> int:
    from clearing.api.auth import create_key

    async def go() -> str:
        conn = await _admin_connect(settings)
        try:
            pid = await conn.fetchval("SELECT platform_id FROM platforms WHERE name = $1",
                                      args.platform)
            if pid is None:
                raise SystemExit(f"no platform named {args.platform!r}")
            return await create_key(conn, pid, frozenset(args.roles.split(",")))
        finally:
            await conn.close()

    print(asyncio.run(go()))
    return 0


def _key_line(k) -> str:
    revoked = k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "-"
    return (f"{k.key_id:>6}  {k.key_prefix:<8}  {','.join(k.roles):<24}  "
            f"{k.created_at.isoformat(timespec='seconds')}  {revoked}")


_KEY_HEADER = f"{'id':>6}  {'prefix':<8}  {'roles':<24}  {'created':<25}  revoked"


def cmd_keys_list(args, settings: Settings) -> int:
    """`clearing keys list --platform P`: a platform's keys (never the keys themselves;
    last use is not tracked)."""
    from clearing.api.auth import list_keys

    async def go():
        conn = await _admin_connect(settings)
        try:
            if not await conn.fetchval("SELECT 1 FROM platforms WHERE name = $1",
                                       args.platform):
                raise SystemExit(f"no platform named {args.platform!r}")
            return await list_keys(conn, args.platform)
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
    from clearing.api.auth import find_keys, revoke_key

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

    from clearing.ledger import verify

    async def go() -> verify.Report:
        conn = await _admin_connect(settings)
        try:
            return await verify.verify_on(conn, None)
        finally:
            await conn.close()

    report = asyncio.run(go())
    doc = {"ok": report.ok, **asdict(report)}
    for t in doc["totals"]:
        t["balanced"] = t["debits_posted"] == t["credits_posted"] and (
            t["debits_pending"] == t["credits_pending"])
    print(json.dumps(doc, indent=2))
    return 0 if report.ok else 1


def cmd_payout_config(args, settings: Settings) -> int:
    """`clearing platform payout-config NAME`: set (or --show) a platform's payout rules for
    a currency; amounts in major units. Options not given keep their current value (or the
    server's default, CLEARING_PAYOUT_*)."""
    from dataclasses import asdict, replace

    from clearing.errors import InvalidArgument
    from clearing.money import format_minor
    from clearing.payout import store

    cur = args.currency
    changes = {name: _minor(getattr(args, name), cur) for name in (
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
            pid = await conn.fetchval("SELECT platform_id FROM platforms WHERE name = $1",
                                      args.name)
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
        raise SystemExit("; ".join(f"{v.field}: {v.description}"
                                   for v in exc.violations)) from None
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


async def _dev_bootstrap(settings: Settings) -> None:
    """Migrate and, on first start, create the demo platform and write its keys."""
    import asyncpg

    from clearing import db
    from clearing.api.auth import create_key, create_platform

    conn = await asyncpg.connect(settings.database_url)
    try:
        await db.migrate(conn)
        key_file = settings.data_dir / "demo.key"
        approver_file = settings.data_dir / "demo-approver.key"
        pid = await conn.fetchval("SELECT platform_id FROM platforms WHERE name = $1",
                                  DEMO_PLATFORM)
        if pid is None:
            pid, key = await create_platform(conn, DEMO_PLATFORM,
                                             frozenset({"gateway", "operator"}))
            _write_secret(key_file, key)
        elif not key_file.exists():
            _write_secret(key_file, await create_key(conn, pid,
                                                     frozenset({"gateway", "operator"})))
        if not approver_file.exists():
            _write_secret(approver_file, await create_key(conn, pid, frozenset({"approver"})))
    finally:
        await conn.close()


def _write_secret(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")


DEFAULT_GRPC_ADDR = Settings().grpc_addr
DEFAULT_DATA_DIR = Settings().data_dir
BANNER_WAIT_S = 60.0
BANNER_POLL_S = 0.1
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _client_exe() -> str:
    """How to run this venv's `clearing` script from the current directory."""
    script = Path(sys.executable).absolute().parent / "clearing"
    if not script.exists():
        return "clearing"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def _banner(settings: Settings) -> str:
    key_file = settings.data_dir / "demo.key"
    addr = settings.grpc_addr
    exe = _client_exe()
    # The client commands read CLEARING_GRPC_ADDR and CLEARING_DATA_DIR (for the key file);
    # say so when this server does not use the defaults they fall back to.
    exports = []
    if addr != DEFAULT_GRPC_ADDR:
        exports.append(f"CLEARING_GRPC_ADDR={shlex.quote(addr)}")
    if settings.data_dir != DEFAULT_DATA_DIR.resolve():
        exports.append(f"CLEARING_DATA_DIR={shlex.quote(str(settings.data_dir))}")
    export = f"    export {' '.join(exports)}\n" if exports else ""
    return f"""
clearing core listening on {addr}  (Ctrl-C stops it; data stays in {settings.data_dir}/)
  demo platform keys: {key_file} (gateway, operator), {settings.data_dir}/demo-approver.key
  try it (from {Path.cwd()}):
{export}    {exe} accounts create --ref custodial --kind custodial --owner enterprise --currency CNY
    {exe} accounts create --ref merchant-1 --kind merchant --owner enterprise --currency CNY
    {exe} transfer --from-ref custodial --to-ref merchant-1 --amount 99.00
    {exe} accounts list
  or with grpcurl:
    grpcurl -plaintext -H "authorization: Bearer $(cat {key_file})" -d '{{}}' {addr} clearing.v1.LedgerService/ListAccounts
"""


def _print_banner_when_listening(settings: Settings) -> None:
    """Print the banner once the gRPC port accepts connections (from a daemon thread, so
    that the first call it shows works as soon as it is printed)."""
    import socket
    import threading

    host, _, port = settings.grpc_addr.rpartition(":")
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host.strip("[]"),
                                                                     host.strip("[]"))

    def wait_and_print() -> None:
        deadline = time.monotonic() + BANNER_WAIT_S
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((host, int(port)), timeout=1.0):
                    break
            except (OSError, ValueError):
                time.sleep(BANNER_POLL_S)
        else:
            return  # the server reports its own failure
        print(_banner(settings), file=sys.stderr, flush=True)

    threading.Thread(target=wait_and_print, name="clearing-banner", daemon=True).start()


def cmd_serve(args, settings: Settings) -> int:
    if args.workers:
        settings = settings.with_(workers=args.workers)
    if args.dev:
        # Stopping the embedded PostgreSQL forks (pg_ctl) while gRPC's threads run: gRPC's
        # fork support is off for that (set in clearing/__init__.py, before gRPC loads).
        return _serve_dev(settings)
    from clearing import server

    try:
        server.run_workers(settings)
    except KeyboardInterrupt:
        pass
    return 0


def _serve_dev(settings: Settings) -> int:
    """`clearing serve --dev`: embedded services for what is not configured, demo platform,
    banner, server; on Ctrl-C/SIGTERM the server drains first, then the embedded services
    stop (they run in sessions of their own, so the terminal's Ctrl-C never reaches them)."""
    from clearing import logs, server

    logs.setup(settings.log_level)
    if not settings.payout.bank.connector:  # unset: the dev stack's bank is the simulator
        settings = settings.with_payout(bank=replace(settings.payout.bank,
                                                     connector=BANK_CONNECTOR_SIMULATOR))
    started: list = []
    signals: list[int] = []

    def defer(signum, _frame) -> None:
        # A stop asked for while the services start is honoured once they are up (so that
        # nothing is left half-started); asked for twice, it interrupts at once.
        signals.append(signum)
        if len(signals) > 1:
            raise KeyboardInterrupt
        print("stopping as soon as the embedded services are up (again to force)",
              file=sys.stderr, flush=True)

    def stopping(_signum, _frame) -> None:
        print("already stopping; waiting for the embedded services to shut down",
              file=sys.stderr, flush=True)

    previous = {sig: signal.signal(sig, defer) for sig in STOP_SIGNALS}
    try:
        try:
            settings = _dev_services(settings, started)
            if not signals:
                asyncio.run(_dev_bootstrap(settings))
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if signals:
            return 0
        _print_banner_when_listening(settings)
        server.run_workers(settings)
    except KeyboardInterrupt:
        pass
    finally:
        # The server has stopped (drained) or never started: now the services, without
        # letting another Ctrl-C cut their shutdown short.
        for sig in STOP_SIGNALS:
            signal.signal(sig, stopping)
        for part in reversed(started):
            try:
                part.stop()
            except Exception:  # noqa: BLE001 - stop the others all the same
                logging.getLogger("clearing.cli").exception("could not stop %r", part)
    return 0


def _dev_services(settings: Settings, started: list) -> Settings:
    """Start embedded PostgreSQL / Redis for what is not configured; each service is
    appended to `started` as soon as it runs, so that the caller can stop it."""
    import asyncpg

    from clearing.dev import stack as devstack

    logging.getLogger("pgserver").setLevel(logging.WARNING)  # it logs every command at INFO
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = settings.with_(data_dir=data_dir)
    if not settings.database_url:
        pg = devstack.start_postgres(data_dir / "postgres")
        started.append(pg)

        async def create_db() -> None:
            conn = await asyncpg.connect(pg.dsn)
            try:
                if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1",
                                           DEV_DATABASE):
                    await conn.execute(f"CREATE DATABASE {DEV_DATABASE}")
            finally:
                await conn.close()

        asyncio.run(create_db())
        settings = settings.with_(database_url=pg.dsn.replace("/postgres?", f"/{DEV_DATABASE}?"))
    if not settings.redis_url:
        rd = devstack.start_redis(data_dir / "redis")
        started.append(rd)
        settings = settings.with_(redis_url=rd.url)
    return settings


# ---- client side ------------------------------------------------------------------------

def _key(args, settings: Settings) -> str:
    if args.key:
        return args.key
    if client_api_key():
        return client_api_key()
    path = Path(args.key_file) if args.key_file else settings.data_dir / "demo.key"
    if not path.exists():
        raise SystemExit(f"no API key: pass --key, set CLEARING_API_KEY, or create {path}")
    return path.read_text().strip()


def _print_error(err) -> None:
    """The status, then every field violation of a BadRequest detail (one per line)."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
    status = rpc_status.from_call(err)
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            for v in bad.field_violations:
                print(f"  {v.field}: {v.description}", file=sys.stderr)


def _client_call(args, settings: Settings, method: str, request, service: str = "ledger") -> int:
    import grpc
    from google.protobuf import json_format

    from clearing.v1 import ledger_pb2_grpc, payout_pb2_grpc, split_pb2_grpc

    addr = args.addr or settings.grpc_addr
    stubs = {"ledger": ledger_pb2_grpc.LedgerServiceStub,
             "split": split_pb2_grpc.SplitServiceStub,
             "payout": payout_pb2_grpc.PayoutServiceStub}
    with grpc.insecure_channel(addr) as channel:
        stub = stubs[service](channel)
        try:
            response = getattr(stub, method)(
                request, metadata=[("authorization", f"Bearer {_key(args, settings)}")],
                timeout=args.timeout)
        except grpc.RpcError as err:
            _print_error(err)
            return 1
    print(json_format.MessageToJson(response, preserving_proto_field_name=True,
                                    use_integers_for_enums=False))
    return 0


def _enum(enum_type, prefix: str, value: str) -> int:
    return enum_type.Value(f"{prefix}_{value.upper()}")


def _account_id(args, settings: Settings, ref: str | None, account_id: int | None) -> int:
    if account_id:
        return account_id
    if not ref:
        raise SystemExit("give an account id or --*-ref")
    import grpc

    from clearing.v1 import ledger_pb2 as pb, ledger_pb2_grpc

    with grpc.insecure_channel(args.addr or settings.grpc_addr) as channel:
        try:
            response = ledger_pb2_grpc.LedgerServiceStub(channel).GetAccount(
                pb.GetAccountRequest(external_ref=ref),
                metadata=[("authorization", f"Bearer {_key(args, settings)}")],
                timeout=args.timeout)
        except grpc.RpcError as err:
            raise SystemExit(f"account {ref!r}: {err.code().name}: {err.details()}") from None
    return response.account.account_id


def _minor(text: str, currency: str) -> int:
    from clearing.money import is_currency, parse_major

    if not is_currency(currency):
        raise SystemExit(f"unknown currency {currency!r}")
    try:
        return parse_major(text, currency)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


def cmd_client(args, settings: Settings) -> int:
    from clearing.v1 import ledger_pb2 as pb

    rid = args.request_id or str(uuid.uuid4())
    c = args.command
    if c == "accounts" and args.action == "create":
        req = pb.CreateAccountRequest(
            request_id=rid, external_ref=args.ref, currency_code=args.currency,
            kind=_enum(pb.AccountKind, "ACCOUNT_KIND", args.kind),
            owner_type=_enum(pb.OwnerType, "OWNER_TYPE", args.owner),
            display_name=args.name or "")
        if args.allow_negative:
            req.allow_negative = True
        return _client_call(args, settings, "CreateAccount", req)
    if c == "accounts" and args.action == "list":
        return _client_call(args, settings, "ListAccounts",
                            pb.ListAccountsRequest(page_size=args.page_size,
                                                   page_token=args.page_token or ""))
    if c == "accounts" and args.action == "get":
        return _client_call(args, settings, "GetAccount", pb.GetAccountRequest(
            account_id=int(args.account) if args.account.isdigit() else 0,
            external_ref="" if args.account.isdigit() else args.account))
    if c == "accounts" and args.action in ("freeze", "unfreeze"):
        amount = _minor(args.amount, args.currency) if args.amount else 0
        cls = pb.FreezeAccountRequest if args.action == "freeze" else pb.UnfreezeAccountRequest
        return _client_call(args, settings, f"{args.action.capitalize()}Account", cls(
            request_id=rid, account_id=args.account_id, amount_minor=amount, reason=args.reason))
    if c == "accounts" and args.action == "close":
        return _client_call(args, settings, "CloseAccount",
                            pb.CloseAccountRequest(request_id=rid, account_id=args.account_id))
    if c == "balance":
        return _client_call(args, settings, "GetBalance",
                            pb.GetBalanceRequest(account_id=args.account_id))
    if c == "entries":
        return _client_call(args, settings, "ListEntries", pb.ListEntriesRequest(
            account_id=args.account_id, page_size=args.page_size,
            page_token=args.page_token or ""))
    if c == "transfer":
        return _client_call(args, settings, "Transfer", pb.TransferRequest(
            request_id=rid,
            debit_account_id=_account_id(args, settings, args.from_ref, args.from_id),
            credit_account_id=_account_id(args, settings, args.to_ref, args.to_id),
            amount_minor=_minor(args.amount, args.currency), currency_code=args.currency,
            mode=pb.TRANSFER_MODE_PENDING if args.pending else pb.TRANSFER_MODE_IMMEDIATE,
            memo=args.memo or ""))
    if c == "post":
        return _client_call(args, settings, "Transfer", pb.TransferRequest(
            request_id=rid, mode=pb.TRANSFER_MODE_POST_PENDING,
            pending_transfer_id=args.pending_id,
            amount_minor=_minor(args.amount, args.currency)))
    if c == "void":
        return _client_call(args, settings, "Transfer", pb.TransferRequest(
            request_id=rid, mode=pb.TRANSFER_MODE_VOID_PENDING,
            pending_transfer_id=args.pending_id))
    if c == "verify":
        if args.all:
            return cmd_verify_all(args, settings)
        return _client_call(args, settings, "VerifyLedger", pb.VerifyLedgerRequest())
    raise SystemExit(f"unknown command {c}")


def cmd_rules(args, settings: Settings) -> int:
    """`clearing rules publish|activate|list|get`: SplitService's rule-set methods."""
    from clearing.errors import InvalidArgument
    from clearing.rules.proto import rule_set_proto_from_yaml
    from clearing.v1 import split_pb2 as pb

    rid = args.request_id or str(uuid.uuid4())
    if args.action == "publish":
        try:
            rule_set = rule_set_proto_from_yaml(Path(args.file).read_bytes())
        except InvalidArgument as exc:
            raise SystemExit("\n".join(f"{args.file}: {v.field}: {v.description}"
                                        for v in exc.violations)) from None
        return _client_call(args, settings, "PublishRuleSet", pb.PublishRuleSetRequest(
            request_id=rid, rule_set=rule_set, validate_only=args.validate_only), "split")
    if args.action == "activate":
        req = pb.ActivateRuleSetRequest(request_id=rid, rule_set_name=args.name,
                                        rule_set_version=args.version,
                                        content_sha256=args.sha256 or "",
                                        comment=args.comment or "")
        if args.expected_active is not None:
            req.expected_active_version = args.expected_active
        return _client_call(args, settings, "ActivateRuleSet", req, "split")
    if args.action == "get":
        return _client_call(args, settings, "GetRuleSet", pb.GetRuleSetRequest(
            rule_set_name=args.name, rule_set_version=args.version), "split")
    return _client_call(args, settings, "ListRuleSets", pb.ListRuleSetsRequest(
        page_size=args.page_size, page_token=args.page_token or "",
        rule_set_name=args.name or "", include_rules=args.include_rules), "split")


def cmd_payouts(args, settings: Settings) -> int:
    """`clearing payouts ...`: PayoutService. Amounts in major units."""
    from clearing.v1 import payout_pb2 as pb

    rid = args.request_id or str(uuid.uuid4())
    a = args.action
    if a == "bind":
        return _client_call(args, settings, "BindBankAccount", pb.BindBankAccountRequest(
            request_id=rid, account_id=args.account_id, bank_code=args.bank_code,
            bank_name=args.bank_name, branch_code=args.branch_code or "",
            account_number=args.number, holder_name=args.holder,
            account_type=_enum(pb.BankAccountType, "BANK_ACCOUNT_TYPE", args.type),
            kyc_verified=args.kyc_verified), "payout")
    if a == "request":
        return _client_call(args, settings, "RequestPayout", pb.RequestPayoutRequest(
            request_id=rid, account_id=args.account_id,
            amount_minor=_minor(args.amount, args.currency), currency_code=args.currency,
            memo=args.memo or ""), "payout")
    if a == "get":
        return _client_call(args, settings, "GetPayout",
                            pb.GetPayoutRequest(payout_id=args.payout_id), "payout")
    if a == "list":
        return _client_call(args, settings, "ListPayouts", pb.ListPayoutsRequest(
            page_size=args.page_size, page_token=args.page_token or "",
            account_id=args.account or 0,
            states=[_enum(pb.PayoutState, "PAYOUT_STATE", s) for s in args.state or ()]),
            "payout")
    cls = pb.ApprovePayoutRequest if a == "approve" else pb.RejectPayoutRequest
    return _client_call(args, settings, f"{a.capitalize()}Payout", cls(
        request_id=rid, payout_id=args.payout_id, reason=args.reason or ""), "payout")


def _payouts_parser(sub, plat) -> None:
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

    pay = sub.add_parser("payouts", help="payouts to bank accounts").add_subparsers(
        dest="action", required=True)
    p = pay.add_parser("bind", help="bind a bank account to an account (operator)")
    p.add_argument("account_id", type=int)
    p.add_argument("--bank-code", required=True)
    p.add_argument("--bank-name", required=True)
    p.add_argument("--branch-code")
    p.add_argument("--number", required=True, help="the full account number (never shown)")
    p.add_argument("--holder", required=True)
    p.add_argument("--type", required=True, choices=["corporate", "personal"])
    p.add_argument("--kyc-verified", action="store_true")
    p = pay.add_parser("request", help="pay an account's funds out (operator)")
    p.add_argument("account_id", type=int)
    p.add_argument("--amount", required=True, help="major units, fee included")
    p.add_argument("--currency", default="CNY")
    p.add_argument("--memo")
    p = pay.add_parser("get", help="one payout with its bank transfers")
    p.add_argument("payout_id", type=int)
    p = pay.add_parser("list", help="payouts, newest first")
    p.add_argument("--account", type=int)
    p.add_argument("--state", action="append", choices=[
        "pending_review", "queued", "submitted", "succeeded", "failed", "manual_review"])
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--page-token")
    for action in ("approve", "reject"):
        p = pay.add_parser(action, help=f"{action} a payout under review (approver key)")
        p.add_argument("payout_id", type=int)
        p.add_argument("--reason", required=action == "reject")
    for sp in pay.choices.values():
        _client_options(sp)
        sp.set_defaults(func=cmd_payouts)


def _rules_parser(sub) -> None:
    rules = sub.add_parser("rules", help="split rule sets").add_subparsers(
        dest="action", required=True)
    p = rules.add_parser("publish", help="file a new version from a YAML file (operator)")
    p.add_argument("file", help="the rule set in YAML (the RuleSet message's fields)")
    p.add_argument("--validate-only", action="store_true", help="validate, store nothing")
    p = rules.add_parser("activate", help="activate a version (approver; not its publisher)")
    p.add_argument("name")
    p.add_argument("version", type=int)
    p.add_argument("--sha256", help="the content_sha256 you reviewed")
    p.add_argument("--expected-active", type=int, help="the version you expect active (0: none)")
    p.add_argument("--comment", help="note for the audit trail")
    p = rules.add_parser("get", help="one version (0 or omitted: the active one)")
    p.add_argument("name")
    p.add_argument("version", type=int, nargs="?", default=0)
    p = rules.add_parser("list", help="versions by name, newest first")
    p.add_argument("--name", help="only this rule set")
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--page-token")
    p.add_argument("--include-rules", action="store_true")
    for sp in rules.choices.values():
        _client_options(sp)
        sp.set_defaults(func=cmd_rules)


# ---- argument parsing --------------------------------------------------------------------

def _client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--addr", help="server address (default: CLEARING_GRPC_ADDR)")
    p.add_argument("--key", help="API key (default: CLEARING_API_KEY or --key-file)")
    p.add_argument("--key-file", help="file holding the API key (default: var/demo.key)")
    p.add_argument("--request-id", help="idempotency key (default: a new UUID)")
    p.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="clearing", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the gRPC server")
    p.add_argument("--dev", action="store_true",
                   help="start embedded PostgreSQL/Redis when not configured; demo platform")
    p.add_argument("--workers", type=int, help="processes sharing the port")
    p.set_defaults(func=cmd_serve)
    sub.add_parser("migrate", help="apply schema migrations").set_defaults(func=cmd_migrate)

    plat = sub.add_parser("platform", help="platforms (tenants)").add_subparsers(
        dest="action", required=True)
    p = plat.add_parser("create", help="create a platform and print its first API key")
    p.add_argument("name")
    p.add_argument("--roles", default="gateway,operator", help="comma-separated roles")
    p.set_defaults(func=cmd_platform_create)
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

    acc = sub.add_parser("accounts", help="accounts").add_subparsers(dest="action", required=True)
    p = acc.add_parser("create", help="open an account")
    p.add_argument("--ref", required=True, help="your reference, unique per platform")
    p.add_argument("--kind", required=True, choices=[
        "custodial", "platform", "merchant", "ordinary", "fee", "marketing", "functional"])
    p.add_argument("--owner", required=True, choices=["enterprise", "individual"])
    p.add_argument("--currency", default="CNY")
    p.add_argument("--name")
    p.add_argument("--allow-negative", action="store_true")
    p = acc.add_parser("list", help="list accounts")
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--page-token")
    p = acc.add_parser("get", help="one account, by id or reference")
    p.add_argument("account")
    for action in ("freeze", "unfreeze"):
        p = acc.add_parser(action, help=f"{action} an account or an amount of it")
        p.add_argument("account_id", type=int)
        p.add_argument("--amount", help="major units; omit for the whole account")
        p.add_argument("--currency", default="CNY")
        p.add_argument("--reason", required=True)
    p = acc.add_parser("close", help="close an empty account")
    p.add_argument("account_id", type=int)
    for sp in acc.choices.values():
        _client_options(sp)
        sp.set_defaults(func=cmd_client)

    p = sub.add_parser("balance", help="balances of an account")
    p.add_argument("account_id", type=int)
    p = sub.add_parser("entries", help="statement of an account")
    p.add_argument("account_id", type=int)
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--page-token")
    p = sub.add_parser("transfer", help="move money between two accounts")
    p.add_argument("--from", dest="from_id", type=int, help="debit account id")
    p.add_argument("--from-ref", help="debit account reference")
    p.add_argument("--to", dest="to_id", type=int, help="credit account id")
    p.add_argument("--to-ref", help="credit account reference")
    p.add_argument("--amount", required=True, help="major units, e.g. 12.34")
    p.add_argument("--currency", default="CNY")
    p.add_argument("--pending", action="store_true", help="hold instead of posting")
    p.add_argument("--memo")
    p = sub.add_parser("post", help="post (part of) a pending transfer")
    p.add_argument("pending_id", type=int)
    p.add_argument("--amount", required=True)
    p.add_argument("--currency", default="CNY")
    p = sub.add_parser("void", help="void what remains of a pending transfer")
    p.add_argument("pending_id", type=int)
    p = sub.add_parser("verify", help="trial balance and hash chain (the key's platform)")
    p.add_argument("--all", action="store_true",
                   help="the whole system, read from CLEARING_DATABASE_URL (no key needed)")
    for name in ("balance", "entries", "transfer", "post", "void", "verify"):
        _client_options(sub.choices[name])
        sub.choices[name].set_defaults(func=cmd_client)
    _rules_parser(sub)
    _payouts_parser(sub, plat)
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
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args, Settings.from_env())


if __name__ == "__main__":
    raise SystemExit(main())
