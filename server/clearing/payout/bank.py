"""The bank as the payout worker sees it: the `BankConnector` interface, its orders and
results. The project's only implementation today is the bank simulator of the dev stack and
the tests (`clearing.dev.bank_sim`); a real bank is another class with this interface.

Which connector a server uses is `CLEARING_BANK_CONNECTOR` (`clearing.config.BankSettings`):
`simulator`, or `none` (the default of `clearing serve`; `--dev` defaults to the simulator).
With `none` the payout worker sends nothing: payouts wait QUEUED, GetPayout says why
(`waiting_reason` BANK_CONNECTOR_NOT_CONFIGURED), `clearing_payout_bank_connector_configured`
is 0, and nothing is ever marked paid. A real connector is added by giving it a name in
`clearing.config.BANK_CONNECTORS` and building it in `clearing.server._bank_connector`.

The interface (what a real connector must do)
---------------------------------------------
- `submit(order)` sends one transfer, identified by its bank-side idempotency key
  (`po{payout}-t{sequence}-a{attempt}`, at most 128 characters). The answer is PROCESSING (the
  bank has it; the final answer comes later), SUCCEEDED or FAILED (with an UPPER_SNAKE
  failure code and a message). It may raise `BankTimeout`: no answer came, and the order may
  or may not have reached the bank. The worker bounds every call by
  CLEARING_PAYOUT_SUBMIT_TIMEOUT_MS and treats running over it as a timeout. The same key
  sent again must never pay twice (the bank's own idempotency, or the connector's).
- `query(key)` answers what the bank knows of a key: PROCESSING, SUCCEEDED, FAILED, or
  NOT_FOUND when the bank never received it (only then does the worker send the order again,
  with the same key). It may raise `BankTimeout` too. NOT_FOUND must be the truth: a bank
  that cannot tell "never received" from "not yet visible" must answer PROCESSING.
- `on_result(handler)` sets the one handler of callbacks (a later call replaces it). A callback
  carries a final result (SUCCEEDED or FAILED) and may arrive any number of times, late, or
  never: the handler is idempotent and the worker queries what it does not hear of (after
  CLEARING_PAYOUT_STUCK_AFTER_MS), so a connector without callbacks works too.
- `start()` / `close()`: set up (connections, schemas of its own) / stop (close cancels
  callbacks not yet delivered). Called once each by the server, around the worker's life.
- Never log nor store `BankOrder.account_number` in full (`mask` gives 6225****1234).
The worker's side of the contract (exactly once, whatever the bank does): the module
docstring of `clearing.payout.worker`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Awaitable, Callable, Protocol

class BankState(enum.IntEnum):
    PROCESSING = 1
    SUCCEEDED = 2
    FAILED = 3
    NOT_FOUND = 4


@dataclass(frozen=True)
class BankOrder:
    """One transfer to a bank account. `account_number` is the full number: never log it."""

    idempotency_key: str
    bank_code: str
    account_number: str
    holder_name: str
    account_type: int
    amount_minor: int
    currency_code: str
    memo: str

    def __repr__(self) -> str:  # keeps the full number out of logs and tracebacks
        return (f"BankOrder(idempotency_key={self.idempotency_key!r}, "
                f"bank_code={self.bank_code!r}, account={mask(self.account_number)!r}, "
                f"amount_minor={self.amount_minor}, currency_code={self.currency_code!r})")


@dataclass(frozen=True)
class BankResult:
    """What the bank says of a key. bank_reference is set once the bank has the order;
    failure_code and failure_message only when FAILED."""

    idempotency_key: str
    state: BankState
    bank_reference: str = ""
    failure_code: str = ""
    failure_message: str = ""


class BankTimeout(Exception):
    """No answer in time: the order may or may not have reached the bank."""


ResultHandler = Callable[[BankResult], Awaitable[None]]


class BankConnector(Protocol):
    """A bank, as the payout worker sees it. What each method must do, for the simulator
    and for a real bank alike: the module docstring."""

    async def submit(self, order: BankOrder) -> BankResult:
        """PROCESSING, SUCCEEDED or FAILED; may raise BankTimeout."""
        ...

    async def query(self, idempotency_key: str) -> BankResult:
        """The bank's state of the key (NOT_FOUND if never received); may raise BankTimeout."""
        ...

    def on_result(self, handler: ResultHandler) -> None:
        """The handler of callbacks (final results, possibly repeated)."""
        ...

    async def start(self) -> None:
        """Set up (before the worker starts)."""
        ...

    async def close(self) -> None:
        """Stop; undelivered callbacks are cancelled (after the worker stopped)."""
        ...


def mask(account_number: str) -> str:
    """The only form of an account number a connector may keep or log: 6225****1234 (a number of
    8 characters or fewer keeps only its last 4, or nothing when that would be half of it)."""
    if len(account_number) > 8:
        return f"{account_number[:4]}****{account_number[-4:]}"
    return "****" + (account_number[-4:] if len(account_number) > 6 else "")
