/*
 * csv.c: candle CSV parsing for `predictd import` and `predictd features`.
 *
 * Two layouts, told apart by the number of columns:
 *   12  Binance kline dumps: open_time, open, high, low, close, volume,
 *       close_time, quote_volume, trades, taker_base, taker_quote, ignore
 *       (only the first six are read);
 *    6  open_time, open, high, low, close, volume.
 * Either may start with a header row (a first line whose first field starts
 * with a letter). Open times are RFC 3339 / ISO dates (util_parse_time) or
 * integers in epoch seconds, milliseconds or microseconds, told apart per
 * value by magnitude (< 1e11: s, < 1e14: ms, < 1e17: us; sub-second parts
 * are dropped). CRLF or LF line ends, a UTF-8 byte-order mark, blank lines,
 * spaces around fields and double quotes around a field are accepted.
 *
 * It checks each row on its own (numbers, finite, prices > 0, volume >= 0,
 * high >= low, column count) and the rows together (no two with the same
 * open time), and returns them sorted by open time. It does not check that
 * times are aligned to a timeframe (the CSV does not say which): the store
 * rejects misaligned candles when they are written.
 *
 * Pure and thread-safe: no I/O, no globals.
 */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "features/features.h"
#include "feed/feed.h"
#include "util/util.h"

#define MAX_COLS 16
#define FIELD_MAX 64

typedef struct field {
    const char *p;
    size_t len;
} field;

typedef struct row {
    features_candle c;
    size_t line;
} row;

static int fail(char *why, size_t whylen, size_t line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *why, size_t whylen, size_t line, const char *fmt, ...)
{
    if (why && whylen) {
        int k = line ? snprintf(why, whylen, "line %zu: ", line) : 0;
        if (k >= 0 && (size_t)k < whylen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(why + k, whylen - (size_t)k, fmt, ap);
            va_end(ap);
        }
    }
    return PD_EPARSE;
}

/* Trims spaces and one pair of surrounding double quotes. */
static field trim(const char *p, size_t len)
{
    while (len && (*p == ' ' || *p == '\t')) {
        p++;
        len--;
    }
    while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
        len--;
    if (len >= 2 && p[0] == '"' && p[len - 1] == '"') {
        p++;
        len -= 2;
    }
    return (field){p, len};
}

/* Splits a line at commas; returns the number of fields (MAX_COLS + 1 means
 * "more than MAX_COLS"). */
static size_t split(const char *p, size_t len, field *f)
{
    size_t n = 0;
    const char *end = p + len;
    for (;;) {
        const char *c = memchr(p, ',', (size_t)(end - p));
        const char *fe = c ? c : end;
        if (n == MAX_COLS)
            return MAX_COLS + 1;
        f[n++] = trim(p, (size_t)(fe - p));
        if (!c)
            return n;
        p = c + 1;
    }
}

/* Copies a field into a NUL-terminated buffer; false when too long. */
static bool field_str(field f, char buf[FIELD_MAX])
{
    if (f.len >= FIELD_MAX)
        return false;
    memcpy(buf, f.p, f.len);
    buf[f.len] = '\0';
    return true;
}

static const char *const col_names[6] = {"open_time", "open", "high", "low", "close", "volume"};

static int parse_num(field f, size_t line, int col, double *out, char *why, size_t whylen)
{
    char buf[FIELD_MAX], *end;
    if (f.len == 0)
        return fail(why, whylen, line, "%s is empty", col_names[col]);
    if (!field_str(f, buf))
        return fail(why, whylen, line, "%s is too long", col_names[col]);
    double v = strtod(buf, &end);
    if (end == buf || *end)
        return fail(why, whylen, line, "%s is not a number ('%s')", col_names[col], buf);
    if (!isfinite(v))
        return fail(why, whylen, line, "%s is not finite ('%s')", col_names[col], buf);
    *out = v;
    return 0;
}

static int parse_time(field f, size_t line, int64_t *out, char *why, size_t whylen)
{
    char buf[FIELD_MAX];
    if (f.len == 0)
        return fail(why, whylen, line, "open_time is empty");
    if (!field_str(f, buf))
        return fail(why, whylen, line, "open_time is too long");
    bool digits = true;
    for (size_t i = 0; i < f.len; i++)
        digits &= isdigit((unsigned char)buf[i]) != 0;
    if (!digits) {
        if (util_parse_time(buf, out) == 0)
            return 0;
        return fail(why, whylen, line, "open_time is neither a date-time nor epoch digits ('%s')",
                    buf);
    }
    if (f.len > 17)
        return fail(why, whylen, line, "open_time is out of range ('%s')", buf);
    int64_t v = strtoll(buf, NULL, 10);
    if (v < INT64_C(100000000000))
        *out = v; /* seconds */
    else if (v < INT64_C(100000000000000))
        *out = v / 1000; /* milliseconds */
    else
        *out = v / 1000000; /* microseconds */
    return 0;
}

static int parse_row(const field *f, size_t line, features_candle *c, char *why, size_t whylen)
{
    double v[5];
    int rc = parse_time(f[0], line, &c->t, why, whylen);
    for (int i = 0; i < 5 && rc == 0; i++)
        rc = parse_num(f[i + 1], line, i + 1, &v[i], why, whylen);
    if (rc)
        return rc;
    for (int i = 0; i < 4; i++)
        if (v[i] <= 0)
            return fail(why, whylen, line, "%s must be positive (%g)", col_names[i + 1], v[i]);
    if (v[4] < 0)
        return fail(why, whylen, line, "volume is negative (%g)", v[4]);
    if (v[1] < v[2])
        return fail(why, whylen, line, "high (%g) is below low (%g)", v[1], v[2]);
    c->open = v[0];
    c->high = v[1];
    c->low = v[2];
    c->close = v[3];
    c->volume = v[4];
    return 0;
}

static int row_cmp(const void *a, const void *b)
{
    const row *x = a, *y = b;
    if (x->c.t != y->c.t)
        return x->c.t < y->c.t ? -1 : 1;
    return (x->line > y->line) - (x->line < y->line);
}

static bool blank(const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (p[i] != ' ' && p[i] != '\t')
            return false;
    return true;
}

int feed_csv_parse(const char *text, size_t len, features_candle **out, size_t *n, char *why,
                       size_t whylen)
{
    return feed_csv_parse_for(text, len, NULL, out, n, why, whylen);
}

int feed_csv_parse_for(const char *text, size_t len, const char *tf, features_candle **out,
                       size_t *n, char *why, size_t whylen)
{
    int64_t tf_s = tf ? util_tf_seconds(tf) : 0;
    if ((!text && len) || !out || !n || (tf && !tf_s))
        return PD_EINVAL;
    const char *p = text, *end = text + len;
    if (len >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0)
        p += 3;
    row *rows = NULL;
    size_t nrows = 0, cap = 0, line = 0, ncols = 0;
    bool first = true, sorted = true;
    int rc = 0;
    field f[MAX_COLS];
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        size_t l = (size_t)(le - p);
        if (l && p[l - 1] == '\r')
            l--;
        line++;
        const char *s = p;
        p = nl ? nl + 1 : end;
        if (blank(s, l))
            continue;
        size_t k = split(s, l, f);
        if (first) {
            first = false;
            if (f[0].len && isalpha((unsigned char)f[0].p[0])) {
                /* A header: it fixes the column count. */
                if (k != 6 && k != 12) {
                    rc = fail(why, whylen, line, "header has %zu columns, expected 6 or 12", k);
                    break;
                }
                ncols = k;
                continue;
            }
        }
        if (!ncols) {
            if (k != 6 && k != 12) {
                rc = fail(why, whylen, line, "expected 6 or 12 columns, got %zu", k);
                break;
            }
            ncols = k;
        }
        if (k != ncols) {
            if (k > MAX_COLS)
                rc = fail(why, whylen, line, "expected %zu columns, got more than %d", ncols,
                          MAX_COLS);
            else
                rc = fail(why, whylen, line, "expected %zu columns, got %zu", ncols, k);
            break;
        }
        if (nrows == cap) {
            cap = cap ? cap * 2 : 1024;
            row *nr = realloc(rows, cap * sizeof *rows);
            if (!nr) {
                rc = PD_ENOMEM;
                break;
            }
            rows = nr;
        }
        if ((rc = parse_row(f, line, &rows[nrows].c, why, whylen)))
            break;
        if (tf_s && rows[nrows].c.t % tf_s != 0) {
            char ts[32];
            rc = fail(why, whylen, line,
                      "open time %s is not on a %s candle boundary (wrong --timeframe?)",
                      util_rfc3339(rows[nrows].c.t, ts), tf);
            break;
        }
        rows[nrows].line = line;
        if (nrows && rows[nrows].c.t <= rows[nrows - 1].c.t)
            sorted = false;
        nrows++;
    }
    if (rc == 0 && nrows == 0)
        rc = fail(why, whylen, 0, "no candle rows");
    if (rc) {
        free(rows);
        return rc;
    }
    if (!sorted)
        qsort(rows, nrows, sizeof *rows, row_cmp);
    /* Report the duplicate that shows up first in the file. */
    size_t dup = 0, dup_line = 0;
    for (size_t i = 1; i < nrows; i++) {
        size_t later = rows[i].line > rows[i - 1].line ? rows[i].line : rows[i - 1].line;
        if (rows[i].c.t == rows[i - 1].c.t && (!dup || later < dup_line)) {
            dup = i;
            dup_line = later;
        }
    }
    if (dup) {
        char ts[32];
        size_t a = rows[dup - 1].line, b = rows[dup].line;
        rc = fail(why, whylen, dup_line, "duplicate open time %s (also on line %zu)",
                  util_rfc3339(rows[dup].c.t, ts), a < b ? a : b);
        free(rows);
        return rc;
    }
    features_candle *c = malloc(nrows * sizeof *c);
    if (!c) {
        free(rows);
        return PD_ENOMEM;
    }
    for (size_t i = 0; i < nrows; i++)
        c[i] = rows[i].c;
    free(rows);
    *out = c;
    *n = nrows;
    return 0;
}
