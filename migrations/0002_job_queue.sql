-- Idempotent alert ingestion and the remediation job queue.
--
-- An alert occurrence is one (fingerprint, startsAt) pair: however often
-- Alertmanager delivers it, it is one row. Each occurrence gets numbered
-- jobs per remediation; (occurrence, remediation, step) is unique, and a
-- recovery action belongs to at most one job, so one step can act at most
-- once whatever the number of deliveries, retries or replicas.

CREATE TABLE alert_occurrences (
    id               bigserial   PRIMARY KEY,
    fingerprint      text        NOT NULL,
    -- startsAt truncated to milliseconds: Alertmanager sends the same
    -- occurrence with nanoseconds while firing and milliseconds once resolved.
    starts_at        timestamptz NOT NULL,
    alertname        text        NOT NULL,
    status           text        NOT NULL CHECK (status IN ('firing', 'resolved')),
    labels           jsonb       NOT NULL,
    annotations      jsonb       NOT NULL DEFAULT '{}',
    generator_url    text        NOT NULL DEFAULT '',
    remediation      text,
    ends_at          timestamptz,
    resolved_at      timestamptz,
    first_received_at timestamptz NOT NULL DEFAULT now(),
    last_received_at timestamptz NOT NULL DEFAULT now(),
    deliveries       integer     NOT NULL DEFAULT 1,
    UNIQUE (fingerprint, starts_at)
);
CREATE INDEX alert_occurrences_received_idx ON alert_occurrences (first_received_at DESC);
COMMENT ON COLUMN alert_occurrences.remediation IS 'The remediation the policy matched when the occurrence was first received; NULL when none matched.';

CREATE TABLE remediation_jobs (
    id            bigserial   PRIMARY KEY,
    occurrence_id bigint      NOT NULL REFERENCES alert_occurrences (id) ON DELETE CASCADE,
    remediation   text        NOT NULL,
    step          integer     NOT NULL CHECK (step > 0),
    state         text        NOT NULL DEFAULT 'queued' CHECK (state IN
                      ('queued', 'done', 'cancelled', 'interrupted')),
    outcome       text        CHECK (outcome IN
                      ('succeeded', 'failed', 'refused', 'skipped', 'dry_run', 'escalated')),
    target        text,
    reason        text,
    not_before    timestamptz NOT NULL DEFAULT now(),
    created_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    UNIQUE (occurrence_id, remediation, step)
);
CREATE INDEX remediation_jobs_queued_idx ON remediation_jobs (not_before, id) WHERE state = 'queued';
CREATE INDEX remediation_jobs_finished_idx ON remediation_jobs (finished_at);

ALTER TABLE recovery_actions
    ADD COLUMN job_id      bigint REFERENCES remediation_jobs (id) ON DELETE SET NULL,
    ADD COLUMN remediation text,
    ADD COLUMN category    text CHECK (category IN ('A', 'B', 'C', 'D')),
    ADD COLUMN attempt     integer;
-- One action per job: the database itself refuses a second.
CREATE UNIQUE INDEX recovery_actions_job_idx ON recovery_actions (job_id) WHERE job_id IS NOT NULL;
CREATE INDEX recovery_actions_remediation_idx ON recovery_actions (remediation, service_name, started_at DESC);
CREATE INDEX recovery_actions_running_idx ON recovery_actions (started_at) WHERE status = 'running';

ALTER TABLE self_healing_events
    ADD COLUMN remediation   text,
    ADD COLUMN job_id        bigint,
    ADD COLUMN occurrence_id bigint;

ALTER TABLE service_failures
    ADD COLUMN remediation text,
    ADD COLUMN job_id      bigint;

-- An escalation stops the ladder on one target: nothing more runs there
-- until it is cleared (the alert resolves) or its window has passed.
CREATE TABLE escalations (
    id            bigserial   PRIMARY KEY,
    service_name  text        NOT NULL,
    remediation   text        NOT NULL,
    escalate_to   text,
    reason        text        NOT NULL,
    job_id        bigint,
    created_at    timestamptz NOT NULL DEFAULT now(),
    cleared_at    timestamptz
);
CREATE INDEX escalations_open_idx ON escalations (service_name, created_at DESC) WHERE cleared_at IS NULL;

-- One row: the global pause switch every replica reads before acting.
CREATE TABLE engine_settings (
    id         boolean     PRIMARY KEY DEFAULT true CHECK (id),
    paused     boolean     NOT NULL DEFAULT false,
    reason     text        NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO engine_settings DEFAULT VALUES;
