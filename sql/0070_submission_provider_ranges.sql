-- Submissions: what a provider would refuse, refused at submission; a key given twice in one
-- transaction said as such; a blank affinity key is none; submit(priority => NULL) is interactive.
--
-- * "content": [] and "max_tokens": 1e30 were stored, waited their turn and failed at the provider
--   (OpenAI: "expected an array with minimum length 1", "integer above maximum value"). An empty
--   content array is refused, and the whole-number fields are held to the provider's range:
--   32-bit (a seed up to 2^53 - 1, what a worker carries exactly), and at least 1 for max_tokens,
--   max_completion_tokens and n.
-- * A multi-row INSERT giving one key to two different requests was refused with "already names
--   job N … send the first request again to get job N back": job N was the other row, rolled back
--   with the statement. A key first given in the same transaction is named as given twice in it.
-- * An affinity_key of '' or spaces is no key (stored NULL): '   ' was a key every job sent with it
--   shared (one model for all, spilling as a hot key), while '' was taken for none.
-- * switchyard.submit(priority => NULL) was refused while a NULL run_at, max_attempts or metadata
--   takes its default: NULL is the default, interactive.
--
-- check_request is 0059's otherwise, jobs_before_insert 0068's, submit 0007's.

SET LOCAL ROLE switchyard_admin;

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
            'Shorten the request, or have an operator raise the limit: UPDATE switchyard.settings SET value = ''<bytes>'' '
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
                'Flatten the request, or have an operator raise the limit: UPDATE switchyard.settings SET value = ''<levels>'' '
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
            'Send fewer messages (summarise older turns), or have an operator raise the limit: UPDATE switchyard.settings '
                || 'SET value = ''<count>'' WHERE name = ''max_messages''.');
    END IF;
    FOR message IN SELECT value FROM jsonb_array_elements(p_request -> 'messages') LOOP
        IF jsonb_typeof(message) <> 'object' THEN
            PERFORM switchyard.reject(
                format('request.messages[%s] must be an object with role and content, got %s',
                       position, jsonb_typeof(message)), example);
        END IF;
        IF NOT message ? 'role' THEN
            PERFORM switchyard.reject(format('request.messages[%s].role is missing', position), example);
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
        -- OpenAI: content is required unless the assistant message has tool_calls (or function_call).
        IF NOT message ? 'content'
           AND NOT (role = 'assistant'
                    AND (coalesce(jsonb_typeof(message -> 'tool_calls') = 'array'
                                  AND jsonb_array_length(message -> 'tool_calls') > 0, false)
                         OR coalesce(jsonb_typeof(message -> 'function_call') = 'object', false))) THEN
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
                        'Shorten it, or have an operator raise the limit: UPDATE switchyard.settings SET value = ''<characters>'' '
                            || 'WHERE name = ''max_content_chars''.');
                END IF;
            END IF;
        ELSIF jsonb_typeof(message -> 'content') = 'array' THEN
            -- OpenAI refuses an empty array ("expected an array with minimum length 1"): the job
            -- failed at the provider after its wait.
            IF jsonb_array_length(message -> 'content') = 0 THEN
                PERFORM switchyard.reject(
                    format('request.messages[%s].content must not be an empty array', position),
                    'Give the message a part, e.g. [{"type":"text","text":"Hello"}], or its text as a string.');
            END IF;
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
                            'Shorten it, or have an operator raise the limit: UPDATE switchyard.settings SET value = ''<characters>'' '
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
                'Remove it (OpenAI refuses unknown arguments too), or have an operator allow it: UPDATE switchyard.settings '
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
        -- Whole numbers a provider takes: OpenAI's are 32-bit (a seed 64-bit, of which a worker,
        -- reading JSON numbers as doubles, sends up to 2^53 - 1 exactly), and a token limit or n
        -- of 0 is refused ("expected a value >= 1"). max_tokens 1e30 passed and the job failed at
        -- the provider, after its wait; no worker could even read it as a limit.
        IF culprit IS NULL THEN
            SELECT e.key, e.value::text INTO culprit, actual
            FROM jsonb_each(options) AS e
            WHERE e.key IN ('max_tokens', 'max_completion_tokens', 'n', 'seed', 'top_logprobs', 'top_k')
              AND jsonb_typeof(e.value) = 'number'
              AND ((e.value)::numeric > CASE e.key WHEN 'seed' THEN 9007199254740991 ELSE 2147483647 END
                   OR (e.key IN ('max_tokens', 'max_completion_tokens', 'n') AND (e.value)::numeric < 1))
            ORDER BY e.key LIMIT 1;
            IF culprit IS NOT NULL THEN
                PERFORM switchyard.reject(
                    format('request.%s must be between %s and %s, got %s', culprit,
                           CASE WHEN culprit IN ('max_tokens', 'max_completion_tokens', 'n') THEN 1 ELSE 0 END,
                           CASE culprit WHEN 'seed' THEN '9007199254740991' ELSE '2147483647' END,
                           -- 1e400 is 401 digits as numeric text.
                           CASE WHEN length(actual) > 40 THEN format('%s (%s digits)', left(actual, 12) || '…', length(actual))
                                ELSE actual END),
                    CASE WHEN culprit IN ('max_tokens', 'max_completion_tokens')
                         THEN 'Give the most tokens the answer may have, e.g. "max_tokens": 256, or leave it out.'
                         ELSE 'See the OpenAI chat completions reference for the field''s range.' END);
            END IF;
        END IF;
        IF culprit IS NOT NULL THEN
            IF expected ? 'integer' AND actual = 'number' THEN
                PERFORM switchyard.reject(
                    format('request.%s must be a whole number of at least 0, got %s', culprit,
                           CASE WHEN length((options -> culprit)::text) > 40
                                THEN format('%s (%s characters)', left((options -> culprit)::text, 12) || '…',
                                            length((options -> culprit)::text))
                                ELSE (options -> culprit)::text END),
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
                || '(an operator lists them: dispatcher models list).');
    END IF;
END $$;

CREATE OR REPLACE FUNCTION switchyard.jobs_before_insert() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
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
    IF NEW.affinity_key ~ '^\s*$' AND NEW.retry_of IS NULL THEN
        NEW.affinity_key := NULL;
    END IF;
    IF length(NEW.tenant) > 200 THEN
        PERFORM switchyard.reject(format('tenant is %s characters, over the limit of 200', length(NEW.tenant)),
                                  'Use a shorter tenant name.');
    END IF;
    IF length(NEW.idempotency_key) > 500 THEN
        PERFORM switchyard.reject(
            format('idempotency_key is %s characters, over the limit of 500', length(NEW.idempotency_key)),
            'Use a shorter key (hash a long one).');
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
        -- Blank is no tenant's name: said as such before the role's tenants are asked (a role of one
        -- tenant was told it "may not submit for tenant ''", and a gateway's '   ' was taken).
        IF NEW.tenant ~ '^\s*$' THEN
            PERFORM switchyard.reject('tenant must not be empty (or only spaces)',
                'Name a tenant (a role that acts for one tenant may leave it out, and submits for that one).');
        END IF;
        -- ' acme' was a tenant of its own beside 'acme' (a gateway's typo splits a tenant's jobs).
        IF NEW.tenant ~ '^\s|\s$' THEN
            PERFORM switchyard.reject(
                format('tenant %s begins or ends with white space', quote_literal(left(NEW.tenant, 60))),
                format('Name it without: %s.', quote_literal(left(btrim(NEW.tenant, E' \t\r\n'), 60))));
        END IF;
        -- The tenant comes from the session (and is checked against the role), never just from the row.
        NEW.tenant := switchyard.job_tenant(NEW.tenant);
    END IF;
    -- Even an admin's: '*' maps a role to every tenant, and '' would share the idempotency keys of
    -- jobs with no tenant.
    IF NEW.tenant = '*' THEN
        PERFORM switchyard.reject('tenant ''*'' is reserved (it maps a role to every tenant)', 'Name a real tenant.');
    END IF;
    -- A retry keeps its job's tenant, even one of spaces taken before this check.
    IF NEW.retry_of IS NULL AND NEW.tenant ~ '^\s*$' THEN
        PERFORM switchyard.reject('tenant must not be empty (or only spaces)',
            'Name a tenant (a role that acts for one tenant may leave it out, and submits for that one).');
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
        (submit.request, coalesce(submit.priority, 'interactive'), submit.task_class, submit.affinity_key, coalesce(submit.run_at, now()),
         submit.deadline, coalesce(submit.max_attempts, 3), submit.idempotency_key, submit.tenant,
         coalesce(submit.metadata, '{}'))
    RETURNING j.id INTO new_id;
    IF new_id IS NULL THEN
        SELECT k.job_id INTO new_id FROM switchyard.idempotency_keys k
        WHERE k.tenant = coalesce(switchyard.job_tenant(submit.tenant), '') AND k.key = submit.idempotency_key;
    END IF;
    RETURN new_id;
END $$;
