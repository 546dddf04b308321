/*
 * test_feed_wire.c: the exchange wires of feed/ (ws.c, the RFC 6455 client;
 * rest.c, the REST client) against a scripted peer on loopback. Each test
 * starts a real TCP listener on 127.0.0.1 whose thread answers every
 * connection with the bytes the test scripts: frames split at every byte
 * boundary, fragments with control frames between them, close frames with
 * codes, oversized and masked frames, a peer that closes mid-frame; HTTP
 * 429/418 with Retry-After, 5xx, truncated and chunked bodies, the weight
 * header. The checks are on what the client returns and what it sent back.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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
#include "feed/net_internal.h"
#include "store/store.h"
#include "unit.h"
#include "util/util.h"

/* ---------------------------------------------------------------------------
 * The scripted peer.
 */
typedef void (*peer_fn)(int fd, int conn, void *arg);

typedef struct peer {
    int lfd;
    int port;
    int conns; /* connections to serve */
    peer_fn fn;
    void *arg;
    pthread_t th;
    int served;
} peer;

static void *peer_main(void *arg)
{
    peer *p = arg;
    for (int i = 0; i < p->conns; i++) {
        struct pollfd pfd = {.fd = p->lfd, .events = POLLIN};
        if (poll(&pfd, 1, 20000) != 1)
            break;
        int fd = accept(p->lfd, NULL, NULL);
        if (fd < 0)
            break;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct timeval tv = {.tv_sec = 20};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        p->fn(fd, i, p->arg);
        close(fd);
        p->served++;
    }
    return NULL;
}

static int peer_start(peer *p, int conns, peer_fn fn, void *arg)
{
    memset(p, 0, sizeof *p);
    p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (p->lfd < 0 || bind(p->lfd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(p->lfd, 16) != 0 || getsockname(p->lfd, (struct sockaddr *)&a, &al) != 0)
        return -1;
    p->port = ntohs(a.sin_port);
    p->conns = conns;
    p->fn = fn;
    p->arg = arg;
    return pthread_create(&p->th, NULL, peer_main, p) == 0 ? 0 : -1;
}

static void peer_join(peer *p)
{
    pthread_join(p->th, NULL);
    close(p->lfd);
}

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

/* Reads a request head (up to the blank line) into buf. Its length or -1. */
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

static bool recv_exact(int fd, void *buf, size_t n)
{
    unsigned char *b = buf;
    while (n > 0) {
        ssize_t r = recv(fd, b, n, 0);
        if (r <= 0)
            return false;
        b += r;
        n -= (size_t)r;
    }
    return true;
}

/* Reads the client's upgrade request and writes the right
 * Sec-WebSocket-Accept value for its key (RFC 6455 4.2.2) into accept[64].
 * false when the request or its key is missing. */
static bool ws_read_upgrade(int fd, char accept[64])
{
    char head[4096];
    if (read_head(fd, head, sizeof head) < 0)
        return false;
    const char *k = strcasestr(head, "Sec-WebSocket-Key:");
    if (!k)
        return false;
    k += 18;
    while (*k == ' ')
        k++;
    char cat[128];
    snprintf(cat, sizeof cat, "%.*s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", (int)strcspn(k, "\r\n"),
             k);
    unsigned char sha[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)cat, strlen(cat), sha);
    EVP_EncodeBlock((unsigned char *)accept, sha, sizeof sha);
    return true;
}

/* Answers a WebSocket upgrade; accept_override replaces the right
 * Sec-WebSocket-Accept (NULL: the right one; "": no header). */
static bool ws_upgrade(int fd, const char *accept_override)
{
    char accept[64];
    if (!ws_read_upgrade(fd, accept))
        return false;
    char resp[512];
    const char *acc = accept_override ? accept_override : accept;
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\n%s%s%s\r\n",
                     *acc ? "Sec-WebSocket-Accept: " : "", acc, *acc ? "\r\n" : "");
    send_all(fd, resp, (size_t)n);
    return true;
}

/* Answers the upgrade with the accept value between spaces and a tab, and
 * the header name in another case (both allowed by RFC 7230). */
static bool ws_upgrade_padded(int fd)
{
    char accept[64];
    if (!ws_read_upgrade(fd, accept))
        return false;
    char resp[512];
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nsec-websocket-accept: \t%s \t\r\n\r\n",
                     accept);
    send_all(fd, resp, (size_t)n);
    return true;
}

/* A server frame (unmasked unless mask) into out; its length. */
static size_t frame(unsigned char *out, bool fin, int op, const void *payload, size_t len,
                    bool mask)
{
    size_t h = 0;
    out[h++] = (unsigned char)((fin ? 0x80 : 0) | op);
    unsigned char m = mask ? 0x80 : 0;
    if (len < 126) {
        out[h++] = (unsigned char)(m | len);
    } else if (len <= 0xffff) {
        out[h++] = m | 126;
        out[h++] = (unsigned char)(len >> 8);
        out[h++] = (unsigned char)len;
    } else {
        out[h++] = m | 127;
        for (int i = 7; i >= 0; i--)
            out[h++] = (unsigned char)((uint64_t)len >> (8 * i));
    }
    const unsigned char key[4] = {0x11, 0x22, 0x33, 0x44};
    if (mask) {
        memcpy(out + h, key, 4);
        h += 4;
    }
    const unsigned char *p = payload;
    for (size_t i = 0; i < len; i++)
        out[h + i] = mask ? p[i] ^ key[i & 3] : p[i];
    return h + len;
}

/* Reads one client frame: checks it is masked, unmasks it. */
typedef struct client_frame {
    bool ok, masked, fin;
    int op;
    unsigned char payload[256];
    size_t len;
} client_frame;

static client_frame read_client_frame(int fd)
{
    client_frame f = {0};
    unsigned char h[2];
    if (!recv_exact(fd, h, 2))
        return f;
    f.fin = (h[0] & 0x80) != 0;
    f.op = h[0] & 0x0f;
    f.masked = (h[1] & 0x80) != 0;
    size_t len = h[1] & 0x7f;
    if (len >= 126 || !f.masked)
        return f;
    unsigned char key[4];
    if (!recv_exact(fd, key, 4) || !recv_exact(fd, f.payload, len))
        return f;
    for (size_t i = 0; i < len; i++)
        f.payload[i] ^= key[i & 3];
    f.len = len;
    f.ok = true;
    return f;
}

static char *ws_url(const peer *p, const char *scheme)
{
    static char url[128];
    snprintf(url, sizeof url, "%s://127.0.0.1:%d/stream?streams=btcusdt@trade", scheme, p->port);
    return url;
}

/* ---------------------------------------------------------------------------
 * WebSocket: data frames.
 */
static const char TRADE[] = "{\"stream\":\"btcusdt@trade\",\"data\":{\"e\":\"trade\",\"T\":"
                            "1700000000123,\"t\":42,\"p\":\"37000.10\",\"q\":\"0.5\",\"m\":true}}";

typedef struct split_script {
    unsigned char *big; /* a 70000-byte payload for the 64-bit length form */
    size_t big_len;
} split_script;

static void serve_split(int fd, int conn, void *arg)
{
    (void)conn;
    split_script *s = arg;
    if (!ws_upgrade(fd, NULL))
        return;
    unsigned char f[512];
    size_t n = frame(f, true, FEED__WS_TEXT, TRADE, strlen(TRADE), false);
    /* the same frame split at every byte boundary */
    for (size_t k = 1; k < n; k++) {
        send_all(fd, f, k);
        sleep_ms(1);
        send_all(fd, f + k, n - k);
    }
    /* a 16-bit length frame, one byte per segment */
    char mid[300];
    memset(mid, 'x', sizeof mid);
    n = frame(f, true, FEED__WS_BINARY, mid, sizeof mid, false);
    for (size_t i = 0; i < n; i++) {
        send_all(fd, f + i, 1);
        if (i < 12)
            sleep_ms(1);
    }
    /* a 64-bit length frame, then two frames in one segment */
    unsigned char *g = malloc(s->big_len + 16);
    n = frame(g, true, FEED__WS_TEXT, s->big, s->big_len, false);
    send_all(fd, g, n);
    free(g);
    size_t a = frame(f, true, FEED__WS_TEXT, "one", 3, false);
    a += frame(f + a, true, FEED__WS_TEXT, "two", 3, false);
    send_all(fd, f, a);
    /* wait for the client's close */
    client_frame c = read_client_frame(fd);
    (void)c;
}

TEST(ws_frames_split_at_every_byte_boundary)
{
    split_script s = {.big_len = 70000};
    s.big = malloc(s.big_len);
    for (size_t i = 0; i < s.big_len; i++)
        s.big[i] = (unsigned char)('a' + i % 26);
    peer p;
    CHECK_EQ_INT(peer_start(&p, 1, serve_split, &s), 0);
    feed__ws *w = NULL;
    char why[256] = "";
    CHECK_EQ_INT(feed__ws_connect(ws_url(&p, "ws"), 5000, &w, why, sizeof why), 0);
    if (!w) {
        printf("  %s\n", why);
        return;
    }
    unsigned char f[512];
    size_t n = frame(f, true, FEED__WS_TEXT, TRADE, strlen(TRADE), false);
    const char *msg;
    size_t len;
    int whole = 0;
    for (size_t k = 1; k < n; k++) {
        int r = feed__ws_read(w, 10000, &msg, &len, why, sizeof why);
        if (r == 1 && len == strlen(TRADE) && memcmp(msg, TRADE, len) == 0)
            whole++;
        else
            printf("  split at %zu: rc %d %s\n", k, r, why);
    }
    CHECK_EQ_INT(whole, (int)(n - 1));
    /* the message is a C string too */
    CHECK_EQ_INT(feed__ws_read(w, 10000, &msg, &len, why, sizeof why), 1);
    CHECK_EQ_INT(len, 300);
    CHECK(msg[0] == 'x' && msg[299] == 'x' && msg[300] == '\0');
    CHECK_EQ_INT(feed__ws_read(w, 10000, &msg, &len, why, sizeof why), 1);
    CHECK_EQ_INT(len, s.big_len);
    CHECK(len == s.big_len && memcmp(msg, s.big, len) == 0);
    CHECK_EQ_INT(feed__ws_read(w, 10000, &msg, &len, why, sizeof why), 1);
    CHECK(len == 3 && !strcmp(msg, "one"));
    CHECK_EQ_INT(feed__ws_read(w, 10000, &msg, &len, why, sizeof why), 1);
    CHECK(len == 3 && !strcmp(msg, "two"));
    feed__ws_stats st;
    feed__ws_stats_get(w, &st);
    CHECK_EQ_INT(st.pings, 0);
    feed__ws_close(w);
    peer_join(&p);
    CHECK_EQ_INT(p.served, 1);
    free(s.big);
}

/* Fragments with a ping and a pong between them; the client must answer the
 * ping with a masked pong carrying its payload, and join the fragments. */
typedef struct frag_script {
    client_frame pong, close;
} frag_script;

static void serve_fragments(int fd, int conn, void *arg)
{
    (void)conn;
    frag_script *s = arg;
    if (!ws_upgrade(fd, NULL))
        return;
    unsigned char f[256];
    size_t n = 0;
    n += frame(f + n, false, FEED__WS_TEXT, "hello ", 6, false);
    n += frame(f + n, true, FEED__WS_PING, "abc", 3, false);
    n += frame(f + n, false, 0, "wor", 3, false);
    n += frame(f + n, true, FEED__WS_PONG, "x", 1, false);
    n += frame(f + n, true, 0, "ld", 2, false);
    send_all(fd, f, n);
    s->pong = read_client_frame(fd);
    s->close = read_client_frame(fd);
}

TEST(ws_fragments_joined_and_pings_answered)
{
    frag_script s = {0};
    peer p;
    CHECK_EQ_INT(peer_start(&p, 1, serve_fragments, &s), 0);
    feed__ws *w = NULL;
    char why[256] = "";
    CHECK_EQ_INT(feed__ws_connect(ws_url(&p, "ws"), 5000, &w, why, sizeof why), 0);
    const char *msg = NULL;
    size_t len = 0;
    CHECK_EQ_INT(feed__ws_read(w, 10000, &msg, &len, why, sizeof why), 1);
    CHECK(msg && len == 11 && !strcmp(msg, "hello world"));
    feed__ws_stats st;
    feed__ws_stats_get(w, &st);
    CHECK_EQ_INT(st.pings, 1);
    CHECK_EQ_INT(st.pongs, 1);
    feed__ws_close(w); /* sends close 1000 */
    peer_join(&p);
    CHECK(s.pong.ok && s.pong.masked && s.pong.fin);
    CHECK_EQ_INT(s.pong.op, FEED__WS_PONG);
    CHECK(s.pong.len == 3 && memcmp(s.pong.payload, "abc", 3) == 0);
    CHECK(s.close.ok);
    CHECK_EQ_INT(s.close.op, FEED__WS_CLOSE);
    CHECK(s.close.len == 2 && s.close.payload[0] == 0x03 && s.close.payload[1] == 0xe8);
    feed__ws_stats_get(NULL, &st);
    CHECK_EQ_INT(st.pings, 0);
}

/* ---------------------------------------------------------------------------
 * WebSocket: close frames, protocol errors, oversized frames.
 */
typedef struct bytes_script {
    const unsigned char *bytes[4]; /* per connection: bytes after the upgrade */
    size_t len[4];
    bool close_after[4]; /* close the socket right after the bytes */
    client_frame reply[4];
} bytes_script;

static void serve_bytes(int fd, int conn, void *arg)
{
    bytes_script *s = arg;
    if (!ws_upgrade(fd, NULL))
        return;
    send_all(fd, s->bytes[conn], s->len[conn]);
    if (s->close_after[conn])
        return;
    s->reply[conn] = read_client_frame(fd);
}

TEST(ws_close_frames_end_the_stream_with_their_code)
{
    unsigned char a[64], b[8];
    unsigned char pl[32] = {0x03, 0xe9};
    memcpy(pl + 2, "going away", 10);
    bytes_script s = {.bytes = {a, b}};
    s.len[0] = frame(a, true, FEED__WS_CLOSE, pl, 12, false);
    s.len[1] = frame(b, true, FEED__WS_CLOSE, "", 0, false);
    peer p;
    CHECK_EQ_INT(peer_start(&p, 2, serve_bytes, &s), 0);
    for (int i = 0; i < 2; i++) {
        feed__ws *w = NULL;
        char why[256] = "";
        CHECK_EQ_INT(feed__ws_connect(ws_url(&p, "ws"), 5000, &w, why, sizeof why), 0);
        const char *msg;
        size_t len;
        CHECK_EQ_INT(feed__ws_read(w, 10000, &msg, &len, why, sizeof why), PD_EIO);
        CHECK(strstr(why, i == 0 ? "code 1001: going away" : "code 1005") != NULL);
        /* the connection is over: reads and sends refuse */
        CHECK_EQ_INT(feed__ws_read(w, 10, &msg, &len, why, sizeof why), PD_EIO);
        CHECK(strstr(why, "connection closed") != NULL);
        CHECK_EQ_INT(feed__ws_send(w, FEED__WS_TEXT, "x", 1), PD_EIO);
        feed__ws_close(w);
    }
    peer_join(&p);
    /* the close was answered, echoing the code (none for an empty close) */
    CHECK(s.reply[0].ok && s.reply[0].op == FEED__WS_CLOSE && s.reply[0].len == 2);
    CHECK(s.reply[0].payload[0] == 0x03 && s.reply[0].payload[1] == 0xe9);
    CHECK(s.reply[1].ok && s.reply[1].op == FEED__WS_CLOSE && s.reply[1].len == 0);
}

static void expect_protocol_error(const unsigned char *bytes, size_t n, bool close_after, int rc,
                                  const char *why_has)
{
    bytes_script s = {.bytes = {bytes}, .len = {n}, .close_after = {close_after}};
    peer p;
    CHECK_EQ_INT(peer_start(&p, 1, serve_bytes, &s), 0);
    feed__ws *w = NULL;
    char why[256] = "";
    CHECK_EQ_INT(feed__ws_connect(ws_url(&p, "ws"), 5000, &w, why, sizeof why), 0);
    const char *msg = NULL;
    size_t len = 0;
    int r = 1;
    /* a message may come before the error; the error must come */
    for (int i = 0; i < 4 && r == 1; i++)
        r = feed__ws_read(w, 10000, &msg, &len, why, sizeof why);
    CHECK_EQ_INT(r, rc);
    if (!strstr(why, why_has))
        UNIT_FAIL_("why \"%s\" lacks \"%s\"", why, why_has);
    CHECK_EQ_INT(feed__ws_read(w, 10, &msg, &len, why, sizeof why), PD_EIO);
    feed__ws_close(w); /* no close frame on a broken connection */
    peer_join(&p);
    if (!close_after)
        CHECK(!s.reply[0].ok); /* the peer saw the socket close, no frame */
}

TEST(ws_protocol_errors_close_the_connection)
{
    unsigned char f[256];
    size_t n;
    /* reserved bits without a negotiated extension */
    n = frame(f, true, FEED__WS_TEXT, "hi", 2, false);
    f[0] |= 0x40;
    expect_protocol_error(f, n, false, PD_EIO, "reserved bits");
    /* an opcode RFC 6455 does not define */
    n = frame(f, true, 3, "hi", 2, false);
    expect_protocol_error(f, n, false, PD_EIO, "unknown opcode 3");
    /* a fragmented ping */
    n = frame(f, false, FEED__WS_PING, "hi", 2, false);
    expect_protocol_error(f, n, false, PD_EIO, "malformed control frame");
    /* a ping over 125 bytes */
    char big[130];
    memset(big, 'p', sizeof big);
    n = frame(f, true, FEED__WS_PING, big, sizeof big, false);
    expect_protocol_error(f, n, false, PD_EIO, "malformed control frame");
    /* a continuation with no message begun */
    n = frame(f, true, 0, "hi", 2, false);
    expect_protocol_error(f, n, false, PD_EIO, "continuation frame without a message");
    /* a new message inside a fragmented one */
    n = frame(f, false, FEED__WS_TEXT, "a", 1, false);
    n += frame(f + n, true, FEED__WS_TEXT, "b", 1, false);
    expect_protocol_error(f, n, false, PD_EIO, "new message inside a fragmented one");
    /* a masked frame from the server (RFC 6455 5.1), after a good one */
    n = frame(f, true, FEED__WS_TEXT, "ok", 2, false);
    n += frame(f + n, true, FEED__WS_TEXT, TRADE, strlen(TRADE), true);
    expect_protocol_error(f, n, false, PD_EIO, "masked frame");
    /* a frame header announcing 5 MiB: refused before any payload */
    n = 0;
    f[n++] = 0x81;
    f[n++] = 127;
    for (int i = 7; i >= 0; i--)
        f[n++] = (unsigned char)((uint64_t)(5u << 20) >> (8 * i));
    expect_protocol_error(f, n, false, PD_ETOOBIG, "frame of 5242880 bytes");
    /* the server closes mid-frame (header says 100 bytes, 10 come) */
    n = frame(f, true, FEED__WS_TEXT, big, 100, false);
    expect_protocol_error(f, 12, true, PD_EIO, "the server closed the connection");
    /* the server closes between frames */
    n = frame(f, true, FEED__WS_TEXT, "last", 4, false);
    expect_protocol_error(f, n, true, PD_EIO, "the server closed the connection");
}

/* Fragments that add up to more than 4 MiB end the connection. */
TEST(ws_fragmented_message_over_the_limit_is_refused)
{
    size_t part = 3u << 20;
    unsigned char *payload = malloc(part);
    unsigned char *f = malloc(2 * part + 64);
    memset(payload, 'z', part);
    size_t n = frame(f, false, FEED__WS_TEXT, payload, part, false);
    n += frame(f + n, true, 0, payload, part, false);
    expect_protocol_error(f, n, true, PD_ETOOBIG, "message over 4194304 bytes");
    free(payload);
    free(f);
}

/* Nothing to read is a timeout (0), not an error; the next frame then comes. */
typedef struct slow_script {
    atomic_int go;
} slow_script;

static void serve_slow(int fd, int conn, void *arg)
{
    (void)conn;
    slow_script *s = arg;
    if (!ws_upgrade(fd, NULL))
        return;
    for (int i = 0; i < 2000 && !atomic_load(&s->go); i++)
        sleep_ms(5);
    unsigned char f[64];
    size_t n = frame(f, true, FEED__WS_TEXT, "late", 4, false);
    send_all(fd, f, n);
    (void)read_client_frame(fd);
}

TEST(ws_read_times_out_then_reads)
{
    slow_script s = {0};
    peer p;
    CHECK_EQ_INT(peer_start(&p, 1, serve_slow, &s), 0);
    feed__ws *w = NULL;
    char why[256] = "";
    CHECK_EQ_INT(feed__ws_connect(ws_url(&p, "ws"), 5000, &w, why, sizeof why), 0);
    const char *msg = NULL;
    size_t len = 0;
    CHECK_EQ_INT(feed__ws_read(w, 20, &msg, &len, why, sizeof why), 0);
    CHECK_EQ_INT(feed__ws_read(w, 0, &msg, &len, why, sizeof why), 0);
    atomic_store(&s.go, 1);
    CHECK_EQ_INT(feed__ws_read(w, 10000, &msg, &len, why, sizeof why), 1);
    CHECK(len == 4 && !strcmp(msg, "late"));
    feed__ws_close(w);
    peer_join(&p);
}

/* ---------------------------------------------------------------------------
 * WebSocket: the opening handshake.
 */
typedef struct hs_script {
    int mode[8];
} hs_script;

enum { HS_400, HS_BAD_ACCEPT, HS_NO_ACCEPT, HS_SILENT, HS_ENDLESS, HS_HANGUP, HS_NOT_TLS };

static void serve_handshake(int fd, int conn, void *arg)
{
    hs_script *s = arg;
    char head[4096];
    switch (s->mode[conn]) {
    case HS_400:
        if (read_head(fd, head, sizeof head) > 0) {
            const char r[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
            send_all(fd, r, sizeof r - 1);
        }
        break;
    case HS_BAD_ACCEPT:
        ws_upgrade(fd, "dGhlIHNhbXBsZSBub25jZQ==");
        break;
    case HS_NO_ACCEPT:
        ws_upgrade(fd, "");
        break;
    case HS_SILENT: /* reads the request, answers nothing until the client leaves */
        if (read_head(fd, head, sizeof head) > 0)
            (void)recv(fd, head, sizeof head, 0);
        break;
    case HS_ENDLESS: /* a response head that never ends */
        if (read_head(fd, head, sizeof head) > 0) {
            const char r[] = "HTTP/1.1 101 Switching Protocols\r\n";
            send_all(fd, r, sizeof r - 1);
            char line[1024];
            memset(line, 'h', sizeof line - 2);
            memcpy(line, "X-Pad: ", 7);
            line[sizeof line - 2] = '\r';
            line[sizeof line - 1] = '\n';
            for (int i = 0; i < 40; i++)
                send_all(fd, line, sizeof line);
        }
        break;
    case HS_HANGUP:
        (void)read_head(fd, head, sizeof head);
        break;
    case HS_NOT_TLS: { /* a plain-HTTP server where wss:// expected TLS */
        (void)recv(fd, head, sizeof head, 0);
        const char r[] = "HTTP/1.1 400 Bad Request\r\n\r\nThis is a plain HTTP port\n";
        send_all(fd, r, sizeof r - 1);
        break;
    }
    }
}

TEST(ws_handshake_refusals)
{
    hs_script s = {.mode = {HS_400, HS_BAD_ACCEPT, HS_NO_ACCEPT, HS_SILENT, HS_ENDLESS, HS_HANGUP,
                            HS_NOT_TLS}};
    const char *want[] = {"upgrade refused: HTTP/1.1 400 Bad Request",
                          "Sec-WebSocket-Accept",
                          "Sec-WebSocket-Accept",
                          "no upgrade response within 300 ms",
                          "upgrade response head too long",
                          "the server closed the connection",
                          "TLS handshake"};
    peer p;
    CHECK_EQ_INT(peer_start(&p, 7, serve_handshake, &s), 0);
    for (int i = 0; i < 7; i++) {
        feed__ws *w = NULL;
        char why[256] = "";
        int rc =
            feed__ws_connect(ws_url(&p, i == HS_NOT_TLS ? "wss" : "ws"), 300, &w, why, sizeof why);
        CHECK_EQ_INT(rc, PD_EIO);
        CHECK(w == NULL);
        if (!strstr(why, want[i]))
            UNIT_FAIL_("case %d: why \"%s\" lacks \"%s\"", i, why, want[i]);
    }
    peer_join(&p);
    /* URLs a stream cannot use */
    feed__ws *w = NULL;
    char why[256] = "";
    CHECK_EQ_INT(feed__ws_connect("http://127.0.0.1:1/", 300, &w, why, sizeof why), PD_EINVAL);
    CHECK(strstr(why, "ws:// or wss://") != NULL);
    CHECK_EQ_INT(feed__ws_connect("ws://127.0.0.1:1/#frag", 300, &w, why, sizeof why), PD_EINVAL);
    CHECK_EQ_INT(feed__ws_connect("ws://no-such-host.invalid/", 300, &w, why, sizeof why), PD_EIO);
    CHECK(strstr(why, "cannot resolve") != NULL);
    CHECK(w == NULL);
    feed__ws_close(NULL);
    CHECK_EQ_INT(feed__ws_send(NULL, FEED__WS_TEXT, "x", 1), PD_EIO);
    const char *msg;
    size_t len;
    CHECK_EQ_INT(feed__ws_read(NULL, 10, &msg, &len, why, sizeof why), PD_EIO);
}

/* A server whose accept queue is full never answers the SYN: the connect
 * gives up at the caller's timeout with the reason. A name with several
 * addresses (localhost) is tried address by address. */
TEST(ws_connect_times_out_and_tries_every_address)
{
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    CHECK(lfd >= 0 && bind(lfd, (struct sockaddr *)&a, sizeof a) == 0 && listen(lfd, 0) == 0 &&
          getsockname(lfd, (struct sockaddr *)&a, &al) == 0);
    /* fill the accept queue (never accepted) */
    int fill[4];
    for (int i = 0; i < 4; i++) {
        fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        (void)connect(fill[i], (struct sockaddr *)&a, sizeof a);
    }
    sleep_ms(100);
    char url[128], why[256] = "";
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/stream", ntohs(a.sin_port));
    feed__ws *w = NULL;
    CHECK_EQ_INT(feed__ws_connect(url, 300, &w, why, sizeof why), PD_EIO);
    CHECK(w == NULL);
    if (!strstr(why, "Connection timed out"))
        UNIT_FAIL_("why \"%s\"", why);
    for (int i = 0; i < 4; i++)
        close(fill[i]);
    close(lfd);
    /* nothing listens on any address of localhost at a port just freed */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    a.sin_port = 0;
    al = sizeof a;
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
          getsockname(fd, (struct sockaddr *)&a, &al) == 0);
    close(fd);
    snprintf(url, sizeof url, "ws://localhost:%d/stream", ntohs(a.sin_port));
    CHECK_EQ_INT(feed__ws_connect(url, 300, &w, why, sizeof why), PD_EIO);
    CHECK(strstr(why, "cannot connect to localhost:") != NULL);
    CHECK(strstr(why, "Connection refused") != NULL);
}

/* ---------------------------------------------------------------------------
 * REST.
 */
typedef struct http_script {
    const char *resp[8]; /* per connection; NULL: close without answering */
    size_t resp_len[8];  /* 0: strlen */
    char path[8][256];   /* request line per connection */
} http_script;

static void serve_http(int fd, int conn, void *arg)
{
    http_script *s = arg;
    char head[4096];
    if (read_head(fd, head, sizeof head) < 0)
        return;
    snprintf(s->path[conn], sizeof s->path[conn], "%.*s", (int)strcspn(head, "\r\n"), head);
    if (!s->resp[conn])
        return;
    size_t n = s->resp_len[conn] ? s->resp_len[conn] : strlen(s->resp[conn]);
    send_all(fd, s->resp[conn], n);
}

static feed__rest *rest_for(const peer *p, const atomic_bool *stop, int attempts)
{
    char base[128], why[256] = "";
    snprintf(base, sizeof base, "http://127.0.0.1:%d/", p->port);
    feed__rest *r = NULL;
    if (feed__rest_new(base, stop, attempts, &r, why, sizeof why) != 0)
        printf("  rest_new: %s\n", why);
    return r;
}

#define OK_EMPTY                                                                                   \
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-MBX-USED-WEIGHT-1M: 12\r\n"            \
    "Content-Length: 2\r\nConnection: close\r\n\r\n[]"

TEST(rest_rate_limits_are_waited_out)
{
    http_script s = {.resp = {"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 0\r\n"
                              "Content-Length: 49\r\nConnection: close\r\n\r\n"
                              "{\"code\":-1003,\"msg\":\"Too many requests; slow\"}   ",
                              "HTTP/1.1 418 I'm a teapot\r\nretry-after: 0\r\n"
                              "Content-Length: 0\r\nConnection: close\r\n\r\n",
                              OK_EMPTY}};
    peer p;
    CHECK_EQ_INT(peer_start(&p, 3, serve_http, &s), 0);
    feed__rest *r = rest_for(&p, NULL, 1); /* rate limits do not count as attempts */
    util_buf body = {0};
    util_buf_append(&body, "keep:", 5);
    char why[256] = "";
    CHECK_EQ_INT(feed__rest_get(r, "/api/v3/klines?symbol=BTCUSDT", &body, why, sizeof why), 0);
    CHECK(body.len == 7 && memcmp(body.data, "keep:[]", 7) == 0);
    feed__rest_stats st;
    feed__rest_stats_get(r, &st);
    CHECK_EQ_INT(st.requests, 3);
    CHECK_EQ_INT(st.rate_limited, 2);
    CHECK_EQ_INT(st.errors, 0);
    CHECK_EQ_INT(st.used_weight, 12);
    peer_join(&p);
    CHECK_EQ_STR(s.path[0], "GET /api/v3/klines?symbol=BTCUSDT HTTP/1.1");
    CHECK_EQ_STR(s.path[2], "GET /api/v3/klines?symbol=BTCUSDT HTTP/1.1");
    feed__rest_free(r);
    util_buf_cleanup(&body);
}

TEST(rest_long_retry_after_is_an_error_not_a_wait)
{
    http_script s = {.resp = {"HTTP/1.1 418 I'm a teapot\r\nRetry-After: 7200\r\n"
                              "Content-Length: 43\r\nConnection: close\r\n\r\n"
                              "{\"code\":-1003,\"msg\":\"Way too much\"}        "}};
    peer p;
    CHECK_EQ_INT(peer_start(&p, 1, serve_http, &s), 0);
    feed__rest *r = rest_for(&p, NULL, 5);
    util_buf body = {0};
    char why[256] = "";
    CHECK_EQ_INT(feed__rest_get(r, "/api/v3/exchangeInfo", &body, why, sizeof why), PD_ERATE);
    CHECK(strstr(why, "HTTP 418: Way too much (code -1003)") != NULL);
    CHECK(strstr(why, "Retry-After 7200 s") != NULL);
    CHECK_EQ_INT(body.len, 0);
    peer_join(&p);
    feed__rest_free(r);
    util_buf_cleanup(&body);
}

TEST(rest_rate_limit_wait_is_cancelled_by_stop)
{
    http_script s = {.resp = {"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 30\r\n"
                              "Content-Length: 0\r\nConnection: close\r\n\r\n"}};
    peer p;
    CHECK_EQ_INT(peer_start(&p, 1, serve_http, &s), 0);
    atomic_bool stop = true;
    feed__rest *r = rest_for(&p, &stop, 3);
    util_buf body = {0};
    char why[256] = "";
    CHECK_EQ_INT(feed__rest_get(r, "/x", &body, why, sizeof why), PD_ECANCELED);
    CHECK(strstr(why, "HTTP 429: (empty body)") != NULL);
    peer_join(&p);
    feed__rest_free(r);
    util_buf_cleanup(&body);
}

TEST(rest_server_errors_are_retried_then_given_up)
{
    http_script s = {
        .resp = {"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n"
                 "\r\nbusy",
                 OK_EMPTY,
                 "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\nConnection: close\r\n"
                 "\r\noops\n",
                 /* a body cut short: Content-Length says 100, 40 bytes come */
                 "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n"
                 "[[1700000000000,\"1\",\"2\",\"0.5\",\"1.5\",\"10\""}};
    peer p;
    CHECK_EQ_INT(peer_start(&p, 4, serve_http, &s), 0);
    feed__rest *r = rest_for(&p, NULL, 2);
    util_buf body = {0};
    char why[256] = "";
    CHECK_EQ_INT(feed__rest_get(r, "/a", &body, why, sizeof why), 0);
    CHECK(body.len == 2 && memcmp(body.data, "[]", 2) == 0);
    body.len = 0;
    CHECK_EQ_INT(feed__rest_get(r, "/b", &body, why, sizeof why), PD_EIO);
    CHECK_EQ_INT(body.len, 0);             /* nothing of the truncated body is kept */
    CHECK(strstr(why, "partial") != NULL); /* the last failure is reported */
    feed__rest_stats st;
    feed__rest_stats_get(r, &st);
    CHECK_EQ_INT(st.requests, 4);
    CHECK_EQ_INT(st.errors, 3);
    peer_join(&p);
    feed__rest_free(r);
    util_buf_cleanup(&body);
}

TEST(rest_client_errors_are_not_retried)
{
    http_script s = {
        .resp = {"HTTP/1.1 400 Bad Request\r\nContent-Length: 40\r\nConnection: close\r\n\r\n"
                 "{\"code\":-1121,\"msg\":\"Invalid symbol.\"}  ",
                 "HTTP/1.1 404 Not Found\r\nContent-Length: 14\r\nConnection: close\r\n\r\n"
                 "No such\r\nthing",
                 "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                 "HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n"
                 "Connection: close\r\n\r\n"}};
    peer p;
    CHECK_EQ_INT(peer_start(&p, 4, serve_http, &s), 0);
    feed__rest *r = rest_for(&p, NULL, 3);
    util_buf body = {0};
    char why[256] = "";
    CHECK_EQ_INT(feed__rest_get(r, "/1", &body, why, sizeof why), PD_EINVAL);
    CHECK(strstr(why, "HTTP 400: Invalid symbol. (code -1121)") != NULL);
    CHECK_EQ_INT(feed__rest_get(r, "/2", &body, why, sizeof why), PD_ENOTFOUND);
    CHECK_EQ_STR(why, "HTTP 404: No such  thing"); /* one line */
    CHECK_EQ_INT(feed__rest_get(r, "/3", &body, why, sizeof why), PD_EIO);
    CHECK_EQ_STR(why, "HTTP 403: (empty body)");
    CHECK_EQ_INT(feed__rest_get(r, "/4", &body, why, sizeof why), PD_EIO);
    CHECK(strstr(why, "HTTP 302") != NULL);
    CHECK_EQ_INT(body.len, 0);
    feed__rest_stats st;
    feed__rest_stats_get(r, &st);
    CHECK_EQ_INT(st.requests, 4);
    CHECK_EQ_INT(st.errors, 0);
    CHECK_EQ_INT(st.used_weight, -1);
    peer_join(&p);
    feed__rest_free(r);
    util_buf_cleanup(&body);
}

TEST(rest_chunked_body_is_joined)
{
    http_script s = {
        .resp = {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
                 "X-MBX-USED-WEIGHT-1M: 7\r\n\r\n"
                 "5\r\n[[170\r\n"
                 "3\r\n000\r\n"
                 "19\r\n0000000,\"1\",\"2\",\"3\",\"4\"]]\r\n"
                 "0\r\n\r\n"}};
    peer p;
    CHECK_EQ_INT(peer_start(&p, 1, serve_http, &s), 0);
    feed__rest *r = rest_for(&p, NULL, 1);
    util_buf body = {0};
    char why[256] = "";
    CHECK_EQ_INT(feed__rest_get(r, "/c", &body, why, sizeof why), 0);
    const char want[] = "[[1700000000000,\"1\",\"2\",\"3\",\"4\"]]";
    CHECK(body.len == sizeof want - 1 && memcmp(body.data, want, body.len) == 0);
    feed__rest_stats st;
    feed__rest_stats_get(r, &st);
    CHECK_EQ_INT(st.used_weight, 7);
    peer_join(&p);
    feed__rest_free(r);
    util_buf_cleanup(&body);
}

/* Near the weight limit the client waits for the next minute before it
 * sends; a stop cancels that wait without a request. A higher limit (from
 * exchangeInfo) lifts the wait. */
TEST(rest_paces_by_the_weight_header)
{
    http_script s = {.resp = {"HTTP/1.1 200 OK\r\nX-MBX-USED-WEIGHT-1M: 5900\r\nContent-Length: 2"
                              "\r\nConnection: close\r\n\r\n[]",
                              OK_EMPTY}};
    peer p;
    CHECK_EQ_INT(peer_start(&p, 2, serve_http, &s), 0);
    atomic_bool stop = false;
    feed__rest *r = rest_for(&p, &stop, 1);
    util_buf body = {0};
    char why[256] = "";
    CHECK_EQ_INT(feed__rest_get(r, "/w", &body, why, sizeof why), 0);
    feed__rest_stats st;
    feed__rest_stats_get(r, &st);
    CHECK_EQ_INT(st.used_weight, 5900);
    atomic_store(&stop, true);
    CHECK_EQ_INT(feed__rest_get(r, "/w", &body, why, sizeof why), PD_ECANCELED);
    feed__rest_stats_get(r, &st);
    CHECK_EQ_INT(st.requests, 1); /* nothing was sent */
    atomic_store(&stop, false);
    /* the wait reset the count; seen again, a higher limit lifts the wait */
    feed__rest_set_weight_limit(r, 0); /* ignored */
    feed__rest_set_weight_limit(r, 1000000);
    CHECK_EQ_INT(feed__rest_get(r, "/w", &body, why, sizeof why), 0);
    feed__rest_stats_get(r, &st);
    CHECK_EQ_INT(st.requests, 2);
    CHECK_EQ_INT(st.used_weight, 12);
    peer_join(&p);
    feed__rest_free(r);
    util_buf_cleanup(&body);
}

TEST(rest_body_over_16_mib_is_refused)
{
    size_t n = (17u << 20);
    char *resp = malloc(n + 200);
    int h = snprintf(resp, 200,
                     "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", n);
    memset(resp + h, ' ', n);
    http_script s = {.resp = {resp}, .resp_len = {(size_t)h + n}};
    peer p;
    CHECK_EQ_INT(peer_start(&p, 1, serve_http, &s), 0);
    feed__rest *r = rest_for(&p, NULL, 3);
    util_buf body = {0};
    char why[256] = "";
    CHECK_EQ_INT(feed__rest_get(r, "/big", &body, why, sizeof why), PD_ETOOBIG);
    CHECK(strstr(why, "response over 16777216 bytes") != NULL);
    feed__rest_stats st;
    feed__rest_stats_get(r, &st);
    CHECK_EQ_INT(st.requests, 1); /* not retried */
    peer_join(&p);
    feed__rest_free(r);
    util_buf_cleanup(&body);
    free(resp);
}

TEST(rest_arguments_refused)
{
    feed__rest *r = NULL;
    char why[256] = "";
    CHECK_EQ_INT(feed__rest_new("ws://127.0.0.1:1", NULL, 1, &r, why, sizeof why), PD_EINVAL);
    CHECK(strstr(why, "http:// or https://") != NULL);
    CHECK_EQ_INT(feed__rest_new("ftp://x", NULL, 1, &r, why, sizeof why), PD_EINVAL);
    CHECK(r == NULL);
    CHECK_EQ_INT(feed__rest_new("http://127.0.0.1:1///", NULL, 0, &r, why, sizeof why), 0);
    char path[2100];
    memset(path, 'a', sizeof path - 1);
    path[0] = '/';
    path[sizeof path - 1] = '\0';
    util_buf body = {0};
    CHECK_EQ_INT(feed__rest_get(r, path, &body, why, sizeof why), PD_EINVAL);
    CHECK_EQ_STR(why, "URL too long");
    feed__rest_stats st;
    feed__rest_stats_get(NULL, &st);
    CHECK_EQ_INT(st.used_weight, -1);
    CHECK_EQ_INT(st.requests, 0);
    feed__rest_set_weight_limit(NULL, 5);
    feed__rest_free(r);
    feed__rest_free(NULL);
    CHECK(!feed__sleep_ms(0, NULL));
    atomic_bool stop = true;
    CHECK(feed__sleep_ms(1000, &stop));
}

/* ---------------------------------------------------------------------------
 * Binance klines paging over the REST client.
 */
#define K0 INT64_C(1570752000000) /* 2019-10-11T00:00Z */

struct pages {
    int calls;
    size_t n[8];
    int64_t first_t[8];
    double last_close;
    int fail_at; /* 1-based call that returns PD_EDB, 0: none */
};

static int on_page(const features_candle *c, size_t n, void *arg)
{
    struct pages *p = arg;
    if (p->calls < 8) {
        p->n[p->calls] = n;
        p->first_t[p->calls] = c[0].t;
    }
    p->calls++;
    p->last_close = c[n - 1].close;
    return p->fail_at == p->calls ? PD_EDB : 0;
}

static char *klines_resp(int64_t from_min, int count)
{
    util_buf body = {0};
    util_buf_puts(&body, "[");
    for (int i = 0; i < count; i++) {
        int64_t t = K0 + (from_min + i) * 60000;
        util_buf_printf(&body,
                        "%s[%lld,\"1.0\",\"1.5\",\"0.5\",\"1.%d\",\"10\",%lld,\"0\",1,\"0\",\"0\","
                        "\"0\"]",
                        i ? "," : "", (long long)t, (int)(from_min + i), (long long)t + 59999);
    }
    util_buf_puts(&body, "]");
    util_buf resp = {0};
    util_buf_printf(&resp, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                    body.len, body.data);
    util_buf_cleanup(&body);
    return resp.data;
}

TEST(klines_range_walks_pages_and_stops_on_errors)
{
    /* 5 minutes asked: the exchange answers 3, then 2 plus one past the
     * range (not kept); then an empty page ends a range early; then a
     * malformed page, a refused symbol, and a page the writer refuses */
    char *r0 = klines_resp(0, 3), *r1 = klines_resp(3, 3), *r3 = klines_resp(10, 2),
         *r4 = klines_resp(11, 1);
    http_script s = {
        .resp = {r0, r1, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n[]", r3,
                 r4, /* asked again from the open minute: still open, the walk ends */
                 "HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: close\r\n\r\n[[1570752000",
                 "HTTP/1.1 400 Bad Request\r\nContent-Length: 40\r\nConnection: close\r\n\r\n"
                 "{\"code\":-1121,\"msg\":\"Invalid symbol.\"}  ",
                 r0}};
    peer p;
    CHECK_EQ_INT(peer_start(&p, 8, serve_http, &s), 0);
    feed__rest *r = rest_for(&p, NULL, 1);
    char why[256] = "";
    int64_t far = K0 + 86400000;
    struct pages pg = {0};
    CHECK_EQ_INT(feed__binance_klines_range(r, "XRPETH", K0, K0 + 5 * 60000, far, on_page, &pg, why,
                                            sizeof why),
                 0);
    CHECK_EQ_INT(pg.calls, 2);
    CHECK_EQ_INT(pg.n[0], 3);
    CHECK_EQ_INT(pg.n[1], 2);
    CHECK_EQ_INT(pg.first_t[1], K0 / 1000 + 180);
    CHECK_NEAR(pg.last_close, 1.4, 1e-12); /* minute 4, not the extra minute 5 */
    /* nothing closed yet in [10, 20): one request, no page */
    pg = (struct pages){0};
    CHECK_EQ_INT(feed__binance_klines_range(r, "XRPETH", K0 + 10 * 60000, K0 + 20 * 60000, far,
                                            on_page, &pg, why, sizeof why),
                 0);
    CHECK_EQ_INT(pg.calls, 0);
    /* minutes still open at now are not handed over */
    pg = (struct pages){0};
    CHECK_EQ_INT(feed__binance_klines_range(r, "XRPETH", K0 + 10 * 60000, K0 + 12 * 60000,
                                            K0 + 11 * 60000 + 30000, on_page, &pg, why, sizeof why),
                 0);
    CHECK_EQ_INT(pg.calls, 1);
    CHECK_EQ_INT(pg.n[0], 1);
    pg = (struct pages){0};
    CHECK_EQ_INT(
        feed__binance_klines_range(r, "XRPETH", K0, K0 + 60000, far, on_page, &pg, why, sizeof why),
        PD_EPARSE);
    CHECK(strstr(why, "klines") != NULL);
    CHECK_EQ_INT(
        feed__binance_klines_range(r, "NOPE", K0, K0 + 60000, far, on_page, &pg, why, sizeof why),
        PD_EINVAL);
    CHECK(strstr(why, "Invalid symbol.") != NULL);
    pg = (struct pages){.fail_at = 1};
    CHECK_EQ_INT(feed__binance_klines_range(r, "XRPETH", K0, K0 + 5 * 60000, far, on_page, &pg, why,
                                            sizeof why),
                 PD_EDB);
    CHECK_EQ_INT(pg.calls, 1);
    CHECK_EQ_INT(pg.n[0], 3);
    /* an empty range asks nothing */
    CHECK_EQ_INT(
        feed__binance_klines_range(r, "XRPETH", K0, K0, far, on_page, &pg, why, sizeof why), 0);
    feed__rest_stats st;
    feed__rest_stats_get(r, &st);
    CHECK_EQ_INT(st.requests, 8);
    peer_join(&p);
    CHECK(strstr(s.path[0],
                 "symbol=XRPETH&interval=1m&startTime=1570752000000&endTime=1570752299999"
                 "&limit=1000") != NULL);
    CHECK(strstr(s.path[1], "startTime=1570752180000&endTime=1570752299999") != NULL);
    feed__rest_free(r);
    free(r0);
    free(r1);
    free(r3);
    free(r4);
}

/* Client frames of every length form reach the server masked and whole;
 * an accept header with spaces around its value is read. */
typedef struct send_script {
    size_t lens[3];
    bool ok[3];
} send_script;

static void serve_receive(int fd, int conn, void *arg)
{
    (void)conn;
    send_script *s = arg;
    if (!ws_upgrade_padded(fd))
        return;
    for (int i = 0; i < 3; i++) {
        unsigned char h[2], ext[8], key[4];
        if (!recv_exact(fd, h, 2))
            return;
        size_t len = h[1] & 0x7f;
        if (len == 126) {
            if (!recv_exact(fd, ext, 2))
                return;
            len = (size_t)ext[0] << 8 | ext[1];
        } else if (len == 127) {
            if (!recv_exact(fd, ext, 8))
                return;
            len = 0;
            for (int k = 0; k < 8; k++)
                len = len << 8 | ext[k];
        }
        unsigned char *p = malloc(len + 1);
        if (!p || !recv_exact(fd, key, 4) || !recv_exact(fd, p, len)) {
            free(p);
            return;
        }
        bool same = (h[0] == (0x80 | FEED__WS_BINARY)) && (h[1] & 0x80);
        for (size_t k = 0; k < len; k++)
            same = same && (unsigned char)(p[k] ^ key[k & 3]) == (unsigned char)(k * 7);
        s->lens[i] = len;
        s->ok[i] = same;
        free(p);
    }
    (void)read_client_frame(fd); /* the close */
}

TEST(ws_client_frames_of_every_length_form)
{
    send_script s = {0};
    peer p;
    CHECK_EQ_INT(peer_start(&p, 1, serve_receive, &s), 0);
    feed__ws *w = NULL;
    char why[256] = "";
    CHECK_EQ_INT(feed__ws_connect(ws_url(&p, "ws"), 5000, &w, why, sizeof why), 0);
    size_t lens[3] = {100, 300, 70000};
    unsigned char *d = malloc(70000);
    for (size_t k = 0; k < 70000; k++)
        d[k] = (unsigned char)(k * 7);
    for (int i = 0; i < 3 && w; i++)
        CHECK_EQ_INT(feed__ws_send(w, FEED__WS_BINARY, d, lens[i]), 0);
    feed__ws_close(w);
    peer_join(&p);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(s.lens[i], lens[i]);
        CHECK(s.ok[i]);
    }
    free(d);
    /* a URL path over the limit */
    char url[1200];
    memset(url, 'a', sizeof url - 1);
    url[sizeof url - 1] = '\0';
    memcpy(url, "ws://h/", 7);
    feed__url u;
    CHECK_EQ_INT(feed__url_parse(url, &u, why, sizeof why), PD_EINVAL);
    CHECK_EQ_STR(why, "URL path too long");
}

/* `predictd fetch`'s download refuses a bad symbol, URL, server time and
 * range with the reason, and passes a write failure up. */
static void progress_note(int64_t done, int64_t total, void *arg)
{
    int64_t *last = arg;
    *last = done * 100000 + total;
}

TEST(fetch_refuses_and_passes_errors_up)
{
    CHECK_EQ_INT(store_init(NULL, NULL, false), 0); /* no database: writes fail */
    char *rows = klines_resp(0, 3);
    char time_body[64], time_ok[256];
    int tl = snprintf(time_body, sizeof time_body, "{\"serverTime\":%lld}",
                      (long long)(K0 + 10 * 60000));
    snprintf(time_ok, sizeof time_ok,
             "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", tl, time_body);
    http_script s = {
        .resp = {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                 "HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nnot json",
                 time_ok, time_ok, rows}};
    peer p;
    CHECK_EQ_INT(peer_start(&p, 5, serve_http, &s), 0);
    char base[128], why[256] = "";
    snprintf(base, sizeof base, "http://127.0.0.1:%d", p.port);
    feed_binance_config cfg = {.rest_url = base};
    feed_sink *sink = NULL;
    CHECK_EQ_INT(feed_sink_new("fetch", "unit test", &sink), 0);
    int64_t written = -1, last = 0;
    int64_t from = K0 / 1000, to = K0 / 1000 + 300;
    CHECK_EQ_INT(
        feed_binance_fetch(&cfg, "xrp-eth", from, to, sink, NULL, NULL, NULL, why, sizeof why),
        PD_EINVAL);
    CHECK_EQ_INT(
        feed_binance_fetch(&cfg, "XRPETH", from, to, NULL, NULL, NULL, NULL, why, sizeof why),
        PD_EINVAL);
    feed_binance_config bad = {.rest_url = "ws://127.0.0.1:1"};
    CHECK_EQ_INT(
        feed_binance_fetch(&bad, "XRPETH", from, to, sink, NULL, NULL, NULL, why, sizeof why),
        PD_EINVAL);
    CHECK_EQ_INT(
        feed_binance_fetch(&cfg, "XRPETH", from, to, sink, NULL, NULL, NULL, why, sizeof why),
        PD_EPARSE);
    CHECK(strstr(why, "no serverTime") != NULL);
    CHECK_EQ_INT(
        feed_binance_fetch(&cfg, "XRPETH", from, to, sink, NULL, NULL, NULL, why, sizeof why),
        PD_EPARSE);
    CHECK(strstr(why, "/api/v3/time: malformed JSON") != NULL);
    /* from after the server's now */
    CHECK_EQ_INT(feed_binance_fetch(&cfg, "XRPETH", K0 / 1000 + 3600, 0, sink, NULL, NULL, NULL,
                                    why, sizeof why),
                 PD_EINVAL);
    CHECK(strstr(why, "the range is empty") != NULL);
    /* a page that cannot be written stops the download with the store's code */
    CHECK_EQ_INT(feed_binance_fetch(&cfg, "XRPETH", from, to, sink, progress_note, &last, &written,
                                    why, sizeof why),
                 PD_EDB);
    CHECK_EQ_INT(written, 0);
    CHECK_EQ_INT(last, 0); /* no page was done */
    peer_join(&p);
    CHECK(strstr(s.path[4], "/api/v3/klines?symbol=XRPETH&interval=1m&startTime=1570752000000") !=
          NULL);
    feed_sink_free(sink);
    free(rows);
    store_shutdown();
}

int main(void)
{
    RUN(ws_frames_split_at_every_byte_boundary);
    RUN(ws_fragments_joined_and_pings_answered);
    RUN(ws_close_frames_end_the_stream_with_their_code);
    RUN(ws_protocol_errors_close_the_connection);
    RUN(ws_fragmented_message_over_the_limit_is_refused);
    RUN(ws_read_times_out_then_reads);
    RUN(ws_handshake_refusals);
    RUN(ws_connect_times_out_and_tries_every_address);
    RUN(ws_client_frames_of_every_length_form);
    RUN(rest_rate_limits_are_waited_out);
    RUN(rest_long_retry_after_is_an_error_not_a_wait);
    RUN(rest_rate_limit_wait_is_cancelled_by_stop);
    RUN(rest_server_errors_are_retried_then_given_up);
    RUN(rest_client_errors_are_not_retried);
    RUN(rest_chunked_body_is_joined);
    RUN(rest_paces_by_the_weight_header);
    RUN(rest_body_over_16_mib_is_refused);
    RUN(rest_arguments_refused);
    RUN(klines_range_walks_pages_and_stops_on_errors);
    RUN(fetch_refuses_and_passes_errors_up);
    return unit_report();
}
