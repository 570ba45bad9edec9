-- No rescue in the first lease after the server starts.
--
-- A database restarted (or down) for longer than the workers' leases came back with every lease
-- expired; the first worker to reconnect took over housekeeping and rescued every job before the
-- others had heartbeated, throwing away the answers they held for the write-back (26 of 32 jobs
-- on their last attempt failed as lease_expired). rescue_expired now leaves a registered worker's
-- jobs alone until one of its leases after pg_postmaster_start_time(). Otherwise 0030's.

SET LOCAL ROLE switchyard_admin;

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
          -- Just after the server (re)started, a worker's leases may all have run out while it
          -- was down: the worker is alive, reconnecting, and its next heartbeat renews them.
          -- Rescued by the first housekeeper back, its finished answers were thrown away (26 of
          -- 32 jobs failed after a 35 s restart). Its jobs wait one of its leases after the start;
          -- a worker that did not come back loses them then.
          AND NOT EXISTS (
              SELECT FROM switchyard.workers w
              WHERE w.id = j.lease_owner
                AND pg_postmaster_start_time() + make_interval(secs => w.lease_seconds) > now())
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
