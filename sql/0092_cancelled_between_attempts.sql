-- A job cancelled between its attempts says which one it did not start.
--
-- A queued job cancelled read "cancelled before it started" even when an attempt had run and
-- failed and the job waited for its next (a review's: its trail held the failed call). It now
-- reads "cancelled before attempt 2 could start", as a deadline that passes so reads "its
-- deadline, …, passed before attempt 2 could start" (0026). A job that never ran, or that went
-- back without spending an attempt (a price window, a wait for a model), still reads "cancelled
-- before it started". cancel is 0087's, cancel_tenant_jobs 0088's, each with the message.

SET LOCAL ROLE switchyard_admin;

-- What a queued job cancelled after p_attempts attempts says.
CREATE FUNCTION switchyard.cancelled_before(p_attempts integer) RETURNS text
    LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN coalesce(p_attempts, 0) = 0 THEN 'cancelled before it started'
                ELSE format('cancelled before attempt %s could start', p_attempts + 1) END
$$;
REVOKE ALL ON FUNCTION switchyard.cancelled_before(integer) FROM PUBLIC;

CREATE OR REPLACE FUNCTION switchyard.cancel(job_id bigint) RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    everyone constant boolean := switchyard.is_unrestricted(switchyard.session_role());
    tenants constant text[] := CASE WHEN everyone THEN '{}' ELSE switchyard.visible_tenants() END;
    job switchyard.jobs;
    live boolean;
    finished text;
BEGIN
    SELECT * INTO job FROM switchyard.jobs j WHERE j.id = cancel.job_id AND (everyone OR j.tenant = ANY (tenants));
    live := FOUND;
    IF live AND job.lease_owner IS NULL THEN
        -- Queued: ended here (its row locked; a claim skips it meanwhile), unless a worker
        -- claimed it since the read above.
        SELECT * INTO job FROM switchyard.jobs j WHERE j.id = cancel.job_id AND j.lease_owner IS NULL FOR UPDATE;
        IF FOUND THEN
            PERFORM switchyard.archive(job, 'cancelled',
                jsonb_build_object('code', 'cancelled', 'message', switchyard.cancelled_before(job.attempt)), '[]');
            RETURN 'cancelled';
        END IF;
        live := EXISTS (SELECT FROM switchyard.jobs j WHERE j.id = cancel.job_id);
    END IF;
    IF live THEN
        -- Running: its worker is asked (at its next heartbeat), through a row of its own.
        INSERT INTO switchyard.cancel_requests (job_id) VALUES (cancel.job_id) ON CONFLICT DO NOTHING;
        RETURN 'cancelling';
    END IF;
    SELECT r.status INTO finished FROM switchyard.results r
    WHERE r.job_id = cancel.job_id AND (everyone OR r.tenant = ANY (tenants));
    RETURN coalesce(finished, 'not_found');
END $$;

CREATE OR REPLACE FUNCTION switchyard.cancel_tenant_jobs(p_tenant text, OUT cancelled bigint, OUT cancelling bigint)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
BEGIN
    -- A job a claim holds is waited for and read again: claimed, it is left to the next statement.
    WITH gone AS (
        DELETE FROM switchyard.jobs j WHERE j.tenant = p_tenant AND j.lease_owner IS NULL RETURNING j.*
    )
    INSERT INTO switchyard.results
        (job_id, status, priority, task_class, affinity_key, tenant, request, error, attempts, attempt_count,
         created_at, started_at, worker, retry_of, metadata)
    SELECT g.id, 'cancelled', g.priority, g.task_class, g.affinity_key, g.tenant, g.request,
           jsonb_build_object('code', 'cancelled',
                              'message', format('%s, with every job of tenant %s', switchyard.cancelled_before(g.attempt),
                                                p_tenant)),
           g.attempts, g.attempt, g.created_at, g.claimed_at, g.lease_owner, g.retry_of, g.metadata
    FROM gone g;
    GET DIAGNOSTICS cancelled = ROW_COUNT;
    WITH running AS (
        SELECT j.id FROM switchyard.jobs j WHERE j.tenant = p_tenant AND j.lease_owner IS NOT NULL
    ), asked AS (
        INSERT INTO switchyard.cancel_requests (job_id) SELECT r.id FROM running r ON CONFLICT DO NOTHING
    )
    SELECT count(*) INTO cancelling FROM running;
END $$;
