-- A rate is over its limit only when it is with 95% confidence: alerts and the breaker stop
-- opening on a few stray failures.
--
-- A realistic run of the example catalog (10 minutes, 2,837 jobs, nothing failed) raised alerts
-- and opened breakers of healthy models on noise: llama-3.1-70b's error alert on 2 errors of 51
-- calls (3.9% against 2%; its simulated rate is 0.5%), which opened its breaker and moved two
-- conversations off their home model; gpt-4's latency alert twice (5 of 81 calls timed out at
-- 5 s, 2.4% expected), leaving it half-open for 11 minutes; deepseek-v3's breaker on 3 timeouts
-- of 91 requests. Each compared a share measured on 50-100 calls with its limit as if it were
-- exact. rate_lower_bound gives the Wilson score lower bound of a share at one-sided 95%
-- confidence; the error-rate alert, the latency alert (the share of calls over the target: a P95
-- over it is more than 5%) and the breaker's error-rate rule now also need that bound over the
-- limit. An outage still trips them at once (50 failures of 50: the bound is 95%), and failures
-- in a row still open a breaker on their own. At 100 calls the error rules take about 5%, at
-- 1,000 about 2.7%, against a limit of 2%.
--
-- The breaker's reason said "error rate" for a share that counts timeouts, beside a status line
-- showing 0% errors: it says "failure rate … (errors and timeouts …)".
--
-- The backlog-deadline alert counted every queued background job as standing in line, also those
-- a worker put off for hours (no model within the ceiling at any hour: an hour at a time, for
-- ever) or held to their escalation point: with none of them due, it said 5 jobs would miss their
-- deadlines "by 05:01" and stayed open. Jobs a worker put off to a later time no longer count
-- (postponed_at set, run_at ahead); jobs submitted to run later still do.
--
-- alert_measurements is 0049's otherwise, report_health 0038's.

SET LOCAL ROLE switchyard_admin;

-- The Wilson score lower bound of p_events / p_total at one-sided 95% confidence (z = 1.645):
-- the least the share can be, given what was seen. 0 with nothing seen.
CREATE FUNCTION switchyard.rate_lower_bound(p_events bigint, p_total bigint) RETURNS double precision
    LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN coalesce(p_total, 0) <= 0 THEN 0 ELSE greatest(0,
        (p + z * z / (2 * n) - z * sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)) END
    FROM (SELECT least(greatest(p_events, 0), p_total)::double precision / p_total AS p,
                 p_total::double precision AS n, 1.645::double precision AS z) v
$$;

CREATE OR REPLACE FUNCTION switchyard.breaker_error_rate_exceeded(p_requests integer, p_failures integer)
    RETURNS boolean
    LANGUAGE sql STABLE AS $$
    SELECT p_requests >= switchyard.setting('breaker_min_requests')::integer
       AND p_failures >= coalesce(switchyard.setting('breaker_min_failures')::integer, 3)
       AND p_failures::double precision / p_requests > switchyard.setting('breaker_error_rate')::double precision
       AND switchyard.rate_lower_bound(p_failures, p_requests) > switchyard.setting('breaker_error_rate')::double precision
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

CREATE OR REPLACE FUNCTION switchyard.report_health(p_reports jsonb)
    RETURNS TABLE (model_name text, breaker text, changed boolean)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    report record;
    health switchyard.model_health;
    previous text;
    next_state text;
    next_reason text;
    error_rate constant double precision := switchyard.setting('breaker_error_rate')::double precision;
    consecutive_limit constant integer := switchyard.setting('breaker_consecutive_failures')::integer;
    window_length constant interval := make_interval(secs => switchyard.setting('breaker_window_seconds')::double precision);
BEGIN
    FOR report IN
        SELECT * FROM jsonb_to_recordset(p_reports) AS r(
            model text, requests integer, failures integer, had_success boolean, trailing_failures integer,
            latency_mean_ms double precision, latency_p95_ms double precision, mark_unhealthy text,
            failures_in_a_row integer)
        ORDER BY r.model  -- a fixed lock order: two workers' batches never deadlock
    LOOP
        INSERT INTO switchyard.model_health AS h (model) VALUES (report.model) ON CONFLICT (model) DO NOTHING;
        SELECT * INTO health FROM switchyard.model_health h WHERE h.model = report.model FOR UPDATE;
        previous := switchyard.effective_breaker(health.state, health.opened_at);
        IF health.window_started_at <= now() - window_length THEN
            health.window_started_at := now();
            health.window_requests := 0;
            health.window_failures := 0;
        END IF;
        health.window_requests := health.window_requests + coalesce(report.requests, 0);
        health.window_failures := health.window_failures + coalesce(report.failures, 0);
        -- A worker's own count, in the order its calls started, when it sends one.
        health.consecutive_failures := CASE
            WHEN report.failures_in_a_row IS NOT NULL THEN report.failures_in_a_row
            WHEN coalesce(report.had_success, false) THEN coalesce(report.trailing_failures, 0)
            ELSE health.consecutive_failures + coalesce(report.failures, 0)
        END;
        IF report.latency_mean_ms IS NOT NULL THEN
            -- An EWMA with weight 0.2 per report; P95 smoothed the same way from each batch's P95.
            health.latency_ewma_ms := coalesce(0.8 * health.latency_ewma_ms + 0.2 * report.latency_mean_ms,
                                                report.latency_mean_ms);
            health.latency_p95_ms := coalesce(0.8 * health.latency_p95_ms + 0.2 * report.latency_p95_ms,
                                               report.latency_p95_ms);
        END IF;

        next_state := previous;
        next_reason := health.reason;
        IF report.mark_unhealthy IS NOT NULL THEN
            next_state := 'open';
            next_reason := left(report.mark_unhealthy, 300);
        ELSIF previous = 'half_open' THEN
            IF coalesce(report.failures, 0) > 0 THEN
                next_state := 'open';
                next_reason := 'a probe failed while half-open';
            ELSIF coalesce(report.had_success, false) THEN
                next_state := 'closed';
                next_reason := NULL;
                health.window_started_at := now();
                health.window_requests := 0;
                health.window_failures := 0;
            END IF;
        ELSIF previous = 'closed' THEN
            IF health.consecutive_failures >= consecutive_limit THEN
                next_state := 'open';
                next_reason := format('%s failures in a row', health.consecutive_failures);
            ELSIF switchyard.breaker_error_rate_exceeded(health.window_requests, health.window_failures)
                  -- Not the last healthy model of a rule (every other one disabled, open or
                  -- half-open), as an alert leaves it: a model answering most calls beats none.
                  AND NOT EXISTS (
                      SELECT FROM switchyard.routes r
                      WHERE report.model = ANY (r.primary_model || r.fallbacks)
                        AND NOT EXISTS (
                            SELECT FROM unnest(r.primary_model || r.fallbacks) AS other(name)
                            JOIN switchyard.models m ON m.name = other.name AND m.enabled
                            LEFT JOIN switchyard.model_health o ON o.model = other.name
                            WHERE other.name <> report.model
                              AND coalesce(switchyard.effective_breaker(o.state, o.opened_at), 'closed') = 'closed'))
            THEN
                next_state := 'open';
                next_reason := format('failure rate %s%% over the last %s requests (errors and timeouts; limit %s%%)',
                                      round(100.0 * health.window_failures / health.window_requests, 1),
                                      health.window_requests, round(100 * error_rate::numeric, 1));
            END IF;
        END IF;

        UPDATE switchyard.model_health h
        SET state = next_state,
            opened_at = CASE WHEN next_state = 'open' AND previous <> 'open' THEN now() ELSE h.opened_at END,
            reason = next_reason,
            consecutive_failures = health.consecutive_failures,
            window_started_at = health.window_started_at,
            window_requests = health.window_requests,
            window_failures = health.window_failures,
            latency_ewma_ms = health.latency_ewma_ms,
            latency_p95_ms = health.latency_p95_ms,
            total_requests = h.total_requests + coalesce(report.requests, 0),
            total_failures = h.total_failures + coalesce(report.failures, 0),
            updated_at = now()
        WHERE h.model = report.model;

        model_name := report.model;
        breaker := next_state;
        changed := next_state IS DISTINCT FROM previous;
        IF changed THEN
            PERFORM pg_notify('switchyard_health', report.model);
        END IF;
        RETURN NEXT;
    END LOOP;
END $$;
