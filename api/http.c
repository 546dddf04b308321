/*
 * http.c: the Ulfius instance and everything every request goes through.
 *
 * Ulfius is started on libmicrohttpd's epoll thread pool (not the default
 * thread per connection), with a connection limit, an idle timeout and a
 * per-connection memory limit. Every route is registered with one
 * dispatcher, handle(), which does the shared work in one place: request id,
 * URL and body limits, CORS, rate limiting, authentication, the handler
 * itself, the access log, metrics and the in-flight count that SIGTERM's
 * drain waits on. Handlers (routes_*.c) only parse, call plain C and render.
 *
 * Threading: handlers run on the pool's worker threads, concurrently. The
 * api_http object is written before the daemon starts and read-only after,
 * except for the atomics (draining, in_flight) and the rate limiter, which
 * has its own lock.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <ulfius.h>

#include "api/http_internal.h"

#define MAX_URL_BYTES 2048
#define MAX_BODY_BYTES (64 * 1024)

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
    api_reply_json(rq, api_status_of(err), &b);
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

/* Constant-time comparison of a presented key with the configured one. */
bool api_key_matches(const char *given, const char *want)
{
    if (!given || !want)
        return false;
    size_t gl = strlen(given), wl = strlen(want);
    unsigned char diff = (unsigned char)(gl != wl);
    for (size_t i = 0; i < wl; i++)
        diff |= (unsigned char)(want[i] ^ (i < gl ? given[i] : 0));
    return diff == 0;
}

static void client_address(const struct _u_request *req, char *out, size_t len)
{
    snprintf(out, len, "unknown");
    if (!req->client_address)
        return;
    if (req->client_address->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)req->client_address;
        inet_ntop(AF_INET, &a->sin_addr, out, (socklen_t)len);
    } else if (req->client_address->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)req->client_address;
        inet_ntop(AF_INET6, &a->sin6_addr, out, (socklen_t)len);
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
        if ((size_t)(t - p) == ol && strncmp(p, origin, ol) == 0)
            return true;
        p = e;
    }
    return false;
}

static int handle(const struct _u_request *req, struct _u_response *resp, void *user_data)
{
    const struct api_route *route = user_data;
    api_http *h = route->http;
    uint64_t t0 = util_mono_ns();
    atomic_fetch_add(&h->in_flight, 1);

    struct api_request rq = {.req = req, .resp = resp, .ctx = h->ctx, .http = h,
                             .route = route, .now = util_now(), .status = 0};
    const char *given_id = u_map_get_case(req->map_header, "X-Request-Id");
    if (given_id && strlen(given_id) < sizeof rq.request_id && strspn(given_id,
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:") == strlen(given_id))
        snprintf(rq.request_id, sizeof rq.request_id, "%s", given_id);
    else
        snprintf(rq.request_id, sizeof rq.request_id, "%08x-%llx", (unsigned)getpid(),
                 (unsigned long long)atomic_fetch_add(&request_seq, 1));
    util_log_set_request_id(rq.request_id);
    u_map_put(resp->map_header, "X-Request-Id", rq.request_id);
    client_address(req, rq.client, sizeof rq.client);

    const api_options *opt = &h->ctx->opt;
    const char *origin = u_map_get_case(req->map_header, "Origin");
    bool cors = origin_allowed(opt->cors_origins, origin);
    if (cors) {
        u_map_put(resp->map_header, "Access-Control-Allow-Origin", origin);
        u_map_put(resp->map_header, "Vary", "Origin");
    }

    const char *clen = u_map_get_case(req->map_header, "Content-Length");
    if (req->http_url && strlen(req->http_url) > MAX_URL_BYTES) {
        util_buf b;
        util_buf_init(&b);
        api_render_error(&b, PD_ETOOBIG, "URL longer than 2048 bytes");
        api_reply_json(&rq, 414, &b);
        util_buf_cleanup(&b);
    } else if ((clen && strtoull(clen, NULL, 10) > MAX_BODY_BYTES) ||
               req->binary_body_length > MAX_BODY_BYTES) {
        /* Ulfius truncates bodies past max_post_body_size silently: refuse them */
        api_reply_errorf(&rq, PD_ETOOBIG, "request body over %d bytes", MAX_BODY_BYTES);
    } else if (strcmp(req->http_verb, "OPTIONS") == 0) {
        if (cors) {
            u_map_put(resp->map_header, "Access-Control-Allow-Methods",
                      "GET, POST, DELETE, OPTIONS");
            u_map_put(resp->map_header, "Access-Control-Allow-Headers",
                      "Content-Type, X-API-Key, X-Request-Id");
            u_map_put(resp->map_header, "Access-Control-Max-Age", "600");
            ulfius_set_empty_body_response(resp, 204);
            rq.status = 204;
        } else {
            api_reply_error(&rq, PD_EAUTH, "origin not allowed");
            ulfius_set_empty_body_response(resp, 403);
            rq.status = 403;
        }
    } else if (!api_rate_allow(h, rq.client, rq.now)) {
        u_map_put(resp->map_header, "Retry-After", "1");
        api_reply_error(&rq, PD_ERATE, "too many requests from this address; retry in 1 s");
    } else if ((route->flags & API_ROUTE_ADMIN) && !opt->admin_key) {
        api_reply_error(&rq, PD_EAUTH, "admin routes are disabled: no admin key is configured");
    } else if ((route->flags & API_ROUTE_ADMIN) &&
               !api_key_matches(u_map_get_case(req->map_header, "X-API-Key"), opt->admin_key)) {
        api_reply_error(&rq, PD_EAUTH, "missing or invalid X-API-Key");
    } else if ((route->flags & API_ROUTE_READ) && opt->read_key &&
               !api_key_matches(u_map_get_case(req->map_header, "X-API-Key"), opt->read_key) &&
               !api_key_matches(u_map_get_case(req->map_header, "X-API-Key"), opt->admin_key)) {
        api_reply_error(&rq, PD_EAUTH, "missing or invalid X-API-Key");
    } else {
        route->fn(&rq);
        if (rq.status == 0)
            api_reply_error(&rq, PD_EINTERNAL, "handler gave no response");
    }

    double secs = (double)(util_mono_ns() - t0) / 1e9;
    api_metrics_request(h, route->metric, rq.status, secs);
    if (opt->access_log)
        LOG_INFO("access", "%s %s %s %d %.3f ms", rq.client, req->http_verb, route->pattern,
                 rq.status, secs * 1e3);
    util_log_set_request_id(NULL);
    atomic_fetch_sub(&h->in_flight, 1);
    return rq.stream ? U_CALLBACK_CONTINUE : U_CALLBACK_COMPLETE;
}

static int not_found(const struct _u_request *req, struct _u_response *resp, void *user_data)
{
    (void)req;
    api_http *h = user_data;
    util_buf b;
    util_buf_init(&b);
    api_render_error(&b, PD_ENOTFOUND, "no such route");
    ulfius_set_binary_body_response(resp, 404, b.data, b.len);
    u_map_put(resp->map_header, "Content-Type", "application/json");
    util_buf_cleanup(&b);
    api_metrics_request(h, API_METRIC_OTHER, 404, 0);
    return U_CALLBACK_COMPLETE;
}

/* ------------------------------------------------------------------------
 * Lifecycle.
 */
int api_http_start(api_context *ctx, api_http **out)
{
    api_http *h = calloc(1, sizeof *h);
    if (!h)
        return PD_ENOMEM;
    h->ctx = ctx;
    api_rate_init(h);
    api_metrics_init(h);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)ctx->opt.listen_port)};
    const char *host = ctx->opt.listen_host;
    if (strcmp(host, "localhost") == 0)
        host = "127.0.0.1";
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        LOG_ERROR("http", "listen address '%s' is not an IPv4 address", ctx->opt.listen_host);
        free(h);
        return PD_EINVAL;
    }
    if (ulfius_init_instance(&h->instance, (unsigned int)ctx->opt.listen_port, &addr, NULL) !=
        U_OK) {
        free(h);
        return PD_ENOMEM;
    }
    h->instance.max_post_body_size = MAX_BODY_BYTES + 1;
    size_t nroutes = 0;
    const struct api_route_def *defs = api_routes(&nroutes);
    h->routes = calloc(nroutes, sizeof *h->routes);
    if (!h->routes) {
        ulfius_clean_instance(&h->instance);
        free(h);
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
                                       (unsigned int)defs[i].priority, handle, r) != U_OK) {
            LOG_ERROR("http", "cannot register %s %s", defs[i].method, defs[i].pattern);
            goto fail;
        }
        if (r->flags & API_ROUTE_CORS_PREFLIGHT)
            ulfius_add_endpoint_by_val(&h->instance, "OPTIONS", NULL, defs[i].pattern, 0, handle,
                                       r);
    }
    ulfius_set_default_endpoint(&h->instance, not_found, h);

    struct MHD_OptionItem mhd_ops[] = {
        {MHD_OPTION_THREAD_POOL_SIZE, ctx->opt.threads, NULL},
        {MHD_OPTION_CONNECTION_LIMIT, ctx->opt.max_connections, NULL},
        {MHD_OPTION_CONNECTION_TIMEOUT, ctx->opt.idle_timeout, NULL},
        {MHD_OPTION_CONNECTION_MEMORY_LIMIT, 128 * 1024, NULL},
        {MHD_OPTION_SOCK_ADDR, 0, &addr},
        {MHD_OPTION_LISTENING_ADDRESS_REUSE, 1, NULL},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)mhd_request_completed, NULL},
        {MHD_OPTION_URI_LOG_CALLBACK, (intptr_t)ulfius_uri_logger, NULL},
        {MHD_OPTION_END, 0, NULL}};
    unsigned int flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    if (ulfius_start_framework_with_mhd_options(&h->instance, flags, mhd_ops) != U_OK) {
        LOG_ERROR("http", "cannot listen on %s:%d (in use, or not allowed)",
                  ctx->opt.listen_host, ctx->opt.listen_port);
        goto fail;
    }
    LOG_INFO("http", "listening on %s:%d with %d worker threads", ctx->opt.listen_host,
             ctx->opt.listen_port, ctx->opt.threads);
    *out = h;
    return 0;
fail:
    ulfius_clean_instance(&h->instance);
    api_rate_cleanup(h);
    api_metrics_cleanup(h);
    free(h->routes);
    free(h);
    return PD_EIO;
}

void api_http_set_draining(api_http *h)
{
    atomic_store(&h->draining, true);
}

long api_http_in_flight(api_http *h)
{
    return atomic_load(&h->in_flight);
}

void api_http_stop(api_http *h, int timeout_s)
{
    if (!h)
        return;
    atomic_store(&h->draining, true);
    /* stop accepting; requests already accepted run to completion */
    if (h->instance.mhd_daemon) {
        MHD_socket s = MHD_quiesce_daemon(h->instance.mhd_daemon);
        if (s != MHD_INVALID_SOCKET)
            close(s);
    }
    uint64_t deadline = util_mono_ns() + (uint64_t)timeout_s * 1000000000ull;
    while (atomic_load(&h->in_flight) > 0 && util_mono_ns() < deadline)
        usleep(10000);
    if (atomic_load(&h->in_flight) > 0)
        LOG_WARN("http", "drain timed out with %ld requests in flight", api_http_in_flight(h));
    ulfius_stop_framework(&h->instance);
    ulfius_clean_instance(&h->instance);
    api_rate_cleanup(h);
    api_metrics_cleanup(h);
    free(h->routes);
    free(h);
}
