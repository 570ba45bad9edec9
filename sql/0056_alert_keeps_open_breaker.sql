-- An alert leaves a breaker that is open already as it is.
--
-- A realistic run degraded a model: its breaker's rate rule opened it ("failure rate 35.0% over
-- the last 20 requests"), and 4.6 s later the error-rate alert raised and opened it again,
-- replacing that reason with its own five-minute figure ("4.0% of 198 calls", healthy time
-- included) and restarting the open time. An alert now opens a breaker that is closed or
-- half-open (a half-open one's probes start counting afresh), and leaves an open one alone.
--
-- evaluate_alerts is 0006's otherwise (with 0007's SECURITY DEFINER and search_path).

SET LOCAL ROLE switchyard_admin;

CREATE OR REPLACE FUNCTION switchyard.evaluate_alerts(p_at timestamptz DEFAULT now())
    RETURNS TABLE (
        event text, alert_id bigint, kind text, subject text, value double precision, threshold double precision,
        message text, event_at timestamptz)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
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
                -- A breaker open already (the rate rule, failures in a row) keeps its reason and
                -- its time: the alert's five-minute figure replaced a sharper one and restarted
                -- the open time. A half-open one opens again, its probes' count starting afresh.
                INSERT INTO switchyard.model_health AS h (model, state, opened_at, reason)
                VALUES (measurement.subject, 'open', now(), left('alert: ' || measurement.message, 300))
                ON CONFLICT (model) DO UPDATE
                    SET state = 'open', opened_at = now(), reason = EXCLUDED.reason, updated_at = now()
                    WHERE switchyard.effective_breaker(h.state, h.opened_at) <> 'open';
                IF FOUND THEN
                    PERFORM pg_notify('switchyard_health', measurement.subject);
                END IF;
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
