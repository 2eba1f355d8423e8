-- The seed system's schema: the tables, helper functions and views that
-- dashboards, scripts and operators already rely on. Names and meanings are
-- part of selfheal's interface (docs/design.md, "Database"); later migrations
-- only add to them.
--
-- Windows are inclusive at their far edge: an event exactly N minutes old is
-- "within the last N minutes". Minutes are numeric so a 90-second window
-- (1.5) is expressible; whole numbers work as they always did.

CREATE TABLE service_failures (
    id           bigserial   PRIMARY KEY,
    service_name text        NOT NULL,
    failure_type text        NOT NULL,
    status       text        NOT NULL,
    failure_time timestamptz NOT NULL DEFAULT now(),
    details      jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX service_failures_service_time_idx ON service_failures (service_name, failure_time DESC);
COMMENT ON TABLE service_failures IS 'Failed remediation attempts per service; retention 1 hour (cleanup_service_failures).';

CREATE TABLE recovery_actions (
    id            bigserial   PRIMARY KEY,
    service_name  text        NOT NULL,
    action_type   text        NOT NULL,
    status        text        NOT NULL CHECK (status IN
                      ('running', 'succeeded', 'failed', 'interrupted', 'dry_run')),
    started_at    timestamptz NOT NULL DEFAULT now(),
    completed_at  timestamptz,
    error_message text,
    details       jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX recovery_actions_service_started_idx ON recovery_actions (service_name, started_at DESC);
CREATE INDEX recovery_actions_started_idx ON recovery_actions (started_at DESC);
COMMENT ON TABLE recovery_actions IS 'Every action selfheal ran or would have run (dry-run); retention 7 days.';

CREATE TABLE reboot_events (
    id           bigserial   PRIMARY KEY,
    requested_at timestamptz NOT NULL DEFAULT now(),
    reason       text        NOT NULL,
    status       text        NOT NULL CHECK (status IN
                     ('pending', 'rebooting', 'validated', 'validation_failed', 'refused')),
    pre_state    jsonb       NOT NULL DEFAULT '{}',
    post_state   jsonb,
    validated_at timestamptz,
    details      jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX reboot_events_requested_idx ON reboot_events (requested_at DESC);
COMMENT ON TABLE reboot_events IS 'Guarded reboots with the state saved before and validated after; retention 30 days.';

CREATE TABLE self_healing_events (
    id           bigserial   PRIMARY KEY,
    event_time   timestamptz NOT NULL DEFAULT now(),
    severity     text        NOT NULL CHECK (severity IN
                     ('INFO', 'WARNING', 'ERROR', 'CRITICAL', 'EMERGENCY')),
    event_type   text        NOT NULL,
    service_name text,
    message      text        NOT NULL,
    details      jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX self_healing_events_time_idx ON self_healing_events (event_time DESC);
CREATE INDEX self_healing_events_critical_idx ON self_healing_events (event_time DESC)
    WHERE severity IN ('CRITICAL', 'EMERGENCY');
COMMENT ON TABLE self_healing_events IS 'Audit trail of every decision; retention 30 days.';

-- get_service_failure_count returns how many failures of p_service were
-- recorded in the last p_minutes.
CREATE FUNCTION get_service_failure_count(p_service text, p_minutes numeric)
RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT count(*)::integer
    FROM service_failures
    WHERE service_name = p_service
      AND failure_time >= now() - p_minutes * interval '1 minute';
$$;

-- is_service_in_cooldown reports whether an action on p_service started in
-- the last p_minutes.
CREATE FUNCTION is_service_in_cooldown(p_service text, p_minutes numeric)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1
        FROM recovery_actions
        WHERE service_name = p_service
          AND started_at >= now() - p_minutes * interval '1 minute'
    );
$$;

-- get_critical_events_count returns how many CRITICAL or EMERGENCY events
-- were recorded in the last p_minutes.
CREATE FUNCTION get_critical_events_count(p_minutes numeric)
RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT count(*)::integer
    FROM self_healing_events
    WHERE severity IN ('CRITICAL', 'EMERGENCY')
      AND event_time >= now() - p_minutes * interval '1 minute';
$$;

-- record_service_failure stores one failure and returns its id.
CREATE FUNCTION record_service_failure(p_service text, p_type text, p_status text)
RETURNS bigint
LANGUAGE sql AS $$
    INSERT INTO service_failures (service_name, failure_type, status)
    VALUES (p_service, p_type, p_status)
    RETURNING id;
$$;

-- record_recovery_action stores one action and returns its id. A row that
-- is not 'running' is complete when it is written.
CREATE FUNCTION record_recovery_action(
    p_service text,
    p_action  text,
    p_status  text,
    p_error   text  DEFAULT NULL,
    p_details jsonb DEFAULT '{}')
RETURNS bigint
LANGUAGE sql AS $$
    INSERT INTO recovery_actions (service_name, action_type, status, completed_at, error_message, details)
    VALUES (p_service, p_action, p_status,
            CASE WHEN p_status = 'running' THEN NULL ELSE now() END,
            p_error, COALESCE(p_details, '{}'))
    RETURNING id;
$$;

-- cleanup_service_failures deletes failures older than their one-hour
-- retention and returns how many it deleted.
CREATE FUNCTION cleanup_service_failures()
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    deleted integer;
BEGIN
    DELETE FROM service_failures WHERE failure_time < now() - interval '1 hour';
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END;
$$;

CREATE VIEW v_service_failure_summary AS
SELECT service_name,
       count(*) FILTER (WHERE failure_time >= now() - interval '10 minutes') AS failures_10m,
       count(*)                                                              AS failures_1h,
       max(failure_time)                                                     AS last_failure
FROM service_failures
WHERE failure_time >= now() - interval '1 hour'
GROUP BY service_name;

CREATE VIEW v_recent_recovery_actions AS
SELECT id, service_name, action_type, status, started_at, completed_at,
       EXTRACT(EPOCH FROM (completed_at - started_at)) AS duration_seconds,
       error_message, details
FROM recovery_actions
WHERE started_at >= now() - interval '24 hours'
ORDER BY started_at DESC;

CREATE VIEW v_recent_healing_events AS
SELECT id, event_time, severity, event_type, service_name, message, details
FROM self_healing_events
WHERE event_time >= now() - interval '24 hours'
ORDER BY event_time DESC;
