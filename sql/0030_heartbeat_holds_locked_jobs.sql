-- A live worker keeps the jobs it reports, even when another session has their rows locked.
--
-- The heartbeat renews the leases it can lock and skips the rows it cannot (SKIP LOCKED: the
-- worker's own write-back holds them for a moment). A row held by another session for longer
-- than a lease — an operator's transaction left open in psql after an UPDATE of a job, a long
-- report taking row locks — was skipped at every heartbeat, its lease ran out, and once the lock
-- went the housekeeper rescued the job from a worker still running it: the attempt spent, the
-- work done twice, a job on its last attempt failed as `lease_expired`.
--
-- The heartbeat now also records which jobs (with their attempts) its worker holds, and for how
-- long a heartbeat renews a lease. A job whose lease ran out is not rescued while its worker's
-- latest heartbeat listed it and is younger than a lease: that heartbeat would have renewed it,
-- had the row been free, and its next one will. A worker that stops heartbeating (dead, frozen,
-- cut off) loses its jobs exactly when their leases say, as before; one restarted under the same
-- --id lists only what it claimed itself, so what its predecessor held is rescued as before.
-- Workers of earlier versions call the same heartbeat and get the same protection. The row now
-- follows a process that takes over an id (its host, pid, version and start, and an instance
-- token each process draws), which the upsert kept from the first registrant; a process whose
-- row another live one has taken stops.

SET LOCAL ROLE switchyard_admin;

ALTER TABLE switchyard.workers
    ADD COLUMN held_jobs bigint[] NOT NULL DEFAULT '{}',
    ADD COLUMN held_attempts integer[] NOT NULL DEFAULT '{}',
    ADD COLUMN lease_seconds double precision,
    ADD COLUMN instance text;
COMMENT ON COLUMN switchyard.workers.instance IS
    'A token each worker process draws at start: which process the row is (host and pid repeat across restarts).';
COMMENT ON COLUMN switchyard.workers.held_jobs IS
    'The jobs the worker reported running at its latest heartbeat (held_attempts: their attempts).';
COMMENT ON COLUMN switchyard.workers.lease_seconds IS
    'How long the worker''s heartbeat renews a lease: its latest heartbeat keeps the jobs it listed that long.';

-- The worker passes its instance token, and whether it may take the row over: at start (after
-- its twin check) it may; afterwards a row another live process has taken (a worker started
-- under this id while this one was frozen) is refused with SQLSTATE SWI01, and the worker stops.
-- Workers of earlier versions call it with eight arguments, and take the row over as before.
DROP FUNCTION switchyard.heartbeat(text, bigint[], integer[], double precision, integer, text, integer, text);
CREATE FUNCTION switchyard.heartbeat(
    p_worker text, p_job_ids bigint[], p_attempts integer[], p_lease_seconds double precision,
    p_concurrency integer, p_hostname text, p_pid integer, p_version text,
    p_instance text DEFAULT NULL, p_take_over boolean DEFAULT true
) RETURNS TABLE (job_id bigint, cancel_requested boolean)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    other switchyard.workers;
BEGIN
    IF NOT p_take_over THEN
        SELECT * INTO other FROM switchyard.workers w WHERE w.id = p_worker;
        IF FOUND AND other.instance IS DISTINCT FROM p_instance AND other.instance IS NOT NULL
           AND other.heartbeat_at + make_interval(secs => coalesce(other.lease_seconds, p_lease_seconds)) > now() THEN
            RAISE EXCEPTION USING ERRCODE = 'SWI01',
                MESSAGE = format('worker id %s was taken over by another process (host %s, pid %s)', p_worker,
                                 coalesce(other.hostname, '?'), coalesce(other.pid::text, '?')),
                HINT = 'Two processes must never share an id: this one stops.';
        END IF;
    END IF;
    INSERT INTO switchyard.workers AS w
        (id, hostname, pid, version, concurrency, in_flight, held_jobs, held_attempts, lease_seconds, instance)
    VALUES (p_worker, p_hostname, p_pid, p_version, p_concurrency, coalesce(cardinality(p_job_ids), 0),
            coalesce(p_job_ids, '{}'), coalesce(p_attempts, '{}'), p_lease_seconds, p_instance)
    ON CONFLICT (id) DO UPDATE
        SET in_flight = EXCLUDED.in_flight, concurrency = EXCLUDED.concurrency, heartbeat_at = now(),
            held_jobs = EXCLUDED.held_jobs, held_attempts = EXCLUDED.held_attempts,
            lease_seconds = EXCLUDED.lease_seconds,
            -- A process that took over the id (restarted, or moved to another host): the row is
            -- its own from now on (a stopping worker deletes only its own row).
            hostname = EXCLUDED.hostname, pid = EXCLUDED.pid, version = EXCLUDED.version,
            started_at = CASE WHEN (w.hostname, w.pid, w.instance)
                                   IS DISTINCT FROM (EXCLUDED.hostname, EXCLUDED.pid, EXCLUDED.instance)
                              THEN now() ELSE w.started_at END,
            instance = EXCLUDED.instance;
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
    -- Every job still ours: renewed, or locked by someone else (the worker's own write-back, or
    -- another session; the statement's snapshot still shows it, and the record above keeps it
    -- from being rescued). A data-modifying WITH runs whether or not it is read.
    SELECT j.id, j.cancel_requested FROM switchyard.jobs j
    JOIN unnest(p_job_ids, p_attempts) AS h(id, attempt) ON j.id = h.id AND j.attempt = h.attempt
    WHERE j.id = ANY (p_job_ids) AND coalesce(j.lease_owner = p_worker, false);
END $$;

REVOKE ALL ON FUNCTION switchyard.heartbeat(text, bigint[], integer[], double precision, integer, text, integer, text,
                                            text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION switchyard.heartbeat(text, bigint[], integer[], double precision, integer, text, integer,
                                               text, text, boolean) TO switchyard_worker;

-- 0002's, but a job its worker's latest heartbeat still vouches for is not rescued.
CREATE OR REPLACE FUNCTION switchyard.rescue_expired(p_limit integer DEFAULT 1000)
    RETURNS TABLE (job_id bigint, outcome text)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    job switchyard.jobs;
    entry jsonb;
BEGIN
    FOR job IN
        SELECT * FROM switchyard.jobs j
        WHERE j.lease_owner IS NOT NULL AND j.lease_expires_at < now()
          AND NOT EXISTS (
              SELECT FROM switchyard.workers w
              WHERE w.id = j.lease_owner AND w.heartbeat_at + make_interval(secs => w.lease_seconds) > now()
                AND EXISTS (SELECT FROM unnest(w.held_jobs, w.held_attempts) AS h(id, attempt)
                            WHERE h.id = j.id AND h.attempt = j.attempt))
        ORDER BY j.lease_expires_at
        LIMIT p_limit
        FOR UPDATE OF j SKIP LOCKED
    LOOP
        entry := jsonb_build_object(
            'attempt', job.attempt, 'outcome', 'lease_expired', 'worker', job.lease_owner,
            'error', format('worker %s stopped renewing its lease', job.lease_owner),
            'at', now());
        IF job.cancel_requested THEN
            PERFORM switchyard.archive(job, 'cancelled',
                jsonb_build_object('code', 'cancelled', 'message', 'cancelled while running'), jsonb_build_array(entry));
            job_id := job.id; outcome := 'cancelled';
        ELSIF job.attempt >= job.max_attempts THEN
            PERFORM switchyard.archive(job, 'failed',
                jsonb_build_object('code', 'lease_expired',
                    'message', format('worker %s stopped renewing its lease during the last attempt (%s of %s)',
                                      job.lease_owner, job.attempt, job.max_attempts)),
                jsonb_build_array(entry));
            job_id := job.id; outcome := 'failed';
        ELSE
            UPDATE switchyard.jobs j
            SET lease_owner = NULL, lease_expires_at = NULL, claimed_at = NULL, run_at = now(),
                attempts = j.attempts || entry
            WHERE j.id = job.id AND j.priority = job.priority;
            job_id := job.id; outcome := 'requeued';
        END IF;
        RETURN NEXT;
    END LOOP;
    IF FOUND THEN
        PERFORM pg_notify('switchyard_jobs', '');
    END IF;
END $$;
