-- A tenant chosen by the session is checked as one named by the row.
--
-- jobs_before_insert checked the row's tenant (its length, blank, white space or an invisible
-- character at an edge) before switchyard.job_tenant filled in the session's (SET
-- switchyard.tenant) for a row that named none, and the session's went unchecked: a review's
-- gateway, with SET switchyard.tenant = 'acme ', submitted jobs for a tenant beside 'acme' that
-- ran through acme's pause and made a second job of an idempotency key acme had used; a 300-
-- character tenant passed the limit of 200, and an admin's ' acme' alike. The checks of a name
-- are now one function (switchyard.check_submitted_tenant), run on the row's tenant before the role
-- is asked and on the session's after; tenant_roles refuses such names too (a role mapped to
-- 'gamma ' was told to name itself 'gamma', which it did not act for), and migrate warns of any
-- mapped before. The characters refused at a name's edge gain the invisible ones a review found
-- missing: the soft hyphen (a trailing one passed), the combining grapheme joiner, the invisible
-- operators and deprecated format characters, the Arabic letter mark, the bidirectional marks,
-- embeddings and isolates, and the blank fillers (Hangul's, the blank Braille pattern). A name
-- taken from the session or the role's mapping is told what to change there.
-- jobs_before_insert is 0093's otherwise.

SET LOCAL ROLE switchyard_admin;

-- Unicode's white space, named (\s is the server locale's: its C.UTF-8 leaves out the no-break
-- spaces), and the invisible characters that are not white space: zero-width space and joiners,
-- word joiner, Mongolian vowel separator, byte order mark, soft hyphen, combining grapheme joiner,
-- invisible operators and deprecated format characters, the Arabic letter mark, the
-- bidirectional controls, and the blank fillers (Hangul's, the blank Braille pattern). A regular
-- expression's bracket class. (Not the variation selectors: an emoji's ends with one.)
CREATE FUNCTION switchyard.edge_space() RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT '[\t\n\v\f\r \u0085\u00a0\u00ad\u034f\u061c\u115f\u1160\u1680\u180e\u2000-\u200f\u2028-\u202f'
           '\u205f-\u2064\u2066-\u206f\u2800\u3000\u3164\ufeff\uffa0]'
$$;

-- The name with each edge_space character but the space shown by its code point
-- ('<U+200B>acme'): printed as it is, an invisible one left the name reading 'acme'.
CREATE FUNCTION switchyard.tenant_shown(p_tenant text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT string_agg(CASE WHEN t.c ~ ('^' || switchyard.edge_space() || '$') AND t.c <> ' '
                           THEN format('<U+%s>', lpad(upper(to_hex(ascii(t.c))), 4, '0')) ELSE t.c END,
                      '' ORDER BY t.i)
    FROM unnest(string_to_array(p_tenant, NULL)) WITH ORDINALITY AS t(c, i)
$$;

-- Refuses a tenant name that is blank, or begins or ends with white space or an invisible
-- character (edge_space), saying it as tenant_shown does, and the name without them in the hint.
-- p_source: where the name came from when not the row (`session`: SET switchyard.tenant;
-- `mapping`: the role's one tenant in tenant_roles), for a hint that says what to change there
-- ("Name it without" sent a role mapped to 'gamma ' to a name it did not act for).
CREATE FUNCTION switchyard.check_submitted_tenant(p_tenant text, p_source text DEFAULT NULL) RETURNS void
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    space constant text := switchyard.edge_space();
    trimmed text;
BEGIN
    IF length(p_tenant) > 200 THEN
        PERFORM switchyard.reject(format('tenant is %s characters, over the limit of 200', length(p_tenant)),
            CASE p_source
                WHEN 'session' THEN 'SET switchyard.tenant to a shorter name.'
                WHEN 'mapping' THEN 'This role''s one tenant in switchyard.tenant_roles is named so: an admin maps it '
                                    'to a shorter name and deletes this mapping.'
                ELSE 'Use a shorter tenant name.' END);
    END IF;
    IF p_tenant ~ ('^' || space || '*$') THEN
        PERFORM switchyard.reject('tenant must not be empty (or only spaces)',
            'Name a tenant (a role that acts for one tenant may leave it out, and submits for that one).');
    END IF;
    -- ' acme' was a tenant of its own beside 'acme' (a gateway's typo splits a tenant's jobs).
    IF p_tenant ~ ('^' || space || '|' || space || '$') THEN
        trimmed := quote_literal(left(regexp_replace(p_tenant, '^' || space || '+|' || space || '+$', '', 'g'), 60));
        PERFORM switchyard.reject(
            format('tenant %s begins or ends with white space', quote_literal(switchyard.tenant_shown(left(p_tenant, 60)))),
            CASE p_source
                WHEN 'session' THEN format('SET switchyard.tenant to the name without them: %s.', trimmed)
                WHEN 'mapping' THEN format('This role''s one tenant in switchyard.tenant_roles is named so: an admin '
                                           'maps it to the name without them (%s) and deletes this mapping.', trimmed)
                ELSE format('Name it without: %s.', trimmed) END);
    END IF;
END $$;

CREATE OR REPLACE FUNCTION switchyard.jobs_before_insert() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    blank constant text := '^' || switchyard.edge_space() || '*$';
    original switchyard.results;
    earlier_id bigint;
    earlier_request jsonb;
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
    -- Not before this time: a time past is now, not a place ahead of the jobs already queued
    -- (claims take the earliest run_at first; a tenant's run_at => '1900-01-01' jumped them all).
    NEW.run_at := greatest(NEW.run_at, now());
    -- Past already (whatever run_at is), or past the year 9000: the job could only expire. First,
    -- so a past deadline is said to be past, not "after run_at" (run_at is now by default).
    IF NEW.deadline <= now() OR NEW.deadline >= '9000-01-01' THEN
        PERFORM switchyard.reject(
            format('deadline (%s) must be in the future, before the year 9000', NEW.deadline),
            'Give a deadline in the future, or leave it out.');
    END IF;
    IF NEW.deadline IS NOT NULL AND NEW.deadline <= NEW.run_at THEN
        PERFORM switchyard.reject(
            format('deadline (%s) must be after run_at (%s)', NEW.deadline, NEW.run_at),
            'Give a deadline after the time the job may start, or leave it out.');
    END IF;
    -- NULL is none, as submit() takes it.
    NEW.metadata := coalesce(NEW.metadata, '{}');
    IF jsonb_typeof(NEW.metadata) <> 'object' THEN
        PERFORM switchyard.reject('metadata must be a JSON object', 'Leave it out, or pass e.g. {"team":"search"}.');
    END IF;
    -- Most jobs carry no metadata: the limit is read only for those that do.
    IF NEW.metadata <> '{}'
       AND octet_length(NEW.metadata::text) > coalesce(switchyard.setting('max_metadata_bytes'), '65536')::bigint THEN
        PERFORM switchyard.reject(
            format('metadata is %s bytes, over the limit of %s bytes', octet_length(NEW.metadata::text),
                   switchyard.setting('max_metadata_bytes')),
            'Keep metadata to identifiers (store big things elsewhere), or have an operator raise the limit: UPDATE '
                || 'switchyard.settings SET value = ''<bytes>'' WHERE name = ''max_metadata_bytes''.');
    END IF;
    -- Each named: one message for the four left the caller to guess which was too long.
    IF length(NEW.task_class) > 100 THEN
        PERFORM switchyard.reject(format('task_class is %s characters, over the limit of 100', length(NEW.task_class)),
                                  'Use a shorter class name.');
    END IF;
    IF length(NEW.affinity_key) > 500 THEN
        PERFORM switchyard.reject(format('affinity_key is %s characters, over the limit of 500', length(NEW.affinity_key)),
                                  'Use a shorter key (hash a long one).');
    END IF;
    -- No key, as '' was taken already: '   ' was one key that every job sent with it shared (one
    -- model for all of them, spilled as a hot key). A retry keeps its job's key, whatever it was.
    IF NEW.affinity_key ~ blank AND NEW.retry_of IS NULL THEN
        NEW.affinity_key := NULL;
    END IF;
    IF length(NEW.idempotency_key) > 500 THEN
        PERFORM switchyard.reject(
            format('idempotency_key is %s characters, over the limit of 500', length(NEW.idempotency_key)),
            'Use a shorter key (hash a long one).');
    END IF;
    IF NEW.idempotency_key ~ blank THEN
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
        -- The tenant comes from the session (and is checked against the role), never just from the
        -- row. The row's name is checked before the role's tenants are asked (a role of one tenant
        -- was told it "may not submit for tenant ''", and a gateway's '   ' was taken); one the
        -- session chose (SET switchyard.tenant, or the role's only tenant) after, as the row's: a
        -- gateway's 'acme ' was a tenant beside 'acme', out of its pause, its caps and its
        -- idempotency keys. (A retry keeps its job's tenant, even one taken before these checks.)
        IF NEW.tenant IS NOT NULL THEN
            PERFORM switchyard.check_submitted_tenant(NEW.tenant);
            NEW.tenant := switchyard.job_tenant(NEW.tenant);
        ELSE
            NEW.tenant := switchyard.job_tenant(NULL);
            IF NEW.tenant IS NOT NULL THEN
                PERFORM switchyard.check_submitted_tenant(
                    NEW.tenant, CASE WHEN NEW.tenant = current_setting('switchyard.tenant', true) THEN 'session'
                                     ELSE 'mapping' END);
            END IF;
        END IF;
    END IF;
    -- Even an admin's: '*' maps a role to every tenant, and '' would share the idempotency keys of
    -- jobs with no tenant.
    IF NEW.tenant = '*' THEN
        PERFORM switchyard.reject('tenant ''*'' is reserved (it maps a role to every tenant)', 'Name a real tenant.');
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
            -- The key is taken: a repeat of an earlier submission, unless it asks something else.
            -- A Python walkthrough's key reused for another prompt got the first prompt's answer
            -- back as its own, without a word (Stripe refuses such a repeat; so does this).
            SELECT k.job_id INTO earlier_id FROM switchyard.idempotency_keys k
            WHERE k.tenant = coalesce(NEW.tenant, '') AND k.key = NEW.idempotency_key;
            SELECT j.request INTO earlier_request FROM switchyard.jobs j WHERE j.id = earlier_id;
            IF NOT FOUND THEN
                SELECT r.request INTO earlier_request FROM switchyard.results r WHERE r.job_id = earlier_id;
            END IF;
            IF earlier_request IS DISTINCT FROM NEW.request AND earlier_request IS NOT NULL
               -- Given earlier in this transaction (a multi-row INSERT's other row): job N is rolled
               -- back with it, and "send the first request again to get job N back" named a job
               -- that never came to be.
               -- A key row this statement sees whose writer is still in progress can only be this
               -- transaction's (a savepoint's included: its xmin is the subtransaction's, which
               -- comes after this transaction's own, so its age is 0 or less); read in the current
               -- epoch, which an older row's would not be.
               AND EXISTS (SELECT 1 FROM switchyard.idempotency_keys k
                           WHERE k.tenant = coalesce(NEW.tenant, '') AND k.key = NEW.idempotency_key
                             AND age(k.xmin) <= 0
                             AND pg_xact_status(((pg_current_xact_id()::text::bigint >> 32) << 32
                                                 | k.xmin::text::bigint)::text::xid8) = 'in progress') THEN
                PERFORM switchyard.reject(
                    format('idempotency_key %s is given twice in this transaction, for different requests',
                           quote_literal(left(NEW.idempotency_key, 100))),
                    'A key names one submission: give each request its own key (e.g. your request''s id).');
            END IF;
            IF earlier_request IS DISTINCT FROM NEW.request AND earlier_request IS NOT NULL THEN
                PERFORM switchyard.reject(
                    format('idempotency_key %s already names job %s, which was submitted with a different request',
                           quote_literal(left(NEW.idempotency_key, 100)), earlier_id),
                    'A key names one submission: give this request its own key (e.g. your request''s id), or send '
                        || 'the first request again to get job ' || earlier_id || ' back.');
            END IF;
            RETURN NULL;
        END IF;
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION switchyard.tenant_roles_check() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, switchyard, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.rolname = NEW.role) THEN
        RAISE EXCEPTION USING ERRCODE = '42704',
            MESSAGE = format('role %s does not exist', quote_ident(NEW.role)),
            HINT = format('Create it first (CREATE ROLE %I LOGIN IN ROLE switchyard_submitter), then map it: a mapping '
                          'made before would give its tenants to whoever creates a role of that name.', NEW.role);
    END IF;
    -- A name no submission may take ('*' is every tenant's): the role could submit for it only
    -- through SET switchyard.tenant, and was told to name itself without the space.
    IF NEW.tenant <> '*' THEN
        PERFORM switchyard.check_submitted_tenant(NEW.tenant);
    END IF;
    RETURN NEW;
END $$;

DROP TRIGGER tenant_roles_check ON switchyard.tenant_roles;
CREATE TRIGGER tenant_roles_check BEFORE INSERT OR UPDATE OF role, tenant ON switchyard.tenant_roles
    FOR EACH ROW EXECUTE FUNCTION switchyard.tenant_roles_check();

-- Mappings made before to such names: said at migrate, for the operator to put right.
DO $$
DECLARE
    mapping record;
BEGIN
    FOR mapping IN
        SELECT t.role, t.tenant FROM switchyard.tenant_roles t
        WHERE t.tenant <> '*' AND t.tenant ~ ('^' || switchyard.edge_space() || '|' || switchyard.edge_space() || '$')
        ORDER BY t.role, t.tenant
    LOOP
        -- Shown by code point, and deleted by it too: a name printed as it is reads as another.
        RAISE WARNING 'switchyard.tenant_roles maps role % to tenant %, which begins or ends with white space or an '
                      'invisible character: no submission may name it; map the name without them and delete this one: '
                      'DELETE FROM switchyard.tenant_roles WHERE role = % AND switchyard.tenant_shown(tenant) = %',
                      quote_ident(mapping.role), quote_literal(switchyard.tenant_shown(mapping.tenant)),
                      quote_literal(mapping.role), quote_literal(switchyard.tenant_shown(mapping.tenant));
    END LOOP;
END $$;
