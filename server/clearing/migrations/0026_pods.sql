-- PostgreSQL pods (docs/scaling.md "Platform pods"): a platform's whole ledger lives in one
-- PostgreSQL, its pod. The home database (pod 0, CLEARING_DATABASE_URL) holds the platforms,
-- their keys and this routing table; a platform without a row here lives in pod 0. Every
-- pod runs every migration; only the home pod's platform_pods is read.
CREATE TABLE platform_pods (
    platform_id  bigint PRIMARY KEY REFERENCES platforms,
    pod_id       integer NOT NULL CHECK (pod_id >= 0),
    -- true while `clearing pods move` copies the platform: every call of the platform is
    -- refused (UNAVAILABLE, PLATFORM_MOVING) until the routing is switched.
    moving       boolean NOT NULL DEFAULT false,
    changed_at   timestamptz NOT NULL DEFAULT now()
);

-- Which pod this database is, written when a server first opens it: a DSN given for the
-- wrong pod (CLEARING_PODS) stops the server instead of mixing two pods' ledgers.
CREATE TABLE pod_self (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    pod_id     integer NOT NULL CHECK (pod_id >= 0)
);
