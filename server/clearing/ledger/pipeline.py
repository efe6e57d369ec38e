"""Pipelined flushes of the ledger writer (clearing.ledger.writer, "Pipelined flushes"):
what a batch being committed (a `Flight`) holds that the next batch must not overtake.

With `pipeline` > 1 (CLEARING_WRITER_PIPELINE) the writer starts batch n+1, on a
connection of its own, while batch n is still committing, so the next batch's reads,
apply, encoding and writes overlap the previous one's statements and WAL flush. Nothing
it decides may depend on what batch n has not committed yet; that is what an in-flight
batch could change under it:

- a request id or claim key of both batches: the second would find no record and its
  INSERT of the same key would wait for the first's COMMIT, then fail the whole batch
  (RaceLost, redone);
- a pending transfer: one made or acted on by batch n, posted or voided by batch n+1, is
  not visible (or not final) until batch n commits;
- the funds of an account batch n+1 debits and batch n credits: the funds check would
  read the balance from before batch n's credit (and the two batches would lock the row in
  opposite orders). Accounts that may go negative have no funds check (a platform's
  custodial account, which every split debits): they never make a batch wait. Which do is
  learned from the accounts the writer reads (`allow_negative` never changes once an
  account is made).

A batch that overlaps an in-flight one waits for it to commit (or fail) before its first
statement, so it decides on committed state, as if the flushes ran one after another.
Everything else was already safe across processes (the balance rows are locked in id
order, debited accounts that may not go negative are locked first, the hash chain's head
row orders the batches' links).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from clearing.ledger.model import Mode, Posting
from clearing.limits import WRITER_NEGATIVE_OK_IDS_MAX


class Flight:
    """One batch committing: its keys, the accounts it debits and credits, whether it
    makes or acts on pending transfers; `done` once its commit ended (either way)."""

    __slots__ = ("done", "keys", "debits", "credits", "pendings")

    def __init__(self, postings: Iterable[Posting]) -> None:
        self.done = asyncio.Event()
        keys: set[tuple[int, str]] = set()
        debits: set[int] = set()
        credits: set[int] = set()
        pendings = False
        for p in postings:
            pid = p.platform_id
            keys.add((pid, p.request_id))
            for claim in p.claims:
                keys.add((pid, claim.key))
            for leg in p.legs:
                debits.add(leg.debit_account_id)
                credits.add(leg.credit_account_id)
                if leg.pending_id or leg.mode is Mode.PENDING:
                    pendings = True
        self.keys, self.debits, self.credits, self.pendings = keys, debits, credits, pendings

    def must_follow(self, earlier: "Flight", negative_ok: set[int]) -> bool:
        """Whether this batch must wait for `earlier` (in flight) to commit (module
        docstring)."""
        if earlier.done.is_set():
            return False
        if (self.pendings and earlier.pendings) or not self.keys.isdisjoint(earlier.keys):
            return True
        shared = self.debits & earlier.credits
        return bool(shared) and not shared <= negative_ok


def learn_negative_ok(known: set[int], account_ids: Iterable[int]) -> None:
    """Remember accounts that may go negative (bounded: forgotten all at once beyond
    WRITER_NEGATIVE_OK_IDS_MAX; a forgotten one only makes a batch wait)."""
    if len(known) >= WRITER_NEGATIVE_OK_IDS_MAX:
        known.clear()
    known.update(account_ids)
