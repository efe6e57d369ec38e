"""Embedded, real PostgreSQL for ``make run`` and for tests (run with Redis by
`clearing.dev.stack.DevStack`, or alone).

It comes from the ``pgserver`` wheel (bundled binaries). The server listens only on a Unix
socket inside its data directory, so it never clashes with a PostgreSQL already running on
the machine. Its data stays in the directory it is given, so stopping and starting again on
the same directory keeps the data. Also here: `postgres_answers`, the probe of any
PostgreSQL (the tests use the machine's own when it answers)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import types
import urllib.parse
import warnings
from pathlib import Path
from typing import Any

from clearing.dev.embedded import DevStackError, log_tail, logger

POSTGRES_USER = "postgres"
POSTGRES_DATABASE = "postgres"

# Named bounds for every wait in this module.
POSTGRES_STOP_TIMEOUT_S = 30.0
POSTGRES_KILL_WAIT_S = 5.0
PID_POLL_INTERVAL_S = 0.05


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
            f"{log_tail(data_dir / 'log')}"
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
