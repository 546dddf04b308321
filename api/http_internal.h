/*
 * http_internal.h: the request context, route table and the pieces of the
 * HTTP layer that the api module's files share (nothing outside api/
 * includes it, and only files under api/ include Ulfius).
 */
#ifndef PREDICTD_HTTP_INTERNAL_H
#define PREDICTD_HTTP_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <microhttpd.h>
#include <ulfius.h>

#include "api/api_internal.h"
#include "api/wire_internal.h"

/* Route flags. */
enum {
    API_ROUTE_ADMIN = 1,          /* X-API-Key must match the admin key */
    API_ROUTE_READ = 2,           /* X-API-Key must match the read key when one is set */
    API_ROUTE_CORS_PREFLIGHT = 4, /* answer OPTIONS for CORS */
    API_ROUTE_TOKEN = 8,          /* with API_ROUTE_READ: a valid ?token= (stream_token.c)
                                   * also passes, for clients that cannot send headers */
};

/* Routes as metric label values: bounded, so no request can create a series. */
enum api_metric_route {
    API_METRIC_PREDICTIONS,
    API_METRIC_PREDICTION,
    API_METRIC_SUMMARY,
    API_METRIC_MODELS,
    API_METRIC_MODEL,
    API_METRIC_ADMIN,
    API_METRIC_HEALTH,
    API_METRIC_METRICS,
    API_METRIC_STREAM,
    API_METRIC_CANDLES,
    API_METRIC_OTHER,
    API_METRIC_COUNT_
};
const char *api_metric_route_name(int metric);

struct api_request;
typedef void (*api_handler)(struct api_request *rq);

struct api_route_def {
    const char *method;
    const char *pattern; /* api__path_match form: "/api/predictions/:symbol" */
    api_handler fn;
    int flags;
    int metric;
    int priority; /* ascending, ties in table order: fixed paths before ":symbol" */
};
/* The route table (routes.c). */
const struct api_route_def *api_routes(size_t *n);

struct api_route {
    struct api_http *http;
    api_handler fn; /* NULL: the 405 route (http.c) */
    int flags;
    int metric;
    int priority;
    const char *method;
    const char *pattern;
};

struct api_metrics; /* metrics.c */
struct api_rate;    /* ratelimit.c */

/* An IPv4 network, both in network byte order (forwarded.c). */
struct api_cidr {
    uint32_t net;
    uint32_t mask;
};

/* A background job registered for /health/status (api_http_add_job). */
#define API_JOBS_MAX 8
struct api_job {
    char name[32];
    api_job_probe probe;
    void *arg;
};

/* The last error seen on a dependency, for /health/status. */
enum { API_COMPONENT_DATABASE, API_COMPONENT_REDIS, API_COMPONENT_COUNT_ };
struct api_component_error {
    pthread_mutex_t lock; /* guards message and at */
    char message[256];
    int64_t at;           /* Unix seconds, 0: never */
};

struct api_http {
    struct MHD_Daemon *daemon;
    api_context *ctx;
    struct api_route *routes; /* nroutes, then the fallback (404) */
    size_t nroutes;
    size_t *order; /* route indexes by priority */
    struct api_route method_not_allowed;
    /* connections a handler asked to take over (WebSocket), from its
     * request until MHD_UPGRADE_ACTION_CLOSE or the abandon callback: the
     * stop waits for them before stopping the daemon */
    atomic_int upgraded;
    /* Open connections with their header deadlines (http.c's watchdog). */
    pthread_mutex_t conns_lock; /* guards the conns list and each entry's cut */
    struct conn_state *conns;
    pthread_t watchdog;
    bool watchdog_started;
    atomic_bool watchdog_stop;
    _Atomic uint64_t header_timeouts; /* connections cut by the watchdog */
    atomic_bool draining;
    atomic_long in_flight;
    int64_t started_at;
    struct api_metrics *metrics;
    struct api_rate *rate;
    /* Requests from their first line until their response is sent or the
     * connection dies (MHD's URI-log and completion callbacks): what the
     * drain waits for. in_flight above counts only handlers running. */
    atomic_long open_requests;
    atomic_int streams;       /* WebSocket/SSE clients (api_stream_enter) */
    atomic_long fresh_connections; /* accepted, no request line read yet */
    char id_prefix[20];       /* random per process: generated request ids */
    pthread_rwlock_t jobs_lock; /* guards jobs, njobs and the metrics hook */
    struct api_job jobs[API_JOBS_MAX];
    size_t njobs;
    api_metrics_hook metrics_hook; /* jobs_lock; NULL: none */
    void *metrics_hook_arg;        /* jobs_lock */
    struct api_component_error component_errors[API_COMPONENT_COUNT_];
    char *dashboard;          /* web_dir/index.html read at start, NULL when absent */
    size_t dashboard_len;
    uint8_t stream_secret[32]; /* stream tokens' HMAC key: set at start, read-only after */
    struct api_candles_cache *candles; /* routes_candles.c: own lock */
    struct api_cidr *trusted; /* PREDICTD_TRUSTED_PROXIES, parsed at start */
    size_t ntrusted;
};

/*
 * A handler that takes its connection over sets api_request.upgrade: once
 * libmicrohttpd has sent the 101 it calls fn with the socket, any bytes the
 * client sent after its request (extra), and the handle the owner must end
 * with MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE). fn runs on a
 * pool thread and must not block it. When the upgrade never happens (the
 * client left first) abandon(arg) is called instead; exactly one of the
 * two is called.
 */
typedef void (*api_upgrade_fn)(void *arg, MHD_socket sock, const char *extra, size_t extra_len,
                               struct MHD_UpgradeResponseHandle *urh);

/* One request as handlers see it. */
struct api_request {
    const struct _u_request *req;
    struct _u_response *resp;
    struct MHD_Connection *conn; /* its connection (SSE suspends it) */
    api_upgrade_fn upgrade;      /* see api_upgrade_fn; NULL: a plain response */
    void *upgrade_arg;
    void (*upgrade_abandon)(void *arg);
    api_context *ctx;
    struct api_http *http;
    const struct api_route *route;
    int64_t now;
    int status;          /* set by the reply functions */
    int err;             /* PD_* of an error reply */
    bool stream;         /* the handler started a stream: keep the connection */
    char request_id[64];
    char client[64];
};

/* Replies. The body is copied; status is the HTTP status. */
void api_reply_json(struct api_request *rq, int status, util_buf *body);
void api_reply_error(struct api_request *rq, int err, const char *message);
void api_reply_errorf(struct api_request *rq, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A query or path parameter, NULL when absent (borrowed from the request). */
const char *api_query(const struct api_request *rq, const char *name);
const char *api_header(const struct api_request *rq, const char *name);
/* Appends now as a quoted RFC 3339 string. */
void api_timestamp(util_buf *b, int64_t now);
/* The success envelope every route answers with: appends
 * {"status":"success" (api_success_open) or {"status":"success","timestamp":"..."
 * (api_success_begin) to b; the caller appends its fields (",\"x\":...")
 * and the closing brace. */
void api_success_open(util_buf *b);
void api_success_begin(util_buf *b, int64_t now);
bool api_key_matches(const char *given, const char *want);

/* Handlers (routes_*.c). */
void api_route_predictions(struct api_request *rq);
void api_route_prediction(struct api_request *rq);
void api_route_summary(struct api_request *rq);
void api_route_models(struct api_request *rq);
void api_route_model(struct api_request *rq);
void api_route_admin_models(struct api_request *rq);
void api_route_admin_reload(struct api_request *rq);
void api_route_admin_pin(struct api_request *rq);
void api_route_admin_unpin(struct api_request *rq);
void api_route_admin_label(struct api_request *rq);
void api_route_training_start(struct api_request *rq);
void api_route_training_list(struct api_request *rq);
void api_route_training_get(struct api_request *rq);
void api_route_training_cancel(struct api_request *rq);
void api_route_dashboard(struct api_request *rq);
void api_route_health(struct api_request *rq);
void api_route_live(struct api_request *rq);
void api_route_ready(struct api_request *rq);
void api_route_status(struct api_request *rq);
void api_route_metrics(struct api_request *rq);
/* Prediction streams (streams.c) and the ledger (routes_ledger.c). */
void api_route_stream_ws(struct api_request *rq);
void api_route_stream_sse(struct api_request *rq);
void api_route_performance(struct api_request *rq);
void api_route_history(struct api_request *rq);
/* GET /api/candles/{symbol} (routes_candles.c). */
void api_route_candles(struct api_request *rq);
/* The closed-candle answers' process cache (routes_candles.c), made and
 * freed with the api_http object. new returns 0 or PD_ENOMEM; free(NULL) is
 * a no-op. The cache has its own lock: any pool thread may use it. */
struct api_candles_cache;
int api_candles_cache_new(struct api_candles_cache **out);
void api_candles_cache_free(struct api_candles_cache *c);

/* Stream tokens (stream_token.c). POST /api/stream-token issues one to a
 * keyed client; api_stream_token_valid tells whether token (NULL: false)
 * is one this process issued and has not expired at now. Thread-safe once
 * api_stream_token_init (which fills h->stream_secret from getrandom) ran
 * before the daemon started. */
#define API_STREAM_TOKEN_MAX 96
void api_stream_token_init(struct api_http *h);
bool api_stream_token_valid(const struct api_http *h, const char *token, int64_t now);
void api_route_stream_token(struct api_request *rq);
/* A hook http.c calls (streams.c): api_streams_stop ends every stream for
 * good as the drain starts (libmicrohttpd must not stop with a suspended
 * connection or an upgraded one). */
void api_streams_stop(struct api_http *h);

/* Readiness: 0 when ready, else the first reason in why. */
int api_readiness(struct api_http *h, char *why, size_t whylen);

/* Metrics (metrics.c). */
void api_metrics_init(struct api_http *h);
void api_metrics_cleanup(struct api_http *h);
void api_metrics_request(struct api_http *h, int metric, int status, double seconds);
/* Counts a prediction served (by its series and model version) and the
 * seconds it took to obtain. Thread-safe, lock-free once the series is
 * known. */
void api_metrics_prediction(struct api_http *h, const predict_result *p, double seconds);
void api_metrics_render(struct api_http *h, util_buf *b);

/* Client addresses (forwarded.c). api_trusted_proxies_parse reads a list
 * of IPv4 addresses or CIDRs separated by commas or spaces into a calloc'd
 * array the caller frees (NULL and 0 for an empty list); returns 0,
 * PD_ENOMEM, or PD_EINVAL with the reason in why. api_client_address writes
 * the request's client address (the peer's, or from X-Forwarded-For when
 * the peer is a trusted proxy; "unknown" when not IPv4). Thread-safe. */
int api_trusted_proxies_parse(const char *list, struct api_cidr **out, size_t *n, char *why,
                              size_t whylen);
void api_client_address(const struct api_http *h, const struct _u_request *req, char *out,
                        size_t len);

/* Rate limiting (ratelimit.c): token bucket per client address. */
void api_rate_init(struct api_http *h);
void api_rate_cleanup(struct api_http *h);
/* Takes a token for client; when none is left returns false and writes the
 * whole seconds until one is (>= 1) to *retry_after_s. Thread-safe. */
bool api_rate_take(struct api_http *h, const char *client, int *retry_after_s);

/* Streams (WebSocket, SSE) hold a connection for long: a handler starting
 * one calls api_stream_enter first and answers 503 when it returns false
 * (PREDICTD_STREAM_MAX reached, or draining); api_stream_leave when the
 * stream ends. Stream handlers should also end their streams once
 * api_http_draining() is true: the drain does not wait for streams. */
bool api_stream_enter(struct api_http *h);
void api_stream_leave(struct api_http *h);
bool api_http_draining(struct api_http *h);

/* Records the last error of a dependency (API_COMPONENT_*) for
 * /health/status. The message must not hold a secret. Thread-safe. */
void api_component_error(struct api_http *h, int component, const char *message);

/* Metrics for things outside the request path (metrics.c). */
void api_metrics_render_staleness(struct api_http *h, util_buf *b, int64_t now);

#endif
