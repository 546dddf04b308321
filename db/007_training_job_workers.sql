-- 007_training_job_workers: training jobs shared by the replicas of one database.
-- Any replica's worker claims a queued job (SELECT ... FOR UPDATE SKIP
-- LOCKED), names itself in worker and refreshes heartbeat_at about every
-- second while it runs, writing progress and stage with it, so every
-- replica reads the same job from the table. A cancel through any replica
-- sets cancel_requested; the running worker reads it with its heartbeat and
-- stops. A running job whose heartbeat is older than a few seconds lost its
-- worker (the process died) and is marked failed by whichever replica
-- notices; a replica restarting leaves the others' running jobs alone.

ALTER TABLE training_jobs
    ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false,
    ADD COLUMN worker           text,
    ADD COLUMN heartbeat_at     timestamptz,
    ADD COLUMN stage            text;

CREATE INDEX training_jobs_queued ON training_jobs (created_at, id) WHERE state = 'queued';
