-- Whether alerts are being evaluated, kept where `dispatcher status` can say it.
--
-- A chaos review set a tight statement_timeout: every evaluation was cancelled, and the only
-- trace was `could not evaluate alerts` in the elected worker's log every 15 s. Alerts neither
-- raised nor cleared meanwhile (an open one stayed open however the model did), and status
-- showed "none open" as if all were well. The housekeeper now notes each evaluation's outcome in
-- its row: the last success, and while evaluations fail, since when and the last error.

SET LOCAL ROLE switchyard_admin;

ALTER TABLE switchyard.housekeeper
    ADD COLUMN alerts_evaluated_at timestamptz,
    ADD COLUMN alerts_failing_since timestamptz,
    ADD COLUMN alerts_error text;

COMMENT ON COLUMN switchyard.housekeeper.alerts_evaluated_at IS 'The last alert evaluation that succeeded.';
COMMENT ON COLUMN switchyard.housekeeper.alerts_failing_since IS
    'While alert evaluations fail: when the first of them failed (NULL once one succeeds).';
COMMENT ON COLUMN switchyard.housekeeper.alerts_error IS 'While alert evaluations fail: the last one''s error.';

-- Notes the outcome of p_worker's alert evaluation: p_error NULL for a success. Only the holder's
-- note is kept (a worker that lost its tenure mid-evaluation says nothing about the fleet's).
CREATE FUNCTION switchyard.note_alert_evaluation(p_worker text, p_error text) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
    UPDATE switchyard.housekeeper h
    SET alerts_evaluated_at = CASE WHEN p_error IS NULL THEN now() ELSE h.alerts_evaluated_at END,
        alerts_failing_since = CASE WHEN p_error IS NULL THEN NULL ELSE coalesce(h.alerts_failing_since, now()) END,
        alerts_error = left(p_error, 500)
    WHERE h.holder = p_worker
$$;

REVOKE ALL ON FUNCTION switchyard.note_alert_evaluation(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION switchyard.note_alert_evaluation(text, text) TO switchyard_worker;
