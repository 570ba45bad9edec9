-- Windows of model calls count the calls that ended in them, not the calls of the jobs that
-- finished in them.
--
-- The alerts (error rate, latency) and call_stats (status's MODELS figures) took the calls of the
-- jobs that finished in the window. An on-call walkthrough's background jobs met a model's outage,
-- were retried and waited in a deep backlog; when they finished together 12 minutes later, their
-- old failed calls landed in one window: "9.7% of 165 calls ended in an error over the last 5 min"
-- was raised on a model that had recovered 4 minutes before (none of its calls in those 5 minutes
-- had failed), rose as more finished, and opened the healthy model's breaker. The latency alert did
-- the same 82 s after a recovery. The calls view now has called_at (the trail entry's at, when the
-- call began); a call counts in a window when it ended in it (called_at plus its latency: a call
-- that timed out after 6 minutes began before any 5-minute window its end falls in). Its job's
-- finish time still bounds the scan, which its index serves (a call ends before its job finishes,
-- with the workers' clocks in step with the database's, as leases and heartbeats assume). An entry
-- without a readable at counts by its job's finish time, as before.
--
-- The alerts' error-rate and latency rules (alert_measurements) take the same windows; they are
-- restated once, with the breaker rule, in 0064 (both came in one release).
--
-- calls is 0049's otherwise, with called_at at the end; call_stats 0019's.

SET LOCAL ROLE switchyard_admin;

CREATE OR REPLACE VIEW switchyard.calls AS
SELECT r.job_id, r.priority, r.task_class, r.status AS job_status, r.finished_at,
       a.position::integer AS position,
       (a.entry ->> 'attempt')::numeric::integer AS attempt,
       a.entry ->> 'model' AS model,
       a.entry ->> 'provider' AS provider,
       a.entry ->> 'tier' AS tier,
       a.entry ->> 'outcome' AS outcome,
       (a.entry ->> 'http_status')::numeric::integer AS http_status,
       (a.entry ->> 'latency_ms')::double precision AS latency_ms,
       a.entry ->> 'error' AS error,
       a.entry ->> 'worker' AS worker,
       switchyard.is_model_error(a.entry ->> 'outcome', (a.entry ->> 'http_status')::numeric::integer) AS model_error,
       -- A number of milliseconds up to an hour (max_latency_ms's range), or nothing: a hand-written
       -- trail's odd value must not stop the alerts.
       CASE WHEN jsonb_typeof(a.entry -> 'target_ms') = 'number'
            THEN CASE WHEN (a.entry ->> 'target_ms')::numeric BETWEEN 1 AND 3600000
                      THEN (a.entry ->> 'target_ms')::double precision END
       END AS target_ms,
       -- When the call was made: the entry's at (a worker writes 2026-11-28T06:54:44.123456Z; SQL
       -- writes an offset), or nothing for an entry without one, or with one no time parses from
       -- (a hand-written trail's odd value must not stop the alerts either).
       coalesce(
           (jsonb_path_query_first(a.entry, '$.at.datetime("YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"")', '{}', true)
                #>> '{}')::timestamp AT TIME ZONE 'UTC',
           (jsonb_path_query_first(a.entry, '$.at.datetime() ? (@.type() == "timestamp with time zone")', '{}', true)
                #>> '{}')::timestamptz) AS called_at
FROM switchyard.results r
CROSS JOIN LATERAL jsonb_array_elements(r.attempts) WITH ORDINALITY AS a(entry, position)
WHERE a.entry ? 'model';

CREATE OR REPLACE FUNCTION switchyard.call_stats(p_window interval DEFAULT '1 hour', p_at timestamptz DEFAULT now())
    RETURNS TABLE (
        dimension text, subject text, calls bigint, errors bigint, timeouts bigint,
        error_rate double precision, timeout_rate double precision,
        latency_p50_ms double precision, latency_p95_ms double precision, latency_p99_ms double precision)
    LANGUAGE sql STABLE AS $$
    WITH made AS (
        SELECT c.priority, c.model, c.provider, c.tier, c.outcome, c.model_error,
               CASE WHEN c.outcome IN ('succeeded', 'timeout') THEN c.latency_ms END AS latency_ms
        FROM switchyard.calls c
        WHERE c.finished_at > p_at - p_window AND c.finished_at <= p_at AND c.outcome <> 'cancelled'
              AND coalesce(c.called_at + make_interval(secs => coalesce(c.latency_ms, 0) / 1000), c.finished_at)
                  > p_at - p_window
    ), grouped AS (
        SELECT CASE WHEN grouping(m.priority) = 0 THEN 'priority' WHEN grouping(m.model) = 0 THEN 'model'
                    WHEN grouping(m.provider) = 0 THEN 'provider' WHEN grouping(m.tier) = 0 THEN 'tier'
                    ELSE 'total' END AS dimension,
               CASE WHEN grouping(m.priority) = 0 THEN m.priority WHEN grouping(m.model) = 0 THEN m.model
                    WHEN grouping(m.provider) = 0 THEN m.provider WHEN grouping(m.tier) = 0 THEN m.tier
                    ELSE 'all' END AS subject,
               count(*) AS calls, count(*) FILTER (WHERE m.model_error) AS errors,
               count(*) FILTER (WHERE m.outcome = 'timeout') AS timeouts,
               percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY m.latency_ms) AS latency
        FROM made m
        GROUP BY GROUPING SETS ((), (m.priority), (m.model), (m.provider), (m.tier))
    )
    SELECT g.dimension, coalesce(g.subject, '(none)'), g.calls, g.errors, g.timeouts,
           g.errors::double precision / g.calls, g.timeouts::double precision / g.calls,
           g.latency[1], g.latency[2], g.latency[3]
    FROM grouped g
    WHERE g.calls > 0
    ORDER BY array_position(ARRAY['total', 'priority', 'model', 'provider', 'tier'], g.dimension), g.calls DESC, 2
$$;
