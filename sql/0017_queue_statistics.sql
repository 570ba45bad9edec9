-- Claims planned from statistics that no longer describe the queue. A bulk submit of 100,000
-- background jobs into a partition last analyzed near empty left the planner expecting a few
-- dozen queued rows: it read all of them with a bitmap scan and sorted them on disk, 50–100 ms
-- a claim, until autovacuum analyzed the partition (its naptime, a minute by default, plus its
-- thresholds); interactive jobs arriving meanwhile waited behind those claims. The elected
-- housekeeper now calls this every round (2 s): a job partition that holds far more rows than
-- its statistics say is analyzed, once the statistics system has counted them (a submitting
-- session reports its rows when its transaction ends, or up to about 10 s later when it then
-- goes idle).
--
-- Far: more than 1,000 rows above the estimate, and more than twice it. A queue that churns at a
-- steady depth is not analyzed again and again; one that fills is, once per doubling. (One that
-- empties is left to autovacuum: statistics that overcount only make claims read by index.) ANALYZE
-- waits at most 100 ms for its lock: autovacuum working on the partition holds it, and a
-- longer wait would have Postgres cancel autovacuum's vacuum after deadlock_timeout.

SET LOCAL ROLE switchyard_admin;

CREATE FUNCTION switchyard.analyze_stale_partitions() RETURNS SETOF text
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp SET lock_timeout = '100ms'
    AS $$
DECLARE
    stale text;
BEGIN
    FOR stale IN
        SELECT format('%I.%I', s.schemaname, s.relname)
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_stat_all_tables s ON s.relid = c.oid
        WHERE i.inhparent = 'switchyard.jobs'::regclass
          AND s.n_live_tup - greatest(c.reltuples, 0) > greatest(1000, c.reltuples)
    LOOP
        BEGIN
            EXECUTE format('ANALYZE %s', stale);
            RETURN NEXT stale;
        EXCEPTION WHEN lock_not_available THEN
            NULL;  -- autovacuum is on it; the next interval looks again
        END;
    END LOOP;
END $$;

REVOKE ALL ON FUNCTION switchyard.analyze_stale_partitions() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION switchyard.analyze_stale_partitions() TO switchyard_worker;
