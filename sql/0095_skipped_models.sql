-- Each worker's models that it alone skips, for status.
--
-- A worker skips a model whose key its environment lacks (or may not read, SWITCHYARD_KEY_VARIABLES),
-- or whose TLS skip its operator has not confirmed: other workers keep the model, and the fleet's
-- breaker is not told. Only the worker's log said so: a review's only live worker skipped a model
-- and its jobs waited, and status showed them waiting with no reason (security.md claimed status
-- said why). Workers now note the models they skip, with why, in their row of switchyard.workers
-- (switchyard.note_skipped_models, after a heartbeat, when the set changed and once a minute),
-- and worker_status shows them.

SET LOCAL ROLE switchyard_admin;

ALTER TABLE switchyard.workers ADD COLUMN skipped_models jsonb NOT NULL DEFAULT '{}';

CREATE OR REPLACE VIEW switchyard.worker_status AS
SELECT w.id, w.hostname, w.pid, w.version, w.concurrency, w.in_flight,
       (SELECT count(*) FROM switchyard.jobs j WHERE j.lease_owner = w.id) AS leased,
       w.started_at, w.heartbeat_at,
       extract(epoch FROM now() - w.heartbeat_at)::double precision AS heartbeat_age_s,
       w.heartbeat_at > now() - interval '30 seconds' AS alive,
       w.skipped_models
FROM switchyard.workers w
ORDER BY w.id;

-- Notes the models p_worker (this process of it: p_instance) skips, {"model": "why", …}, in place
-- of what it noted before ({} for none). Returns whether it did: not while another session holds
-- the worker's row (an operator's open transaction, a take-over in flight), which it does not wait
-- for, as heartbeat does not (a review's worker waited here 12 s, after its heartbeat, and its
-- leases ran out); the worker notes it again at its next heartbeat.
CREATE FUNCTION switchyard.note_skipped_models(p_worker text, p_instance text, p_skipped jsonb) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, switchyard, pg_temp AS $$
BEGIN
    IF jsonb_typeof(p_skipped) IS DISTINCT FROM 'object'
       OR EXISTS (SELECT FROM jsonb_each(p_skipped) e WHERE jsonb_typeof(e.value) <> 'string')
       OR octet_length(p_skipped::text) > 65536 THEN
        PERFORM switchyard.reject('note_skipped_models: p_skipped is an object of model names and reasons (text), '
                                      || 'at most 64 KiB',
                                  'Pass {"model": "why it is skipped", …}, or {} for none.');
    END IF;
    UPDATE switchyard.workers w SET skipped_models = p_skipped
    WHERE w.id = (SELECT o.id FROM switchyard.workers o
                  WHERE o.id = p_worker AND o.instance IS NOT DISTINCT FROM p_instance
                  FOR UPDATE SKIP LOCKED);
    RETURN FOUND;
END $$;
REVOKE ALL ON FUNCTION switchyard.note_skipped_models(text, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION switchyard.note_skipped_models(text, text, jsonb) TO switchyard_worker;
