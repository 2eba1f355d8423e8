-- Limits that hold under concurrency, ownership of a running action that
-- outlives one database session, fleet isolation enforced by the
-- database, and a queue no job can wedge.

-- 1. A running action belongs to the replica that started it for as long
--    as that replica renews its lease. Another worker takes the action over
--    only once the lease has lapsed (the owner is gone), and starts the next
--    step only once the action's own deadline (its timeout) has passed, so
--    a step never runs while the one before may still run. A lease last
--    written before the database itself started is given a lease's time
--    after the start: its owner could not renew while the server was down.
ALTER TABLE recovery_actions
    ADD COLUMN owner       text,         -- the replica running it
    ADD COLUMN lease_until timestamptz,  -- renewed by the owner while it runs
    ADD COLUMN renewed_at  timestamptz,  -- when the lease was last written
    ADD COLUMN deadline    timestamptz;  -- its timeout: nothing of it runs after this

-- 2. A job whose handling keeps failing is retried with backoff, then
--    refused: it cannot hold the head of the queue for ever.
ALTER TABLE remediation_jobs ADD COLUMN attempts integer NOT NULL DEFAULT 0;

-- 3. A temporary change is recorded before it is made, with the intent, by
--    the replica that makes it; host now holds the node's name (node.name),
--    which a recreated container keeps, rather than the host name.
ALTER TABLE pending_reverts ADD COLUMN owner text;
UPDATE pending_reverts SET host = lower(host) WHERE reverted_at IS NULL;
COMMENT ON COLUMN pending_reverts.host IS 'The node (node.name, lower case) whose devices hold the change: only it can undo it.';

-- 4. Every name and alias belongs to one node. A node's exact name always
--    wins: no node may take another node's name as an alias, and a node's
--    own name evicts an alias another node had claimed before it existed.
--    Names are written only through selfheal_claim_node_names (below).
CREATE TABLE node_names (
    name text PRIMARY KEY,  -- lower case
    node text NOT NULL
);
CREATE INDEX node_names_node_idx ON node_names (node);
INSERT INTO node_names (name, node) SELECT name, name FROM nodes ON CONFLICT DO NOTHING;
INSERT INTO node_names (name, node)
SELECT DISTINCT ON (n) n, name FROM nodes, unnest(names) AS n ORDER BY n, last_heartbeat DESC
ON CONFLICT DO NOTHING;

-- selfheal_claim_node_names records that node answers to names (its name
-- is always among them) and returns the aliases it could not have: another
-- node's name, or an alias another node holds. A node's role may claim
-- names for its own node only. It runs with its owner's rights, so that it
-- can read node_roles and evict an alias; it trusts only session_user.
CREATE FUNCTION selfheal_claim_node_names(p_node text, p_names text[]) RETURNS text[]
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$
DECLARE
    me       text := public.selfheal_node();
    n        text;
    refused  text[] := '{}';
BEGIN
    IF me IS NOT NULL AND me <> p_node THEN
        RAISE EXCEPTION 'node % may not claim names for node %', me, p_node USING ERRCODE = '42501';
    END IF;
    -- Its own name first: it evicts an alias another node claimed.
    INSERT INTO public.node_names (name, node) VALUES (p_node, p_node)
    ON CONFLICT (name) DO UPDATE SET node = EXCLUDED.node;
    FOREACH n IN ARRAY p_names LOOP
        CONTINUE WHEN n = p_node OR n = '';
        IF EXISTS (SELECT 1 FROM public.nodes WHERE name = n)
           OR EXISTS (SELECT 1 FROM public.node_roles WHERE node = n) THEN
            refused := refused || n;   -- another node's own name
            CONTINUE;
        END IF;
        INSERT INTO public.node_names (name, node) VALUES (n, p_node) ON CONFLICT (name) DO NOTHING;
        IF NOT EXISTS (SELECT 1 FROM public.node_names WHERE name = n AND node = p_node) THEN
            refused := refused || n;   -- another node's alias
        END IF;
    END LOOP;
    DELETE FROM public.node_names WHERE node = p_node AND name <> p_node AND NOT (name = ANY (p_names));
    RETURN refused;
END
$$;
REVOKE ALL ON FUNCTION selfheal_claim_node_names(text, text[]) FROM PUBLIC;

-- A node's session writes its heartbeat with the server's clock, and only
-- names it holds: a future heartbeat or another node's name is refused.
-- (Other roles — the owner, on one host — are trusted: tests and repairs
-- may set any value.)
CREATE FUNCTION selfheal_check_node_row() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$
BEGIN
    IF public.selfheal_node() IS NULL THEN
        RETURN NEW;
    END IF;
    IF NEW.last_heartbeat IS DISTINCT FROM now() AND (TG_OP = 'INSERT' OR NEW.last_heartbeat IS DISTINCT FROM OLD.last_heartbeat) THEN
        RAISE EXCEPTION 'node %: a heartbeat is stamped by the database''s clock (now()), not %', NEW.name, NEW.last_heartbeat
            USING ERRCODE = '42501';
    END IF;
    IF NEW.stopped_at IS NOT NULL AND NEW.stopped_at IS DISTINCT FROM now()
       AND (TG_OP = 'INSERT' OR NEW.stopped_at IS DISTINCT FROM OLD.stopped_at) THEN
        RAISE EXCEPTION 'node %: a stop is stamped by the database''s clock (now())', NEW.name USING ERRCODE = '42501';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(NEW.names) AS n
               WHERE n <> NEW.name AND NOT EXISTS (SELECT 1 FROM public.node_names nn WHERE nn.name = n AND nn.node = NEW.name)) THEN
        RAISE EXCEPTION 'node %: names % include one that is not this node''s (another node''s name or alias)', NEW.name, NEW.names
            USING ERRCODE = '42501';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER nodes_checked BEFORE INSERT OR UPDATE ON nodes
    FOR EACH ROW EXECUTE FUNCTION selfheal_check_node_row();

-- 5. replicas: every replica may read them all (the configuration
--    mismatch is fleet-wide news), a node's role may change only its own.
ALTER TABLE replicas ADD COLUMN node text DEFAULT selfheal_node();
ALTER TABLE replicas ENABLE ROW LEVEL SECURITY;
CREATE POLICY not_a_node ON replicas USING ((SELECT selfheal_node()) IS NULL);
CREATE POLICY own_node ON replicas USING (node = (SELECT selfheal_node())) WITH CHECK (node = (SELECT selfheal_node()));
CREATE POLICY read_all ON replicas FOR SELECT USING (true);

ALTER TABLE node_names ENABLE ROW LEVEL SECURITY;
CREATE POLICY read_all ON node_names FOR SELECT USING (true);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'selfheal_node') THEN
        GRANT SELECT ON node_names TO selfheal_node;
        GRANT EXECUTE ON FUNCTION selfheal_claim_node_names(text, text[]) TO selfheal_node;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'selfheal_webhook') THEN
        GRANT SELECT ON node_names TO selfheal_webhook;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'selfheal_grafana') THEN
        GRANT SELECT ON node_names TO selfheal_grafana;
    END IF;
END
$$;
