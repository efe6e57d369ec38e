-- A counter that every change to api_keys moves forward (insert, revoke, delete, any edit),
-- in the same transaction: the servers' key caches poll it and drop what they hold when it
-- moves (api/auth.py). A counter, not a digest of the table: creating a key and revoking it
-- between two polls must still be seen as a change.
CREATE TABLE api_key_changes (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    version bigint  NOT NULL
);
INSERT INTO api_key_changes (version) VALUES (0);

CREATE FUNCTION api_key_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE api_key_changes SET version = version + 1;
    RETURN NULL;
END $$;

CREATE TRIGGER api_keys_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION api_key_changed();
