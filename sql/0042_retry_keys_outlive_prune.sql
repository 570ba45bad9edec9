-- A retry's key lives as long as the result of the job it retries.
--
-- retry(ID) makes one retry per job: a second call finds the first by its idempotency key
-- (switchyard:retry-of:ID). prune removed keys by age alone, while a job's result is kept until its
-- day's partition goes: after `dispatcher prune --older-than 1d` (or 30d, for a job finished
-- late on the cutoff's day) retry(ID) made a second retry, and a script retrying every failed job
-- it finds paid again. prune now keeps such a key while that result is there. Otherwise 0019's.

SET LOCAL ROLE switchyard_admin;

CREATE OR REPLACE FUNCTION switchyard.prune(p_older_than interval)
    RETURNS TABLE (item text, removed bigint)
    LANGUAGE plpgsql AS $$
DECLARE
    cutoff timestamptz := now() - p_older_than;
    partition record;
    count bigint;
BEGIN
    FOR partition IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'switchyard.results'::regclass AND c.relname ~ '^results_[0-9]{8}$'
        ORDER BY c.relname
    LOOP
        CONTINUE WHEN (to_date(substr(partition.relname, 9), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC' > cutoff;
        EXECUTE format('SELECT count(*) FROM switchyard.%I', partition.relname) INTO count;
        EXECUTE format('DROP TABLE switchyard.%I', partition.relname);
        item := 'partition ' || partition.relname; removed := count;
        RETURN NEXT;
    END LOOP;
    DELETE FROM switchyard.results_default WHERE finished_at < cutoff;
    GET DIAGNOSTICS count = ROW_COUNT;
    item := 'rows in results_default'; removed := count;
    RETURN NEXT;
    -- A key still guards its job while the job is queued or running, however old; and a retry's
    -- key (switchyard:retry-of:ID) while the result of the job it retries is kept.
    DELETE FROM switchyard.idempotency_keys k
    WHERE k.created_at < cutoff AND NOT EXISTS (SELECT 1 FROM switchyard.jobs j WHERE j.id = k.job_id)
          AND NOT (k.key ~ '^switchyard:retry-of:[0-9]{1,18}$'
                   AND EXISTS (SELECT 1 FROM switchyard.results r WHERE r.job_id = substr(k.key, 21)::bigint));
    GET DIAGNOSTICS count = ROW_COUNT;
    item := 'idempotency keys'; removed := count;
    RETURN NEXT;
    DELETE FROM switchyard.workers WHERE heartbeat_at < now() - interval '1 day';
END $$;
