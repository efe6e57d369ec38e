-- Why a webhook endpoint was disabled (events.model.DisabledReason: 0 while enabled; by
-- request; or BACKLOG, more deliveries pending than CLEARING_WEBHOOK_PENDING_MAX, so that a
-- receiver that stays down cannot grow webhook_deliveries without bound).
ALTER TABLE webhook_endpoints ADD COLUMN disabled_reason smallint NOT NULL DEFAULT 0;
-- Endpoints disabled before this column: by request (the only way there was).
UPDATE webhook_endpoints SET disabled_reason = 1 WHERE NOT enabled;
