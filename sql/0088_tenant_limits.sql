-- Tenants' limits: a pause, and a budget per day or month.
--
-- Nothing was per tenant but the claim's shares (0082): a multi-tenant walkthrough found no way
-- to stop one customer's work (a runaway script, an unpaid invoice) but cancelling its jobs, and
-- no way to hold its spending to what it paid for. Now an operator may pause a tenant, or give
-- it a budget in US dollars per UTC day or calendar month (switchyard.tenant_limits, set by
-- pause_tenant, resume_tenant and set_tenant_budget, or dispatcher tenants). A tenant paused or
-- over its budget is *held*: its queued jobs, and those it submits, stay in the queue and no
-- worker claims them (their run_at is set aside in held_run_at, and run_at is 'infinity'), until
-- it is resumed, its budget raised, or a new period begins. Running jobs finish. Nothing is
-- lost: a held job keeps its place (it runs from when it was due, or now, whichever is later),
-- and one whose deadline passes while held expires as any other.
--
-- * Spending is counted from results: each write-back adds a row per tenant and day
--   (tenant_spend_pending, no lock between workers) and the housekeeper adds them up into
--   tenant_spend every round (enforce_tenant_limits), every tenant's, budget or not. This
--   migration counts the current month's results once.
-- * A budget is checked by the housekeeper's round (every 2 s): a tenant may go over by what its
--   running jobs, and the jobs claimed before the round, cost. A pause holds the jobs at once.
-- * Jobs submitted for a held tenant are held as they are inserted, and a job of a held tenant
--   put back in the queue (a retry, a worker stopping, a rescued lease) is held as it is put
--   back (a trigger on each); the round holds any a transaction begun before the hold let by.
--   A held job given a new run_at (a drain's release of postponed jobs) stays held, to run from
--   then when it is released.
-- * cancel_tenant_jobs ends every queued and held job of a tenant in one statement (id by id,
--   100,000 took a walkthrough two minutes), and asks the workers running its others to stop.
-- * job_status says 'held'; queue_depth counts held jobs apart (a new last column, held), not as
--   scheduled.
--
-- complete is 0087's otherwise.

SET LOCAL ROLE switchyard_admin;

ALTER TABLE switchyard.jobs ADD COLUMN held_run_at timestamptz;
COMMENT ON COLUMN switchyard.jobs.held_run_at IS
    'A held job''s own run_at, while its tenant is paused or over its budget (run_at is then ''infinity'').';
CREATE INDEX jobs_held_idx ON switchyard.jobs (tenant) WHERE held_run_at IS NOT NULL;

CREATE TABLE switchyard.tenant_limits (
    tenant        text        PRIMARY KEY CHECK (length(tenant) BETWEEN 1 AND 200),
    paused_at     timestamptz,
    paused_by     text,
    budget        numeric     CHECK (budget > 0),
    budget_period text        CHECK (budget_period IN ('day', 'month')),
    -- Why the tenant's jobs are held now (NULL: they are not), as its jobs' users read it.
    held_reason   text,
    held_since    timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenant_limits_budget_period CHECK ((budget IS NULL) = (budget_period IS NULL))
);
COMMENT ON TABLE switchyard.tenant_limits IS
    'Per tenant: paused, and a budget in USD per UTC day or month; held_reason says why its jobs are held.';

CREATE TABLE switchyard.tenant_spend (
    tenant  text    NOT NULL,
    day     date    NOT NULL,
    cost    numeric NOT NULL DEFAULT 0,
    results bigint  NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, day)
);
COMMENT ON TABLE switchyard.tenant_spend IS
    'What each tenant''s results cost per UTC day (USD), added up by the housekeeper from tenant_spend_pending.';

CREATE TABLE switchyard.tenant_spend_pending (
    tenant  text    NOT NULL,
    day     date    NOT NULL,
    cost    numeric NOT NULL,
    results integer NOT NULL
);
COMMENT ON TABLE switchyard.tenant_spend_pending IS
    'Write-backs'' spending per tenant and day, not yet added to tenant_spend (every housekeeper round).';

-- Submitters read their own tenants' limits and spending (dispatcher tenants, and why a job is held).
GRANT SELECT ON switchyard.tenant_limits, switchyard.tenant_spend, switchyard.tenant_spend_pending TO switchyard_submitter;
ALTER TABLE switchyard.tenant_limits ENABLE ROW LEVEL SECURITY;
ALTER TABLE switchyard.tenant_spend ENABLE ROW LEVEL SECURITY;
ALTER TABLE switchyard.tenant_spend_pending ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_limits_tenant_read ON switchyard.tenant_limits FOR SELECT TO switchyard_submitter
    USING (tenant = ANY ((SELECT switchyard.visible_tenants())::text[]));
CREATE POLICY tenant_spend_tenant_read ON switchyard.tenant_spend FOR SELECT TO switchyard_submitter
    USING (tenant = ANY ((SELECT switchyard.visible_tenants())::text[]));
CREATE POLICY tenant_spend_pending_tenant_read ON switchyard.tenant_spend_pending FOR SELECT TO switchyard_submitter
    USING (tenant = ANY ((SELECT switchyard.visible_tenants())::text[]));
CREATE POLICY tenant_limits_admin ON switchyard.tenant_limits TO switchyard_admin USING (true) WITH CHECK (true);
CREATE POLICY tenant_spend_admin ON switchyard.tenant_spend TO switchyard_admin USING (true) WITH CHECK (true);
CREATE POLICY tenant_spend_pending_admin ON switchyard.tenant_spend_pending TO switchyard_admin USING (true) WITH CHECK (true);

-- This month's spending so far, from the results already written.
INSERT INTO switchyard.tenant_spend (tenant, day, cost, results)
SELECT r.tenant, (r.finished_at AT TIME ZONE 'UTC')::date, coalesce(sum(r.cost), 0), count(*)
FROM switchyard.results r
WHERE r.tenant IS NOT NULL
  AND r.finished_at >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
GROUP BY 1, 2;

-- The first day of the period that p_at falls in (UTC), and of the next one.
CREATE FUNCTION switchyard.budget_period_start(p_period text, p_at timestamptz) RETURNS date
    LANGUAGE sql IMMUTABLE AS $$
    SELECT date_trunc(p_period, p_at AT TIME ZONE 'UTC')::date
$$;

-- What p_tenant has spent since p_since (a UTC day), results written back: added up, and not yet.
CREATE FUNCTION switchyard.tenant_spent(p_tenant text, p_since date) RETURNS numeric
    LANGUAGE sql STABLE SET search_path = pg_catalog, switchyard, pg_temp AS $$
    SELECT coalesce((SELECT sum(s.cost) FROM switchyard.tenant_spend s WHERE s.tenant = p_tenant AND s.day >= p_since), 0)
         + coalesce((SELECT sum(p.cost) FROM switchyard.tenant_spend_pending p
                     WHERE p.tenant = p_tenant AND p.day >= p_since), 0)
$$;

-- An amount of US dollars as people read it: to the cent from a dollar up, else to six decimal
-- places at most ($1.20, $0.0042).
CREATE FUNCTION switchyard.usd(p_amount numeric) RETURNS text
    LANGUAGE sql IMMUTABLE AS $$
    SELECT '$' || CASE WHEN abs(p_amount) >= 1 THEN to_char(round(p_amount, 2), 'FM999999999999990.00')
                       ELSE trim_scale(round(p_amount, 6))::text END
$$;

-- Why a tenant's jobs are to be held now, NULL if they are not: paused, or its budget spent.
CREATE FUNCTION switchyard.tenant_hold_reason(l switchyard.tenant_limits, p_at timestamptz DEFAULT now()) RETURNS text
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    since date;
    spent numeric;
BEGIN
    IF l.paused_at IS NOT NULL THEN
        RETURN format('tenant %s is paused (since %s UTC); an operator resumes it: dispatcher tenants resume %s',
                      l.tenant, to_char(l.paused_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), l.tenant);
    END IF;
    IF l.budget IS NULL THEN
        RETURN NULL;
    END IF;
    since := switchyard.budget_period_start(l.budget_period, p_at);
    spent := switchyard.tenant_spent(l.tenant, since);
    IF spent < l.budget THEN
        RETURN NULL;
    END IF;
    RETURN format('tenant %s has spent its %s budget (%s of %s since %s); its jobs run again at %s 00:00 UTC, '
                      || 'or sooner if an operator raises it: dispatcher tenants budget %s AMOUNT',
                  l.tenant, CASE l.budget_period WHEN 'day' THEN 'daily' ELSE 'monthly' END,
                  switchyard.usd(spent), switchyard.usd(l.budget), since,
                  (since + CASE l.budget_period WHEN 'day' THEN interval '1 day' ELSE interval '1 month' END)::date,
                  l.tenant);
END $$;

-- Holds p_tenant's queued jobs that are not held yet; returns how many.
CREATE FUNCTION switchyard.hold_tenant_jobs(p_tenant text) RETURNS integer
    LANGUAGE plpgsql SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    held integer;
BEGIN
    UPDATE switchyard.jobs j SET held_run_at = j.run_at, run_at = 'infinity'
    WHERE j.tenant = p_tenant AND j.lease_owner IS NULL AND j.held_run_at IS NULL AND j.run_at < 'infinity';
    GET DIAGNOSTICS held = ROW_COUNT;
    RETURN held;
END $$;

-- Lets p_tenant's held jobs run again, each from its own run_at or now, whichever is later;
-- returns how many.
CREATE FUNCTION switchyard.release_tenant_jobs(p_tenant text) RETURNS integer
    LANGUAGE plpgsql SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    released integer;
BEGIN
    UPDATE switchyard.jobs j SET run_at = greatest(j.held_run_at, now()), held_run_at = NULL
    WHERE j.tenant = p_tenant AND j.held_run_at IS NOT NULL;
    GET DIAGNOSTICS released = ROW_COUNT;
    IF released > 0 THEN
        PERFORM pg_notify('switchyard_jobs', '');
    END IF;
    RETURN released;
END $$;

-- Brings p_tenant's jobs in line with its limits: held if it is paused or over its budget (and
-- any of its queued jobs not held yet), released if it no longer is. The row is locked, so a
-- change and the housekeeper's round do this one after the other. A row that limits nothing any
-- more is deleted. Returns the change made, if any: 'held', 'released' or 'still held' (jobs
-- found that were not held yet), with the jobs it moved and the reason.
CREATE FUNCTION switchyard.apply_tenant_limits(p_tenant text, OUT change text, OUT jobs integer, OUT reason text)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    l switchyard.tenant_limits;
    limited boolean;
BEGIN
    jobs := 0;
    SELECT * INTO l FROM switchyard.tenant_limits t WHERE t.tenant = p_tenant FOR UPDATE;
    limited := FOUND;
    IF limited THEN
        reason := switchyard.tenant_hold_reason(l);
    END IF;
    IF reason IS NOT NULL THEN
        IF l.held_reason IS DISTINCT FROM reason THEN
            UPDATE switchyard.tenant_limits t
            SET held_reason = reason, held_since = coalesce(t.held_since, now())
            WHERE t.tenant = p_tenant;
        END IF;
        jobs := switchyard.hold_tenant_jobs(p_tenant);
        change := CASE WHEN l.held_reason IS NULL THEN 'held' WHEN jobs > 0 THEN 'still held' END;
        RETURN;
    END IF;
    IF limited AND l.paused_at IS NULL AND l.budget IS NULL THEN
        DELETE FROM switchyard.tenant_limits t WHERE t.tenant = p_tenant;
    ELSIF limited AND l.held_reason IS NOT NULL THEN
        UPDATE switchyard.tenant_limits t SET held_reason = NULL, held_since = NULL WHERE t.tenant = p_tenant;
    END IF;
    jobs := switchyard.release_tenant_jobs(p_tenant);
    change := CASE WHEN jobs > 0 OR l.held_reason IS NOT NULL THEN 'released' END;
END $$;

-- The housekeeper's round: adds the write-backs' spending up, then brings every tenant with
-- limits, or with held jobs, in line with them. Returns the changes made.
CREATE FUNCTION switchyard.enforce_tenant_limits() RETURNS TABLE (tenant text, change text, jobs integer, reason text)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    name text;
    applied record;
BEGIN
    WITH moved AS (DELETE FROM switchyard.tenant_spend_pending p RETURNING p.*)
    INSERT INTO switchyard.tenant_spend AS s (tenant, day, cost, results)
    SELECT m.tenant, m.day, sum(m.cost), sum(m.results) FROM moved m GROUP BY m.tenant, m.day
    ON CONFLICT ON CONSTRAINT tenant_spend_pkey
        DO UPDATE SET cost = s.cost + EXCLUDED.cost, results = s.results + EXCLUDED.results;
    FOR name IN
        SELECT l.tenant FROM switchyard.tenant_limits l
        UNION
        -- Held jobs of a tenant whose limits were deleted by hand.
        SELECT DISTINCT j.tenant FROM switchyard.jobs j WHERE j.held_run_at IS NOT NULL
        ORDER BY 1
    LOOP
        applied := switchyard.apply_tenant_limits(name);
        IF applied.change IS NOT NULL THEN
            tenant := name;
            change := applied.change;
            jobs := applied.jobs;
            reason := applied.reason;
            RETURN NEXT;
        END IF;
    END LOOP;
END $$;

-- Pauses p_tenant: its queued jobs are held at once, and those it submits until it is resumed.
-- Returns how many were held now.
CREATE FUNCTION switchyard.pause_tenant(p_tenant text) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
BEGIN
    IF p_tenant IS NULL OR length(p_tenant) NOT BETWEEN 1 AND 200 THEN
        PERFORM switchyard.reject('a tenant is a name of 1 to 200 characters',
                                  'Name the tenant as its jobs do (the tenant column of switchyard.jobs).');
    END IF;
    INSERT INTO switchyard.tenant_limits AS l (tenant, paused_at, paused_by)
    VALUES (p_tenant, now(), session_user)
    ON CONFLICT (tenant) DO UPDATE SET paused_at = coalesce(l.paused_at, now()),
                                       paused_by = coalesce(l.paused_by, session_user), updated_at = now();
    RETURN (switchyard.apply_tenant_limits(p_tenant)).jobs;
END $$;

-- Resumes p_tenant; returns how many of its jobs may run again (none while its budget is spent).
CREATE FUNCTION switchyard.resume_tenant(p_tenant text) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    applied record;
BEGIN
    UPDATE switchyard.tenant_limits l SET paused_at = NULL, paused_by = NULL, updated_at = now()
    WHERE l.tenant = p_tenant;
    applied := switchyard.apply_tenant_limits(p_tenant);
    RETURN CASE WHEN applied.change = 'released' THEN applied.jobs ELSE 0 END;
END $$;

-- Sets p_tenant's budget, in USD per p_period ('day' or 'month', UTC), or removes it (NULL).
-- Returns the change it made to the tenant's jobs, as apply_tenant_limits says it.
CREATE FUNCTION switchyard.set_tenant_budget(p_tenant text, p_budget numeric, p_period text DEFAULT 'month',
                                             OUT change text, OUT jobs integer, OUT reason text)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    applied record;
BEGIN
    IF p_tenant IS NULL OR length(p_tenant) NOT BETWEEN 1 AND 200 THEN
        PERFORM switchyard.reject('a tenant is a name of 1 to 200 characters',
                                  'Name the tenant as its jobs do (the tenant column of switchyard.jobs).');
    END IF;
    IF p_budget IS NOT NULL AND p_budget <= 0 THEN
        PERFORM switchyard.reject(format('a budget is more than $0 (got %s)', p_budget),
                                  'To stop a tenant''s work, pause it: dispatcher tenants pause NAME. '
                                      || 'To remove its budget: dispatcher tenants budget NAME none.');
    END IF;
    IF p_budget IS NOT NULL AND p_period IS DISTINCT FROM 'day' AND p_period IS DISTINCT FROM 'month' THEN
        PERFORM switchyard.reject(format('a budget is per day or per month (got %s)', coalesce(p_period, 'NULL')),
                                  'Periods are UTC days and calendar months: pass ''day'' or ''month''.');
    END IF;
    IF p_budget IS NULL THEN
        UPDATE switchyard.tenant_limits l SET budget = NULL, budget_period = NULL, updated_at = now()
        WHERE l.tenant = p_tenant;
    ELSE
        INSERT INTO switchyard.tenant_limits AS l (tenant, budget, budget_period)
        VALUES (p_tenant, p_budget, p_period)
        ON CONFLICT (tenant) DO UPDATE SET budget = EXCLUDED.budget, budget_period = EXCLUDED.budget_period,
                                           updated_at = now();
    END IF;
    applied := switchyard.apply_tenant_limits(p_tenant);
    change := applied.change;
    jobs := applied.jobs;
    reason := applied.reason;
END $$;

-- Cancels every job p_tenant has in the queue now (held or not) in one statement, and asks the
-- workers running its others to stop them (at their next heartbeat): cancelling 100,000 jobs id
-- by id took a walkthrough two minutes. Jobs submitted after it began are not cancelled: pause the
-- tenant first to stop those. Returns how many were cancelled, and how many are cancelling.
CREATE FUNCTION switchyard.cancel_tenant_jobs(p_tenant text, OUT cancelled bigint, OUT cancelling bigint)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
BEGIN
    -- A job a claim holds is waited for and read again: claimed, it is left to the next statement.
    WITH gone AS (
        DELETE FROM switchyard.jobs j WHERE j.tenant = p_tenant AND j.lease_owner IS NULL RETURNING j.*
    )
    INSERT INTO switchyard.results
        (job_id, status, priority, task_class, affinity_key, tenant, request, error, attempts, attempt_count,
         created_at, started_at, worker, retry_of, metadata)
    SELECT g.id, 'cancelled', g.priority, g.task_class, g.affinity_key, g.tenant, g.request,
           jsonb_build_object('code', 'cancelled',
                              'message', format('cancelled before it started, with every job of tenant %s', p_tenant)),
           g.attempts, g.attempt, g.created_at, g.claimed_at, g.lease_owner, g.retry_of, g.metadata
    FROM gone g;
    GET DIAGNOSTICS cancelled = ROW_COUNT;
    WITH running AS (
        SELECT j.id FROM switchyard.jobs j WHERE j.tenant = p_tenant AND j.lease_owner IS NOT NULL
    ), asked AS (
        INSERT INTO switchyard.cancel_requests (job_id) SELECT r.id FROM running r ON CONFLICT DO NOTHING
    )
    SELECT count(*) INTO cancelling FROM running;
END $$;

-- Holds a job of a held tenant as it is submitted or put back in the queue (a retry, a worker
-- stopping, a rescued lease), and keeps a held job held when something gives it a new run_at
-- (a drain's release of postponed jobs): that run_at is the one it keeps.
CREATE FUNCTION switchyard.hold_queued_job() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
BEGIN
    IF NEW.held_run_at IS NOT NULL THEN
        NEW.held_run_at := NEW.run_at;
        NEW.run_at := 'infinity';
    ELSIF EXISTS (SELECT FROM switchyard.tenant_limits l WHERE l.tenant = NEW.tenant AND l.held_reason IS NOT NULL) THEN
        NEW.held_run_at := NEW.run_at;
        NEW.run_at := 'infinity';
    END IF;
    RETURN NEW;
END $$;

REVOKE ALL ON FUNCTION switchyard.tenant_spent(text, date), switchyard.usd(numeric), switchyard.tenant_hold_reason(switchyard.tenant_limits, timestamptz),
    switchyard.hold_tenant_jobs(text), switchyard.release_tenant_jobs(text), switchyard.apply_tenant_limits(text),
    switchyard.enforce_tenant_limits(), switchyard.pause_tenant(text), switchyard.resume_tenant(text),
    switchyard.set_tenant_budget(text, numeric, text), switchyard.cancel_tenant_jobs(text),
    switchyard.hold_queued_job() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION switchyard.enforce_tenant_limits() TO switchyard_worker;

-- After jobs_before_insert (a past run_at made now()) and jobs_before_insert_metadata: name order.
CREATE TRIGGER jobs_before_insert_tenant_hold BEFORE INSERT ON switchyard.jobs
    FOR EACH ROW WHEN (NEW.tenant IS NOT NULL)
    EXECUTE FUNCTION switchyard.hold_queued_job();
-- Only a job of a tenant leaving a worker's hands, or a held job given a run_at: a claim or a
-- heartbeat does not call it.
CREATE TRIGGER jobs_before_update_tenant_hold BEFORE UPDATE ON switchyard.jobs
    FOR EACH ROW WHEN (NEW.tenant IS NOT NULL AND NEW.lease_owner IS NULL
                       AND (OLD.lease_owner IS NOT NULL
                            OR (NEW.held_run_at IS NOT NULL AND NEW.run_at <> 'infinity'::timestamptz)))
    EXECUTE FUNCTION switchyard.hold_queued_job();

CREATE OR REPLACE FUNCTION switchyard.job_status(job_id bigint) RETURNS text
    LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        (SELECT CASE
                    WHEN j.lease_owner IS NOT NULL AND j.cancel_requested OR EXISTS (SELECT FROM switchyard.cancel_requests c WHERE c.job_id = j.id) THEN 'cancelling'
                    WHEN j.lease_owner IS NOT NULL THEN 'running'
                    WHEN j.held_run_at IS NOT NULL THEN 'held'
                    WHEN j.run_at > now() THEN 'scheduled'
                    ELSE 'queued'
                END
         FROM switchyard.jobs j WHERE j.id = job_status.job_id),
        (SELECT r.status FROM switchyard.results r WHERE r.job_id = job_status.job_id))
$$;

CREATE OR REPLACE VIEW switchyard.queue_depth AS
SELECT p.priority, c.queued, c.scheduled, c.running, c.with_deadline,
       oldest.id AS oldest_job_id,
       oldest.waiting_since AS oldest_waiting_since,
       extract(epoch FROM now() - oldest.waiting_since)::double precision AS oldest_wait_s,
       c.held
FROM (VALUES ('interactive'), ('background')) AS p(priority)
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE j.lease_owner IS NULL AND j.held_run_at IS NULL
                                  AND (j.run_at <= now() OR j.waiting_since IS NOT NULL)) AS queued,
           count(*) FILTER (WHERE j.lease_owner IS NULL AND j.held_run_at IS NULL
                                  AND j.run_at > now() AND j.waiting_since IS NULL) AS scheduled,
           count(*) FILTER (WHERE j.lease_owner IS NOT NULL) AS running,
           count(*) FILTER (WHERE j.lease_owner IS NULL AND j.deadline IS NOT NULL) AS with_deadline,
           count(*) FILTER (WHERE j.held_run_at IS NOT NULL) AS held
    FROM switchyard.jobs j WHERE j.priority = p.priority
) c
LEFT JOIN LATERAL (
    -- The longest waiting of: the due job that became due first (not the claim's first: a job
    -- submitted with a run_at in the past goes first, and was named as the oldest with its wait
    -- of a second) and the first put back to wait for a model (due again or not). Held jobs wait
    -- for their tenant, not for the queue.
    SELECT w.id, w.waiting_since FROM (
        (SELECT o.id, coalesce(o.waiting_since, greatest(o.created_at, o.run_at)) AS waiting_since
         FROM switchyard.jobs o
         WHERE o.priority = p.priority AND o.lease_owner IS NULL AND o.run_at <= now()
         ORDER BY coalesce(o.waiting_since, greatest(o.created_at, o.run_at)), o.id
         LIMIT 1)
        UNION ALL
        (SELECT o.id, o.waiting_since
         FROM switchyard.jobs o
         WHERE o.priority = p.priority AND o.lease_owner IS NULL AND o.waiting_since IS NOT NULL
               AND o.held_run_at IS NULL
         ORDER BY o.waiting_since, o.id
         LIMIT 1)
    ) w
    ORDER BY w.waiting_since, w.id
    LIMIT 1
) oldest ON true
ORDER BY p.priority DESC;

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
        ), stored AS (
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
            RETURNING r.job_id, r.tenant, r.cost, r.finished_at
        ), counted AS (
            -- What each tenant spent, a row per tenant and day for the batch (the housekeeper adds
            -- them up: enforce_tenant_limits); none for jobs without a tenant.
            INSERT INTO switchyard.tenant_spend_pending (tenant, day, cost, results)
            SELECT s.tenant, (s.finished_at AT TIME ZONE 'UTC')::date, coalesce(sum(s.cost), 0), count(*)
            FROM stored s WHERE s.tenant IS NOT NULL
            GROUP BY s.tenant, (s.finished_at AT TIME ZONE 'UTC')::date
        )
        SELECT s.job_id, 'result'::text FROM stored s;
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
