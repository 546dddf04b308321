/*
 * ws.c: RFC 6455 WebSocket framing, pure: the header parser for frames a
 * client sends, the header writer for frames the server sends, masking, and
 * the handshake's Sec-WebSocket-Accept (SHA-1 and base64 are here because
 * nothing else in predictd needs them).
 *
 * The parser decides on a frame from its header alone, before a byte of its
 * payload is read: a length over the caller's limit (up to 2^63-1 may be
 * declared) is refused there, so no frame makes the server allocate or read
 * more than the limit. It does not read sockets, assemble messages or know
 * the subscription protocol (streams.c does).
 *
 * Threading: no state; every function is reentrant.
 */
#include <string.h>

#include "api/wire_internal.h"
#include "util/util.h"

int api__ws_frame_parse(const uint8_t *buf, size_t n, uint64_t max_payload, struct api_ws_frame *f)
{
    if (n < 2)
        return 0;
    uint8_t b0 = buf[0], b1 = buf[1];
    if (b0 & 0x70)
        return -API_WS_CLOSE_PROTOCOL; /* RSV1-3: no extension was agreed */
    uint8_t op = b0 & 0x0F;
    bool control = op & 0x8;
    if (op != API_WS_CONT && op != API_WS_TEXT && op != API_WS_BINARY && op != API_WS_CLOSE &&
        op != API_WS_PING && op != API_WS_PONG)
        return -API_WS_CLOSE_PROTOCOL;
    if (!(b1 & 0x80))
        return -API_WS_CLOSE_PROTOCOL; /* a client must mask */
    uint64_t len = b1 & 0x7F;
    size_t need = 2;
    if (len == 126)
        need += 2;
    else if (len == 127)
        need += 8;
    if (control && (len > 125 || !(b0 & 0x80)))
        return -API_WS_CLOSE_PROTOCOL;
    if (n < need)
        return 0;
    if (len == 126) {
        len = (uint64_t)buf[2] << 8 | buf[3];
        if (len < 126)
            return -API_WS_CLOSE_PROTOCOL;
    } else if (len == 127) {
        if (buf[2] & 0x80)
            return -API_WS_CLOSE_PROTOCOL;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | buf[2 + i];
        if (len < 65536)
            return -API_WS_CLOSE_PROTOCOL;
    }
    if (len > max_payload)
        return -API_WS_CLOSE_TOO_BIG;
    if (n < need + 4)
        return 0;
    f->fin = b0 & 0x80;
    f->opcode = op;
    f->masked = true;
    memcpy(f->mask, buf + need, 4);
    f->len = len;
    f->header_len = need + 4;
    return 1;
}

void api__ws_unmask(uint8_t *data, size_t n, const uint8_t mask[4], uint64_t offset)
{
    for (size_t i = 0; i < n; i++)
        data[i] ^= mask[(offset + i) & 3];
}

size_t api__ws_frame_header(uint8_t *out, uint8_t opcode, uint64_t len)
{
    out[0] = (uint8_t)(0x80 | (opcode & 0x0F));
    if (len < 126) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len < 65536) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 10;
}

/* ------------------------------------------------------------------------
 * SHA-1 (FIPS 180-4), only for the handshake: its weakness does not matter
 * there, the RFC fixes the algorithm.
 */
struct sha1 {
    uint32_t h[5];
    uint64_t len;
    uint8_t block[64];
    size_t used;
};

static uint32_t rol(uint32_t x, int n)
{
    return (x << n) | (x >> (32 - n));
}

static void sha1_block(struct sha1 *s, const uint8_t *p)
{
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 80; i++)
        w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3], e = s->h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20)
            f = (b & c) | (~b & d), k = 0x5A827999;
        else if (i < 40)
            f = b ^ c ^ d, k = 0x6ED9EBA1;
        else if (i < 60)
            f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDC;
        else
            f = b ^ c ^ d, k = 0xCA62C1D6;
        uint32_t t = rol(a, 5) + f + e + k + w[i];
        e = d, d = c, c = rol(b, 30), b = a, a = t;
    }
    s->h[0] += a, s->h[1] += b, s->h[2] += c, s->h[3] += d, s->h[4] += e;
}

static void sha1_update(struct sha1 *s, const void *data, size_t n)
{
    const uint8_t *p = data;
    s->len += n;
    while (n) {
        size_t k = 64 - s->used < n ? 64 - s->used : n;
        memcpy(s->block + s->used, p, k);
        s->used += k, p += k, n -= k;
        if (s->used == 64) {
            sha1_block(s, s->block);
            s->used = 0;
        }
    }
}

static void sha1_final(struct sha1 *s, uint8_t out[20])
{
    uint64_t bits = s->len * 8;
    uint8_t pad = 0x80, zero = 0, lenb[8];
    sha1_update(s, &pad, 1);
    while (s->used != 56)
        sha1_update(s, &zero, 1);
    for (int i = 0; i < 8; i++)
        lenb[i] = (uint8_t)(bits >> (56 - 8 * i));
    sha1_update(s, lenb, 8);
    for (int i = 0; i < 5; i++) {
        out[4 * i] = (uint8_t)(s->h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(s->h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(s->h[i] >> 8);
        out[4 * i + 3] = (uint8_t)s->h[i];
    }
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* A Sec-WebSocket-Key is the base64 of 16 bytes: 22 characters and "==". */
static bool key_ok(const char *key)
{
    if (strlen(key) != 24 || strcmp(key + 22, "==") != 0)
        return false;
    for (int i = 0; i < 22; i++)
        if (!strchr(b64, key[i]) || key[i] == '\0')
            return false;
    return true;
}

int api__ws_accept(const char *key, char out[29])
{
    if (!key || !key_ok(key))
        return PD_EINVAL;
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    struct sha1 s = {.h = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0}};
    uint8_t d[21] = {0};
    sha1_update(&s, key, 24);
    sha1_update(&s, guid, sizeof guid - 1);
    sha1_final(&s, d);
    size_t o = 0;
    for (int i = 0; i < 21; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16 | (uint32_t)d[i + 1] << 8 | d[i + 2];
        out[o++] = b64[(v >> 18) & 63];
        out[o++] = b64[(v >> 12) & 63];
        out[o++] = b64[(v >> 6) & 63];
        out[o++] = b64[v & 63];
    }
    out[27] = '='; /* 20 bytes: the last group holds 2 of 3 */
    out[28] = '\0';
    return 0;
}
