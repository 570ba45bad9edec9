-- Which of a worker's outcomes are already in switchyard.results: for the write-back that retries
-- a batch after losing the connection. The first try may have committed before the connection
-- went; the retry then finds those jobs gone, and the worker logged "result not written: this
-- worker no longer holds the job's lease" (and counted a rejected result and a lost lease) for
-- results it had written itself. Workers may not read results (they hold every tenant's
-- answers): this says only which of the given job ids have a result of the given attempt,
-- worker, status and error code ('' for none; the housekeeper's rescue writes the lease owner's name too, so
-- the status and code tell its 'failed, lease_expired' from the worker's own outcome). Any
-- worker-role session may ask it, of any worker name; it learns job ids only. Only results of
-- the last two days are looked at (a retry follows its failed try within minutes).

SET LOCAL ROLE switchyard_admin;

CREATE FUNCTION switchyard.results_written(
    p_worker text, p_ids bigint[], p_attempts integer[], p_statuses text[], p_codes text[]
) RETURNS SETOF bigint
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
    SELECT r.job_id
    FROM switchyard.results r
    JOIN unnest(p_ids, p_attempts, p_statuses, p_codes) AS x(id, attempt, status, code)
        ON r.job_id = x.id AND r.attempt_count = x.attempt AND r.status = x.status
           AND coalesce(r.error ->> 'code', '') = x.code
    WHERE r.job_id = ANY (p_ids) AND r.worker = p_worker AND r.finished_at > now() - interval '2 days'
$$;

REVOKE ALL ON FUNCTION switchyard.results_written(text, bigint[], integer[], text[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION switchyard.results_written(text, bigint[], integer[], text[], text[]) TO switchyard_worker;
