-- Price windows on the days the clocks go forward, and the worker role's background gate.
--
-- * A window whose start the clocks skip (02:30 in New York on the second Sunday of March, when
--   02:00 EST becomes 03:00 EDT) is open from the jump: price_multipliers compares wall-clock
--   minutes, and 03:00 is past 02:30. window_next_start read the start with the offset before
--   the jump (AT TIME ZONE does, as Foundation does), 03:30 EDT: the gate and the planner said the
--   window opened half an hour after it had, and background jobs waited that half hour. An end
--   the clocks skip closes the window at the jump likewise, and a window wholly within the
--   skipped hour does not open that day (its next start is the next one's, looked for two weeks
--   ahead: a weekly window skipped on its day opens the week after). The worker's PriceWindow
--   reckons the same.
-- * A start that happens twice when the clocks go back two hours (Antarctica/Troll) is the first
--   of the two, as for one hour.
-- * window_next_start and window_next_end were SQL functions that Postgres planned afresh at
--   every call, over every day of the week ahead: about a millisecond each, in the background gate every worker's claim runs while
--   a price ceiling holds. They are PL/pgSQL now (plans kept by the session), and stop at the
--   first day that answers: about 30 µs.
-- * background_gate, when a model within the ceiling at its list price is held by a surcharge
--   window open now, asks window_next_end when it closes: the worker role could not execute
--   window_next_end (only the claim, which runs as the admin, reached it), so the gate raised a
--   permission error for a worker or a worker-role operator (`dispatcher background status`, a
--   job's "held" reason).

SET LOCAL ROLE switchyard_admin;

-- When a zone's wall clock first reads a local time or a later one: the time itself (the first
-- of the two when the clocks go back, by up to three hours), or, when they jump over it, the
-- jump. AT TIME ZONE reads a time that does not happen with the offset before the jump, which
-- lands past the jump by as much as the time is past the jump's start; the jump is the first
-- minute before that whose wall clock reads the time or later (looked for only on such a day).
CREATE FUNCTION switchyard.wall_clock_instant(p_local timestamp, p_zone text) RETURNS timestamptz
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    later constant timestamptz := p_local AT TIME ZONE p_zone;
    earlier constant timestamptz := ((p_local - interval '3 hours') AT TIME ZONE p_zone) + interval '3 hours';
BEGIN
    IF (earlier AT TIME ZONE p_zone) = p_local THEN
        RETURN least(earlier, later);
    ELSIF (later AT TIME ZONE p_zone) = p_local THEN
        RETURN later;
    END IF;
    RETURN (SELECT min(t) FROM generate_series(later - interval '4 hours', later, interval '1 minute') t
            WHERE (t AT TIME ZONE p_zone) >= p_local);
END $$;

-- When a window next opens, at or after an instant: the first of its days, from the instant's
-- local day on, whose start by the wall clock is not before the instant and on which it is open
-- at all (NULL when its zone is unknown to Postgres, or it has no such day in two weeks).
CREATE OR REPLACE FUNCTION switchyard.window_next_start(p_window jsonb, p_at timestamptz) RETURNS timestamptz
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    zone constant text := coalesce(p_window ->> 'time_zone', 'UTC');
    local_day constant date := switchyard.local_time(p_at, zone)::date;
    start_minute constant integer := (split_part(p_window ->> 'start', ':', 1)::integer * 60
                                      + split_part(p_window ->> 'start', ':', 2)::integer) % 1440;
    end_minute constant integer := (split_part(p_window ->> 'end', ':', 1)::integer * 60
                                    + split_part(p_window ->> 'end', ':', 2)::integer) % 1440;
    days constant integer[] := switchyard.window_days(p_window);
    day date;
    opens timestamptz;
BEGIN
    IF local_day IS NULL THEN
        RETURN NULL;
    END IF;
    FOR offset_days IN 0..14 LOOP
        day := local_day + offset_days;
        CONTINUE WHEN NOT extract(isodow FROM day)::integer = ANY (days);
        opens := switchyard.wall_clock_instant(day + make_interval(mins => start_minute), zone);
        CONTINUE WHEN opens < p_at;
        -- A window that crosses midnight closes the next day.
        IF switchyard.wall_clock_instant(day + CASE WHEN end_minute <= start_minute THEN 1 ELSE 0 END
                                             + make_interval(mins => end_minute), zone) > opens THEN
            RETURN opens;
        END IF;
    END LOOP;
    RETURN NULL;
END $$;

-- When a window next closes, at or after an instant (NULL when its zone is unknown). A window
-- that crosses midnight closes the day after it starts, so yesterday's opening counts.
CREATE OR REPLACE FUNCTION switchyard.window_next_end(p_window jsonb, p_at timestamptz) RETURNS timestamptz
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    zone constant text := coalesce(p_window ->> 'time_zone', 'UTC');
    local_day constant date := switchyard.local_time(p_at, zone)::date;
    start_minute constant integer := (split_part(p_window ->> 'start', ':', 1)::integer * 60
                                      + split_part(p_window ->> 'start', ':', 2)::integer) % 1440;
    end_minute constant integer := (split_part(p_window ->> 'end', ':', 1)::integer * 60
                                    + split_part(p_window ->> 'end', ':', 2)::integer) % 1440;
    days constant integer[] := switchyard.window_days(p_window);
    day date;
    closes timestamptz;
BEGIN
    IF local_day IS NULL THEN
        RETURN NULL;
    END IF;
    FOR offset_days IN -1..14 LOOP
        day := local_day + offset_days;
        CONTINUE WHEN NOT extract(isodow FROM day)::integer = ANY (days);
        closes := switchyard.wall_clock_instant(day + CASE WHEN end_minute <= start_minute THEN 1 ELSE 0 END
                                                    + make_interval(mins => end_minute), zone);
        CONTINUE WHEN closes < p_at;
        IF closes > switchyard.wall_clock_instant(day + make_interval(mins => start_minute), zone) THEN
            RETURN closes;
        END IF;
    END LOOP;
    RETURN NULL;
END $$;

REVOKE ALL ON FUNCTION switchyard.wall_clock_instant(timestamp, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION switchyard.wall_clock_instant(timestamp, text), switchyard.window_next_end(jsonb, timestamptz)
    TO switchyard_worker;
