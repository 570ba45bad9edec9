-- The result metadata keys workers have added since 0034 are Switchyard's too.
--
-- complete() strips from a job's own metadata the keys a worker writes into its result (rule,
-- escalation, price_per_1k), so no submitter can make a job look escalated. Workers have since
-- added requested_model (why a named model did not answer), passed_over (rule models kept out by
-- their breakers) and unserved_task_class (a job's class no rule serves): a review submitted a job
-- whose metadata carried a forged passed_over, and it came back as if the worker had written it.
-- They are stripped likewise. And a postponement decided under a policy other than the one in force
-- goes back a second ahead, not at once: the worker that decided it has not read the new policy
-- (with the catalog in the version since 0063, a --poll-only worker reads it up to 10 s after an
-- import), and would claim it and put it off again in a loop. complete() is 0050's otherwise.

SET LOCAL ROLE switchyard_admin;

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
