-- Queue core: validated submission (by function or plain INSERT), wake-ups, batched claims,
-- leases, fenced write-back, rescue, deadlines, cancellation, retention.

-- Settings an operator may change with UPDATE.
CREATE TABLE switchyard.settings (
    name        text PRIMARY KEY,
    value       text NOT NULL,
    description text NOT NULL
);

INSERT INTO switchyard.settings (name, value, description) VALUES
    ('max_request_bytes', '1048576', 'Largest request accepted, in bytes of its JSON text.');

CREATE FUNCTION switchyard.setting(p_name text) RETURNS text
    LANGUAGE sql STABLE AS $$ SELECT value FROM switchyard.settings WHERE name = p_name $$;

-- Idempotency keys outlive the jobs they name (a finished job moves to results), so they live in a
-- table of their own, unique per tenant.
CREATE TABLE switchyard.idempotency_keys (
    tenant     text        NOT NULL DEFAULT '',
    key        text        NOT NULL,
    job_id     bigint      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, key)
);

-- A row whose priority no partition takes lands here, where the validation trigger refuses it
-- with a message that says what to do (instead of "no partition of relation found").
CREATE TABLE switchyard.jobs_unrouted PARTITION OF switchyard.jobs DEFAULT;

CREATE INDEX jobs_deadline_idx ON switchyard.jobs (deadline)
    WHERE deadline IS NOT NULL AND lease_owner IS NULL;

-- Raises invalid_parameter_value (22023) with a message that names the field and the rule.
CREATE FUNCTION switchyard.reject(p_message text, p_hint text) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = p_message, HINT = p_hint;
END $$;

-- Checks an OpenAI chat request: an object, under the size limit, with a non-empty `messages`
-- array of {role, content}, and a `model` (if any) that the catalog knows.
CREATE FUNCTION switchyard.check_request(p_request jsonb) RETURNS void
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    example constant text := 'Send an OpenAI chat request, e.g. {"messages":[{"role":"user","content":"Hello"}]}.';
    max_bytes bigint := coalesce(switchyard.setting('max_request_bytes')::bigint, 1048576);
    size bigint;
    message jsonb;
    position integer := 0;
    role text;
    model text;
BEGIN
    IF p_request IS NULL THEN
        PERFORM switchyard.reject('request is required', example);
    END IF;
    IF jsonb_typeof(p_request) <> 'object' THEN
        PERFORM switchyard.reject(format('request must be a JSON object, got %s', jsonb_typeof(p_request)), example);
    END IF;
    size := octet_length(p_request::text);
    IF size > max_bytes THEN
        PERFORM switchyard.reject(
            format('request is %s bytes, over the limit of %s bytes', size, max_bytes),
            'Shorten the request, or raise the limit: UPDATE switchyard.settings SET value = ''<bytes>'' '
                || 'WHERE name = ''max_request_bytes''.');
    END IF;
    IF NOT p_request ? 'messages' THEN
        PERFORM switchyard.reject('request.messages is missing', example);
    END IF;
    IF jsonb_typeof(p_request -> 'messages') <> 'array' THEN
        PERFORM switchyard.reject(
            format('request.messages must be an array, got %s', jsonb_typeof(p_request -> 'messages')), example);
    END IF;
    IF jsonb_array_length(p_request -> 'messages') = 0 THEN
        PERFORM switchyard.reject('request.messages must not be empty', example);
    END IF;
    FOR message IN SELECT value FROM jsonb_array_elements(p_request -> 'messages') LOOP
        IF jsonb_typeof(message) <> 'object' THEN
            PERFORM switchyard.reject(
                format('request.messages[%s] must be an object with role and content, got %s',
                       position, jsonb_typeof(message)), example);
        END IF;
        IF jsonb_typeof(message -> 'role') IS DISTINCT FROM 'string' THEN
            PERFORM switchyard.reject(format('request.messages[%s].role must be a string', position), example);
        END IF;
        role := message ->> 'role';
        IF role NOT IN ('system', 'developer', 'user', 'assistant', 'tool') THEN
            PERFORM switchyard.reject(
                format('request.messages[%s].role must be system, developer, user, assistant or tool (got %s)',
                       position, quote_literal(left(role, 40))), example);
        END IF;
        IF NOT message ? 'content' THEN
            PERFORM switchyard.reject(format('request.messages[%s].content is missing', position), example);
        END IF;
        IF jsonb_typeof(message -> 'content') NOT IN ('string', 'array')
           AND NOT (role = 'assistant' AND jsonb_typeof(message -> 'content') = 'null') THEN
            PERFORM switchyard.reject(
                format('request.messages[%s].content must be a string or an array of parts, got %s',
                       position, jsonb_typeof(message -> 'content')), example);
        END IF;
        position := position + 1;
    END LOOP;
    model := p_request ->> 'model';
    IF model IS NOT NULL AND model NOT IN ('', 'auto')
       AND NOT EXISTS (SELECT 1 FROM switchyard.models m WHERE m.name = model) THEN
        PERFORM switchyard.reject(
            format('request.model names an unknown model: %s', quote_literal(left(model, 100))),
            'Leave "model" out to let Switchyard route the request, or name a model from the catalog '
                || '(dispatcher models list).');
    END IF;
END $$;

-- Every insert into switchyard.jobs, by switchyard.submit or a plain INSERT, passes through here.
CREATE FUNCTION switchyard.jobs_before_insert() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.priority IS NULL OR NEW.priority NOT IN ('interactive', 'background') THEN
        PERFORM switchyard.reject(
            format('priority must be interactive or background (got %s)', coalesce(quote_literal(NEW.priority), 'NULL')),
            'Use interactive when a person waits for the answer, background for batch work.');
    END IF;
    PERFORM switchyard.check_request(NEW.request);
    IF NEW.max_attempts IS NULL OR NEW.max_attempts NOT BETWEEN 1 AND 100 THEN
        PERFORM switchyard.reject(
            format('max_attempts must be between 1 and 100 (got %s)', coalesce(NEW.max_attempts::text, 'NULL')),
            'Leave it out for the default of 3.');
    END IF;
    NEW.run_at := coalesce(NEW.run_at, now());
    IF NEW.deadline IS NOT NULL AND NEW.deadline <= NEW.run_at THEN
        PERFORM switchyard.reject(
            format('deadline (%s) must be after run_at (%s)', NEW.deadline, NEW.run_at),
            'Give a deadline in the future, or leave it out.');
    END IF;
    IF NEW.metadata IS NULL OR jsonb_typeof(NEW.metadata) <> 'object' THEN
        PERFORM switchyard.reject('metadata must be a JSON object', 'Leave it out, or pass e.g. {"team":"search"}.');
    END IF;
    IF length(NEW.task_class) > 100 OR length(NEW.affinity_key) > 500 OR length(NEW.tenant) > 200
       OR length(NEW.idempotency_key) > 500 THEN
        PERFORM switchyard.reject(
            'task_class, affinity_key, tenant and idempotency_key are limited to 100, 500, 200 and 500 characters',
            'Use shorter identifiers (hash long ones).');
    END IF;
    -- A new job starts clean, whatever the INSERT said about its run state.
    NEW.attempt := 0;
    NEW.lease_owner := NULL;
    NEW.lease_expires_at := NULL;
    NEW.claimed_at := NULL;
    NEW.cancel_requested := false;
    NEW.attempts := '[]';
    NEW.created_at := now();
    IF NEW.idempotency_key IS NOT NULL THEN
        INSERT INTO switchyard.idempotency_keys (tenant, key, job_id)
        VALUES (coalesce(NEW.tenant, ''), NEW.idempotency_key, NEW.id)
        ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            RETURN NULL;  -- the key is taken: this is a repeat of an earlier submission
        END IF;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER jobs_before_insert BEFORE INSERT ON switchyard.jobs
    FOR EACH ROW EXECUTE FUNCTION switchyard.jobs_before_insert();

-- One wake-up per statement, however many rows it inserted. Postgres also folds identical
-- notifications within a transaction into one.
CREATE FUNCTION switchyard.notify_jobs() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('switchyard_jobs', '');
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_notify AFTER INSERT ON switchyard.jobs
    FOR EACH STATEMENT EXECUTE FUNCTION switchyard.notify_jobs();

-- Finished jobs are announced on switchyard_results, their ids comma-separated (in chunks that
-- fit NOTIFY's 8000-byte payload), one notification per statement.
CREATE FUNCTION switchyard.notify_results() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    payload text;
BEGIN
    FOR payload IN
        SELECT string_agg(job_id::text, ',') FROM (
            SELECT job_id, (row_number() OVER ()) / 300 AS chunk FROM finished
        ) numbered GROUP BY chunk
    LOOP
        PERFORM pg_notify('switchyard_results', payload);
    END LOOP;
    RETURN NULL;
END $$;

CREATE TRIGGER results_notify AFTER INSERT ON switchyard.results
    REFERENCING NEW TABLE AS finished
    FOR EACH STATEMENT EXECUTE FUNCTION switchyard.notify_results();

-- Submits a job and returns its id. A repeated idempotency key (per tenant) returns the id of
-- the job it first created, whether that job is still queued or long finished.
CREATE FUNCTION switchyard.submit(
    request         jsonb,
    priority        text        DEFAULT 'interactive',
    task_class      text        DEFAULT NULL,
    affinity_key    text        DEFAULT NULL,
    run_at          timestamptz DEFAULT now(),
    deadline        timestamptz DEFAULT NULL,
    max_attempts    integer     DEFAULT 3,
    idempotency_key text        DEFAULT NULL,
    tenant          text        DEFAULT NULL,
    metadata        jsonb       DEFAULT '{}'
) RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
BEGIN
    INSERT INTO switchyard.jobs AS j
        (request, priority, task_class, affinity_key, run_at, deadline, max_attempts, idempotency_key, tenant,
         metadata)
    VALUES
        (submit.request, submit.priority, submit.task_class, submit.affinity_key, coalesce(submit.run_at, now()),
         submit.deadline, coalesce(submit.max_attempts, 3), submit.idempotency_key, submit.tenant,
         coalesce(submit.metadata, '{}'))
    RETURNING j.id INTO new_id;
    IF new_id IS NULL THEN
        SELECT k.job_id INTO new_id FROM switchyard.idempotency_keys k
        WHERE k.tenant = coalesce(submit.tenant, '') AND k.key = submit.idempotency_key;
    END IF;
    RETURN new_id;
END $$;

-- Moves one live job to results with a final status. For the rare paths (cancel, expiry,
-- rescue); the hot write-back in switchyard.complete is set-based.
CREATE FUNCTION switchyard.archive(p_job switchyard.jobs, p_status text, p_error jsonb, p_trail jsonb)
    RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM switchyard.jobs WHERE id = p_job.id AND priority = p_job.priority;
    INSERT INTO switchyard.results
        (job_id, status, priority, task_class, affinity_key, tenant, request, error, attempts, attempt_count,
         created_at, started_at, worker, retry_of, metadata)
    VALUES
        (p_job.id, p_status, p_job.priority, p_job.task_class, p_job.affinity_key, p_job.tenant, p_job.request,
         p_error, p_job.attempts || coalesce(p_trail, '[]'), p_job.attempt, p_job.created_at, p_job.claimed_at,
         p_job.lease_owner, p_job.retry_of, p_job.metadata);
END $$;

-- Claims up to p_free_slots jobs for a worker: interactive first, then background only into
-- p_background_slots (the worker's slots beyond those it reserves for interactive work).
-- SKIP LOCKED lets many workers claim at once without waiting on each other; each claim counts
-- an attempt and starts a lease that the worker's heartbeat renews.
CREATE FUNCTION switchyard.claim(
    p_worker text, p_free_slots integer, p_background_slots integer, p_lease_seconds double precision
) RETURNS SETOF switchyard.jobs
    LANGUAGE plpgsql AS $$
DECLARE
    claimed integer := 0;
BEGIN
    IF p_free_slots <= 0 THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH picked AS (
        SELECT j.id FROM switchyard.jobs_interactive j
        WHERE j.lease_owner IS NULL AND j.run_at <= now() AND (j.deadline IS NULL OR j.deadline > now())
        ORDER BY j.run_at, j.id
        LIMIT p_free_slots
        FOR NO KEY UPDATE SKIP LOCKED
    )
    UPDATE switchyard.jobs_interactive j
    SET lease_owner = p_worker, lease_expires_at = now() + make_interval(secs => p_lease_seconds),
        attempt = j.attempt + 1, claimed_at = now()
    FROM picked WHERE j.id = picked.id
    RETURNING j.*;
    GET DIAGNOSTICS claimed = ROW_COUNT;
    IF p_background_slots <= 0 OR claimed >= p_free_slots THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH picked AS (
        SELECT j.id FROM switchyard.jobs_background j
        WHERE j.lease_owner IS NULL AND j.run_at <= now() AND (j.deadline IS NULL OR j.deadline > now())
        ORDER BY j.run_at, j.id
        LIMIT least(p_free_slots - claimed, p_background_slots)
        FOR NO KEY UPDATE SKIP LOCKED
    )
    UPDATE switchyard.jobs_background j
    SET lease_owner = p_worker, lease_expires_at = now() + make_interval(secs => p_lease_seconds),
        attempt = j.attempt + 1, claimed_at = now()
    FROM picked WHERE j.id = picked.id
    RETURNING j.*;
END $$;

-- Renews, in one statement, the leases a worker still holds (matched on id, owner AND attempt:
-- a job rescued and claimed again is no longer this worker's), records the worker's heartbeat,
-- and returns the jobs it still holds with their cancel flags. A job missing from the answer
-- has been taken away: the worker must abandon it.
CREATE FUNCTION switchyard.heartbeat(
    p_worker text, p_job_ids bigint[], p_attempts integer[], p_lease_seconds double precision,
    p_concurrency integer, p_hostname text, p_pid integer, p_version text
) RETURNS TABLE (job_id bigint, cancel_requested boolean)
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO switchyard.workers AS w (id, hostname, pid, version, concurrency, in_flight)
    VALUES (p_worker, p_hostname, p_pid, p_version, p_concurrency, coalesce(cardinality(p_job_ids), 0))
    ON CONFLICT (id) DO UPDATE
        SET in_flight = EXCLUDED.in_flight, concurrency = EXCLUDED.concurrency, heartbeat_at = now();
    RETURN QUERY
    UPDATE switchyard.jobs j
    SET lease_expires_at = now() + make_interval(secs => p_lease_seconds)
    FROM unnest(p_job_ids, p_attempts) AS held(id, attempt)
    WHERE j.id = held.id AND j.attempt = held.attempt AND j.lease_owner = p_worker
    RETURNING j.id, j.cancel_requested;
END $$;

-- Writes back a batch of outcomes in one statement each kind, fenced on (id, owner, attempt):
--   result  - the job ends: deleted from jobs and inserted into results, in one statement, so a
--             job has exactly one result whoever tries to write it;
--   retry   - the job goes back to the queue at retry_at, its trail extended;
--   release - the job goes back to the queue now, its attempt not spent (graceful shutdown).
-- Returns the ids that were written; an id missing from the answer lost its lease, and nothing
-- was written for it.
CREATE FUNCTION switchyard.complete(p_worker text, p_items jsonb)
    RETURNS TABLE (job_id bigint, kind text)
    LANGUAGE plpgsql AS $$
DECLARE
    requeued integer;
BEGIN
    RETURN QUERY
    WITH input AS (
        SELECT * FROM jsonb_to_recordset(p_items) AS x(
            id bigint, attempt integer, kind text, status text, task_class text, model text, provider text,
            tier text, response jsonb, error jsonb, trail jsonb, tokens_in integer, tokens_out integer,
            cost numeric, latency_ms double precision, metadata jsonb)
        WHERE x.kind = 'result'
    ), finished AS (
        DELETE FROM switchyard.jobs j USING input i
        WHERE j.id = i.id AND j.attempt = i.attempt AND j.lease_owner = p_worker
        RETURNING j.*
    )
    INSERT INTO switchyard.results AS r
        (job_id, status, priority, task_class, affinity_key, tenant, model, provider, tier, request, response,
         error, attempts, attempt_count, tokens_in, tokens_out, cost, queue_wait_ms, latency_ms, created_at,
         started_at, worker, retry_of, metadata)
    SELECT f.id, i.status, f.priority, coalesce(i.task_class, f.task_class), f.affinity_key, f.tenant, i.model,
           i.provider, i.tier, f.request, i.response, i.error, f.attempts || coalesce(i.trail, '[]'), f.attempt,
           i.tokens_in, i.tokens_out, i.cost,
           extract(epoch FROM f.claimed_at - greatest(f.created_at, f.run_at)) * 1000, i.latency_ms,
           f.created_at, f.claimed_at, p_worker, f.retry_of, f.metadata || coalesce(i.metadata, '{}')
    FROM finished f JOIN input i ON i.id = f.id
    RETURNING r.job_id, 'result'::text;

    RETURN QUERY
    UPDATE switchyard.jobs j
    SET lease_owner = NULL, lease_expires_at = NULL, claimed_at = NULL,
        run_at = CASE WHEN i.kind = 'retry' THEN coalesce(i.retry_at, now()) ELSE j.run_at END,
        attempt = CASE WHEN i.kind = 'release' THEN greatest(j.attempt - 1, 0) ELSE j.attempt END,
        attempts = j.attempts || coalesce(i.trail, '[]')
    FROM jsonb_to_recordset(p_items) AS i(id bigint, attempt integer, kind text, retry_at timestamptz, trail jsonb)
    WHERE i.kind IN ('retry', 'release') AND j.id = i.id AND j.attempt = i.attempt AND j.lease_owner = p_worker
    RETURNING j.id, i.kind;
    GET DIAGNOSTICS requeued = ROW_COUNT;
    IF requeued > 0 THEN
        PERFORM pg_notify('switchyard_jobs', '');
    END IF;
END $$;

-- Housekeeping: jobs whose lease expired (their worker died, hung or lost its network) go back
-- to the queue with the attempt counted, or end when no attempt is left, or end as cancelled
-- when cancellation was asked for. Only leases that stopped being renewed expire: a live worker
-- renews its leases on every heartbeat, so a slow job is never rescued from under it.
CREATE FUNCTION switchyard.rescue_expired(p_limit integer DEFAULT 1000)
    RETURNS TABLE (job_id bigint, outcome text)
    LANGUAGE plpgsql AS $$
DECLARE
    job switchyard.jobs;
    entry jsonb;
BEGIN
    FOR job IN
        SELECT * FROM switchyard.jobs j
        WHERE j.lease_owner IS NOT NULL AND j.lease_expires_at < now()
        ORDER BY j.lease_expires_at
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    LOOP
        entry := jsonb_build_object(
            'attempt', job.attempt, 'outcome', 'lease_expired', 'worker', job.lease_owner,
            'error', format('worker %s stopped renewing its lease', job.lease_owner),
            'at', now());
        IF job.cancel_requested THEN
            PERFORM switchyard.archive(job, 'cancelled',
                jsonb_build_object('code', 'cancelled', 'message', 'cancelled while running'), jsonb_build_array(entry));
            job_id := job.id; outcome := 'cancelled';
        ELSIF job.attempt >= job.max_attempts THEN
            PERFORM switchyard.archive(job, 'failed',
                jsonb_build_object('code', 'lease_expired',
                    'message', format('worker %s stopped renewing its lease during the last attempt (%s of %s)',
                                      job.lease_owner, job.attempt, job.max_attempts)),
                jsonb_build_array(entry));
            job_id := job.id; outcome := 'failed';
        ELSE
            UPDATE switchyard.jobs j
            SET lease_owner = NULL, lease_expires_at = NULL, claimed_at = NULL, run_at = now(),
                attempts = j.attempts || entry
            WHERE j.id = job.id AND j.priority = job.priority;
            job_id := job.id; outcome := 'requeued';
        END IF;
        RETURN NEXT;
    END LOOP;
    IF FOUND THEN
        PERFORM pg_notify('switchyard_jobs', '');
    END IF;
END $$;

-- Housekeeping: queued jobs not started by their deadline end as expired.
CREATE FUNCTION switchyard.expire_overdue(p_limit integer DEFAULT 1000) RETURNS integer
    LANGUAGE plpgsql AS $$
DECLARE
    job switchyard.jobs;
    expired integer := 0;
BEGIN
    FOR job IN
        SELECT * FROM switchyard.jobs j
        WHERE j.lease_owner IS NULL AND j.deadline IS NOT NULL AND j.deadline <= now()
        ORDER BY j.deadline
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    LOOP
        PERFORM switchyard.archive(job, 'expired',
            jsonb_build_object('code', 'deadline_passed',
                'message', format('not started before its deadline, %s', job.deadline)), '[]');
        expired := expired + 1;
    END LOOP;
    RETURN expired;
END $$;

-- Cancels a job. A queued job ends as cancelled at once; a running one is flagged, and its worker
-- abandons it at its next heartbeat. Returns 'cancelled', 'cancelling', the status of a job that
-- had already finished, or 'not_found'.
CREATE FUNCTION switchyard.cancel(job_id bigint) RETURNS text
    LANGUAGE plpgsql AS $$
DECLARE
    job switchyard.jobs;
    finished text;
BEGIN
    SELECT * INTO job FROM switchyard.jobs j WHERE j.id = cancel.job_id FOR UPDATE;
    IF FOUND THEN
        IF job.lease_owner IS NULL THEN
            PERFORM switchyard.archive(job, 'cancelled',
                jsonb_build_object('code', 'cancelled', 'message', 'cancelled before it started'), '[]');
            RETURN 'cancelled';
        END IF;
        UPDATE switchyard.jobs j SET cancel_requested = true WHERE j.id = job.id AND j.priority = job.priority;
        RETURN 'cancelling';
    END IF;
    SELECT r.status INTO finished FROM switchyard.results r WHERE r.job_id = cancel.job_id;
    RETURN coalesce(finished, 'not_found');
END $$;

-- Where a job is now: queued, scheduled (run_at in the future), running, cancelling, or its
-- final status (succeeded, failed, cancelled, expired); NULL for an unknown id.
CREATE FUNCTION switchyard.job_status(job_id bigint) RETURNS text
    LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        (SELECT CASE
                    WHEN j.lease_owner IS NOT NULL AND j.cancel_requested THEN 'cancelling'
                    WHEN j.lease_owner IS NOT NULL THEN 'running'
                    WHEN j.run_at > now() THEN 'scheduled'
                    ELSE 'queued'
                END
         FROM switchyard.jobs j WHERE j.id = job_status.job_id),
        (SELECT r.status FROM switchyard.results r WHERE r.job_id = job_status.job_id))
$$;

-- The result of a finished job (no row while it is still queued or running).
CREATE FUNCTION switchyard.result(job_id bigint) RETURNS SETOF switchyard.results
    LANGUAGE sql STABLE AS $$
    SELECT * FROM switchyard.results r WHERE r.job_id = result.job_id
$$;

-- Submits a failed, cancelled or expired job again, as a new job linked to the old one.
CREATE FUNCTION switchyard.retry(job_id bigint) RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    old switchyard.results;
    new_id bigint;
BEGIN
    SELECT * INTO old FROM switchyard.results r WHERE r.job_id = retry.job_id;
    IF NOT FOUND THEN
        IF EXISTS (SELECT 1 FROM switchyard.jobs j WHERE j.id = retry.job_id) THEN
            PERFORM switchyard.reject(format('job %s has not finished yet', retry.job_id),
                'Wait for it (dispatcher wait ID), or cancel it first.');
        END IF;
        RAISE EXCEPTION USING ERRCODE = 'P0002', MESSAGE = format('job %s not found', retry.job_id),
            HINT = 'Check the id; results older than the retention period are pruned.';
    END IF;
    IF old.status = 'succeeded' THEN
        PERFORM switchyard.reject(format('job %s succeeded; only failed, cancelled or expired jobs are retried',
                                         retry.job_id), 'Submit a new job if you want another answer.');
    END IF;
    INSERT INTO switchyard.jobs AS j (request, priority, task_class, affinity_key, tenant, metadata, retry_of)
    VALUES (old.request, old.priority, old.task_class, old.affinity_key, old.tenant, old.metadata, old.job_id)
    RETURNING j.id INTO new_id;
    RETURN new_id;
END $$;

-- Results partitions: one per UTC day, created ahead of time by housekeeping. Rows that landed in
-- results_default for a day without a partition are moved into it when it is created.
CREATE FUNCTION switchyard.ensure_result_partitions(p_days_ahead integer DEFAULT 3) RETURNS integer
    LANGUAGE plpgsql AS $$
DECLARE
    day date;
    lower_bound timestamptz;
    upper_bound timestamptz;
    name text;
    created integer := 0;
BEGIN
    FOR offset_days IN 0..p_days_ahead LOOP
        day := (now() AT TIME ZONE 'UTC')::date + offset_days;
        name := 'results_' || to_char(day, 'YYYYMMDD');
        CONTINUE WHEN to_regclass('switchyard.' || name) IS NOT NULL;
        lower_bound := day::timestamp AT TIME ZONE 'UTC';
        upper_bound := (day + 1)::timestamp AT TIME ZONE 'UTC';
        IF EXISTS (SELECT 1 FROM switchyard.results_default
                   WHERE finished_at >= lower_bound AND finished_at < upper_bound) THEN
            EXECUTE format('CREATE TABLE switchyard.%I (LIKE switchyard.results INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name);
            EXECUTE format(
                'WITH moved AS (DELETE FROM switchyard.results_default WHERE finished_at >= $1 AND finished_at < $2 '
                'RETURNING *) INSERT INTO switchyard.%I SELECT * FROM moved', name)
                USING lower_bound, upper_bound;
            EXECUTE format('ALTER TABLE switchyard.results ATTACH PARTITION switchyard.%I FOR VALUES FROM (%L) TO (%L)',
                           name, lower_bound, upper_bound);
        ELSE
            EXECUTE format('CREATE TABLE switchyard.%I PARTITION OF switchyard.results FOR VALUES FROM (%L) TO (%L)',
                           name, lower_bound, upper_bound);
        END IF;
        created := created + 1;
    END LOOP;
    RETURN created;
END $$;

-- Retention: drops whole daily partitions that ended before now() - p_older_than (no DELETE, no
-- bloat), trims the default partition and old idempotency keys. Returns what it removed.
CREATE FUNCTION switchyard.prune(p_older_than interval)
    RETURNS TABLE (item text, removed bigint)
    LANGUAGE plpgsql AS $$
DECLARE
    cutoff timestamptz := now() - p_older_than;
    partition record;
    count bigint;
BEGIN
    FOR partition IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'switchyard.results'::regclass AND c.relname ~ '^results_[0-9]{8}$'
        ORDER BY c.relname
    LOOP
        CONTINUE WHEN (to_date(substr(partition.relname, 9), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC' > cutoff;
        EXECUTE format('SELECT count(*) FROM switchyard.%I', partition.relname) INTO count;
        EXECUTE format('DROP TABLE switchyard.%I', partition.relname);
        item := 'partition ' || partition.relname; removed := count;
        RETURN NEXT;
    END LOOP;
    DELETE FROM switchyard.results_default WHERE finished_at < cutoff;
    GET DIAGNOSTICS count = ROW_COUNT;
    item := 'rows in results_default'; removed := count;
    RETURN NEXT;
    DELETE FROM switchyard.idempotency_keys WHERE created_at < cutoff;
    GET DIAGNOSTICS count = ROW_COUNT;
    item := 'idempotency keys'; removed := count;
    RETURN NEXT;
    DELETE FROM switchyard.workers WHERE heartbeat_at < now() - interval '1 day';
END $$;

SELECT switchyard.ensure_result_partitions(3);
