/*
 * demo.c: the demo feed on real prices. Real 1m candles (data/demo/, the
 * freqtrade test data of ../shared/data) are relabelled by a whole number
 * of minutes D per symbol so that the first FEED_DEMO_SEED_PERCENT % of a
 * file end at the last closed minute when it is seeded; the connector then
 * replays the rest, writing candle i when its relabelled close (t_i + D +
 * 60) has passed: one base candle a minute, at real time, through the sink
 * and store_upsert_base_candles like any exchange feed. PostgreSQL derives
 * 5m..1d from them, so a symbol's timeframes agree by construction.
 *
 * D is not stored: it is found again from the database, as the distance
 * between the symbol's first 1m candle and the file's first candle (whose
 * values must match: otherwise the series is not this demo's and is left
 * alone). A restart resumes after the last 1m candle stored, and writes the
 * minutes it missed at once (or one per PREDICTD_DEMO_STEP_MS when set).
 * When a file is exhausted its symbol stops; when all are, the feed is
 * "down" (restart with an empty database for another round).
 *
 * THREADING: one replay thread per connector (seeding, resuming and
 * replaying, on its own store connection); start/stop from one thread.
 * stop is guarded by mu/cv.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include "feed/feed.h"
#include "store/store.h"
#include "util/util.h"

#define MOD "feed"
#define FILE_MAX (64u << 20) /* bytes of one uncompressed demo file */
#define SOURCE                                                                                     \
    "real 1m candles shipped in data/demo (freqtrade test data, see its README), "                 \
    "relabelled to end at the current minute and replayed at real time"

typedef struct series {
    char symbol[24];
    features_candle *c; /* the file's candles, original times */
    size_t n, nseed;
    int64_t shift; /* D: seconds added to the file's times */
    size_t next;   /* the next candle to replay */
    bool active;
} series;

typedef struct demo {
    series *s;
    size_t n;
    int64_t step_ms;
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping; /* mu */
    feed_sink *sink;
} demo;

/* ---------------------------------------------------------------------------
 * Files.
 */
static int read_gz(const char *path, char **out, size_t *len)
{
    gzFile f = gzopen(path, "rb");
    if (!f)
        return errno == ENOENT ? PD_ENOTFOUND : PD_EIO;
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap);
    int rc = buf ? 0 : PD_ENOMEM;
    while (rc == 0) {
        if (n + 65536 > cap) {
            if (cap >= FILE_MAX) {
                rc = PD_ETOOBIG;
                break;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                rc = PD_ENOMEM;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        int k = gzread(f, buf + n, 65536);
        int zerr = Z_OK;
        if (k == 0) /* a stream cut short ends without -1: gzerror says so */
            (void)gzerror(f, &zerr);
        if (k < 0 || (k == 0 && zerr != Z_OK))
            rc = PD_EIO;
        else if (k == 0)
            break;
        else
            n += (size_t)k;
    }
    gzclose(f);
    if (rc) {
        free(buf);
        return rc;
    }
    *out = buf;
    *len = n;
    return 0;
}

static int load_series(const char *path, series *s, char *why, size_t whylen)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t k = strcspn(base, "_.");
    if (k == 0 || k >= sizeof s->symbol) {
        snprintf(why, whylen, "%s: the file name must start with the symbol and '_'", path);
        return PD_EINVAL;
    }
    memcpy(s->symbol, base, k);
    s->symbol[k] = 0;
    if (!util_symbol_valid(s->symbol)) {
        snprintf(why, whylen, "%s: '%s' is not a symbol", path, s->symbol);
        return PD_EINVAL;
    }
    char *text;
    size_t len;
    int rc = read_gz(path, &text, &len);
    if (rc) {
        snprintf(why, whylen, "%s: %s", path, util_strerror(rc));
        return rc;
    }
    char pwhy[200] = "";
    rc = feed_csv_parse(text, len, &s->c, &s->n, pwhy, sizeof pwhy);
    free(text);
    if (rc) {
        snprintf(why, whylen, "%s: %s", path, pwhy[0] ? pwhy : util_strerror(rc));
        return rc;
    }
    for (size_t i = 0; i < s->n; i++)
        if (s->c[i].t % 60) {
            snprintf(why, whylen, "%s: candle %zu is not on a minute: not 1m candles", path, i + 1);
            free(s->c);
            s->c = NULL;
            return PD_EPARSE;
        }
    if (s->n < 2) {
        snprintf(why, whylen, "%s: fewer than 2 candles", path);
        free(s->c);
        s->c = NULL;
        return PD_EPARSE;
    }
    s->nseed = s->n * FEED_DEMO_SEED_PERCENT / 100;
    if (s->nseed < 1)
        s->nseed = 1;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_series(series *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(s[i].c);
    free(s);
}

/* Loads every file of the list (or of the demo directory). */
static int load_all(const char *files, series **out, size_t *n, char *why, size_t whylen)
{
    char *paths[64];
    size_t np = 0;
    int rc = 0;
    if (files && *files) {
        const char *p = files;
        while (*p && np < 64) {
            size_t k = strcspn(p, ",");
            if (k && !(paths[np++] = strndup(p, k))) {
                rc = PD_ENOMEM;
                break;
            }
            p += k + (p[k] == ',');
        }
    } else {
        const char *dir = getenv("PREDICTD_DEMO_DIR");
        if (!dir || !*dir)
            dir = "data/demo";
        DIR *d = opendir(dir);
        if (!d) {
            snprintf(why, whylen, "demo directory %s: %s", dir, strerror(errno));
            return PD_ENOTFOUND;
        }
        struct dirent *e;
        while ((e = readdir(d)) && np < 64) {
            size_t l = strlen(e->d_name);
            if (l < 8 || e->d_name[0] == '.' || strcmp(e->d_name + l - 7, ".csv.gz"))
                continue;
            char buf[4096];
            snprintf(buf, sizeof buf, "%s/%s", dir, e->d_name);
            if (!(paths[np++] = strdup(buf))) {
                rc = PD_ENOMEM;
                break;
            }
        }
        closedir(d);
    }
    if (rc == 0 && np == 0) {
        snprintf(why, whylen, "no demo files (*.csv.gz)");
        rc = PD_ENOTFOUND;
    }
    series *s = NULL;
    if (rc == 0) {
        qsort(paths, np, sizeof *paths, cmp_str);
        if (!(s = calloc(np, sizeof *s)))
            rc = PD_ENOMEM;
    }
    size_t ns = 0;
    for (size_t i = 0; rc == 0 && i < np; i++) {
        if ((rc = load_series(paths[i], &s[ns], why, whylen)))
            break;
        for (size_t j = 0; j < ns; j++)
            if (!strcmp(s[j].symbol, s[ns].symbol)) {
                snprintf(why, whylen, "%s: a second file for %s", paths[i], s[ns].symbol);
                free(s[ns].c);
                rc = PD_EINVAL;
            }
        ns += rc == 0;
    }
    for (size_t i = 0; i < np; i++)
        free(paths[i]);
    if (rc) {
        free_series(s, ns);
        return rc;
    }
    *out = s;
    *n = ns;
    return 0;
}

/* ---------------------------------------------------------------------------
 * Seeding and resuming.
 */
static features_candle relabel(const series *s, size_t i)
{
    features_candle c = s->c[i];
    c.t += s->shift;
    return c;
}

/* Writes the seed part when the symbol has no 1m candles. */
static int seed_one(series *s, int64_t now, int behind, bool *wrote)
{
    *wrote = false;
    int64_t count;
    int rc = store_count_candles(s->symbol, "1m", &count);
    if (rc || count > 0)
        return rc;
    int64_t last_closed = (now / 60) * 60 - 60 - (int64_t)behind * 60;
    s->shift = last_closed - s->c[s->nseed - 1].t;
    features_candle *c = malloc(s->nseed * sizeof *c);
    if (!c)
        return PD_ENOMEM;
    for (size_t i = 0; i < s->nseed; i++)
        c[i] = relabel(s, i);
    rc = store_upsert_base_candles(s->symbol, c, s->nseed);
    free(c);
    if (rc == 0) {
        *wrote = true;
        LOG_INFO(MOD, "demo: seeded %s with %zu real 1m candles ending at the last closed minute",
                 s->symbol, s->nseed);
    }
    return rc;
}

static bool same_values(const features_candle *a, const features_candle *b)
{
    return a->open == b->open && a->high == b->high && a->low == b->low && a->close == b->close &&
           a->volume == b->volume;
}

/* Finds D and the next candle from what the database holds. */
static int resume(series *s, int64_t now)
{
    features_candle *c = NULL;
    size_t n = 0;
    int rc = store_load_range(s->symbol, "1m", 0, 0, now, &c, &n);
    if (rc == PD_EUNKNOWNSYM || (rc == 0 && n == 0)) {
        free(c);
        return PD_ENOTFOUND;
    }
    if (rc)
        return rc;
    if (!same_values(&c[0], &s->c[0]) || (c[0].t - s->c[0].t) % 60) {
        LOG_WARN(MOD, "demo: %s 1m candles are not this demo's data; not replaying it", s->symbol);
        free(c);
        return PD_EINVAL;
    }
    s->shift = c[0].t - s->c[0].t;
    int64_t last = c[n - 1].t;
    free(c);
    size_t i = 0;
    while (i < s->n && s->c[i].t + s->shift <= last)
        i++;
    s->next = i;
    s->active = true;
    LOG_INFO(MOD, "demo: %s resumes at candle %zu of %zu", s->symbol, i, s->n);
    return 0;
}

int feed_demo_seed(const char *files, int64_t now, int behind_minutes, size_t *seeded, char *why,
                   size_t whylen)
{
    char dummy[8];
    if (!why || !whylen) {
        why = dummy;
        whylen = sizeof dummy;
    }
    why[0] = 0;
    if (behind_minutes < 0 || behind_minutes > 100000)
        return PD_EINVAL;
    series *s;
    size_t n;
    int rc = load_all(files, &s, &n, why, whylen);
    if (rc)
        return rc;
    size_t k = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        bool wrote;
        rc = seed_one(&s[i], now, behind_minutes, &wrote);
        k += wrote;
        if (rc)
            snprintf(why, whylen, "%s: %s", s[i].symbol, util_strerror(rc));
    }
    free_series(s, n);
    if (rc == 0 && seeded)
        *seeded = k;
    return rc;
}

/* ---------------------------------------------------------------------------
 * The replay thread.
 */
static bool wait_stop(demo *d, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&d->mu);
    while (!d->stopping && pthread_cond_timedwait(&d->cv, &d->mu, &ts) == 0)
        ;
    bool stop = d->stopping;
    pthread_mutex_unlock(&d->mu);
    return stop;
}

static void *replay(void *arg)
{
    demo *d = arg;
    /* Seed and resume, retrying while the database is away. */
    size_t ready = 0;
    bool *done = calloc(d->n, sizeof *done);
    while (done && ready < d->n) {
        for (size_t i = 0; i < d->n; i++) {
            if (done[i])
                continue;
            series *s = &d->s[i];
            bool wrote;
            int rc = seed_one(s, util_now(), 0, &wrote);
            if (rc == 0)
                rc = resume(s, util_now());
            if (rc == PD_EDB)
                continue;
            done[i] = true;
            ready++;
        }
        if (ready < d->n && wait_stop(d, 1000))
            break;
    }
    free(done);
    features_candle *buf = NULL;
    size_t cap = 0;
    bool ended_logged = false;
    while (!wait_stop(d, d->step_ms > 0 ? d->step_ms : 1000)) {
        int64_t now = util_now();
        size_t live = 0, behind = 0, errors = 0;
        for (size_t i = 0; i < d->n; i++) {
            series *s = &d->s[i];
            if (!s->active || s->next >= s->n)
                continue;
            live++;
            size_t k = 0;
            while (s->next + k < s->n && s->c[s->next + k].t + s->shift + 60 <= now &&
                   (d->step_ms <= 0 || k < 1))
                k++;
            if (k == 0)
                continue;
            if (k > cap) {
                features_candle *nb = realloc(buf, k * sizeof *nb);
                if (!nb)
                    continue;
                buf = nb;
                cap = k;
            }
            for (size_t j = 0; j < k; j++)
                buf[j] = relabel(s, s->next + j);
            int rc = feed_sink_candles(d->sink, s->symbol, buf, k);
            /* PD_EDB: the sink keeps them and writes them with the next call. */
            s->next += k;
            errors += rc != 0;
            if (s->next < s->n && s->c[s->next].t + s->shift + 60 <= now)
                behind++;
        }
        if (live == 0) {
            if (!ended_logged)
                LOG_WARN(MOD, "demo: every demo file is replayed to its end; the feed stops");
            ended_logged = true;
            feed_sink_set_state(d->sink, FEED_STATE_DOWN);
        } else {
            feed_sink_set_state(d->sink, errors   ? FEED_STATE_DOWN
                                         : behind ? FEED_STATE_LAGGING
                                                  : FEED_STATE_CONNECTED);
        }
    }
    free(buf);
    store_thread_cleanup();
    return NULL;
}

static int demo_start(feed_connector *self, feed_sink *sink)
{
    demo *d = self->impl;
    if (d->started || !sink)
        return PD_EINVAL;
    d->sink = sink;
    if (pthread_create(&d->thread, NULL, replay, d))
        return PD_EINTERNAL;
    d->started = true;
    return 0;
}

static void demo_stop(feed_connector *self)
{
    demo *d = self->impl;
    if (!d->started)
        return;
    pthread_mutex_lock(&d->mu);
    d->stopping = true;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
    pthread_join(d->thread, NULL);
    d->started = false;
}

static void demo_free(feed_connector *self)
{
    if (!self)
        return;
    demo *d = self->impl;
    demo_stop(self);
    free_series(d->s, d->n);
    pthread_mutex_destroy(&d->mu);
    pthread_cond_destroy(&d->cv);
    free(d);
    free(self);
}

int feed_demo_new(const char *args, feed_connector **out)
{
    if (!out)
        return PD_EINVAL;
    char why[512] = "";
    demo *d = calloc(1, sizeof *d);
    feed_connector *c = calloc(1, sizeof *c);
    if (!d || !c) {
        free(d);
        free(c);
        return PD_ENOMEM;
    }
    int rc = load_all(args, &d->s, &d->n, why, sizeof why);
    if (rc) {
        LOG_ERROR(MOD, "demo feed: %s", why);
        free(d);
        free(c);
        return rc;
    }
    const char *step = getenv("PREDICTD_DEMO_STEP_MS");
    if (step && *step) {
        char *end;
        long long v = strtoll(step, &end, 10);
        if (*end || v < 0 || v > 3600000) {
            LOG_ERROR(MOD, "PREDICTD_DEMO_STEP_MS must be 0..3600000");
            free_series(d->s, d->n);
            free(d);
            free(c);
            return PD_EINVAL;
        }
        d->step_ms = v;
    }
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv, NULL);
    *c = (feed_connector){.name = "demo-replay",
                          .start = demo_start,
                          .stop = demo_stop,
                          .free = demo_free,
                          .source = SOURCE,
                          .impl = d};
    *out = c;
    return 0;
}
