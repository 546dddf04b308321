-- 001_candles: the candle table, the source of truth for every feature.
--
-- One row per (symbol, timeframe, open_time). Times are candle open times,
-- aligned to UTC timeframe boundaries. The CHECK constraints mirror the
-- validation in store/candles.c so that rows written by other tools obey
-- the same rules. PostgreSQL orders NaN above every number, so
-- "x < 'Infinity'" rejects both NaN and infinities.
--
-- A statement-level trigger sends NOTIFY predictd_candles, 'SYMBOL:TF' once
-- per series touched by a statement (a bulk upsert of 5000 rows of one
-- series sends one notification, and PostgreSQL folds identical
-- notifications of one transaction into one). Rows an upsert leaves
-- unchanged are not in the transition table, so they notify nobody.
--
-- Migrations run inside a transaction opened by `predictd migrate`: no
-- BEGIN/COMMIT here.

CREATE TABLE candles (
    symbol     text             NOT NULL,
    timeframe  text             NOT NULL,
    open_time  timestamptz      NOT NULL,
    open       double precision NOT NULL,
    high       double precision NOT NULL,
    low        double precision NOT NULL,
    close      double precision NOT NULL,
    volume     double precision NOT NULL,
    PRIMARY KEY (symbol, timeframe, open_time),
    CONSTRAINT candles_symbol_valid CHECK (symbol ~ '^[A-Z0-9]{2,20}$'),
    CONSTRAINT candles_timeframe_valid
        CHECK (timeframe IN ('1m', '5m', '15m', '1h', '4h', '1d')),
    CONSTRAINT candles_open_time_aligned CHECK (
        mod(extract(epoch FROM open_time),
            CASE timeframe WHEN '1m' THEN 60 WHEN '5m' THEN 300 WHEN '15m' THEN 900
                           WHEN '1h' THEN 3600 WHEN '4h' THEN 14400 ELSE 86400 END) = 0),
    CONSTRAINT candles_prices_positive_finite CHECK (
        open > 0 AND open < 'Infinity' AND high > 0 AND high < 'Infinity' AND
        low > 0 AND low < 'Infinity' AND close > 0 AND close < 'Infinity'),
    CONSTRAINT candles_high_ge_low CHECK (high >= low),
    CONSTRAINT candles_volume_valid CHECK (volume >= 0 AND volume < 'Infinity')
);

COMMENT ON TABLE candles IS
    'OHLCV candles; open_time is the candle open (UTC), aligned to the timeframe';

CREATE FUNCTION candles_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    s record;
BEGIN
    FOR s IN SELECT DISTINCT symbol, timeframe FROM new_rows LOOP
        PERFORM pg_notify('predictd_candles', s.symbol || ':' || s.timeframe);
    END LOOP;
    RETURN NULL;
END
$$;

-- Transition tables allow one event per trigger, hence two triggers.
CREATE TRIGGER candles_notify_insert
    AFTER INSERT ON candles
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION candles_notify();

CREATE TRIGGER candles_notify_update
    AFTER UPDATE ON candles
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION candles_notify();
