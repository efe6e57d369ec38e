"""The console under test: the real app (clearing.console) served by uvicorn in this
process on 127.0.0.1:<free port>, a client of the test server `running` (plaintext, as the
test servers serve), and a platform with data: the seed's B2B splits, a payout waiting for
review, and an approver key; plus an empty platform."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest
import uvicorn

from clearing.config import ConsoleSettings, Settings
from clearing.console.app import create_app
from clearing.console.serve import config_for, uvicorn_config
from clearing.v1 import payout_pb2 as ppb
from clearing.v1 import split_pb2 as spb
from tests.payout_support import Payouts, keys, party, set_config
from tests.report_support import b2b_world, order_b
from tests.support import Client, Platform

# Every page of the menu, and the rule-set publish form.
PAGES = ("/", "/splits", "/accounts", "/payouts", "/recon", "/recon/discrepancies", "/risk",
         "/rules", "/rules/new", "/events")
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
REVIEW_THRESHOLD_MINOR = 1_000
PAYOUT_MINOR = 5_000


class Captured(logging.Handler):
    """Every log record of the process while the console runs, formatted."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record) + repr(record.args))


@dataclass
class Console:
    url: str
    app: object
    logs: Captured

    @property
    def sessions(self):
        return self.app.state.sessions

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, follow_redirects=False, timeout=20.0)


@asynccontextmanager
async def serve_console(port: int, **console):
    """The console app on 127.0.0.1:<free port>, talking to the gRPC server on `port`."""
    settings = Settings(console=ConsoleSettings(**console))
    app = create_app(config_for(settings, f"127.0.0.1:{port}", None))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn_config(app, settings, "127.0.0.1:0")
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # the test process keeps its handlers
    captured = Captured()
    loggers = [logging.getLogger(n) for n in ("", "uvicorn", "uvicorn.access", "uvicorn.error",
                                              "clearing.console")]
    for lg in loggers:
        lg.addHandler(captured)
    old_level = logging.getLogger().level
    logging.getLogger().setLevel(logging.INFO)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        yield Console(f"http://127.0.0.1:{sock.getsockname()[1]}", app, captured)
    finally:
        server.should_exit = True
        await task
        sock.close()
        for lg in loggers:
            lg.removeHandler(captured)
        logging.getLogger().setLevel(old_level)


async def sign_in(http: httpx.AsyncClient, key: str) -> httpx.Response:
    page = await http.get("/signin")
    token = CSRF.search(page.text).group(1)
    return await http.post("/signin", data={"csrf": token, "api_key": key})


def csrf_of(html: str) -> str:
    return CSRF.search(html).group(1)


@dataclass
class World:
    platform: Platform
    approver: str
    split: spb.Split
    payout: ppb.Payout
    ids: dict[str, int]
    other: Platform
    other_split: spb.Split


async def make_world(channel, database_url: str) -> World:
    pid, key, approver = await keys(database_url)
    platform = Platform(pid, key, f"p{pid}")
    client = Client(channel, key)
    world = await b2b_world(channel, client, database_url, platform)
    split = await world.splits.split(order_b())
    payouts = Payouts(channel, key)
    await set_config(database_url, pid, review_threshold_minor=REVIEW_THRESHOLD_MINOR)
    p = await party(client, payouts, funds=100_000, prefix="console-")
    payout = await payouts.request(p.account, PAYOUT_MINOR)
    assert payout.state == ppb.PAYOUT_STATE_PENDING_REVIEW, payout
    # another platform with a split of its own
    opid, okey, _ = await keys(database_url)
    other = Platform(opid, okey, f"p{opid}")
    ow = await b2b_world(channel, Client(channel, okey), database_url, other)
    other_split = await ow.splits.split(order_b())
    return World(platform, approver, split, payout, world.ids, other, other_split)


async def empty_platform(database_url: str) -> Platform:
    pid, key, _ = await keys(database_url)
    return Platform(pid, key, f"p{pid}")



async def party_key(database_url: str, platform_id: int, *account_ids: int) -> str:
    """A party key of the platform bound to these accounts (as CreateApiKey with
    party_account_ids makes it)."""
    import asyncpg

    from clearing.tenancy import create_key
    conn = await asyncpg.connect(database_url)
    try:
        return await create_key(conn, platform_id, frozenset({"party"}),
                                party_account_ids=account_ids)
    finally:
        await conn.close()


# The console test files' fixtures (imported by them): the seed's world of a platform, and
# the console served against the module's test server.
@pytest.fixture(scope="module")
async def world(channel, database_url):
    return await make_world(channel, database_url)


@pytest.fixture(scope="module")
async def console(running):
    async with serve_console(running.port) as c:
        yield c
