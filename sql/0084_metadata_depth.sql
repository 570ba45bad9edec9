-- Metadata is held to the request's depth limit.
--
-- jobs_before_insert limited metadata's size, not its nesting: a security review stored 5,000
-- levels in 30 KB, the job ran, and then `dispatcher result` and `wait` could not read the result
-- (the client parses 512 levels; `wait` for three jobs printed none). Metadata deeper than
-- max_request_depth (32) is now refused as a request is, with the setting to raise. A trigger of
-- its own, after jobs_before_insert (triggers fire in name order), which has made a NULL metadata
-- '{}': its WHEN clause keeps jobs without metadata, most of them, from calling it at all.

SET LOCAL ROLE switchyard_admin;

CREATE FUNCTION switchyard.check_metadata_depth() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
DECLARE
    max_depth integer;
BEGIN
    -- A container at level max_depth + 1 (metadata is level 1), as check_request counts (0007).
    IF jsonb_path_exists(NEW.metadata, 'strict $.**{8} ? (@.type() == "object" || @.type() == "array")') THEN
        max_depth := coalesce(switchyard.setting('max_request_depth')::integer, 32);
        IF jsonb_path_exists(NEW.metadata,
                             format('strict $.**{%s} ? (@.type() == "object" || @.type() == "array")', max_depth)::jsonpath)
        THEN
            PERFORM switchyard.reject(
                format('metadata nests objects and arrays deeper than the limit of %s levels', max_depth),
                'Keep metadata to flat identifiers, or have an operator raise the limit: UPDATE switchyard.settings '
                    || 'SET value = ''<levels>'' WHERE name = ''max_request_depth''.');
        END IF;
    END IF;
    RETURN NEW;
END $$;

REVOKE ALL ON FUNCTION switchyard.check_metadata_depth() FROM PUBLIC;

CREATE TRIGGER jobs_before_insert_metadata BEFORE INSERT ON switchyard.jobs
    FOR EACH ROW WHEN (NEW.metadata IS NOT NULL AND NEW.metadata <> '{}')
    EXECUTE FUNCTION switchyard.check_metadata_depth();
