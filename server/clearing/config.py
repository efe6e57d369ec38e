"""Configuration from environment variables. Every setting has a documented default.

| variable                          | default            | meaning                                        |
|-----------------------------------|--------------------|------------------------------------------------|
| CLEARING_GRPC_ADDR                | 127.0.0.1:50051    | gRPC listen address (host:port)                |
| CLEARING_DATABASE_URL             | (none)             | PostgreSQL DSN; `make run` starts one if unset |
| CLEARING_REDIS_URL                | (none)             | Redis URL; `make run` starts one if unset      |
| CLEARING_REDIS_PREFIX             | clearing:          | prefix of every Redis key                      |
| CLEARING_WORKERS                  | 1                  | server processes sharing the port              |
| CLEARING_METRICS_ADDR             | 127.0.0.1:9464     | Prometheus HTTP (worker i: port + i); "" = off |
| CLEARING_DATA_DIR                 | ./var              | embedded services, demo keys                   |
| CLEARING_DB_POOL_MIN / _MAX       | 2 / 16             | asyncpg pool size per process                  |
| CLEARING_DB_COMMAND_TIMEOUT_S     | 30                 | per-statement timeout                          |
| CLEARING_WRITER_BATCH_SIZE_MAX    | 1000               | postings per group commit                      |
| CLEARING_WRITER_FLUSH_MS_MAX      | 2                  | longest a posting waits for its batch to fill  |
| CLEARING_WRITER_QUEUE_MAX         | 20000              | queued postings before RESOURCE_EXHAUSTED      |
| CLEARING_MAX_CONCURRENT_RPCS      | 10000              | in-flight RPCs per process                     |
| CLEARING_MAX_MESSAGE_BYTES        | 4194304            | largest request or response message            |
| CLEARING_GRACE_S                  | 10                 | shutdown grace for in-flight calls             |
| CLEARING_LOG_LEVEL                | INFO               | log level (JSON lines on stderr)               |
| CLEARING_PAYOUT_FEE_FIXED_MINOR   | 0                  | default payout fee, fixed part (minor units)   |
| CLEARING_PAYOUT_FEE_BPS           | 0                  | default payout fee, basis points of the amount |
| CLEARING_PAYOUT_MIN_MINOR         | 100                | default minimum per payout                     |
| CLEARING_PAYOUT_MAX_MINOR         | 100000000000       | default maximum per payout                     |
| CLEARING_PAYOUT_DAILY_MAX_MINOR   | 100000000000       | default maximum per account and day            |
| CLEARING_PAYOUT_REVIEW_MINOR      | 100000000          | default review threshold (above: approval)     |
| CLEARING_PAYOUT_BANK_MAX_MINOR    | 50000000           | default bank limit per transfer                |
| CLEARING_PAYOUT_CONCURRENCY_MAX   | pool max / 4       | payout requests checked at once per process    |
| CLEARING_PAYOUT_WORKER            | 1                  | 1: run the payout worker in this process       |
| CLEARING_PAYOUT_SCHEDULER         | 1                  | 1: run the payout scheduler in this process    |
| CLEARING_PAYOUT_SCHEDULE_TICK_S   | 10                 | seconds between schedule sweeps (1..3600)      |
| CLEARING_PAYOUT_SCHEDULE_BATCH    | 100                | schedule runs per sweep at most (1..1000)      |
| CLEARING_PAYOUT_RUN_HOUR          | 2                  | local hour of T+1, weekly and monthly runs     |
| CLEARING_CALENDAR_REFRESH_S       | 60                 | business-day calendar reloaded after (1..3600) |
| CLEARING_PAYOUT_D0_RETRY_S        | 3600               | a refused D0 sweep is retried after this       |
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path


def _int(env: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not an integer") from None
    if not low <= value <= high:
        raise SystemExit(f"{name}={value} is outside {low}..{high}")
    return value


@dataclass(frozen=True, slots=True)
class WriterSettings:
    """Limits of the group-commit ledger writer."""

    batch_size_max: int = 1000
    flush_ms_max: int = 2
    queue_max: int = 20_000


@dataclass(frozen=True, slots=True)
class PayoutSettings:
    """Payout defaults for a platform and currency without a payout_configs row, and the
    request path's limits. A platform with no fee account configured pays no fee."""

    fee_fixed_minor: int = 0
    fee_bps: int = 0
    min_amount_minor: int = 100
    max_amount_minor: int = 100_000_000_000
    daily_max_minor: int = 100_000_000_000
    review_threshold_minor: int = 100_000_000
    bank_transfer_max_minor: int = 50_000_000
    # Payout requests (each holds one pooled connection while its hold commits) checked at
    # once per process; 0: a quarter of the pool.
    concurrency_max: int = 0
    # Whether this process runs the payout worker (and the bank connector).
    worker: bool = True

    @classmethod
    def from_env(cls, env: dict[str, str]) -> "PayoutSettings":
        big = 10**15
        return cls(
            fee_fixed_minor=_int(env, "CLEARING_PAYOUT_FEE_FIXED_MINOR", 0, 0, big),
            fee_bps=_int(env, "CLEARING_PAYOUT_FEE_BPS", 0, 0, 10_000),
            min_amount_minor=_int(env, "CLEARING_PAYOUT_MIN_MINOR", 100, 1, big),
            max_amount_minor=_int(env, "CLEARING_PAYOUT_MAX_MINOR", 100_000_000_000, 1, big),
            daily_max_minor=_int(env, "CLEARING_PAYOUT_DAILY_MAX_MINOR", 100_000_000_000, 1,
                                 big),
            review_threshold_minor=_int(env, "CLEARING_PAYOUT_REVIEW_MINOR", 100_000_000, 0,
                                        big),
            bank_transfer_max_minor=_int(env, "CLEARING_PAYOUT_BANK_MAX_MINOR", 50_000_000, 1,
                                         big),
            concurrency_max=_int(env, "CLEARING_PAYOUT_CONCURRENCY_MAX", 0, 0, 1000),
            worker=_int(env, "CLEARING_PAYOUT_WORKER", 1, 0, 1) == 1,
        )


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the server reads from its environment."""

    grpc_addr: str = "127.0.0.1:50051"
    database_url: str | None = None
    redis_url: str | None = None
    redis_prefix: str = "clearing:"
    workers: int = 1
    metrics_addr: str = "127.0.0.1:9464"
    data_dir: Path = Path("var")
    db_pool_min: int = 2
    db_pool_max: int = 16
    db_command_timeout_s: int = 30
    writer: WriterSettings = field(default_factory=WriterSettings)
    max_concurrent_rpcs: int = 10_000
    max_message_bytes: int = 4 * 1024 * 1024
    grace_s: int = 10
    log_level: str = "INFO"
    payout: PayoutSettings = field(default_factory=PayoutSettings)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        writer = WriterSettings(
            batch_size_max=_int(env, "CLEARING_WRITER_BATCH_SIZE_MAX", 1000, 1, 10_000),
            flush_ms_max=_int(env, "CLEARING_WRITER_FLUSH_MS_MAX", 2, 0, 1000),
            queue_max=_int(env, "CLEARING_WRITER_QUEUE_MAX", 20_000, 1, 1_000_000),
        )
        return cls(
            grpc_addr=env.get("CLEARING_GRPC_ADDR", "127.0.0.1:50051"),
            database_url=env.get("CLEARING_DATABASE_URL") or None,
            redis_url=env.get("CLEARING_REDIS_URL") or None,
            redis_prefix=env.get("CLEARING_REDIS_PREFIX", "clearing:"),
            workers=_int(env, "CLEARING_WORKERS", 1, 1, 64),
            metrics_addr=env.get("CLEARING_METRICS_ADDR", "127.0.0.1:9464"),
            data_dir=Path(env.get("CLEARING_DATA_DIR", "var")),
            db_pool_min=_int(env, "CLEARING_DB_POOL_MIN", 2, 1, 100),
            db_pool_max=_int(env, "CLEARING_DB_POOL_MAX", 16, 1, 200),
            db_command_timeout_s=_int(env, "CLEARING_DB_COMMAND_TIMEOUT_S", 30, 1, 3600),
            writer=writer,
            max_concurrent_rpcs=_int(env, "CLEARING_MAX_CONCURRENT_RPCS", 10_000, 1, 1_000_000),
            max_message_bytes=_int(env, "CLEARING_MAX_MESSAGE_BYTES", 4 * 1024 * 1024,
                                   1024, 64 * 1024 * 1024),
            grace_s=_int(env, "CLEARING_GRACE_S", 10, 0, 600),
            log_level=env.get("CLEARING_LOG_LEVEL", "INFO").upper(),
            payout=PayoutSettings.from_env(env),
        )

    def with_(self, **changes: object) -> "Settings":
        return replace(self, **changes)  # type: ignore[arg-type]
