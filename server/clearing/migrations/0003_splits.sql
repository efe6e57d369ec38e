-- Rule-set versions: what the contract shows of them beyond 0002 (an id, the level count,
-- when they were superseded), and the audit trail of activations (maker-checker).
ALTER TABLE rule_sets ADD COLUMN rule_set_id bigserial;
ALTER TABLE rule_sets ADD COLUMN level_count integer NOT NULL DEFAULT 1;
ALTER TABLE rule_sets ADD COLUMN superseded_at timestamptz;
CREATE UNIQUE INDEX rule_sets_id_idx ON rule_sets (rule_set_id);

CREATE TABLE rule_set_activations (
    activation_id     bigserial PRIMARY KEY,
    platform_id       bigint NOT NULL,
    name              text NOT NULL,
    version           integer NOT NULL,
    previous_version  integer,                 -- active before, NULL if none
    key_id            bigint NOT NULL,         -- the approver (checker)
    comment           text NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL DEFAULT now()
);

-- Splits: one row per split order, written by the ledger writer's "splits" sink in the
-- transaction that commits the split's transfers. `split_id` is the id of the split's
-- first transfer. `body` is the Split message as evaluated (legs' labels and release
-- steps, matched rules, counter values, alerts, the order); the amounts that change
-- (per leg: held, released, voided, refunded) live in split_legs.
CREATE TABLE splits (
    split_id           bigint PRIMARY KEY,
    platform_id        bigint NOT NULL,
    order_id           text NOT NULL,
    request_id         text NOT NULL,
    payload_hash       bytea NOT NULL,
    status             smallint NOT NULL,       -- proto SplitStatus
    rule_set_name      text NOT NULL,
    rule_set_version   integer NOT NULL,
    currency_code      text NOT NULL,
    amount_minor       bigint NOT NULL CHECK (amount_minor > 0),
    channel_fee_minor  bigint NOT NULL,
    distributed_minor  bigint NOT NULL,
    subsidy_minor      bigint NOT NULL,
    fee_minor          bigint NOT NULL,
    refunded_minor     bigint NOT NULL DEFAULT 0,
    counter_values     jsonb NOT NULL,          -- [{name, subject, value, source}]
    body               bytea NOT NULL,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    UNIQUE (platform_id, order_id)
);
CREATE UNIQUE INDEX splits_request_idx ON splits (platform_id, request_id);

CREATE TABLE split_legs (
    split_id          bigint NOT NULL REFERENCES splits,
    leg_index         integer NOT NULL,
    kind              smallint NOT NULL,        -- proto LegKind
    account_id        bigint NOT NULL,          -- credited (the custodial account for a
                                                -- subsidy into the split base)
    debit_account_id  bigint NOT NULL,
    amount_minor      bigint NOT NULL CHECK (amount_minor > 0),
    held_minor        bigint NOT NULL CHECK (held_minor >= 0),
    released_minor    bigint NOT NULL CHECK (released_minor >= 0),
    voided_minor      bigint NOT NULL DEFAULT 0 CHECK (voided_minor >= 0),
    refunded_minor    bigint NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0),
    hold_reason       smallint NOT NULL,        -- proto HoldReason
    transfer_ids      bigint[] NOT NULL,        -- oldest first; empty for a custodial hold
    PRIMARY KEY (split_id, leg_index),
    CHECK (amount_minor = held_minor + released_minor + voided_minor)
);

-- Alerts raised while splitting (a frozen or closed receiver...), for operators.
CREATE TABLE split_alerts (
    alert_id     bigserial PRIMARY KEY,
    platform_id  bigint NOT NULL,
    split_id     bigint NOT NULL,
    reason       text NOT NULL,
    account_id   bigint NOT NULL,
    leg_index    integer NOT NULL,
    message      text NOT NULL,
    created_at   timestamptz NOT NULL
);
CREATE INDEX split_alerts_platform_idx ON split_alerts (platform_id, alert_id);
