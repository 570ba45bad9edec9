-- Interactive jobs put back to wait for a model keep their wait.
--
-- When every model of a job's rule is down (breakers open), the worker puts an interactive job
-- back to look again later, moving its run_at. Its queue wait (from when it could run, by
-- run_at) started again each time, so a stall behind an open breaker was invisible: the alert's
-- "longest waiting now" reads queued jobs due now (these were scheduled for later), and the job,
-- when it finally ran after 80 s, recorded under a second. jobs.waiting_since keeps when an
-- interactive job began to wait, through its postponements (a retry's backoff still starts its
-- wait again, as before; background jobs waiting for a cheap price are not waiting this way).
-- The write-back measures queue_wait_ms from it; the queue-wait alert counts such jobs as
-- waiting. complete() is 0020's, alert_measurements 0027's, otherwise.

SET LOCAL ROLE switchyard_admin;

ALTER TABLE switchyard.jobs ADD COLUMN waiting_since timestamptz;
COMMENT ON COLUMN switchyard.jobs.waiting_since IS
    'When an interactive job put back to wait for a model began to wait (its queue wait counts from it); else NULL.';
-- No index for it: one more index on the hot tables cost the drain a few percent (alternated
-- runs), and the alert looks for these jobs once a round, in the interactive partition only.

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

    -- A batch that postpones takes this lock shared, before it locks any row, to be ordered
    -- against a policy change's release (release_postponed takes it exclusively): a change that
    -- commits first is read here (the version is read after the lock, in a statement of its
    -- own); one that commits later finds these postponements and releases them. (Taken later,
    -- while the batch held the rows of its results, it could deadlock with a release waiting for
    -- one of those rows.)
    IF 'postpone' = ANY (p_kinds) THEN
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
               f.created_at, f.claimed_at, p_worker, f.retry_of, f.metadata || coalesce(i.metadata, '{}')
        FROM finished f JOIN input i ON i.id = f.id
        RETURNING r.job_id, 'result'::text;
    END IF;

    IF p_kinds && ARRAY['retry', 'release', 'postpone'] THEN
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
                          WHEN i.kind = 'postpone' AND coalesce(i.policy = current_policy, true) THEN coalesce(i.retry_at, now())
                          WHEN i.kind = 'postpone' THEN now()
                          ELSE j.run_at END,
            postponed_at = CASE WHEN i.kind = 'postpone' AND coalesce(i.policy = current_policy, true) THEN now() END,
            -- An interactive job put back to wait for a model keeps waiting, as its user does; a
            -- retry's backoff starts its wait again (its run_at), as before.
            waiting_since = CASE WHEN i.kind = 'postpone' AND j.priority = 'interactive'
                                     THEN coalesce(j.waiting_since, greatest(j.created_at, j.run_at))
                                 WHEN i.kind = 'retry' THEN NULL
                                 ELSE j.waiting_since END,
            attempt = CASE WHEN i.kind IN ('release', 'postpone') THEN greatest(j.attempt - 1, 0) ELSE j.attempt END,
            attempts = j.attempts || coalesce(i.trail, '[]')
        FROM unnest(p_ids, p_attempts, p_kinds, p_retry_at, p_trails, p_policies)
            AS i(id, attempt, kind, retry_at, trail, policy)
        WHERE j.id = ANY (p_ids) AND i.kind IN ('retry', 'release', 'postpone') AND j.id = i.id
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
            WHERE j.id = ANY (p_ids) AND i.kind IN ('retry', 'release', 'postpone') AND j.cancel_requested
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


CREATE OR REPLACE FUNCTION switchyard.alert_measurements(p_at timestamptz DEFAULT now())
    RETURNS TABLE (
        kind text, subject text, value double precision, threshold double precision, breached boolean,
        recovered boolean, message text)
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    min_calls constant integer := coalesce(switchyard.numeric_setting('alert_min_calls'), 50)::integer;
    error_limit constant double precision := switchyard.numeric_setting('alert_error_rate');
    error_window constant interval :=
        make_interval(secs => coalesce(switchyard.numeric_setting('alert_error_window_seconds'), 300));
    latency_window constant interval :=
        make_interval(secs => coalesce(switchyard.numeric_setting('alert_latency_window_seconds'), 300));
    wait_limit constant double precision := switchyard.numeric_setting('alert_queue_wait_p95_ms');
    wait_window constant interval :=
        make_interval(secs => coalesce(switchyard.numeric_setting('alert_queue_wait_window_seconds'), 300));
    wait_min_jobs constant integer := coalesce(switchyard.numeric_setting('alert_queue_wait_min_jobs'), 10)::integer;
    backlog_limit constant double precision := switchyard.numeric_setting('alert_backlog_at_risk_jobs');
    -- Paused, the backlog does not drain at all (and deadlines do not override a pause).
    paused constant boolean := switchyard.setting('background_paused') = 'true';
    -- The longest-waiting jobs that count towards the queue-wait P95 (see the header).
    waiting_sample constant integer := 1000;
    throughput_window constant interval :=
        make_interval(secs => coalesce(switchyard.numeric_setting('alert_backlog_throughput_window_seconds'), 900));
BEGIN
    -- A model's error rate.
    IF error_limit IS NOT NULL THEN
        RETURN QUERY
        SELECT 'error_rate'::text, c.model, c.errors::double precision / c.calls, error_limit,
               c.calls >= min_calls AND c.errors::double precision / c.calls > error_limit,
               c.errors::double precision / c.calls <= error_limit,
               format('model %s: %s%% of %s calls ended in an error over the last %s (limit %s%%)', c.model,
                      round(100.0 * c.errors / c.calls, 1), c.calls, switchyard.window_text(error_window),
                      trim_scale(round(100 * error_limit::numeric, 2)))
        FROM (SELECT k.model, count(*) AS calls, count(*) FILTER (WHERE k.model_error) AS errors
              FROM switchyard.calls k
              WHERE k.finished_at > p_at - error_window AND k.finished_at <= p_at AND k.outcome <> 'cancelled'
              GROUP BY k.model) c;
    END IF;

    -- A model's P95 against its tier's target; per model, the tier furthest over its target among
    -- those with enough calls.
    RETURN QUERY
    SELECT DISTINCT ON (t.model) 'latency'::text, t.model, t.p95, t.target,
           t.calls >= min_calls AND t.p95 > t.target, t.p95 <= t.target,
           format('model %s: P95 latency %s ms as %s over the last %s (target %s ms, %s calls)', t.model,
                  round(t.p95::numeric, 1), t.tier, switchyard.window_text(latency_window), round(t.target::numeric),
                  t.calls)
    FROM (SELECT k.model, k.tier, count(*) AS calls,
                 percentile_cont(0.95) WITHIN GROUP (ORDER BY k.latency_ms) AS p95,
                 switchyard.numeric_setting('alert_latency_target_ms_' || k.tier) AS target
          FROM switchyard.calls k
          WHERE k.finished_at > p_at - latency_window AND k.finished_at <= p_at
                AND k.outcome IN ('succeeded', 'timeout') AND k.latency_ms IS NOT NULL
                AND k.tier IN ('primary', 'secondary', 'tertiary')
          GROUP BY k.model, k.tier) t
    WHERE t.target IS NOT NULL
    -- A tier with the calls to judge it comes before one without: a few slow calls in another
    -- tier must not stand for a model whose primary calls are over their target.
    ORDER BY t.model, t.calls >= min_calls DESC, t.p95 / t.target DESC;

    -- Interactive queue wait: jobs that finished in the window, and the longest-waiting jobs right
    -- now (their wait so far), so a stalled fleet raises it even though nothing finishes.
    IF wait_limit IS NOT NULL THEN
        RETURN QUERY
        WITH finished AS (
            SELECT r.queue_wait_ms AS wait_ms
            FROM switchyard.results r
            WHERE r.priority = 'interactive' AND r.finished_at > p_at - wait_window AND r.finished_at <= p_at
                  AND r.queue_wait_ms IS NOT NULL
        ), waits AS (
            SELECT f.wait_ms, false AS waiting FROM finished f
            UNION ALL
            SELECT * FROM (
                SELECT extract(epoch FROM p_at - coalesce(j.waiting_since, greatest(j.created_at, j.run_at))) * 1000, true
                FROM switchyard.jobs_interactive j
                WHERE j.lease_owner IS NULL AND j.run_at <= p_at
                ORDER BY j.run_at, j.id
                -- At least a nineteenth of what is measured: the top 5% can be waiting jobs.
                LIMIT greatest(waiting_sample, (SELECT count(*) FROM finished) / 18 + 1)) oldest
            UNION ALL
            -- Put back to wait for a model (every one of its rule's is down): waiting all the same.
            SELECT * FROM (
                SELECT extract(epoch FROM p_at - j.waiting_since) * 1000, true
                FROM switchyard.jobs_interactive j
                WHERE j.lease_owner IS NULL AND j.waiting_since IS NOT NULL AND j.run_at > p_at
                ORDER BY j.waiting_since
                LIMIT greatest(waiting_sample, (SELECT count(*) FROM finished) / 18 + 1)) put_back
        ), measured AS (
            SELECT count(*) AS jobs, percentile_cont(0.95) WITHIN GROUP (ORDER BY w.wait_ms) AS p95,
                   coalesce(max(w.wait_ms) FILTER (WHERE w.waiting), 0) AS longest_now
            FROM waits w
        )
        SELECT 'queue_wait'::text, 'interactive'::text, m.p95, wait_limit,
               m.p95 > wait_limit AND (m.jobs >= wait_min_jobs OR m.longest_now > wait_limit),
               m.p95 <= wait_limit,
               format('interactive queue wait P95 %s ms over the last %s (limit %s ms, %s jobs, '
                      'longest waiting now %s ms)', round(m.p95::numeric), switchyard.window_text(wait_window),
                      round(wait_limit::numeric), m.jobs, round(m.longest_now::numeric))
        FROM measured m
        WHERE m.jobs > 0;
    END IF;

    -- Background jobs that would miss their deadline if the backlog drains at recent throughput
    -- (counted only when some queued background job has a deadline: found by its index).
    IF backlog_limit IS NOT NULL AND EXISTS (
        SELECT 1 FROM switchyard.jobs_background j WHERE j.deadline IS NOT NULL AND j.lease_owner IS NULL
    ) THEN
        RETURN QUERY
        WITH throughput AS (
            SELECT count(*) / extract(epoch FROM throughput_window) AS per_second
            FROM switchyard.results r
            WHERE r.priority = 'background' AND r.finished_at > p_at - throughput_window AND r.finished_at <= p_at
                  AND r.status <> 'cancelled'
        ), backlog AS (
            SELECT count(*) AS jobs, min(j.deadline) AS earliest FROM switchyard.jobs_background j
            WHERE j.lease_owner IS NULL
        ), drain AS (
            SELECT b.jobs, b.earliest, t.per_second,
                   -- With nothing finished recently there is no rate to go by: only jobs due within
                   -- the measuring window count as at risk (nothing drained in as long).
                   CASE WHEN paused THEN 'infinity'::timestamptz
                        WHEN t.per_second > 0 THEN p_at + make_interval(secs => b.jobs / t.per_second)
                        ELSE p_at + throughput_window END AS drained_at
            FROM backlog b, throughput t
        ), at_risk AS (
            SELECT d.*, (SELECT count(*) FROM switchyard.jobs_background j
                         WHERE j.lease_owner IS NULL AND j.deadline IS NOT NULL
                               AND j.deadline < d.drained_at) AS jobs_at_risk
            FROM drain d
        )
        SELECT 'backlog_deadlines'::text, 'background'::text, a.jobs_at_risk::double precision, backlog_limit,
               a.jobs_at_risk > backlog_limit, a.jobs_at_risk <= backlog_limit,
               format('%s queued background jobs would miss their deadline: the backlog of %s drains %s '
                      '(recent throughput %s jobs/min over %s; earliest deadline %s)',
                      a.jobs_at_risk, a.jobs,
                      CASE WHEN paused THEN 'never while background work is paused (dispatcher background resume)'
                           WHEN a.per_second > 0
                           THEN 'by ' || to_char(a.drained_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"')
                           ELSE 'at an unknown time (no background job finished recently)' END,
                      round((a.per_second * 60)::numeric, 2), switchyard.window_text(throughput_window),
                      coalesce(to_char(a.earliest AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"'), 'none'))
        FROM at_risk a
        WHERE a.jobs > 0;
    END IF;
END $$;
