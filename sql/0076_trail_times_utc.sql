-- A lost lease's trail entry gives its time as the other entries do.
--
-- A worker writes a call's "at" as 2026-11-28T16:15:26.992645Z; the rescue's entry was jsonb's
-- rendering of a timestamptz, 2026-11-28T16:15:26.992645+00:00 (in the housekeeper session's time
-- zone, whatever that was): an integrator's parser met two formats in one trail (Python's
-- fromisoformat before 3.11 takes only the second). Both are now the worker's.
--
-- rescue_expired is 0060's otherwise.

SET LOCAL ROLE switchyard_admin;

CREATE OR REPLACE FUNCTION switchyard.rescue_expired(p_limit integer, p_self text, p_instance text)
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
          -- The calling housekeeper's own process's jobs (claimed under its id since this instance
          -- registered): it is alive, running this, and its next heartbeat renews them. Frozen
          -- longer than a lease, a worker woke and rescued its own running jobs before renewing:
          -- a claim answered after the wake-up, or a heartbeat sent before the freeze and
          -- answered after it, left them lapsed (a chaos check, 9 times). Another process under
          -- the same id (a predecessor) registered earlier: its jobs are rescued as before.
          AND NOT coalesce(
              j.lease_owner = p_self
              AND j.claimed_at >= (SELECT w.started_at FROM switchyard.workers w
                                   WHERE w.id = p_self AND w.instance IS NOT DISTINCT FROM p_instance),
              false)
        ORDER BY j.lease_expires_at
        LIMIT p_limit
        FOR UPDATE OF j SKIP LOCKED
    LOOP
        entry := jsonb_build_object(
            'attempt', job.attempt, 'outcome', 'lease_expired', 'worker', job.lease_owner,
            'error', format('worker %s stopped renewing its lease', job.lease_owner),
            -- As a worker writes a trail's times (PostgresTimestamp): UTC, microseconds, Z.
            'at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'));
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
                attempts = j.attempts || entry,
                waiting_reason = format('attempt %s of %s: worker %s stopped renewing its lease',
                                        job.attempt, job.max_attempts, job.lease_owner)
            WHERE j.id = job.id AND j.priority = job.priority;
            job_id := job.id; outcome := 'requeued';
        END IF;
        RETURN NEXT;
    END LOOP;
    IF FOUND THEN
        PERFORM pg_notify('switchyard_jobs', '');
    END IF;
END $$;
