-- Two messages that read badly.
--
-- * feedback(NULL, 50) said "job  not found" (an integrator's walkthrough): a NULL id is refused
--   as such, as retry's is (0021). feedback is 0067's otherwise.
-- * An expired job's message gave its deadline as Postgres prints a timestamptz in the
--   housekeeper session's time zone ("2026-11-28 18:40:00.123456+00"); it is now UTC as a trail
--   gives times (2026-11-28T18:40:00.123456Z). expire_overdue is 0026's otherwise.

SET LOCAL ROLE switchyard_admin;

-- A time as a worker writes one in a trail: UTC, whatever the session's zone.
CREATE FUNCTION switchyard.utc_text(p_at timestamptz) RETURNS text
    LANGUAGE sql STABLE AS $$
    SELECT to_char(p_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

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
    IF v_job_id IS NULL THEN
        PERFORM switchyard.reject('feedback needs a job id, got NULL', 'Pass the id of an answered job.');
    END IF;
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

CREATE OR REPLACE FUNCTION switchyard.expire_overdue(p_limit integer DEFAULT 1000) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    job switchyard.jobs;
    expired integer := 0;
BEGIN
    FOR job IN
        SELECT * FROM switchyard.jobs j
        WHERE j.lease_owner IS NULL AND j.deadline IS NOT NULL AND j.deadline <= now()
        ORDER BY j.deadline
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    LOOP
        PERFORM switchyard.archive(job, 'expired',
            jsonb_build_object('code', 'deadline_passed',
                'message', CASE WHEN job.attempt = 0 THEN format('not started before its deadline, %s', switchyard.utc_text(job.deadline))
                                ELSE format('its deadline, %s, passed before attempt %s could start', switchyard.utc_text(job.deadline),
                                            job.attempt + 1) END), '[]');
        expired := expired + 1;
    END LOOP;
    RETURN expired;
END $$;
