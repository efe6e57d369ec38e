"""The one rule of which accounts may move money: "a frozen account never sends".

An account is debited or credited (by an IMMEDIATE, PENDING or POST_PENDING transfer) only
while it is ACTIVE: a FROZEN account can neither send nor receive until it is unfrozen, a
CLOSED one never again. Both sides of every such leg are checked; a refused leg answers
FAILED_PRECONDITION with reason ACCOUNT_FROZEN or ACCOUNT_CLOSED (the debit side first).

Two things are not refused:
- VOID_PENDING, whatever the statuses: nothing moves, the held amount only stops being
  held (the debit account's available balance grows back, the credit account never got
  it), so a hold out of or into a frozen account can always be voided (payout rejections,
  split cancellations and refunds rely on it). A closed account has no open pending
  transfer (it closed with zero balances), so a void never touches one.
- a posting that books money that already moved outside the ledger
  (`Posting.books_external`: the hold of a bank transfer the bank has paid). Refusing it
  would not keep the money in; it would only make the ledger disagree with the bank.

Every posting goes through `check_leg` (the ledger writer); what plans postings ahead of
the writer (payouts, split releases and refunds, the payout worker before each bank call)
asks `can_move` / `check_can_move`, so they all decide by this rule.
"""

from __future__ import annotations

from clearing.errors import FailedPrecondition
from clearing.ledger.model import AccountStatus, Mode
from clearing.reasons import Reason

# The reason a leg of an account in each status that may not move money is refused with.
_REFUSAL_REASONS = {AccountStatus.FROZEN: Reason.ACCOUNT_FROZEN,
                    AccountStatus.CLOSED: Reason.ACCOUNT_CLOSED}
# Transfer modes that move money between two accounts (VOID_PENDING does not).
MOVING_MODES = frozenset({Mode.IMMEDIATE, Mode.PENDING, Mode.POST_PENDING})


def can_move(status: int | None) -> bool:
    """Whether an account of this status may send or receive money."""
    return status == AccountStatus.ACTIVE


def refusal(account_id: int, status: int, field: str = "") -> FailedPrecondition | None:
    """The error for moving money from or to this account, None if it may."""
    if can_move(status):
        return None
    name = AccountStatus(status).name
    metadata = {"account_id": str(account_id)}
    if field:
        metadata["field"] = field
    return FailedPrecondition(f"account {account_id} is {name.lower()}",
                              reason=_REFUSAL_REASONS[status], metadata=metadata)


def check_can_move(account_id: int, status: int, field: str = "") -> None:
    """FailedPrecondition ACCOUNT_FROZEN / ACCOUNT_CLOSED unless the account is active."""
    error = refusal(account_id, status, field)
    if error is not None:
        raise error


def check_leg(mode: Mode, debit_id: int, debit_status: int, credit_id: int,
              credit_status: int, *, prefix: str = "", books_external: bool = False) -> None:
    """The rule for one leg of a posting (see the module docstring)."""
    if mode not in MOVING_MODES or books_external:
        return
    check_can_move(debit_id, debit_status, prefix + "debit_account_id")
    check_can_move(credit_id, credit_status, prefix + "credit_account_id")
