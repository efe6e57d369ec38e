-- ListSplits walks a platform's splits newest paid first, (paid time, split id)
-- descending, from a page token's position and within a paid-time range. No index served
-- that without a rule-set or channel prefix (0012 and 0019 lead with them), so a walk would
-- read every split of the platform. The cost on the split path: one more B-tree entry per
-- split row written (not per leg), in the writer's transaction. The other filters (state,
-- account, amount, currency) are applied to the walked rows, at most LIST_SPLITS_SCAN_MAX
-- rows per page (limits.py); no index on split_legs.account_id is added (one entry per leg).
CREATE INDEX splits_platform_paid_idx ON splits (platform_id, paid_time_ns DESC, split_id DESC);
