-- Every read on a hot path — a decision, a scrape, `selfheal events`, a
-- dashboard panel — is bounded by the window it shows and backed by an
-- index, so its cost does not grow with history.

-- "Time to heal" reads resolved, remediated occurrences by when they ended.
CREATE INDEX alert_occurrences_healed_idx ON alert_occurrences (ends_at)
    WHERE status = 'resolved' AND remediation IS NOT NULL;

-- "Active cooldowns" reads actions whose cooldown has not ended: the end is
-- written with the action (a timestamptz sum is not immutable, so it
-- cannot be a generated column or an expression index).
ALTER TABLE recovery_actions ADD COLUMN cooldown_until timestamptz;
UPDATE recovery_actions
   SET cooldown_until = started_at + make_interval(secs => (details->>'cooldown_seconds')::float8)
 WHERE COALESCE((details->>'cooldown_seconds')::float8, 0) > 0;
CREATE INDEX recovery_actions_cooldown_idx ON recovery_actions (cooldown_until)
    WHERE cooldown_until IS NOT NULL;

-- Retention deletes occurrences by when they were last received.
CREATE INDEX alert_occurrences_last_received_idx ON alert_occurrences (last_received_at);
