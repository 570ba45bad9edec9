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
-- calls is 0049's otherwise, with called_at at the end; call_stats 0019's; alert_measurements 0052's.

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

CREATE OR REPLACE FUNCTION switchyard.alert_measurements(p_at timestamptz DEFAULT now())
    RETURNS TABLE (
        kind text, subject text, value double precision, threshold double precision, breached boolean,
        recovered boolean, message text)
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    min_calls constant integer := coalesce(switchyard.numeric_setting('alert_min_calls'), 50)::integer;
    error_limit constant double precision := switchyard.numeric_setting('alert_error_rate');
    error_window constant interval :=
        make_interval(secs => coalesce(switchyard.numeric_setting('alert_error_window_seconds'), 300));
    latency_window constant interval :=
        make_interval(secs => coalesce(switchyard.numeric_setting('alert_latency_window_seconds'), 300));
    wait_limit constant double precision := switchyard.numeric_setting('alert_queue_wait_p95_ms');
    wait_window constant interval :=
        make_interval(secs => coalesce(switchyard.numeric_setting('alert_queue_wait_window_seconds'), 300));
    wait_min_jobs constant integer := coalesce(switchyard.numeric_setting('alert_queue_wait_min_jobs'), 10)::integer;
    backlog_limit constant double precision := switchyard.numeric_setting('alert_backlog_at_risk_jobs');
    -- Paused, the backlog does not drain at all (and deadlines do not override a pause).
    paused constant boolean := switchyard.setting('background_paused') = 'true';
    -- The longest-waiting jobs that count towards the queue-wait P95 (see the header).
    waiting_sample constant integer := 1000;
    throughput_window constant interval :=
        make_interval(secs => coalesce(switchyard.numeric_setting('alert_backlog_throughput_window_seconds'), 900));
    -- Read once, not per call: each call is compared with its target.
    primary_target constant double precision := switchyard.numeric_setting('alert_latency_target_ms_primary');
    secondary_target constant double precision := switchyard.numeric_setting('alert_latency_target_ms_secondary');
    tertiary_target constant double precision := switchyard.numeric_setting('alert_latency_target_ms_tertiary');
BEGIN
    -- A model's error rate.
    IF error_limit IS NOT NULL THEN
        RETURN QUERY
        SELECT 'error_rate'::text, c.model, c.errors::double precision / c.calls, error_limit,
               c.calls >= min_calls AND c.errors::double precision / c.calls > error_limit
                   AND switchyard.rate_lower_bound(c.errors, c.calls) > error_limit,
               c.errors::double precision / c.calls <= error_limit,
               format('model %s: %s%% of %s calls ended in an error over the last %s (limit %s%%)', c.model,
                      round(100.0 * c.errors / c.calls, 1), c.calls, switchyard.window_text(error_window),
                      trim_scale(round(100 * error_limit::numeric, 2)))
        FROM (SELECT k.model, count(*) AS calls, count(*) FILTER (WHERE k.model_error) AS errors
              FROM switchyard.calls k
              WHERE k.finished_at > p_at - error_window AND k.finished_at <= p_at AND k.outcome <> 'cancelled'
                    AND coalesce(k.called_at + make_interval(secs => coalesce(k.latency_ms, 0) / 1000), k.finished_at)
                  > p_at - error_window
              GROUP BY k.model) c;
    END IF;

    -- A model's P95 against its target; per model, the group of calls furthest over its target
    -- among those with enough calls. A call's target is its rule's max_latency_ms when the trail
    -- records one (target_ms, a primary call of a rule that sets it), else its tier's setting; a
    -- tier's setting turned off leaves that tier's calls unjudged. A P95 over the target means
    -- over 5% of the calls took longer (a timed-out call is recorded just over its timeout): raised
    -- only when that share is over 5% with 95% confidence (rate_lower_bound), not by a few calls
    -- of a model whose tail reaches its timeout now and then.
    RETURN QUERY
    SELECT DISTINCT ON (t.model) 'latency'::text, t.model, t.p95, t.target, t.breached, t.p95 <= t.target,
           format('model %s: P95 latency %s ms as %s over the last %s (target %s ms%s, %s calls)', t.model,
                  round(t.p95::numeric, 1), t.tier, switchyard.window_text(latency_window), round(t.target::numeric),
                  CASE WHEN t.rule_target IS NOT NULL THEN ': its rule''s max_latency_ms' ELSE '' END, t.calls)
    FROM (SELECT g.*, g.calls >= min_calls AND g.p95 > g.target
                      AND switchyard.rate_lower_bound(g.slow, g.calls) > 0.05 AS breached
          FROM (SELECT c.model, c.tier, c.target_ms AS rule_target, count(*) AS calls,
                       count(*) FILTER (WHERE c.latency_ms > c.target) AS slow,
                       percentile_cont(0.95) WITHIN GROUP (ORDER BY c.latency_ms) AS p95,
                       min(c.target) AS target
                FROM (SELECT k.model, k.tier, k.target_ms, k.latency_ms,
                             CASE WHEN tier_target IS NOT NULL THEN coalesce(k.target_ms, tier_target) END AS target
                      FROM switchyard.calls k
                      CROSS JOIN LATERAL (SELECT CASE k.tier WHEN 'primary' THEN primary_target
                                                             WHEN 'secondary' THEN secondary_target
                                                             ELSE tertiary_target END AS tier_target) s
                      WHERE k.finished_at > p_at - latency_window AND k.finished_at <= p_at
                            AND coalesce(k.called_at + make_interval(secs => coalesce(k.latency_ms, 0) / 1000), k.finished_at)
                  > p_at - latency_window
                            AND k.outcome IN ('succeeded', 'timeout') AND k.latency_ms IS NOT NULL
                            AND k.tier IN ('primary', 'secondary', 'tertiary')) c
                GROUP BY c.model, c.tier, c.target_ms) g) t
    WHERE t.target IS NOT NULL
    -- A breached group comes first (a small group far over its target that the confidence rule
    -- spares must not hide a large one over it), then one with the calls to judge it: a few slow
    -- calls in another tier must not stand for a model whose primary calls are over their target.
    ORDER BY t.model, t.breached DESC, t.calls >= min_calls DESC, t.p95 / t.target DESC;

    -- Interactive queue wait: jobs that finished in the window, and the longest-waiting jobs right
    -- now (their wait so far), so a stalled fleet raises it even though nothing finishes.
    IF wait_limit IS NOT NULL THEN
        RETURN QUERY
        WITH finished AS (
            SELECT r.queue_wait_ms AS wait_ms
            FROM switchyard.results r
            WHERE r.priority = 'interactive' AND r.finished_at > p_at - wait_window AND r.finished_at <= p_at
                  AND r.queue_wait_ms IS NOT NULL
        ), waits AS (
            SELECT f.wait_ms, false AS waiting FROM finished f
            UNION ALL
            SELECT * FROM (
                SELECT extract(epoch FROM p_at - coalesce(j.waiting_since, greatest(j.created_at, j.run_at))) * 1000, true
                FROM switchyard.jobs_interactive j
                WHERE j.lease_owner IS NULL AND j.run_at <= p_at
                ORDER BY j.run_at, j.id
                -- At least a nineteenth of what is measured: the top 5% can be waiting jobs.
                LIMIT greatest(waiting_sample, (SELECT count(*) FROM finished) / 18 + 1)) oldest
            UNION ALL
            -- Put back to wait for a model (every one of its rule's is down): waiting all the same.
            SELECT * FROM (
                SELECT extract(epoch FROM p_at - j.waiting_since) * 1000, true
                FROM switchyard.jobs_interactive j
                WHERE j.lease_owner IS NULL AND j.waiting_since IS NOT NULL AND j.run_at > p_at
                ORDER BY j.waiting_since
                LIMIT greatest(waiting_sample, (SELECT count(*) FROM finished) / 18 + 1)) put_back
        ), measured AS (
            SELECT count(*) AS jobs, percentile_cont(0.95) WITHIN GROUP (ORDER BY w.wait_ms) AS p95,
                   coalesce(max(w.wait_ms) FILTER (WHERE w.waiting), 0) AS longest_now
            FROM waits w
        )
        SELECT 'queue_wait'::text, 'interactive'::text, m.p95, wait_limit,
               m.p95 > wait_limit AND (m.jobs >= wait_min_jobs OR m.longest_now > wait_limit),
               m.p95 <= wait_limit,
               format('interactive queue wait P95 %s ms over the last %s (limit %s ms, %s jobs, '
                      'longest waiting now %s ms)', round(m.p95::numeric), switchyard.window_text(wait_window),
                      round(wait_limit::numeric), m.jobs, round(m.longest_now::numeric))
        FROM measured m
        WHERE m.jobs > 0;
    END IF;

    -- Background jobs that would miss their deadline if the backlog drains at recent throughput
    -- (counted only when some queued background job has a deadline: found by its index).
    IF backlog_limit IS NOT NULL AND EXISTS (
        SELECT 1 FROM switchyard.jobs_background j WHERE j.deadline IS NOT NULL AND j.lease_owner IS NULL
    ) THEN
        RETURN QUERY
        WITH throughput AS (
            SELECT count(*) / extract(epoch FROM throughput_window) AS per_second
            FROM switchyard.results r
            WHERE r.priority = 'background' AND r.finished_at > p_at - throughput_window AND r.finished_at <= p_at
                  AND r.status <> 'cancelled'
        ), backlog AS (
            -- A job a worker put off to a later time (no price within its ceiling until then, its
            -- escalation point) does not stand in line: most are put off again when they come due,
            -- an hour at a time, without a call. Jobs submitted to run later do. (One put off with
            -- a deadline is still at risk if the line ahead of it outlasts that deadline.)
            SELECT count(*) FILTER (WHERE j.postponed_at IS NULL OR j.run_at <= p_at) AS jobs,
                   min(j.deadline) AS earliest
            FROM switchyard.jobs_background j
            WHERE j.lease_owner IS NULL
        ), drain AS (
            SELECT b.jobs, b.earliest, t.per_second,
                   -- With nothing finished recently there is no rate to go by: only jobs due within
                   -- the measuring window count as at risk (nothing drained in as long).
                   CASE WHEN paused THEN 'infinity'::timestamptz
                        WHEN b.jobs = 0 THEN p_at
                        WHEN t.per_second > 0 THEN p_at + make_interval(secs => b.jobs / t.per_second)
                        ELSE p_at + throughput_window END AS drained_at
            FROM backlog b, throughput t
        ), at_risk AS (
            SELECT d.*, r.jobs_at_risk, r.put_off
            FROM drain d
            CROSS JOIN LATERAL (
                SELECT count(*) AS jobs_at_risk,
                       count(*) FILTER (WHERE j.postponed_at IS NOT NULL AND j.run_at > p_at) AS put_off
                FROM switchyard.jobs_background j
                WHERE j.lease_owner IS NULL AND j.deadline IS NOT NULL AND j.deadline < d.drained_at) r
        )
        SELECT 'backlog_deadlines'::text, 'background'::text, a.jobs_at_risk::double precision, backlog_limit,
               a.jobs_at_risk > backlog_limit, a.jobs_at_risk <= backlog_limit,
               format('%s queued background jobs would miss their deadline%s: the backlog of %s drains %s '
                      '(recent throughput %s jobs/min over %s; earliest deadline %s)',
                      a.jobs_at_risk,
                      CASE WHEN a.put_off > 0 THEN format(' (%s of them waiting to run later)', a.put_off) ELSE '' END,
                      a.jobs,
                      CASE WHEN paused THEN 'never while background work is paused (dispatcher background resume)'
                           WHEN a.per_second > 0
                           THEN 'by ' || to_char(a.drained_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"')
                           ELSE 'at an unknown time (no background job finished recently)' END,
                      round((a.per_second * 60)::numeric, 2), switchyard.window_text(throughput_window),
                      coalesce(to_char(a.earliest AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"'), 'none'))
        FROM at_risk a;
    END IF;
END $$;
