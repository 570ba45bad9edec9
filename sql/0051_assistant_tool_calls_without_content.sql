-- An assistant message with tool_calls may leave content out, as OpenAI documents.
--
-- OpenAI's chat completions take an assistant message's content as "required unless tool_calls or
-- function_call is specified", and its SDKs send such a message (a conversation's history of tool
-- calls) without the key. check_request refused it ("request.messages[1].content is missing")
-- although it took "content": null. It takes it when tool_calls is a non-empty array (or
-- function_call an object); an empty or null tool_calls still needs content. check_request is
-- 0007's otherwise.

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
