-- An application's role may compute its tenants' rate tokens.
--
-- sql/0096 gave switchyard_submitter the bucket's columns of tenant_limits (max_per_minute,
-- rate_tokens, rate_at) but not rate_tokens_now, which turns them into the tokens left now, and
-- the schema takes EXECUTE from PUBLIC: an application's `dispatcher tenants` failed with
-- "permission denied for function rate_tokens_now" (with a hint calling it an operator's command),
-- and `wait` and `result` lost why a job had not run yet (its run_at, the worker's reason, its
-- tenant's hold), their query refused and its error put aside. The function is arithmetic on the
-- values it is given.

SET LOCAL ROLE switchyard_admin;

GRANT EXECUTE ON FUNCTION switchyard.rate_tokens_now(integer, double precision, timestamptz) TO switchyard_submitter;
