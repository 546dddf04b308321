/*
 * api_internal.h: what the api module's files share and nothing outside
 * api/ may include: the context, the process cache, and per-thread scratch.
 */
#ifndef PREDICTD_API_INTERNAL_H
#define PREDICTD_API_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "api/api.h"
#include "store/store.h"

#define API_CACHE_BUCKETS 1024
#define API_CACHE_PER_SERIES 4 /* versions x labels cached per series */

/* A cached prediction for one series and model version. */
struct api_cache_entry {
    char key[64];                 /* "SYMBOL|TF|vN|label" ("-": no label) */
    api_prediction *p;            /* one reference held by the cache */
    _Atomic int64_t checked_at;   /* last time the database was asked for newer candles */
    struct api_cache_entry *next;
};

/* The symbols that have candles for one timeframe, refreshed every few
 * seconds so multi-symbol requests do not query the database each time. */
struct api_symbols {
    char tf[8];
    char **names; /* owned */
    size_t n;
    int64_t fetched_at;
};

struct api_context {
    api_options opt;
    registry *reg;

    pthread_rwlock_t cache_lock; /* guards buckets and the entries' p pointers */
    struct api_cache_entry *buckets[API_CACHE_BUCKETS];

    pthread_mutex_t symbols_lock; /* guards symbols */
    struct api_symbols symbols[6];

    _Atomic uint64_t process_hits, process_misses, redis_hits, redis_misses, computed;

    /* Issue 7: live accuracy (api/live.c), stream clients (api/streams.c)
     * and the ledger the loop lends the ledger routes (NULL: none). */
    struct api_live *live;
    struct api_hub *hub;
    _Atomic(struct store_ledger *) ledger;
};

/* Builds the process-cache key; returns false when it does not fit. */
bool api_cache_key(char *key, size_t len, const char *symbol, const char *tf, uint32_t version,
                   const char *label);

/* A snapshot of the symbols with candles for tf (cached ~5 s). Caller frees
 * with store_strv_free. */
int api_symbols_for(api_context *ctx, const char *tf, int64_t now, char ***out, size_t *n);

/* Renders p's JSON fragment (everything but the time-dependent tail) from
 * the signal and the version that made it; sets p->fragment. */
struct inference_signal;
int api_render_fragment(api_prediction *p, const struct inference_signal *sig,
                        const registry_version *v, size_t window, double atr);

/* Adds a reference. */
void api_prediction_retain(api_prediction *p);

/* Records one kernel run (inference_run) of the given duration in the
 * process-wide inference latency histogram of /metrics (metrics.c).
 * Lock-free, callable from any thread. */
void api_metrics_inference(double seconds);

/* Issue 7 (api/live.c, api/streams.c): made and freed with the context. */
struct api_live;
struct api_hub;
int api_live_new(struct api_live **out);
void api_live_free(struct api_live *l); /* NULL is a no-op */
/* The live figures of a version; false (outputs untouched) when none were
 * recorded. Thread-safe. */
bool api_live_get(api_context *ctx, const char *symbol, const char *tf, uint32_t version,
                  double *hit_rate, uint64_t *resolved);
int api_hub_new(struct api_hub **out);
void api_hub_free(struct api_hub *h); /* NULL is a no-op; no client may remain */

#endif
