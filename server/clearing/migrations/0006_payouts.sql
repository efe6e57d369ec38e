-- Payouts: bank accounts bound to sub-accounts, each platform's payout configuration, payouts
-- (a hold on the sub-account, then bank transfers) and every attempt made at the bank.
-- State columns are small integers equal to the proto enum numbers (payout.proto).

-- A binding of a bank account to a sub-account. The newest ACTIVE row is the one payouts use;
-- binding again marks the previous one REPLACED (payouts keep the row they were made with).
-- The full number is stored for the bank only: never logged, never returned (masked_number).
CREATE TABLE bank_accounts (
    bank_account_id  bigserial PRIMARY KEY,
    platform_id      bigint NOT NULL REFERENCES platforms,
    account_id       bigint NOT NULL REFERENCES accounts,
    bank_code        text NOT NULL,
    bank_name        text NOT NULL,
    branch_code      text NOT NULL DEFAULT '',
    account_number   text NOT NULL,
    masked_number    text NOT NULL,
    holder_name      text NOT NULL,
    account_type     smallint NOT NULL CHECK (account_type BETWEEN 1 AND 2),  -- BankAccountType
    kyc_verified     boolean NOT NULL,
    status           smallint NOT NULL DEFAULT 1 CHECK (status BETWEEN 1 AND 2), -- BankAccountStatus
    created_at       timestamptz NOT NULL,
    replaced_at      timestamptz
);
-- At most one ACTIVE binding per sub-account.
CREATE UNIQUE INDEX bank_accounts_active_idx ON bank_accounts (account_id) WHERE status = 1;

-- Each platform's payout rules per currency. A platform without a row uses the defaults that
-- the server's configuration gives (see config.py).
CREATE TABLE payout_configs (
    platform_id             bigint NOT NULL REFERENCES platforms,
    currency_code           char(3) NOT NULL,
    fee_fixed_minor         bigint NOT NULL DEFAULT 0 CHECK (fee_fixed_minor >= 0),
    fee_bps                 integer NOT NULL DEFAULT 0 CHECK (fee_bps BETWEEN 0 AND 10000),
    fee_account_id          bigint REFERENCES accounts,    -- NULL: no fee may be configured
    min_amount_minor        bigint NOT NULL DEFAULT 1 CHECK (min_amount_minor >= 1),
    max_amount_minor        bigint NOT NULL CHECK (max_amount_minor >= min_amount_minor),
    daily_max_minor         bigint NOT NULL CHECK (daily_max_minor >= 1),
    review_threshold_minor  bigint NOT NULL CHECK (review_threshold_minor >= 0), -- above: review
    bank_transfer_max_minor bigint NOT NULL DEFAULT 50000000 CHECK (bank_transfer_max_minor >= 1),
    time_zone               text NOT NULL DEFAULT 'Asia/Shanghai',  -- of the "day" of daily_max
    updated_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (platform_id, currency_code),
    CHECK (fee_account_id IS NOT NULL OR (fee_fixed_minor = 0 AND fee_bps = 0))
);

-- A payout. Its amount is held on the sub-account by the ledger's PENDING transfers
-- hold_transfer_id (net -> the custodial account) and fee_transfer_id (fee -> fee account),
-- committed in the same transaction as this row.
CREATE TABLE payouts (
    payout_id         bigint PRIMARY KEY,              -- from payout_id_seq, taken before the hold
    platform_id       bigint NOT NULL REFERENCES platforms,
    request_id        text NOT NULL,
    payload_hash      bytea NOT NULL,
    account_id        bigint NOT NULL REFERENCES accounts,
    bank_account_id   bigint NOT NULL REFERENCES bank_accounts,
    currency_code     char(3) NOT NULL,
    amount_minor      bigint NOT NULL CHECK (amount_minor > 0),      -- debited: net + fee
    fee_minor         bigint NOT NULL CHECK (fee_minor >= 0),
    net_minor         bigint NOT NULL CHECK (net_minor > 0),
    paid_minor        bigint NOT NULL DEFAULT 0 CHECK (paid_minor >= 0),
    state             smallint NOT NULL CHECK (state BETWEEN 1 AND 7),  -- PayoutState
    origin            smallint NOT NULL CHECK (origin BETWEEN 1 AND 2), -- PayoutOrigin
    review_required   boolean NOT NULL,
    requested_by      text NOT NULL,                   -- api key id, or 'scheduler'
    requested_key_id  bigint NOT NULL DEFAULT 0,       -- 0 for the scheduler
    reviewed_by       text NOT NULL DEFAULT '',
    review_reason     text NOT NULL DEFAULT '',
    failure_reason    text NOT NULL DEFAULT '',
    failure_message   text NOT NULL DEFAULT '',
    hold_transfer_id  bigint NOT NULL,
    fee_transfer_id   bigint NOT NULL DEFAULT 0,       -- 0: no fee
    fee_account_id    bigint NOT NULL DEFAULT 0,
    memo              text NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    review_at         timestamptz,
    finished_at       timestamptz,
    UNIQUE (platform_id, request_id),
    CHECK (amount_minor = net_minor + fee_minor),
    CHECK (paid_minor <= net_minor)
);
CREATE SEQUENCE payout_id_seq;
CREATE INDEX payouts_list_idx ON payouts (platform_id, created_at DESC, payout_id DESC);
CREATE INDEX payouts_account_idx ON payouts (account_id, created_at DESC, payout_id DESC);

-- One bank transfer of a payout: at most bank_transfer_max_minor each. The worker claims due
-- rows with FOR UPDATE SKIP LOCKED (state QUEUED or UNKNOWN and next_attempt_at <= now, or
-- SUBMITTED for too long).
CREATE TABLE bank_transfers (
    bank_transfer_id  bigserial PRIMARY KEY,
    payout_id         bigint NOT NULL REFERENCES payouts,
    platform_id       bigint NOT NULL,
    sequence          integer NOT NULL CHECK (sequence >= 1),
    amount_minor      bigint NOT NULL CHECK (amount_minor > 0),
    currency_code     char(3) NOT NULL,
    state             smallint NOT NULL CHECK (state BETWEEN 1 AND 5),  -- BankTransferState
    attempt_count     integer NOT NULL DEFAULT 0,
    idempotency_key   text NOT NULL DEFAULT '',        -- of the current attempt
    next_attempt_at   timestamptz,                     -- NULL: nothing planned
    created_at        timestamptz NOT NULL,
    finished_at       timestamptz,
    UNIQUE (payout_id, sequence)
);
CREATE INDEX bank_transfers_due_idx ON bank_transfers (next_attempt_at)
    WHERE state IN (1, 2, 3);

-- Every submission to the bank, recorded (SUBMITTED) before the bank is called, so that after
-- a crash the bank is asked about it before anything is resent.
CREATE TABLE bank_transfer_attempts (
    bank_transfer_id  bigint NOT NULL REFERENCES bank_transfers,
    attempt_number    integer NOT NULL CHECK (attempt_number >= 1),
    idempotency_key   text NOT NULL UNIQUE,
    state             smallint NOT NULL CHECK (state BETWEEN 1 AND 5),  -- BankTransferState
    bank_reference    text NOT NULL DEFAULT '',
    failure_code      text NOT NULL DEFAULT '',
    failure_message   text NOT NULL DEFAULT '',
    submitted_at      timestamptz NOT NULL,
    finished_at       timestamptz,
    PRIMARY KEY (bank_transfer_id, attempt_number)
);
