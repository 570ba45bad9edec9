-- A half-open breaker closes after several probes in a row answer, not one; and the error-rate
-- rule judges a low-volume model, on more than a few failures.
--
-- A realistic run degraded gpt-3.5-turbo on purpose (30% of its calls failing, about 55 calls a
-- minute). Its alert opened the breaker; 30 s later one probe answered (as 70% of its calls do),
-- the breaker closed, and the model had all its traffic back for 106 s (96 calls, 33 failed)
-- before it opened again: the error-rate rule needs breaker_min_requests calls in its 60 s
-- window, 50, which that model never reached, and five failures in a row are rare at 30%.
-- Resilience4j lets a set number of calls through a half-open breaker and closes on them, not on
-- the first; Envoy's outlier detection does likewise with its ejections.
--
-- A half-open breaker now closes once breaker_half_open_successes probes (default 5) answered
-- since it opened, with no probe failing between (a failed probe opens it again, as before): a
-- model failing 30% of its calls passes five probes in a row one time in six, one failing 0.5%
-- of them 97 times in a hundred. Each worker still sends one probe at a time. The count belongs to
-- the opening it was made under (probe_opened_at): an alert that opens the breaker again starts it
-- afresh.
--
-- breaker_min_requests goes from 50 to 20 and breaker_min_failures from 3 to 5 where they still
-- hold the old defaults. Since 0052 the rate rule also needs the share's 95% lower bound over the
-- limit, which is what guards against thin evidence now, so the window no longer needs 50 calls:
-- a model with 20 calls a minute can trip it. The stray failures seen on healthy models (3 in 57
-- calls opened claude-sonnet's breaker at a simulated 0.5% error rate: about 1 window in 400 does
-- that) need 5 now (about 1 in 70,000). A model that is down still opens on failures in a row.
--
-- report_health is 0052's otherwise; setting_rule 0023's with the new setting;
-- breaker_error_rate_exceeded 0052's with the new default where the setting's row is gone.

SET LOCAL ROLE switchyard_admin;

ALTER TABLE switchyard.model_health
    ADD COLUMN probe_successes integer NOT NULL DEFAULT 0,
    ADD COLUMN probe_opened_at timestamptz;

INSERT INTO switchyard.settings (name, value, description) VALUES
    ('breaker_half_open_successes', '5',
     'A half-open breaker closes once this many probes answered, with none failing between.');

UPDATE switchyard.settings SET value = '20',
    description = 'The error rate only counts once the window holds at least this many requests.'
WHERE name = 'breaker_min_requests' AND value = '50';
UPDATE switchyard.settings SET value = '5'
WHERE name = 'breaker_min_failures' AND value = '3';

CREATE OR REPLACE FUNCTION switchyard.breaker_error_rate_exceeded(p_requests integer, p_failures integer)
    RETURNS boolean
    LANGUAGE sql STABLE AS $$
    SELECT p_requests >= switchyard.setting('breaker_min_requests')::integer
       AND p_failures >= coalesce(switchyard.setting('breaker_min_failures')::integer, 5)
       AND p_failures::double precision / p_requests > switchyard.setting('breaker_error_rate')::double precision
       AND switchyard.rate_lower_bound(p_failures, p_requests) > switchyard.setting('breaker_error_rate')::double precision
$$;

CREATE OR REPLACE FUNCTION switchyard.setting_rule(p_name text, OUT kind text, OUT may_be_off boolean, OUT default_value text)
    LANGUAGE sql IMMUTABLE AS $$
    SELECT r.kind, r.may_be_off, r.default_value FROM (VALUES
        ('alert_error_rate', 'rate', true, '0.02'),
        ('alert_error_window_seconds', 'window', false, '300'),
        ('alert_min_calls', 'count', false, '50'),
        ('alert_latency_window_seconds', 'window', false, '300'),
        ('alert_latency_target_ms_primary', 'limit', true, '1500'),
        ('alert_latency_target_ms_secondary', 'limit', true, '3000'),
        ('alert_latency_target_ms_tertiary', 'limit', true, '10000'),
        ('alert_queue_wait_p95_ms', 'limit', true, '2000'),
        ('alert_queue_wait_window_seconds', 'window', false, '300'),
        ('alert_queue_wait_min_jobs', 'count', false, '10'),
        ('alert_backlog_at_risk_jobs', 'count', true, '0'),
        ('alert_backlog_throughput_window_seconds', 'window', false, '900'),
        ('alert_opens_breaker', 'boolean', false, 'true'),
        ('breaker_half_open_successes', 'count', false, '5'),
        ('feedback_min_ratings', 'count', false, '5'),
        ('feedback_prior_weight', 'count', false, '20'),
        ('feedback_window_days', 'count', false, '30')
    ) AS r(name, kind, may_be_off, default_value)
    WHERE r.name = p_name
$$;

CREATE OR REPLACE FUNCTION switchyard.report_health(p_reports jsonb)
    RETURNS TABLE (model_name text, breaker text, changed boolean)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    report record;
    health switchyard.model_health;
    previous text;
    next_state text;
    next_reason text;
    answered integer;
    error_rate constant double precision := switchyard.setting('breaker_error_rate')::double precision;
    consecutive_limit constant integer := switchyard.setting('breaker_consecutive_failures')::integer;
    window_length constant interval := make_interval(secs => switchyard.setting('breaker_window_seconds')::double precision);
    probes_needed constant integer := greatest(coalesce(switchyard.setting('breaker_half_open_successes')::integer, 5), 1);
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
                -- The probes answered under this opening (an alert may have opened it again since).
                answered := CASE WHEN health.probe_opened_at IS NOT DISTINCT FROM health.opened_at
                                 THEN health.probe_successes ELSE 0 END
                            + greatest(coalesce(report.requests, 0), 1);
                IF answered >= probes_needed THEN
                    next_state := 'closed';
                    next_reason := NULL;
                    health.window_started_at := now();
                    health.window_requests := 0;
                    health.window_failures := 0;
                    answered := 0;
                ELSE
                    next_reason := format('%s; %s of %s probes answered',
                                          left(regexp_replace(coalesce(health.reason, 'half-open'),
                                                              '; [0-9]+ of [0-9]+ probes answered$', ''), 260),
                                          answered, probes_needed);
                END IF;
                health.probe_successes := answered;
                health.probe_opened_at := health.opened_at;
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
            probe_successes = health.probe_successes,
            probe_opened_at = health.probe_opened_at,
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
