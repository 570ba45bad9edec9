-- A model out of credit counts as erring, whatever status its provider says it with.
--
-- is_model_error counted no 4xx but 401, 403, 404, 408 and 429 as the model's error: a request's
-- fault is not the model's. Anthropic says "credit balance is too low" with a 400, OpenRouter
-- and DeepSeek say it with a 402: the worker failed over and opened the breaker, but status,
-- call_stats and the error-rate alert showed the model at 0% errors beside its open breaker (a
-- walkthrough against a fake provider). Workers from this release on write the trail outcome
-- `quota_exhausted` for such a call (earlier ones wrote `error`, which stays as it was counted).
--
-- 0006's otherwise.

SET LOCAL ROLE switchyard_admin;

CREATE OR REPLACE FUNCTION switchyard.is_model_error(p_outcome text, p_http_status integer) RETURNS boolean
    LANGUAGE sql IMMUTABLE AS $$
    SELECT p_outcome = 'quota_exhausted'
           OR (p_outcome IN ('error', 'rate_limited')
               AND NOT coalesce(p_http_status BETWEEN 400 AND 499 AND p_http_status NOT IN (401, 403, 404, 408, 429), false))
$$;
