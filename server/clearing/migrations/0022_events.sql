-- Events (issue 18; clearing/events, docs/events.md): the outbox, the per-platform feed,
-- webhook endpoints and their deliveries.
--
-- The outbox: written in the transaction of the change (the splits sink writes one row per
-- split of a group commit in one multi-row INSERT). No per-platform counter is touched on
-- that path: a row gets only its outbox_id (a bigserial, not in commit order).
CREATE TABLE event_outbox (
    outbox_id     bigserial PRIMARY KEY,
    platform_id   bigint NOT NULL,
    type          text NOT NULL,
    resource_id   text NOT NULL,
    request_id    text NOT NULL DEFAULT '',
    payload       bytea NOT NULL,              -- the API resource message after the change
    created_at    timestamptz NOT NULL
);

-- The feed. The sequencer (one at a time per database: an advisory lock) moves the visible
-- outbox rows here in outbox_id order and numbers them per platform, continuing from
-- event_heads: the feed's order is the order in which the changes became visible, without
-- gaps. Pruned after the configured retention (CLEARING_EVENTS_RETENTION_DAYS), never by a
-- consumer.
CREATE TABLE events (
    platform_id   bigint NOT NULL,
    seq           bigint NOT NULL,
    outbox_id     bigint NOT NULL,
    type          text NOT NULL,
    resource_id   text NOT NULL,
    request_id    text NOT NULL,
    payload       bytea NOT NULL,
    created_at    timestamptz NOT NULL,          -- the change's commit-time clock
    sequenced_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (platform_id, seq)
);
CREATE INDEX events_created_idx ON events (created_at);

-- The last number given per platform; only the sequencer writes it.
CREATE TABLE event_heads (
    platform_id   bigint PRIMARY KEY,
    seq           bigint NOT NULL
);

-- Webhook endpoints: a platform's HTTPS URLs and the event types each wants ('{}': all).
-- Two secrets may be valid at once during a rotation (previous_secret until
-- previous_expires_at). Disabled, never deleted (their deliveries stay listable).
CREATE TABLE webhook_endpoints (
    endpoint_id          bigserial PRIMARY KEY,
    platform_id          bigint NOT NULL,
    url                  text NOT NULL,
    types                text[] NOT NULL DEFAULT '{}',
    description          text NOT NULL DEFAULT '',
    secret               text NOT NULL,
    previous_secret      text NOT NULL DEFAULT '',
    previous_expires_at  timestamptz,
    enabled              boolean NOT NULL DEFAULT true,
    created_at           timestamptz NOT NULL DEFAULT now(),
    disabled_at          timestamptz
);
CREATE INDEX webhook_endpoints_platform_idx ON webhook_endpoints (platform_id);

-- One delivery of one event to one endpoint (a redelivery on request is a new row).
-- state: 1 pending, 2 delivered, 3 failed (gave up after the retry window).
-- claimed_until: a worker's lease while it posts; a crashed worker's lease runs out and
-- another process takes the delivery again (at least once).
CREATE TABLE webhook_deliveries (
    delivery_id      bigserial PRIMARY KEY,
    endpoint_id      bigint NOT NULL REFERENCES webhook_endpoints,
    platform_id      bigint NOT NULL,
    seq              bigint NOT NULL,
    resource_id      text NOT NULL,
    state            smallint NOT NULL DEFAULT 1,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    claimed_until    timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE state = 1;
CREATE INDEX webhook_deliveries_resource_idx ON webhook_deliveries
    (endpoint_id, resource_id, delivery_id) WHERE state = 1;
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, delivery_id);

CREATE TABLE webhook_attempts (
    delivery_id   bigint NOT NULL REFERENCES webhook_deliveries,
    attempt       integer NOT NULL,
    started_at    timestamptz NOT NULL,
    duration_ms   integer NOT NULL,
    status_code   integer NOT NULL,             -- 0: no HTTP answer (refused, timeout)
    error         text NOT NULL DEFAULT '',
    PRIMARY KEY (delivery_id, attempt)
);
