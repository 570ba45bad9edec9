-- prune also removes tenants' spending of days before this month, and alerts long cleared.
--
-- switchyard.tenant_spend (0088) gained a row per tenant and day, and switchyard.alerts one per
-- alert raised, for ever: prune, which bounds the results, the idempotency keys and the workers'
-- rows, left them. A day's spending goes once the day is before the cutoff and before this month
-- (UTC), since budgets are counted over their day or month and recount_tenant_spend recounts this
-- month from the results; an alert once it was cleared before the cutoff (an open one stays).
-- Each in batches, a step at a time, as the rest; prune_step and prune are 0046's otherwise.

SET LOCAL ROLE switchyard_admin;

CREATE OR REPLACE FUNCTION switchyard.prune_step(
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
    -- A tenant's spending by the day, for days wholly before the cutoff and before this month
    -- (UTC): a budget is counted over its day or its month, and recount_tenant_spend recounts
    -- this month from the results.
    DELETE FROM switchyard.tenant_spend s
    USING (SELECT o.tenant, o.day FROM switchyard.tenant_spend o
           WHERE o.day < least((cutoff AT TIME ZONE 'UTC')::date, date_trunc('month', now() AT TIME ZONE 'UTC')::date)
           LIMIT p_batch) old
    WHERE s.tenant = old.tenant AND s.day = old.day;
    GET DIAGNOSTICS count = ROW_COUNT;
    IF count > 0 THEN
        item := 'tenant spending days'; removed := count;
        RETURN NEXT;
        RETURN;
    END IF;
    -- Alerts cleared before the cutoff (an open one stays, however old).
    DELETE FROM switchyard.alerts a
    WHERE a.id = ANY (ARRAY(SELECT o.id FROM switchyard.alerts o WHERE o.cleared_at < cutoff LIMIT p_batch));
    GET DIAGNOSTICS count = ROW_COUNT;
    IF count > 0 THEN
        item := 'cleared alerts'; removed := count;
        RETURN NEXT;
        RETURN;
    END IF;
    -- Last, and said by saying nothing: workers gone for a day.
    DELETE FROM switchyard.workers WHERE heartbeat_at < now() - interval '1 day';
END $$;

CREATE OR REPLACE FUNCTION switchyard.prune(p_older_than interval)
    RETURNS TABLE (item text, removed bigint)
    LANGUAGE plpgsql AS $$
DECLARE
    step record;
    default_rows bigint := 0;
    keys bigint := 0;
    spending bigint := 0;
    alerts bigint := 0;
BEGIN
    LOOP
        SELECT s.item, s.removed INTO step FROM switchyard.prune_step(p_older_than, NULL) s;
        EXIT WHEN NOT FOUND;
        CASE step.item
            WHEN 'rows in results_default' THEN default_rows := default_rows + step.removed;
            WHEN 'idempotency keys' THEN keys := keys + step.removed;
            WHEN 'tenant spending days' THEN spending := spending + step.removed;
            WHEN 'cleared alerts' THEN alerts := alerts + step.removed;
            ELSE item := step.item; removed := step.removed; RETURN NEXT;
        END CASE;
    END LOOP;
    item := 'rows in results_default'; removed := default_rows;
    RETURN NEXT;
    item := 'idempotency keys'; removed := keys;
    RETURN NEXT;
    item := 'tenant spending days'; removed := spending;
    RETURN NEXT;
    item := 'cleared alerts'; removed := alerts;
    RETURN NEXT;
END $$;
