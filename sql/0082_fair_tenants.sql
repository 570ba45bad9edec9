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
--   of the unleased jobs with a tenant: one probe per tenant, at most one tenant per slot (two
--   for a claim of one). Where more tenants have jobs queued than a claim has slots, each
--   connection goes round them: its next claim starts after the last tenant this one reached
--   (a session setting, switchyard.fair_after_<priority>).
-- * Jobs without a tenant take the queue's order only, in the slots the tenants leave: a role
--   mapped to tenants always names one; jobs without are an operator's.
-- * Jobs of a single tenant, or none, are claimed as before, the queue's order alone: two probes
--   of the new index (its least and greatest tenant) tell, in the claim itself (no tenant, as in
--   the benchmarks: an empty index).
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

-- Claims up to p_slots jobs of the partition, shared among the tenants with jobs queued there:
-- up to one tenant per slot (at least two), in name order from after the last tenant this
-- session's previous claim reached, round after round, a job of each tenant in its turn; each
-- tenant's in its queue order. Claims nothing unless two or more tenants have jobs queued: the caller's queue
-- order does the rest.
CREATE FUNCTION switchyard.fair_claim(p_priority text, p_worker text, p_slots integer, p_lease_seconds double precision)
    RETURNS SETOF switchyard.jobs
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    position_setting constant text := 'switchyard.fair_after_' || p_priority;
    after constant text := nullif(current_setting(position_setting, true), '');
    visits constant integer := greatest(p_slots, 2);
    tenants text[];
    share integer;
BEGIN
    IF p_slots <= 0 THEN
        RETURN;
    END IF;
    -- The tenants after the last one visited, then from the first (a loose index scan: each
    -- probe finds the next tenant name in jobs_tenant_queued_idx).
    SELECT array_agg(t.tenant) INTO tenants FROM (
        WITH RECURSIVE walk(tenant) AS (
            (SELECT j.tenant FROM switchyard.jobs j
             WHERE j.priority = p_priority AND j.lease_owner IS NULL AND j.tenant > coalesce(after, '')
             ORDER BY j.tenant LIMIT 1)
            UNION ALL
            SELECT (SELECT j.tenant FROM switchyard.jobs j
                    WHERE j.priority = p_priority AND j.lease_owner IS NULL AND j.tenant > w.tenant
                    ORDER BY j.tenant LIMIT 1)
            FROM walk w WHERE w.tenant IS NOT NULL
        )
        SELECT walk.tenant FROM walk WHERE walk.tenant IS NOT NULL LIMIT visits
    ) t;
    IF after IS NOT NULL AND coalesce(cardinality(tenants), 0) < visits THEN
        tenants := coalesce(tenants, '{}') || ARRAY(
            WITH RECURSIVE walk(tenant) AS (
                (SELECT j.tenant FROM switchyard.jobs j
                 WHERE j.priority = p_priority AND j.lease_owner IS NULL AND j.tenant > '' AND j.tenant <= after
                 ORDER BY j.tenant LIMIT 1)
                UNION ALL
                SELECT (SELECT j.tenant FROM switchyard.jobs j
                        WHERE j.priority = p_priority AND j.lease_owner IS NULL AND j.tenant > w.tenant
                              AND j.tenant <= after
                        ORDER BY j.tenant LIMIT 1)
                FROM walk w WHERE w.tenant IS NOT NULL
            )
            SELECT walk.tenant FROM walk WHERE walk.tenant IS NOT NULL
            LIMIT visits - coalesce(cardinality(tenants), 0));
    END IF;
    IF coalesce(cardinality(tenants), 0) < 2 THEN
        RETURN;
    END IF;
    -- The next claim starts after the last tenant whose first turn this one reaches.
    PERFORM set_config(position_setting, tenants[least(p_slots, cardinality(tenants))], false);
    share := ceil(p_slots::numeric / cardinality(tenants));
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
        LIMIT p_slots
    )
    UPDATE switchyard.jobs j
    SET lease_owner = p_worker, lease_expires_at = now() + make_interval(secs => p_lease_seconds),
        attempt = j.attempt + 1, claimed_at = now()
    FROM picked WHERE j.id = picked.id AND j.priority = p_priority
    RETURNING j.*;
END $$;

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
    -- Each tenant with jobs queued its share of the slots first (fair_claim), then the queue's order.
    -- (Two probes of jobs_tenant_queued_idx tell whether two tenants or more have jobs queued.)
    IF fair AND (SELECT min(j.tenant) <> max(j.tenant) FROM switchyard.jobs_interactive j
                 WHERE j.lease_owner IS NULL AND j.tenant IS NOT NULL) THEN
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
       AND (SELECT min(j.tenant) <> max(j.tenant) FROM switchyard.jobs_background j
            WHERE j.lease_owner IS NULL AND j.tenant IS NOT NULL) THEN
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
