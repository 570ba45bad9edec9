-- Cancelling a running job no longer writes its row.
--
-- cancel() flagged a running job by updating its row (cancel_requested), and the row stayed
-- locked until the caller's transaction ended: a review's application ran `BEGIN; SELECT
-- switchyard.cancel(<its running job>)` and held the transaction open, and the worker's
-- write-back batch that held that job waited for it, and with it every other job of the batch,
-- other tenants' among them; the worker's slots stayed full and it claimed nothing for 25 s.
-- A request to cancel a running job is now a row of switchyard.cancel_requests, which no worker
-- waits for: heartbeat, complete, rescue_expired and job_status read it as they read the flag
-- (still honoured, for requests made before). A queued job is cancelled at once as before: its
-- row locked and archived, which claims skip. A request that commits while a write-back or a
-- rescue puts the job back is honoured by that write-back's last statement, or else by the
-- housekeeper's next round, which ends such a job before a worker runs it again. The
-- housekeeper's expiry removes requests whose job has ended, an hour on. Submitters read only
-- the requests of jobs they may see (row security), for job_status.
--
-- cancel is 0007's, job_status 0002's, heartbeat 0086's, complete 0083's, rescue_expired 0076's
-- and expire_overdue 0081's otherwise.

SET LOCAL ROLE switchyard_admin;

CREATE TABLE switchyard.cancel_requests (
    job_id       bigint      PRIMARY KEY,
    requested_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE switchyard.cancel_requests IS
    'Running jobs asked to stop (switchyard.cancel): their workers hear of it at the next heartbeat.';
-- job_status runs as its caller: whether a job it may see is being cancelled. Only of jobs it
-- may see (a review read every tenant's requests before this policy).
GRANT SELECT ON switchyard.cancel_requests TO switchyard_submitter;
ALTER TABLE switchyard.cancel_requests ENABLE ROW LEVEL SECURITY;
CREATE POLICY cancel_requests_tenant_read ON switchyard.cancel_requests FOR SELECT TO switchyard_submitter
    USING (EXISTS (SELECT FROM switchyard.jobs j WHERE j.id = cancel_requests.job_id));
CREATE POLICY cancel_requests_admin ON switchyard.cancel_requests TO switchyard_admin USING (true) WITH CHECK (true);

CREATE OR REPLACE FUNCTION switchyard.cancel(job_id bigint) RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    everyone constant boolean := switchyard.is_unrestricted(switchyard.session_role());
    tenants constant text[] := CASE WHEN everyone THEN '{}' ELSE switchyard.visible_tenants() END;
    job switchyard.jobs;
    live boolean;
    finished text;
BEGIN
    SELECT * INTO job FROM switchyard.jobs j WHERE j.id = cancel.job_id AND (everyone OR j.tenant = ANY (tenants));
    live := FOUND;
    IF live AND job.lease_owner IS NULL THEN
        -- Queued: ended here (its row locked; a claim skips it meanwhile), unless a worker
        -- claimed it since the read above.
        SELECT * INTO job FROM switchyard.jobs j WHERE j.id = cancel.job_id AND j.lease_owner IS NULL FOR UPDATE;
        IF FOUND THEN
            PERFORM switchyard.archive(job, 'cancelled',
                jsonb_build_object('code', 'cancelled', 'message', 'cancelled before it started'), '[]');
            RETURN 'cancelled';
        END IF;
        live := EXISTS (SELECT FROM switchyard.jobs j WHERE j.id = cancel.job_id);
    END IF;
    IF live THEN
        -- Running: its worker is asked (at its next heartbeat), through a row of its own.
        INSERT INTO switchyard.cancel_requests (job_id) VALUES (cancel.job_id) ON CONFLICT DO NOTHING;
        RETURN 'cancelling';
    END IF;
    SELECT r.status INTO finished FROM switchyard.results r
    WHERE r.job_id = cancel.job_id AND (everyone OR r.tenant = ANY (tenants));
    RETURN coalesce(finished, 'not_found');
END $$;

CREATE OR REPLACE FUNCTION switchyard.job_status(job_id bigint) RETURNS text
    LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        (SELECT CASE
                    WHEN j.lease_owner IS NOT NULL AND j.cancel_requested OR EXISTS (SELECT FROM switchyard.cancel_requests c WHERE c.job_id = j.id) THEN 'cancelling'
                    WHEN j.lease_owner IS NOT NULL THEN 'running'
                    WHEN j.run_at > now() THEN 'scheduled'
                    ELSE 'queued'
                END
         FROM switchyard.jobs j WHERE j.id = job_status.job_id),
        (SELECT r.status FROM switchyard.results r WHERE r.job_id = job_status.job_id))
$$;

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
        SELECT j.id, j.priority FROM switchyard.jobs j
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
    SELECT j.id, j.cancel_requested OR EXISTS (SELECT FROM switchyard.cancel_requests c WHERE c.job_id = j.id) FROM switchyard.jobs j
    JOIN unnest(p_job_ids, p_attempts) AS h(id, attempt) ON j.id = h.id AND j.attempt = h.attempt
    WHERE j.id = ANY (p_job_ids) AND coalesce(j.lease_owner = p_worker, false);
END $$;

CREATE OR REPLACE FUNCTION switchyard.complete(
    p_worker text, p_ids bigint[], p_attempts integer[], p_kinds text[], p_statuses text[], p_task_classes text[],
    p_models text[], p_providers text[], p_tiers text[], p_responses jsonb[], p_errors jsonb[], p_trails jsonb[],
    p_tokens_in integer[], p_tokens_out integer[], p_costs numeric[], p_base_costs numeric[],
    p_primary_costs numeric[], p_latency_ms double precision[], p_metadata jsonb[], p_retry_at timestamptz[],
    p_policies text[]
) RETURNS TABLE (job_id bigint, kind text)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp SET enable_nestloop = off
    AS $$
DECLARE
    jobs constant integer := coalesce(cardinality(p_ids), 0);
    requeued integer;
    cancelled record;
    current_policy text;
BEGIN
    -- unnest pads a short array with NULLs: one too short would write NULLs into the tail of its
    -- column, silently. Every array has one element per job (NULL elements for what is unset).
    IF EXISTS (SELECT FROM unnest(ARRAY[
            cardinality(p_attempts), cardinality(p_kinds), cardinality(p_statuses), cardinality(p_task_classes),
            cardinality(p_models), cardinality(p_providers), cardinality(p_tiers), cardinality(p_responses),
            cardinality(p_errors), cardinality(p_trails), cardinality(p_tokens_in), cardinality(p_tokens_out),
            cardinality(p_costs), cardinality(p_base_costs), cardinality(p_primary_costs), cardinality(p_latency_ms),
            cardinality(p_metadata), cardinality(p_retry_at), cardinality(p_policies)]) AS n WHERE coalesce(n, 0) <> jobs) THEN
        PERFORM switchyard.reject('complete: every array must have one element per job',
                                  'Pass p_ids, p_attempts, p_kinds, … of the same length (NULL elements for unset values).');
    END IF;
    IF NOT p_kinds <@ ARRAY['result', 'retry', 'release', 'postpone', 'wait'] THEN
        PERFORM switchyard.reject(
            format('complete: unknown kind %s', (SELECT string_agg(quote_nullable(k), ', ') FROM unnest(p_kinds) AS k
                                                  WHERE k IS NULL OR k NOT IN ('result', 'retry', 'release', 'postpone', 'wait'))),
            'Each item''s kind is one of result, retry, release, postpone (for a price window), wait (for a model).');
    END IF;

    -- A batch that postpones takes this lock shared, before it locks any other row, to be ordered
    -- against a policy change's release (release_postponed takes it exclusively): a change that
    -- commits first is read here (the version is read after the lock, in a statement of its
    -- own); one that commits later finds these postponements and releases them. (Taken later,
    -- while the batch held the rows of its results, it could deadlock with a release waiting for
    -- one of those rows.)
    IF p_kinds && ARRAY['postpone', 'wait'] THEN
        PERFORM FROM switchyard.locks l WHERE l.name = 'policies' FOR SHARE;
        current_policy := switchyard.background_policy_version();
    END IF;

    IF 'result' = ANY (p_kinds) THEN
        RETURN QUERY
        WITH input AS (
            SELECT * FROM unnest(p_ids, p_attempts, p_kinds, p_statuses, p_task_classes, p_models, p_providers,
                                 p_tiers, p_responses, p_errors, p_trails, p_tokens_in, p_tokens_out, p_costs,
                                 p_base_costs, p_primary_costs, p_latency_ms, p_metadata)
                AS x(id, attempt, kind, status, task_class, model, provider, tier, response, error, trail, tokens_in,
                     tokens_out, cost, base_cost, primary_cost, latency_ms, metadata)
            WHERE x.kind = 'result'
        ), finished AS (
            -- The fence: only the holder of the lease, for this attempt, ends the job.
            DELETE FROM switchyard.jobs j USING input i
            WHERE j.id = ANY (p_ids) AND j.id = i.id AND j.attempt = i.attempt
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
               extract(epoch FROM f.claimed_at - coalesce(f.waiting_since, greatest(f.created_at, f.run_at))) * 1000,
               i.latency_ms,
               f.created_at, f.claimed_at, p_worker, f.retry_of,
               (f.metadata - ARRAY['rule', 'escalation', 'price_per_1k', 'requested_model', 'passed_over', 'unserved_task_class'])
                   || coalesce(i.metadata, '{}')  -- the keys sql.md lists
        FROM finished f JOIN input i ON i.id = f.id
        RETURNING r.job_id, 'result'::text;
    END IF;

    IF p_kinds && ARRAY['retry', 'release', 'postpone', 'wait'] THEN
        -- Back to the queue, unless asked to cancel while this attempt ran. A cancel that commits
        -- while this waits for the row is seen here (the row is re-read), and one that comes
        -- after finds the job unleased and ends it itself.
        -- A postponement decided under a background policy other than the one in force (it
        -- changed while the job ran: a drain, a new ceiling) is not kept: the job goes back now,
        -- to be decided again under the new one (current_policy, read above). One that names no
        -- policy is kept.
        RETURN QUERY
        UPDATE switchyard.jobs j
        SET lease_owner = NULL, lease_expires_at = NULL, claimed_at = NULL,
            run_at = CASE WHEN i.kind = 'retry' THEN coalesce(i.retry_at, now())
                          WHEN i.kind IN ('postpone', 'wait') AND coalesce(i.policy = current_policy, true)
                              THEN coalesce(i.retry_at, now())
                          -- A second ahead: a worker that has not read the new policy yet (a
                          -- --poll-only one reloads every 10 s) decides it again under the old one,
                          -- and at now() claimed and sent it back in a loop (a review: 2,788
                          -- putting-backs in 2 s for 200 jobs).
                          WHEN i.kind IN ('postpone', 'wait') THEN now() + interval '1 second'
                          ELSE j.run_at END,
            postponed_at = CASE WHEN i.kind IN ('postpone', 'wait') AND coalesce(i.policy = current_policy, true)
                                THEN now() END,
            -- A job put back to wait for a model keeps waiting: an interactive one from when it
            -- became due (its user was waiting), a background one from its first putting back,
            -- and again from now when it sat due for over ten minutes before this claim (held at
            -- the closed gate between windows: not waiting for a model then; the worker's
            -- RoutingExecutor.waitStart reads it alike). A background job sent to its
            -- price window is not waiting for a model; a retry's backoff starts its wait again
            -- (its run_at). (`postpone` of an interactive job: a wait for a model from a worker
            -- before 0040.)
            waiting_since = CASE WHEN i.kind IN ('wait', 'postpone') AND j.priority = 'interactive'
                                     THEN coalesce(j.waiting_since, greatest(j.created_at, j.run_at))
                                 WHEN i.kind = 'wait' AND j.waiting_since IS NOT NULL
                                      AND j.claimed_at - j.run_at <= interval '10 minutes' THEN j.waiting_since
                                 WHEN i.kind = 'wait' THEN now()
                                 WHEN i.kind IN ('retry', 'postpone') THEN NULL
                                 ELSE j.waiting_since END,
            attempt = CASE WHEN i.kind IN ('release', 'postpone', 'wait') THEN greatest(j.attempt - 1, 0) ELSE j.attempt END,
            attempts = j.attempts || coalesce(i.trail, '[]'),
            -- Why it is back in the queue, for its user (dispatcher result, wait): the worker's
            -- reason for a postponement kept, the failure a retry follows; nothing for a release
            -- or a postponement not kept (it runs now).
            waiting_reason = CASE
                WHEN i.kind = 'retry' AND i.error ->> 'message' IS NOT NULL
                    THEN left(format('attempt %s of %s failed: %s', j.attempt, j.max_attempts, i.error ->> 'message'), 2000)
                WHEN i.kind IN ('postpone', 'wait') AND coalesce(i.policy = current_policy, true)
                    THEN left(i.error ->> 'message', 2000)
            END
        FROM unnest(p_ids, p_attempts, p_kinds, p_retry_at, p_trails, p_policies, p_errors)
            AS i(id, attempt, kind, retry_at, trail, policy, error)
        WHERE j.id = ANY (p_ids) AND i.kind IN ('retry', 'release', 'postpone', 'wait') AND j.id = i.id
          AND j.attempt = i.attempt AND coalesce(j.lease_owner = p_worker, false)
          AND NOT (j.cancel_requested OR EXISTS (SELECT FROM switchyard.cancel_requests c WHERE c.job_id = j.id))
        RETURNING j.id, i.kind;
        GET DIAGNOSTICS requeued = ROW_COUNT;
        IF requeued > 0 THEN
            PERFORM pg_notify('switchyard_jobs', '');
        END IF;
        -- Asked to cancel while this attempt ran: the job ends here, not back in the queue. Also
        -- one the statement above put back (unleased now) because the request committed after
        -- that statement began, which it could not see (a review's cancel was lost so, and the
        -- job ran again and succeeded).
        FOR cancelled IN
            SELECT j AS job, CASE WHEN j.lease_owner IS NULL THEN '[]' ELSE i.trail END AS trail
            FROM switchyard.jobs j
            JOIN unnest(p_ids, p_attempts, p_kinds, p_trails) AS i(id, attempt, kind, trail) ON j.id = i.id
            WHERE j.id = ANY (p_ids) AND i.kind IN ('retry', 'release', 'postpone', 'wait')
                  AND (j.cancel_requested OR EXISTS (SELECT FROM switchyard.cancel_requests c WHERE c.job_id = j.id))
                  AND ((j.attempt = i.attempt AND coalesce(j.lease_owner = p_worker, false)) OR j.lease_owner IS NULL)
            FOR UPDATE OF j
        LOOP
            PERFORM switchyard.archive(cancelled.job, 'cancelled',
                jsonb_build_object('code', 'cancelled', 'message', 'cancelled while running'), cancelled.trail);
            job_id := (cancelled.job).id;
            kind := 'cancelled';
            RETURN NEXT;
        END LOOP;
    END IF;
END $$;

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
        IF job.cancel_requested OR EXISTS (SELECT FROM switchyard.cancel_requests c WHERE c.job_id = job.id) THEN
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

CREATE OR REPLACE FUNCTION switchyard.expire_overdue(p_limit integer DEFAULT 1000) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    job switchyard.jobs;
    expired integer := 0;
BEGIN
    FOR job IN
        SELECT * FROM switchyard.jobs j
        WHERE j.lease_owner IS NULL AND j.deadline IS NOT NULL AND j.deadline <= now()
        ORDER BY j.deadline
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    LOOP
        PERFORM switchyard.archive(job, 'expired',
            jsonb_build_object('code', 'deadline_passed',
                'message', CASE WHEN job.attempt = 0 THEN format('not started before its deadline, %s', switchyard.utc_text(job.deadline))
                                ELSE format('its deadline, %s, passed before attempt %s could start', switchyard.utc_text(job.deadline),
                                            job.attempt + 1) END), '[]');
        expired := expired + 1;
    END LOOP;
    -- A job asked to cancel that went back to the queue all the same (its request committed
    -- while a write-back or a rescue put it back): ended here, at the housekeeper's next round,
    -- before a worker runs it again. (Locked by a claim meanwhile: its worker's heartbeat ends it.)
    FOR job IN
        SELECT j.* FROM switchyard.jobs j JOIN switchyard.cancel_requests c ON c.job_id = j.id
        WHERE j.lease_owner IS NULL
        FOR UPDATE OF j SKIP LOCKED
    LOOP
        PERFORM switchyard.archive(job, 'cancelled',
            jsonb_build_object('code', 'cancelled', 'message', 'cancelled while running'), '[]');
    END LOOP;
    -- Requests whose job has ended (a lease lasts at most an hour: 0086).
    DELETE FROM switchyard.cancel_requests c
    WHERE c.requested_at < now() - interval '1 hour' AND NOT EXISTS (SELECT FROM switchyard.jobs j WHERE j.id = c.job_id);
    RETURN expired;
END $$;
