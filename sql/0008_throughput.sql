-- Throughput: the write-back and the heartbeat find their rows by primary key.
--
-- In 0002/0005 the write-back joined switchyard.jobs to the batch (jsonb_to_recordset, which the
-- planner guesses at 100 rows) and, with a deep backlog, chose to scan whole partitions: 5 ms per
-- batch at 100,000 queued jobs. An explicit id array turns that into primary-key probes. The
-- heartbeat skips rows its own worker is writing back at the same moment (it used to wait for
-- them, and the two could deadlock), and reports lost leases separately.
--
-- As 0007 asks: run as the schema's owner, and restate SECURITY DEFINER and the fixed
-- search_path on every function replaced (CREATE OR REPLACE resets them).

SET LOCAL ROLE switchyard_admin;

CREATE OR REPLACE FUNCTION switchyard.complete(p_worker text, p_items jsonb)
    RETURNS TABLE (job_id bigint, kind text)
    LANGUAGE plpgsql AS $$
DECLARE
    result_ids bigint[];
    requeue_ids bigint[];
    requeued integer;
BEGIN
    SELECT array_agg(x.id) FILTER (WHERE x.kind = 'result'),
           array_agg(x.id) FILTER (WHERE x.kind IN ('retry', 'release', 'postpone'))
    INTO result_ids, requeue_ids
    FROM jsonb_to_recordset(p_items) AS x(id bigint, kind text);

    IF result_ids IS NOT NULL THEN
        RETURN QUERY
        WITH input AS (
            SELECT * FROM jsonb_to_recordset(p_items) AS x(
                id bigint, attempt integer, kind text, status text, task_class text, model text, provider text,
                tier text, response jsonb, error jsonb, trail jsonb, tokens_in integer, tokens_out integer,
                cost numeric, base_cost numeric, primary_cost numeric, latency_ms double precision, metadata jsonb)
            WHERE x.kind = 'result'
        ), finished AS (
            -- The fence: only the holder of the lease, for this attempt, ends the job.
            DELETE FROM switchyard.jobs j USING input i
            WHERE j.id = ANY (result_ids) AND j.id = i.id AND j.attempt = i.attempt AND j.lease_owner = p_worker
            RETURNING j.*
        )
        INSERT INTO switchyard.results AS r
            (job_id, status, priority, task_class, affinity_key, tenant, model, provider, tier, request, response,
             error, attempts, attempt_count, tokens_in, tokens_out, cost, base_cost, primary_cost, queue_wait_ms,
             latency_ms, created_at, started_at, worker, retry_of, metadata)
        SELECT f.id, i.status, f.priority, coalesce(i.task_class, f.task_class), f.affinity_key, f.tenant, i.model,
               i.provider, i.tier, f.request, i.response, i.error, f.attempts || coalesce(i.trail, '[]'),
               f.attempt, i.tokens_in, i.tokens_out, i.cost, i.base_cost, i.primary_cost,
               extract(epoch FROM f.claimed_at - greatest(f.created_at, f.run_at)) * 1000, i.latency_ms,
               f.created_at, f.claimed_at, p_worker, f.retry_of, f.metadata || coalesce(i.metadata, '{}')
        FROM finished f JOIN input i ON i.id = f.id
        RETURNING r.job_id, 'result'::text;
    END IF;

    IF requeue_ids IS NOT NULL THEN
        RETURN QUERY
        UPDATE switchyard.jobs j
        SET lease_owner = NULL, lease_expires_at = NULL, claimed_at = NULL,
            run_at = CASE WHEN i.kind IN ('retry', 'postpone') THEN coalesce(i.retry_at, now()) ELSE j.run_at END,
            attempt = CASE WHEN i.kind IN ('release', 'postpone') THEN greatest(j.attempt - 1, 0) ELSE j.attempt END,
            attempts = j.attempts || coalesce(i.trail, '[]')
        FROM jsonb_to_recordset(p_items) AS i(id bigint, attempt integer, kind text, retry_at timestamptz, trail jsonb)
        WHERE j.id = ANY (requeue_ids) AND i.kind IN ('retry', 'release', 'postpone') AND j.id = i.id
          AND j.attempt = i.attempt AND j.lease_owner = p_worker
        RETURNING j.id, i.kind;
        GET DIAGNOSTICS requeued = ROW_COUNT;
        IF requeued > 0 THEN
            PERFORM pg_notify('switchyard_jobs', '');
        END IF;
    END IF;
END $$;

-- Renews the leases a worker holds, and returns, for each job it asked about, whether it still
-- holds it and whether cancellation was asked for. A job its own worker is writing back right
-- now is locked; it is skipped (its lease needs no renewing), not waited for.
CREATE OR REPLACE FUNCTION switchyard.heartbeat(
    p_worker text, p_job_ids bigint[], p_attempts integer[], p_lease_seconds double precision,
    p_concurrency integer, p_hostname text, p_pid integer, p_version text
) RETURNS TABLE (job_id bigint, cancel_requested boolean)
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO switchyard.workers AS w (id, hostname, pid, version, concurrency, in_flight)
    VALUES (p_worker, p_hostname, p_pid, p_version, p_concurrency, coalesce(cardinality(p_job_ids), 0))
    ON CONFLICT (id) DO UPDATE
        SET in_flight = EXCLUDED.in_flight, concurrency = EXCLUDED.concurrency, heartbeat_at = now();
    RETURN QUERY
    WITH held AS (
        SELECT j.id, j.priority, j.cancel_requested FROM switchyard.jobs j
        JOIN unnest(p_job_ids, p_attempts) AS h(id, attempt) ON j.id = h.id AND j.attempt = h.attempt
        WHERE j.id = ANY (p_job_ids) AND j.lease_owner = p_worker
        ORDER BY j.id
        FOR NO KEY UPDATE OF j SKIP LOCKED
    ), renewed AS (
        UPDATE switchyard.jobs j SET lease_expires_at = now() + make_interval(secs => p_lease_seconds)
        FROM held WHERE j.id = held.id AND j.priority = held.priority
        RETURNING j.id
    )
    -- Every job still ours, renewed or being written back (skipped above; the statement's snapshot
    -- still shows it). A data-modifying WITH runs whether or not it is read.
    SELECT j.id, j.cancel_requested FROM switchyard.jobs j
    JOIN unnest(p_job_ids, p_attempts) AS h(id, attempt) ON j.id = h.id AND j.attempt = h.attempt
    WHERE j.id = ANY (p_job_ids) AND j.lease_owner = p_worker;
END $$;

-- The batch (jsonb_to_recordset) is estimated at one row after its filter, so the planner joins
-- it with nested loops: quadratic in the batch size, and a batch of 256 took 40 ms. With nested
-- loops off inside this function, the joins hash (linear), and the jobs are still found by
-- primary key through `id = ANY (...)`.
ALTER FUNCTION switchyard.complete(text, jsonb)
    SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp SET enable_nestloop = off;
ALTER FUNCTION switchyard.heartbeat(text, bigint[], integer[], double precision, integer, text, integer, text)
    SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp;
