-- What was done to a split after it was made (releases, cancellation), oldest first,
-- written by the ledger writer's "split_actions" sink in the transaction that commits the
-- action's transfers (the leg amounts in split_legs change in that same transaction).
-- `action_id` is the id of the action's first transfer; `body` is the SplitAction
-- message without what only the commit gives (id, time, transfer ids); `transfer_ids[i]`
-- is the transfer of the body's `leg_changes[i]` (0: none, e.g. a custodial hold).
CREATE TABLE split_actions (
    action_id     bigint PRIMARY KEY,
    split_id      bigint NOT NULL REFERENCES splits,
    platform_id   bigint NOT NULL,
    request_id    text NOT NULL,
    payload_hash  bytea NOT NULL,
    body          bytea NOT NULL,
    transfer_ids  bigint[] NOT NULL,
    created_at    timestamptz NOT NULL
);
CREATE UNIQUE INDEX split_actions_request_idx ON split_actions (platform_id, request_id);
CREATE INDEX split_actions_split_idx ON split_actions (split_id, action_id);
