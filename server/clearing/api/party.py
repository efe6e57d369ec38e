"""Party keys in the servicers: what a key bound to a party's accounts may read.

A party key (role `party`, made by CreateApiKey with party_account_ids) may call only the
methods whose METHOD_ROLES entry names Role.PARTY (the interceptor refuses the others with
PERMISSION_DENIED, reason PARTY_KEY_METHOD_DENIED). Those methods narrow what they answer
with the helpers here, in the API layer (the console and every client see the same):

- a split is the party's when one of its legs credits one of the party's accounts; another
  split answers NOT_FOUND exactly as an unknown one (its existence does not leak), and
  ListSplits keeps only the party's;
- an account is the party's when the key names it: GetAccount, GetBalance and ListEntries
  of another answer NOT_FOUND (ACCOUNT_NOT_FOUND), ListAccounts lists only the party's;
- a payout is the party's when it pays out one of the party's accounts;
- a voucher is the party's when its subject is: a split's or a split action's voucher of
  one of its splits, a payout's of one of its payouts. The voucher is the whole sealed
  document (every leg of the split), as the platform has it: a copy with the party's legs
  only would be another document that VerifyVoucher could not tie to the record.
"""

from __future__ import annotations

import asyncpg

from clearing.errors import NotFound
from clearing.ledger.model import Principal
from clearing.platforms import party
from clearing.reasons import Reason
from clearing.reports.voucher_model import VoucherKind
from clearing.splits.model import Split


def scope(who: Principal) -> frozenset[int] | None:
    """The accounts a party key is bound to; None for any other key (no narrowing)."""
    return who.party_account_ids if who.is_party else None


def owns_split(who: Principal, split: Split) -> bool:
    """Whether the caller may see this split (any key but a party key may)."""
    if not who.is_party:
        return True
    return any(leg.account_id in who.party_account_ids for leg in split.legs)


def check_account(who: Principal, account_id: int, shown: int | str = "") -> None:
    """NotFound (as for an unknown account: `shown`, its id or external ref as asked) if a
    party key reads another account."""
    if who.is_party and account_id not in who.party_account_ids:
        shown = shown or account_id
        raise NotFound(f"account {shown} not found", reason=Reason.ACCOUNT_NOT_FOUND,
                       metadata={"account": str(shown)})


def check_payout(who: Principal, payout_id: int, account_id: int) -> None:
    """NotFound (as for an unknown payout) if a party key reads another account's payout."""
    if who.is_party and account_id not in who.party_account_ids:
        raise NotFound(f"payout {payout_id} not found", reason=Reason.PAYOUT_NOT_FOUND,
                       metadata={"payout_id": str(payout_id)})


async def check_voucher(pool: asyncpg.Pool, who: Principal, kind: VoucherKind,
                        subject_id: int, field: str, value: int) -> None:
    """NotFound, as for a subject with no voucher, if a party key asks for the voucher of
    a split, split action or payout that is not its own (asked before a voucher is
    issued: a party key never makes another party's voucher be issued)."""
    if who.is_party and not await party.concerns(pool, who.platform_id, kind, subject_id,
                                                 who.party_account_ids):
        raise NotFound(f"no voucher for {field} {value}", reason=Reason.VOUCHER_NOT_FOUND,
                       metadata={field: str(value)})
