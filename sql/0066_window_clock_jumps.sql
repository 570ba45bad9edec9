-- Price windows on the days the clocks go forward, and the worker role's background gate.
--
-- * A window whose start the clocks skip (02:30 in New York on the second Sunday of March, when
--   02:00 EST becomes 03:00 EDT) is open from the jump: price_multipliers compares wall-clock
--   minutes, and 03:00 is past 02:30. window_next_start read the start with the offset before
--   the jump (AT TIME ZONE does, as Foundation does), 03:30 EDT: the gate and the planner said the
--   window opened half an hour after it had, and background jobs waited that half hour. An end
--   the clocks skip closes the window at the jump likewise, and a window wholly within the
--   skipped hour does not open that day (its next start is the next day's). The worker's
--   PriceWindow reckons the same.
-- * background_gate, when a model within the ceiling at its list price is held by a surcharge
--   window open now, asks window_next_end when it closes: the worker role could not execute
--   window_next_end (only the claim, which runs as the admin, reached it), so the gate raised a
--   permission error for a worker or a worker-role operator (`dispatcher background status`, a
--   job's "held" reason).

SET LOCAL ROLE switchyard_admin;

-- When a zone's wall clock first reads a local time or a later one: the time itself (the first
-- of the two when the clocks go back), or, when they jump over it, the jump. AT TIME ZONE reads
-- a time that does not happen with the offset before the jump, which lands past the jump by as
-- much as the time is past the jump's start; the jump is the first minute before that whose wall
-- clock reads the time or later (looked for only on such a day).
CREATE FUNCTION switchyard.wall_clock_instant(p_local timestamp, p_zone text) RETURNS timestamptz
    LANGUAGE sql STABLE AS $$
    SELECT CASE
               WHEN (c.earlier AT TIME ZONE p_zone) = p_local THEN least(c.earlier, c.later)
               WHEN (c.later AT TIME ZONE p_zone) = p_local THEN c.later
               ELSE (SELECT min(t) FROM generate_series(c.later - interval '4 hours', c.later, interval '1 minute') t
                     WHERE (t AT TIME ZONE p_zone) >= p_local)
           END
    FROM (SELECT p_local AT TIME ZONE p_zone AS later,
                 ((p_local - interval '1 hour') AT TIME ZONE p_zone) + interval '1 hour' AS earlier) c
$$;

-- A window's openings on its days, from p_first_day days before the local day of p_at to a week
-- after: when it opens and when it closes, by the zone's wall clock. None on a day the clocks
-- skip all of it, and none in a zone Postgres does not know (local_time is NULL).
CREATE FUNCTION switchyard.window_openings(p_window jsonb, p_at timestamptz, p_first_day integer DEFAULT 0)
    RETURNS TABLE (start_at timestamptz, end_at timestamptz)
    LANGUAGE sql STABLE AS $$
    SELECT o.start_at, o.end_at
    FROM (SELECT coalesce(p_window ->> 'time_zone', 'UTC') AS zone,
                 switchyard.local_time(p_at, coalesce(p_window ->> 'time_zone', 'UTC'))::date AS local_day,
                 (split_part(p_window ->> 'start', ':', 1)::integer * 60
                  + split_part(p_window ->> 'start', ':', 2)::integer) % 1440 AS start_minute,
                 (split_part(p_window ->> 'end', ':', 1)::integer * 60
                  + split_part(p_window ->> 'end', ':', 2)::integer) % 1440 AS end_minute) z,
         generate_series(p_first_day, 7) AS offset_days,
         LATERAL (SELECT switchyard.wall_clock_instant(
                             (z.local_day + offset_days) + make_interval(mins => z.start_minute), z.zone) AS start_at,
                         switchyard.wall_clock_instant(
                             (z.local_day + offset_days + CASE WHEN z.end_minute <= z.start_minute THEN 1 ELSE 0 END)
                                 + make_interval(mins => z.end_minute), z.zone) AS end_at) o
    WHERE z.local_day IS NOT NULL
      AND extract(isodow FROM z.local_day + offset_days)::integer = ANY (switchyard.window_days(p_window))
      AND o.end_at > o.start_at
$$;

-- When a window next opens, at or after an instant (NULL when its zone is unknown to Postgres).
CREATE OR REPLACE FUNCTION switchyard.window_next_start(p_window jsonb, p_at timestamptz) RETURNS timestamptz
    LANGUAGE sql STABLE AS $$
    SELECT min(o.start_at) FROM switchyard.window_openings(p_window, p_at) o WHERE o.start_at >= p_at
$$;

-- When a window next closes, at or after an instant (NULL when its zone is unknown). A window
-- that crosses midnight closes the day after it starts, so yesterday's opening counts.
CREATE OR REPLACE FUNCTION switchyard.window_next_end(p_window jsonb, p_at timestamptz) RETURNS timestamptz
    LANGUAGE sql STABLE AS $$
    SELECT min(o.end_at) FROM switchyard.window_openings(p_window, p_at, -1) o WHERE o.end_at >= p_at
$$;

REVOKE ALL ON FUNCTION switchyard.wall_clock_instant(timestamp, text),
    switchyard.window_openings(jsonb, timestamptz, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION switchyard.wall_clock_instant(timestamp, text),
    switchyard.window_openings(jsonb, timestamptz, integer),
    switchyard.window_next_end(jsonb, timestamptz)
    TO switchyard_worker;
