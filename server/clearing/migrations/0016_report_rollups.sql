-- Reports (clearing/reports, docs/reports.md): daily roll-ups of the splits, the journal and
-- the channels, per platform and local day (in the platform's time zone), written by the
-- roll-up job (clearing/reports/rollup.py), never by the split path.

-- Reading a day of splits or of the journal by time. BRIN, not B-tree: both tables are
-- appended in created_at order, so a BRIN index (a few pages per 128 table pages) finds a
-- day's pages while costing the writer's one statement next to nothing per row (a B-tree
-- on created_at would add an index insert per split and per transfer on the hot path).
CREATE INDEX splits_created_brin ON splits USING brin (created_at);
CREATE INDEX transfers_created_brin ON transfers USING brin (created_at);

-- One row per rolled (platform, day): what the roll-up read, so that a pass can tell a day
-- whose rows changed since (a late row) and roll it again.
CREATE TABLE report_rollup_days (
    platform_id      bigint NOT NULL,
    day              date NOT NULL,
    time_zone        text NOT NULL,
    split_count      bigint NOT NULL,
    split_id_max     bigint NOT NULL,       -- 0: no split
    transfer_count   bigint NOT NULL,
    transfer_id_max  bigint NOT NULL,       -- 0: no transfer
    roll_count       integer NOT NULL,      -- times rolled (1, then each re-roll)
    rolled_at        timestamptz NOT NULL,
    PRIMARY KEY (platform_id, day)
);

-- Split legs per receiver, rule and rule-set version (the leg's own level) of a day.
CREATE TABLE report_split_days (
    platform_id       bigint NOT NULL,
    day               date NOT NULL,
    currency_code     text NOT NULL,
    account_id        bigint NOT NULL,
    rule_set_name     text NOT NULL,
    rule_set_version  integer NOT NULL,
    rule_name         text NOT NULL,
    leg_count         bigint NOT NULL,
    amount_minor      bigint NOT NULL,
    PRIMARY KEY (platform_id, day, currency_code, account_id, rule_set_name,
                 rule_set_version, rule_name)
);

-- Posted movements (IMMEDIATE and POST_PENDING transfers) per account of a day.
CREATE TABLE report_account_days (
    platform_id    bigint NOT NULL,
    day            date NOT NULL,
    account_id     bigint NOT NULL,
    debit_count    bigint NOT NULL,
    debit_minor    bigint NOT NULL,
    credit_count   bigint NOT NULL,
    credit_minor   bigint NOT NULL,
    PRIMARY KEY (platform_id, day, account_id)
);

-- Splits per channel of a day (the information flow; statements are read as they are).
CREATE TABLE report_channel_days (
    platform_id        bigint NOT NULL,
    day                date NOT NULL,
    channel            text NOT NULL,
    currency_code      text NOT NULL,
    split_count        bigint NOT NULL,
    amount_minor       bigint NOT NULL,
    channel_fee_minor  bigint NOT NULL,
    PRIMARY KEY (platform_id, day, channel, currency_code)
);
