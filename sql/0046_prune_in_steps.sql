-- prune works in steps, each its own transaction when run one by one.
--
-- prune() ran as one transaction: its first DROP of a results partition took an ACCESS EXCLUSIVE
-- lock on switchyard.results, held until the end, through the trim of every old idempotency
-- key. A review's `dispatcher prune --older-than 10d` over 15 partitions and 430,000 keys held it
-- 8.5 s: no worker wrote a result, and no session could submit (the insert trigger reads the
-- results row type) until it was done. prune_step() does one thing at a time — one partition,
-- or a batch of results_default rows or of keys — and says what it did; `dispatcher prune`
-- calls it until it says nothing, each call committed, with a lock timeout so a DROP waiting
-- behind a long reader gives up rather than hold every writer behind it. prune() loops over
-- the steps in its one transaction, as before, for SQL callers.
SET LOCAL ROLE switchyard_admin;

CREATE FUNCTION switchyard.prune_step(
    p_older_than interval, p_batch integer DEFAULT 10000, p_lock_timeout interval DEFAULT NULL
) RETURNS TABLE (item text, removed bigint)
    LANGUAGE plpgsql AS $$
DECLARE
    cutoff timestamptz := now() - p_older_than;
    oldest text;
    count bigint;
BEGIN
    IF p_lock_timeout IS NOT NULL THEN
        PERFORM set_config('lock_timeout', (extract(epoch FROM p_lock_timeout) * 1000)::bigint || 'ms', true);
    END IF;
    -- The oldest daily partition wholly before the cutoff.
    SELECT c.relname INTO oldest FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'switchyard.results'::regclass AND c.relname ~ '^results_[0-9]{8}$'
      AND (to_date(substr(c.relname, 9), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC' <= cutoff
    ORDER BY c.relname LIMIT 1;
    IF oldest IS NOT NULL THEN
        EXECUTE format('SELECT count(*) FROM switchyard.%I', oldest) INTO count;
        EXECUTE format('DROP TABLE switchyard.%I', oldest);
        item := 'partition ' || oldest; removed := count;
        RETURN NEXT;
        RETURN;
    END IF;
    DELETE FROM switchyard.results_default d
    WHERE d.ctid = ANY (ARRAY(SELECT r.ctid FROM switchyard.results_default r WHERE r.finished_at < cutoff LIMIT p_batch));
    GET DIAGNOSTICS count = ROW_COUNT;
    IF count > 0 THEN
        item := 'rows in results_default'; removed := count;
        RETURN NEXT;
        RETURN;
    END IF;
    -- A key still guards its job while the job is queued or running, however old; and a retry's
    -- key (switchyard:retry-of:ID) while the result of the job it retries is kept.
    DELETE FROM switchyard.idempotency_keys k
    USING (SELECT o.tenant, o.key FROM switchyard.idempotency_keys o
           WHERE o.created_at < cutoff AND NOT EXISTS (SELECT 1 FROM switchyard.jobs j WHERE j.id = o.job_id)
             AND NOT (o.key ~ '^switchyard:retry-of:[0-9]{1,18}$'
                      AND EXISTS (SELECT 1 FROM switchyard.results r WHERE r.job_id = substr(o.key, 21)::bigint))
           LIMIT p_batch) old
    WHERE k.tenant = old.tenant AND k.key = old.key;
    GET DIAGNOSTICS count = ROW_COUNT;
    IF count > 0 THEN
        item := 'idempotency keys'; removed := count;
        RETURN NEXT;
        RETURN;
    END IF;
    -- Last, and said by saying nothing: workers gone for a day.
    DELETE FROM switchyard.workers WHERE heartbeat_at < now() - interval '1 day';
END $$;

-- The steps in one transaction, reported as before: each partition, then the rows of
-- results_default and the keys, each counted once (zero included).
CREATE OR REPLACE FUNCTION switchyard.prune(p_older_than interval)
    RETURNS TABLE (item text, removed bigint)
    LANGUAGE plpgsql AS $$
DECLARE
    step record;
    default_rows bigint := 0;
    keys bigint := 0;
BEGIN
    LOOP
        SELECT s.item, s.removed INTO step FROM switchyard.prune_step(p_older_than, NULL) s;
        EXIT WHEN NOT FOUND;
        CASE step.item
            WHEN 'rows in results_default' THEN default_rows := default_rows + step.removed;
            WHEN 'idempotency keys' THEN keys := keys + step.removed;
            ELSE item := step.item; removed := step.removed; RETURN NEXT;
        END CASE;
    END LOOP;
    item := 'rows in results_default'; removed := default_rows;
    RETURN NEXT;
    item := 'idempotency keys'; removed := keys;
    RETURN NEXT;
END $$;
