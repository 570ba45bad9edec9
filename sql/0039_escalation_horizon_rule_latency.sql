-- The escalation horizon counts the primary's time as its rule gives it.
--
-- The horizon (how close a deadline must be for a background job to run whatever the price) took
-- every attempt at 1.5 + 3 + 10 s. A rule whose max_latency_ms gives its primary 180 s had its
-- job let through the closed gate, and escalated, 74 s before the deadline, and the call was cut
-- at the deadline, unfinished. The gate now takes the largest max_latency_ms of any rule for the
-- primary's time (the worker, deciding per job, takes its own rule's). Otherwise 0005's.

SET LOCAL ROLE switchyard_admin;

CREATE OR REPLACE FUNCTION switchyard.escalation_horizon(p_max_attempts integer) RETURNS interval
    LANGUAGE sql STABLE AS $$
    SELECT make_interval(secs => coalesce(
        nullif(switchyard.setting('background_escalation_seconds'), '')::double precision,
        (13 + greatest(1.5, coalesce((SELECT max(r.max_latency_ms) FROM switchyard.routes r), 0) / 1000.0))
            * p_max_attempts
        + coalesce((SELECT sum(least(2 * power(2, k - 1), 300)) FROM generate_series(1, p_max_attempts - 1) AS k), 0)
        + 60))
$$;
