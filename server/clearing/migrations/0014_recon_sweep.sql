-- Reconciliation, part 2 (clearing/recon/sweep.py, payout_match.py; docs/recon.md): the 7x24
-- sweep of splits against their ledger transfers and of payouts against their bank
-- transfers, and the runs of a bank's payout result file.
-- This migration does not depend on 0013 (the runner applies every missing version in order,
-- gaps allowed).

-- The sweep's discrepancies belong to no run (run_id NULL, shown as 0); they say what is
-- wrong in `description`. A payout file's discrepancies name the payout and bank transfer.
ALTER TABLE recon_discrepancies ALTER COLUMN run_id DROP NOT NULL;
ALTER TABLE recon_discrepancies ADD COLUMN description text NOT NULL DEFAULT '';
ALTER TABLE recon_discrepancies ADD COLUMN payout_id bigint NOT NULL DEFAULT 0;
ALTER TABLE recon_discrepancies ADD COLUMN bank_transfer_id bigint NOT NULL DEFAULT 0;
-- Only the sweep's classes (SPLIT_LEDGER_MISMATCH 8, PAYOUT_BANK_MISMATCH 9) are without a run.
ALTER TABLE recon_discrepancies ADD CONSTRAINT recon_discrepancies_run_or_sweep
    CHECK ((run_id IS NULL) = (class IN (8, 9)));
-- At most one OPEN sweep discrepancy per class and item: a re-check of an item still wrong
-- adds nothing.
CREATE UNIQUE INDEX recon_discrepancies_sweep_open_idx
    ON recon_discrepancies (class, split_id, payout_id) WHERE run_id IS NULL AND state = 1;

-- The sweep's watermark per kind of item ('split', 'payout'): every item whose
-- (updated_at, id) is at most (checked_updated_at, checked_id) has been checked in the
-- version it has now. A sweeper locks the row (FOR UPDATE SKIP LOCKED: another process's
-- sweeper skips the kind instead of waiting), checks the next items in (updated_at, id)
-- order whose updated_at is older than the settle delay, writes their discrepancies and
-- moves the watermark, in one transaction: each version of an item is checked once, by
-- one process. An item changed later (a release, a refund, a paid bank transfer) gets a
-- later updated_at and is checked again.
CREATE TABLE recon_sweep_cursors (
    item_kind           text PRIMARY KEY,
    checked_updated_at  timestamptz NOT NULL,
    checked_id          bigint NOT NULL,
    checked_count       bigint NOT NULL DEFAULT 0,     -- items checked, all time
    discrepancy_count   bigint NOT NULL DEFAULT 0,     -- discrepancies written, all time
    swept_at            timestamptz                    -- the last sweep that checked items
);
INSERT INTO recon_sweep_cursors (item_kind, checked_updated_at, checked_id)
VALUES ('split', '-infinity', 0), ('payout', '-infinity', 0);

CREATE INDEX splits_updated_idx ON splits (updated_at, split_id);
CREATE INDEX payouts_updated_idx ON payouts (updated_at, payout_id);

-- A payout file's MISSING_IN_BANK_FILE: the attempts that succeeded within its day.
CREATE INDEX bank_transfer_attempts_finished_idx ON bank_transfer_attempts (finished_at)
    WHERE state = 4;

-- A bank's payout result file is imported as a statement (format BANK_PAYOUTS): its lines
-- carry the payout the bank names (0 on a channel statement's lines).
ALTER TABLE recon_statement_lines ADD COLUMN payout_id bigint NOT NULL DEFAULT 0;
