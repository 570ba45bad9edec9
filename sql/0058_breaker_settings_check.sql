-- The breaker's rate and window are held to what they mean, as the alert settings are.
--
-- A walkthrough of the docs set breaker_error_rate to '30' and breaker_window_seconds to '0', and
-- both were taken (any plain number was): a share of 30 never opens a breaker, and a window of
-- 0 s starts afresh at every report, so the rate rule never sees enough calls. The first is now a
-- fraction from 0 to 1 and the second a window of 1 s to a year, refused otherwise with the
-- alert settings' messages; values stored before that do not fit go back to their defaults, each
-- said in a warning. The boolean settings' hint said "in lower case" while TRUE is taken (and
-- stored as true).
--
-- setting_rule is 0053's with the two settings; setting_problem 0023's with the hint;
-- settings_before_write 0023's, leaving those two to setting_rule (and breaker_open_seconds's
-- message saying "seconds").

SET LOCAL ROLE switchyard_admin;

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
        ('breaker_error_rate', 'rate', false, '0.02'),
        ('breaker_half_open_successes', 'count', false, '5'),
        ('breaker_window_seconds', 'window', false, '60'),
        ('feedback_min_ratings', 'count', false, '5'),
        ('feedback_prior_weight', 'count', false, '20'),
        ('feedback_window_days', 'count', false, '30')
    ) AS r(name, kind, may_be_off, default_value)
    WHERE r.name = p_name
$$;

CREATE OR REPLACE FUNCTION switchyard.setting_problem(p_name text, p_value text, OUT message text, OUT hint text)
    LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    rule record;
    plain constant text := '^[0-9]{1,12}(\.[0-9]{1,12})?$';
    number numeric;
    off_text text;
BEGIN
    SELECT * INTO rule FROM switchyard.setting_rule(p_name);
    IF rule.kind IS NULL OR (rule.may_be_off AND p_value = 'off') THEN
        RETURN;
    END IF;
    off_text := CASE WHEN rule.may_be_off THEN ', or off to disable the rule' ELSE '' END;
    number := CASE WHEN p_value ~ plain THEN p_value::numeric END;
    IF rule.kind = 'rate' AND (number IS NULL OR number > 1) THEN
        message := format('setting %s must be a fraction from 0 to 1%s, got %L', p_name, off_text, p_value);
        hint := format('Write a plain number, e.g. %s for %s%%.', rule.default_value, (rule.default_value::numeric * 100)::float8);
    ELSIF rule.kind = 'limit' AND number IS NULL THEN
        message := format('setting %s must be a number of at least 0%s, got %L', p_name, off_text, p_value);
        hint := format('Write a plain number, e.g. %s.', rule.default_value);
    ELSIF rule.kind = 'window' AND (number IS NULL OR number < 1 OR number > 31536000) THEN
        message := format('setting %s must be a number of seconds from 1 to 31536000 (a year), got %L', p_name, p_value);
        hint := format('Write a plain number, e.g. %s.', rule.default_value);
    ELSIF rule.kind = 'count' AND p_value !~ '^[0-9]{1,9}$' THEN
        message := format('setting %s must be a whole number of at least 0%s, got %L', p_name, off_text, p_value);
        hint := format('Write digits only, e.g. %s.', rule.default_value);
    ELSIF rule.kind = 'boolean' AND p_value NOT IN ('true', 'false') THEN
        message := format('setting %s must be true or false, got %L', p_name, p_value);
        hint := 'Write true or false.';
    END IF;
END $$;

CREATE OR REPLACE FUNCTION switchyard.settings_before_write() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    stored text;
    problem record;
BEGIN
    IF NEW.name IN ('breaker_consecutive_failures', 'breaker_min_requests', 'breaker_min_failures') THEN
        IF NEW.value !~ '^[0-9]{1,9}$' THEN
            PERFORM switchyard.reject(format('setting %s must be a whole number, got %L', NEW.name, NEW.value),
                                      'Write digits only, e.g. 5.');
        END IF;
    ELSIF NEW.name = 'breaker_open_seconds' THEN
        IF NEW.value !~ '^[0-9]{1,12}(\.[0-9]{1,12})?$' THEN
            PERFORM switchyard.reject(format('setting %s must be a number of seconds of at least 0, got %L', NEW.name, NEW.value),
                                      'Write a plain number, e.g. 30.');
        END IF;
    ELSIF NEW.name IN ('background_escalation_seconds', 'background_max_cost_per_1k') THEN
        IF NEW.value <> '' AND NEW.value !~ '^[0-9]{1,12}(\.[0-9]{1,12})?$' THEN
            PERFORM switchyard.reject(
                format('setting %s must be a number of at least 0, or empty for none, got %L', NEW.name, NEW.value),
                'Write a plain number, e.g. 0.0005, or '''' for none (dispatcher background ceiling sets it for you).');
        END IF;
    ELSIF NEW.name = 'background_drain_until' THEN
        stored := switchyard.drain_until_text(NEW.value);
        IF stored IS NULL THEN
            PERFORM switchyard.reject(
                format('setting background_drain_until must be a time between the years 1 and 9999 (or infinity), '
                       'or empty for none, got %L', NEW.value),
                'Write a time such as 2026-11-27T06:00:00Z (stored in UTC), or use dispatcher background drain '
                    '--until 2h; infinity drains with no end.');
        END IF;
        NEW.value := stored;
    ELSIF NEW.name = 'background_paused' AND NEW.value NOT IN ('true', 'false') THEN
        PERFORM switchyard.reject(format('setting background_paused must be true or false, got %L', NEW.value),
                                  'Use dispatcher background pause or resume.');
    ELSIF (switchyard.setting_rule(NEW.name)).kind IS NOT NULL THEN
        IF lower(btrim(NEW.value)) IN ('off', 'true', 'false') THEN
            NEW.value := lower(btrim(NEW.value));
        END IF;
        problem := switchyard.setting_problem(NEW.name, NEW.value);
        IF problem.message IS NOT NULL THEN
            PERFORM switchyard.reject(problem.message, problem.hint);
        END IF;
    END IF;
    RETURN NEW;
END $$;

DO $$
DECLARE
    setting record;
BEGIN
    FOR setting IN
        SELECT s.name, s.value, (switchyard.setting_rule(s.name)).default_value AS default_value
        FROM switchyard.settings s
        WHERE s.name IN ('breaker_error_rate', 'breaker_window_seconds')
          AND (switchyard.setting_problem(s.name, s.value)).message IS NOT NULL
    LOOP
        RAISE WARNING '%: set back to its default %',
            (switchyard.setting_problem(setting.name, setting.value)).message, setting.default_value;
        UPDATE switchyard.settings SET value = setting.default_value WHERE name = setting.name;
    END LOOP;
END $$;
