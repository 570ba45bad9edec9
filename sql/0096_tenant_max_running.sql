-- A cap on each tenant's running jobs.
--
-- A tenant's limits were a pause and a budget (0088): nothing kept one tenant from taking every
-- slot of the fleet. Fair shares (0082) divide a claim among the tenants with jobs due, but a
-- tenant alone in the queue, or one whose provider account allows only so many calls at once (its
-- own key, a customer's contract), had no bound but the fleet's size. Now an operator may cap how
-- many of a tenant's jobs run at once, across every worker and both priorities
-- (switchyard.tenant_limits.max_running, set by set_tenant_max_running or dispatcher tenants
-- max-running). Jobs over the cap wait in the queue, as queued, and start as its running ones end.
--
-- * A capped tenant's jobs are claimed by one path, capped_claim, and no other (the queue's order,
--   the fair claim and the deadline path pass them over as they pass over a held tenant's). For
--   each capped tenant with jobs due it takes a transaction-level advisory lock (tried, not waited
--   for: a claim that does not get it leaves the tenant to the claim that has it), counts the
--   tenant's running jobs (a new partial index of the leased jobs with a tenant), and claims at most
--   the difference. The lock is held until the claim commits, so the next claim to count sees what
--   this one leased: claims racing on many workers never run more than the cap. Lowering the cap
--   under what runs stops nothing: the running jobs finish, and no more start until fewer run.
-- * A claim gives each capped tenant first at most an equal share of its slots, counting the rest of
--   the queue as one more (so a capped tenant with a large cap does not take every slot of each
--   claim before the others'), then the fair claim and the queue's order theirs, then the capped
--   tenants again whatever slots are left. Capped tenants are taken in name order from after the
--   last one this session's claim reached (switchyard.capped_after_<priority>).
-- * Background jobs of a capped tenant obey the gate as others do: closed, only those whose deadline
--   is near run (at the cap too).
-- * A claim with no capped tenant (none, or all held) asks one more question than before: a probe
--   of a new partial index of tenant_limits.
-- * A row of tenant_limits with a cap and nothing else is kept (apply_tenant_limits deleted a row
--   without a pause or a budget).
--
-- claim is 0088's otherwise (with the fair claim given what capped_claim left), tenants_due and
-- apply_tenant_limits 0088's.

SET LOCAL ROLE switchyard_admin;

ALTER TABLE switchyard.tenant_limits ADD COLUMN max_running integer CHECK (max_running BETWEEN 1 AND 1000000);
COMMENT ON COLUMN switchyard.tenant_limits.max_running IS
    'At most this many of the tenant''s jobs run at once, across the fleet and both priorities (NULL: no cap).';
CREATE INDEX tenant_limits_capped_idx ON switchyard.tenant_limits (tenant) WHERE max_running IS NOT NULL;
-- A capped tenant's running jobs, counted at each of its claims.
CREATE INDEX jobs_tenant_running_idx ON switchyard.jobs (tenant) WHERE lease_owner IS NOT NULL AND tenant IS NOT NULL;
GRANT SELECT (max_running) ON switchyard.tenant_limits TO switchyard_submitter;

-- Claims up to p_slots jobs of the partition's capped tenants (tenant_limits.max_running, not
-- held), in name order from after the last one this session reached: of each, at most what its cap
-- leaves of its running jobs (both partitions, every worker), and, with p_shared, at most an equal
-- share of the slots with the rest of the queue counted as one more tenant (without, as many as
-- the slots). A tenant whose advisory lock another claim holds is left to that claim. With
-- p_urgent_only (a background gate closed), only jobs whose deadline is near, as the deadline
-- path takes them. Each tenant's jobs in its queue order.
CREATE FUNCTION switchyard.capped_claim(p_priority text, p_worker text, p_slots integer, p_lease_seconds double precision,
                                        p_urgent_only boolean, p_shared boolean)
    RETURNS SETOF switchyard.jobs
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    position_setting constant text := 'switchyard.capped_after_' || p_priority;
    after constant text := coalesce(current_setting(position_setting, true), '');
    -- The advisory locks' first key ('SWYT'); the second is the tenant's hash.
    lock_space constant integer := 1398233428;
    tenants text[];
    caps integer[];
    share integer;
    remaining integer := p_slots;
    running bigint;
    take integer;
    taken integer;
    per_attempt double precision;
    override double precision;
BEGIN
    IF p_slots <= 0 THEN
        RETURN;
    END IF;
    SELECT array_agg(l.tenant ORDER BY l.tenant <= after, l.tenant), array_agg(l.max_running ORDER BY l.tenant <= after, l.tenant)
    INTO tenants, caps
    FROM switchyard.tenant_limits l
    WHERE l.max_running IS NOT NULL AND l.held_reason IS NULL
      AND EXISTS (SELECT FROM switchyard.jobs j
                  WHERE j.priority = p_priority AND j.tenant = l.tenant AND j.lease_owner IS NULL
                        AND j.held_run_at IS NULL AND j.run_at <= now());
    IF tenants IS NULL THEN
        RETURN;
    END IF;
    IF p_urgent_only THEN
        SELECT t.per_attempt, t.override INTO per_attempt, override FROM switchyard.horizon_terms() t;
    END IF;
    share := ceil(p_slots::numeric / (cardinality(tenants) + CASE WHEN p_shared THEN 1 ELSE 0 END));
    FOR i IN 1 .. cardinality(tenants) LOOP
        EXIT WHEN remaining <= 0;
        CONTINUE WHEN NOT pg_try_advisory_xact_lock(lock_space, hashtext(tenants[i]));
        SELECT count(*) INTO running FROM switchyard.jobs j WHERE j.tenant = tenants[i] AND j.lease_owner IS NOT NULL;
        take := least(caps[i] - running, share, remaining);
        CONTINUE WHEN take <= 0;
        RETURN QUERY
        WITH picked AS (
            SELECT j.id FROM switchyard.jobs j
            WHERE j.priority = p_priority AND j.tenant = tenants[i] AND j.lease_owner IS NULL AND j.held_run_at IS NULL
                  AND j.run_at <= now() AND (j.deadline IS NULL OR j.deadline > now())
                  AND (NOT p_urgent_only
                       OR j.deadline <= now() + make_interval(secs => switchyard.horizon_seconds(per_attempt, override, j.max_attempts)))
            ORDER BY j.run_at, j.id
            LIMIT take
            FOR NO KEY UPDATE SKIP LOCKED
        )
        UPDATE switchyard.jobs j
        SET lease_owner = p_worker, lease_expires_at = now() + make_interval(secs => p_lease_seconds),
            attempt = j.attempt + 1, claimed_at = now()
        FROM picked WHERE j.id = picked.id AND j.priority = p_priority
        RETURNING j.*;
        GET DIAGNOSTICS taken = ROW_COUNT;
        remaining := remaining - taken;
        PERFORM set_config(position_setting, tenants[i], false);
    END LOOP;
END $$;
REVOKE ALL ON FUNCTION switchyard.capped_claim(text, text, integer, double precision, boolean, boolean) FROM PUBLIC;

-- Caps p_tenant's running jobs at p_max (1 to 1,000,000), across the fleet and both priorities,
-- or removes its cap (NULL). Returns how many of its jobs run now. Lowered under what runs, the
-- running jobs finish and no more start until fewer run.
CREATE FUNCTION switchyard.set_tenant_max_running(p_tenant text, p_max integer) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
BEGIN
    IF p_tenant IS NULL OR length(p_tenant) NOT BETWEEN 1 AND 200 THEN
        PERFORM switchyard.reject('a tenant is a name of 1 to 200 characters',
                                  'Name the tenant as its jobs do (the tenant column of switchyard.jobs).');
    END IF;
    IF p_max IS NOT NULL AND p_max NOT BETWEEN 1 AND 1000000 THEN
        PERFORM switchyard.reject(format('a tenant''s cap on its running jobs is 1 to 1000000 (got %s)', p_max),
                                  'To stop a tenant''s work, pause it: dispatcher tenants pause NAME. '
                                      || 'To remove its cap: dispatcher tenants max-running NAME none.');
    END IF;
    IF p_max IS NULL THEN
        UPDATE switchyard.tenant_limits l SET max_running = NULL, updated_at = now() WHERE l.tenant = p_tenant;
        -- A row that limits nothing any more goes.
        PERFORM switchyard.apply_tenant_limits(p_tenant);
    ELSE
        INSERT INTO switchyard.tenant_limits AS l (tenant, max_running) VALUES (p_tenant, p_max)
        ON CONFLICT (tenant) DO UPDATE SET max_running = EXCLUDED.max_running, updated_at = now();
    END IF;
    RETURN (SELECT count(*) FROM switchyard.jobs j WHERE j.tenant = p_tenant AND j.lease_owner IS NOT NULL);
END $$;
REVOKE ALL ON FUNCTION switchyard.set_tenant_max_running(text, integer) FROM PUBLIC;

-- 0088's, passing over capped tenants too (capped_claim takes their jobs).
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
          AND NOT EXISTS (SELECT FROM switchyard.tenant_limits h WHERE h.tenant = walk.tenant AND (h.held_reason IS NOT NULL OR h.max_running IS NOT NULL))
    LIMIT p_limit
$$;

-- 0088's, keeping a row with a cap.
CREATE OR REPLACE FUNCTION switchyard.apply_tenant_limits(p_tenant text, p_skip_locked boolean DEFAULT false,
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
    IF limited AND l.paused_at IS NULL AND l.budget IS NULL AND l.max_running IS NULL THEN
        DELETE FROM switchyard.tenant_limits t WHERE t.tenant = p_tenant;
    ELSIF limited AND l.held_reason IS NOT NULL THEN
        UPDATE switchyard.tenant_limits t SET held_reason = NULL, held_since = NULL WHERE t.tenant = p_tenant;
    END IF;
    jobs := switchyard.release_tenant_jobs(p_tenant);
    change := CASE WHEN jobs > 0 OR l.held_reason IS NOT NULL THEN 'released' END;
END $$;

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
    -- Whether a tenant not held has a cap on its running jobs: one probe of tenant_limits_capped_idx.
    capped constant boolean := EXISTS (SELECT FROM switchyard.tenant_limits l
                                       WHERE l.max_running IS NOT NULL AND l.held_reason IS NULL);
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
    -- The tenants with a cap on their running jobs first, each up to its room and its share
    -- (capped_claim); then each tenant with jobs due its share of the slots (fair_claim), then the
    -- queue's order; then the capped tenants again, for the slots nothing else took.
    IF capped THEN
        RETURN QUERY SELECT * FROM switchyard.capped_claim('interactive', p_worker, p_free_slots, p_lease_seconds, false, true);
        GET DIAGNOSTICS claimed = ROW_COUNT;
    END IF;
    IF fair AND claimed < p_free_slots AND switchyard.several_tenants('interactive') THEN
        RETURN QUERY SELECT * FROM switchyard.fair_claim('interactive', p_worker, p_free_slots - claimed, p_lease_seconds);
        GET DIAGNOSTICS shared = ROW_COUNT;
        claimed := claimed + shared;
    END IF;
    IF claimed >= p_free_slots THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH picked AS (
        SELECT j.id FROM switchyard.jobs_interactive j
        WHERE j.lease_owner IS NULL AND (j.run_at, j.id) > (interactive_after, interactive_after_id)
              AND j.run_at <= now() AND (j.deadline IS NULL OR j.deadline > now())
              AND (j.tenant IS NULL OR NOT EXISTS (SELECT FROM switchyard.tenant_limits h WHERE h.tenant = j.tenant AND (h.held_reason IS NOT NULL OR h.max_running IS NOT NULL)))
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
    IF capped AND claimed < p_free_slots THEN
        RETURN QUERY SELECT * FROM switchyard.capped_claim('interactive', p_worker, p_free_slots - claimed, p_lease_seconds, false, false);
        GET DIAGNOSTICS in_order = ROW_COUNT;
        claimed := claimed + in_order;
    END IF;
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
              AND (j.tenant IS NULL OR NOT EXISTS (SELECT FROM switchyard.tenant_limits h WHERE h.tenant = j.tenant AND (h.held_reason IS NOT NULL OR h.max_running IS NOT NULL)))
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
    -- The capped tenants' (closed, only what cannot wait).
    IF capped AND claimed + urgent < p_free_slots AND urgent < coalesce(p_background_slots, p_free_slots) THEN
        RETURN QUERY SELECT * FROM switchyard.capped_claim('background', p_worker,
                                                           least(p_free_slots - claimed, p_background_slots) - urgent,
                                                           p_lease_seconds, gate_open IS NOT TRUE, true);
        GET DIAGNOSTICS shared = ROW_COUNT;
        urgent := urgent + shared;
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
                  AND (j.tenant IS NULL OR NOT EXISTS (SELECT FROM switchyard.tenant_limits h WHERE h.tenant = j.tenant AND (h.held_reason IS NOT NULL OR h.max_running IS NOT NULL)))
            ORDER BY j.run_at, j.id
            LIMIT least(p_free_slots - claimed, p_background_slots) - urgent
            FOR NO KEY UPDATE SKIP LOCKED
        )
        UPDATE switchyard.jobs_background j
        SET lease_owner = p_worker, lease_expires_at = now() + make_interval(secs => p_lease_seconds),
            attempt = j.attempt + 1, claimed_at = now()
        FROM picked WHERE j.id = picked.id
        RETURNING j.*;
        GET DIAGNOSTICS shared = ROW_COUNT;
        urgent := urgent + shared;
    END IF;
    IF capped AND claimed + urgent < p_free_slots AND urgent < coalesce(p_background_slots, p_free_slots) THEN
        RETURN QUERY SELECT * FROM switchyard.capped_claim('background', p_worker,
                                                           least(p_free_slots - claimed, p_background_slots) - urgent,
                                                           p_lease_seconds, gate_open IS NOT TRUE, false);
    END IF;
END $$;
