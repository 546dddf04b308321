-- 003_training_jobs: training jobs started through the admin API or
-- `predictd train`. state moves queued -> running -> succeeded | failed |
-- canceled | rejected (trained, but not better than the serving version,
-- so not published); at most one job per series is queued or running at a time (the
-- partial unique index makes a second start fail, which the API reports as
-- busy).

CREATE TABLE training_jobs (
    id          bigserial        PRIMARY KEY,
    symbol      text             NOT NULL,
    timeframe   text             NOT NULL,
    state       text             NOT NULL DEFAULT 'queued',
    params      jsonb            NOT NULL DEFAULT '{}'::jsonb,
    progress    double precision NOT NULL DEFAULT 0,
    metrics     jsonb,
    error       text,
    version     integer,
    created_at  timestamptz      NOT NULL DEFAULT now(),
    started_at  timestamptz,
    finished_at timestamptz,
    CONSTRAINT training_jobs_timeframe_valid
        CHECK (timeframe IN ('1m', '5m', '15m', '1h', '4h', '1d')),
    CONSTRAINT training_jobs_state_valid
        CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'canceled', 'rejected')),
    CONSTRAINT training_jobs_progress_valid CHECK (progress BETWEEN 0 AND 1)
);

CREATE UNIQUE INDEX training_jobs_one_active
    ON training_jobs (symbol, timeframe) WHERE state IN ('queued', 'running');

CREATE INDEX training_jobs_created ON training_jobs (created_at DESC);
