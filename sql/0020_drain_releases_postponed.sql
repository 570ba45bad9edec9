-- `dispatcher background drain` (or a new ceiling or tiers) reaches the jobs already waiting.
--
-- A worker that finds no model within the background ceiling puts the job back until the next
-- cheap window (a postponement: run_at moves ahead, the attempt is given back). A drain then
-- opened the gate but left those jobs waiting for their window, hours away: the backlog the
-- operator asked to drain did not move, while `background status` reported it draining. Now:
--   - the queue remembers which jobs a worker postponed (jobs.postponed_at), as against those
--     submitted to run later, which keep their run_at;
--   - a change to a background_* setting that may let them run (a drain begins, the ceiling rises
--     or goes, the tiers change) puts every postponed background job back in the queue at once,
--     to be decided again;
--   - a postponement decided under the policy before the change, still on its way to the
--     database (the worker had not reloaded the settings yet), is not kept: complete() takes
--     the policy version each one was decided under (background_policy_version(), which the
--     worker reads with the settings) and sends the job back now if it has changed since.
-- complete()'s array form gains p_policies (its items form a "policy" key). The form without it
-- stays, for the workers of the release before still running while this one is rolled out:
-- their postponements name no policy, and are kept as before.

SET LOCAL ROLE switchyard_admin;

ALTER TABLE switchyard.jobs ADD COLUMN postponed_at timestamptz;

-- The background policy's version: changes whenever a background_* setting does.
CREATE FUNCTION switchyard.background_policy_version() RETURNS text
    LANGUAGE sql STABLE SET search_path = pg_catalog, switchyard, pg_temp AS $$
    SELECT md5(coalesce(string_agg(s.name || '=' || s.value, E'\n' ORDER BY s.name), ''))
    FROM switchyard.settings s WHERE s.name LIKE 'background\_%'
$$;

-- Releases the postponed background jobs when a setting changes in a way that may let them run:
-- a drain begins (or moves later), the ceiling rises or goes, the tiers or the escalation
-- horizon change. Not for a stricter change (a lower ceiling, a drain ended, a pause; a resume
-- neither: a pause postpones nothing), which would only have every job claimed and put back.
CREATE FUNCTION switchyard.release_postponed() RETURNS trigger
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
    UPDATE switchyard.jobs_background j SET run_at = now(), postponed_at = NULL
    WHERE j.postponed_at IS NOT NULL AND j.lease_owner IS NULL AND j.run_at > now();
    GET DIAGNOSTICS released = ROW_COUNT;
    IF released > 0 THEN
        PERFORM pg_notify('switchyard_jobs', '');
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER settings_release_postponed AFTER INSERT OR UPDATE ON switchyard.settings
    FOR EACH ROW WHEN (NEW.name LIKE 'background\_%') EXECUTE FUNCTION switchyard.release_postponed();

CREATE FUNCTION switchyard.complete(
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
               extract(epoch FROM f.claimed_at - greatest(f.created_at, f.run_at)) * 1000, i.latency_ms,
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

CREATE OR REPLACE FUNCTION switchyard.complete(p_worker text, p_items jsonb)
    RETURNS TABLE (job_id bigint, kind text)
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
    SELECT c.job_id, c.kind
    FROM (
        SELECT array_agg(x.id) AS ids, array_agg(x.attempt) AS attempts, array_agg(x.kind) AS kinds,
               array_agg(x.status) AS statuses, array_agg(x.task_class) AS task_classes,
               array_agg(x.model) AS models, array_agg(x.provider) AS providers, array_agg(x.tier) AS tiers,
               array_agg(x.response) AS responses, array_agg(x.error) AS errors, array_agg(x.trail) AS trails,
               array_agg(x.tokens_in) AS tokens_in, array_agg(x.tokens_out) AS tokens_out,
               array_agg(x.cost) AS costs, array_agg(x.base_cost) AS base_costs,
               array_agg(x.primary_cost) AS primary_costs, array_agg(x.latency_ms) AS latency_ms,
               array_agg(x.metadata) AS metadata, array_agg(x.retry_at) AS retry_at,
               array_agg(x.policy) AS policies
        FROM jsonb_to_recordset(p_items) AS x(
            id bigint, attempt integer, kind text, status text, task_class text, model text, provider text,
            tier text, response jsonb, error jsonb, trail jsonb, tokens_in integer, tokens_out integer,
            cost numeric, base_cost numeric, primary_cost numeric, latency_ms double precision, metadata jsonb,
            retry_at timestamptz, policy text)
    ) a,
    LATERAL switchyard.complete(p_worker, a.ids, a.attempts, a.kinds, a.statuses, a.task_classes, a.models,
                                a.providers, a.tiers, a.responses, a.errors, a.trails, a.tokens_in, a.tokens_out,
                                a.costs, a.base_costs, a.primary_costs, a.latency_ms, a.metadata, a.retry_at,
                                a.policies) c
$$;

-- The array form before p_policies (see above).
CREATE OR REPLACE FUNCTION switchyard.complete(
    p_worker text, p_ids bigint[], p_attempts integer[], p_kinds text[], p_statuses text[], p_task_classes text[],
    p_models text[], p_providers text[], p_tiers text[], p_responses jsonb[], p_errors jsonb[], p_trails jsonb[],
    p_tokens_in integer[], p_tokens_out integer[], p_costs numeric[], p_base_costs numeric[],
    p_primary_costs numeric[], p_latency_ms double precision[], p_metadata jsonb[], p_retry_at timestamptz[]
) RETURNS TABLE (job_id bigint, kind text)
    LANGUAGE sql SET search_path = pg_catalog, switchyard, pg_temp AS $$
    SELECT c.job_id, c.kind
    FROM switchyard.complete(p_worker, p_ids, p_attempts, p_kinds, p_statuses, p_task_classes, p_models, p_providers,
                             p_tiers, p_responses, p_errors, p_trails, p_tokens_in, p_tokens_out, p_costs,
                             p_base_costs, p_primary_costs, p_latency_ms, p_metadata, p_retry_at,
                             array_fill(NULL::text, ARRAY[coalesce(cardinality(p_ids), 0)])) c
$$;

REVOKE ALL ON FUNCTION switchyard.background_policy_version() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION switchyard.background_policy_version() TO switchyard_worker;
REVOKE ALL ON FUNCTION switchyard.complete(text, bigint[], integer[], text[], text[], text[], text[], text[], text[],
                    jsonb[], jsonb[], jsonb[], integer[], integer[], numeric[], numeric[],
                    numeric[], double precision[], jsonb[], timestamptz[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION switchyard.complete(text, bigint[], integer[], text[], text[], text[], text[], text[], text[],
                    jsonb[], jsonb[], jsonb[], integer[], integer[], numeric[], numeric[],
                    numeric[], double precision[], jsonb[], timestamptz[], text[])
    TO switchyard_worker;
