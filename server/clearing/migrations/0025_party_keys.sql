-- Party keys (issue 17): a key bound to a set of its platform's accounts (a supplier's,
-- a merchant's, a courier's), with the one role 'party'. It reads only what concerns those
-- accounts (api/party.py); the other keys have NULL. Set when the key is made, never
-- changed (to change a party's accounts, revoke its key and make another).
ALTER TABLE api_keys ADD COLUMN party_account_ids bigint[];
ALTER TABLE api_keys ADD CONSTRAINT api_keys_party_check CHECK (
    (party_account_ids IS NULL AND NOT 'party' = ANY (roles))
    OR (roles = ARRAY['party'] AND cardinality(party_account_ids) >= 1));
