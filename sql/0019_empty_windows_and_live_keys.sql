-- Two fixes found by using the product on a fresh database.
--
-- job_stats() and call_stats() divided by the number of jobs (calls) on the 'total' row, which
-- GROUPING SETS (()) gives even when nothing finished in the window: on a fresh install, or any
-- quiet window, both raised "division by zero" (and so did `dispatcher status` and `top`). An
-- empty window now gives no rows, as `dispatcher status` always expected.
--
-- prune() removed the idempotency keys older than its cutoff whatever their jobs' state: a job
-- scheduled or postponed for longer than the retention lost its key while still queued, and
-- the same key then submitted a second job. A key is now kept while its job is in the queue.

SET LOCAL ROLE switchyard_admin;

CREATE OR REPLACE FUNCTION switchyard.job_stats(p_window interval DEFAULT '1 hour', p_at timestamptz DEFAULT now())
    RETURNS TABLE (
        dimension text, subject text, jobs bigint, succeeded bigint, failed bigint, expired bigint,
        error_rate double precision, timeout_rate double precision, fallback_rate double precision,
        latency_p50_ms double precision, latency_p95_ms double precision, latency_p99_ms double precision,
        queue_wait_p50_ms double precision, queue_wait_p95_ms double precision, queue_wait_p99_ms double precision,
        cost numeric, cost_per_request numeric, tokens_in bigint, tokens_out bigint, jobs_per_minute double precision)
    LANGUAGE sql STABLE AS $$
    WITH finished AS (
        SELECT r.priority, r.model, r.provider, r.tier, r.status, r.latency_ms, r.queue_wait_ms, r.cost,
               r.tokens_in, r.tokens_out, switchyard.fell_back(r.attempts) AS fell_back,
               r.attempts @> '[{"outcome": "timeout"}]' AS timed_out
        FROM switchyard.results r
        WHERE r.finished_at > p_at - p_window AND r.finished_at <= p_at AND r.status <> 'cancelled'
    ), grouped AS (
        SELECT CASE WHEN grouping(f.priority) = 0 THEN 'priority' WHEN grouping(f.model) = 0 THEN 'model'
                    WHEN grouping(f.provider) = 0 THEN 'provider' WHEN grouping(f.tier) = 0 THEN 'tier'
                    ELSE 'total' END AS dimension,
               CASE WHEN grouping(f.priority) = 0 THEN f.priority WHEN grouping(f.model) = 0 THEN f.model
                    WHEN grouping(f.provider) = 0 THEN f.provider WHEN grouping(f.tier) = 0 THEN f.tier
                    ELSE 'all' END AS subject,
               count(*) AS jobs,
               count(*) FILTER (WHERE f.status = 'succeeded') AS succeeded,
               count(*) FILTER (WHERE f.status = 'failed') AS failed,
               count(*) FILTER (WHERE f.status = 'expired') AS expired,
               count(*) FILTER (WHERE f.timed_out) AS timed_out,
               count(*) FILTER (WHERE f.fell_back) AS fell_back,
               percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY f.latency_ms) AS latency,
               percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY f.queue_wait_ms) AS queue_wait,
               sum(f.cost) AS cost, count(f.cost) AS costed,
               sum(f.tokens_in) AS tokens_in, sum(f.tokens_out) AS tokens_out
        FROM finished f
        GROUP BY GROUPING SETS ((), (f.priority), (f.model), (f.provider), (f.tier))
    )
    SELECT g.dimension, coalesce(g.subject, '(none)'), g.jobs, g.succeeded, g.failed, g.expired,
           (g.failed + g.expired)::double precision / g.jobs, g.timed_out::double precision / g.jobs,
           g.fell_back::double precision / g.jobs,
           g.latency[1], g.latency[2], g.latency[3], g.queue_wait[1], g.queue_wait[2], g.queue_wait[3],
           coalesce(g.cost, 0), CASE WHEN g.costed > 0 THEN round(g.cost / g.costed, 8) END,
           coalesce(g.tokens_in, 0), coalesce(g.tokens_out, 0),
           (g.jobs / greatest(extract(epoch FROM p_window) / 60, 1e-9))::double precision
    FROM grouped g
    WHERE g.jobs > 0
    ORDER BY array_position(ARRAY['total', 'priority', 'model', 'provider', 'tier'], g.dimension), g.jobs DESC, 2
$$;

CREATE OR REPLACE FUNCTION switchyard.call_stats(p_window interval DEFAULT '1 hour', p_at timestamptz DEFAULT now())
    RETURNS TABLE (
        dimension text, subject text, calls bigint, errors bigint, timeouts bigint,
        error_rate double precision, timeout_rate double precision,
        latency_p50_ms double precision, latency_p95_ms double precision, latency_p99_ms double precision)
    LANGUAGE sql STABLE AS $$
    WITH made AS (
        SELECT c.priority, c.model, c.provider, c.tier, c.outcome, c.model_error,
               CASE WHEN c.outcome IN ('succeeded', 'timeout') THEN c.latency_ms END AS latency_ms
        FROM switchyard.calls c
        WHERE c.finished_at > p_at - p_window AND c.finished_at <= p_at AND c.outcome <> 'cancelled'
    ), grouped AS (
        SELECT CASE WHEN grouping(m.priority) = 0 THEN 'priority' WHEN grouping(m.model) = 0 THEN 'model'
                    WHEN grouping(m.provider) = 0 THEN 'provider' WHEN grouping(m.tier) = 0 THEN 'tier'
                    ELSE 'total' END AS dimension,
               CASE WHEN grouping(m.priority) = 0 THEN m.priority WHEN grouping(m.model) = 0 THEN m.model
                    WHEN grouping(m.provider) = 0 THEN m.provider WHEN grouping(m.tier) = 0 THEN m.tier
                    ELSE 'all' END AS subject,
               count(*) AS calls, count(*) FILTER (WHERE m.model_error) AS errors,
               count(*) FILTER (WHERE m.outcome = 'timeout') AS timeouts,
               percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY m.latency_ms) AS latency
        FROM made m
        GROUP BY GROUPING SETS ((), (m.priority), (m.model), (m.provider), (m.tier))
    )
    SELECT g.dimension, coalesce(g.subject, '(none)'), g.calls, g.errors, g.timeouts,
           g.errors::double precision / g.calls, g.timeouts::double precision / g.calls,
           g.latency[1], g.latency[2], g.latency[3]
    FROM grouped g
    WHERE g.calls > 0
    ORDER BY array_position(ARRAY['total', 'priority', 'model', 'provider', 'tier'], g.dimension), g.calls DESC, 2
$$;

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
    -- A key still guards its job while the job is queued or running, however old.
    DELETE FROM switchyard.idempotency_keys k
    WHERE k.created_at < cutoff AND NOT EXISTS (SELECT 1 FROM switchyard.jobs j WHERE j.id = k.job_id);
    GET DIAGNOSTICS count = ROW_COUNT;
    item := 'idempotency keys'; removed := count;
    RETURN NEXT;
    DELETE FROM switchyard.workers WHERE heartbeat_at < now() - interval '1 day';
END $$;
