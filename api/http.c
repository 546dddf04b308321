/*
 * http.c: the libmicrohttpd daemon and everything every request goes through.
 *
 * libmicrohttpd runs on its thread pool (not a thread per connection),
 * each worker polling its connections with poll(2), with a connection limit, a per-address connection limit, an
 * idle timeout and a per-connection memory limit (request line and headers
 * must fit in it: a URL past it gets libmicrohttpd's own 414). Its access
 * handler is ours (access_handler): it fills Ulfius' request and response
 * structures (the handlers' types: maps, bodies, stream responses) but
 * routing, URL decoding and the response itself are done here, because
 * Ulfius' dispatcher decodes escapes leniently, copies only an IPv4-sized
 * peer address, answers 404 for a wrong method and upgrades WebSockets
 * with its own threads. Routes are matched on the path as sent
 * (api__path_match, strict decoding); a path that matches with another
 * method answers 405 with Allow; HEAD runs the GET route (libmicrohttpd
 * drops the body). Every request then goes through one function, handle(),
 * which does the shared work in one place: request id, URL and body limits,
 * CORS, rate limiting, authentication, the handler itself, the access log
 * and metrics. Handlers (routes_*.c) only parse, call plain C and render. A
 * handler may take the connection over (the WebSocket route): it sets
 * rq->upgrade and the dispatcher answers 101 through
 * MHD_create_response_for_upgrade and hands it the socket.
 *
 * Limits. URLs over 2 KiB get 414 and bodies over 64 KiB get 413, both with
 * the JSON error body. The dispatcher keeps at most MAX_BODY_BYTES + 1
 * bytes of a body and drops the rest, so the declared Content-Length and
 * the kept length are both checked. The whole upload is still read (and
 * discarded) before the handler runs, so an oversized body costs bandwidth
 * but never memory.
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
    return clen && api__content_length_over(clen, MAX_BODY_BYTES);
}

static void preflight(struct api_request *rq, bool cors)
{
    if (!cors) {
        api_reply_error(rq, PD_EORIGIN, "this Origin is not in PREDICTD_CORS_ORIGINS");
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

/* Per request (libmicrohttpd's request context, from its URI-log callback
 * to its completion callback). */
struct req_state {
    struct _u_request req;
    bool started;   /* headers and query copied into req */
    char allow[64]; /* a 405's Allow header */
    /* A handler's upgrade waiting for libmicrohttpd to switch protocols;
     * taken by upgraded() or, when that never happens, abandoned in
     * request_completed(). */
    _Atomic(struct pending_upgrade *) upgrade;
};

struct pending_upgrade {
    api_http *h;
    api_upgrade_fn fn;
    void (*abandon)(void *arg);
    void *arg;
};

/* Runs one request through the shared rules and its route's handler. The
 * response goes into resp; an upgrade the handler asked for into *up. */
static void handle(api_http *h, struct req_state *st, struct MHD_Connection *con,
                   const struct api_route *route, struct _u_response *resp,
                   struct pending_upgrade **up)
{
    const struct _u_request *req = &st->req;
    uint64_t t0 = util_mono_ns();
    atomic_fetch_add(&h->in_flight, 1);

    struct api_request rq = {.req = req,
                             .resp = resp,
                             .conn = con,
                             .ctx = h->ctx,
                             .http = h,
                             .route = route,
                             .now = util_now(),
                             .status = 0};
    const char *given_id = u_map_get_case(req->map_header, "X-Request-Id");
    if (api__request_id_ok(given_id))
        snprintf(rq.request_id, sizeof rq.request_id, "%s", given_id);
    else
        snprintf(rq.request_id, sizeof rq.request_id, "%s-%llu", h->id_prefix,
                 (unsigned long long)atomic_fetch_add(&request_seq, 1) + 1);
    util_log_set_request_id(rq.request_id);
    u_map_put(resp->map_header, "X-Request-Id", rq.request_id);
    api_client_address(h, req, rq.client, sizeof rq.client);
    if (atomic_load(&h->draining))
        u_map_put(resp->map_header, "Connection", "close");

    const api_options *opt = &h->ctx->opt;
    const char *origin = u_map_get_case(req->map_header, "Origin");
    bool cors = api__origin_allowed(opt->cors_origins, origin);
    if (cors) {
        u_map_put(resp->map_header, "Access-Control-Allow-Origin", origin);
        u_map_put(resp->map_header, "Access-Control-Expose-Headers", "X-Request-Id, Retry-After");
        u_map_put(resp->map_header, "Vary", "Origin");
    }

    const char *key = u_map_get_case(req->map_header, "X-API-Key");
    int retry_after = 0;
    const char *bad_url = NULL;
    size_t url_len = req->http_url ? strlen(req->http_url) : 0;
    if (url_len > MAX_URL_BYTES) {
        reply_error_status(&rq, 414, PD_ETOOBIG, "URL longer than 2048 bytes");
    } else if (req->http_url && api__url_check(req->http_url, url_len, &bad_url) != 0) {
        /* checked on the URL as sent: decoding would hide a bad escape */
        api_reply_error(&rq, PD_EINVAL, bad_url);
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
    } else if (route->fn == NULL) {
        u_map_put(resp->map_header, "Allow", st->allow);
        char msg[128];
        snprintf(msg, sizeof msg, "%s is not allowed here; allowed: %s", req->http_verb, st->allow);
        api_reply_error(&rq, PD_EMETHOD, msg);
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
    if (rq.upgrade) {
        struct pending_upgrade *p = malloc(sizeof *p);
        if (p) {
            *p = (struct pending_upgrade){
                .h = h, .fn = rq.upgrade, .abandon = rq.upgrade_abandon, .arg = rq.upgrade_arg};
            *up = p;
        } else {
            rq.upgrade_abandon(rq.upgrade_arg);
            util_buf b;
            util_buf_init(&b);
            api_render_error(&b, PD_ENOMEM, NULL);
            api_reply_json(&rq, 500, &b);
            util_buf_cleanup(&b);
        }
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
}

static void route_not_found(struct api_request *rq)
{
    api_reply_error(rq, PD_ENOTFOUND, "no such route");
}

/* ------------------------------------------------------------------------
 * The access handler: routing and the libmicrohttpd response.
 */
/* Adds a header or query value; a repeated name keeps every value,
 * comma-separated (as Ulfius did). */
static enum MHD_Result fill_map(void *cls, enum MHD_ValueKind kind, const char *key,
                                const char *value)
{
    (void)kind;
    struct _u_map *map = cls;
    if (!key)
        return MHD_YES;
    const char *old = u_map_get(map, key);
    if (old) {
        char *both = NULL;
        if (asprintf(&both, "%s,%s", old, value ? value : "") < 0)
            return MHD_NO;
        u_map_put(map, key, both);
        free(both);
    } else {
        u_map_put(map, key, value ? value : "");
    }
    return MHD_YES;
}

/* Whether method may be answered by a route registered for route_method. */
static bool method_ok(const char *method, const struct api_route *r)
{
    if (strcmp(method, r->method) == 0)
        return true;
    if (strcmp(method, "HEAD") == 0 && strcmp(r->method, "GET") == 0)
        return true;
    return strcmp(method, "OPTIONS") == 0 && (r->flags & API_ROUTE_CORS_PREFLIGHT);
}

static void allow_add(char *allow, size_t len, const char *m)
{
    size_t ml = strlen(m);
    for (const char *p = allow; (p = strstr(p, m)); p += ml)
        if ((p == allow || p[-1] == ' ') && (p[ml] == ',' || p[ml] == '\0'))
            return;
    size_t n = strlen(allow);
    snprintf(allow + n, len - n, "%s%s", n ? ", " : "", m);
}

/* The route of a request, with its path parameters put into the query
 * map; the 405 route (fn NULL, st->allow filled) when only the method is
 * wrong, the fallback when nothing matches. */
static const struct api_route *route_of(api_http *h, struct req_state *st)
{
    const char *target = st->req.http_url ? st->req.http_url : "/";
    size_t plen = strcspn(target, "?");
    struct api_path_params pp;
    for (size_t k = 0; k < h->nroutes; k++) {
        const struct api_route *r = &h->routes[h->order[k]];
        if (!method_ok(st->req.http_verb, r))
            continue;
        if (api__path_match(r->pattern, target, plen, &pp) != 1)
            continue;
        for (size_t i = 0; i < pp.n; i++) {
            char name[32];
            snprintf(name, sizeof name, "%.*s", (int)pp.name_len[i], pp.name[i]);
            u_map_put(st->req.map_url, name, pp.value[i]);
        }
        return r;
    }
    st->allow[0] = '\0';
    for (size_t k = 0; k < h->nroutes; k++) {
        const struct api_route *r = &h->routes[h->order[k]];
        if (api__path_match(r->pattern, target, plen, NULL) != 1)
            continue;
        allow_add(st->allow, sizeof st->allow, r->method);
        if (strcmp(r->method, "GET") == 0)
            allow_add(st->allow, sizeof st->allow, "HEAD");
        if (r->flags & API_ROUTE_CORS_PREFLIGHT)
            allow_add(st->allow, sizeof st->allow, "OPTIONS");
    }
    return st->allow[0] ? &h->method_not_allowed : &h->routes[h->nroutes];
}

static void add_headers(struct MHD_Response *r, const struct _u_map *m)
{
    for (int i = 0; m && i < m->nb_values; i++)
        MHD_add_response_header(r, m->keys[i], m->values[i]);
}

/* libmicrohttpd calls this once the 101 is sent: the socket is the
 * handler's from here (it must end with MHD_upgrade_action CLOSE). */
static void upgraded(void *cls, struct MHD_Connection *con, void *con_cls, const char *extra,
                     size_t extra_len, MHD_socket sock, struct MHD_UpgradeResponseHandle *urh)
{
    (void)cls;
    (void)con;
    struct req_state *st = con_cls;
    struct pending_upgrade *p = st ? atomic_exchange(&st->upgrade, NULL) : NULL;
    if (!p) {
        MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
        return;
    }
    p->fn(p->arg, sock, extra, extra_len, urh);
    free(p);
}

static void set_deadline(struct MHD_Connection *con, uint64_t ns_from_now);

static enum MHD_Result access_handler(void *cls, struct MHD_Connection *con, const char *url,
                                      const char *method, const char *version, const char *upload,
                                      size_t *upload_size, void **con_cls)
{
    (void)url;
    api_http *h = cls;
    struct req_state *st = *con_cls;
    if (!st)
        return MHD_NO;
    struct _u_request *req = &st->req;
    if (!st->started) {
        st->started = true;
        set_deadline(con, 0); /* the headers are in */
        req->http_verb = strdup(method);
        req->http_protocol = strdup(version);
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(con, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        req->client_address = calloc(1, sizeof(struct sockaddr_storage));
        if (!req->http_verb || !req->http_protocol || !req->client_address)
            return MHD_NO;
        if (ci && ci->client_addr)
            memcpy(req->client_address, ci->client_addr,
                   ci->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                          : sizeof(struct sockaddr_in));
        MHD_get_connection_values(con, MHD_HEADER_KIND, fill_map, req->map_header);
        MHD_get_connection_values(con, MHD_GET_ARGUMENT_KIND, fill_map, req->map_url);
        return MHD_YES;
    }
    if (*upload_size) {
        /* keep one byte over the limit, so that handle() sees it was
         * exceeded; drop the rest */
        size_t room = req->binary_body_length <= MAX_BODY_BYTES
                          ? MAX_BODY_BYTES + 1 - req->binary_body_length
                          : 0;
        size_t take = *upload_size < room ? *upload_size : room;
        if (take) {
            char *body = realloc(req->binary_body, req->binary_body_length + take);
            if (!body)
                return MHD_NO;
            memcpy(body + req->binary_body_length, upload, take);
            req->binary_body = body;
            req->binary_body_length += take;
        }
        *upload_size = 0;
        return MHD_YES;
    }

    struct _u_response resp;
    if (ulfius_init_response(&resp) != U_OK)
        return MHD_NO;
    const struct api_route *route = route_of(h, st);
    struct pending_upgrade *up = NULL;
    handle(h, st, con, route, &resp, &up);

    struct MHD_Response *r = NULL;
    unsigned status = resp.status ? (unsigned)resp.status : 500;
    if (up) {
        r = MHD_create_response_for_upgrade(upgraded, NULL);
        status = MHD_HTTP_SWITCHING_PROTOCOLS;
    } else if (resp.stream_callback) {
        r = MHD_create_response_from_callback(resp.stream_size, resp.stream_block_size,
                                              resp.stream_callback, resp.stream_user_data,
                                              resp.stream_callback_free);
    } else {
        r = MHD_create_response_from_buffer(resp.binary_body_length, resp.binary_body,
                                            MHD_RESPMEM_MUST_COPY);
    }
    enum MHD_Result ret = MHD_NO;
    if (r) {
        add_headers(r, resp.map_header);
        if (up)
            atomic_store(&st->upgrade, up);
        ret = MHD_queue_response(con, status, r);
        MHD_destroy_response(r);
        if (ret != MHD_YES && up)
            up = atomic_exchange(&st->upgrade, NULL);
        else
            up = NULL; /* upgraded() or request_completed() owns it now */
    } else if (resp.stream_callback && resp.stream_callback_free) {
        resp.stream_callback_free(resp.stream_user_data);
    }
    if (up) {
        up->abandon(up->arg);
        free(up);
    }
    ulfius_clean_response(&resp);
    return ret;
}

/* ------------------------------------------------------------------------
 * libmicrohttpd's connection and request callbacks.
 */
/* Per connection (libmicrohttpd's socket context): whether it has sent a
 * request line yet. The drain gives such fresh connections a short grace:
 * their client's connect() succeeded and a request is usually on its way. */
struct conn_state {
    atomic_bool fresh;
    /* The header deadline (monotonic ns, 0: none): the watchdog cuts a
     * connection that passes it, so a client trickling bytes cannot stretch
     * libmicrohttpd's idle timeout forever. Set when the connection opens
     * and when a request line arrives (headers due within header_timeout),
     * after a response (the next request due within the idle timeout plus
     * header_timeout), cleared once the headers are complete. */
    _Atomic uint64_t deadline_ns;
    struct MHD_Connection *con;
    struct conn_state *prev, *next; /* h->conns_lock */
    bool cut;                       /* h->conns_lock: shut down already */
};

static void set_deadline(struct MHD_Connection *con, uint64_t ns_from_now)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(con, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct conn_state *cs = ci ? ci->socket_context : NULL;
    if (cs)
        atomic_store(&cs->deadline_ns, ns_from_now ? util_mono_ns() + ns_from_now : 0);
}

#define SEC_NS 1000000000ull

/* Once a second: shuts down the connections past their header deadline
 * (libmicrohttpd then sees the end of the stream and closes them). The
 * list lock is held while a socket is shut down, and a connection leaves
 * the list (connection_notify, CLOSED) before libmicrohttpd closes its
 * socket, so the descriptor is still the connection's. */
static void *watchdog_main(void *arg)
{
    api_http *h = arg;
    uint64_t episode_cuts = 0, logged_at = 0;
    while (!atomic_load(&h->watchdog_stop)) {
        usleep(250 * 1000);
        uint64_t now = util_mono_ns(), cuts = 0;
        pthread_mutex_lock(&h->conns_lock);
        for (struct conn_state *cs = h->conns; cs; cs = cs->next) {
            uint64_t d = atomic_load(&cs->deadline_ns);
            if (!d || now < d || cs->cut)
                continue;
            const union MHD_ConnectionInfo *ci =
                MHD_get_connection_info(cs->con, MHD_CONNECTION_INFO_CONNECTION_FD);
            if (ci && ci->connect_fd != MHD_INVALID_SOCKET) {
                shutdown(ci->connect_fd, SHUT_RDWR);
                cs->cut = true;
                cuts++;
            }
        }
        pthread_mutex_unlock(&h->conns_lock);
        if (cuts) {
            atomic_fetch_add(&h->header_timeouts, cuts);
            episode_cuts += cuts;
        }
        /* one line per episode: at most every 10 s, with the count */
        if (episode_cuts && now - logged_at >= 10 * SEC_NS) {
            LOG_WARN("http",
                     "closed %llu connections that did not send their request headers within "
                     "%d s (PREDICTD_HEADER_TIMEOUT)",
                     (unsigned long long)episode_cuts, h->ctx->opt.header_timeout);
            episode_cuts = 0;
            logged_at = now;
        }
    }
    return NULL;
}

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
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        struct conn_state *cs = calloc(1, sizeof *cs);
        if (cs) {
            atomic_init(&cs->fresh, true);
            atomic_fetch_add(&h->fresh_connections, 1);
            atomic_init(&cs->deadline_ns,
                        util_mono_ns() + (uint64_t)h->ctx->opt.header_timeout * SEC_NS);
            cs->con = con;
            pthread_mutex_lock(&h->conns_lock);
            cs->next = h->conns;
            if (h->conns)
                h->conns->prev = cs;
            h->conns = cs;
            pthread_mutex_unlock(&h->conns_lock);
        }
        *socket_context = cs;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        struct conn_state *cs = *socket_context;
        if (cs) {
            pthread_mutex_lock(&h->conns_lock);
            if (cs->prev)
                cs->prev->next = cs->next;
            else
                h->conns = cs->next;
            if (cs->next)
                cs->next->prev = cs->prev;
            pthread_mutex_unlock(&h->conns_lock);
        }
        not_fresh(h, cs);
        free(cs);
        *socket_context = NULL;
    }
}

/* The first callback of a request: its state, with the target as sent. */
static void *uri_logged(void *cls, const char *uri, struct MHD_Connection *con)
{
    api_http *h = cls;
    atomic_fetch_add(&h->open_requests, 1);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(con, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    if (ci)
        not_fresh(h, ci->socket_context);
    set_deadline(con, (uint64_t)h->ctx->opt.header_timeout * SEC_NS);
    struct req_state *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    if (ulfius_init_request(&st->req) != U_OK) {
        free(st);
        return NULL;
    }
    atomic_init(&st->upgrade, NULL);
    st->req.http_url = strdup(uri ? uri : "/");
    st->req.url_path =
        st->req.http_url ? strndup(st->req.http_url, strcspn(st->req.http_url, "?")) : NULL;
    return st;
}

static void request_completed(void *cls, struct MHD_Connection *con, void **con_cls,
                              enum MHD_RequestTerminationCode toe)
{
    (void)toe;
    api_http *h = cls;
    set_deadline(con, (uint64_t)(h->ctx->opt.idle_timeout + h->ctx->opt.header_timeout) * SEC_NS);
    struct req_state *st = *con_cls;
    if (st) {
        struct pending_upgrade *p = atomic_exchange(&st->upgrade, NULL);
        if (p) {
            p->abandon(p->arg);
            free(p);
        }
        ulfius_clean_request(&st->req);
        free(st);
        *con_cls = NULL;
    }
    atomic_fetch_sub(&h->open_requests, 1);
}

/* libmicrohttpd's own errors, as log lines like every other, at most one
 * line per kind of message every LOG_EPISODE_S seconds: a flood of refused
 * connections is one episode, logged once with a count when it ends. */
#define LOG_EPISODE_S 10
static struct {
    pthread_mutex_t lock; /* guards the table */
    struct {
        const char *fmt;
        int64_t since;
        unsigned long suppressed;
    } kinds[16];
} mhd_log_state = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    if (!util_log_enabled(UTIL_LOG_WARN))
        return;
    int64_t now = (int64_t)(util_mono_ns() / 1000000000u);
    unsigned long earlier = 0;
    pthread_mutex_lock(&mhd_log_state.lock);
    size_t i, n = sizeof mhd_log_state.kinds / sizeof mhd_log_state.kinds[0], oldest = 0;
    for (i = 0; i < n; i++) {
        if (mhd_log_state.kinds[i].fmt == fmt)
            break;
        if (mhd_log_state.kinds[i].since < mhd_log_state.kinds[oldest].since)
            oldest = i;
    }
    if (i == n) {
        i = oldest;
        mhd_log_state.kinds[i].fmt = fmt;
        mhd_log_state.kinds[i].since = now - LOG_EPISODE_S;
        mhd_log_state.kinds[i].suppressed = 0;
    }
    bool show = now - mhd_log_state.kinds[i].since >= LOG_EPISODE_S;
    if (show) {
        earlier = mhd_log_state.kinds[i].suppressed;
        mhd_log_state.kinds[i].suppressed = 0;
        mhd_log_state.kinds[i].since = now;
    } else {
        mhd_log_state.kinds[i].suppressed++;
    }
    pthread_mutex_unlock(&mhd_log_state.lock);
    if (!show)
        return;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t len = strlen(msg);
    while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == '\r'))
        msg[--len] = '\0';
    if (earlier)
        LOG_WARN("mhd", "%s (and %lu more like it in the last %d s or more)", msg, earlier,
                 LOG_EPISODE_S);
    else
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

/* Why listening on addr fails, for the message after libmicrohttpd refused
 * to start: the errno of a bind (with SO_REUSEADDR, as libmicrohttpd binds
 * without SO_REUSEPORT) on a probe socket, 0 when the bind succeeds. */
static int listen_probe(const struct sockaddr_storage *addr, socklen_t len)
{
    int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return errno;
    int one = 1, e = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (const struct sockaddr *)addr, len) != 0)
        e = errno;
    close(fd);
    return e;
}

static void http_free(api_http *h)
{
    api_rate_cleanup(h);
    api_metrics_cleanup(h);
    pthread_mutex_destroy(&h->conns_lock);
    pthread_rwlock_destroy(&h->jobs_lock);
    for (int i = 0; i < API_COMPONENT_COUNT_; i++)
        pthread_mutex_destroy(&h->component_errors[i].lock);
    free(h->routes);
    free(h->order);
    free(h->dashboard);
    api_candles_cache_free(h->candles);
    free(h->trusted);
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

/* The listening address: IPv4, IPv6 ("::", "::1", brackets optional) or
 * localhost. *v6 tells which. */
static int listen_address(const api_options *opt, struct sockaddr_storage *ss, socklen_t *len,
                          bool *v6)
{
    char host[64];
    const char *h = opt->listen_host;
    size_t n = strlen(h);
    if (n >= 2 && h[0] == '[' && h[n - 1] == ']')
        snprintf(host, sizeof host, "%.*s", (int)(n - 2), h + 1);
    else
        snprintf(host, sizeof host, "%s", strcmp(h, "localhost") == 0 ? "127.0.0.1" : h);
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)opt->listen_port);
        *len = sizeof *a4;
        *v6 = false;
        return 0;
    }
    if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)opt->listen_port);
        *len = sizeof *a6;
        *v6 = true;
        return 0;
    }
    return PD_EINVAL;
}

int api_http_start(api_context *ctx, api_http **out)
{
    struct sockaddr_storage addr;
    socklen_t addr_len = 0;
    bool v6 = false;
    if (listen_address(&ctx->opt, &addr, &addr_len, &v6) != 0) {
        LOG_ERROR("http", "listen address '%s' is not an IPv4 or IPv6 address",
                  ctx->opt.listen_host);
        return PD_EINVAL;
    }
    struct api_cidr *trusted = NULL;
    size_t ntrusted = 0;
    char why[160];
    int prc =
        api_trusted_proxies_parse(ctx->opt.trusted_proxies, &trusted, &ntrusted, why, sizeof why);
    if (prc) {
        if (prc == PD_EINVAL)
            LOG_ERROR("http", "%s", why);
        return prc;
    }
    api_http *h = calloc(1, sizeof *h);
    if (!h) {
        free(trusted);
        return PD_ENOMEM;
    }
    h->ctx = ctx;
    pthread_mutex_init(&h->conns_lock, NULL);
    pthread_rwlock_init(&h->jobs_lock, NULL);
    for (int i = 0; i < API_COMPONENT_COUNT_; i++)
        pthread_mutex_init(&h->component_errors[i].lock, NULL);
    make_id_prefix(h);
    h->trusted = trusted;
    h->ntrusted = ntrusted;
    api_rate_init(h);
    api_metrics_init(h);
    load_dashboard(h);
    api_stream_token_init(h);
    if (api_candles_cache_new(&h->candles) != 0) {
        http_free(h);
        return PD_ENOMEM;
    }
    size_t nroutes = 0;
    const struct api_route_def *defs = api_routes(&nroutes);
    h->routes = calloc(nroutes + 1, sizeof *h->routes); /* + the default route */
    h->order = calloc(nroutes, sizeof *h->order);
    if (!h->routes || !h->order) {
        http_free(h);
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
        r->method = defs[i].method;
        r->priority = defs[i].priority;
        /* insertion sort by priority, stable: the table's order breaks ties */
        size_t k = i;
        while (k > 0 && h->routes[h->order[k - 1]].priority > r->priority) {
            h->order[k] = h->order[k - 1];
            k--;
        }
        h->order[k] = i;
    }
    h->routes[nroutes] = (struct api_route){.http = h,
                                            .fn = route_not_found,
                                            .flags = 0,
                                            .metric = API_METRIC_OTHER,
                                            .method = "*",
                                            .pattern = "(no route)"};
    h->method_not_allowed = (struct api_route){.http = h,
                                               .fn = NULL, /* handle() answers 405 */
                                               .flags = 0,
                                               .metric = API_METRIC_OTHER,
                                               .method = "*",
                                               .pattern = "(wrong method)"};

    int per_ip = ctx->opt.per_ip_connections;
    if (per_ip <= 0 || per_ip > ctx->opt.max_connections)
        per_ip = ctx->opt.max_connections;
    struct MHD_OptionItem mhd_ops[] = {
        {MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_log, NULL}, /* first: it must be */
        {MHD_OPTION_THREAD_POOL_SIZE, ctx->opt.threads, NULL},
        {MHD_OPTION_CONNECTION_LIMIT, ctx->opt.max_connections, NULL},
        /* one address cannot take every connection: the rest stay for
         * others, health probes included */
        {MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_ip, NULL},
        {MHD_OPTION_CONNECTION_TIMEOUT, ctx->opt.idle_timeout, NULL},
        /* libmicrohttpd zeroes a connection's whole pool between keep-alive
         * requests: 32 KiB holds a 2 KiB URL and the headers with room to
         * spare, where 128 KiB made that memset the hottest spot of a cached
         * answer (bench/README.md) */
        {MHD_OPTION_CONNECTION_MEMORY_LIMIT, 32 * 1024, NULL},
        {MHD_OPTION_SOCK_ADDR, 0, &addr},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)request_completed, h},
        {MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)connection_notify, h},
        {MHD_OPTION_URI_LOG_CALLBACK, (intptr_t)uri_logged, h},
        /* on: SO_REUSEPORT (a second server on the port shares it). Off, the
         * option is left out: libmicrohttpd's default is SO_REUSEADDR only,
         * so a port another process listens on fails the start while a
         * restart over TIME_WAIT connections still binds (passing "false"
         * would drop SO_REUSEADDR too) */
        {ctx->opt.reuse_port ? MHD_OPTION_LISTENING_ADDRESS_REUSE : MHD_OPTION_END, 1, NULL},
        {MHD_OPTION_END, 0, NULL}};
    /* MHD_ALLOW_UPGRADE: the WebSocket route takes its connection over.
     * poll(2), not epoll: libmicrohttpd 0.9.75's MHD_quiesce_daemon (the
     * drain) races its epoll workers, which remove the listen socket from
     * their epoll sets themselves once they see the daemon quiesced; the
     * loser's epoll_ctl fails with ENOENT and libmicrohttpd aborts the
     * process ("Failed to remove listen FD from epoll set", seen once in a
     * SIGTERM under test). With poll the drain only signals the workers.
     * Each worker polls its own connections (max_connections / threads). */
    unsigned int flags =
        MHD_USE_POLL_INTERNAL_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG | MHD_ALLOW_UPGRADE;
    if (v6)
        flags |= MHD_USE_IPv6;
    h->daemon = MHD_start_daemon(flags, (uint16_t)ctx->opt.listen_port, NULL, NULL, access_handler,
                                 h, MHD_OPTION_ARRAY, mhd_ops, MHD_OPTION_END);
    if (!h->daemon) {
        int e = listen_probe(&addr, addr_len);
        if (e == EADDRINUSE)
            LOG_ERROR("http",
                      "cannot listen on %s:%d: the address is already in use (another process "
                      "listens there; PREDICTD_REUSE_PORT=on shares a port on purpose, and both "
                      "processes must set it)",
                      ctx->opt.listen_host, ctx->opt.listen_port);
        else
            LOG_ERROR("http", "cannot listen on %s:%d: %s", ctx->opt.listen_host,
                      ctx->opt.listen_port, e ? strerror(e) : "the HTTP server did not start");
        http_free(h);
        return PD_EIO;
    }
    if (pthread_create(&h->watchdog, NULL, watchdog_main, h) == 0)
        h->watchdog_started = true;
    else
        LOG_WARN("http", "cannot start the header watchdog: only the idle timeout applies");
    /* port 0: the kernel chose one; the log line says which (tests read it) */
    int port = ctx->opt.listen_port;
    const union MHD_DaemonInfo *fd = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_LISTEN_FD);
    struct sockaddr_storage bound;
    socklen_t bound_len = sizeof bound;
    if (port == 0 && fd && getsockname(fd->listen_fd, (struct sockaddr *)&bound, &bound_len) == 0)
        port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                 : ((struct sockaddr_in *)&bound)->sin_port);
    LOG_INFO("http",
             "listening on %s:%d with %d worker threads, %d connections at most (%d per "
             "address), idle timeout %d s, header timeout %d s",
             ctx->opt.listen_host, port, ctx->opt.threads, ctx->opt.max_connections, per_ip,
             ctx->opt.idle_timeout, ctx->opt.header_timeout);
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
    /* (the pool polls with poll(2), not epoll, because of this call: see
     * api_http_start) */
    if (h->daemon)
        listen_fd = MHD_quiesce_daemon(h->daemon);
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
            if (MHD_add_connection(h->daemon, c, (struct sockaddr *)&peer, plen) == MHD_YES)
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
    /* upgraded connections (WebSockets) are the application's: libmicrohttpd
     * must not stop under them */
    uint64_t ws_deadline = util_mono_ns() + 5000000000ull;
    while (atomic_load(&h->upgraded) > 0 && util_mono_ns() < ws_deadline)
        usleep(5000);
    if (atomic_load(&h->upgraded) > 0)
        LOG_WARN("http", "%d WebSocket connections did not close in 5 s",
                 atomic_load(&h->upgraded));
    if (h->watchdog_started) {
        atomic_store(&h->watchdog_stop, true);
        pthread_join(h->watchdog, NULL);
    }
    MHD_stop_daemon(h->daemon);
    if (listen_fd != MHD_INVALID_SOCKET)
        close(listen_fd);
    http_free(h);
}
