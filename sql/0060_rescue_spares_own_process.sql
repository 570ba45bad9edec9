-- A housekeeper no longer rescues the jobs of its own worker process.
--
-- sql/0050's rescue_expired took any job whose lease had lapsed unless its worker's heartbeat was
-- fresh and listed it. A worker frozen longer than its lease (SIGSTOP, a VM paused) holds the
-- housekeeper's tenure when it wakes if no one took it, and its first round could rescue its own
-- running jobs before its heartbeat renewed them: the answers were thrown away and an attempt
-- spent (on a last attempt the job would have failed). A hold in the worker ("overdue
-- heartbeat") missed two ways in a chaos check: a claim committed as the process froze and read
-- after it woke (not yet in the heartbeat's list), and a heartbeat sent before the freeze and
-- answered after it (counted as fresh). The rescue now takes the caller's id and instance and
-- leaves alone what that process claimed since it registered (as QueueStore.unheldLeases finds
-- them).
--
-- The one-argument form stays for workers of the release before this one while a fleet rolls
-- over; it passes no caller, and rescues as before. The new form is 0050's otherwise.

SET LOCAL ROLE switchyard_admin;

CREATE FUNCTION switchyard.rescue_expired(p_limit integer, p_self text, p_instance text)
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

CREATE OR REPLACE FUNCTION switchyard.rescue_expired(p_limit integer DEFAULT 1000)
    RETURNS TABLE (job_id bigint, outcome text)
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
    SELECT r.job_id, r.outcome FROM switchyard.rescue_expired(p_limit, NULL, NULL) r
$$;

REVOKE ALL ON FUNCTION switchyard.rescue_expired(integer, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION switchyard.rescue_expired(integer, text, text) TO switchyard_worker;
