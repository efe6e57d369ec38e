"""SplitService: rule sets (publish, activate with maker-checker, read, list), PreviewSplit,
Split, SplitBatch, SplitStream and GetSplit. Validation, then the rules domain, then
conversion; protobuf stays here and in `split_convert`.

Split takes one path per order (`_split_request`). SplitBatch and SplitStream split their
orders as a group (`_split_many`: validation, evaluation and postings in one synchronous
pass, one writer call for the group, so that they share group commits); an order leaving
the usual path finishes on the unary path's own steps, so every order gets exactly the
outcome the unary Split answers, as a SplitOutcome.

ReleaseSplit and CancelSplit post or void held legs in one posting per request
(`split_actions` plans it); RefundSplit reverses legs, held money first, in one posting per
request (`split_refund` plans it and states the rule).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import asyncpg

from clearing import idempotency, metrics, values
from clearing.api import split_actions as actions
from clearing.api import split_convert as convert
from clearing.api import split_refund as refunds
from clearing.api import validate
from clearing.api.convert import timestamp
from clearing.api.interceptor import principal
from clearing.api.replies import Reply, encode
from clearing.clock import Clock
from clearing.errors import (AlreadyExists, ClearingError, FailedPrecondition, NotFound,
                             ResourceExhausted, Violations, invariant)
from clearing.ledger.model import Claim, Posting, Principal, Replay, Role
from clearing.ledger.writer import LedgerWriter
from clearing.limits import (ACTIVATION_COMMENT_LEN_MAX, CHANNEL_LEN_MAX,
                             CHANNEL_TRANSACTION_ID_LEN_MAX, COUNTER_OVERRIDES_MAX,
                             COUPON_ID_LEN_MAX, EXTERNAL_REF_LEN_MAX, NAME_LEN_MAX,
                             ORDER_AMOUNT_MINOR_MAX, ORDER_ATTRIBUTES_MAX, ORDER_COUPONS_MAX,
                             ORDER_ID_LEN_MAX, ORDER_MEMO_LEN_MAX, ORDER_PARTIES_MAX,
                             ORDER_TAGS_MAX, PAID_TIME_AHEAD_S_MAX, PAID_TIME_MIN,
                             SPLIT_BATCH_SIZE_MAX, SPLIT_STREAM_IN_FLIGHT_MAX, STREAM_GROUPS_MAX,
                             TAG_LEN_MAX, VALUE_LEN_MAX)
from clearing.money import is_currency
from clearing.rules import compile as plans
from clearing.rules import proto, runtime
from clearing.rules import store as rule_store
from clearing.rules.cache import PlanCache
from clearing.rules.counters import Counters
from clearing.rules.evaluate import SplitInvariantError, evaluate
from clearing.rules.validate import NAME_RE
from clearing.rules.model import Order, RuleSet
from clearing.v1 import split_pb2 as pb
from clearing.v1 import split_pb2_grpc
from clearing.reasons import Reason

log = logging.getLogger("clearing.api.split")

_SERVICE = "/clearing.v1.SplitService/"
_READ = frozenset({Role.GATEWAY, Role.OPERATOR, Role.APPROVER})
_ACT = frozenset({Role.GATEWAY, Role.OPERATOR})

# Roles allowed per method.
METHOD_ROLES: dict[str, frozenset[str]] = {
    _SERVICE + "PublishRuleSet": frozenset({Role.OPERATOR}),
    _SERVICE + "ActivateRuleSet": frozenset({Role.APPROVER}),
    _SERVICE + "GetRuleSet": _READ,
    _SERVICE + "ListRuleSets": _READ,
    _SERVICE + "PreviewSplit": _READ,
    _SERVICE + "Split": frozenset({Role.GATEWAY}),
    _SERVICE + "SplitBatch": frozenset({Role.GATEWAY}),
    _SERVICE + "SplitStream": frozenset({Role.GATEWAY}),
    _SERVICE + "GetSplit": _READ,
    _SERVICE + "ReleaseSplit": _ACT,
    _SERVICE + "CancelSplit": _ACT,
    _SERVICE + "RefundSplit": _ACT,
}

SHA256_HEX_LEN = 64
DEFAULT_RULE_SET = "default"
SPLIT_SINK = runtime.SINK_NAME


class SplitServicer(split_pb2_grpc.SplitServiceServicer):
    """Rule sets and splits of the caller's platform."""

    def __init__(self, pool: asyncpg.Pool, writer: LedgerWriter, plans_cache: PlanCache,
                 counters: Counters, clock: Clock) -> None:
        self._pool = pool
        self._writer = writer
        self._plans = plans_cache
        self._counters = counters
        self._clock = clock
        self._accounts = runtime.AccountDirectory(pool)

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
            out = pb.RuleSet()
            out.CopyFrom(content)
            out.status, out.content_sha256 = pb.RULE_SET_STATUS_PUBLISHED, sha
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
            return encode(pb.PublishRuleSetResponse(rule_set=convert.rule_set(row)))

        return pb.PublishRuleSetResponse.FromString(await idempotency.run(
            self._pool, who.platform_id, request.request_id, "PublishRuleSet",
            validate.payload_hash("PublishRuleSet", request), op))

    async def ActivateRuleSet(self, request: pb.ActivateRuleSetRequest, context) -> pb.ActivateRuleSetResponse:
        _activate_violations(request).raise_if_any()
        who = principal()
        name, version = request.rule_set_name, request.rule_set_version
        sha = bytes.fromhex(request.content_sha256) if request.content_sha256 else None
        expected = (request.expected_active_version
                    if request.HasField("expected_active_version") else None)

        async def op(conn: asyncpg.Connection) -> bytes:
            rule_set_id, previous = await rule_store.activate_checked(
                conn, who, name, version, sha, expected, request.comment)
            row = await rule_store.get_version_by_id(conn, who.platform_id, rule_set_id)
            return encode(pb.ActivateRuleSetResponse(rule_set=convert.rule_set(row),
                                                     previous_active_version=previous))

        response = pb.ActivateRuleSetResponse.FromString(await idempotency.run(
            self._pool, who.platform_id, request.request_id, "ActivateRuleSet",
            validate.payload_hash("ActivateRuleSet", request), op))
        await self._plans.activated(who.platform_id, name, version)
        return response

    async def GetRuleSet(self, request: pb.GetRuleSetRequest, context) -> pb.GetRuleSetResponse:
        v = Violations()
        _rule_set_name(v, request.rule_set_name, "rule_set_name", required=True)
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
        _rule_set_name(v, request.rule_set_name, "rule_set_name", required=False)
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

    # ---- splits -------------------------------------------------------------------------

    async def PreviewSplit(self, request: pb.PreviewSplitRequest, context) -> pb.PreviewSplitResponse:
        v = Violations()
        _order_violations(v, request.order, self._clock)
        validate.version(v, request.rule_set_version, "rule_set_version",
                         zero="the active version")
        if len(request.counter_overrides) > COUNTER_OVERRIDES_MAX:
            v.add("counter_overrides", f"more than {COUNTER_OVERRIDES_MAX}")
        for name, value in request.counter_overrides.items():
            if value < 0:
                v.add(f"counter_overrides[{name}]", "must not be negative")
        v.raise_if_any()
        pid = principal().platform_id
        order_msg, order = self._order(request.order)
        plan = await self._plan(pid, order, request.rule_set_version)
        custodial, accounts = await runtime.split_accounts(self._pool, pid, plan, order)
        overrides = dict(request.counter_overrides)
        specs = [s for s in runtime.counter_specs(pid, plan, order) if s.name not in overrides]
        readings = await self._counters.peek(specs)
        ev = evaluate(plan, order, runtime.counter_values(readings, overrides),
                      accounts=accounts)
        body = convert.split_body(ev, order_msg, readings, overrides)
        return pb.PreviewSplitResponse(split=convert.preview(body, custodial))

    async def Split(self, request: pb.SplitRequest, context) -> pb.SplitResponse:
        return pb.SplitResponse(split=await self._split_request(principal(), request))

    async def SplitBatch(self, request: pb.SplitBatchRequest,
                         context) -> pb.SplitBatchResponse:
        _batch_violations(request).raise_if_any()
        who = principal()
        # The batch's request id: its first response is the whole SplitBatchResponse,
        # recorded once every order is answered (each order also has its own request id).
        payload = validate.payload_hash("SplitBatch", request)
        first = await idempotency.start(self._pool, who.platform_id, request.request_id,
                                        "SplitBatch", payload)
        if first is not None:
            return pb.SplitBatchResponse.FromString(first)
        if not self._writer.has_room(len(request.requests)):
            raise ResourceExhausted(
                "the ledger writer queue cannot take this batch now; retry with the same"
                " request ids", reason=Reason.WRITER_QUEUE_FULL)
        refused = _batch_duplicates(request.requests)
        response = pb.SplitBatchResponse()
        outs = [response.outcomes.add(order_id=item.order.order_id, request_id=item.request_id)
                for item in request.requests]

        async def split_and_record() -> bytes:
            await self._split_many(who, request.requests, refused, outs)
            return await idempotency.finish(self._pool, who.platform_id, request.request_id,
                                            encode(response))

        # shielded: a caller gone mid-batch leaves its postings and counters consistent
        return pb.SplitBatchResponse.FromString(
            await asyncio.shield(asyncio.ensure_future(split_and_record())))

    async def SplitStream(self, request_iterator, context):
        """Outcomes as their postings commit; at most SPLIT_STREAM_IN_FLIGHT_MAX orders are
        read ahead of the outcomes sent (a slot frees once its outcome went out). The orders
        read while the previous ones are being split go together (`_split_many`)."""
        answers: asyncio.Queue = asyncio.Queue()
        slots = _ReadAhead(SPLIT_STREAM_IN_FLIGHT_MAX)
        reader = asyncio.create_task(
            self._read_stream(principal(), request_iterator, slots, answers))
        try:
            while (response := await answers.get()) is not _STREAM_END:
                yield response
                slots.release()
            await reader  # a broken request stream fails the call
        finally:
            reader.cancel()
            slots.close()

    async def GetSplit(self, request: pb.GetSplitRequest, context) -> pb.GetSplitResponse:
        v = Violations()
        if bool(request.order_id) == bool(request.split_id):
            v.add("order_id", "set exactly one of order_id and split_id")
        validate.text(v, request.order_id, "order_id", length_max=ORDER_ID_LEN_MAX)
        validate.object_id(v, request.split_id, "split_id", required=False)
        v.raise_if_any()
        key, value = (("order_id", request.order_id) if request.order_id
                      else ("split_id", request.split_id))
        stored = await self._stored(principal().platform_id, key, value)
        if stored is None:
            raise NotFound(f"no split with {key} {value}", reason=Reason.SPLIT_NOT_FOUND,
                           metadata={key: str(value)})
        return pb.GetSplitResponse(split=_stored_message(stored))

    async def ReleaseSplit(self, request: pb.ReleaseSplitRequest,
                           context) -> pb.ReleaseSplitResponse:
        actions.release_violations(request, self._clock.now()).raise_if_any()
        return await self._once(principal(), request, "ReleaseSplit", pb.ReleaseSplitResponse,
                                functools.partial(self._act, pb.SPLIT_ACTION_KIND_RELEASE))

    async def CancelSplit(self, request: pb.CancelSplitRequest,
                          context) -> pb.CancelSplitResponse:
        actions.cancel_violations(request).raise_if_any()
        return await self._once(principal(), request, "CancelSplit", pb.CancelSplitResponse,
                                functools.partial(self._act, pb.SPLIT_ACTION_KIND_CANCEL))

    async def RefundSplit(self, request: pb.RefundSplitRequest,
                          context) -> pb.RefundSplitResponse:
        refunds.refund_violations(request).raise_if_any()
        return await self._once(principal(), request, refunds.METHOD, pb.RefundSplitResponse,
                                self._refund)

    async def _once(self, who: Principal, request, method: str, response_cls, step):
        """A split action once per request id: the first response if one is recorded, else
        `step(who, request, method, payload, response_cls)`; a failure that is a first
        response is recorded (`idempotency.settle_failure`)."""
        payload = validate.payload_hash(method, request)
        prior = await idempotency.lookup(self._pool, who.platform_id, request.request_id)
        if prior is not None:
            first = prior.answer(method, payload)
            if first is not None:
                return response_cls.FromString(first)
        try:
            return await step(who, request, method, payload, response_cls)
        except ClearingError as exc:
            return response_cls.FromString(await idempotency.settle_failure(
                self._pool, who.platform_id, request.request_id, method, payload, exc))

    async def _refund(self, who: Principal, request: pb.RefundSplitRequest, method: str,
                      payload: bytes, response_cls):
        # one snapshot of the split and the balances: a plan from a state another action
        # changed since fails on the claim (SPLIT_CHANGED), not on a mixed read
        async with self._pool.acquire() as conn, conn.transaction(
                isolation="repeatable_read", readonly=True):
            split = await _split_of_order(conn, who.platform_id, request.order_id)
            body = pb.Split.FromString(split.body)
            shortfall_id = await refunds.shortfall_account(conn, who.platform_id, request,
                                                           body.currency_code)
            spendable = await runtime.account_spendable(
                conn, [leg.account_id for leg in split.legs])
            statuses = await runtime.account_statuses(
                conn, [leg.account_id for leg in split.legs])
        parts = refunds.refund_parts(split, body, request, spendable, shortfall_id,
                                     statuses)
        posting = refunds.posting(who.platform_id, split, body, request, payload, parts,
                                  shortfall_id)
        return await self._submit_action(split, posting, response_cls)

    # ---- helpers ------------------------------------------------------------------------

    def _order(self, msg: pb.Order) -> tuple[pb.Order, Order]:
        """The order as recorded (paid_time defaults to now) and its model."""
        recorded = pb.Order()
        recorded.CopyFrom(msg)
        if not recorded.HasField("paid_time"):
            recorded.paid_time.CopyFrom(timestamp(self._clock.now()))
        return recorded, proto.order_from_proto(recorded)

    async def _plan(self, platform_id: int, order: Order, version: int) -> plans.Plan:
        name = order.rule_set_name or DEFAULT_RULE_SET
        if version:
            try:
                return await self._plans.plan(platform_id, name, version)
            except LookupError:
                raise NotFound(f"rule set {name!r} has no version {version}",
                               reason=Reason.RULE_SET_NOT_FOUND,
                               metadata={"rule_set_name": name}) from None
        active = await self._plans.active(platform_id, name)
        if active is None:
            raise FailedPrecondition(f"rule set {name!r} has no active version",
                                     reason=Reason.NO_ACTIVE_RULE_SET,
                                     metadata={"rule_set_name": name})
        return active.plan

    async def _act(self, kind: int, who: Principal, request, method: str, payload: bytes,
                   response_cls):
        """A release or cancellation: plan it from the stored split and commit it in one
        posting; answers the split and the action as it left them."""
        # one snapshot of the split and its receivers: a plan from a state another action
        # changed since fails on the claim (SPLIT_CHANGED), not on a mixed read
        async with self._pool.acquire() as conn, conn.transaction(
                isolation="repeatable_read", readonly=True):
            split = await _split_of_order(conn, who.platform_id, request.order_id)
            statuses = await runtime.account_statuses(
                conn, [leg.account_id for leg in split.legs])
        body = pb.Split.FromString(split.body)
        if kind == pb.SPLIT_ACTION_KIND_CANCEL:
            changes = actions.cancel_changes(split)
        else:
            changes = actions.release_changes(split, body, request, statuses)
        return await self._submit_action(
            split, actions.posting(who.platform_id, split, body, request, method, payload, kind,
                                   changes), response_cls)

    async def _submit_action(self, split: runtime.StoredSplit, posting: Posting,
                             response_cls):
        """Commit an action's posting; its first response (the split and the action as the
        action left them) is made in the writer's batch and recorded with it."""
        def build(sent: list):
            after, action = runtime.after_action(split, posting.attachment, sent)
            return response_cls(split=_stored_message(after), action=convert.action(action))

        reply = Reply(build)
        sent = await self._writer.submit(dataclasses.replace(posting, respond=reply))
        return reply.answer(sent, response_cls)

    async def _stored(self, platform_id: int, key: str, value) -> runtime.StoredSplit | None:
        async with self._pool.acquire() as conn:
            return await runtime.load_split(conn, platform_id, key, value)

    async def _split_request(self, who: Principal, request: pb.SplitRequest) -> pb.Split:
        """One order, as Split answers it: validate, replay a known request id, else split
        and post. Raises what the unary call answers."""
        v = Violations()
        validate.request_id(v, request.request_id)
        _order_violations(v, request.order, self._clock)
        v.raise_if_any()
        payload = validate.payload_hash("Split", request)
        return await self._or_replay(who, request, payload, self._split(who, request, payload))

    async def _or_replay(self, who: Principal, request: pb.SplitRequest, payload: bytes,
                         step: Awaitable[pb.Split]) -> pb.Split:
        """`step`'s split; if it raises a ClearingError, the first response of the request
        id instead: a failure that is a first response is recorded now unless one is
        recorded already (`idempotency.settle_failure`)."""
        try:
            return await step
        except ClearingError as exc:
            # A known request id is answered by the writer (its first response) once the
            # order reaches it; one refused before (its rule set or a receiver changed
            # since) is answered here, without a read per order on the usual path.
            return pb.Split.FromString(await idempotency.settle_failure(
                self._pool, who.platform_id, request.request_id, "Split", payload, exc))

    async def _split_many(self, who: Principal, requests: Sequence[pb.SplitRequest],
                          refused: Mapping[int, ClearingError],
                          outs: Sequence[pb.SplitOutcome]) -> None:
        """Fill `outs[i]` with the outcome of `requests[i]`: the split or the error the
        unary Split answers for it (`refused`: refused before splitting), with one plan
        lookup per rule set, one counters call and ONE writer call (`submit_many`) for the
        orders on the usual path. An order leaving that path (no plan, a refusal by the
        evaluator or the writer, a replay) goes on with the unary path's own steps from
        where it left it."""
        pid = who.platform_id
        rest: dict[int, Callable[[], Awaitable[pb.Split]]] = {}  # the unary path, from here
        ready: list[tuple[int, bytes, pb.Order, Order, plans.Plan, int, dict]] = []
        found: dict[str, plans.Plan | None] = {}
        for i, request in enumerate(requests):
            error = refused.get(i) or _request_error(request, self._clock)
            if error is not None:
                outs[i].error.CopyFrom(convert.split_error(error))
                continue
            payload = validate.payload_hash("Split", request)
            try:
                order_msg, order = self._order(request.order)
                name = order.rule_set_name or DEFAULT_RULE_SET
                if name not in found:
                    found[name] = await self._plan_or_none(pid, order)
                plan = found[name]
                if plan is not None:
                    custodial, accounts = await self._accounts.lookup(pid, plan, order)
            except Exception:  # noqa: BLE001 - the unary path meets it again and answers it
                plan = None
            if plan is None or not custodial:
                rest[i] = functools.partial(self._split_request, who, request)
                continue
            ready.append((i, payload, order_msg, order, plan, custodial, accounts))
        specs = [runtime.counter_specs(pid, r[4], r[3]) for r in ready]
        readings = await self._counters.reserve([s for group in specs for s in group])
        prepared: list[_Prepared] = []
        at = 0
        for (i, payload, order_msg, order, plan, custodial, accounts), own in zip(ready, specs):
            taken, at = readings[at:at + len(own)], at + len(own)
            try:
                prepared.append(_prepare(pid, i, requests[i], payload, order_msg, order, plan,
                                         custodial, accounts, taken, outs[i].split))
            except Exception as exc:  # noqa: BLE001 - handled as the unary path does
                rest[i] = functools.partial(self._unwind, who, requests[i], payload,
                                            order_msg, order, plan, taken, exc)
        try:
            sent = await self._writer.submit_many([p.posting for p in prepared])
        except Exception as exc:  # noqa: BLE001 - none was queued: each answers it
            sent = [exc] * len(prepared)
        for p, result in zip(prepared, sent):
            if p.committed(result):  # built in outs[p.index].split by the posting's respond
                pass
            elif isinstance(result, Replay):
                await self._counters.undo(p.readings)
                outs[p.index].split.ParseFromString(result.response)
            else:
                rest[p.index] = functools.partial(self._unwind, who, p.request, p.payload,
                                                  p.order_msg, p.order, p.plan, p.readings,
                                                  result)
        if rest:
            await asyncio.gather(*(_settle(outs[i], step()) for i, step in rest.items()))

    async def _unwind(self, who: Principal, request: pb.SplitRequest, payload: bytes,
                      order_msg: pb.Order, order: Order, plan: plans.Plan, readings: list,
                      stopped: object) -> pb.Split:
        """The rest of the unary path for an order of a group that did not commit:
        `stopped` is what stopped it (an exception, or the records the writer answered for
        a posting with its request id that committed first)."""
        return await self._or_replay(who, request, payload, self._after(
            who, request, payload, order_msg, order, plan, readings, stopped))

    async def _after(self, who: Principal, request: pb.SplitRequest, payload: bytes,
                     order_msg: pb.Order, order: Order, plan: plans.Plan, readings: list,
                     stopped: object) -> pb.Split:
        await self._counters.undo(readings)
        if isinstance(stopped, SplitInvariantError):
            await self._invariant_broken(who.platform_id, order, stopped)
        if isinstance(stopped, FailedPrecondition) \
                and stopped.reason in runtime.STALE_ACCOUNT_REASONS:
            # as `_split`: once more, from the database
            return await self._split_once(who, request, payload, order_msg, order, plan, True)
        if isinstance(stopped, BaseException):
            raise stopped
        if isinstance(stopped, Replay):
            return pb.Split.FromString(stopped.response)
        return _replayed(await self._stored(who.platform_id, "request_id", request.request_id),
                         request, payload)

    async def _read_stream(self, who: Principal, request_iterator, slots: asyncio.Semaphore,
                           answers: asyncio.Queue) -> None:
        """Read the stream's orders while slots are free; they are split in groups
        (`_StreamGroups`) whose outcomes go to `answers`; _STREAM_END goes last, once the
        client half-closed and every order is answered. In-flight orders are not cancelled
        if the stream breaks."""
        groups = _StreamGroups(functools.partial(self._answer, who, answers))
        try:
            async for item in request_iterator:
                await slots.acquire()
                groups.add(item)
            await groups.wait()
        finally:
            answers.put_nowait(_STREAM_END)

    async def _answer(self, who: Principal, answers: asyncio.Queue,
                      items: list[pb.SplitStreamRequest]) -> None:
        """Split a group of a stream's orders and answer each."""
        requests = [pb.SplitRequest(request_id=item.request_id, order=item.order)
                    for item in items]
        responses = [pb.SplitStreamResponse() for _ in items]
        outs = []
        for response, item in zip(responses, items):
            response.outcome.order_id = item.order.order_id
            response.outcome.request_id = item.request_id
            outs.append(response.outcome)
        try:
            await self._split_many(who, requests, {}, outs)
        except Exception as exc:  # noqa: BLE001 - a bug: the group's orders fail alone
            log.error("split of a stream group failed unexpectedly", exc_info=True)
            for out in outs:
                if out.WhichOneof("result") is None:
                    out.error.CopyFrom(convert.split_error(exc))
        for response in responses:
            answers.put_nowait(response)

    async def _split(self, who: Principal, request: pb.SplitRequest,
                     payload: bytes) -> pb.Split:
        """Reserve counters, evaluate, submit one posting; undo the counters unless this
        call's posting committed."""
        order_msg, order = self._order(request.order)
        plan = await self._plan(who.platform_id, order, 0)
        try:
            return await self._split_once(who, request, payload, order_msg, order, plan, False)
        except FailedPrecondition as exc:
            if exc.reason not in runtime.STALE_ACCOUNT_REASONS:
                raise
        # a receiver read as active from the directory is no longer: once more, from the
        # database (the refused posting left no trace)
        return await self._split_once(who, request, payload, order_msg, order, plan, True)

    async def _split_once(self, who: Principal, request: pb.SplitRequest, payload: bytes,
                          order_msg: pb.Order, order: Order, plan: plans.Plan,
                          fresh: bool) -> pb.Split:
        pid = who.platform_id
        custodial, accounts = await self._accounts.lookup(pid, plan, order, fresh=fresh)
        runtime.require_custodial(custodial, order.currency_code)
        readings = await self._counters.reserve(runtime.counter_specs(pid, plan, order))
        committed = False
        try:
            prepared = _prepare(pid, 0, request, payload, order_msg, order, plan, custodial,
                                accounts, readings, pb.Split())
            sent = await self._writer.submit(prepared.posting)
            committed = prepared.committed(sent)
        except SplitInvariantError as exc:
            await self._invariant_broken(pid, order, exc)
            raise
        finally:
            if not committed:
                await self._counters.undo(readings)
        if committed:
            return prepared.reply.message
        if isinstance(sent, Replay):  # this request id has a first response
            return pb.Split.FromString(sent.response)
        stored = await self._stored(pid, "request_id", request.request_id)
        return _replayed(stored, request, payload)

    async def _plan_or_none(self, platform_id: int, order: Order) -> plans.Plan | None:
        """The active plan of the order's rule set; None if there is none or the lookup
        failed (the unary path then answers it)."""
        try:
            return await self._plan(platform_id, order, 0)
        except Exception:  # noqa: BLE001 - answered by the unary path
            return None

    async def _invariant_broken(self, platform_id: int, order: Order,
                                exc: SplitInvariantError) -> None:
        log.critical("split invariant broken; nothing posted", exc_info=exc,
                     extra={"order_id": order.order_id})
        await runtime.record_alert(self._pool, platform_id, Reason.SPLIT_INVARIANT_BROKEN,
                                   f"order {order.order_id!r}: {exc}")


@dataclass(slots=True)
class _Prepared:
    """One evaluated order on its way to the writer (`index`: its place in its group)."""

    index: int
    request: pb.SplitRequest
    payload: bytes
    order_msg: pb.Order
    order: Order
    plan: plans.Plan
    readings: list
    body: pb.Split
    record: runtime.SplitRecord
    posting: Posting
    reply: Reply

    def committed(self, sent: object) -> bool:
        """Whether `sent` (the writer's answer) is this posting committed, not an error
        nor the first response of a posting with the same request id."""
        return isinstance(sent, list) and self.record.split_id == sent[0].transfer_id


def _prepare(platform_id: int, index: int, request: pb.SplitRequest, payload: bytes,
             order_msg: pb.Order, order: Order, plan: plans.Plan, custodial: int,
             accounts: dict, readings: list, into: pb.Split) -> _Prepared:
    """Evaluate an order and build its posting (raises what evaluation raises); its first
    response is built in `into` by the posting's `respond` when it commits."""
    ev = evaluate(plan, order, runtime.counter_values(readings, {}), accounts=accounts)
    body = convert.split_body(ev, order_msg, readings, {})
    legs, positions = runtime.ledger_legs(ev, custodial, order_msg.memo)
    record = runtime.SplitRecord(
        platform_id, order.order_id, request.request_id, payload, ev,
        runtime.counters_json(readings, {}), body.SerializeToString(deterministic=True),
        positions, custodial)
    claim = Claim.of("order", order.order_id, Reason.ORDER_ALREADY_SPLIT,
                     f"order {order.order_id!r} is already split")
    reply = Reply(functools.partial(_committed, body, record, request.request_id, into))
    posting = Posting(platform_id, request.request_id, "Split", payload, tuple(legs), (claim,),
                      SPLIT_SINK, record, unrecorded_reasons=runtime.STALE_ACCOUNT_REASONS,
                      respond=reply)
    return _Prepared(index, request, payload, order_msg, order, plan, readings, body, record,
                     posting, reply)


def _committed(body: pb.Split, record: runtime.SplitRecord, request_id: str, into: pb.Split,
               sent: list) -> pb.Split:
    """The first response of a split whose posting committed as `sent`, built in `into`
    (runs in the writer's batch, before the sink sets the record's id and time)."""
    return convert.fresh_split(
        body, split_id=sent[0].transfer_id, request_id=request_id,
        status=record.status, custodial_id=record.custodial_id,
        transfer_ids=[sent[p].transfer_id if p >= 0 else 0 for p in record.transfer_positions],
        created_at=sent[0].created_at, into=into)


async def _settle(out: pb.SplitOutcome, step: Awaitable[pb.Split]) -> None:
    """Put `step`'s split in `out`, or the error the unary Split would have answered."""
    try:
        out.split.CopyFrom(await step)
    except ClearingError as exc:
        out.error.CopyFrom(convert.split_error(exc))
    except Exception as exc:  # noqa: BLE001 - a bug fails its order only (INTERNAL)
        log.error("split of one order failed unexpectedly", exc_info=True,
                  extra={"order_id": out.order_id})
        out.error.CopyFrom(convert.split_error(exc))


def _request_error(request: pb.SplitRequest, clock: Clock) -> ClearingError | None:
    """What validation answers for one order of a group (None: valid)."""
    v = Violations()
    validate.request_id(v, request.request_id)
    _order_violations(v, request.order, clock)
    try:
        v.raise_if_any()
    except ClearingError as exc:
        return exc
    return None


# ---- pure helpers -------------------------------------------------------------------------------

_STREAM_END = object()


class _StreamGroups:
    """A stream's orders read and not yet split, and the tasks splitting them: at most
    STREAM_GROUPS_MAX at once, each taking every order waiting (up to SPLIT_BATCH_SIZE_MAX)
    whenever it is free. So orders arriving while the earlier ones are split go together
    to the ledger writer, however the reads were spread over the event loop."""

    def __init__(self, split: Callable[[list], Awaitable[None]]) -> None:
        self._split = split
        self._waiting: list = []
        self._busy = 0
        self._tasks: set[asyncio.Task] = set()

    def add(self, item) -> None:
        self._waiting.append(item)
        if self._busy < STREAM_GROUPS_MAX:
            self._busy += 1
            task = asyncio.create_task(self._work())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def wait(self) -> None:
        """Until every order added is answered."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def _work(self) -> None:
        try:
            while self._waiting:
                items = self._waiting[:SPLIT_BATCH_SIZE_MAX]
                del self._waiting[:SPLIT_BATCH_SIZE_MAX]
                await self._split(items)
        finally:
            self._busy -= 1  # no await since the loop's test: nothing added is left behind


class _ReadAhead(asyncio.Semaphore):
    """A SplitStream's read-ahead slots; the gauge clearing_split_stream_in_flight counts
    the slots taken by every stream of the process."""

    def __init__(self, bound: int) -> None:
        super().__init__(bound)
        self.taken = 0

    async def acquire(self) -> bool:
        await super().acquire()
        self.taken += 1
        metrics.SPLIT_STREAM_IN_FLIGHT.inc()
        return True

    def release(self) -> None:
        super().release()
        self.taken -= 1
        metrics.SPLIT_STREAM_IN_FLIGHT.dec()

    def close(self) -> None:
        """The stream ended: its orders still unanswered no longer count."""
        metrics.SPLIT_STREAM_IN_FLIGHT.dec(self.taken)
        self.taken = 0


def _batch_violations(request: pb.SplitBatchRequest) -> Violations:
    v = Violations()
    validate.request_id(v, request.request_id)
    if not request.requests:
        v.add("requests", f"required: 1 to {SPLIT_BATCH_SIZE_MAX} orders")
    elif len(request.requests) > SPLIT_BATCH_SIZE_MAX:
        v.add("requests", f"more than {SPLIT_BATCH_SIZE_MAX} orders")
    return v


def _batch_duplicates(requests) -> dict[int, ClearingError]:
    """Items repeating an earlier item's request id or order id: refused, the first goes on."""
    request_ids: set[str] = set()
    order_ids: set[str] = set()
    refused: dict[int, ClearingError] = {}
    for i, item in enumerate(requests):
        rid, oid = item.request_id, item.order.order_id
        if rid and rid in request_ids:
            refused[i] = AlreadyExists(f"request_id {rid!r} is repeated in the batch",
                                       reason=Reason.REQUEST_ID_REUSED,
                                       metadata={"request_id": rid})
        elif oid and oid in order_ids:
            refused[i] = AlreadyExists(f"order {oid!r} is repeated in the batch",
                                       reason=Reason.ORDER_ALREADY_SPLIT,
                                       metadata={"order_id": oid})
        request_ids.add(rid)
        order_ids.add(oid)
    return refused


async def _compile(conn: asyncpg.Connection, platform_id: int, model: RuleSet) -> plans.Plan:
    """Validate and compile a rule set against the platform's accounts and rule sets."""
    resolver = await runtime.preload_resolver(conn, platform_id, model, _decode_rule_set)
    needed = plans.needed_account_refs(model, resolver)
    accounts = await runtime.accounts_by_ref(conn, platform_id, needed)
    return plans.compile_plan(model, accounts, resolver, prefix="rule_set.")


def _decode_rule_set(blob: bytes, version: int) -> RuleSet:
    return dataclasses.replace(proto.rule_set_from_proto(pb.RuleSet.FromString(blob)),
                               version=version)


def _stored_message(stored: runtime.StoredSplit) -> pb.Split:
    return convert.split(pb.Split.FromString(stored.body), split_id=stored.split_id,
                         request_id=stored.request_id, status=stored.status, legs=stored.legs,
                         created_at=stored.created_at, updated_at=stored.updated_at,
                         refunded_minor=stored.refunded_minor, actions=stored.actions)


def _replayed(stored: runtime.StoredSplit | None, request: pb.SplitRequest,
              payload: bytes) -> pb.Split:
    """The split of a request id recorded without a first response (before they were
    recorded), if this request is the same one."""
    if stored is None or stored.payload_hash != payload:
        raise AlreadyExists(
            f"request_id {request.request_id!r} was already used with a different request",
            reason=Reason.REQUEST_ID_REUSED, metadata={"request_id": request.request_id})
    return _stored_message(stored)


def _rule_set_name(v: Violations, value: str, field: str, *, required: bool) -> None:
    if required and not value:
        v.add(field, "required")
    elif value and NAME_RE.fullmatch(value) is None:
        v.add(field, "1 to 64 characters: lower-case letters, digits, '_' and '-'")


def _activate_violations(request: pb.ActivateRuleSetRequest) -> Violations:
    v = Violations()
    validate.request_id(v, request.request_id)
    _rule_set_name(v, request.rule_set_name, "rule_set_name", required=True)
    validate.version(v, request.rule_set_version, "rule_set_version")
    sha = request.content_sha256
    if sha and (len(sha) != SHA256_HEX_LEN or sha.strip("0123456789abcdef")):
        v.add("content_sha256", "must be 64 lower-case hex digits")
    if request.HasField("expected_active_version"):
        validate.version(v, request.expected_active_version, "expected_active_version",
                         zero="none active")
    validate.text(v, request.comment, "comment", length_max=ACTIVATION_COMMENT_LEN_MAX)
    return v


def _order_violations(v: Violations, order: pb.Order, clock: Clock) -> None:
    """Every problem of an order, with `order.` field paths."""
    validate.text(v, order.order_id, "order.order_id", length_max=ORDER_ID_LEN_MAX,
                  required=True)
    if order.order_id and not order.order_id.isprintable():
        v.add("order.order_id", "must be printable characters")
    if not 1 <= order.amount_minor <= ORDER_AMOUNT_MINOR_MAX:
        v.add("order.amount_minor", f"must be 1 to {ORDER_AMOUNT_MINOR_MAX} minor units")
    elif not 0 <= order.channel_fee_minor <= order.amount_minor:
        v.add("order.channel_fee_minor", "must be 0 to the order's amount_minor")
    if not is_currency(order.currency_code):
        v.add("order.currency_code", "required: an ISO 4217 code such as CNY")
    validate.text(v, order.channel, "order.channel", length_max=CHANNEL_LEN_MAX, required=True)
    validate.text(v, order.channel_transaction_id, "order.channel_transaction_id",
                  length_max=CHANNEL_TRANSACTION_ID_LEN_MAX)
    validate.text(v, order.memo, "order.memo", length_max=ORDER_MEMO_LEN_MAX)
    _rule_set_name(v, order.rule_set_name, "order.rule_set_name", required=False)
    _order_collections(v, order)
    paid = validate.timestamp(v, order, "paid_time", "order.paid_time")
    if paid is not None and (paid - clock.now()).total_seconds() > PAID_TIME_AHEAD_S_MAX:
        v.add("order.paid_time", f"more than {PAID_TIME_AHEAD_S_MAX} s in the future")
    elif paid is not None and paid < PAID_TIME_MIN:
        v.add("order.paid_time", f"before {PAID_TIME_MIN:%Y-%m-%dT%H:%M:%SZ}")


def _order_collections(v: Violations, order: pb.Order) -> None:
    if len(order.tags) > ORDER_TAGS_MAX:
        v.add("order.tags", f"more than {ORDER_TAGS_MAX} tags")
    for i, tag in enumerate(order.tags):
        validate.text(v, tag, f"order.tags[{i}]", length_max=TAG_LEN_MAX, required=True)
    if len(order.attributes) > ORDER_ATTRIBUTES_MAX:
        v.add("order.attributes", f"more than {ORDER_ATTRIBUTES_MAX} attributes")
    for key, value in order.attributes.items():
        validate.text(v, key, f"order.attributes[{key}]", length_max=NAME_LEN_MAX,
                      required=True)
        validate.text(v, value, f"order.attributes[{key}]", length_max=VALUE_LEN_MAX)
    if len(order.parties) > ORDER_PARTIES_MAX:
        v.add("order.parties", f"more than {ORDER_PARTIES_MAX} parties")
    for role, ref in order.parties.items():
        validate.text(v, ref, f"order.parties[{role}]", length_max=EXTERNAL_REF_LEN_MAX,
                      required=True)
    if len(order.coupons) > ORDER_COUPONS_MAX:
        v.add("order.coupons", f"more than {ORDER_COUPONS_MAX} coupons")
    elif (all(0 < c.amount_minor <= ORDER_AMOUNT_MINOR_MAX for c in order.coupons)
          and sum(c.amount_minor for c in order.coupons) > ORDER_AMOUNT_MINOR_MAX):
        v.add("order.coupons", f"add up to more than {ORDER_AMOUNT_MINOR_MAX} minor units")
    for i, coupon in enumerate(order.coupons):
        if not 1 <= coupon.amount_minor <= ORDER_AMOUNT_MINOR_MAX:
            v.add(f"order.coupons[{i}].amount_minor",
                  f"must be 1 to {ORDER_AMOUNT_MINOR_MAX} minor units")
        if coupon.funding not in (pb.COUPON_FUNDING_PLATFORM, pb.COUPON_FUNDING_SELLER):
            v.add(f"order.coupons[{i}].funding", "required: PLATFORM or SELLER")
        validate.text(v, coupon.coupon_id, f"order.coupons[{i}].coupon_id",
                      length_max=COUPON_ID_LEN_MAX)


async def _split_of_order(conn: asyncpg.Connection, platform_id: int,
                          order_id: str) -> runtime.StoredSplit:
    """The stored split of an order, for an action on it; NOT_FOUND SPLIT_NOT_FOUND if none."""
    split = await runtime.load_split(conn, platform_id, "order_id", order_id)
    if split is None:
        raise NotFound(f"no split with order_id {order_id}", reason=Reason.SPLIT_NOT_FOUND,
                       metadata={"order_id": order_id})
    return split
