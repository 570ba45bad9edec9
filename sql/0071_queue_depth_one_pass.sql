-- queue_depth counts each partition in one pass, without sorting it.
--
-- Grouped by the oldest job's columns as well as the priority, the view joined every live job to
-- its partition's oldest and sorted the lot: with 1,000,000 background jobs queued, 1.5–2.0 s and
-- a 41 MB sort on disk per read, twice per `dispatcher status` (the queue and the backlog) and
-- every two seconds under `dispatcher top`. Each partition is now counted by itself (its rows
-- alone, pruned at run time), and the oldest job looked up beside the counts: 0.4–0.75 s.
--
-- The view is 0059's otherwise (same columns and rows).

SET LOCAL ROLE switchyard_admin;

CREATE OR REPLACE VIEW switchyard.queue_depth AS
SELECT p.priority, c.queued, c.scheduled, c.running, c.with_deadline,
       oldest.id AS oldest_job_id,
       oldest.waiting_since AS oldest_waiting_since,
       extract(epoch FROM now() - oldest.waiting_since)::double precision AS oldest_wait_s
FROM (VALUES ('interactive'), ('background')) AS p(priority)
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE j.lease_owner IS NULL AND (j.run_at <= now() OR j.waiting_since IS NOT NULL)) AS queued,
           count(*) FILTER (WHERE j.lease_owner IS NULL AND j.run_at > now() AND j.waiting_since IS NULL) AS scheduled,
           count(*) FILTER (WHERE j.lease_owner IS NOT NULL) AS running,
           count(*) FILTER (WHERE j.lease_owner IS NULL AND j.deadline IS NOT NULL) AS with_deadline
    FROM switchyard.jobs j WHERE j.priority = p.priority
) c
LEFT JOIN LATERAL (
    -- The longest waiting of: the due job that became due first (not the claim's first: a job
    -- submitted with a run_at in the past goes first, and was named as the oldest with its wait
    -- of a second) and the first put back to wait for a model (due again or not).
    SELECT w.id, w.waiting_since FROM (
        (SELECT o.id, coalesce(o.waiting_since, greatest(o.created_at, o.run_at)) AS waiting_since
         FROM switchyard.jobs o
         WHERE o.priority = p.priority AND o.lease_owner IS NULL AND o.run_at <= now()
         ORDER BY coalesce(o.waiting_since, greatest(o.created_at, o.run_at)), o.id
         LIMIT 1)
        UNION ALL
        (SELECT o.id, o.waiting_since
         FROM switchyard.jobs o
         WHERE o.priority = p.priority AND o.lease_owner IS NULL AND o.waiting_since IS NOT NULL
         ORDER BY o.waiting_since, o.id
         LIMIT 1)
    ) w
    ORDER BY w.waiting_since, w.id
    LIMIT 1
) oldest ON true
ORDER BY p.priority DESC;

