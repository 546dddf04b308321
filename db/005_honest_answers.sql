-- 005_honest_answers: what the ledger and the job table need so answers
-- do not read better than they are.
--
-- predictions.stale_data  the prediction was computed from a window whose
--                         last candle had closed more than two timeframes
--                         before (PREDICT_STALE_TFS): it is recorded (the
--                         answer was given) but does not count toward live
--                         accuracy. Rows written before this migration are
--                         taken as fresh.
-- training_jobs.state     gains 'below_baseline': the model was trained but
--                         beats neither the always-majority nor the
--                         persistence baseline on its test window, so it
--                         was not published (error holds the figures).
--
-- Migrations run inside a transaction opened by `predictd migrate`: no
-- BEGIN/COMMIT here.

ALTER TABLE predictions ADD COLUMN stale_data boolean NOT NULL DEFAULT false;

ALTER TABLE training_jobs DROP CONSTRAINT training_jobs_state_valid;
ALTER TABLE training_jobs ADD CONSTRAINT training_jobs_state_valid
    CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'canceled', 'rejected',
                     'below_baseline'));
