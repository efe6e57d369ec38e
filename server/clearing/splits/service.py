"""The split service: preview, split one order or many, release, cancel and refund, read.
Domain in, domain out: requests arrive validated as domain values (`SplitCommand`, the
`*Request` types of `model`), answers leave as `Split`, `Preview` and `Action` values or
as the first response recorded for a request id (`Replay`, the bytes the API layer made).

The first response of a write is made in the ledger writer's batch, from the committed
records: the caller passes `respond`, which turns the committed domain value into the
bytes to record (the API layer's message); the service never sees a message.

Split of one order (`split`): plan look-up, receivers from the account directory, counter
reservations (undone unless the posting commits), evaluation, one posting with a claim on
the order id and the split record for the splits sink. A receiver read as active from the
directory's cache and frozen since fails the posting without a trace; the order is split
once more from a fresh read. A failure that is a first response is recorded, and a retry
of a known request id answers its first response (`clearing.idempotency`).

Split of many (`split_many`, for SplitBatch and SplitStream): one plan look-up per rule
set, one counters call and ONE writer call for the orders on the usual path, so that they
share group commits; an order leaving that path finishes on the unary path's own steps, so
every order gets exactly the outcome `split` gives it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import asyncpg

from clearing import idempotency
from clearing.clock import Clock
from clearing.errors import AlreadyExists, ClearingError, FailedPrecondition, NotFound, invariant
from clearing.ledger.model import Posting, Replay, TransferRecord
from clearing.ledger.writer import LedgerWriter
from clearing.limits import LIST_SPLITS_SCAN_MAX
from clearing.reasons import Reason
from clearing.rules.cache import PlanCache
from clearing.rules.compile import Plan
from clearing.risk.gate import RiskGate
from clearing.rules.counters import Counters, Reading
from clearing.rules.evaluate import SplitInvariantError, evaluate
from clearing.rules.model import Order
from clearing.rules.store import record_alert
from clearing.splits import refund as refunds
from clearing.splits import release as releases
from clearing.splits.accounts import (STALE_ACCOUNT_REASONS, AccountDirectory, AccountState,
                                      account_states, require_custodial, split_accounts)
from clearing.splits.model import (Action, CancelRequest, Preview, RefundRequest,
                                   ReleaseRequest, Split)
from clearing.splits.postings import (SPLIT_METHOD, Prepared, RespondSplit, SplitCommand,
                                      counter_inputs, counter_specs, counter_values, prepare)
from clearing.splits.records import ActionRecord, apply
from clearing.splits.store import SplitFilter, SplitPage, list_splits, load_split

log = logging.getLogger("clearing.splits")

DEFAULT_RULE_SET = "default"
RELEASE_METHOD = "ReleaseSplit"
CANCEL_METHOD = "CancelSplit"
REFUND_METHOD = refunds.METHOD
# Makes an action's first response (recorded bytes) from the split and the action as it
# left them.
RespondAction = Callable[[Split, Action], bytes]


def replayed(stored: Split | None, command: SplitCommand) -> Split:
    """The split of a request id recorded without a first response (before they were
    recorded), if this request is the same one."""
    if stored is None or stored.payload_hash != command.payload_hash:
        raise AlreadyExists(
            f"request_id {command.request_id!r} was already used with a different request",
            reason=Reason.REQUEST_ID_REUSED, metadata={"request_id": command.request_id})
    return stored


class SplitService:
    """Splits of every platform's orders (each call names its platform)."""

    def __init__(self, pool: asyncpg.Pool, writer: LedgerWriter, plans: PlanCache,
                 counters: Counters, clock: Clock, risk: RiskGate | None = None) -> None:
        self._pool = pool
        self._risk = risk
        self._writer = writer
        self._plans = plans
        self._counters = counters
        self._clock = clock
        self._accounts = AccountDirectory(pool)

    def has_room(self, orders: int) -> bool:
        """Whether the ledger writer's queue can take `orders` splits now (a hint)."""
        return self._writer.has_room(orders)

    def recorded(self, order: Order) -> Order:
        """The order as recorded: its paid time is now when the gateway did not say."""
        if order.paid_time_ns is not None:
            return order
        now = self._clock.now()
        return dataclasses.replace(order, paid_time_ns=(
            (now - _EPOCH) // dt.timedelta(microseconds=1) * 1000))

    async def plan(self, platform_id: int, rule_set_name: str, version: int) -> Plan:
        """The plan of a rule set's version (0: the active one)."""
        name = rule_set_name or DEFAULT_RULE_SET
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

    async def get(self, platform_id: int, key: str, value: object) -> Split | None:
        """A split by order_id, split_id or request_id; None if there is none."""
        async with self._pool.acquire() as conn:
            return await load_split(conn, platform_id, key, value)

    async def search(self, platform_id: int, flt: SplitFilter, *,
                     after: tuple[int, int] | None,
                     limit: int) -> SplitPage:
        """A page of the platform's splits matching `flt` (`store.list_splits`)."""
        async with self._pool.acquire() as conn:
            return await list_splits(conn, platform_id, flt, after=after, limit=limit,
                                     scan_max=LIST_SPLITS_SCAN_MAX)

    # ---- preview ----------------------------------------------------------------------------

    async def preview(self, platform_id: int, order: Order, version: int,
                      overrides: Mapping[str, int]) -> Preview:
        """The split an order would get now (nothing reserved, nothing posted)."""
        order = self.recorded(order)
        plan = await self.plan(platform_id, order.rule_set_name, version)
        custodial, accounts = await split_accounts(self._pool, platform_id, plan, order)
        specs = [s for s in counter_specs(platform_id, plan, order) if s.name not in overrides]
        readings = await self._counters.peek(specs)
        ev = evaluate(plan, order, counter_inputs(readings, overrides), accounts=accounts)
        return Preview(order, ev, counter_values(ev, readings, overrides), custodial)

    # ---- one order --------------------------------------------------------------------------

    async def split(self, platform_id: int, command: SplitCommand,
                    respond: RespondSplit) -> Split | Replay:
        """Split one order, or answer the first response of its request id. Raises what
        the unary Split answers."""
        return await self._or_replay(platform_id, command, self._split(platform_id, command,
                                                                        respond))

    async def _or_replay(self, platform_id: int, command: SplitCommand,
                         step: Awaitable[Split | Replay]) -> Split | Replay:
        """`step`'s answer; if it raises a ClearingError, the first response of the request
        id instead: a failure that is a first response is recorded now unless one is
        recorded already (`idempotency.settle_failure`)."""
        try:
            return await step
        except ClearingError as exc:
            # A known request id is answered by the writer (its first response) once the
            # order reaches it; one refused before (its rule set or a receiver changed
            # since) is answered here, without a read per order on the usual path.
            return Replay(await idempotency.settle_failure(
                self._pool, platform_id, command.request_id, SPLIT_METHOD,
                command.payload_hash, exc))

    async def _split(self, platform_id: int, command: SplitCommand,
                     respond: RespondSplit) -> Split | Replay:
        order = self.recorded(command.order)
        plan = await self.plan(platform_id, order.rule_set_name, 0)
        try:
            return await self._split_once(platform_id, command, order, plan, respond, False)
        except FailedPrecondition as exc:
            if exc.reason not in STALE_ACCOUNT_REASONS:
                raise
        # a receiver read as active from the directory is no longer: once more, from the
        # database (the refused posting left no trace)
        return await self._split_once(platform_id, command, order, plan, respond, True)

    async def _split_once(self, platform_id: int, command: SplitCommand, order: Order,
                          plan: Plan, respond: RespondSplit, fresh: bool) -> Split | Replay:
        """Reserve counters, evaluate, submit one posting; undo the counters unless this
        call's posting committed."""
        custodial, accounts = await self._accounts.lookup(platform_id, plan, order, fresh=fresh)
        require_custodial(custodial, order.currency_code)
        readings = await self._counters.reserve(counter_specs(platform_id, plan, order))
        committed = False
        taken = None
        # the risk counters count an order once, by its order id: when another call booked
        # this order (a replay of its request id, or ORDER_ALREADY_SPLIT), undoing this
        # call's reservation would take away that committed order's count (found in review)
        booked_elsewhere = False
        try:
            ev = evaluate(plan, order, counter_inputs(readings, {}), accounts=accounts)
            note = None
            if self._risk is not None:  # decided once, before the posting, recorded with it
                ev, note, taken = await self._risk.decide(platform_id, order, ev)
            prepared = prepare(platform_id, command, order, plan, custodial, accounts,
                                readings, respond, evaluated=ev, risk=note)
            sent = await self._writer.submit(prepared.posting)
            committed = prepared.committed(sent)
            booked_elsewhere = not committed
        except SplitInvariantError as exc:
            await self._invariant_broken(platform_id, order, exc)
            raise
        except ClearingError as exc:
            booked_elsewhere = exc.reason == Reason.ORDER_ALREADY_SPLIT
            raise
        finally:
            if not committed:
                await self._counters.undo(readings)
                if taken is not None and not booked_elsewhere:
                    await self._risk.undo(taken)  # type: ignore[union-attr]
        if committed:
            return prepared.split  # type: ignore[return-value]
        if isinstance(sent, Replay):  # this request id has a first response
            return sent
        return replayed(await self.get(platform_id, "request_id", command.request_id), command)

    async def _invariant_broken(self, platform_id: int, order: Order,
                                exc: SplitInvariantError) -> None:
        log.critical("split invariant broken; nothing posted", exc_info=exc,
                     extra={"order_id": order.order_id})
        await record_alert(self._pool, platform_id, Reason.SPLIT_INVARIANT_BROKEN,
                           f"order {order.order_id!r}: {exc}")

    # ---- many orders ------------------------------------------------------------------------

    async def split_many(self, platform_id: int, commands: Sequence[SplitCommand],
                         responds: Sequence[RespondSplit], *,
                         on_submit: Callable[[], None] | None = None
                         ) -> list[Split | Replay | BaseException]:
        """The outcome of each command, as `split` gives it (a split, a first response, or
        the exception it raises), with one plan look-up per rule set, one counters call
        and ONE writer call (`submit_many`) for the orders on the usual path. An order
        leaving that path (no plan, a refusal by the evaluator or the writer, a replay)
        goes on with the unary path's own steps from where it left it. `on_submit` is
        called once the group's postings go to the writer (its work before the commit
        done; at once when every order takes the unary path)."""
        if self._risk is not None and await self._risk.applies(platform_id):
            # the risk check reserves per split: every order takes the unary path (they still
            # share the writer's group commits)
            if on_submit is not None:
                on_submit()
            return list(await asyncio.gather(
                *(self.split(platform_id, c, r) for c, r in zip(commands, responds)),
                return_exceptions=True))
        outcomes: list[Split | Replay | BaseException | None] = [None] * len(commands)
        rest: dict[int, Callable[[], Awaitable[Split | Replay]]] = {}  # the unary path
        ready = await self._ready(platform_id, commands, responds, rest)
        specs = [counter_specs(platform_id, r.plan, r.order) for r in ready]
        readings = await self._counters.reserve([s for group in specs for s in group])
        prepared: dict[int, Prepared] = {}
        at = 0
        for r, own in zip(ready, specs):
            taken, at = readings[at:at + len(own)], at + len(own)
            try:
                prepared[r.index] = prepare(platform_id, commands[r.index], r.order, r.plan,
                                             r.custodial_id, r.accounts, taken,
                                             responds[r.index])
            except Exception as exc:  # noqa: BLE001 - handled as the unary path does
                rest[r.index] = self._unwinder(platform_id, commands[r.index], r.order,
                                               r.plan, taken, exc, responds[r.index])
        if on_submit is not None:
            on_submit()
        try:
            sent = await self._writer.submit_many([p.posting for p in prepared.values()])
        except Exception as exc:  # noqa: BLE001 - none was queued: each answers it
            sent = [exc] * len(prepared)
        for (i, p), result in zip(prepared.items(), sent):
            if p.committed(result):
                outcomes[i] = p.split
            elif isinstance(result, Replay):
                await self._counters.undo(p.readings)
                outcomes[i] = result
            else:
                rest[i] = self._unwinder(platform_id, p.command, p.order, p.plan, p.readings,
                                         result, responds[i])
        if rest:
            answers = await asyncio.gather(*(step() for step in rest.values()),
                                           return_exceptions=True)
            for i, answer in zip(rest, answers):
                outcomes[i] = answer
        invariant(all(o is not None for o in outcomes), "an order of a group was not answered")
        return outcomes  # type: ignore[return-value]

    async def _ready(self, platform_id: int, commands: Sequence[SplitCommand],
                     responds: Sequence[RespondSplit],
                     rest: dict[int, Callable[[], Awaitable[Split | Replay]]]) -> list[_Ready]:
        """The orders on the usual path, with their plan and accounts; the others go to
        `rest` (the unary path answers them)."""
        ready: list[_Ready] = []
        found: dict[str, Plan | None] = {}
        for i, command in enumerate(commands):
            try:
                order = self.recorded(command.order)
                name = order.rule_set_name or DEFAULT_RULE_SET
                if name not in found:
                    found[name] = await self._plan_or_none(platform_id, name)
                plan = found[name]
                if plan is not None:
                    custodial, accounts = await self._accounts.lookup(platform_id, plan, order)
            except Exception:  # noqa: BLE001 - the unary path meets it again and answers it
                plan = None
            if plan is None or not custodial:
                rest[i] = _bind(self.split, platform_id, command, responds[i])
                continue
            ready.append(_Ready(i, order, plan, custodial, accounts))
        return ready

    async def _plan_or_none(self, platform_id: int, name: str) -> Plan | None:
        """The active plan of a rule set; None if there is none or the look-up failed (the
        unary path then answers it)."""
        try:
            return await self.plan(platform_id, name, 0)
        except Exception:  # noqa: BLE001 - answered by the unary path
            return None

    def _unwinder(self, platform_id: int, command: SplitCommand, order: Order, plan: Plan,
                  readings: list[Reading], stopped: object,
                  respond: RespondSplit) -> Callable[[], Awaitable[Split | Replay]]:
        """The rest of the unary path for an order of a group that did not commit:
        `stopped` is what stopped it (an exception, or the records the writer answered for
        a posting with its request id that committed first)."""
        async def unwind() -> Split | Replay:
            return await self._or_replay(platform_id, command, self._after(
                platform_id, command, order, plan, readings, stopped, respond))
        return unwind

    async def _after(self, platform_id: int, command: SplitCommand, order: Order, plan: Plan,
                     readings: list[Reading], stopped: object,
                     respond: RespondSplit) -> Split | Replay:
        await self._counters.undo(readings)
        if isinstance(stopped, SplitInvariantError):
            await self._invariant_broken(platform_id, order, stopped)
        if isinstance(stopped, FailedPrecondition) and stopped.reason in STALE_ACCOUNT_REASONS:
            # as `_split`: once more, from the database
            return await self._split_once(platform_id, command, order, plan, respond, True)
        if isinstance(stopped, BaseException):
            raise stopped
        if isinstance(stopped, Replay):
            return stopped
        return replayed(await self.get(platform_id, "request_id", command.request_id), command)

    # ---- actions ----------------------------------------------------------------------------

    async def release(self, platform_id: int, request: ReleaseRequest, payload: bytes,
                      respond: RespondAction) -> tuple[Split, Action] | Replay:
        """Post held money of a split (see `release`), once per request id."""
        async def step() -> tuple[Split, Action] | Replay:
            snap = await self._with_states(platform_id, request.order_id)
            split = snap.split
            changes = releases.release_changes(split, request, snap.states)
            return await self._commit(split, releases.posting(
                platform_id, split, request, RELEASE_METHOD, payload, changes), respond)
        return await self._once(platform_id, request.request_id, RELEASE_METHOD, payload, step)

    async def cancel(self, platform_id: int, request: CancelRequest, payload: bytes,
                     respond: RespondAction) -> tuple[Split, Action] | Replay:
        """Void what a split still holds, once per request id."""
        async def step() -> tuple[Split, Action] | Replay:
            split = (await self._with_states(platform_id, request.order_id)).split
            changes = releases.cancel_changes(split)
            return await self._commit(split, releases.posting(
                platform_id, split, request, CANCEL_METHOD, payload, changes), respond)
        return await self._once(platform_id, request.request_id, CANCEL_METHOD, payload, step)

    async def refund(self, platform_id: int, request: RefundRequest, payload: bytes,
                     respond: RespondAction) -> tuple[Split, Action] | Replay:
        """Reverse part or all of a split (see `refund`), once per request id."""
        async def step() -> tuple[Split, Action] | Replay:
            snap = await self._with_states(platform_id, request.order_id, refund=request)
            parts = refunds.refund_parts(snap.split, request, snap.states, snap.shortfall_id)
            return await self._commit(snap.split, refunds.posting(
                platform_id, snap.split, request, payload, parts, snap.shortfall_id), respond)
        return await self._once(platform_id, request.request_id, REFUND_METHOD, payload, step)

    async def _once(self, platform_id: int, request_id: str, method: str, payload: bytes,
                    step: Callable[[], Awaitable[tuple[Split, Action] | Replay]]
                    ) -> tuple[Split, Action] | Replay:
        """An action once per request id: the first response if one is recorded, else
        `step()`; a failure that is a first response is recorded
        (`idempotency.settle_failure`)."""
        prior = await idempotency.lookup(self._pool, platform_id, request_id)
        if prior is not None:
            first = prior.answer(method, payload)
            if first is not None:
                return Replay(first)
        try:
            return await step()
        except ClearingError as exc:
            return Replay(await idempotency.settle_failure(
                self._pool, platform_id, request_id, method, payload, exc))

    async def _with_states(self, platform_id: int, order_id: str, *,
                           refund: RefundRequest | None = None) -> _Snapshot:
        """The split of an order and its receivers' states (for a refund also the shortfall
        account), in one snapshot: a plan from a state another action changed since fails
        on the claim (SPLIT_CHANGED), not on a mixed read."""
        async with self._pool.acquire() as conn, conn.transaction(
                isolation="repeatable_read", readonly=True):
            split = await load_split(conn, platform_id, "order_id", order_id)
            if split is None:
                raise NotFound(f"no split with order_id {order_id}",
                               reason=Reason.SPLIT_NOT_FOUND, metadata={"order_id": order_id})
            shortfall_id = 0 if refund is None else await refunds.shortfall_account(
                conn, platform_id, refund, split.currency_code)
            states = await account_states(conn, [leg.account_id for leg in split.legs])
        return _Snapshot(split, states, shortfall_id)

    async def _commit(self, split: Split, posting: Posting,
                      respond: RespondAction) -> tuple[Split, Action] | Replay:
        """Commit an action's posting; its first response (the split and the action as the
        action left them) is made in the writer's batch and recorded with it."""
        record = posting.attachment
        invariant(isinstance(record, ActionRecord), "an action posting without its record")

        def first_response(sent: list[TransferRecord]) -> bytes:
            return respond(*apply(split, record, sent))

        sent = await self._writer.submit(dataclasses.replace(posting, respond=first_response))
        if isinstance(sent, Replay):
            return sent
        return apply(split, record, sent)


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """What an action plans from, read in one snapshot (`shortfall_id`: a refund's
    shortfall account, 0 if none)."""

    split: Split
    states: Mapping[int, AccountState]
    shortfall_id: int = 0


class _Ready(NamedTuple):
    """An order of a group on the usual path (`index`: its place in the group)."""

    index: int
    order: Order
    plan: Plan
    custodial_id: int
    accounts: Mapping


def _bind(split: Callable[[int, SplitCommand, RespondSplit], Awaitable[Split | Replay]],
          platform_id: int, command: SplitCommand,
          respond: RespondSplit) -> Callable[[], Awaitable[Split | Replay]]:
    return lambda: split(platform_id, command, respond)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
