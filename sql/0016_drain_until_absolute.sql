-- background_drain_until is read by two clocks that must agree: the claim's gate (SQL, which
-- casts the text to timestamptz on every read) and the worker's planner (Swift, which reads ISO
-- 8601). 0013 accepted anything Postgres can cast, so they disagreed on:
--   - the words Postgres resolves when it reads them: 'tomorrow' (and 'today', 'now',
--     'yesterday', 'tomorrow 06:00'), which the gate re-resolved on every claim ('tomorrow' was
--     always a day away: a drain with no end) while the planner read no drain at all;
--   - 'infinity', a drain with no end for the gate and none for the planner;
--   - any other spelling Postgres reads and ISO 8601 does not ('2026-11-27 06:00' with no zone,
--     'Nov 27 2026'): a drain for the gate, none for the planner.
-- A value is now resolved once, when it is written (in the writing session's time zone), and
-- stored as the one form both read (2026-11-27T06:00:00.000000Z, UTC): 'tomorrow 06:00' means
-- the next morning from when it was set, and 'infinity' (no end) the last instant of 9999.
-- Other times outside the years 1 to 9999 are refused with what to write instead. A value
-- stored before this check is rewritten the same way here, or cleared (no drain) when it is no
-- time at all (every claim raised on it).

SET LOCAL ROLE switchyard_admin;

-- The stored form of a drain time, or NULL when the text is no time from the year 1 to 9999.
-- '' (no drain) stays ''; 'infinity' is the last instant of 9999.
CREATE FUNCTION switchyard.drain_until_text(p_value text) RETURNS text
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    instant timestamptz;
BEGIN
    IF p_value = '' THEN
        RETURN '';
    END IF;
    instant := p_value::timestamptz;
    IF instant = 'infinity' THEN
        instant := '9999-12-31 23:59:59.999999+00';
    END IF;
    IF NOT isfinite(instant) OR instant < '0001-01-01 00:00:00+00' OR instant >= '10000-01-01 00:00:00+00' THEN
        RETURN NULL;
    END IF;
    RETURN to_char(instant AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
EXCEPTION WHEN data_exception THEN
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION switchyard.settings_before_write() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    stored text;
BEGIN
    IF NEW.name IN ('breaker_consecutive_failures', 'breaker_min_requests', 'breaker_min_failures') THEN
        IF NEW.value !~ '^[0-9]{1,9}$' THEN
            PERFORM switchyard.reject(format('setting %s must be a whole number, got %L', NEW.name, NEW.value),
                                      'Write digits only, e.g. 5.');
        END IF;
    ELSIF NEW.name IN ('breaker_error_rate', 'breaker_open_seconds', 'breaker_window_seconds') THEN
        IF NEW.value !~ '^[0-9]{1,12}(\.[0-9]{1,12})?$' THEN
            PERFORM switchyard.reject(format('setting %s must be a number of at least 0, got %L', NEW.name, NEW.value),
                                      'Write a plain number, e.g. 0.02 or 30.');
        END IF;
    ELSIF NEW.name IN ('background_escalation_seconds', 'background_max_cost_per_1k') THEN
        IF NEW.value <> '' AND NEW.value !~ '^[0-9]{1,12}(\.[0-9]{1,12})?$' THEN
            PERFORM switchyard.reject(
                format('setting %s must be a number of at least 0, or empty for none, got %L', NEW.name, NEW.value),
                'Write a plain number, e.g. 0.0005, or '''' for none (dispatcher background ceiling sets it for you).');
        END IF;
    ELSIF NEW.name = 'background_drain_until' THEN
        stored := switchyard.drain_until_text(NEW.value);
        IF stored IS NULL THEN
            PERFORM switchyard.reject(
                format('setting background_drain_until must be a time between the years 1 and 9999 (or infinity), '
                       'or empty for none, got %L', NEW.value),
                'Write a time such as 2026-11-27T06:00:00Z (stored in UTC), or use dispatcher background drain '
                    '--until 2h; infinity drains with no end.');
        END IF;
        NEW.value := stored;
    ELSIF NEW.name = 'background_paused' AND NEW.value NOT IN ('true', 'false') THEN
        PERFORM switchyard.reject(format('setting background_paused must be true or false, got %L', NEW.value),
                                  'Use dispatcher background pause or resume.');
    END IF;
    RETURN NEW;
END $$;

-- What is already stored: rewritten to the stored form, or cleared when it is no time both read.
DO $$
DECLARE
    stored text := (SELECT value FROM switchyard.settings WHERE name = 'background_drain_until');
BEGIN
    IF stored IS NOT NULL AND switchyard.drain_until_text(stored) IS NULL THEN
        RAISE WARNING 'background_drain_until was %, which is no time: cleared (no drain)', quote_literal(stored);
        UPDATE switchyard.settings SET value = '' WHERE name = 'background_drain_until';
    ELSIF stored IS NOT NULL THEN
        UPDATE switchyard.settings SET value = stored WHERE name = 'background_drain_until';
    END IF;
END $$;
