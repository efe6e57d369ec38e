-- Reconciliation (clearing/recon, docs/recon.md): channel statements, their lines, the runs
-- that match them against the splits, and the discrepancies found.

-- An imported statement file. One active statement per platform, channel and day: a
-- different file for the same day supersedes it (superseded_by names the newer one; the
-- older stays, with its lines and run).
CREATE TABLE recon_statements (
    statement_id        bigserial PRIMARY KEY,
    platform_id         bigint NOT NULL,
    channel             text NOT NULL,
    settlement_date     date NOT NULL,
    format              smallint NOT NULL,          -- proto StatementFormat
    content_sha256      bytea NOT NULL,             -- of the content, decompressed
    size_bytes          bigint NOT NULL,
    line_count          bigint NOT NULL,
    currency_code       text NOT NULL,              -- '' for a statement without lines
    settled_minor       bigint NOT NULL,            -- payments' settled - refunds'
    superseded_by       bigint REFERENCES recon_statements DEFERRABLE INITIALLY DEFERRED,
    request_id          text NOT NULL,
    key_id              bigint NOT NULL,            -- the key that imported it
    imported_at         timestamptz NOT NULL
);
CREATE UNIQUE INDEX recon_statements_active_idx
    ON recon_statements (platform_id, channel, settlement_date) WHERE superseded_by IS NULL;
CREATE UNIQUE INDEX recon_statements_request_idx ON recon_statements (platform_id, request_id);
CREATE INDEX recon_statements_sha_idx
    ON recon_statements (platform_id, channel, settlement_date, content_sha256);

-- The lines of a statement (payments and refunds), written with COPY while the file
-- streams in; the statement's row is written once the whole file is read and checked.
CREATE TABLE recon_statement_lines (
    statement_id            bigint NOT NULL,
    line_number             bigint NOT NULL,        -- in the file; the header is 1
    platform_id             bigint NOT NULL,
    line_type               smallint NOT NULL,      -- proto StatementLineType
    channel_transaction_id  text NOT NULL,
    order_id                text NOT NULL,
    paid_at                 timestamptz NOT NULL,
    amount_minor            bigint NOT NULL,
    channel_fee_minor       bigint NOT NULL,
    settled_minor           bigint NOT NULL,
    currency_code           text NOT NULL,
    PRIMARY KEY (statement_id, line_number)
);

-- A statement matched against the splits: the funds flow (the statement's settled total)
-- against the information flow (what the splits say), and the difference explained by the
-- discrepancies to the minor unit (explained_minor = statement_settled_minor -
-- split_settled_minor, checked when the run is written).
CREATE TABLE recon_runs (
    run_id                   bigserial PRIMARY KEY,
    platform_id              bigint NOT NULL,
    statement_id             bigint NOT NULL UNIQUE REFERENCES recon_statements,
    channel                  text NOT NULL,
    settlement_date          date NOT NULL,
    time_zone                text NOT NULL,
    statement_settled_minor  bigint NOT NULL,
    split_settled_minor      bigint NOT NULL,
    explained_minor          bigint NOT NULL,
    created_at               timestamptz NOT NULL,
    CHECK (explained_minor = statement_settled_minor - split_settled_minor)
);
CREATE INDEX recon_runs_platform_idx ON recon_runs (platform_id, run_id);

-- Counts and sums per class of a run (classes with nothing are not written).
CREATE TABLE recon_run_classes (
    run_id            bigint NOT NULL REFERENCES recon_runs,
    class             smallint NOT NULL,            -- proto ReconciliationClass
    item_count        bigint NOT NULL,
    amount_minor      bigint NOT NULL,
    difference_minor  bigint NOT NULL,
    PRIMARY KEY (run_id, class)
);

-- A line or split that did not match. Resolution (maker-checker) will move state to
-- RESOLVED; nothing is deleted.
CREATE TABLE recon_discrepancies (
    discrepancy_id           bigserial PRIMARY KEY,
    platform_id              bigint NOT NULL,
    run_id                   bigint NOT NULL REFERENCES recon_runs,
    class                    smallint NOT NULL,     -- proto ReconciliationClass
    state                    smallint NOT NULL,     -- proto DiscrepancyState
    order_id                 text NOT NULL,
    channel_transaction_id   text NOT NULL,
    line_number              bigint NOT NULL,       -- 0: a split without a line
    line_type                smallint NOT NULL,
    split_id                 bigint NOT NULL,       -- 0: no split
    statement_amount_minor   bigint NOT NULL,
    statement_fee_minor      bigint NOT NULL,
    statement_currency_code  text NOT NULL,
    split_amount_minor       bigint NOT NULL,
    split_fee_minor          bigint NOT NULL,
    split_currency_code      text NOT NULL,
    difference_minor         bigint NOT NULL,
    created_at               timestamptz NOT NULL
);
CREATE INDEX recon_discrepancies_platform_idx ON recon_discrepancies (platform_id, discrepancy_id);
CREATE INDEX recon_discrepancies_run_idx ON recon_discrepancies (run_id, discrepancy_id);

-- The splits of a channel paid within a day (MISSING_IN_STATEMENT), by the order's channel
-- and paid time as recorded (columns since 0011).
CREATE INDEX splits_channel_paid_idx ON splits (platform_id, channel, paid_time_ns);
