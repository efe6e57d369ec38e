"""PostgreSQL pods: a platform's whole ledger lives in one PostgreSQL (docs/scaling.md,
"Platform pods").

- Pod 0 is the home database (CLEARING_DATABASE_URL): platforms, API keys, admin keys and
  the routing table `platform_pods` live there. More pods are CLEARING_PODS
  (`1=postgresql://...;2=...`). Every pod runs every migration.
- A platform without a routing row lives in pod 0, so a deployment of one pod is exactly
  the single database it always was.
- Every call touches one pod: the interceptor resolves the caller's platform to its pod
  (`Pods.enter`, a dictionary look-up) and sets `CURRENT` for the call; the servicers'
  pool and ledger writer (`RoutedPool`, `RoutedWriter`) send each use to the pods' own.
  There is no transaction across pods.
- The routing table is re-read every POD_ROUTES_POLL_S; a process whose last good read is
  older than POD_ROUTES_BOUND_S reads it before routing (so a change reaches every process
  within the bound: `clearing pods move` relies on it).
- Every sequence of pod N starts at N * POD_ID_SPAN, so ids are unique across pods and a
  moved platform keeps them.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from clearing.errors import Unavailable
from clearing.limits import POD_ID_SPAN, POD_ROUTES_BOUND_S, POD_ROUTES_POLL_S
from clearing.reasons import Reason
from clearing.tasks import cancel_and_wait

log = logging.getLogger("clearing.pods")

HOME = 0
# The pod of the current call (set by the interceptor; background work outside a call
# uses the home pod or is given its pod's own pool).
CURRENT: contextvars.ContextVar[int] = contextvars.ContextVar("clearing_pod", default=HOME)

# Whether the current context is a call routed by `Pods.enter` (background work is not).
ROUTED: contextvars.ContextVar[bool] = contextvars.ContextVar("clearing_pod_routed",
                                                             default=False)

_SQL_ROUTES = "SELECT platform_id, pod_id, moving FROM platform_pods"


async def claim(conn: asyncpg.Connection, pod_id: int) -> None:
    """Mark a migrated database as pod `pod_id` (first time: and start its sequences at
    pod_id * POD_ID_SPAN); refuse a database that is another pod."""
    async with conn.transaction():
        await conn.execute("LOCK TABLE pod_self IN EXCLUSIVE MODE")
        found = await conn.fetchval("SELECT pod_id FROM pod_self")
        if found is None:
            await conn.execute("INSERT INTO pod_self (pod_id) VALUES ($1)", pod_id)
            if pod_id != HOME:
                await offset_sequences(conn, pod_id)
        elif found != pod_id:
            raise SystemExit(f"the database given for pod {pod_id} is pod {found}: check "
                             "CLEARING_PODS and CLEARING_DATABASE_URL")


async def offset_sequences(conn: asyncpg.Connection, pod_id: int) -> None:
    """Every sequence of the database at least at pod_id * POD_ID_SPAN."""
    floor = pod_id * POD_ID_SPAN
    for row in await conn.fetch("SELECT schemaname, sequencename, last_value FROM pg_sequences"
                                " WHERE schemaname = current_schema()"):
        if (row["last_value"] or 0) < floor:
            await conn.execute("SELECT setval($1::regclass, $2)",
                               f'"{row["schemaname"]}"."{row["sequencename"]}"', floor)


@dataclass(frozen=True, slots=True)
class Route:
    pod_id: int
    moving: bool


_HOME_ROUTE = Route(HOME, False)


class Routes:
    """The routing table (home pod), cached in the process and re-read every
    POD_ROUTES_POLL_S."""

    def __init__(self, home_pool: asyncpg.Pool) -> None:
        self._pool = home_pool
        self._routes: dict[int, Route] = {}
        self._read_at = float("-inf")  # monotonic start of the last good read
        self._poller: asyncio.Task | None = None
        self._failing = False

    async def refresh(self) -> None:
        started = time.monotonic()
        rows = await self._pool.fetch(_SQL_ROUTES)
        self._routes = {r[0]: Route(r[1], r[2]) for r in rows}
        self._read_at = started

    @property
    def stale(self) -> bool:
        """The last good read is older than POD_ROUTES_BOUND_S: read again before routing."""
        return time.monotonic() - self._read_at > POD_ROUTES_BOUND_S

    def route(self, platform_id: int) -> Route:
        return self._routes.get(platform_id, _HOME_ROUTE)

    def start(self) -> None:
        if self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll(),
                                                                  name="pod-routes")

    async def stop(self) -> None:
        if self._poller is not None:
            await cancel_and_wait(self._poller)
            self._poller = None

    async def _poll(self) -> None:
        while True:
            try:
                await self.refresh()
                if self._failing:
                    log.info("pod routes poll works again")
                self._failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - calls then read the table themselves
                if not self._failing:
                    log.warning("pod routes poll failed (%r)", exc)
                self._failing = True
            await asyncio.sleep(POD_ROUTES_POLL_S)


@dataclass(slots=True)
class Pod:
    """One PostgreSQL pod as this process holds it."""

    pod_id: int
    dsn: str
    pool: asyncpg.Pool
    writer: Any = None  # its LedgerWriter (clearing.ledger.writer), set by the server


class Pods:
    """The pods of this process and the resolution of a platform to its pod."""

    def __init__(self, pods: dict[int, Pod], routes: Routes) -> None:
        self.by_id = pods
        self.routes = routes
        self.home = pods[HOME]
        self.pools = {i: p.pool for i, p in pods.items()}
        self.writers = {i: p.writer for i, p in pods.items()}

    @property
    def many(self) -> bool:
        return len(self.by_id) > 1

    def enter(self, platform_id: int) -> int:
        """Route the current call of `platform_id` to its pod (sets CURRENT); refuses with
        UNAVAILABLE while the platform moves or when its pod is not configured here. The
        caller reads the routing table first when it is stale (`routes.stale`): no call is
        routed on a table older than POD_ROUTES_BOUND_S."""
        route = self.routes.route(platform_id)
        if route.moving:
            raise Unavailable(f"platform {platform_id} is being moved between pods; retry "
                              "later with the same request id", reason=Reason.PLATFORM_MOVING)
        if route.pod_id not in self.by_id:
            raise Unavailable(f"platform {platform_id} lives on pod {route.pod_id}, which this "
                              "server has no DSN for (CLEARING_PODS)",
                              reason=Reason.POD_NOT_CONFIGURED)
        if route.pod_id != HOME:
            CURRENT.set(route.pod_id)
        ROUTED.set(True)
        return route.pod_id

    def routed_pool(self) -> Any:
        """What the servicers use as their pool: the home pool itself with one pod."""
        return RoutedPool(self.pools) if self.many else self.home.pool

    def routed_writer(self) -> Any:
        return RoutedLedgerWriter(self.writers, self.routes) if self.many else self.home.writer

    def routed(self, per_pod: dict[int, Any]) -> Any:
        """Any per-pod object (the events hubs) as the servicers use it: the current call's
        pod's; the home pod's itself with one pod."""
        return RoutedWriter(per_pod) if self.many else per_pod[HOME]


class RoutedPool:
    """An asyncpg pool stand-in sending every use to the current call's pod's pool."""

    __slots__ = ("_pools",)

    def __init__(self, pools: dict[int, asyncpg.Pool]) -> None:
        self._pools = pools

    def acquire(self, *args: Any, **kwargs: Any) -> Any:
        return self._pools[CURRENT.get()].acquire(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pools[CURRENT.get()], name)


class RoutedWriter:
    """A ledger writer stand-in sending every posting to the current call's pod's writer
    (and the same for any object of which each pod has its own)."""

    __slots__ = ("_writers",)

    def __init__(self, writers: dict[int, Any]) -> None:
        self._writers = writers

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writers[CURRENT.get()], name)


class RoutedLedgerWriter(RoutedWriter):
    """The servicers' ledger writer (`RoutedWriter`) that also refuses a call's postings of
    a platform no longer routed to the call's pod (UNAVAILABLE, PLATFORM_MOVING): a call
    routed once, when it began, and still booking (a SplitStream kept open, a group of
    unary calls) would otherwise write to the source pod while its platform moves or after
    it moved (an archive no call reads: money booked there is lost to the platform).
    Background work (not a routed call) is given its pod's own writer and is not checked."""

    __slots__ = ("_routes",)

    def __init__(self, writers: dict[int, Any], routes: Routes) -> None:
        super().__init__(writers)
        self._routes = routes

    async def submit(self, posting: Any) -> Any:
        writer = self._writers[CURRENT.get()]
        self._check((posting,))
        return await writer.submit(posting)

    async def submit_many(self, postings: Any) -> Any:
        writer = self._writers[CURRENT.get()]
        self._check(postings)
        return await writer.submit_many(postings)

    def _check(self, postings: Any) -> None:
        if not ROUTED.get():
            return
        pod = CURRENT.get()
        for platform_id in {p.platform_id for p in postings}:
            route = self._routes.route(platform_id)
            if route.moving or route.pod_id != pod:
                raise Unavailable(
                    f"platform {platform_id} is being moved between pods (or moved); retry "
                    "with the same request id on a new call", reason=Reason.PLATFORM_MOVING)
