-- Settings are text, cast where they are read, and some are read on every claim or health
-- report: one hand-written `UPDATE switchyard.settings SET value = 'soon'` on
-- background_drain_until made every claim raise, and a breaker setting that is not a number
-- stopped every health report. A value is now checked when it is written, with what to write
-- instead; the limits of 0007 stay as they are.

SET LOCAL ROLE switchyard_admin;

CREATE FUNCTION switchyard.settings_before_write() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.name IN ('breaker_consecutive_failures', 'breaker_min_requests', 'breaker_min_failures') THEN
        IF NEW.value !~ '^[0-9]{1,9}$' THEN
            PERFORM switchyard.reject(format('setting %s must be a whole number, got %L', NEW.name, NEW.value),
                                      'Write digits only, e.g. 5.');
        END IF;
    ELSIF NEW.name IN ('breaker_error_rate', 'breaker_open_seconds', 'breaker_window_seconds') THEN
        IF NEW.value !~ '^[0-9]{1,12}(\.[0-9]{1,12})?$' THEN
            PERFORM switchyard.reject(format('setting %s must be a number of at least 0, got %L', NEW.name, NEW.value),
                                      'Write a plain number, e.g. 0.02 or 30.');
        END IF;
    ELSIF NEW.name IN ('background_escalation_seconds', 'background_max_cost_per_1k') THEN
        IF NEW.value <> '' AND NEW.value !~ '^[0-9]{1,12}(\.[0-9]{1,12})?$' THEN
            PERFORM switchyard.reject(
                format('setting %s must be a number of at least 0, or empty for none, got %L', NEW.name, NEW.value),
                'Write a plain number, e.g. 0.0005, or '''' for none (dispatcher background ceiling sets it for you).');
        END IF;
    ELSIF NEW.name = 'background_drain_until' AND NEW.value <> '' THEN
        BEGIN
            PERFORM NEW.value::timestamptz;
        EXCEPTION WHEN data_exception THEN
            PERFORM switchyard.reject(
                format('setting background_drain_until must be a time, or empty for none, got %L', NEW.value),
                'Write an ISO 8601 time such as 2026-11-27T06:00:00Z, or use dispatcher background drain --until 2h.');
        END;
    ELSIF NEW.name = 'background_paused' AND NEW.value NOT IN ('true', 'false') THEN
        PERFORM switchyard.reject(format('setting background_paused must be true or false, got %L', NEW.value),
                                  'Use dispatcher background pause or resume.');
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER settings_before_write BEFORE INSERT OR UPDATE ON switchyard.settings
    FOR EACH ROW EXECUTE FUNCTION switchyard.settings_before_write();
