"""SplitService: validation, conversion, and the split domain (`clearing.splits`).

The rule-set methods are in `rule_sets`; validation in `split_validate`; conversion in
`split_convert`. Split, SplitBatch and SplitStream hand orders to the split service (one at
a time, or as a group that shares group commits: `SplitService.split_many`), which answers
each with the committed split or the first response of its request id; the first response
is made here (`_SplitReply`), in the ledger writer's batch, from the committed split.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from clearing import idempotency, metrics, values
from clearing.api import split_convert as convert
from clearing.api import split_validate as checks
from clearing.api import party, validate
from clearing.api.split_group import UnaryGroups
from clearing.api.interceptor import principal
from clearing.api.replies import encode
from clearing.api.rule_set_backtest import BacktestMethods, Backtests
from clearing.api.rule_sets import RuleSetMethods
from clearing.clock import Clock
from clearing.config import SplitUnarySettings
from clearing.errors import ClearingError, NotFound, ResourceExhausted
from clearing.ledger.model import Replay, Role
from clearing.ledger.writer import LedgerWriter
from clearing.limits import (PAGE_SIZE_DEFAULT, SPLIT_BATCH_SIZE_MAX, SPLIT_STREAM_IN_FLIGHT_MAX,
                             STREAM_GROUPS_MAX)
from clearing.reasons import Reason
from clearing.risk.gate import RiskGate
from clearing.rules.cache import PlanCache
from clearing.rules.counters import Counters
from clearing.splits import service as splits
from clearing.splits.model import (Action, CancelRequest, RefundRequest, ReleaseRequest, Split)
from clearing.splits.postings import SplitCommand
from clearing.splits.store import SplitFilter
from clearing.v1 import split_pb2 as pb
from clearing.v1 import split_pb2_grpc

log = logging.getLogger("clearing.api.split")


def _list_token_kind(flt: SplitFilter) -> str:
    """ListSplits' page-token kind: bound to the filters (a token made with other filters
    is refused on `page_token`, not read as a position in this listing)."""
    digest = hashlib.blake2b(flt.key().encode(), digest_size=8).hexdigest()
    return f"splits-{digest}"

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
    _SERVICE + "SimulateRuleSet": frozenset({Role.OPERATOR, Role.APPROVER}),
    _SERVICE + "Split": frozenset({Role.GATEWAY}),
    _SERVICE + "SplitBatch": frozenset({Role.GATEWAY}),
    _SERVICE + "SplitStream": frozenset({Role.GATEWAY}),
    _SERVICE + "GetSplit": _READ | {Role.PARTY},
    _SERVICE + "ListSplits": _READ | {Role.PARTY},
    _SERVICE + "ReleaseSplit": _ACT,
    _SERVICE + "CancelSplit": _ACT,
    _SERVICE + "RefundSplit": _ACT,
}


class _SplitReply:
    """A split's first response: its Split message, built (in `into`, if given) from the
    committed split in the writer's batch; `split` is the split it was built from.
    `order`: the request's Order message, the split's order as received (its paid time set
    by the service when the gateway did not say)."""

    __slots__ = ("into", "order", "message", "split")

    def __init__(self, order: pb.Order, into: pb.Split | None = None) -> None:
        self.into = into
        self.order = order
        self.message: pb.Split | None = None
        self.split: Split | None = None

    def __call__(self, split: Split) -> bytes:
        self.split = split
        self.message = message = convert.split(split, into=self.into, order_msg=self.order)
        if not self.order.HasField("paid_time"):  # set on the one copy the message holds
            message.order.paid_time.FromNanoseconds(split.order.paid_time_ns)
        return encode(message)

    def answer(self, outcome: Split | Replay) -> pb.Split:
        """The Split message of the service's answer."""
        if isinstance(outcome, Replay):
            if self.into is not None:
                self.into.ParseFromString(outcome.response)
                return self.into
            return pb.Split.FromString(outcome.response)
        if outcome is self.split and self.message is not None:
            return self.message
        return convert.split(outcome, into=self.into)


class _ActionReply:
    """An action's first response: the split and the action as it left them."""

    __slots__ = ("cls", "message")

    def __init__(self, cls) -> None:
        self.cls = cls
        self.message = None

    def __call__(self, split: Split, action: Action) -> bytes:
        self.message = self.cls(split=convert.split(split), action=convert.action(action))
        return encode(self.message)

    def answer(self, outcome: tuple[Split, Action] | Replay):
        if isinstance(outcome, Replay):
            return self.cls.FromString(outcome.response)
        if self.message is None:
            split, action = outcome
            return self.cls(split=convert.split(split), action=convert.action(action))
        return self.message


class SplitServicer(RuleSetMethods, BacktestMethods, split_pb2_grpc.SplitServiceServicer):
    """Rule sets and splits of the caller's platform."""

    def __init__(self, pool: asyncpg.Pool, writer: LedgerWriter, plans_cache: PlanCache,
                 counters: Counters, clock: Clock, risk: RiskGate | None = None,
                 unary: SplitUnarySettings | None = None) -> None:
        self._pool = pool
        self._plans = plans_cache
        self._clock = clock
        self._splits = splits.SplitService(pool, writer, plans_cache, counters, clock, risk)
        unary = unary or SplitUnarySettings()
        # Split's calls split together (api/split_group.py), or one by one
        self._split_one = (UnaryGroups(self._splits.split_many, group_max=unary.group_max,
                                       queue_max=unary.queue_max).split
                           if unary.grouping else self._splits.split)
        self._backtests = Backtests(pool, plans_cache, clock)

    # ---- splits -------------------------------------------------------------------------

    async def PreviewSplit(self, request: pb.PreviewSplitRequest, context) -> pb.PreviewSplitResponse:
        checks.preview_violations(request, self._clock).raise_if_any()
        preview = await self._splits.preview(principal().platform_id,
                                             convert.order(request.order, self._clock.now()),
                                             request.rule_set_version,
                                             dict(request.counter_overrides))
        return pb.PreviewSplitResponse(split=convert.preview(preview))

    async def Split(self, request: pb.SplitRequest, context) -> pb.SplitResponse:
        error = checks.split_request_error(request, self._clock)
        if error is not None:
            raise error
        response = pb.SplitResponse()
        reply = _SplitReply(request.order, response.split)  # built in place, not copied
        outcome = await self._split_one(principal().platform_id,
                                        _command(request, self._clock.now()), reply)
        reply.answer(outcome)
        return response

    async def split_order(self, platform_id: int, request_id: str,
                          order_message: bytes) -> int:
        """Split an order for another service, as Split would under `request_id` (a
        reconciliation resolution's SPLIT_NOW, its order validated when it was proposed);
        answers the split's id, or raises what Split would answer."""
        order = pb.Order.FromString(order_message)
        reply = _SplitReply(order)
        payload = validate.payload_hash("Split", pb.SplitRequest(request_id=request_id,
                                                                 order=order))
        outcome = await self._splits.split(
            platform_id, SplitCommand(request_id, payload, convert.order(order,
                                                                         self._clock.now())),
            reply)
        return reply.answer(outcome).split_id

    async def SplitBatch(self, request: pb.SplitBatchRequest,
                         context) -> pb.SplitBatchResponse:
        checks.batch_violations(request).raise_if_any()
        pid = principal().platform_id
        # The batch's request id: its first response is the whole SplitBatchResponse,
        # recorded once every order is answered (each order also has its own request id).
        payload = validate.payload_hash("SplitBatch", request)
        first = await idempotency.start(self._pool, pid, request.request_id, "SplitBatch",
                                        payload)
        if first is not None:
            return pb.SplitBatchResponse.FromString(first)
        if not self._splits.has_room(len(request.requests)):
            raise ResourceExhausted(
                "the ledger writer queue cannot take this batch now; retry with the same"
                " request ids", reason=Reason.WRITER_QUEUE_FULL)
        refused = checks.batch_duplicates(request.requests)
        response = pb.SplitBatchResponse()
        outs = [response.outcomes.add(order_id=item.order.order_id, request_id=item.request_id)
                for item in request.requests]

        async def split_and_record() -> bytes:
            await self._split_group(pid, request.requests, refused, outs)
            return await idempotency.finish(self._pool, pid, request.request_id,
                                            encode(response))

        # shielded: a caller gone mid-batch leaves its postings and counters consistent
        return pb.SplitBatchResponse.FromString(
            await asyncio.shield(asyncio.ensure_future(split_and_record())))

    async def SplitStream(self, request_iterator, context):
        """Outcomes as their postings commit; at most SPLIT_STREAM_IN_FLIGHT_MAX orders are
        read ahead of the outcomes sent (a slot frees once its outcome went out). The orders
        read while the previous ones are being split go together (`_split_group`)."""
        answers: asyncio.Queue = asyncio.Queue()
        slots = _ReadAhead(SPLIT_STREAM_IN_FLIGHT_MAX)
        reader = asyncio.create_task(
            self._read_stream(principal().platform_id, request_iterator, slots, answers))
        try:
            while (response := await answers.get()) is not _STREAM_END:
                yield response
                slots.release()
            await reader  # a broken request stream fails the call
        finally:
            reader.cancel()
            slots.close()

    async def GetSplit(self, request: pb.GetSplitRequest, context) -> pb.GetSplitResponse:
        checks.get_split_violations(request).raise_if_any()
        key, value = (("order_id", request.order_id) if request.order_id
                      else ("split_id", request.split_id))
        who = principal()
        stored = await self._splits.get(who.platform_id, key, value)
        if stored is None or not party.owns_split(who, stored):  # another party's: unknown
            raise NotFound(f"no split with {key} {value}", reason=Reason.SPLIT_NOT_FOUND,
                           metadata={key: str(value)})
        return pb.GetSplitResponse(split=convert.split(stored))

    async def ListSplits(self, request: pb.ListSplitsRequest, context) -> pb.ListSplitsResponse:
        v, flt = checks.list_splits_filter(request)
        v.raise_if_any()
        size = request.page_size or PAGE_SIZE_DEFAULT
        who = principal()
        pid = who.platform_id
        if who.is_party:  # only the splits paying one of its accounts
            flt = dataclasses.replace(flt, account_ids=party.scope(who))
        kind = _list_token_kind(flt)
        after = None
        if (position := validate.page_token(request.page_token, kind, pid, 3)) is not None:
            negative, magnitude, split_id = position
            if negative > 1 or (negative and magnitude == 0):
                raise values.page_token_invalid()
            after = (-magnitude if negative else magnitude, split_id)
        page = await self._splits.search(pid, flt, after=after, limit=size)
        token = ""
        if page.after is not None:
            paid, split_id = page.after
            token = values.encode_page_token(kind, pid, int(paid < 0), abs(paid), split_id)
        return pb.ListSplitsResponse(splits=[convert.split(s) for s in page.splits],
                                     next_page_token=token)

    async def ReleaseSplit(self, request: pb.ReleaseSplitRequest,
                           context) -> pb.ReleaseSplitResponse:
        checks.release_violations(request, self._clock.now()).raise_if_any()
        release = ReleaseRequest(
            request.request_id, request.order_id, event_name=request.event_name,
            fraction_bps=request.fraction_bps, account_ids=frozenset(request.account_ids),
            reason_text=request.reason,
            event_time_ns=(request.event_time.ToNanoseconds()
                           if request.HasField("event_time") else None))
        return await self._act(self._splits.release, release, request,
                               splits.RELEASE_METHOD, pb.ReleaseSplitResponse)

    async def CancelSplit(self, request: pb.CancelSplitRequest,
                          context) -> pb.CancelSplitResponse:
        checks.cancel_violations(request).raise_if_any()
        cancel = CancelRequest(request.request_id, request.order_id, request.reason)
        return await self._act(self._splits.cancel, cancel, request, splits.CANCEL_METHOD,
                               pb.CancelSplitResponse)

    async def RefundSplit(self, request: pb.RefundSplitRequest,
                          context) -> pb.RefundSplitResponse:
        checks.refund_violations(request).raise_if_any()
        refund = RefundRequest(
            request.request_id, request.order_id, request.amount_minor, request.currency_code,
            request.reason, refund_ref=request.refund_ref,
            shortfall_account_ref=request.shortfall_account_ref)
        return await self._act(self._splits.refund, refund, request, splits.REFUND_METHOD,
                               pb.RefundSplitResponse)

    # ---- helpers ------------------------------------------------------------------------

    async def _act(self, call: Callable, domain_request, request, method: str, response_cls):
        """A release, cancellation or refund through the split service."""
        reply = _ActionReply(response_cls)
        outcome = await call(principal().platform_id, domain_request,
                             validate.payload_hash(method, request), reply)
        return reply.answer(outcome)

    async def _split_group(self, platform_id: int,
                           requests: Sequence[pb.SplitRequest | pb.SplitStreamRequest],
                           refused: dict[int, ClearingError],
                           outs: Sequence[pb.SplitOutcome]) -> None:
        """Fill `outs[i]` with the outcome of `requests[i]`: the split or the error the
        unary Split answers for it (`refused`: refused before splitting)."""
        commands: list[SplitCommand] = []
        replies: list[_SplitReply] = []
        places: list[int] = []
        received_at = self._clock.now()
        for i, request in enumerate(requests):
            error = refused.get(i) or checks.split_request_error(request, self._clock)
            if error is None:
                try:
                    commands.append(_command(request, received_at))
                except ClearingError as exc:
                    error = exc
            if error is not None:
                outs[i].error.CopyFrom(convert.split_error(error))
                continue
            replies.append(_SplitReply(request.order, outs[i].split))
            places.append(i)
        outcomes = await self._splits.split_many(platform_id, commands, replies)
        for i, reply, outcome in zip(places, replies, outcomes):
            _settle(outs[i], reply, outcome)

    async def _read_stream(self, platform_id: int, request_iterator, slots: asyncio.Semaphore,
                           answers: asyncio.Queue) -> None:
        """Read the stream's orders while slots are free; they are split in groups
        (`_StreamGroups`) whose outcomes go to `answers`; _STREAM_END goes last, once the
        client half-closed and every order is answered. In-flight orders are not cancelled
        if the stream breaks."""
        groups = _StreamGroups(functools.partial(self._answer, platform_id, answers))
        try:
            async for item in request_iterator:
                await slots.acquire()
                groups.add(item)
            await groups.wait()
        finally:
            answers.put_nowait(_STREAM_END)

    async def _answer(self, platform_id: int, answers: asyncio.Queue,
                      items: list[pb.SplitStreamRequest]) -> None:
        """Split a group of a stream's orders and answer each."""
        responses = [pb.SplitStreamResponse() for _ in items]
        outs = []
        for response, item in zip(responses, items):
            response.outcome.order_id = item.order.order_id
            response.outcome.request_id = item.request_id
            outs.append(response.outcome)
        try:
            # a SplitStreamRequest is read as the SplitRequest of its order, not copied
            # into one: same fields, numbers and types, so the same payload hash
            # (tests/unit/test_split_stream_request.py)
            await self._split_group(platform_id, items, {}, outs)
        except Exception as exc:  # noqa: BLE001 - a bug: the group's orders fail alone
            log.error("split of a stream group failed unexpectedly", exc_info=True)
            for out in outs:
                if out.WhichOneof("result") is None:
                    out.error.CopyFrom(convert.split_error(exc))
        for response in responses:
            answers.put_nowait(response)


def _command(request: pb.SplitRequest, received_at: dt.datetime) -> SplitCommand:
    """The split service's command of a validated SplitRequest (its order's paid time is
    when it was received, if the gateway did not say)."""
    return SplitCommand(request.request_id, validate.payload_hash("Split", request),
                        convert.order(request.order, received_at))


def _settle(out: pb.SplitOutcome, reply: _SplitReply,
            outcome: Split | Replay | BaseException) -> None:
    """Put an order's outcome in `out`: its split, or the error the unary Split would have
    answered."""
    if isinstance(outcome, (Split, Replay)):
        reply.answer(outcome)  # built in out.split
        return
    if not isinstance(outcome, ClearingError):  # a bug fails its order only (INTERNAL)
        log.error("split of one order failed unexpectedly", exc_info=outcome,
                  extra={"order_id": out.order_id})
    out.error.CopyFrom(convert.split_error(outcome))


# ---- SplitStream's plumbing --------------------------------------------------------------------

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
