-- Failure counting as the seed means it, and the seed's column names.
--
-- A failure of a service is every detected outage (each new firing
-- occurrence of a category A alert for it) and every failed action. An
-- outage is recorded once per occurrence, however often its job is looked
-- at (deferred, retried, claimed by another replica): the unique index
-- below makes the second insert a no-op.
ALTER TABLE service_failures ADD COLUMN occurrence_id bigint;
CREATE UNIQUE INDEX service_failures_outage_idx ON service_failures (occurrence_id, remediation)
    WHERE failure_type = 'outage';
CREATE INDEX service_failures_remediation_idx ON service_failures (service_name, remediation, failure_time DESC);

-- An escalation is looked up by target and remediation whether or not it
-- has been cleared: a crash loop escalates once per failure window.
CREATE INDEX escalations_target_idx ON escalations (service_name, remediation, created_at DESC);

-- The seed's documented queries name the time `timestamp` and the message
-- `description`. Generated columns keep them true without a second write.
ALTER TABLE self_healing_events
    ADD COLUMN "timestamp"  timestamptz GENERATED ALWAYS AS (event_time) STORED,
    ADD COLUMN description  text        GENERATED ALWAYS AS (message) STORED;
ALTER TABLE recovery_actions
    ADD COLUMN "timestamp"  timestamptz GENERATED ALWAYS AS (started_at) STORED;
ALTER TABLE service_failures
    ADD COLUMN "timestamp"  timestamptz GENERATED ALWAYS AS (failure_time) STORED;
ALTER TABLE reboot_events
    ADD COLUMN "timestamp"  timestamptz GENERATED ALWAYS AS (requested_at) STORED;

-- Critical recovery runs its whole set even when the alert that started it
-- resolves half-way (the hard restart healed the container): the later
-- steps of a sequence are not cancelled by the resolution.
ALTER TABLE remediation_jobs ADD COLUMN keep_on_resolve boolean NOT NULL DEFAULT false;
