-- Why a job is back in the queue, where its user can read it.
--
-- A job put back by a worker (a background job waiting for a price within its ceiling, a job
-- waiting for a model of its rule to come back, a retry after a failed attempt) read only
-- "scheduled" to its user: the reason was in the worker's log alone. jobs.waiting_reason keeps
-- it: for a postponement or a wait, the worker's reason (sent in the item's error message; a
-- worker from before this change sends none); for a retry, the failure it follows. A release
-- (shutdown), or a postponement not kept (the policy changed meanwhile), leaves none; a policy
-- change that releases postponed jobs clears it; a rescue says whose lease lapsed (the reason of
-- an earlier putting back would read as this one's). dispatcher result and wait show it while
-- the job is queued or scheduled. complete() is 0040's, release_postponed() 0020's,
-- rescue_expired() 0037's, otherwise.

SET LOCAL ROLE switchyard_admin;

ALTER TABLE switchyard.jobs ADD COLUMN waiting_reason text;
COMMENT ON COLUMN switchyard.jobs.waiting_reason IS
    'Why a worker put the job back in the queue (a postponement, a wait for a model, the failure a retry follows); NULL for none.';

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

    -- A batch that postpones takes this lock shared, before it locks any row, to be ordered
    -- against a policy change's release (release_postponed takes it exclusively): a change that
    -- commits first is read here (the version is read after the lock, in a statement of its
    -- own); one that commits later finds these postponements and releases them. (Taken later,
    -- while the batch held the rows of its results, it could deadlock with a release waiting for
    -- one of those rows.)
    IF p_kinds && ARRAY['postpone', 'wait'] THEN
        PERFORM pg_advisory_xact_lock_shared(6005366778061868105);  -- 'SWYDPOLI'
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
               (f.metadata - ARRAY['rule', 'escalation', 'price_per_1k']) || coalesce(i.metadata, '{}')  -- the keys sql.md lists
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
                          WHEN i.kind IN ('postpone', 'wait') THEN now()
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
          AND j.attempt = i.attempt AND coalesce(j.lease_owner = p_worker, false) AND NOT j.cancel_requested
        RETURNING j.id, i.kind;
        GET DIAGNOSTICS requeued = ROW_COUNT;
        IF requeued > 0 THEN
            PERFORM pg_notify('switchyard_jobs', '');
        END IF;
        -- Asked to cancel while this attempt ran: the job ends here, not back in the queue.
        FOR cancelled IN
            SELECT j AS job, i.trail FROM switchyard.jobs j
            JOIN unnest(p_ids, p_attempts, p_kinds, p_trails) AS i(id, attempt, kind, trail)
                ON j.id = i.id AND j.attempt = i.attempt
            WHERE j.id = ANY (p_ids) AND i.kind IN ('retry', 'release', 'postpone', 'wait') AND j.cancel_requested
                  AND coalesce(j.lease_owner = p_worker, false)
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


CREATE OR REPLACE FUNCTION switchyard.release_postponed() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    released integer;
    old_value constant text := CASE WHEN TG_OP = 'UPDATE' THEN OLD.value END;
BEGIN
    IF NEW.value IS NOT DISTINCT FROM old_value OR NEW.name = 'background_paused' THEN
        RETURN NULL;
    END IF;
    BEGIN
        IF NEW.name = 'background_drain_until'
           AND (NEW.value = '' OR NEW.value::timestamptz <= greatest(now(), nullif(old_value, '')::timestamptz)) THEN
            RETURN NULL;
        END IF;
        IF NEW.name = 'background_max_cost_per_1k' AND NEW.value <> ''
           AND coalesce(nullif(old_value, '')::numeric >= NEW.value::numeric, true) THEN
            RETURN NULL;
        END IF;
    EXCEPTION WHEN data_exception THEN
        NULL;  -- a value that is no time or number (written with the checks off): release, to be safe
    END;
    -- After any complete() postponing jobs under the old policy has committed (it holds this lock
    -- shared); the UPDATE below, a statement of its own, then sees those jobs.
    PERFORM pg_advisory_xact_lock(6005366778061868105);  -- 'SWYDPOLI'
    UPDATE switchyard.jobs_background j SET run_at = now(), postponed_at = NULL, waiting_reason = NULL
    WHERE j.postponed_at IS NOT NULL AND j.lease_owner IS NULL AND j.run_at > now();
    GET DIAGNOSTICS released = ROW_COUNT;
    IF released > 0 THEN
        PERFORM pg_notify('switchyard_jobs', '');
    END IF;
    RETURN NULL;
END $$;

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
