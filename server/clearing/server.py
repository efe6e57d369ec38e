"""The gRPC server process: wiring, start, and graceful shutdown.

Shutdown (SIGTERM/SIGINT): health goes NOT_SERVING, the server stops accepting calls and
gives in-flight calls `grace_s` to finish, the ledger writer commits what it has queued,
then Redis and the database pool close. Nothing acknowledged is lost: a write is answered
only after its commit.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import signal
from dataclasses import dataclass

import asyncpg
import grpc
import redis.asyncio as aioredis
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from clearing import (audit, db, logs, metrics, pod_jobs, pods as pod_routing, rediskeys,
                      redisconn, tls)
from clearing.api.auth import KeyStore
from clearing.api.interceptor import ClearingInterceptor
from clearing.api.ledger import METHOD_ROLES, LedgerServicer
from clearing.api import audit as audit_api
from clearing.api import event as event_api
from clearing.api import payout as payout_api
from clearing.api import platform as platform_api
from clearing.api import reconciliation as recon_api
from clearing.api import report as report_api
from clearing.api import risk as risk_api
from clearing.api import split as split_api
from clearing.clock import Clock
from clearing.tasks import cancel_and_wait
from clearing.config import BANK_CONNECTOR_NONE, BANK_CONNECTOR_SIMULATOR, Settings
from clearing.events import outbox
from clearing.events.feed import Hub
from clearing.events.sequencer import Sequencer
from clearing.events.webhooks import Deliverer
from clearing.ledger.writer import LedgerWriter
from clearing.payout import store as payout_store
from clearing.payout.bank import BankConnector
from clearing.payout.schedule import Scheduler
from clearing.payout.service import PayoutDeps
from clearing.payout.worker import PayoutWorker
from clearing.recon.service import ReconDeps
from clearing.recon.sweep import Sweeper
from clearing.risk.counting import RiskCounters
from clearing.risk.daily_swing import SwingJob
from clearing.risk.gate import RiskGate
from clearing.risk.policy_store import PolicyCache
from clearing.risk.resolve import ResolveDeps
from clearing.reports.rollup import RollupJob
from clearing.rules import compile as plans
from clearing.api import split_upgrade
from clearing.splits import store as split_store
from clearing.rules.cache import PlanCache
from clearing.rules.counters import Counters
from clearing.rules.store import PgSource
from clearing.v1 import platform_pb2, platform_pb2_grpc
from clearing.v1 import audit_pb2, audit_pb2_grpc
from clearing.v1 import (ledger_pb2, ledger_pb2_grpc, payout_pb2, payout_pb2_grpc,
                         reconciliation_pb2, reconciliation_pb2_grpc, report_pb2,
                         report_pb2_grpc, risk_pb2, risk_pb2_grpc, split_pb2, split_pb2_grpc)
from clearing.v1 import event_pb2, event_pb2_grpc

log = logging.getLogger("clearing.server")

# Every clearing service the server registers (listed by reflection and health).
SERVICE_NAMES = tuple(pb.DESCRIPTOR.services_by_name[name].full_name for pb, name in (
    (ledger_pb2, "LedgerService"), (split_pb2, "SplitService"),
    (payout_pb2, "PayoutService"), (reconciliation_pb2, "ReconciliationService"),
    (report_pb2, "ReportService"), (risk_pb2, "RiskService"),
    (platform_pb2, "PlatformService"), (audit_pb2, "AuditService"),
    (event_pb2, "EventService")))
REDIS_CONNECT_TIMEOUT_S = 2.0
WORKER_JOIN_TIMEOUT_S = 60.0
# The young generation's count is tracked objects allocated less those freed: an order's
# objects are freed by reference counting when its call is answered (no cycles:
# tests/unit/splits/test_postings.py), so under load the count stays below this and the
# collector does not run over the orders in flight (docs/scaling.md, "The writer and the
# batch path"); at 20,000 it ran every few batches, each pass over objects still alive.
GC_GEN0_THRESHOLD = 100_000
# Calls gRPC core may queue beyond twice the concurrency limit before the loop takes them.
PENDING_HEADROOM = 10_000


@dataclass
class Running:
    """A started server and what it owns."""

    server: grpc.aio.Server
    port: int
    pool: asyncpg.Pool
    redis: aioredis.Redis | None
    writer: LedgerWriter
    health: health.aio.HealthServicer
    settings: Settings
    plans: PlanCache | None = None
    payouts: PayoutDeps | None = None
    payout_worker: PayoutWorker | None = None
    bank: BankConnector | None = None
    scheduler: Scheduler | None = None
    keys: KeyStore | None = None
    sweeper: Sweeper | None = None
    swing_job: SwingJob | None = None
    rollup: RollupJob | None = None
    events: "_Events | None" = None
    redis_fold: asyncio.Task | None = None
    pods: pod_routing.Pods | None = None
    pod_jobs: list[pod_jobs.PodJobs] | None = None  # the jobs of the pods beyond the home

    async def stop(self) -> None:
        """Graceful shutdown; see the module docstring."""
        log.info("shutting down", extra={"grace_s": self.settings.grace_s})
        await self.health.enter_graceful_shutdown()
        if self.events is not None:  # live WatchEvents streams end now, with their cursor
            self.events.close_streams()
        await self.server.stop(self.settings.grace_s)
        if self.sweeper is not None:
            await self.sweeper.stop()
        if self.swing_job is not None:
            await self.swing_job.stop()
        if self.rollup is not None:
            await self.rollup.stop()
        if self.events is not None:
            await self.events.stop()
        if self.scheduler is not None:  # it makes payouts through the writer
            await self.scheduler.stop()
        if self.payout_worker is not None:  # it posts through the writer: stop it first
            await self.payout_worker.stop()
        if self.bank is not None:
            await self.bank.close()
        for jobs in self.pod_jobs or ():
            await jobs.stop()
        await self.writer.drain_and_stop()
        extra = [p for i, p in self.pods.by_id.items() if i != pod_routing.HOME] \
            if self.pods is not None else []
        for pod in extra:
            await pod.writer.drain_and_stop()
        if self.pods is not None:
            await self.pods.routes.stop()
        if self.plans is not None:
            await self.plans.stop()
        if self.keys is not None:
            await self.keys.stop()
        if self.redis_fold is not None:
            await cancel_and_wait(self.redis_fold)
        if self.redis is not None:
            await self.redis.aclose()
        await self.pool.close()
        for pod in extra:
            await pod.pool.close()
        log.info("stopped")


@dataclass
class _Events:
    """The process's events machinery (clearing.events): the live streams' hub, the
    sequencer and the webhook delivery worker."""

    hub: Hub
    sequencer: Sequencer | None
    deliverer: Deliverer | None
    pod_hubs: tuple[Hub, ...] = ()  # the live streams' hubs of the pods beyond the home

    def start(self) -> None:
        for job in (self.sequencer, self.deliverer):
            if job is not None:
                job.start()

    def close_streams(self) -> None:
        for hub in (self.hub, *self.pod_hubs):
            hub.close_streams()

    async def stop(self) -> None:
        for job in (self.deliverer, self.sequencer):
            if job is not None:
                await job.stop()
        for hub in (self.hub, *self.pod_hubs):
            await hub.stop()


async def _connect_redis(settings: Settings) -> aioredis.Redis | None:
    if not settings.redis_url:
        return None
    client = redisconn.connect(settings.redis_url, socket_timeout_s=REDIS_CONNECT_TIMEOUT_S,
                               cluster=settings.redis_cluster)
    try:
        await client.ping()
    except (aioredis.RedisError, OSError) as exc:  # Redis must never stop the ledger
        log.warning("redis not reachable at start; continuing without it: %s", exc)
    return client


def _fold_legacy_keys(settings: Settings, client: aioredis.Redis | None) -> asyncio.Task | None:
    """Keys an older version wrote on a single Redis are folded into the per-platform layout
    in the background (clearing/rediskeys.py); a cluster never held them."""
    if client is None or settings.redis_cluster:
        return None
    return asyncio.get_running_loop().create_task(
        rediskeys.fold_legacy_quietly(client, settings.redis_prefix), name="redis-fold-legacy")


def _pending_max(settings: Settings) -> int:
    """Calls gRPC core may hold before the loop picks them up: more than any burst the
    concurrency limiter has to refuse."""
    return 2 * settings.max_concurrent_rpcs + PENDING_HEADROOM


def _bank_connector(settings: Settings, pool: asyncpg.Pool,
                    clock: Clock) -> BankConnector | None:
    """The bank the payout worker sends to (CLEARING_BANK_CONNECTOR), None for `none`.
    The simulator (and the dev package) is imported only when chosen."""
    bank = settings.payout.bank
    if bank.chosen == BANK_CONNECTOR_SIMULATOR:
        from clearing.dev.bank_sim import BankSimulator

        log.info("bank connector: the bank simulator (never a real bank)")
        return BankSimulator(pool, bank.simulator, clock)
    if bank.chosen != BANK_CONNECTOR_NONE:  # clearing.config refuses other names already
        raise SystemExit(f"CLEARING_BANK_CONNECTOR={bank.chosen!r}: no such connector")
    log.warning("no bank connector (CLEARING_BANK_CONNECTOR=none): the payout worker sends "
                "nothing; payouts wait QUEUED with waiting_reason "
                "BANK_CONNECTOR_NOT_CONFIGURED")
    return None


def _ledger_writer(pool: asyncpg.Pool, settings: Settings, clock: Clock) -> LedgerWriter:
    """A pod's ledger writer (one per pod and process)."""
    return LedgerWriter(pool, settings.writer, clock,
                        sinks={audit.SINK_NAME: audit.AuditSink(),
                               split_store.SINK_NAME: split_store.SplitSink(),
                               split_store.ACTION_SINK_NAME: split_store.ActionSink(),
                               payout_store.SINK_NAME: payout_store.PayoutSink()})


async def _prepare_pod(pod: pod_routing.Pod) -> None:
    """Migrate a pod's database and check (or write, the first time) which pod it is."""
    async with pod.pool.acquire() as conn:
        await db.migrate(conn)
        await split_upgrade.upgrade(conn)
        await pod_routing.claim(conn, pod.pod_id)


async def start(settings: Settings, *, migrate: bool = True,
                clock: Clock | None = None) -> Running:
    """Start a server on settings.grpc_addr (port 0 picks a free port).

    The payout worker runs when settings.payout.worker is set, with the bank connector
    settings.payout.bank chooses (none: it sends nothing), the payout scheduler when
    settings.payout.scheduler.enabled, and the reconciliation sweep when
    settings.recon.sweep."""
    if not settings.database_url:
        raise SystemExit("CLEARING_DATABASE_URL is not set (use `clearing serve --dev` for an "
                         "embedded database)")
    # TLS (or plaintext, only when allowed explicitly) is settled before anything starts.
    credentials = tls.server_credentials(settings.tls)
    pool = await db.create_pool(settings.database_url, min_size=settings.db_pool_min,
                                max_size=settings.db_pool_max,
                                command_timeout_s=settings.db_command_timeout_s)
    pod_set = {pod_routing.HOME: pod_routing.Pod(pod_routing.HOME, settings.database_url, pool)}
    try:
        if migrate:
            await _prepare_pod(pod_set[pod_routing.HOME])
        for pod_id, dsn in settings.pod_dsns.items():  # every pod runs every migration
            pod_set[pod_id] = pod_routing.Pod(pod_id, dsn, await db.create_pool(
                dsn, min_size=settings.db_pool_min, max_size=settings.db_pool_max,
                command_timeout_s=settings.db_command_timeout_s))
            await _prepare_pod(pod_set[pod_id])
    except BaseException:
        for pod in pod_set.values():
            await pod.pool.close()
        raise
    redis_client = await _connect_redis(settings)
    clock = clock or Clock()  # tests pass a ManualClock
    event_api.register_encoders()
    outbox.configure(enabled=settings.events.outbox)
    for pod in pod_set.values():
        pod.writer = _ledger_writer(pod.pool, settings, clock)
        pod.writer.start()
    writer = pod_set[pod_routing.HOME].writer
    routes = pod_routing.Routes(pool)
    await routes.refresh()
    routes.start()
    pods = pod_routing.Pods(pod_set, routes)
    home_pool, home_writer = pool, writer
    # The servicers' pool and writer: each call's own pod's (the home pod's with one pod).
    pool, writer = pods.routed_pool(), pods.routed_writer()
    payout_deps = PayoutDeps(pool, writer, clock, settings.payout)
    bank: BankConnector | None = None
    payout_worker: PayoutWorker | None = None
    if settings.payout.worker:
        bank = _bank_connector(settings, home_pool, clock)
        if bank is not None:
            await bank.start()
        payout_worker = PayoutWorker(payout_deps, bank, settings.payout.worker_limits)
    metrics.PAYOUT_BANK_CONNECTOR_CONFIGURED.set(1 if bank is not None else 0)
    metrics.watch(home_pool, home_writer)
    plan_cache = PlanCache(PgSource(pool), plans.from_bytes, redis_client,
                           settings.redis_prefix)
    plan_cache.start()
    roles = dict(METHOD_ROLES)
    roles.update(split_api.METHOD_ROLES)
    roles.update(payout_api.METHOD_ROLES)
    roles.update(recon_api.METHOD_ROLES)
    roles.update(report_api.METHOD_ROLES)
    roles.update(risk_api.METHOD_ROLES)
    roles.update(platform_api.METHOD_ROLES)
    roles.update(audit_api.METHOD_ROLES)
    roles.update(event_api.METHOD_ROLES)
    keys = KeyStore(home_pool)
    keys.start()  # its poll refuses a revoked key within a second
    calls = ClearingInterceptor(keys, roles, mutual_tls=settings.tls.client_ca is not None,
                                binding=settings.tls.platform_binding, pods=pods)
    server = grpc.aio.server(
        options=[("grpc.so_reuseport", 1),
                 # gRPC core cancels calls (status CANCELLED) beyond this many received but
                 # not yet picked up by the event loop; a burst must reach the limiter of
                 # maximum_concurrent_rpcs instead, which answers RESOURCE_EXHAUSTED
                 # (tests/adversity/test_overload.py).
                 ("grpc.server.max_pending_requests", _pending_max(settings)),
                 ("grpc.server.max_pending_requests_hard_limit", _pending_max(settings)),
                 ("grpc.max_receive_message_length", settings.max_message_bytes),
                 ("grpc.max_send_message_length", settings.max_message_bytes),
                 ("grpc.keepalive_time_ms", 60_000)],
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs)
    calls.register(server, ledger_pb2_grpc.add_LedgerServiceServicer_to_server,
                   LedgerServicer(pool, writer))
    policies = PolicyCache(pool, settings.risk.policy_cache_ms / 1000)
    risk_gate = RiskGate(policies, RiskCounters(pool, redis_client, settings.redis_prefix))
    split_servicer = split_api.SplitServicer(pool, writer, plan_cache,
                                             Counters(redis_client, settings.redis_prefix),
                                             clock, risk_gate, settings.split_unary)
    calls.register(server, split_pb2_grpc.add_SplitServiceServicer_to_server, split_servicer)
    calls.register(server, payout_pb2_grpc.add_PayoutServiceServicer_to_server,
                   payout_api.PayoutServicer(payout_deps))
    calls.register(server, reconciliation_pb2_grpc.add_ReconciliationServiceServicer_to_server,
                   recon_api.ReconciliationServicer(ReconDeps(
                       pool, clock, writer=writer, split_now=split_servicer.split_order)))
    calls.register(server, report_pb2_grpc.add_ReportServiceServicer_to_server,
                   report_api.ReportServicer(pool, clock))
    calls.register(server, risk_pb2_grpc.add_RiskServiceServicer_to_server,
                   risk_api.RiskServicer(pool, policies, ResolveDeps(pool, writer)))
    calls.register(server, platform_pb2_grpc.add_PlatformServiceServicer_to_server,
                   platform_api.PlatformServicer(home_pool, settings.payout,
                                                 routes if pods.many else None))
    calls.register(server, audit_pb2_grpc.add_AuditServiceServicer_to_server,
                   audit_api.AuditServicer(pool))
    hubs = {i: Hub(pod.dsn) for i, pod in pod_set.items()}  # each pod's LISTEN
    for hub in hubs.values():
        await hub.start()
    calls.register(server, event_pb2_grpc.add_EventServiceServicer_to_server,
                   event_api.EventServicer(pool, settings.events, pods.routed(hubs)))
    events = _Events(
        hubs[pod_routing.HOME], Sequencer(settings.database_url, settings.events)
        if settings.events.sequencer else None,
        Deliverer(home_pool, settings.events, clock, event_api.webhook_body)
        if settings.events.webhooks else None,
        tuple(h for i, h in hubs.items() if i != pod_routing.HOME))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME), server)
    port = (server.add_secure_port(settings.grpc_addr, credentials) if credentials is not None
            else server.add_insecure_port(settings.grpc_addr))
    if port == 0:
        raise SystemExit(f"cannot listen on {settings.grpc_addr}")
    await server.start()
    scheduler_settings = settings.payout.scheduler
    scheduler = Scheduler(payout_deps, scheduler_settings) if scheduler_settings.enabled \
        else None
    if payout_worker is not None:
        payout_worker.start()
    if scheduler is not None:
        scheduler.start()
    sweeper = Sweeper(home_pool, clock, settings.recon) if settings.recon.sweep else None
    if sweeper is not None:
        sweeper.start()
    swing_job = SwingJob(home_pool, clock, settings.risk) if settings.risk.swing_job else None
    if swing_job is not None:
        swing_job.start()
    rollup = RollupJob(home_pool, clock, settings.report) if settings.report.rollup else None
    if rollup is not None:
        rollup.start()
    events.start()
    extra_jobs = [await pod_jobs.start(pod, settings, clock, home_pool,
                                       lambda p: _bank_connector(settings, p, clock),
                                       event_api.webhook_body)
                  for i, pod in sorted(pod_set.items()) if i != pod_routing.HOME]
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return Running(server, port, home_pool, redis_client, home_writer, health_servicer, settings,
                   plan_cache, payout_deps, payout_worker, bank, scheduler, keys, sweeper,
                   swing_job, rollup, events, _fold_legacy_keys(settings, redis_client),
                   pods, extra_jobs)


async def serve(settings: Settings, worker_index: int = 0) -> None:
    """Run one server process until SIGTERM or SIGINT."""
    running = await start(settings)
    # Objects alive after start-up (modules, protobuf descriptors, plans) never die: move
    # them out of the collector's sight, and collect the young generation less often, so
    # that full collections do not stop the loop for tens of milliseconds under load.
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)
    metrics_port = metrics.serve(settings.metrics_addr, worker_index)
    log.info("serving", extra={"addr": settings.grpc_addr, "port": running.port,
                               "worker": worker_index, "pid": os.getpid(),
                               "metrics_port": metrics_port,
                               "bank_connector": settings.payout.bank.chosen})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await running.stop()


def run_process(settings: Settings, worker_index: int = 0) -> None:
    """Entry point of one server process (uvloop)."""
    import uvloop

    logs.setup(settings.log_level)
    uvloop.run(serve(settings, worker_index))


def run_workers(settings: Settings) -> None:
    """Run `settings.workers` processes sharing the port (SO_REUSEPORT); the parent forwards
    SIGTERM/SIGINT and waits for them."""
    if settings.workers == 1:
        run_process(settings)
        return
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=run_process, args=(settings, i), name=f"clearing-worker-{i}")
             for i in range(settings.workers)]
    for p in procs:
        p.start()

    def forward(signum, _frame) -> None:
        for p in procs:
            if p.is_alive() and p.pid:
                os.kill(p.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for p in procs:
        p.join()
