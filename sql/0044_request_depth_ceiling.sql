-- The nesting limit stays below what a worker parses.
--
-- A request a worker cannot read failed the worker's whole claim (a review: one SQL-submitted
-- request with "seed": 1e400, which jsonb keeps exactly and a worker reads as a double, kept 31
-- other jobs of its claim leased until they failed lease_expired); the worker now fails that job
-- alone, unreadable_request. Refusing such numbers at submission took a search of every request's
-- tree (4-5% of a 1 KB submission, for input no client library writes), so it is left to the
-- worker. A max_request_depth above the 512 levels a worker parses let deeper requests in the
-- same way: the limit is now at most 256 (the CLI's own); a larger value set before is lowered,
-- with a warning.
SET LOCAL ROLE switchyard_admin;

DO $$
DECLARE
    old text;
BEGIN
    SELECT value INTO old FROM switchyard.settings
    WHERE name = 'max_request_depth' AND value ~ '^[0-9]{1,12}$' AND value::bigint > 256;
    IF FOUND THEN
        UPDATE switchyard.settings SET value = '256' WHERE name = 'max_request_depth';
        RAISE WARNING 'max_request_depth was %, more than workers can read; it is now 256', old;
    END IF;
END $$;

ALTER TABLE switchyard.settings
    ADD CONSTRAINT settings_max_request_depth_at_most_256 CHECK (
        name <> 'max_request_depth' OR NOT value ~ '^[0-9]{1,12}$' OR value::bigint <= 256);
