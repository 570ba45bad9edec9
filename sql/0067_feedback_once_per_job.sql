-- A job's answer has one rating: rating it again replaces the earlier one. And workers hear of a
-- rating changed or removed, as of one added.
--
-- * feedback() inserted a row per call: a walkthrough's application rated one answer 0 three
--   hundred times in 0.39 s, and that one job of one tenant took claude-sonnet out of every
--   tenant's `code` rule (the blend counts each row as a user's rating; the quality floor then
--   kept the model out). A rating is now one per job (job_id is unique): rating it again
--   replaces the score and the note, and counts from then in feedback_window_days. Where a job
--   had several ratings, the latest stays.
-- * The workers were told to reload the catalog only when ratings were added: an operator who
--   deleted the 300 ratings saw `models list` come back at once while the workers kept the
--   blend they had (they reload on the notification). An update, a delete or a truncate now
--   notifies too.

SET LOCAL ROLE switchyard_admin;

-- A rating committed between the clean-up and the constraint would make the constraint fail.
LOCK TABLE switchyard.feedback IN SHARE ROW EXCLUSIVE MODE;

DELETE FROM switchyard.feedback f
WHERE EXISTS (SELECT 1 FROM switchyard.feedback later
              WHERE later.job_id = f.job_id AND (later.created_at, later.id) > (f.created_at, f.id));

ALTER TABLE switchyard.feedback ADD CONSTRAINT feedback_job_key UNIQUE (job_id);

-- Rates a finished job's answer (0007), once: a second rating of the same job replaces the first
-- (same id). Only a job the caller's tenants own.
CREATE OR REPLACE FUNCTION switchyard.feedback(job_id bigint, score numeric, note text DEFAULT NULL) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    v_job_id constant bigint := feedback.job_id;
    v_score constant numeric := feedback.score;
    v_note constant text := feedback.note;
    everyone constant boolean := switchyard.is_unrestricted(switchyard.session_role());
    tenants constant text[] := CASE WHEN everyone THEN '{}' ELSE switchyard.visible_tenants() END;
    answered switchyard.results;
    new_id bigint;
BEGIN
    IF v_score IS NULL OR v_score < 0 OR v_score > 100 THEN
        PERFORM switchyard.reject(
            format('score must be between 0 and 100 (got %s)', coalesce(trim_scale(v_score)::text, 'NULL')),
            'Rate on a 0-100 scale, 100 best; for stars, 4 of 5 is 80.');
    END IF;
    IF length(v_note) > 2000 THEN
        PERFORM switchyard.reject(format('note is %s characters, over the limit of 2000', length(v_note)),
                                  'Shorten the note.');
    END IF;
    SELECT * INTO answered FROM switchyard.results r
    WHERE r.job_id = v_job_id AND (everyone OR r.tenant = ANY (tenants));
    IF NOT FOUND THEN
        IF EXISTS (SELECT 1 FROM switchyard.jobs j WHERE j.id = v_job_id AND (everyone OR j.tenant = ANY (tenants))) THEN
            PERFORM switchyard.reject(format('job %s has not finished yet', v_job_id),
                                      'Rate it once it has an answer (dispatcher wait ID).');
        END IF;
        RAISE EXCEPTION USING ERRCODE = 'P0002', MESSAGE = format('job %s not found', v_job_id),
            HINT = 'Check the id; results older than the retention period are pruned.';
    END IF;
    IF answered.model IS NULL THEN
        PERFORM switchyard.reject(format('job %s has no answer to rate: it ended %s', v_job_id, answered.status),
                                  'Only answered (succeeded) jobs can be rated.');
    END IF;
    INSERT INTO switchyard.feedback AS f (job_id, model, task_class, score, note)
    VALUES (v_job_id, answered.model, answered.task_class, v_score, v_note)
    ON CONFLICT ON CONSTRAINT feedback_job_key DO UPDATE SET score = excluded.score, note = excluded.note, created_at = now()
    RETURNING f.id INTO new_id;
    RETURN new_id;
END $$;

-- A rating changed counts as one added (notify_feedback, 0006: when its model and class have
-- enough ratings to move the blend).
CREATE TRIGGER feedback_notify_update AFTER UPDATE ON switchyard.feedback
    REFERENCING NEW TABLE AS rated
    FOR EACH STATEMENT EXECUTE FUNCTION switchyard.notify_feedback();

-- Ratings removed may take a model and class below feedback_min_ratings, back to the catalog's
-- own score: workers are told whenever any go.
CREATE FUNCTION switchyard.notify_feedback_removed() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM removed) THEN
        PERFORM pg_notify('switchyard_catalog', 'feedback');
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER feedback_notify_delete AFTER DELETE ON switchyard.feedback
    REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION switchyard.notify_feedback_removed();

-- TRUNCATE has no transition table: it removed every rating, if any.
CREATE FUNCTION switchyard.notify_feedback_truncated() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('switchyard_catalog', 'feedback');
    RETURN NULL;
END $$;

CREATE TRIGGER feedback_notify_truncate AFTER TRUNCATE ON switchyard.feedback
    FOR EACH STATEMENT EXECUTE FUNCTION switchyard.notify_feedback_truncated();

REVOKE ALL ON FUNCTION switchyard.notify_feedback_removed(), switchyard.notify_feedback_truncated() FROM PUBLIC;
