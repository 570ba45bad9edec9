-- Failures in a row as the worker counts them: in the order its calls started.
--
-- The breaker's consecutive failures were counted in the order calls ended. With many calls in
-- flight, errors come back in milliseconds and answers in a second, so a model failing 3% of
-- its calls showed five "in a row" in every wave of 128 calls, and its breaker opened on a model
-- that answered nearly every call (a one-model rule's backlog then failed). A worker now counts
-- a failure only once every call it started earlier has ended, and a success breaks the run for
-- every call that started before it; it sends the count as failures_in_a_row, which is taken as
-- the model's consecutive failures. A report without it (an older worker) is counted as before.
-- And the error-rate rule leaves closed the last healthy model of a rule, as an alert does (at
-- 128 calls in flight, a model failing 1.5% of calls crossed 2% by chance and a one-model rule's
-- jobs waited 30 s for nothing); failures in a row still open it. Otherwise 0009's.

SET LOCAL ROLE switchyard_admin;

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
                next_reason := format('error rate %s%% over the last %s requests (limit %s%%)',
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
