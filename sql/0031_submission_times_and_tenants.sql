-- Submissions: times a worker can read, deadlines in the future, no reserved or empty tenant.
--
-- A run_at before Christ (or '-infinity') was accepted, and the claim that leased it failed to
-- decode it: the worker retried the claim, and every job claimed with it (any tenant's) sat
-- leased until its lease ran out, an attempt lost (a job on its last attempt failed). 'infinity'
-- left a job scheduled forever. A deadline after run_at but already past (run_at given in the
-- past) was accepted, and the job expired at once; with run_at left out the same deadline was
-- refused. An admin could submit for tenant '*', which is reserved; tenant '' shared the
-- idempotency keys of jobs with no tenant.
--
-- A second BEFORE INSERT trigger, run after jobs_before_insert (triggers fire in name order), on
-- the row as that one leaves it (run_at defaulted, tenant resolved). A rejection rolls back the
-- whole statement, the idempotency key the first trigger recorded with it.

SET LOCAL ROLE switchyard_admin;

CREATE FUNCTION switchyard.jobs_check_insert() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
BEGIN
    IF NEW.run_at < '1900-01-01' OR NEW.run_at >= '9000-01-01' THEN
        PERFORM switchyard.reject(
            format('run_at must be between the years 1900 and 8999 (got %s)', NEW.run_at),
            'Leave run_at out to run the job now, or give the time it may start, e.g. now() + interval ''1 hour''.');
    END IF;
    IF NEW.deadline IS NOT NULL AND (NEW.deadline <= now() OR NEW.deadline >= '9000-01-01') THEN
        PERFORM switchyard.reject(
            format('deadline (%s) must be in the future, before the year 9000', NEW.deadline),
            'Give a deadline in the future, or leave it out.');
    END IF;
    IF NEW.tenant = '*' THEN
        PERFORM switchyard.reject('tenant ''*'' is reserved (it maps a role to every tenant)', 'Name a real tenant.');
    END IF;
    IF NEW.tenant = '' THEN
        PERFORM switchyard.reject('tenant must not be empty', 'Leave the tenant out for a job of no tenant, or name one.');
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER jobs_before_insert_checks BEFORE INSERT ON switchyard.jobs
    FOR EACH ROW EXECUTE FUNCTION switchyard.jobs_check_insert();
