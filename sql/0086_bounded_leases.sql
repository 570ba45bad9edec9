-- Leases and the housekeeper's tenure last at most an hour.
--
-- The worker role's claim, heartbeat and keep_house took any length: a security review's rogue
-- session leased two jobs until 2058 (their tenant's cancel stayed "cancelling", the rescue takes
-- only expired leases, and rotating the worker password freed nothing) and made itself
-- housekeeper until 2058 (no lease was rescued until an admin ended its tenure by hand). A lease
-- is renewed by heartbeats and a tenure every round, so neither need be long: both are held to an
-- hour (claim's in sql/0082), and `worker --lease` refuses more. What a compromised worker can do
-- now ends an hour after it stops.
--
-- heartbeat is 0036's and keep_house 0024's otherwise.

SET LOCAL ROLE switchyard_admin;

CREATE OR REPLACE FUNCTION switchyard.heartbeat(
    p_worker text, p_job_ids bigint[], p_attempts integer[], p_lease_seconds double precision,
    p_concurrency integer, p_hostname text, p_pid integer, p_version text,
    p_instance text DEFAULT NULL, p_take_over boolean DEFAULT true
) RETURNS TABLE (job_id bigint, cancel_requested boolean)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    other switchyard.workers;
    row_held_elsewhere boolean := false;
BEGIN
    p_lease_seconds := least(p_lease_seconds, 3600);
    IF NOT p_take_over THEN
        -- Locked, so the check and the write below are one step: read unlocked, a take-over
        -- committing between them was overwritten, and the process it stopped went on. A row
        -- another session holds (an operator's open transaction, a take-over in flight) is left
        -- alone this time: the jobs' leases are renewed all the same (waiting for the row, the
        -- worker lost every job it ran once the hold outlasted its lease).
        SELECT * INTO other FROM switchyard.workers w WHERE w.id = p_worker FOR UPDATE SKIP LOCKED;
        row_held_elsewhere := NOT FOUND AND EXISTS (SELECT FROM switchyard.workers w WHERE w.id = p_worker);
        IF FOUND AND other.instance IS DISTINCT FROM p_instance AND other.instance IS NOT NULL
           AND other.heartbeat_at + make_interval(secs => coalesce(other.lease_seconds, p_lease_seconds)) > now() THEN
            RAISE EXCEPTION USING ERRCODE = 'SWI01',
                MESSAGE = format('worker id %s was taken over by another process (host %s, pid %s)', p_worker,
                                 coalesce(other.hostname, '?'), coalesce(other.pid::text, '?')),
                HINT = 'Two processes must never share an id: this one stops.';
        END IF;
    END IF;
    IF NOT row_held_elsewhere THEN
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
    END IF;
    RETURN QUERY
    WITH held AS (
        SELECT j.id, j.priority, j.cancel_requested FROM switchyard.jobs j
        JOIN unnest(p_job_ids, p_attempts) AS h(id, attempt) ON j.id = h.id AND j.attempt = h.attempt
        WHERE j.id = ANY (p_job_ids) AND coalesce(j.lease_owner = p_worker, false)
        ORDER BY j.id
        FOR NO KEY UPDATE OF j SKIP LOCKED
    ), renewed AS (
        -- From when the renewal is made, not when the heartbeat began: one that waited behind a
        -- lock on the jobs (an index build) longer than the lease renewed them into the past.
        UPDATE switchyard.jobs j SET lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_seconds)
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

CREATE OR REPLACE FUNCTION switchyard.keep_house(p_worker text, p_tenure_seconds double precision) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    held boolean;
BEGIN
    p_tenure_seconds := least(p_tenure_seconds, 3600);
    -- Another's tenure in force: answered by a read, so the workers that do not keep house (all
    -- but one, every round) neither lock the row nor use a transaction id.
    IF EXISTS (SELECT FROM switchyard.housekeeper h WHERE h.holder <> p_worker AND h.expires_at > now()) THEN
        RETURN false;
    END IF;
    INSERT INTO switchyard.housekeeper AS h (holder, elected_at, expires_at)
    VALUES (p_worker, now(), now() + make_interval(secs => p_tenure_seconds))
    ON CONFLICT (singleton) DO UPDATE
        SET holder = EXCLUDED.holder,
            elected_at = CASE WHEN h.holder = EXCLUDED.holder THEN h.elected_at ELSE now() END,
            expires_at = EXCLUDED.expires_at
        WHERE h.holder = EXCLUDED.holder OR h.expires_at <= now()
    RETURNING true INTO held;
    RETURN coalesce(held, false);
END $$;
