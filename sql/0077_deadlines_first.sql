-- A background job whose deadline is near is claimed first, whether the gate is open or not.
--
-- With the gate open (a cheap window, or no ceiling), background claims took the queue's order,
-- run_at then id: a job with a deadline waited its turn behind a backlog with none, and expired.
-- A walkthrough queued 3,000 jobs without a deadline and, a second later, 50 with 30 s: all 50
-- expired, while with the gate closed the same jobs ran at once, past the ceiling (the deadline
-- path). The deadline path now comes first in both cases; with the gate open, the queue's order
-- fills the slots it leaves. Paused, nothing is claimed, as before.
--
-- Both paths read the deadline index up to the widest escalation horizon, of 100 attempts (8 h),
-- and called escalation_horizon for each job in it: with 100,000 jobs due in 3 h and none near,
-- a claim took 2.2 s (it did with the gate closed already). The bound is now the horizon of the
-- most attempts a queued job with a deadline has (a new index finds it in one probe), each job's
-- horizon is the function's formula as an inlined expression (horizon_seconds, which
-- escalation_horizon now uses too), and the deadline index is on (deadline, id), the path's order.
-- Left: one queued job with many attempts (100: 8.7 h) widens the bound for all, and a claim
-- then reads every job due within it (25 ms at 100,000).
--
-- A worker's claim cursor (ClaimCursor) does not advance past a job the deadline path took: such a
-- job stands anywhere in the queue's order, and the cursor past it would skip the backlog ahead
-- of it until the next reset.
--
-- claim is 0012's otherwise.

SET LOCAL ROLE switchyard_admin;

-- The most attempts of any queued job with a deadline, in one probe: the deadline path's bound.
CREATE INDEX jobs_deadline_attempts_idx ON switchyard.jobs (max_attempts)
    WHERE deadline IS NOT NULL AND lease_owner IS NULL;

-- The deadline path's order, deadline then id, read from the index: on (deadline) alone, a batch
-- submitted with one deadline (sql.md's own example) had every claim read and sort all of it on
-- disk, 3 MB and 80 ms a claim at 100,000 jobs (a review), now 2 ms.
DROP INDEX switchyard.jobs_deadline_idx;
CREATE INDEX jobs_deadline_idx ON switchyard.jobs (deadline, id) WHERE deadline IS NOT NULL AND lease_owner IS NULL;

-- escalation_horizon's formula on its own, for a query to apply per job without a subquery per
-- row: every attempt at the primary's time (per_attempt: 13 s of the later tiers' targets plus
-- the primary's) plus the retries' backoff between them (the sum of min(2^k, 300) s for k below
-- the attempts: 2^n - 2 up to 9 attempts, then 300 s more for each) plus a minute; or the
-- override setting. Inlined by the planner (a single expression).
CREATE FUNCTION switchyard.horizon_seconds(p_per_attempt double precision, p_override double precision,
                                           p_max_attempts integer) RETURNS double precision
    LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(p_override,
                    p_per_attempt * p_max_attempts
                    + CASE WHEN p_max_attempts <= 9 THEN power(2, p_max_attempts) - 2
                           ELSE 510 + 300 * (p_max_attempts - 9) END
                    + 60)
$$;

-- The per-attempt time and override it takes, read once.
CREATE FUNCTION switchyard.horizon_terms(OUT per_attempt double precision, OUT override double precision)
    LANGUAGE sql STABLE AS $$
    SELECT 13 + greatest(1.5, coalesce((SELECT max(r.max_latency_ms) FROM switchyard.routes r), 0) / 1000.0),
           nullif(switchyard.setting('background_escalation_seconds'), '')::double precision
$$;

-- One formula (Swift's BackgroundPolicy.escalationHorizon is its mirror, and a test holds them equal).
CREATE OR REPLACE FUNCTION switchyard.escalation_horizon(p_max_attempts integer) RETURNS interval
    LANGUAGE sql STABLE AS $$
    SELECT make_interval(secs => switchyard.horizon_seconds(t.per_attempt, t.override, p_max_attempts))
    FROM switchyard.horizon_terms() t
$$;

CREATE OR REPLACE FUNCTION switchyard.claim(
    p_worker text, p_free_slots integer, p_background_slots integer, p_lease_seconds double precision,
    p_interactive_after_run_at timestamptz DEFAULT NULL, p_interactive_after_id bigint DEFAULT NULL,
    p_background_after_run_at timestamptz DEFAULT NULL, p_background_after_id bigint DEFAULT NULL
) RETURNS SETOF switchyard.jobs
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    claimed integer := 0;
    urgent integer := 0;
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
    IF p_free_slots <= 0 THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH picked AS (
        SELECT j.id FROM switchyard.jobs_interactive j
        WHERE j.lease_owner IS NULL AND (j.run_at, j.id) > (interactive_after, interactive_after_id)
              AND j.run_at <= now() AND (j.deadline IS NULL OR j.deadline > now())
        ORDER BY j.run_at, j.id
        LIMIT p_free_slots
        FOR NO KEY UPDATE SKIP LOCKED
    )
    UPDATE switchyard.jobs_interactive j
    SET lease_owner = p_worker, lease_expires_at = now() + make_interval(secs => p_lease_seconds),
        attempt = j.attempt + 1, claimed_at = now()
    FROM picked WHERE j.id = picked.id
    RETURNING j.*;
    GET DIAGNOSTICS claimed = ROW_COUNT;
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
    IF gate_open AND claimed + urgent < p_free_slots AND urgent < coalesce(p_background_slots, p_free_slots) THEN
        -- Then the queue's order. (A worker's cursor does not move past a job of the first
        -- statement: ClaimCursor.)
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

GRANT EXECUTE ON FUNCTION switchyard.horizon_seconds(double precision, double precision, integer),
    switchyard.horizon_terms() TO switchyard_worker;
