-- A queued job whose deadline passes after it has run (it waits for a retry, or was put back)
-- ends 'expired' saying so: the message said "not started before its deadline" for a job whose
-- trail shows it ran. Otherwise the function is 0002's.

SET LOCAL ROLE switchyard_admin;

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
                'message', CASE WHEN job.attempt = 0 THEN format('not started before its deadline, %s', job.deadline)
                                ELSE format('its deadline, %s, passed before attempt %s could start', job.deadline,
                                            job.attempt + 1) END), '[]');
        expired := expired + 1;
    END LOOP;
    RETURN expired;
END $$;
