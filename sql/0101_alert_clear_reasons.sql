-- Alerts that clear with nothing measured say why: a disabled model, a backlog no longer at risk.
--
-- evaluate_alerts (0091's) cleared every alert nothing measured any more as "nothing left to
-- measure (no traffic in the window, or the rule is off)", but a tenant's budget alerts: an
-- operator's walkthrough read it of a breaker alert cleared by disabling its model (as
-- observability.md says it clears), and of the backlog's deadline alert once background work was
-- resumed and the job ran, and took it for monitoring gone quiet. evaluate_alerts is 0091's
-- otherwise.

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
    unmeasured text;
BEGIN
    -- One evaluation at a time: two housekeepers never raise the same alert twice.
    PERFORM FROM switchyard.locks l WHERE l.name = 'alerts' FOR UPDATE;
    -- In the order of their subjects (a subject's in the measurements' order): a model's breaker
    -- is opened under its row's lock, and a worker's health report locks its models' rows in name
    -- order (report_health); in the measurements' order (error rates, then latencies) an alert on
    -- beta's errors and one on alpha's latency, with a report on both between them, deadlocked.
    FOR measurement IN
        SELECT * FROM switchyard.alert_measurements(p_at) WITH ORDINALITY m ORDER BY m.subject, m.ordinality
    LOOP
        seen := seen || (measurement.kind || '/' || measurement.subject);
        SELECT * INTO existing FROM switchyard.alerts a
        WHERE a.kind = measurement.kind AND a.subject = measurement.subject AND a.cleared_at IS NULL;
        IF existing.id IS NULL AND measurement.breached THEN
            trips_breaker := opens_breaker AND measurement.kind IN ('error_rate', 'latency')
                             AND EXISTS (SELECT 1 FROM switchyard.models m WHERE m.name = measurement.subject);
            IF trips_breaker THEN
                -- An alert steers traffic away; it must not leave a rule with nowhere to go. Rules
                -- whose every other model is disabled, open or half-open (one probe at a time is no
                -- capacity) keep this one, as Envoy's panic mode does (the same test as the
                -- breaker's, last_healthy_model_of).
                stranded := switchyard.last_healthy_model_of(measurement.subject);
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
        -- A tenant's budget alerts are measured while it has a budget (removing it was read as
        -- "no traffic in the window": a review). A disabled model's, and the backlog's once no job
        -- is at risk, said so too: an operator's walkthrough read "no traffic in the window" of both.
        unmeasured := CASE
            WHEN existing.kind IN ('tenant_budget', 'tenant_budget_share')
            THEN format('%s %s: nothing left to measure (the tenant has no budget now, or the rule is off)',
                        existing.kind, existing.subject)
            WHEN existing.kind = 'backlog_deadlines'
            THEN format('%s %s: no queued background job would miss its deadline now', existing.kind,
                        existing.subject)
            WHEN EXISTS (SELECT FROM switchyard.models m WHERE m.name = existing.subject AND NOT m.enabled)
            THEN format('%s %s: the model is disabled (dispatcher models enable %s brings it back)', existing.kind,
                        existing.subject, existing.subject)
            ELSE format('%s %s: nothing left to measure (no traffic in the window, or the rule is off)',
                        existing.kind, existing.subject) END;
        UPDATE switchyard.alerts a
        SET cleared_at = p_at, last_evaluated_at = p_at, clear_message = unmeasured
        WHERE a.id = existing.id;
        event := 'cleared';
        alert_id := existing.id;
        kind := existing.kind;
        subject := existing.subject;
        value := existing.last_value;
        threshold := existing.threshold;
        message := unmeasured;
        event_at := p_at;
        PERFORM pg_notify('switchyard_alerts', json_build_object(
            'event', event, 'id', alert_id, 'kind', kind, 'subject', subject, 'value', value,
            'threshold', threshold, 'message', message, 'at', p_at)::text);
        RETURN NEXT;
    END LOOP;
END $$;
