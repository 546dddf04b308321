/*
 * store: PostgreSQL and Redis, the only module that talks SQL or Redis.
 *
 *   candles.c   candles in PostgreSQL: windows, ranges, upserts, symbols;
 *               one connection per thread, prepared statements, reconnect
 *   cache.c     Redis: packed candle windows and rendered predictions;
 *               bypassed (and counted) when Redis is down
 *   pg.c        the libpq plumbing the other files share
 *   redis.c     the redis:// URL and the connect sequence
 *   jobs.c      the training_jobs table
 *   ledger.c    the predictions table (the ledger): record, settle, figures
 *   notify.c    LISTEN on a channel and PUBLISH to Redis
 *   lock.c      leader locks: a PostgreSQL advisory lock per job
 *   notifier.c  NOTIFY from any thread (the replicas tell each other)
 *   migrate.c   the db/ migrations
 *   lock.c      leader locks: one holder of a job across processes (advisory locks)
 *   markets.c   exchange_symbols: a symbol's status and price tick per exchange
 *   feedstate.c the market-data feed's state, for /health/status
 *
 * Threading: candle and cache functions use the calling thread's own
 * connections (thread-local, made on first use and rebuilt after a
 * failure); store_init() must run before any thread uses them and
 * store_shutdown() after all have stopped. Jobs, ledger, listener and
 * publisher handles own one dedicated connection each (see their sections).
 */
#ifndef PREDICTD_STORE_H
#define PREDICTD_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "features/features.h"

/* ===========================================================================
 * Connections. Called once by server before threads start / after they end.
 * database_url: libpq conninfo or URI (NULL: no database; store calls return
 * PD_EDB). redis_url: "redis://host:port/db" or NULL (no cache).
 * cache_on: false bypasses Redis and process caches (PREDICTD_CACHE=off).
 */
int store_init(const char *database_url, const char *redis_url, bool cache_on);
void store_shutdown(void);
/* Closes the calling thread's connections (threads call it before exit). */
void store_thread_cleanup(void);

/* ===========================================================================
 * Store (PostgreSQL).
 */

/* What the window loader found, for the prediction's data-quality fields. */
typedef struct store_window_info {
    int64_t last_open;      /* open time of the last closed candle, 0 if none */
    int64_t last_close;     /* its close time */
    int gaps;               /* missing candles inside the window */
    bool from_cache;        /* served from Redis */
} store_window_info;

/* Applies the db/ NNN_name.sql migrations in name order, each once (idempotent). */
int store_migrate(const char *migrations_dir);

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
int store_load_window(const char *symbol, const char *tf, int64_t now, size_t limit,
                         features_candle **out, size_t *n, store_window_info *info);

/*
 * store_load_window for several symbols of one timeframe: one pipelined
 * round trip to Redis for all of them, then the database for the misses
 * (the misses are written back in one more pipelined round trip). Each
 * entry i gets its own result in rcs[i] (0 or the codes of
 * store_load_window; PD_ESYMBOL for a malformed symbol); outs[i], ns[i]
 * and infos[i] (infos may be NULL) are written only when rcs[i] is 0, and
 * the caller frees each outs[i]. Returns 0 when every entry has its result,
 * PD_ETIMEFRAME, PD_EINVAL (NULL arrays, limit 0) or PD_ENOMEM.
 */
int store_load_windows(const char *const *symbols, size_t nsym, const char *tf, int64_t now,
                          size_t limit, features_candle **outs, size_t *ns,
                          store_window_info *infos, int *rcs);

/* Loads closed candles with from <= open time < to (0: unbounded), oldest
 * first, for training. *out is malloc'd. */
int store_load_range(const char *symbol, const char *tf, int64_t from, int64_t to,
                        int64_t now, features_candle **out, size_t *n);

/* Symbols that have candles for tf, sorted. *out is a malloc'd array of
 * malloc'd strings; free with store_strv_free. */
int store_list_symbols(const char *tf, char ***out, size_t *n);
void store_strv_free(char **v, size_t n);

/*
 * Upserts candles of one series in a single transaction: all or nothing.
 * Unchanged rows are not rewritten. For a timeframe above 1m the series is
 * native (registered so on its first write); a derived series refuses the
 * write: PD_EINVAL, and the database's message naming the series is logged.
 * Writing 1m candles is store_upsert_base_candles. Also PD_ESYMBOL,
 * PD_ETIMEFRAME, PD_EINVAL (bad or misaligned candles), PD_EDB.
 */
int store_upsert_candles(const char *symbol, const char *tf, const features_candle *c,
                            size_t n);

/*
 * Upserts 1m base candles of symbol; in the same transaction PostgreSQL
 * (db/005_derived_series.sql) recomputes the 5m, 15m, 1h, 4h and 1d
 * candles of every bucket they touch, from the 1m candles present (first
 * open, max high, min low, last close, summed volume), except for series of
 * the symbol that are native. Idempotent; a late or corrected candle
 * corrects its buckets. Drops the cached windows of every timeframe of the
 * symbol. Same codes as store_upsert_candles. Thread-safe (the calling
 * thread's connection).
 */
int store_upsert_base_candles(const char *symbol, const features_candle *c, size_t n);

/* What a series is (candle_series): none yet, base (1m), derived from 1m,
 * or native (written directly). */
enum { STORE_SERIES_NONE, STORE_SERIES_BASE, STORE_SERIES_DERIVED, STORE_SERIES_NATIVE };
/* Writes *kind. 0, PD_ESYMBOL, PD_ETIMEFRAME, PD_EINVAL, PD_EDB. */
int store_series_kind(const char *symbol, const char *tf, int *kind);
/* The price ticks exchanges gave (exchange_symbols, written by the feed;
 * per symbol the newest row of any venue), sorted by symbol (strcmp). *out
 * is malloc'd (free it; *n may be 0). 0, PD_EINVAL, PD_ENOMEM, PD_EDB. Any
 * thread (its own connection). */
typedef struct store_tick {
    char symbol[24];
    double tick; /* > 0 */
} store_tick;
int store_symbol_ticks(store_tick **out, size_t *n);
/* "none", "base", "derived", "native". Static storage. */
const char *store_series_kind_name(int kind);

/* Number of candles of a series (for `seed`'s "table empty" check: pass
 * NULL symbol and tf for the whole table). */
int store_count_candles(const char *symbol, const char *tf, int64_t *count);

/* ===========================================================================
 * Feed state (store/feedstate.c): what the market-data feed of this process
 * last reported, for /health/status and /metrics. Thread-safe (a mutex).
 */
typedef struct store_feed_status {
    char feed[32];         /* "demo-replay", "binance": the feed's name */
    char state[16];        /* connecting, connected, lagging, backfilling, down */
    char source[192];      /* where its data comes from, a sentence */
    int64_t last_candle;   /* open time of the newest base candle written, 0: none */
    int64_t updated_at;    /* Unix seconds of the last report */
    uint64_t candles;      /* base candles written */
    uint64_t trades;       /* trades aggregated */
    uint64_t corrections;  /* candles written again (late trades) */
    uint64_t write_errors; /* failed writes */
} store_feed_status;
/* Copies *s (NULL: no feed). */
void store_feed_status_set(const store_feed_status *s);
/* 0 and *out, or PD_ENOTFOUND when no feed runs in this process. */
int store_feed_status_get(store_feed_status *out);
/* True while this process's feed is the demo replay (feed "demo-replay"):
 * every answer then says its data is a demo. Lock-free. */
bool store_feed_demo(void);

/* ===========================================================================
 * Cache (Redis): rendered predictions, keyed by series and model version.
 */
/* Fetches a cached value; PD_ENOTFOUND on a miss, PD_ECACHE when Redis is
 * down or off. *out is malloc'd. */
int store_cache_get(const char *key, char **out, size_t *len);
/* Stores a value with a TTL in seconds (>= 1). */
int store_cache_set(const char *key, const char *val, size_t len, int64_t ttl_s);
/* store_cache_set for n values in one pipelined round trip. PD_EINVAL (a bad
 * key, value or TTL: nothing sent), PD_ECACHE (Redis down or off, or a
 * command failed: the others may be stored). */
int store_cache_set_many(const char *const *keys, const char *const *vals, const size_t *lens,
                         const int64_t *ttls, size_t n);

/* Drops the cached candle window of a series (call it when candles of the
 * series changed outside this process, e.g. on NOTIFY predictd_candles;
 * upserts made through this module already do it). 0, PD_ECACHE when Redis
 * is down or off, PD_ESYMBOL / PD_ETIMEFRAME. */
int store_cache_drop_window(const char *symbol, const char *tf);
/* store_cache_drop_window for n symbols of one timeframe, in one pipelined
 * round trip. 0, PD_ECACHE, PD_ESYMBOL / PD_ETIMEFRAME (nothing sent). */
int store_cache_drop_windows(const char *const *symbols, size_t n, const char *tf);

/* Counters for /metrics, monotonically increasing. */
typedef struct store_stats {
    uint64_t redis_hits, redis_misses, redis_errors;
    uint64_t db_queries, db_errors, db_reconnects;
} store_stats;
void store_stats_get(store_stats *out);

/* Latency histograms of the round trips to PostgreSQL (each statement) and
 * Redis (each reply; in a pipelined batch the first reply carries the
 * round trip). Buckets are store_latency_bounds (seconds, 10 us .. 10 s);
 * counts[i] is the number in bucket i alone (not cumulative), the last is
 * the overflow. Thread-safe, lock-free. */
enum { STORE_LATENCY_DB, STORE_LATENCY_REDIS, STORE_LATENCY_KINDS_ };
#define STORE_LATENCY_BUCKETS 19
extern const double store_latency_bounds[STORE_LATENCY_BUCKETS];
typedef struct store_latency {
    uint64_t counts[STORE_LATENCY_BUCKETS + 1];
    double sum_s;
} store_latency;
void store_latency_get(int kind, store_latency *out);

/* ===========================================================================
 * Training jobs (store/jobs.c).
 * The training_jobs table of db/003_training_jobs.sql. Records go through
 * one dedicated connection per handle, guarded by the handle's mutex, so
 * every function here is thread-safe. Times are Unix seconds, 0 = NULL.
 */
typedef struct store_jobs_db store_jobs_db;

/* One row. params and metrics are compact JSON text; params, metrics and error are
 * malloc'd (NULL when SQL NULL): store_job_row_cleanup frees them. */
typedef struct store_job_row {
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
    char stage[24];        /* what the running job does now; "" when none */
    char worker[64];       /* the replica that claimed it ("" when none); read only */
    bool cancel_requested; /* a cancel was asked for; read only */
} store_job_row;

/* A handle over database_url (libpq conninfo or URI); connects on first
 * use. PD_EINVAL for a malformed URL. Free with store_jobs_close. */
int store_jobs_open(const char *database_url, store_jobs_db **out);
void store_jobs_close(store_jobs_db *db); /* NULL is a no-op */

/* Inserts a queued job; returns its id and creation time. PD_EBUSY when a
 * job for the series is already queued or running; PD_EDB. */
int store_jobs_insert(store_jobs_db *db, const char *symbol, const char *tf,
                         const char *params_json, int64_t *id, int64_t *created_at);
/* The same, with the metrics column set (JSON text, NULL: none). */
int store_jobs_insert_ex(store_jobs_db *db, const char *symbol, const char *tf,
                         const char *params_json, const char *metrics_json, int64_t *id,
                         int64_t *created_at);
/*
 * Claims the oldest queued job for worker (a replica's name): it becomes
 * running with started_at and heartbeat_at now and stage "load", in one
 * statement whose SELECT ... FOR UPDATE SKIP LOCKED lets two replicas
 * claiming at once get different jobs. 0 and the row (clean it up),
 * PD_ENOTFOUND when nothing is queued, PD_EDB, PD_ENOMEM (the job is put
 * back in the queue).
 */
int store_jobs_claim(store_jobs_db *db, const char *worker, store_job_row *out);
/* The running job's heartbeat: heartbeat_at = now(), progress (never
 * lowered) and stage (NULL or "": unchanged), only while the row is running
 * and claimed by worker. *cancel gets cancel_requested. PD_ENOTFOUND when
 * the row is no longer this worker's running job (it was marked failed, or
 * finished); PD_EDB. */
int store_jobs_heartbeat(store_jobs_db *db, int64_t id, const char *worker, double progress,
                         const char *stage, bool *cancel);
/* Asks for a cancel: a queued job becomes canceled at once (*was_queued
 * true); a running one gets cancel_requested, which its worker reads at its
 * next heartbeat. 0, PD_ENOTFOUND, PD_EINVAL when the job already finished,
 * PD_EDB. */
int store_jobs_cancel(store_jobs_db *db, int64_t id, bool *was_queued);
/* Puts worker's running job back in the queue (its worker stops; another
 * claims it and starts over), unless a cancel was requested. 0,
 * PD_ENOTFOUND (not this worker's running job, or a cancel was asked for),
 * PD_EDB. */
int store_jobs_requeue(store_jobs_db *db, int64_t id, const char *worker);
/* Jobs waiting to be claimed, all replicas together. */
int store_jobs_count_queued(store_jobs_db *db, size_t *count);
/* Marks failed (with error) every running job whose heartbeat is older than
 * stale_s seconds (or missing): its worker is gone. *count (optional) gets
 * how many. */
int store_jobs_fail_orphaned(store_jobs_db *db, int stale_s, const char *error, size_t *count);
/* Writes state, progress, metrics, error, version, started_at,
 * finished_at and stage of row->id (symbol, timeframe, params, created_at are not
 * changed). PD_ENOTFOUND, PD_EINVAL (a value the table's checks refuse),
 * PD_EDB. */
int store_jobs_update(store_jobs_db *db, const store_job_row *row);
/* One job; PD_ENOTFOUND. Clean *out up with store_job_row_cleanup. */
int store_jobs_get(store_jobs_db *db, int64_t id, store_job_row *out);
/* The most recent jobs (limit 0: 50), newest first; free with
 * store_job_rows_free. */
int store_jobs_list(store_jobs_db *db, size_t limit, store_job_row **out, size_t *n);
void store_job_row_cleanup(store_job_row *row);
void store_job_rows_free(store_job_row *rows, size_t n);

/* ===========================================================================
 * Ledger (store/ledger.c). The
 * predictions table of db/002_predictions.sql and db/004_ledger_outcomes.sql:
 * one row per prediction the inference loop made (symbol, timeframe, candle,
 * model version), then, once the resolver has walked the candles after it,
 * what the market did. Also the loop's two other wires: LISTEN on the
 * candles' NOTIFY channel, and PUBLISH of new predictions to Redis.
 *
 * Each handle (store_ledger, store_listener, store_pub) owns one
 * dedicated connection, made on first use (connect_timeout 3 s,
 * statement_timeout 5 s, TCP keepalives), never shared with the per-thread
 * store connections. A ledger handle's mutex serialises its users, so it is
 * thread-safe; a listener or publisher belongs to one thread.
 */

/* Classes, in enum inference_class order (this module does not depend on
 * inference; predict/resolver.c asserts the two agree). */
enum { STORE_LEDGER_LONG, STORE_LEDGER_SHORT, STORE_LEDGER_NO_TRADE };

/* What a prediction's trade did (the outcome column). */
enum store_ledger_outcome {
    STORE_OUTCOME_OPEN,    /* not settled yet (NULL in the table) */
    STORE_OUTCOME_TP1,     /* the highest take-profit reached before the stop */
    STORE_OUTCOME_TP2,     /* or the end of the horizon */
    STORE_OUTCOME_TP3,
    STORE_OUTCOME_SL,      /* the stop first; a candle touching both counts as the stop */
    STORE_OUTCOME_EXPIRED, /* neither within the horizon */
    STORE_OUTCOME_NONE     /* a NO_TRADE prediction: no trade, realised class only */
};
/* "TP1", ..., "NONE"; "OPEN" for STORE_OUTCOME_OPEN and unknown values.
 * Static storage. */
const char *store_ledger_outcome_name(int outcome);
/* "LONG", "SHORT", "NO_TRADE"; "UNKNOWN" for other values. Static storage. */
const char *store_ledger_class_name(int cls);

/* One prediction as recorded. */
typedef struct store_ledger_entry {
    char symbol[24];
    char timeframe[8];
    int64_t candle_time; /* open time of the last closed candle the prediction used */
    uint32_t version;    /* model version, >= 1 */
    int direction;       /* STORE_LEDGER_* */
    double confidence;
    double probs[3];     /* LONG, SHORT, NO_TRADE */
    /* The levels shown (for NO_TRADE: those of the more probable side).
     * stop_loss below entry means LONG levels, above means SHORT. NaN: none
     * (such a row is recorded but never resolved). */
    double entry, stop_loss, tp[3], atr;
    uint32_t horizon;    /* candles the trade may run; 0: unknown */
    int64_t created_at;  /* Unix seconds; 0: the database's now() */
    bool stale_data;     /* made from stale data: recorded, never counted in live figures */
} store_ledger_entry;

/* A resolution: what the resolver found for one entry. */
typedef struct store_ledger_resolution {
    int outcome;       /* enum store_ledger_outcome; OPEN: not settled yet */
    int realised;      /* STORE_LEDGER_* by the triple barrier; -1 while open */
    uint32_t candles;  /* candles after the entry up to the deciding one */
    double hit_time_s; /* entry close to the close of the candle that first touched the
                          outcome's level; NaN for EXPIRED, NONE and open */
    double r_multiple; /* realised R; NaN for NONE and open */
    double mfe, mae;   /* max favourable / adverse excursion in R (>= 0); NaN for NONE, open */
} store_ledger_resolution;

/*
 * A resolver: settles entry e against the candles that followed it (see
 * predict_resolve for the rules). Writes *out and returns 0, or returns
 * non-zero when the entry's levels cannot be resolved (the row is skipped).
 */
typedef int (*store_ledger_resolve_fn)(const store_ledger_entry *e, int64_t tf_seconds,
                                       const features_candle *after, size_t n,
                                       int64_t last_closed_open, store_ledger_resolution *out);

typedef struct store_ledger store_ledger;

/* A handle over database_url; connects on first use. PD_EINVAL for a
 * malformed URL, PD_ENOMEM. Free with store_ledger_close (NULL: no-op). */
int store_ledger_open(const char *database_url, store_ledger **out);
void store_ledger_close(store_ledger *db);

/* Records one prediction, idempotently: one row per symbol, timeframe,
 * candle and version, the first one wins. *inserted (may be NULL) says
 * whether this call wrote it. PD_EINVAL (bad entry, or refused by a
 * CHECK), PD_EDB. */
int store_ledger_record(store_ledger *db, const store_ledger_entry *e, bool *inserted);
/* Records n predictions in one round trip per 1,000 (one multi-row INSERT),
 * with store_ledger_record's rules; inserted[i] says whether this call wrote
 * entry i. All entries are checked first (PD_EINVAL, PD_ESYMBOL,
 * PD_ETIMEFRAME: nothing written); PD_EDB (the chunks before the failing
 * one are written). */
int store_ledger_record_many(store_ledger *db, const store_ledger_entry *e, size_t n,
                             bool *inserted);

/* A series (symbol and timeframe). */
typedef struct store_ledger_series {
    char symbol[24];
    char timeframe[8];
} store_ledger_series;

/* The series that have unresolved rows. *out is malloc'd (free it; NULL
 * when *n is 0). PD_EDB. */
int store_ledger_open_series(store_ledger *db, store_ledger_series **out, size_t *n);

/*
 * Resolves the series' open rows (at most 2000 per call, oldest first)
 * against its closed candles at time now, with the resolver given, and
 * writes the settled ones in one transaction. *settled (may be NULL)
 * gets how many. Rows without levels are left alone. PD_ESYMBOL,
 * PD_ETIMEFRAME, PD_EDB.
 */
int store_ledger_settle(store_ledger *db, const char *symbol, const char *tf, int64_t now,
                        store_ledger_resolve_fn resolve, size_t *settled);

/* Live figures of one version of one series, for model_accuracy. */
typedef struct store_ledger_live {
    char symbol[24];
    char timeframe[8];
    uint32_t version;
    uint64_t trades; /* resolved LONG and SHORT predictions */
    uint64_t hits;   /* of them, outcome TP1..TP3 */
} store_ledger_live;

/* Per series and version, of one series (symbol and tf given) or of all
 * (both NULL); rows made from stale data are left out. *out is malloc'd (NULL when *n is 0). PD_EDB, PD_EINVAL. */
int store_ledger_live_stats(store_ledger *db, const char *symbol, const char *tf,
                               store_ledger_live **out, size_t *n);

/* Aggregates over a set of rows; ratios are the caller's to take. */
typedef struct store_ledger_figures {
    uint64_t predictions;  /* rows (in a window: the resolved rows in it) */
    uint64_t open;         /* rows not resolved yet */
    uint64_t resolved;     /* rows with an outcome */
    uint64_t trades;       /* resolved LONG and SHORT rows */
    uint64_t hits;         /* trades with outcome TP1..TP3 */
    uint64_t correct;      /* resolved rows whose realised class is the predicted one */
    double sum_r;          /* r_multiple over trades */
    double sum_brier;      /* over resolved rows: sum of (p_k - [realised = k])^2 */
    struct {
        uint64_t predictions, resolved, hits, correct;
        double sum_r;
    } dir[3];              /* by predicted direction, STORE_LEDGER_* */
    int64_t first, last;   /* candle times of the rows; 0 when none */
} store_ledger_figures;

/* One version's figures: over every row, and over the `window` most recent
 * resolved rows (by candle time). */
typedef struct store_ledger_perf {
    uint32_t version;
    store_ledger_figures all, window;
} store_ledger_perf;

/* Figures of every version with rows in the series, ascending by version,
 * from SQL aggregates. window: 1..100000. *out is malloc'd (NULL when *n
 * is 0). PD_ESYMBOL, PD_ETIMEFRAME, PD_EINVAL, PD_EDB. */
int store_ledger_performance(store_ledger *db, const char *symbol, const char *tf,
                                size_t window, store_ledger_perf **out, size_t *n);

/* A ledger row with its outcome (r.outcome OPEN and resolved_at 0 while
 * unresolved). */
typedef struct store_ledger_row {
    store_ledger_entry e;
    store_ledger_resolution r;
    int64_t resolved_at;
} store_ledger_row;

/* Where a history page ended: its last row's key. */
typedef struct store_ledger_cursor {
    int64_t candle_time;
    char symbol[24];
    char timeframe[8];
    uint32_t version;
} store_ledger_cursor;

typedef struct store_ledger_query {
    const char *symbol;    /* NULL: every symbol */
    const char *timeframe; /* NULL: every timeframe */
    int64_t from, to;      /* candle_time in [from, to); 0: unbounded */
    size_t limit;          /* rows per page, 1..1000 */
    const store_ledger_cursor *after; /* the previous page's end; NULL: the first page */
} store_ledger_query;

/* One page of the ledger, newest candle first (then symbol, timeframe and
 * version, descending). *more says whether rows follow. *out is malloc'd
 * (NULL when *n is 0). PD_ESYMBOL, PD_ETIMEFRAME, PD_EINVAL, PD_EDB. */
int store_ledger_history(store_ledger *db, const store_ledger_query *q,
                            store_ledger_row **out, size_t *n, bool *more);

/* Stores the figures of one backtest run of a version (figures_json: a
 * JSON object, stored as jsonb). PD_ESYMBOL, PD_ETIMEFRAME, PD_EINVAL,
 * PD_EDB. */
int store_ledger_backtest_save(store_ledger *db, const char *symbol, const char *tf,
                               uint32_t version, int64_t from, int64_t to, double cost_bps,
                               const char *figures_json);

/* The latest backtest of each version of a series. */
typedef struct store_ledger_backtest {
    uint32_t version;
    int64_t created_at;
    char *figures_json; /* owned */
} store_ledger_backtest;

/* Ascending by version. *out is malloc'd: free it with
 * store_ledger_backtests_free. PD_ESYMBOL, PD_ETIMEFRAME, PD_EINVAL, PD_EDB. */
int store_ledger_backtests(store_ledger *db, const char *symbol, const char *tf,
                           store_ledger_backtest **out, size_t *n);
void store_ledger_backtests_free(store_ledger_backtest *b, size_t n);

/*
 * LISTEN. A listener holds one connection that LISTENs on a channel; the
 * owner polls store_listen_socket() and calls store_listen_consume()
 * when it is readable. After the connection is lost (consume returns
 * PD_EDB) the owner calls store_listen_connect() again, which LISTENs
 * anew: notifications sent meanwhile are lost, so the owner catches up.
 * One thread owns a listener.
 */
typedef struct store_listener store_listener;
typedef void (*store_notify_fn)(const char *payload, void *arg);

/* channel: [a-z_][a-z0-9_]*, at most 63 bytes. Does not connect. PD_EINVAL
 * (bad URL or channel), PD_ENOMEM. */
int store_listen_open(const char *database_url, const char *channel, store_listener **out);
/* (Re)connects and LISTENs. 0 or PD_EDB (logged). */
int store_listen_connect(store_listener *l);
/* The connection's socket, -1 when not connected. */
int store_listen_socket(const store_listener *l);
/* Reads what has arrived without blocking and calls fn for each
 * notification in order. Returns the number delivered, or PD_EDB when the
 * connection is lost (it is closed: connect again). */
int store_listen_consume(store_listener *l, store_notify_fn fn, void *arg);
void store_listen_close(store_listener *l); /* NULL is a no-op */

/*
 * PUBLISH. A publisher holds one Redis connection (redis://[[user]:password@]
 * host[:port][/db], as PREDICTD_REDIS_URL), made on first use and again
 * after a failure (not more than once a second). One thread owns it.
 */
typedef struct store_pub store_pub;
/* PD_EINVAL for a malformed URL (the URL is never logged). */
int store_pub_open(const char *redis_url, store_pub **out);
/* PUBLISH channel msg. 0, or PD_ECACHE when Redis is down (logged once per
 * outage). *receivers (may be NULL) gets the subscriber count. */
int store_pub_publish(store_pub *p, const char *channel, const char *msg, size_t len,
                         long long *receivers);
/* PUBLISH channel msgs[i] for i < n in one pipelined round trip. 0, or
 * PD_ECACHE when Redis is down (logged once per outage). */
int store_pub_publish_many(store_pub *p, const char *channel, const char *const *msgs,
                           const size_t *lens, size_t n);
void store_pub_close(store_pub *p); /* NULL is a no-op */

/* ===========================================================================
 * Leader locks (store/lock.c): one holder among the processes sharing a
 * database, by a PostgreSQL session advisory lock on a 64-bit key. The
 * holder does the key's job; the others call store_lock_try now and then
 * and take over when the holder's session ends (process gone, connection
 * broken). A handle owns one dedicated connection (TCP keepalives on),
 * never replaced behind the owner's back: once the connection is lost the
 * lock is not held, and the owner must stop the job before trying again.
 * A handle belongs to one thread at a time.
 */
typedef struct store_lock store_lock;

/* Keys in use, one per job. Positive, so pg_locks shows them as is. */
#define STORE_LOCK_KEY_FEED INT64_C(0x7072656466656564) /* "predfeed": the market feed */
/* "predlead": the replicas' leader (the inference loop's ledger writes,
 * settling and publishes, and the retraining schedule) */
#define STORE_LOCK_KEY_LEADER INT64_C(0x707265646c656164)

/* A handle for key over database_url; connects nothing. PD_EINVAL (bad URL
 * or NULL out), PD_ENOMEM. Close with store_lock_close. */
int store_lock_open(const char *database_url, int64_t key, store_lock **out);
/* Tries to take the lock without waiting (connecting first when needed).
 * 0 with *held true (taken now, or still held: then it is checked as
 * store_lock_check does) or false (another session holds it); PD_EDB
 * when the database cannot be reached (*held untouched). */
int store_lock_try(store_lock *l, bool *held);
/* Is the lock still held? Asks the server (pg_locks of this session).
 * 0 with *held; PD_EDB when the connection broke (*held false: the lock
 * is gone with the session). */
int store_lock_check(store_lock *l, bool *held);
/* Releases the lock and closes the connection (a standby takes over).
 * NULL or not held: no-op. */
void store_lock_release(store_lock *l);
/* Releases and frees; NULL is a no-op. */
void store_lock_close(store_lock *l);

/* ===========================================================================
 * NOTIFY (store/notifier.c) from any thread: one dedicated connection (made
 * on first use, again after a loss), serialised by a mutex.
 */
typedef struct store_notifier store_notifier;
/* Does not connect. PD_EINVAL (bad URL), PD_ENOMEM. */
int store_notifier_open(const char *database_url, store_notifier **out);
/* pg_notify(channel, payload) (payload < 8000 bytes). 0, PD_EINVAL or
 * PD_EDB (logged). Thread-safe. */
int store_notifier_send(store_notifier *n, const char *channel, const char *payload);
void store_notifier_close(store_notifier *n); /* NULL is a no-op */

/* ===========================================================================
 * Exchange symbols (store/markets.c): what an exchange says about a
 * symbol, in the exchange_symbols table. A handle owns one dedicated
 * connection guarded by a mutex: thread-safe.
 */
typedef struct store_markets store_markets;

typedef struct store_market {
    char venue[33];   /* "binance": [a-z0-9_-]{1,32} */
    char symbol[24];
    char status[24];  /* the exchange's word: "TRADING", "BREAK", "HALT", ... */
    double tick_size; /* price step (> 0) */
    double step_size; /* quantity step; 0: unknown */
    int64_t updated_at; /* Unix seconds of the last write (get only) */
} store_market;

/* PD_EINVAL (bad URL), PD_ENOMEM. Close with store_markets_close (NULL: no-op). */
int store_markets_open(const char *database_url, store_markets **out);
void store_markets_close(store_markets *m);
/* Inserts or replaces (venue, symbol). 0, PD_EINVAL (bad fields), PD_EDB. */
int store_market_put(store_markets *h, const store_market *m);
/* One symbol. 0 with *out, PD_ENOTFOUND, PD_ESYMBOL, PD_EINVAL, PD_EDB. */
int store_market_get(store_markets *h, const char *venue, const char *symbol,
                     store_market *out);

#endif
