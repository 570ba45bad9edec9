-- The hot path resists a held snapshot. While any session holds an old snapshot (a long report,
-- a forgotten REPEATABLE READ transaction), Postgres keeps every row version that snapshot could
-- still see, and their index entries: each claim and each write-back leaves some. Statements
-- that read an index from one end stepped over all of them, so the queue slowed down with every
-- job drained (`dispatcher bench bloat`: a claim went from 1.3 ms to 5.6 ms, a write-back of 64
-- jobs from 2 ms to 30 ms).
--
-- Claims: a worker may pass, per partition, the position (run_at, id) after which to start: the
-- last job it claimed there, held back to a second before the claim so that a submission still
-- in flight (its run_at is its transaction's start) is not passed over. The row comparison
-- bounds the scan of the (run_at, id) index, so it starts after the entries already stepped
-- over. Jobs that come back behind the cursor (released at shutdown, rescued from a dead worker)
-- are found when the worker starts again from the head, every poll interval. Without a cursor
-- (NULL, the default) a claim reads from the head as before.
--
-- Write-back and heartbeat: the lease fence (`lease_owner = p_worker`) let the planner read the
-- small partial index of leased jobs from end to end instead of probing the primary key; under a
-- held snapshot that index holds an entry for every job leased since. The fence is now written
-- `coalesce(lease_owner = p_worker, false)`: the same rows, but it no longer implies that index's
-- predicate, so the jobs are found by primary key (`id = ANY (...)`) whatever the statistics say.

SET LOCAL ROLE switchyard_admin;

DROP FUNCTION switchyard.claim(text, integer, integer, double precision);

CREATE FUNCTION switchyard.claim(
    p_worker text, p_free_slots integer, p_background_slots integer, p_lease_seconds double precision,
    p_interactive_after_run_at timestamptz DEFAULT NULL, p_interactive_after_id bigint DEFAULT NULL,
    p_background_after_run_at timestamptz DEFAULT NULL, p_background_after_id bigint DEFAULT NULL
) RETURNS SETOF switchyard.jobs
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    claimed integer := 0;
    gate_open boolean;
    -- No cursor: from the head. (A run_at of -infinity with the lowest id is the one position
    -- this cannot reach; no job has both.)
    interactive_after constant timestamptz := coalesce(p_interactive_after_run_at, '-infinity');
    interactive_after_id constant bigint := coalesce(p_interactive_after_id, -9223372036854775808);
    background_after constant timestamptz := coalesce(p_background_after_run_at, '-infinity');
    background_after_id constant bigint := coalesce(p_background_after_id, -9223372036854775808);
BEGIN
    IF p_free_slots <= 0 THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH picked AS (
        SELECT j.id FROM switchyard.jobs_interactive j
        WHERE j.lease_owner IS NULL AND (j.run_at, j.id) > (interactive_after, interactive_after_id)
              AND j.run_at <= now() AND (j.deadline IS NULL OR j.deadline > now())
        ORDER BY j.run_at, j.id
        LIMIT p_free_slots
        FOR NO KEY UPDATE SKIP LOCKED
    )
    UPDATE switchyard.jobs_interactive j
    SET lease_owner = p_worker, lease_expires_at = now() + make_interval(secs => p_lease_seconds),
        attempt = j.attempt + 1, claimed_at = now()
    FROM picked WHERE j.id = picked.id
    RETURNING j.*;
    GET DIAGNOSTICS claimed = ROW_COUNT;
    IF p_background_slots <= 0 OR claimed >= p_free_slots THEN
        RETURN;
    END IF;
    SELECT g.is_open INTO gate_open FROM switchyard.background_gate(now()) g;
    IF gate_open THEN
        RETURN QUERY
        WITH picked AS (
            SELECT j.id FROM switchyard.jobs_background j
            WHERE j.lease_owner IS NULL AND (j.run_at, j.id) > (background_after, background_after_id)
                  AND j.run_at <= now() AND (j.deadline IS NULL OR j.deadline > now())
            ORDER BY j.run_at, j.id
            LIMIT least(p_free_slots - claimed, p_background_slots)
            FOR NO KEY UPDATE SKIP LOCKED
        )
        UPDATE switchyard.jobs_background j
        SET lease_owner = p_worker, lease_expires_at = now() + make_interval(secs => p_lease_seconds),
            attempt = j.attempt + 1, claimed_at = now()
        FROM picked WHERE j.id = picked.id
        RETURNING j.*;
    ELSIF switchyard.setting('background_paused') IS DISTINCT FROM 'true' THEN
        -- Closed: only what cannot wait for the next window (found by the deadline index).
        RETURN QUERY
        WITH picked AS (
            SELECT j.id FROM switchyard.jobs_background j
            WHERE j.lease_owner IS NULL AND j.run_at <= now() AND j.deadline > now()
              AND j.deadline <= now() + switchyard.escalation_horizon(100)  -- the widest: lets the index bound it
              AND j.deadline <= now() + switchyard.escalation_horizon(j.max_attempts)
            ORDER BY j.deadline, j.id
            LIMIT least(p_free_slots - claimed, p_background_slots)
            FOR NO KEY UPDATE SKIP LOCKED
        )
        UPDATE switchyard.jobs_background j
        SET lease_owner = p_worker, lease_expires_at = now() + make_interval(secs => p_lease_seconds),
            attempt = j.attempt + 1, claimed_at = now()
        FROM picked WHERE j.id = picked.id
        RETURNING j.*;
    END IF;
END $$;

REVOKE ALL ON FUNCTION switchyard.claim(text, integer, integer, double precision, timestamptz, bigint, timestamptz,
                                        bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION switchyard.claim(text, integer, integer, double precision, timestamptz, bigint, timestamptz,
                                           bigint) TO switchyard_worker;

CREATE OR REPLACE FUNCTION switchyard.complete(p_worker text, p_items jsonb)
    RETURNS TABLE (job_id bigint, kind text)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp SET enable_nestloop = off
    AS $$
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
            WHERE j.id = ANY (result_ids) AND j.id = i.id AND j.attempt = i.attempt
                  AND coalesce(j.lease_owner = p_worker, false)
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
          AND j.attempt = i.attempt AND coalesce(j.lease_owner = p_worker, false)
        RETURNING j.id, i.kind;
        GET DIAGNOSTICS requeued = ROW_COUNT;
        IF requeued > 0 THEN
            PERFORM pg_notify('switchyard_jobs', '');
        END IF;
    END IF;
END $$;

CREATE OR REPLACE FUNCTION switchyard.heartbeat(
    p_worker text, p_job_ids bigint[], p_attempts integer[], p_lease_seconds double precision,
    p_concurrency integer, p_hostname text, p_pid integer, p_version text
) RETURNS TABLE (job_id bigint, cancel_requested boolean)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
BEGIN
    INSERT INTO switchyard.workers AS w (id, hostname, pid, version, concurrency, in_flight)
    VALUES (p_worker, p_hostname, p_pid, p_version, p_concurrency, coalesce(cardinality(p_job_ids), 0))
    ON CONFLICT (id) DO UPDATE
        SET in_flight = EXCLUDED.in_flight, concurrency = EXCLUDED.concurrency, heartbeat_at = now();
    RETURN QUERY
    WITH held AS (
        SELECT j.id, j.priority, j.cancel_requested FROM switchyard.jobs j
        JOIN unnest(p_job_ids, p_attempts) AS h(id, attempt) ON j.id = h.id AND j.attempt = h.attempt
        WHERE j.id = ANY (p_job_ids) AND coalesce(j.lease_owner = p_worker, false)
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
    WHERE j.id = ANY (p_job_ids) AND coalesce(j.lease_owner = p_worker, false);
END $$;
