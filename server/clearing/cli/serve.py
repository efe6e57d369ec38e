"""`clearing serve`: the server; with --dev, embedded PostgreSQL/Redis for what is not
configured, the demo platform and its keys, TLS with a development CA (var/tls/), and a
banner of commands to try."""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

from clearing.config import BANK_CONNECTOR_SIMULATOR, Settings

DEV_DATABASE = "clearing"
DEMO_PLATFORM = "demo"
ADMIN_KEY_FILE = "admin.key"
ADMIN_APPROVER_KEY_FILE = "admin-approver.key"
DEFAULT_GRPC_ADDR = Settings().grpc_addr
DEFAULT_DATA_DIR = Settings().data_dir
BANNER_WAIT_S = 60.0
BANNER_POLL_S = 0.1
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
PR_SET_PDEATHSIG = 1  # prctl(2)


async def _dev_bootstrap(settings: Settings) -> None:
    """Migrate and, on first start, create the demo platform and write its keys."""
    import asyncpg

    from clearing import db
    from clearing.tenancy import create_admin_key, create_key, create_platform, find_platform

    conn = await asyncpg.connect(settings.database_url)
    try:
        await db.migrate(conn)
        key_file = settings.data_dir / "demo.key"
        approver_file = settings.data_dir / "demo-approver.key"
        pid = await find_platform(conn, DEMO_PLATFORM)
        if pid is None:
            pid, key = await create_platform(conn, DEMO_PLATFORM,
                                             frozenset({"gateway", "operator"}))
            _write_secret(key_file, key)
        elif not key_file.exists():
            _write_secret(key_file, await create_key(conn, pid,
                                                     frozenset({"gateway", "operator"})))
        if not approver_file.exists():
            _write_secret(approver_file, await create_key(conn, pid, frozenset({"approver"})))
        # Where this server listens, for `make demo` (clearing.dev.demo).
        (settings.data_dir / "grpc.addr").write_text(settings.grpc_addr + "\n")
        # The operator's admin keys (PlatformService; `make demo`): a maker and a checker.
        for name in (ADMIN_KEY_FILE, ADMIN_APPROVER_KEY_FILE):
            path = settings.data_dir / name
            if not path.exists():
                _write_secret(path, (await create_admin_key(conn, name.removesuffix(".key")))[1])
    finally:
        await conn.close()


def _write_secret(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a file that was there keeps its mode through O_TRUNC
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")


def _client_exe() -> str:
    """How to run this venv's `clearing` script from the current directory."""
    script = Path(sys.executable).absolute().parent / "clearing"
    if not script.exists():
        return "clearing"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def _dev_tls(settings: Settings) -> Settings:
    """`make run` serves TLS: with the certificate configured (CLEARING_TLS_*) if there is
    one, else with the development CA under <data dir>/tls (made on first start, reused
    while valid); plaintext only when allowed explicitly (--allow-plaintext)."""
    from clearing.tls import DEV_TLS_DIR, ensure_dev_pki

    if settings.tls.enabled or settings.tls.allow_plaintext:
        return settings
    pki, made = ensure_dev_pki(settings.data_dir / DEV_TLS_DIR, platform=DEMO_PLATFORM)
    logging.getLogger("clearing.cli").info(
        "development CA %s under %s", "made" if made else "reused", pki.directory)
    return settings.with_(tls=replace(settings.tls, cert=str(pki.server_cert),
                                      key=str(pki.server_key)))


def _grpcurl_tls(settings: Settings) -> str:
    """grpcurl's transport options for this server."""
    from clearing.tls import DEV_TLS_DIR

    if not settings.tls.enabled:
        return "-plaintext"
    dev = settings.data_dir / DEV_TLS_DIR
    if settings.tls.cert == str(dev / "server.pem"):
        mutual = (f" -cert {dev / 'client.pem'} -key {dev / 'client.key'}"
                  if settings.tls.client_ca else "")
        return f"-cacert {dev / 'ca.pem'}{mutual}"
    return "-cacert CA.pem" + (" -cert CLIENT.pem -key CLIENT.key"
                               if settings.tls.client_ca else "")


def _banner(settings: Settings) -> str:
    key_file = settings.data_dir / "demo.key"
    addr = settings.grpc_addr
    exe = _client_exe()
    transport = ("TLS" + (", mutual" if settings.tls.client_ca else "")
                 if settings.tls.enabled else "PLAINTEXT")
    # The client commands read CLEARING_GRPC_ADDR and CLEARING_DATA_DIR (for the key file);
    # say so when this server does not use the defaults they fall back to.
    exports = []
    if addr != DEFAULT_GRPC_ADDR:
        exports.append(f"CLEARING_GRPC_ADDR={shlex.quote(addr)}")
    if settings.data_dir != DEFAULT_DATA_DIR.resolve():
        exports.append(f"CLEARING_DATA_DIR={shlex.quote(str(settings.data_dir))}")
    if not settings.tls.enabled:  # --allow-plaintext: not var/tls from an earlier run
        exports.append("CLEARING_CLIENT_PLAINTEXT=1")
    export = f"    export {' '.join(exports)}\n" if exports else ""
    tls_files = (f" (development CA {settings.data_dir}/tls/ca.pem; the `clearing` commands "
                 "use it)" if settings.tls.cert == str(settings.data_dir / "tls" / "server.pem")
                 else "")
    return f"""
clearing core listening on {addr}  (Ctrl-C stops it; data stays in {settings.data_dir}/)
  transport: {transport}{tls_files}
  demo platform keys: {key_file} (gateway, operator), {settings.data_dir}/demo-approver.key
  admin keys (PlatformService): {settings.data_dir}/admin.key, {settings.data_dir}/admin-approver.key
{_console_line(settings)}  try it (from {Path.cwd()}):
{export}    {exe} accounts create --ref custodial --kind custodial --owner enterprise --currency CNY
    {exe} accounts create --ref merchant-1 --kind merchant --owner enterprise --currency CNY
    {exe} transfer --from-ref custodial --to-ref merchant-1 --amount 99.00
    {exe} accounts list
  or with grpcurl:
    grpcurl {_grpcurl_tls(settings)} -H "authorization: Bearer $(cat {key_file})" -d '{{}}' {addr} clearing.v1.LedgerService/ListAccounts
"""


def _console_url(settings: Settings) -> str | None:
    """The web console's URL when `make run` starts it (CLEARING_CONSOLE_ADDR not "")."""
    addr = settings.console.addr
    if not addr:
        return None
    host, _, port = addr.rpartition(":")
    scheme = "https" if settings.console.tls_cert else "http"
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1"}.get(host, host)
    return f"{scheme}://{host}:{port}/"


def _console_line(settings: Settings) -> str:
    url = _console_url(settings)
    if url is None:
        return ""
    return (f"  web console: {url}  (sign in with the key in {settings.data_dir}/demo.key, "
            "or demo-approver.key)\n")


def _start_console(settings: Settings):
    """`clearing console` beside the dev server, in a session of its own (the terminal's
    Ctrl-C goes to the server, which stops it), connecting as the client commands do."""
    import subprocess

    if _console_url(settings) is None:
        return None
    # The environment is this process's (CLEARING_DATA_DIR, the console's settings): the
    # console finds the development CA under the same data directory.
    argv = [sys.executable, "-m", "clearing.cli", "console", "--addr", settings.grpc_addr]
    if not settings.tls.enabled:
        argv.append("--plaintext")
    return subprocess.Popen(argv, start_new_session=True, preexec_fn=_die_with_parent)


def _die_with_parent() -> None:
    """In the console's child process, before it runs: SIGTERM when its parent dies (Linux
    PR_SET_PDEATHSIG), so that a server killed outright leaves no console behind."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the server's own stop still ends it
        pass


def _stop_console(proc) -> None:
    import subprocess

    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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
    if args.allow_plaintext:
        settings = settings.with_(tls=replace(settings.tls, allow_plaintext=True))
    if args.dev:
        # Stopping the embedded PostgreSQL forks (pg_ctl) while gRPC's threads run: gRPC's
        # fork support is off for that (set in clearing/__init__.py, before gRPC loads).
        return _serve_dev(settings)
    from clearing import server, tls

    tls.check(settings.tls)  # before any worker starts: plaintext only when allowed
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
            settings = _dev_tls(_dev_services(settings, started))
            if not signals:
                asyncio.run(_dev_bootstrap(settings))
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if signals:
            return 0
        console = _start_console(settings)
        try:
            _print_banner_when_listening(settings)
            server.run_workers(settings)
        finally:
            _stop_console(console)
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

    from clearing.dev.embedded_postgres import start_postgres
    from clearing.dev.embedded_redis import start_redis

    logging.getLogger("pgserver").setLevel(logging.WARNING)  # it logs every command at INFO
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = settings.with_(data_dir=data_dir)
    if not settings.database_url:
        pg = start_postgres(data_dir / "postgres")
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
        rd = start_redis(data_dir / "redis")
        started.append(rd)
        settings = settings.with_(redis_url=rd.url, redis_cluster=False)  # one node
    return settings


def add_parsers(sub) -> None:
    p = sub.add_parser("serve", help="run the gRPC server")
    p.add_argument("--dev", action="store_true",
                   help="start embedded PostgreSQL/Redis when not configured; demo platform")
    p.add_argument("--workers", type=int, help="processes sharing the port")
    p.add_argument("--allow-plaintext", action="store_true",
                   help="serve plaintext when no TLS certificate is configured (local "
                        "development only; CLEARING_TLS_ALLOW_PLAINTEXT=1)")
    p.set_defaults(func=cmd_serve)
