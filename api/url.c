/*
 * url.c: strict parsing of request targets and path patterns (pure).
 *
 * libmicrohttpd and Ulfius decode %-escapes leniently: a '%' not followed by
 * two hex digits is kept or misread ("%g0" became a NUL, "%zz" another
 * letter), and a NUL cuts a C string short. The dispatcher therefore checks
 * the target as sent with api__url_check before anything decodes it, and
 * decodes path segments itself with api__url_decode; a target that fails is
 * answered 400 and never reaches a handler. The query is decoded by
 * libmicrohttpd once it has passed the check, when lenient and strict
 * decoding agree.
 *
 * It does not split the query into parameters (libmicrohttpd does) or know
 * the routes (routes.c). Threading: no state; every function is reentrant.
 */
#include <string.h>

#include "api/wire_internal.h"
#include "util/util.h"

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool api__utf8_valid(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        unsigned cp, min;
        if ((c & 0xE0) == 0xC0) {
            need = 1, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            need = 2, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            need = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (n - i <= need)
            return false;
        for (size_t k = 1; k <= need; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += need + 1;
    }
    return true;
}

int api__url_decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%') {
            if (n - i < 3)
                return PD_EINVAL;
            int a = hexval((unsigned char)s[i + 1]), b = hexval((unsigned char)s[i + 2]);
            if (a < 0 || b < 0)
                return PD_EINVAL;
            c = (unsigned char)(a << 4 | b);
            if (c == 0)
                return PD_EINVAL;
            i += 2;
        } else if (c == 0) {
            return PD_EINVAL;
        }
        if (o + 1 >= cap)
            return PD_ETOOBIG;
        out[o++] = (char)c;
    }
    if (o >= cap)
        return PD_ETOOBIG;
    out[o] = '\0';
    return (int)o;
}

/* Checks one %-encoded part (path or query) and its decoded UTF-8. */
static int check_part(const char *s, size_t n, const char **why)
{
    /* decoded bytes are checked for UTF-8 in chunks, carrying the tail of
     * an incomplete sequence over, so no buffer of the part's size is
     * needed */
    char chunk[256];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%') {
            if (n - i < 3 || hexval((unsigned char)s[i + 1]) < 0 ||
                hexval((unsigned char)s[i + 2]) < 0) {
                *why = "a '%' in the URL is not followed by two hex digits";
                return PD_EINVAL;
            }
            c = (unsigned char)(hexval((unsigned char)s[i + 1]) << 4 |
                                hexval((unsigned char)s[i + 2]));
            if (c == 0) {
                *why = "the URL contains an encoded NUL byte (%00)";
                return PD_EINVAL;
            }
            i += 2;
        } else if (c == 0) {
            *why = "the URL contains a NUL byte";
            return PD_EINVAL;
        }
        chunk[k++] = (char)c;
        if (k == sizeof chunk) {
            /* keep an incomplete trailing sequence for the next chunk */
            size_t cut = k;
            for (size_t back = 1; back <= 3 && back <= k; back++) {
                unsigned char t = (unsigned char)chunk[k - back];
                if ((t & 0xC0) == 0xC0) { /* a lead byte */
                    size_t len = (t & 0xE0) == 0xC0 ? 2 : (t & 0xF0) == 0xE0 ? 3 : 4;
                    if (len > back)
                        cut = k - back;
                    break;
                }
                if ((t & 0xC0) != 0x80)
                    break;
            }
            if (!api__utf8_valid(chunk, cut)) {
                *why = "the URL does not decode to UTF-8";
                return PD_EINVAL;
            }
            memmove(chunk, chunk + cut, k - cut);
            k -= cut;
        }
    }
    if (!api__utf8_valid(chunk, k)) {
        *why = "the URL does not decode to UTF-8";
        return PD_EINVAL;
    }
    return 0;
}

int api__url_check(const char *raw, size_t n, const char **why)
{
    const char *q = memchr(raw, '?', n);
    size_t plen = q ? (size_t)(q - raw) : n;
    int rc = check_part(raw, plen, why);
    if (rc == 0 && q)
        rc = check_part(q + 1, n - plen - 1, why);
    return rc;
}

/* The next non-empty segment of s[*pos..n) split on '/'. */
static bool next_segment(const char *s, size_t n, size_t *pos, const char **seg, size_t *len)
{
    size_t i = *pos;
    while (i < n && s[i] == '/')
        i++;
    if (i >= n) {
        *pos = i;
        return false;
    }
    size_t start = i;
    while (i < n && s[i] != '/')
        i++;
    *seg = s + start;
    *len = i - start;
    *pos = i;
    return true;
}

int api__path_match(const char *pattern, const char *path, size_t path_len,
                    struct api_path_params *out)
{
    if (path_len > API_PATH_MAX)
        return PD_ETOOBIG;
    size_t plen = strlen(pattern), pp = 0, up = 0, used = 0, np = 0;
    const char *ps = NULL, *us = NULL;
    size_t psl = 0, usl = 0;
    for (;;) {
        bool hp = next_segment(pattern, plen, &pp, &ps, &psl);
        bool hu = next_segment(path, path_len, &up, &us, &usl);
        if (!hp || !hu) {
            if (hp != hu)
                return 0;
            break;
        }
        if (ps[0] == ':') {
            if (np >= API_PATH_PARAMS_MAX)
                return PD_EINVAL;
            if (out) {
                int n = api__url_decode(us, usl, out->buf + used, sizeof out->buf - used);
                if (n < 0)
                    return n;
                out->name[np] = ps + 1;
                out->name_len[np] = psl - 1;
                out->value[np] = out->buf + used;
                used += (size_t)n + 1;
            }
            np++;
        } else {
            char dec[API_PATH_MAX + 1];
            int n = api__url_decode(us, usl, dec, sizeof dec);
            if (n < 0)
                return n;
            if ((size_t)n != psl || memcmp(dec, ps, psl) != 0)
                return 0;
        }
    }
    if (out)
        out->n = np;
    return 1;
}
