-- A provider's refusal of one worker (HTTP 401 or 403: its key, its address, its account) is that
-- worker's; the fleet's breaker opens only once every live worker has been refused.
--
-- A 401 or 403 opened the model's breaker for the whole fleet at once (a key revoked fails every
-- worker alike). One worker on a stale key (a key rotated on some machines and not yet on the
-- others, an address not on the provider's allowlist) so took the model out for every worker,
-- whose keys were good; after breaker_open_seconds a good worker's probes closed it, and the stale
-- worker's next call opened it again. Now the refused worker skips the model itself for
-- breaker_open_seconds (status names it: "w-2 skips gpt-4o: its key was refused …"), then tries
-- it again (one call), and reports the refusal with its name; report_health keeps each refused
-- worker in model_health.refused_by ({"w-2": {"at": …, "reason": …}}) while it is alive and its
-- refusal is under twice breaker_open_seconds old, and takes it off at its next answered call.
-- When every live worker is in it (but those that skip the model for good, their key missing:
-- they never call it), the breaker opens, as it did: with the worker's reason when there is one
-- worker, "every live worker was refused (3 workers); the last: worker w-3's key was refused: HTTP
-- 401 …" when there are more. A report that names no worker (a worker from before this) opens it
-- at once, as before. Workers record such a call's outcome as "refused", which is_model_error does
-- not count: one worker's refusals raised the error-rate alert, which opened the breaker.
--
-- And a breaker opened by hand (UPDATE switchyard.model_health SET state = 'open' …, leaving
-- opened_at as it was) is opened now: one never opened before kept a NULL opened_at and never
-- half-opened, one opened before half-opened at once, on its last opening's time.
--
-- report_health is 0089's with the refused workers; model_health_unhealthy_since 0073's with the
-- opening by hand.

SET LOCAL ROLE switchyard_admin;

ALTER TABLE switchyard.model_health ADD COLUMN refused_by jsonb NOT NULL DEFAULT '{}';

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
    stranded text;
    refused jsonb;
    refusers integer;
    live_unrefused integer;
    error_rate constant double precision := switchyard.setting('breaker_error_rate')::double precision;
    consecutive_limit constant integer := switchyard.setting('breaker_consecutive_failures')::integer;
    window_length constant interval := make_interval(secs => switchyard.setting('breaker_window_seconds')::double precision);
    probes_needed constant integer := greatest(coalesce(switchyard.setting('breaker_half_open_successes')::integer, 5), 1);
    -- A worker refused tries the model again after breaker_open_seconds; its refusal is kept for
    -- twice that, so one still refused is counted until it has tried again.
    refusal_kept constant interval := 2 * make_interval(secs => switchyard.setting('breaker_open_seconds')::double precision);
BEGIN
    -- Every model's row locked first, in name order (a fixed lock order: two workers' batches never
    -- deadlock); then the batch is folded in worst first, so that a model failing every call is
    -- open before the others of its rule are judged: folded by name, a rule's primary failing 30%
    -- of its calls was opened by the error-rate rule while its dead fallback, later in the batch,
    -- still read as healthy, and both were out (a review's 3,376 jobs failed; named the other way
    -- round, 109).
    INSERT INTO switchyard.model_health AS h (model)
    SELECT DISTINCT r.model FROM jsonb_to_recordset(p_reports) AS r(model text) ORDER BY r.model
    ON CONFLICT (model) DO NOTHING;
    PERFORM FROM switchyard.model_health h
    WHERE h.model IN (SELECT r.model FROM jsonb_to_recordset(p_reports) AS r(model text))
    ORDER BY h.model
    FOR UPDATE;
    FOR report IN
        SELECT * FROM jsonb_to_recordset(p_reports) AS r(
            model text, requests integer, failures integer, had_success boolean, trailing_failures integer,
            latency_mean_ms double precision, latency_p95_ms double precision, mark_unhealthy text,
            failures_in_a_row integer, worker text, refused text)
        ORDER BY r.mark_unhealthy IS NULL AND r.refused IS NULL,
                 coalesce(r.failures, 0)::double precision / greatest(coalesce(r.requests, 0), 1) DESC, r.model
    LOOP
        SELECT * INTO health FROM switchyard.model_health h WHERE h.model = report.model;
        stranded := NULL;
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

        -- Workers whose key (or address, or account) the provider refused: kept while they are
        -- alive and their refusal recent; a worker's answered call takes it off.
        refused := health.refused_by;
        live_unrefused := NULL;
        IF report.worker IS NOT NULL AND coalesce(report.had_success, false) THEN
            refused := refused - report.worker;
        END IF;
        IF refused <> '{}' THEN
            -- At every report on the model, not only at a refusal: a stopped worker's refusal stayed
            -- listed minutes after its time.
            SELECT coalesce(jsonb_object_agg(e.key, e.value), '{}') INTO refused
            FROM jsonb_each(refused) e
            WHERE (e.value ->> 'at')::timestamptz > now() - refusal_kept
              AND EXISTS (SELECT FROM switchyard.workers w
                          WHERE w.id = e.key AND w.heartbeat_at > now() - interval '30 seconds');
        END IF;
        IF report.refused IS NOT NULL AND report.worker IS NULL THEN
            -- A worker that does not say who it is (one from before 0097): the fleet's, as it was.
            report.mark_unhealthy := report.refused;
        ELSIF report.refused IS NOT NULL THEN
            refused := refused || jsonb_build_object(report.worker,
                                                     jsonb_build_object('at', now(), 'reason', left(report.refused, 300)));
            -- Live workers that may yet call the model and have not been refused. Not one that
            -- skips it for good (its key missing from its environment, noted in skipped_models): it
            -- never calls the model, and a key revoked for every other worker opened no breaker.
            SELECT count(*) INTO live_unrefused FROM switchyard.workers w
            WHERE w.heartbeat_at > now() - interval '30 seconds' AND NOT refused ? w.id
              AND NOT w.skipped_models ? report.model;
        END IF;

        next_state := previous;
        next_reason := health.reason;
        IF report.mark_unhealthy IS NOT NULL THEN
            next_state := 'open';
            next_reason := left(report.mark_unhealthy, 300);
        ELSIF live_unrefused = 0 AND previous <> 'open' THEN
            -- One worker refused is that worker's to skip (a stale key, its address not let in):
            -- it does, for a while, and the other workers keep the model. Opened for the fleet
            -- only once every live worker has been refused (a key revoked fails them all alike):
            -- one worker on a stale key opened it for every worker, whose keys were good.
            next_state := 'open';
            refusers := (SELECT count(*) FROM jsonb_object_keys(refused));
            next_reason := left(CASE WHEN refusers = 1 THEN report.refused
                                     ELSE format('every live worker was refused (%s workers); the last: %s',
                                                 refusers, report.refused) END, 300);
        ELSIF previous = 'half_open' THEN
            -- The last healthy model of a rule answering most calls (opened by the error-rate rule
            -- before the others of its rule went out, or by a run of failures in a row) is let
            -- back at its first answered probe, and a failed probe leaves it half-open: five
            -- answered in a row, one time in six at 30% errors, kept a review's queue waiting
            -- minutes for a model that answered seven calls in ten.
            -- Not one that fails most calls, nor one that went on to four times the failures in a
            -- row (a model that died after a while of answers: its window's answers kept it
            -- half-open while each worker's probes failed, 860 of them in 15 s).
            IF health.consecutive_failures < 4 * consecutive_limit
               AND switchyard.rate_lower_bound(health.window_failures, health.window_requests) <= 0.5 THEN
                stranded := switchyard.last_healthy_model_of(report.model);
            END IF;
            IF coalesce(report.failures, 0) > 0 AND stranded IS NOT NULL THEN
                NULL;  -- still half-open
            ELSIF coalesce(report.failures, 0) > 0 THEN
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
                IF answered >= probes_needed OR stranded IS NOT NULL THEN
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
            IF health.consecutive_failures >= consecutive_limit
               OR switchyard.breaker_error_rate_exceeded(health.window_requests, health.window_failures) THEN
                stranded := switchyard.last_healthy_model_of(report.model);
            END IF;
            IF health.consecutive_failures >= consecutive_limit
               -- The last healthy model of a rule opens on failures in a row while it fails most
               -- of its calls in the window, with 95% confidence (5 of 5 is enough; 5 of 6 in a
               -- fresh window, which a model failing 45% of calls drew in 9 runs of 20, is not),
               -- or on four times as many in a row: a model answering half its calls draws 20 in a
               -- row about once in a million calls, and one that dies after a minute's answers is
               -- out within 20 calls, not once its failures outnumber the window's answers (a
               -- review's: 329 failures in a row, 62 jobs failed).
               AND (stranded IS NULL OR switchyard.rate_lower_bound(health.window_failures, health.window_requests) > 0.5
                    OR health.consecutive_failures >= 4 * consecutive_limit) THEN
                next_state := 'open';
                next_reason := format('%s failures in a row', health.consecutive_failures)
                               || CASE WHEN stranded IS NULL THEN ''
                                       ELSE format(' (%s of %s calls failed; the last healthy model of rule %s)',
                                                   health.window_failures, health.window_requests, stranded) END;
            ELSIF switchyard.breaker_error_rate_exceeded(health.window_requests, health.window_failures)
                  -- Not the last healthy model of a rule, as an alert leaves it: a model answering
                  -- most calls beats none.
                  AND stranded IS NULL
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
            refused_by = refused,
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

CREATE OR REPLACE FUNCTION switchyard.model_health_unhealthy_since() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    settle constant interval :=
        make_interval(secs => 2 * coalesce(switchyard.numeric_setting('breaker_open_seconds'), 30));
BEGIN
    -- Opened by a write that leaves opened_at as it was (an operator's "SET state = 'open'"): opened
    -- now. A breaker never opened before kept a NULL opened_at and never half-opened; one opened
    -- before half-opened at once, on its last opening's time.
    IF NEW.state = 'open' THEN
        IF TG_OP = 'INSERT' THEN
            NEW.opened_at := coalesce(NEW.opened_at, now());
        ELSIF OLD.state <> 'open' AND NEW.opened_at IS NOT DISTINCT FROM OLD.opened_at THEN
            NEW.opened_at := now();
        END IF;
    END IF;
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
