/*
 * store_internal.h: what store/candles.c and store/cache.c share and no
 * other file may use: the per-thread connection slot, the counters behind
 * store_stats_get(), and the cache's window calls that the store's
 * read-through loader makes. Names carry a double underscore
 * (features__*) to say "exported for the module, not public".
 *
 * Threading: a store__tls belongs to one thread (thread-local, created
 * on first use, freed by store_thread_cleanup() or by the thread-exit
 * destructor). The counters are atomics and may be bumped from any thread.
 */
#ifndef PREDICTD_FEATURES_STORE_INTERNAL_H
#define PREDICTD_FEATURES_STORE_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "features/features.h"
#include "store/store.h"
#include "util/util.h"

struct pg_conn;      /* libpq's PGconn */
struct redisContext; /* hiredis' context */

/* One thread's connections. gen is the store_init() generation they were
 * made for: a re-init (tests switching URLs) makes older ones stale. */
typedef struct store__tls {
    struct pg_conn *pg;         /* NULL until first use or after a failure */
    uint64_t prepared;          /* bit i: statement i prepared on pg */
    struct redisContext *redis; /* NULL until first use or after a failure */
    unsigned gen;
} store__tls;

/* The calling thread's slot, created on first use; NULL on allocation
 * failure. Connections of an older store_init() generation are closed
 * first. */
store__tls *store__tls_get(void);

/* Counters; relaxed atomic increments. */
typedef struct store__counters {
    _Atomic uint64_t redis_hits, redis_misses, redis_errors;
    _Atomic uint64_t db_queries, db_errors, db_reconnects;
} store__counters;
extern store__counters store__ctr;

#define STORE__COUNT(field)                                                                     \
    atomic_fetch_add_explicit(&store__ctr.field, 1, memory_order_relaxed)

/* The bits of a double and back (the cache's and the binary protocol's
 * encodings of candle values). */
static inline uint64_t store__dbl_bits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static inline double store__bits_dbl(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

/* --- outage bookkeeping (pg.c), for the shared connections ---------------
 * One flag per dependency (the database, Redis): the first failure of an
 * outage is logged at `level` with its reason, later ones at debug, and the
 * first success after it at info, so a long outage is two lines, not one
 * per request. Any thread may call these. */
typedef struct store__outage {
    atomic_bool down;
    const char *mod;  /* log module */
    const char *what; /* "database unavailable", "Redis unavailable, serving from the database" */
    const char *back; /* "database available again" */
    enum util_log_level level;
} store__outage;

void store__outage_fail(store__outage *o, const char *why);
void store__outage_ok(store__outage *o);

/* Records the time since t0_ns in the latency histogram of kind
 * (STORE_LATENCY_*; latency.c). */
void store__observe(int kind, uint64_t t0_ns);
/* The value of call, its duration recorded under kind (DB or REDIS). */
#define STORE__TIMED(kind, call)                                                                   \
    __extension__({                                                                                \
        uint64_t t0__ = util_mono_ns();                                                            \
        __typeof__(call) r__ = (call);                                                             \
        store__observe(STORE_LATENCY_##kind, t0__);                                                \
        r__;                                                                                       \
    })

/* --- cache.c, called by candles.c ----------------------------------------- */

/* Parses and stores the Redis settings (url NULL: no Redis). Called by
 * store_init() before threads start. PD_EINVAL on a malformed URL. */
int store__cache_configure(const char *url, bool cache_on, unsigned gen);
void store__cache_unconfigure(void);
/* Closes the thread's Redis context (tls->redis); NULL-safe. */
void store__cache_close(store__tls *t);
/* True when windows and values should go through Redis (a URL is set and
 * caching is on); says nothing about whether Redis is up. */
bool store__cache_enabled(void);

/*
 * The candle window cache. One key per series, predictd:candles:SYMBOL:TF,
 * holding one packed value: count candles as little-endian int64 + 5
 * doubles, then a trailer (magic, format version, flags, count, last open
 * time); see cache.c.
 * A stored window is usable for a request only when its last candle is the
 * request's last closed candle (last_open) and it holds at least `limit`
 * candles or the whole history of the series (flag complete).
 */
#define STORE__WINDOW_CACHE_MIN 1024 /* candles fetched on a miss, at least */
#define STORE__WINDOW_CACHE_MAX 8192 /* larger windows are not cached */

/* Looks up one window. 0 on a hit (*out malloc'd, the last min(limit, count)
 * candles, oldest first), PD_ENOTFOUND on a miss or an unusable entry,
 * PD_ECACHE when Redis is off or down. */
int store__cache_window_get(const char *symbol, const char *tf, int64_t last_open, size_t limit,
                               features_candle **out, size_t *n);
/* Stores a window with a TTL in seconds. 0, PD_EINVAL (n is 0 or over
 * STORE__WINDOW_CACHE_MAX, ttl_s < 1) or PD_ECACHE. */
int store__cache_window_put(const char *symbol, const char *tf, const features_candle *c,
                               size_t n, bool complete, int64_t ttl_s);
/* Pipelined look-up of nsym windows of one timeframe. rcs[i] as
 * store__cache_window_get; symbols[i] NULL are skipped (rcs[i] left
 * alone). Returns 0, or PD_ECACHE when Redis is off or down (then every
 * entry is untouched). */
int store__cache_window_mget(const char *const *symbols, size_t nsym, const char *tf,
                                int64_t last_open, size_t limit, features_candle **outs, size_t *ns,
                                int *rcs);
/* Pipelined store of several windows; entries with c[i] NULL are skipped. */
int store__cache_window_mput(const char *const *symbols, size_t nsym, const char *tf,
                                features_candle *const *c, const size_t *n, const bool *complete,
                                int64_t ttl_s);
/* Drops a series' window (after an upsert changed it). */
int store__cache_window_del(const char *symbol, const char *tf);

#endif
