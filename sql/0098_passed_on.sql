-- A worker's claim passes over the jobs it has just passed on to the others.
--
-- A worker that cannot call a job's models (their keys missing from its environment, or refused
-- by the provider, sql/0097) while another live worker calls one of them puts the job back for
-- that worker to run (RoutingExecutor's `elsewhere`). It was put back for 250 ms, announced when
-- due, and every worker woke to it: the one that had put it back claimed it again as often as
-- the others (a review: 44 of 89 claims again), put it back again, and a job bounced up to six
-- times, 250 ms each; at half the jobs put back once, a single-model rule's median wait was the
-- 250 ms and the call. Now the worker names the jobs it passed on in the last few seconds
-- (p_passed, up to 1,000 ids; the worker keeps them), and claim, fair_claim and capped_claim pass
-- them over, so the job is put back due at once and only the others claim it.
--
-- * A worker names a job for 5 s (the recheck of a job no worker can run now): if the others
--   have gone, it claims the job again after that, and puts it back as before (for 5 s, once no
--   live worker calls its models). Two workers that both pass a job on leave it to a third, or,
--   with none, to whichever claims it after its 5 s: it cannot go back and forth between them.
-- * A claim naming no jobs (NULL: a worker from schema 97 or older, or one that passed none on)
--   does what it did.
--
-- claim is 0096's otherwise, fair_claim 0088's, capped_claim 0096's (each passed p_passed and
-- passing over those jobs; fair_claim and capped_claim are called by claim alone). Their
-- signatures change, so the old ones are dropped (an old worker's claim with eight arguments
-- calls the new one, its p_passed NULL).

SET LOCAL ROLE switchyard_admin;

DROP FUNCTION switchyard.claim(text, integer, integer, double precision, timestamptz, bigint, timestamptz, bigint);
DROP FUNCTION switchyard.fair_claim(text, text, integer, double precision);
DROP FUNCTION switchyard.capped_claim(text, text, integer, double precision, boolean, integer, text, integer);

-- 0088's, passing over p_passed (claim's jobs passed on).
CREATE FUNCTION switchyard.fair_claim(p_priority text, p_worker text, p_slots integer, p_lease_seconds double precision,
                                      p_passed bigint[])
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
                      AND j.held_run_at IS NULL AND j.run_at <= now() AND j.id <> ALL (p_passed)
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
REVOKE ALL ON FUNCTION switchyard.fair_claim(text, text, integer, double precision, bigint[]) FROM PUBLIC;

-- 0096's, passing over p_passed.
CREATE FUNCTION switchyard.capped_claim(p_priority text, p_worker text, p_slots integer, p_lease_seconds double precision,
                                        p_urgent_only boolean, p_most_attempts integer, p_after text, p_others integer,
                                        p_passed bigint[])
    RETURNS SETOF switchyard.jobs
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    position_setting constant text := 'switchyard.capped_after_' || p_priority;
    credit_setting constant text := 'switchyard.capped_credit_' || p_priority;
    visits constant integer := greatest(2 * p_slots, 32);
    -- The advisory locks' first key ('SWYT'); the second is the tenant's hash.
    lock_space constant integer := 1398233428;
    visited text[];
    tenants text[] := '{}';
    rooms integer[] := '{}';
    tokens double precision[] := '{}';
    deals integer[];
    took integer[];
    remaining integer := p_slots;
    limits switchyard.tenant_limits;
    room integer;
    bucket double precision;
    credit double precision;
    quota integer;
    dealt boolean;
    taken integer;
    per_attempt double precision;
    override double precision;
BEGIN
    IF p_slots <= 0 THEN
        RETURN;
    END IF;
    -- The capped tenants after p_after, then from the first: two range scans of tenant_limits_capped_idx.
    visited := ARRAY(SELECT l.tenant FROM switchyard.tenant_limits l
                     WHERE (l.max_running IS NOT NULL OR l.max_per_minute IS NOT NULL) AND l.tenant > p_after
                     ORDER BY l.tenant LIMIT visits);
    IF cardinality(visited) < visits AND p_after <> '' THEN
        visited := visited || ARRAY(SELECT l.tenant FROM switchyard.tenant_limits l
                                    WHERE (l.max_running IS NOT NULL OR l.max_per_minute IS NOT NULL) AND l.tenant <= p_after
                                    ORDER BY l.tenant LIMIT visits - cardinality(visited));
    END IF;
    IF cardinality(visited) = 0 THEN
        RETURN;
    END IF;
    PERFORM set_config(position_setting, visited[cardinality(visited)], false);
    FOR i IN 1 .. cardinality(visited) LOOP
        -- Held, or nothing due here: passed over.
        SELECT * INTO limits FROM switchyard.tenant_limits l WHERE l.tenant = visited[i] AND l.held_reason IS NULL;
        CONTINUE WHEN NOT FOUND OR NOT EXISTS (
            SELECT FROM switchyard.jobs j
            WHERE j.priority = p_priority AND j.tenant = visited[i] AND j.lease_owner IS NULL AND j.held_run_at IS NULL
                  AND j.run_at <= now() AND j.id <> ALL (p_passed));
        -- Its room, counted without the lock, then again under it.
        FOR pass IN 1 .. 2 LOOP
            room := p_slots;
            IF limits.max_running IS NOT NULL THEN
                room := least(room, limits.max_running - (
                    SELECT count(*) FROM (SELECT FROM switchyard.jobs j
                                          WHERE j.tenant = visited[i] AND j.lease_owner IS NOT NULL LIMIT limits.max_running) running));
            END IF;
            bucket := NULL;
            IF limits.max_per_minute IS NOT NULL THEN
                bucket := switchyard.rate_tokens_now(limits.max_per_minute, limits.rate_tokens, limits.rate_at);
                room := least(room, floor(bucket)::integer);
            END IF;
            EXIT WHEN room <= 0 OR pass = 2;
            IF NOT pg_try_advisory_xact_lock(lock_space, hashtext(visited[i])) THEN
                room := 0;
                EXIT;
            END IF;
            -- Read again under the lock: another claim's tokens taken and committed are gone.
            SELECT * INTO limits FROM switchyard.tenant_limits l WHERE l.tenant = visited[i];
        END LOOP;
        CONTINUE WHEN room <= 0;
        tenants := tenants || visited[i];
        rooms := rooms || room;
        tokens := tokens || bucket;
    END LOOP;
    IF cardinality(tenants) = 0 THEN
        RETURN;
    END IF;
    -- In the background partition, their jobs whose deadline is near first, whatever their share
    -- (as the claim's deadline path takes others'), each up to its room (jobs_tenant_deadline_idx).
    took := array_fill(0, ARRAY[cardinality(tenants)]);
    IF p_priority = 'background' AND p_most_attempts IS NOT NULL THEN
        SELECT t.per_attempt, t.override INTO per_attempt, override FROM switchyard.horizon_terms() t;
        FOR i IN 1 .. cardinality(tenants) LOOP
            EXIT WHEN remaining <= 0;
            RETURN QUERY
            WITH picked AS (
                SELECT j.id FROM switchyard.jobs j
                WHERE j.priority = 'background' AND j.tenant = tenants[i] AND j.deadline IS NOT NULL
                      AND j.lease_owner IS NULL AND j.held_run_at IS NULL AND j.run_at <= now() AND j.deadline > now()
                      AND j.id <> ALL (p_passed)
                      AND j.deadline <= now() + switchyard.escalation_horizon(p_most_attempts)
                      AND j.deadline <= now() + make_interval(secs => switchyard.horizon_seconds(per_attempt, override, j.max_attempts))
                      AND NOT EXISTS (SELECT FROM switchyard.tenant_limits h WHERE h.tenant = tenants[i] AND h.held_reason IS NOT NULL)
                ORDER BY j.deadline, j.id
                LIMIT least(rooms[i], remaining)
                FOR NO KEY UPDATE SKIP LOCKED
            )
            UPDATE switchyard.jobs j
            SET lease_owner = p_worker, lease_expires_at = now() + make_interval(secs => p_lease_seconds),
                attempt = j.attempt + 1, claimed_at = now()
            FROM picked WHERE j.id = picked.id AND j.priority = 'background'
            RETURNING j.*;
            GET DIAGNOSTICS taken = ROW_COUNT;
            took[i] := taken;
            rooms[i] := rooms[i] - taken;
            remaining := remaining - taken;
        END LOOP;
    END IF;
    -- Their share of the slots (the fraction carried to the next claim), dealt a job at a time
    -- round them, each up to its room; with the gate closed, none.
    IF p_urgent_only OR remaining <= 0 THEN
        quota := 0;
    ELSIF coalesce(p_others, 0) <= 0 THEN
        quota := remaining;
    ELSE
        credit := coalesce(nullif(current_setting(credit_setting, true), '')::double precision, 0)
                  + p_slots::double precision * cardinality(tenants) / (cardinality(tenants) + p_others);
        quota := least(floor(credit)::integer, remaining);
        PERFORM set_config(credit_setting, least(credit - quota, 1)::text, false);
    END IF;
    deals := array_fill(0, ARRAY[cardinality(tenants)]);
    WHILE quota > 0 LOOP
        dealt := false;
        FOR i IN 1 .. cardinality(tenants) LOOP
            EXIT WHEN quota <= 0;
            CONTINUE WHEN deals[i] >= rooms[i];
            deals[i] := deals[i] + 1;
            quota := quota - 1;
            dealt := true;
        END LOOP;
        EXIT WHEN NOT dealt;
    END LOOP;
    FOR i IN 1 .. cardinality(tenants) LOOP
        IF deals[i] > 0 THEN
            RETURN QUERY
            WITH picked AS (
                SELECT j.id FROM switchyard.jobs j
                WHERE j.priority = p_priority AND j.tenant = tenants[i] AND j.lease_owner IS NULL AND j.held_run_at IS NULL
                      AND j.run_at <= now() AND (j.deadline IS NULL OR j.deadline > now()) AND j.id <> ALL (p_passed)
                      -- Held as this claim began (a job put back unheld waits for the round): as the other paths ask.
                      AND NOT EXISTS (SELECT FROM switchyard.tenant_limits h WHERE h.tenant = tenants[i] AND h.held_reason IS NOT NULL)
                ORDER BY j.run_at, j.id
                LIMIT deals[i]
                FOR NO KEY UPDATE SKIP LOCKED
            )
            UPDATE switchyard.jobs j
            SET lease_owner = p_worker, lease_expires_at = now() + make_interval(secs => p_lease_seconds),
                attempt = j.attempt + 1, claimed_at = now()
            FROM picked WHERE j.id = picked.id AND j.priority = p_priority
            RETURNING j.*;
            GET DIAGNOSTICS taken = ROW_COUNT;
            took[i] := took[i] + taken;
        END IF;
        CONTINUE WHEN took[i] <= 0;
        -- The next claim deals from the tenant after the last one given a job here (the name order
        -- alone served the first tenants by name every claim, in a review).
        PERFORM set_config(position_setting, tenants[i], false);
        IF tokens[i] IS NOT NULL THEN
            -- (Never back in time: a claim begun earlier may commit after another.)
            UPDATE switchyard.tenant_limits l SET rate_tokens = tokens[i] - took[i], rate_at = greatest(l.rate_at, now())
            WHERE l.tenant = tenants[i];
        END IF;
    END LOOP;
END $$;
REVOKE ALL ON FUNCTION switchyard.capped_claim(text, text, integer, double precision, boolean, integer, text, integer, bigint[])
    FROM PUBLIC;

-- 0096's, passing over p_passed (above).
CREATE OR REPLACE FUNCTION switchyard.claim(
    p_worker text, p_free_slots integer, p_background_slots integer, p_lease_seconds double precision,
    p_interactive_after_run_at timestamptz DEFAULT NULL, p_interactive_after_id bigint DEFAULT NULL,
    p_background_after_run_at timestamptz DEFAULT NULL, p_background_after_id bigint DEFAULT NULL,
    p_passed bigint[] DEFAULT NULL
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
    -- Whether a tenant not held has a cap on its running jobs or its starts a minute: one probe of
    -- tenant_limits_capped_idx.
    capped constant boolean := EXISTS (SELECT FROM switchyard.tenant_limits l
                                       WHERE (l.max_running IS NOT NULL OR l.max_per_minute IS NOT NULL)
                                             AND l.held_reason IS NULL);
    -- Where this session's claims go round the capped tenants from, in this claim's two passes.
    capped_after text;
    -- The other tenants with jobs due (up to 32, or the slots) and the queue's order, for the
    -- capped tenants' share.
    others integer;
    -- No cursor: from the head. (A run_at of -infinity with the lowest id is the one position
    -- this cannot reach; no job has both.)
    interactive_after constant timestamptz := coalesce(p_interactive_after_run_at, '-infinity');
    interactive_after_id constant bigint := coalesce(p_interactive_after_id, -9223372036854775808);
    background_after constant timestamptz := coalesce(p_background_after_run_at, '-infinity');
    background_after_id constant bigint := coalesce(p_background_after_id, -9223372036854775808);
    -- The jobs this worker passed on to the others (none: NULL). A NULL among them would make
    -- `id <> ALL` unknown for every job, and the claim take nothing.
    passed constant bigint[] := coalesce(array_remove(p_passed, NULL), '{}');
BEGIN
    -- A lease is renewed by heartbeats, so none need be long: at most an hour (sql/0086).
    p_lease_seconds := least(p_lease_seconds, 3600);
    IF p_free_slots <= 0 THEN
        RETURN;
    END IF;
    -- The capped tenants first, their share of the slots, each up to its room (capped_claim); then
    -- each other tenant with jobs due its share (fair_claim), then the queue's order; then the
    -- capped tenants again, for the slots nothing else took.
    IF capped THEN
        capped_after := coalesce(current_setting('switchyard.capped_after_interactive', true), '');
        others := CASE WHEN fair THEN (SELECT count(*) FROM switchyard.tenants_due('interactive', NULL, NULL, greatest(p_free_slots, 32)))
                       ELSE 0 END + 1;
        RETURN QUERY SELECT * FROM switchyard.capped_claim('interactive', p_worker, p_free_slots, p_lease_seconds, false, NULL,
                                                           capped_after, others, passed);
        GET DIAGNOSTICS claimed = ROW_COUNT;
    END IF;
    IF fair AND claimed < p_free_slots AND switchyard.several_tenants('interactive') THEN
        RETURN QUERY SELECT * FROM switchyard.fair_claim('interactive', p_worker, p_free_slots - claimed, p_lease_seconds, passed);
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
              AND j.run_at <= now() AND (j.deadline IS NULL OR j.deadline > now()) AND j.id <> ALL (passed)
              AND (j.tenant IS NULL OR NOT EXISTS (SELECT FROM switchyard.tenant_limits h WHERE h.tenant = j.tenant AND (h.held_reason IS NOT NULL OR h.max_running IS NOT NULL OR h.max_per_minute IS NOT NULL)))
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
        RETURN QUERY SELECT * FROM switchyard.capped_claim('interactive', p_worker, p_free_slots - claimed, p_lease_seconds, false,
                                                           NULL, capped_after, 0, passed);
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
            WHERE j.lease_owner IS NULL AND j.run_at <= now() AND j.deadline > now() AND j.id <> ALL (passed)
              AND j.deadline <= now() + switchyard.escalation_horizon(most_attempts)
              -- escalation_horizon(j.max_attempts), without its subquery per row.
              AND j.deadline <= now() + make_interval(secs => switchyard.horizon_seconds(per_attempt, override, j.max_attempts))
              AND (j.tenant IS NULL OR NOT EXISTS (SELECT FROM switchyard.tenant_limits h WHERE h.tenant = j.tenant AND (h.held_reason IS NOT NULL OR h.max_running IS NOT NULL OR h.max_per_minute IS NOT NULL)))
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
    -- The capped tenants' share (closed, only what cannot wait).
    IF capped AND claimed + urgent < p_free_slots AND urgent < coalesce(p_background_slots, p_free_slots) THEN
        capped_after := coalesce(current_setting('switchyard.capped_after_background', true), '');
        others := CASE WHEN fair AND gate_open THEN (SELECT count(*) FROM switchyard.tenants_due('background', NULL, NULL, greatest(p_free_slots, 32)))
                       ELSE 0 END + 1;
        RETURN QUERY SELECT * FROM switchyard.capped_claim('background', p_worker,
                                                           least(p_free_slots - claimed, p_background_slots) - urgent,
                                                           p_lease_seconds, gate_open IS NOT TRUE, most_attempts, capped_after, others, passed);
        GET DIAGNOSTICS shared = ROW_COUNT;
        urgent := urgent + shared;
    END IF;
    IF gate_open AND fair AND claimed + urgent < p_free_slots AND urgent < coalesce(p_background_slots, p_free_slots)
       AND switchyard.several_tenants('background') THEN
        RETURN QUERY SELECT * FROM switchyard.fair_claim('background', p_worker,
                                                         least(p_free_slots - claimed, p_background_slots) - urgent,
                                                         p_lease_seconds, passed);
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
                  AND j.run_at <= now() AND (j.deadline IS NULL OR j.deadline > now()) AND j.id <> ALL (passed)
                  AND (j.tenant IS NULL OR NOT EXISTS (SELECT FROM switchyard.tenant_limits h WHERE h.tenant = j.tenant AND (h.held_reason IS NOT NULL OR h.max_running IS NOT NULL OR h.max_per_minute IS NOT NULL)))
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
                                                           p_lease_seconds, gate_open IS NOT TRUE, most_attempts, capped_after, 0, passed);
    END IF;
END $$;

REVOKE ALL ON FUNCTION switchyard.claim(text, integer, integer, double precision, timestamptz, bigint, timestamptz, bigint,
                                        bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION switchyard.claim(text, integer, integer, double precision, timestamptz, bigint, timestamptz,
                                           bigint, bigint[]) TO switchyard_worker;
