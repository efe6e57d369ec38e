"""Payout.waiting_reason: which payouts a server without a bank connector says are waiting
for good (exhaustive over the payout states and the three ways a process may be set up)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from clearing.config import BankSettings, PayoutSettings
from clearing.payout.model import PayoutState
from clearing.payout.service import (WAITING_BANK_CONNECTOR_NOT_CONFIGURED, PayoutDeps,
                                     waiting_reason)

MOVES_ONLY_WITH_A_BANK = {PayoutState.QUEUED, PayoutState.SUBMITTED}


def _deps(connector: str, worker: bool = True) -> PayoutDeps:
    settings = replace(PayoutSettings(), worker=worker, bank=BankSettings(connector))
    return PayoutDeps(pool=None, writer=None, clock=None, settings=settings)  # type: ignore


@pytest.mark.parametrize("connector", ["", "none"])
def test_without_a_bank_queued_and_submitted_payouts_wait(connector):
    deps = _deps(connector)
    got = {state: waiting_reason(deps, state) for state in PayoutState}
    assert got == {state: WAITING_BANK_CONNECTOR_NOT_CONFIGURED
                   if state in MOVES_ONLY_WITH_A_BANK else "" for state in PayoutState}


def test_with_the_simulator_nothing_waits():
    deps = _deps("simulator")
    assert {waiting_reason(deps, state) for state in PayoutState} == {""}


def test_a_process_without_the_worker_does_not_know():
    """CLEARING_PAYOUT_WORKER=0: another process may have a bank; this one says nothing."""
    deps = _deps("none", worker=False)
    assert {waiting_reason(deps, state) for state in PayoutState} == {""}
