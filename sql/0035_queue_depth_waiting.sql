-- queue_depth counts and measures jobs put back to wait for a model as waiting.
--
-- When every model of an interactive job's rule is down, the worker puts the job back to look
-- again later (its run_at moves; jobs.waiting_since keeps when it began to wait, 0029). The view
-- counted such jobs as scheduled and left them out of its oldest wait, so during an outage
-- `dispatcher status` showed "queued 0, scheduled 35" and no wait, while the jobs had waited
-- 24 s and the queue-wait alert (which reads waiting_since) said 36. Now they are queued, and
-- the oldest wait is measured from waiting_since, as the alert and the write-back measure it.
-- The columns are 0006's.

SET LOCAL ROLE switchyard_admin;

CREATE OR REPLACE VIEW switchyard.queue_depth AS
SELECT p.priority,
       count(j.id) FILTER (WHERE j.lease_owner IS NULL AND (j.run_at <= now() OR j.waiting_since IS NOT NULL)) AS queued,
       count(j.id) FILTER (WHERE j.lease_owner IS NULL AND j.run_at > now() AND j.waiting_since IS NULL) AS scheduled,
       count(j.id) FILTER (WHERE j.lease_owner IS NOT NULL) AS running,
       count(j.id) FILTER (WHERE j.lease_owner IS NULL AND j.deadline IS NOT NULL) AS with_deadline,
       oldest.id AS oldest_job_id,
       oldest.waiting_since AS oldest_waiting_since,
       extract(epoch FROM now() - oldest.waiting_since)::double precision AS oldest_wait_s
FROM (VALUES ('interactive'), ('background')) AS p(priority)
LEFT JOIN switchyard.jobs j ON j.priority = p.priority
LEFT JOIN LATERAL (
    -- The longest waiting of: the first due (by the claim's order, which the index serves) and
    -- the first put back to wait for a model (due again or not).
    SELECT w.id, w.waiting_since FROM (
        (SELECT o.id, coalesce(o.waiting_since, greatest(o.created_at, o.run_at)) AS waiting_since
         FROM switchyard.jobs o
         WHERE o.priority = p.priority AND o.lease_owner IS NULL AND o.run_at <= now()
         ORDER BY o.run_at, o.id
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
GROUP BY p.priority, oldest.id, oldest.waiting_since
ORDER BY p.priority DESC;
