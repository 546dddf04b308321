-- 008_honest_answers: what the ledger and the job table need so answers
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

-- backtests: what `predictd backtest` measured for a model version over a
-- range of candles replayed through the serving path (figures: the JSON of
-- predict_backtest_json: calls, hit rates per take-profit, stop-outs,
-- expiries, average R, expectancy after cost_bps, maximum drawdown,
-- calibration, and the same for the baselines).
CREATE TABLE backtests (
    id            bigserial        PRIMARY KEY,
    symbol        text             NOT NULL,
    timeframe     text             NOT NULL,
    model_version integer          NOT NULL CHECK (model_version > 0),
    data_from     timestamptz      NOT NULL,
    data_to       timestamptz      NOT NULL,
    cost_bps      double precision NOT NULL,
    figures       jsonb            NOT NULL,
    created_at    timestamptz      NOT NULL DEFAULT now()
);
CREATE INDEX backtests_series ON backtests (symbol, timeframe, model_version, created_at DESC);
