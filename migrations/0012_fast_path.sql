-- The fast path: an occurrence opened from the Docker events stream
-- (labels selfheal_path = 'fast', selfheal_target = the container).
-- Alertmanager's delivery for the same outage joins it rather than acting
-- again; the joined occurrence names it, and its resolution resolves it.
ALTER TABLE alert_occurrences
    ADD COLUMN joined_occurrence_id bigint REFERENCES alert_occurrences (id) ON DELETE SET NULL;
CREATE INDEX alert_occurrences_fast_idx ON alert_occurrences (remediation, (labels->>'selfheal_target'), starts_at DESC)
    WHERE labels->>'selfheal_path' = 'fast';
-- Deleting an occurrence (retention) finds the ones that joined it.
CREATE INDEX alert_occurrences_joined_idx ON alert_occurrences (joined_occurrence_id)
    WHERE joined_occurrence_id IS NOT NULL;
