-- The gate says when an open breaker, not the price, holds background work back, and when no
-- window ever will open it.
--
-- A background walkthrough's model was in its cheap window, within the ceiling, when its breaker
-- opened: the gate said "no model is within the background price ceiling now; next cheap window
-- 23:30" (another rule's window, seven hours off), while it would open with the breaker's
-- half-open turn, 30 s later. A model within the limits whose breaker is open now gives its
-- half-open time as the next opening and its name in the reason. And with a ceiling below every
-- price the gate said only "… now", with no next window: it now says "at any hour", and what
-- ends the wait.
--
-- background_gate is 0057's otherwise.

SET LOCAL ROLE switchyard_admin;

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
    has_ceiling boolean;
    limits text;
    candidate record;
    broken text;
    open_seconds constant double precision := coalesce(switchyard.numeric_setting('breaker_open_seconds'), 30);
BEGIN
    next_open_at := NULL;
    IF switchyard.setting('background_paused') = 'true' THEN
        is_open := false;
        reason := 'background work is paused (dispatcher background resume)';
        RETURN;
    END IF;
    IF drain_until IS NOT NULL AND drain_until > p_at THEN
        is_open := true;
        reason := format('draining until %s, whatever the prices',
                         to_char(drain_until AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'));
        RETURN;
    END IF;
    IF global_ceiling IS NULL AND tiers IS NULL
       AND NOT EXISTS (SELECT 1 FROM switchyard.routes r WHERE r.settings ? 'background_max_cost_per_1k') THEN
        is_open := true;
        reason := 'no background price ceiling';
        RETURN;
    END IF;
    -- What binds: the price ceiling (global or a rule's), the tiers, or both.
    has_ceiling := global_ceiling IS NOT NULL
                   OR EXISTS (SELECT 1 FROM switchyard.routes r WHERE r.settings ? 'background_max_cost_per_1k');
    limits := CASE WHEN NOT has_ceiling THEN format('the background tiers (%s)', array_to_string(tiers, ', '))
                   WHEN tiers IS NOT NULL THEN format('the background price ceiling and tiers (%s)', array_to_string(tiers, ', '))
                   ELSE 'the background price ceiling' END;
    is_open := false;
    reason := format('no model is within %s now', limits);
    FOR candidate IN
        SELECT m.name, m.price_per_1k_input, m.price_per_1k_output, m.price_windows,
               coalesce(switchyard.effective_breaker(h.state, h.opened_at), 'closed') AS breaker,
               h.opened_at + make_interval(secs => open_seconds) AS half_open_at,
               coalesce(CASE WHEN r.settings ->> 'background_max_cost_per_1k' ~ price_text
                             THEN (r.settings ->> 'background_max_cost_per_1k')::numeric END,
                        global_ceiling) AS ceiling
        FROM switchyard.routes r
        CROSS JOIN LATERAL unnest(ARRAY[r.primary_model] || r.fallbacks) AS rule_model(name)
        JOIN switchyard.models m ON m.name = rule_model.name AND m.enabled
        LEFT JOIN switchyard.model_health h ON h.model = m.name
        WHERE (tiers IS NULL OR m.tier = ANY (tiers))
    LOOP
        IF candidate.ceiling IS NULL OR (
            SELECT (candidate.price_per_1k_input * pm.input + candidate.price_per_1k_output * pm.output) / 2
                   <= candidate.ceiling
            FROM switchyard.price_multipliers(candidate.price_windows, p_at) pm) THEN
            IF candidate.breaker = 'open' THEN
                -- Within the limits but out of rotation: the gate opens when its breaker turns
                -- half-open, not at a window (a walkthrough's gate blamed the price, and named
                -- another rule's window seven hours off, while the model in its window had a
                -- breaker open for 30 s more).
                broken := coalesce(broken, candidate.name);
                next_open_at := least(next_open_at, candidate.half_open_at);
                CONTINUE;
            END IF;
            is_open := true;
            reason := format('%s is within %s', candidate.name, limits);
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
    IF broken IS NOT NULL THEN
        reason := format('no model is within %s now but %s, whose breaker is open', limits, broken);
    ELSIF next_open_at IS NULL THEN
        -- No window of any model ever brings one within them (a ceiling below every price).
        reason := format('no model is within %s at any hour: it waits until they are changed or a drain begins '
                         '(dispatcher background ceiling | drain), or a job''s deadline is near', limits);
    END IF;
END $$;
