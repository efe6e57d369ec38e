"""The risk check's place on the split path: after evaluation, before the posting is built
(`SplitService`). One look-up of the active policy (cached, `PolicyCache`), one counters
call for the split's receivers when the policy counts, then the pure `check`."""

from __future__ import annotations

import datetime as dt

from clearing.risk.check import RiskNote, check, shares
from clearing.risk.counting import RiskCounters, Taken
from clearing.risk.policy_store import PolicyCache
from clearing.rules.evaluate import Evaluation
from clearing.rules.model import Order


class RiskGate:
    """The split service's risk check (see the module docstring)."""

    def __init__(self, policies: PolicyCache, counters: RiskCounters) -> None:
        self.policies = policies
        self.counters = counters

    async def applies(self, platform_id: int) -> bool:
        """Whether the platform has an active policy (its splits take the unary path)."""
        return await self.policies.active(platform_id) is not None

    async def decide(self, platform_id: int, order: Order, ev: Evaluation
                     ) -> tuple[Evaluation, RiskNote | None, Taken | None]:
        """The evaluation as the policy leaves it, the split's note, what to undo if the
        posting does not commit."""
        policy = await self.policies.active(platform_id)
        if policy is None or policy.of(ev.currency_code) is None:
            return ev, None, None
        got = shares(ev)
        at = dt.datetime.fromtimestamp(order.paid_time_ns / 1e9,  # type: ignore[operator]
                                       dt.timezone.utc)
        counts, taken = await self.counters.reserve(platform_id, policy, order.order_id,
                                                    ev.currency_code, at, got)
        held, note = check(policy, ev, counts)
        return held, note, taken

    async def undo(self, taken: Taken | None) -> None:
        await self.counters.undo(taken)
