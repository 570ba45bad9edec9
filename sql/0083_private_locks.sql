-- Locks no application can take.
--
-- Switchyard ordered its own work with advisory locks on fixed keys, and every role may take any
-- advisory lock (Postgres grants pg_advisory_lock to PUBLIC, and the keys are in the source): a
-- security review's application role held evaluate_alerts' key for two minutes, and the fleet's
-- housekeeping stopped with it (a lease expired 45 s earlier was not rescued; afterwards the
-- workers evaluated alerts every 20 minutes, ten times the blocked evaluation), and held the
-- policy key to keep other tenants' answers from being written (a write-back that postponed a job
-- waited on it with them). The locks are now rows of a table only the schema's owner may
-- lock (a row lock needs UPDATE on the table): FOR UPDATE as the exclusive lock, FOR SHARE as the
-- shared one, held to the end of the transaction as the advisory ones were. `dispatcher models
-- import` takes the catalog row likewise.
--
-- evaluate_alerts is 0056's, complete 0065's, release_postponed 0050's and
-- release_postponed_for_catalog 0063's otherwise.

SET LOCAL ROLE switchyard_admin;

CREATE TABLE switchyard.locks (
    name text PRIMARY KEY
);
INSERT INTO switchyard.locks (name) VALUES ('alerts'), ('policies'), ('catalog_import');
COMMENT ON TABLE switchyard.locks IS
    'Rows locked (FOR UPDATE, FOR SHARE) to order Switchyard''s own work: no other role may lock them.';

CREATE OR REPLACE FUNCTION switchyard.evaluate_alerts(p_at timestamptz DEFAULT now())
    RETURNS TABLE (
        event text, alert_id bigint, kind text, subject text, value double precision, threshold double precision,
        message text, event_at timestamptz)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    measurement record;
    existing switchyard.alerts;
    opens_breaker constant boolean := coalesce(switchyard.setting('alert_opens_breaker'), 'true') = 'true';
    seen text[] := '{}';
    trips_breaker boolean;
    stranded text;
BEGIN
    -- One evaluation at a time: two housekeepers never raise the same alert twice.
    PERFORM FROM switchyard.locks l WHERE l.name = 'alerts' FOR UPDATE;
    FOR measurement IN SELECT * FROM switchyard.alert_measurements(p_at) LOOP
        seen := seen || (measurement.kind || '/' || measurement.subject);
        SELECT * INTO existing FROM switchyard.alerts a
        WHERE a.kind = measurement.kind AND a.subject = measurement.subject AND a.cleared_at IS NULL;
        IF existing.id IS NULL AND measurement.breached THEN
            trips_breaker := opens_breaker AND measurement.kind IN ('error_rate', 'latency')
                             AND EXISTS (SELECT 1 FROM switchyard.models m WHERE m.name = measurement.subject);
            IF trips_breaker THEN
                -- An alert steers traffic away; it must not leave a rule with nowhere to go. Rules
                -- whose every other model is disabled, open or half-open (one probe at a time is no
                -- capacity) keep this one, as Envoy's panic mode does.
                SELECT string_agg(r.task_class, ', ' ORDER BY r.task_class) INTO stranded
                FROM switchyard.routes r
                WHERE measurement.subject = ANY (r.primary_model || r.fallbacks)
                  AND NOT EXISTS (
                      SELECT 1 FROM unnest(r.primary_model || r.fallbacks) AS other(name)
                      JOIN switchyard.models m ON m.name = other.name AND m.enabled
                      LEFT JOIN switchyard.model_health h ON h.model = other.name
                      WHERE other.name <> measurement.subject
                        AND coalesce(switchyard.effective_breaker(h.state, h.opened_at), 'closed') = 'closed');
                IF stranded IS NOT NULL THEN
                    trips_breaker := false;
                    measurement.message := measurement.message
                        || format('; breaker left closed: it is the last healthy model of rule %s', stranded);
                END IF;
            END IF;
            INSERT INTO switchyard.alerts AS a (kind, subject, opened_at, value, threshold, message, last_value,
                                                last_evaluated_at)
            VALUES (measurement.kind, measurement.subject, p_at, measurement.value, measurement.threshold,
                    measurement.message, measurement.value, p_at)
            RETURNING a.id INTO alert_id;
            event := 'raised';
            IF trips_breaker THEN
                -- A breaker open already (the rate rule, failures in a row) keeps its reason and
                -- its time: the alert's five-minute figure replaced a sharper one and restarted
                -- the open time. A half-open one opens again, its probes' count starting afresh.
                INSERT INTO switchyard.model_health AS h (model, state, opened_at, reason)
                VALUES (measurement.subject, 'open', now(), left('alert: ' || measurement.message, 300))
                ON CONFLICT (model) DO UPDATE
                    SET state = 'open', opened_at = now(), reason = EXCLUDED.reason, updated_at = now()
                    WHERE switchyard.effective_breaker(h.state, h.opened_at) <> 'open';
                IF FOUND THEN
                    PERFORM pg_notify('switchyard_health', measurement.subject);
                END IF;
            END IF;
        ELSIF existing.id IS NOT NULL AND measurement.recovered THEN
            UPDATE switchyard.alerts a
            SET cleared_at = p_at, last_value = measurement.value, last_evaluated_at = p_at,
                clear_message = measurement.message
            WHERE a.id = existing.id;
            alert_id := existing.id;
            event := 'cleared';
        ELSE
            IF existing.id IS NOT NULL THEN
                UPDATE switchyard.alerts a SET last_value = measurement.value, last_evaluated_at = p_at
                WHERE a.id = existing.id;
            END IF;
            CONTINUE;
        END IF;
        kind := measurement.kind;
        subject := measurement.subject;
        value := measurement.value;
        threshold := measurement.threshold;
        message := measurement.message;
        event_at := p_at;
        PERFORM pg_notify('switchyard_alerts', json_build_object(
            'event', event, 'id', alert_id, 'kind', kind, 'subject', subject, 'value', value,
            'threshold', threshold, 'message', left(message, 1000), 'at', p_at)::text);
        RETURN NEXT;
    END LOOP;

    -- Open alerts nothing measured any more: the traffic stopped, or the rule was turned off.
    FOR existing IN
        SELECT * FROM switchyard.alerts a
        WHERE a.cleared_at IS NULL AND NOT (a.kind || '/' || a.subject = ANY (seen))
        ORDER BY a.id
        FOR UPDATE
    LOOP
        UPDATE switchyard.alerts a
        SET cleared_at = p_at, last_evaluated_at = p_at,
            clear_message = format('%s %s: nothing left to measure (no traffic in the window, or the rule is off)',
                                   existing.kind, existing.subject)
        WHERE a.id = existing.id;
        event := 'cleared';
        alert_id := existing.id;
        kind := existing.kind;
        subject := existing.subject;
        value := existing.last_value;
        threshold := existing.threshold;
        message := format('%s %s: nothing left to measure (no traffic in the window, or the rule is off)',
                          existing.kind, existing.subject);
        event_at := p_at;
        PERFORM pg_notify('switchyard_alerts', json_build_object(
            'event', event, 'id', alert_id, 'kind', kind, 'subject', subject, 'value', value,
            'threshold', threshold, 'message', message, 'at', p_at)::text);
        RETURN NEXT;
    END LOOP;
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
    PERFORM FROM switchyard.locks l WHERE l.name = 'policies' FOR UPDATE;
    UPDATE switchyard.jobs_background j SET run_at = now(), postponed_at = NULL, waiting_reason = NULL
    WHERE j.postponed_at IS NOT NULL AND j.lease_owner IS NULL AND j.run_at > now();
    GET DIAGNOSTICS released = ROW_COUNT;
    IF released > 0 THEN
        PERFORM pg_notify('switchyard_jobs', '');
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION switchyard.release_postponed_for_catalog() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    released integer;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF TG_TABLE_NAME = 'models' THEN
            IF NOT ((NEW.enabled AND NOT OLD.enabled)
                    OR NEW.price_per_1k_input < OLD.price_per_1k_input
                    OR NEW.price_per_1k_output < OLD.price_per_1k_output
                    OR NEW.price_windows IS DISTINCT FROM OLD.price_windows
                    OR NEW.tier IS DISTINCT FROM OLD.tier
                    -- A score over a rule's quality floor, a window that now fits the request.
                    OR NEW.capabilities IS DISTINCT FROM OLD.capabilities
                    OR NEW.context_window IS DISTINCT FROM OLD.context_window) THEN
                RETURN NULL;
            END IF;
        ELSIF NOT (NEW.primary_model IS DISTINCT FROM OLD.primary_model
                   OR NEW.fallbacks IS DISTINCT FROM OLD.fallbacks
                   OR NEW.max_cost_per_1k IS DISTINCT FROM OLD.max_cost_per_1k
                   OR NEW.quality_floor IS DISTINCT FROM OLD.quality_floor
                   -- Its own ceiling, the classes it serves, its strategy's settings.
                   OR NEW.settings IS DISTINCT FROM OLD.settings) THEN
            RETURN NULL;
        END IF;
    END IF;
    -- Once per transaction.
    IF current_setting('switchyard.catalog_released_in', true) = txid_current()::text THEN
        RETURN NULL;
    END IF;
    PERFORM set_config('switchyard.catalog_released_in', txid_current()::text, true);
    -- Ordered against complete() postponing jobs, as 0020's release is.
    PERFORM FROM switchyard.locks l WHERE l.name = 'policies' FOR UPDATE;
    UPDATE switchyard.jobs_background j SET run_at = now(), postponed_at = NULL, waiting_reason = NULL
    WHERE j.postponed_at IS NOT NULL AND j.lease_owner IS NULL AND j.run_at > now();
    GET DIAGNOSTICS released = ROW_COUNT;
    IF released > 0 THEN
        PERFORM pg_notify('switchyard_jobs', '');
    END IF;
    RETURN NULL;
END $$;
