/*
 * trades.c: trades in, 1m candles out. The trades CSV parser
 * (`time,id,side,price,amount`) and the aggregator (feed_agg_*) that every
 * trade source goes through: `predictd import` of a trades file, and the
 * connectors' sink.
 *
 * The aggregator keeps the last FEED_AGG_KEEP_MINUTES minutes in a ring
 * (contiguous: flat minutes included) so that a late trade can correct the
 * candle already emitted, and the ids of the trades of those minutes in an
 * open-addressing hash set so that a duplicate is ignored. A minute's open
 * and close are its first and last trade by (time, id), so the order trades
 * arrive in does not change the candle (the volume is a sum in arrival
 * order, equal to the last bits). A correction that changes a minute's
 * close re-prices the flat minutes after it (each is the close before it)
 * and emits them again.
 *
 * It does not write anything, sort input, or read a clock: the caller says
 * when time has passed (feed_agg_advance) or the input ended
 * (feed_agg_finish).
 *
 * Pure and thread-safe per object: an aggregator belongs to one thread at a
 * time; the parser has no state.
 */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "feed/feed.h"
#include "util/util.h"

/* ---------------------------------------------------------------------------
 * The aggregator.
 */
#define KEEP FEED_AGG_KEEP_MINUTES

typedef struct minute {
    int64_t mi; /* minute index: Unix seconds / 60 */
    double o, h, l, c, v;
    int64_t first_ms, first_id; /* the trade that set o */
    int64_t last_ms, last_id;   /* the trade that set c */
    uint32_t ntrades;           /* 0: a flat minute */
} minute;

typedef struct idset {
    int64_t *ids;  /* cap slots; EMPTY when free */
    int64_t *mins; /* the minute of the trade in the same slot */
    size_t cap, n; /* cap a power of two */
} idset;

struct feed_agg {
    minute ring[KEEP];
    bool have;          /* a first trade was seen */
    bool evicted;       /* minutes have left the ring */
    int64_t lo, hi;     /* minutes [lo, hi] are in the ring */
    int64_t emitted_to; /* minutes < emitted_to have been emitted */
    idset ids;
    feed_agg_stats st;
};

#define EMPTY INT64_MIN

static uint64_t mix(int64_t x)
{
    uint64_t z = (uint64_t)x + 0x9e3779b97f4a7c15u;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static int idset_alloc(idset *s, size_t cap)
{
    s->ids = malloc(cap * sizeof *s->ids);
    s->mins = malloc(cap * sizeof *s->mins);
    if (!s->ids || !s->mins) {
        free(s->ids);
        free(s->mins);
        s->ids = s->mins = NULL;
        return PD_ENOMEM;
    }
    for (size_t i = 0; i < cap; i++)
        s->ids[i] = EMPTY;
    s->cap = cap;
    s->n = 0;
    return 0;
}

static bool idset_has(const idset *s, int64_t id)
{
    for (size_t i = mix(id) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        if (s->ids[i] == EMPTY)
            return false;
        if (s->ids[i] == id)
            return true;
    }
}

static void idset_put_raw(idset *s, int64_t id, int64_t mi)
{
    size_t i = mix(id) & (s->cap - 1);
    while (s->ids[i] != EMPTY)
        i = (i + 1) & (s->cap - 1);
    s->ids[i] = id;
    s->mins[i] = mi;
    s->n++;
}

/* Rebuilds with the ids of minutes >= lo, in a table twice the size of
 * what remains (at least the current size). */
static int idset_rebuild(idset *s, int64_t lo)
{
    size_t keep = 0;
    for (size_t i = 0; i < s->cap; i++)
        keep += s->ids[i] != EMPTY && s->mins[i] >= lo;
    size_t cap = s->cap;
    while (keep * 2 + 2 > cap)
        cap *= 2;
    idset t;
    if (idset_alloc(&t, cap))
        return PD_ENOMEM;
    for (size_t i = 0; i < s->cap; i++)
        if (s->ids[i] != EMPTY && s->mins[i] >= lo)
            idset_put_raw(&t, s->ids[i], s->mins[i]);
    free(s->ids);
    free(s->mins);
    *s = t;
    return 0;
}

static int idset_put(idset *s, int64_t id, int64_t mi, int64_t lo)
{
    if ((s->n + 1) * 2 > s->cap) {
        int rc = idset_rebuild(s, lo);
        if (rc)
            return rc;
    }
    idset_put_raw(s, id, mi);
    return 0;
}

int feed_agg_new(feed_agg **out)
{
    if (!out)
        return PD_EINVAL;
    feed_agg *a = calloc(1, sizeof *a);
    if (!a)
        return PD_ENOMEM;
    if (idset_alloc(&a->ids, 1024)) {
        free(a);
        return PD_ENOMEM;
    }
    *out = a;
    return 0;
}

void feed_agg_free(feed_agg *a)
{
    if (!a)
        return;
    free(a->ids.ids);
    free(a->ids.mins);
    free(a);
}

void feed_agg_stats_get(const feed_agg *a, feed_agg_stats *out)
{
    *out = a->st;
}

static minute *slot(feed_agg *a, int64_t mi)
{
    return &a->ring[(size_t)(mi % KEEP)];
}

static int emit_minute(feed_agg *a, const minute *m, bool correction, feed_agg_emit_fn emit,
                       void *arg)
{
    features_candle c = {
        .t = m->mi * 60, .open = m->o, .high = m->h, .low = m->l, .close = m->c, .volume = m->v};
    a->st.emitted++;
    if (correction)
        a->st.corrections++;
    return emit ? emit(&c, correction, arg) : 0;
}

/* Appends minute hi + 1 as a flat candle at hi's close. */
static void extend_flat(feed_agg *a)
{
    double px = slot(a, a->hi)->c;
    a->hi++;
    minute *m = slot(a, a->hi);
    *m = (minute){.mi = a->hi, .o = px, .h = px, .l = px, .c = px, .v = 0};
    if (a->hi - a->lo >= KEEP) {
        a->lo = a->hi - KEEP + 1;
        a->evicted = true;
    }
}

static void start_minute(minute *m, int64_t mi, const feed_trade *t)
{
    *m = (minute){.mi = mi,
                  .o = t->price,
                  .h = t->price,
                  .l = t->price,
                  .c = t->price,
                  .v = t->amount,
                  .first_ms = t->t_ms,
                  .first_id = t->id,
                  .last_ms = t->t_ms,
                  .last_id = t->id,
                  .ntrades = 1};
}

static void add_trade(minute *m, const feed_trade *t)
{
    if (m->ntrades == 0) {
        start_minute(m, m->mi, t);
        return;
    }
    if (t->t_ms < m->first_ms || (t->t_ms == m->first_ms && t->id < m->first_id)) {
        m->o = t->price;
        m->first_ms = t->t_ms;
        m->first_id = t->id;
    }
    if (t->t_ms > m->last_ms || (t->t_ms == m->last_ms && t->id > m->last_id)) {
        m->c = t->price;
        m->last_ms = t->t_ms;
        m->last_id = t->id;
    }
    if (t->price > m->h)
        m->h = t->price;
    if (t->price < m->l)
        m->l = t->price;
    m->v += t->amount;
    m->ntrades++;
}

/* Emits minutes [emitted_to, to), creating flat ones past hi. */
static int emit_until(feed_agg *a, int64_t to, feed_agg_emit_fn emit, void *arg)
{
    while (a->emitted_to < to) {
        if (a->emitted_to > a->hi)
            extend_flat(a);
        int rc = emit_minute(a, slot(a, a->emitted_to), false, emit, arg);
        a->emitted_to++;
        if (rc)
            return rc;
    }
    return 0;
}

/* A trade of minute mi < lo (hi - mi < KEEP, nothing evicted): minute mi
 * from it, flat minutes from mi + 1 to lo - 1 at its close. The new minutes
 * are emitted now when the old first one was (they are older), else with
 * it. */
static int extend_back(feed_agg *a, int64_t mi, const feed_trade *t, feed_agg_emit_fn emit,
                       void *arg)
{
    int64_t old_lo = a->lo;
    start_minute(slot(a, mi), mi, t);
    for (int64_t k = mi + 1; k < old_lo; k++) {
        double px = t->price;
        *slot(a, k) = (minute){.mi = k, .o = px, .h = px, .l = px, .c = px};
    }
    a->lo = mi;
    if (a->emitted_to == old_lo) {
        a->emitted_to = mi; /* nothing emitted yet: they go out with the rest */
        return 0;
    }
    for (int64_t k = mi; k < old_lo; k++) {
        int rc = emit_minute(a, slot(a, k), false, emit, arg);
        if (rc)
            return rc;
    }
    return 0;
}

int feed_agg_push(feed_agg *a, const feed_trade *t, feed_agg_emit_fn emit, void *arg)
{
    if (!a || !t || !isfinite(t->price) || t->price <= 0 || !isfinite(t->amount) || t->amount < 0 ||
        t->t_ms < 0)
        return PD_EINVAL;
    int64_t mi = t->t_ms / 60000;
    if (!a->have) {
        a->have = true;
        a->lo = a->hi = a->emitted_to = mi;
        start_minute(slot(a, mi), mi, t);
        a->st.trades++;
        return idset_put(&a->ids, t->id, mi, a->lo);
    }
    if (idset_has(&a->ids, t->id)) {
        a->st.duplicates++;
        return 0;
    }
    if (mi < a->lo && (a->evicted || a->hi - mi >= KEEP)) {
        a->st.too_late++;
        return 0;
    }
    int rc = idset_put(&a->ids, t->id, mi, mi < a->lo ? mi : a->lo);
    if (rc)
        return rc;
    if (mi < a->lo) {
        /* Earlier than every minute so far, and nothing dropped yet: the
         * ring grows backwards (flat minutes up to the old first one). */
        a->st.trades++;
        return extend_back(a, mi, t, emit, arg);
    }
    a->st.trades++;
    if (mi - a->hi > FEED_AGG_MAX_GAP_MINUTES) {
        /* A jump of more than the longest gap filled: close what is open and
         * start again at this trade, without flat minutes across the gap. */
        if ((rc = emit_until(a, a->hi + 1, emit, arg)))
            return rc;
        a->lo = a->hi = a->emitted_to = mi;
        a->evicted = true;
        start_minute(slot(a, mi), mi, t);
        return 0;
    }
    if (mi > a->hi) {
        /* Closes the open minute and the flat ones up to this trade's. */
        if ((rc = emit_until(a, mi, emit, arg)))
            return rc;
        while (a->hi < mi - 1)
            extend_flat(a);
        a->hi = mi;
        start_minute(slot(a, mi), mi, t);
        if (a->hi - a->lo >= KEEP) {
            a->lo = a->hi - KEEP + 1;
            a->evicted = true;
        }
        return 0;
    }
    minute *m = slot(a, mi);
    double old_close = m->c;
    add_trade(m, t);
    if (mi < a->emitted_to) {
        if ((rc = emit_minute(a, m, true, emit, arg)))
            return rc;
    }
    /* Flat minutes after it follow its close. */
    double px = m->c;
    if (px == old_close)
        return 0;
    for (int64_t k = mi + 1; k <= a->hi; k++) {
        minute *f = slot(a, k);
        if (f->ntrades)
            break;
        f->o = f->h = f->l = f->c = px;
        if (k < a->emitted_to && (rc = emit_minute(a, f, true, emit, arg)))
            return rc;
    }
    return 0;
}

int feed_agg_advance(feed_agg *a, int64_t now_ms, feed_agg_emit_fn emit, void *arg)
{
    if (!a)
        return PD_EINVAL;
    if (!a->have || now_ms < 0)
        return 0;
    int64_t to = now_ms / 60000;
    if (to - a->hi > FEED_AGG_MAX_GAP_MINUTES + 1)
        to = a->hi + FEED_AGG_MAX_GAP_MINUTES + 1; /* no more flat minutes than that */
    return emit_until(a, to, emit, arg);
}

int feed_agg_finish(feed_agg *a, feed_agg_emit_fn emit, void *arg)
{
    if (!a)
        return PD_EINVAL;
    if (!a->have)
        return 0;
    return emit_until(a, a->hi + 1, emit, arg);
}

/* ---------------------------------------------------------------------------
 * The trades CSV.
 */
static int fail(char *why, size_t whylen, size_t line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *why, size_t whylen, size_t line, const char *fmt, ...)
{
    if (why && whylen) {
        int k = snprintf(why, whylen, "line %zu: ", line);
        if (k >= 0 && (size_t)k < whylen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(why + k, whylen - (size_t)k, fmt, ap);
            va_end(ap);
        }
    }
    return PD_EPARSE;
}

#define NCOL 5
#define FIELD_MAX 64

/* Splits one line into trimmed, unquoted fields; returns the count (up to
 * NCOL + 1: more means too many). */
static size_t split(const char *p, size_t len, char f[NCOL + 1][FIELD_MAX], bool *toolong)
{
    size_t n = 0, start = 0;
    *toolong = false;
    for (size_t i = 0; i <= len && n <= NCOL; i++) {
        if (i < len && p[i] != ',')
            continue;
        const char *q = p + start;
        size_t l = i - start;
        while (l && (*q == ' ' || *q == '\t')) {
            q++;
            l--;
        }
        while (l && (q[l - 1] == ' ' || q[l - 1] == '\t'))
            l--;
        if (l >= 2 && q[0] == '"' && q[l - 1] == '"') {
            q++;
            l -= 2;
        }
        if (l >= FIELD_MAX) {
            *toolong = true;
            l = FIELD_MAX - 1;
        }
        memcpy(f[n], q, l);
        f[n][l] = 0;
        n++;
        start = i + 1;
    }
    return n;
}

static const char *skip_bom(const char *text, size_t *len)
{
    if (*len >= 3 && (unsigned char)text[0] == 0xEF && (unsigned char)text[1] == 0xBB &&
        (unsigned char)text[2] == 0xBF) {
        *len -= 3;
        return text + 3;
    }
    return text;
}

/* The next line [*pos, end) without its CR; false at the end. */
static bool next_line(const char *text, size_t len, size_t *pos, const char **line, size_t *llen)
{
    if (*pos >= len)
        return false;
    const char *p = text + *pos;
    const char *nl = memchr(p, '\n', len - *pos);
    size_t l = nl ? (size_t)(nl - p) : len - *pos;
    *pos += l + (nl ? 1 : 0);
    if (l && p[l - 1] == '\r')
        l--;
    *line = p;
    *llen = l;
    return true;
}

static bool blank(const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!isspace((unsigned char)p[i]))
            return false;
    return true;
}

static bool is_header(char f[NCOL + 1][FIELD_MAX], size_t n)
{
    static const char *const names[NCOL] = {"time", "id", "side", "price", "amount"};
    if (n != NCOL)
        return false;
    for (size_t i = 0; i < NCOL; i++)
        if (strcasecmp(f[i], names[i]) != 0)
            return false;
    return true;
}

bool feed_trades_csv_is(const char *text, size_t len)
{
    if (!text)
        return false;
    text = skip_bom(text, &len);
    size_t pos = 0, l;
    const char *line;
    while (next_line(text, len, &pos, &line, &l)) {
        if (blank(line, l))
            continue;
        char f[NCOL + 1][FIELD_MAX];
        bool toolong;
        size_t n = split(line, l, f, &toolong);
        return !toolong && is_header(f, n);
    }
    return false;
}

/* Epoch s/ms/us by magnitude, or RFC 3339 with an optional fraction. */
static int parse_time_ms(const char *s, int64_t *out)
{
    if (isdigit((unsigned char)s[0]) && !strpbrk(s, "-:T ")) {
        char *end;
        double v = strtod(s, &end);
        /* beyond 1e17 (microseconds: the year 5138) it is no time, and the
         * conversion below would overflow */
        if (*end || !isfinite(v) || v < 0 || v >= 1e17)
            return PD_EINVAL;
        *out = v < 1e11 ? (int64_t)(v * 1000) : v < 1e14 ? (int64_t)v : (int64_t)(v / 1000);
        return 0;
    }
    int64_t secs;
    if (util_parse_time(s, &secs))
        return PD_EINVAL;
    int64_t ms = 0;
    const char *dot = strlen(s) > 19 && s[19] == '.' ? s + 20 : NULL;
    if (dot) {
        int digits = 0;
        for (; isdigit((unsigned char)*dot) && digits < 3; dot++, digits++)
            ms = ms * 10 + (*dot - '0');
        for (; digits < 3; digits++)
            ms *= 10;
    }
    *out = secs * 1000 + ms;
    return 0;
}

static int parse_row(char f[NCOL + 1][FIELD_MAX], size_t line, feed_trade *t, char *why,
                     size_t whylen)
{
    if (parse_time_ms(f[0], &t->t_ms) || t->t_ms < 0)
        return fail(why, whylen, line, "time \"%s\" is not RFC 3339 or epoch", f[0]);
    char *end;
    long long id = strtoll(f[1], &end, 10);
    if (!f[1][0] || *end)
        return fail(why, whylen, line, "id \"%s\" is not an integer", f[1]);
    t->id = id;
    if (!strcasecmp(f[2], "buy"))
        t->side = FEED_SIDE_BUY;
    else if (!strcasecmp(f[2], "sell"))
        t->side = FEED_SIDE_SELL;
    else
        return fail(why, whylen, line, "side \"%s\" is not buy or sell", f[2]);
    t->price = strtod(f[3], &end);
    if (!f[3][0] || *end || !isfinite(t->price) || t->price <= 0)
        return fail(why, whylen, line, "price \"%s\" is not a positive number", f[3]);
    t->amount = strtod(f[4], &end);
    if (!f[4][0] || *end || !isfinite(t->amount) || t->amount < 0)
        return fail(why, whylen, line, "amount \"%s\" is not a number >= 0", f[4]);
    return 0;
}

int feed_trades_csv_parse(const char *text, size_t len, feed_trade **out, size_t *n, char *why,
                          size_t whylen)
{
    if (!text || !out || !n)
        return PD_EINVAL;
    text = skip_bom(text, &len);
    size_t cap = 1024, cnt = 0, pos = 0, lineno = 0, l;
    feed_trade *v = malloc(cap * sizeof *v);
    if (!v)
        return PD_ENOMEM;
    const char *line;
    bool header_seen = false;
    int rc = 0;
    while (next_line(text, len, &pos, &line, &l)) {
        lineno++;
        if (blank(line, l))
            continue;
        char f[NCOL + 1][FIELD_MAX];
        bool toolong;
        size_t k = split(line, l, f, &toolong);
        if (!header_seen) {
            header_seen = true;
            if (is_header(f, k))
                continue;
            rc = fail(why, whylen, lineno, "expected the header time,id,side,price,amount");
            break;
        }
        if (k != NCOL) {
            rc = fail(why, whylen, lineno, "%zu fields, expected 5", k);
            break;
        }
        if (toolong) {
            rc = fail(why, whylen, lineno, "a field is longer than %d bytes", FIELD_MAX - 1);
            break;
        }
        if (cnt == cap) {
            feed_trade *nv = realloc(v, 2 * cap * sizeof *v);
            if (!nv) {
                rc = PD_ENOMEM;
                break;
            }
            v = nv;
            cap *= 2;
        }
        if ((rc = parse_row(f, lineno, &v[cnt], why, whylen)))
            break;
        cnt++;
    }
    if (rc == 0 && !header_seen)
        rc = fail(why, whylen, 1, "empty file: expected the header time,id,side,price,amount");
    if (rc) {
        free(v);
        return rc;
    }
    *out = v;
    *n = cnt;
    return 0;
}
