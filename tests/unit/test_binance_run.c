/*
 * test_binance_run.c: the Binance connector's own thread (binance.c: the
 * exchangeInfo call, the stream connection, the REST backfill after every
 * connect, renewals and reconnects) run in-process against a scripted
 * exchange on loopback: a REST listener answering /api/v3/time,
 * /api/v3/exchangeInfo and /api/v3/klines in Binance's documented formats
 * as each test sets them, and a WebSocket listener that upgrades (or
 * refuses), sends the test's messages and holds or drops the connection.
 * The checks are on what the connector reports (state, last error,
 * metrics), what it asked the exchange, and, with the PostgreSQL of
 * tests/run, the candles and exchange symbols it stored.
 * The wires' own faults are test_feed_wire's; the long replay of real
 * trades with every fault is tests/integration/test_exchange.py.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "feed/feed.h"
#include "store/store.h"
#include "unit.h"
#include "fixtures.h"
#include "util/util.h"

#define MINUTE_MS INT64_C(60000)

/* ---------------------------------------------------------------------------
 * The scripted exchange.
 */
enum { WS_HOLD, WS_REFUSE };
enum { TIME_OK, TIME_NO_FIELD, TIME_EMPTY };

#define MAX_PATHS 32

typedef struct xchg {
    int rest_fd, ws_fd, rest_port, ws_port;
    pthread_t rest_th, ws_th;
    atomic_bool stop;
    pthread_mutex_t mu;
    /* what REST answers (mu) */
    int info_status;
    char info_body[8192];
    int time_mode;
    int klines_status;
    const char *klines_body; /* NULL: rows of `candles` in the asked range */
    int klines_fail_at;      /* this klines request (0-based) gets a 400; -1: none */
    char candles_symbol[24];
    features_candle candles[8];
    size_t ncandles;
    /* what the stream does (mu) */
    int ws_mode;
    char ws_msgs[4][512];
    size_t nmsgs;
    atomic_bool ws_drop; /* the server drops the connection it holds */
    atomic_int pings;    /* client pings received with the payload "predictd" */
    /* what was asked (mu for the strings) */
    atomic_int n_time, n_info, n_klines, n_ws;
    char info_path[512];
    char ws_path[512];
    char klines_paths[MAX_PATHS][256];
} xchg;

static void send_all(int fd, const void *data, size_t n)
{
    const char *c = data;
    while (n > 0) {
        ssize_t r = send(fd, c, n, MSG_NOSIGNAL);
        if (r <= 0)
            return;
        c += r;
        n -= (size_t)r;
    }
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int64_t now_ms(void)
{
    return (int64_t)(util_now_precise() * 1000.0);
}

/* Reads a request head (up to the blank line). Its length or -1. */
static int read_head(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = recv(fd, buf + n, 1, 0);
        if (r <= 0)
            return -1;
        n++;
        buf[n] = '\0';
        if (n >= 4 && memcmp(buf + n - 4, "\r\n\r\n", 4) == 0)
            return (int)n;
    }
    return -1;
}

static void answer(int fd, int status, const char *body)
{
    char h[256];
    int n = snprintf(h, sizeof h,
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json;charset=UTF-8\r\n"
                     "X-MBX-USED-WEIGHT-1M: 3\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                     status, status == 200 ? "OK" : "Bad Request", strlen(body));
    send_all(fd, h, (size_t)n);
    send_all(fd, body, strlen(body));
}

static long long query_ll(const char *path, const char *key)
{
    const char *p = strstr(path, key);
    return p ? atoll(p + strlen(key)) : -1;
}

/* The documented klines row: [open time, "open", "high", "low", "close",
 * "volume", close time, "quote volume", trades, "taker base", "taker quote",
 * "ignore"]. */
static void klines_rows(xchg *x, const char *path, util_buf *out)
{
    long long from = query_ll(path, "startTime="), to = query_ll(path, "endTime=");
    char sym[32] = "";
    const char *s = strstr(path, "symbol=");
    if (s)
        snprintf(sym, sizeof sym, "%.*s", (int)strcspn(s + 7, "&"), s + 7);
    util_buf_puts(out, "[");
    bool first = true;
    for (size_t i = 0; i < x->ncandles; i++) {
        const features_candle *c = &x->candles[i];
        long long t = (long long)c->t * 1000;
        if (strcmp(sym, x->candles_symbol) != 0 || t < from || t > to)
            continue;
        util_buf_printf(out,
                        "%s[%lld,\"%.8f\",\"%.8f\",\"%.8f\",\"%.8f\",\"%.8f\",%lld,\"0\",1,\"0\","
                        "\"0\",\"0\"]",
                        first ? "" : ",", t, c->open, c->high, c->low, c->close, c->volume,
                        t + 59999);
        first = false;
    }
    util_buf_puts(out, "]");
}

static void serve_rest(xchg *x, int fd)
{
    char head[4096], path[1024] = "";
    if (read_head(fd, head, sizeof head) < 0 || sscanf(head, "GET %1023s", path) != 1)
        return;
    util_buf body;
    util_buf_init(&body);
    int status = 200;
    pthread_mutex_lock(&x->mu);
    if (!strcmp(path, "/api/v3/time")) {
        atomic_fetch_add(&x->n_time, 1);
        if (x->time_mode == TIME_OK)
            util_buf_printf(&body, "{\"serverTime\":%lld}", (long long)now_ms());
        else if (x->time_mode == TIME_NO_FIELD)
            util_buf_puts(&body, "{\"server\":\"soon\"}");
    } else if (!strncmp(path, "/api/v3/exchangeInfo", 20)) {
        atomic_fetch_add(&x->n_info, 1);
        snprintf(x->info_path, sizeof x->info_path, "%.511s", path);
        status = x->info_status;
        util_buf_puts(&body, x->info_body);
    } else if (!strncmp(path, "/api/v3/klines", 14)) {
        int k = atomic_fetch_add(&x->n_klines, 1);
        if (k < MAX_PATHS)
            snprintf(x->klines_paths[k], sizeof x->klines_paths[k], "%.255s", path);
        status = x->klines_status;
        if (k == x->klines_fail_at)
            status = 400, util_buf_puts(&body, "{\"code\":-1003,\"msg\":\"Too much request weight "
                                               "used; current limit is 6000 request weight per 1 "
                                               "MINUTE.\"}");
        else if (x->klines_body)
            util_buf_puts(&body, x->klines_body);
        else
            klines_rows(x, path, &body);
    } else {
        status = 404;
        util_buf_puts(&body, "{\"code\":-1000,\"msg\":\"no such path\"}");
    }
    pthread_mutex_unlock(&x->mu);
    answer(fd, status, body.data ? body.data : "");
    util_buf_cleanup(&body);
}

static int accept_one(xchg *x, int lfd)
{
    struct pollfd pfd = {.fd = lfd, .events = POLLIN};
    if (atomic_load(&x->stop) || poll(&pfd, 1, 50) != 1)
        return -1;
    int fd = accept(lfd, NULL, NULL);
    if (fd >= 0) {
        struct timeval tv = {.tv_sec = 5};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    return fd;
}

static void *rest_main(void *arg)
{
    xchg *x = arg;
    while (!atomic_load(&x->stop)) {
        int fd = accept_one(x, x->rest_fd);
        if (fd < 0)
            continue;
        serve_rest(x, fd);
        close(fd);
    }
    return NULL;
}

/* An unmasked server text frame. */
static void send_text(int fd, const char *msg)
{
    size_t len = strlen(msg);
    unsigned char h[4] = {0x81, 0, 0, 0};
    size_t hl = 2;
    if (len < 126) {
        h[1] = (unsigned char)len;
    } else {
        h[1] = 126;
        h[2] = (unsigned char)(len >> 8);
        h[3] = (unsigned char)len;
        hl = 4;
    }
    send_all(fd, h, hl);
    send_all(fd, msg, len);
}

static void serve_ws(xchg *x, int fd)
{
    char head[4096], path[512] = "";
    if (read_head(fd, head, sizeof head) < 0)
        return;
    (void)sscanf(head, "GET %511s", path);
    pthread_mutex_lock(&x->mu);
    snprintf(x->ws_path, sizeof x->ws_path, "%s", path);
    int mode = x->ws_mode;
    char msgs[4][512];
    size_t nmsgs = x->nmsgs;
    memcpy(msgs, x->ws_msgs, sizeof msgs);
    pthread_mutex_unlock(&x->mu);
    if (mode == WS_REFUSE) {
        answer(fd, 400, "");
        return;
    }
    const char *k = strcasestr(head, "Sec-WebSocket-Key:");
    if (!k)
        return;
    k += 18;
    while (*k == ' ')
        k++;
    char cat[128], accept[64];
    snprintf(cat, sizeof cat, "%.*s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", (int)strcspn(k, "\r\n"),
             k);
    unsigned char sha[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)cat, strlen(cat), sha);
    EVP_EncodeBlock((unsigned char *)accept, sha, sizeof sha);
    char resp[512];
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                     accept);
    send_all(fd, resp, (size_t)n);
    for (size_t i = 0; i < nmsgs; i++)
        send_text(fd, msgs[i]);
    /* hold the connection (discarding what the client sends) until the
     * client leaves, the test drops it or the exchange stops */
    while (!atomic_load(&x->stop) && !atomic_exchange(&x->ws_drop, false)) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 50) == 1) {
            unsigned char in[512];
            ssize_t got = recv(fd, in, sizeof in, 0);
            if (got <= 0)
                break;
            /* a masked ping frame with its 8-byte payload (never answered) */
            if (got >= 14 && (in[0] & 0x0f) == 0x9 && (in[1] & 0x80) && (in[1] & 0x7f) == 8) {
                char pl[9];
                for (int i = 0; i < 8; i++)
                    pl[i] = (char)(in[6 + i] ^ in[2 + (i & 3)]);
                pl[8] = '\0';
                if (!strcmp(pl, "predictd"))
                    atomic_fetch_add(&x->pings, 1);
            }
        }
    }
}

static void *ws_main(void *arg)
{
    xchg *x = arg;
    while (!atomic_load(&x->stop)) {
        int fd = accept_one(x, x->ws_fd);
        if (fd < 0)
            continue;
        atomic_fetch_add(&x->n_ws, 1);
        serve_ws(x, fd);
        close(fd);
    }
    return NULL;
}

static int listen_any(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 16) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &al) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

/* Starts both listeners; the exchange answers exchangeInfo with 200 and
 * info, /api/v3/time with its clock, klines with 200 and no rows, and
 * holds every stream connection. */
static bool xchg_start(xchg *x, const char *info)
{
    memset(x, 0, sizeof *x);
    pthread_mutex_init(&x->mu, NULL);
    x->info_status = 200;
    snprintf(x->info_body, sizeof x->info_body, "%s", info);
    x->klines_status = 200;
    x->klines_fail_at = -1;
    x->rest_fd = listen_any(&x->rest_port);
    x->ws_fd = listen_any(&x->ws_port);
    return x->rest_fd >= 0 && x->ws_fd >= 0 &&
           pthread_create(&x->rest_th, NULL, rest_main, x) == 0 &&
           pthread_create(&x->ws_th, NULL, ws_main, x) == 0;
}

static void xchg_stop(xchg *x)
{
    atomic_store(&x->stop, true);
    pthread_join(x->rest_th, NULL);
    pthread_join(x->ws_th, NULL);
    close(x->rest_fd);
    close(x->ws_fd);
    pthread_mutex_destroy(&x->mu);
}

/* ---------------------------------------------------------------------------
 * The connector under test.
 */
typedef struct run {
    feed_connector *c;
    feed_sink *sink;
} run;

static bool run_start(run *r, const xchg *x, int ws_port, const char *symbols, const char *db,
                      int renew_s)
{
    char ws[64], rest[64], why[256] = "";
    /* trailing slashes on the stream URL are not doubled into its path */
    snprintf(ws, sizeof ws, "ws://127.0.0.1:%d//", ws_port);
    snprintf(rest, sizeof rest, "http://127.0.0.1:%d/", x->rest_port);
    feed_binance_config cfg = {.ws_url = ws, .rest_url = rest, .database_url = db,
                               .renew_s = renew_s};
    memset(r, 0, sizeof *r);
    if (feed_binance_open(&cfg, symbols, &r->c, why, sizeof why) != 0) {
        printf("  open: %s\n", why);
        return false;
    }
    if (feed_sink_new("binance", "unit test", &r->sink) != 0 || r->c->start(r->c, r->sink) != 0)
        return false;
    return true;
}

static void run_stop(run *r)
{
    feed_connector_free(r->c);
    feed_sink_free(r->sink);
}

static feed_connector_status status_of(const run *r)
{
    feed_connector_status st;
    r->c->status(r->c, &st);
    return st;
}

/* Waits (at most secs) until the connector's last error contains want. */
static bool wait_error(const run *r, const char *want, int secs)
{
    for (int i = 0; i < secs * 50; i++) {
        feed_connector_status st = status_of(r);
        if (strstr(st.last_error, want))
            return true;
        sleep_ms(20);
    }
    printf("  last error \"%s\" lacks \"%s\"\n", status_of(r).last_error, want);
    return false;
}

static bool wait_count(atomic_int *v, int n, int secs)
{
    for (int i = 0; i < secs * 50 && atomic_load(v) < n; i++)
        sleep_ms(20);
    return atomic_load(v) >= n;
}

/* The value of a connector series (name{feed="binance"[,symbol="S"]}), -1
 * when absent. */
static double metric(const run *r, const char *name, const char *symbol)
{
    util_buf b;
    util_buf_init(&b);
    r->c->metrics(r->c, &b);
    char key[160];
    if (symbol)
        snprintf(key, sizeof key, "\n%s{feed=\"binance\",symbol=\"%s\"} ", name, symbol);
    else
        snprintf(key, sizeof key, "\n%s{feed=\"binance\"} ", name);
    const char *p = b.data ? strstr(b.data, key) : NULL;
    double v = p ? strtod(p + strlen(key), NULL) : -1;
    util_buf_cleanup(&b);
    return v;
}

static bool wait_metric(const run *r, const char *name, const char *symbol, double v, int secs)
{
    for (int i = 0; i < secs * 50; i++) {
        if (metric(r, name, symbol) == v)
            return true;
        sleep_ms(20);
    }
    printf("  %s{%s} is %g, not %g\n", name, symbol ? symbol : "", metric(r, name, symbol), v);
    return false;
}

static const char INFO_BTC[] =
    "{\"timezone\":\"UTC\",\"rateLimits\":[{\"rateLimitType\":\"REQUEST_WEIGHT\","
    "\"interval\":\"MINUTE\",\"intervalNum\":1,\"limit\":6000}],\"symbols\":[{\"symbol\":"
    "\"BTCUSDT\",\"status\":\"TRADING\",\"filters\":[{\"filterType\":\"PRICE_FILTER\","
    "\"minPrice\":\"0.01000000\",\"maxPrice\":\"1000000.00000000\",\"tickSize\":\"0.01000000\"}]}]}";

/* ---------------------------------------------------------------------------
 * Tests.
 */

/* An exchangeInfo answer the connector cannot use keeps the stream closed,
 * says why in the status, and is asked again with back-off; after three
 * failures in a row the feed is down. */
TEST(exchange_info_refusals_keep_the_stream_closed)
{
    static const struct {
        int status;
        const char *body, *want;
    } cases[] = {
        {400, "{\"code\":-1121,\"msg\":\"Invalid symbol.\"}", "Invalid symbol."},
        {200, "<html>down for maintenance</html>", "malformed JSON"},
        {200, "{\"symbols\":\"BTCUSDT\"}", "exchangeInfo lists none of the symbols"},
        /* fields of every wrong type: a symbol it did not ask for, one without
         * a status, names that are not strings, entries that are not objects,
         * rate limits that are not objects or not numbers */
        {200,
         "{\"rateLimits\":[7,{\"rateLimitType\":\"REQUEST_WEIGHT\",\"interval\":\"MINUTE\","
         "\"intervalNum\":\"1\",\"limit\":10},{\"rateLimitType\":\"ORDERS\",\"interval\":"
         "\"SECOND\",\"intervalNum\":10,\"limit\":50}],\"symbols\":[{\"symbol\":\"ETHUSDT\","
         "\"status\":\"TRADING\"},{\"symbol\":\"BTCUSDT\"},{\"symbol\":7,\"status\":\"TRADING\"},"
         "{\"status\":\"TRADING\"},\"BTCUSDT\",null]}",
         "exchangeInfo lists none of the symbols"},
    };
    xchg x;
    CHECK(xchg_start(&x, ""));
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        pthread_mutex_lock(&x.mu);
        x.info_status = cases[i].status;
        snprintf(x.info_body, sizeof x.info_body, "%s", cases[i].body);
        pthread_mutex_unlock(&x.mu);
        atomic_store(&x.n_info, 0);
        run r;
        if (!run_start(&r, &x, x.ws_port, "BTCUSDT", NULL, 0)) {
            UNIT_FAIL_("case %zu: the connector did not start", i);
            continue;
        }
        if (!wait_error(&r, cases[i].want, 10))
            UNIT_FAIL_("case %zu", i);
        CHECK(strncmp(status_of(&r).last_error, "exchangeInfo", 12) == 0);
        CHECK(status_of(&r).state != FEED_STATE_CONNECTED);
        if (i + 1 == sizeof cases / sizeof *cases) {
            /* asked again with back-off (0.5-1 s, then 1-2 s): down after 3 */
            CHECK(wait_count(&x.n_info, 3, 15));
            for (int k = 0; k < 250 && status_of(&r).state != FEED_STATE_DOWN; k++)
                sleep_ms(20);
            CHECK_EQ_INT(status_of(&r).state, FEED_STATE_DOWN);
        }
        run_stop(&r);
        CHECK_EQ_INT(atomic_load(&x.n_ws), 0); /* no stream without a listed symbol */
        CHECK_EQ_INT(atomic_load(&x.n_time), 0);
    }
    /* the symbols asked for, as the documented JSON array */
    CHECK_EQ_STR(x.info_path, "/api/v3/exchangeInfo?symbols=%5B%22BTCUSDT%22%5D");
    xchg_stop(&x);
}

/* Each stage after exchangeInfo failing: the stream refused or unreachable,
 * the server time missing, klines refused or malformed. Each failure is in
 * the status with its stage, the feed never says connected, and the
 * symbols are not asked again (exchangeInfo is kept for a day). */
TEST(stream_and_backfill_failures_are_reported_by_stage)
{
    CHECK_EQ_INT(store_init(NULL, NULL, false), 0); /* no database: nothing stored */
    xchg x;
    CHECK(xchg_start(&x, INFO_BTC));
    /* the upgrade refused */
    x.ws_mode = WS_REFUSE;
    run r;
    CHECK(run_start(&r, &x, x.ws_port, "BTCUSDT", NULL, 0));
    CHECK(wait_error(&r, "stream: upgrade refused: HTTP/1.1 400", 10));
    CHECK(wait_count(&x.n_ws, 2, 10)); /* tried again */
    run_stop(&r);
    CHECK_EQ_INT(atomic_load(&x.n_info), 1);
    CHECK_EQ_INT(atomic_load(&x.n_time), 0); /* no backfill without a stream */
    CHECK_EQ_STR(x.ws_path, "/stream?streams=btcusdt@trade");
    /* nothing listening on the stream's port */
    int closed_port = 0, fd = listen_any(&closed_port);
    close(fd);
    CHECK(run_start(&r, &x, closed_port, "BTCUSDT", NULL, 0));
    CHECK(wait_error(&r, "stream: cannot connect to 127.0.0.1", 10));
    run_stop(&r);
    /* the stream opens; the server time has no serverTime */
    pthread_mutex_lock(&x.mu);
    x.ws_mode = WS_HOLD;
    x.time_mode = TIME_NO_FIELD;
    pthread_mutex_unlock(&x.mu);
    int ws_before = atomic_load(&x.n_ws);
    CHECK(run_start(&r, &x, x.ws_port, "BTCUSDT", NULL, 0));
    CHECK(wait_error(&r, "server time: no serverTime in the answer", 10));
    CHECK(status_of(&r).state != FEED_STATE_CONNECTED);
    run_stop(&r);
    CHECK(atomic_load(&x.n_ws) > ws_before);
    /* an empty 200 answer */
    pthread_mutex_lock(&x.mu);
    x.time_mode = TIME_EMPTY;
    pthread_mutex_unlock(&x.mu);
    CHECK(run_start(&r, &x, x.ws_port, "BTCUSDT", NULL, 0));
    CHECK(wait_error(&r, "server time: /api/v3/time: malformed JSON", 10));
    run_stop(&r);
    CHECK_EQ_INT(atomic_load(&x.n_klines), 0);
    /* klines refused with Binance's error body */
    pthread_mutex_lock(&x.mu);
    x.time_mode = TIME_OK;
    x.klines_status = 400;
    x.klines_body = "{\"code\":-1121,\"msg\":\"Invalid symbol.\"}";
    pthread_mutex_unlock(&x.mu);
    CHECK(run_start(&r, &x, x.ws_port, "BTCUSDT", NULL, 0));
    CHECK(wait_error(&r, "BTCUSDT: klines: ", 10));
    CHECK(strstr(status_of(&r).last_error, "Invalid symbol.") != NULL);
    CHECK(status_of(&r).state != FEED_STATE_CONNECTED);
    run_stop(&r);
    /* klines with a malformed row */
    pthread_mutex_lock(&x.mu);
    x.klines_status = 200;
    x.klines_body = "[[1570752000000,\"0.1\",\"0.2\"]]";
    pthread_mutex_unlock(&x.mu);
    CHECK(run_start(&r, &x, x.ws_port, "BTCUSDT", NULL, 0));
    CHECK(wait_error(&r, "klines: row 0 is malformed", 10));
    run_stop(&r);
    /* nothing stored was ever asked for: the first klines page starts 1000
     * minutes back (no candles of the symbol) and ends before the current
     * minute */
    int64_t now = now_ms();
    long long start = query_ll(x.klines_paths[0], "startTime=");
    long long end = query_ll(x.klines_paths[0], "endTime=");
    CHECK(strstr(x.klines_paths[0], "/api/v3/klines?symbol=BTCUSDT&interval=1m&") != NULL);
    CHECK(end % MINUTE_MS == MINUTE_MS - 1 && end < now);
    CHECK_EQ_INT(end + 1 - start, 1000 * MINUTE_MS);
    xchg_stop(&x);
    store_shutdown();
}

/* A connection older than renew_s is closed and opened again (Binance ends
 * them at 24 h): a renewal, not a lost stream, with a backfill after it. */
TEST(old_stream_connection_is_renewed_not_counted_lost)
{
    CHECK_EQ_INT(store_init(NULL, NULL, false), 0);
    xchg x;
    CHECK(xchg_start(&x, INFO_BTC));
    run r;
    CHECK(run_start(&r, &x, x.ws_port, "BTCUSDT", NULL, 1));
    CHECK(wait_count(&x.n_ws, 3, 15));
    feed_connector_status st = status_of(&r);
    CHECK_EQ_INT(st.reconnects, 0);
    CHECK_EQ_STR(st.last_error, "");
    CHECK(metric(&r, "predictd_feed_reconnects_total", "BTCUSDT") == 0);
    run_stop(&r);
    CHECK_EQ_INT(atomic_load(&x.n_info), 1);
    CHECK(atomic_load(&x.n_time) >= 2); /* a backfill after each (re)connect */
    xchg_stop(&x);
    store_shutdown();
}

/* The whole way with PostgreSQL: exchangeInfo's tick and lot sizes stored
 * (a malformed tick is not), REST's closed minutes written as they are,
 * trades counted, malformed and foreign messages rejected and counted;
 * then the exchange drops the stream: a reconnect, counted, with a
 * backfill that does not fetch the stored minutes again. */
TEST(backfills_into_postgresql_streams_and_reconnects)
{
    UNIT_NEED_ENV(UNIT_DB_ENV);
    const char *db = unit_db_url();
    CHECK_EQ_INT(store_init(db, NULL, false), 0);
    CHECK_EQ_INT(store_migrate(unit_migrations_dir()), 0);
    char a[24], b[24], cc[24], al[24], bl[24], symbols[80];
    unsigned tag = (unsigned)getpid() % 1000000u;
    snprintf(a, sizeof a, "FWA%u", tag);
    snprintf(b, sizeof b, "FWB%u", tag);
    snprintf(al, sizeof al, "fwa%u", tag);
    snprintf(bl, sizeof bl, "fwb%u", tag);
    snprintf(cc, sizeof cc, "FWC%u", tag); /* not listed by the exchange */
    snprintf(symbols, sizeof symbols, "%s,%s,%s", a, cc, b);
    char info[2048];
    snprintf(info, sizeof info,
             "{\"timezone\":\"UTC\",\"serverTime\":1,\"rateLimits\":[{\"rateLimitType\":"
             "\"REQUEST_WEIGHT\",\"interval\":\"MINUTE\",\"intervalNum\":1,\"limit\":6000}],"
             "\"symbols\":[{\"symbol\":\"%s\",\"status\":\"TRADING\",\"filters\":["
             "{\"filterType\":\"PRICE_FILTER\",\"tickSize\":\"0.01000000\"},"
             "{\"filterType\":\"LOT_SIZE\",\"stepSize\":\"0.00100000\"},"
             "{\"filterType\":7},{\"filterType\":\"NOTIONAL\"}]},"
             "{\"symbol\":\"%s\",\"status\":\"BREAK\",\"filters\":["
             "{\"filterType\":\"PRICE_FILTER\",\"tickSize\":\"abc\"}]}]}",
             a, b);
    xchg x;
    CHECK(xchg_start(&x, info));
    int64_t cur = now_ms() / MINUTE_MS * MINUTE_MS;
    snprintf(x.candles_symbol, sizeof x.candles_symbol, "%s", a);
    for (int i = 0; i < 3; i++)
        x.candles[i] = (features_candle){.t = (cur - (3 - i) * MINUTE_MS) / 1000,
                                         .open = 100 + i,
                                         .high = 102.5 + i,
                                         .low = 99.25 + i,
                                         .close = 101 + i,
                                         .volume = 7.5 * (i + 1)};
    x.ncandles = 3;
    snprintf(x.ws_msgs[0], sizeof x.ws_msgs[0],
             "{\"stream\":\"%s@trade\",\"data\":{\"e\":\"trade\",\"E\":%lld,\"s\":\"%s\",\"t\":"
             "1001,\"p\":\"103.50\",\"q\":\"0.25\",\"T\":%lld,\"m\":false,\"M\":true}}",
             al, (long long)now_ms(), a, (long long)now_ms());
    snprintf(x.ws_msgs[1], sizeof x.ws_msgs[1], "{\"stream\":\"%s@trade\",\"data\":", al);
    snprintf(x.ws_msgs[2], sizeof x.ws_msgs[2],
             "{\"stream\":\"zzzusdt@trade\",\"data\":{\"e\":\"trade\",\"t\":5,\"p\":\"1\","
             "\"q\":\"1\",\"T\":%lld,\"m\":true}}",
             (long long)now_ms());
    x.nmsgs = 3;
    run r;
    CHECK(run_start(&r, &x, x.ws_port, symbols, db, 0));
    CHECK(wait_metric(&r, "predictd_feed_symbol_trades_total", a, 1, 15));
    CHECK(wait_metric(&r, "predictd_feed_unattributed_rejects_total", NULL, 2, 5));
    CHECK(metric(&r, "predictd_feed_rejected_messages_total", a) == 0);
    CHECK(metric(&r, "predictd_feed_backfilled_candles_total", a) == 3);
    CHECK(metric(&r, "predictd_feed_backfilled_candles_total", b) == 0);
    CHECK(metric(&r, "predictd_feed_backfilled_candles_total", cc) == 0);
    CHECK(metric(&r, "predictd_feed_last_trade_age_seconds", a) >= 0);
    CHECK(metric(&r, "predictd_feed_last_trade_age_seconds", b) == -1);
    int st = status_of(&r).state;
    CHECK(st == FEED_STATE_CONNECTED || st == FEED_STATE_LAGGING);
    char want_path[128];
    snprintf(want_path, sizeof want_path, "/stream?streams=%s@trade/%s@trade", al, bl);
    CHECK_EQ_STR(x.ws_path, want_path);
    /* REST's minutes, as the exchange gave them */
    features_candle *c = NULL;
    size_t n = 0;
    CHECK_EQ_INT(store_load_range(a, "1m", (cur - 10 * MINUTE_MS) / 1000, cur / 1000,
                                  util_now() + 86400, &c, &n),
                 0);
    CHECK_EQ_INT(n, 3);
    for (size_t i = 0; i < n && i < 3; i++) {
        CHECK_EQ_INT(c[i].t, x.candles[i].t);
        CHECK(c[i].open == x.candles[i].open && c[i].high == x.candles[i].high &&
              c[i].low == x.candles[i].low && c[i].close == x.candles[i].close &&
              c[i].volume == x.candles[i].volume);
    }
    free(c);
    /* the tick and lot sizes of the listed symbol; none for a malformed tick */
    store_markets *m = NULL;
    CHECK_EQ_INT(store_markets_open(db, &m), 0);
    store_market got;
    CHECK_EQ_INT(store_market_get(m, "binance", a, &got), 0);
    CHECK_EQ_STR(got.status, "TRADING");
    CHECK(got.tick_size == 0.01 && got.step_size == 0.001);
    CHECK_EQ_INT(store_market_get(m, "binance", b, &got), PD_ENOTFOUND);
    store_markets_close(m);
    /* the exchange drops the connection */
    int klines_before = atomic_load(&x.n_klines);
    atomic_store(&x.ws_drop, true);
    CHECK(wait_count(&x.n_ws, 2, 15));
    for (int i = 0; i < 500 && status_of(&r).reconnects < 1; i++)
        sleep_ms(20);
    CHECK_EQ_INT(status_of(&r).reconnects, 1);
    CHECK(strncmp(status_of(&r).last_error, "stream: ", 8) == 0);
    CHECK(wait_metric(&r, "predictd_feed_reconnects_total", a, 1, 5));
    CHECK(wait_metric(&r, "predictd_feed_symbol_trades_total", a, 2, 15)); /* sent again */
    run_stop(&r);
    CHECK_EQ_INT(atomic_load(&x.n_info), 1); /* exchangeInfo is not asked again */
    /* the unlisted symbol is neither streamed nor fetched */
    char ckey[40];
    snprintf(ckey, sizeof ckey, "symbol=%s&", cc);
    for (int i = 0; i < atomic_load(&x.n_klines) && i < MAX_PATHS; i++)
        CHECK(strstr(x.klines_paths[i], ckey) == NULL);
    /* the backfill after the reconnect starts after the stored minutes */
    char key[40];
    snprintf(key, sizeof key, "symbol=%s&", a);
    int nk = atomic_load(&x.n_klines);
    for (int i = klines_before; i < nk && i < MAX_PATHS; i++)
        if (strstr(x.klines_paths[i], key) && query_ll(x.klines_paths[i], "startTime=") < cur)
            UNIT_FAIL_("refetched stored minutes: %s", x.klines_paths[i]);
    /* the trade's minute is not closed yet: REST's 3 minutes are all there is */
    c = NULL;
    CHECK_EQ_INT(store_load_range(a, "1m", (cur - 10 * MINUTE_MS) / 1000, cur / 1000,
                                  util_now() + 86400, &c, &n),
                 0);
    CHECK_EQ_INT(n, 3);
    free(c);
    xchg_stop(&x);
    store_shutdown();
}

/* Starting twice or without a sink is refused; a database URL that does
 * not parse, or a database that is down, costs the stored tick sizes but
 * not the stream. */
TEST(stream_runs_without_the_exchange_symbols_table)
{
    CHECK_EQ_INT(store_init(NULL, NULL, false), 0);
    xchg x;
    CHECK(xchg_start(&x, INFO_BTC));
    snprintf(x.ws_msgs[0], sizeof x.ws_msgs[0],
             "{\"stream\":\"btcusdt@trade\",\"data\":{\"e\":\"trade\",\"t\":9,\"p\":"
             "\"37000.10\",\"q\":\"0.5\",\"T\":%lld,\"m\":true}}",
             (long long)now_ms());
    x.nmsgs = 1;
    static const char *dbs[] = {"host='unterminated",
                                "postgresql://127.0.0.1:9/none?connect_timeout=2"};
    for (int i = 0; i < 2; i++) {
        run r;
        CHECK(run_start(&r, &x, x.ws_port, "BTCUSDT", dbs[i], 0));
        CHECK_EQ_INT(r.c->start(r.c, r.sink), PD_EINVAL); /* started already */
        if (!wait_metric(&r, "predictd_feed_symbol_trades_total", "BTCUSDT", 1, 15))
            UNIT_FAIL_("database %s", dbs[i]);
        int st = status_of(&r).state;
        CHECK(st == FEED_STATE_CONNECTED || st == FEED_STATE_LAGGING);
        run_stop(&r);
    }
    CHECK_EQ_INT(atomic_load(&x.n_info), 2);
    feed_connector *c = NULL;
    char why[256];
    feed_binance_config cfg = {0};
    CHECK_EQ_INT(feed_binance_open(&cfg, "BTCUSDT", &c, why, sizeof why), 0);
    CHECK_EQ_INT(c->start(c, NULL), PD_EINVAL);
    feed_connector_free(c);
    xchg_stop(&x);
    store_shutdown();
}

/* 64 symbols of 20 characters do not fit one stream URL: the connector is
 * refused when it is made, saying so (not at its first connect, and never
 * a cut subscription): 64 make a URL over 1400 bytes, 40 one whose path
 * is over 1023; 32 fit and are accepted. */
TEST(stream_url_over_its_limit_is_refused_at_open)
{
    feed_binance_config cfg = {.ws_url = "ws://127.0.0.1:9/", .rest_url = "http://127.0.0.1:9/"};
    static const int counts[] = {64, 40, 32};
    for (size_t k = 0; k < 3; k++) {
        int count = counts[k];
        util_buf syms;
        util_buf_init(&syms);
        for (int i = 0; i < count; i++)
            util_buf_printf(&syms, "%sSYMBOLNUMBER%02dXXUSDT", i ? "," : "", i);
        feed_connector *c = NULL;
        char why[256] = "";
        int rc = feed_binance_open(&cfg, syms.data, &c, why, sizeof why);
        if (count > 32) {
            char want[64];
            snprintf(want, sizeof want, "stream URL of these %d symbols is too long", count);
            CHECK_EQ_INT(rc, PD_EINVAL);
            CHECK(c == NULL);
            CHECK(strstr(why, want) != NULL);
            CHECK(strstr(why, count == 64 ? "over 1400 bytes" : "URL path too long") != NULL);
            CHECK(strstr(why, "split them over two feeds") != NULL);
        } else {
            CHECK_EQ_INT(rc, 0);
            feed_connector_free(c);
        }
        util_buf_cleanup(&syms);
    }
}

/* PREDICTD_FEED's runner and the leader run the connector named by the
 * environment's URLs: without a database the leader ingests alone and
 * shows the connector's state, series and errors. */
TEST(runner_and_leader_run_the_binance_connector)
{
    CHECK_EQ_INT(store_init(NULL, NULL, false), 0);
    xchg x;
    CHECK(xchg_start(&x, INFO_BTC));
    char ws[64], rest[64], why[256] = "";
    snprintf(ws, sizeof ws, "ws://127.0.0.1:%d", x.ws_port);
    snprintf(rest, sizeof rest, "http://127.0.0.1:%d", x.rest_port);
    setenv("PREDICTD_BINANCE_WS_URL", ws, 1);
    setenv("PREDICTD_BINANCE_REST_URL", rest, 1);
    feed_runner *fr = NULL;
    CHECK_EQ_INT(feed_runner_start("binance:BTCUSDT", &fr, why, sizeof why), 0);
    CHECK(wait_count(&x.n_ws, 1, 10));
    feed_runner_stop(fr);
    fr = NULL;
    CHECK_EQ_INT(feed_runner_start("binance:BTCUSDT,btc", &fr, why, sizeof why), PD_ESYMBOL);
    CHECK(fr == NULL && strstr(why, "feed 'binance': ") == why);
    /* the leader: a database URL that does not parse means running alone */
    feed_leader *l = NULL;
    CHECK_EQ_INT(feed_leader_start("binance:ETHBTC", "host='unterminated", &l, why, sizeof why),
                 0);
    feed_leader_status ls;
    for (int i = 0; i < 500; i++) {
        feed_leader_status_get(l, &ls);
        if (strstr(ls.last_error, "exchangeInfo lists none of the symbols"))
            break;
        sleep_ms(20);
    }
    CHECK(strstr(ls.last_error, "exchangeInfo lists none of the symbols") != NULL);
    CHECK(!strcmp(ls.state, "connecting") || !strcmp(ls.state, "down"));
    CHECK_EQ_INT(ls.takeovers, 1);
    util_buf m;
    util_buf_init(&m);
    feed_leader_metrics(l, &m);
    CHECK(m.data && strstr(m.data, "predictd_feed_leader 1\n") != NULL);
    CHECK(m.data && strstr(m.data, "predictd_feed_symbol_trades_total{feed=\"binance\","
                                   "symbol=\"ETHBTC\"} 0\n") != NULL);
    util_buf_cleanup(&m);
    feed_leader_stop(l);
    CHECK_EQ_INT(feed_leader_start("binance:eth", NULL, &l, why, sizeof why), PD_ESYMBOL);
    unsetenv("PREDICTD_BINANCE_WS_URL");
    unsetenv("PREDICTD_BINANCE_REST_URL");
    xchg_stop(&x);
    store_shutdown();
}

/* A backfill cut short after a page was written keeps that page: the
 * next attempt starts after it, not from the beginning again. */
TEST(backfill_cut_short_resumes_after_the_written_page)
{
    UNIT_NEED_ENV(UNIT_DB_ENV);
    const char *db = unit_db_url();
    CHECK_EQ_INT(store_init(db, NULL, false), 0);
    CHECK_EQ_INT(store_migrate(unit_migrations_dir()), 0);
    char sym[24], info[512];
    snprintf(sym, sizeof sym, "FWD%u", (unsigned)getpid() % 1000000u);
    snprintf(info, sizeof info, "{\"symbols\":[{\"symbol\":\"%s\",\"status\":\"TRADING\"}]}", sym);
    xchg x;
    CHECK(xchg_start(&x, info));
    int64_t cur = now_ms() / MINUTE_MS * MINUTE_MS;
    snprintf(x.candles_symbol, sizeof x.candles_symbol, "%s", sym);
    for (int i = 0; i < 3; i++) /* ten to eight minutes ago: a page, then more to ask */
        x.candles[i] = (features_candle){.t = (cur - (10 - i) * MINUTE_MS) / 1000,
                                         .open = 5,
                                         .high = 6,
                                         .low = 4,
                                         .close = 5.5,
                                         .volume = 1};
    x.ncandles = 3;
    x.klines_fail_at = 1; /* the page after the first */
    run r;
    CHECK(run_start(&r, &x, x.ws_port, sym, db, 0));
    CHECK(wait_error(&r, "Too much request weight used", 10));
    CHECK(strstr(status_of(&r).last_error, "klines") != NULL);
    CHECK(wait_count(&x.n_klines, 3, 15)); /* the next attempt */
    for (int i = 0; i < 250 && status_of(&r).state != FEED_STATE_CONNECTED; i++)
        sleep_ms(20);
    CHECK_EQ_INT(status_of(&r).state, FEED_STATE_CONNECTED);
    CHECK(metric(&r, "predictd_feed_backfilled_candles_total", sym) == 3);
    run_stop(&r);
    CHECK_EQ_INT(query_ll(x.klines_paths[0], "startTime="), cur - 1000 * MINUTE_MS);
    CHECK_EQ_INT(query_ll(x.klines_paths[1], "startTime="), cur - 7 * MINUTE_MS);
    CHECK_EQ_INT(query_ll(x.klines_paths[2], "startTime="), cur - 7 * MINUTE_MS);
    features_candle *c = NULL;
    size_t n = 0;
    CHECK_EQ_INT(store_load_range(sym, "1m", (cur - 20 * MINUTE_MS) / 1000, cur / 1000,
                                  util_now() + 86400, &c, &n),
                 0);
    CHECK_EQ_INT(n, 3);
    free(c);
    xchg_stop(&x);
    store_shutdown();
}

/* Trades whose event time is 30 s behind the exchange's clock make the
 * feed "lagging"; a malformed event of a subscribed stream is counted
 * against its symbol, one of a stream that only shares a prefix with it
 * against none. */
TEST(lagging_stream_and_rejected_messages_are_told_apart)
{
    CHECK_EQ_INT(store_init(NULL, NULL, false), 0);
    xchg x;
    CHECK(xchg_start(&x, INFO_BTC));
    long long t = (long long)now_ms() - 30000;
    snprintf(x.ws_msgs[0], sizeof x.ws_msgs[0],
             "{\"stream\":\"btcusdt@trade\",\"data\":{\"e\":\"trade\",\"t\":9,\"p\":"
             "\"37000.10\",\"q\":\"0.5\",\"T\":%lld,\"m\":true}}",
             t);
    snprintf(x.ws_msgs[1], sizeof x.ws_msgs[1],
             "{\"stream\":\"btcusdt@trade\",\"data\":{\"e\":\"trade\",\"t\":10,\"p\":"
             "\"-1\",\"q\":\"0.5\",\"T\":%lld,\"m\":true}}",
             t);
    snprintf(x.ws_msgs[2], sizeof x.ws_msgs[2],
             "{\"stream\":\"btcusd@trade\",\"data\":{\"e\":\"trade\",\"t\":11,\"p\":"
             "\"1\",\"q\":\"0.5\",\"T\":%lld,\"m\":true}}",
             t);
    x.nmsgs = 3;
    run r;
    CHECK(run_start(&r, &x, x.ws_port, "BTCUSDT", NULL, 0));
    CHECK(wait_metric(&r, "predictd_feed_symbol_trades_total", "BTCUSDT", 1, 15));
    CHECK(wait_metric(&r, "predictd_feed_unattributed_rejects_total", NULL, 1, 5));
    CHECK(metric(&r, "predictd_feed_rejected_messages_total", "BTCUSDT") == 1);
    for (int i = 0; i < 250 && status_of(&r).state != FEED_STATE_LAGGING; i++)
        sleep_ms(20);
    CHECK_EQ_INT(status_of(&r).state, FEED_STATE_LAGGING);
    run_stop(&r);
    xchg_stop(&x);
    store_shutdown();
}

/* A stream that goes silent (no frame, no ping) is probed with a ping of
 * our own after 60 s; no answer within 30 s more and the connection is
 * taken as dead and opened again. (About 90 s: Binance's dead peers are
 * only found this way.) */
TEST(silent_stream_is_probed_then_dropped)
{
    CHECK_EQ_INT(store_init(NULL, NULL, false), 0);
    xchg x;
    CHECK(xchg_start(&x, INFO_BTC));
    run r;
    CHECK(run_start(&r, &x, x.ws_port, "BTCUSDT", NULL, 0));
    CHECK(wait_count(&x.n_ws, 1, 10));
    CHECK(wait_count(&x.pings, 1, 75));
    CHECK_EQ_INT(atomic_load(&x.n_ws), 1); /* the ping went over the first connection */
    CHECK(wait_error(&r, "stream: no frame for 90 s, nor a pong to our ping", 45));
    CHECK(wait_count(&x.n_ws, 2, 10)); /* and it was opened again */
    CHECK_EQ_INT(status_of(&r).reconnects, 1);
    run_stop(&r);
    xchg_stop(&x);
    store_shutdown();
}

int main(void)
{
    util_log_configure(UTIL_LOG_ERROR, false);
    RUN(exchange_info_refusals_keep_the_stream_closed);
    RUN(stream_and_backfill_failures_are_reported_by_stage);
    RUN(old_stream_connection_is_renewed_not_counted_lost);
    RUN(backfills_into_postgresql_streams_and_reconnects);
    RUN(backfill_cut_short_resumes_after_the_written_page);
    RUN(lagging_stream_and_rejected_messages_are_told_apart);
    RUN(stream_runs_without_the_exchange_symbols_table);
    RUN(stream_url_over_its_limit_is_refused_at_open);
    RUN(runner_and_leader_run_the_binance_connector);
    RUN(silent_stream_is_probed_then_dropped);
    return unit_report();
}
