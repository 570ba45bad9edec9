-- A gateway (a role mapped to '*') may INSERT a job for the tenant it names, as submit() lets it.
--
-- The validation trigger accepted `INSERT INTO switchyard.jobs (request, tenant) VALUES (…,
-- 'billing')` from a role acting for any tenant, with no switchyard.tenant set, and then the
-- row-level security check refused it with a bare "new row violates row-level security policy":
-- it compared the tenant with the tenants the session may read, none until one is chosen, while
-- switchyard.submit(…, tenant => 'billing') took the same job. The insert check now accepts what
-- the trigger's tenant rules accept (a tenant the role acts for, or any for '*'; the session's
-- choice, when made, must match). Reading the job back (RETURNING, SELECT) still needs SET
-- switchyard.tenant: a gateway sees one tenant at a time.

SET LOCAL ROLE switchyard_admin;

-- True when some session's role acts for every tenant and none is chosen: once per statement.
CREATE FUNCTION switchyard.submits_for_any_tenant() RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
    SELECT '*' = ANY (switchyard.mapped_tenants())
           AND nullif(current_setting('switchyard.tenant', true), '') IS NULL
$$;
REVOKE ALL ON FUNCTION switchyard.submits_for_any_tenant() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION switchyard.submits_for_any_tenant() TO switchyard_submitter;

DROP POLICY jobs_tenant_submit ON switchyard.jobs;
CREATE POLICY jobs_tenant_submit ON switchyard.jobs FOR INSERT TO switchyard_submitter
    WITH CHECK (tenant = ANY ((SELECT switchyard.visible_tenants())::text[])
                OR (tenant <> '*' AND (SELECT switchyard.submits_for_any_tenant())));
