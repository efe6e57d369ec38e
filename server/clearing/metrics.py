"""Prometheus metrics, served on their own HTTP port (CLEARING_METRICS_ADDR)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

_LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

RPC_CALLS = Counter("clearing_rpc_calls_total", "Finished RPCs", ["method", "code"])
RPC_LATENCY = Histogram("clearing_rpc_latency_seconds", "RPC latency", ["method"],
                        buckets=_LATENCY_BUCKETS_S)
WRITER_BATCH_SIZE = Histogram(
    "clearing_writer_batch_size", "Postings per group commit",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000))
WRITER_FLUSH_SECONDS = Histogram("clearing_writer_flush_seconds",
                                 "Time to commit one batch", buckets=_LATENCY_BUCKETS_S)
# The balance row lock of a batch (issue 16): from when the writer holds the lock of the
# accounts that may go negative (the platforms' custodial accounts, debited by every split)
# to the end of COMMIT; and how long the statement that takes it ran (its wait, plus its
# own work). CLEARING_WRITER_LOCK_LATE says which statement that is.
_LOCK_BUCKETS_S = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1, 2.5)
WRITER_LOCK_HOLD_SECONDS = Histogram(
    "clearing_writer_lock_hold_seconds",
    "Per batch: the balance row lock held, from the locking statement to the end of COMMIT",
    buckets=_LOCK_BUCKETS_S)
WRITER_LOCK_WAIT_SECONDS = Histogram(
    "clearing_writer_lock_wait_seconds",
    "Per batch: the statement that takes the balance row locks (the wait, and its own work)",
    buckets=_LOCK_BUCKETS_S)
WRITER_LOCK_COMMIT_SECONDS = Histogram(
    "clearing_writer_lock_commit_seconds",
    "Per batch that took the balance row locks: its COMMIT (the WAL flush), part of the hold",
    buckets=_LOCK_BUCKETS_S)
WRITER_QUEUE_DEPTH = Gauge("clearing_writer_queue_depth", "Postings waiting for a flush")
WRITER_REJECTED = Counter("clearing_writer_rejected_total",
                          "Postings refused because the queue was full")
WRITER_BATCH_RETRIES = Counter("clearing_writer_batch_retries_total",
                               "Batches retried after a transient database failure")
DB_POOL_SIZE = Gauge("clearing_db_pool_connections", "asyncpg pool connections", ["state"])
SPLIT_STREAM_IN_FLIGHT = Gauge(
    "clearing_split_stream_in_flight",
    "SplitStream orders read and not yet answered, all streams of the process")
SPLIT_UNARY_GROUP_SIZE = Histogram(
    "clearing_split_unary_group_size",
    "Unary Split calls split together per group (1: a call that found its platform idle)",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000))
SPLIT_UNARY_PENDING = Gauge("clearing_split_unary_pending",
                            "Unary Split calls waiting for their group or being split")
SPLIT_UNARY_REFUSED = Counter(
    "clearing_split_unary_refused_total",
    "Unary Split calls refused RESOURCE_EXHAUSTED: CLEARING_SPLIT_UNARY_QUEUE_MAX pending")

BANK_CALLS = Counter(
    "clearing_bank_calls_total",
    "Calls of the payout worker to the bank, by call (submit, query) and result (succeeded,"
    " failed, processing, not_found, no_answer)", ["call", "result"])
PAYOUT_BANK_CONNECTOR_CONFIGURED = Gauge(
    "clearing_payout_bank_connector_configured",
    "1: this process's payout worker sends to a bank (CLEARING_BANK_CONNECTOR); 0: it sends"
    " nothing, payouts wait QUEUED (waiting_reason BANK_CONNECTOR_NOT_CONFIGURED)")
PAYOUT_JOBS_IN_FLIGHT = Gauge("clearing_payout_jobs_in_flight",
                              "Bank transfers the payout worker is working on now")

RECON_SWEEP_CHECKED = Counter(
    "clearing_recon_sweep_checked_total",
    "Items the 7x24 reconciliation sweep checked, by kind (split, payout)", ["kind"])
RECON_SWEEP_DISCREPANCIES = Counter(
    "clearing_recon_sweep_discrepancies_total",
    "Discrepancies the 7x24 reconciliation sweep raised (an alert each), by class"
    " (SPLIT_LEDGER_MISMATCH, PAYOUT_BANK_MISMATCH)", ["class"])

WEBHOOK_ENDPOINTS_DISABLED = Counter(
    "clearing_webhook_endpoints_disabled_total",
    "Webhook endpoints the core disabled, by reason (backlog: more deliveries pending than"
    " CLEARING_WEBHOOK_PENDING_MAX)", ["reason"])

RISK_EVENTS_OPEN = Gauge(
    "clearing_risk_events_open",
    "Risk events waiting for a reviewer (OPEN or RESOLUTION_PROPOSED), every platform; read"
    " by the risk job of this process every CLEARING_RISK_SWING_INTERVAL_S")
RISK_SWING_EVENTS = Counter("clearing_risk_swing_events_total",
                            "Risk events the daily ratio-swing job opened")


def watch(pool, writer) -> None:
    """Read pool usage and queue depth when scraped (nothing to update on the hot path)."""
    DB_POOL_SIZE.labels("open").set_function(pool.get_size)
    DB_POOL_SIZE.labels("idle").set_function(pool.get_idle_size)
    DB_POOL_SIZE.labels("max").set_function(pool.get_max_size)
    WRITER_QUEUE_DEPTH.set_function(lambda: writer.queue_depth)


def serve(addr: str, worker_index: int) -> int | None:
    """Start the metrics HTTP server on addr's port + worker_index; returns the port."""
    if not addr:
        return None
    host, _, port = addr.rpartition(":")
    actual = int(port) + worker_index if int(port) else 0
    server, _thread = start_http_server(actual, addr=host or "127.0.0.1")
    return server.server_port
