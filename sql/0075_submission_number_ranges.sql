-- Submissions: numbers in the provider's range, and said so.
--
-- * A negative whole number was refused as of the wrong type, "request.max_tokens must be a whole
--   number of at least 0, got -5", while 0 was refused as "must be between 1 and 2147483647":
--   the message was wrong, and every field's hint was 'For example "max_tokens": 256.' (an
--   integrator's walkthrough: "n": -2, "seed": -1, "top_k": -1). A whole number of either sign is
--   now of the right type, and held to its field's range, named in the message; a seed may be
--   negative, as OpenAI's may.
-- * temperature 7 and top_p -1 were stored, waited their turn and failed at the provider. The
--   fields OpenAI bounds are held to its ranges: temperature 0 to 2 (a worker caps it at 1 for
--   Anthropic), top_p 0 to 1, frequency_penalty and presence_penalty -2 to 2, top_logprobs 0 to 20.
--
-- check_request is 0070's otherwise.

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
    low numeric;
    high numeric;
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
                   AND (e.value)::numeric = trunc((e.value)::numeric))
        ORDER BY e.key LIMIT 1;
        -- Numbers a provider takes (OpenAI's ranges): its whole numbers are 32-bit (a seed 64-bit,
        -- of which a worker, reading JSON numbers as doubles, sends up to 2^53 - 1 exactly, either
        -- sign), a token limit or n of 0 is refused ("expected a value >= 1"), top_logprobs is 0 to
        -- 20, temperature 0 to 2, top_p 0 to 1, the penalties -2 to 2. max_tokens 1e30 passed and the
        -- job failed at the provider, after its wait; no worker could even read it as a limit.
        IF culprit IS NULL THEN
            SELECT e.key, e.value::text, r.low, r.high INTO culprit, actual, low, high
            FROM jsonb_each(options) AS e
            JOIN (VALUES ('max_tokens', 1::numeric, 2147483647::numeric), ('max_completion_tokens', 1, 2147483647),
                         ('n', 1, 2147483647), ('seed', -9007199254740991, 9007199254740991), ('top_logprobs', 0, 20),
                         ('top_k', 0, 2147483647), ('temperature', 0, 2), ('top_p', 0, 1),
                         ('frequency_penalty', -2, 2), ('presence_penalty', -2, 2)) AS r(key, low, high)
                ON r.key = e.key
            WHERE jsonb_typeof(e.value) = 'number' AND (e.value)::numeric NOT BETWEEN r.low AND r.high
            ORDER BY e.key LIMIT 1;
            IF culprit IS NOT NULL THEN
                PERFORM switchyard.reject(
                    format('request.%s must be between %s and %s, got %s', culprit, low, high,
                           -- 1e400 is 401 digits as numeric text.
                           CASE WHEN length(actual) > 40
                                THEN format('%s (%s digits)', left(actual, 12) || '…', length(ltrim(actual, '-')))
                                ELSE actual END),
                    CASE WHEN culprit IN ('max_tokens', 'max_completion_tokens')
                         THEN 'Give the most tokens the answer may have, e.g. "max_tokens": 256, or leave it out.'
                         ELSE 'See the OpenAI chat completions reference for the field''s range, or leave it out.' END);
            END IF;
        END IF;
        IF culprit IS NOT NULL THEN
            IF expected ? 'integer' AND actual = 'number' THEN
                PERFORM switchyard.reject(
                    format('request.%s must be a whole number, got %s', culprit,
                           CASE WHEN length((options -> culprit)::text) > 40
                                THEN format('%s (%s characters)', left((options -> culprit)::text, 12) || '…',
                                            length((options -> culprit)::text))
                                ELSE (options -> culprit)::text END),
                    CASE WHEN culprit IN ('max_tokens', 'max_completion_tokens')
                         THEN format('For example "%s": 256.', culprit)
                         ELSE 'See the OpenAI chat completions reference for the field''s range, or leave it out.' END);
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

