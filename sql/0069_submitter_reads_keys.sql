-- An application looks its jobs up by its own idempotency keys.
--
-- The only way to find the job a key named was to submit the same request again: that returns
-- the job's id while the key is kept, and once prune has removed the key it creates a new job (a
-- new paid call). Submitters may now read switchyard.idempotency_keys: the policy 0007 made for
-- them (`idempotency_keys_tenant_read`) shows only their tenants' keys, as with jobs and results.
--
--   SELECT job_id FROM switchyard.idempotency_keys WHERE key = 'turn-1';

SET LOCAL ROLE switchyard_admin;

GRANT SELECT ON switchyard.idempotency_keys TO switchyard_submitter;
