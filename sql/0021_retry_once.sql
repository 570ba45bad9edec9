-- retry() is idempotent: a job is retried once, and retrying it again returns that retry's id.
--
-- Each call made a new linked job, so a script that retries the failed jobs it finds (results
-- never change, so it finds the same ones on every run) paid for the same request again on
-- every run, even after a retry had succeeded. The retry now carries the idempotency key
-- 'switchyard:retry-of:ID' under the job's tenant (the submission's own mechanism, safe under
-- concurrent calls); if the retry fails as well, retrying it makes the next one. The function
-- is 0002's otherwise (and a NULL id is refused as such, not as "job  not found").

SET LOCAL ROLE switchyard_admin;

-- The retry made of a job, looked up under the tenant the caller may act for, as submit() looks
-- up a repeated key: retry() runs as its caller, and submitters may not read the keys.
CREATE FUNCTION switchyard.retry_made(p_job_id bigint, p_tenant text) RETURNS bigint
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
    SELECT k.job_id FROM switchyard.idempotency_keys k
    WHERE k.tenant = coalesce(switchyard.job_tenant(p_tenant), '') AND k.key = 'switchyard:retry-of:' || p_job_id
$$;

REVOKE ALL ON FUNCTION switchyard.retry_made(bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION switchyard.retry_made(bigint, text) TO switchyard_submitter;

CREATE OR REPLACE FUNCTION switchyard.retry(job_id bigint) RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    old switchyard.results;
    new_id bigint;
    retry_key constant text := 'switchyard:retry-of:' || retry.job_id;
BEGIN
    IF retry.job_id IS NULL THEN
        PERFORM switchyard.reject('retry needs a job id, got NULL', 'Pass the id of a failed, cancelled or expired job.');
    END IF;
    SELECT * INTO old FROM switchyard.results r WHERE r.job_id = retry.job_id;
    IF NOT FOUND THEN
        IF EXISTS (SELECT 1 FROM switchyard.jobs j WHERE j.id = retry.job_id) THEN
            PERFORM switchyard.reject(format('job %s has not finished yet', retry.job_id),
                'Wait for it (dispatcher wait ID), or cancel it first.');
        END IF;
        RAISE EXCEPTION USING ERRCODE = 'P0002', MESSAGE = format('job %s not found', retry.job_id),
            HINT = 'Check the id; results older than the retention period are pruned.';
    END IF;
    IF old.status = 'succeeded' THEN
        PERFORM switchyard.reject(format('job %s succeeded; only failed, cancelled or expired jobs are retried',
                                         retry.job_id), 'Submit a new job if you want another answer.');
    END IF;
    INSERT INTO switchyard.jobs AS j
        (request, priority, task_class, affinity_key, tenant, metadata, retry_of, idempotency_key)
    VALUES (old.request, old.priority, old.task_class, old.affinity_key, old.tenant, old.metadata, old.job_id,
            retry_key)
    RETURNING j.id INTO new_id;
    IF new_id IS NULL THEN
        -- Retried before: that job is its retry (if it failed too, retry that one).
        new_id := switchyard.retry_made(retry.job_id, old.tenant);
    END IF;
    RETURN new_id;
END $$;
