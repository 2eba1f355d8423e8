-- A read-only role for dashboards (Grafana's PostgreSQL data source). It
-- can log in only once an operator gives it a password:
--     ALTER ROLE selfheal_grafana PASSWORD '…';
-- Creating a role needs CREATEROLE; without it the migration leaves a
-- notice, and the grants follow whenever the role exists.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'selfheal_grafana') THEN
        IF (SELECT rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = current_user) THEN
            BEGIN
                CREATE ROLE selfheal_grafana LOGIN;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL; -- another database of this cluster created it just now
            END;
        ELSE
            RAISE NOTICE 'role selfheal_grafana not created: % lacks CREATEROLE', current_user;
        END IF;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'selfheal_grafana') THEN
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO selfheal_grafana', current_database());
        GRANT USAGE ON SCHEMA public TO selfheal_grafana;
        GRANT SELECT ON ALL TABLES IN SCHEMA public TO selfheal_grafana;
        ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO selfheal_grafana;
    END IF;
END
$$;
