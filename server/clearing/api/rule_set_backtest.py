"""SplitService's backtests: SimulateRuleSet, and the static ratio-swing check that
ActivateRuleSet makes (`swing_check`). Validation, the plans, the backtest domain
(`clearing.risk.backtest`), conversion."""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg

from clearing.api import split_convert as convert
from clearing.api import split_validate as checks
from clearing.api import validate
from clearing.api.interceptor import principal
from clearing.clock import Clock
from clearing.errors import (FailedPrecondition, FieldViolation, InvalidArgument, NotFound,
                             ResourceExhausted, Violations)
from clearing.ledger.model import Principal
from clearing.limits import (BACKTEST_DAYS_DEFAULT, BACKTEST_DAYS_MAX, BACKTEST_ORDERS_MAX,
                             BACKTEST_RECEIVERS_MAX, BACKTESTS_CONCURRENT_MAX,
                             SWING_BACKTEST_DAYS, SWING_BACKTEST_ORDERS_MAX)
from clearing.reasons import Reason
from clearing.risk import backtest
from clearing.rules import store as rule_store
from clearing.rules.cache import PlanCache
from clearing.rules.compile import Plan
from clearing.v1 import split_pb2 as pb

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def _ns(at: dt.datetime) -> int:
    return (at - _EPOCH) // dt.timedelta(microseconds=1) * 1000


class Backtests:
    """Runs backtests, at most BACKTESTS_CONCURRENT_MAX at once in this process."""

    def __init__(self, pool: asyncpg.Pool, plans: PlanCache, clock: Clock) -> None:
        self._pool = pool
        self._plans = plans
        self._clock = clock
        self._slots = asyncio.Semaphore(BACKTESTS_CONCURRENT_MAX)

    async def run(self, platform_id: int, active: Plan, candidate: Plan, *, days: int,
                  order_count_max: int) -> backtest.Backtest:
        if self._slots.locked():
            raise ResourceExhausted("this server runs another backtest; retry later",
                                    reason=Reason.BACKTEST_BUSY)
        end = self._clock.now()
        async with self._slots:
            return await backtest.run(
                self._pool, platform_id, active, candidate,
                start_ns=_ns(end - dt.timedelta(days=days)), end_ns=_ns(end),
                order_count_max=order_count_max)

    async def plans(self, platform_id: int, name: str, version: int) -> tuple[Plan, Plan]:
        """(the active plan, the candidate's); NOT_FOUND for an unknown version,
        NO_ACTIVE_RULE_SET without an active one."""
        try:
            candidate = await self._plans.plan(platform_id, name, version)
        except LookupError:
            raise NotFound(f"rule set {name!r} has no version {version}",
                           reason=Reason.RULE_SET_NOT_FOUND,
                           metadata={"rule_set_name": name,
                                     "rule_set_version": str(version)}) from None
        active = await self._plans.active(platform_id, name)
        if active is None:
            raise FailedPrecondition(f"rule set {name!r} has no active version to compare with",
                                     reason=Reason.NO_ACTIVE_RULE_SET,
                                     metadata={"rule_set_name": name})
        return active.plan, candidate

    async def swing_check(self, who: Principal, name: str,
                          version: int) -> backtest.Backtest | None:
        """The backtest an activation of `version` by `who` is checked with; None when no
        check applies (no version active, the version is the active one, unknown, or
        published by `who`: the activation refuses those itself)."""
        active = await self._plans.active(who.platform_id, name)
        if active is None or active.version == version:
            return None
        try:
            candidate = await self._plans.plan(who.platform_id, name, version)
        except LookupError:
            return None
        async with self._pool.acquire() as conn:
            row = await rule_store.get_version(conn, who.platform_id, name, version)
        if row.published_by == who.key_id:
            return None
        return await self.run(who.platform_id, active.plan, candidate,
                              days=SWING_BACKTEST_DAYS,
                              order_count_max=SWING_BACKTEST_ORDERS_MAX)


class BacktestMethods:
    """The SimulateRuleSet half of SplitServicer (it sets `_backtests`)."""

    _backtests: Backtests

    async def SimulateRuleSet(self, request: pb.SimulateRuleSetRequest,
                              context) -> pb.SimulateRuleSetResponse:
        days, order_count_max = simulate_violations(request)
        pid = principal().platform_id
        name, version = request.rule_set_name, request.rule_set_version
        active, candidate = await self._backtests.plans(pid, name, version)
        if active.rule_set_version == version:
            raise InvalidArgument([FieldViolation(
                "rule_set_version", f"version {version} is the active version: backtest a"
                                    " version that is not active")])
        result = await self._backtests.run(pid, active, candidate, days=days,
                                           order_count_max=order_count_max)
        return simulate_response(result)


def simulate_violations(request: pb.SimulateRuleSetRequest) -> tuple[int, int]:
    """(days, order_count_max) with their defaults; INVALID_ARGUMENT naming each bad field."""
    v = Violations()
    checks.rule_set_name(v, request.rule_set_name, "rule_set_name", required=True)
    validate.version(v, request.rule_set_version, "rule_set_version")
    if not 0 <= request.days <= BACKTEST_DAYS_MAX:
        v.add("days", f"must be 1 to {BACKTEST_DAYS_MAX} (0 means {BACKTEST_DAYS_DEFAULT})")
    if not 0 <= request.order_count_max <= BACKTEST_ORDERS_MAX:
        v.add("order_count_max", f"must be 1 to {BACKTEST_ORDERS_MAX} (0 means"
                                 f" {BACKTEST_ORDERS_MAX})")
    v.raise_if_any()
    return request.days or BACKTEST_DAYS_DEFAULT, request.order_count_max or BACKTEST_ORDERS_MAX


def _preview(ev) -> pb.Split:
    msg = convert.evaluation_to_proto(ev)
    msg.status = pb.SPLIT_STATUS_PREVIEW
    return msg


def simulate_response(r: backtest.Backtest) -> pb.SimulateRuleSetResponse:
    out = pb.SimulateRuleSetResponse(
        rule_set_name=r.rule_set_name, active_version=r.active_version,
        candidate_version=r.candidate_version, currency_code=r.currency_code,
        order_count=r.order_count, truncated=r.truncated,
        candidate_split_count=r.candidate_split_count,
        candidate_refused_count=r.candidate_refused_count,
        active_refused_count=r.active_refused_count, changed_rule_count=r.changed_rule_count,
        counter_unrecorded_count=r.counter_unrecorded_count,
        active_total_minor=r.active_total_minor, candidate_total_minor=r.candidate_total_minor,
        receiver_count=len(r.receivers), max_swing_bps=r.max_swing_bps,
        swing_threshold_bps=r.threshold_bps, swing_exceeded=r.swing_exceeded,
        refused_count_by_reason=r.refused_by_reason)
    out.period_start_time.FromNanoseconds(r.start_ns)
    out.period_end_time.FromNanoseconds(r.end_ns)
    for rec in r.receivers[:BACKTEST_RECEIVERS_MAX]:
        out.receivers.add(account_id=rec.account_id, external_ref=rec.external_ref,
                          active_minor=rec.active_minor, candidate_minor=rec.candidate_minor,
                          active_share_bps=rec.active_share_bps,
                          candidate_share_bps=rec.candidate_share_bps,
                          swing_bps=rec.swing_bps, new_receiver=rec.new_receiver,
                          swing_exceeded=rec.exceeded)
    for changed in r.changed:
        item = out.changed_orders.add(order_id=changed.order.order_id)
        item.active.CopyFrom(_preview(changed.active))
        item.candidate.CopyFrom(_preview(changed.candidate))
        item.active.order_id = item.candidate.order_id = changed.order.order_id
    for refused in r.refused:
        out.refused_orders.add(order_id=refused.order_id,
                               error=convert.split_error(refused.error))
    return out


def ratio_swing(r: backtest.Backtest, first_approver_key_id: int) -> pb.RatioSwingCheck:
    """An activation's ratio-swing figures."""
    top = r.largest
    return pb.RatioSwingCheck(
        swing_threshold_bps=r.threshold_bps, max_swing_bps=r.max_swing_bps,
        receiver_account_id=top.account_id if top else 0,
        receiver_external_ref=top.external_ref if top else "",
        swing_exceeded=r.swing_exceeded, order_count=r.order_count,
        first_approver_key_id=first_approver_key_id, period_days=SWING_BACKTEST_DAYS)

