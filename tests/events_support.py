"""Helpers for the events tests: EventService through the generated stubs, a platform with
the `held` rule set filed, and a real HTTP receiver on 127.0.0.1 (aiohttp) that records
the webhook deliveries it gets."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import grpc
from aiohttp import web

from clearing.v1 import event_pb2 as pb
from clearing.v1 import event_pb2_grpc
from tests.split_support import HELD, Splits, new_key, open_accounts
from tests.support import CALL_TIMEOUT_S, Client, free_port

HELD_REFS = ["CUSTODIAL", "PLAT_001", "SUP_2025001"]


class Events:
    """EventService as one key."""

    def __init__(self, channel: grpc.aio.Channel, key: str) -> None:
        self.stub = event_pb2_grpc.EventServiceStub(channel)
        self.metadata = (("authorization", f"Bearer {key}"),)

    async def call(self, method: str, request):
        return await getattr(self.stub, method)(request, metadata=self.metadata,
                                                timeout=CALL_TIMEOUT_S)

    def watch(self, cursor: int = 0, types=()):
        return self.stub.WatchEvents(pb.WatchEventsRequest(cursor=cursor, types=list(types)),
                                     metadata=self.metadata)

    async def all(self, cursor: int = 0, types=()) -> list[pb.Event]:
        out = []
        while True:
            page = await self.call("ListEvents", pb.ListEventsRequest(
                cursor=cursor, types=list(types), page_size=1000))
            out += page.events
            if page.next_cursor == cursor:
                return out
            cursor = page.next_cursor

    async def head(self) -> int:
        events = await self.all()
        return events[-1].seq if events else 0


async def wait_events(events: Events, count: int, cursor: int = 0, types=(),
                      timeout_s: float = 10.0) -> list[pb.Event]:
    """The events after `cursor` once there are at least `count`."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        got = await events.all(cursor, types)
        if len(got) >= count or asyncio.get_running_loop().time() > deadline:
            return got
        await asyncio.sleep(0.05)


@dataclass
class HeldWorld:
    client: Client
    splits: Splits
    ids: dict[str, int]


async def held_world(channel, client: Client, database_url: str,
                     platform_id: int) -> HeldWorld:
    """The platform's accounts for `held` and the rule set published and activated."""
    ids = await open_accounts(client, HELD_REFS)
    maker = Splits(channel, client.metadata[0][1].split(" ", 1)[1])
    checker = Splits(channel, await new_key(database_url, platform_id, {"approver"}))
    published = await maker.publish(HELD)
    await checker.activate(published.name, published.version)
    return HeldWorld(client, maker, ids)


@dataclass
class Delivery:
    body: bytes
    headers: dict[str, str]

    @property
    def event(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    """An HTTP receiver on 127.0.0.1: answers `status` (or hangs while `hang` is set)."""

    port: int = field(default_factory=free_port)
    status: int = 200
    hang: asyncio.Event | None = None
    got: list[Delivery] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.got.append(Delivery(body, dict(request.headers)))
        if self.hang is not None:
            await self.hang.wait()
        return web.Response(status=self.status, text="ok" if self.status < 300 else "down")

    async def start(self) -> "Receiver":
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
