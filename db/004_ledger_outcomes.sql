-- 004_ledger_outcomes: what the resolver (store/ledger.c) writes into the
-- ledger of 002_predictions, and the checks that keep it honest.
--
-- outcome      what the trade shown to the user did, for LONG and SHORT
--              predictions: TP1, TP2, TP3 (the highest take-profit reached
--              before the stop or the end of the horizon), SL (the stop came
--              first; a candle touching both counts as the stop), EXPIRED
--              (neither within horizon_candles). NONE for NO_TRADE
--              predictions, which have no trade to settle.
-- realised     the class the market realised, by the triple barrier the
--              training labels use (training/labels.c): LONG when the long
--              side's TP1 came before its stop and before the short side's
--              TP1, SHORT mirrored, NO_TRADE otherwise. Set for every
--              resolved row, NO_TRADE predictions included: it is what
--              precision and the Brier score are measured against.
-- hit_time_s   seconds from the entry (the close of candle_time's candle) to
--              the close of the candle that decided the outcome (the first
--              touch of the outcome's take-profit, or the stop); NULL for
--              EXPIRED and NONE.
-- r_multiple   realised R: tp_k's multiple of the risk |entry - stop_loss|
--              for TPk, -1 for SL, the mark-to-market at the last close in
--              the horizon for EXPIRED; NULL for NONE.
-- mfe, mae     maximum favourable and adverse excursion, in R, over the
--              candles from the entry to the one that decided the outcome
--              (both >= 0); NULL for NONE.
--
-- Migrations run inside a transaction opened by `predictd migrate`: no
-- BEGIN/COMMIT here.

ALTER TABLE predictions ADD COLUMN realised text;

ALTER TABLE predictions
    ADD CONSTRAINT predictions_outcome_valid
        CHECK (outcome IN ('TP1', 'TP2', 'TP3', 'SL', 'EXPIRED', 'NONE')),
    ADD CONSTRAINT predictions_realised_valid
        CHECK (realised IN ('LONG', 'SHORT', 'NO_TRADE')),
    ADD CONSTRAINT predictions_resolved_has_realised
        CHECK ((outcome IS NULL) = (realised IS NULL)),
    ADD CONSTRAINT predictions_none_is_no_trade
        CHECK (outcome IS NULL OR (outcome = 'NONE') = (direction = 'NO_TRADE'));

-- History across every series pages by candle time.
CREATE INDEX predictions_candle_time ON predictions (candle_time);
