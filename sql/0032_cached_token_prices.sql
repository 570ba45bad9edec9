-- Prices for prompt tokens the provider's cache serves or stores.
--
-- Every prompt token was charged at price_per_1k_input, but providers sell cache reads at a
-- discount (Anthropic 0.1×; OpenAI 0.5× to 0.1× by model) and Anthropic sells cache writes at a
-- surcharge (1.25× for its 5-minute cache): costs, base and primary costs, the savings report,
-- alerts and budgets were overstated exactly where affinity routing makes the caches hit. NULL
-- keeps a model on its input price, as before, so a catalog without these columns costs the same.
--
-- Numeric and checked like the other prices (numeric(20, 10), never negative), so a hand-written
-- UPDATE cannot store what `dispatcher models import` refuses.
--
-- As 0007 asks: run as the schema's owner, so the columns are owned like the rest of the table.

SET LOCAL ROLE switchyard_admin;

ALTER TABLE switchyard.models
    ADD COLUMN price_per_1k_cached_input numeric(20, 10),
    ADD COLUMN price_per_1k_cache_write numeric(20, 10),
    ADD CONSTRAINT models_cache_prices_check
        CHECK (price_per_1k_cached_input >= 0 AND price_per_1k_cache_write >= 0);
COMMENT ON COLUMN switchyard.models.price_per_1k_cached_input IS
    'Price per 1K prompt tokens read from the provider''s prompt cache; NULL: price_per_1k_input.';
COMMENT ON COLUMN switchyard.models.price_per_1k_cache_write IS
    'Price per 1K prompt tokens written to the provider''s prompt cache (Anthropic''s cache_creation_input_tokens); '
    'NULL: price_per_1k_input.';
