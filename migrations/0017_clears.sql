-- selfheal clear: a person says a target's cause is fixed. From then on
-- its decisions count nothing from before — failures, escalations and the
-- cooldown start again — and its open escalations close. One row per
-- clear, kept as the record of who cleared what (an event says so too).
CREATE TABLE target_clears (
    id           bigserial   PRIMARY KEY,
    service_name text        NOT NULL,
    remediation  text,                    -- NULL: every remediation on the target
    cleared_at   timestamptz NOT NULL DEFAULT now(),
    cleared_by   text        NOT NULL,
    reason       text        NOT NULL DEFAULT ''
);
CREATE INDEX target_clears_target_idx ON target_clears (service_name, cleared_at DESC);
COMMENT ON TABLE target_clears IS 'selfheal clear: failures, escalations and cooldowns before a clear no longer count; who cleared, when, why.';

ALTER TABLE escalations ADD COLUMN cleared_by text;
COMMENT ON COLUMN escalations.cleared_by IS 'Who closed it with selfheal clear; NULL when its alert resolved.';

ALTER TABLE target_clears ENABLE ROW LEVEL SECURITY;
CREATE POLICY read_all ON target_clears FOR SELECT USING (true);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'selfheal_node') THEN
        GRANT SELECT ON target_clears TO selfheal_node;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'selfheal_webhook') THEN
        -- The status page of a webhook-only replica lists held-back
        -- targets from the decision state, which reads these too.
        GRANT SELECT ON target_clears, service_failures, reboot_events TO selfheal_webhook;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'selfheal_grafana') THEN
        GRANT SELECT ON target_clears TO selfheal_grafana;
    END IF;
END
$$;
