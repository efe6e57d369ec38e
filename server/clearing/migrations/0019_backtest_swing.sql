-- Backtests and the static ratio swing (issue 13; clearing/risk/backtest.py, swing.py).
--
-- A backtest reads one rule set's splits of a period, the most recent first: an index on
-- (platform, rule set, paid time) makes that a range scan however many splits the table
-- holds (without it every activation of a swing-checked version would scan the whole
-- table). It is one more index the split path's insert maintains.
CREATE INDEX splits_rule_set_paid_idx ON splits (platform_id, rule_set_name, paid_time_ns);

-- First approvals of rule-set versions whose activation moved a receiver's share by more
-- than the swing threshold: such a version is activated by another approver (neither
-- the publisher nor a key recorded here). One row per approving key; never deleted.
CREATE TABLE rule_set_swing_approvals (
    platform_id     bigint NOT NULL,
    name            text NOT NULL,
    version         integer NOT NULL,
    key_id          bigint NOT NULL,            -- the approver whose call was refused
    active_version  integer NOT NULL,           -- the version the backtest compared with
    max_swing_bps   bigint NOT NULL,            -- its figures (a new receiver: 0)
    receiver_ref    text NOT NULL,
    order_count     bigint NOT NULL,
    comment         text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (platform_id, name, version, key_id)
);

-- Retention (0017): the approvals are records, kept like the activations.
SELECT retention_protect('rule_set_swing_approvals');
