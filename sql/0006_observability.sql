-- Observability: what the fleet did over a window (latency percentiles, error, timeout and
-- fallback rates, cost, tokens), what is waiting now (queue depth, oldest job, workers), alerts
-- that raise and clear by themselves, and quality feedback that feeds routing.
--
-- Everything that reads a window is a function of (p_window interval, p_at timestamptz), both
-- with defaults, so `SELECT * FROM switchyard.model_stats();` answers "the last hour" and
-- `SELECT * FROM switchyard.model_stats('5 minutes');` narrows it. p_at lets tests (and post-mortems)
-- evaluate as of any moment. A row counts when its result finished in (p_at - p_window, p_at].

INSERT INTO switchyard.settings (name, value, description) VALUES
    ('alert_error_rate', '0.02',
     'Model error-rate alert: raises when the share of a model''s calls that ended in an error (timeouts are the '
     'latency alert''s) exceeds this (off disables).'),
    ('alert_error_window_seconds', '300', 'Model error-rate alert: the window it measures, in seconds.'),
    ('alert_min_calls', '50',
     'Model alerts (error rate, latency) raise only once the window holds at least this many calls.'),
    ('alert_latency_window_seconds', '300', 'Model latency alert: the window its P95 is measured over, in seconds.'),
    ('alert_latency_target_ms_primary', '1500',
     'Model latency alert: P95 target of calls made as a plan''s primary (off disables).'),
    ('alert_latency_target_ms_secondary', '3000',
     'Model latency alert: P95 target of calls made as a plan''s secondary (off disables).'),
    ('alert_latency_target_ms_tertiary', '10000',
     'Model latency alert: P95 target of calls made as a plan''s tertiary or later (off disables).'),
    ('alert_queue_wait_p95_ms', '2000',
     'Interactive queue-wait alert: raises when the P95 wait of interactive jobs exceeds this (off disables).'),
    ('alert_queue_wait_window_seconds', '300', 'Interactive queue-wait alert: the window, in seconds.'),
    ('alert_queue_wait_min_jobs', '10',
     'Interactive queue-wait alert: jobs needed in the window, unless a job waiting now is over the limit.'),
    ('alert_backlog_at_risk_jobs', '0',
     'Background-backlog alert: raises when more queued background jobs than this would miss their deadline '
     'at recent throughput (off disables).'),
    ('alert_backlog_throughput_window_seconds', '900',
     'Background-backlog alert: the window background throughput is measured over, in seconds.'),
    ('alert_opens_breaker', 'true',
     'Whether a model alert opens the model''s breaker (switchyard.model_health), so routers avoid it.'),
    ('feedback_min_ratings', '5',
     'Quality feedback changes a model''s capability score only once it has this many ratings for the class.'),
    ('feedback_prior_weight', '20',
     'How many ratings the catalog''s own capability score is worth when blended with feedback.'),
    ('feedback_window_days', '30', 'Only ratings from this many recent days count.');

-- A setting as a number, or NULL when it is missing or set to 'off'.
CREATE FUNCTION switchyard.numeric_setting(p_name text) RETURNS double precision
    LANGUAGE sql STABLE AS $$
    SELECT nullif(lower(switchyard.setting(p_name)), 'off')::double precision
$$;

-- A window length for messages: '5 min', '90 s'.
CREATE FUNCTION switchyard.window_text(p_window interval) RETURNS text
    LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN extract(epoch FROM p_window) % 60 = 0 THEN (extract(epoch FROM p_window) / 60)::bigint || ' min'
                ELSE round(extract(epoch FROM p_window), 1) || ' s' END
$$;

-- Whether a call ended in an error that says something about the model: a 5xx, a 429, a bad key,
-- a connection failure, an unreadable answer. Requests at fault (a 400-class answer other than 401,
-- 403, 404, 408 and 429, or a context-length error) do not count, as the breaker does not count
-- them; timeouts are counted apart (timeout_rate, and the latency alert).
CREATE FUNCTION switchyard.is_model_error(p_outcome text, p_http_status integer) RETURNS boolean
    LANGUAGE sql IMMUTABLE AS $$
    SELECT p_outcome IN ('error', 'rate_limited')
           AND NOT coalesce(p_http_status BETWEEN 400 AND 499 AND p_http_status NOT IN (401, 403, 404, 408, 429), false)
$$;

-- One row per model call: every entry of every finished job's trail, with its job's facts.
CREATE VIEW switchyard.calls AS
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
       switchyard.is_model_error(a.entry ->> 'outcome', (a.entry ->> 'http_status')::numeric::integer) AS model_error
FROM switchyard.results r
CROSS JOIN LATERAL jsonb_array_elements(r.attempts) WITH ORDINALITY AS a(entry, position)
WHERE a.entry ? 'model';

-- Whether a finished job's trail names more than one model: it fell back.
CREATE FUNCTION switchyard.fell_back(p_attempts jsonb) RETURNS boolean
    LANGUAGE sql IMMUTABLE AS $$
    SELECT count(DISTINCT e ->> 'model') > 1 FROM jsonb_array_elements(p_attempts) e WHERE e ? 'model'
$$;

-- Jobs finished in the window, per dimension: 'total' (one row), 'priority', 'model', 'provider'
-- and 'tier' (of the call that answered; failed jobs have none and appear as '(none)').
-- Cancelled jobs are left out. Latency is the job's (claim to result, fallbacks included); queue
-- wait is from when it could run to its last claim. error_rate = (failed + expired) / jobs;
-- timeout_rate = jobs that met a timeout / jobs; fallback_rate = jobs whose trail names more than
-- one model / jobs.
CREATE FUNCTION switchyard.job_stats(p_window interval DEFAULT '1 hour', p_at timestamptz DEFAULT now())
    RETURNS TABLE (
        dimension text, subject text, jobs bigint, succeeded bigint, failed bigint, expired bigint,
        error_rate double precision, timeout_rate double precision, fallback_rate double precision,
        latency_p50_ms double precision, latency_p95_ms double precision, latency_p99_ms double precision,
        queue_wait_p50_ms double precision, queue_wait_p95_ms double precision, queue_wait_p99_ms double precision,
        cost numeric, cost_per_request numeric, tokens_in bigint, tokens_out bigint, jobs_per_minute double precision)
    LANGUAGE sql STABLE AS $$
    WITH finished AS (
        SELECT r.priority, r.model, r.provider, r.tier, r.status, r.latency_ms, r.queue_wait_ms, r.cost,
               r.tokens_in, r.tokens_out, switchyard.fell_back(r.attempts) AS fell_back,
               r.attempts @> '[{"outcome": "timeout"}]' AS timed_out
        FROM switchyard.results r
        WHERE r.finished_at > p_at - p_window AND r.finished_at <= p_at AND r.status <> 'cancelled'
    ), grouped AS (
        SELECT CASE WHEN grouping(f.priority) = 0 THEN 'priority' WHEN grouping(f.model) = 0 THEN 'model'
                    WHEN grouping(f.provider) = 0 THEN 'provider' WHEN grouping(f.tier) = 0 THEN 'tier'
                    ELSE 'total' END AS dimension,
               CASE WHEN grouping(f.priority) = 0 THEN f.priority WHEN grouping(f.model) = 0 THEN f.model
                    WHEN grouping(f.provider) = 0 THEN f.provider WHEN grouping(f.tier) = 0 THEN f.tier
                    ELSE 'all' END AS subject,
               count(*) AS jobs,
               count(*) FILTER (WHERE f.status = 'succeeded') AS succeeded,
               count(*) FILTER (WHERE f.status = 'failed') AS failed,
               count(*) FILTER (WHERE f.status = 'expired') AS expired,
               count(*) FILTER (WHERE f.timed_out) AS timed_out,
               count(*) FILTER (WHERE f.fell_back) AS fell_back,
               percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY f.latency_ms) AS latency,
               percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY f.queue_wait_ms) AS queue_wait,
               sum(f.cost) AS cost, count(f.cost) AS costed,
               sum(f.tokens_in) AS tokens_in, sum(f.tokens_out) AS tokens_out
        FROM finished f
        GROUP BY GROUPING SETS ((), (f.priority), (f.model), (f.provider), (f.tier))
    )
    SELECT g.dimension, coalesce(g.subject, '(none)'), g.jobs, g.succeeded, g.failed, g.expired,
           (g.failed + g.expired)::double precision / g.jobs, g.timed_out::double precision / g.jobs,
           g.fell_back::double precision / g.jobs,
           g.latency[1], g.latency[2], g.latency[3], g.queue_wait[1], g.queue_wait[2], g.queue_wait[3],
           coalesce(g.cost, 0), CASE WHEN g.costed > 0 THEN round(g.cost / g.costed, 8) END,
           coalesce(g.tokens_in, 0), coalesce(g.tokens_out, 0),
           (g.jobs / greatest(extract(epoch FROM p_window) / 60, 1e-9))::double precision
    FROM grouped g
    ORDER BY array_position(ARRAY['total', 'priority', 'model', 'provider', 'tier'], g.dimension), g.jobs DESC, 2
$$;

-- Model calls of jobs finished in the window, per dimension: 'total', 'priority', 'model',
-- 'provider', 'tier' (the call's place in its plan). error_rate = calls that ended in a model error
-- (switchyard.is_model_error) / calls; timeout_rate = timed-out calls / calls; cancelled calls are
-- left out. Latency is over calls that answered or timed out (a fast error says nothing about
-- speed; a timeout is a call at least as slow as its budget).
CREATE FUNCTION switchyard.call_stats(p_window interval DEFAULT '1 hour', p_at timestamptz DEFAULT now())
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
    ORDER BY array_position(ARRAY['total', 'priority', 'model', 'provider', 'tier'], g.dimension), g.calls DESC, 2
$$;

-- One row per model that was called in the window or has a breaker: its calls (error, timeout
-- and latency as in call_stats), the jobs it answered (their fallback rate, cost and tokens as in
-- job_stats), and its breaker now.
CREATE FUNCTION switchyard.model_stats(p_window interval DEFAULT '1 hour', p_at timestamptz DEFAULT now())
    RETURNS TABLE (
        model text, provider text, calls bigint, error_rate double precision, timeout_rate double precision,
        latency_p50_ms double precision, latency_p95_ms double precision, latency_p99_ms double precision,
        answered bigint, fallback_rate double precision, cost numeric, cost_per_request numeric,
        tokens_in bigint, tokens_out bigint, breaker text, breaker_reason text)
    LANGUAGE sql STABLE AS $$
    WITH called AS (
        SELECT s.subject AS model, s.calls, s.error_rate, s.timeout_rate, s.latency_p50_ms, s.latency_p95_ms,
               s.latency_p99_ms
        FROM switchyard.call_stats(p_window, p_at) s WHERE s.dimension = 'model'
    ), answered AS (
        SELECT s.subject AS model, s.jobs, s.fallback_rate, s.cost, s.cost_per_request, s.tokens_in, s.tokens_out
        FROM switchyard.job_stats(p_window, p_at) s WHERE s.dimension = 'model' AND s.subject <> '(none)'
    ), names AS (
        SELECT c.model FROM called c
        UNION SELECT a.model FROM answered a
        UNION SELECT h.model FROM switchyard.model_health h
    )
    SELECT n.model, m.provider, coalesce(c.calls, 0), c.error_rate, c.timeout_rate,
           c.latency_p50_ms, c.latency_p95_ms, c.latency_p99_ms,
           coalesce(a.jobs, 0), a.fallback_rate, coalesce(a.cost, 0), a.cost_per_request,
           coalesce(a.tokens_in, 0), coalesce(a.tokens_out, 0),
           coalesce(h.state, 'closed'), h.reason
    FROM names n
    LEFT JOIN called c ON c.model = n.model
    LEFT JOIN answered a ON a.model = n.model
    LEFT JOIN switchyard.fleet_health h ON h.model = n.model
    LEFT JOIN switchyard.models m ON m.name = n.model
    ORDER BY coalesce(c.calls, 0) DESC, n.model
$$;

-- Live jobs per partition: queued (runnable now), scheduled (run_at later), running, and the
-- oldest runnable job with how long it has waited. Both partitions always have a row.
CREATE VIEW switchyard.queue_depth AS
SELECT p.priority,
       count(j.id) FILTER (WHERE j.lease_owner IS NULL AND j.run_at <= now()) AS queued,
       count(j.id) FILTER (WHERE j.lease_owner IS NULL AND j.run_at > now()) AS scheduled,
       count(j.id) FILTER (WHERE j.lease_owner IS NOT NULL) AS running,
       count(j.id) FILTER (WHERE j.lease_owner IS NULL AND j.deadline IS NOT NULL) AS with_deadline,
       oldest.id AS oldest_job_id,
       oldest.waiting_since AS oldest_waiting_since,
       extract(epoch FROM now() - oldest.waiting_since)::double precision AS oldest_wait_s
FROM (VALUES ('interactive'), ('background')) AS p(priority)
LEFT JOIN switchyard.jobs j ON j.priority = p.priority
LEFT JOIN LATERAL (
    SELECT o.id, greatest(o.created_at, o.run_at) AS waiting_since
    FROM switchyard.jobs o
    WHERE o.priority = p.priority AND o.lease_owner IS NULL AND o.run_at <= now()
    ORDER BY o.run_at, o.id
    LIMIT 1
) oldest ON true
GROUP BY p.priority, oldest.id, oldest.waiting_since
ORDER BY p.priority DESC;

-- Worker processes: the in-flight count from their last heartbeat, the jobs they hold leases on
-- now, and whether they are alive (a heartbeat in the last 30 seconds).
CREATE VIEW switchyard.worker_status AS
SELECT w.id, w.hostname, w.pid, w.version, w.concurrency, w.in_flight,
       (SELECT count(*) FROM switchyard.jobs j WHERE j.lease_owner = w.id) AS leased,
       w.started_at, w.heartbeat_at,
       extract(epoch FROM now() - w.heartbeat_at)::double precision AS heartbeat_age_s,
       w.heartbeat_at > now() - interval '30 seconds' AS alive
FROM switchyard.workers w
ORDER BY w.id;

-- Alerts: one row per incident, open while cleared_at is NULL. At most one open alert per
-- (kind, subject). value and threshold are what raised it; last_value is the latest measurement.
CREATE TABLE switchyard.alerts (
    id                bigint           GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind              text             NOT NULL,
    subject           text             NOT NULL,
    opened_at         timestamptz      NOT NULL,
    cleared_at        timestamptz,
    value             double precision NOT NULL,
    threshold         double precision NOT NULL,
    message           text             NOT NULL,
    last_value        double precision,
    last_evaluated_at timestamptz,
    clear_message     text
);

CREATE UNIQUE INDEX alerts_open_idx ON switchyard.alerts (kind, subject) WHERE cleared_at IS NULL;
CREATE INDEX alerts_opened_idx ON switchyard.alerts (opened_at);

-- What every alert rule measures as of p_at. breached raises an alert; recovered clears an open
-- one; a row that is neither (too few calls to tell) leaves things as they are.
CREATE FUNCTION switchyard.alert_measurements(p_at timestamptz DEFAULT now())
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
    throughput_window constant interval :=
        make_interval(secs => coalesce(switchyard.numeric_setting('alert_backlog_throughput_window_seconds'), 900));
BEGIN
    -- A model's error rate.
    IF error_limit IS NOT NULL THEN
        RETURN QUERY
        SELECT 'error_rate'::text, c.model, c.errors::double precision / c.calls, error_limit,
               c.calls >= min_calls AND c.errors::double precision / c.calls > error_limit,
               c.errors::double precision / c.calls <= error_limit,
               format('model %s: %s%% of %s calls ended in an error over the last %s (limit %s%%)', c.model,
                      round(100.0 * c.errors / c.calls, 1), c.calls, switchyard.window_text(error_window),
                      trim_scale(round(100 * error_limit::numeric, 2)))
        FROM (SELECT k.model, count(*) AS calls, count(*) FILTER (WHERE k.model_error) AS errors
              FROM switchyard.calls k
              WHERE k.finished_at > p_at - error_window AND k.finished_at <= p_at AND k.outcome <> 'cancelled'
              GROUP BY k.model) c;
    END IF;

    -- A model's P95 against its tier's target; per model, the tier furthest over its target.
    RETURN QUERY
    SELECT DISTINCT ON (t.model) 'latency'::text, t.model, t.p95, t.target,
           t.calls >= min_calls AND t.p95 > t.target, t.p95 <= t.target,
           format('model %s: P95 latency %s ms as %s over the last %s (target %s ms, %s calls)', t.model,
                  round(t.p95::numeric, 1), t.tier, switchyard.window_text(latency_window), round(t.target::numeric),
                  t.calls)
    FROM (SELECT k.model, k.tier, count(*) AS calls,
                 percentile_cont(0.95) WITHIN GROUP (ORDER BY k.latency_ms) AS p95,
                 switchyard.numeric_setting('alert_latency_target_ms_' || k.tier) AS target
          FROM switchyard.calls k
          WHERE k.finished_at > p_at - latency_window AND k.finished_at <= p_at
                AND k.outcome IN ('succeeded', 'timeout') AND k.latency_ms IS NOT NULL
                AND k.tier IN ('primary', 'secondary', 'tertiary')
          GROUP BY k.model, k.tier) t
    WHERE t.target IS NOT NULL
    ORDER BY t.model, t.p95 / t.target DESC;

    -- Interactive queue wait: jobs that finished in the window, and jobs waiting right now (their
    -- wait so far), so a stalled fleet raises it even though nothing finishes.
    IF wait_limit IS NOT NULL THEN
        RETURN QUERY
        WITH waits AS (
            SELECT r.queue_wait_ms AS wait_ms, false AS waiting
            FROM switchyard.results r
            WHERE r.priority = 'interactive' AND r.finished_at > p_at - wait_window AND r.finished_at <= p_at
                  AND r.queue_wait_ms IS NOT NULL
            UNION ALL
            SELECT extract(epoch FROM p_at - greatest(j.created_at, j.run_at)) * 1000, true
            FROM switchyard.jobs_interactive j
            WHERE j.lease_owner IS NULL AND j.run_at <= p_at
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

    -- Background jobs that would miss their deadline if the backlog drains at recent throughput.
    IF backlog_limit IS NOT NULL THEN
        RETURN QUERY
        WITH throughput AS (
            SELECT count(*) / extract(epoch FROM throughput_window) AS per_second
            FROM switchyard.results r
            WHERE r.priority = 'background' AND r.finished_at > p_at - throughput_window AND r.finished_at <= p_at
                  AND r.status <> 'cancelled'
        ), backlog AS (
            SELECT count(*) AS jobs, min(j.deadline) AS earliest FROM switchyard.jobs_background j
            WHERE j.lease_owner IS NULL
        ), drain AS (
            SELECT b.jobs, b.earliest, t.per_second,
                   -- With nothing finished recently there is no rate to go by: only jobs due within
                   -- the measuring window count as at risk (nothing drained in as long).
                   CASE WHEN t.per_second > 0 THEN p_at + make_interval(secs => b.jobs / t.per_second)
                        ELSE p_at + throughput_window END AS drained_at
            FROM backlog b, throughput t
        ), at_risk AS (
            SELECT d.*, (SELECT count(*) FROM switchyard.jobs_background j
                         WHERE j.lease_owner IS NULL AND j.deadline IS NOT NULL
                               AND j.deadline < d.drained_at) AS jobs_at_risk
            FROM drain d
        )
        SELECT 'backlog_deadlines'::text, 'background'::text, a.jobs_at_risk::double precision, backlog_limit,
               a.jobs_at_risk > backlog_limit, a.jobs_at_risk <= backlog_limit,
               format('%s queued background jobs would miss their deadline: the backlog of %s drains %s '
                      '(recent throughput %s jobs/min over %s; earliest deadline %s)',
                      a.jobs_at_risk, a.jobs,
                      CASE WHEN a.per_second > 0
                           THEN 'by ' || to_char(a.drained_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"')
                           ELSE 'at an unknown time (no background job finished recently)' END,
                      round((a.per_second * 60)::numeric, 2), switchyard.window_text(throughput_window),
                      coalesce(to_char(a.earliest AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"'), 'none'))
        FROM at_risk a
        WHERE a.jobs > 0;
    END IF;
END $$;

-- Evaluates every alert rule as of p_at (default now): raises an alert whose rule is breached and
-- that is not open yet, clears an open alert that recovered (or whose rule no longer measures
-- anything: no traffic, or turned off). Each event is a row in switchyard.alerts, a NOTIFY on
-- switchyard_alerts (JSON payload) and a row of the answer, for the caller to log. A raised model
-- alert opens the model's breaker (unless alert_opens_breaker is false): routers skip it until
-- the breaker half-opens after breaker_open_seconds and a probe succeeds.
CREATE FUNCTION switchyard.evaluate_alerts(p_at timestamptz DEFAULT now())
    RETURNS TABLE (
        event text, alert_id bigint, kind text, subject text, value double precision, threshold double precision,
        message text, event_at timestamptz)
    LANGUAGE plpgsql AS $$
DECLARE
    measurement record;
    existing switchyard.alerts;
    opens_breaker constant boolean := coalesce(switchyard.setting('alert_opens_breaker'), 'true') = 'true';
    seen text[] := '{}';
    trips_breaker boolean;
    stranded text;
BEGIN
    -- One evaluation at a time ("SWYDALRT"): two housekeepers never raise the same alert twice.
    PERFORM pg_advisory_xact_lock(6005366777810014804);
    FOR measurement IN SELECT * FROM switchyard.alert_measurements(p_at) LOOP
        seen := seen || (measurement.kind || '/' || measurement.subject);
        SELECT * INTO existing FROM switchyard.alerts a
        WHERE a.kind = measurement.kind AND a.subject = measurement.subject AND a.cleared_at IS NULL;
        IF existing.id IS NULL AND measurement.breached THEN
            trips_breaker := opens_breaker AND measurement.kind IN ('error_rate', 'latency')
                             AND EXISTS (SELECT 1 FROM switchyard.models m WHERE m.name = measurement.subject);
            IF trips_breaker THEN
                -- An alert steers traffic away; it must not leave a rule with nowhere to go. Rules
                -- whose every other model is disabled, open or half-open (one probe at a time is no
                -- capacity) keep this one, as Envoy's panic mode does.
                SELECT string_agg(r.task_class, ', ' ORDER BY r.task_class) INTO stranded
                FROM switchyard.routes r
                WHERE measurement.subject = ANY (r.primary_model || r.fallbacks)
                  AND NOT EXISTS (
                      SELECT 1 FROM unnest(r.primary_model || r.fallbacks) AS other(name)
                      JOIN switchyard.models m ON m.name = other.name AND m.enabled
                      LEFT JOIN switchyard.model_health h ON h.model = other.name
                      WHERE other.name <> measurement.subject
                        AND coalesce(switchyard.effective_breaker(h.state, h.opened_at), 'closed') = 'closed');
                IF stranded IS NOT NULL THEN
                    trips_breaker := false;
                    measurement.message := measurement.message
                        || format('; breaker left closed: it is the last healthy model of rule %s', stranded);
                END IF;
            END IF;
            INSERT INTO switchyard.alerts AS a (kind, subject, opened_at, value, threshold, message, last_value,
                                                last_evaluated_at)
            VALUES (measurement.kind, measurement.subject, p_at, measurement.value, measurement.threshold,
                    measurement.message, measurement.value, p_at)
            RETURNING a.id INTO alert_id;
            event := 'raised';
            IF trips_breaker THEN
                INSERT INTO switchyard.model_health AS h (model, state, opened_at, reason)
                VALUES (measurement.subject, 'open', now(), left('alert: ' || measurement.message, 300))
                ON CONFLICT (model) DO UPDATE
                    SET state = 'open', opened_at = now(), reason = EXCLUDED.reason, updated_at = now();
                PERFORM pg_notify('switchyard_health', measurement.subject);
            END IF;
        ELSIF existing.id IS NOT NULL AND measurement.recovered THEN
            UPDATE switchyard.alerts a
            SET cleared_at = p_at, last_value = measurement.value, last_evaluated_at = p_at,
                clear_message = measurement.message
            WHERE a.id = existing.id;
            alert_id := existing.id;
            event := 'cleared';
        ELSE
            IF existing.id IS NOT NULL THEN
                UPDATE switchyard.alerts a SET last_value = measurement.value, last_evaluated_at = p_at
                WHERE a.id = existing.id;
            END IF;
            CONTINUE;
        END IF;
        kind := measurement.kind;
        subject := measurement.subject;
        value := measurement.value;
        threshold := measurement.threshold;
        message := measurement.message;
        event_at := p_at;
        PERFORM pg_notify('switchyard_alerts', json_build_object(
            'event', event, 'id', alert_id, 'kind', kind, 'subject', subject, 'value', value,
            'threshold', threshold, 'message', left(message, 1000), 'at', p_at)::text);
        RETURN NEXT;
    END LOOP;

    -- Open alerts nothing measured any more: the traffic stopped, or the rule was turned off.
    FOR existing IN
        SELECT * FROM switchyard.alerts a
        WHERE a.cleared_at IS NULL AND NOT (a.kind || '/' || a.subject = ANY (seen))
        ORDER BY a.id
        FOR UPDATE
    LOOP
        UPDATE switchyard.alerts a
        SET cleared_at = p_at, last_evaluated_at = p_at,
            clear_message = format('%s %s: nothing left to measure (no traffic in the window, or the rule is off)',
                                   existing.kind, existing.subject)
        WHERE a.id = existing.id;
        event := 'cleared';
        alert_id := existing.id;
        kind := existing.kind;
        subject := existing.subject;
        value := existing.last_value;
        threshold := existing.threshold;
        message := format('%s %s: nothing left to measure (no traffic in the window, or the rule is off)',
                          existing.kind, existing.subject);
        event_at := p_at;
        PERFORM pg_notify('switchyard_alerts', json_build_object(
            'event', event, 'id', alert_id, 'kind', kind, 'subject', subject, 'value', value,
            'threshold', threshold, 'message', message, 'at', p_at)::text);
        RETURN NEXT;
    END LOOP;
END $$;

-- Quality feedback: one row per rating of a finished job's answer, on a 0-100 scale (the scale of
-- the catalog's capability scores). model and task_class are copied from the result, so ratings
-- outlive result retention.
CREATE TABLE switchyard.feedback (
    id         bigint        GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id     bigint        NOT NULL,
    model      text          NOT NULL,
    task_class text,
    score      numeric(5, 2) NOT NULL,
    note       text,
    created_at timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT feedback_score_check CHECK (score BETWEEN 0 AND 100),
    CONSTRAINT feedback_note_check CHECK (length(note) <= 2000)
);

CREATE INDEX feedback_model_idx ON switchyard.feedback (model, task_class, created_at);

-- Rates a finished job's answer: score 0-100 (100 best), an optional note. Returns the rating's id.
CREATE FUNCTION switchyard.feedback(job_id bigint, score numeric, note text DEFAULT NULL) RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    v_job_id constant bigint := feedback.job_id;
    v_score constant numeric := feedback.score;
    v_note constant text := feedback.note;
    answered switchyard.results;
    new_id bigint;
BEGIN
    IF v_score IS NULL OR v_score < 0 OR v_score > 100 THEN
        PERFORM switchyard.reject(
            format('score must be between 0 and 100 (got %s)', coalesce(trim_scale(v_score)::text, 'NULL')),
            'Rate on a 0-100 scale, 100 best; for stars, 4 of 5 is 80.');
    END IF;
    IF length(v_note) > 2000 THEN
        PERFORM switchyard.reject(format('note is %s characters, over the limit of 2000', length(v_note)),
                                  'Shorten the note.');
    END IF;
    SELECT * INTO answered FROM switchyard.results r WHERE r.job_id = v_job_id;
    IF NOT FOUND THEN
        IF EXISTS (SELECT 1 FROM switchyard.jobs j WHERE j.id = v_job_id) THEN
            PERFORM switchyard.reject(format('job %s has not finished yet', v_job_id),
                                      'Rate it once it has an answer (dispatcher wait ID).');
        END IF;
        RAISE EXCEPTION USING ERRCODE = 'P0002', MESSAGE = format('job %s not found', v_job_id),
            HINT = 'Check the id; results older than the retention period are pruned.';
    END IF;
    IF answered.model IS NULL THEN
        PERFORM switchyard.reject(format('job %s has no answer to rate: it ended %s', v_job_id, answered.status),
                                  'Only answered (succeeded) jobs can be rated.');
    END IF;
    INSERT INTO switchyard.feedback AS f (job_id, model, task_class, score, note)
    VALUES (v_job_id, answered.model, answered.task_class, v_score, v_note)
    RETURNING f.id INTO new_id;
    RETURN new_id;
END $$;

-- The recent average rating per model and task class (ratings from the last feedback_window_days).
CREATE VIEW switchyard.feedback_scores AS
SELECT f.model, f.task_class, count(*) AS ratings, avg(f.score)::double precision AS average_score,
       max(f.created_at) AS last_rated_at
FROM switchyard.feedback f
WHERE f.created_at
      > now() - make_interval(days => coalesce(switchyard.numeric_setting('feedback_window_days'), 30)::integer)
GROUP BY f.model, f.task_class;

-- Workers route by capability scores blended with feedback: once a (model, class) has enough
-- ratings to count, tell them to reload the catalog (on the catalog's own channel).
CREATE FUNCTION switchyard.notify_feedback() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM (SELECT DISTINCT i.model, i.task_class FROM rated i) changed
        JOIN switchyard.feedback_scores s ON s.model = changed.model
                                          AND s.task_class IS NOT DISTINCT FROM changed.task_class
        WHERE s.ratings >= coalesce(switchyard.numeric_setting('feedback_min_ratings'), 5)
    ) THEN
        PERFORM pg_notify('switchyard_catalog', 'feedback');
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER feedback_notify AFTER INSERT ON switchyard.feedback
    REFERENCING NEW TABLE AS rated
    FOR EACH STATEMENT EXECUTE FUNCTION switchyard.notify_feedback();
