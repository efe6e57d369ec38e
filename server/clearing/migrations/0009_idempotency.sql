-- One meaning of request ids (clearing.idempotency): the first response of every write, as
-- the serialized response message (`response`), or the recorded failure (`error`: code,
-- reason, message and details as JSON). Neither: unfinished (see clearing.idempotency).
ALTER TABLE requests
    ADD COLUMN response bytea,
    ADD COLUMN error text NOT NULL DEFAULT '';
