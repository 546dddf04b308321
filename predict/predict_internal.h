/*
 * predict_internal.h: what the predict module's files share and nothing
 * outside predict/ may include: the service's layout, the process cache,
 * and the helpers pipeline.c, render.c and live.c call in each other.
 * Names carry a double underscore: exported for the module, not public.
 */
#ifndef PREDICTD_PREDICT_INTERNAL_H
#define PREDICTD_PREDICT_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "predict/predict.h"

#define PREDICT_CACHE_BUCKETS 1024
#define PREDICT_CACHE_PER_SERIES 4 /* versions x labels cached per series */

/* A cached prediction for one series and model version. */
struct predict_cache_entry {
    char key[64];               /* "SYMBOL|TF|vN|label" ("-": no label) */
    predict_result *p;          /* one reference held by the cache */
    _Atomic int64_t checked_at; /* last time the database was asked for newer candles */
    struct predict_cache_entry *next;
};

/* The symbols that have candles for one timeframe, refreshed every few
 * seconds so multi-symbol requests do not query the database each time.
 * `list` is an immutable, reference-counted snapshot: requests take a
 * reference under symbols_lock and read it without the lock; one request
 * at a time (`refreshing`) reads a new one from the database, outside the
 * lock, while the others keep using the old one. */
struct predict_symbols {
    predict_symbol_list *list; /* symbols_lock; NULL until first read */
    int64_t fetched_at;        /* symbols_lock */
    bool refreshing;           /* symbols_lock */
};

struct predict_service {
    predict_options opt;
    registry *reg;

    util_rwlock cache_lock; /* guards buckets and the entries' p pointers */
    struct predict_cache_entry *buckets[PREDICT_CACHE_BUCKETS];

    util_mutex symbols_lock; /* guards symbols[] (not the lists they point to) */
    struct predict_symbols symbols[6];

    _Atomic uint64_t process_hits, process_misses, redis_hits, redis_misses, computed;
    _Atomic uint64_t negative_hits; /* answered "no" from negative.c */

    struct predict_live *live;             /* live accuracy (live.c) */
    struct predict_neg *neg;               /* "no" answers (negative.c); NULL: caching off */
    struct predict_ticks *ticks;           /* the exchanges' price ticks (ticks.c) */
    _Atomic(struct store_ledger *) ledger; /* lent by the loop to the ledger routes; NULL: none */
};

/* Builds the process-cache key; returns false when it does not fit. */
bool predict__cache_key(char *key, size_t len, const char *symbol, const char *tf,
                        uint32_t version, const char *label);

/* Renders p's JSON fragment (everything but the time-dependent tail) from
 * the signal and the version that made it; sets p->fragment. */
struct inference_signal;
int predict__render_fragment(predict_result *p, const struct inference_signal *sig,
                             const registry_version *v, size_t window, double atr,
                             bool exchange_tick);

/* Appends the model object's figures (class_accuracy, hit_rate_calls,
 * baselines, beats_baseline, cost_bps, ...), each as ",\"name\":value".
 * pol may be NULL. */
struct inference_policy;
void predict__render_model_figures(util_buf *b, const registry_meta *meta,
                                   const struct inference_policy *pol);

/* The prediction of version v from closed candles c[0..n) (oldest first;
 * the last registry_version_candles(v) are used) at time now: the very
 * computation predict_one makes on a cache miss, without the caches. c is
 * borrowed. Returns 0 and a new reference, or the codes of predict_one. */
int predict__compute_window(predict_service *svc, registry_version *v, const char *symbol,
                            const char *tf, int64_t now, const features_candle *c, size_t n,
                            predict_result **out, char *why, size_t whylen);

/* Records one kernel run (inference_run) of the given duration in the
 * process-wide latency histogram (predict_latency_get). Lock-free. */
void predict__inference_observe(double seconds);

/* The live accuracy table, made and freed with the service. */
struct predict_live;
int predict__live_new(struct predict_live **out);
void predict__live_free(struct predict_live *l); /* NULL is a no-op */
/* The live figures of a version; false (outputs untouched) when none were
 * recorded. Thread-safe. */
bool predict__live_get(predict_service *svc, const char *symbol, const char *tf,
                       uint32_t version, double *hit_rate, uint64_t *resolved);

/* The exchanges' price ticks (ticks.c), made with the service. */
struct predict_ticks;
int predict__ticks_new(struct predict_ticks **out);
void predict__ticks_free(struct predict_ticks *t); /* NULL is a no-op */
/* The tick the exchange gave for symbol, from a snapshot of the
 * exchange_symbols table (read whole when older than 5 minutes of wall
 * clock); 0 when no exchange has said, or the table could never be read.
 * Thread-safe; the thread that finds the snapshot old reads the table. */
double predict__exchange_tick(predict_service *svc, const char *symbol);

/* The cache of negative answers (negative.c), made with the service when
 * caching is on. Thread-safe. */
struct predict_neg;
int predict__neg_new(struct predict_neg **out);
void predict__neg_free(struct predict_neg *n); /* NULL is a no-op */
/* True (with *rc and why) when a still valid "no" is cached for the series. */
bool predict__neg_get(predict_service *svc, const char *symbol, const char *tf, int64_t now,
                      int *rc, char *why, size_t whylen);
/* Caches rc, when it is a "no" (PD_EUNKNOWNSYM, PD_ENOMODEL, PD_ENODATA;
 * anything else is ignored), made under the registry's `generation` (read
 * before the registry was asked). */
void predict__neg_put(predict_service *svc, const char *symbol, const char *tf, int64_t now,
                      uint64_t generation, int rc, const char *why);
/* Drops the series' entry (its candles changed). */
void predict__neg_forget(predict_service *svc, const char *symbol, const char *tf);

#endif
