"""A generated fuzz test of the whole contract: no request, from any caller, answers
INTERNAL or UNKNOWN, or shows a traceback or SQL.

Every unary method of every service is found in the generated `*_pb2` modules' service
descriptors (a new method is fuzzed without touching this file). Each call builds a random
request from the method's input descriptor, field by field and recursively: integer
extremes, 0 and -1, unknown enum numbers, bad timestamps and durations, empty, long, NUL,
control and non-ASCII strings, forged and truncated page tokens, large repeated fields,
random oneof choices. Half of the values are "valid-ish" (the platform's real account ids,
refs, order ids, payout ids, rule-set names, tokens of other listings), and half of the
requests start from a valid request of the method with one to three fields replaced, so
calls go past validation into the services. Each call goes through the generated stub to
the real test server with one caller: the gateway+operator key, the approver key, a key of
another platform, a made-up key or none. SplitStream gets a few short streams.

Checked for every call: the status is never INTERNAL, UNKNOWN or DEADLINE_EXCEEDED (a
hang), no status message or detail (ErrorInfo metadata, BadRequest descriptions, a
SplitError of SplitBatch/SplitStream) contains a traceback or SQL, and the server logged no
error while answering. Afterwards VerifyLedger is clean for both platforms.

A fixed seed by default (`FUZZ_SEED`, `FUZZ_CALLS`); explore with
`pytest tests/integration/test_fuzz.py --fuzz-seed=N --fuzz-calls=M` (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import secrets
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import asyncpg
import grpc
from google.protobuf import message_factory, text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from clearing import metrics, values
from clearing.tenancy import create_key, create_platform
from clearing.api import ledger as ledger_api
from clearing.api import payout as payout_api
from clearing.api import split as split_api
from clearing.api import reconciliation as recon_api
from clearing.api import audit as audit_api
from clearing.api import event as event_api
from clearing.api import report as report_api
from clearing.api import risk as risk_api
from clearing.api import rules_proto
from clearing.v1 import (ledger_pb2, ledger_pb2_grpc, payout_pb2, payout_pb2_grpc,
                         reconciliation_pb2, reconciliation_pb2_grpc, rule_set_pb2, split_pb2,
                         split_pb2_grpc)
from clearing.v1 import (audit_pb2, audit_pb2_grpc, event_pb2, event_pb2_grpc, report_pb2,
                         report_pb2_grpc, risk_pb2, risk_pb2_grpc)
from tests.payout_support import CARD
from tests.support import Client

FUZZ_SEED = 20261204
FUZZ_CALLS = 6000
IN_FLIGHT = 16          # concurrent calls
STREAMS = 8             # SplitStream calls, each with a few orders
CALL_TIMEOUT_S = 30.0

# Every service but PlatformService (the core's admin API: its calls change what every test
# of the process shares, the business calendar and other platforms' keys; its validation is
# tested in tests/integration/test_platform_admin*.py).
SERVICES = ((ledger_pb2, ledger_pb2_grpc), (split_pb2, split_pb2_grpc),
            (payout_pb2, payout_pb2_grpc), (reconciliation_pb2, reconciliation_pb2_grpc),
            (report_pb2, report_pb2_grpc), (risk_pb2, risk_pb2_grpc),
            (audit_pb2, audit_pb2_grpc), (event_pb2, event_pb2_grpc))

BAD_CODES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
             grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.DATA_LOSS}
# What must never reach a caller (no fuzzed string contains any of these).
LEAKS = ("Traceback", 'File "', "SELECT ", "INSERT ", "UPDATE ", "DELETE ", "asyncpg",
         "violates", "psycopg", "sqlstate", "SQLSTATE", "relation \"")

INT64_MAX, INT64_MIN = 2**63 - 1, -2**63
INT32_MAX, INT32_MIN = 2**31 - 1, -2**31
TS_MIN, TS_MAX = -62_135_596_800, 253_402_300_799  # 0001-01-01 .. 9999-12-31T23:59:59
DURATION_MAX_S = 315_576_000_000
PAID_TIME_MIN = 946_684_800  # 2000-01-01T00:00:00Z, the earliest Order.paid_time

HOSTILE_STRINGS = (
    "", " ", "a", "x" * 129, "y" * 257, "z" * 4000, "a\0b", "\0", "\x07bell", "line\nbreak",
    "tab\t", "\u00e9t\u00e9", "\u4e2d\u6587\u8ba2\u5355", "\U0001f600", "\u202eevil",
    "\ufeffbom", "' OR 1=1 --", "Robert'); DROP TABLE students;--", "%s%n%x", "{0}{1}",
    "..", "../../etc/passwd", "America", "Asia", "UTC/../x", "\\x00", "\uff33\uff28\uff29"
    "\uff30", "SHIPPED\0", "\u0663", "+1", "1_000", "-0", "NaN", "1e309", "null", "0x10",
    "CNY ", "cny", "ck_" + "A" * 43,
)
TIME_ZONES = ("Asia/Shanghai", "America/New_York", "UTC", "Etc/GMT+8", "America", "Asia",
              "Etc", "", "UTC/../x", "a\0b", "zone.tab", "America/", "/etc/localtime",
              "../../../etc/passwd", "Asia//Shanghai", "posix", "right/UTC", "z" * 65)

ROLES = ("main", "approver", "other", "made_up", "none")
# Most calls come from a key the method allows (its roles: clearing.api.*.METHOD_ROLES),
# the others from any caller.
ALLOWED_SHARE = 0.75
ROLE_WEIGHTS = (40, 30, 10, 10, 10)
MAIN_ROLES = frozenset({"gateway", "operator"})
METHOD_ROLES = {**ledger_api.METHOD_ROLES, **split_api.METHOD_ROLES,
                **payout_api.METHOD_ROLES, **recon_api.METHOD_ROLES,
                **report_api.METHOD_ROLES, **risk_api.METHOD_ROLES, **audit_api.METHOD_ROLES,
                **event_api.METHOD_ROLES}

RULE_SET = """
name: default
currency_code: CNY
party_roles: [seller]
attributes:
  - {key: customer_type, allowed_values: [new, returning]}
counters:
  - {name: seller_orders, metric: COUNTER_METRIC_ORDER_COUNT, period: COUNTER_PERIOD_DAY,
     party_role: seller, time_zone: Asia/Shanghai}
rules:
  - rule_name: main
    priority: 1
    fees: [{label: service, fixed_minor: 10, account_ref: fee}]
    shares:
      - label: platform
        type: SHARE_TYPE_RATIO
        ratio_bps: 1000
        receiver: {account_ref: platform}
        tiers: {counter_name: seller_orders, effect: TIER_EFFECT_ADD,
                tiers: [{min_counter_value: 5, ratio_bps: 100}]}
      - label: seller
        type: SHARE_TYPE_REMAINDER
        receiver: {party_role: seller}
        release: {steps: [{event_name: SHIPPED, fraction_bps: 5000},
                          {event_name: RECEIVED, fraction_bps: 5000}]}
    subsidies:
      - {label: coupon, source_account_ref: marketing, basis: SUBSIDY_BASIS_PLATFORM_COUPONS,
         target: SUBSIDY_TARGET_RECEIVER, receiver: {party_role: seller}}
"""


# ---- the world the calls run against ------------------------------------------------------------

@dataclass
class World:
    """Two platforms' real objects: what valid-ish values are drawn from."""

    platform_id: int
    other_platform_id: int
    keys: dict[str, str | None]
    account_ids: list[int]
    refs: list[str]
    sellers: list[str]
    order_ids: list[str]
    split_ids: list[int]
    payout_ids: list[int]
    pending_ids: list[int]
    tokens: list[str]
    content_sha: str
    rule_set: rule_set_pb2.RuleSet
    request_ids: list[str] = field(default_factory=list)
    run_ids: list[int] = field(default_factory=list)


def _meta(key: str | None) -> tuple:
    return () if key is None else (("authorization", f"Bearer {key}"),)


async def _call(channel, service: str, method: str, request, key: str | None):
    stub = STUBS[service](channel)
    return await getattr(stub, method)(request, metadata=_meta(key), timeout=CALL_TIMEOUT_S)


async def _world(channel, database_url: str) -> World:
    conn = await asyncpg.connect(database_url)
    try:
        pid, main = await create_platform(conn, f"fz_{secrets.token_hex(6)}",
                                          frozenset({"gateway", "operator"}))
        approver = await create_key(conn, pid, frozenset({"approver"}))
        other_pid, other = await create_platform(
            conn, f"fz_{secrets.token_hex(6)}", frozenset({"gateway", "operator", "approver"}))
    finally:
        await conn.close()
    keys = {"main": main, "approver": approver, "other": other,
            "made_up": "ck_" + secrets.token_urlsafe(32), "none": None}
    client = Client(channel, main)
    lpb = ledger_pb2
    ids: dict[str, int] = {}
    for ref, kind in (("custodial", lpb.ACCOUNT_KIND_CUSTODIAL),
                      ("platform", lpb.ACCOUNT_KIND_PLATFORM), ("fee", lpb.ACCOUNT_KIND_FEE),
                      ("marketing", lpb.ACCOUNT_KIND_MARKETING),
                      ("seller-1", lpb.ACCOUNT_KIND_MERCHANT),
                      ("seller-2", lpb.ACCOUNT_KIND_MERCHANT),
                      ("seller-3", lpb.ACCOUNT_KIND_MERCHANT)):
        extra = {"allow_negative": True} if kind in (lpb.ACCOUNT_KIND_CUSTODIAL,
                                                     lpb.ACCOUNT_KIND_MARKETING) else {}
        ids[ref] = (await client.open(ref, kind=kind, **extra)).account_id
    ids["usd"] = (await client.open("usd", currency="USD")).account_id
    other_client = Client(channel, other)
    other_ids = [(await other_client.open(ref)).account_id for ref in ("theirs-1", "theirs-2")]

    rid = iter(f"fz-setup-{i}" for i in range(10_000))
    msg = rules_proto.rule_set_proto_from_yaml(textwrap.dedent(RULE_SET))
    published = None
    for _ in range(2):  # two versions, so ListRuleSets pages
        published = (await _call(channel, "SplitService", "PublishRuleSet",
                                 split_pb2.PublishRuleSetRequest(request_id=next(rid),
                                                                 rule_set=msg), main)).rule_set
    await _call(channel, "SplitService", "ActivateRuleSet", split_pb2.ActivateRuleSetRequest(
        request_id=next(rid), rule_set_name="default", rule_set_version=published.version),
        approver)

    order_ids, split_ids = [], []
    for i in range(4):
        order = split_pb2.Order(order_id=f"fz-order-{i}", amount_minor=10_000 + i,
                                currency_code="CNY", channel="WECHAT_PAY",
                                parties={"seller": f"seller-{1 + i % 3}"},
                                coupons=[split_pb2.Coupon(
                                    coupon_id="c1", amount_minor=100,
                                    funding=split_pb2.COUPON_FUNDING_PLATFORM)])
        split = (await _call(channel, "SplitService", "Split", split_pb2.SplitRequest(
            request_id=next(rid), order=order), main)).split
        order_ids.append(order.order_id)
        split_ids.append(split.split_id)
    await _call(channel, "SplitService", "ReleaseSplit", split_pb2.ReleaseSplitRequest(
        request_id=next(rid), order_id=order_ids[0], event_name="SHIPPED"), main)

    pending = await client.transfer(ids["custodial"], ids["seller-3"], 500,
                                    mode=lpb.TRANSFER_MODE_PENDING)
    await client.transfer(ids["custodial"], ids["seller-1"], 10**9)
    await _call(channel, "PayoutService", "BindBankAccount", payout_pb2.BindBankAccountRequest(
        request_id=next(rid), account_id=ids["seller-1"], bank_code="ICBC",
        bank_name="Industrial and Commercial Bank of China", account_number=CARD,
        holder_name="Seller One Co.", account_type=payout_pb2.BANK_ACCOUNT_TYPE_CORPORATE,
        kyc_verified=True), main)
    payout_ids = []
    for amount in (200_000_000, 150_000_000, 5_000):  # two wait for review, one goes out
        payout_ids.append((await _call(
            channel, "PayoutService", "RequestPayout", payout_pb2.RequestPayoutRequest(
                request_id=next(rid), account_id=ids["seller-1"], amount_minor=amount,
                currency_code="CNY"), main)).payout.payout_id)

    tokens = [
        (await client.call("ListAccounts", lpb.ListAccountsRequest(page_size=1))).next_page_token,
        (await client.call("ListEntries", lpb.ListEntriesRequest(
            account_id=ids["custodial"], page_size=1))).next_page_token,
        (await _call(channel, "SplitService", "ListRuleSets", split_pb2.ListRuleSetsRequest(
            page_size=1), main)).next_page_token,
        (await _call(channel, "PayoutService", "ListPayouts", payout_pb2.ListPayoutsRequest(
            page_size=1), main)).next_page_token,
        (await other_client.call("ListAccounts", lpb.ListAccountsRequest(
            page_size=1))).next_page_token,
    ]
    run_ids = await _statements(channel, main, order_ids)
    tokens += [
        (await _call(channel, "ReconciliationService", "ListReconciliationRuns",
                     reconciliation_pb2.ListReconciliationRunsRequest(page_size=1),
                     main)).next_page_token,
        (await _call(channel, "ReconciliationService", "ListDiscrepancies",
                     reconciliation_pb2.ListDiscrepanciesRequest(page_size=1),
                     main)).next_page_token,
    ]
    assert all(tokens), tokens
    return World(pid, other_pid, keys, [*ids.values(), *other_ids], [*ids, "theirs-1"],
                 ["seller-1", "seller-2", "seller-3"], order_ids, split_ids, payout_ids,
                 [pending.transfer_id], tokens, published.content_sha256, msg,
                 run_ids=run_ids)


async def _statements(channel, key: str, order_ids: list[str]) -> list[int]:
    """Two imported statements (two days) of the fuzz platform; their run ids."""
    rpb = reconciliation_pb2
    stub = reconciliation_pb2_grpc.ReconciliationServiceStub(channel)
    run_ids = []
    for day in ("2026-11-01", "2026-11-02"):
        text = ("channel,channel_transaction_id,order_id,paid_time,amount_minor,"
                "channel_fee_minor,settled_minor,currency_code,settlement_date,type\n"
                + "".join(f"WECHAT_PAY,wx-{day}-{i},{order_id},{day}T10:00:00+08:00,"
                          f"10000,0,10000,CNY,{day},payment\n"
                          for i, order_id in enumerate([*order_ids[:2], "fz-unknown"])))
        messages = [rpb.ImportStatementRequest(header=rpb.StatementHeader(
            request_id=f"fz-import-{day}", channel="WECHAT_PAY", settlement_date=day,
            format=rpb.STATEMENT_FORMAT_CANONICAL)), rpb.ImportStatementRequest(
            chunk=text.encode())]
        response = await stub.ImportStatement(iter(messages), metadata=_meta(key),
                                              timeout=CALL_TIMEOUT_S)
        run_ids.append(response.run.run_id)
    return run_ids


# ---- random values ------------------------------------------------------------------------------

def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


class Gen:
    """Random request messages for one seed; `w` supplies the valid-ish values."""

    DEPTH_MAX = 6

    def __init__(self, rng: random.Random, w: World) -> None:
        self.rng = rng
        self.w = w
        self.serial = 0

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def pick(self, seq):
        return seq[self.rng.randrange(len(seq))]

    def request_id(self) -> str:
        if self.w.request_ids and self.chance(0.25):
            return self.pick(self.w.request_ids)  # a retry, or a reuse with another payload
        self.serial += 1
        value = f"fz-{self.rng.getrandbits(48):012x}-{self.serial}"
        self.w.request_ids.append(value)
        return value

    # -- scalars --

    def int_value(self, f: FieldDescriptor) -> int:
        unsigned = f.type in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_UINT64,
                              FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_FIXED64)
        wide = f.type in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64,
                          FieldDescriptor.TYPE_SFIXED64, FieldDescriptor.TYPE_UINT64,
                          FieldDescriptor.TYPE_FIXED64)
        if unsigned:
            top = 2**64 - 1 if wide else 2**32 - 1
            return self.pick((0, 1, top, self.rng.randrange(top + 1)))
        lo, hi = (INT64_MIN, INT64_MAX) if wide else (INT32_MIN, INT32_MAX)
        value = self.pick((0, 1, -1, lo, hi, hi - 1, lo + 1, 10_000, 10_001, 2**31, 10**15,
                           10**15 + 1, self.rng.randrange(lo, hi + 1),
                           self.rng.randrange(-1000, 1000)))
        return value if lo <= value <= hi else hi

    def string_value(self) -> str:
        if self.chance(0.1):
            return "".join(chr(self.rng.choice((self.rng.randrange(0x20, 0x7f),
                                                 self.rng.randrange(0xa0, 0xd7ff))))
                           for _ in range(self.rng.randrange(1, 40)))
        return self.pick(HOSTILE_STRINGS)

    def page_token(self) -> str:
        w = self.w
        r = self.rng.randrange(6)
        if r == 0:
            return self.pick(w.tokens)  # a real token, of this listing or another
        if r == 1:
            token = self.pick(w.tokens)
            return self.pick((token[:-1], token[:-3], token + "A", token[::-1],
                              token.upper(), token + "=="))
        if r == 2:
            kind = self.pick(("accounts", "entries", "rule_sets", "payouts", "recon-runs",
                              "recon-discrepancies", "x"))
            scope = self.pick((w.platform_id, w.other_platform_id, 2**64, -1, 0,
                               self.pick(w.account_ids)))
            pos = self.pick(("0", "1", "-1", str(2**63), str(2**64), "9" * 30, "abc", "1.5",
                             " 1", "+1", "1_0", "\u0663", "", str(INT64_MAX)))
            positions = [pos] + ([self.pick(("1", str(2**63), "-5", "x", str(INT64_MAX)))]
                                 if self.chance(0.6) else [])
            if self.chance(0.2):
                positions.append("extra")
            if self.chance(0.2):  # without the check digest
                return _b64(":".join([kind, str(scope), *positions]))
            return values.encode_page_token(kind, scope, *positions)
        if r == 3:
            return self.pick(("garbage", "%%%", "====", "\u00e9t\u00e9", "A", "AAAA",
                              "x" * 5000, "a\0b",
                              base64.urlsafe_b64encode(bytes(self.rng.getrandbits(8)
                                                             for _ in range(24))).decode()))
        return self.string_value()

    # -- by field name: the valid-ish values --

    def named(self, name: str, f: FieldDescriptor) -> tuple[bool, Any]:
        """(True, value) for a field whose name says what it holds; else (False, None)."""
        w, pick = self.w, self.pick
        if name == "request_id":
            return True, self.request_id()
        if name in ("account_id", "debit_account_id", "credit_account_id", "account_ids"):
            return True, pick(w.account_ids)
        if name in ("external_ref", "account_ref", "source_account_ref",
                    "shortfall_account_ref"):
            return True, pick(w.refs)
        if name == "order_id":
            return True, pick(w.order_ids) if self.chance(0.7) else f"fz-new-{self.serial}"
        if name == "split_id":
            return True, pick(w.split_ids)
        if name == "payout_id":
            return True, pick(w.payout_ids)
        if name == "pending_transfer_id":
            return True, pick(w.pending_ids)
        if name == "run_id":
            return True, pick(w.run_ids)
        if name == "settlement_date":
            return True, pick(("2026-11-01", "2026-11-02", "", "2026-02-30", "9999-12-31",
                               "1999-12-31", "2026-1-1"))
        if name in ("rule_set_name",):
            return True, pick(("default", "other", ""))
        if name in ("rule_set_version", "version", "expected_active_version"):
            return True, pick((0, 1, 2, 3))
        if name == "content_sha256":
            return True, w.content_sha
        if name in ("currency_code", "currency_codes"):
            return True, pick(("CNY", "CNY", "USD"))
        if name in ("amount_minor", "fixed_minor", "cap_minor", "min_minor", "max_minor",
                    "min_amount_minor", "max_amount_minor", "channel_fee_minor"):
            return True, pick((1, 99, 100, 1113, 10_000, 10**6, 150_000_000, 10**15))
        if name in ("ratio_bps", "fraction_bps"):
            return True, pick((1, 1000, 5000, 10_000))
        if name == "event_name":
            return True, pick(("SHIPPED", "RECEIVED"))
        if name == "page_token":
            return True, self.page_token()
        if name == "page_size":
            return True, pick((0, 1, 2, 1000))
        if name == "time_zone":
            return True, pick(TIME_ZONES)
        if name in ("channel", "channels"):
            return True, pick(("WECHAT_PAY", "ALIPAY"))
        if name in ("party_role", "party_roles"):
            return True, "seller"
        if name in ("counter_name",):
            return True, "seller_orders"
        if name == "weekday":
            return True, self.rng.randrange(0, 9)
        if name == "month_day":
            return True, self.rng.randrange(0, 33)
        if name == "priority":
            return True, self.rng.randrange(0, 4)
        if name == "bank_code":
            return True, "ICBC"
        if name == "account_number":
            return True, CARD
        if name == "branch_code":
            return True, pick(("", "102100099996"))
        if name in ("reason", "comment", "memo", "holder_name", "bank_name", "label",
                    "rule_name", "description", "refund_ref", "coupon_id", "display_name"):
            return True, pick(("ok", "refund 1", "main", "Seller One Co."))
        return False, None

    def scalar(self, f: FieldDescriptor, name: str) -> Any:
        if f.type == FieldDescriptor.TYPE_ENUM:
            numbers = [v.number for v in f.enum_type.values]
            return self.pick((*numbers, *numbers, 99, -1, INT32_MAX, INT32_MIN))
        if self.chance(0.5):
            known, value = self.named(name, f)
            if known:
                return value
        if f.type == FieldDescriptor.TYPE_BOOL:
            return self.chance(0.5)
        if f.type == FieldDescriptor.TYPE_STRING:
            return self.page_token() if name == "page_token" else self.string_value()
        if f.type == FieldDescriptor.TYPE_BYTES:
            return bytes(self.rng.getrandbits(8) for _ in range(self.rng.randrange(64)))
        if f.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return self.pick((0.0, -1.0, 1e308, float("nan"), float("inf")))
        return self.int_value(f)

    # -- messages --

    def timestamp(self, msg: Message) -> None:
        now = int(time.time())
        seconds, nanos = self.pick((
            (now, 0), (now - 86_400, 500), (now + 86_400 * 10, 0), (0, 0), (TS_MIN, 0),
            (TS_MAX, 999_999_999), (TS_MIN - 1, 0), (TS_MAX + 1, 0), (INT64_MIN, 0),
            (INT64_MAX, 0), (now, -1), (now, 1_000_000_000), (now, INT32_MAX),
            (now, INT32_MIN), (-1, 999_999_999), (now + 299, 0), (now + 301, 0),
            (PAID_TIME_MIN, 0), (PAID_TIME_MIN - 1, 999_999_999)))
        msg.seconds, msg.nanos = seconds, nanos

    def duration(self, msg: Message) -> None:
        seconds, nanos = self.pick((
            (0, 0), (1, 0), (-1, 0), (DURATION_MAX_S, 0), (DURATION_MAX_S + 1, 0),
            (-DURATION_MAX_S - 1, 0), (1, -1), (-1, 1), (0, 1_000_000_000), (INT64_MAX, 0),
            (INT64_MIN, 0)))
        msg.seconds, msg.nanos = seconds, nanos

    def message(self, desc: Descriptor, msg: Message | None = None, depth: int = 0,
                p_set: float = 0.6) -> Message:
        msg = msg if msg is not None else message_factory.GetMessageClass(desc)()
        if desc.full_name == "google.protobuf.Timestamp":
            self.timestamp(msg)
            return msg
        if desc.full_name == "google.protobuf.Duration":
            self.duration(msg)
            return msg
        chosen = {o.name: self.pick(o.fields) for o in desc.oneofs
                  if not o.name.startswith("_")}  # a real oneof: one random member
        for f in desc.fields:
            oneof = f.containing_oneof
            if oneof is not None and not oneof.name.startswith("_") and chosen[oneof.name] is not f:
                continue
            if not self.chance(p_set):
                continue
            self.fill(msg, f, depth)
        return msg

    def fill(self, msg: Message, f: FieldDescriptor, depth: int) -> None:
        name = f.name
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            target = getattr(msg, name)
            key_f = f.message_type.fields_by_name["key"]
            value_f = f.message_type.fields_by_name["value"]
            for _ in range(self.count(depth, scalar=True)):
                key = self.map_key(name, key_f)
                if value_f.message_type is not None:
                    self.message(value_f.message_type, target[key], depth + 1)
                else:
                    target[key] = self.map_value(name, value_f)
            return
        if f.is_repeated:
            target = getattr(msg, name)
            if f.message_type is not None:
                for _ in range(self.count(depth, scalar=False)):
                    self.message(f.message_type, target.add(), depth + 1,
                                 p_set=0.6 if depth < self.DEPTH_MAX else 0.1)
            else:
                target.extend(self.scalar(f, name) for _ in range(self.count(depth, True)))
            return
        if f.message_type is not None:
            if depth < self.DEPTH_MAX:
                self.message(f.message_type, getattr(msg, name), depth + 1)
            return
        setattr(msg, name, self.scalar(f, name))

    def count(self, depth: int, scalar: bool) -> int:
        """How many items a repeated field gets: mostly 0 to 3, sometimes just over a
        limit (16, 32, 256, 1000 are limits of the contract), never a huge tree."""
        r = self.rng.random()
        if r < 0.85 or depth >= 3:
            return self.rng.randrange(4)
        if r < 0.95 or depth == 2:
            return self.pick((5, 17) if depth == 2 else (5, 16, 17, 33))
        return self.pick((257, 1001)) if scalar or depth == 0 else 40

    def map_key(self, name: str, f: FieldDescriptor):
        if f.type != FieldDescriptor.TYPE_STRING:
            return self.int_value(f)
        if self.chance(0.5):
            return self.pick({"parties": ("seller", "buyer"),
                              "attributes": ("customer_type",),
                              "counter_overrides": ("seller_orders",)}.get(name, ("k",)))
        return self.string_value()

    def map_value(self, name: str, f: FieldDescriptor):
        if name == "parties" and self.chance(0.6):
            return self.pick(self.w.sellers + self.w.refs)
        if name == "attributes" and self.chance(0.5):
            return self.pick(("new", "returning"))
        if f.type == FieldDescriptor.TYPE_STRING:
            return self.string_value()
        return self.int_value(f)

    # -- mutation of a valid request --

    def mutate(self, msg: Message, depth: int = 0) -> None:
        """Replace one random field somewhere in `msg` by a random value."""
        fields = list(msg.DESCRIPTOR.fields)
        if not fields:
            return
        f = self.pick(fields)
        if f.message_type is not None and not f.message_type.GetOptions().map_entry \
                and self.chance(0.6):
            if f.is_repeated and len(getattr(msg, f.name)):
                items = getattr(msg, f.name)
                self.mutate(items[self.rng.randrange(len(items))], depth + 1)
                return
            if not f.is_repeated and msg.HasField(f.name) and \
                    f.message_type.full_name not in ("google.protobuf.Timestamp",
                                                      "google.protobuf.Duration"):
                self.mutate(getattr(msg, f.name), depth + 1)
                return
        msg.ClearField(f.name)
        self.fill(msg, f, depth)

    # -- valid requests to start from --

    def order(self) -> split_pb2.Order:
        self.serial += 1
        order = split_pb2.Order(
            order_id=f"fz-{self.rng.getrandbits(40):010x}-{self.serial}",
            amount_minor=self.pick((1, 11, 1113, 10_000, 10**9)), currency_code="CNY",
            channel="WECHAT_PAY", parties={"seller": self.pick(self.w.sellers)},
            attributes={"customer_type": "new"})
        if self.chance(0.4):
            order.coupons.add(coupon_id="c", amount_minor=self.pick((1, 100)),
                              funding=split_pb2.COUPON_FUNDING_PLATFORM)
        if self.chance(0.3):
            order.paid_time.seconds = int(time.time()) - 60
        return order

    def rule_set(self) -> rule_set_pb2.RuleSet:
        """The world's rule set, or a variant whose amounts and times matter (so that a
        replaced value reaches the evaluator's arithmetic)."""
        msg = rule_set_pb2.RuleSet()
        msg.CopyFrom(self.w.rule_set)
        r = self.rng.randrange(4)
        if r == 1:
            sub = msg.rules[0].subsidies[0]
            sub.basis, sub.fixed_minor = rule_set_pb2.SUBSIDY_BASIS_FIXED, self.pick((1, 10**15))
        elif r == 2:
            share = msg.rules[0].shares[0]
            share.ClearField("tiers")
            share.type, share.ratio_bps = rule_set_pb2.SHARE_TYPE_FIXED, 0
            share.fixed_minor = self.pick((1, 100, 10**15))
        elif r == 3:
            self.timestamp(msg.rules[0].start_time)
            msg.counters[0].time_zone = self.pick(TIME_ZONES)
        return msg

    def transfer(self) -> ledger_pb2.TransferRequest:
        w, pick, lpb = self.w, self.pick, ledger_pb2
        mode = pick((1, 1, 2, 3, 4))
        if mode in (lpb.TRANSFER_MODE_IMMEDIATE, lpb.TRANSFER_MODE_PENDING):
            return lpb.TransferRequest(
                request_id=self.request_id(), mode=mode,
                debit_account_id=w.account_ids[0],  # the custodial account
                credit_account_id=pick(w.account_ids[1:]), amount_minor=pick((1, 100)),
                currency_code="CNY", memo="fuzz")
        return lpb.TransferRequest(
            request_id=self.request_id(), mode=mode, pending_transfer_id=pick(w.pending_ids),
            amount_minor=pick((1, 100)) if mode == lpb.TRANSFER_MODE_POST_PENDING else 0)

    def template(self, method: str) -> Message | None:
        w, pick, s, p, lpb = self.w, self.pick, split_pb2, payout_pb2, ledger_pb2
        r = reconciliation_pb2
        rid = self.request_id
        builders: dict[str, Callable[[], Message]] = {
            "Split": lambda: s.SplitRequest(request_id=rid(), order=self.order()),
            "PreviewSplit": lambda: s.PreviewSplitRequest(order=self.order()),
            "SplitBatch": lambda: s.SplitBatchRequest(request_id=rid(), requests=[
                s.SplitRequest(request_id=rid(), order=self.order())
                for _ in range(self.rng.randrange(1, 4))]),
            "ReleaseSplit": lambda: s.ReleaseSplitRequest(
                request_id=rid(), order_id=pick(w.order_ids),
                event_name=pick(("SHIPPED", "RECEIVED"))),
            "CancelSplit": lambda: s.CancelSplitRequest(request_id=rid(),
                                                        order_id=pick(w.order_ids),
                                                        reason="fuzz"),
            "RefundSplit": lambda: s.RefundSplitRequest(
                request_id=rid(), order_id=pick(w.order_ids), amount_minor=pick((1, 100)),
                currency_code="CNY", reason="fuzz", shortfall_account_ref="custodial"),
            "PublishRuleSet": lambda: s.PublishRuleSetRequest(
                request_id=rid(), rule_set=self.rule_set(), validate_only=self.chance(0.5)),
            "ActivateRuleSet": lambda: s.ActivateRuleSetRequest(
                request_id=rid(), rule_set_name="default",
                rule_set_version=pick((1, 2, self.rng.randrange(1, 80)))),
            "GetSplit": lambda: s.GetSplitRequest(order_id=pick(w.order_ids)),
            "Transfer": self.transfer,
            "CreateAccount": lambda: lpb.CreateAccountRequest(
                request_id=rid(), external_ref=f"fz-acct-{self.serial}",
                kind=lpb.ACCOUNT_KIND_MERCHANT, owner_type=lpb.OWNER_TYPE_ENTERPRISE,
                currency_code="CNY"),
            "FreezeAccount": lambda: lpb.FreezeAccountRequest(
                request_id=rid(), account_id=pick(w.account_ids), amount_minor=pick((0, 1)),
                reason="fuzz"),
            "RequestPayout": lambda: p.RequestPayoutRequest(
                request_id=rid(), account_id=pick(w.account_ids),
                amount_minor=pick((100, 5000, 200_000_000)), currency_code="CNY"),
            "SetPayoutSchedule": lambda: p.SetPayoutScheduleRequest(
                request_id=rid(), schedule=p.PayoutSchedule(
                    account_id=pick(w.account_ids), **pick((
                        {"cycle": p.PAYOUT_CYCLE_WEEKLY, "weekday": pick((1, 7))},
                        {"cycle": p.PAYOUT_CYCLE_MONTHLY, "month_day": pick((1, 29, 31))},
                        {"cycle": p.PAYOUT_CYCLE_T_PLUS_1}, {"cycle": p.PAYOUT_CYCLE_MANUAL})),
                    min_amount_minor=pick((0, 100)),
                    time_zone=pick(("Asia/Shanghai", "", "Europe/Paris", *TIME_ZONES)))),
            "UnfreezeAccount": lambda: lpb.UnfreezeAccountRequest(
                request_id=rid(), account_id=pick(w.account_ids), amount_minor=pick((0, 1)),
                reason="fuzz"),
            "ListEntries": lambda: lpb.ListEntriesRequest(
                account_id=pick(w.account_ids), page_size=pick((1, 3)),
                page_token=pick(("", *w.tokens))),
            "BindBankAccount": lambda: p.BindBankAccountRequest(
                request_id=rid(), account_id=pick(w.account_ids), bank_code="ICBC",
                bank_name="ICBC", account_number=CARD, holder_name="Seller",
                account_type=1, kyc_verified=True),
            "ApprovePayout": lambda: p.ApprovePayoutRequest(
                request_id=rid(), payout_id=pick(w.payout_ids)),
            "RejectPayout": lambda: p.RejectPayoutRequest(
                request_id=rid(), payout_id=pick(w.payout_ids), reason="fuzz"),
            "ListPayouts": lambda: p.ListPayoutsRequest(page_size=2,
                                                        page_token=pick(w.tokens)),
            "GetReconciliationRun": lambda: r.GetReconciliationRunRequest(
                run_id=pick(w.run_ids)),
            "ListReconciliationRuns": lambda: r.ListReconciliationRunsRequest(
                channel=pick(("WECHAT_PAY", "")), settlement_date=pick(("", "2026-11-01")),
                page_size=1, page_token=pick(("", *w.tokens))),
            "ListDiscrepancies": lambda: r.ListDiscrepanciesRequest(
                run_id=pick((0, *w.run_ids)), classes=pick(([], [2], [2, 3, 7])),
                states=pick(([], [1], [1, 2])), page_size=1,
                page_token=pick(("", *w.tokens))),
        }
        build = builders.get(method)
        return None if build is None else build()

    def request(self, method) -> Message:
        """A request of `method`: a random one, or (60%, for methods with a template) a
        valid one with 0 to 3 fields replaced."""
        base = self.template(method.name) if self.chance(0.6) else None
        if base is None:
            return self.message(method.input_type)
        for _ in range(self.pick((0, 1, 1, 2, 3))):
            self.mutate(base)
        return base


# ---- checking answers ---------------------------------------------------------------------------

@dataclass
class Finding:
    method: str
    role: str
    what: str
    request: str

    def __str__(self) -> str:
        return f"{self.method} as {self.role}: {self.what}\n    request: {self.request}"


def _short(msg: Message) -> str:
    text = text_format.MessageToString(msg, as_one_line=True)
    return text if len(text) < 600 else text[:600] + "..."


def _leak(text: str) -> str | None:
    return next((m for m in LEAKS if m in text), None)


def _status_texts(err: grpc.aio.AioRpcError) -> list[str]:
    """Every text of an error status: its message, ErrorInfo and BadRequest details."""
    texts = [err.details() or ""]
    try:
        status = rpc_status.from_call(err)
    except ValueError as exc:  # the details' code is not the call's: they did not arrive
        raise AssertionError(f"unreadable status: {exc}") from None
    if status is not None:
        texts.append(status.message)
        for d in status.details:
            if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                d.Unpack(info)
                texts += [info.reason, *info.metadata.keys(), *info.metadata.values()]
            elif d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                d.Unpack(bad)
                texts += [v.description for v in bad.field_violations]
    return texts


def _split_errors(msg: Message):
    """Every SplitError inside a response (SplitBatch, SplitStream)."""
    if msg.DESCRIPTOR.full_name == "clearing.v1.SplitError":
        yield msg
        return
    for f, value in msg.ListFields():
        if f.message_type is None or f.message_type.GetOptions().map_entry:
            continue
        for item in (value if f.is_repeated else (value,)):
            yield from _split_errors(item)


def _check_response(response: Message) -> str | None:
    for error in _split_errors(response):
        if error.code in (2, 13):
            return f"an outcome answers code {error.code} {error.reason}: {error.message}"
        leak = _leak(error.message + " ".join(v.description for v in error.field_violations))
        if leak:
            return f"an outcome's message shows {leak!r}: {error.message}"
    return None


def _check_error(err: grpc.aio.AioRpcError) -> str | None:
    if err.code() in BAD_CODES:
        return f"{err.code().name}: {err.details()}"
    try:
        texts = _status_texts(err)
    except AssertionError as exc:
        return f"{err.code().name}: {exc}; {err.details()}"
    for text in texts:
        leak = _leak(text)
        if leak:
            return f"{err.code().name} shows {leak!r}: {text[:300]}"
    return None


class _Errors(logging.Handler):
    """The ERROR records of the server's request handling during the run (it shares this
    process): an error answered, or one order of a batch failing unexpectedly. Background
    work the calls lead to (the payout worker's) is not an answer, and not checked here."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("clearing.api"):
            self.records.append(record)


# ---- the test -----------------------------------------------------------------------------------

def _role(gen: Gen, service: str, method: str) -> str:
    allowed = METHOD_ROLES.get(f"/clearing.v1.{service}/{method}", frozenset())
    if gen.chance(ALLOWED_SHARE):
        if not allowed or allowed & MAIN_ROLES:
            return "main" if gen.chance(0.85) else "other"
        if "approver" in allowed:
            return "approver"
    return gen.rng.choices(ROLES, ROLE_WEIGHTS)[0]


def _server_internal_answers() -> float:
    """INTERNAL answers the server counted (clearing_rpc_calls_total), every method."""
    return sum(sample.value for metric in metrics.RPC_CALLS.collect()
               for sample in metric.samples
               if sample.name.endswith("_total") and sample.labels.get("code") == "INTERNAL")


STUBS = {name: getattr(grpc_module, f"{name}Stub") for pb2, grpc_module in SERVICES
         for name in pb2.DESCRIPTOR.services_by_name}


def unary_methods() -> list[tuple[str, Any]]:
    """(service name, method descriptor) of every unary method of the contract."""
    out = []
    for pb2, _ in SERVICES:
        for service in pb2.DESCRIPTOR.services_by_name.values():
            out += [(service.name, m) for m in service.methods
                    if not m.client_streaming and not m.server_streaming]
    return out


def test_every_unary_method_of_the_contract_is_fuzzed():
    names = {f"{s}/{m.name}" for s, m in unary_methods()}
    assert len(names) >= 28
    assert {"LedgerService/Transfer", "SplitService/SplitBatch", "PayoutService/ListPayouts",
            "SplitService/ReleaseSplit", "PayoutService/SetPayoutSchedule"} <= names
    assert "SplitService/SplitStream" not in names  # streamed separately


async def _one(channel, gen_role: str, key, service: str, method, request,
               findings: list[Finding], codes: Counter) -> None:
    try:
        response = await _call(channel, service, method.name, request, key)
    except grpc.aio.AioRpcError as err:
        codes[(method.name, err.code().name)] += 1
        problem = _check_error(err)
    else:
        codes[(method.name, "OK")] += 1
        problem = _check_response(response)
    if problem:
        findings.append(Finding(f"{service}/{method.name}", gen_role, problem, _short(request)))


def _client_write_after_end(err: grpc.aio.AioRpcError) -> bool:
    """The asyncio client's own INTERNAL: a server that answers a stream before reading all
    of it (e.g. UNAUTHENTICATED) has its status replaced, on the client, by "Internal error
    from Core" when a request is still being written (grpc/grpc#36066; the sync client and
    other languages report the server's status). The server's answer is checked instead."""
    return (err.code() == grpc.StatusCode.INTERNAL and "execute_batch" in (
        err.debug_error_string() or "") and "SendMessageOperation" in (
        err.debug_error_string() or ""))


def _stream_items(gen: Gen) -> list[split_pb2.SplitStreamRequest]:
    items = []
    for _ in range(gen.rng.randrange(1, 8)):
        if gen.chance(0.5):
            item = split_pb2.SplitStreamRequest(request_id=gen.request_id(), order=gen.order())
            gen.mutate(item)
        else:
            item = gen.message(split_pb2.SplitStreamRequest.DESCRIPTOR)
        items.append(item)
    return items


async def _stream(channel, items: list, key, role: str, findings: list[Finding],
                  codes: Counter) -> None:
    stub = split_pb2_grpc.SplitServiceStub(channel)
    try:
        async for response in stub.SplitStream(iter(items), metadata=_meta(key),
                                               timeout=CALL_TIMEOUT_S):
            problem = _check_response(response)
            if problem:
                findings.append(Finding("SplitService/SplitStream", role, problem,
                                        " | ".join(_short(i) for i in items)))
        codes[("SplitStream", "OK")] += 1
    except grpc.aio.AioRpcError as err:
        if _client_write_after_end(err):
            codes[("SplitStream", "ENDED_BEFORE_ALL_SENT")] += 1
            return  # what the server answered: checked by its INTERNAL count
        codes[("SplitStream", err.code().name)] += 1
        problem = _check_error(err)
        if problem:
            findings.append(Finding("SplitService/SplitStream", role, problem,
                                    " | ".join(_short(i) for i in items)))


async def test_no_request_answers_internal(channel, database_url, request):
    seed = request.config.getoption("--fuzz-seed")
    seed = FUZZ_SEED if seed is None else seed
    calls = request.config.getoption("--fuzz-calls") or FUZZ_CALLS
    w = await _world(channel, database_url)
    gen = Gen(random.Random(seed), w)
    methods = unary_methods()
    plan = []
    for _ in range(calls):
        service, method = gen.pick(methods)
        plan.append((_role(gen, service, method.name), service, method, gen.request(method)))
    streams = [(_role(gen, "SplitService", "SplitStream"), _stream_items(gen))
               for _ in range(STREAMS)]
    internal_before = _server_internal_answers()

    findings: list[Finding] = []
    codes: Counter = Counter()
    errors = _Errors()
    logging.getLogger().addHandler(errors)
    started = time.monotonic()
    try:
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def run(role, service, method, req):
            async with gate:
                await _one(channel, role, w.keys[role], service, method, req, findings, codes)

        async def run_stream(role, items):
            async with gate:
                await _stream(channel, items, w.keys[role], role, findings, codes)

        await asyncio.gather(*(run(*step) for step in plan),
                             *(run_stream(*stream) for stream in streams))
    finally:
        logging.getLogger().removeHandler(errors)
    elapsed = time.monotonic() - started
    internal = _server_internal_answers() - internal_before

    summary = (f"seed {seed}, {calls} calls + {STREAMS} streams in {elapsed:.1f} s; "
               f"answers: {dict(Counter(code for (_, code) in codes.elements()))}")
    assert not findings, (f"{len(findings)} bad answers ({summary}); the first ones:\n"
                          + "\n".join(map(str, findings[:12])))
    assert internal == 0, f"the server answered INTERNAL {internal} times ({summary})"
    logged = [f"{r.name}: {r.getMessage()}" for r in errors.records]
    assert not logged, f"the server logged errors ({summary}): {logged[:10]}"
    called = {m for (m, _) in codes}
    if calls >= 10 * len(methods):
        assert called >= {m.name for _, m in methods}, summary
        # the calls went past validation: some succeeded on every service
        assert sum(n for (m, c), n in codes.items() if c == "OK") > calls // 20, summary

    for key in (w.keys["main"], w.keys["other"]):
        report = await _call(channel, "LedgerService", "VerifyLedger",
                             ledger_pb2.VerifyLedgerRequest(), key)
        assert report.ok and report.chain_ok, report
        assert all(t.balanced for t in report.totals), report
    print(summary)
    for name in sorted(called):  # shown with -s: how deep the calls went, per method
        print(f"  {name:18}", ", ".join(f"{c} {n}" for (m, c), n in sorted(codes.items())
                                         if m == name))
