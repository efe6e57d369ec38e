-- Reconciliation, part 2 (clearing/recon, docs/recon.md): the settlement posting of a
-- statement, and the maker-checker resolution of discrepancies with its audit trail.

-- The server's own accounts of reconciliation: a channel's clearing account (proto
-- ACCOUNT_KIND_CHANNEL_CLEARING = 8) and the suspense account (ACCOUNT_KIND_SUSPENSE = 9).
ALTER TABLE accounts DROP CONSTRAINT accounts_kind_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_kind_check CHECK (kind BETWEEN 1 AND 9);

-- The settlement of a statement: at most one per statement. amount_minor is what it moved
-- into the custodial account (negative: out of it, a correction), posted_before_minor what
-- earlier settlements of the channel and day had posted; their sum is the statement's
-- settled total. transfer_id 0: nothing was to be posted.
CREATE TABLE recon_settlements (
    statement_id                 bigint PRIMARY KEY REFERENCES recon_statements,
    platform_id                  bigint NOT NULL,
    run_id                       bigint NOT NULL UNIQUE REFERENCES recon_runs,
    channel                      text NOT NULL,
    settlement_date              date NOT NULL,
    currency_code                text NOT NULL,
    amount_minor                 bigint NOT NULL,
    posted_before_minor          bigint NOT NULL,
    transfer_id                  bigint NOT NULL,
    channel_clearing_account_id  bigint NOT NULL,
    custodial_account_id         bigint NOT NULL,
    posting_request_id           text NOT NULL,
    request_id                   text NOT NULL,
    key_id                       bigint NOT NULL,
    created_at                   timestamptz NOT NULL,
    UNIQUE (platform_id, request_id)
);
CREATE INDEX recon_settlements_day_idx
    ON recon_settlements (platform_id, channel, settlement_date);

-- A proposed resolution of a discrepancy. Its proposal is never changed; its review is
-- written once (PROPOSED -> APPROVED or REJECTED); `attempt` numbers the request id its
-- money action posts under (a refused posting moves to the next).
CREATE TABLE recon_resolutions (
    resolution_id        bigserial PRIMARY KEY,
    platform_id          bigint NOT NULL,
    discrepancy_id       bigint NOT NULL REFERENCES recon_discrepancies,
    action               smallint NOT NULL,     -- proto ResolutionAction
    state                smallint NOT NULL,     -- proto ResolutionState
    note                 text NOT NULL,
    amount_minor         bigint NOT NULL,
    currency_code        text NOT NULL,
    order_message        bytea,                 -- SPLIT_NOW: the split.proto Order, serialized
    proposed_by_key_id   bigint NOT NULL,
    request_id           text NOT NULL,
    attempt              integer NOT NULL DEFAULT 1,
    reviewed_by_key_id   bigint NOT NULL DEFAULT 0,
    review_note          text NOT NULL DEFAULT '',
    transfer_id          bigint NOT NULL DEFAULT 0,
    split_id             bigint NOT NULL DEFAULT 0,
    created_at           timestamptz NOT NULL,
    reviewed_at          timestamptz
);
CREATE INDEX recon_resolutions_discrepancy_idx ON recon_resolutions (discrepancy_id);
-- At most one resolution waits for review per discrepancy.
CREATE UNIQUE INDEX recon_resolutions_proposed_idx
    ON recon_resolutions (discrepancy_id) WHERE state = 1;

-- Every step of every resolution (the audit trail): rows are only ever inserted.
CREATE TABLE recon_resolution_events (
    event_id        bigserial PRIMARY KEY,
    platform_id     bigint NOT NULL,
    resolution_id   bigint NOT NULL REFERENCES recon_resolutions,
    step            smallint NOT NULL,          -- proto ResolutionStep
    key_id          bigint NOT NULL,
    request_id      text NOT NULL,
    note            text NOT NULL,
    transfer_id     bigint NOT NULL,
    created_at      timestamptz NOT NULL
);
CREATE INDEX recon_resolution_events_idx ON recon_resolution_events (resolution_id, event_id);

CREATE FUNCTION recon_resolution_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'recon_resolution_events is append-only';
END;
$$;
CREATE TRIGGER recon_resolution_events_append_only
    BEFORE UPDATE OR DELETE ON recon_resolution_events
    FOR EACH ROW EXECUTE FUNCTION recon_resolution_events_append_only();

-- A discrepancy's latest resolution (0: none).
ALTER TABLE recon_discrepancies ADD COLUMN resolution_id bigint NOT NULL DEFAULT 0;
