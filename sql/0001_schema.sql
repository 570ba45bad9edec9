-- Switchyard schema v1: the queue's tables.
--
-- Hot tables hold only live work: a job lives in switchyard.jobs while it is queued or running
-- and moves to the append-only switchyard.results when it ends. The hot tables stay small, are
-- vacuumed aggressively, and leave room on each page for HOT updates (lease renewals).

CREATE SCHEMA IF NOT EXISTS switchyard;

CREATE SEQUENCE switchyard.job_id_seq AS bigint;

-- Live jobs, partitioned by priority so interactive work has its own small table and index.
CREATE TABLE switchyard.jobs (
    id               bigint      NOT NULL DEFAULT nextval('switchyard.job_id_seq'),
    priority         text        NOT NULL DEFAULT 'interactive',
    task_class       text,
    affinity_key     text,
    request          jsonb       NOT NULL,
    attempt          integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL DEFAULT 3,
    run_at           timestamptz NOT NULL DEFAULT now(),
    deadline         timestamptz,
    lease_owner      text,
    lease_expires_at timestamptz,
    claimed_at       timestamptz,
    cancel_requested boolean     NOT NULL DEFAULT false,
    attempts         jsonb       NOT NULL DEFAULT '[]',
    idempotency_key  text,
    tenant           text,
    retry_of         bigint,
    created_at       timestamptz NOT NULL DEFAULT now(),
    metadata         jsonb       NOT NULL DEFAULT '{}',
    CONSTRAINT jobs_priority_check CHECK (priority IN ('interactive', 'background')),
    CONSTRAINT jobs_attempt_check CHECK (attempt >= 0 AND max_attempts BETWEEN 1 AND 100),
    CONSTRAINT jobs_lease_check CHECK ((lease_owner IS NULL) = (lease_expires_at IS NULL)),
    PRIMARY KEY (id, priority)
) PARTITION BY LIST (priority);

ALTER SEQUENCE switchyard.job_id_seq OWNED BY switchyard.jobs.id;

-- fillfactor leaves room for HOT updates; autovacuum runs after a few hundred dead rows instead
-- of after 20% of the table, and without cost-based throttling.
CREATE TABLE switchyard.jobs_interactive PARTITION OF switchyard.jobs FOR VALUES IN ('interactive')
    WITH (fillfactor = 70,
          autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 500,
          autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 5000,
          autovacuum_analyze_scale_factor = 0.05, autovacuum_vacuum_cost_delay = 0);

CREATE TABLE switchyard.jobs_background PARTITION OF switchyard.jobs FOR VALUES IN ('background')
    WITH (fillfactor = 70,
          autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 2000,
          autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 20000,
          autovacuum_analyze_scale_factor = 0.05, autovacuum_vacuum_cost_delay = 0);

-- Claiming reads queued jobs in (run_at, id) order; the partial index holds queued jobs only.
CREATE INDEX jobs_queued_idx ON switchyard.jobs (run_at, id) WHERE lease_owner IS NULL;
-- Rescue finds expired leases without scanning the backlog.
CREATE INDEX jobs_leased_idx ON switchyard.jobs (lease_expires_at) WHERE lease_owner IS NOT NULL;

-- Finished jobs: append-only, one row per job, range-partitioned by finish time so retention
-- drops whole partitions instead of deleting rows.
CREATE TABLE switchyard.results (
    job_id        bigint           NOT NULL,
    status        text             NOT NULL,
    priority      text             NOT NULL,
    task_class    text,
    affinity_key  text,
    tenant        text,
    model         text,
    provider      text,
    tier          text,
    request       jsonb            NOT NULL,
    response      jsonb,
    error         jsonb,
    attempts      jsonb            NOT NULL DEFAULT '[]',
    attempt_count integer          NOT NULL DEFAULT 0,
    tokens_in     integer,
    tokens_out    integer,
    cost          numeric(20, 10),
    queue_wait_ms double precision,
    latency_ms    double precision,
    created_at    timestamptz      NOT NULL,
    started_at    timestamptz,
    finished_at   timestamptz      NOT NULL DEFAULT now(),
    worker        text,
    retry_of      bigint,
    metadata      jsonb            NOT NULL DEFAULT '{}',
    CONSTRAINT results_status_check CHECK (status IN ('succeeded', 'failed', 'cancelled', 'expired')),
    PRIMARY KEY (job_id, finished_at)
) PARTITION BY RANGE (finished_at);

-- Catches rows no dated partition covers; housekeeping creates dated partitions ahead of time.
CREATE TABLE switchyard.results_default PARTITION OF switchyard.results DEFAULT;

CREATE INDEX results_finished_idx ON switchyard.results (finished_at);

-- The model catalog. api_key_env is the NAME of an environment variable; keys never enter the
-- database.
CREATE TABLE switchyard.models (
    name                text             PRIMARY KEY,
    provider            text             NOT NULL,
    base_url            text,
    api_key_env         text,
    upstream_model      text,
    tier                text             NOT NULL DEFAULT 'standard',
    price_per_1k_input  numeric(20, 10)  NOT NULL DEFAULT 0,
    price_per_1k_output numeric(20, 10)  NOT NULL DEFAULT 0,
    price_windows       jsonb            NOT NULL DEFAULT '[]',
    context_window      integer          NOT NULL DEFAULT 8192,
    capabilities        jsonb            NOT NULL DEFAULT '{}',
    weight              double precision NOT NULL DEFAULT 1,
    max_concurrency     integer,
    requests_per_minute integer,
    tokens_per_minute   integer,
    enabled             boolean          NOT NULL DEFAULT true,
    settings            jsonb            NOT NULL DEFAULT '{}',
    updated_at          timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT models_provider_check CHECK (provider IN ('openai', 'anthropic', 'simulated'))
);

-- Routing rules per task class: an ordered list of models to try, and the limits that apply.
CREATE TABLE switchyard.routes (
    task_class      text            PRIMARY KEY,
    primary_model   text            NOT NULL,
    fallbacks       text[]          NOT NULL DEFAULT '{}',
    strategy        text            NOT NULL DEFAULT 'ordered',
    max_cost_per_1k numeric(20, 10),
    max_latency_ms  integer,
    quality_floor   integer,
    settings        jsonb           NOT NULL DEFAULT '{}',
    updated_at      timestamptz     NOT NULL DEFAULT now()
);

-- Worker processes and their heartbeats.
CREATE TABLE switchyard.workers (
    id           text        PRIMARY KEY,
    hostname     text,
    pid          integer,
    version      text,
    concurrency  integer     NOT NULL,
    in_flight    integer     NOT NULL DEFAULT 0,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    metadata     jsonb       NOT NULL DEFAULT '{}'
) WITH (fillfactor = 50);

-- Fleet-wide model health: one row per model, updated by every worker.
CREATE TABLE switchyard.model_health (
    model                text             PRIMARY KEY,
    state                text             NOT NULL DEFAULT 'closed',
    opened_at            timestamptz,
    consecutive_failures integer          NOT NULL DEFAULT 0,
    window_started_at    timestamptz      NOT NULL DEFAULT now(),
    window_requests      integer          NOT NULL DEFAULT 0,
    window_failures      integer          NOT NULL DEFAULT 0,
    latency_ewma_ms      double precision,
    latency_p95_ms       double precision,
    updated_at           timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT model_health_state_check CHECK (state IN ('closed', 'open', 'half_open'))
) WITH (fillfactor = 50);
