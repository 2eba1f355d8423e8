-- Fleets: many nodes' engines on one database, each reaching only its own.
--
-- 1. Every job is for one node (the node of its alert): an engine in fleet
--    mode claims only its node's jobs, through this index.
ALTER TABLE remediation_jobs ADD COLUMN node text;
CREATE INDEX remediation_jobs_node_queued_idx ON remediation_jobs (node, not_before, id) WHERE state = 'queued';

-- 2. Nodes and their heartbeats: `selfheal nodes`, the silent-node metric,
--    and how an alert's spelling of a node (an alias, an IP) becomes its name.
CREATE TABLE nodes (
    name               text        PRIMARY KEY,  -- lower case
    names              text[]      NOT NULL,     -- name and aliases, lower case
    engine             text        NOT NULL DEFAULT '',  -- the engine's replica id
    version            text        NOT NULL DEFAULT '',
    config_fingerprint text        NOT NULL DEFAULT '',
    started_at         timestamptz NOT NULL DEFAULT now(),
    last_heartbeat     timestamptz NOT NULL DEFAULT now(),
    stopped_at         timestamptz                        -- its engine stopped cleanly
);

-- 3. Least privilege. A login role enrolled by `selfheal node add NAME` is
--    mapped to its node here; selfheal_node() is the node of the session's
--    login role (NULL for any other role: the owner, the webhook's, the
--    dashboards'). It reads the mapping with its owner's rights, so the
--    mapping itself need not be readable, and it trusts only session_user,
--    which a session cannot change.
CREATE TABLE node_roles (
    role_name  text        PRIMARY KEY,
    node       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON node_roles FROM PUBLIC;

-- No SET search_path (it would cost a configuration save and restore at
-- each of the many calls row-level security makes): every name in it is
-- qualified instead, the operator included.
CREATE FUNCTION selfheal_node() RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER
    AS $$ SELECT node FROM public.node_roles WHERE role_name OPERATOR(pg_catalog.=) session_user $$;

-- Rows a node writes carry its node without the statement naming it.
ALTER TABLE alert_occurrences   ALTER COLUMN node SET DEFAULT selfheal_node();
ALTER TABLE remediation_jobs    ALTER COLUMN node SET DEFAULT selfheal_node();
ALTER TABLE recovery_actions    ADD COLUMN node text DEFAULT selfheal_node();
ALTER TABLE service_failures    ADD COLUMN node text DEFAULT selfheal_node();
ALTER TABLE escalations         ADD COLUMN node text DEFAULT selfheal_node();
ALTER TABLE self_healing_events ADD COLUMN node text DEFAULT selfheal_node();
ALTER TABLE pending_reverts     ADD COLUMN node text DEFAULT selfheal_node();
ALTER TABLE reboot_events       ADD COLUMN node text DEFAULT selfheal_node();

-- Row-level security: a session whose login is a node's sees and writes
-- only that node's rows; every other role (subject to its grants) sees all.
-- The table owner, and so a single-host selfheal, is not subject to it.
-- (SELECT selfheal_node()) is evaluated once per statement, not per row.
DO $$
DECLARE
    t text;
    col text;
BEGIN
    FOR t, col IN VALUES ('alert_occurrences', 'node'), ('remediation_jobs', 'node'), ('recovery_actions', 'node'),
                         ('service_failures', 'node'), ('escalations', 'node'), ('self_healing_events', 'node'),
                         ('pending_reverts', 'node'), ('reboot_events', 'node'), ('nodes', 'name')
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY not_a_node ON %I USING ((SELECT selfheal_node()) IS NULL)', t);
        EXECUTE format('CREATE POLICY own_node ON %I USING (%I = (SELECT selfheal_node())) WITH CHECK (%I = (SELECT selfheal_node()))',
                       t, col, col);
    END LOOP;
END
$$;

-- The two group roles: selfheal_node (every node's login is a member) and
-- selfheal_webhook (webhook-only replicas: they ingest, nothing more).
-- Creating a role needs CREATEROLE; without it the migration leaves a
-- notice, and `selfheal node add` says what is missing.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['selfheal_node', 'selfheal_webhook'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            IF (SELECT rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = current_user) THEN
                BEGIN
                    EXECUTE format('CREATE ROLE %I NOLOGIN', r);
                EXCEPTION WHEN duplicate_object OR unique_violation THEN
                    NULL; -- another database of this cluster created it just now
                END;
            ELSE
                RAISE NOTICE 'role % not created: % lacks CREATEROLE', r, current_user;
            END IF;
        END IF;
    END LOOP;

    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'selfheal_node') THEN
        GRANT USAGE ON SCHEMA public TO selfheal_node;
        GRANT SELECT, INSERT, UPDATE, DELETE ON alert_occurrences, remediation_jobs, recovery_actions, service_failures,
            escalations, self_healing_events, pending_reverts, reboot_events, replicas TO selfheal_node;
        GRANT SELECT, INSERT, UPDATE ON nodes TO selfheal_node;
        GRANT SELECT ON engine_settings, schema_migrations TO selfheal_node;
        GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO selfheal_node;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'selfheal_webhook') THEN
        GRANT USAGE ON SCHEMA public TO selfheal_webhook;
        -- Ingestion: upsert the occurrence, queue or cancel its jobs, clear
        -- its target's escalation, write its events. No action, failure or
        -- setting can be written with these rights.
        GRANT SELECT, INSERT, UPDATE ON alert_occurrences, remediation_jobs TO selfheal_webhook;
        GRANT SELECT, UPDATE (cleared_at) ON escalations TO selfheal_webhook;
        GRANT INSERT, SELECT (id) ON self_healing_events TO selfheal_webhook;  -- SELECT (id): RETURNING id
        GRANT SELECT ON recovery_actions, nodes, engine_settings, schema_migrations TO selfheal_webhook;
        GRANT USAGE ON SEQUENCE alert_occurrences_id_seq, remediation_jobs_id_seq, self_healing_events_id_seq TO selfheal_webhook;
    END IF;
END
$$;
