/*
 * api: the HTTP surface over the prediction service (predict/).
 *
 *   http.c      the libmicrohttpd daemon (epoll thread pool), routing, middleware (request
 *               id, limits, auth, CORS, rate limit, metrics), route table
 *   routes_*.c  handlers; they parse and validate, call plain C, render
 *
 * HTTP types stop at the handlers: everything below takes plain C values and
 * returns PD_* codes. util_err_status() (util/util.h: PD_ERRNO_MAP) gives the HTTP
 * statuses.
 *
 * Threading: an api_context is created before the HTTP threads start and
 * freed after they stop; its options are read-only, the stream hub is
 * internally synchronised.
 */
#ifndef PREDICTD_API_H
#define PREDICTD_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "predict/predict.h"
#include "registry/registry.h"
#include "util/util.h"

typedef struct api_context api_context;

/* Read-only options, copied from the server configuration. */
typedef struct api_options {
    const char *listen_host;
    int listen_port;
    int threads;
    int max_connections;
    int per_ip_connections;   /* connections one client address may hold; 0: no cap */
    int idle_timeout;
    int header_timeout;       /* seconds a client has to send a request's line and headers */
    bool cache;               /* process + Redis prediction caches */
    const char *admin_key;    /* NULL: admin routes answer 401 */
    const char *read_key;     /* NULL: prediction routes are open */
    const char *cors_origins; /* NULL: no CORS headers */
    int rate_limit;           /* per client address per second, 0 = off */
    int stream_max;
    bool access_log;
    bool reuse_port;          /* SO_REUSEPORT; off: a port already taken fails the start */
    const char *models_dir;
    int rate_burst;           /* bucket size; 0 = twice rate_limit */
    bool redis;               /* a Redis URL is configured (for /health/status) */
    const char *web_dir;        /* the dashboard page (index.html) served at /; NULL: none */
    struct training_jobs *jobs; /* background training (admin API); NULL: routes answer 503 */
    const char *trusted_proxies; /* X-Forwarded-For believed from these (IPv4/CIDR list) */
} api_options;

/* Creates the context over a prediction service the caller keeps alive
 * longer. The options' strings must outlive the context. Returns 0 or
 * PD_ENOMEM. */
int api_context_new(const api_options *opt, predict_service *svc, api_context **out);
void api_context_free(api_context *ctx); /* NULL is a no-op */
/* The service's registry (borrowed). */
registry *api_context_registry(api_context *ctx);

/* Appends {"status":"error","error":{"code":..,"message":..}} to b. */
void api_render_error(util_buf *b, int err, const char *message);


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
    const char *role;     /* with replicas: "leader" or "follower" (static); NULL: none */
    int64_t last_run;     /* Unix seconds of the last run or activity; 0: never/unknown */
    uint64_t runs;        /* runs (scans, jobs, batches) since start */
    char last_error[256]; /* "" when none; never a secret */
} api_job_status;
typedef void (*api_job_probe)(void *arg, api_job_status *out);
/* Returns 0, PD_ETOOBIG when 8 jobs are registered, PD_EINVAL (bad name or
 * NULL probe). A name registered again replaces its probe. Thread-safe. */
int api_http_add_job(api_http *h, const char *name, api_job_probe probe, void *arg);

/*
 * A metrics hook: a part of the program that api/ does not know (the market
 * feed) appends its own Prometheus series (HELP, TYPE, samples) to /metrics.
 * Called on a request thread under a read lock: thread-safe, quick, never
 * blocking on its owner. fn NULL removes it; when the call returns no call
 * of the previous hook is running. One hook. Thread-safe.
 */
typedef void (*api_metrics_hook)(void *arg, util_buf *out);
void api_http_set_metrics_hook(api_http *h, api_metrics_hook fn, void *arg);

/* ===========================================================================
 * Streams (streams.c): the hub behind /api/predictions/stream (WebSocket)
 * and /api/predictions/events (SSE).
 */

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
