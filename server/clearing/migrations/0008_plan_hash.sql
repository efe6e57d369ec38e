-- The SHA-256 of each version's compiled plan, written at publish: a plan read back from
-- the Redis cache is used only if it has this hash (rules/cache.py).
ALTER TABLE rule_sets ADD COLUMN plan_sha256 bytea;
UPDATE rule_sets SET plan_sha256 = sha256(plan);
ALTER TABLE rule_sets ALTER COLUMN plan_sha256 SET NOT NULL;
