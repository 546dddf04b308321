/*
 * feed: market data into the store. Parsing of candle CSV files for
 * `predictd import` and `predictd features`, and deterministic synthetic
 * candles for the demo.
 *
 * Threading: every function here is pure and thread-safe.
 */
#ifndef PREDICTD_FEED_H
#define PREDICTD_FEED_H

#include <stddef.h>
#include <stdint.h>

#include "features/features.h"

/* ===========================================================================
 * CSV: Binance kline dumps (12 columns, with or without header, ms or us
 * open times) and `open_time,open,high,low,close,volume` with RFC 3339 or
 * epoch (s/ms/us) times. Parses a whole buffer; on a bad row returns
 * PD_EPARSE with "line N: reason" in why and *out untouched.
 */
int feed_csv_parse(const char *text, size_t len, features_candle **out, size_t *n, char *why,
                       size_t whylen);
/* The same, and every open time must fall on a boundary of timeframe tf
 * ("15m"): the first row that does not is PD_EPARSE with its line. tf NULL
 * checks nothing; an unknown tf is PD_EINVAL. */
int feed_csv_parse_for(const char *text, size_t len, const char *tf, features_candle **out,
                       size_t *n, char *why, size_t whylen);

/* ===========================================================================
 * Seed: deterministic synthetic candles (regime-switching random walk with
 * volume and wicks). Writes `count` candles of tf ending with the last one
 * closed before `now`, for a given symbol and seed. *out is malloc'd.
 */
int feed_seed_series(const char *symbol, const char *tf, int64_t now, size_t count,
                         uint64_t seed, features_candle **out);

#endif
