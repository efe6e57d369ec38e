"""RiskService: validation and conversion; the domain is `clearing.risk`."""

from __future__ import annotations

import asyncpg

from clearing import audit, idempotency, values
from clearing.api import validate
from clearing.api.convert import timestamp
from clearing.api.interceptor import principal
from clearing.api.replies import encode
from clearing.errors import Violations
from clearing.ledger.model import Role
from clearing.risk import events, policy_store, resolve
from clearing.risk.model import (NOTE_LEN_MAX, SWING_THRESHOLD_BPS_DEFAULT, CurrencyLimits,
                                 Policy, PolicyVersion, RiskAction, RiskDecision, RiskEvent,
                                 RiskEventState, RiskRule, policy_violations)
from clearing.risk.policy_store import PolicyCache
from clearing.risk.resolve import ResolveDeps
from clearing.v1 import risk_pb2 as pb
from clearing.v1 import risk_pb2_grpc

_SERVICE = "/clearing.v1.RiskService/"
_REVIEWERS = frozenset({Role.OPERATOR, Role.APPROVER})

# Roles allowed per method.
METHOD_ROLES: dict[str, frozenset[str]] = {
    _SERVICE + "PublishRiskPolicy": frozenset({Role.OPERATOR}),
    _SERVICE + "ActivateRiskPolicy": frozenset({Role.APPROVER}),
    _SERVICE + "GetRiskPolicy": frozenset({Role.GATEWAY, Role.OPERATOR, Role.APPROVER}),
    _SERVICE + "ListRiskEvents": _REVIEWERS,
    _SERVICE + "GetRiskEvent": _REVIEWERS,
    _SERVICE + "ResolveRiskEvent": _REVIEWERS,
}


def policy_from_proto(msg: pb.RiskPolicy) -> Policy:
    return Policy(tuple(CurrencyLimits(lim.currency_code, lim.large_split_minor,
                                       lim.frequency_amount_minor, lim.daily_inflow_cap_minor)
                        for lim in msg.limits),
                  msg.frequency_count_max, msg.frequency_window_s,
                  msg.swing_threshold_bps or SWING_THRESHOLD_BPS_DEFAULT, RiskAction(msg.action)
                  if msg.action in RiskAction._value2member_map_ else RiskAction.UNSPECIFIED)


def policy_message(row: PolicyVersion) -> pb.RiskPolicy:
    p = row.policy
    out = pb.RiskPolicy(
        version=p.version, frequency_count_max=p.frequency_count_max,
        frequency_window_s=p.frequency_window_s, swing_threshold_bps=p.swing_threshold_bps,
        action=int(p.action), active=row.active, published_at=timestamp(row.published_at),
        limits=[pb.RiskCurrencyLimits(
            currency_code=lim.currency_code, large_split_minor=lim.large_split_minor,
            frequency_amount_minor=lim.frequency_amount_minor,
            daily_inflow_cap_minor=lim.daily_inflow_cap_minor) for lim in p.limits])
    if row.activated_at is not None:
        out.activated_at.CopyFrom(timestamp(row.activated_at))
    return out


def event_message(e: RiskEvent) -> pb.RiskEvent:
    return pb.RiskEvent(
        event_id=e.event_id, rule=int(e.rule), state=int(e.state), account_id=e.account_id,
        split_id=e.split_id, order_id=e.order_id, currency_code=e.currency_code,
        amount_minor=e.amount_minor, held_minor=e.held_minor, observed=e.observed,
        limit=e.limit, evidence_json=e.evidence_json, decision=int(e.decision),
        created_at=timestamp(e.created_at),
        steps=[pb.RiskEventStep(step=s.step, key_id=s.key_id, note=s.note, at=timestamp(s.at))
               for s in e.steps])


class RiskServicer(risk_pb2_grpc.RiskServiceServicer):
    """The caller's platform's risk policy and events."""

    def __init__(self, pool: asyncpg.Pool, policies: PolicyCache, deps: ResolveDeps) -> None:
        self._pool = pool
        self._policies = policies
        self._deps = deps

    async def PublishRiskPolicy(self, request: pb.PublishRiskPolicyRequest,
                                context) -> pb.PublishRiskPolicyResponse:
        v = Violations()
        validate.request_id(v, request.request_id)
        if not request.HasField("policy"):
            v.add("policy", "required")
        else:
            if request.policy.swing_threshold_bps < 0:
                v.add("policy.swing_threshold_bps", "must be between 0 (default 3000) and 10000")
            policy_violations(v, policy_from_proto(request.policy))
        v.raise_if_any()
        who = principal()
        policy = policy_from_proto(request.policy)

        async def op(conn: asyncpg.Connection) -> bytes:
            row = await policy_store.publish(conn, who.platform_id, policy, who.key_id,
                                             actor=audit.Actor.of(who))
            return encode(pb.PublishRiskPolicyResponse(policy=policy_message(row)))

        return pb.PublishRiskPolicyResponse.FromString(await idempotency.run(
            self._pool, who.platform_id, request.request_id, "PublishRiskPolicy",
            validate.payload_hash("PublishRiskPolicy", request), op))

    async def ActivateRiskPolicy(self, request: pb.ActivateRiskPolicyRequest,
                                 context) -> pb.ActivateRiskPolicyResponse:
        v = Violations()
        validate.request_id(v, request.request_id)
        if request.version <= 0:
            v.add("version", "required: a published version (1, 2, ...)")
        v.raise_if_any()
        who = principal()

        async def op(conn: asyncpg.Connection) -> bytes:
            row, previous = await policy_store.activate(conn, who, request.version)
            return encode(pb.ActivateRiskPolicyResponse(policy=policy_message(row),
                                                        previous_version=previous))

        response = pb.ActivateRiskPolicyResponse.FromString(await idempotency.run(
            self._pool, who.platform_id, request.request_id, "ActivateRiskPolicy",
            validate.payload_hash("ActivateRiskPolicy", request), op))
        self._policies.drop(who.platform_id)
        return response

    async def GetRiskPolicy(self, request: pb.GetRiskPolicyRequest,
                            context) -> pb.GetRiskPolicyResponse:
        v = Violations()
        if request.version < 0:
            v.add("version", "must be 0 (the active version) or a published version")
        v.raise_if_any()
        async with self._pool.acquire() as conn:
            row = await policy_store.get(conn, principal().platform_id, request.version)
        return pb.GetRiskPolicyResponse(policy=policy_message(row))

    async def ListRiskEvents(self, request: pb.ListRiskEventsRequest,
                             context) -> pb.ListRiskEventsResponse:
        v = Violations()
        size = validate.page_size(v, request.page_size)
        validate.enum(v, request.state, RiskEventState, "state", required=False)
        validate.enum(v, request.rule, RiskRule, "rule", required=False)
        validate.object_id(v, request.account_id, "account_id", required=False)
        v.raise_if_any()
        pid = principal().platform_id
        before, = validate.page_token(request.page_token, "risk_events", pid) or (0,)
        async with self._pool.acquire() as conn:
            rows = await events.list_events(conn, pid, state=request.state, rule=request.rule,
                                            account_id=request.account_id, before_id=before,
                                            limit=size + 1)
        token = (values.encode_page_token("risk_events", pid, rows[size - 1].event_id)
                 if len(rows) > size else "")
        return pb.ListRiskEventsResponse(events=[event_message(e) for e in rows[:size]],
                                         next_page_token=token)

    async def GetRiskEvent(self, request: pb.GetRiskEventRequest,
                           context) -> pb.GetRiskEventResponse:
        v = Violations()
        validate.object_id(v, request.event_id, "event_id")
        v.raise_if_any()
        async with self._pool.acquire() as conn:
            event = await events.get(conn, principal().platform_id, request.event_id)
        return pb.GetRiskEventResponse(event=event_message(event))

    async def ResolveRiskEvent(self, request: pb.ResolveRiskEventRequest,
                               context) -> pb.ResolveRiskEventResponse:
        v = Violations()
        validate.request_id(v, request.request_id)
        validate.object_id(v, request.event_id, "event_id")
        validate.enum(v, request.decision, RiskDecision, "decision")
        validate.text(v, request.note, "note", length_max=NOTE_LEN_MAX, required=True)
        v.raise_if_any()
        return pb.ResolveRiskEventResponse.FromString(await resolve.resolve(
            self._deps, principal(), request.request_id,
            validate.payload_hash("ResolveRiskEvent", request), request.event_id,
            RiskDecision(request.decision), request.note,
            lambda e: encode(pb.ResolveRiskEventResponse(event=event_message(e)))))
