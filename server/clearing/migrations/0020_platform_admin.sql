-- The admin API (PlatformService, issue 14): the operator's admin keys, the last use of API
-- keys, and the changes of payout configurations (maker-checker for fees).

-- Admin keys: the operator of the core, not a platform. Made on the server host by
-- `clearing admin init`; only a SHA-256 and a prefix are kept, as for api_keys.
CREATE TABLE admin_keys (
    admin_key_id  bigserial PRIMARY KEY,
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    key_hash      bytea NOT NULL UNIQUE,
    key_prefix    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);

-- The last use of a key, written by each server process about once a minute (api/auth.py).
ALTER TABLE api_keys ADD COLUMN last_used_at timestamptz;

-- The key caches poll api_key_changes (0010): every change of a key moves it, but writing a
-- key's last use must not (it would empty every cache once a minute), so the update trigger
-- names the columns that decide who a key is.
DROP TRIGGER api_keys_changed ON api_keys;
CREATE TRIGGER api_keys_changed AFTER INSERT OR DELETE OR TRUNCATE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION api_key_changed();
CREATE TRIGGER api_keys_updated AFTER UPDATE OF key_id, platform_id, key_hash, roles, revoked_at
    ON api_keys FOR EACH STATEMENT EXECUTE FUNCTION api_key_changed();
CREATE TRIGGER admin_keys_changed AFTER INSERT OR DELETE OR TRUNCATE ON admin_keys
    FOR EACH STATEMENT EXECUTE FUNCTION api_key_changed();
CREATE TRIGGER admin_keys_updated AFTER UPDATE OF admin_key_id, key_hash, revoked_at
    ON admin_keys FOR EACH STATEMENT EXECUTE FUNCTION api_key_changed();

-- Every SetPayoutConfig, with the whole configuration it sets. state is the proto
-- PayoutConfigChangeState number (PENDING until another admin key approves a fee change;
-- APPLIED at once otherwise). A record of who changed the money rules: kept, never deleted.
CREATE TABLE payout_config_changes (
    change_id               bigserial PRIMARY KEY,
    request_id              text NOT NULL UNIQUE,
    payload_hash            bytea NOT NULL,
    platform_id             bigint NOT NULL REFERENCES platforms,
    currency_code           char(3) NOT NULL,
    fee_fixed_minor         bigint NOT NULL CHECK (fee_fixed_minor >= 0),
    fee_bps                 integer NOT NULL CHECK (fee_bps BETWEEN 0 AND 10000),
    fee_account_id          bigint REFERENCES accounts,
    min_amount_minor        bigint NOT NULL CHECK (min_amount_minor >= 1),
    max_amount_minor        bigint NOT NULL CHECK (max_amount_minor >= min_amount_minor),
    daily_max_minor         bigint NOT NULL CHECK (daily_max_minor >= 1),
    review_threshold_minor  bigint NOT NULL CHECK (review_threshold_minor >= 0),
    bank_transfer_max_minor bigint NOT NULL CHECK (bank_transfer_max_minor >= 1),
    time_zone               text NOT NULL,
    state                   smallint NOT NULL,
    requested_by            bigint NOT NULL REFERENCES admin_keys,
    created_at              timestamptz NOT NULL DEFAULT now(),
    decided_by              bigint REFERENCES admin_keys,
    decided_at              timestamptz,
    note                    text NOT NULL DEFAULT '',
    CHECK (fee_account_id IS NOT NULL OR (fee_fixed_minor = 0 AND fee_bps = 0))
);
CREATE INDEX payout_config_changes_platform_idx
    ON payout_config_changes (platform_id, currency_code, change_id);

SELECT retention_protect('payout_config_changes',
    '{change_id, request_id, payload_hash, platform_id, currency_code, fee_fixed_minor,'
    ' fee_bps, fee_account_id, min_amount_minor, max_amount_minor, daily_max_minor,'
    ' review_threshold_minor, bank_transfer_max_minor, time_zone, requested_by, created_at}');
