-- 002_predictions: the prediction ledger. One row per prediction made for
-- a closed candle by a model version; the outcome columns stay NULL until
-- a resolver walks the following candles (outcome names are the resolver's
-- to choose, e.g. TP1, TP2, TP3, SL, EXPIRED, so they are not constrained
-- here).

CREATE TABLE predictions (
    symbol          text             NOT NULL,
    timeframe       text             NOT NULL,
    candle_time     timestamptz      NOT NULL,
    model_version   integer          NOT NULL,
    direction       text             NOT NULL,
    confidence      double precision NOT NULL,
    p_long          double precision NOT NULL,
    p_short         double precision NOT NULL,
    p_no_trade      double precision NOT NULL,
    entry           double precision,
    stop_loss       double precision,
    tp1             double precision,
    tp2             double precision,
    tp3             double precision,
    atr             double precision,
    horizon_candles integer,
    created_at      timestamptz      NOT NULL DEFAULT now(),
    outcome         text,
    resolved_at     timestamptz,
    hit_time_s      double precision,
    r_multiple      double precision,
    mfe             double precision,
    mae             double precision,
    PRIMARY KEY (symbol, timeframe, candle_time, model_version),
    CONSTRAINT predictions_timeframe_valid
        CHECK (timeframe IN ('1m', '5m', '15m', '1h', '4h', '1d')),
    CONSTRAINT predictions_direction_valid
        CHECK (direction IN ('LONG', 'SHORT', 'NO_TRADE')),
    CONSTRAINT predictions_model_version_positive CHECK (model_version > 0),
    CONSTRAINT predictions_probabilities_valid CHECK (
        confidence BETWEEN 0 AND 1 AND p_long BETWEEN 0 AND 1 AND
        p_short BETWEEN 0 AND 1 AND p_no_trade BETWEEN 0 AND 1),
    CONSTRAINT predictions_resolved_has_outcome
        CHECK ((outcome IS NULL) = (resolved_at IS NULL))
);

-- The resolver's work list: predictions still waiting for an outcome.
CREATE INDEX predictions_unresolved
    ON predictions (timeframe, candle_time) WHERE outcome IS NULL;
