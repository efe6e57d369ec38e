-- Rule sets: every published version is immutable (content and compiled plan); which
-- version is active is the only thing that changes, in rule_set_heads.

CREATE TABLE rule_sets (
    platform_id     bigint NOT NULL REFERENCES platforms,
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    version         integer NOT NULL CHECK (version >= 1),
    content         bytea NOT NULL,           -- the RuleSet message as published
    content_sha256  bytea NOT NULL,
    plan            bytea NOT NULL,           -- the compiled plan (what evaluation reads)
    published_by    bigint NOT NULL,          -- api key id (maker)
    published_at    timestamptz NOT NULL DEFAULT now(),
    activated_by    bigint,                   -- api key id (checker) of the last activation
    activated_at    timestamptz,
    PRIMARY KEY (platform_id, name, version)
);

CREATE TABLE rule_set_heads (
    platform_id     bigint NOT NULL REFERENCES platforms,
    name            text NOT NULL,
    latest_version  integer NOT NULL,
    active_version  integer,
    PRIMARY KEY (platform_id, name)
);
