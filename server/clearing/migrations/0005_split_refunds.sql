-- Refunds of splits (RefundSplit, see clearing/api/split_refund.py).
-- `refunded_posted_minor`: the part of a leg's `refunded_minor` taken back from what was
-- posted to its account (the rest was voided from its hold and is in `voided_minor`).
-- `pending_transfer_id`: the leg's open pending transfer once a partial refund of its hold
-- replaced it (void the old one, open a new one for what stays held); 0 means the leg's
-- first transfer. A refund's row in split_actions has 0 in `transfer_ids` for every leg
-- change: its leg changes carry their transfers (several per leg) in `body`.
ALTER TABLE split_legs ADD COLUMN refunded_posted_minor bigint NOT NULL DEFAULT 0
    CHECK (refunded_posted_minor >= 0);
ALTER TABLE split_legs ADD COLUMN pending_transfer_id bigint NOT NULL DEFAULT 0;
