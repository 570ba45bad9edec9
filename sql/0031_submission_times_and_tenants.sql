-- Submissions: times a worker can read, deadlines in the future, no reserved or empty tenant.
--
-- A run_at before Christ (or '-infinity') was accepted, and the claim that leased it failed to
-- decode it: the worker retried the claim, and every job claimed with it (any tenant's) sat
-- leased until its lease ran out, an attempt lost (a job on its last attempt failed). 'infinity'
-- left a job scheduled forever. A deadline after run_at but already past (run_at given in the
-- past) was accepted, and the job expired at once; with run_at left out the same deadline was
-- refused. An admin could submit for tenant '*', which is reserved; tenant '' shared the
-- idempotency keys of jobs with no tenant. A key of retry()'s form (switchyard:retry-of:ID) made
-- a later retry(ID) answer with the unrelated job that took it.
--
-- jobs_before_insert is 0007's with these checks added. (A second trigger for them cost bulk
-- inserts 5-9%: a trigger call per row.)

SET LOCAL ROLE switchyard_admin;

CREATE OR REPLACE FUNCTION switchyard.jobs_before_insert() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
BEGIN
    IF NEW.priority IS NULL OR NEW.priority NOT IN ('interactive', 'background') THEN
        PERFORM switchyard.reject(
            format('priority must be interactive or background (got %s)',
                   coalesce(quote_literal(left(NEW.priority, 40)), 'NULL')),
            'Use interactive when a person waits for the answer, background for batch work.');
    END IF;
    PERFORM switchyard.check_request(NEW.request);
    IF NEW.max_attempts IS NULL OR NEW.max_attempts NOT BETWEEN 1 AND 100 THEN
        PERFORM switchyard.reject(
            format('max_attempts must be between 1 and 100 (got %s)', coalesce(NEW.max_attempts::text, 'NULL')),
            'Leave it out for the default of 3.');
    END IF;
    NEW.run_at := coalesce(NEW.run_at, now());
    -- A time a worker can read back (no BC, no infinity): one it could not broke the claim that
    -- leased it, and every job claimed with it sat leased until its lease ran out.
    IF NEW.run_at < '1900-01-01' OR NEW.run_at >= '9000-01-01' THEN
        PERFORM switchyard.reject(
            format('run_at must be between the years 1900 and 8999 (got %s)', NEW.run_at),
            'Leave run_at out to run the job now, or give the time it may start, e.g. now() + interval ''1 hour''.');
    END IF;
    IF NEW.deadline IS NOT NULL AND NEW.deadline <= NEW.run_at THEN
        PERFORM switchyard.reject(
            format('deadline (%s) must be after run_at (%s)', NEW.deadline, NEW.run_at),
            'Give a deadline in the future, or leave it out.');
    END IF;
    -- After a run_at in the past, but already past itself: the job could only expire.
    IF NEW.deadline <= now() OR NEW.deadline >= '9000-01-01' THEN
        PERFORM switchyard.reject(
            format('deadline (%s) must be in the future, before the year 9000', NEW.deadline),
            'Give a deadline in the future, or leave it out.');
    END IF;
    IF NEW.metadata IS NULL OR jsonb_typeof(NEW.metadata) <> 'object' THEN
        PERFORM switchyard.reject('metadata must be a JSON object', 'Leave it out, or pass e.g. {"team":"search"}.');
    END IF;
    -- Most jobs carry no metadata: the limit is read only for those that do.
    IF NEW.metadata <> '{}'
       AND octet_length(NEW.metadata::text) > coalesce(switchyard.setting('max_metadata_bytes'), '65536')::bigint THEN
        PERFORM switchyard.reject(
            format('metadata is %s bytes, over the limit of %s bytes', octet_length(NEW.metadata::text),
                   switchyard.setting('max_metadata_bytes')),
            'Keep metadata to identifiers (store big things elsewhere), or raise the limit: UPDATE '
                || 'switchyard.settings SET value = ''<bytes>'' WHERE name = ''max_metadata_bytes''.');
    END IF;
    IF length(NEW.task_class) > 100 OR length(NEW.affinity_key) > 500 OR length(NEW.tenant) > 200
       OR length(NEW.idempotency_key) > 500 THEN
        PERFORM switchyard.reject(
            'task_class, affinity_key, tenant and idempotency_key are limited to 100, 500, 200 and 500 characters',
            'Use shorter identifiers (hash long ones).');
    END IF;
    -- The prefix is Switchyard's: retry() keys its retries switchyard:retry-of:ID, and a job of the
    -- same key would be taken for the retry of ID.
    IF NEW.idempotency_key LIKE 'switchyard:%'
       AND NEW.idempotency_key IS DISTINCT FROM 'switchyard:retry-of:' || NEW.retry_of THEN
        PERFORM switchyard.reject('idempotency keys starting with switchyard: are reserved for Switchyard''s own',
                                  'Use another prefix for your keys.');
    END IF;
    -- The tenant comes from the session (and is checked against the role), never just from the row.
    NEW.tenant := switchyard.job_tenant(NEW.tenant);
    -- Even an admin's: '*' maps a role to every tenant, and '' would share the idempotency keys of
    -- jobs with no tenant.
    IF NEW.tenant = '*' THEN
        PERFORM switchyard.reject('tenant ''*'' is reserved (it maps a role to every tenant)', 'Name a real tenant.');
    END IF;
    IF NEW.tenant = '' THEN
        PERFORM switchyard.reject('tenant must not be empty', 'Leave the tenant out for a job of no tenant, or name one.');
    END IF;
    -- A new job starts clean, whatever the INSERT said about its run state.
    NEW.attempt := 0;
    NEW.lease_owner := NULL;
    NEW.lease_expires_at := NULL;
    NEW.claimed_at := NULL;
    NEW.cancel_requested := false;
    NEW.attempts := '[]';
    NEW.created_at := now();
    IF NEW.idempotency_key IS NOT NULL THEN
        INSERT INTO switchyard.idempotency_keys (tenant, key, job_id)
        VALUES (coalesce(NEW.tenant, ''), NEW.idempotency_key, NEW.id)
        ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            RETURN NULL;  -- the key is taken: this is a repeat of an earlier submission
        END IF;
    END IF;
    RETURN NEW;
END $$;
