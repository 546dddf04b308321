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
 *   migrate.c   the db/ migrations
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

/* Upserts candles of one series in a single transaction: all or nothing. */
int store_upsert_candles(const char *symbol, const char *tf, const features_candle *c,
                            size_t n);

/* Number of candles of a series (for `seed`'s "table empty" check: pass
 * NULL symbol and tf for the whole table). */
int store_count_candles(const char *symbol, const char *tf, int64_t *count);

/* ===========================================================================
 * Cache (Redis): rendered predictions, keyed by series and model version.
 */
/* Fetches a cached value; PD_ENOTFOUND on a miss, PD_ECACHE when Redis is
 * down or off. *out is malloc'd. */
int store_cache_get(const char *key, char **out, size_t *len);
/* Stores a value with a TTL in seconds (>= 1). */
int store_cache_set(const char *key, const char *val, size_t len, int64_t ttl_s);

/* Drops the cached candle window of a series (call it when candles of the
 * series changed outside this process, e.g. on NOTIFY predictd_candles;
 * upserts made through this module already do it). 0, PD_ECACHE when Redis
 * is down or off, PD_ESYMBOL / PD_ETIMEFRAME. */
int store_cache_drop_window(const char *symbol, const char *tf);

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

/* One row. params and metrics are JSON text; params, metrics and error are
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
} store_job_row;

/* A handle over database_url (libpq conninfo or URI); connects on first
 * use. PD_EINVAL for a malformed URL. Free with store_jobs_close. */
int store_jobs_open(const char *database_url, store_jobs_db **out);
void store_jobs_close(store_jobs_db *db); /* NULL is a no-op */

/* Inserts a queued job; returns its id and creation time. PD_EBUSY when a
 * job for the series is already queued or running; PD_EDB. */
int store_jobs_insert(store_jobs_db *db, const char *symbol, const char *tf,
                         const char *params_json, int64_t *id, int64_t *created_at);
/* Writes state, progress, metrics, error, version, started_at and
 * finished_at of row->id (symbol, timeframe, params, created_at are not
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
/* Marks every queued or running job failed with error (a previous process
 * died with them); *count (optional) gets how many. */
int store_jobs_fail_unfinished(store_jobs_db *db, const char *error, size_t *count);

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
 * (both NULL). *out is malloc'd (NULL when *n is 0). PD_EDB, PD_EINVAL. */
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
void store_pub_close(store_pub *p); /* NULL is a no-op */

#endif
