-- Tenants share the slots: a tenant's backlog no longer holds the others' jobs behind it.
--
-- A claim took each partition in the queue's order, run_at then id, whoever submitted: a
-- multi-tenant walkthrough's tenant A queued 5,000 background jobs, tenants B and C 20 each five
-- seconds later, and B's and C's waited for A's last (82 s, twice A's own median); 1,500
-- interactive jobs of A made B's 10 wait 18 s. Now, with the setting fair_tenants (true by
-- default), each claim first gives every tenant with jobs queued in the partition an equal share
-- of its slots, each tenant's jobs in their own queue order, and fills what is left in the
-- queue's order. Background jobs near their deadline still come first (0077), and the gate
-- decides whether background work runs at all.
--
-- * The tenants are found by a loose index scan over a new partial index on (tenant, run_at, id)
--   of the unleased jobs with a tenant: one probe per tenant, at most one tenant with jobs due
--   per slot (two for a claim of one); a tenant whose jobs are all due later takes no turn.
--   Where more tenants have jobs due than a claim has slots, each connection goes round them:
--   its next claim starts after the last tenant this one reached (a session setting,
--   switchyard.fair_after_<priority>).
-- * The queue's order counts as one more tenant: it keeps a share of the slots (or a slot every
--   so many claims), so the head of the queue, whoever's, moves too. Jobs without a tenant (an
--   operator's) are claimed that way only.
-- * Jobs of a single tenant, or none, are claimed as before, the queue's order alone: two probes
--   of the new index (its least and greatest tenant) tell (no tenant, as in the benchmarks: an
--   empty index), and a session that found fewer than two asks again a second later.
-- * A worker's cursor (ClaimCursor) does not move past a claim's jobs of several tenants: they
--   stand anywhere in the queue's order.
--
-- claim is 0077's otherwise, with its lease held to an hour as the heartbeat's is (sql/0086).

SET LOCAL ROLE switchyard_admin;

INSERT INTO switchyard.settings (name, value, description) VALUES
    ('fair_tenants', 'true', 'true: each claim shares its slots among the tenants with jobs queued; false: the queue''s order alone.');

-- The unleased jobs of each tenant in their queue order: the fair claim's tenant scan and picks.
CREATE INDEX jobs_tenant_queued_idx ON switchyard.jobs (tenant, run_at, id)
    WHERE lease_owner IS NULL AND tenant IS NOT NULL;

-- The tenants with jobs due in the partition, up to p_limit, in name order after p_after (from
-- the first when NULL) and not past p_through: a loose index scan of jobs_tenant_queued_idx, one
-- probe per tenant, whose first entry is its earliest run_at. A tenant whose jobs are all
-- scheduled later (or postponed to a price window) is passed over, not given a turn.
CREATE FUNCTION switchyard.tenants_due(p_priority text, p_after text, p_through text, p_limit integer)
    RETURNS SETOF text
    LANGUAGE sql STABLE SET search_path = pg_catalog, switchyard, pg_temp AS $$
    WITH RECURSIVE walk(tenant, run_at) AS (
        (SELECT j.tenant, j.run_at FROM switchyard.jobs j
         WHERE j.priority = p_priority AND j.lease_owner IS NULL AND j.tenant > coalesce(p_after, '')
               AND (p_through IS NULL OR j.tenant <= p_through)
         ORDER BY j.tenant, j.run_at LIMIT 1)
        UNION ALL
        SELECT next.tenant, next.run_at FROM walk w CROSS JOIN LATERAL (
            SELECT j.tenant, j.run_at FROM switchyard.jobs j
            WHERE j.priority = p_priority AND j.lease_owner IS NULL AND j.tenant > w.tenant
                  AND (p_through IS NULL OR j.tenant <= p_through)
            ORDER BY j.tenant, j.run_at LIMIT 1) next
    )
    SELECT walk.tenant FROM walk WHERE walk.run_at <= now() LIMIT p_limit
$$;

-- Whether two tenants or more have jobs queued in the partition: two probes of
-- jobs_tenant_queued_idx (its least and greatest tenant). Under a snapshot another session
-- holds, those probes step over the index entries of every job of the tenant claimed since
-- (a review: 6 ms a claim, 40,000 entries, for a queue of one tenant), so a session that found
-- fewer than two asks again only a second later (switchyard.one_tenant_at_<priority>).
CREATE FUNCTION switchyard.several_tenants(p_priority text) RETURNS boolean
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
        WHERE j.lease_owner IS NULL AND j.tenant IS NOT NULL;
    ELSE
        SELECT min(j.tenant) <> max(j.tenant) INTO several FROM switchyard.jobs_background j
        WHERE j.lease_owner IS NULL AND j.tenant IS NOT NULL;
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
CREATE FUNCTION switchyard.fair_claim(p_priority text, p_worker text, p_slots integer, p_lease_seconds double precision)
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
                      AND j.run_at <= now() AND (j.deadline IS NULL OR j.deadline > now())
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
CREATE OR REPLACE FUNCTION switchyard.setting_rule(p_name text, OUT kind text, OUT may_be_off boolean, OUT default_value text)
    LANGUAGE sql IMMUTABLE AS $$
    SELECT r.kind, r.may_be_off, r.default_value FROM (VALUES
        ('alert_error_rate', 'rate', true, '0.02'),
        ('alert_error_window_seconds', 'window', false, '300'),
        ('alert_min_calls', 'count', false, '50'),
        ('alert_latency_window_seconds', 'window', false, '300'),
        ('alert_latency_target_ms_primary', 'limit', true, '1500'),
        ('alert_latency_target_ms_secondary', 'limit', true, '3000'),
        ('alert_latency_target_ms_tertiary', 'limit', true, '10000'),
        ('alert_queue_wait_p95_ms', 'limit', true, '2000'),
        ('alert_queue_wait_window_seconds', 'window', false, '300'),
        ('alert_queue_wait_min_jobs', 'count', false, '10'),
        ('alert_backlog_at_risk_jobs', 'count', true, '0'),
        ('alert_backlog_throughput_window_seconds', 'window', false, '900'),
        ('alert_opens_breaker', 'boolean', false, 'true'),
        ('alert_breaker_open_seconds', 'window', true, '120'),
        ('alert_job_failure_rate', 'rate', true, '0.05'),
        ('alert_job_failure_window_seconds', 'window', false, '300'),
        ('alert_job_failure_min_jobs', 'count', false, '10'),
        ('fair_tenants', 'boolean', false, 'true'),
        ('breaker_error_rate', 'rate', false, '0.02'),
        ('breaker_half_open_successes', 'count', false, '5'),
        ('breaker_window_seconds', 'window', false, '60'),
        ('feedback_min_ratings', 'count', false, '5'),
        ('feedback_prior_weight', 'count', false, '20'),
        ('feedback_window_days', 'count', false, '30')
    ) AS r(name, kind, may_be_off, default_value)
    WHERE r.name = p_name
$$;
