-- The models table refuses a price window the workers' claim could not read.
--
-- Every claim calls background_gate(), which reads every model's price_windows with casts
-- (start and end to integer minutes, days to numbers, multipliers to numeric). A window written
-- by SQL with "start": "7pm", "days": ["xyz"] or "multiplier": "half" made each cast raise in
-- every claim, after the claim had taken interactive jobs too: a review's fleet ran nothing until
-- the window was put right. The catalog import never writes such a window (it reads each with
-- the worker's rules first); SQL now meets the same rules when it writes one: price_windows is
-- an array of objects with only the known fields, "start" and "end" as "HH:MM" (00:00 to 24:00),
-- "days" as a non-empty array of mon…sun or 1…7, multipliers numbers from 0 to 10, and either
-- "multiplier" or both "input_multiplier" and "output_multiplier". A model that already has such
-- a window is named in a warning here.
SET LOCAL ROLE switchyard_admin;

-- What is wrong with one price window, in the words of the catalog import, or NULL.
CREATE FUNCTION switchyard.price_window_problem(p_window jsonb) RETURNS text
    LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    known constant text[] := ARRAY['days', 'start', 'end', 'time_zone', 'multiplier', 'input_multiplier',
                                   'output_multiplier'];
    unknown text;
    bound text;
    text_value text;
    hour numeric;
    minute numeric;
    factor text;
    out_of_range boolean;
    day jsonb;
BEGIN
    IF jsonb_typeof(p_window) IS DISTINCT FROM 'object' THEN
        RETURN 'must be an object like {"start": "16:30", "end": "00:30", "multiplier": 0.5}';
    END IF;
    SELECT min(k) INTO unknown FROM jsonb_object_keys(p_window) AS k WHERE NOT k = ANY (known);
    IF unknown IS NOT NULL THEN
        RETURN format('has an unknown field "%s" (known: %s)', unknown,
                      array_to_string(ARRAY(SELECT unnest(known) ORDER BY 1), ', '));
    END IF;
    IF p_window ? 'days' THEN
        IF jsonb_typeof(p_window -> 'days') <> 'array' OR jsonb_array_length(p_window -> 'days') = 0 THEN
            RETURN '"days" must be a non-empty array like ["mon", "fri"]';
        END IF;
        FOR day IN SELECT value FROM jsonb_array_elements(p_window -> 'days') LOOP
            CONTINUE WHEN jsonb_typeof(day) = 'string'
                          AND lower(left(day #>> '{}', 3)) IN ('mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun');
            -- As written: the gate reads a day with ::integer, which takes 1 but not 1.0 (jsonb keeps it).
            CONTINUE WHEN jsonb_typeof(day) = 'number' AND day #>> '{}' ~ '^[1-7]$';
            RETURN format('"days" has %s; use mon…sun or 1 (Monday)…7 (Sunday)', day::text);
        END LOOP;
    END IF;
    IF p_window ? 'time_zone' AND jsonb_typeof(p_window -> 'time_zone') <> 'string' THEN
        RETURN format('"time_zone" must be an IANA zone like "UTC" or "Asia/Shanghai" (got %s)',
                      (p_window -> 'time_zone')::text);
    END IF;
    FOREACH factor IN ARRAY ARRAY['multiplier', 'input_multiplier', 'output_multiplier'] LOOP
        CONTINUE WHEN NOT p_window ? factor;
        -- (A CASE here, not an OR: SQL does not promise to test the type before the cast.)
        out_of_range := CASE WHEN jsonb_typeof(p_window -> factor) = 'number'
                             THEN (p_window ->> factor)::numeric NOT BETWEEN 0 AND 10 ELSE true END;
        IF out_of_range THEN
            RETURN format('"%s" must be a number from 0 to 10, like 0.5 for half price', factor);
        END IF;
    END LOOP;
    IF NOT (p_window ? 'multiplier' OR (p_window ? 'input_multiplier' AND p_window ? 'output_multiplier')) THEN
        RETURN 'needs "multiplier" (or input_multiplier and output_multiplier)';
    END IF;
    FOREACH bound IN ARRAY ARRAY['start', 'end'] LOOP
        IF jsonb_typeof(p_window -> bound) IS DISTINCT FROM 'string' THEN
            RETURN format('needs "%s" as "HH:MM"', bound);
        END IF;
        text_value := p_window ->> bound;
        IF text_value !~ '^[+-]?[0-9]+:[+-]?[0-9]+$' THEN
            RETURN format('"%s" must be a time like "16:30" (got "%s")', bound, text_value);
        END IF;
        hour := split_part(text_value, ':', 1)::numeric;
        minute := split_part(text_value, ':', 2)::numeric;
        IF hour NOT BETWEEN 0 AND 24 OR minute NOT BETWEEN 0 AND 59 OR hour * 60 + minute > 1440 THEN
            RETURN format('"%s" must be a time like "16:30" (got "%s")', bound, text_value);
        END IF;
    END LOOP;
    RETURN NULL;
END $$;

-- The first problem of a model's price_windows, with its path as the import names it.
CREATE FUNCTION switchyard.price_windows_problem(p_windows jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(p_windows) IS DISTINCT FROM 'array'
                THEN 'price_windows must be an array of windows like [{"start": "22:00", "end": "06:00", "multiplier": 0.5}]'
                ELSE (SELECT format('price_windows[%s] %s', p.position - 1, p.problem)
                      FROM (SELECT w.position, switchyard.price_window_problem(w.value) AS problem
                            FROM jsonb_array_elements(p_windows) WITH ORDINALITY AS w(value, position)) p
                      WHERE p.problem IS NOT NULL
                      ORDER BY p.position LIMIT 1) END
$$;

CREATE FUNCTION switchyard.check_price_window_shape() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    problem constant text := switchyard.price_windows_problem(NEW.price_windows);
BEGIN
    IF problem IS NOT NULL THEN
        PERFORM switchyard.reject(
            format('model %s: %s', NEW.name, problem),
            'Write windows as the catalog import reads them (docs/routing.md, "Price windows"), or import the '
            || 'catalog with dispatcher models import, which checks every window first.');
    END IF;
    RETURN NEW;
END $$;

-- Named to run before the zone check (triggers fire in name order): a zone is read only from a
-- window of the right shape.
CREATE TRIGGER models_check_price_window_a_shape BEFORE INSERT OR UPDATE OF price_windows ON switchyard.models
    FOR EACH ROW EXECUTE FUNCTION switchyard.check_price_window_shape();

DO $$
DECLARE
    model record;
BEGIN
    FOR model IN
        SELECT m.name, switchyard.price_windows_problem(m.price_windows) AS problem FROM switchyard.models m
        WHERE switchyard.price_windows_problem(m.price_windows) IS NOT NULL
    LOOP
        RAISE WARNING 'model %: % (a claim that reads it fails)', model.name, model.problem
            USING HINT = 'Import the catalog again, or UPDATE switchyard.models SET price_windows = ''[]'' for it.';
    END LOOP;
END $$;
