-- What categories B to D need: undoing temporary changes (a GPU's power
-- limit) when their alert resolves, and the guarded reboot's records.

-- A change an action made that must be undone when its alert resolves or
-- selfheal stops, such as a lowered GPU power limit.
CREATE TABLE pending_reverts (
    id            bigserial   PRIMARY KEY,
    action_id     bigint      REFERENCES recovery_actions (id) ON DELETE SET NULL,
    occurrence_id bigint      REFERENCES alert_occurrences (id) ON DELETE SET NULL,
    action_type   text        NOT NULL,
    target        text        NOT NULL,
    data          jsonb       NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    reverted_at   timestamptz,
    result        text
);
CREATE INDEX pending_reverts_open_idx ON pending_reverts (created_at) WHERE reverted_at IS NULL;

ALTER TABLE reboot_events
    ADD COLUMN action_id bigint REFERENCES recovery_actions (id) ON DELETE SET NULL,
    ADD COLUMN boot_id   text;
ALTER TABLE reboot_events DROP CONSTRAINT reboot_events_status_check;
ALTER TABLE reboot_events ADD CONSTRAINT reboot_events_status_check CHECK (status IN
    ('pending', 'rebooting', 'validated', 'validation_failed', 'refused', 'failed'));
