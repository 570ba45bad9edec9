-- A catalog change that may let postponed background jobs run puts them back in the queue, as a
-- settings change does; and a postponement decided under the catalog before it is not kept.
--
-- A worker that finds no model of a job's rule within the background ceiling puts the job off
-- until one is (a cheap window), or for an hour when none ever is. 0020 releases those jobs when
-- a background setting may let them run; a catalog change did not: a cost walkthrough raised its
-- rule's own ceiling (settings.background_max_cost_per_1k, as the job's reason told it to) and
-- moved a model's off-peak window to now, and `route --explain` said "runs now" of jobs that went
-- on waiting an hour with the old reason, missing the whole window. Now:
--   - a model added or enabled, a price lowered, its windows, tier, scores or context window
--     changed, or a rule's models, ceilings, floor or settings changed, or a rule removed, put
--     every postponed background job back in the queue,
--     once per transaction (an import writes one statement per changed model and rule; a review's
--     import of 17 changes updated 300,000 postponed jobs 17 times over). A change that cannot let
--     a job run sooner (a price raised, a base_url fixed, a model disabled) leaves them;
--   - background_policy_version() also covers the catalog (its rows' last update and count), and
--     workers read it again with the catalog: a released job claimed by a worker that had not yet
--     reloaded the catalog, and put off under the old one, is sent back at once by complete(), as
--     a postponement decided under old settings is (a review saw 6 of 10 released jobs put off for
--     another hour that way).

SET LOCAL ROLE switchyard_admin;

CREATE OR REPLACE FUNCTION switchyard.background_policy_version() RETURNS text
    LANGUAGE sql STABLE SET search_path = pg_catalog, switchyard, pg_temp AS $$
    SELECT md5(coalesce((SELECT string_agg(s.name || '=' || s.value, E'\n' ORDER BY s.name)
                         FROM switchyard.settings s WHERE s.name LIKE 'background\_%'), '')
               || E'\ncatalog=' || coalesce((SELECT max(m.updated_at)::text || '/' || count(*) FROM switchyard.models m), '')
               || '/' || coalesce((SELECT max(r.updated_at)::text || '/' || count(*) FROM switchyard.routes r), ''))
$$;

CREATE FUNCTION switchyard.release_postponed_for_catalog() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    released integer;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF TG_TABLE_NAME = 'models' THEN
            IF NOT ((NEW.enabled AND NOT OLD.enabled)
                    OR NEW.price_per_1k_input < OLD.price_per_1k_input
                    OR NEW.price_per_1k_output < OLD.price_per_1k_output
                    OR NEW.price_windows IS DISTINCT FROM OLD.price_windows
                    OR NEW.tier IS DISTINCT FROM OLD.tier
                    -- A score over a rule's quality floor, a window that now fits the request.
                    OR NEW.capabilities IS DISTINCT FROM OLD.capabilities
                    OR NEW.context_window IS DISTINCT FROM OLD.context_window) THEN
                RETURN NULL;
            END IF;
        ELSIF NOT (NEW.primary_model IS DISTINCT FROM OLD.primary_model
                   OR NEW.fallbacks IS DISTINCT FROM OLD.fallbacks
                   OR NEW.max_cost_per_1k IS DISTINCT FROM OLD.max_cost_per_1k
                   OR NEW.quality_floor IS DISTINCT FROM OLD.quality_floor
                   -- Its own ceiling, the classes it serves, its strategy's settings.
                   OR NEW.settings IS DISTINCT FROM OLD.settings) THEN
            RETURN NULL;
        END IF;
    END IF;
    -- Once per transaction.
    IF current_setting('switchyard.catalog_released_in', true) = txid_current()::text THEN
        RETURN NULL;
    END IF;
    PERFORM set_config('switchyard.catalog_released_in', txid_current()::text, true);
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

CREATE TRIGGER models_release_postponed AFTER INSERT OR UPDATE ON switchyard.models
    FOR EACH ROW EXECUTE FUNCTION switchyard.release_postponed_for_catalog();
-- A rule removed: its classes fall to another rule (default).
CREATE TRIGGER routes_release_postponed AFTER INSERT OR UPDATE OR DELETE ON switchyard.routes
    FOR EACH ROW EXECUTE FUNCTION switchyard.release_postponed_for_catalog();

-- The version reads the rows' updated_at: kept by the tables themselves, so an operator's UPDATE
-- without it (a review's price cut by hand) changes the version as an import does.
CREATE FUNCTION switchyard.catalog_row_updated() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END $$;

CREATE TRIGGER models_updated_at BEFORE UPDATE ON switchyard.models
    FOR EACH ROW EXECUTE FUNCTION switchyard.catalog_row_updated();
CREATE TRIGGER routes_updated_at BEFORE UPDATE ON switchyard.routes
    FOR EACH ROW EXECUTE FUNCTION switchyard.catalog_row_updated();
