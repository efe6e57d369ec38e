-- The audit trail (docs/audit.md): one append-only record of every operator action, written
-- in the same transaction as the change it records. Each platform's events form a hash chain
-- (hash = sha256(previous hash || the event's canonical line), genesis 32 zero bytes), like
-- the journal's batches; audit_head holds each platform's last link, and its row lock orders
-- the platform's operator actions (they are rare; splits never write here). Platform 0 is
-- the core's own chain: changes of the core's admin that belong to no platform (the business
-- calendar), so platform_id references no platform.

CREATE TABLE audit_events (
    event_id        bigserial PRIMARY KEY,
    platform_id     bigint NOT NULL,
    seq             bigint NOT NULL CHECK (seq >= 1),   -- position in the platform's chain
    key_id          bigint,                             -- NULL: the core's admin (CLI)
    key_prefix      text NOT NULL,
    roles           text[] NOT NULL,
    cert_subject    text NOT NULL DEFAULT '',           -- the client certificate's (mTLS)
    method          text NOT NULL,
    resource        text NOT NULL,
    before          jsonb,
    after           jsonb,
    request_id      text NOT NULL,
    created_at      timestamptz NOT NULL,
    hash            bytea NOT NULL,
    UNIQUE (platform_id, seq)
);
CREATE INDEX audit_events_resource ON audit_events (platform_id, resource, seq);
CREATE INDEX audit_events_time ON audit_events (platform_id, created_at);

CREATE TABLE audit_head (
    platform_id     bigint PRIMARY KEY,
    seq             bigint NOT NULL,
    hash            bytea NOT NULL
);

SELECT retention_protect('audit_events');
SELECT retention_protect('audit_head', '{platform_id}');
