-- Submission fixes from a review of the SQL interface.
--
-- - An empty (or all-space) idempotency key was accepted, and every job submitted with '' after
--   the first was taken for a repeat of it (a driver that sends '' for "no key" lost every
--   submission but one). It is refused, as an empty tenant is.
-- - retry_of is set by retry() only. A submitter's INSERT with retry_of and the key retry() uses
--   (switchyard:retry-of:ID) was accepted, and retry(ID) then answered with that unrelated job;
--   one naming another tenant's job linked to it. A row with retry_of must be a copy of the
--   job's result (request, priority, task class, affinity key, metadata, tenant) under that key,
--   to run now and without a deadline, as retry() makes it.
-- - A retry keeps its job's tenant: an admin's session with switchyard.tenant set gave the retry
--   of a job with no tenant its own tenant (the job then showed to that tenant), and a second
--   retry() made a second job.
-- - A gateway (mapped to '*') that names no tenant is told so, not that it "acts for several
--   tenants (*)".
-- - switchyard.tenant_roles refuses a role that does not exist: the mapping waited for whoever
--   created a role of that name later (security.md's own gateway example made an all-tenant
--   gateway of any future role llm_gateway). Such mappings made before are named at migrate.
--
-- jobs_before_insert() is 0031's otherwise; job_tenant() is 0007's otherwise.

SET LOCAL ROLE switchyard_admin;

CREATE OR REPLACE FUNCTION switchyard.jobs_before_insert() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    original switchyard.results;
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
    IF NEW.idempotency_key ~ '^\s*$' THEN
        PERFORM switchyard.reject('idempotency_key must not be empty (or only spaces)',
            'Leave it out for a job with no key, or give one that names the submission (e.g. your request''s id): '
                || 'every job with the same key is taken for a repeat of the first.');
    END IF;
    -- The prefix is Switchyard's: retry() keys its retries switchyard:retry-of:ID, and a job of the
    -- same key would be taken for the retry of ID.
    IF NEW.idempotency_key LIKE 'switchyard:%'
       AND NEW.idempotency_key IS DISTINCT FROM 'switchyard:retry-of:' || NEW.retry_of THEN
        PERFORM switchyard.reject('idempotency keys starting with switchyard: are reserved for Switchyard''s own',
                                  'Use another prefix for your keys.');
    END IF;
    IF NEW.retry_of IS NOT NULL THEN
        -- Only retry()'s copy of a job that did not succeed, under its key and its tenant: an
        -- INSERT of its own with that key was taken for the retry by retry(), and one naming any
        -- job linked to it, another tenant's too.
        SELECT r.* INTO original FROM switchyard.results r WHERE r.job_id = NEW.retry_of;
        IF NOT FOUND OR original.status = 'succeeded'
           OR NEW.idempotency_key IS DISTINCT FROM 'switchyard:retry-of:' || NEW.retry_of
           -- retry() runs it now, without a deadline (a forged retry set to start in 2035 was
           -- answered by retry()).
           OR NEW.run_at > now() OR NEW.deadline IS NOT NULL
           OR (NEW.tenant, NEW.request, NEW.priority, NEW.task_class, NEW.affinity_key, NEW.metadata)
              IS DISTINCT FROM (original.tenant, original.request, original.priority, original.task_class,
                                original.affinity_key, original.metadata) THEN
            PERFORM switchyard.reject('retry_of is set by switchyard.retry(), not by a submission',
                'Call switchyard.retry(ID) (dispatcher retry ID) to run a failed, cancelled or expired job again; '
                    || 'leave retry_of out of a new job.');
        END IF;
        -- Its job's tenant, whatever the session chose (an admin's switchyard.tenant gave a retry of
        -- a job with no tenant its own). Row-level security still checks a submitter may submit for it.
    ELSE
        -- The tenant comes from the session (and is checked against the role), never just from the row.
        NEW.tenant := switchyard.job_tenant(NEW.tenant);
    END IF;
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

CREATE OR REPLACE FUNCTION switchyard.job_tenant(p_given text) RETURNS text
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    caller constant name := switchyard.session_role();
    chosen constant text := nullif(current_setting('switchyard.tenant', true), '');
    mapped text[];
    wanted text;
BEGIN
    IF switchyard.is_unrestricted(caller) THEN
        RETURN coalesce(p_given, chosen);
    END IF;
    IF p_given IS NOT NULL AND chosen IS NOT NULL AND p_given <> chosen THEN
        RAISE EXCEPTION USING ERRCODE = '42501',
            MESSAGE = format('tenant %s does not match this session''s switchyard.tenant (%s)',
                             quote_literal(left(p_given, 200)), quote_literal(chosen)),
            HINT = 'Leave the tenant out (the session''s is used), or SET switchyard.tenant to the one you mean.';
    END IF;
    mapped := switchyard.mapped_tenants();
    wanted := coalesce(p_given, chosen);
    IF wanted IS NULL THEN
        IF cardinality(mapped) = 1 AND mapped[1] <> '*' THEN
            RETURN mapped[1];
        END IF;
        IF cardinality(mapped) = 0 THEN
            RAISE EXCEPTION USING ERRCODE = '42501',
                MESSAGE = format('role %s acts for no tenant, so it cannot submit', caller),
                HINT = format('An admin maps it to one: INSERT INTO switchyard.tenant_roles (role, tenant) '
                              'VALUES (%L, ''your-team'').', caller);
        END IF;
        RAISE EXCEPTION USING ERRCODE = '42501',
            MESSAGE = CASE WHEN '*' = ANY (mapped)
                           THEN format('role %s acts for whichever tenant it names (it is mapped to *), and this job '
                                       'names none', caller)
                           ELSE format('role %s acts for several tenants (%s): say which one this job is for',
                                       caller, array_to_string(mapped, ', ')) END,
            HINT = 'SET switchyard.tenant = ''name'' for the session (SET LOCAL in a transaction), '
                || 'or pass tenant => ''name''.';
    END IF;
    IF wanted = '*' THEN
        PERFORM switchyard.reject('tenant ''*'' is reserved (it maps a role to every tenant)',
                                  'Name a real tenant.');
    END IF;
    IF wanted = ANY (mapped) OR '*' = ANY (mapped) THEN
        RETURN wanted;
    END IF;
    RAISE EXCEPTION USING ERRCODE = '42501',
        MESSAGE = format('role %s may not submit for tenant %s', caller, quote_literal(left(wanted, 200))),
        HINT = CASE WHEN cardinality(mapped) = 0 THEN 'It acts for no tenant; an admin maps it in switchyard.tenant_roles.'
                    ELSE format('It acts for: %s.', array_to_string(mapped, ', ')) END;
END $$;

CREATE FUNCTION switchyard.tenant_roles_check() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, switchyard, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.rolname = NEW.role) THEN
        RAISE EXCEPTION USING ERRCODE = '42704',
            MESSAGE = format('role %s does not exist', quote_ident(NEW.role)),
            HINT = format('Create it first (CREATE ROLE %I LOGIN IN ROLE switchyard_submitter), then map it: a mapping '
                          'made before would give its tenants to whoever creates a role of that name.', NEW.role);
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER tenant_roles_check BEFORE INSERT OR UPDATE OF role ON switchyard.tenant_roles
    FOR EACH ROW EXECUTE FUNCTION switchyard.tenant_roles_check();

-- Mappings made before this check, for roles that do not exist (security.md's example made one
-- for llm_gateway), or left by a dropped role: said at migrate, for the operator to delete.
DO $$
DECLARE
    orphan record;
BEGIN
    FOR orphan IN
        SELECT t.role, t.tenant FROM switchyard.tenant_roles t
        WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.rolname = t.role)
        ORDER BY t.role, t.tenant
    LOOP
        RAISE WARNING 'switchyard.tenant_roles maps role % to tenant %, and no such role exists: whoever creates a role '
                      'of that name will act for it; delete the mapping: DELETE FROM switchyard.tenant_roles '
                      'WHERE role = %', quote_ident(orphan.role), quote_literal(orphan.tenant), quote_literal(orphan.role);
    END LOOP;
END $$;
