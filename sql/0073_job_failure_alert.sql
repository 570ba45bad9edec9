-- An alert for jobs that fail: `job_failures`, per task class.
--
-- A rule none of whose models can take a job for good (ratings dragged them under its
-- quality_floor, as in a soak; all disabled; all priced over a ceiling) fails each job of its
-- class as `unroutable`, and no alert was raised: the model rules count calls, and such a job
-- makes none. Nor was one for jobs whose every fallback failed on models whose own error rates
-- stayed under their limit. The rule raises when over alert_job_failure_rate (5%) of a class's
-- jobs that finished in alert_job_failure_window_seconds (300) failed, with at least
-- alert_job_failure_min_jobs (10) and over the limit with 95% confidence, as the other rate rules;
-- it names the most frequent error code and one of its messages. The requests' own faults (a
-- provider's 400, a prompt over every model's context, a request they cannot take or no worker
-- can read) do not count, nor cancelled or expired jobs.
--
-- And the breaker alert takes a flapping model for one incident. An on-call walkthrough's model
-- failing 30% of its calls had its breaker closed by five answered probes every 35 s or so, each
-- closing restarting its unhealthy_since, and the alert (2 min out of rotation) never came. Now a
-- closing keeps unhealthy_since, model_health.closed_at says when it closed, and a reopening
-- within twice breaker_open_seconds of it goes on with the incident (flaps counts them); the alert
-- clears once the breaker has stayed closed that long, not at each closing.
--
-- A failed probe's reopening keeps the cause the breaker was opened for in its reason ("a probe
-- failed while half-open (opened for: failure rate 22.2% …)"): the walkthrough's breaker, and the
-- breaker alert that quotes it, said only that a probe had failed.
--
-- Both rules are alert_measurements', restated once, with the call windows, in 0074 (they came in
-- one release). setting_rule is 0064's with the new settings; model_health_unhealthy_since 0064's
-- with the closings; report_health 0053's with the cause.

SET LOCAL ROLE switchyard_admin;

ALTER TABLE switchyard.model_health ADD COLUMN closed_at timestamptz, ADD COLUMN flaps integer NOT NULL DEFAULT 0;

CREATE OR REPLACE FUNCTION switchyard.model_health_unhealthy_since() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    settle constant interval :=
        make_interval(secs => 2 * coalesce(switchyard.numeric_setting('breaker_open_seconds'), 30));
BEGIN
    IF NEW.state = 'closed' THEN
        -- The incident is over only once it stays closed (the alert reads closed_at).
        IF TG_OP = 'INSERT' THEN
            NEW.unhealthy_since := NULL;
            NEW.closed_at := NULL;
        ELSIF OLD.state <> 'closed' THEN
            NEW.unhealthy_since := OLD.unhealthy_since;
            NEW.closed_at := now();
        ELSE
            NEW.unhealthy_since := OLD.unhealthy_since;
            NEW.closed_at := OLD.closed_at;
        END IF;
    ELSIF TG_OP = 'INSERT' THEN
        NEW.unhealthy_since := coalesce(NEW.opened_at, now());
        NEW.closed_at := NULL;
        NEW.flaps := 0;
    ELSIF OLD.state = 'closed' THEN
        IF OLD.unhealthy_since IS NOT NULL AND OLD.closed_at > now() - settle THEN
            -- Closed by its probes and failing again: the same incident.
            NEW.unhealthy_since := OLD.unhealthy_since;
            NEW.flaps := OLD.flaps + 1;
        ELSE
            -- Its opened_at only when this write set it: a closed breaker keeps its last opening's, and
            -- an operator's "SET state = 'open'" alone read as out for ten minutes (a review).
            NEW.unhealthy_since := CASE WHEN NEW.opened_at IS DISTINCT FROM OLD.opened_at
                                        THEN coalesce(NEW.opened_at, now()) ELSE now() END;
            NEW.flaps := 0;
        END IF;
        NEW.closed_at := NULL;
    ELSIF OLD.unhealthy_since IS NULL THEN
        NEW.unhealthy_since := CASE WHEN NEW.opened_at IS DISTINCT FROM OLD.opened_at
                                    THEN coalesce(NEW.opened_at, now()) ELSE now() END;
        NEW.closed_at := NULL;
    ELSE
        NEW.unhealthy_since := OLD.unhealthy_since;
        NEW.closed_at := NULL;
    END IF;
    RETURN NEW;
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
    cause text;
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
                -- With the cause it was opened for: a walkthrough's flapping model read only "a
                -- probe failed while half-open" in its breaker and in the breaker alert.
                cause := regexp_replace(coalesce(health.reason, ''), '; [0-9]+ of [0-9]+ probes answered$', '');
                next_reason := CASE WHEN cause LIKE 'a probe failed while half-open%' THEN cause
                                    WHEN cause = '' THEN 'a probe failed while half-open'
                                    ELSE left('a probe failed while half-open (opened for: ' || left(cause, 250) || ')', 300)
                               END;
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
        ('alert_breaker_open_seconds', 'window', true, '120'),
        ('alert_job_failure_rate', 'rate', true, '0.05'),
        ('alert_job_failure_window_seconds', 'window', false, '300'),
        ('alert_job_failure_min_jobs', 'count', false, '10'),
        ('breaker_error_rate', 'rate', false, '0.02'),
        ('breaker_half_open_successes', 'count', false, '5'),
        ('breaker_window_seconds', 'window', false, '60'),
        ('feedback_min_ratings', 'count', false, '5'),
        ('feedback_prior_weight', 'count', false, '20'),
        ('feedback_window_days', 'count', false, '30')
    ) AS r(name, kind, may_be_off, default_value)
    WHERE r.name = p_name
$$;

-- After setting_rule knows them (the settings trigger checks every value written).
INSERT INTO switchyard.settings (name, value, description) VALUES
    ('alert_job_failure_rate', '0.05',
     'Job-failure alert: raises when over this share of a task class''s jobs failed in the window (off disables).'),
    ('alert_job_failure_window_seconds', '300', 'Job-failure alert: the window, in seconds.'),
    ('alert_job_failure_min_jobs', '10', 'Job-failure alert: finished jobs of the class needed in the window.')
ON CONFLICT (name) DO NOTHING;
