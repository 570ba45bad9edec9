-- Which of a worker's outcomes are already in switchyard.results: for the write-back that retries
-- a batch after losing the connection. The first try may have committed before the connection
-- went; the retry then finds those jobs gone, and the worker logged "result not written: this
-- worker no longer holds the job's lease" (and counted a rejected result) for results it had
-- written itself. Workers may not read results (they hold every tenant's answers), so this
-- answers only for the worker's own (job, attempt) pairs.

SET LOCAL ROLE switchyard_admin;

CREATE FUNCTION switchyard.results_written(p_worker text, p_ids bigint[], p_attempts integer[])
    RETURNS SETOF bigint
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
    SELECT r.job_id
    FROM switchyard.results r
    JOIN unnest(p_ids, p_attempts) AS x(id, attempt) ON r.job_id = x.id AND r.attempt_count = x.attempt
    WHERE r.job_id = ANY (p_ids) AND r.worker = p_worker
$$;

REVOKE ALL ON FUNCTION switchyard.results_written(text, bigint[], integer[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION switchyard.results_written(text, bigint[], integer[]) TO switchyard_worker;
