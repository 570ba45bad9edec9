-- Security: least-privilege roles, tenant isolation by row-level security, and limits on what a
-- submission may hold. docs/security.md explains the model and how to run with the roles.
--
-- FOR WHOEVER WRITES 0008 AND LATER — read this before replacing a function:
--
--   * Every object in schema switchyard is owned by the NOLOGIN role switchyard_admin (this
--     migration moves them), so SECURITY DEFINER functions run as that role, never as a superuser.
--   * These functions are SECURITY DEFINER with SET search_path = pg_catalog, switchyard, pg_temp.
--     CREATE OR REPLACE FUNCTION resets both to the defaults (invoker, no search_path): restate
--     them on any function you replace, or workers and submitters are refused (they have no table
--     rights of their own); Tests/IntegrationTests/Security/SecuritySchemaTests checks the list:
--         switchyard.submit                 switchyard.cancel             switchyard.feedback
--         switchyard.jobs_before_insert     switchyard.claim              switchyard.heartbeat
--         switchyard.complete               switchyard.rescue_expired     switchyard.expire_overdue
--         switchyard.ensure_result_partitions                              switchyard.report_health
--         switchyard.evaluate_alerts        switchyard.visible_tenants
--     CREATE OR REPLACE keeps owner and grants; a NEW function is executable by PUBLIC unless it is
--     created as switchyard_admin (default privileges below) — REVOKE EXECUTE ... FROM PUBLIC and
--     GRANT it to the roles that need it.
--   * Start a migration with `SET LOCAL ROLE switchyard_admin;` so what it creates is owned like
--     the rest. A table created by another role is still usable by the definer functions (default
--     privileges below grant switchyard_admin everything on it), but no role gets it until granted.
--   * A new table with tenant data needs ENABLE ROW LEVEL SECURITY and policies like jobs' below.

-- The roles. Roles are cluster-wide and several databases of one server may run this at once
-- (every test database does): create each only if missing, and take a concurrent creation (the
-- second CREATE ROLE waits for the first to commit, then fails on the unique index) as success.
-- Nothing else below is cluster-wide: every grant is on this database's objects.
DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['switchyard_submitter', 'switchyard_worker', 'switchyard_admin'] LOOP
        CONTINUE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = role_name);
        IF NOT (SELECT r.rolsuper OR r.rolcreaterole FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) THEN
            RAISE EXCEPTION USING ERRCODE = '42501',
                MESSAGE = format('role %s does not exist, and %s may not create roles', role_name, current_user),
                HINT = 'Run `dispatcher migrate` once as a superuser or a role with CREATEROLE, or have one run: '
                    || 'CREATE ROLE switchyard_submitter NOLOGIN; CREATE ROLE switchyard_worker NOLOGIN; '
                    || 'CREATE ROLE switchyard_admin NOLOGIN; GRANT switchyard_admin TO ' || current_user || ';';
        END IF;
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- another database's migration created it a moment ago
        END;
    END LOOP;
    -- A migrating role that is not a superuser must stay able to migrate: it becomes an admin.
    IF NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user)
       AND NOT pg_catalog.pg_has_role(current_user, 'switchyard_admin', 'MEMBER') THEN
        BEGIN
            EXECUTE format('GRANT switchyard_admin TO %I', current_user);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END $$;

-- Which roles act for which tenants. A role acts for a tenant when it is, or is a member of, a
-- role mapped to it (map a team's group role once; its members inherit it). '*' lets a trusted
-- gateway act for any tenant it names with SET switchyard.tenant.
CREATE TABLE switchyard.tenant_roles (
    role       name        NOT NULL,
    tenant     text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (role, tenant),
    CONSTRAINT tenant_roles_tenant_check CHECK (length(tenant) BETWEEN 1 AND 200)
);

-- The role a statement acts for: the one set with SET ROLE, else the login role. Unlike
-- current_user it stays the caller's inside SECURITY DEFINER functions, which run as their owner
-- but leave the session's role setting alone.
CREATE FUNCTION switchyard.session_role() RETURNS name
    LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN current_setting('role') = 'none' THEN session_user ELSE current_setting('role')::name END
$$;

-- Whether a role is exempt from tenant rules: admins (superusers have every role's privileges,
-- so they are admins here too).
CREATE FUNCTION switchyard.is_unrestricted(p_role name) RETURNS boolean
    LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.pg_has_role(p_role, 'switchyard_admin', 'USAGE')
$$;

-- The tenants the session's role acts for ('*' for any), whatever the session chose.
CREATE FUNCTION switchyard.mapped_tenants() RETURNS text[]
    LANGUAGE sql STABLE AS $$
    SELECT coalesce(array_agg(DISTINCT t.tenant ORDER BY t.tenant), '{}')
    FROM switchyard.tenant_roles t
    JOIN pg_catalog.pg_roles r ON r.rolname = t.role
    WHERE pg_catalog.pg_has_role(switchyard.session_role(), r.oid, 'MEMBER')
$$;

-- The tenants whose rows the session may see (what the row-level security policies compare
-- with): the one chosen with SET switchyard.tenant if the role acts for it, else every tenant the
-- role acts for. Never raises, so a policy never turns a read into an error.
CREATE FUNCTION switchyard.visible_tenants() RETURNS text[]
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    chosen constant text := nullif(current_setting('switchyard.tenant', true), '');
    mapped constant text[] := switchyard.mapped_tenants();
BEGIN
    IF chosen IS NOT NULL THEN
        RETURN CASE WHEN chosen = ANY (mapped) OR '*' = ANY (mapped) THEN ARRAY[chosen] ELSE '{}'::text[] END;
    END IF;
    RETURN array_remove(mapped, '*');
END $$;

-- The tenant a new job belongs to. Admins (and superusers) submit for whatever tenant they name
-- (or the session's). Everyone else submits only for a tenant their role acts for: the one they
-- name, or the session's switchyard.tenant, or their only tenant; anything else is refused.
-- Called by the validation trigger and switchyard.submit, which run as the owner.
CREATE FUNCTION switchyard.job_tenant(p_given text) RETURNS text
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
            MESSAGE = format('role %s acts for several tenants (%s): say which one this job is for',
                             caller, array_to_string(mapped, ', ')),
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

-- Limits on what a request may hold, beyond 0002's max_request_bytes. Each refusal names the
-- field and the limit, and the hint names the setting.
INSERT INTO switchyard.settings (name, value, description) VALUES
    ('max_request_depth', '32',
     'Deepest nesting of objects and arrays in a request (the request object itself is level 1).'),
    ('max_messages', '1000', 'Most messages a request may hold.'),
    ('max_content_chars', '500000',
     'Longest single content string (or text part) of a message, in characters.'),
    ('max_metadata_bytes', '65536', 'Largest job metadata object, in bytes of its JSON text.'),
    ('request_fields',
     'messages,model,audio,frequency_penalty,function_call,functions,logit_bias,logprobs,max_completion_tokens,'
     || 'max_tokens,metadata,modalities,n,parallel_tool_calls,prediction,presence_penalty,prompt_cache_key,'
     || 'reasoning_effort,response_format,safety_identifier,seed,service_tier,stop,store,stream,stream_options,'
     || 'temperature,tool_choice,tools,top_k,top_logprobs,top_p,user,verbosity,web_search_options',
     'Comma-separated top-level fields a request may have (OpenAI chat completions); * allows any.'),
    ('message_fields',
     'role,content,name,tool_calls,tool_call_id,function_call,refusal,audio,annotations,reasoning_content',
     'Comma-separated fields a message may have; * allows any.');

-- Limits are whole numbers; the floors let the validation skip reading a limit no ordinary
-- request comes near (see check_request), and no sensible limit is below them.
ALTER TABLE switchyard.settings
    ADD CONSTRAINT settings_limits_check CHECK (
        name NOT IN ('max_request_bytes', 'max_request_depth', 'max_messages', 'max_content_chars',
                     'max_metadata_bytes')
        OR value ~ '^[0-9]{1,12}$'),
    ADD CONSTRAINT settings_max_request_depth_at_least_8 CHECK (
        name <> 'max_request_depth' OR NOT value ~ '^[0-9]{1,12}$' OR value::bigint >= 8),
    ADD CONSTRAINT settings_max_messages_at_least_100 CHECK (
        name <> 'max_messages' OR NOT value ~ '^[0-9]{1,12}$' OR value::bigint >= 100),
    ADD CONSTRAINT settings_max_content_chars_at_least_10000 CHECK (
        name <> 'max_content_chars' OR NOT value ~ '^[0-9]{1,12}$' OR value::bigint >= 10000);

-- 0002's checks, in the same order and words, then the limits above: nesting depth, number of
-- messages, fields and their JSON types, content length.
--
-- Every submission passes through here, so the common case reads no setting but
-- max_request_bytes (as 0002 did): a limit is read only when the request comes near its floor
-- (deeper than 8 levels, more than 100 messages, a content over 10,000 characters, a field
-- beyond messages, a message field beyond role and content), field checks use jsonb operators,
-- and the searches that name the culprit run only on the way to a refusal. (Constants stay out
-- of DECLARE: plpgsql would convert them on every call.)
CREATE OR REPLACE FUNCTION switchyard.check_request(p_request jsonb) RETURNS void
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    example constant text := 'Send an OpenAI chat request, e.g. {"messages":[{"role":"user","content":"Hello"}]}.';
    max_bytes constant bigint := coalesce(switchyard.setting('max_request_bytes')::bigint, 1048576);
    max_depth integer;
    max_content bigint;
    allowed text[];
    size bigint;
    message jsonb;
    part jsonb;
    position integer := 0;
    part_position integer;
    role text;
    model text;
    options jsonb;
    culprit text;
    expected jsonb;
    actual text;
BEGIN
    IF p_request IS NULL THEN
        PERFORM switchyard.reject('request is required', example);
    END IF;
    IF jsonb_typeof(p_request) <> 'object' THEN
        PERFORM switchyard.reject(format('request must be a JSON object, got %s', jsonb_typeof(p_request)), example);
    END IF;
    size := octet_length(p_request::text);
    IF size > max_bytes THEN
        PERFORM switchyard.reject(
            format('request is %s bytes, over the limit of %s bytes', size, max_bytes),
            'Shorten the request, or raise the limit: UPDATE switchyard.settings SET value = ''<bytes>'' '
                || 'WHERE name = ''max_request_bytes''.');
    END IF;
    -- A container at level max_depth + 1 (the request is level 1, its members' values level 2, …).
    IF jsonb_path_exists(p_request, 'strict $.**{8} ? (@.type() == "object" || @.type() == "array")') THEN
        max_depth := coalesce(switchyard.setting('max_request_depth')::integer, 32);
        IF jsonb_path_exists(p_request,
                             format('strict $.**{%s} ? (@.type() == "object" || @.type() == "array")', max_depth)::jsonpath)
        THEN
            SELECT k INTO culprit FROM jsonb_object_keys(p_request) AS k
            WHERE jsonb_path_exists(p_request -> k,
                                    format('strict $.**{%s} ? (@.type() == "object" || @.type() == "array")',
                                           max_depth - 1)::jsonpath)
            ORDER BY k LIMIT 1;
            PERFORM switchyard.reject(
                format('request.%s nests objects and arrays deeper than the limit of %s levels', culprit, max_depth),
                'Flatten the request, or raise the limit: UPDATE switchyard.settings SET value = ''<levels>'' '
                    || 'WHERE name = ''max_request_depth''.');
        END IF;
    END IF;
    IF NOT p_request ? 'messages' THEN
        PERFORM switchyard.reject('request.messages is missing', example);
    END IF;
    IF jsonb_typeof(p_request -> 'messages') <> 'array' THEN
        PERFORM switchyard.reject(
            format('request.messages must be an array, got %s', jsonb_typeof(p_request -> 'messages')), example);
    END IF;
    IF jsonb_array_length(p_request -> 'messages') = 0 THEN
        PERFORM switchyard.reject('request.messages must not be empty', example);
    END IF;
    IF jsonb_array_length(p_request -> 'messages') > 100
       AND jsonb_array_length(p_request -> 'messages') > coalesce(switchyard.setting('max_messages')::integer, 1000) THEN
        PERFORM switchyard.reject(
            format('request.messages holds %s messages, over the limit of %s',
                   jsonb_array_length(p_request -> 'messages'), switchyard.setting('max_messages')),
            'Send fewer messages (summarise older turns), or raise the limit: UPDATE switchyard.settings '
                || 'SET value = ''<count>'' WHERE name = ''max_messages''.');
    END IF;
    FOR message IN SELECT value FROM jsonb_array_elements(p_request -> 'messages') LOOP
        IF jsonb_typeof(message) <> 'object' THEN
            PERFORM switchyard.reject(
                format('request.messages[%s] must be an object with role and content, got %s',
                       position, jsonb_typeof(message)), example);
        END IF;
        IF jsonb_typeof(message -> 'role') IS DISTINCT FROM 'string' THEN
            PERFORM switchyard.reject(format('request.messages[%s].role must be a string', position), example);
        END IF;
        role := message ->> 'role';
        IF role NOT IN ('system', 'developer', 'user', 'assistant', 'tool') THEN
            PERFORM switchyard.reject(
                format('request.messages[%s].role must be system, developer, user, assistant or tool (got %s)',
                       position, quote_literal(left(role, 40))), example);
        END IF;
        IF NOT message ? 'content' THEN
            PERFORM switchyard.reject(format('request.messages[%s].content is missing', position), example);
        END IF;
        IF jsonb_typeof(message -> 'content') NOT IN ('string', 'array')
           AND NOT (role = 'assistant' AND jsonb_typeof(message -> 'content') = 'null') THEN
            PERFORM switchyard.reject(
                format('request.messages[%s].content must be a string or an array of parts, got %s',
                       position, jsonb_typeof(message -> 'content')), example);
        END IF;
        IF message - '{role,content}'::text[] <> '{}' THEN
            allowed := string_to_array(replace(coalesce(switchyard.setting('message_fields'), '*'), ' ', ''), ',');
            IF allowed <> ARRAY['*'] AND message - allowed <> '{}' THEN
                SELECT min(k) INTO culprit FROM jsonb_object_keys(message - allowed) AS k;
                PERFORM switchyard.reject(
                    format('request.messages[%s] has an unknown field %s', position, quote_literal(left(culprit, 60))),
                    format('A message may have: %s. Remove the field, or allow it in the message_fields setting.',
                           array_to_string(allowed, ', ')));
            END IF;
        END IF;
        IF jsonb_typeof(message -> 'content') = 'string' THEN
            IF length(message ->> 'content') > 10000 THEN
                max_content := coalesce(max_content, switchyard.setting('max_content_chars')::bigint, 500000);
                IF length(message ->> 'content') > max_content THEN
                    PERFORM switchyard.reject(
                        format('request.messages[%s].content is %s characters, over the limit of %s',
                               position, length(message ->> 'content'), max_content),
                        'Shorten it, or raise the limit: UPDATE switchyard.settings SET value = ''<characters>'' '
                            || 'WHERE name = ''max_content_chars''.');
                END IF;
            END IF;
        ELSIF jsonb_typeof(message -> 'content') = 'array' THEN
            part_position := 0;
            FOR part IN SELECT value FROM jsonb_array_elements(message -> 'content') LOOP
                IF jsonb_typeof(part) <> 'object' OR jsonb_typeof(part -> 'type') IS DISTINCT FROM 'string' THEN
                    PERFORM switchyard.reject(
                        format('request.messages[%s].content[%s] must be an object with a string type, got %s',
                               position, part_position, jsonb_typeof(part)),
                        'A part looks like {"type":"text","text":"Hello"}.');
                END IF;
                IF part ? 'text' AND jsonb_typeof(part -> 'text') <> 'string' THEN
                    PERFORM switchyard.reject(
                        format('request.messages[%s].content[%s].text must be a string, got %s',
                               position, part_position, jsonb_typeof(part -> 'text')),
                        'A part looks like {"type":"text","text":"Hello"}.');
                END IF;
                IF length(part ->> 'text') > 10000 THEN
                    max_content := coalesce(max_content, switchyard.setting('max_content_chars')::bigint, 500000);
                    IF length(part ->> 'text') > max_content THEN
                        PERFORM switchyard.reject(
                            format('request.messages[%s].content[%s].text is %s characters, over the limit of %s',
                                   position, part_position, length(part ->> 'text'), max_content),
                            'Shorten it, or raise the limit: UPDATE switchyard.settings SET value = ''<characters>'' '
                                || 'WHERE name = ''max_content_chars''.');
                    END IF;
                END IF;
                part_position := part_position + 1;
            END LOOP;
        END IF;
        position := position + 1;
    END LOOP;
    options := p_request - 'messages';
    IF options <> '{}' THEN
        allowed := string_to_array(replace(coalesce(switchyard.setting('request_fields'), '*'), ' ', ''), ',');
        IF allowed <> ARRAY['*'] AND options - allowed <> '{}' THEN
            SELECT min(k) INTO culprit FROM jsonb_object_keys(options - allowed) AS k;
            PERFORM switchyard.reject(
                format('request has an unknown field %s', quote_literal(left(culprit, 60))),
                'Remove it (OpenAI refuses unknown arguments too), or allow it: UPDATE switchyard.settings '
                    || 'SET value = value || '',<field>'' WHERE name = ''request_fields''.');
        END IF;
        -- JSON types per known field (null is accepted for every optional field, as OpenAI does).
        SELECT e.key, t.types, jsonb_typeof(e.value) INTO culprit, expected, actual
        FROM jsonb_each(options) AS e
        CROSS JOIN LATERAL (SELECT '{
            "model": ["string"], "max_tokens": ["integer"], "max_completion_tokens": ["integer"], "n": ["integer"],
            "seed": ["integer"], "top_logprobs": ["integer"], "top_k": ["integer"], "temperature": ["number"],
            "top_p": ["number"], "frequency_penalty": ["number"], "presence_penalty": ["number"],
            "stream": ["boolean"], "logprobs": ["boolean"], "parallel_tool_calls": ["boolean"], "store": ["boolean"],
            "stop": ["string", "array"], "tools": ["array"], "functions": ["array"], "modalities": ["array"],
            "tool_choice": ["string", "object"], "function_call": ["string", "object"], "response_format": ["object"],
            "metadata": ["object"], "logit_bias": ["object"], "stream_options": ["object"], "prediction": ["object"],
            "audio": ["object"], "web_search_options": ["object"], "user": ["string"], "reasoning_effort": ["string"],
            "service_tier": ["string"], "verbosity": ["string"], "prompt_cache_key": ["string"],
            "safety_identifier": ["string"]}'::jsonb -> e.key AS types) AS t
        WHERE t.types IS NOT NULL AND jsonb_typeof(e.value) <> 'null'
          AND NOT t.types ? jsonb_typeof(e.value)
          AND NOT (t.types ? 'integer' AND jsonb_typeof(e.value) = 'number'
                   AND (e.value)::numeric = trunc((e.value)::numeric) AND (e.value)::numeric >= 0)
        ORDER BY e.key LIMIT 1;
        IF culprit IS NOT NULL THEN
            IF expected ? 'integer' AND actual = 'number' THEN
                PERFORM switchyard.reject(
                    format('request.%s must be a whole number of at least 0, got %s', culprit, options -> culprit),
                    'For example "max_tokens": 256.');
            END IF;
            PERFORM switchyard.reject(
                format('request.%s must be %s, got %s', culprit,
                       array_to_string(ARRAY(
                           SELECT CASE t WHEN 'array' THEN 'an array' WHEN 'object' THEN 'an object'
                                         WHEN 'integer' THEN 'a whole number' ELSE 'a ' || t END
                           FROM jsonb_array_elements_text(expected) AS t), ' or '),
                       actual),
                'See the OpenAI chat completions reference for the field''s type.');
        END IF;
    END IF;
    model := p_request ->> 'model';
    IF model IS NOT NULL AND model NOT IN ('', 'auto')
       AND NOT EXISTS (SELECT 1 FROM switchyard.models m WHERE m.name = model) THEN
        PERFORM switchyard.reject(
            format('request.model names an unknown model: %s', quote_literal(left(model, 100))),
            'Leave "model" out to let Switchyard route the request, or name a model from the catalog '
                || '(dispatcher models list).');
    END IF;
END $$;

-- 0002's validation trigger, now run as its owner (it writes idempotency keys, which submitters
-- may not touch) and resolving the job's tenant from the session before anything uses it.
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
    IF NEW.deadline IS NOT NULL AND NEW.deadline <= NEW.run_at THEN
        PERFORM switchyard.reject(
            format('deadline (%s) must be after run_at (%s)', NEW.deadline, NEW.run_at),
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
    -- The tenant comes from the session (and is checked against the role), never just from the row.
    NEW.tenant := switchyard.job_tenant(NEW.tenant);
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

-- Submits a job and returns its id; 0002's function, run as its owner, with a repeated
-- idempotency key looked up under the tenant the job was actually given.
CREATE OR REPLACE FUNCTION switchyard.submit(
    request         jsonb,
    priority        text        DEFAULT 'interactive',
    task_class      text        DEFAULT NULL,
    affinity_key    text        DEFAULT NULL,
    run_at          timestamptz DEFAULT now(),
    deadline        timestamptz DEFAULT NULL,
    max_attempts    integer     DEFAULT 3,
    idempotency_key text        DEFAULT NULL,
    tenant          text        DEFAULT NULL,
    metadata        jsonb       DEFAULT '{}'
) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    new_id bigint;
BEGIN
    INSERT INTO switchyard.jobs AS j
        (request, priority, task_class, affinity_key, run_at, deadline, max_attempts, idempotency_key, tenant,
         metadata)
    VALUES
        (submit.request, submit.priority, submit.task_class, submit.affinity_key, coalesce(submit.run_at, now()),
         submit.deadline, coalesce(submit.max_attempts, 3), submit.idempotency_key, submit.tenant,
         coalesce(submit.metadata, '{}'))
    RETURNING j.id INTO new_id;
    IF new_id IS NULL THEN
        SELECT k.job_id INTO new_id FROM switchyard.idempotency_keys k
        WHERE k.tenant = coalesce(switchyard.job_tenant(submit.tenant), '') AND k.key = submit.idempotency_key;
    END IF;
    RETURN new_id;
END $$;

-- Cancels a job (0002), now only one the caller's tenants own: another tenant's job reads as
-- not_found, exactly like a job that does not exist.
CREATE OR REPLACE FUNCTION switchyard.cancel(job_id bigint) RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    everyone constant boolean := switchyard.is_unrestricted(switchyard.session_role());
    tenants constant text[] := CASE WHEN everyone THEN '{}' ELSE switchyard.visible_tenants() END;
    job switchyard.jobs;
    finished text;
BEGIN
    SELECT * INTO job FROM switchyard.jobs j
    WHERE j.id = cancel.job_id AND (everyone OR j.tenant = ANY (tenants))
    FOR UPDATE;
    IF FOUND THEN
        IF job.lease_owner IS NULL THEN
            PERFORM switchyard.archive(job, 'cancelled',
                jsonb_build_object('code', 'cancelled', 'message', 'cancelled before it started'), '[]');
            RETURN 'cancelled';
        END IF;
        UPDATE switchyard.jobs j SET cancel_requested = true WHERE j.id = job.id AND j.priority = job.priority;
        RETURN 'cancelling';
    END IF;
    SELECT r.status INTO finished FROM switchyard.results r
    WHERE r.job_id = cancel.job_id AND (everyone OR r.tenant = ANY (tenants));
    RETURN coalesce(finished, 'not_found');
END $$;

-- Rates a finished job's answer (0006), now only a job the caller's tenants own.
CREATE OR REPLACE FUNCTION switchyard.feedback(job_id bigint, score numeric, note text DEFAULT NULL) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    v_job_id constant bigint := feedback.job_id;
    v_score constant numeric := feedback.score;
    v_note constant text := feedback.note;
    everyone constant boolean := switchyard.is_unrestricted(switchyard.session_role());
    tenants constant text[] := CASE WHEN everyone THEN '{}' ELSE switchyard.visible_tenants() END;
    answered switchyard.results;
    new_id bigint;
BEGIN
    IF v_score IS NULL OR v_score < 0 OR v_score > 100 THEN
        PERFORM switchyard.reject(
            format('score must be between 0 and 100 (got %s)', coalesce(trim_scale(v_score)::text, 'NULL')),
            'Rate on a 0-100 scale, 100 best; for stars, 4 of 5 is 80.');
    END IF;
    IF length(v_note) > 2000 THEN
        PERFORM switchyard.reject(format('note is %s characters, over the limit of 2000', length(v_note)),
                                  'Shorten the note.');
    END IF;
    SELECT * INTO answered FROM switchyard.results r
    WHERE r.job_id = v_job_id AND (everyone OR r.tenant = ANY (tenants));
    IF NOT FOUND THEN
        IF EXISTS (SELECT 1 FROM switchyard.jobs j WHERE j.id = v_job_id AND (everyone OR j.tenant = ANY (tenants))) THEN
            PERFORM switchyard.reject(format('job %s has not finished yet', v_job_id),
                                      'Rate it once it has an answer (dispatcher wait ID).');
        END IF;
        RAISE EXCEPTION USING ERRCODE = 'P0002', MESSAGE = format('job %s not found', v_job_id),
            HINT = 'Check the id; results older than the retention period are pruned.';
    END IF;
    IF answered.model IS NULL THEN
        PERFORM switchyard.reject(format('job %s has no answer to rate: it ended %s', v_job_id, answered.status),
                                  'Only answered (succeeded) jobs can be rated.');
    END IF;
    INSERT INTO switchyard.feedback AS f (job_id, model, task_class, score, note)
    VALUES (v_job_id, answered.model, answered.task_class, v_score, v_note)
    RETURNING f.id INTO new_id;
    RETURN new_id;
END $$;

-- What workers and housekeeping call runs as the owner: no worker holds rights on the tables
-- these write, and row-level security (which the owner bypasses) costs the hot path nothing.
ALTER FUNCTION switchyard.claim(text, integer, integer, double precision)
    SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp;
ALTER FUNCTION switchyard.heartbeat(text, bigint[], integer[], double precision, integer, text, integer, text)
    SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp;
ALTER FUNCTION switchyard.complete(text, jsonb)
    SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp;
ALTER FUNCTION switchyard.rescue_expired(integer)
    SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp;
ALTER FUNCTION switchyard.expire_overdue(integer)
    SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp;
ALTER FUNCTION switchyard.ensure_result_partitions(integer)
    SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp;
ALTER FUNCTION switchyard.report_health(jsonb)
    SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp;
ALTER FUNCTION switchyard.evaluate_alerts(timestamp with time zone)
    SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp;

-- Ownership: everything in the schema moves to switchyard_admin, so definer functions run as a
-- role that can do no more than administer Switchyard (not as the superuser that may have run
-- this), and admins — its members — own what they administer. Indexes and the sequences of
-- serial and identity columns follow their tables.
DO $$
DECLARE
    object record;
BEGIN
    EXECUTE 'ALTER SCHEMA switchyard OWNER TO switchyard_admin';
    FOR object IN
        SELECT c.oid::regclass AS name, c.relkind FROM pg_catalog.pg_class c
        WHERE c.relnamespace = 'switchyard'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
          AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                          WHERE c.relkind = 'S' AND d.classid = 'pg_class'::regclass AND d.objid = c.oid
                                AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))
        ORDER BY c.oid
    LOOP
        EXECUTE format('ALTER %s %s OWNER TO switchyard_admin',
                       CASE object.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                           WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
                       object.name);
    END LOOP;
    FOR object IN
        SELECT p.oid::regprocedure AS name FROM pg_catalog.pg_proc p
        WHERE p.pronamespace = 'switchyard'::regnamespace
        ORDER BY p.oid
    LOOP
        EXECUTE format('ALTER ROUTINE %s OWNER TO switchyard_admin', object.name);
    END LOOP;
END $$;

-- Nothing is anyone's by default: no table rights and no EXECUTE for PUBLIC (functions get it
-- by default). Then each role gets exactly its list.
REVOKE ALL ON SCHEMA switchyard FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA switchyard FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA switchyard FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA switchyard FROM PUBLIC;
ALTER DEFAULT PRIVILEGES FOR ROLE switchyard_admin REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
-- Objects a later migration creates as itself (not as switchyard_admin) stay usable by the
-- definer functions.
ALTER DEFAULT PRIVILEGES IN SCHEMA switchyard GRANT ALL ON TABLES TO switchyard_admin;
ALTER DEFAULT PRIVILEGES IN SCHEMA switchyard GRANT ALL ON SEQUENCES TO switchyard_admin;
ALTER DEFAULT PRIVILEGES IN SCHEMA switchyard GRANT EXECUTE ON FUNCTIONS TO switchyard_admin;

GRANT USAGE ON SCHEMA switchyard TO switchyard_submitter, switchyard_worker;
GRANT SELECT ON switchyard.schema_migrations TO switchyard_submitter, switchyard_worker;
-- What the row-level security policies call, as the querying role.
GRANT EXECUTE ON FUNCTION switchyard.session_role(), switchyard.visible_tenants()
    TO switchyard_submitter, switchyard_worker;

-- Submitters: submit (by function or plain INSERT of the submission columns), read their
-- tenants' jobs and results, wait, cancel, retry and rate their tenants' jobs.
GRANT SELECT ON switchyard.jobs, switchyard.results TO switchyard_submitter;
GRANT INSERT (request, priority, task_class, affinity_key, run_at, deadline, max_attempts, idempotency_key, tenant,
              metadata, retry_of)
    ON switchyard.jobs TO switchyard_submitter;
GRANT USAGE ON SEQUENCE switchyard.job_id_seq TO switchyard_submitter;
GRANT EXECUTE ON FUNCTION
    switchyard.submit(jsonb, text, text, text, timestamp with time zone, timestamp with time zone, integer, text, text,
                      jsonb),
    switchyard.cancel(bigint), switchyard.job_status(bigint), switchyard.result(bigint), switchyard.retry(bigint),
    switchyard.feedback(bigint, numeric, text), switchyard.reject(text, text)
    TO switchyard_submitter;

-- Workers: claim, renew, write back, report health, keep house; read the catalog, the settings
-- and the fleet's health; every live job (they run them); their own heartbeat rows.
GRANT SELECT ON switchyard.jobs, switchyard.models, switchyard.routes, switchyard.settings, switchyard.model_health,
    switchyard.fleet_health, switchyard.feedback_scores
    TO switchyard_worker;
GRANT SELECT, DELETE ON switchyard.workers TO switchyard_worker;
GRANT EXECUTE ON FUNCTION
    switchyard.claim(text, integer, integer, double precision),
    switchyard.heartbeat(text, bigint[], integer[], double precision, integer, text, integer, text),
    switchyard.complete(text, jsonb), switchyard.rescue_expired(integer), switchyard.expire_overdue(integer),
    switchyard.ensure_result_partitions(integer), switchyard.report_health(jsonb),
    switchyard.evaluate_alerts(timestamp with time zone),
    switchyard.background_gate(timestamp with time zone), switchyard.escalation_horizon(integer),
    switchyard.price_multipliers(jsonb, timestamp with time zone), switchyard.window_days(jsonb),
    switchyard.window_next_start(jsonb, timestamp with time zone),
    switchyard.effective_breaker(text, timestamp with time zone), switchyard.setting(text),
    switchyard.numeric_setting(text)
    TO switchyard_worker;

-- Admins own everything above (migrate, import the catalog, change settings, prune, map
-- tenants) and see every tenant.

-- Row-level security: submitters see and insert only their tenants' rows; workers read every
-- live job; admins (owners) and the definer functions (run as the owner) are not restricted.
-- The tenant list is computed once per statement (the scalar subquery), not once per row.
ALTER TABLE switchyard.jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE switchyard.results ENABLE ROW LEVEL SECURITY;
ALTER TABLE switchyard.idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE switchyard.feedback ENABLE ROW LEVEL SECURITY;

CREATE POLICY jobs_tenant_read ON switchyard.jobs FOR SELECT TO switchyard_submitter
    USING (tenant = ANY ((SELECT switchyard.visible_tenants())::text[]));
CREATE POLICY jobs_tenant_submit ON switchyard.jobs FOR INSERT TO switchyard_submitter
    WITH CHECK (tenant = ANY ((SELECT switchyard.visible_tenants())::text[]));
CREATE POLICY jobs_worker_read ON switchyard.jobs FOR SELECT TO switchyard_worker USING (true);
CREATE POLICY jobs_admin ON switchyard.jobs TO switchyard_admin USING (true) WITH CHECK (true);

CREATE POLICY results_tenant_read ON switchyard.results FOR SELECT TO switchyard_submitter
    USING (tenant = ANY ((SELECT switchyard.visible_tenants())::text[]));
CREATE POLICY results_admin ON switchyard.results TO switchyard_admin USING (true) WITH CHECK (true);

-- Idempotency keys and ratings are written only by definer functions; no submitter or worker
-- holds rights on them, and if one is ever granted, the policies still show only its tenants.
CREATE POLICY idempotency_keys_tenant_read ON switchyard.idempotency_keys FOR SELECT TO switchyard_submitter
    USING (tenant = ANY ((SELECT switchyard.visible_tenants())::text[]));
CREATE POLICY idempotency_keys_admin ON switchyard.idempotency_keys TO switchyard_admin USING (true) WITH CHECK (true);
CREATE POLICY feedback_admin ON switchyard.feedback TO switchyard_admin USING (true) WITH CHECK (true);
