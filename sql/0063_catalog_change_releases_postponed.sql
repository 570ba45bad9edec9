-- A catalog change puts the postponed background jobs back in the queue, as a settings change does.
--
-- A worker that finds no model of a job's rule within the background ceiling puts the job off
-- until one is (a cheap window), or for an hour when none ever is. 0020 releases those jobs when
-- a background setting may let them run; a catalog change did not: a cost walkthrough raised its
-- rule's own ceiling (settings.background_max_cost_per_1k, as the job's reason told it to) and
-- moved a model's off-peak window to now, and `route --explain` said "runs now" of jobs that went
-- on waiting an hour with the old reason, missing the whole window. Now an import that changes a
-- model or a rule (a new model, a price, a window, a rule's ceiling or models) puts every postponed
-- background job back in the queue at once, to be planned again (an import that changes nothing
-- writes nothing, and leaves them). A postponement a worker decided under the catalog it had just
-- before the import and writes after it is kept until its time, as before (workers reload the
-- catalog within moments of the import's NOTIFY).

SET LOCAL ROLE switchyard_admin;

CREATE FUNCTION switchyard.release_postponed_for_catalog() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    released integer;
BEGIN
    -- Ordered against complete() postponing jobs, as 0020's release is.
    PERFORM pg_advisory_xact_lock(6005366778061868105);  -- 'SWYDPOLI'
    UPDATE switchyard.jobs_background j SET run_at = now(), postponed_at = NULL, waiting_reason = NULL
    WHERE j.postponed_at IS NOT NULL AND j.lease_owner IS NULL AND j.run_at > now();
    GET DIAGNOSTICS released = ROW_COUNT;
    IF released > 0 THEN
        PERFORM pg_notify('switchyard_jobs', '');
    END IF;
    RETURN NULL;
END $$;

-- dispatcher models import writes only the models and rules that changed.
CREATE TRIGGER models_release_postponed AFTER INSERT OR UPDATE ON switchyard.models
    FOR EACH STATEMENT EXECUTE FUNCTION switchyard.release_postponed_for_catalog();
CREATE TRIGGER routes_release_postponed AFTER INSERT OR UPDATE ON switchyard.routes
    FOR EACH STATEMENT EXECUTE FUNCTION switchyard.release_postponed_for_catalog();
