-- get_critical_events_count, unchanged in what it returns, in PL/pgSQL: a
-- session plans its query once. As a SQL function it was planned at every
-- call, and under row-level security (the dashboard's role, a fleet node's)
-- that took 5 ms at 10M rows of events for a count that reads none of them
-- (BenchmarkHistory, panel "Critical events (30 min)"; 0.16 ms as PL/pgSQL).
CREATE OR REPLACE FUNCTION get_critical_events_count(p_minutes numeric)
RETURNS integer
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT count(*)::integer
            FROM self_healing_events
            WHERE severity IN ('CRITICAL', 'EMERGENCY')
              AND event_time >= now() - p_minutes * interval '1 minute');
END
$$;
