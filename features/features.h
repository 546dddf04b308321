/*
 * features: candles in, feature vectors out. The one module that talks SQL
 * and Redis.
 *
 *   indicators   pure kernels over arrays, TA-Lib's default conventions
 *   catalogue    feature specs by name ("rsi:14"), resolved once per model
 *   store        PostgreSQL: candles, the prediction ledger, training jobs;
 *                one connection per thread, prepared statements, reconnect
 *   cache        Redis: packed candle windows and rendered predictions;
 *                bypassed (and counted) when Redis is down
 *   csv          candle CSV parsing for `predictd import` and `features`
 *   seed         deterministic synthetic candles for the demo
 *
 * Threading: indicator and catalogue functions are pure and thread-safe. A
 * features_set is immutable once built and may be shared. Store and cache
 * functions use the calling thread's own connections (thread-local, made on
 * first use and rebuilt after a failure); features_init() must run before
 * any thread uses them and features_shutdown() after all have stopped.
 */
#ifndef PREDICTD_FEATURES_H
#define PREDICTD_FEATURES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One OHLCV candle; t is the open time in Unix seconds (UTC). */
typedef struct features_candle {
    int64_t t;
    double open, high, low, close, volume;
} features_candle;

/* ===========================================================================
 * Indicators. Each kernel reads n inputs and writes n outputs aligned with
 * them: out[i] is the value at input i, NaN where i < the kernel's lookback
 * (the number of leading inputs TA-Lib consumes before its first output).
 * They return 0, PD_EINVAL for a bad period or a NaN, infinite or negative
 * price/volume input, or PD_ENODATA when n <= lookback (no output at all).
 * Values follow TA-Lib's default (non-MetaStock) conventions; see
 * features/indicators.c for each one and where predictd deliberately differs.
 */
int features_sma(const double *in, size_t n, int period, double *out);
int features_ema(const double *in, size_t n, int period, double *out);
int features_wma(const double *in, size_t n, int period, double *out);
int features_rsi(const double *in, size_t n, int period, double *out);
int features_macd(const double *in, size_t n, int fast, int slow, int signal, double *macd,
                  double *macd_signal, double *macd_hist);
int features_trange(const double *high, const double *low, const double *close, size_t n,
                    double *out);
int features_atr(const double *high, const double *low, const double *close, size_t n, int period,
                 double *out);
int features_natr(const double *high, const double *low, const double *close, size_t n,
                  int period, double *out);
int features_bbands(const double *in, size_t n, int period, double nbdev, double *upper,
                    double *middle, double *lower);
int features_stddev(const double *in, size_t n, int period, double nbdev, double *out);
int features_roc(const double *in, size_t n, int period, double *out);
int features_ret(const double *in, size_t n, int period, double *out);    /* x/x[-p] - 1 */
int features_logret(const double *in, size_t n, int period, double *out); /* ln(x/x[-p]) */
/* Population standard deviation of the last `period` one-candle log returns. */
int features_volatility(const double *in, size_t n, int period, double *out);
int features_zscore(const double *in, size_t n, int period, double *out);
int features_adx(const double *high, const double *low, const double *close, size_t n, int period,
                 double *out);
int features_plus_di(const double *high, const double *low, const double *close, size_t n,
                     int period, double *out);
int features_minus_di(const double *high, const double *low, const double *close, size_t n,
                      int period, double *out);
int features_stoch(const double *high, const double *low, const double *close, size_t n,
                   int fastk, int slowk, int slowd, double *k, double *d);
int features_stochrsi(const double *in, size_t n, int period, int fastk, int fastd, double *k,
                      double *d);
int features_cci(const double *high, const double *low, const double *close, size_t n, int period,
                 double *out);
int features_willr(const double *high, const double *low, const double *close, size_t n,
                   int period, double *out);
int features_mfi(const double *high, const double *low, const double *close, const double *volume,
                 size_t n, int period, double *out);
int features_obv(const double *close, const double *volume, size_t n, double *out);
int features_volume_ratio(const double *volume, size_t n, int period, double *out);

/* ===========================================================================
 * Catalogue: feature specs by name and parameters ("rsi:14",
 * "bb_pctb:20:2"). A features_set is a resolved, ordered list of specs.
 */
typedef struct features_set features_set;

/* The default 14 specs of DESIGN.md, in order; static storage. */
const char *const *features_default_specs(size_t *n);

/*
 * Resolves specs. On an unknown name or a bad parameter returns PD_EINVAL
 * and writes the reason ("unknown feature 'foo:3'") into why. The caller
 * owns *out (features_set_free). The specs are copied.
 */
int features_set_new(const char *const *specs, size_t n, features_set **out, char *why,
                     size_t whylen);
void features_set_free(features_set *s); /* NULL is a no-op */
size_t features_set_count(const features_set *s);
const char *features_set_name(const features_set *s, size_t i);
/* The fewest candles a window needs for every feature to be defined. */
size_t features_set_min_window(const features_set *s);

/*
 * Computes one feature vector: the features of the last of the n candles,
 * using only those n candles (the window), so training and serving that
 * pass the same window get bit-identical vectors. out holds
 * features_set_count() values. Returns 0, PD_ENODATA when n is below
 * features_set_min_window(), PD_EINVAL when a candle is invalid (NaN,
 * negative, high < low), or PD_EINVAL when a feature comes out non-finite
 * (a zero-range window where a ratio has no value; the reason is logged).
 * Thread-safe; uses thread-local scratch, no allocation after the first call
 * with a given window size.
 */
int features_compute(const features_set *s, const features_candle *window, size_t n, double *out);

/* ATR(period) at the last of n candles (Wilder, TA-Lib), for signal levels. */
int features_atr_last(const features_candle *c, size_t n, int period, double *out);

/* ===========================================================================
 * Connections. Called once by server before threads start / after they end.
 * database_url: libpq conninfo or URI (NULL: no database; store calls return
 * PD_EDB). redis_url: "redis://host:port/db" or NULL (no cache).
 * cache_on: false bypasses Redis and process caches (PREDICTD_CACHE=off).
 */
int features_init(const char *database_url, const char *redis_url, bool cache_on);
void features_shutdown(void);
/* Closes the calling thread's connections (threads call it before exit). */
void features_thread_cleanup(void);

/* ===========================================================================
 * Store (PostgreSQL).
 */

/* What the window loader found, for the prediction's data-quality fields. */
typedef struct features_window_info {
    int64_t last_open;      /* open time of the last closed candle, 0 if none */
    int64_t last_close;     /* its close time */
    int gaps;               /* missing candles inside the window */
    bool from_cache;        /* served from Redis */
} features_window_info;

/* Applies the db/ NNN_name.sql migrations in name order, each once (idempotent). */
int features_migrate(const char *migrations_dir);

/*
 * Loads the last `limit` closed candles (close time <= now) of a series,
 * oldest first, through the Redis cache when enabled. *out is malloc'd (free
 * it); *n may be below limit when history is short (0: the series has no
 * candles: PD_EUNKNOWNSYM). PD_EDB when the database is unreachable.
 * Also PD_ENODATA (candles exist but none is closed at now), PD_ESYMBOL,
 * PD_ETIMEFRAME, PD_EINVAL (limit 0), PD_ETOOBIG (limit > 100000). A cache
 * entry serves only when its last candle is the last closed one at now; on
 * a miss max(limit, 1024) candles are read and stored (see cache.c).
 */
int features_load_window(const char *symbol, const char *tf, int64_t now, size_t limit,
                         features_candle **out, size_t *n, features_window_info *info);

/*
 * features_load_window for several symbols of one timeframe: one pipelined
 * round trip to Redis for all of them, then the database for the misses
 * (the misses are written back in one more pipelined round trip). Each
 * entry i gets its own result in rcs[i] (0 or the codes of
 * features_load_window; PD_ESYMBOL for a malformed symbol); outs[i], ns[i]
 * and infos[i] (infos may be NULL) are written only when rcs[i] is 0, and
 * the caller frees each outs[i]. Returns 0 when every entry has its result,
 * PD_ETIMEFRAME, PD_EINVAL (NULL arrays, limit 0) or PD_ENOMEM.
 */
int features_load_windows(const char *const *symbols, size_t nsym, const char *tf, int64_t now,
                          size_t limit, features_candle **outs, size_t *ns,
                          features_window_info *infos, int *rcs);

/* Loads closed candles with from <= open time < to (0: unbounded), oldest
 * first, for training. *out is malloc'd. */
int features_load_range(const char *symbol, const char *tf, int64_t from, int64_t to,
                        int64_t now, features_candle **out, size_t *n);

/* Symbols that have candles for tf, sorted. *out is a malloc'd array of
 * malloc'd strings; free with features_strv_free. */
int features_list_symbols(const char *tf, char ***out, size_t *n);
void features_strv_free(char **v, size_t n);

/* Upserts candles of one series in a single transaction: all or nothing. */
int features_upsert_candles(const char *symbol, const char *tf, const features_candle *c,
                            size_t n);

/* Number of candles of a series (for `seed`'s "table empty" check: pass
 * NULL symbol and tf for the whole table). */
int features_count_candles(const char *symbol, const char *tf, int64_t *count);

/* ===========================================================================
 * Cache (Redis): rendered predictions, keyed by series and model version.
 */
/* Fetches a cached value; PD_ENOTFOUND on a miss, PD_ECACHE when Redis is
 * down or off. *out is malloc'd. */
int features_cache_get(const char *key, char **out, size_t *len);
/* Stores a value with a TTL in seconds (>= 1). */
int features_cache_set(const char *key, const char *val, size_t len, int64_t ttl_s);

/* Drops the cached candle window of a series (call it when candles of the
 * series changed outside this process, e.g. on NOTIFY predictd_candles;
 * upserts made through this module already do it). 0, PD_ECACHE when Redis
 * is down or off, PD_ESYMBOL / PD_ETIMEFRAME. */
int features_cache_drop_window(const char *symbol, const char *tf);

/* Counters for /metrics, monotonically increasing. */
typedef struct features_stats {
    uint64_t redis_hits, redis_misses, redis_errors;
    uint64_t db_queries, db_errors, db_reconnects;
} features_stats;
void features_stats_get(features_stats *out);

/* ===========================================================================
 * CSV: Binance kline dumps (12 columns, with or without header, ms or us
 * open times) and `open_time,open,high,low,close,volume` with RFC 3339 or
 * epoch (s/ms/us) times. Parses a whole buffer; on a bad row returns
 * PD_EPARSE with "line N: reason" in why and *out untouched.
 */
int features_csv_parse(const char *text, size_t len, features_candle **out, size_t *n, char *why,
                       size_t whylen);

/* ===========================================================================
 * Seed: deterministic synthetic candles (regime-switching random walk with
 * volume and wicks). Writes `count` candles of tf ending with the last one
 * closed before `now`, for a given symbol and seed. *out is malloc'd.
 */
int features_seed_series(const char *symbol, const char *tf, int64_t now, size_t count,
                         uint64_t seed, features_candle **out);

/* ===========================================================================
 * Training jobs (features/jobs.c; written by the training module's owner).
 * The training_jobs table of db/003_training_jobs.sql. Records go through
 * one dedicated connection per handle, guarded by the handle's mutex, so
 * every function here is thread-safe. Times are Unix seconds, 0 = NULL.
 */
typedef struct features_jobs_db features_jobs_db;

/* One row. params and metrics are JSON text; params, metrics and error are
 * malloc'd (NULL when SQL NULL): features_job_row_cleanup frees them. */
typedef struct features_job_row {
    int64_t id;
    char symbol[32];
    char timeframe[8];
    char state[16];   /* queued, running, succeeded, failed, canceled */
    char *params;
    double progress;  /* 0..1 */
    char *metrics;
    char *error;
    int32_t version;  /* 0 = none */
    int64_t created_at, started_at, finished_at;
} features_job_row;

/* A handle over database_url (libpq conninfo or URI); connects on first
 * use. PD_EINVAL for a malformed URL. Free with features_jobs_close. */
int features_jobs_open(const char *database_url, features_jobs_db **out);
void features_jobs_close(features_jobs_db *db); /* NULL is a no-op */

/* Inserts a queued job; returns its id and creation time. PD_EBUSY when a
 * job for the series is already queued or running; PD_EDB. */
int features_jobs_insert(features_jobs_db *db, const char *symbol, const char *tf,
                         const char *params_json, int64_t *id, int64_t *created_at);
/* Writes state, progress, metrics, error, version, started_at and
 * finished_at of row->id (symbol, timeframe, params, created_at are not
 * changed). PD_ENOTFOUND, PD_EINVAL (a value the table's checks refuse),
 * PD_EDB. */
int features_jobs_update(features_jobs_db *db, const features_job_row *row);
/* One job; PD_ENOTFOUND. Clean *out up with features_job_row_cleanup. */
int features_jobs_get(features_jobs_db *db, int64_t id, features_job_row *out);
/* The most recent jobs (limit 0: 50), newest first; free with
 * features_job_rows_free. */
int features_jobs_list(features_jobs_db *db, size_t limit, features_job_row **out, size_t *n);
void features_job_row_cleanup(features_job_row *row);
void features_job_rows_free(features_job_row *rows, size_t n);
/* Marks every queued or running job failed with error (a previous process
 * died with them); *count (optional) gets how many. */
int features_jobs_fail_unfinished(features_jobs_db *db, const char *error, size_t *count);

#endif
