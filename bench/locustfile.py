"""The sale-day scenario for Locust: gRPC users with the sale-day traffic mix.

    make loadtest                        # set-up, server and a headless run (bench/loadtest.py)
    .venv/bin/locust -f bench/locustfile.py --headless --processes 2 -H 127.0.0.1:PORT
                                         # against a server set up by `python -m bench.loadtest
                                         # --setup-only` (CLEARING_LOCUST_SETUP names its JSON)

The mix, by task weight: Split 85%, ReleaseSplit 8%, RefundSplit 2%, GetBalance 5%, over the
platforms, merchants and rule sets of the set-up file (CLEARING_LOCUST_SETUP, written by
bench/loadtest.py): each user works for one platform (users are spread over them in turn)
with its gateway+operator key, and splits orders by three rule sets:
- `b2b` (server/clearing/rules/examples/b2b.yaml): government top-slice, promotion, base;
- `held`: 10% to the platform at once, the rest to the supplier held, 50% released on
  SHIPPED and 50% on RECEIVED;
- `marketplace`: 5% to the platform, the rest to the order's seller (one of the platform's
  merchants, as the order's `seller` party).
ReleaseSplit releases SHIPPED, later RECEIVED, of this user's own `held` splits; RefundSplit
refunds in full one of this user's own `b2b` or `marketplace` splits (never a held one, so
a release never meets a refunded split); GetBalance reads one of the platform's accounts.
When a user has no split to release or refund yet, it splits instead (reported under
Split), so the mix holds once the pools fill (after a few seconds).

The rate: every user calls at most CLEARING_LOADTEST_USER_RATE (5) times a second
(`constant_throughput`); the shape (SaleDay) ramps the users linearly to
CLEARING_LOADTEST_RATE / user rate over CLEARING_LOADTEST_RAMP_S seconds, holds them for
CLEARING_LOADTEST_HOLD_S seconds and stops. Every call has a deadline of
CLEARING_LOADTEST_CALL_TIMEOUT_S (10) s; an error answer or a broken call is a Locust
failure (by status code and reason in the failures CSV).

gRPC is made gevent-compatible (grpc.experimental.gevent.init_gevent) at import, before any
channel exists; each user opens its own channel in on_start (after Locust's --processes fork).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import time
import uuid
from collections import deque

import grpc
import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()

from locust import LoadTestShape, User, constant_throughput, events, task  # noqa: E402

from clearing.v1 import ledger_pb2 as lpb  # noqa: E402
from clearing.v1 import ledger_pb2_grpc  # noqa: E402
from clearing.v1 import split_pb2 as pb  # noqa: E402
from clearing.v1 import split_pb2_grpc  # noqa: E402

CURRENCY = "CNY"
USER_RATE = float(os.environ.get("CLEARING_LOADTEST_USER_RATE", "5"))
TARGET_RATE = float(os.environ.get("CLEARING_LOADTEST_RATE", "200"))
RAMP_S = float(os.environ.get("CLEARING_LOADTEST_RAMP_S", "30"))
HOLD_S = float(os.environ.get("CLEARING_LOADTEST_HOLD_S", "120"))
CALL_TIMEOUT_S = float(os.environ.get("CLEARING_LOADTEST_CALL_TIMEOUT_S", "10"))
POOL_MAX = 1_000  # releasable / refundable splits a user remembers
RULE_SET_WEIGHTS = (("b2b", 3), ("held", 4), ("marketplace", 3))

_setup: dict | None = None
_user_numbers = itertools.count()


def setup() -> dict:
    """The set-up file (platforms with their keys, accounts and rule sets)."""
    global _setup
    if _setup is None:
        path = os.environ.get("CLEARING_LOCUST_SETUP")
        if not path:
            raise RuntimeError("CLEARING_LOCUST_SETUP is not set: run `python -m bench.loadtest`"
                               " (or `--setup-only`) to create the platforms first")
        with open(path) as f:
            _setup = json.load(f)
    return _setup


def _channel(target: str, ca: str | None) -> grpc.Channel:
    """The server's channel: TLS trusting the set-up's CA (the server `bench.loadtest`
    starts serves TLS), plaintext for a set-up without one."""
    if not ca:
        return grpc.insecure_channel(target)
    with open(ca, "rb") as f:
        return grpc.secure_channel(target, grpc.ssl_channel_credentials(f.read()))


class GrpcCall:
    """One stub method, timed and reported to Locust as request_type "grpc"."""

    def __init__(self, user: User, stub, method: str) -> None:
        self._env = user.environment
        self._fn = getattr(stub, method)
        self._name = method
        self._metadata = user.metadata

    def __call__(self, request, name: str | None = None):
        start = time.perf_counter()
        response, exc = None, None
        try:
            response = self._fn(request, metadata=self._metadata, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as err:
            exc = GrpcError(err)
        self._env.events.request.fire(
            request_type="grpc", name=name or self._name,
            response_time=(time.perf_counter() - start) * 1000.0,
            response_length=response.ByteSize() if response is not None else 0,
            response=response, context=None, exception=exc)
        return response


class GrpcError(Exception):
    """A failed call as Locust reports it: status code and details (reason first)."""

    def __init__(self, err: grpc.RpcError) -> None:
        code = err.code().name if hasattr(err, "code") else "UNKNOWN"
        details = err.details() if hasattr(err, "details") else str(err)
        super().__init__(f"{code}: {details}")


class SaleDayUser(User):
    """One gateway of one platform (see the module's docstring)."""

    wait_time = constant_throughput(USER_RATE)

    def on_start(self) -> None:
        s = setup()
        n = next(_user_numbers)
        self.rng = random.Random(f"{os.getpid()}-{n}")
        self.platform = s["platforms"][(n + os.getpid()) % len(s["platforms"])]
        self.metadata = (("authorization", f"Bearer {self.platform['key']}"),)
        self.channel = _channel(self.host or s["target"], s.get("ca"))
        splits = split_pb2_grpc.SplitServiceStub(self.channel)
        ledger = ledger_pb2_grpc.LedgerServiceStub(self.channel)
        self.split_call = GrpcCall(self, splits, "Split")
        self.release_call = GrpcCall(self, splits, "ReleaseSplit")
        self.refund_call = GrpcCall(self, splits, "RefundSplit")
        self.balance_call = GrpcCall(self, ledger, "GetBalance")
        self.tag = uuid.uuid4().hex[:12]
        self.orders = 0
        self.releasable: deque[tuple[str, str]] = deque(maxlen=POOL_MAX)  # (order, event)
        self.refundable: deque[tuple[str, int]] = deque(maxlen=POOL_MAX)  # (order, amount)
        names, weights = zip(*RULE_SET_WEIGHTS)
        self.rule_sets, self.rule_set_weights = names, weights

    def on_stop(self) -> None:
        self.channel.close()

    def _order(self) -> pb.Order:
        self.orders += 1
        rng = self.rng
        rule_set = rng.choices(self.rule_sets, self.rule_set_weights)[0]
        kw: dict = {"order_id": f"ld-{self.tag}-{self.orders:08d}", "currency_code": CURRENCY,
                    "channel": rng.choice(("WECHAT_PAY", "ALIPAY", "UNIONPAY")),
                    "rule_set_name": rule_set}
        if rule_set == "b2b":
            tags = ["enterprise purchase"]
            if rng.random() < 0.3:
                tags.append("government purchase")
            kw.update(amount_minor=rng.randint(100_000, 90_000_000), tags=tags,
                      attributes={"customer_type": "enterprise"})
        elif rule_set == "held":
            kw.update(amount_minor=rng.randint(1_000, 2_000_000))
        else:
            kw.update(amount_minor=rng.randint(500, 500_000),
                      parties={"seller": rng.choice(self.platform["sellers"])})
        return pb.Order(**kw)

    @task(85)
    def split(self) -> None:
        order = self._order()
        r = self.split_call(pb.SplitRequest(request_id=f"r{order.order_id}", order=order))
        if r is None:
            return
        if order.rule_set_name == "held":
            self.releasable.append((order.order_id, "SHIPPED"))
        else:
            self.refundable.append((order.order_id, order.amount_minor))

    @task(8)
    def release(self) -> None:
        if not self.releasable:
            return self.split()
        order_id, event = self.releasable.popleft()
        r = self.release_call(pb.ReleaseSplitRequest(
            request_id=f"rel-{event}-{order_id}", order_id=order_id, event_name=event,
            reason="sale day"))
        if r is not None and event == "SHIPPED":
            self.releasable.append((order_id, "RECEIVED"))

    @task(2)
    def refund(self) -> None:
        if not self.refundable:
            return self.split()
        order_id, amount = self.refundable.popleft()
        self.refund_call(pb.RefundSplitRequest(
            request_id=f"ref-{order_id}", order_id=order_id, amount_minor=amount,
            currency_code=CURRENCY, refund_ref=f"RF-{order_id}"[:64],
            reason="buyer returned the goods"))

    @task(5)
    def balance(self) -> None:
        self.balance_call(lpb.GetBalanceRequest(
            account_id=self.rng.choice(self.platform["account_ids"])))


class SaleDay(LoadTestShape):
    """Ramp linearly to the target rate's users over RAMP_S, hold them HOLD_S, stop."""

    def tick(self):
        t = self.get_run_time()
        users = max(1, math.ceil(TARGET_RATE / USER_RATE))
        if t >= RAMP_S + HOLD_S:
            return None
        spawn_rate = max(1.0, users / max(RAMP_S, 1.0) * 2)
        if t < RAMP_S:
            return max(1, math.ceil(users * t / RAMP_S)), spawn_rate
        return users, spawn_rate


@events.quitting.add_listener
def _summary(environment, **_kw) -> None:
    """Fail the run (exit code 1) on any failed call; Locust does too, this says why."""
    stats = environment.stats.total
    if stats.num_failures:
        environment.process_exit_code = 1
