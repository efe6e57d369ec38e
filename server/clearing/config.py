"""The settings tree: everything the server reads from its environment, read once
(`Settings.from_env`) and passed down. No other module reads `os.environ` (a test greps for
it; the exceptions are `GRPC_ENABLE_FORK_SUPPORT` in `clearing/__init__.py`, which must be set
before grpc loads, and the client commands' API key and TLS files, `client_api_key` and
`client_tls` below).

Each setting is declared once, as a dataclass field made by `env(...)`: its variable, its
default, its bounds and its meaning. The configuration table of docs/operations.md is
generated from these declarations (`python -m clearing.config` prints it;
tests/unit/test_config.py checks the document against it). An unset or empty variable means
the default (for text settings only an unset one: `CLEARING_METRICS_ADDR=""` turns the
metrics server off); a value out of its bounds stops the server with a message naming the
variable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping

from clearing.limits import (AMOUNT_MINOR_MAX, POD_ID_MAX, RUN_HOUR_DEFAULT,
                             TRANSFERS_PER_PAYOUT_MAX, WEBHOOK_PENDING_MAX)
from clearing.settings_env import (Var, check_bounded, check_rate, env, group, load,
                                   markdown_table, shown)

BIG_MINOR = AMOUNT_MINOR_MAX  # bound of the amounts settings accept

# CLEARING_BANK_CONNECTOR: the bank the payout worker sends transfers to.
BANK_CONNECTOR_NONE = "none"
BANK_CONNECTOR_SIMULATOR = "simulator"
BANK_CONNECTORS = (BANK_CONNECTOR_NONE, BANK_CONNECTOR_SIMULATOR)


def variables(cls: type | None = None) -> list[tuple[Var, Any]]:
    """Every setting of the tree under `cls` (default: `Settings`), in declaration order,
    with its default."""
    out: list[tuple[Var, Any]] = []
    for f in fields(cls or Settings):
        if "group" in f.metadata:
            out.extend(variables(f.metadata["group"]))
        elif "var" in f.metadata:
            out.append((f.metadata["var"], f.default))
    return out


def table() -> str:
    """The configuration table of docs/operations.md (markdown), from the declarations."""
    return markdown_table([(f"`{var.name}`", shown(var, default), var.meaning)
                           for var, default in variables()])


class _FromEnv:
    __slots__ = ()

    @classmethod
    def from_env(cls, raw_env: Mapping[str, str] | None = None):
        """This group read from `raw_env` (default: the process environment)."""
        return load(cls, os.environ if raw_env is None else raw_env)


@dataclass(frozen=True, slots=True)
class WriterSettings(_FromEnv):
    """Limits of the group-commit ledger writer."""

    batch_size_max: int = env("CLEARING_WRITER_BATCH_SIZE_MAX", 1000,
                              "postings per group commit", low=1, high=10_000)
    flush_ms_max: int = env("CLEARING_WRITER_FLUSH_MS_MAX", 2,
                            "longest a posting waits for its batch to fill", low=0, high=1000)
    queue_max: int = env("CLEARING_WRITER_QUEUE_MAX", 20_000,
                         "queued postings before RESOURCE_EXHAUSTED", low=1, high=1_000_000)
    lock_late: bool = env("CLEARING_WRITER_LOCK_LATE", True,
                          "1: lock custodial balance rows last (docs/scaling.md)",
                          low=0, high=1)
    pipeline: int = env("CLEARING_WRITER_PIPELINE", 2,
                        "batches committing at once (1: one after another)",
                        low=1, high=4)


@dataclass(frozen=True, slots=True)
class SplitUnarySettings(_FromEnv):
    """Unary Split calls split together (`clearing.api.split_group`)."""

    grouping: bool = env("CLEARING_SPLIT_UNARY_GROUPING", True,
                         "1: concurrent unary Split calls split in groups",
                         low=0, high=1)
    group_max: int = env("CLEARING_SPLIT_UNARY_GROUP_MAX", 256,
                         "unary Split calls per group, most", low=1, high=1000)
    queue_max: int = env("CLEARING_SPLIT_UNARY_QUEUE_MAX", 10_000,
                         "unary Split calls pending before RESOURCE_EXHAUSTED",
                         low=1, high=1_000_000)


@dataclass(frozen=True, slots=True)
class WorkerSettings(_FromEnv):
    """Limits and timings of the payout worker (`clearing.payout.worker`)."""

    poll_interval_ms: int = env("CLEARING_PAYOUT_POLL_INTERVAL_MS", 200,
                                "payout worker: pause between claims when idle",
                                low=1, high=600_000)
    claim_batch_max: int = env("CLEARING_PAYOUT_CLAIM_BATCH_MAX", 64,
                               "payout worker: transfers claimed per transaction",
                               low=1, high=10_000)
    submit_timeout_ms: int = env("CLEARING_PAYOUT_SUBMIT_TIMEOUT_MS", 10_000,
                                 "payout worker: bank call timeout (then UNKNOWN)",
                                 low=1, high=3_600_000)
    stuck_after_ms: int = env("CLEARING_PAYOUT_STUCK_AFTER_MS", 60_000,
                              "claim lease; older SUBMITTED attempts are queried", low=2, high=86_400_000)
    retry_backoff_ms: int = env("CLEARING_PAYOUT_RETRY_BACKOFF_MS", 30_000,
                                "first retry delay (doubled per retry); UNKNOWN query delay", low=1, high=86_400_000)
    retries_max: int = env("CLEARING_PAYOUT_RETRIES_MAX", 3,
                           "retries after a FAILED attempt, per round", low=0, high=100)
    concurrency_max: int = env("CLEARING_PAYOUT_BANK_CALLS_MAX", 32,
                               "bank calls in flight per process", low=1, high=10_000)

    def __post_init__(self) -> None:
        if self.claim_batch_max < 1 or self.concurrency_max < 1:
            raise ValueError("payout worker limits must be >= 1")
        if self.stuck_after_ms <= self.submit_timeout_ms:
            raise ValueError("CLEARING_PAYOUT_STUCK_AFTER_MS must exceed "
                             "CLEARING_PAYOUT_SUBMIT_TIMEOUT_MS (the claim's lease must "
                             "outlast a bank call)")

    @property
    def attempts_per_round(self) -> int:
        return 1 + self.retries_max




@dataclass(frozen=True, slots=True)
class SchedulerSettings(_FromEnv):
    """The payout scheduler (`clearing.payout.schedule`)."""

    enabled: bool = env("CLEARING_PAYOUT_SCHEDULER", True,
                        "1: run the payout scheduler in this process", low=0, high=1)
    tick_s: int = env("CLEARING_PAYOUT_SCHEDULE_TICK_S", 10,
                      "seconds between schedule sweeps (1..3600)", low=1, high=3600)
    batch_max: int = env("CLEARING_PAYOUT_SCHEDULE_BATCH", 100,
                         "schedule runs per sweep at most (1..1000)", low=1, high=1000)
    run_hour: int = env("CLEARING_PAYOUT_RUN_HOUR", RUN_HOUR_DEFAULT,
                        "local hour of T+1, weekly and monthly runs", low=0, high=23)
    calendar_refresh_s: int = env("CLEARING_CALENDAR_REFRESH_S", 60,
                                  "business-day calendar reloaded after (1..3600)",
                                  low=1, high=3600)
    d0_retry_s: int = env("CLEARING_PAYOUT_D0_RETRY_S", 3600,
                          "a refused D0 sweep is retried after this", low=1, high=86_400 * 7)


@dataclass(frozen=True)
class BankSimSettings(_FromEnv):
    """Fault injection of the bank simulator (`clearing.dev.bank_sim`, where each is
    explained). The defaults are a bank that always pays at once, with a callback 50 ms
    later. Validated here (ValueError), so that settings made in code are checked too."""

    failure_rate: float = env("CLEARING_BANK_SIM_FAILURE_RATE", 0.0,
                              "simulator: share of orders the bank fails")
    timeout_rate: float = env("CLEARING_BANK_SIM_TIMEOUT_RATE", 0.0,
                              "simulator: share of calls that get no answer")
    latency_ms: int = env("CLEARING_BANK_SIM_LATENCY_MS", 0,
                          "simulator: mean time a call takes")
    duplicate_callback_rate: float = env("CLEARING_BANK_SIM_DUPLICATE_CALLBACK_RATE", 0.0,
                                         "simulator: share of callbacks delivered twice")
    query_only_rate: float = env("CLEARING_BANK_SIM_QUERY_ONLY_RATE", 0.0,
                                 "simulator: share PROCESSING, result by query only")
    seed: int = env("CLEARING_BANK_SIM_SEED", 0, "simulator: seed of every random decision")
    processing_rate: float = env("CLEARING_BANK_SIM_PROCESSING_RATE", 0.0,
                                 "simulator: share PROCESSING, result by callback")
    lost_answer_share: float = env("CLEARING_BANK_SIM_LOST_ANSWER_SHARE", 0.5,
                                   "simulator: of timeouts, recorded but answer lost")
    timeout_ms: int = env("CLEARING_BANK_SIM_TIMEOUT_MS", 0,
                          "simulator: how long a timed-out call hangs")
    callback_delay_ms: int = env("CLEARING_BANK_SIM_CALLBACK_DELAY_MS", 50,
                                 "simulator: mean delay of callback and completion")
    callbacks_max: int = env("CLEARING_BANK_SIM_CALLBACKS_MAX", 10_000,
                             "simulator: orders with callbacks pending per process")

    def __post_init__(self) -> None:
        for name in ("failure_rate", "timeout_rate", "duplicate_callback_rate",
                     "query_only_rate", "processing_rate", "lost_answer_share"):
            check_rate(name, getattr(self, name))
        if self.query_only_rate + self.processing_rate > 1.0:
            raise ValueError("query_only_rate + processing_rate must be at most 1")
        check_bounded("latency_ms", self.latency_ms, 0, 600_000)
        check_bounded("timeout_ms", self.timeout_ms, 0, 600_000)
        check_bounded("callback_delay_ms", self.callback_delay_ms, 0, 3_600_000)
        check_bounded("callbacks_max", self.callbacks_max, 1, 1_000_000)
        check_bounded("seed", self.seed, 0, 2**63 - 1)

    @classmethod
    def from_env(cls, raw_env: Mapping[str, str] | None = None) -> "BankSimSettings":
        try:
            return load(cls, os.environ if raw_env is None else raw_env)
        except SystemExit as exc:
            raise SystemExit(f"CLEARING_BANK_SIM_*: {exc}") from None


@dataclass(frozen=True, slots=True)
class BankSettings(_FromEnv):
    """Which bank the payout worker sends to (`clearing.payout.bank.BankConnector`).

    `connector` "" (unset) means `none` for `clearing serve` and `simulator` under `clearing
    serve --dev` (`make run`): production never pays through the simulator unless told to.
    With `none` the worker sends nothing: payouts wait QUEUED with waiting_reason
    BANK_CONNECTOR_NOT_CONFIGURED and nothing is ever marked paid."""

    connector: str = env("CLEARING_BANK_CONNECTOR", "",
                         "bank of the payout worker: none or simulator",
                         choices=("", *BANK_CONNECTORS),
                         shown="none (simulator under --dev)")
    simulator: BankSimSettings = group(BankSimSettings)

    @property
    def chosen(self) -> str:
        """The connector in effect: `none` when unset."""
        return self.connector or BANK_CONNECTOR_NONE


@dataclass(frozen=True, slots=True)
class PayoutSettings(_FromEnv):
    """Payout defaults for a platform and currency without a payout_configs row, the
    request path's limits, and the payout worker, bank and scheduler of this process. A
    platform with no fee account configured pays no fee."""

    fee_fixed_minor: int = env("CLEARING_PAYOUT_FEE_FIXED_MINOR", 0,
                               "default payout fee, fixed part (minor units)",
                               low=0, high=BIG_MINOR)
    fee_bps: int = env("CLEARING_PAYOUT_FEE_BPS", 0,
                       "default payout fee, basis points of the amount", low=0, high=10_000)
    min_amount_minor: int = env("CLEARING_PAYOUT_MIN_MINOR", 100,
                                "default minimum per payout", low=1, high=BIG_MINOR)
    # At most TRANSFERS_PER_PAYOUT_MAX bank transfers of bank_transfer_max_minor each.
    max_amount_minor: int = env("CLEARING_PAYOUT_MAX_MINOR", 50_000_000_000,
                                "default maximum per payout", low=1, high=BIG_MINOR)
    daily_max_minor: int = env("CLEARING_PAYOUT_DAILY_MAX_MINOR", 100_000_000_000,
                               "default maximum per account and day", low=1, high=BIG_MINOR)
    review_threshold_minor: int = env("CLEARING_PAYOUT_REVIEW_MINOR", 100_000_000,
                                      "default review threshold (above: approval)",
                                      low=0, high=BIG_MINOR)
    bank_transfer_max_minor: int = env("CLEARING_PAYOUT_BANK_MAX_MINOR", 50_000_000,
                                       "default bank limit per transfer",
                                       low=1, high=BIG_MINOR)
    # Payout requests (each holds one pooled connection while its hold commits) checked at
    # once per process; 0: a quarter of the pool.
    concurrency_max: int = env("CLEARING_PAYOUT_CONCURRENCY_MAX", 0,
                               "payout requests checked at once per process",
                               low=0, high=1000, shown="pool max / 4")
    # Whether this process runs the payout worker (and its bank connector).
    worker: bool = env("CLEARING_PAYOUT_WORKER", True,
                       "1: run the payout worker in this process", low=0, high=1)
    worker_limits: WorkerSettings = group(WorkerSettings)
    bank: BankSettings = group(BankSettings)
    scheduler: SchedulerSettings = group(SchedulerSettings)

    def __post_init__(self) -> None:
        if self.max_amount_minor > TRANSFERS_PER_PAYOUT_MAX * self.bank_transfer_max_minor:
            raise ValueError(
                f"CLEARING_PAYOUT_MAX_MINOR must be at most {TRANSFERS_PER_PAYOUT_MAX} bank "
                "transfers of CLEARING_PAYOUT_BANK_MAX_MINOR each")


@dataclass(frozen=True, slots=True)
class ReconSettings(_FromEnv):
    """Reconciliation's 7x24 sweep (`clearing.recon.sweep`, docs/recon.md)."""

    sweep: bool = env("CLEARING_RECON_SWEEP", True,
                      "1: run the 7x24 reconciliation sweep in this process", low=0, high=1)
    sweep_interval_ms: int = env("CLEARING_RECON_SWEEP_INTERVAL_MS", 30_000,
                                 "pause between sweeps that found nothing to check",
                                 low=10, high=3_600_000)
    sweep_batch_max: int = env("CLEARING_RECON_SWEEP_BATCH", 1000,
                               "splits or payouts checked per transaction at most",
                               low=1, high=10_000)
    sweep_batches_max: int = env("CLEARING_RECON_SWEEP_BATCHES", 100,
                                 "batches per kind in one sweep at most", low=1, high=100_000)
    settle_s: int = env("CLEARING_RECON_SETTLE_S", 60,
                        "items are checked once unchanged for this long", low=0, high=86_400)


@dataclass(frozen=True, slots=True)
class RiskSettings(_FromEnv):
    """Risk controls (`clearing.risk`, docs/risk.md): the policy cache and the daily
    ratio-swing job."""

    policy_cache_ms: int = env("CLEARING_RISK_POLICY_CACHE_MS", 1000,
                               "how long a process reuses a platform's active risk policy",
                               low=0, high=600_000)
    swing_job: bool = env("CLEARING_RISK_SWING_JOB", True,
                          "1: run the daily ratio-swing job in this process", low=0, high=1)
    swing_interval_s: int = env("CLEARING_RISK_SWING_INTERVAL_S", 300,
                                "pause between looks for a finished day to compare",
                                low=1, high=86_400)


@dataclass(frozen=True, slots=True)
class EventSettings(_FromEnv):
    """Events and webhooks (`clearing.events`, docs/events.md)."""

    outbox: bool = env("CLEARING_EVENTS_OUTBOX", True,
                       "1: changes write events (0: a benchmark's baseline only)", low=0, high=1)
    sequencer: bool = env("CLEARING_EVENTS_SEQUENCER", True,
                          "1: this process may number events (one at a time does)", low=0, high=1)
    sequencer_interval_ms: int = env("CLEARING_EVENTS_SEQUENCER_INTERVAL_MS", 20,
                                     "pause between the events sequencer's rounds", low=1, high=60_000)
    retention_days: int = env("CLEARING_EVENTS_RETENTION_DAYS", 30,
                              "events older than this are pruned (reading never deletes)", low=1, high=3650)
    watch_poll_ms: int = env("CLEARING_EVENTS_WATCH_POLL_MS", 250,
                             "a live WatchEvents stream polls at least this often", low=10, high=60_000)
    watch_lag_max: int = env("CLEARING_EVENTS_WATCH_LAG_MAX", 100_000,
                             "a live WatchEvents this many events behind ends",
                             low=1, high=100_000_000)
    watch_write_timeout_s: int = env("CLEARING_EVENTS_WATCH_WRITE_TIMEOUT_S", 30,
                                     "a WatchEvents whose client takes nothing this long ends",
                                     low=1, high=3600)
    webhooks: bool = env("CLEARING_WEBHOOKS", True,
                         "1: run the webhook delivery worker in this process", low=0, high=1)
    webhook_interval_ms: int = env("CLEARING_WEBHOOK_INTERVAL_MS", 200,
                                   "pause between looks for due webhook deliveries", low=10, high=60_000)
    webhook_timeout_s: int = env("CLEARING_WEBHOOK_TIMEOUT_S", 10,
                                 "one webhook delivery attempt's HTTP timeout", low=1, high=120)
    webhook_retry_s: int = env("CLEARING_WEBHOOK_RETRY_S", 86_400,
                               "a webhook delivery is retried this long, then failed",
                               low=1, high=7 * 86_400)
    webhook_backoff_max_s: int = env("CLEARING_WEBHOOK_BACKOFF_MAX_S", 3600,
                                     "the longest pause between two webhook attempts", low=1,
                                     high=86_400)
    webhook_backoff_first_ms: int = env("CLEARING_WEBHOOK_BACKOFF_FIRST_MS", 1000,
                                        "pause after a first failed attempt (doubled each time)", low=1, high=3_600_000)
    webhook_lease_s: int = env("CLEARING_WEBHOOK_LEASE_S", 60,
                               "a claimed delivery is retaken after this (above timeout)", low=1,
                               high=3600)
    webhook_allow_http_loopback: bool = env(
        "CLEARING_WEBHOOK_ALLOW_HTTP_LOOPBACK", False,
        "1: http:// endpoints on loopback (dev and tests only)",
        low=0, high=1)
    webhook_pending_max: int = env(
        "CLEARING_WEBHOOK_PENDING_MAX", 100_000,
        "an endpoint with more pending deliveries is disabled",
        low=1, high=WEBHOOK_PENDING_MAX)
    webhook_previous_secret_s: int = env("CLEARING_WEBHOOK_PREVIOUS_SECRET_S", 86_400,
                                         "a rotated-out webhook secret still signs this long", low=0, high=30 * 86_400)


@dataclass(frozen=True, slots=True)
class ReportSettings(_FromEnv):
    """The reports' daily roll-ups (`clearing.reports.rollup`, docs/reports.md)."""

    rollup: bool = env("CLEARING_REPORT_ROLLUP", True,
                       "1: run the reports' daily roll-up job in this process", low=0, high=1)
    rollup_interval_s: int = env("CLEARING_REPORT_ROLLUP_INTERVAL_S", 60,
                                 "pause between roll-up passes", low=1, high=86_400)
    rollup_grace_s: int = env("CLEARING_REPORT_ROLLUP_GRACE_S", 300,
                              "a day is rolled once it ended this long ago", low=0, high=86_400)
    rollup_recheck_days: int = env("CLEARING_REPORT_ROLLUP_RECHECK_DAYS", 2,
                                   "rolled days checked each pass for late rows (re-rolled)",
                                   low=0, high=31)
    rollup_timeout_s: int = env("CLEARING_REPORT_ROLLUP_TIMEOUT_S", 1800,
                                "per-statement timeout of a day's roll-up", low=1, high=86_400)


# CLEARING_TLS_PLATFORM_BINDING: how a client certificate's platform (a URI SAN
# urn:clearing:platform:NAME) restricts the API keys used on its connection (clearing.tls).
TLS_BINDING_OPTIONAL = "optional"
TLS_BINDING_REQUIRED = "required"
TLS_BINDING_OFF = "off"
TLS_BINDINGS = (TLS_BINDING_OPTIONAL, TLS_BINDING_REQUIRED, TLS_BINDING_OFF)


@dataclass(frozen=True, slots=True)
class TlsSettings(_FromEnv):
    """Transport security of the gRPC port (`clearing.tls`, docs/operations.md "TLS"): the
    server's certificate and key, re-read when their files change; with a client CA, mutual
    TLS (a client certificate is required). Without a certificate the server refuses to
    start unless plaintext is allowed explicitly (local development, tests). The files are
    checked together when the server starts (a certificate without its key stops it)."""

    cert: str | None = env("CLEARING_TLS_CERT", None,
                           "server certificate chain (PEM file); set: TLS")
    key: str | None = env("CLEARING_TLS_KEY", None, "server private key (PEM file)")
    client_ca: str | None = env("CLEARING_TLS_CLIENT_CA", None,
                                "CA bundle of client certificates (PEM); set: mutual TLS")
    allow_plaintext: bool = env("CLEARING_TLS_ALLOW_PLAINTEXT", False,
                                "1: serve plaintext when no certificate is set (dev only)",
                                low=0, high=1)
    platform_binding: str = env("CLEARING_TLS_PLATFORM_BINDING", TLS_BINDING_OPTIONAL,
                                "optional|required|off: client certs bind platforms",
                                choices=TLS_BINDINGS)

    @property
    def enabled(self) -> bool:
        return bool(self.cert or self.key or self.client_ca)


@dataclass(frozen=True, slots=True)
class ConsoleSettings(_FromEnv):
    """The back-office web console (`clearing console`, `clearing.console`, docs/console.md):
    a client of the gRPC API at CLEARING_GRPC_ADDR, over TLS as the client commands
    connect (CLEARING_CLIENT_TLS_*, else <data dir>/tls). Sessions are held in the console's
    memory (a restart signs everyone out); the cookie is Secure when the console serves
    HTTPS (CLEARING_CONSOLE_TLS_CERT and _KEY)."""

    addr: str = env("CLEARING_CONSOLE_ADDR", "127.0.0.1:8080",
                    'web console address (host:port); "" = not in make run')
    session_s: int = env("CLEARING_CONSOLE_SESSION_S", 1800,
                         "console session ends after this long idle",
                         low=10, high=86_400)
    session_max_s: int = env("CLEARING_CONSOLE_SESSION_MAX_S", 43_200,
                             "console session ends this long after sign-in", low=10, high=604_800)
    tls_cert: str | None = env("CLEARING_CONSOLE_TLS_CERT", None,
                               "console HTTPS certificate (PEM); set: HTTPS, Secure cookie")
    tls_key: str | None = env("CLEARING_CONSOLE_TLS_KEY", None, "console HTTPS private key")
    call_timeout_s: int = env("CLEARING_CONSOLE_CALL_TIMEOUT_S", 10,
                              "deadline of each gRPC call the console makes", low=1, high=300)


@dataclass(frozen=True, slots=True)
class Settings(_FromEnv):
    """Everything the server reads from its environment."""

    grpc_addr: str = env("CLEARING_GRPC_ADDR", "127.0.0.1:50051",
                         "gRPC listen address (host:port)")
    database_url: str | None = env("CLEARING_DATABASE_URL", None,
                                   "PostgreSQL DSN; `make run` starts one if unset")
    pods: str = env("CLEARING_PODS", "",
                    "more PostgreSQL pods: `1=DSN;2=DSN` (docs/scaling.md)")
    redis_url: str | None = env("CLEARING_REDIS_URL", None,
                                "Redis URL; `make run` starts one if unset")
    redis_prefix: str = env("CLEARING_REDIS_PREFIX", "clearing:",
                            "prefix of every Redis key (no `{` or `}`)")
    redis_cluster: bool = env("CLEARING_REDIS_CLUSTER", False,
                              "1: the Redis URL is a Redis Cluster node (docs/scaling.md)",
                              low=0, high=1)
    workers: int = env("CLEARING_WORKERS", 1, "server processes sharing the port",
                       low=1, high=64)
    metrics_addr: str = env("CLEARING_METRICS_ADDR", "127.0.0.1:9464",
                            'Prometheus HTTP (worker i: port + i); "" = off')
    data_dir: Path = env("CLEARING_DATA_DIR", Path("var"), "embedded services, demo keys",
                         shown="./var")
    db_pool_min: int = env("CLEARING_DB_POOL_MIN", 2, "asyncpg pool size per process, least",
                           low=1, high=100)
    db_pool_max: int = env("CLEARING_DB_POOL_MAX", 16, "asyncpg pool size per process, most",
                           low=1, high=200)
    db_command_timeout_s: int = env("CLEARING_DB_COMMAND_TIMEOUT_S", 30,
                                    "per-statement timeout", low=1, high=3600)
    writer: WriterSettings = group(WriterSettings)
    split_unary: SplitUnarySettings = group(SplitUnarySettings)
    max_concurrent_rpcs: int = env("CLEARING_MAX_CONCURRENT_RPCS", 10_000,
                                   "in-flight RPCs per process", low=1, high=1_000_000)
    max_message_bytes: int = env("CLEARING_MAX_MESSAGE_BYTES", 4 * 1024 * 1024,
                                 "largest request or response message",
                                 low=1024, high=64 * 1024 * 1024)
    grace_s: int = env("CLEARING_GRACE_S", 10, "shutdown grace for in-flight calls",
                       low=0, high=600)
    log_level: str = env("CLEARING_LOG_LEVEL", "INFO", "log level (JSON lines on stderr)",
                         upper=True)
    payout: PayoutSettings = group(PayoutSettings)
    recon: ReconSettings = group(ReconSettings)
    risk: RiskSettings = group(RiskSettings)
    report: ReportSettings = group(ReportSettings)
    tls: TlsSettings = group(TlsSettings)
    events: EventSettings = group(EventSettings)
    console: ConsoleSettings = group(ConsoleSettings)

    def __post_init__(self) -> None:
        if "{" in self.redis_prefix or "}" in self.redis_prefix:
            raise ValueError("CLEARING_REDIS_PREFIX must not hold { or }: the text after it"
                             " is the platform's hash tag (docs/scaling.md)")
        parse_pods(self.pods)  # a malformed CLEARING_PODS stops the server at once

    @property
    def pod_dsns(self) -> dict[int, str]:
        """The pods beyond pod 0 (CLEARING_PODS): {pod id: DSN}."""
        return parse_pods(self.pods)

    def with_(self, **changes: object) -> "Settings":
        return replace(self, **changes)  # type: ignore[arg-type]

    def with_payout(self, **changes: object) -> "Settings":
        """These settings with `changes` to the payout group."""
        return replace(self, payout=replace(self.payout, **changes))


def parse_pods(text: str) -> dict[int, str]:
    """CLEARING_PODS (`1=DSN;2=DSN`) as {pod id: DSN}; ValueError says what is wrong."""
    pods: dict[int, str] = {}
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        pod, sep, dsn = part.partition("=")
        pod, dsn = pod.strip(), dsn.strip()
        if not sep or not pod.isdigit() or not dsn:
            raise ValueError(f"CLEARING_PODS: {part!r} is not POD_ID=DSN")
        pod_id = int(pod)
        if not 1 <= pod_id <= POD_ID_MAX:
            raise ValueError(f"CLEARING_PODS: pod id {pod_id} must be in 1..{POD_ID_MAX}"
                             " (pod 0 is CLEARING_DATABASE_URL)")
        if pod_id in pods:
            raise ValueError(f"CLEARING_PODS: pod {pod_id} is given twice")
        pods[pod_id] = dsn
    return pods


def client_api_key(raw_env: Mapping[str, str] | None = None) -> str:
    """The client commands' API key from CLEARING_API_KEY ("" if unset): a credential of the
    `clearing` client, not a server setting, so it is not in the tree."""
    return (os.environ if raw_env is None else raw_env).get("CLEARING_API_KEY", "")


def client_admin_key(raw_env: Mapping[str, str] | None = None) -> str:
    """The admin commands' admin key from CLEARING_ADMIN_KEY ("" if unset): a credential of
    the `clearing` client (PlatformService), not a server setting."""
    return (os.environ if raw_env is None else raw_env).get("CLEARING_ADMIN_KEY", "")


@dataclass(frozen=True, slots=True)
class ClientTls:
    """How the client commands reach the server (not server settings, so not in the tree):
    CLEARING_CLIENT_TLS_CA (the CA that signed the server's certificate),
    CLEARING_CLIENT_TLS_CERT / CLEARING_CLIENT_TLS_KEY (a client certificate for mutual TLS)
    and CLEARING_CLIENT_PLAINTEXT=1 (no TLS). Unset, the commands use <data dir>/tls from
    `make run` when it is there (clearing.cli.client)."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    plaintext: bool = False


def client_tls(raw_env: Mapping[str, str] | None = None) -> ClientTls:
    """The client commands' TLS files from their variables (see ClientTls)."""
    e = os.environ if raw_env is None else raw_env
    return ClientTls(e.get("CLEARING_CLIENT_TLS_CA") or None,
                     e.get("CLEARING_CLIENT_TLS_CERT") or None,
                     e.get("CLEARING_CLIENT_TLS_KEY") or None,
                     e.get("CLEARING_CLIENT_PLAINTEXT", "").strip() == "1")


assert len({var.name for var, _ in variables()}) == len(variables()), "a variable twice"

if __name__ == "__main__":
    print(table())
