/*
 * ws.c: a WebSocket client (RFC 6455) for exchange streams: the opening
 * handshake, masked client frames, fragment reassembly, and the control
 * frames (a ping is answered with a pong carrying its payload, a close is
 * answered). Plain TCP for ws://, OpenSSL for wss:// (certificate and host
 * name verified against the system's store).
 *
 * DESIGN: a connector reads one connection from one thread, so the client
 * is a blocking socket with poll() for the read timeout, and SO_RCVTIMEO /
 * SO_SNDTIMEO of 15 s so a peer that stops mid-frame cannot hang the
 * thread. It does no reconnecting and keeps no state beyond one connection:
 * back-off, renewal and resubscription are the connector's.
 * It is not a general client: no extensions (permessage-deflate is not
 * offered), no subprotocols, no proxies.
 *
 * Threading: a connection belongs to one thread.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>

#include "feed/net_internal.h"

#define MOD "feed"
#define WS_MSG_MAX (4u << 20)
#define WS_IO_TIMEOUT_S 15
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

struct feed__ws {
    int fd;
    SSL_CTX *ctx; /* NULL for ws:// */
    SSL *ssl;
    unsigned char *in; /* received, not yet parsed */
    size_t in_len, in_cap;
    unsigned char *msg; /* the message being assembled / returned */
    size_t msg_len, msg_cap;
    int msg_op; /* opcode of the message being assembled, 0: none */
    bool closed;
    feed__ws_stats st;
};

/* ---------------------------------------------------------------------------
 * One-time initialisation and URLs.
 */
static pthread_once_t net_once = PTHREAD_ONCE_INIT;
static int net_init_rc;

static void net_init(void)
{
    if (OPENSSL_init_ssl(0, NULL) != 1 || curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        net_init_rc = PD_EINTERNAL;
}

int feed__net_global_init(void)
{
    pthread_once(&net_once, net_init);
    return net_init_rc;
}

int feed__url_parse(const char *url, feed__url *out, char *why, size_t whylen)
{
    static const struct {
        const char *scheme;
        bool tls;
        int port;
    } schemes[] = {{"ws://", false, 80},
                   {"wss://", true, 443},
                   {"http://", false, 80},
                   {"https://", true, 443}};
    if (!url) {
        snprintf(why, whylen, "no URL");
        return PD_EINVAL;
    }
    feed__url u = {0};
    const char *p = NULL;
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
        size_t n = strlen(schemes[i].scheme);
        if (strncasecmp(url, schemes[i].scheme, n) == 0) {
            p = url + n;
            u.tls = schemes[i].tls;
            u.port = schemes[i].port;
            break;
        }
    }
    if (!p) {
        snprintf(why, whylen, "URL must start with ws://, wss://, http:// or https://");
        return PD_EINVAL;
    }
    size_t hl = strcspn(p, ":/?#");
    if (hl == 0 || hl >= sizeof u.host) {
        snprintf(why, whylen, "URL has no host (or one too long)");
        return PD_EINVAL;
    }
    memcpy(u.host, p, hl);
    p += hl;
    if (*p == ':') {
        char *end;
        errno = 0;
        long port = strtol(p + 1, &end, 10);
        if (errno || end == p + 1 || port < 1 || port > 65535 ||
            (*end && *end != '/' && *end != '?')) {
            snprintf(why, whylen, "URL has a bad port");
            return PD_EINVAL;
        }
        u.port = (int)port;
        p = end;
    }
    if (strchr(p, '#')) {
        snprintf(why, whylen, "URL has a fragment");
        return PD_EINVAL;
    }
    int n = snprintf(u.path, sizeof u.path, "%s%s", *p == '/' ? "" : "/", p);
    if (n < 0 || (size_t)n >= sizeof u.path) {
        snprintf(why, whylen, "URL path too long");
        return PD_EINVAL;
    }
    *out = u;
    return 0;
}

/* ---------------------------------------------------------------------------
 * Transport: plain or TLS.
 */
static void ssl_why(const char *what, char *why, size_t whylen)
{
    unsigned long e = ERR_get_error();
    char buf[200];
    ERR_error_string_n(e, buf, sizeof buf);
    snprintf(why, whylen, "%s: %s", what, e ? buf : "connection closed");
    ERR_clear_error();
}

/* Reads what is there (at least one byte, blocking up to the socket's
 * timeout). >0 bytes, 0 on orderly close, -1 on error. */
static ssize_t io_read(feed__ws *w, void *buf, size_t n)
{
    if (!w->ssl) {
        for (;;) {
            ssize_t r = recv(w->fd, buf, n, 0);
            if (r < 0 && errno == EINTR)
                continue;
            return r;
        }
    }
    int r = SSL_read(w->ssl, buf, n > INT32_MAX ? INT32_MAX : (int)n);
    if (r > 0)
        return r;
    int e = SSL_get_error(w->ssl, r);
    ERR_clear_error();
    return e == SSL_ERROR_ZERO_RETURN ? 0 : -1;
}

static int io_write_all(feed__ws *w, const void *data, size_t n)
{
    const unsigned char *p = data;
    while (n > 0) {
        ssize_t r;
        if (w->ssl) {
            int k = SSL_write(w->ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);
            if (k <= 0) {
                ERR_clear_error();
                return PD_EIO;
            }
            r = k;
        } else {
            r = send(w->fd, p, n, MSG_NOSIGNAL);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                return PD_EIO;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static bool buf_reserve(unsigned char **b, size_t *cap, size_t need)
{
    if (need <= *cap)
        return true;
    size_t c = *cap ? *cap : 4096;
    while (c < need)
        c *= 2;
    unsigned char *nb = realloc(*b, c);
    if (!nb)
        return false;
    *b = nb;
    *cap = c;
    return true;
}

/* Reads more into w->in, waiting up to timeout_ms (-1: the socket timeout)
 * when nothing is buffered in TLS. 1: got bytes, 0: timeout, PD_EIO. */
static int fill(feed__ws *w, int timeout_ms, char *why, size_t whylen)
{
    if (!(w->ssl && SSL_pending(w->ssl) > 0) && timeout_ms >= 0) {
        struct pollfd pfd = {.fd = w->fd, .events = POLLIN};
        int pr;
        do
            pr = poll(&pfd, 1, timeout_ms);
        while (pr < 0 && errno == EINTR);
        if (pr < 0) {
            snprintf(why, whylen, "poll: %s", strerror(errno));
            return PD_EIO;
        }
        if (pr == 0)
            return 0;
    }
    if (!buf_reserve(&w->in, &w->in_cap, w->in_len + 16384)) {
        snprintf(why, whylen, "out of memory");
        return PD_EIO;
    }
    ssize_t r = io_read(w, w->in + w->in_len, w->in_cap - w->in_len);
    if (r == 0) {
        snprintf(why, whylen, "the server closed the connection");
        return PD_EIO;
    }
    if (r < 0) {
        snprintf(why, whylen, "read: %s", errno == EAGAIN ? "timed out" : strerror(errno));
        return PD_EIO;
    }
    w->in_len += (size_t)r;
    return 1;
}

static void consume(feed__ws *w, size_t n)
{
    memmove(w->in, w->in + n, w->in_len - n);
    w->in_len -= n;
}

/* ---------------------------------------------------------------------------
 * Connect and handshake.
 */
static int tcp_connect(const feed__url *u, int timeout_ms, char *why, size_t whylen)
{
    char port[8];
    snprintf(port, sizeof port, "%d", u->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int gr = getaddrinfo(u->host, port, &hints, &res);
    if (gr != 0) {
        snprintf(why, whylen, "cannot resolve %s: %s", u->host, gai_strerror(gr));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
        if (fd < 0)
            continue;
        int r = connect(fd, a->ai_addr, a->ai_addrlen);
        if (r != 0 && errno == EINPROGRESS) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            int pr;
            do
                pr = poll(&pfd, 1, timeout_ms);
            while (pr < 0 && errno == EINTR);
            int err = 0;
            socklen_t el = sizeof err;
            if (pr == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err == 0)
                r = 0;
            else
                errno = pr == 0 ? ETIMEDOUT : (err ? err : errno);
        }
        if (r == 0)
            break;
        snprintf(why, whylen, "cannot connect to %s:%d: %s", u->host, u->port, strerror(errno));
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return -1;
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    struct timeval tv = {.tv_sec = WS_IO_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    return fd;
}

static int tls_start(feed__ws *w, const feed__url *u, char *why, size_t whylen)
{
    w->ctx = SSL_CTX_new(TLS_client_method());
    if (!w->ctx) {
        ssl_why("TLS context", why, whylen);
        return PD_EIO;
    }
    SSL_CTX_set_min_proto_version(w->ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(w->ctx, SSL_VERIFY_PEER, NULL);
    if (SSL_CTX_set_default_verify_paths(w->ctx) != 1) {
        ssl_why("TLS trust store", why, whylen);
        return PD_EIO;
    }
    w->ssl = SSL_new(w->ctx);
    if (!w->ssl || SSL_set_fd(w->ssl, w->fd) != 1 ||
        SSL_set_tlsext_host_name(w->ssl, u->host) != 1 || SSL_set1_host(w->ssl, u->host) != 1) {
        ssl_why("TLS set-up", why, whylen);
        return PD_EIO;
    }
    if (SSL_connect(w->ssl) != 1) {
        long vr = SSL_get_verify_result(w->ssl);
        if (vr != X509_V_OK)
            snprintf(why, whylen, "TLS handshake with %s: certificate: %s", u->host,
                     X509_verify_cert_error_string(vr));
        else
            ssl_why("TLS handshake", why, whylen);
        return PD_EIO;
    }
    return 0;
}

static void base64(const unsigned char *in, size_t n, char *out)
{
    EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

/* The value of header name in the response head (lines after the status),
 * copied to out without surrounding spaces. */
static bool header_value(const char *head, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p; p = strstr(p, "\r\n")) {
        p += 2;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            size_t vl = strcspn(v, "\r\n");
            while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
                vl--;
            snprintf(out, outlen, "%.*s", (int)vl, v);
            return true;
        }
    }
    return false;
}

static int handshake(feed__ws *w, const feed__url *u, int timeout_ms, char *why, size_t whylen)
{
    unsigned char nonce[16];
    if (RAND_bytes(nonce, sizeof nonce) != 1) {
        snprintf(why, whylen, "no random bytes for the handshake key");
        return PD_EIO;
    }
    char key[32], req[2048];
    base64(nonce, sizeof nonce, key);
    bool default_port = u->port == (u->tls ? 443 : 80);
    int n =
        snprintf(req, sizeof req,
                 "GET %s HTTP/1.1\r\nHost: %s%s%.0d\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                 "Sec-WebSocket-Version: 13\r\nUser-Agent: predictd/" PREDICTD_VERSION "\r\n\r\n",
                 u->path, u->host, default_port ? "" : ":", default_port ? 0 : u->port, key);
    if (n < 0 || (size_t)n >= sizeof req || io_write_all(w, req, (size_t)n) != 0) {
        snprintf(why, whylen, "cannot send the upgrade request");
        return PD_EIO;
    }
    /* read the response head */
    char *end = NULL;
    uint64_t deadline = util_mono_ns() + (uint64_t)timeout_ms * 1000000u;
    for (;;) {
        if (w->in_len > 0 && buf_reserve(&w->in, &w->in_cap, w->in_len + 1)) {
            w->in[w->in_len] = '\0';
            end = strstr((char *)w->in, "\r\n\r\n");
            if (end)
                break;
        }
        if (w->in_len > 16384) {
            snprintf(why, whylen, "upgrade response head too long");
            return PD_EIO;
        }
        uint64_t now = util_mono_ns();
        if (now >= deadline) {
            snprintf(why, whylen, "no upgrade response within %d ms", timeout_ms);
            return PD_EIO;
        }
        int r = fill(w, (int)((deadline - now) / 1000000u) + 1, why, whylen);
        if (r < 0)
            return r;
    }
    size_t head_len = (size_t)(end - (char *)w->in) + 4;
    char *head = strndup((char *)w->in, head_len);
    if (!head) {
        snprintf(why, whylen, "out of memory");
        return PD_EIO;
    }
    consume(w, head_len);
    int rc = 0;
    int status = 0;
    if (sscanf(head, "HTTP/1.%*d %d", &status) != 1 || status != 101) {
        snprintf(why, whylen, "upgrade refused: %.*s", (int)strcspn(head, "\r\n"), head);
        rc = PD_EIO;
        goto out;
    }
    char accept[64], expect[64], cat[128];
    unsigned char sha[SHA_DIGEST_LENGTH];
    snprintf(cat, sizeof cat, "%s%s", key, WS_GUID);
    SHA1((const unsigned char *)cat, strlen(cat), sha);
    base64(sha, sizeof sha, expect);
    if (!header_value(head, "Sec-WebSocket-Accept", accept, sizeof accept) ||
        strcmp(accept, expect) != 0) {
        snprintf(why, whylen, "upgrade answered without the right Sec-WebSocket-Accept");
        rc = PD_EIO;
    }
out:
    free(head);
    return rc;
}

int feed__ws_connect(const char *url, int timeout_ms, feed__ws **out, char *why, size_t whylen)
{
    feed__url u;
    int rc = feed__url_parse(url, &u, why, whylen);
    if (rc)
        return rc;
    if (strncasecmp(url, "ws", 2) != 0) {
        snprintf(why, whylen, "a stream URL must start with ws:// or wss://");
        return PD_EINVAL;
    }
    if ((rc = feed__net_global_init()) != 0) {
        snprintf(why, whylen, "OpenSSL/libcurl initialisation failed");
        return rc;
    }
    feed__ws *w = calloc(1, sizeof *w);
    if (!w) {
        snprintf(why, whylen, "out of memory");
        return PD_ENOMEM;
    }
    w->fd = tcp_connect(&u, timeout_ms, why, whylen);
    if (w->fd < 0) {
        rc = PD_EIO;
        goto fail;
    }
    if (u.tls && (rc = tls_start(w, &u, why, whylen)) != 0)
        goto fail;
    if ((rc = handshake(w, &u, timeout_ms, why, whylen)) != 0)
        goto fail;
    *out = w;
    return 0;
fail:
    w->closed = true; /* no close frame on a connection that never opened */
    feed__ws_close(w);
    return rc;
}

/* ---------------------------------------------------------------------------
 * Frames.
 */
int feed__ws_send(feed__ws *w, int opcode, const void *data, size_t len)
{
    if (!w || w->closed)
        return PD_EIO;
    unsigned char hdr[14];
    size_t h = 0;
    hdr[h++] = (unsigned char)(0x80 | (opcode & 0x0f));
    if (len < 126) {
        hdr[h++] = (unsigned char)(0x80 | len);
    } else if (len <= 0xffff) {
        hdr[h++] = 0x80 | 126;
        hdr[h++] = (unsigned char)(len >> 8);
        hdr[h++] = (unsigned char)len;
    } else {
        hdr[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            hdr[h++] = (unsigned char)((uint64_t)len >> (8 * i));
    }
    unsigned char mask[4];
    if (RAND_bytes(mask, sizeof mask) != 1)
        return PD_EIO;
    memcpy(hdr + h, mask, 4);
    h += 4;
    unsigned char *frame = malloc(h + len);
    if (!frame)
        return PD_EIO;
    memcpy(frame, hdr, h);
    const unsigned char *d = data;
    for (size_t i = 0; i < len; i++)
        frame[h + i] = d[i] ^ mask[i & 3];
    int rc = io_write_all(w, frame, h + len);
    free(frame);
    return rc;
}

/* Parses one whole frame from w->in if there is one. 1: a frame (fin,
 * opcode, payload at *pl / *plen inside w->in, *used bytes to consume),
 * 0: need more bytes, PD_EIO / PD_ETOOBIG: protocol error. */
static int parse_frame(feed__ws *w, bool *fin, int *op, size_t *poff, size_t *plen, size_t *used,
                       char *why, size_t whylen)
{
    const unsigned char *b = w->in;
    size_t n = w->in_len;
    if (n < 2)
        return 0;
    if (b[0] & 0x70) {
        snprintf(why, whylen, "frame with reserved bits set (no extension was negotiated)");
        return PD_EIO;
    }
    *fin = (b[0] & 0x80) != 0;
    *op = b[0] & 0x0f;
    bool masked = (b[1] & 0x80) != 0;
    uint64_t len = b[1] & 0x7f;
    size_t h = 2;
    if (len == 126) {
        if (n < 4)
            return 0;
        len = (uint64_t)b[2] << 8 | b[3];
        h = 4;
    } else if (len == 127) {
        if (n < 10)
            return 0;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | b[2 + i];
        h = 10;
    }
    if (len > WS_MSG_MAX) {
        snprintf(why, whylen, "frame of %llu bytes (limit %u)", (unsigned long long)len,
                 WS_MSG_MAX);
        return PD_ETOOBIG;
    }
    if (masked) { /* RFC 6455 5.1: a client closes on a masked server frame */
        snprintf(why, whylen, "masked frame from the server (a protocol error)");
        return PD_EIO;
    }
    if (n < h + len)
        return 0;
    if (*op >= 8 && (!*fin || len > 125)) {
        snprintf(why, whylen, "malformed control frame");
        return PD_EIO;
    }
    *poff = h;
    *plen = (size_t)len;
    *used = h + (size_t)len;
    return 1;
}

int feed__ws_read(feed__ws *w, int timeout_ms, const char **msg, size_t *len, char *why,
                  size_t whylen)
{
    if (!w || w->closed) {
        snprintf(why, whylen, "connection closed");
        return PD_EIO;
    }
    uint64_t deadline = util_mono_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000u;
    for (;;) {
        bool fin = false;
        int op = 0;
        size_t off = 0, plen = 0, used = 0;
        int r = parse_frame(w, &fin, &op, &off, &plen, &used, why, whylen);
        if (r < 0) {
            w->closed = true;
            return r;
        }
        if (r == 1) {
            const unsigned char *p = w->in + off;
            switch (op) {
            case FEED__WS_PING:
                w->st.pings++;
                if (feed__ws_send(w, FEED__WS_PONG, p, plen) != 0) {
                    snprintf(why, whylen, "cannot answer a ping");
                    w->closed = true;
                    return PD_EIO;
                }
                consume(w, used);
                continue;
            case FEED__WS_PONG:
                w->st.pongs++;
                consume(w, used);
                continue;
            case FEED__WS_CLOSE: {
                unsigned code = plen >= 2 ? (unsigned)(p[0] << 8 | p[1]) : 1005;
                snprintf(why, whylen, "the server closed the stream (code %u%s%.*s)", code,
                         plen > 2 ? ": " : "", plen > 2 ? (int)(plen - 2) : 0,
                         plen > 2 ? (const char *)p + 2 : "");
                (void)feed__ws_send(w, FEED__WS_CLOSE, p, plen >= 2 ? 2 : 0);
                consume(w, used);
                w->closed = true;
                return PD_EIO;
            }
            case 0: /* continuation */
                if (!w->msg_op) {
                    snprintf(why, whylen, "continuation frame without a message");
                    w->closed = true;
                    return PD_EIO;
                }
                break;
            case FEED__WS_TEXT:
            case FEED__WS_BINARY:
                if (w->msg_op) {
                    snprintf(why, whylen, "new message inside a fragmented one");
                    w->closed = true;
                    return PD_EIO;
                }
                w->msg_op = op;
                w->msg_len = 0;
                break;
            default:
                snprintf(why, whylen, "unknown opcode %d", op);
                w->closed = true;
                return PD_EIO;
            }
            if (w->msg_len + plen > WS_MSG_MAX) {
                snprintf(why, whylen, "message over %u bytes", WS_MSG_MAX);
                w->closed = true;
                return PD_ETOOBIG;
            }
            if (!buf_reserve(&w->msg, &w->msg_cap, w->msg_len + plen + 1)) {
                snprintf(why, whylen, "out of memory");
                w->closed = true;
                return PD_EIO;
            }
            memcpy(w->msg + w->msg_len, p, plen);
            w->msg_len += plen;
            consume(w, used);
            if (fin) {
                w->msg[w->msg_len] = '\0';
                w->msg_op = 0;
                *msg = (const char *)w->msg;
                *len = w->msg_len;
                return 1;
            }
            continue;
        }
        uint64_t now = util_mono_ns();
        int left = now >= deadline ? 0 : (int)((deadline - now) / 1000000u);
        r = fill(w, left, why, whylen);
        if (r < 0) {
            w->closed = true;
            return r;
        }
        if (r == 0)
            return 0;
    }
}

void feed__ws_stats_get(const feed__ws *w, feed__ws_stats *out)
{
    *out = w ? w->st : (feed__ws_stats){0};
}

void feed__ws_close(feed__ws *w)
{
    if (!w)
        return;
    if (!w->closed && w->fd >= 0) {
        const unsigned char normal[2] = {0x03, 0xe8}; /* 1000 */
        (void)feed__ws_send(w, FEED__WS_CLOSE, normal, 2);
    }
    if (w->ssl) {
        if (!w->closed)
            SSL_shutdown(w->ssl);
        SSL_free(w->ssl);
    }
    SSL_CTX_free(w->ctx);
    ERR_clear_error();
    if (w->fd >= 0)
        close(w->fd);
    free(w->in);
    free(w->msg);
    free(w);
}
