"""Concurrent unary Split calls split together (issue 16, section 3).

A unary Split costs a plan look-up, a counters round trip and a writer submission of its
own. Calls of one platform that arrive while an earlier group of its calls prepares wait and
go together, as SplitStream's orders do: one `SplitService.split_many` per group (one plan
look-up per rule set, one counters call, one writer submission). "Batch while busy", never
a timer: a call finding its platform idle starts a group at once (a group of one at low
load, so grouping adds no wait). A group *prepares* (plan, accounts, counters, evaluation,
postings) and then waits for its commit; while SPLIT_UNARY_PREPARING_MAX of the platform's
groups prepare, or SPLIT_UNARY_GROUPS_MAX are not yet answered, calls arriving wait and go
together in the next group (at most `group_max` calls). So the grouping follows the load:
under a busy event loop many calls arrive while one group prepares.

Each call keeps its own answer: `split_many` answers each order as the unary path would
(its split, the first response of its request id, or the exception it raises), after the
group's postings committed. A group is split in a task of its own: a caller gone mid-group
leaves its posting and counters as the group leaves them. Bounded: at most `queue_max`
calls of the process waiting or being split; one more is refused RESOURCE_EXHAUSTED
(WRITER_QUEUE_FULL: the queue in front of the ledger writer's; retry with the same request
id).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence

from clearing import metrics
from clearing.errors import ResourceExhausted
from clearing.ledger.model import Replay
from clearing.limits import SPLIT_UNARY_GROUPS_MAX, SPLIT_UNARY_PREPARING_MAX
from clearing.reasons import Reason
from clearing.splits.model import Split
from clearing.splits.postings import RespondSplit, SplitCommand

# SplitService.split_many: (platform id, commands, responds, on_submit=) -> outcomes
SplitMany = Callable[..., Awaitable[list[Split | Replay | BaseException]]]


class _Call:
    """A waiting call, with its context (its pod, clearing.pods.CURRENT, and its principal):
    a group is split in the context of a call of its own, never in an earlier group's (which
    starts it once prepared): while calls keep coming, groups would otherwise inherit the
    first call's context for ever, its pod too after the platform moved."""

    __slots__ = ("command", "respond", "future", "context")

    def __init__(self, command: SplitCommand, respond: RespondSplit,
                 future: asyncio.Future) -> None:
        self.command = command
        self.respond = respond
        self.future = future
        self.context = contextvars.copy_context()


class _Platform:
    """A platform's calls waiting for a group; how many of its groups are preparing
    (between taking their calls and handing their postings to the writer) and how many are
    not yet answered (preparing or waiting for their commit)."""

    __slots__ = ("waiting", "busy", "flying")

    def __init__(self) -> None:
        self.waiting: list[_Call] = []
        self.busy = 0
        self.flying = 0


class UnaryGroups:
    """The unary Split calls of every platform of the process, split in groups."""

    def __init__(self, split_many: SplitMany, *, group_max: int, queue_max: int,
                 preparing_max: int | None = None, groups_max: int | None = None) -> None:
        self._split_many = split_many
        self._group_max = group_max
        self._queue_max = queue_max
        self._preparing_max = preparing_max or SPLIT_UNARY_PREPARING_MAX
        self._groups_max = groups_max or SPLIT_UNARY_GROUPS_MAX
        self._platforms: dict[int, _Platform] = {}
        self._pending = 0  # calls accepted and not yet answered, every platform
        self._tasks: set[asyncio.Task] = set()

    @property
    def pending(self) -> int:
        return self._pending

    async def split(self, platform_id: int, command: SplitCommand,
                    respond: RespondSplit) -> Split | Replay:
        """What `SplitService.split` answers for this command (a split or a first
        response; raises what it raises), split in a group with the platform's concurrent
        calls."""
        if self._pending >= self._queue_max:
            metrics.SPLIT_UNARY_REFUSED.inc()
            raise ResourceExhausted(
                "too many Split calls are waiting; retry with the same request id (a gateway"
                " with many orders at once sends them with SplitBatch or SplitStream)",
                reason=Reason.WRITER_QUEUE_FULL)
        future = asyncio.get_running_loop().create_future()
        platform = self._platforms.get(platform_id)
        if platform is None:
            platform = self._platforms[platform_id] = _Platform()
        platform.waiting.append(_Call(command, respond, future))
        self._pending += 1
        metrics.SPLIT_UNARY_PENDING.inc()
        self._start(platform_id, platform)
        # a cancelled caller cancels only its wait (its future; `_answer` passes it by):
        # its group goes on. Not asyncio.shield: its second future and callbacks cost
        # 4 to 8 us a call for the same effect
        return await future

    def _start(self, platform_id: int, platform: _Platform) -> None:
        """A group for the platform's waiting calls, unless SPLIT_UNARY_PREPARING_MAX of
        its groups are preparing or SPLIT_UNARY_GROUPS_MAX are not yet answered (the calls
        then wait for one of them)."""
        if (platform.waiting and platform.busy < self._preparing_max
                and platform.flying < self._groups_max):
            platform.busy += 1
            platform.flying += 1
            task = asyncio.create_task(self._group(platform_id, platform),
                                       context=platform.waiting[0].context)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _group(self, platform_id: int, platform: _Platform) -> None:
        """Split the calls waiting when this task runs (every call arrived since it was
        started goes with it), at most `group_max`; the platform's next group may start
        once this one's postings went to the writer."""
        group = platform.waiting[:self._group_max]
        del platform.waiting[:self._group_max]
        freed = False

        def free() -> None:  # prepared: the platform's next group may start
            nonlocal freed
            if not freed:
                freed = True
                platform.busy -= 1
                self._start(platform_id, platform)

        try:
            if group:
                await self._split_and_answer(platform_id, group, free)
        finally:
            free()
            platform.flying -= 1
            self._start(platform_id, platform)
            if (not platform.flying and not platform.waiting
                    and self._platforms.get(platform_id) is platform):
                del self._platforms[platform_id]

    async def _split_and_answer(self, platform_id: int, group: list[_Call],
                                free: Callable[[], None]) -> None:
        metrics.SPLIT_UNARY_GROUP_SIZE.observe(len(group))
        try:
            outcomes: Sequence[object] = await self._split_many(
                platform_id, [c.command for c in group], [c.respond for c in group],
                on_submit=free)
        except Exception as exc:  # noqa: BLE001 - e.g. the database out of reach for the
            # risk policy, before any posting: each call answers it as the unary path would
            # (the interceptor maps and logs it per call)
            outcomes = [exc] * len(group)
        except BaseException as exc:  # cancelled (the server stopping): answer, then go
            self._answer(group, [exc] * len(group))
            raise
        self._answer(group, outcomes)

    def _answer(self, group: list[_Call], outcomes: Sequence[object]) -> None:
        for call, outcome in zip(group, outcomes):
            if call.future.done():  # its caller went away (cancelled its wait)
                continue
            if isinstance(outcome, asyncio.CancelledError):
                call.future.cancel()
            elif isinstance(outcome, BaseException):
                call.future.set_exception(outcome)
                call.future.exception()  # retrieved: no "never retrieved" log
            else:
                call.future.set_result(outcome)
        self._pending -= len(group)
        metrics.SPLIT_UNARY_PENDING.dec(len(group))
