/*
 * test_http_service.c: the HTTP service (api/) driven from C: its stream hub
 * and job list,
 * where publishing is a call rather than a burst of the inference loop: a
 * WebSocket or SSE client that stops reading is dropped once 256 messages
 * wait for it (the WebSocket one gets close code 1009, the event stream
 * ends), while a client that reads keeps getting its own; publish refuses
 * what it cannot route; the job list of /health/status refuses bad
 * registrations, replaces a job registered twice and holds at most
 * API_JOBS_MAX; prediction metrics keep 512 series by name and pool the
 * rest in one "_other" series; the listening host may be a bracketed IPv6
 * address, and a host name other than localhost fails the start. The real daemon on
 * loopback (port 0), real sockets; no database (the service answers
 * without one).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "api/http_internal.h"
#include "registry/registry.h"
#include "tests/unit/unit.h"
#include "util/util.h"

#define QUEUE_MAX 256 /* api/streams.c: messages a client may have waiting */
#define MSG_LEN 65536 /* one published message */

static registry *reg;
static predict_service *svc;
static api_context *ctx;
static api_http *http;
static int port;
static char dir[512]; /* an empty repository */

static api_options opt = {.listen_host = "127.0.0.1",
                          .listen_port = 0,
                          .threads = 2,
                          .max_connections = 64,
                          .per_ip_connections = 0,
                          .idle_timeout = 30,
                          .header_timeout = 10,
                          .stream_max = 8};

static bool start(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/predictd-unit-streams-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir) || registry_new(dir, &reg) != 0)
        return false;
    predict_options popt = {.cache = true};
    if (predict_service_new(&popt, reg, &svc) != 0)
        return false;
    if (api_context_new(&opt, svc, &ctx) != 0 || api_http_start(ctx, &http) != 0)
        return false;
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(http->daemon, MHD_DAEMON_INFO_BIND_PORT);
    port = di ? di->port : 0;
    return port > 0;
}

static void stop(void)
{
    api_http_stop(http, 1);
    api_context_free(ctx);
    predict_service_free(svc);
    registry_free(reg);
    (void)rmdir(dir);
}

/* A connection to the service; rcvbuf > 0 shrinks its receive buffer (a
 * client that reads slowly fills it at once). Reads time out after 30 s. */
static int dial_family(int family, int rcvbuf)
{
    int fd = socket(family, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    if (rcvbuf > 0)
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct timeval tv = {.tv_sec = 30};
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        a->sin6_addr = in6addr_loopback;
        len = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof *a;
    }
    if (connect(fd, (struct sockaddr *)&ss, len) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int dial(int rcvbuf)
{
    return dial_family(AF_INET, rcvbuf);
}

static bool send_all(int fd, const char *s)
{
    size_t n = strlen(s);
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w <= 0)
            return false;
        s += w;
        n -= (size_t)w;
    }
    return true;
}

/* Reads a response head (up to the blank line, byte by byte so nothing of
 * the body is consumed) into head; false on EOF or timeout. */
static bool read_head(int fd, char *head, size_t cap)
{
    size_t n = 0;
    while (n + 1 < cap) {
        if (read(fd, head + n, 1) != 1)
            return false;
        n++;
        head[n] = '\0';
        if (n >= 4 && memcmp(head + n - 4, "\r\n\r\n", 4) == 0)
            return true;
    }
    return false;
}

static bool read_n(int fd, void *buf, size_t n)
{
    uint8_t *p = buf;
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r <= 0)
            return false;
        p += r;
        n -= (size_t)r;
    }
    return true;
}

/* One server frame (unmasked): its opcode, and up to cap bytes of its
 * payload in out (*len: the whole payload's length). -1 on EOF/timeout. */
static int ws_frame(int fd, uint8_t *out, size_t cap, uint64_t *len)
{
    uint8_t h[2];
    if (!read_n(fd, h, 2))
        return -1;
    uint64_t n = h[1] & 0x7f;
    if (n == 126 || n == 127) {
        uint8_t e[8];
        size_t k = n == 126 ? 2 : 8;
        if (!read_n(fd, e, k))
            return -1;
        n = 0;
        for (size_t i = 0; i < k; i++)
            n = n << 8 | e[i];
    }
    *len = n;
    for (uint64_t got = 0; got < n;) {
        uint8_t tmp[4096];
        size_t want = n - got < sizeof tmp ? (size_t)(n - got) : sizeof tmp;
        if (!read_n(fd, tmp, want))
            return -1;
        if (got < cap)
            memcpy(out + got, tmp, got + want <= cap ? want : cap - got);
        got += want;
    }
    return h[0] & 0x0f;
}

static int ws_open(const char *query, int rcvbuf)
{
    int fd = dial(rcvbuf);
    if (fd < 0)
        return -1;
    char req[512], head[2048];
    snprintf(req, sizeof req,
             "GET /api/predictions/stream?%s HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
             "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
             "Sec-WebSocket-Version: 13\r\n\r\n",
             query);
    if (!send_all(fd, req) || !read_head(fd, head, sizeof head) ||
        strncmp(head, "HTTP/1.1 101", 12) != 0) {
        fprintf(stderr, "handshake: %.200s\n", head);
        close(fd);
        return -1;
    }
    return fd;
}

/* The largest a loopback connection's kernel buffers can grow (sender's
 * plus receiver's): what a client that reads nothing absorbs before the
 * service's queue for it starts to fill. */
static size_t socket_buffers(void)
{
    size_t total = 0;
    const char *files[] = {"/proc/sys/net/ipv4/tcp_wmem", "/proc/sys/net/ipv4/tcp_rmem"};
    for (int i = 0; i < 2; i++) {
        long lo = 0, def = 0, hi = 8L << 20;
        FILE *f = fopen(files[i], "r");
        if (f) {
            if (fscanf(f, "%ld %ld %ld", &lo, &def, &hi) != 3)
                hi = 8L << 20;
            fclose(f);
        }
        total += (size_t)hi;
    }
    return total;
}

static char *big_message(const char *symbol)
{
    char *m = malloc(MSG_LEN + 1);
    if (!m)
        return NULL;
    int k = snprintf(m, MSG_LEN, "{\"type\":\"prediction\",\"symbol\":\"%s\",\"pad\":\"", symbol);
    memset(m + k, 'x', MSG_LEN - (size_t)k - 2);
    memcpy(m + MSG_LEN - 2, "\"}", 3);
    return m;
}

/* Publishes BTCUSDT 15m messages until no client takes one (the slow one
 * was dropped); the number published before, or -1 past the bound. */
static long publish_until_dropped(const char *msg)
{
    long bound = (long)(socket_buffers() / MSG_LEN) + QUEUE_MAX + 64;
    for (long i = 0; i < bound; i++)
        if (api_streams_publish(ctx, "BTCUSDT", "15m", msg, MSG_LEN) == 0)
            return i;
    return -1;
}

/* Sends masked pings every 20 ms instead of a close frame; true once the
 * service has closed the connection (EOF or reset), false if it is still
 * open after 10 s. */
static bool peer_talking_is_cut(int fd)
{
    static const uint8_t ping[] = {0x89, 0x84, 1, 2, 3, 4, 'p' ^ 1, 'i' ^ 2, 'n' ^ 3, 'g' ^ 4};
    struct timeval tv = {.tv_usec = 20000};
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    for (int i = 0; i < 500; i++) {
        if (send(fd, ping, sizeof ping, MSG_NOSIGNAL) < 0)
            return true; /* reset: closed */
        uint8_t b[64];
        ssize_t r = read(fd, b, sizeof b);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
            return true;
    }
    return false;
}

TEST(a_websocket_client_that_stops_reading_is_dropped_and_the_others_are_not)
{
    CHECK(start());
    char *msg = big_message("BTCUSDT");
    CHECK(msg != NULL);
    int slow = ws_open("symbols=BTCUSDT&timeframes=15m", 4096);
    int other = ws_open("symbols=ETHUSDT&timeframes=15m", 0);
    CHECK(slow >= 0 && other >= 0);
    if (slow < 0 || other < 0 || !msg)
        return;
    /* both are in the hub once their upgrade ran: a publish reaches one */
    api_stream_stats st;
    for (int i = 0; i < 200; i++) {
        api_stream_stats_get(ctx, &st);
        if (st.clients == 2)
            break;
        usleep(10000);
    }
    CHECK_EQ_INT(st.clients, 2);
    long sent = publish_until_dropped(msg);
    CHECK(sent >= QUEUE_MAX); /* the queue held its 256 before dropping */
    api_stream_stats_get(ctx, &st);
    CHECK_EQ_INT(st.dropped, 1);
    /* dropped: it takes nothing more */
    CHECK_EQ_INT(api_streams_publish(ctx, "BTCUSDT", "15m", msg, MSG_LEN), 0);
    /* the client that reads gets its series' message */
    const char *eth = "{\"type\":\"prediction\",\"symbol\":\"ETHUSDT\",\"n\":1}";
    CHECK_EQ_INT(api_streams_publish(ctx, "ETHUSDT", "15m", eth, strlen(eth)), 1);
    uint8_t buf[256];
    uint64_t len = 0;
    bool got = false;
    for (int i = 0; i < 10 && !got; i++) {
        int op = ws_frame(other, buf, sizeof buf - 1, &len);
        CHECK(op >= 0);
        if (op < 0)
            break;
        buf[len < sizeof buf - 1 ? len : sizeof buf - 1] = '\0';
        got = op == 1 && strcmp((char *)buf, eth) == 0;
    }
    CHECK(got);
    /* the slow one, read at last: what the kernel held, then close 1009 */
    int op = 0;
    long frames = 0;
    while ((op = ws_frame(slow, buf, sizeof buf, &len)) == 1)
        frames++;
    CHECK_EQ_INT(op, 8);
    CHECK(len >= 2 && (buf[0] << 8 | buf[1]) == 1009);
    CHECK(frames < sent); /* some of what it was sent never reached it */
    /* a peer that never answers the close but keeps sending pings cannot
     * hold the connection: the service closes it after its close wait */
    CHECK(peer_talking_is_cut(slow));
    close(slow);
    close(other);
    free(msg);
    stop();
}

TEST(an_event_stream_client_that_stops_reading_is_ended)
{
    CHECK(start());
    char *msg = big_message("BTCUSDT");
    int fd = dial(4096);
    CHECK(fd >= 0 && msg != NULL);
    if (fd < 0 || !msg)
        return;
    char head[2048];
    CHECK(send_all(fd, "GET /api/predictions/events?symbols=BTCUSDT&timeframes=15m HTTP/1.1\r\n"
                       "Host: t\r\n\r\n"));
    CHECK(read_head(fd, head, sizeof head));
    CHECK(strncmp(head, "HTTP/1.1 200", 12) == 0);
    CHECK(strcasestr(head, "text/event-stream") != NULL);
    api_stream_stats st;
    for (int i = 0; i < 200; i++) {
        api_stream_stats_get(ctx, &st);
        if (st.clients == 1)
            break;
        usleep(10000);
    }
    CHECK_EQ_INT(st.clients, 1);
    long sent = publish_until_dropped(msg);
    CHECK(sent >= QUEUE_MAX);
    api_stream_stats_get(ctx, &st);
    CHECK_EQ_INT(st.dropped, 1);
    /* reading again: the events the kernel held, then the end of the
     * chunked body (the stream is over, not stalled) */
    char win[16] = ""; /* the last bytes read */
    char buf[65536];
    size_t total = 0, wn = 0;
    ssize_t r;
    bool ended = false;
    while (!ended && (r = read(fd, buf, sizeof buf)) > 0) {
        total += (size_t)r;
        for (ssize_t i = 0; i < r; i++) {
            if (wn == sizeof win - 1) {
                memmove(win, win + 1, wn - 1);
                wn--;
            }
            win[wn++] = buf[i];
        }
        win[wn] = '\0';
        /* the zero-length chunk (an event holds no CR) */
        ended = wn >= 7 && strcmp(win + wn - 7, "\r\n0\r\n\r\n") == 0;
    }
    if (!ended)
        fprintf(stderr, "stream tail after %zu bytes (read: %s): %s\n", total, strerror(errno),
                win);
    CHECK(ended);
    CHECK(total < (size_t)sent * MSG_LEN);
    for (int i = 0; i < 200; i++) { /* the client leaves the hub */
        api_stream_stats_get(ctx, &st);
        if (st.clients == 0)
            break;
        usleep(10000);
    }
    CHECK_EQ_INT(st.clients, 0);
    close(fd);
    free(msg);
    stop();
}

TEST(publish_refuses_what_it_cannot_route)
{
    CHECK(start());
    const char *m = "{}";
    api_stream_stats st;
    api_stream_stats_get(ctx, &st);
    uint64_t before = st.published;
    CHECK_EQ_INT(api_streams_publish(NULL, "BTCUSDT", "15m", m, 2), 0);
    CHECK_EQ_INT(api_streams_publish(ctx, NULL, "15m", m, 2), 0);
    CHECK_EQ_INT(api_streams_publish(ctx, "BTCUSDT", NULL, m, 2), 0);
    CHECK_EQ_INT(api_streams_publish(ctx, "BTCUSDT", "7m", m, 2), 0);
    CHECK_EQ_INT(api_streams_publish(ctx, "BTCUSDT", "15m", NULL, 0), 0);
    api_stream_stats_get(ctx, &st);
    CHECK_EQ_INT(st.published, before); /* refused: not counted */
    /* routable, with no client: counted as published, delivered to none */
    CHECK_EQ_INT(api_streams_publish(ctx, "BTCUSDT", "1d", m, 2), 0);
    api_stream_stats_get(ctx, &st);
    CHECK_EQ_INT(st.published, before + 1);
    CHECK_EQ_INT(st.delivered, 0);
    stop();
}

static void probe_a(void *arg, api_job_status *out)
{
    (void)arg;
    out->state = "first";
}

static void probe_b(void *arg, api_job_status *out)
{
    out->state = "second";
    out->runs = *(int *)arg;
}

/* GET path's whole answer (HTTP/1.0: the server closes after it). */
static size_t get_family(int family, const char *path, char *out, size_t cap)
{
    int fd = dial_family(family, 0);
    if (fd < 0)
        return 0;
    char req[256];
    snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: t\r\n\r\n", path);
    size_t n = 0;
    if (send_all(fd, req)) {
        ssize_t r;
        while (n + 1 < cap && (r = read(fd, out + n, cap - 1 - n)) > 0)
            n += (size_t)r;
    }
    out[n] = '\0';
    close(fd);
    return n;
}

static size_t get(const char *path, char *out, size_t cap)
{
    return get_family(AF_INET, path, out, cap);
}

TEST(the_job_list_refuses_bad_jobs_replaces_by_name_and_is_bounded)
{
    CHECK(start());
    int runs = 7;
    CHECK_EQ_INT(api_http_add_job(NULL, "j", probe_a, NULL), PD_EINVAL);
    CHECK_EQ_INT(api_http_add_job(http, NULL, probe_a, NULL), PD_EINVAL);
    CHECK_EQ_INT(api_http_add_job(http, "", probe_a, NULL), PD_EINVAL);
    CHECK_EQ_INT(api_http_add_job(http, "j", NULL, NULL), PD_EINVAL);
    char longname[64];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    CHECK_EQ_INT(api_http_add_job(http, longname, probe_a, NULL), PD_EINVAL);
    CHECK_EQ_INT(api_http_add_job(http, "alpha", probe_a, NULL), 0);
    CHECK_EQ_INT(api_http_add_job(http, "alpha", probe_b, &runs), 0); /* replaces */
    for (int i = 1; i < API_JOBS_MAX; i++) {
        char name[16];
        snprintf(name, sizeof name, "job%d", i);
        CHECK_EQ_INT(api_http_add_job(http, name, probe_a, NULL), 0);
    }
    CHECK_EQ_INT(api_http_add_job(http, "one_too_many", probe_a, NULL), PD_ETOOBIG);
    /* a name already there may still be replaced when the list is full */
    CHECK_EQ_INT(api_http_add_job(http, "job1", probe_b, &runs), 0);
    static char body[65536];
    CHECK(get("/health/status", body, sizeof body) > 0);
    CHECK(strncmp(body, "HTTP/1.0 200", 12) == 0 || strncmp(body, "HTTP/1.1 200", 12) == 0);
    const char *alpha = strstr(body, "{\"name\":\"alpha\",\"state\":\"second\"");
    CHECK(alpha != NULL);
    if (alpha)
        CHECK(strstr(alpha, "\"runs\":7") != NULL);
    CHECK(strstr(body, "{\"name\":\"job1\",\"state\":\"second\"") != NULL);
    CHECK(strstr(body, "first") != NULL);
    CHECK(strstr(body, "one_too_many") == NULL);
    /* alpha once, not twice */
    CHECK(alpha && strstr(alpha + 8, "\"name\":\"alpha\"") == NULL);
    api_http_set_metrics_hook(NULL, NULL, NULL); /* no service: nothing to do */
    stop();
}

/* The lines of text that start with prefix and contain needle (NULL: any). */
static int count_lines(const char *text, const char *prefix, const char *needle)
{
    int n = 0;
    size_t pl = strlen(prefix);
    for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        const char *e = strchr(l, '\n');
        size_t len = e ? (size_t)(e - l) : strlen(l);
        if (len >= pl && memcmp(l, prefix, pl) == 0 &&
            (!needle || memmem(l, len, needle, strlen(needle))))
            n++;
    }
    return n;
}

TEST(prediction_metrics_keep_at_most_512_series_and_pool_the_rest)
{
    CHECK(start());
    predict_result p;
    memset(&p, 0, sizeof p);
    snprintf(p.timeframe, sizeof p.timeframe, "1h");
    p.version = 1;
    p.direction = 2;
    for (int i = 0; i < 600; i++) {
        snprintf(p.symbol, sizeof p.symbol, "S%04d", i);
        api_metrics_prediction(http, &p, 0.001);
    }
    /* a series already counted is counted again in its own line, not pooled */
    snprintf(p.symbol, sizeof p.symbol, "S0007");
    api_metrics_prediction(http, &p, 0.001);
    /* not a direction, no result: not counted */
    p.direction = 3;
    api_metrics_prediction(http, &p, 0.001);
    p.direction = -1;
    api_metrics_prediction(http, &p, 0.001);
    api_metrics_prediction(http, NULL, 0.001);
    static char body[8 << 20];
    CHECK(get("/metrics", body, sizeof body) > 0);
    CHECK(strstr(body, " 200 ") != NULL);
    /* 512 series by name, then one pooled line for the 88 beyond them */
    CHECK_EQ_INT(count_lines(body, "predictd_predictions_total{symbol=\"S", NULL), 512);
    CHECK_EQ_INT(count_lines(body, "predictd_predictions_total{", "version=\"_other\""), 1);
    CHECK_EQ_INT(count_lines(body,
                             "predictd_predictions_total{symbol=\"_other\",timeframe=\"_other\"",
                             "version=\"_other\",direction=\"NO_TRADE\"} 88"),
                 1);
    CHECK_EQ_INT(count_lines(body, "predictd_predictions_total{symbol=\"S0007\"", "} 2"), 1);
    CHECK_EQ_INT(count_lines(body, "predictd_predictions_total{symbol=\"S0511\"", "} 1"), 1);
    CHECK_EQ_INT(count_lines(body, "predictd_predictions_total{symbol=\"S0512\"", NULL), 0);
    /* the latency histogram is bounded the same way */
    CHECK_EQ_INT(count_lines(body, "predictd_prediction_duration_seconds_count{", NULL), 513);
    stop();
}

TEST(listening_hosts)
{
    char body[4096];
    /* a bracketed IPv6 address (as in a URL) listens on that address */
    opt.listen_host = "[::1]";
    CHECK(start());
    CHECK(get_family(AF_INET6, "/health/live", body, sizeof body) > 0);
    CHECK(strstr(body, " 200 ") != NULL);
    stop();
    /* localhost is the IPv4 loopback */
    opt.listen_host = "localhost";
    CHECK(start());
    CHECK(get_family(AF_INET, "/health/live", body, sizeof body) > 0);
    CHECK(strstr(body, " 200 ") != NULL);
    stop();
    /* any other name is refused, before anything listens */
    opt.listen_host = "example.com";
    api_context *c = NULL;
    api_http *h = NULL;
    predict_service *s = NULL;
    predict_options popt = {.cache = true};
    CHECK_EQ_INT(predict_service_new(&popt, NULL, &s), 0);
    CHECK_EQ_INT(api_context_new(&opt, s, &c), 0);
    CHECK_EQ_INT(api_http_start(c, &h), PD_EINVAL);
    CHECK(h == NULL);
    api_context_free(c);
    predict_service_free(s);
    opt.listen_host = "127.0.0.1";
}

int main(void)
{
    RUN(a_websocket_client_that_stops_reading_is_dropped_and_the_others_are_not);
    RUN(an_event_stream_client_that_stops_reading_is_ended);
    RUN(publish_refuses_what_it_cannot_route);
    RUN(the_job_list_refuses_bad_jobs_replaces_by_name_and_is_bounded);
    RUN(prediction_metrics_keep_at_most_512_series_and_pool_the_rest);
    RUN(listening_hosts);
    return unit_report();
}
