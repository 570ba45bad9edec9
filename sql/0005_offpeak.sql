-- Off-peak draining: background work waits for cheap capacity (price windows, cheap tiers)
-- unless its deadline cannot; workers never claim background work no model may run now; every
-- result records what it cost, what it would have cost, and why.

INSERT INTO switchyard.settings (name, value, description) VALUES
    ('background_max_cost_per_1k', '',
     'Background jobs run only on models whose price now (per 1K tokens, input and output averaged) is at most '
     || 'this; empty for no ceiling. A rule may set its own in settings.background_max_cost_per_1k.'),
    ('background_tiers', '',
     'Comma-separated price tiers background jobs may use (e.g. cheap,open_source); empty for any.'),
    ('background_paused', 'false', 'true while an operator has paused background work.'),
    ('background_drain_until', '', 'Until this time, background work ignores its price ceiling.'),
    ('background_escalation_seconds', '',
     'A background job whose deadline is this close runs on any eligible model, whatever the ceiling; empty for '
     || 'the default: its tiers'' latency targets times its attempts, plus retry backoff.');

-- Workers follow setting changes (pause, resume, drain) without a restart.
CREATE FUNCTION switchyard.notify_settings() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('switchyard_settings', '');
    RETURN NULL;
END $$;

CREATE TRIGGER settings_notify AFTER INSERT OR UPDATE OR DELETE ON switchyard.settings
    FOR EACH STATEMENT EXECUTE FUNCTION switchyard.notify_settings();

ALTER TABLE switchyard.results
    ADD COLUMN base_cost    numeric(20, 10),
    ADD COLUMN primary_cost numeric(20, 10);

COMMENT ON COLUMN switchyard.results.base_cost IS
    'What the call would have cost on the same model at its list (peak) price.';
COMMENT ON COLUMN switchyard.results.primary_cost IS
    'What it would have cost on its rule''s primary model at list price: the savings report''s baseline.';

-- The lowest input and output price multipliers among a model's windows open at an instant
-- (1 when none is). The same rules as PriceWindow in Swift: days are the days a window starts
-- on; a window whose end is not after its start runs past midnight.
CREATE FUNCTION switchyard.price_multipliers(p_windows jsonb, p_at timestamptz,
                                             OUT input numeric, OUT output numeric)
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    window_spec jsonb;
    local_time timestamp;
    minute integer;
    weekday integer;
    start_minute integer;
    end_minute integer;
    days integer[];
    is_open boolean;
BEGIN
    input := 1;
    output := 1;
    FOR window_spec IN SELECT value FROM jsonb_array_elements(coalesce(p_windows, '[]')) LOOP
        local_time := p_at AT TIME ZONE coalesce(window_spec ->> 'time_zone', 'UTC');
        minute := extract(hour FROM local_time)::integer * 60 + extract(minute FROM local_time)::integer;
        weekday := extract(isodow FROM local_time)::integer;
        start_minute := (split_part(window_spec ->> 'start', ':', 1)::integer * 60
                         + split_part(window_spec ->> 'start', ':', 2)::integer) % 1440;
        end_minute := (split_part(window_spec ->> 'end', ':', 1)::integer * 60
                       + split_part(window_spec ->> 'end', ':', 2)::integer) % 1440;
        days := switchyard.window_days(window_spec);
        IF end_minute <= start_minute THEN
            is_open := (minute >= start_minute AND weekday = ANY (days))
                       OR (minute < end_minute AND (CASE weekday WHEN 1 THEN 7 ELSE weekday - 1 END) = ANY (days));
        ELSE
            is_open := minute >= start_minute AND minute < end_minute AND weekday = ANY (days);
        END IF;
        IF is_open THEN
            input := least(input, coalesce(window_spec ->> 'input_multiplier', window_spec ->> 'multiplier')::numeric);
            output := least(output, coalesce(window_spec ->> 'output_multiplier', window_spec ->> 'multiplier')::numeric);
        END IF;
    END LOOP;
END $$;

-- A window's start days as ISO weekdays (1 = Monday); every day when it lists none.
CREATE FUNCTION switchyard.window_days(p_window jsonb) RETURNS integer[]
    LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_window ? 'days' THEN (
        SELECT array_agg(CASE lower(left(day, 3))
            WHEN 'mon' THEN 1 WHEN 'tue' THEN 2 WHEN 'wed' THEN 3 WHEN 'thu' THEN 4
            WHEN 'fri' THEN 5 WHEN 'sat' THEN 6 WHEN 'sun' THEN 7 ELSE day::integer END)
        FROM jsonb_array_elements_text(p_window -> 'days') AS day)
    ELSE ARRAY[1, 2, 3, 4, 5, 6, 7] END
$$;

-- When a window next opens, at or after an instant.
CREATE FUNCTION switchyard.window_next_start(p_window jsonb, p_at timestamptz) RETURNS timestamptz
    LANGUAGE sql STABLE AS $$
    SELECT min(start_at) FROM (
        SELECT ((z.local_day + offset_days) + make_interval(
                    hours => split_part(p_window ->> 'start', ':', 1)::integer % 24,
                    mins => split_part(p_window ->> 'start', ':', 2)::integer))
               AT TIME ZONE z.zone AS start_at,
               extract(isodow FROM z.local_day + offset_days)::integer AS weekday
        FROM (SELECT coalesce(p_window ->> 'time_zone', 'UTC') AS zone,
                     (p_at AT TIME ZONE coalesce(p_window ->> 'time_zone', 'UTC'))::date AS local_day) z,
             generate_series(0, 7) AS offset_days
    ) starts
    WHERE start_at >= p_at AND weekday = ANY (switchyard.window_days(p_window))
$$;

-- Whether background work may run now, and if not, why and when it may.
--   paused                   -> closed (an operator said so; deadlines do not override it)
--   draining until T         -> open until T, whatever the prices
--   no ceiling, no tier list -> open
--   otherwise open when some rule has an eligible model (enabled, breaker not open, tier allowed)
--   whose price now is within the rule's background ceiling (its own, else the global one).
CREATE FUNCTION switchyard.background_gate(p_at timestamptz DEFAULT now(),
                                           OUT is_open boolean, OUT reason text, OUT next_open_at timestamptz)
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    global_ceiling numeric := nullif(switchyard.setting('background_max_cost_per_1k'), '')::numeric;
    tiers text[] := string_to_array(nullif(switchyard.setting('background_tiers'), ''), ',');
    drain_until timestamptz := nullif(switchyard.setting('background_drain_until'), '')::timestamptz;
    candidate record;
BEGIN
    next_open_at := NULL;
    IF switchyard.setting('background_paused') = 'true' THEN
        is_open := false;
        reason := 'background work is paused (dispatcher background resume)';
        RETURN;
    END IF;
    IF drain_until IS NOT NULL AND drain_until > p_at THEN
        is_open := true;
        reason := format('draining until %s, whatever the prices', drain_until);
        RETURN;
    END IF;
    IF global_ceiling IS NULL AND tiers IS NULL
       AND NOT EXISTS (SELECT 1 FROM switchyard.routes r WHERE r.settings ? 'background_max_cost_per_1k') THEN
        is_open := true;
        reason := 'no background price ceiling';
        RETURN;
    END IF;
    is_open := false;
    reason := 'no model is within the background price ceiling now';
    FOR candidate IN
        SELECT m.name, m.price_per_1k_input, m.price_per_1k_output, m.price_windows,
               coalesce(nullif(r.settings ->> 'background_max_cost_per_1k', '')::numeric, global_ceiling) AS ceiling
        FROM switchyard.routes r
        CROSS JOIN LATERAL unnest(ARRAY[r.primary_model] || r.fallbacks) AS rule_model(name)
        JOIN switchyard.models m ON m.name = rule_model.name AND m.enabled
        LEFT JOIN switchyard.model_health h ON h.model = m.name
        WHERE (tiers IS NULL OR m.tier = ANY (tiers))
          AND coalesce(switchyard.effective_breaker(h.state, h.opened_at), 'closed') <> 'open'
    LOOP
        IF candidate.ceiling IS NULL OR (
            SELECT (candidate.price_per_1k_input * pm.input + candidate.price_per_1k_output * pm.output) / 2
                   <= candidate.ceiling
            FROM switchyard.price_multipliers(candidate.price_windows, p_at) pm) THEN
            is_open := true;
            reason := format('%s is within the background price ceiling', candidate.name);
            next_open_at := NULL;
            RETURN;
        END IF;
        -- Closed for this model now: when does one of its cheap-enough windows open?
        next_open_at := least(next_open_at, (
            SELECT min(switchyard.window_next_start(w.value, p_at))
            FROM jsonb_array_elements(candidate.price_windows) w
            WHERE candidate.price_per_1k_input * coalesce(w.value ->> 'input_multiplier', w.value ->> 'multiplier')::numeric
                  + candidate.price_per_1k_output * coalesce(w.value ->> 'output_multiplier', w.value ->> 'multiplier')::numeric
                  <= 2 * candidate.ceiling));
    END LOOP;
END $$;

-- How close a background job's deadline must be for it to run whatever the price: the setting,
-- or enough for every attempt to use every tier's latency target (1.5 + 3 + 10 s) plus the
-- retry backoff between attempts (2 s doubling), plus a minute of slack for the queue itself.
CREATE FUNCTION switchyard.escalation_horizon(p_max_attempts integer) RETURNS interval
    LANGUAGE sql STABLE AS $$
    SELECT make_interval(secs => coalesce(
        nullif(switchyard.setting('background_escalation_seconds'), '')::double precision,
        14.5 * p_max_attempts
        + coalesce((SELECT sum(least(2 * power(2, k - 1), 300)) FROM generate_series(1, p_max_attempts - 1) AS k), 0)
        + 60))
$$;

-- Claims as before, and background only while the gate is open — or, when it is closed, only
-- jobs whose deadline is within their escalation horizon. Nothing is claimed to be put back.
CREATE OR REPLACE FUNCTION switchyard.claim(
    p_worker text, p_free_slots integer, p_background_slots integer, p_lease_seconds double precision
) RETURNS SETOF switchyard.jobs
    LANGUAGE plpgsql AS $$
DECLARE
    claimed integer := 0;
    gate_open boolean;
BEGIN
    IF p_free_slots <= 0 THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH picked AS (
        SELECT j.id FROM switchyard.jobs_interactive j
        WHERE j.lease_owner IS NULL AND j.run_at <= now() AND (j.deadline IS NULL OR j.deadline > now())
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
    IF gate_open THEN
        RETURN QUERY
        WITH picked AS (
            SELECT j.id FROM switchyard.jobs_background j
            WHERE j.lease_owner IS NULL AND j.run_at <= now() AND (j.deadline IS NULL OR j.deadline > now())
            ORDER BY j.run_at, j.id
            LIMIT least(p_free_slots - claimed, p_background_slots)
            FOR NO KEY UPDATE SKIP LOCKED
        )
        UPDATE switchyard.jobs_background j
        SET lease_owner = p_worker, lease_expires_at = now() + make_interval(secs => p_lease_seconds),
            attempt = j.attempt + 1, claimed_at = now()
        FROM picked WHERE j.id = picked.id
        RETURNING j.*;
    ELSIF switchyard.setting('background_paused') IS DISTINCT FROM 'true' THEN
        -- Closed: only what cannot wait for the next window (found by the deadline index).
        RETURN QUERY
        WITH picked AS (
            SELECT j.id FROM switchyard.jobs_background j
            WHERE j.lease_owner IS NULL AND j.run_at <= now() AND j.deadline > now()
              AND j.deadline <= now() + switchyard.escalation_horizon(100)  -- the widest: lets the index bound it
              AND j.deadline <= now() + switchyard.escalation_horizon(j.max_attempts)
            ORDER BY j.deadline, j.id
            LIMIT least(p_free_slots - claimed, p_background_slots)
            FOR NO KEY UPDATE SKIP LOCKED
        )
        UPDATE switchyard.jobs_background j
        SET lease_owner = p_worker, lease_expires_at = now() + make_interval(secs => p_lease_seconds),
            attempt = j.attempt + 1, claimed_at = now()
        FROM picked WHERE j.id = picked.id
        RETURNING j.*;
    END IF;
END $$;

-- Write-back as in 0002, and the result also records base_cost and primary_cost.
CREATE OR REPLACE FUNCTION switchyard.complete(p_worker text, p_items jsonb)
    RETURNS TABLE (job_id bigint, kind text)
    LANGUAGE plpgsql AS $$
DECLARE
    requeued integer;
BEGIN
    RETURN QUERY
    WITH input AS (
        SELECT * FROM jsonb_to_recordset(p_items) AS x(
            id bigint, attempt integer, kind text, status text, task_class text, model text, provider text,
            tier text, response jsonb, error jsonb, trail jsonb, tokens_in integer, tokens_out integer,
            cost numeric, base_cost numeric, primary_cost numeric, latency_ms double precision, metadata jsonb)
        WHERE x.kind = 'result'
    ), finished AS (
        DELETE FROM switchyard.jobs j USING input i
        WHERE j.id = i.id AND j.attempt = i.attempt AND j.lease_owner = p_worker
        RETURNING j.*
    )
    INSERT INTO switchyard.results AS r
        (job_id, status, priority, task_class, affinity_key, tenant, model, provider, tier, request, response,
         error, attempts, attempt_count, tokens_in, tokens_out, cost, base_cost, primary_cost, queue_wait_ms,
         latency_ms, created_at, started_at, worker, retry_of, metadata)
    SELECT f.id, i.status, f.priority, coalesce(i.task_class, f.task_class), f.affinity_key, f.tenant, i.model,
           i.provider, i.tier, f.request, i.response, i.error, f.attempts || coalesce(i.trail, '[]'), f.attempt,
           i.tokens_in, i.tokens_out, i.cost, i.base_cost, i.primary_cost,
           extract(epoch FROM f.claimed_at - greatest(f.created_at, f.run_at)) * 1000, i.latency_ms,
           f.created_at, f.claimed_at, p_worker, f.retry_of, f.metadata || coalesce(i.metadata, '{}')
    FROM finished f JOIN input i ON i.id = f.id
    RETURNING r.job_id, 'result'::text;

    RETURN QUERY
    UPDATE switchyard.jobs j
    SET lease_owner = NULL, lease_expires_at = NULL, claimed_at = NULL,
        run_at = CASE WHEN i.kind IN ('retry', 'postpone') THEN coalesce(i.retry_at, now()) ELSE j.run_at END,
        attempt = CASE WHEN i.kind IN ('release', 'postpone') THEN greatest(j.attempt - 1, 0) ELSE j.attempt END,
        attempts = j.attempts || coalesce(i.trail, '[]')
    FROM jsonb_to_recordset(p_items) AS i(id bigint, attempt integer, kind text, retry_at timestamptz, trail jsonb)
    WHERE i.kind IN ('retry', 'release', 'postpone') AND j.id = i.id AND j.attempt = i.attempt
      AND j.lease_owner = p_worker
    RETURNING j.id, i.kind;
    GET DIAGNOSTICS requeued = ROW_COUNT;
    IF requeued > 0 THEN
        PERFORM pg_notify('switchyard_jobs', '');
    END IF;
END $$;

-- Spend per model and UTC day: what was paid, and what the same calls would have cost at list
-- price on the same model and on each rule's primary model.
CREATE VIEW switchyard.cost_by_model_day AS
SELECT (r.finished_at AT TIME ZONE 'UTC')::date AS day, r.model, r.priority,
       count(*) AS jobs, sum(r.tokens_in) AS tokens_in, sum(r.tokens_out) AS tokens_out,
       sum(r.cost) AS cost, sum(r.base_cost) AS list_price_cost, sum(r.primary_cost) AS primary_model_cost
FROM switchyard.results r
WHERE r.status = 'succeeded'
GROUP BY 1, 2, 3;

-- What finished jobs cost against what they would have cost on their rule's primary model at
-- list price, split by priority, and where the difference came from.
CREATE FUNCTION switchyard.savings(p_since timestamptz DEFAULT '-infinity')
    RETURNS TABLE (priority text, jobs bigint, cost numeric, baseline numeric, saved numeric,
                   saved_by_cheaper_model numeric, saved_by_off_peak numeric,
                   escalated_jobs bigint, escalated_cost numeric)
    LANGUAGE sql STABLE AS $$
    SELECT r.priority, count(*), coalesce(sum(r.cost), 0), coalesce(sum(r.primary_cost), 0),
           coalesce(sum(r.primary_cost - r.cost), 0),
           coalesce(sum(r.primary_cost - r.base_cost), 0),
           coalesce(sum(r.base_cost - r.cost), 0),
           count(*) FILTER (WHERE r.metadata ? 'escalation'),
           coalesce(sum(r.cost) FILTER (WHERE r.metadata ? 'escalation'), 0)
    FROM switchyard.results r
    WHERE r.status = 'succeeded' AND r.finished_at >= p_since AND r.primary_cost IS NOT NULL
    GROUP BY ROLLUP (r.priority)
    ORDER BY r.priority NULLS LAST
$$;
