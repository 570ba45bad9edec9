-- Price windows: a time zone Postgres does not know can no longer stop the fleet; a multiplier
-- above 1 (a surcharge) applies; a window's next start is its first moment on a day the clocks go
-- back; background tiers are read without the spaces around them.
--
-- * A price window's time_zone is read with AT TIME ZONE by price_multipliers and
--   window_next_start, which background_gate calls inside every worker's claim. A name the
--   catalog import accepted (Foundation read "GMT+0800") but Postgres does not know raised in
--   every claim, rolling back the interactive jobs it had claimed too: nothing ran. And names
--   both accept but read differently (an abbreviation such as "IST", a POSIX offset such as
--   "GMT+8", which Postgres reads as UTC-8 and Foundation as UTC+8) put the gate and the planner
--   at odds. A window is now read only in a zone of pg_timezone_names (kept in
--   switchyard.time_zones, looked up by key in the claim): in any other it never opens (and has
--   no next start). The models table refuses such a zone when it is written (the import also
--   checks that Postgres and the worker read the zone alike); a model that already has one is
--   named in a warning here.
-- * The open windows' lowest multiplier applies, 1 when none is open. The lowest started at 1,
--   so a window with a multiplier over 1 (the catalog allows up to 10) never applied: the call
--   was priced at list, and the background ceiling let it through.
-- * On the day the clocks go back, a local start time that happens twice is the first one, when
--   the window opens (AT TIME ZONE takes the second): the worker's planner does the same.
-- * background_tiers "cheap, premium" named the tier " premium" here, while the worker trims
--   each name: the gate stayed closed for jobs the worker would run.

SET LOCAL ROLE switchyard_admin;

-- The IANA zones a window may name: pg_timezone_names, which takes milliseconds to list (it reads
-- the zone files), so the claim's gate looks a name up here instead. Filled from it now, and
-- again by the models trigger with each zone it accepts (one a newer tzdata added).
CREATE TABLE switchyard.time_zones (name text PRIMARY KEY);
ALTER TABLE switchyard.time_zones ENABLE ROW LEVEL SECURITY;
INSERT INTO switchyard.time_zones (name) SELECT DISTINCT name FROM pg_catalog.pg_timezone_names;

-- The local time at an instant in a zone; NULL unless the zone is an IANA one Postgres knows
-- (AT TIME ZONE alone also takes abbreviations and POSIX offsets, which Foundation reads
-- differently, and raises for a name it does not know).
CREATE FUNCTION switchyard.local_time(p_at timestamptz, p_zone text) RETURNS timestamp
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
    SELECT CASE WHEN EXISTS (SELECT FROM switchyard.time_zones z WHERE z.name = p_zone) THEN p_at AT TIME ZONE p_zone END
$$;

CREATE OR REPLACE FUNCTION switchyard.price_multipliers(p_windows jsonb, p_at timestamptz,
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
    input := NULL;
    output := NULL;
    FOR window_spec IN SELECT value FROM jsonb_array_elements(coalesce(p_windows, '[]')) LOOP
        local_time := switchyard.local_time(p_at, coalesce(window_spec ->> 'time_zone', 'UTC'));
        CONTINUE WHEN local_time IS NULL;
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
            -- least ignores the NULL the first open window meets.
            input := least(input, coalesce(window_spec ->> 'input_multiplier', window_spec ->> 'multiplier')::numeric);
            output := least(output, coalesce(window_spec ->> 'output_multiplier', window_spec ->> 'multiplier')::numeric);
        END IF;
    END LOOP;
    input := coalesce(input, 1);
    output := coalesce(output, 1);
END $$;

-- When a window next opens, at or after an instant (NULL when its zone is unknown to Postgres).
-- A start time that happens twice (the clocks go back) is the first; one that does not happen
-- (they go forward) is read with the offset before the change, as Foundation reads it.
CREATE OR REPLACE FUNCTION switchyard.window_next_start(p_window jsonb, p_at timestamptz) RETURNS timestamptz
    LANGUAGE sql STABLE AS $$
    SELECT min(start_at) FROM (
        SELECT CASE WHEN (earlier AT TIME ZONE z.zone) = local_start THEN least(earlier, later) ELSE later END
                   AS start_at,
               weekday
        FROM (SELECT coalesce(p_window ->> 'time_zone', 'UTC') AS zone,
                     switchyard.local_time(p_at, coalesce(p_window ->> 'time_zone', 'UTC'))::date AS local_day) z,
             generate_series(0, 7) AS offset_days,
             LATERAL (SELECT (z.local_day + offset_days) + make_interval(
                                 hours => split_part(p_window ->> 'start', ':', 1)::integer % 24,
                                 mins => split_part(p_window ->> 'start', ':', 2)::integer) AS local_start,
                             extract(isodow FROM z.local_day + offset_days)::integer AS weekday) s,
             LATERAL (SELECT s.local_start AT TIME ZONE z.zone AS later,
                             ((s.local_start - interval '1 hour') AT TIME ZONE z.zone) + interval '1 hour' AS earlier) c
        WHERE z.local_day IS NOT NULL
    ) starts
    WHERE start_at >= p_at AND weekday = ANY (switchyard.window_days(p_window))
$$;

-- When a window next closes, at or after an instant (NULL when its zone is unknown). A window
-- that crosses midnight closes the day after it starts, so starts from the day before count.
CREATE FUNCTION switchyard.window_next_end(p_window jsonb, p_at timestamptz) RETURNS timestamptz
    LANGUAGE sql STABLE AS $$
    SELECT min(end_at) FROM (
        SELECT CASE WHEN (earlier AT TIME ZONE z.zone) = local_end THEN least(earlier, later) ELSE later END AS end_at,
               weekday
        FROM (SELECT coalesce(p_window ->> 'time_zone', 'UTC') AS zone,
                     switchyard.local_time(p_at, coalesce(p_window ->> 'time_zone', 'UTC'))::date AS local_day,
                     (split_part(p_window ->> 'end', ':', 1)::integer * 60 + split_part(p_window ->> 'end', ':', 2)::integer)
                         % 1440 <= (split_part(p_window ->> 'start', ':', 1)::integer * 60
                                    + split_part(p_window ->> 'start', ':', 2)::integer) % 1440 AS ends_next_day) z,
             generate_series(-1, 7) AS offset_days,
             LATERAL (SELECT (z.local_day + offset_days + CASE WHEN z.ends_next_day THEN 1 ELSE 0 END) + make_interval(
                                 hours => split_part(p_window ->> 'end', ':', 1)::integer % 24,
                                 mins => split_part(p_window ->> 'end', ':', 2)::integer) AS local_end,
                             extract(isodow FROM z.local_day + offset_days)::integer AS weekday) s,
             LATERAL (SELECT s.local_end AT TIME ZONE z.zone AS later,
                             ((s.local_end - interval '1 hour') AT TIME ZONE z.zone) + interval '1 hour' AS earlier) c
        WHERE z.local_day IS NOT NULL
    ) ends
    WHERE end_at >= p_at AND weekday = ANY (switchyard.window_days(p_window))
$$;

-- 0011's, with each tier name trimmed (as BackgroundPolicy reads them), and, for a model within
-- the ceiling at its list price, the end of a window open now (a surcharge) as a time it may
-- open: the planner waits for it too.
CREATE OR REPLACE FUNCTION switchyard.background_gate(p_at timestamptz DEFAULT now(),
                                           OUT is_open boolean, OUT reason text, OUT next_open_at timestamptz)
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    price_text constant text := '^\s*[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]{1,4})?\s*$';
    global_text text := switchyard.setting('background_max_cost_per_1k');
    global_ceiling numeric := CASE WHEN global_text ~ price_text THEN global_text::numeric END;
    tiers text[] := (SELECT array_agg(btrim(t)) FROM unnest(string_to_array(
                         nullif(btrim(coalesce(switchyard.setting('background_tiers'), '')), ''), ',')) AS t
                     WHERE btrim(t) <> '');
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
               coalesce(CASE WHEN r.settings ->> 'background_max_cost_per_1k' ~ price_text
                             THEN (r.settings ->> 'background_max_cost_per_1k')::numeric END,
                        global_ceiling) AS ceiling
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
        -- Within the ceiling at list price: when does the surcharge open now end? (A window is
        -- open now when it ends before it next starts.)
        IF candidate.price_per_1k_input + candidate.price_per_1k_output <= 2 * candidate.ceiling THEN
            next_open_at := least(next_open_at, (
                SELECT min(e.end_at)
                FROM jsonb_array_elements(candidate.price_windows) w,
                     LATERAL (SELECT switchyard.window_next_end(w.value, p_at) AS end_at) e
                WHERE e.end_at < coalesce(switchyard.window_next_start(w.value, p_at), 'infinity')));
        END IF;
    END LOOP;
END $$;

-- The zones of a model's price windows that are not IANA zones Postgres knows (p_live: ask
-- pg_timezone_names itself, as a write does; else switchyard.time_zones).
CREATE FUNCTION switchyard.unknown_window_zones(p_windows jsonb, p_live boolean DEFAULT false) RETURNS text[]
    LANGUAGE sql STABLE AS $$
    SELECT array_agg(DISTINCT w ->> 'time_zone')
    FROM jsonb_array_elements(CASE WHEN jsonb_typeof(p_windows) = 'array' THEN p_windows ELSE '[]' END) AS w
    WHERE jsonb_typeof(w) = 'object' AND w ? 'time_zone'
      AND CASE WHEN p_live THEN NOT EXISTS (SELECT FROM pg_catalog.pg_timezone_names n WHERE n.name = w ->> 'time_zone')
               ELSE NOT EXISTS (SELECT FROM switchyard.time_zones z WHERE z.name = w ->> 'time_zone') END
$$;

CREATE FUNCTION switchyard.check_price_window_zones() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    unknown constant text[] := switchyard.unknown_window_zones(NEW.price_windows, true);
BEGIN
    -- A zone pg_timezone_names lists that the table does not have yet (a newer tzdata).
    INSERT INTO switchyard.time_zones (name)
    SELECT DISTINCT w ->> 'time_zone'
    FROM jsonb_array_elements(CASE WHEN jsonb_typeof(NEW.price_windows) = 'array' THEN NEW.price_windows ELSE '[]' END) AS w
    WHERE jsonb_typeof(w) = 'object' AND w ? 'time_zone' AND NOT (w ->> 'time_zone' = ANY (coalesce(unknown, '{}')))
    ON CONFLICT DO NOTHING;
    IF unknown IS NOT NULL THEN
        PERFORM switchyard.reject(
            format('model %s: price window time_zone %s is not an IANA time zone Postgres knows',
                   NEW.name, array_to_string(unknown, ', ')),
            'Use an IANA region name such as "Asia/Shanghai" or "Europe/Paris" (SELECT name FROM pg_timezone_names '
            || 'lists them); abbreviations such as "PST" and offsets such as "GMT+8" are read differently by '
            || 'different programs.');
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER models_check_price_window_zones BEFORE INSERT OR UPDATE OF price_windows ON switchyard.models
    FOR EACH ROW EXECUTE FUNCTION switchyard.check_price_window_zones();

DO $$
DECLARE
    model record;
BEGIN
    FOR model IN
        SELECT m.name, switchyard.unknown_window_zones(m.price_windows) AS zones FROM switchyard.models m
        WHERE switchyard.unknown_window_zones(m.price_windows) IS NOT NULL
    LOOP
        RAISE WARNING 'model %: price window time_zone % is not an IANA time zone Postgres knows; the window never opens',
            model.name, array_to_string(model.zones, ', ')
            USING HINT = 'Import the catalog again with an IANA region name such as "Asia/Shanghai".';
    END LOOP;
END $$;

REVOKE ALL ON FUNCTION switchyard.local_time(timestamptz, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION switchyard.local_time(timestamptz, text) TO switchyard_worker, switchyard_submitter;
