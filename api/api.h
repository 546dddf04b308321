/*
 * api: the HTTP surface and the prediction pipeline behind it.
 *
 *   predict.c   one prediction: registry -> candles -> features -> kernel ->
 *               signal, with a process cache and a Redis cache of rendered
 *               predictions keyed by series, model version and candle
 *   render.c    JSON rendering of predictions and the error envelope
 *   http.c      the Ulfius instance (epoll thread pool), middleware (request
 *               id, limits, auth, CORS, rate limit, metrics), route table
 *   routes_*.c  handlers; they parse and validate, call plain C, render
 *
 * HTTP types stop at the handlers: everything below takes plain C values and
 * returns PD_* codes. api_status_of() is the one table from codes to HTTP
 * statuses.
 *
 * Threading: an api_context is created before the HTTP threads start and
 * freed after they stop; its caches are internally synchronised, its
 * options read-only. api_predict() is thread-safe and is also called by the
 * CLI (`predictd predict`) and by the inference loop.
 */
#ifndef PREDICTD_API_H
#define PREDICTD_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "registry/registry.h"
#include "util/util.h"

typedef struct api_context api_context;

/* Read-only options, copied from the server configuration. */
typedef struct api_options {
    const char *listen_host;
    int listen_port;
    int threads;
    int max_connections;
    int idle_timeout;
    bool cache;               /* process + Redis prediction caches */
    const char *admin_key;    /* NULL: admin routes answer 401 */
    const char *read_key;     /* NULL: prediction routes are open */
    const char *cors_origins; /* NULL: no CORS headers */
    int rate_limit;           /* per client address per second, 0 = off */
    int stream_max;
    bool access_log;
    const char *models_dir;
    int rate_burst;           /* bucket size; 0 = twice rate_limit */
    bool redis;               /* a Redis URL is configured (for /health/status) */
    const char *web_dir;        /* the dashboard page (index.html) served at /; NULL: none */
    struct training_jobs *jobs; /* background training (admin API); NULL: routes answer 503 */
    bool reuse_port;            /* SO_REUSEPORT; off: a port in use fails the start */
    const char *trusted_proxies; /* X-Forwarded-For believed from these (IPv4/CIDR list) */
} api_options;

/* Creates the context over a registry the caller keeps alive longer.
 * The options' strings must outlive the context. */
int api_context_new(const api_options *opt, registry *reg, api_context **out);
void api_context_free(api_context *ctx); /* NULL is a no-op */
registry *api_context_registry(api_context *ctx);

/* ===========================================================================
 * Predictions.
 */

/*
 * A computed prediction, immutable and reference-counted: the cache and every
 * reader hold references. The JSON `fragment` is the prediction object
 * without its time-dependent tail (staleness_s, stale, model_expired,
 * warnings), which api_render_prediction() appends for the moment of the
 * response.
 */
typedef struct api_prediction {
    char symbol[24];
    char timeframe[8];
    int direction;           /* enum inference_class */
    double probs[3];         /* LONG, SHORT, NO_TRADE */
    double confidence;
    uint32_t version;
    int64_t candle_time;     /* open time of the last closed candle used */
    int64_t candle_close;    /* its close time */
    int64_t prediction_time; /* when it was computed */
    int64_t valid_until;     /* close time of the next candle */
    int64_t trained_at;
    int64_t max_age_s;       /* model expiry, 0 = never */
    int64_t tf_seconds;
    int gaps;                /* missing candles inside the window */
    char *fragment;          /* "{...," without the closing tail */
    size_t fragment_len;
    /* For the ledger (issue 7): the levels and horizon behind the fragment.
     * Set when computed; has_levels is false for one read back from Redis. */
    bool has_levels;
    int levels_for;          /* enum inference_class: LONG or SHORT */
    double entry, stop_loss, tp[3], atr;
    uint32_t horizon;        /* candles a trade may run (the model's policy) */
    /* What model_accuracy was rendered from: the live hit rate of this
     * version over live_resolved trades (api_set_live_accuracy); live when
     * live_resolved >= API_LIVE_MIN_RESOLVED, else the test accuracy. */
    double live_hit_rate;
    uint64_t live_resolved;
} api_prediction;

/*
 * Makes (or fetches from cache) the prediction for symbol/tf at time now.
 * Returns 0 and a new reference in *out (api_prediction_release it), or:
 * PD_ESYMBOL / PD_ETIMEFRAME (malformed, nothing looked up), PD_EUNKNOWNSYM
 * (no candles), PD_ENOMODEL, PD_ENOTREADY, PD_ENODATA (too few candles),
 * PD_EDB (database down and nothing cached), PD_EINVAL (bad candles).
 * why (may be NULL) receives a human-readable detail for the error body.
 */
int api_predict(api_context *ctx, const char *symbol, const char *tf,
                const registry_selector *sel, int64_t now, api_prediction **out, char *why,
                size_t whylen);
void api_prediction_release(api_prediction *p); /* NULL is a no-op */

/*
 * api_predict for n symbols of one timeframe: the same answers, but the
 * candle windows of every symbol the caches cannot answer are read in one
 * pipelined round trip (features_load_windows) instead of one each. Writes
 * outs[i] (a new reference) or rcs[i] (a PD_* code, whys[i] the detail) for
 * each symbol. Returns 0, or PD_ENOMEM with nothing written.
 */
int api_predict_many(api_context *ctx, const char *const *symbols, size_t n, const char *tf,
                     const registry_selector *sel, int64_t now, api_prediction **outs, int *rcs,
                     char (*whys)[256]);

/*
 * Recomputes symbol/tf for the serving version bypassing the caches, then
 * replaces the cached entry (process and Redis). For the inference loop:
 * returns a new reference like api_predict.
 */
int api_predict_refresh(api_context *ctx, const char *symbol, const char *tf, int64_t now,
                        api_prediction **out, char *why, size_t whylen);

/* Appends the full prediction object (fragment + tail for now) to b. */
void api_render_prediction(util_buf *b, const api_prediction *p, int64_t now);

/* Appends {"status":"error","error":{"code":..,"message":..}} to b. */
void api_render_error(util_buf *b, int err, const char *message);
/* HTTP status for a PD_* code (400, 401, 404, 413, 429, 503, 500, ...). */
int api_status_of(int err);

/* Cache counters for /metrics. */
typedef struct api_cache_stats {
    uint64_t process_hits, process_misses;
    uint64_t redis_hits, redis_misses;
    uint64_t computed;
} api_cache_stats;
void api_cache_stats_get(api_context *ctx, api_cache_stats *out);

/* ===========================================================================
 * HTTP.
 */
typedef struct api_http api_http;

/* Starts the HTTP service on its epoll thread pool. Returns 0, or PD_EIO
 * when the address cannot be bound. */
int api_http_start(api_context *ctx, api_http **out);
/* Readiness turns false at once (503 on /health/ready); then waits up to
 * timeout_s for in-flight requests, stops the listener and frees. */
void api_http_stop(api_http *h, int timeout_s);

/*
 * Background jobs in /health/status (components.jobs): the model scanner,
 * the inference loop, training jobs. Whoever owns a job registers a probe
 * after api_http_start(); /health/status calls it on a request thread, so it
 * must be thread-safe, quick and never block on the job. It fills *out
 * (zeroed before the call). Strings are copied.
 */
typedef struct api_job_status {
    const char *state;    /* "running", "idle", "off", "failed", ...: static storage */
    int64_t last_run;     /* Unix seconds of the last run or activity; 0: never/unknown */
    uint64_t runs;        /* runs (scans, jobs, batches) since start */
    char last_error[256]; /* "" when none; never a secret */
} api_job_status;
typedef void (*api_job_probe)(void *arg, api_job_status *out);
/* Returns 0, PD_ETOOBIG when 8 jobs are registered, PD_EINVAL (bad name or
 * NULL probe). A name registered again replaces its probe. Thread-safe. */
int api_http_add_job(api_http *h, const char *name, api_job_probe probe, void *arg);
/* Unregisters; when it returns no call of the probe is running, so arg may be
 * freed. Unknown names are ignored. Thread-safe. */
void api_http_remove_job(api_http *h, const char *name);

/* ===========================================================================
 * The inference loop's hooks (issue 7; api/live.c, api/streams.c,
 * api/routes_ledger.c): live accuracy, the ledger behind the performance and
 * history routes, and the stream hub behind /api/predictions/stream (WebSocket)
 * and /api/predictions/events (SSE).
 */

/* Resolved trades a version needs before model_accuracy is its live hit
 * rate (accuracy_source "live") rather than its test accuracy. */
#define API_LIVE_MIN_RESOLVED 50

struct features_ledger;

/*
 * Records the live figures of one model version of a series: hit_rate over
 * `resolved` resolved LONG/SHORT predictions. Predictions computed
 * afterwards render model_accuracy from it (when resolved reaches
 * API_LIVE_MIN_RESOLVED). Returns 0, PD_EINVAL (bad series, version 0,
 * hit_rate outside [0, 1]) or PD_ENOMEM. Thread-safe; meant to be called by
 * the loop after the resolver ran, never on a request.
 */
int api_set_live_accuracy(api_context *ctx, const char *symbol, const char *tf, uint32_t version,
                          double hit_rate, uint64_t resolved);

/* Lends the performance and history routes a ledger handle (NULL detaches;
 * without one they answer 503). The caller keeps it alive until it has
 * detached it after the HTTP service stopped. Thread-safe. */
void api_set_ledger(api_context *ctx, struct features_ledger *db);

/* Appends {"type":"prediction","data":{...prediction at now...}}: the
 * message the streams and Redis (predictd:predictions) carry. */
void api_render_stream_message(util_buf *b, const api_prediction *p, int64_t now);

/*
 * Queues msg (copied once, shared) for every WebSocket and SSE client whose
 * subscription covers symbol/tf. Never waits for a client: one whose queue
 * is full is dropped (disconnected). Returns how many clients got it.
 * Thread-safe.
 */
size_t api_streams_publish(api_context *ctx, const char *symbol, const char *tf, const char *msg,
                           size_t len);

/* Stream counters since start. */
typedef struct api_stream_stats {
    uint64_t clients;   /* connected now (WebSocket and SSE) */
    uint64_t published; /* messages handed to api_streams_publish */
    uint64_t delivered; /* queued to a client */
    uint64_t dropped;   /* clients dropped for a full queue */
} api_stream_stats;
void api_stream_stats_get(api_context *ctx, api_stream_stats *out);

#endif
