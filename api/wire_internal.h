/*
 * wire_internal.h: pure parsers of what arrives on the wire (request
 * targets, path patterns, UTF-8, WebSocket frame headers). They do no I/O,
 * allocate nothing, hold no state and are safe from any thread; the HTTP
 * dispatcher and the WebSocket transport call them, and the fuzz targets in
 * tests/fuzz/ call them directly. Nothing here includes Ulfius.
 */
#ifndef PREDICTD_WIRE_INTERNAL_H
#define PREDICTD_WIRE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* True when s[0..n) is well-formed UTF-8 (no overlong forms, no surrogates,
 * nothing above U+10FFFF). */
bool api__utf8_valid(const char *s, size_t n);

/*
 * Checks a request target as sent (path and query, still %-encoded): every
 * '%' is followed by two hex digits, no escape decodes to NUL, and the
 * decoded path and query are valid UTF-8. Returns 0, or PD_EINVAL with a
 * reason (a static string) in *why.
 */
int api__url_check(const char *raw, size_t n, const char **why);

/*
 * Decodes %XX escapes of s[0..n) into out (cap bytes, NUL-terminated).
 * Strict: returns the decoded length, PD_EINVAL for a malformed escape or a
 * decoded NUL, PD_ETOOBIG when out is too small.
 */
int api__url_decode(const char *s, size_t n, char *out, size_t cap);

/* Path parameters of a matched pattern: names point into the pattern,
 * values into buf (decoded, NUL-terminated). */
#define API_PATH_PARAMS_MAX 4
#define API_PATH_MAX 2048
struct api_path_params {
    size_t n;
    const char *name[API_PATH_PARAMS_MAX];
    size_t name_len[API_PATH_PARAMS_MAX];
    const char *value[API_PATH_PARAMS_MAX];
    char buf[API_PATH_MAX + API_PATH_PARAMS_MAX];
};

/*
 * Matches a route pattern ("/api/models/:symbol/:timeframe") against a
 * request path as sent (%-encoded, without the query). Segments are split
 * on '/', empty ones ignored (so "/health/" is "/health"); a ":name"
 * segment matches any one segment, whose decoded value goes to *out.
 * Returns 1 on a match (out filled), 0 when the path does not match,
 * PD_EINVAL when a segment does not decode, PD_ETOOBIG for a path over
 * API_PATH_MAX bytes. out may be NULL to test the match alone.
 */
int api__path_match(const char *pattern, const char *path, size_t path_len,
                    struct api_path_params *out);

/* ------------------------------------------------------------------------
 * Headers (headers.c).
 */
/* True when origin is in the comma-separated list (exact match, spaces
 * around items ignored) or the list holds "*"; false for NULL. */
bool api__origin_allowed(const char *list, const char *origin);
/* True when an X-Request-Id may be echoed: 1..63 characters of
 * [A-Za-z0-9-_.:]. */
bool api__request_id_ok(const char *id);
/* True when a Content-Length value declares more than max bytes (or more
 * than fits in 64 bits). libmicrohttpd has already refused malformed ones. */
bool api__content_length_over(const char *value, unsigned long long max);

/* ------------------------------------------------------------------------
 * WebSocket frames (RFC 6455, section 5.2).
 */
enum {
    API_WS_CONT = 0x0,
    API_WS_TEXT = 0x1,
    API_WS_BINARY = 0x2,
    API_WS_CLOSE = 0x8,
    API_WS_PING = 0x9,
    API_WS_PONG = 0xA,
};

/* Close status codes predictd sends. */
enum {
    API_WS_CLOSE_NORMAL = 1000,
    API_WS_CLOSE_GOING_AWAY = 1001,
    API_WS_CLOSE_PROTOCOL = 1002,
    API_WS_CLOSE_UNSUPPORTED = 1003,
    API_WS_CLOSE_BAD_DATA = 1007,
    API_WS_CLOSE_TOO_BIG = 1009,
};

struct api_ws_frame {
    bool fin;
    uint8_t opcode;
    bool masked;
    uint8_t mask[4];
    uint64_t len;      /* payload bytes */
    size_t header_len; /* bytes of the header, mask included */
};

/*
 * Parses the header of one frame a client sent, from buf[0..n). Checks it
 * before a byte of payload is read: RSV bits clear (no extension is
 * negotiated), a known opcode, control frames final and at most 125 bytes,
 * the mask present (clients must mask), the most significant bit of a
 * 64-bit length clear, the length in its shortest form, and the payload at
 * most max_payload bytes. Returns 1 with *f filled when the header is
 * complete and acceptable, 0 when more bytes are needed, or a negative
 * API_WS_CLOSE_* code (-1002 protocol error, -1009 too big) to close with.
 */
int api__ws_frame_parse(const uint8_t *buf, size_t n, uint64_t max_payload, struct api_ws_frame *f);

/* Unmasks (or masks) data in place; offset is the payload position of
 * data[0] in its frame. */
void api__ws_unmask(uint8_t *data, size_t n, const uint8_t mask[4], uint64_t offset);

/* Writes the header of an unmasked server frame (FIN set) into out (at
 * least 10 bytes); returns its length. */
size_t api__ws_frame_header(uint8_t *out, uint8_t opcode, uint64_t len);

/* The Sec-WebSocket-Accept value of a Sec-WebSocket-Key: base64 of the
 * SHA-1 of key + the RFC's GUID, NUL-terminated in out (29 bytes). Returns
 * 0, or PD_EINVAL when the key is not the base64 of 16 bytes. */
int api__ws_accept(const char *key, char out[29]);

#endif
