-- 005_derived_series: one base timeframe (1m), every other derived.
--
-- candle_series records what each series is:
--   base     the 1m series of a symbol; always base
--   derived  a higher timeframe rolled up from the symbol's 1m candles
--   native   a higher timeframe written directly (years of daily candles,
--            a series someone else maintains); it stands alone
-- A series is registered by its first write: a 1m write registers S:1m as
-- base and every higher timeframe of S not already native as derived; a
-- direct write of a higher timeframe registers it as native. Once derived,
-- a series refuses direct writes (check_violation, the message names the
-- series); once native it is never rolled up.
--
-- The roll-up (candles_rollup, a statement trigger, so any writer gets it:
-- predictd, psql, another tool): for the 1m candles a statement inserts or
-- changes, the closed buckets from the first to the last that contain one
-- (and the bucket of the base candle before them) are recomputed from the
-- 1m candles present in them (open = first open, high = max, low = min, close = last
-- close, volume = sum) and upserted in the same transaction. A late or
-- corrected 1m candle therefore corrects its buckets, and a re-import that
-- changes nothing writes nothing. Buckets are aligned to the Unix epoch
-- (UTC), as exchanges align them (4h at 00/04/08.. UTC, 1d at 00:00 UTC).
--
-- A derived candle exists only once it is closed: when its bucket's last
-- minute is present (a feed writes that minute as it closes) or a base
-- candle of a later bucket exists (the bucket ended in a gap). The forming
-- bucket has no row, so readers, which take a candle whose close time has
-- passed as closed, never take a half-filled bucket for a closed one, also
-- while a feed catches up on minutes of the past. An import ending inside
-- a bucket leaves that bucket out until later minutes arrive.
--
-- NOTIFY predictd_candles 'S:TF' for a derived series is sent (once per
-- statement) when the statement wrote or changed a closed derived candle:
-- a bucket closed, or a late or corrected base candle changed a closed one.
-- Writes inside the forming bucket notify 'S:1m' only.
-- Base and native series notify on every change as before
-- (candles_notify, now skipping derived rows).
--
-- Migrations run inside a transaction opened by `predictd migrate`: no
-- BEGIN/COMMIT here.

CREATE TABLE candle_series (
    symbol     text        NOT NULL,
    timeframe  text        NOT NULL,
    kind       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, timeframe),
    CONSTRAINT candle_series_kind_valid CHECK (kind IN ('base', 'derived', 'native')),
    CONSTRAINT candle_series_base_is_1m CHECK ((kind = 'base') = (timeframe = '1m'))
);

COMMENT ON TABLE candle_series IS
    'per series: base (1m), derived (rolled up from 1m) or native (written directly)';

-- Series that already have candles: 1m is base, the others native (they were
-- written directly).
INSERT INTO candle_series (symbol, timeframe, kind)
SELECT DISTINCT symbol, timeframe, CASE WHEN timeframe = '1m' THEN 'base' ELSE 'native' END
FROM candles;

CREATE FUNCTION candles_tf_seconds(tf text) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE tf WHEN '1m' THEN 60 WHEN '5m' THEN 300 WHEN '15m' THEN 900
                   WHEN '1h' THEN 3600 WHEN '4h' THEN 14400 WHEN '1d' THEN 86400 END
$$;

-- Registers the series of a statement's rows, refuses direct writes of
-- derived series, and rolls 1m rows up. The nested upserts of the roll-up
-- run at trigger depth 2 and are let through.
CREATE FUNCTION candles_rollup() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    s record;
    k text;
    tf text;
    secs integer;
    newest timestamptz;
    first_new timestamptz;
    last_new timestamptz;
    before_new timestamptz;
    open_bucket timestamptz;
    written bigint;
    iv interval;
    lo timestamptz;
    hi timestamptz;
BEGIN
    IF pg_trigger_depth() > 1 THEN
        RETURN NULL;
    END IF;
    FOR s IN SELECT DISTINCT symbol, timeframe FROM new_rows WHERE timeframe <> '1m' LOOP
        INSERT INTO candle_series (symbol, timeframe, kind)
            VALUES (s.symbol, s.timeframe, 'native') ON CONFLICT DO NOTHING;
        SELECT kind INTO k FROM candle_series
            WHERE symbol = s.symbol AND timeframe = s.timeframe;
        IF k = 'derived' THEN
            RAISE EXCEPTION 'series %:% is derived from %:1m and refuses direct writes',
                s.symbol, s.timeframe, s.symbol
                USING ERRCODE = 'check_violation',
                      HINT = 'write its 1m candles; the higher timeframes follow';
        END IF;
    END LOOP;
    FOR s IN SELECT DISTINCT symbol FROM new_rows WHERE timeframe = '1m' LOOP
        INSERT INTO candle_series (symbol, timeframe, kind)
            VALUES (s.symbol, '1m', 'base') ON CONFLICT DO NOTHING;
        SELECT max(open_time) INTO newest FROM candles
            WHERE symbol = s.symbol AND timeframe = '1m';
        SELECT min(n.open_time), max(n.open_time) INTO first_new, last_new
            FROM new_rows n WHERE n.symbol = s.symbol AND n.timeframe = '1m';
        -- the base candle before the statement's first: its bucket may close now
        SELECT max(open_time) INTO before_new FROM candles
            WHERE symbol = s.symbol AND timeframe = '1m' AND open_time < first_new;
        FOREACH tf IN ARRAY ARRAY['5m', '15m', '1h', '4h', '1d'] LOOP
            INSERT INTO candle_series (symbol, timeframe, kind)
                VALUES (s.symbol, tf, 'derived') ON CONFLICT DO NOTHING;
            SELECT kind INTO k FROM candle_series WHERE symbol = s.symbol AND timeframe = tf;
            CONTINUE WHEN k <> 'derived';
            secs := candles_tf_seconds(tf);
            iv := make_interval(secs => secs);
            lo := date_bin(iv, coalesce(before_new, first_new), timestamptz 'epoch');
            hi := date_bin(iv, last_new, timestamptz 'epoch');
            open_bucket := date_bin(iv, newest, timestamptz 'epoch');
            -- Every closed bucket from the one of the base candle before the
            -- statement's rows to the last one they touch is recomputed, in
            -- one index range scan (no join against the transition table: it
            -- has no statistics, and the planner's guesses made that
            -- quadratic); the guard below leaves unchanged ones unwritten.
            -- Feeds write one minute (or a few recent ones), imports
            -- contiguous runs, so the span is the set. A bucket is closed,
            -- and only then written, when its last minute is present or a
            -- base candle of a later bucket exists: the forming bucket has
            -- no row, so no reader mistakes it for a closed one.
            INSERT INTO candles AS d (symbol, timeframe, open_time, open, high, low, close, volume)
            SELECT s.symbol, tf, date_bin(iv, c.open_time, timestamptz 'epoch'),
                   (array_agg(c.open ORDER BY c.open_time))[1], max(c.high), min(c.low),
                   (array_agg(c.close ORDER BY c.open_time DESC))[1], sum(c.volume)
            FROM candles c
            WHERE c.symbol = s.symbol AND c.timeframe = '1m'
              AND c.open_time >= lo AND c.open_time < hi + iv
            GROUP BY 3
            HAVING date_bin(iv, min(c.open_time), timestamptz 'epoch') < open_bucket
                OR max(c.open_time) + interval '1 minute'
                     = date_bin(iv, min(c.open_time), timestamptz 'epoch') + iv
            ON CONFLICT (symbol, timeframe, open_time) DO UPDATE SET
                open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low,
                close = EXCLUDED.close, volume = EXCLUDED.volume
            WHERE (d.open, d.high, d.low, d.close, d.volume) IS DISTINCT FROM
                  (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, EXCLUDED.volume);
            -- A closed derived candle appeared or changed: tell the readers.
            GET DIAGNOSTICS written = ROW_COUNT;
            IF written > 0 THEN
                PERFORM pg_notify('predictd_candles', s.symbol || ':' || tf);
            END IF;
        END LOOP;
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER candles_rollup_insert
    AFTER INSERT ON candles
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION candles_rollup();

CREATE TRIGGER candles_rollup_update
    AFTER UPDATE ON candles
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION candles_rollup();

-- Base and native series notify on every change; derived ones by the rule
-- above (sent by candles_rollup).
CREATE OR REPLACE FUNCTION candles_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    s record;
BEGIN
    FOR s IN SELECT DISTINCT n.symbol, n.timeframe FROM new_rows n
             WHERE NOT EXISTS (SELECT 1 FROM candle_series c
                               WHERE c.symbol = n.symbol AND c.timeframe = n.timeframe
                                 AND c.kind = 'derived') LOOP
        PERFORM pg_notify('predictd_candles', s.symbol || ':' || s.timeframe);
    END LOOP;
    RETURN NULL;
END
$$;
