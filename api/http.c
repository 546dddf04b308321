/*
 * http.c: the Ulfius instance and everything every request goes through.
 *
 * Ulfius is started on libmicrohttpd's epoll thread pool (not the default
 * thread per connection), with a connection limit, an idle timeout and a
 * per-connection memory limit (request line and headers must fit in it: a
 * URL past it gets libmicrohttpd's own 414 before Ulfius sees it). Every
 * route, and the default one, is registered with one dispatcher, handle(),
 * which does the shared work in one place: request id, URL and body limits,
 * CORS, rate limiting, authentication, the handler itself, the access log
 * and metrics. Handlers (routes_*.c) only parse, call plain C and render.
 *
 * Limits. URLs over 2 KiB get 414 and bodies over 64 KiB get 413, both with
 * the JSON error body. Ulfius keeps at most max_post_body_size bytes of a
 * body and drops the rest silently, so the handler cannot trust the body it
 * is given: the declared Content-Length and the kept length are both
 * checked. Ulfius still reads (and discards) the whole upload before it
 * calls a handler, so an oversized body costs bandwidth but never memory.
 *
 * Drain. libmicrohttpd's URI-log and request-completed callbacks bracket
 * every request from its first line to the last byte of its response (or
 * the connection's death); open_requests counts between them. SIGTERM
 * (api_http_stop) turns readiness to 503 and stops listening
 * (MHD_quiesce_daemon; the connections still in the kernel's backlog are
 * accepted and handed to the pool first, then the socket is shut down, so
 * every client whose connect() succeeded is answered and later ones are
 * refused). Responses carry "Connection: close" from then on, so keep-alive
 * clients go elsewhere. The drain waits until no request is open (streams
 * aside; connections that have not sent their request line yet get a grace
 * of DRAIN_FRESH_NS) or the drain timeout passes, then stops the daemon,
 * which closes what is left.
 *
 * Threading: handlers run on the pool's worker threads, concurrently. The
 * api_http object is written before the daemon starts and read-only after,
 * except for the atomics (draining, in_flight, open_requests, streams), the
 * rate limiter and the job table, which have their own locks.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>
#include <ulfius.h>

#include "api/http_internal.h"

#define MAX_URL_BYTES 2048
#define MAX_BODY_BYTES (64 * 1024)
/* After the last open request ends, the drain waits this long for a request
 * already accepted whose first line is still in flight. */
#define DRAIN_QUIET_NS (100 * 1000000ull)
/* How long the drain waits for connections accepted before it began that
 * have not sent their request line yet (within the drain timeout). */
#define DRAIN_FRESH_NS (2000 * 1000000ull)

static _Atomic uint64_t request_seq;

/* ------------------------------------------------------------------------
 * Responses.
 */
void api_reply_json(struct api_request *rq, int status, util_buf *body)
{
    if (!util_buf_ok(body)) {
        util_buf_reset(body);
        api_render_error(body, PD_ENOMEM, NULL);
        status = 500;
    }
    ulfius_set_binary_body_response(rq->resp, (unsigned int)status, body->data, body->len);
    u_map_put(rq->resp->map_header, "Content-Type", "application/json");
    rq->status = status;
}

void api_reply_error(struct api_request *rq, int err, const char *message)
{
    util_buf b;
    util_buf_init(&b);
    api_render_error(&b, err, message);
    api_reply_json(rq, util_err_status(err), &b);
    rq->err = err;
    util_buf_cleanup(&b);
}

void api_reply_errorf(struct api_request *rq, int err, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    api_reply_error(rq, err, msg);
}

/* An error body with a status other than util_err_status(err) (414, 403). */
static void reply_error_status(struct api_request *rq, int status, int err, const char *message)
{
    util_buf b;
    util_buf_init(&b);
    api_render_error(&b, err, message);
    api_reply_json(rq, status, &b);
    rq->err = err;
    util_buf_cleanup(&b);
}

const char *api_query(const struct api_request *rq, const char *name)
{
    return u_map_get(rq->req->map_url, name);
}

const char *api_header(const struct api_request *rq, const char *name)
{
    return u_map_get_case(rq->req->map_header, name);
}

void api_timestamp(util_buf *b, int64_t now)
{
    char ts[32];
    util_json_str(b, util_rfc3339(now, ts));
}

/* ------------------------------------------------------------------------
 * Shared request handling.
 */

/*
 * Compares a presented key with the configured one in time independent of
 * where they differ and of either length: both are hashed (SHA-256) and the
 * digests compared without an early exit.
 */
bool api_key_matches(const char *given, const char *want)
{
    if (!given || !want)
        return false;
    uint8_t a[32], b[32];
    util_sha256 s;
    util_sha256_init(&s);
    util_sha256_update(&s, given, strlen(given));
    util_sha256_final(&s, a);
    util_sha256_init(&s);
    util_sha256_update(&s, want, strlen(want));
    util_sha256_final(&s, b);
    volatile uint8_t diff = 0;
    for (size_t i = 0; i < sizeof a; i++)
        diff |= (uint8_t)(a[i] ^ b[i]);
    return diff == 0;
}

/* The listener is IPv4 only: Ulfius copies sizeof(struct sockaddr) bytes of
 * the peer address, enough for a sockaddr_in and not for a sockaddr_in6. */
static void client_address(const struct _u_request *req, char *out, size_t len)
{
    snprintf(out, len, "unknown");
    if (req->client_address && req->client_address->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)req->client_address;
        inet_ntop(AF_INET, &a->sin_addr, out, (socklen_t)len);
    }
}

/* Origin allowed by PREDICTD_CORS_ORIGINS (exact match, or "*"). */
static bool origin_allowed(const char *list, const char *origin)
{
    if (!list || !origin)
        return false;
    size_t ol = strlen(origin);
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > p && t[-1] == ' ')
            t--;
        if ((size_t)(t - p) == 1 && *p == '*')
            return true;
        if (t > p && (size_t)(t - p) == ol && strncmp(p, origin, ol) == 0)
            return true;
        p = e;
    }
    return false;
}

/* A request id is echoed only when it is short and plain. */
static bool request_id_ok(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    return n > 0 && n < 64 &&
           strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:") == n;
}

/* The path for the access log: no query string, printable, bounded. */
static void loggable_path(const struct _u_request *req, char *out, size_t len)
{
    const char *p = req->url_path ? req->url_path : "?";
    size_t i = 0;
    for (; p[i] && i + 4 < len; i++)
        out[i] = (p[i] > 0x20 && p[i] < 0x7f) ? p[i] : '?';
    if (p[i])
        out[i++] = '.', out[i++] = '.', out[i++] = '.';
    out[i] = '\0';
}

/* Content-Length above the limit (a malformed one never reaches here:
 * libmicrohttpd answers 400 itself). */
static bool body_too_big(const struct _u_request *req)
{
    if (req->binary_body_length > MAX_BODY_BYTES)
        return true;
    const char *clen = u_map_get_case(req->map_header, "Content-Length");
    if (!clen)
        return false;
    errno = 0;
    char *end;
    unsigned long long n = strtoull(clen, &end, 10);
    return errno == ERANGE || n > MAX_BODY_BYTES;
}

static void preflight(struct api_request *rq, bool cors)
{
    if (!cors) {
        reply_error_status(rq, 403, PD_EAUTH, "origin not allowed");
        return;
    }
    u_map_put(rq->resp->map_header, "Access-Control-Allow-Methods", "GET, OPTIONS");
    u_map_put(rq->resp->map_header, "Access-Control-Allow-Headers",
              "Content-Type, X-API-Key, X-Request-Id, X-Client-Id");
    u_map_put(rq->resp->map_header, "Access-Control-Max-Age", "600");
    ulfius_set_empty_body_response(rq->resp, 204);
    rq->status = 204;
}

/* Health and metrics are never rate limited: probes and scrapers come from
 * one address at a steady pace and must see the truth. */
static bool rate_limited_route(const struct api_route *route)
{
    return route->metric != API_METRIC_HEALTH && route->metric != API_METRIC_METRICS;
}

static int handle(const struct _u_request *req, struct _u_response *resp, void *user_data)
{
    const struct api_route *route = user_data;
    api_http *h = route->http;
    uint64_t t0 = util_mono_ns();
    atomic_fetch_add(&h->in_flight, 1);

    struct api_request rq = {.req = req,
                             .resp = resp,
                             .ctx = h->ctx,
                             .http = h,
                             .route = route,
                             .now = util_now(),
                             .status = 0};
    const char *given_id = u_map_get_case(req->map_header, "X-Request-Id");
    if (request_id_ok(given_id))
        snprintf(rq.request_id, sizeof rq.request_id, "%s", given_id);
    else
        snprintf(rq.request_id, sizeof rq.request_id, "%s-%llu", h->id_prefix,
                 (unsigned long long)atomic_fetch_add(&request_seq, 1) + 1);
    util_log_set_request_id(rq.request_id);
    u_map_put(resp->map_header, "X-Request-Id", rq.request_id);
    client_address(req, rq.client, sizeof rq.client);
    if (atomic_load(&h->draining))
        u_map_put(resp->map_header, "Connection", "close");

    const api_options *opt = &h->ctx->opt;
    const char *origin = u_map_get_case(req->map_header, "Origin");
    bool cors = origin_allowed(opt->cors_origins, origin);
    if (cors) {
        u_map_put(resp->map_header, "Access-Control-Allow-Origin", origin);
        u_map_put(resp->map_header, "Access-Control-Expose-Headers", "X-Request-Id, Retry-After");
        u_map_put(resp->map_header, "Vary", "Origin");
    }

    const char *key = u_map_get_case(req->map_header, "X-API-Key");
    int retry_after = 0;
    if (req->http_url && strlen(req->http_url) > MAX_URL_BYTES) {
        reply_error_status(&rq, 414, PD_ETOOBIG, "URL longer than 2048 bytes");
    } else if (req->http_url && strcasestr(req->http_url, "%00")) {
        /* Ulfius decodes parameters into C strings: an encoded NUL would
         * silently cut a symbol short ("BTC%00X" read as "BTC") */
        api_reply_error(&rq, PD_EINVAL, "the URL contains an encoded NUL byte (%00)");
    } else if (body_too_big(req)) {
        api_reply_errorf(&rq, PD_ETOOBIG, "request body over %d bytes", MAX_BODY_BYTES);
    } else if (strcmp(req->http_verb, "OPTIONS") == 0 &&
               (route->flags & API_ROUTE_CORS_PREFLIGHT)) {
        preflight(&rq, cors);
    } else if (rate_limited_route(route) && !api_rate_take(h, rq.client, &retry_after)) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", retry_after);
        u_map_put(resp->map_header, "Retry-After", ra);
        api_reply_errorf(&rq, PD_ERATE, "too many requests from this address; retry in %d s",
                         retry_after);
    } else if ((route->flags & API_ROUTE_ADMIN) && !opt->admin_key) {
        api_reply_error(&rq, PD_EAUTH, "admin routes are disabled: no admin key is configured");
    } else if ((route->flags & API_ROUTE_ADMIN) && !api_key_matches(key, opt->admin_key)) {
        api_reply_error(&rq, PD_EAUTH, "missing or invalid X-API-Key");
    } else if ((route->flags & API_ROUTE_READ) && opt->read_key &&
               !api_key_matches(key, opt->read_key) && !api_key_matches(key, opt->admin_key) &&
               !((route->flags & API_ROUTE_TOKEN) &&
                 api_stream_token_valid(h, api_query(&rq, "token"), rq.now))) {
        api_reply_error(&rq, PD_EAUTH,
                        (route->flags & API_ROUTE_TOKEN)
                            ? "missing or invalid X-API-Key, or an expired or invalid token "
                              "(POST /api/stream-token)"
                            : "missing or invalid X-API-Key");
    } else {
        route->fn(&rq);
        if (rq.status == 0)
            api_reply_error(&rq, PD_EINTERNAL, "handler gave no response");
    }

    double secs = (double)(util_mono_ns() - t0) / 1e9;
    api_metrics_request(h, route->metric, rq.status, secs);
    if (rq.err == PD_EDB)
        api_component_error(h, API_COMPONENT_DATABASE, "a request found the database unavailable");
    if (opt->access_log || (rq.status >= 500 && rq.status != 503)) {
        char path[256];
        loggable_path(req, path, sizeof path);
        if (rq.status >= 500 && rq.status != 503)
            LOG_ERROR("http", "%s %s %s answered %d (%s) in %.3f ms", rq.client, req->http_verb,
                      path, rq.status, util_err_code(rq.err), secs * 1e3);
        else
            LOG_INFO("access", "%s %s %s %d %.3f ms", rq.client, req->http_verb, path, rq.status,
                     secs * 1e3);
    }
    util_log_set_request_id(NULL);
    atomic_fetch_sub(&h->in_flight, 1);
    return rq.stream ? U_CALLBACK_CONTINUE : U_CALLBACK_COMPLETE;
}

static void route_not_found(struct api_request *rq)
{
    api_reply_error(rq, PD_ENOTFOUND, "no such route");
}

/* ------------------------------------------------------------------------
 * libmicrohttpd callbacks around Ulfius' own (which they must call).
 */
/* Per connection (libmicrohttpd's socket context): whether it has sent a
 * request line yet. The drain gives such fresh connections a short grace:
 * their client's connect() succeeded and a request is usually on its way. */
struct conn_state {
    atomic_bool fresh;
};

static void not_fresh(api_http *h, struct conn_state *cs)
{
    if (cs && atomic_exchange(&cs->fresh, false))
        atomic_fetch_sub(&h->fresh_connections, 1);
}

static void connection_notify(void *cls, struct MHD_Connection *con, void **socket_context,
                              enum MHD_ConnectionNotificationCode code)
{
    (void)con;
    api_http *h = cls;
    api_streams_connection(h, con, code); /* SSE streams find their connection */
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        struct conn_state *cs = malloc(sizeof *cs);
        if (cs) {
            atomic_init(&cs->fresh, true);
            atomic_fetch_add(&h->fresh_connections, 1);
        }
        *socket_context = cs;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        not_fresh(h, *socket_context);
        free(*socket_context);
        *socket_context = NULL;
    }
}

static void *uri_logged(void *cls, const char *uri, struct MHD_Connection *con)
{
    api_http *h = cls;
    atomic_fetch_add(&h->open_requests, 1);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(con, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    if (ci)
        not_fresh(h, ci->socket_context);
    return ulfius_uri_logger(NULL, uri);
}

static void request_completed(void *cls, struct MHD_Connection *con, void **con_cls,
                              enum MHD_RequestTerminationCode toe)
{
    api_http *h = cls;
    mhd_request_completed(NULL, con, con_cls, toe);
    atomic_fetch_sub(&h->open_requests, 1);
}

/* libmicrohttpd's own errors, as log lines like every other. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    if (!util_log_enabled(UTIL_LOG_WARN))
        return;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    LOG_WARN("mhd", "%s", msg);
}

/* ------------------------------------------------------------------------
 * Streams.
 */
bool api_stream_enter(struct api_http *h)
{
    if (atomic_load(&h->draining))
        return false;
    int n = atomic_fetch_add(&h->streams, 1);
    if (n >= h->ctx->opt.stream_max) {
        atomic_fetch_sub(&h->streams, 1);
        return false;
    }
    return true;
}

void api_stream_leave(struct api_http *h)
{
    atomic_fetch_sub(&h->streams, 1);
}

bool api_http_draining(struct api_http *h)
{
    return atomic_load(&h->draining);
}

/* ------------------------------------------------------------------------
 * Lifecycle.
 */
static void make_id_prefix(api_http *h)
{
    uint8_t raw[8];
    if (getrandom(raw, sizeof raw, GRND_NONBLOCK) != (ssize_t)sizeof raw) {
        uint64_t x = util_mono_ns() ^ ((uint64_t)getpid() << 32);
        memcpy(raw, &x, sizeof raw);
    }
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(h->id_prefix + 2 * i, 3, "%02x", raw[i]);
}

/* Frees what api_http_start made; instance_ok: the Ulfius instance was
 * initialised (and is not running). */
static void http_free(api_http *h, bool instance_ok)
{
    if (instance_ok)
        ulfius_clean_instance(&h->instance);
    api_rate_cleanup(h);
    api_metrics_cleanup(h);
    pthread_rwlock_destroy(&h->jobs_lock);
    for (int i = 0; i < API_COMPONENT_COUNT_; i++)
        pthread_mutex_destroy(&h->component_errors[i].lock);
    free(h->routes);
    free(h->dashboard);
    api_candles_cache_free(h->candles);
    free(h);
}

/* Reads the dashboard page once, so serving it is no file I/O. */
static void load_dashboard(api_http *h)
{
    const char *dir = h->ctx->opt.web_dir;
    char path[4096];
    if (!dir || snprintf(path, sizeof path, "%s/index.html", dir) >= (int)sizeof path)
        return;
    int rc = util_read_file(path, 1u << 20, &h->dashboard, &h->dashboard_len);
    if (rc)
        LOG_INFO("http", "no dashboard at %s (%s): / answers 404", path, util_strerror(rc));
}

int api_http_start(api_context *ctx, api_http **out)
{
    struct sockaddr_in addr = {.sin_family = AF_INET,
                               .sin_port = htons((uint16_t)ctx->opt.listen_port)};
    const char *host = ctx->opt.listen_host;
    if (strcmp(host, "localhost") == 0)
        host = "127.0.0.1";
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        LOG_ERROR("http", "listen address '%s' is not an IPv4 address", ctx->opt.listen_host);
        return PD_EINVAL;
    }
    api_http *h = calloc(1, sizeof *h);
    if (!h)
        return PD_ENOMEM;
    h->ctx = ctx;
    pthread_rwlock_init(&h->jobs_lock, NULL);
    for (int i = 0; i < API_COMPONENT_COUNT_; i++)
        pthread_mutex_init(&h->component_errors[i].lock, NULL);
    make_id_prefix(h);
    api_rate_init(h);
    api_metrics_init(h);
    load_dashboard(h);
    api_stream_token_init(h);
    if (api_candles_cache_new(&h->candles) != 0) {
        http_free(h, false);
        return PD_ENOMEM;
    }
    if (ulfius_init_instance(&h->instance, (unsigned int)ctx->opt.listen_port, &addr, NULL) !=
        U_OK) {
        http_free(h, false);
        return PD_ENOMEM;
    }
    h->instance.max_post_body_size = MAX_BODY_BYTES + 1; /* one more: over the limit shows */
    size_t nroutes = 0;
    const struct api_route_def *defs = api_routes(&nroutes);
    h->routes = calloc(nroutes + 1, sizeof *h->routes); /* + the default route */
    if (!h->routes) {
        http_free(h, true);
        return PD_ENOMEM;
    }
    h->nroutes = nroutes;
    for (size_t i = 0; i < nroutes; i++) {
        struct api_route *r = &h->routes[i];
        r->http = h;
        r->fn = defs[i].fn;
        r->flags = defs[i].flags;
        r->metric = defs[i].metric;
        r->pattern = defs[i].pattern;
        if (ulfius_add_endpoint_by_val(&h->instance, defs[i].method, NULL, defs[i].pattern,
                                       (unsigned int)defs[i].priority, handle, r) != U_OK ||
            ((r->flags & API_ROUTE_CORS_PREFLIGHT) &&
             ulfius_add_endpoint_by_val(&h->instance, "OPTIONS", NULL, defs[i].pattern,
                                        (unsigned int)defs[i].priority, handle, r) != U_OK)) {
            LOG_ERROR("http", "cannot register %s %s", defs[i].method, defs[i].pattern);
            http_free(h, true);
            return PD_EIO;
        }
    }
    struct api_route *fallback = &h->routes[nroutes];
    *fallback = (struct api_route){.http = h,
                                   .fn = route_not_found,
                                   .flags = 0,
                                   .metric = API_METRIC_OTHER,
                                   .pattern = "(no route)"};
    ulfius_set_default_endpoint(&h->instance, handle, fallback);

    struct MHD_OptionItem mhd_ops[] = {
        {MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_log, NULL}, /* first: it must be */
        {MHD_OPTION_THREAD_POOL_SIZE, ctx->opt.threads, NULL},
        {MHD_OPTION_CONNECTION_LIMIT, ctx->opt.max_connections, NULL},
        {MHD_OPTION_CONNECTION_TIMEOUT, ctx->opt.idle_timeout, NULL},
        /* libmicrohttpd zeroes a connection's whole pool between keep-alive
         * requests: 32 KiB holds a 2 KiB URL and the headers with room to
         * spare, where 128 KiB made that memset the hottest spot of a cached
         * answer (bench/README.md) */
        {MHD_OPTION_CONNECTION_MEMORY_LIMIT, 32 * 1024, NULL},
        {MHD_OPTION_SOCK_ADDR, 0, &addr},
        {MHD_OPTION_LISTENING_ADDRESS_REUSE, 1, NULL},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)request_completed, h},
        {MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)connection_notify, h},
        {MHD_OPTION_URI_LOG_CALLBACK, (intptr_t)uri_logged, h},
        {MHD_OPTION_END, 0, NULL}};
    /* MHD_ALLOW_UPGRADE: WebSocket routes (Ulfius upgrades the connection) */
    unsigned int flags =
        MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG | MHD_ALLOW_UPGRADE;
    if (ulfius_start_framework_with_mhd_options(&h->instance, flags, mhd_ops) != U_OK) {
        LOG_ERROR("http", "cannot listen on %s:%d (in use, or not allowed)", ctx->opt.listen_host,
                  ctx->opt.listen_port);
        http_free(h, true);
        return PD_EIO;
    }
    LOG_INFO("http",
             "listening on %s:%d with %d worker threads, %d connections at most, idle timeout "
             "%d s",
             ctx->opt.listen_host, ctx->opt.listen_port, ctx->opt.threads, ctx->opt.max_connections,
             ctx->opt.idle_timeout);
    *out = h;
    return 0;
}

/* Requests the drain waits for: open ones that are not long-lived streams. */
static long drain_pending(api_http *h)
{
    long n = atomic_load(&h->open_requests) - atomic_load(&h->streams);
    return n > 0 ? n : 0;
}

void api_http_stop(api_http *h, int timeout_s)
{
    if (!h)
        return;
    atomic_store(&h->draining, true);
    api_streams_stop(h); /* streams end now; the drain does not wait for them */
    /* Stop accepting; requests already accepted run to completion. The
     * connections the kernel completed but the pool had not accepted yet
     * (the listen backlog) are accepted here and handed to the pool, so a
     * client whose connect() succeeded is answered, not reset. Then the
     * socket stops listening (shutdown: new connections are refused) but
     * stays open until the daemon has stopped, as libmicrohttpd requires. */
    long adopted = 0;
    MHD_socket listen_fd = MHD_INVALID_SOCKET;
    if (h->instance.mhd_daemon)
        listen_fd = MHD_quiesce_daemon(h->instance.mhd_daemon);
    if (listen_fd != MHD_INVALID_SOCKET) {
        int fl = fcntl(listen_fd, F_GETFL);
        bool nonblocking = fl >= 0 && fcntl(listen_fd, F_SETFL, fl | O_NONBLOCK) == 0;
        while (nonblocking) {
            struct sockaddr_storage peer;
            socklen_t plen = sizeof peer;
            int c =
                accept4(listen_fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (c < 0) {
                if (errno == EINTR)
                    continue;
                break; /* EAGAIN: the backlog is empty */
            }
            /* MHD owns (and on failure closes) the socket from here */
            if (MHD_add_connection(h->instance.mhd_daemon, c, (struct sockaddr *)&peer, plen) ==
                MHD_YES)
                adopted++;
        }
        shutdown(listen_fd, SHUT_RDWR);
    }
    if (adopted)
        LOG_INFO("http", "took %ld connections from the listen backlog", adopted);
    uint64_t start = util_mono_ns();
    uint64_t deadline = start + (uint64_t)timeout_s * 1000000000ull;
    uint64_t fresh_until = start + DRAIN_FRESH_NS;
    uint64_t idle_since = 0;
    long at_start = drain_pending(h);
    for (;;) {
        uint64_t now = util_mono_ns();
        bool waiting =
            drain_pending(h) > 0 || (atomic_load(&h->fresh_connections) > 0 && now < fresh_until);
        if (waiting)
            idle_since = 0;
        else if (!idle_since)
            idle_since = now;
        if ((idle_since && now - idle_since >= DRAIN_QUIET_NS) || now >= deadline)
            break;
        usleep(5000);
    }
    long left = drain_pending(h);
    if (left > 0)
        LOG_WARN("http", "drain timed out after %d s with %ld requests still open", timeout_s,
                 left);
    else
        LOG_INFO("http", "drained %ld open requests in %.0f ms", at_start,
                 (double)(util_mono_ns() - start) / 1e6);
    ulfius_stop_framework(&h->instance);
    if (listen_fd != MHD_INVALID_SOCKET)
        close(listen_fd);
    http_free(h, true);
}
