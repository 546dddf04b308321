/*
 * streams.c: new predictions pushed to clients as they are made, over
 * WebSocket (GET /api/predictions/stream) and Server-Sent Events (GET
 * /api/predictions/events), through one publish hub.
 *
 * The hub keeps every connected client with its subscription (symbols and
 * timeframes) and a bounded queue of messages. api_streams_publish() (the
 * inference loop) renders nothing and waits for nobody: it puts one shared,
 * reference-counted copy of the message in each subscribed client's queue
 * and wakes the client; a client whose queue is full is dropped, so a slow
 * reader never slows the others or the loop.
 *
 * It does not make predictions or decide what is published (predict/loop.c
 * does), and it does not count or cap streams (http.c's api_stream_enter
 * does, with PREDICTD_STREAM_MAX; beyond it the routes answer 503).
 *
 * DESIGN
 * - WebSocket: the route answers the handshake and asks the dispatcher to
 *   take the connection over (http.c: libmicrohttpd's upgrade response);
 *   once the 101 is sent, the socket belongs to one thread of the client's
 *   own, off the HTTP pool (ws_main). It polls the socket and the client's
 *   eventfd (which wake() writes): it parses what the client sends with
 *   ws.c's frame parser, which refuses a frame from its header alone (over
 *   SUB_MESSAGE_MAX bytes, unmasked, reserved bits, a bad opcode) before
 *   reading its payload, so memory per client is fixed (struct ws); it
 *   answers pings, and closes with the RFC's codes (1002 protocol, 1007 not
 *   UTF-8, 1009 too big, 1001 going away); it writes what is queued, or a
 *   heartbeat message after HEARTBEAT_S of silence. Only this thread reads
 *   or writes the socket; replies to a subscription go through the queue
 *   like every other message. Ulfius' websocket code is not used.
 * - SSE: a streamed response whose reader never blocks a worker thread.
 *   With nothing to send it suspends its connection (MHD_suspend_connection)
 *   and returns 0; publishing, a heartbeat due or the hub closing resumes
 *   it (MHD_resume_connection, from any thread). A suspended client costs
 *   no thread and no CPU. The dispatcher gives the route its connection
 *   (api_request.conn). A heartbeat thread (started with the first SSE client) resumes
 *   SSE clients silent for HEARTBEAT_S so they send a comment line (which
 *   keeps proxies from timing them out), and ends suspended clients whose
 *   peer hung up (libmicrohttpd does not watch a suspended socket), so a
 *   closed client gives its stream slot back within a second.
 * - libmicrohttpd must not stop with a suspended connection: api_streams_stop
 *   (called by api_http_stop as the drain starts) closes the hub for good,
 *   resumes every suspended client (whose reader then ends its stream) and
 *   wakes every WebSocket thread (which sends a 1001 close and gives its
 *   socket back; api_http_stop waits for them before stopping the daemon).
 *   Streams are never part of the drain's wait.
 * - Wire formats. WebSocket text messages: {"type":"prediction","data":{..}},
 *   {"type":"heartbeat","timestamp":..}, {"type":"subscribed","symbols":[..],
 *   "timeframes":[..]} and {"type":"error","error":{"code","message"}}. The
 *   client sends {"type":"subscribe","symbols":[..],"timeframes":[..]}
 *   (a missing or empty list means all); until then it receives nothing,
 *   unless the URL carried ?symbols=&timeframes=. SSE: "event: prediction"
 *   with "id: N" and the same JSON as data, ": heartbeat" comments, and a
 *   "retry: 3000" hint first; the subscription is the URL's.
 *
 * THREADING: hub->lock guards the client list, every client's queue,
 * subscription and flags, and the hub's closing flag. Lock order: hub->lock
 * before libmicrohttpd's own (suspend and resume are called under it).
 * A client is freed by whoever ends it last: its thread for a WebSocket
 * (or the dispatcher when the upgrade never happened), the response's free
 * callback for SSE (libmicrohttpd calls it once the response is done).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "api/http_internal.h"

#define QUEUE_MAX 256        /* messages a client may have waiting */
#define HEARTBEAT_S 15       /* silence before a heartbeat */
#define SUB_SYMBOLS_MAX 100  /* symbols in one subscription */
#define SUB_MESSAGE_MAX 8192 /* bytes of one incoming websocket message */

static const char *const tf_names[] = {"1m", "5m", "15m", "1h", "4h", "1d"};
#define TF_COUNT 6
#define TF_ALL ((1u << TF_COUNT) - 1)

/* One message, shared by every queue it is in. */
struct msg {
    atomic_int refs;
    uint64_t seq;
    size_t len;
    char data[];
};

static struct msg *msg_new(const char *data, size_t len, uint64_t seq)
{
    struct msg *m = malloc(sizeof *m + len + 1);
    if (!m)
        return NULL;
    atomic_init(&m->refs, 1);
    m->seq = seq;
    m->len = len;
    memcpy(m->data, data, len);
    m->data[len] = '\0';
    return m;
}

static void msg_release(struct msg *m)
{
    if (m && atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1)
        free(m);
}

enum { KIND_WS, KIND_SSE };

struct client {
    struct api_hub *hub;
    struct api_http *http; /* api_stream_leave when the client ends */
    int kind;
    /* --- guarded by hub->lock --- */
    struct client *prev, *next;
    int wake_fd; /* WebSocket: an eventfd its thread polls (written by wake()) */
    bool subscribed;
    unsigned tf_mask;
    char (*symbols)[24]; /* NULL: every symbol */
    size_t nsym;
    struct msg *q[QUEUE_MAX];
    size_t head, count;
    bool dropped;      /* queue overflowed, or could not be served */
    int64_t last_sent; /* monotonic seconds of the last write */
    /* SSE only */
    struct MHD_Connection *conn;
    bool suspended, heartbeat_due, greeted;
    char *out; /* the event being written */
    size_t out_len, out_off;
};

struct api_hub {
    pthread_mutex_t lock; /* see THREADING */
    struct client *clients;
    size_t nclients, nsse;
    bool closing;
    uint64_t seq;
    _Atomic uint64_t published, delivered, dropped;
    /* heartbeat thread (SSE) */
    pthread_t hb;
    bool hb_started, hb_stop; /* guarded by lock */
    pthread_cond_t hb_cond;
};

static int64_t mono_s(void)
{
    return (int64_t)(util_mono_ns() / 1000000000u);
}

/* A condition variable on the monotonic clock. */
static int cond_init_mono(pthread_cond_t *c)
{
    pthread_condattr_t a;
    if (pthread_condattr_init(&a) != 0)
        return PD_ENOMEM;
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(c, &a) == 0 ? 0 : PD_ENOMEM;
    pthread_condattr_destroy(&a);
    return rc;
}

static void cond_wait_ms(pthread_cond_t *c, pthread_mutex_t *m, int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(c, m, &ts);
}

/* ------------------------------------------------------------------------
 * Hub.
 */
int api_hub_new(struct api_hub **out)
{
    struct api_hub *h = calloc(1, sizeof *h);
    if (!h)
        return PD_ENOMEM;
    if (pthread_mutex_init(&h->lock, NULL) != 0) {
        free(h);
        return PD_ENOMEM;
    }
    if (cond_init_mono(&h->hb_cond) != 0) {
        pthread_mutex_destroy(&h->lock);
        free(h);
        return PD_ENOMEM;
    }
    *out = h;
    return 0;
}

void api_hub_free(struct api_hub *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->lock);
    bool started = h->hb_started;
    h->hb_stop = true;
    pthread_cond_broadcast(&h->hb_cond);
    pthread_mutex_unlock(&h->lock);
    if (started)
        pthread_join(h->hb, NULL);
    if (h->nclients)
        LOG_WARN("streams", "%zu stream clients left at shutdown", h->nclients);
    pthread_cond_destroy(&h->hb_cond);
    pthread_mutex_destroy(&h->lock);
    free(h);
}

void api_stream_stats_get(api_context *ctx, api_stream_stats *out)
{
    struct api_hub *h = ctx->hub;
    pthread_mutex_lock(&h->lock);
    out->clients = h->nclients;
    pthread_mutex_unlock(&h->lock);
    out->published = atomic_load(&h->published);
    out->delivered = atomic_load(&h->delivered);
    out->dropped = atomic_load(&h->dropped);
}

/* Wakes a client to look at its queue and flags; caller holds hub->lock. */
static void wake(struct client *c)
{
    if (c->kind == KIND_WS) {
        uint64_t one = 1;
        if (write(c->wake_fd, &one, sizeof one) < 0 && errno != EAGAIN)
            LOG_WARN("streams", "cannot wake a WebSocket client: %s", strerror(errno));
    } else if (c->suspended) {
        c->suspended = false;
        MHD_resume_connection(c->conn);
    }
}

/* Frees a client's queue and buffers; caller holds hub->lock or owns c. */
static void client_clear(struct client *c)
{
    while (c->count) {
        msg_release(c->q[c->head]);
        c->head = (c->head + 1) % QUEUE_MAX;
        c->count--;
    }
    free(c->symbols);
    c->symbols = NULL;
    free(c->out);
    c->out = NULL;
}

static struct msg *pop(struct client *c)
{
    if (!c->count)
        return NULL;
    struct msg *m = c->q[c->head];
    c->head = (c->head + 1) % QUEUE_MAX;
    c->count--;
    return m;
}

/* Queues m (taking a reference) or drops the client when its queue is full.
 * Caller holds hub->lock. */
static bool enqueue(struct api_hub *h, struct client *c, struct msg *m)
{
    if (c->dropped)
        return false;
    if (c->count == QUEUE_MAX) {
        c->dropped = true;
        atomic_fetch_add(&h->dropped, 1);
        LOG_WARN("streams", "a %s client fell %d messages behind: dropped",
                 c->kind == KIND_WS ? "WebSocket" : "SSE", QUEUE_MAX);
        wake(c);
        return false;
    }
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    c->q[(c->head + c->count) % QUEUE_MAX] = m;
    c->count++;
    wake(c);
    return true;
}

/* True when the peer of a suspended connection hung up (libmicrohttpd does
 * not watch suspended sockets). Caller holds the hub lock. */
static bool peer_gone(const struct client *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci)
        return false;
    struct pollfd p = {.fd = ci->connect_fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* Once a second: heartbeats for silent SSE clients, and an end for those
 * whose peer went away while suspended (so they give their slot back). */
static void *heartbeat_main(void *arg)
{
    struct api_hub *h = arg;
    pthread_mutex_lock(&h->lock);
    while (!h->hb_stop) {
        int64_t now = mono_s();
        for (struct client *c = h->clients; c; c = c->next) {
            if (c->kind != KIND_SSE || !c->suspended)
                continue;
            if (peer_gone(c)) {
                c->dropped = true;
                wake(c);
            } else if (now - c->last_sent >= HEARTBEAT_S) {
                c->heartbeat_due = true;
                wake(c);
            }
        }
        cond_wait_ms(&h->hb_cond, &h->lock, 1000);
    }
    pthread_mutex_unlock(&h->lock);
    return NULL;
}

/* Adds c to the hub; PD_ENOTREADY once the hub is closing. */
static int hub_add(struct api_hub *h, struct client *c)
{
    int rc = 0;
    pthread_mutex_lock(&h->lock);
    if (h->closing) {
        rc = PD_ENOTREADY;
    } else {
        c->next = h->clients;
        if (h->clients)
            h->clients->prev = c;
        h->clients = c;
        h->nclients++;
        c->last_sent = mono_s();
        if (c->kind == KIND_SSE) {
            h->nsse++;
            if (!h->hb_started) {
                if (pthread_create(&h->hb, NULL, heartbeat_main, h) == 0)
                    h->hb_started = true;
                else
                    LOG_WARN("streams", "cannot start the SSE heartbeat thread");
            }
        }
    }
    pthread_mutex_unlock(&h->lock);
    return rc;
}

/* Removes c from the hub and frees it; leaves its stream slot. */
static void client_end(struct client *c)
{
    struct api_hub *h = c->hub;
    pthread_mutex_lock(&h->lock);
    if (c->prev)
        c->prev->next = c->next;
    else if (h->clients == c)
        h->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    h->nclients--;
    if (c->kind == KIND_SSE)
        h->nsse--;
    client_clear(c);
    pthread_mutex_unlock(&h->lock);
    api_stream_leave(c->http);
    if (c->kind == KIND_WS)
        close(c->wake_fd);
    free(c);
}

static struct client *client_new(struct api_request *rq, int kind)
{
    struct client *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->wake_fd = -1;
    if (kind == KIND_WS && (c->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
        free(c);
        return NULL;
    }
    c->hub = rq->ctx->hub;
    c->http = rq->http;
    c->kind = kind;
    c->tf_mask = TF_ALL;
    return c;
}

static bool matches(const struct client *c, const char *symbol, unsigned tf_bit)
{
    if (!c->subscribed || !(c->tf_mask & tf_bit))
        return false;
    if (!c->symbols)
        return true;
    for (size_t i = 0; i < c->nsym; i++)
        if (strcmp(c->symbols[i], symbol) == 0)
            return true;
    return false;
}

static int tf_index(const char *tf)
{
    for (int i = 0; i < TF_COUNT; i++)
        if (strcmp(tf_names[i], tf) == 0)
            return i;
    return -1;
}

size_t api_streams_publish(api_context *ctx, const char *symbol, const char *tf, const char *msg,
                           size_t len)
{
    struct api_hub *h = ctx ? ctx->hub : NULL;
    int ti = tf ? tf_index(tf) : -1;
    if (!h || !symbol || ti < 0 || !msg)
        return 0;
    atomic_fetch_add(&h->published, 1);
    size_t n = 0;
    pthread_mutex_lock(&h->lock);
    if (!h->clients || h->closing) {
        pthread_mutex_unlock(&h->lock);
        return 0;
    }
    struct msg *m = msg_new(msg, len, ++h->seq);
    if (!m) {
        pthread_mutex_unlock(&h->lock);
        LOG_WARN("streams", "out of memory: a prediction was not streamed");
        return 0;
    }
    for (struct client *c = h->clients; c; c = c->next)
        if (matches(c, symbol, 1u << ti) && enqueue(h, c, m))
            n++;
    pthread_mutex_unlock(&h->lock);
    msg_release(m);
    atomic_fetch_add(&h->delivered, n);
    return n;
}

/* ------------------------------------------------------------------------
 * Subscriptions.
 */
struct filter {
    unsigned tf_mask;
    char (*symbols)[24]; /* NULL: all */
    size_t nsym;
};

/* Adds one symbol or timeframe; why gets the reason on PD_EINVAL. */
static int filter_symbol(struct filter *f, const char *s, size_t len, char *why, size_t whylen)
{
    char sym[24];
    if (len == 0)
        return 0;
    if (len >= sizeof sym) {
        snprintf(why, whylen, "symbol '%.24s...' is too long", s);
        return PD_EINVAL;
    }
    memcpy(sym, s, len);
    sym[len] = '\0';
    if (!util_symbol_valid(sym)) {
        snprintf(why, whylen, "symbol '%s' does not match ^[A-Z0-9]{2,20}$", sym);
        return PD_EINVAL;
    }
    if (f->nsym == SUB_SYMBOLS_MAX) {
        snprintf(why, whylen, "at most %d symbols per subscription", SUB_SYMBOLS_MAX);
        return PD_EINVAL;
    }
    if (!f->symbols && !(f->symbols = calloc(SUB_SYMBOLS_MAX, sizeof *f->symbols)))
        return PD_ENOMEM;
    memcpy(f->symbols[f->nsym++], sym, len + 1);
    return 0;
}

static int filter_tf(struct filter *f, const char *s, size_t len, char *why, size_t whylen)
{
    if (len == 0)
        return 0;
    for (int i = 0; i < TF_COUNT; i++) {
        if (strlen(tf_names[i]) == len && memcmp(tf_names[i], s, len) == 0) {
            f->tf_mask |= 1u << i;
            return 0;
        }
    }
    snprintf(why, whylen, "timeframe '%.*s' is not one of %s", (int)(len > 16 ? 16 : len), s,
             util_tf_list());
    return PD_EINVAL;
}

typedef int (*filter_add)(struct filter *f, const char *s, size_t len, char *why, size_t whylen);

/* Adds each item of a comma-separated list. */
static int filter_csv(struct filter *f, const char *list, filter_add add, char *why, size_t whylen)
{
    for (const char *p = list; p && *p;) {
        size_t n = strcspn(p, ",");
        int rc = add(f, p, n, why, whylen);
        if (rc)
            return rc;
        p += n;
        if (*p == ',')
            p++;
    }
    return 0;
}

/* Adds each string of a JSON array (NULL: nothing). */
static int filter_json(struct filter *f, json_t *arr, const char *what, filter_add add, char *why,
                       size_t whylen)
{
    if (!arr || json_is_null(arr))
        return 0;
    if (!json_is_array(arr)) {
        snprintf(why, whylen, "%s must be an array of strings", what);
        return PD_EINVAL;
    }
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        if (!json_is_string(v)) {
            snprintf(why, whylen, "%s must be an array of strings", what);
            return PD_EINVAL;
        }
        int rc = add(f, json_string_value(v), json_string_length(v), why, whylen);
        if (rc)
            return rc;
    }
    return 0;
}

/* Installs f as c's subscription (taking its symbols); caller holds the
 * hub lock. An empty timeframe set means all. */
static void subscribe(struct client *c, struct filter *f)
{
    free(c->symbols);
    c->symbols = f->symbols;
    c->nsym = f->nsym;
    c->tf_mask = f->tf_mask ? f->tf_mask : TF_ALL;
    c->subscribed = true;
    f->symbols = NULL;
}

/* {"type":"subscribed","symbols":[...],"timeframes":[...]} */
static void render_subscribed(util_buf *b, const struct client *c)
{
    util_buf_puts(b, "{\"type\":\"subscribed\",\"symbols\":[");
    for (size_t i = 0; i < c->nsym; i++) {
        if (i)
            util_buf_puts(b, ",");
        util_json_str(b, c->symbols[i]);
    }
    util_buf_puts(b, "],\"timeframes\":[");
    const char *sep = "";
    for (int i = 0; i < TF_COUNT; i++) {
        if (c->tf_mask & (1u << i)) {
            util_buf_puts(b, sep);
            util_json_str(b, tf_names[i]);
            sep = ",";
        }
    }
    util_buf_puts(b, "]}");
}

/* Queues a reply (the client's own message, not published). Caller holds
 * the hub lock. */
static void reply(struct client *c, util_buf *b)
{
    if (!util_buf_ok(b))
        return;
    struct msg *m = msg_new(b->data, b->len, 0);
    if (m) {
        enqueue(c->hub, c, m);
        msg_release(m);
    }
}

static void reply_error(struct client *c, int err, const char *message)
{
    util_buf b;
    util_buf_init(&b);
    util_buf_puts(&b, "{\"type\":\"error\",\"error\":{\"code\":");
    util_json_str(&b, util_err_code(err));
    util_buf_puts(&b, ",\"message\":");
    util_json_str(&b, message);
    util_buf_puts(&b, "}}");
    reply(c, &b);
    util_buf_cleanup(&b);
}

/* The subscription a URL asks for (?symbols=A,B&timeframes=15m,1h). */
static int filter_from_query(struct api_request *rq, struct filter *f, bool *given, char *why,
                             size_t whylen)
{
    const char *syms = api_query(rq, "symbols"), *tfs = api_query(rq, "timeframes");
    if (!tfs)
        tfs = api_query(rq, "timeframe");
    *given = syms || tfs;
    int rc = filter_csv(f, syms, filter_symbol, why, whylen);
    if (rc == 0)
        rc = filter_csv(f, tfs, filter_tf, why, whylen);
    return rc;
}

/* ------------------------------------------------------------------------
 * WebSocket transport (RFC 6455 framing in ws.c).
 */
/* Bytes read from a client before they are parsed: one whole frame of the
 * largest size a client may send, plus its header. */
#define WS_READ_BUF (SUB_MESSAGE_MAX + 14)
#define WS_SEND_TIMEOUT_MS 10000 /* a peer that reads nothing for this long is dropped */
#define WS_CLOSE_WAIT_MS 1000    /* after our close frame, for the peer's */

struct ws {
    struct client *c;
    int fd;
    struct MHD_UpgradeResponseHandle *urh;
    uint8_t in[WS_READ_BUF];
    size_t in_len;
    uint8_t msg[SUB_MESSAGE_MAX]; /* a message being assembled from frames */
    size_t msg_len;
    int msg_opcode; /* 0: none in progress */
    bool close_sent;
};

/* Writes all of buf, waiting at most WS_SEND_TIMEOUT_MS for the peer to
 * read; false when it cannot. */
static bool ws_write(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pf = {.fd = fd, .events = POLLOUT};
            if (poll(&pf, 1, WS_SEND_TIMEOUT_MS) <= 0)
                return false;
            continue;
        }
        return false;
    }
    return true;
}

static bool ws_send(struct ws *w, uint8_t opcode, const void *data, size_t len)
{
    uint8_t head[10];
    size_t hl = api__ws_frame_header(head, opcode, len);
    return ws_write(w->fd, head, hl) && (len == 0 || ws_write(w->fd, data, len));
}

static void ws_send_close(struct ws *w, int code)
{
    if (w->close_sent)
        return;
    uint8_t body[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    ws_send(w, API_WS_CLOSE, body, sizeof body);
    w->close_sent = true;
}

/* A subscription message (JSON text): the reply goes through the queue. */
static void ws_message(struct client *c, const uint8_t *data, size_t len)
{
    struct api_hub *h = c->hub;
    char why[160] = "";
    int rc = 0;
    struct filter f = {0};
    json_error_t jerr;
    json_t *root = json_loadb((const char *)data, len, 0, &jerr);
    const char *type = root ? json_string_value(json_object_get(root, "type")) : NULL;
    if (!root || !json_is_object(root)) {
        rc = PD_EPARSE;
        snprintf(why, sizeof why, "not a JSON object");
    } else if (!type || strcmp(type, "subscribe") != 0) {
        rc = PD_EINVAL;
        snprintf(why, sizeof why,
                 "unknown message type; send {\"type\":\"subscribe\","
                 "\"symbols\":[...],\"timeframes\":[...]}");
    } else {
        rc = filter_json(&f, json_object_get(root, "symbols"), "symbols", filter_symbol, why,
                         sizeof why);
        if (rc == 0)
            rc = filter_json(&f, json_object_get(root, "timeframes"), "timeframes", filter_tf, why,
                             sizeof why);
    }
    json_decref(root);
    pthread_mutex_lock(&h->lock);
    if (rc) {
        reply_error(c, rc, why[0] ? why : util_strerror(rc));
    } else {
        subscribe(c, &f);
        util_buf b;
        util_buf_init(&b);
        render_subscribed(&b, c);
        reply(c, &b);
        util_buf_cleanup(&b);
    }
    pthread_mutex_unlock(&h->lock);
    free(f.symbols);
}

/* Parses and acts on every whole frame in w->in. Returns 0 to go on, 1 when
 * the peer closed (our close answered), or the close code to send. */
static int ws_frames(struct ws *w)
{
    for (;;) {
        struct api_ws_frame f;
        int rc = api__ws_frame_parse(w->in, w->in_len, SUB_MESSAGE_MAX, &f);
        if (rc < 0)
            return -rc;
        if (rc == 1 && !(f.opcode & 0x8) && f.len > SUB_MESSAGE_MAX - w->msg_len)
            return API_WS_CLOSE_TOO_BIG; /* the message would outgrow its limit */
        if (rc == 0 || w->in_len - f.header_len < f.len)
            return 0; /* the rest of the frame is still on its way */
        uint8_t *payload = w->in + f.header_len;
        size_t n = (size_t)f.len;
        api__ws_unmask(payload, n, f.mask, 0);
        switch (f.opcode) {
        case API_WS_PING:
            if (!ws_send(w, API_WS_PONG, payload, n))
                return API_WS_CLOSE_GOING_AWAY;
            break;
        case API_WS_PONG:
            break;
        case API_WS_CLOSE: {
            int code = API_WS_CLOSE_NORMAL;
            if (n == 1)
                return API_WS_CLOSE_PROTOCOL;
            if (n >= 2) {
                code = payload[0] << 8 | payload[1];
                if (code < 1000 || code == 1004 || code == 1005 || code == 1006 ||
                    (code > 1014 && code < 3000) || code > 4999)
                    return API_WS_CLOSE_PROTOCOL;
                if (!api__utf8_valid((const char *)payload + 2, n - 2))
                    return API_WS_CLOSE_BAD_DATA;
            }
            ws_send_close(w, code);
            return 1;
        }
        case API_WS_CONT:
        case API_WS_TEXT:
        case API_WS_BINARY:
            if ((f.opcode == API_WS_CONT) != (w->msg_opcode != 0))
                return API_WS_CLOSE_PROTOCOL; /* a continuation of nothing, or a new
                                               * message inside another */
            if (f.opcode != API_WS_CONT)
                w->msg_opcode = f.opcode;
            memcpy(w->msg + w->msg_len, payload, n); /* n is within the budget */
            w->msg_len += n;
            if (f.fin) {
                if (w->msg_opcode == API_WS_BINARY) {
                    pthread_mutex_lock(&w->c->hub->lock);
                    reply_error(w->c, PD_EINVAL, "messages are JSON text");
                    pthread_mutex_unlock(&w->c->hub->lock);
                } else if (!api__utf8_valid((const char *)w->msg, w->msg_len)) {
                    return API_WS_CLOSE_BAD_DATA;
                } else {
                    ws_message(w->c, w->msg, w->msg_len);
                }
                w->msg_len = 0;
                w->msg_opcode = 0;
            }
            break;
        default:
            return API_WS_CLOSE_PROTOCOL; /* the parser lets no other opcode through */
        }
        size_t used = f.header_len + n;
        memmove(w->in, w->in + used, w->in_len - used);
        w->in_len -= used;
    }
}

/* Sends what the client's queue holds and a heartbeat when one is due.
 * False when the client is to end (dropped, hub closing, peer gone); *code
 * is then the close code to send, 0 for none. */
static bool ws_flush(struct ws *w, int *code)
{
    struct client *c = w->c;
    struct api_hub *h = c->hub;
    pthread_mutex_lock(&h->lock);
    for (;;) {
        if (h->closing || c->dropped) {
            pthread_mutex_unlock(&h->lock);
            *code = h->closing ? API_WS_CLOSE_GOING_AWAY : API_WS_CLOSE_TOO_BIG;
            return false;
        }
        struct msg *m = pop(c);
        bool beat = !m && mono_s() - c->last_sent >= HEARTBEAT_S;
        if (!m && !beat)
            break;
        pthread_mutex_unlock(&h->lock);
        bool ok;
        if (m) {
            ok = ws_send(w, API_WS_TEXT, m->data, m->len);
            msg_release(m);
        } else {
            char ts[32], text[96];
            int len = snprintf(text, sizeof text, "{\"type\":\"heartbeat\",\"timestamp\":\"%s\"}",
                               util_rfc3339(util_now(), ts));
            ok = ws_send(w, API_WS_TEXT, text, (size_t)len);
        }
        pthread_mutex_lock(&h->lock);
        if (!ok) {
            pthread_mutex_unlock(&h->lock);
            *code = 0;
            return false;
        }
        c->last_sent = mono_s();
    }
    pthread_mutex_unlock(&h->lock);
    return true;
}

/* Whether the buffered input holds the peer's close frame: whole frames
 * before it (data, pings) are dropped unanswered; a partial frame stays
 * for more bytes, input that does not parse never matches. */
static bool ws_close_received(struct ws *w)
{
    for (;;) {
        struct api_ws_frame f;
        if (api__ws_frame_parse(w->in, w->in_len, SUB_MESSAGE_MAX, &f) != 1 ||
            w->in_len - f.header_len < f.len)
            return false;
        if (f.opcode == API_WS_CLOSE)
            return true;
        size_t used = f.header_len + (size_t)f.len;
        memmove(w->in, w->in + used, w->in_len - used);
        w->in_len -= used;
    }
}

/* After our close frame: reads (and ignores) until the peer's close or EOF,
 * at most WS_CLOSE_WAIT_MS, so the peer sees a clean close. After a frame
 * that broke the protocol the input buffered so far is dropped (the next
 * frame can only start after it); otherwise it is kept, as a close frame
 * may follow a partial frame. */
static void ws_await_close(struct ws *w, bool bad_input)
{
    if (bad_input)
        w->in_len = 0;
    uint64_t end = util_mono_ns() + WS_CLOSE_WAIT_MS * 1000000ull;
    for (;;) {
        uint64_t now = util_mono_ns();
        if (now >= end)
            return;
        struct pollfd pf = {.fd = w->fd, .events = POLLIN};
        if (poll(&pf, 1, (int)((end - now) / 1000000ull) + 1) <= 0)
            return;
        uint8_t buf[512];
        ssize_t n = recv(w->fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
            return;
        if (n > 0 && w->in_len + (size_t)n <= sizeof w->in) {
            memcpy(w->in + w->in_len, buf, (size_t)n);
            w->in_len += (size_t)n;
            if (ws_close_received(w))
                return;
        }
    }
}

/* One thread per WebSocket (off the HTTP pool): it reads and answers the
 * client's frames, and writes what the hub queues for it. */
static void *ws_main(void *arg)
{
    struct ws *w = arg;
    struct client *c = w->c;
    int code = 0;
    bool bad_input = false; /* code is for a frame the client sent */
    for (;;) {
        if (!ws_flush(w, &code))
            break;
        int64_t wait_ms = (c->last_sent + HEARTBEAT_S - mono_s()) * 1000;
        if (wait_ms < 10)
            wait_ms = 10;
        if (wait_ms > 1000)
            wait_ms = 1000;
        struct pollfd pf[2] = {{.fd = w->fd, .events = POLLIN},
                               {.fd = c->wake_fd, .events = POLLIN}};
        int pr = poll(pf, 2, (int)wait_ms);
        if (pr < 0 && errno != EINTR) {
            code = 0;
            break;
        }
        if (pf[1].revents & POLLIN) {
            uint64_t v;
            if (read(c->wake_fd, &v, sizeof v) < 0 && errno != EAGAIN)
                break;
        }
        if (pf[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = recv(w->fd, w->in + w->in_len, sizeof w->in - w->in_len, MSG_DONTWAIT);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                code = 0; /* the peer went away without a close frame */
                break;
            }
            if (n > 0) {
                w->in_len += (size_t)n;
                int rc = ws_frames(w);
                if (rc == 1) {
                    code = 0; /* our answer to its close is sent */
                    break;
                }
                if (rc) {
                    code = rc;
                    bad_input = true;
                    break;
                }
            }
        }
    }
    if (code) {
        ws_send_close(w, code);
        ws_await_close(w, bad_input);
    }
    struct api_http *hp = c->http;
    MHD_upgrade_action(w->urh, MHD_UPGRADE_ACTION_CLOSE);
    client_end(c);
    free(w);
    atomic_fetch_sub(&hp->upgraded, 1);
    return NULL;
}

/* libmicrohttpd sent the 101: the socket is ours (called on a pool thread,
 * so the work moves to a thread of its own). */
static void ws_upgraded(void *arg, MHD_socket sock, const char *extra, size_t extra_len,
                        struct MHD_UpgradeResponseHandle *urh)
{
    struct client *c = arg;
    struct api_http *hp = c->http;
    struct ws *w = calloc(1, sizeof *w);
    pthread_attr_t attr;
    pthread_t t;
    bool started = false;
    if (w && extra_len <= sizeof w->in) {
        w->c = c;
        w->fd = sock;
        w->urh = urh;
        memcpy(w->in, extra, extra_len);
        w->in_len = extra_len;
        if (pthread_attr_init(&attr) == 0) {
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            pthread_attr_setstacksize(&attr, 256 * 1024);
            started = pthread_create(&t, &attr, ws_main, w) == 0;
            pthread_attr_destroy(&attr);
        }
    }
    if (!started) {
        LOG_WARN("streams", "cannot start a WebSocket thread: the client is closed");
        free(w);
        MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
        client_end(c);
        atomic_fetch_sub(&hp->upgraded, 1);
    }
}

/* The upgrade did not happen (the client left before the 101). */
static void ws_abandoned(void *arg)
{
    struct client *c = arg;
    struct api_http *hp = c->http;
    client_end(c);
    atomic_fetch_sub(&hp->upgraded, 1);
}

/* A WebSocket handshake (RFC 6455 4.2.1), so a plain GET gets a JSON
 * error. */
static bool websocket_request(struct api_request *rq)
{
    const char *up = api_header(rq, "Upgrade"), *conn = api_header(rq, "Connection");
    const char *key = api_header(rq, "Sec-WebSocket-Key");
    const char *ver = api_header(rq, "Sec-WebSocket-Version");
    return up && strcasestr(up, "websocket") && conn && strcasestr(conn, "upgrade") && key && ver &&
           strcmp(ver, "13") == 0 && strcmp(rq->req->http_verb, "GET") == 0;
}

static void stream_limit_reply(struct api_request *rq)
{
    if (api_http_draining(rq->http))
        api_reply_error(rq, PD_ENOTREADY, "the service is shutting down");
    else
        api_reply_errorf(rq, PD_ENOTREADY,
                         "too many streams: %d WebSocket and SSE clients at most "
                         "(PREDICTD_STREAM_MAX)",
                         rq->ctx->opt.stream_max);
}

/* A stream slot and a client for rq, or NULL with the answer given (503
 * beyond PREDICTD_STREAM_MAX, or out of memory) and f's symbols freed. */
static struct client *client_open(struct api_request *rq, int kind, struct filter *f)
{
    if (!api_stream_enter(rq->http)) {
        free(f->symbols);
        stream_limit_reply(rq);
        return NULL;
    }
    struct client *c = client_new(rq, kind);
    if (!c) {
        free(f->symbols);
        api_stream_leave(rq->http);
        api_reply_error(rq, PD_ENOMEM, NULL);
    }
    return c;
}

void api_route_stream_ws(struct api_request *rq)
{
    char accept[29];
    if (!websocket_request(rq)) {
        api_reply_error(rq, PD_EINVAL,
                        "this route speaks WebSocket (Upgrade: websocket, version 13); for "
                        "Server-Sent Events use GET /api/predictions/events");
        return;
    }
    if (api__ws_accept(api_header(rq, "Sec-WebSocket-Key"), accept) != 0) {
        api_reply_error(rq, PD_EINVAL, "Sec-WebSocket-Key is not the base64 of 16 bytes");
        return;
    }
    char why[160] = "";
    bool given = false;
    struct filter f = {0};
    int rc = filter_from_query(rq, &f, &given, why, sizeof why);
    if (rc) {
        free(f.symbols);
        api_reply_error(rq, rc, why[0] ? why : NULL);
        return;
    }
    struct client *c = client_open(rq, KIND_WS, &f);
    if (!c)
        return;
    if (given)
        subscribe(c, &f); /* not in the hub yet: no lock needed */
    free(f.symbols);
    if ((rc = hub_add(c->hub, c)) != 0) {
        client_clear(c);
        close(c->wake_fd);
        free(c);
        api_stream_leave(rq->http);
        stream_limit_reply(rq);
        return;
    }
    u_map_put(rq->resp->map_header, "Upgrade", "websocket");
    u_map_put(rq->resp->map_header, "Sec-WebSocket-Accept", accept);
    /* counted from here, not from the 101: the stop must not stop the
     * daemon while an upgrade it has queued is still to happen */
    atomic_fetch_add(&rq->http->upgraded, 1);
    rq->upgrade = ws_upgraded;
    rq->upgrade_arg = c;
    rq->upgrade_abandon = ws_abandoned;
    rq->resp->status = 101;
    rq->status = 101;
    rq->stream = true;
}

/* ------------------------------------------------------------------------
 * Server-Sent Events.
 */

/* Formats the next thing to send into c->out; false when there is none.
 * Caller holds the hub lock. */
static bool sse_next(struct client *c)
{
    util_buf b;
    util_buf_init(&b);
    if (!c->greeted) {
        c->greeted = true;
        util_buf_puts(&b, ": predictd prediction stream\nretry: 3000\n\n");
    } else {
        struct msg *m = pop(c);
        if (m) {
            util_buf_printf(&b, "id: %llu\nevent: prediction\ndata: ", (unsigned long long)m->seq);
            util_buf_append(&b, m->data, m->len);
            util_buf_puts(&b, "\n\n");
            msg_release(m);
        } else if (c->heartbeat_due) {
            char ts[32];
            util_buf_printf(&b, ": heartbeat %s\n\n", util_rfc3339(util_now(), ts));
        } else {
            util_buf_cleanup(&b);
            return false;
        }
    }
    c->heartbeat_due = false;
    if (!util_buf_ok(&b)) {
        util_buf_cleanup(&b);
        c->dropped = true;
        return false;
    }
    c->out_len = b.len;
    c->out_off = 0;
    c->out = util_buf_steal(&b);
    return true;
}

static ssize_t sse_read(void *arg, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    struct client *c = arg;
    struct api_hub *h = c->hub;
    ssize_t n = 0;
    pthread_mutex_lock(&h->lock);
    if (h->closing || c->dropped) {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    } else if (c->out || sse_next(c)) {
        size_t k = c->out_len - c->out_off;
        if (k > max)
            k = max;
        memcpy(buf, c->out + c->out_off, k);
        c->out_off += k;
        if (c->out_off == c->out_len) {
            free(c->out);
            c->out = NULL;
        }
        c->last_sent = mono_s();
        n = (ssize_t)k;
    } else if (c->dropped) {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        /* nothing to send: leave the worker thread until woken */
        c->suspended = true;
        MHD_suspend_connection(c->conn);
    }
    pthread_mutex_unlock(&h->lock);
    return n;
}

static void sse_free(void *arg)
{
    client_end(arg);
}

void api_route_stream_sse(struct api_request *rq)
{
    char why[160] = "";
    bool given = false;
    struct filter f = {0};
    int rc = filter_from_query(rq, &f, &given, why, sizeof why);
    if (rc) {
        free(f.symbols);
        api_reply_error(rq, rc, why[0] ? why : NULL);
        return;
    }
    struct MHD_Connection *conn = rq->conn;
    if (!conn) {
        free(f.symbols);
        api_reply_error(rq, PD_EINTERNAL, "the connection of this stream cannot be found");
        return;
    }
    struct client *c = client_open(rq, KIND_SSE, &f);
    if (!c)
        return;
    subscribe(c, &f); /* SSE subscribes by its URL: all when nothing is given */
    free(f.symbols);
    c->conn = conn;
    if (hub_add(c->hub, c) != 0) {
        client_clear(c);
        free(c);
        api_stream_leave(rq->http);
        stream_limit_reply(rq);
        return;
    }
    u_map_put(rq->resp->map_header, "Content-Type", "text/event-stream");
    u_map_put(rq->resp->map_header, "Cache-Control", "no-cache");
    u_map_put(rq->resp->map_header, "X-Accel-Buffering", "no");
    if (ulfius_set_stream_response(rq->resp, 200, sse_read, sse_free, U_STREAM_SIZE_UNKNOWN, 4096,
                                   c) != U_OK) {
        client_end(c);
        api_reply_error(rq, PD_EINTERNAL, "cannot start the event stream");
        return;
    }
    rq->status = 200;
    rq->stream = true;
}

/* ------------------------------------------------------------------------
 * Hooks for http.c.
 */
void api_streams_stop(struct api_http *hp)
{
    struct api_hub *h = hp->ctx->hub;
    pthread_mutex_lock(&h->lock);
    h->closing = true;
    size_t n = h->nclients;
    for (struct client *c = h->clients; c; c = c->next)
        wake(c);
    pthread_mutex_unlock(&h->lock);
    if (n)
        LOG_INFO("streams", "closing %zu stream clients", n);
}
