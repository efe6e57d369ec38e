-- The ledger: platforms (tenants), API keys, accounts with balances, the journal of
-- transfers, idempotency records and the hash chain of journal batches.
-- Every row is keyed by platform so that the schema can be sharded by platform later.

CREATE TABLE platforms (
    platform_id   bigserial PRIMARY KEY,
    name          text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 64),
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Only a SHA-256 of each key is stored; the key itself is shown once, at creation.
CREATE TABLE api_keys (
    key_id        bigserial PRIMARY KEY,
    platform_id   bigint NOT NULL REFERENCES platforms,
    key_hash      bytea NOT NULL UNIQUE,
    key_prefix    text NOT NULL,              -- first characters, to recognise a key in logs
    roles         text[] NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);

-- Balances are credit-normal: a credit raises them. kind, owner_type, status and the
-- journal's mode are small integers equal to the proto enum numbers.
CREATE TABLE accounts (
    account_id       bigserial PRIMARY KEY,
    platform_id      bigint NOT NULL REFERENCES platforms,
    external_ref     text NOT NULL,
    kind             smallint NOT NULL CHECK (kind BETWEEN 1 AND 7),
    owner_type       smallint NOT NULL CHECK (owner_type BETWEEN 1 AND 2),
    currency_code    char(3) NOT NULL,
    status           smallint NOT NULL DEFAULT 1 CHECK (status BETWEEN 1 AND 3),
    allow_negative   boolean NOT NULL,
    display_name     text NOT NULL DEFAULT '',
    debits_posted    bigint NOT NULL DEFAULT 0 CHECK (debits_posted >= 0),
    credits_posted   bigint NOT NULL DEFAULT 0 CHECK (credits_posted >= 0),
    debits_pending   bigint NOT NULL DEFAULT 0 CHECK (debits_pending >= 0),
    credits_pending  bigint NOT NULL DEFAULT 0 CHECK (credits_pending >= 0),
    frozen           bigint NOT NULL DEFAULT 0 CHECK (frozen >= 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (platform_id, external_ref),
    -- The overdraft rule, enforced by the database as well as by the writer.
    CHECK (allow_negative OR credits_posted - debits_posted - debits_pending - frozen >= 0)
);

-- Journal batch ids; transfer_id = batch_id * 65536 + position in the batch.
CREATE SEQUENCE journal_batch_id_seq;

-- The journal. Rows are never updated except pending_remaining / pending_state of a
-- PENDING transfer, which are derived from later POST/VOID rows and checked by verify.
CREATE TABLE transfers (
    transfer_id        bigint PRIMARY KEY,
    platform_id        bigint NOT NULL,
    batch_id           bigint NOT NULL,
    request_id         text NOT NULL,
    debit_account_id   bigint NOT NULL,
    credit_account_id  bigint NOT NULL,
    amount             bigint NOT NULL CHECK (amount > 0),
    currency_code      char(3) NOT NULL,
    mode               smallint NOT NULL CHECK (mode BETWEEN 1 AND 4),
    pending_id         bigint NOT NULL DEFAULT 0,
    pending_remaining  bigint NOT NULL DEFAULT 0,
    pending_state      smallint NOT NULL DEFAULT 0,
    memo               text NOT NULL DEFAULT '',
    created_at         timestamptz NOT NULL,
    CHECK (debit_account_id <> credit_account_id)
);
CREATE INDEX transfers_debit_idx ON transfers (debit_account_id, transfer_id);
CREATE INDEX transfers_credit_idx ON transfers (credit_account_id, transfer_id);

-- Idempotency: the first result of every write, by (platform, request_id).
CREATE TABLE requests (
    platform_id    bigint NOT NULL,
    request_id     text NOT NULL,
    method         text NOT NULL,
    payload_hash   bytea NOT NULL,
    ok             boolean NOT NULL,
    result_ids     bigint[] NOT NULL DEFAULT '{}',
    error_code     text NOT NULL DEFAULT '',
    error_reason   text NOT NULL DEFAULT '',
    error_message  text NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (platform_id, request_id)
);

-- Hash chain over journal batches, in commit order: hash = sha256(prev_hash || rows_digest).
CREATE TABLE journal_batches (
    seq             bigint PRIMARY KEY,
    batch_id        bigint NOT NULL UNIQUE,
    transfer_count  integer NOT NULL,
    rows_digest     bytea NOT NULL,
    hash            bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- One row: the head of the chain. Its row lock orders batch commits across processes.
CREATE TABLE journal_head (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    seq        bigint NOT NULL,
    hash       bytea NOT NULL
);
INSERT INTO journal_head (seq, hash) VALUES (0, '\x0000000000000000000000000000000000000000000000000000000000000000');

-- Audit trail of account operations (freeze, unfreeze, close), never updated.
CREATE TABLE account_events (
    event_id     bigserial PRIMARY KEY,
    platform_id  bigint NOT NULL,
    account_id   bigint NOT NULL,
    action       text NOT NULL,
    amount       bigint NOT NULL DEFAULT 0,
    reason       text NOT NULL DEFAULT '',
    key_id       bigint NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
