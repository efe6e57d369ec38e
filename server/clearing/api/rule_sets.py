"""SplitService's rule-set methods: PublishRuleSet, ActivateRuleSet (maker-checker),
GetRuleSet, ListRuleSets. Validation, then the rules domain (validation, compilation, the
store), then conversion."""

from __future__ import annotations

import dataclasses

import asyncpg

from clearing import audit, idempotency, values
from clearing.events import outbox
from clearing.events.model import EventType
from clearing.api import split_convert as convert
from clearing.api import split_validate as checks
from clearing.api import validate
from clearing.api.interceptor import principal
from clearing.api.replies import encode
from clearing.api.rule_set_backtest import Backtests, ratio_swing
from clearing.errors import FailedPrecondition, Violations, invariant
from clearing.limits import SWING_BACKTEST_DAYS
from clearing.reasons import Reason
from clearing.risk import swing
from clearing.rules import compile as plans
from clearing.api import rules_proto as proto
from clearing.rules import store as rule_store
from clearing.rules.cache import PlanCache
from clearing.rules.model import RuleSet
from clearing.splits.accounts import accounts_by_ref
from clearing.v1 import rule_set_pb2
from clearing.v1 import split_pb2 as pb


class RuleSetMethods:
    """The rule-set half of SplitServicer (it sets `_pool` and `_plans`)."""

    _pool: asyncpg.Pool
    _plans: PlanCache
    _backtests: Backtests

    # ---- rule sets ----------------------------------------------------------------------

    async def PublishRuleSet(self, request: pb.PublishRuleSetRequest, context) -> pb.PublishRuleSetResponse:
        v = Violations()
        if not request.validate_only:
            validate.request_id(v, request.request_id)
        if not request.HasField("rule_set"):
            v.add("rule_set", "required")
        v.raise_if_any()
        who = principal()
        content = convert.content_of(request.rule_set)
        model = proto.rule_set_from_proto(content, prefix="rule_set.")
        async with self._pool.acquire() as conn:
            plan = await _compile(conn, who.platform_id, model)
        sha = proto.content_sha256(content)
        if request.validate_only:
            out = rule_set_pb2.RuleSet()
            out.CopyFrom(content)
            out.status, out.content_sha256 = rule_set_pb2.RULE_SET_STATUS_PUBLISHED, sha
            out.level_count = plan.level_count
            return pb.PublishRuleSetResponse(rule_set=out)
        blob = content.SerializeToString(deterministic=True)

        async def op(conn: asyncpg.Connection) -> bytes:
            version = await rule_store.next_version(conn, who.platform_id, model.name)
            versioned = await _compile(conn, who.platform_id,
                                       dataclasses.replace(model, version=version))
            stored = await rule_store.insert_version(
                conn, who.platform_id, model.name, blob, bytes.fromhex(sha),
                plans.to_bytes(versioned), who.key_id)
            invariant(stored == version, f"stored version {stored}, compiled {version}")
            rule_set_id = await rule_store.set_level_count(conn, who.platform_id, model.name,
                                                           stored, versioned.level_count)
            row = await rule_store.get_version_by_id(conn, who.platform_id, rule_set_id)
            message = convert.rule_set(row)
            await outbox.write_one(conn, who.platform_id, EventType.RULE_SET_PUBLISHED,
                                   f"{model.name}/{stored}", request.request_id, message,
                                   row.published_at)
            await audit.record(conn, audit.Actor.of(who), "PublishRuleSet",
                               f"rule_set:{model.name}",
                               after={"version": stored, "rule_set_id": rule_set_id,
                                      "content_sha256": sha})
            return encode(pb.PublishRuleSetResponse(rule_set=message))

        return pb.PublishRuleSetResponse.FromString(await idempotency.run(
            self._pool, who.platform_id, request.request_id, "PublishRuleSet",
            validate.payload_hash("PublishRuleSet", request), op))

    async def ActivateRuleSet(self, request: pb.ActivateRuleSetRequest, context) -> pb.ActivateRuleSetResponse:
        checks.activate_violations(request).raise_if_any()
        who = principal()
        name, version = request.rule_set_name, request.rule_set_version
        sha = bytes.fromhex(request.content_sha256) if request.content_sha256 else None
        expected = (request.expected_active_version
                    if request.HasField("expected_active_version") else None)
        payload = validate.payload_hash("ActivateRuleSet", request)
        # The ratio-swing backtest runs before the activation's transaction (seconds, not
        # under the name's lock); a known request id answers its first response instead.
        check = None
        if await idempotency.lookup(self._pool, who.platform_id, request.request_id) is None:
            check = await self._backtests.swing_check(who, name, version)
        refused_first: list[int] = []  # the key whose first approval to record
        first_approver = 0

        async def gate(conn: asyncpg.Connection, active: int) -> None:
            nonlocal first_approver
            if not active or active == version:
                return
            if check is None or check.active_version != active:
                raise FailedPrecondition(
                    f"the active version of {name!r} changed during the activation's"
                    " ratio-swing backtest; retry", reason=Reason.ACTIVE_VERSION_CHANGED,
                    metadata={"active_version": str(active)})
            if not check.swing_exceeded:
                return
            first_approver = swing.other_approver(
                await swing.approvers(conn, who.platform_id, name, version), who.key_id)
            if not first_approver:
                refused_first.append(who.key_id)
                raise swing.second_approver_needed(check, who.key_id, SWING_BACKTEST_DAYS)

        async def op(conn: asyncpg.Connection) -> bytes:
            rule_set_id, previous = await rule_store.activate_checked(
                conn, who, name, version, sha, expected, request.comment, gate=gate)
            row = await rule_store.get_version_by_id(conn, who.platform_id, rule_set_id)
            out = pb.ActivateRuleSetResponse(rule_set=convert.rule_set(row),
                                             previous_active_version=previous)
            await outbox.write_one(conn, who.platform_id, EventType.RULE_SET_ACTIVATED,
                                   f"{name}/{version}", request.request_id, out.rule_set,
                                   row.activated_at or row.published_at)
            if check is not None and previous and previous != version:
                out.ratio_swing.CopyFrom(ratio_swing(check, first_approver))
            return encode(out)

        async with self._pool.acquire() as conn:
            async with conn.transaction():
                outcome = await idempotency.run_in(conn, who.platform_id, request.request_id,
                                                   "ActivateRuleSet", payload, op)
                if refused_first and check is not None:
                    # recorded with the refusal (run_in rolled op's work back)
                    await swing.record_approval(conn, who.platform_id, check, who.key_id,
                                                request.comment)
        response = pb.ActivateRuleSetResponse.FromString(outcome.answer())
        await self._plans.activated(who.platform_id, name, version)
        return response

    async def GetRuleSet(self, request: pb.GetRuleSetRequest, context) -> pb.GetRuleSetResponse:
        v = Violations()
        checks.rule_set_name(v, request.rule_set_name, "rule_set_name", required=True)
        validate.version(v, request.rule_set_version, "rule_set_version",
                         zero="the active version")
        v.raise_if_any()
        async with self._pool.acquire() as conn:
            row = await rule_store.get_version(conn, principal().platform_id,
                                               request.rule_set_name, request.rule_set_version)
        return pb.GetRuleSetResponse(rule_set=convert.rule_set(row))

    async def ListRuleSets(self, request: pb.ListRuleSetsRequest, context) -> pb.ListRuleSetsResponse:
        v = Violations()
        size = validate.page_size(v, request.page_size)
        checks.rule_set_name(v, request.rule_set_name, "rule_set_name", required=False)
        if request.status not in (0, 1, 2, 3):
            v.add("status", f"unknown value {request.status}")
        v.raise_if_any()
        pid = principal().platform_id
        offset, = validate.page_token(request.page_token, "rule_sets", pid) or (0,)
        async with self._pool.acquire() as conn:
            rows = await rule_store.list_versions(conn, pid, name=request.rule_set_name,
                                                  status=request.status, offset=offset,
                                                  limit=size + 1)
        token = (values.encode_page_token("rule_sets", pid, offset + size)
                 if len(rows) > size else "")
        return pb.ListRuleSetsResponse(
            rule_sets=[convert.rule_set(r, include_rules=request.include_rules)
                       for r in rows[:size]], next_page_token=token)


async def _compile(conn: asyncpg.Connection, platform_id: int, model: RuleSet) -> plans.Plan:
    """Validate and compile a rule set against the platform's accounts and rule sets."""
    resolver = await rule_store.preload_resolver(conn, platform_id, model, _decode_rule_set)
    needed = plans.needed_account_refs(model, resolver)
    accounts = await accounts_by_ref(conn, platform_id, needed)
    return plans.compile_plan(model, accounts, resolver, prefix="rule_set.")


def _decode_rule_set(blob: bytes, version: int) -> RuleSet:
    return dataclasses.replace(proto.rule_set_from_proto(rule_set_pb2.RuleSet.FromString(blob)),
                               version=version)
