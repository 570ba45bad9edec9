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
--   migration counts the current month's results (recount_tenant_spend), and the housekeeper
--   counts them again a minute on: a write-back that began before this migration committed runs
--   complete as it was, and adds nothing up (a review's upgrade lost two results' cost so).
-- * A budget is checked by the housekeeper's round (every 2 s): a tenant may go over by what its
--   running jobs, and the jobs claimed before the round, cost. A pause holds the jobs at once.
-- * Jobs submitted for a held tenant are held as they are inserted, and a job of a held tenant
--   put back in the queue (a retry, a worker stopping, a rescued lease) is held as it is put
--   back (a trigger on each); the round holds any a transaction begun before the hold let by (a
--   retry's write-back, a submission, committing as the tenant is paused), and until then the
--   claim passes them over (it asks of each job with a tenant it would take whether the tenant is
--   held; fair_claim and tenants_due too): a
--   review's retries started 27-58 ms after a pause. (Waiting, in the pause, for the write-backs
--   of the tenant's running jobs deadlocked with them: a second review.) The round passes over a
--   tenant whose limits another transaction is changing, and waits a second at most for a lock.
--   A held job given a new run_at (a drain's release of postponed jobs) stays held, to run from
--   then when it is released.
-- * Held jobs leave the fair claim's tenant index (jobs_tenant_queued_idx, made again): 2,000
--   held tenants made each claim walk them all (21 ms a claim, against 1.4 ms, in a review).
--   claim, fair_claim, tenants_due and several_tenants are restated to read it; claim also so
--   that sessions that ran it before this migration compile it again: its RETURN QUERY SELECT *
--   FROM fair_claim(…) kept the jobs' columns of before the new one, and every claim of the
--   workers running through the upgrade failed (42804) until they were restarted.
-- * cancel_tenant_jobs ends every queued and held job of a tenant in one statement (id by id,
--   100,000 took a walkthrough two minutes), and asks the workers running its others to stop.
-- * job_status says 'held'; queue_depth counts held jobs apart (a new last column, held), not as
--   scheduled.
-- * The queue-wait and backlog-deadline alerts leave held jobs out: they wait for their tenant,
--   as an operator or a budget decided, not for the fleet (a paused tenant's jobs with deadlines
--   paged as at risk, and its interactive jobs put back to wait for a model raised the queue wait).
--   A new rule, tenant_budget, raises for a tenant held for its budget, and clears as it is released.
--
-- complete is 0087's otherwise, alert_measurements 0078's, and claim, fair_claim, tenants_due
-- and several_tenants 0082's (but for held jobs and tenants).

SET LOCAL ROLE switchyard_admin;

ALTER TABLE switchyard.jobs ADD COLUMN held_run_at timestamptz;
COMMENT ON COLUMN switchyard.jobs.held_run_at IS
    'A held job''s own run_at, while its tenant is paused or over its budget (run_at is then ''infinity'').';
CREATE INDEX jobs_held_idx ON switchyard.jobs (tenant) WHERE held_run_at IS NOT NULL;
DROP INDEX switchyard.jobs_tenant_queued_idx;
CREATE INDEX jobs_tenant_queued_idx ON switchyard.jobs (tenant, run_at, id)
    WHERE lease_owner IS NULL AND tenant IS NOT NULL AND held_run_at IS NULL;

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
-- The held tenants, which every claim reads (as a hashed set, or a probe per job with a tenant).
CREATE INDEX tenant_limits_held_idx ON switchyard.tenant_limits (tenant) WHERE held_reason IS NOT NULL;
COMMENT ON TABLE switchyard.tenant_limits IS
    'Per tenant: paused, and a budget in USD per UTC day or month; held_reason says why its jobs are held.';

CREATE TABLE switchyard.tenant_spend (
    tenant text    NOT NULL,
    day    date    NOT NULL,
    cost   numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, day)
);
COMMENT ON TABLE switchyard.tenant_spend IS
    'What each tenant''s results cost per UTC day (USD), added up by the housekeeper from tenant_spend_pending.';

CREATE TABLE switchyard.tenant_spend_pending (
    tenant text    NOT NULL,
    day    date    NOT NULL,
    cost   numeric NOT NULL
);
-- The round reads it per tenant, dead rows and all until it is vacuumed (200,000 left by a
-- housekeeper's outage made a round take 13 s without it).
CREATE INDEX tenant_spend_pending_tenant_idx ON switchyard.tenant_spend_pending (tenant, day);
-- When the housekeeper is to count this month's spending from the results again (see above).
CREATE TABLE switchyard.tenant_spend_recount (due_at timestamptz NOT NULL);

-- Whether p_tenant is held now. The claim asks the same of a job's tenant before it takes the job
-- (written out there: a function with a subquery is not inlined, and a call per row cost the
-- picking query 0.4 ms in a review), so that a job put back or submitted unheld as its tenant was
-- being held (its transaction begun before the hold, committed after) is not claimed in the
-- moments until the housekeeper's round holds it (a review's retries started 27-58 ms after a
-- pause). A probe of a small table's key.
CREATE FUNCTION switchyard.tenant_is_held(p_tenant text) RETURNS boolean
    LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT FROM switchyard.tenant_limits l WHERE l.tenant = p_tenant AND l.held_reason IS NOT NULL)
$$;
REVOKE ALL ON FUNCTION switchyard.tenant_is_held(text) FROM PUBLIC;

-- 0082's, reading the index above: held jobs are not there.
-- The tenants with jobs due in the partition, up to p_limit, in name order after p_after (from
-- the first when NULL) and not past p_through: a loose index scan of jobs_tenant_queued_idx, one
-- probe per tenant, whose first entry is its earliest run_at. A tenant whose jobs are all
-- scheduled later (or postponed to a price window) is passed over, not given a turn.
CREATE OR REPLACE FUNCTION switchyard.tenants_due(p_priority text, p_after text, p_through text, p_limit integer)
    RETURNS SETOF text
    LANGUAGE sql STABLE SET search_path = pg_catalog, switchyard, pg_temp AS $$
    WITH RECURSIVE walk(tenant, run_at) AS (
        (SELECT j.tenant, j.run_at FROM switchyard.jobs j
         WHERE j.priority = p_priority AND j.lease_owner IS NULL AND j.held_run_at IS NULL
               AND j.tenant > coalesce(p_after, '')
               AND (p_through IS NULL OR j.tenant <= p_through)
         ORDER BY j.tenant, j.run_at LIMIT 1)
        UNION ALL
        SELECT next.tenant, next.run_at FROM walk w CROSS JOIN LATERAL (
            SELECT j.tenant, j.run_at FROM switchyard.jobs j
            WHERE j.priority = p_priority AND j.lease_owner IS NULL AND j.held_run_at IS NULL AND j.tenant > w.tenant
                  AND (p_through IS NULL OR j.tenant <= p_through)
            ORDER BY j.tenant, j.run_at LIMIT 1) next
    )
    SELECT walk.tenant FROM walk
    WHERE walk.run_at <= now()
          AND NOT EXISTS (SELECT FROM switchyard.tenant_limits h WHERE h.tenant = walk.tenant AND h.held_reason IS NOT NULL)
    LIMIT p_limit
$$;

-- Whether two tenants or more have jobs queued in the partition: two probes of
-- jobs_tenant_queued_idx (its least and greatest tenant). Under a snapshot another session
-- holds, those probes step over the index entries of every job of the tenant claimed since
-- (a review: 6 ms a claim, 40,000 entries, for a queue of one tenant), so a session that found
-- fewer than two asks again only a second later (switchyard.one_tenant_at_<priority>).
CREATE OR REPLACE FUNCTION switchyard.several_tenants(p_priority text) RETURNS boolean
    LANGUAGE plpgsql SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    checked_setting constant text := 'switchyard.one_tenant_at_' || p_priority;
    checked_at constant text := current_setting(checked_setting, true);
    now_s constant double precision := extract(epoch FROM clock_timestamp());
    several boolean;
BEGIN
    IF coalesce(checked_at, '') <> '' AND now_s - checked_at::double precision BETWEEN 0 AND 1 THEN
        RETURN false;
    END IF;
    IF p_priority = 'interactive' THEN
        SELECT min(j.tenant) <> max(j.tenant) INTO several FROM switchyard.jobs_interactive j
        WHERE j.lease_owner IS NULL AND j.tenant IS NOT NULL AND j.held_run_at IS NULL;
    ELSE
        SELECT min(j.tenant) <> max(j.tenant) INTO several FROM switchyard.jobs_background j
        WHERE j.lease_owner IS NULL AND j.tenant IS NOT NULL AND j.held_run_at IS NULL;
    END IF;
    several := coalesce(several, false);
    PERFORM set_config(checked_setting, CASE WHEN several THEN '' ELSE now_s::text END, false);
    RETURN several;
END $$;

-- Claims up to p_slots jobs of the partition, shared among the tenants with jobs due there: up to
-- one tenant per slot (at least two), in name order from after the last tenant this session's
-- previous claim reached, round after round, a job of each tenant in its turn; each tenant's in
-- its queue order. The queue's order counts as one more (the caller's statement after this one
-- claims it): the slots kept for it are a tenant's share, floor(slots / (tenants + 1)), and with
-- fewer slots than that, one slot every so many claims of the session
-- (switchyard.fair_turn_<priority>), so jobs at the head of the queue, an operator's without a
-- tenant among them, are not held behind the tenants' shares (a review's 20 jobs without a
-- tenant, at the head, expired behind two tenants' 3,000). Claims nothing unless two tenants or
-- more have jobs due.
CREATE OR REPLACE FUNCTION switchyard.fair_claim(p_priority text, p_worker text, p_slots integer, p_lease_seconds double precision)
    RETURNS SETOF switchyard.jobs
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    position_setting constant text := 'switchyard.fair_after_' || p_priority;
    turn_setting constant text := 'switchyard.fair_turn_' || p_priority;
    after constant text := nullif(current_setting(position_setting, true), '');
    visits constant integer := greatest(p_slots, 2);
    tenants text[];
    turn bigint;
    kept integer;
    slots integer;
    share integer;
BEGIN
    IF p_slots <= 0 THEN
        RETURN;
    END IF;
    -- The tenants after the last one reached, then from the first.
    tenants := ARRAY(SELECT switchyard.tenants_due(p_priority, after, NULL, visits));
    IF after IS NOT NULL AND cardinality(tenants) < visits THEN
        tenants := tenants || ARRAY(SELECT switchyard.tenants_due(p_priority, NULL, after, visits - cardinality(tenants)));
    END IF;
    IF cardinality(tenants) < 2 THEN
        RETURN;
    END IF;
    -- The queue's order's turn.
    IF p_slots > cardinality(tenants) THEN
        kept := p_slots / (cardinality(tenants) + 1);
    ELSE
        turn := coalesce(nullif(current_setting(turn_setting, true), '')::bigint, 0) + 1;
        PERFORM set_config(turn_setting, turn::text, false);
        kept := CASE WHEN turn % ceil((cardinality(tenants) + 1)::numeric / p_slots)::bigint = 0 THEN 1 ELSE 0 END;
    END IF;
    slots := p_slots - kept;
    IF slots <= 0 THEN
        RETURN;
    END IF;
    -- The next claim starts after the last tenant whose first turn this one reaches.
    PERFORM set_config(position_setting, tenants[least(slots, cardinality(tenants))], false);
    share := ceil(slots::numeric / cardinality(tenants));
    RETURN QUERY
    WITH picked AS (
        SELECT turns.id FROM (
            SELECT x.id, t.ord, row_number() OVER (PARTITION BY t.ord ORDER BY x.run_at, x.id) AS turn
            FROM unnest(tenants) WITH ORDINALITY AS t(tenant, ord)
            CROSS JOIN LATERAL (
                SELECT j.id, j.run_at FROM switchyard.jobs j
                WHERE j.priority = p_priority AND j.tenant = t.tenant AND j.lease_owner IS NULL
                      AND j.held_run_at IS NULL AND j.run_at <= now()
                      AND NOT EXISTS (SELECT FROM switchyard.tenant_limits h WHERE h.tenant = j.tenant AND h.held_reason IS NOT NULL) AND (j.deadline IS NULL OR j.deadline > now())
                ORDER BY j.run_at, j.id
                LIMIT share
                FOR NO KEY UPDATE SKIP LOCKED
            ) x
        ) turns
        ORDER BY turns.turn, turns.ord
        LIMIT slots
    )
    UPDATE switchyard.jobs j
    SET lease_owner = p_worker, lease_expires_at = now() + make_interval(secs => p_lease_seconds),
        attempt = j.attempt + 1, claimed_at = now()
    FROM picked WHERE j.id = picked.id AND j.priority = p_priority
    RETURNING j.*;
END $$;

REVOKE ALL ON FUNCTION switchyard.tenants_due(text, text, text, integer), switchyard.several_tenants(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION switchyard.fair_claim(text, text, integer, double precision) FROM PUBLIC;

CREATE OR REPLACE FUNCTION switchyard.claim(
    p_worker text, p_free_slots integer, p_background_slots integer, p_lease_seconds double precision,
    p_interactive_after_run_at timestamptz DEFAULT NULL, p_interactive_after_id bigint DEFAULT NULL,
    p_background_after_run_at timestamptz DEFAULT NULL, p_background_after_id bigint DEFAULT NULL
) RETURNS SETOF switchyard.jobs
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    claimed integer := 0;
    in_order integer;
    urgent integer := 0;
    shared integer;
    fair constant boolean := switchyard.setting('fair_tenants') IS DISTINCT FROM 'false';
    most_attempts integer;
    override double precision;
    per_attempt double precision;
    gate_open boolean;
    -- No cursor: from the head. (A run_at of -infinity with the lowest id is the one position
    -- this cannot reach; no job has both.)
    interactive_after constant timestamptz := coalesce(p_interactive_after_run_at, '-infinity');
    interactive_after_id constant bigint := coalesce(p_interactive_after_id, -9223372036854775808);
    background_after constant timestamptz := coalesce(p_background_after_run_at, '-infinity');
    background_after_id constant bigint := coalesce(p_background_after_id, -9223372036854775808);
BEGIN
    -- A lease is renewed by heartbeats, so none need be long: at most an hour (sql/0086).
    p_lease_seconds := least(p_lease_seconds, 3600);
    IF p_free_slots <= 0 THEN
        RETURN;
    END IF;
    -- Each tenant with jobs due its share of the slots first (fair_claim), then the queue's order.
    IF fair AND switchyard.several_tenants('interactive') THEN
        RETURN QUERY SELECT * FROM switchyard.fair_claim('interactive', p_worker, p_free_slots, p_lease_seconds);
        GET DIAGNOSTICS claimed = ROW_COUNT;
    END IF;
    IF claimed >= p_free_slots THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH picked AS (
        SELECT j.id FROM switchyard.jobs_interactive j
        WHERE j.lease_owner IS NULL AND (j.run_at, j.id) > (interactive_after, interactive_after_id)
              AND j.run_at <= now() AND (j.deadline IS NULL OR j.deadline > now())
              AND (j.tenant IS NULL OR NOT EXISTS (SELECT FROM switchyard.tenant_limits h WHERE h.tenant = j.tenant AND h.held_reason IS NOT NULL))
        ORDER BY j.run_at, j.id
        LIMIT p_free_slots - claimed
        FOR NO KEY UPDATE SKIP LOCKED
    )
    UPDATE switchyard.jobs_interactive j
    SET lease_owner = p_worker, lease_expires_at = now() + make_interval(secs => p_lease_seconds),
        attempt = j.attempt + 1, claimed_at = now()
    FROM picked WHERE j.id = picked.id
    RETURNING j.*;
    GET DIAGNOSTICS in_order = ROW_COUNT;
    claimed := claimed + in_order;
    IF p_background_slots <= 0 OR claimed >= p_free_slots THEN
        RETURN;
    END IF;
    SELECT g.is_open INTO gate_open FROM switchyard.background_gate(now()) g;
    IF gate_open IS NOT TRUE AND switchyard.setting('background_paused') IS NOT DISTINCT FROM 'true' THEN
        RETURN;
    END IF;
    -- Open or closed, first what cannot wait (found by the deadline index): open, a job whose
    -- deadline is near waited its turn behind the backlog's and expired (a walkthrough's 30 s
    -- jobs behind 3,000 without a deadline, all 50 expired); closed, only these run.
    -- The scan is bounded by the widest horizon of the attempts queued jobs with a deadline
    -- have (one probe of jobs_deadline_attempts_idx; none: no scan), not of 100 attempts (8 h),
    -- and each job's own horizon is escalation_horizon's formula inline: with 100,000 jobs due in
    -- 3 h, the function per row made each claim read them all, 2.2 s, whether any was near.
    SELECT max(j.max_attempts) INTO most_attempts
    FROM switchyard.jobs_background j WHERE j.deadline IS NOT NULL AND j.lease_owner IS NULL;
    IF most_attempts IS NOT NULL THEN
        SELECT t.per_attempt, t.override INTO per_attempt, override FROM switchyard.horizon_terms() t;
        RETURN QUERY
        WITH picked AS (
            SELECT j.id FROM switchyard.jobs_background j
            WHERE j.lease_owner IS NULL AND j.run_at <= now() AND j.deadline > now()
              AND j.deadline <= now() + switchyard.escalation_horizon(most_attempts)
              -- escalation_horizon(j.max_attempts), without its subquery per row.
              AND j.deadline <= now() + make_interval(secs => switchyard.horizon_seconds(per_attempt, override, j.max_attempts))
              AND (j.tenant IS NULL OR NOT EXISTS (SELECT FROM switchyard.tenant_limits h WHERE h.tenant = j.tenant AND h.held_reason IS NOT NULL))
            ORDER BY j.deadline, j.id
            LIMIT least(p_free_slots - claimed, p_background_slots)
            FOR NO KEY UPDATE SKIP LOCKED
        )
        UPDATE switchyard.jobs_background j
        SET lease_owner = p_worker, lease_expires_at = now() + make_interval(secs => p_lease_seconds),
            attempt = j.attempt + 1, claimed_at = now()
        FROM picked WHERE j.id = picked.id
        RETURNING j.*;
        GET DIAGNOSTICS urgent = ROW_COUNT;
    END IF;
    IF gate_open AND fair AND claimed + urgent < p_free_slots AND urgent < coalesce(p_background_slots, p_free_slots)
       AND switchyard.several_tenants('background') THEN
        RETURN QUERY SELECT * FROM switchyard.fair_claim('background', p_worker,
                                                         least(p_free_slots - claimed, p_background_slots) - urgent,
                                                         p_lease_seconds);
        GET DIAGNOSTICS shared = ROW_COUNT;
        urgent := urgent + shared;
    END IF;
    IF gate_open AND claimed + urgent < p_free_slots AND urgent < coalesce(p_background_slots, p_free_slots) THEN
        -- Then the queue's order. (A worker's cursor does not move past a job of the deadline
        -- path, nor past a claim's jobs of several tenants: ClaimCursor.)
        RETURN QUERY
        WITH picked AS (
            SELECT j.id FROM switchyard.jobs_background j
            WHERE j.lease_owner IS NULL AND (j.run_at, j.id) > (background_after, background_after_id)
                  AND j.run_at <= now() AND (j.deadline IS NULL OR j.deadline > now())
                  AND (j.tenant IS NULL OR NOT EXISTS (SELECT FROM switchyard.tenant_limits h WHERE h.tenant = j.tenant AND h.held_reason IS NOT NULL))
            ORDER BY j.run_at, j.id
            LIMIT least(p_free_slots - claimed, p_background_slots) - urgent
            FOR NO KEY UPDATE SKIP LOCKED
        )
        UPDATE switchyard.jobs_background j
        SET lease_owner = p_worker, lease_expires_at = now() + make_interval(secs => p_lease_seconds),
            attempt = j.attempt + 1, claimed_at = now()
        FROM picked WHERE j.id = picked.id
        RETURNING j.*;
    END IF;
END $$;

-- fair_tenants is true or false, checked as alert_opens_breaker is; setting_rule is 0073's otherwise.


COMMENT ON TABLE switchyard.tenant_spend_pending IS
    'Write-backs'' spending per tenant and day, not yet added to tenant_spend (every housekeeper round).';

-- Submitters read their own tenants' limits and spending (dispatcher tenants, and why a job is held).
-- Who paused a tenant is the operators' to know (paused_by is left out).
GRANT SELECT (tenant, paused_at, budget, budget_period, held_reason, held_since, updated_at)
    ON switchyard.tenant_limits TO switchyard_submitter;
GRANT SELECT ON switchyard.tenant_spend, switchyard.tenant_spend_pending TO switchyard_submitter;
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

-- Counts every tenant's spending since p_since (a UTC day; this month's first by default) again
-- from the results, in place of what was added up for those days: one statement, so the
-- write-backs' rows it removes from tenant_spend_pending are exactly those whose results it
-- counts (the others, and their results, committed after it began). Results pruned are not
-- counted (a day with none left keeps what was added up). The housekeeper's adding up waits for
-- it (the table's lock). Returns the tenants' days it wrote.
CREATE FUNCTION switchyard.recount_tenant_spend(
    p_since date DEFAULT date_trunc('month', now() AT TIME ZONE 'UTC')::date
) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    written integer;
BEGIN
    LOCK TABLE switchyard.tenant_spend IN SHARE ROW EXCLUSIVE MODE;
    WITH moved AS (
        DELETE FROM switchyard.tenant_spend_pending p WHERE p.day >= p_since
    )
    INSERT INTO switchyard.tenant_spend AS s (tenant, day, cost)
    SELECT r.tenant, (r.finished_at AT TIME ZONE 'UTC')::date, coalesce(sum(r.cost), 0)
    FROM switchyard.results r
    WHERE r.tenant IS NOT NULL AND r.finished_at >= p_since::timestamp AT TIME ZONE 'UTC'
    GROUP BY 1, 2
    ON CONFLICT ON CONSTRAINT tenant_spend_pkey DO UPDATE SET cost = EXCLUDED.cost;
    GET DIAGNOSTICS written = ROW_COUNT;
    RETURN written;
END $$;

-- This month's spending so far, and again a minute on (by the housekeeper's round).
SELECT switchyard.recount_tenant_spend();
INSERT INTO switchyard.tenant_spend_recount (due_at) VALUES (now() + interval '1 minute');

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
-- places at most ($1.20, $0.0042), and a smaller one whole (a review's budget of $0.0000001 read $0).
CREATE FUNCTION switchyard.usd(p_amount numeric) RETURNS text
    LANGUAGE sql IMMUTABLE AS $$
    SELECT '$' || CASE WHEN abs(p_amount) >= 1 THEN to_char(round(p_amount, 2), 'FM999999999999990.00')
                       WHEN round(p_amount, 6) = 0 THEN trim_scale(p_amount)::text
                       ELSE trim_scale(round(p_amount, 6))::text END
$$;

-- A word as a shell takes it back, for the commands a message suggests: as it is when plain, else
-- in single quotes (a review's tenant "acme corp; rm -rf" was printed bare in a command to paste).
CREATE FUNCTION switchyard.shell_word(p_word text) RETURNS text
    LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_word ~ '^[A-Za-z0-9_.,:@%+=/-]+$' THEN p_word
                ELSE '''' || replace(p_word, '''', '''\''''') || '''' END
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
                      l.tenant, to_char(l.paused_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
                      switchyard.shell_word(l.tenant));
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
                  switchyard.shell_word(l.tenant));
END $$;

-- Holds p_tenant's queued jobs that are not held yet; returns how many.
CREATE FUNCTION switchyard.hold_tenant_jobs(p_tenant text) RETURNS integer
    LANGUAGE plpgsql SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    held integer;
BEGIN
    -- Never waiting for a job's row: one a claim under way has locked is that claim's (a plain
    -- UPDATE waited for it, kept the row locked once it was claimed, and deadlocked with the
    -- write-backs of the tenant's running jobs: a review's pauses failed so 6% of the time). One
    -- put back unheld meanwhile waits, unclaimed, for the housekeeper's round.
    UPDATE switchyard.jobs j SET held_run_at = j.run_at, run_at = 'infinity'
    FROM (SELECT q.id, q.priority FROM switchyard.jobs q
          WHERE q.tenant = p_tenant AND q.lease_owner IS NULL AND q.held_run_at IS NULL AND q.run_at < 'infinity'
          FOR NO KEY UPDATE SKIP LOCKED) free
    WHERE j.id = free.id AND j.priority = free.priority;
    GET DIAGNOSTICS held = ROW_COUNT;
    RETURN held;
END $$;

-- Lets p_tenant's held jobs run again, each from its own run_at or now, whichever is later;
-- returns how many. A job's wait starts again then (waiting_since, which a job put back to wait
-- for a model had, is cleared): the time it was held is its tenant's, not the queue's, in its
-- result's queue_wait_ms and the queue-wait alert.
CREATE FUNCTION switchyard.release_tenant_jobs(p_tenant text) RETURNS integer
    LANGUAGE plpgsql SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    released integer;
BEGIN
    -- Not waiting for a row either: one locked (a cancel under way) is the round's to release.
    UPDATE switchyard.jobs j SET run_at = greatest(j.held_run_at, now()), held_run_at = NULL, waiting_since = NULL
    FROM (SELECT q.id, q.priority FROM switchyard.jobs q WHERE q.tenant = p_tenant AND q.held_run_at IS NOT NULL
          FOR NO KEY UPDATE SKIP LOCKED) free
    WHERE j.id = free.id AND j.priority = free.priority;
    GET DIAGNOSTICS released = ROW_COUNT;
    IF released > 0 THEN
        PERFORM pg_notify('switchyard_jobs', '');
    END IF;
    RETURN released;
END $$;

-- Brings p_tenant's jobs in line with its limits: held if it is paused or over its budget (and
-- any of its queued jobs not held yet), released if it no longer is. The row is locked, so a
-- change and the housekeeper's round do this one after the other; the round (p_skip_locked)
-- passes over a row another transaction holds (an operator's change left open stalled every
-- round, rescues and alerts with it, for as long). A row that limits nothing any more is deleted.
-- Returns the change made, if any: 'held', 'released' or 'still held' (jobs found that were not
-- held yet), with the jobs it moved and the reason. (The claim never takes a held tenant's job:
-- one that came back to the queue unheld as the hold was made waits for this, unclaimed.)
CREATE FUNCTION switchyard.apply_tenant_limits(p_tenant text, p_skip_locked boolean DEFAULT false,
                                               OUT change text, OUT jobs integer, OUT reason text)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    l switchyard.tenant_limits;
    limited boolean;
BEGIN
    jobs := 0;
    IF p_skip_locked THEN
        SELECT * INTO l FROM switchyard.tenant_limits t WHERE t.tenant = p_tenant FOR UPDATE SKIP LOCKED;
        limited := FOUND;
        IF NOT limited AND EXISTS (SELECT FROM switchyard.tenant_limits t WHERE t.tenant = p_tenant) THEN
            RETURN;  -- another transaction is changing it: the next round
        END IF;
    ELSE
        SELECT * INTO l FROM switchyard.tenant_limits t WHERE t.tenant = p_tenant FOR UPDATE;
        limited := FOUND;
    END IF;
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

-- The housekeeper's round: adds the write-backs' spending up, then brings every tenant whose
-- limits call for a change in line with them, holds the jobs a held tenant's transactions let by,
-- and releases held jobs of a tenant with no hold (its limits deleted by hand). A tenant with
-- nothing to change is read, not locked: a round of 2,000 limited tenants locked and wrote each
-- row (0.4 s every 2 s, in a review). Waits at most a second for any lock (the function's
-- lock_timeout), failing the round rather than stalling it. Returns the changes made.
CREATE FUNCTION switchyard.enforce_tenant_limits() RETURNS TABLE (tenant text, change text, jobs integer, reason text)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp SET lock_timeout = '1s' AS $$
DECLARE
    l switchyard.tenant_limits;
    name text;
    applied record;
    stragglers integer;
BEGIN
    -- A recount due (after the upgrade: see above) first; it adds up what is pending too.
    IF EXISTS (SELECT FROM switchyard.tenant_spend_recount r WHERE r.due_at <= now()) THEN
        PERFORM switchyard.recount_tenant_spend();
        DELETE FROM switchyard.tenant_spend_recount r WHERE r.due_at <= now();
    END IF;
    -- Taken in turn with a recount (an operator's), which would count rows added here twice.
    LOCK TABLE switchyard.tenant_spend IN SHARE ROW EXCLUSIVE MODE;
    WITH moved AS (DELETE FROM switchyard.tenant_spend_pending p RETURNING p.*)
    INSERT INTO switchyard.tenant_spend AS s (tenant, day, cost)
    SELECT m.tenant, m.day, sum(m.cost) FROM moved m GROUP BY m.tenant, m.day
    ON CONFLICT ON CONSTRAINT tenant_spend_pkey DO UPDATE SET cost = s.cost + EXCLUDED.cost;
    FOR l IN SELECT * FROM switchyard.tenant_limits t ORDER BY t.tenant LOOP
        name := l.tenant;
        IF switchyard.tenant_hold_reason(l) IS NOT DISTINCT FROM l.held_reason THEN
            -- Nothing to change; a held tenant's jobs that came back unheld are held (if it is
            -- still held: resumed since this loop's snapshot, its jobs were held again, in a review).
            stragglers := CASE WHEN l.held_reason IS NOT NULL AND switchyard.tenant_is_held(name)
                               THEN switchyard.hold_tenant_jobs(name) ELSE 0 END;
            IF stragglers > 0 THEN
                tenant := name;
                change := 'still held';
                jobs := stragglers;
                reason := l.held_reason;
                RETURN NEXT;
            END IF;
            CONTINUE;
        END IF;
        applied := switchyard.apply_tenant_limits(name, true);
        IF applied.change IS NOT NULL THEN
            tenant := name;
            change := applied.change;
            jobs := applied.jobs;
            reason := applied.reason;
            RETURN NEXT;
        END IF;
    END LOOP;
    -- Held jobs of a tenant with no hold: one probe of jobs_held_idx per such tenant.
    FOR name IN
        WITH RECURSIVE held(tenant) AS (
            (SELECT j.tenant FROM switchyard.jobs j WHERE j.held_run_at IS NOT NULL ORDER BY j.tenant LIMIT 1)
            UNION ALL
            SELECT next.tenant FROM held h CROSS JOIN LATERAL (
                SELECT j.tenant FROM switchyard.jobs j WHERE j.held_run_at IS NOT NULL AND j.tenant > h.tenant
                ORDER BY j.tenant LIMIT 1) next
        )
        SELECT h.tenant FROM held h WHERE NOT switchyard.tenant_is_held(h.tenant)
    LOOP
        applied := switchyard.apply_tenant_limits(name, true);
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

-- Sets p_tenant's budget, in USD per p_period ('day' or 'month', UTC; by default the period its
-- budget has, else a month), or removes it (NULL). Returns the change it made to the tenant's
-- jobs, as apply_tenant_limits says it.
CREATE FUNCTION switchyard.set_tenant_budget(p_tenant text, p_budget numeric, p_period text DEFAULT NULL,
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
    -- A new amount keeps the period (a review's daily budget became monthly when raised).
    p_period := coalesce(p_period, (SELECT l.budget_period FROM switchyard.tenant_limits l WHERE l.tenant = p_tenant),
                         'month');
    IF p_budget IS NOT NULL AND p_period NOT IN ('day', 'month') THEN
        PERFORM switchyard.reject(format('a budget is per day or per month (got %s)', p_period),
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

REVOKE ALL ON FUNCTION switchyard.tenant_spent(text, date), switchyard.usd(numeric), switchyard.shell_word(text),
    switchyard.recount_tenant_spend(date), switchyard.tenant_hold_reason(switchyard.tenant_limits, timestamptz),
    switchyard.hold_tenant_jobs(text), switchyard.release_tenant_jobs(text), switchyard.apply_tenant_limits(text, boolean),
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
            INSERT INTO switchyard.tenant_spend_pending (tenant, day, cost)
            SELECT s.tenant, (s.finished_at AT TIME ZONE 'UTC')::date, coalesce(sum(s.cost), 0)
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
    -- Read once, not per call: each call is compared with its target.
    primary_target constant double precision := switchyard.numeric_setting('alert_latency_target_ms_primary');
    secondary_target constant double precision := switchyard.numeric_setting('alert_latency_target_ms_secondary');
    tertiary_target constant double precision := switchyard.numeric_setting('alert_latency_target_ms_tertiary');
    breaker_limit constant double precision := switchyard.numeric_setting('alert_breaker_open_seconds');
    -- How long a closed breaker must stay closed to end an incident (twice its open time).
    settle constant interval :=
        make_interval(secs => 2 * coalesce(switchyard.numeric_setting('breaker_open_seconds'), 30));
    failure_limit constant double precision := switchyard.numeric_setting('alert_job_failure_rate');
    failure_window constant interval :=
        make_interval(secs => coalesce(switchyard.numeric_setting('alert_job_failure_window_seconds'), 300));
    failure_min_jobs constant integer := coalesce(switchyard.numeric_setting('alert_job_failure_min_jobs'), 10)::integer;
    -- escalation_horizon's terms (sql/0077), read once: a job's horizon is horizon_seconds of them.
    per_attempt constant double precision := (SELECT t.per_attempt FROM switchyard.horizon_terms() t);
    override constant double precision := (SELECT t.override FROM switchyard.horizon_terms() t);
BEGIN
    -- A model's error rate.
    IF error_limit IS NOT NULL THEN
        RETURN QUERY
        -- Since a closing, too few calls to judge: no figure (status showed a held alert "now 0.0%").
        SELECT 'error_rate'::text, c.model,
               CASE WHEN c.calls = 0 OR (c.closed_at IS NOT NULL AND c.calls < min_calls) THEN NULL
                    ELSE c.errors::double precision / c.calls END,
               error_limit,
               CASE WHEN c.calls >= min_calls AND c.calls > 0
                    THEN c.errors::double precision / c.calls > error_limit
                         AND switchyard.rate_lower_bound(c.errors, c.calls) > error_limit
                    ELSE false END,
               -- Since a closing, recovered only on as many calls as it takes to raise it: a model
               -- still failing 5% answered its first calls after the closing, and the alert
               -- cleared (no calls since read as none to measure) to be raised again, and its
               -- breaker opened again, a cycle (a review).
               CASE WHEN c.calls = 0 THEN c.closed_at IS NULL
                    WHEN c.closed_at IS NULL THEN c.errors::double precision / c.calls <= error_limit
                    WHEN c.calls >= min_calls THEN c.errors::double precision / c.calls <= error_limit
                    ELSE false END,
               CASE WHEN c.closed_at IS NOT NULL AND (c.calls < min_calls OR c.calls = 0)
                    THEN format('model %s: its breaker closed at %s; %s %s since (%s errors), too few to judge', c.model,
                                to_char(c.closed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"'), c.calls,
                                CASE WHEN c.calls = 1 THEN 'call' ELSE 'calls' END, c.errors)
                    ELSE format('model %s: %s%% of %s calls ended in an error %s (limit %s%%)', c.model,
                                round(100.0 * c.errors / c.calls, 1), c.calls,
                                CASE WHEN c.closed_at IS NULL THEN 'over the last ' || switchyard.window_text(error_window)
                                     ELSE 'since its breaker closed at '
                                          || to_char(c.closed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"') END,
                                trim_scale(round(100 * error_limit::numeric, 2))) END
        -- Not rate limits: a provider asking to slow down is what the pause sees to (the breaker
        -- does not count those that ask for a wait either), and a soak's model answering 95% of
        -- calls with 5% 429s was paged and taken out of rotation by this alert.
        -- Not the calls made before a closed breaker last closed: the breaker saw those errors
        -- and took the model out for them, and its probes have since answered (or an operator
        -- closed it). A walkthrough's model, healthy again and 192 of 192 calls answered since its
        -- probes closed the breaker, was taken out again two minutes later: the busy minutes
        -- before the outage aged out of the window, and the outage's errors, its failed probes
        -- among them, came to 5.8% of what was left.
        FROM (SELECT k.model, count(*) FILTER (WHERE s.since) AS calls,
                     count(*) FILTER (WHERE s.since AND k.model_error AND k.outcome <> 'rate_limited') AS errors,
                     max(h.closed_at) AS closed_at
              FROM switchyard.calls k
              LEFT JOIN switchyard.model_health h
                  ON h.model = k.model AND h.state = 'closed' AND h.closed_at > p_at - error_window AND h.closed_at <= p_at
              CROSS JOIN LATERAL (
                  SELECT h.closed_at IS NULL
                         OR coalesce(k.called_at + make_interval(secs => coalesce(k.latency_ms, 0) / 1000), k.finished_at)
                            > h.closed_at AS since) s
              WHERE k.finished_at > p_at - error_window AND k.finished_at <= p_at AND k.outcome NOT IN ('cancelled', 'deadline')
                    AND (k.job_created_at > p_at - error_window
                         OR coalesce(k.called_at + make_interval(secs => coalesce(k.latency_ms, 0) / 1000), k.finished_at)
                            > p_at - error_window)
              GROUP BY k.model) c;
    END IF;

    -- A model's P95 against its target; per model, the group of calls furthest over its target
    -- among those with enough calls. A call's target is its rule's max_latency_ms when the trail
    -- records one (target_ms, a primary call of a rule that sets it), else its tier's setting; a
    -- tier's setting turned off leaves that tier's calls unjudged. A P95 over the target means
    -- over 5% of the calls took longer (a timed-out call is recorded just over its timeout): raised
    -- only when that share is over 5% with 95% confidence (rate_lower_bound), not by a few calls
    -- of a model whose tail reaches its timeout now and then.
    RETURN QUERY
    SELECT DISTINCT ON (t.model) 'latency'::text, t.model, t.p95, t.target, t.breached, t.p95 <= t.target,
           format('model %s: P95 latency %s ms as %s over the last %s (target %s ms%s, %s calls)', t.model,
                  round(t.p95::numeric, 1), t.tier, switchyard.window_text(latency_window), round(t.target::numeric),
                  CASE WHEN t.rule_target IS NOT NULL THEN ': its rule''s max_latency_ms' ELSE '' END, t.calls)
    FROM (SELECT g.*, g.calls >= min_calls AND g.p95 > g.target
                      AND switchyard.rate_lower_bound(g.slow, g.calls) > 0.05 AS breached
          FROM (SELECT c.model, c.tier, c.target_ms AS rule_target, count(*) AS calls,
                       count(*) FILTER (WHERE c.latency_ms > c.target) AS slow,
                       percentile_cont(0.95) WITHIN GROUP (ORDER BY c.latency_ms) AS p95,
                       min(c.target) AS target
                FROM (SELECT k.model, k.tier, k.target_ms, k.latency_ms,
                             CASE WHEN tier_target IS NOT NULL THEN coalesce(k.target_ms, tier_target) END AS target
                      FROM switchyard.calls k
                      CROSS JOIN LATERAL (SELECT CASE k.tier WHEN 'primary' THEN primary_target
                                                             WHEN 'secondary' THEN secondary_target
                                                             ELSE tertiary_target END AS tier_target) s
                      WHERE k.finished_at > p_at - latency_window AND k.finished_at <= p_at
                            AND (k.job_created_at > p_at - latency_window
                                 OR coalesce(k.called_at + make_interval(secs => coalesce(k.latency_ms, 0) / 1000),
                                             k.finished_at) > p_at - latency_window)
                            AND k.outcome IN ('succeeded', 'timeout') AND k.latency_ms IS NOT NULL
                            AND k.tier IN ('primary', 'secondary', 'tertiary')) c
                GROUP BY c.model, c.tier, c.target_ms) g) t
    WHERE t.target IS NOT NULL
    -- A breached group comes first (a small group far over its target that the confidence rule
    -- spares must not hide a large one over it), then one with the calls to judge it: a few slow
    -- calls in another tier must not stand for a model whose primary calls are over their target.
    ORDER BY t.model, t.breached DESC, t.calls >= min_calls DESC, t.p95 / t.target DESC;

    -- A model of the catalog out of rotation (its breaker open or half-open, opened again by failed
    -- probes) for longer than the limit: an outage that trips the breaker within seconds keeps a
    -- model under the error-rate rule's minimum of calls, and raised no alert at all. A flapping
    -- model is one incident: a closing that lasts under twice breaker_open_seconds does not end it
    -- (the trigger keeps unhealthy_since through it; an on-call walkthrough's model failing 30% of
    -- its calls was closed by its probes every 35 s and never raised this), and an alert raised
    -- clears once the breaker has stayed closed that long. Measured for every incident going on,
    -- and for the models with such an alert open, which it clears.
    IF breaker_limit IS NOT NULL THEN
        RETURN QUERY
        SELECT 'breaker'::text, h.model, coalesce(extract(epoch FROM p_at - h.unhealthy_since), 0)::double precision,
               breaker_limit,
               h.state <> 'closed' AND h.unhealthy_since IS NOT NULL
                   AND h.unhealthy_since <= p_at - make_interval(secs => breaker_limit),
               h.unhealthy_since IS NULL OR (h.state = 'closed' AND coalesce(h.closed_at <= p_at - settle, true)),
               CASE WHEN h.unhealthy_since IS NULL OR h.state = 'closed'
                    THEN format('model %s: its breaker is closed', h.model)
                    ELSE format('model %s: out of rotation for %s (breaker %s since %s%s; %s)', h.model,
                                CASE WHEN d.s >= 60 THEN format('%s min %s s', d.s / 60, d.s % 60)
                                     ELSE format('%s s', d.s) END,
                                switchyard.effective_breaker(h.state, h.opened_at),
                                to_char(h.unhealthy_since AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"'),
                                CASE WHEN h.flaps > 0
                                     THEN format(', closed %s %s and opened again within %s', h.flaps,
                                                 CASE WHEN h.flaps = 1 THEN 'time' ELSE 'times' END,
                                                 switchyard.window_text(settle))
                                     ELSE '' END,
                                coalesce(h.reason, 'no reason recorded')) END
        FROM switchyard.model_health h
        JOIN switchyard.models m ON m.name = h.model AND m.enabled
        CROSS JOIN LATERAL (SELECT greatest(floor(extract(epoch FROM p_at - h.unhealthy_since)), 0)::bigint AS s) d
        WHERE (h.unhealthy_since IS NOT NULL AND (h.state <> 'closed' OR h.closed_at > p_at - settle))
           OR EXISTS (SELECT FROM switchyard.alerts a
                      WHERE a.kind = 'breaker' AND a.subject = h.model AND a.cleared_at IS NULL);
    END IF;

    -- Jobs of a task class that failed: every model of its rule kept out for good (a quality floor
    -- the ratings rose past, a ceiling, a disabled model), every fallback failing, deadlines passed
    -- (a retry that could not start before its deadline ends so, whatever failed: left out, an
    -- outage of a rule's only model paged nothing; and a model that hangs on jobs with short
    -- deadlines shows nowhere else). No model alert sees a job that made no call. Not the requests'
    -- own faults (a provider's 400, a prompt too long for every model, one they cannot take, one a
    -- worker cannot read), as the error-rate rule leaves those out; cancelled and expired jobs are
    -- not counted at all.
    -- The most frequent error is named, with one of its messages. One pass over the window's
    -- results, grouped by class and code (a review's 200 classes cost 3 s more with a scan per class).
    IF failure_limit IS NOT NULL THEN
        RETURN QUERY
        WITH codes AS (
            SELECT coalesce(r.task_class, 'unclassified') AS task_class,
                   CASE WHEN r.status = 'failed' THEN coalesce(r.error->>'code', 'no code') END AS code,
                   count(*) AS jobs, max(r.error->>'message') FILTER (WHERE r.status = 'failed') AS message
            FROM switchyard.results r
            WHERE r.finished_at > p_at - failure_window AND r.finished_at <= p_at
                  AND r.status IN ('succeeded', 'failed')
                  AND (r.status = 'succeeded'
                       OR coalesce(r.error->>'code', '') NOT IN
                          ('bad_request', 'context_length_exceeded', 'unsupported_request', 'unreadable_request'))
            GROUP BY 1, 2
        ), classes AS (
            SELECT c.task_class, sum(c.jobs)::bigint AS jobs,
                   coalesce(sum(c.jobs) FILTER (WHERE c.code IS NOT NULL), 0)::bigint AS failures,
                   (array_agg(c.code ORDER BY c.jobs DESC, c.code) FILTER (WHERE c.code IS NOT NULL))[1] AS top_code,
                   (array_agg(c.jobs ORDER BY c.jobs DESC, c.code) FILTER (WHERE c.code IS NOT NULL))[1] AS top_jobs,
                   (array_agg(c.message ORDER BY c.jobs DESC, c.code) FILTER (WHERE c.code IS NOT NULL))[1] AS top_message
            FROM codes c GROUP BY c.task_class
        )
        SELECT 'job_failures'::text, c.task_class, c.failures::double precision / c.jobs, failure_limit,
               c.jobs >= failure_min_jobs AND c.failures::double precision / c.jobs > failure_limit
                   AND switchyard.rate_lower_bound(c.failures, c.jobs) > failure_limit,
               c.failures::double precision / c.jobs <= failure_limit,
               format('task class %s: %s of %s jobs failed over the last %s (%s%%, limit %s%%)', c.task_class,
                      c.failures, c.jobs, switchyard.window_text(failure_window),
                      round(100.0 * c.failures / c.jobs, 1), trim_scale(round(100 * failure_limit::numeric, 2)))
               || CASE WHEN c.top_code IS NULL THEN ''
                       ELSE format('; most often %s (%s)', c.top_code, c.top_jobs)
                            || CASE WHEN coalesce(c.top_message, '') = '' THEN ''
                                    WHEN length(c.top_message) > 300 THEN ': ' || left(c.top_message, 299) || '…'
                                    ELSE ': ' || c.top_message END END
        FROM classes c;
    END IF;

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
                      AND j.held_run_at IS NULL
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
        SELECT 1 FROM switchyard.jobs_background j
        WHERE j.deadline IS NOT NULL AND j.lease_owner IS NULL AND j.held_run_at IS NULL
    ) THEN
        RETURN QUERY
        WITH throughput AS (
            SELECT count(*) / extract(epoch FROM throughput_window) AS per_second
            FROM switchyard.results r
            WHERE r.priority = 'background' AND r.finished_at > p_at - throughput_window AND r.finished_at <= p_at
                  AND r.status <> 'cancelled'
        ), backlog AS (
            -- A job a worker put off to a later time (no price within its ceiling until then, its
            -- escalation point) does not stand in line: most are put off again when they come due,
            -- an hour at a time, without a call. Jobs submitted to run later do, if they come due
            -- before the earliest deadline: a soak's 3,000 submitted for the next day were counted
            -- ahead of a job due in seven minutes, and paged while nothing was queued. (One put off
            -- with a deadline is still at risk if the line ahead of it outlasts that deadline.)
            SELECT count(*) FILTER (WHERE j.run_at <= p_at
                                       OR (j.postponed_at IS NULL
                                           AND j.run_at < (SELECT min(d.deadline) FROM switchyard.jobs_background d
                                                           WHERE d.lease_owner IS NULL AND d.held_run_at IS NULL)))
                       AS jobs,
                   min(j.deadline) AS earliest
            FROM switchyard.jobs_background j
            WHERE j.lease_owner IS NULL AND j.held_run_at IS NULL
        ), drain AS (
            SELECT b.jobs, b.earliest, t.per_second,
                   -- With nothing finished recently there is no rate to go by: only jobs due within
                   -- the measuring window count as at risk (nothing drained in as long).
                   CASE WHEN paused THEN 'infinity'::timestamptz
                        WHEN b.jobs = 0 THEN p_at
                        WHEN t.per_second > 0 THEN p_at + make_interval(secs => b.jobs / t.per_second)
                        ELSE p_at + throughput_window END AS drained_at
            FROM backlog b, throughput t
        ), at_risk AS (
            -- Behind the backlog, a job near its deadline is still claimed first (sql/0077): at
            -- risk only if, from when its escalation horizon begins (or now), the jobs with an
            -- earlier deadline, run first too, are more than the recent throughput starts before
            -- its deadline. A walkthrough's 206 jobs "would miss" behind 2,584: all ran in time.
            -- With no throughput measured, only while no worker is alive to claim them (a worker
            -- starting on a backlog paged 567 jobs that all ran).
            SELECT d.*, r.jobs_at_risk, r.put_off
            FROM drain d
            CROSS JOIN LATERAL (
                SELECT count(*) AS jobs_at_risk,
                       count(*) FILTER (WHERE q.postponed_at IS NOT NULL AND q.run_at > p_at) AS put_off
                FROM (SELECT j.deadline, j.postponed_at, j.run_at, j.max_attempts,
                             row_number() OVER (ORDER BY j.deadline, j.id) - 1 AS earlier
                      FROM switchyard.jobs_background j
                      WHERE j.lease_owner IS NULL AND j.deadline IS NOT NULL AND j.deadline < d.drained_at
                            AND j.held_run_at IS NULL) q
                WHERE paused
                   OR (d.per_second > 0
                       AND greatest(q.deadline - make_interval(secs => switchyard.horizon_seconds(
                               per_attempt, override, q.max_attempts)), p_at)
                           + make_interval(secs => q.earlier / d.per_second) > q.deadline)
                   OR (d.per_second = 0
                       AND NOT EXISTS (SELECT 1 FROM switchyard.workers w
                                       WHERE w.heartbeat_at + make_interval(secs => coalesce(w.lease_seconds, 30)) > p_at))) r
        )
        SELECT 'backlog_deadlines'::text, 'background'::text, a.jobs_at_risk::double precision, backlog_limit,
               a.jobs_at_risk > backlog_limit, a.jobs_at_risk <= backlog_limit,
               format('%s queued background %s their deadline%s: the backlog of %s drains %s '
                      '(recent throughput %s jobs/min over %s; earliest deadline %s)',
                      a.jobs_at_risk, CASE WHEN a.jobs_at_risk = 1 THEN 'job would miss' ELSE 'jobs would miss' END,
                      CASE WHEN a.put_off > 0 THEN format(' (%s of them waiting to run later)', a.put_off) ELSE '' END,
                      a.jobs,
                      CASE WHEN paused THEN 'never while background work is paused (dispatcher background resume)'
                           WHEN a.per_second > 0
                           THEN 'by ' || to_char(a.drained_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"')
                           ELSE 'at an unknown time (no background job finished recently)' END,
                      round((a.per_second * 60)::numeric, 2), switchyard.window_text(throughput_window),
                      coalesce(to_char(a.earliest AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"'), 'none'))
        FROM at_risk a;
    END IF;

    -- A tenant held for its budget (above): its work stops until its next period or a raise,
    -- which its operators hear of as of the other rules. Held for a pause, it is not breached
    -- (an operator's own doing).
    RETURN QUERY
    SELECT 'tenant_budget'::text, l.tenant, spent.usd::double precision, l.budget::double precision,
           l.held_reason IS NOT NULL AND l.paused_at IS NULL,
           l.held_reason IS NULL OR l.paused_at IS NOT NULL,
           coalesce(CASE WHEN l.paused_at IS NULL THEN l.held_reason END,
                    format('tenant %s has spent %s of its %s budget of %s', l.tenant, switchyard.usd(spent.usd),
                           CASE l.budget_period WHEN 'day' THEN 'daily' ELSE 'monthly' END, switchyard.usd(l.budget)))
    FROM switchyard.tenant_limits l
    CROSS JOIN LATERAL (
        SELECT switchyard.tenant_spent(l.tenant, switchyard.budget_period_start(l.budget_period, p_at)) AS usd) spent
    WHERE l.budget IS NOT NULL;
END $$;

-- As 0074 set it: CREATE OR REPLACE resets a function's settings.
ALTER FUNCTION switchyard.alert_measurements(timestamptz) SET jit = off;
