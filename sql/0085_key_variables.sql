-- A model's api_key_env may not name the worker's connection to Postgres.
--
-- A worker sends the variable a model's api_key_env names to the model's base_url: a security
-- review's admin imported models naming DATABASE_URL (and AWS_SECRET_ACCESS_KEY) with its own
-- server as base_url, and the workers sent it their database password. The worker's connection
-- (DATABASE_URL, libpq's PG… variables) is never a provider's key: refused here as by `dispatcher
-- models import` (KeyVariables.refusal), and not read by workers whatever the table holds. A
-- worker's operator may also list the only variables its catalog may use
-- (SWITCHYARD_KEY_VARIABLES). NOT VALID: a catalog holding one already migrates (its workers skip
-- the model, saying why).

SET LOCAL ROLE switchyard_admin;

ALTER TABLE switchyard.models
    ADD CONSTRAINT models_api_key_env_not_workers_check
        CHECK (api_key_env IS NULL OR api_key_env !~ '^(DATABASE_URL|PG[A-Z]+)$') NOT VALID;
