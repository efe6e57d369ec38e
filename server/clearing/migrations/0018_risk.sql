-- Risk controls (clearing/risk, docs/risk.md): the platform's risk policy (versioned,
-- maker-checker), the risk events with their audit steps, the per-receiver inflows that are
-- the truth of the risk counters, and the claims of the daily ratio-swing job.

-- A policy version: immutable once published; `content` is the validated policy as JSON.
CREATE TABLE risk_policies (
    platform_id   bigint NOT NULL,
    version       integer NOT NULL CHECK (version > 0),
    content       jsonb NOT NULL,
    published_by  bigint NOT NULL,
    published_at  timestamptz NOT NULL DEFAULT now(),
    activated_by  bigint,
    activated_at  timestamptz,
    PRIMARY KEY (platform_id, version)
);

-- The platform's latest and active versions (the row publishers and activators lock).
CREATE TABLE risk_policy_heads (
    platform_id     bigint PRIMARY KEY,
    latest_version  integer NOT NULL,
    active_version  integer
);

-- Every activation (the audit trail of the active pointer).
CREATE TABLE risk_policy_activations (
    platform_id       bigint NOT NULL,
    version           integer NOT NULL,
    previous_version  integer,
    key_id            bigint NOT NULL,
    activated_at      timestamptz NOT NULL DEFAULT now()
);

-- A hit of a rule. split_id 0: the ratio swing (no split). held_minor: what the split's
-- leg(s) of the receiver hold for it (a pending transfer); state: proto RiskEventState;
-- rule: proto RiskRule; decision: proto RiskDecision. Written by the splits sink in the
-- transaction of its split (one event per split and rule at most: the unique index), or by
-- the swing job (one per platform, day and receiver).
CREATE TABLE risk_events (
    event_id          bigserial PRIMARY KEY,
    platform_id       bigint NOT NULL,
    rule              smallint NOT NULL CHECK (rule BETWEEN 1 AND 4),
    state             smallint NOT NULL CHECK (state BETWEEN 1 AND 4),
    account_id        bigint NOT NULL,
    split_id          bigint NOT NULL,
    order_id          text NOT NULL,
    currency_code     text NOT NULL,
    amount_minor      bigint NOT NULL,
    held_minor        bigint NOT NULL CHECK (held_minor >= 0),
    observed          bigint NOT NULL,
    limit_value       bigint NOT NULL,
    evidence          jsonb NOT NULL,
    swing_day         date,
    decision          smallint NOT NULL DEFAULT 0,
    proposed_by       bigint,
    posting_request_id text NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL
);
CREATE UNIQUE INDEX risk_events_split ON risk_events (split_id, rule, account_id)
    WHERE split_id <> 0;
CREATE UNIQUE INDEX risk_events_swing ON risk_events (platform_id, swing_day, account_id)
    WHERE swing_day IS NOT NULL;
CREATE INDEX risk_events_list ON risk_events (platform_id, event_id DESC);
CREATE INDEX risk_events_open ON risk_events (state) WHERE state IN (1, 2);

-- The audit trail of an event: OPENED, PROPOSED, RELEASED, REJECTED. Never updated.
CREATE TABLE risk_event_steps (
    event_id    bigint NOT NULL REFERENCES risk_events,
    step        text NOT NULL,
    key_id      bigint NOT NULL,
    note        text NOT NULL,
    decision    smallint NOT NULL,
    request_id  text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX risk_event_steps_event ON risk_event_steps (event_id);

-- The truth of the risk counters: every receiver leg of a committed split of a platform
-- with an active policy, written by the splits sink in the split's transaction (paid_at:
-- the order's paid time, which decides the window and the day). Redis holds a cache of the
-- recent ones, rebuilt from here after a restart.
CREATE TABLE risk_inflows (
    platform_id    bigint NOT NULL,
    account_id     bigint NOT NULL,
    paid_at        timestamptz NOT NULL,
    split_id       bigint NOT NULL,
    order_id       text NOT NULL,
    currency_code  text NOT NULL,
    amount_minor   bigint NOT NULL,
    PRIMARY KEY (split_id, account_id)
);
CREATE INDEX risk_inflows_receiver ON risk_inflows (platform_id, account_id, paid_at);
CREATE INDEX risk_inflows_day ON risk_inflows (platform_id, paid_at);

-- The daily ratio-swing job's claims: one row per platform and day, taken by the first
-- process (INSERT ... ON CONFLICT DO NOTHING); done_at is set when its events are written.
CREATE TABLE risk_swing_runs (
    platform_id  bigint NOT NULL,
    day          date NOT NULL,
    claimed_at   timestamptz NOT NULL DEFAULT now(),
    done_at      timestamptz,
    event_count  integer NOT NULL DEFAULT 0,
    PRIMARY KEY (platform_id, day)
);

-- Retention (0017): risk records are kept like every record of money; the heads and the
-- swing job's claims are state, not records.
SELECT retention_protect('risk_policies', '{platform_id, version, content, published_by,'
                                          ' published_at}');
SELECT retention_protect('risk_policy_activations');
SELECT retention_protect('risk_events', '{event_id, platform_id, rule, account_id, split_id,'
                                        ' order_id, currency_code, amount_minor, held_minor,'
                                        ' observed, limit_value, evidence, swing_day,'
                                        ' created_at}');
SELECT retention_protect('risk_event_steps');
SELECT retention_protect('risk_inflows');
