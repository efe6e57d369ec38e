"""A generated fuzz test of PlatformService, the core's admin API: no request, from any
caller, answers INTERNAL or UNKNOWN, or shows a traceback or SQL.

test_fuzz.py leaves PlatformService out: its calls change what every test of the process
shares (the business calendar, other platforms' keys). Here it runs against a server of its
own on a database of its own (dropped at the end), with two admin keys, two platforms and
their accounts, and test_fuzz.py's generator (`Gen`, here taught the admin fields: platform
and key ids, platform names, roles, change ids, calendar days, admin page tokens) and
checks (`_one`: the status is never INTERNAL, UNKNOWN or DEADLINE_EXCEEDED, no message or
detail shows a traceback or SQL). Every unary method is called, as: the maker admin key,
a second admin key (the approver of fee changes), a platform's key, a made-up key, none.
The server logs no error while answering, and afterwards both platforms' ledgers verify.

A fixed seed by default (`FUZZ_SEED`, `FUZZ_CALLS`); explore with
`pytest tests/integration/test_fuzz_admin.py --fuzz-seed=N --fuzz-calls=M`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from typing import Any, Callable

import asyncpg
import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from clearing import values
from clearing.tenancy import create_admin_key, create_key
from clearing.v1 import ledger_pb2
from clearing.v1 import platform_pb2 as pb
from tests.integration.test_fuzz import (HOSTILE_STRINGS, TIME_ZONES, Finding, Gen, World,
                                         _call, _Errors, _one, _server_internal_answers)
from tests.payout_support import isolated_server
from tests.support import Client

FUZZ_SEED = 20261207
FUZZ_CALLS = 4000
IN_FLIGHT = 16

SERVICE = "PlatformService"
ROLES = ("maker", "approver", "platform", "made_up", "none")
ROLE_WEIGHTS = (50, 30, 8, 6, 6)
PLATFORM_ROLES = ("gateway", "operator", "approver")
CURRENCIES = ("USD", "EUR", "JPY", "HKD")  # besides CNY: more pending changes to decide
DAYS = ("2026-12-25", "2027-01-01", "2026-12-26", "2026-02-29", "2026-02-28", "2026-13-01",
        "2026-1-1", "0001-01-01", "9999-12-31", "", "20261225", "2026-12-25T00:00:00",
        "\u0662\u0660\u0662\u0666-12-25", "2036-12-25", "2016-12-25")


def unary_methods() -> list:
    service = pb.DESCRIPTOR.services_by_name[SERVICE]
    return [m for m in service.methods if not m.client_streaming and not m.server_streaming]


def test_every_platform_service_method_is_fuzzed():
    names = {m.name for m in unary_methods()}
    assert {"CreatePlatform", "CreateApiKey", "RevokeApiKey", "SetPayoutConfig",
            "ApprovePayoutConfigChange", "RejectPayoutConfigChange", "SetBusinessCalendar",
            "GetBusinessCalendar"} <= names
    assert len(names) == 12


class AdminGen(Gen):
    """test_fuzz.py's generator, with valid-ish values of the admin requests."""

    def __init__(self, rng: random.Random, w: World, *, names: list[str],
                 key_ids: list[int], change_ids: list[int], prefixes: list[str],
                 fee_accounts: dict[tuple[int, str], int]) -> None:
        super().__init__(rng, w)
        self.names, self.key_ids, self.change_ids = names, key_ids, change_ids
        self.prefixes, self.fee_accounts = prefixes, fee_accounts

    def platform_id(self) -> int:
        w = self.w
        return self.pick((w.platform_id, w.platform_id, w.other_platform_id, 0, -1,
                          w.other_platform_id + 1000, 2**63 - 1))

    def name(self) -> str:
        self.serial += 1
        return self.pick((*self.names, f"fza-{self.rng.getrandbits(32):08x}-{self.serial}",
                          "a" * 64, "a" * 65, "a.b_c-d"))

    def page_token(self) -> str:
        if self.chance(0.3):
            kind = self.pick(("platforms", "api-keys"))
            scope = self.pick((0, self.w.platform_id, self.w.other_platform_id, -1, 2**64))
            pos = self.pick(("0", "1", "-1", str(2**63), "9" * 30, "abc", "", "\u0663"))
            return values.encode_page_token(kind, scope, pos,
                                            *(("x",) if self.chance(0.2) else ()))
        return super().page_token()

    def named(self, name: str, f: FieldDescriptor) -> tuple[bool, Any]:
        pick = self.pick
        if name == "platform_id":
            return True, self.platform_id()
        if name == "key_id":
            return True, pick((*self.key_ids, 0, -1, self.rng.randrange(1, 200)))
        if name == "change_id":
            return True, pick((*self.change_ids, 0, -1, self.rng.randrange(1, 100)))
        if name == "name":
            return True, self.name()
        if name == "roles":
            return True, pick((*PLATFORM_ROLES, "admin", "", "GATEWAY", "gateway "))
        if name in ("day", "start_day", "end_day"):
            return True, pick(DAYS)
        if name == "key_prefix":
            return True, pick((*self.prefixes, "", "ck_", "ca_", "%", "_"))
        if name == "note":
            return True, pick(("ok", "", "n" * 200, "n" * 201, "n" * 512, "n" * 513))
        if name == "fee_account_id":
            return True, pick((*self.fee_accounts.values(), *self.w.account_ids, 0))
        if name in ("fee_bps",):
            return True, pick((0, 1, 30, 10_000, 10_001))
        if name in ("fee_fixed_minor", "daily_max_minor", "review_threshold_minor",
                    "bank_transfer_max_minor"):
            return True, pick((0, 1, 100, 10**6, 5 * 10**7, 10**13, 10**15))
        return super().named(name, f)

    def config(self) -> pb.PayoutConfig:
        pid = self.pick((self.w.platform_id, self.w.other_platform_id))
        currency = self.pick(("CNY", "CNY", *CURRENCIES))
        return pb.PayoutConfig(
            platform_id=pid, currency_code=currency,
            fee_fixed_minor=self.pick((0, 0, 100, 200)), fee_bps=self.pick((0, 0, 30)),
            fee_account_id=self.fee_accounts[(pid, currency)], min_amount_minor=self.pick((1, 100)),
            max_amount_minor=self.pick((10**9, 10**10)), daily_max_minor=10**13,
            review_threshold_minor=self.pick((10**8, 10**12)),
            bank_transfer_max_minor=5 * 10**7,
            time_zone=self.pick(("Asia/Shanghai", "UTC", *TIME_ZONES)))

    def calendar_day(self) -> pb.CalendarDay:
        return pb.CalendarDay(day=self.pick(DAYS[:5]), kind=self.pick((1, 2, 3)),
                              note=self.pick(("New Year", "", *HOSTILE_STRINGS[:8])))

    def template(self, method: str) -> Message | None:
        pick, rid = self.pick, self.request_id
        builders: dict[str, Callable[[], Message]] = {
            "CreatePlatform": lambda: pb.CreatePlatformRequest(name=self.name(),
                                                               request_id=rid()),
            "GetPlatform": lambda: pick((
                pb.GetPlatformRequest(platform_id=self.platform_id()),
                pb.GetPlatformRequest(name=pick(self.names)))),
            "ListPlatforms": lambda: pb.ListPlatformsRequest(
                page_size=pick((1, 2, 100)), page_token=pick(("", *self.w.tokens))),
            "CreateApiKey": lambda: pb.CreateApiKeyRequest(
                platform_id=self.platform_id(), request_id=rid(),
                roles=pick((["gateway"], ["approver"], ["gateway", "operator"],
                            ["operator", "operator"]))),
            "ListApiKeys": lambda: pb.ListApiKeysRequest(
                platform_id=pick((0, self.w.platform_id, self.w.other_platform_id)),
                page_size=pick((1, 2, 100)), page_token=pick(("", *self.w.tokens)),
                key_prefix=pick(("", *self.prefixes))),
            "RevokeApiKey": lambda: pb.RevokeApiKeyRequest(key_id=pick(self.key_ids)),
            "GetPayoutConfig": lambda: pb.GetPayoutConfigRequest(
                platform_id=self.platform_id(), currency_code=pick(("CNY", "USD", "XXX"))),
            "SetPayoutConfig": lambda: pb.SetPayoutConfigRequest(request_id=rid(),
                                                                 config=self.config()),
            "ApprovePayoutConfigChange": lambda: pb.ApprovePayoutConfigChangeRequest(
                change_id=pick(self.change_ids), note="ok"),
            "RejectPayoutConfigChange": lambda: pb.RejectPayoutConfigChangeRequest(
                change_id=pick(self.change_ids), note="no"),
            "GetBusinessCalendar": lambda: pb.GetBusinessCalendarRequest(
                start_day=pick(("2026-01-01", "2026-12-01")), end_day=pick(DAYS)),
            "SetBusinessCalendar": lambda: pb.SetBusinessCalendarRequest(
                days=[self.calendar_day() for _ in range(self.rng.randrange(1, 4))]),
        }
        build = builders.get(method)
        return None if build is None else build()


async def _setup(channel, dsn: str) -> tuple[World, dict[str, str | None], dict]:
    """Two admin keys; two platforms made through the API, each with keys and accounts;
    pending fee changes to approve or reject; listing tokens."""
    conn = await asyncpg.connect(dsn)
    try:
        _, maker = await create_admin_key(conn, "fuzz-maker")
        _, approver = await create_admin_key(conn, "fuzz-approver")
    finally:
        await conn.close()
    setup_ids = iter(f"fza-setup-{i}" for i in range(1000))

    async def admin(method: str, request, key: str = maker):
        return await _call(channel, SERVICE, method, request, key)

    names, pids, key_ids, prefixes, keys = [], [], [], [], []
    for name in ("fza-one", "fza-two"):
        p = (await admin("CreatePlatform", pb.CreatePlatformRequest(
            name=name, request_id=next(setup_ids)))).platform
        names.append(p.name)
        pids.append(p.platform_id)
        for roles in (["gateway", "operator"], ["approver"]):
            made = await admin("CreateApiKey", pb.CreateApiKeyRequest(
                platform_id=p.platform_id, roles=roles, request_id=next(setup_ids)))
            key_ids.append(made.api_key.key_id)
            prefixes.append(made.api_key.key_prefix)
            keys.append(made.key)
    account_ids, fee_accounts = [], {}
    for pid, key in zip(pids, keys[::2]):
        client = Client(channel, key)
        custodial = (await client.open("custodial", kind=ledger_pb2.ACCOUNT_KIND_CUSTODIAL,
                                       allow_negative=True)).account_id
        seller = (await client.open("seller")).account_id
        await client.transfer(custodial, seller, 10_000)
        account_ids += [custodial, seller]
        for currency in ("CNY", *CURRENCIES):  # a fee account of each currency
            fee_accounts[(pid, currency)] = (await client.open(
                f"fee-{currency}", kind=ledger_pb2.ACCOUNT_KIND_ORDINARY,
                currency=currency)).account_id
    change_ids = []  # pending: one per platform and currency (a later one supersedes)
    for pid, currency, fee_fixed in ((pids[0], "CNY", 100), (pids[1], "CNY", 100),
                                     (pids[0], "CNY", 200), *((pid, currency, 100)
                                                             for pid in pids
                                                             for currency in CURRENCIES)):
        config = (await admin("GetPayoutConfig", pb.GetPayoutConfigRequest(
            platform_id=pid, currency_code=currency))).config
        config.fee_fixed_minor = fee_fixed
        config.fee_account_id = fee_accounts[(pid, currency)]
        change = (await admin("SetPayoutConfig", pb.SetPayoutConfigRequest(
            request_id=next(setup_ids), config=config))).change
        assert change.state == pb.PAYOUT_CONFIG_CHANGE_STATE_PENDING, change
        change_ids.append(change.change_id)
    await admin("SetBusinessCalendar", pb.SetBusinessCalendarRequest(days=[
        pb.CalendarDay(day="2026-12-25", kind=pb.CALENDAR_DAY_KIND_HOLIDAY, note="Xmas")]))
    tokens = [
        (await admin("ListPlatforms", pb.ListPlatformsRequest(page_size=1))).next_page_token,
        (await admin("ListApiKeys", pb.ListApiKeysRequest(
            platform_id=pids[0], page_size=1))).next_page_token,
        (await admin("ListApiKeys", pb.ListApiKeysRequest(page_size=1))).next_page_token,
    ]
    assert all(tokens), tokens
    # Gen's other valid-ish lists are of fields PlatformService has not: never empty though
    w = World(pids[0], pids[1], {}, account_ids, ["custodial", "fee-CNY", "seller"], ["seller"],
              ["fza-order"], [1], [1], [1], tokens, "", None)
    roles = {"maker": maker, "approver": approver, "platform": keys[0],
             "made_up": "ca_" + "A" * 43, "none": None}
    extra = {"names": names, "key_ids": key_ids, "change_ids": change_ids,
             "prefixes": prefixes, "fee_accounts": fee_accounts}
    return w, roles, extra


async def _verify(channel, dsn: str, pids: list[int]) -> None:
    """Both ledgers verify (with fresh keys: the fuzz may have revoked the first ones)."""
    conn = await asyncpg.connect(dsn)
    try:
        keys = [await create_key(conn, pid, frozenset({"operator"})) for pid in pids]
    finally:
        await conn.close()
    for key in keys:
        report = await _call(channel, "LedgerService", "VerifyLedger",
                             ledger_pb2.VerifyLedgerRequest(), key)
        assert report.ok and report.chain_ok, report
        assert all(t.balanced for t in report.totals), report


async def test_no_admin_request_answers_internal(pg_admin_dsn, redis_url, redis_prefix,
                                                 request):
    seed = request.config.getoption("--fuzz-seed")
    seed = FUZZ_SEED if seed is None else seed
    calls = request.config.getoption("--fuzz-calls") or FUZZ_CALLS
    async with isolated_server(pg_admin_dsn, redis_url, redis_prefix, "fuzzadmin",
                               worker_settings=None, bank_settings=None) as (running, dsn):
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        try:
            w, keys, extra = await _setup(channel, dsn)
            gen = AdminGen(random.Random(seed), w, **extra)
            methods = unary_methods()
            plan = []
            for _ in range(calls):
                method = gen.pick(methods)
                role = ("approver" if method.name == "ApprovePayoutConfigChange"
                        and gen.chance(0.5) else gen.rng.choices(ROLES, ROLE_WEIGHTS)[0])
                plan.append((role, method, gen.request(method)))
            internal_before = _server_internal_answers()
            findings: list[Finding] = []
            codes: Counter = Counter()
            errors = _Errors()
            logging.getLogger().addHandler(errors)
            started = time.monotonic()
            try:
                gate = asyncio.Semaphore(IN_FLIGHT)

                async def run(role, method, req):
                    async with gate:
                        await _one(channel, role, keys[role], SERVICE, method, req,
                                   findings, codes)

                await asyncio.gather(*(run(*step) for step in plan))
            finally:
                logging.getLogger().removeHandler(errors)
            elapsed = time.monotonic() - started
            internal = _server_internal_answers() - internal_before
            summary = (f"seed {seed}, {calls} calls in {elapsed:.1f} s; answers: "
                       f"{dict(Counter(code for (_, code) in codes.elements()))}")
            assert not findings, (f"{len(findings)} bad answers ({summary}); the first:\n"
                                  + "\n".join(map(str, findings[:12])))
            assert internal == 0, f"the server answered INTERNAL {internal} times ({summary})"
            logged = [f"{r.name}: {r.getMessage()}" for r in errors.records]
            assert not logged, f"the server logged errors ({summary}): {logged[:10]}"
            called = {m for (m, _) in codes}
            if calls >= 10 * len(methods):
                assert called >= {m.name for m in methods}, summary
                assert sum(n for (_, c), n in codes.items() if c == "OK") > calls // 20, summary
                # every method went past validation at least once (unless the database, shared
                # by a loaded machine, refused connections: UNAVAILABLE, checked above)
                if not any(c == "UNAVAILABLE" for (_, c) in codes):
                    for m in methods:
                        assert codes[(m.name, "OK")] > 0, (m.name, summary)
            await _verify(channel, dsn, [w.platform_id, w.other_platform_id])
            print(summary)
            for name in sorted(called):
                print(f"  {name:26}", ", ".join(f"{c} {n}" for (m, c), n
                                                in sorted(codes.items()) if m == name))
        finally:
            await channel.close()
