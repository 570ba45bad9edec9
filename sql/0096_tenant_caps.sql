-- A cap on each tenant's running jobs, and on how many it starts a minute.
--
-- A tenant's limits were a pause and a budget (0088): nothing kept one tenant from taking every
-- slot of the fleet. Fair shares (0082) divide a claim among the tenants with jobs due, but a
-- tenant alone in the queue, or one whose provider account allows only so many calls at once (its
-- own key, a customer's contract), had no bound but the fleet's size. Now an operator may cap how
-- many of a tenant's jobs run at once, across every worker and both priorities
-- (switchyard.tenant_limits.max_running, set by set_tenant_max_running or dispatcher tenants
-- max-running). Jobs over the cap wait in the queue, as queued, and start as its running ones end.
-- And how many of its jobs start a minute (max_per_minute, set_tenant_max_per_minute, dispatcher
-- tenants max-per-minute), as LiteLLM's and Portkey's keys' request rates: a token bucket of that
-- many, filled at that rate (a burst of up to a minute's, then one every 60/N s), counting every
-- attempt a worker starts, in both priorities. A tenant with either is *capped* below.
--
-- * A capped tenant's jobs are claimed by one path, capped_claim, and no other (the queue's order,
--   the fair claim and the deadline path pass them over as they pass over a held tenant's). It
--   visits a bounded number of capped tenants per claim (twice its slots, at least 32), going round
--   them claim after claim; of each with jobs due and room (its running jobs counted, a new partial
--   index of the leased jobs with a tenant; its bucket, rate_tokens as of rate_at, filled for the
--   time since), it takes a transaction-level advisory lock (tried, not waited for: a claim that
--   does not get it leaves the tenant to the claim that has it), counts again, and claims at most
--   what is left, writing the bucket back. The lock is held until the claim commits, so the next
--   claim to count sees what this one took: claims racing on many workers never run, or start, more
--   than the caps. A review's claim locked every capped tenant, 10,000 at their caps took 289 ms,
--   and at 20,000 every claim failed (out of shared memory): now only those with room are locked.
--   Lowering a cap under what runs stops nothing: the running jobs finish, and no more start until
--   fewer run.
-- * Each capped tenant with room counts as one tenant in a claim's shares: the capped tenants take
--   slots × their number ÷ (their number + the other tenants with jobs due + 1 for the queue's
--   order), the fraction carried to the session's next claim, then the fair claim and the queue's
--   order take theirs, then the capped tenants whatever slots are left. (A review's tenant capped
--   at 1,000 took 8 of 16 slots beside ten others, and 20 capped tenants every slot: a cap raised a
--   tenant's share.)
-- * A capped tenant's background jobs whose deadline is near come before its backlog (a new index
--   on tenant and deadline); with the gate closed, only those run, as others'.
-- * Its jobs do not move a worker's claim cursor (the claim says which jobs are a capped tenant's:
--   tenant_is_capped), and their ends wake the worker's claim loop: a claim at the cap comes back
--   short, and a freed slot alone waited for the poll timer (a review's 200 ms jobs capped at 4 ran
--   0.77 at a time).
-- * A claim with no capped tenant (none, or all held) asks one more question than before: a probe
--   of a new partial index of tenant_limits.
-- * A row of tenant_limits with a cap and nothing else is kept (apply_tenant_limits deleted a row
--   without a pause or a budget).
-- * The interactive queue-wait alert leaves out the finished jobs of capped tenants, and the
--   waiting jobs of those running as many as their caps allow, or with more jobs due than their
--   buckets hold: their waits are the caps', as a held tenant's are its hold's (a tenant capped
--   with a backlog kept the alert raised, and the others' waits hidden in it). A capped tenant's
--   job that its caps would let start now still counts.
--
-- claim is 0088's otherwise (with the fair claim given what capped_claim left), tenants_due and
-- apply_tenant_limits 0088's, alert_measurements 0090's.

SET LOCAL ROLE switchyard_admin;

ALTER TABLE switchyard.tenant_limits
    ADD COLUMN max_running integer CHECK (max_running BETWEEN 1 AND 1000000),
    ADD COLUMN max_per_minute integer CHECK (max_per_minute BETWEEN 1 AND 1000000),
    ADD COLUMN rate_tokens double precision,
    ADD COLUMN rate_at timestamptz;
COMMENT ON COLUMN switchyard.tenant_limits.max_running IS
    'At most this many of the tenant''s jobs run at once, across the fleet and both priorities (NULL: no cap).';
COMMENT ON COLUMN switchyard.tenant_limits.max_per_minute IS
    'At most this many of the tenant''s jobs start a minute (attempts, both priorities; a burst of up to as many; NULL: no cap).';
COMMENT ON COLUMN switchyard.tenant_limits.rate_tokens IS
    'The starts max_per_minute left the tenant as of rate_at (NULL: a full minute''s); it fills at max_per_minute a minute.';
CREATE INDEX tenant_limits_capped_idx ON switchyard.tenant_limits (tenant)
    WHERE max_running IS NOT NULL OR max_per_minute IS NOT NULL;
-- A capped tenant's running jobs, counted at each of its claims.
CREATE INDEX jobs_tenant_running_idx ON switchyard.jobs (tenant) WHERE lease_owner IS NOT NULL AND tenant IS NOT NULL;
-- A capped tenant's background jobs whose deadline is near, taken first.
CREATE INDEX jobs_tenant_deadline_idx ON switchyard.jobs (tenant, deadline, id)
    WHERE deadline IS NOT NULL AND lease_owner IS NULL AND tenant IS NOT NULL AND held_run_at IS NULL;
GRANT SELECT (max_running, max_per_minute, rate_tokens, rate_at) ON switchyard.tenant_limits TO switchyard_submitter;

-- The starts a bucket of p_per_minute holds now: p_tokens as of p_at, filled at p_per_minute a
-- minute since, up to p_per_minute (a full one when never drawn from).
CREATE FUNCTION switchyard.rate_tokens_now(p_per_minute integer, p_tokens double precision, p_at timestamptz)
    RETURNS double precision
    LANGUAGE sql STABLE AS $$
    SELECT least(p_per_minute::double precision,
                 coalesce(p_tokens, p_per_minute) + p_per_minute * greatest(extract(epoch FROM now() - coalesce(p_at, now())), 0) / 60)
$$;

-- Claims jobs of the partition's capped tenants (tenant_limits.max_running or max_per_minute, not
-- held), each tenant's at most what its caps leave: its cap less its running jobs (both
-- partitions, every worker), and the whole starts its bucket holds (taken from it).
--
-- * It visits at most `visits` capped tenants, in name order from after p_after (the position the
--   caller read from switchyard.capped_after_<priority>, which this sets to the last one given a
--   job, or else the last one visited): a claim's work is bounded however many tenants are
--   capped, and claims go round them. Those with no job due, or no room (counted without a lock),
--   are passed over; the others are locked (a transaction-level advisory lock, tried: one another
--   claim holds is left to it) and counted again under the lock, which is held until the claim
--   commits.
-- * In the background partition, their jobs whose deadline is near are taken first, up to each
--   one's room and the slots, whatever their share (as the claim's deadline path takes others':
--   a review's capped tenant's jobs due in 20 s expired while it waited for its share);
--   p_most_attempts bounds that scan as it bounds the deadline path's (NULL: none has a
--   deadline). With p_urgent_only (the gate closed), only those.
-- * Then, with p_others (the other tenants with jobs due, and the queue's order, as the caller
--   counted them), the tenants' share of p_slots, slots × tenants ÷ (tenants + p_others): each
--   capped tenant with room counts as one tenant, as the fair claim counts each of the others;
--   the fraction is carried to the session's next claim (switchyard.capped_credit_<priority>), so
--   that claims of a slot or two give them their turns. With p_others 0, the slots left. The
--   slots are dealt a job at a time round the tenants with room, each tenant's jobs in its queue
--   order.
CREATE FUNCTION switchyard.capped_claim(p_priority text, p_worker text, p_slots integer, p_lease_seconds double precision,
                                        p_urgent_only boolean, p_most_attempts integer, p_after text, p_others integer)
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
                  AND j.run_at <= now());
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
                      AND j.run_at <= now() AND (j.deadline IS NULL OR j.deadline > now())
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
REVOKE ALL ON FUNCTION switchyard.capped_claim(text, text, integer, double precision, boolean, integer, text, integer) FROM PUBLIC;

-- Whether p_tenant has a cap on its running jobs or its starts a minute: a worker's claim asks it
-- of the jobs it claimed, which do not move its cursor (ClaimCursor), and whose ends may let it
-- claim at once (a freed slot alone does not).
CREATE FUNCTION switchyard.tenant_is_capped(p_tenant text) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
    SELECT EXISTS (SELECT FROM switchyard.tenant_limits l
                   WHERE l.tenant = p_tenant AND (l.max_running IS NOT NULL OR l.max_per_minute IS NOT NULL))
$$;
REVOKE ALL ON FUNCTION switchyard.tenant_is_capped(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION switchyard.tenant_is_capped(text) TO switchyard_worker;

-- Refuses a tenant's name no job can have, as pause_tenant and set_tenant_budget do.
CREATE FUNCTION switchyard.check_tenant_name(p_tenant text) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    IF p_tenant IS NULL OR length(p_tenant) NOT BETWEEN 1 AND 200 THEN
        PERFORM switchyard.reject('a tenant is a name of 1 to 200 characters',
                                  'Name the tenant as its jobs do (the tenant column of switchyard.jobs).');
    END IF;
END $$;

-- Caps p_tenant's running jobs at p_max (1 to 1,000,000), across the fleet and both priorities,
-- or removes its cap (NULL). Returns how many of its jobs run now. Lowered under what runs, the
-- running jobs finish and no more start until fewer run.
CREATE FUNCTION switchyard.set_tenant_max_running(p_tenant text, p_max integer) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
BEGIN
    PERFORM switchyard.check_tenant_name(p_tenant);
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

-- Lets at most p_max of p_tenant's jobs start a minute (1 to 1,000,000: attempts, both priorities, a
-- burst of up to p_max, then one every 60/p_max s), or removes the limit (NULL). A tenant given one
-- anew may start a full minute's at once; a changed one keeps what its bucket holds (up to the new
-- amount).
CREATE FUNCTION switchyard.set_tenant_max_per_minute(p_tenant text, p_max integer) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
BEGIN
    PERFORM switchyard.check_tenant_name(p_tenant);
    IF p_max IS NOT NULL AND p_max NOT BETWEEN 1 AND 1000000 THEN
        PERFORM switchyard.reject(format('a limit on a tenant''s jobs started a minute is 1 to 1000000 (got %s)', p_max),
                                  'To stop a tenant''s work, pause it: dispatcher tenants pause NAME. '
                                      || 'To remove its limit: dispatcher tenants max-per-minute NAME none.');
    END IF;
    IF p_max IS NULL THEN
        UPDATE switchyard.tenant_limits l SET max_per_minute = NULL, rate_tokens = NULL, rate_at = NULL, updated_at = now()
        WHERE l.tenant = p_tenant;
        -- A row that limits nothing any more goes.
        PERFORM switchyard.apply_tenant_limits(p_tenant);
    ELSE
        INSERT INTO switchyard.tenant_limits AS l (tenant, max_per_minute) VALUES (p_tenant, p_max)
        ON CONFLICT (tenant) DO UPDATE
        SET max_per_minute = EXCLUDED.max_per_minute, updated_at = now(),
            -- What the bucket holds now, under the new amount, and from now.
            rate_tokens = CASE WHEN l.max_per_minute IS NULL THEN NULL
                               ELSE least(switchyard.rate_tokens_now(l.max_per_minute, l.rate_tokens, l.rate_at), EXCLUDED.max_per_minute) END,
            rate_at = CASE WHEN l.max_per_minute IS NULL THEN NULL ELSE now() END;
    END IF;
END $$;
REVOKE ALL ON FUNCTION switchyard.set_tenant_max_per_minute(text, integer) FROM PUBLIC;

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
          AND NOT EXISTS (SELECT FROM switchyard.tenant_limits h WHERE h.tenant = walk.tenant AND (h.held_reason IS NOT NULL OR h.max_running IS NOT NULL OR h.max_per_minute IS NOT NULL))
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
    IF limited AND l.paused_at IS NULL AND l.budget IS NULL AND l.max_running IS NULL AND l.max_per_minute IS NULL THEN
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
                                                           capped_after, others);
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
                                                           NULL, capped_after, 0);
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
                                                           p_lease_seconds, gate_open IS NOT TRUE, most_attempts, capped_after, others);
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
                                                           p_lease_seconds, gate_open IS NOT TRUE, most_attempts, capped_after, 0);
    END IF;
END $$;

-- 0090's, leaving capped tenants' waits out of the queue-wait alert (above).
CREATE OR REPLACE FUNCTION switchyard.alert_measurements(p_at timestamptz DEFAULT now())
    RETURNS TABLE (
        kind text, subject text, value double precision, threshold double precision, breached boolean,
        recovered boolean, message text)
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    min_calls constant integer := coalesce(switchyard.numeric_setting('alert_min_calls'), 50)::integer;
    budget_share constant double precision := switchyard.numeric_setting('alert_tenant_budget_share');
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
    -- Tenants with a cap on their running jobs or their starts a minute (sql/0096), and those of them
    -- at a cap now: running as many as it allows, or with more jobs due than their buckets hold
    -- (counted up to that): their jobs' waits are the caps', an operator's decision, not the
    -- fleet's. (Every tenant with a rate, in a first form: a rate of a million a minute, and no
    -- worker, raised nothing.)
    capped constant text[] := ARRAY(SELECT l.tenant FROM switchyard.tenant_limits l
                                    WHERE l.max_running IS NOT NULL OR l.max_per_minute IS NOT NULL);
    at_cap constant text[] := ARRAY(
        SELECT l.tenant FROM switchyard.tenant_limits l
        WHERE l.max_running <= (SELECT count(*) FROM switchyard.jobs r WHERE r.tenant = l.tenant AND r.lease_owner IS NOT NULL)
              OR CASE WHEN l.max_per_minute IS NULL THEN false
                      ELSE switchyard.rate_tokens_now(l.max_per_minute, l.rate_tokens, l.rate_at) < (
                          SELECT count(*) FROM (
                              SELECT FROM switchyard.jobs r
                              WHERE r.tenant = l.tenant AND r.lease_owner IS NULL AND r.held_run_at IS NULL AND r.run_at <= p_at
                              LIMIT floor(switchyard.rate_tokens_now(l.max_per_minute, l.rate_tokens, l.rate_at))::bigint + 1) due)
                 END);
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
                  AND r.queue_wait_ms IS NOT NULL AND (r.tenant IS NULL OR NOT r.tenant = ANY (capped))
        ), waits AS (
            SELECT f.wait_ms, false AS waiting FROM finished f
            UNION ALL
            SELECT * FROM (
                SELECT extract(epoch FROM p_at - coalesce(j.waiting_since, greatest(j.created_at, j.run_at))) * 1000, true
                FROM switchyard.jobs_interactive j
                WHERE j.lease_owner IS NULL AND j.run_at <= p_at AND (j.tenant IS NULL OR NOT j.tenant = ANY (at_cap))
                ORDER BY j.run_at, j.id
                -- At least a nineteenth of what is measured: the top 5% can be waiting jobs.
                LIMIT greatest(waiting_sample, (SELECT count(*) FROM finished) / 18 + 1)) oldest
            UNION ALL
            -- Put back to wait for a model (every one of its rule's is down): waiting all the same.
            SELECT * FROM (
                SELECT extract(epoch FROM p_at - j.waiting_since) * 1000, true
                FROM switchyard.jobs_interactive j
                WHERE j.lease_owner IS NULL AND j.waiting_since IS NOT NULL AND j.run_at > p_at
                      AND j.held_run_at IS NULL AND (j.tenant IS NULL OR NOT j.tenant = ANY (at_cap))
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

    -- A tenant near its budget: its operators hear of it before its work stops.
    IF budget_share IS NOT NULL THEN
        RETURN QUERY
        -- The message reads as well when the alert clears (it says what was measured), and says
        -- what follows only while the share is reached: held already, or held once it is spent.
        SELECT 'tenant_budget_share'::text, l.tenant, (spent.usd / l.budget)::double precision, budget_share,
               reached, NOT reached,
               format('tenant %s has spent %s of its %s budget of %s (%s%%; the alert is at %s%%)',
                      l.tenant, switchyard.usd(spent.usd),
                      CASE l.budget_period WHEN 'day' THEN 'daily' ELSE 'monthly' END, switchyard.usd(l.budget),
                      round(100 * spent.usd / l.budget, 1), round(100 * budget_share::numeric, 1))
               || CASE WHEN NOT reached THEN ''
                       WHEN spent.usd >= l.budget
                       THEN format(': its jobs are held until its next period (to raise the budget: dispatcher tenants budget %s AMOUNT)',
                                   switchyard.shell_word(l.tenant))
                       ELSE format(': its jobs are held once it is spent (to raise it: dispatcher tenants budget %s AMOUNT)',
                                   switchyard.shell_word(l.tenant)) END
        FROM switchyard.tenant_limits l
        CROSS JOIN LATERAL (
            SELECT switchyard.tenant_spent(l.tenant, switchyard.budget_period_start(l.budget_period, p_at)) AS usd) spent
        -- At a share of 0, any spending: a tenant that has spent nothing has nothing to warn of.
        CROSS JOIN LATERAL (SELECT spent.usd >= budget_share::numeric * l.budget AND spent.usd > 0 AS reached) r
        WHERE l.budget > 0;
    END IF;
END $$;

-- As 0074 set it: CREATE OR REPLACE resets a function's settings.
ALTER FUNCTION switchyard.alert_measurements(timestamptz) SET jit = off;
