-- Fleet-wide model health: one circuit breaker per model, fed by every worker's reports and
-- broadcast on switchyard_health when it changes state, so the whole fleet stops sending to a
-- broken model within about a second.

INSERT INTO switchyard.settings (name, value, description) VALUES
    ('breaker_error_rate', '0.02',
     'A model''s breaker opens when its error rate over the window exceeds this share.'),
    ('breaker_min_requests', '50',
     'The error rate only counts once the window holds at least this many requests.'),
    ('breaker_consecutive_failures', '5',
     'A model''s breaker also opens after this many failures in a row.'),
    ('breaker_open_seconds', '30',
     'How long an open breaker stays open before letting probe requests through (half-open).'),
    ('breaker_window_seconds', '60',
     'The length of the error-rate window.');

ALTER TABLE switchyard.model_health
    ADD COLUMN reason         text,
    ADD COLUMN total_requests bigint NOT NULL DEFAULT 0,
    ADD COLUMN total_failures bigint NOT NULL DEFAULT 0;

-- The breaker state as of now: an open breaker whose time is up reads as half_open.
CREATE FUNCTION switchyard.effective_breaker(p_state text, p_opened_at timestamptz) RETURNS text
    LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN p_state = 'open'
             AND p_opened_at <= now() - make_interval(secs => switchyard.setting('breaker_open_seconds')::double precision)
        THEN 'half_open'
        ELSE p_state
    END
$$;

-- Folds a batch of per-model reports from one worker into the fleet's health, and returns each
-- model's state afterwards. A report:
--   {"model": "gpt-4", "requests": 40, "failures": 2, "had_success": true,
--    "trailing_failures": 0, "latency_mean_ms": 812.5, "latency_p95_ms": 1403,
--    "mark_unhealthy": "HTTP 401 …" (optional: open the breaker now, whatever the counts)}
-- trailing_failures: failures after the batch's last success (consecutive failures carry over
-- from earlier batches only when the batch had no success).
CREATE FUNCTION switchyard.report_health(p_reports jsonb)
    RETURNS TABLE (model_name text, breaker text, changed boolean)
    LANGUAGE plpgsql AS $$
DECLARE
    report record;
    health switchyard.model_health;
    previous text;
    next_state text;
    next_reason text;
    error_rate constant double precision := switchyard.setting('breaker_error_rate')::double precision;
    min_requests constant integer := switchyard.setting('breaker_min_requests')::integer;
    consecutive_limit constant integer := switchyard.setting('breaker_consecutive_failures')::integer;
    window_length constant interval := make_interval(secs => switchyard.setting('breaker_window_seconds')::double precision);
BEGIN
    FOR report IN
        SELECT * FROM jsonb_to_recordset(p_reports) AS r(
            model text, requests integer, failures integer, had_success boolean, trailing_failures integer,
            latency_mean_ms double precision, latency_p95_ms double precision, mark_unhealthy text)
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
        health.consecutive_failures := CASE
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
            ELSIF health.window_requests >= min_requests
                  AND health.window_failures::double precision / health.window_requests > error_rate THEN
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

-- What workers refresh: every model's breaker as of now, and how many workers are alive (to
-- split per-model rate budgets between them).
CREATE VIEW switchyard.fleet_health AS
SELECT h.model,
       switchyard.effective_breaker(h.state, h.opened_at) AS state,
       h.reason, h.opened_at, h.consecutive_failures, h.window_requests, h.window_failures,
       h.latency_ewma_ms, h.latency_p95_ms, h.total_requests, h.total_failures, h.updated_at
FROM switchyard.model_health h;
