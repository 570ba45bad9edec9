-- Catalog: change notifications and the checks the import makes, kept by the database too, so a
-- hand-written UPDATE cannot store what `dispatcher models import` would refuse.

-- Workers reload the catalog when it changes, without a restart. One notification per table per
-- transaction: Postgres folds identical notifications sent in one transaction into one, so an
-- import of fifty models still wakes each worker once. The payload names the table.
CREATE FUNCTION switchyard.notify_catalog() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('switchyard_catalog', TG_TABLE_NAME);
    RETURN NULL;
END $$;

CREATE TRIGGER models_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON switchyard.models
    FOR EACH STATEMENT EXECUTE FUNCTION switchyard.notify_catalog();

CREATE TRIGGER routes_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON switchyard.routes
    FOR EACH STATEMENT EXECUTE FUNCTION switchyard.notify_catalog();

-- api_key_env holds the NAME of an environment variable; a key (sk-…, with dashes) fails this.
ALTER TABLE switchyard.models
    ADD CONSTRAINT models_api_key_env_check CHECK (api_key_env IS NULL OR api_key_env ~ '^[A-Za-z_][A-Za-z0-9_]{0,99}$'),
    ADD CONSTRAINT models_prices_check CHECK (price_per_1k_input >= 0 AND price_per_1k_output >= 0),
    ADD CONSTRAINT models_context_window_check CHECK (context_window > 0),
    ADD CONSTRAINT models_weight_check CHECK (weight >= 0),
    ADD CONSTRAINT models_capabilities_check CHECK (jsonb_typeof(capabilities) = 'object');

ALTER TABLE switchyard.routes
    ADD CONSTRAINT routes_strategy_check CHECK (strategy IN (
        'ordered', 'round_robin', 'weighted', 'least_busy', 'lowest_latency', 'cheapest', 'best_quality', 'hash')),
    ADD CONSTRAINT routes_quality_floor_check CHECK (quality_floor IS NULL OR quality_floor BETWEEN 0 AND 100),
    ADD CONSTRAINT routes_max_latency_check CHECK (max_latency_ms IS NULL OR max_latency_ms > 0),
    ADD CONSTRAINT routes_max_cost_check CHECK (max_cost_per_1k IS NULL OR max_cost_per_1k >= 0);
