"""The grouping of unary Split calls (api/split_group.py) on its own, with a split_many of
the test's (no database: what is tested is who goes with whom, and when): a call at an idle
moment goes alone at once; calls arriving while a group prepares go together in the next
one, which starts as soon as the first one's postings went to the writer, not after its
commit; each call gets its own outcome or exception; the queue and the group size are
bounded; a caller gone does not stop its group."""

from __future__ import annotations

import asyncio

import pytest

from clearing import pods
from clearing.api.split_group import UnaryGroups
from clearing.errors import InvalidArgument, ResourceExhausted
from clearing.reasons import Reason


class _Writer:
    """A split_many that records its groups; each group *prepares* until `prepared` is set,
    then hands its postings over (on_submit) and waits for `committed`."""

    def __init__(self) -> None:
        self.groups: list[list[str]] = []
        self.prepared: dict[int, asyncio.Event] = {}
        self.committed: dict[int, asyncio.Event] = {}

    def events(self, n: int) -> tuple[asyncio.Event, asyncio.Event]:
        return (self.prepared.setdefault(n, asyncio.Event()),
                self.committed.setdefault(n, asyncio.Event()))

    async def split_many(self, platform_id, commands, responds, *, on_submit):
        n = len(self.groups)
        self.groups.append(list(commands))
        prepared, committed = self.events(n)
        await prepared.wait()
        on_submit()
        await committed.wait()
        return [InvalidArgument([], reason=Reason.INVALID_ORDER) if c.startswith("bad")
                else f"split of {c}" for c in commands]


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def _groups(writer: _Writer, **kw) -> UnaryGroups:
    kw.setdefault("group_max", 100)
    kw.setdefault("queue_max", 100)
    return UnaryGroups(writer.split_many, **kw)


async def test_a_call_at_an_idle_moment_goes_alone_at_once():
    writer = _Writer()
    groups = _groups(writer)
    call = asyncio.ensure_future(groups.split(1, "a", None))
    await _settle()
    assert writer.groups == [["a"]]  # started without waiting for anything
    for event in writer.events(0):
        event.set()
    assert await call == "split of a"
    assert groups.pending == 0


async def test_calls_arriving_while_a_group_prepares_go_together_next():
    writer = _Writer()
    groups = _groups(writer)
    first = asyncio.ensure_future(groups.split(1, "a", None))
    await _settle()
    rest = [asyncio.ensure_future(groups.split(1, c, None)) for c in ("b", "bad-c", "d")]
    other = asyncio.ensure_future(groups.split(2, "e", None))  # another platform: its own
    await _settle()
    assert writer.groups == [["a"], ["e"]]  # b, bad-c and d wait: platform 1 is preparing
    writer.events(0)[0].set()  # a's postings go to the writer: the next group starts
    await _settle()
    assert writer.groups == [["a"], ["e"], ["b", "bad-c", "d"]]
    assert not first.done()  # answered only once committed
    writer.events(2)[0].set()
    writer.events(2)[1].set()
    assert await rest[0] == "split of b" and await rest[2] == "split of d"
    with pytest.raises(InvalidArgument):  # its own error; its group-mates are split
        await rest[1]
    assert not first.done()
    writer.events(0)[1].set()
    assert await first == "split of a"
    for event in writer.events(1):
        event.set()
    assert await other == "split of e"
    assert groups.pending == 0


async def test_groups_are_bounded_in_size_and_in_flight():
    writer = _Writer()
    groups = _groups(writer, group_max=2, groups_max=2)
    calls = [asyncio.ensure_future(groups.split(1, c, None)) for c in "abcdefg"]
    await _settle()
    assert writer.groups == [["a", "b"]]
    writer.events(0)[0].set()
    await _settle()
    assert writer.groups == [["a", "b"], ["c", "d"]]
    writer.events(1)[0].set()
    await _settle()
    assert len(writer.groups) == 2  # two groups unanswered: e, f and g wait
    writer.events(0)[1].set()
    await _settle()
    assert writer.groups[2:] == [["e", "f"]]
    for n in range(1, 4):
        for event in writer.events(n):
            event.set()
    await _settle()
    assert writer.groups[3:] == [["g"]]
    assert await asyncio.gather(*calls) == [f"split of {c}" for c in "abcdefg"]
    assert groups.pending == 0


async def test_the_queue_is_bounded():
    writer = _Writer()
    groups = _groups(writer, queue_max=3)
    calls = [asyncio.ensure_future(groups.split(1, c, None)) for c in "abc"]
    await _settle()
    with pytest.raises(ResourceExhausted) as err:
        await groups.split(1, "d", None)
    assert err.value.reason == Reason.WRITER_QUEUE_FULL
    for n in range(2):
        for event in writer.events(n):
            event.set()
    assert await asyncio.gather(*calls) == ["split of a", "split of b", "split of c"]
    for event in writer.events(2):  # room again: d goes through
        event.set()
    assert await groups.split(1, "d", None) == "split of d"


async def test_a_caller_gone_does_not_stop_its_group():
    writer = _Writer()
    groups = _groups(writer)
    gone = asyncio.ensure_future(groups.split(1, "a", None))
    await _settle()
    gone.cancel()
    await _settle()
    assert groups.pending == 1  # its split goes on
    for event in writer.events(0):
        event.set()
    await _settle()
    assert groups.pending == 0 and writer.groups == [["a"]]


async def test_a_group_that_fails_answers_each_of_its_calls():
    async def broken(platform_id, commands, responds, *, on_submit):
        raise RuntimeError("a bug")

    groups = UnaryGroups(broken, group_max=10, queue_max=10)
    calls = [asyncio.ensure_future(groups.split(1, c, None)) for c in "ab"]
    for call in calls:
        with pytest.raises(RuntimeError):
            await call
    assert groups.pending == 0


async def test_a_group_is_split_in_the_context_of_its_own_calls():
    """A group started by an earlier group (once that one prepared) runs in its first
    call's context (its pod, clearing.pods.CURRENT), not the earlier group's: else, while
    calls keep coming, every group would run in the first call's pod, after a move too."""
    seen: list[int] = []
    writer = _Writer()

    async def split_many(platform_id, commands, responds, *, on_submit):
        seen.append(pods.CURRENT.get())
        return await writer.split_many(platform_id, commands, responds, on_submit=on_submit)

    groups = UnaryGroups(split_many, group_max=10, queue_max=10, preparing_max=1)

    async def in_pod(pod: int, command: str):
        pods.CURRENT.set(pod)
        return await groups.split(1, command, None)

    first = asyncio.ensure_future(in_pod(0, "a"))
    await _settle()
    second = asyncio.ensure_future(in_pod(1, "b"))  # waits: the first group prepares
    await _settle()
    assert writer.groups == [["a"]]
    writer.events(0)[0].set()  # prepared: the next group starts
    await _settle()
    assert writer.groups == [["a"], ["b"]]
    for n in (0, 1):
        for event in writer.events(n):
            event.set()
    assert (await first, await second) == ("split of a", "split of b")
    assert seen == [0, 1]
