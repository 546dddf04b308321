-- What an exchange says about a symbol it lists: trading status and the
-- price and quantity steps (Binance: exchangeInfo, PRICE_FILTER tickSize and
-- LOT_SIZE stepSize). Written by the feed when it (re)connects; read by
-- whatever rounds prices to the exchange's tick.
CREATE TABLE IF NOT EXISTS exchange_symbols (
    venue      text NOT NULL CHECK (venue ~ '^[a-z0-9_-]{1,32}$'),
    symbol     text NOT NULL CHECK (symbol ~ '^[A-Z0-9]{2,20}$'),
    status     text NOT NULL,
    tick_size  double precision NOT NULL CHECK (tick_size > 0 AND tick_size < 'Infinity'),
    step_size  double precision CHECK (step_size > 0 AND step_size < 'Infinity'),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (venue, symbol)
);
