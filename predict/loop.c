/*
 * loop.c: the inference loop. One background thread makes every prediction
 * as soon as its data arrives, so request threads answer from the cache.
 *
 * For each series it hears about it: drops the series' cached candle window
 * (the candles changed behind this process), settles the ledger's open
 * predictions of the series against the new candles and refreshes the live
 * accuracy of its versions, recomputes the prediction with the serving
 * version (predict_refresh: replaces the process and Redis caches),
 * and, when the last closed candle (or the serving version) moved on,
 * records the prediction in the ledger, pushes it to the stream clients and
 * PUBLISHes it on Redis (predictd:predictions).
 *
 * It hears about a series by:
 * - NOTIFY predictd_candles 'SYMBOL:TF' (db/001_candles.sql), on a
 *   dedicated LISTEN connection (features_listen_*). Notifications are
 *   coalesced for COALESCE_MS after the first one, and each notified series
 *   is processed once: a burst of inserts gives one prediction per closed
 *   candle, not one per row.
 * - its next candle closing (a feed may write a candle before it closes, and
 *   nothing notifies when time passes): DUE_GRACE_S after valid_until.
 * - a retry RETRY_S after a transient failure (the database, or the store's
 *   reconnect back-off, in the way), so a notification is never lost to one.
 * - catching up, after every (re)connection of the LISTEN connection and at
 *   start: every series with a serving model (and, for a _default model,
 *   every symbol with candles in its timeframe) is processed, so what was
 *   inserted while no one listened is predicted and recorded.
 * - NOTIFY predictd_models 'SYMBOL:TF' (PREDICT_MODELS_CHANNEL), sent by
 *   the replica that published a version or changed a pin or label: the
 *   loop rescans that series of the repository at once (registry_scan)
 *   and processes it, so every replica serves the change within a second,
 *   not only after its next periodic scan.
 * Every RESOLVE_S it also settles the open predictions of every series.
 *
 * Leader and followers. Several replicas on one database each run a loop;
 * one of them, the leader, holds the advisory lock STORE_LOCK_KEY_LEADER on
 * a dedicated connection (store_lock, tried and checked about every second). Only the
 * leader writes: it records predictions in the ledger, settles them and
 * PUBLISHes them on Redis. A follower does everything else: it hears the
 * same notifications, drops and refreshes its own caches (process and
 * Redis), refreshes the live accuracy it reads from the ledger, and pushes
 * new predictions to its own stream clients. When the leader dies its
 * connection drops, PostgreSQL releases the lock, and the next follower to
 * try takes it and catches up (every series: what the old leader had not
 * recorded is recorded now).
 *
 * It deliberately does not: serve requests, render anything but the stream
 * message, or talk SQL (store/ledger.c does).
 *
 * DESIGN
 * - "Moved on" is decided against this thread's own marks per series (the
 *   candle and version last recorded, and last published), so a
 *   notification for an unchanged or still-open candle changes nothing but
 *   the cache. Recording is idempotent in the database (one row per series,
 *   candle and version); a failed write is retried on the next pass. Only
 *   the replica whose insert wrote the row PUBLISHes it on Redis, so the
 *   channel carries each prediction once; each replica pushes to its own
 *   stream clients.
 * - Reconnecting: the LISTEN connection is made again with a back-off from
 *   250 ms to 5 s; each success is followed by a catch-up.
 * - Stopping: the thread polls an eventfd with the LISTEN socket and wakes
 *   at least every second; predict_loop_stop writes the eventfd.
 *
 * THREADING: everything but the status fields (guarded by status_lock) and
 * the stop flag belongs to the loop's thread. It uses the store's
 * thread-local connections (released with store_thread_cleanup at exit),
 * its own ledger handle, and lends a second one to the HTTP routes.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "features/features.h"
#include "predict/predict_internal.h"
#include "store/store.h"
#include "inference/inference.h"
#include "registry/registry.h"

#define MOD "loop"
#define CHANNEL "predictd_candles"
#define PUBLISH_CHANNEL "predictd:predictions"
#define COALESCE_MS 50
#define RESOLVE_S 5
#define DUE_GRACE_S 1
#define RETRY_S 1 /* after a transient failure (database away) */
#define TICK_MS 1000
#define BACKOFF_MIN_MS 250
#define BACKOFF_MAX_MS 5000
#define SERIES_MAX 100000
#define BATCH_MIN 4    /* series due together that make a burst (see process_many) */
#define BATCH_MAX 1000 /* series predicted in one group */
#define LEADER_TRY_MS 1000 /* a standby takes over within about this after the leader dies */

/* What this thread knows of one series. */
struct series {
    char symbol[24];
    char tf[8];
    int64_t rec_candle, pub_candle; /* candle last recorded / published (0: none) */
    uint32_t rec_version, pub_version;
    int64_t due;  /* process when now >= due (0: wait for a notification) */
    bool pending; /* notified, not processed yet */
    int last_rc;  /* the last prediction's result, to log changes only */
};

struct predict_loop {
    predict_service *svc;
    predict_loop_options opt; /* the URLs are not kept: copied where needed */
    pthread_t thread;
    int wake_fd;
    atomic_bool stop;
    store_listener *listen;
    store_ledger *ledger;     /* the loop's */
    store_ledger *ledger_api; /* lent to the HTTP routes */
    store_pub *pub;           /* NULL without Redis */
    store_lock *leader_lock;  /* the replicas' leader lock */
    store_listener *models;   /* PREDICT_MODELS_CHANNEL */
    atomic_bool leader;       /* written by the loop's thread, read by anyone */
    struct series *series;
    size_t nseries, cap;
    struct series **batch; /* cap entries: the series processed together */
    size_t npending;
    uint64_t catch_up_at; /* util_mono_ns() of a catch-up to try again (0: none) */

    pthread_mutex_t status_lock; /* guards the fields below */
    const char *state;
    int64_t last_prediction;
    uint64_t predictions;
    char last_error[200];
};

static void set_state(predict_loop *l, const char *state)
{
    pthread_mutex_lock(&l->status_lock);
    l->state = state;
    pthread_mutex_unlock(&l->status_lock);
}

static void set_error(predict_loop *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(predict_loop *l, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&l->status_lock);
    vsnprintf(l->last_error, sizeof l->last_error, fmt, ap);
    pthread_mutex_unlock(&l->status_lock);
    va_end(ap);
}

void predict_loop_status(predict_loop *l, predict_loop_state *out)
{
    if (!l) {
        out->state = "off";
        out->role = NULL;
        return;
    }
    pthread_mutex_lock(&l->status_lock);
    out->state = l->state;
    out->role = atomic_load(&l->leader) ? "leader" : "follower";
    out->last_run = l->last_prediction;
    out->runs = l->predictions;
    snprintf(out->last_error, sizeof out->last_error, "%s", l->last_error);
    pthread_mutex_unlock(&l->status_lock);
}

bool predict_loop_leader(predict_loop *l)
{
    return l && atomic_load(&l->leader);
}

/* ------------------------------------------------------------------------
 * Series table.
 */
static struct series *series_get(predict_loop *l, const char *symbol, const char *tf)
{
    for (size_t i = 0; i < l->nseries; i++)
        if (strcmp(l->series[i].symbol, symbol) == 0 && strcmp(l->series[i].tf, tf) == 0)
            return &l->series[i];
    if (!util_symbol_valid(symbol) || !util_tf_seconds(tf) || l->nseries == SERIES_MAX)
        return NULL;
    if (l->nseries == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        struct series *v = realloc(l->series, cap * sizeof *v);
        if (!v)
            return NULL;
        l->series = v;
        struct series **b = realloc(l->batch, cap * sizeof *b);
        if (!b)
            return NULL; /* l->series grew, cap did not: the next call retries */
        l->batch = b;
        l->cap = cap;
    }
    struct series *s = &l->series[l->nseries++];
    memset(s, 0, sizeof *s);
    snprintf(s->symbol, sizeof s->symbol, "%s", symbol);
    snprintf(s->tf, sizeof s->tf, "%s", tf);
    return s;
}

/* Marks s (NULL: ignored) to be processed in the next pass. */
static void mark(predict_loop *l, struct series *s)
{
    if (s && !s->pending) {
        s->pending = true;
        l->npending++;
    }
}

/* Splits a notification's "SYMBOL:TF" into symbol (24 bytes) and *tf (a
 * pointer into payload); false when it is not of that form. */
static bool payload_series(const char *payload, char symbol[24], const char **tf)
{
    const char *colon = strchr(payload, ':');
    if (!colon || (size_t)(colon - payload) >= 24)
        return false;
    memcpy(symbol, payload, (size_t)(colon - payload));
    symbol[colon - payload] = '\0';
    *tf = colon + 1;
    return true;
}

/* "SYMBOL:TF" from a notification. */
static void on_notify(const char *payload, void *arg)
{
    predict_loop *l = arg;
    char symbol[24];
    const char *tf;
    if (payload_series(payload, symbol, &tf))
        mark(l, series_get(l, symbol, tf));
}

/* ------------------------------------------------------------------------
 * Ledger and live accuracy.
 */
static void refresh_live(predict_loop *l, const char *symbol, const char *tf)
{
    store_ledger_live *v = NULL;
    size_t n = 0;
    if (store_ledger_live_stats(l->ledger, symbol, tf, &v, &n) != 0)
        return;
    for (size_t i = 0; i < n; i++)
        (void)predict_set_live_accuracy(l->svc, v[i].symbol, v[i].timeframe, v[i].version,
                                    v[i].trades ? (double)v[i].hits / (double)v[i].trades : 0,
                                    v[i].trades);
    free(v);
}

static void settle(predict_loop *l, const char *symbol, const char *tf, int64_t now)
{
    size_t settled = 0;
    int rc = store_ledger_settle(l->ledger, symbol, tf, now, predict_resolve, &settled);
    if (rc) {
        set_error(l, "resolving %s %s: %s", symbol, tf, util_strerror(rc));
        return;
    }
    if (settled)
        LOG_DEBUG(MOD, "%s %s: %zu predictions resolved", symbol, tf, settled);
}

static void resolve_all(predict_loop *l, int64_t now)
{
    store_ledger_series *v = NULL;
    size_t n = 0;
    if (store_ledger_open_series(l->ledger, &v, &n) != 0)
        return;
    for (size_t i = 0; i < n && !atomic_load(&l->stop); i++) {
        size_t settled = 0;
        if (store_ledger_settle(l->ledger, v[i].symbol, v[i].timeframe, now, predict_resolve,
                                &settled) == 0 &&
            settled)
            refresh_live(l, v[i].symbol, v[i].timeframe);
    }
    free(v);
}

static void entry_of(const predict_result *p, store_ledger_entry *e)
{
    predict_ledger_entry(p, e); /* the row the backtest replays too */
}

/* ------------------------------------------------------------------------
 * Series, one or many at a time.
 */

/* Whether a model serves s; when none does there is nothing to do (and
 * predicting would count the series' candles to say why). Clears s's
 * pending flag, and the cached "no" of a series whose candles changed. */
static bool serving(predict_loop *l, struct series *s, int64_t now)
{
    if (s->pending) {
        s->pending = false;
        l->npending--;
    }
    predict__neg_forget(l->svc, s->symbol, s->tf);
    registry_version *v = NULL;
    int rc = registry_acquire(predict_registry(l->svc), s->symbol, s->tf, NULL, &v);
    if (rc) {
        /* a first version still loading, or no memory to look: try again */
        s->due = rc == PD_ENOTREADY || rc == PD_ENOMEM ? now + RETRY_S : 0;
        return false;
    }
    registry_release(v);
    return true;
}

/* Bookkeeping of one series' attempt: logs a change of outcome, and sets
 * when it is due again. True when p is a prediction to record and publish. */
static bool attempted(predict_loop *l, struct series *s, int rc, const char *why,
                      const predict_result *p, int64_t now)
{
    if (rc) {
        if (rc != s->last_rc)
            LOG_WARN(MOD, "%s %s: no prediction: %s", s->symbol, s->tf,
                     why[0] ? why : util_strerror(rc));
        s->last_rc = rc;
        /* a database (or its connection back-off) in the way, or memory
         * short, passes: try again soon rather than wait for a notification
         * that already came */
        s->due = rc == PD_EDB || rc == PD_ENOTREADY || rc == PD_ENOMEM ? now + RETRY_S : 0;
        set_error(l, "%s %s: %s", s->symbol, s->tf, why[0] ? why : util_strerror(rc));
        return false;
    }
    if (s->last_rc)
        LOG_INFO(MOD, "%s %s: predicting again", s->symbol, s->tf);
    s->last_rc = 0;
    s->due = p->valid_until > now ? p->valid_until + DUE_GRACE_S : 0;
    return true;
}

/*
 * Predicts the n series of v (one timeframe) together: their cached windows
 * dropped, their windows read and their predictions cached in a few round
 * trips (predict_refresh_many), the new ones recorded in one statement
 * (store_ledger_record_many), PUBLISHed in one pipeline, and handed to the
 * stream clients. A burst at a candle close costs a few round trips, not a
 * few per series.
 */
static void predict_group(predict_loop *l, struct series **v, size_t n, int64_t now)
{
    const char **syms = calloc(n, sizeof *syms);
    predict_result **p = calloc(n, sizeof *p);
    int *rcs = calloc(n, sizeof *rcs);
    char(*whys)[256] = calloc(n, sizeof *whys);
    store_ledger_entry *e = calloc(n, sizeof *e);
    size_t *rec = calloc(n, sizeof *rec);
    bool *inserted = calloc(n, sizeof *inserted);
    util_buf *msg = calloc(n, sizeof *msg);
    const char **pub = calloc(n, sizeof *pub);
    size_t *publen = calloc(n, sizeof *publen);
    if (!syms || !p || !rcs || !whys || !e || !rec || !inserted || !msg || !pub || !publen) {
        set_error(l, "out of memory predicting %zu series", n);
        for (size_t i = 0; i < n; i++)
            v[i]->due = now + RETRY_S;
        goto out;
    }
    const char *tf = v[0]->tf;
    for (size_t i = 0; i < n; i++) {
        assert(strcmp(v[i]->tf, tf) == 0);
        syms[i] = v[i]->symbol;
    }
    (void)store_cache_drop_windows(syms, n, tf); /* the candles changed behind this process */
    if (predict_refresh_many(l->svc, syms, n, tf, now, p, rcs, whys) != 0) {
        set_error(l, "cannot predict %zu %s series at once", n, tf);
        for (size_t i = 0; i < n; i++)
            v[i]->due = now + RETRY_S;
        goto out;
    }

    /* the ledger: one row per new candle or version, the first writer wins */
    size_t nrec = 0;
    for (size_t i = 0; i < n; i++) {
        util_buf_init(&msg[i]);
        if (!attempted(l, v[i], rcs[i], whys[i], p[i], now))
            continue;
        predict_render_stream_message(&msg[i], p[i], now);
        if (!util_buf_ok(&msg[i])) {
            /* no memory for the message: record, publish and deliver it
             * together on the next try, not a row nobody was told of */
            set_error(l, "%s %s: out of memory rendering the prediction", v[i]->symbol,
                      v[i]->tf);
            v[i]->due = now + RETRY_S;
            predict_result_release(p[i]);
            p[i] = NULL;
            continue;
        }
        if (p[i]->candle_time > v[i]->rec_candle || p[i]->version != v[i]->rec_version) {
            entry_of(p[i], &e[nrec]);
            rec[nrec++] = i;
        }
    }
    /* only the leader writes the ledger and PUBLISHes; a follower keeps
     * its caches and its own stream clients current */
    if (!atomic_load(&l->leader))
        nrec = 0;
    int rc = store_ledger_record_many(l->ledger, e, nrec, inserted);
    size_t npub = 0;
    for (size_t k = 0; k < nrec; k++) {
        struct series *s = v[rec[k]];
        if (rc) {
            set_error(l, "recording %s %s: %s", s->symbol, s->tf, util_strerror(rc));
            s->due = now + RETRY_S;
            continue;
        }
        s->rec_candle = e[k].candle_time;
        s->rec_version = e[k].version;
        /* only the replica whose insert wrote the row publishes it */
        if (inserted[k] && l->pub && util_buf_ok(&msg[rec[k]])) {
            pub[npub] = msg[rec[k]].data;
            publen[npub++] = msg[rec[k]].len;
        }
    }
    if (npub)
        (void)store_pub_publish_many(l->pub, PUBLISH_CHANNEL, pub, publen, npub);

    /* this process's stream clients */
    for (size_t i = 0; i < n; i++) {
        struct series *s = v[i];
        if (!p[i] || !(p[i]->candle_time > s->pub_candle || p[i]->version != s->pub_version))
            continue;
        if (util_buf_ok(&msg[i]) && l->opt.deliver)
            l->opt.deliver(l->opt.deliver_arg, p[i]->symbol, p[i]->timeframe, msg[i].data,
                           msg[i].len);
        s->pub_candle = p[i]->candle_time;
        s->pub_version = p[i]->version;
        pthread_mutex_lock(&l->status_lock);
        l->predictions++;
        l->last_prediction = now;
        pthread_mutex_unlock(&l->status_lock);
        LOG_DEBUG(MOD, "%s %s: %s for the candle of %lld (v%u)", p[i]->symbol, p[i]->timeframe,
                  inference_class_name((enum inference_class)p[i]->direction),
                  (long long)p[i]->candle_time, p[i]->version);
    }
out:
    for (size_t i = 0; p && i < n; i++)
        predict_result_release(p[i]);
    for (size_t i = 0; msg && i < n; i++)
        util_buf_cleanup(&msg[i]);
    free(syms);
    free(p);
    free(rcs);
    free(whys);
    free(e);
    free(rec);
    free(inserted);
    free(msg);
    free(pub);
    free(publen);
}

/*
 * Processes series v[0..n): for each one with a serving model, settles its
 * open predictions against its new candles, refreshes its live accuracy,
 * predicts, records and publishes. A few series (the steady state) settle
 * first, so the prediction shows live accuracy with the newest outcomes; a
 * burst (BATCH_MIN or more) predicts, records and publishes first, a
 * timeframe at a time, and settles afterwards: the outcomes of older calls
 * never delay the new ones.
 */
static void process_many(predict_loop *l, struct series **v, size_t n, int64_t now)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (serving(l, v[i], now))
            v[k++] = v[i];
    n = k;
    if (n == 0)
        return;
    bool burst = n >= BATCH_MIN, lead = atomic_load(&l->leader);
    if (!burst)
        for (size_t i = 0; i < n; i++) {
            if (lead)
                settle(l, v[i]->symbol, v[i]->tf, now);
            refresh_live(l, v[i]->symbol, v[i]->tf); /* one grouped query per new candle */
        }
    /* one timeframe at a time: sort by it, then take each run */
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && strcmp(v[j - 1]->tf, v[j]->tf) > 0; j--) {
            struct series *t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && strcmp(v[j]->tf, v[i]->tf) == 0)
            j++;
        for (size_t at = i; at < j; at += BATCH_MAX)
            predict_group(l, v + at, j - at < BATCH_MAX ? j - at : BATCH_MAX, now);
        i = j;
    }
    if (burst) {
        for (size_t i = 0; lead && i < n && !atomic_load(&l->stop); i++)
            settle(l, v[i]->symbol, v[i]->tf, now);
        refresh_live(l, NULL, NULL); /* every series' figures in one query */
    }
}

/* Every series with a serving model; a _default model covers the symbols of
 * its timeframe that have candles. */
static void catch_up(predict_loop *l)
{
    int64_t now = util_now();
    registry_series_info *info = NULL;
    size_t n = 0;
    if (registry_list(predict_registry(l->svc), &info, &n) != 0) {
        l->catch_up_at = util_mono_ns() + (uint64_t)RETRY_S * 1000000000u; /* out of memory */
        return;
    }
    size_t before = 0;
    pthread_mutex_lock(&l->status_lock);
    before = l->predictions;
    pthread_mutex_unlock(&l->status_lock);
    /* mark every series first (series_get may move the table), then
     * process them together */
    for (size_t i = 0; i < n && !atomic_load(&l->stop); i++) {
        bool serves = false;
        for (size_t k = 0; k < info[i].n_versions; k++)
            serves |= info[i].versions[k].serving;
        if (!serves)
            continue;
        if (strcmp(info[i].symbol, "_default") != 0) {
            struct series *s = series_get(l, info[i].symbol, info[i].timeframe);
            if (!s && l->nseries < SERIES_MAX) /* the table could not grow: not forgotten */
                l->catch_up_at = util_mono_ns() + (uint64_t)RETRY_S * 1000000000u;
            mark(l, s);
            continue;
        }
        char **syms = NULL;
        size_t ns = 0;
        if (store_list_symbols(info[i].timeframe, &syms, &ns) != 0)
            continue;
        for (size_t k = 0; k < ns; k++)
            mark(l, series_get(l, syms[k], info[i].timeframe));
        store_strv_free(syms, ns);
    }
    size_t seen = 0;
    for (size_t i = 0; i < l->nseries; i++)
        if (l->series[i].pending)
            l->batch[seen++] = &l->series[i];
    if (seen && !atomic_load(&l->stop))
        process_many(l, l->batch, seen, now);
    registry_list_free(info, n);
    pthread_mutex_lock(&l->status_lock);
    size_t made = (size_t)(l->predictions - before);
    pthread_mutex_unlock(&l->status_lock);
    LOG_INFO(MOD, "caught up: %zu series checked, %zu new predictions", seen, made);
}

/* ------------------------------------------------------------------------
 * The thread.
 */
static int64_t ms_until(uint64_t deadline_ns, uint64_t now_ns)
{
    if (deadline_ns <= now_ns)
        return 0;
    return (int64_t)((deadline_ns - now_ns + 999999) / 1000000);
}

/* Reads notifications for COALESCE_MS after the first ones; false when the
 * connection was lost. */
static bool coalesce(predict_loop *l)
{
    uint64_t until = util_mono_ns() + (uint64_t)COALESCE_MS * 1000000u;
    for (;;) {
        int64_t left = ms_until(until, util_mono_ns());
        if (left <= 0 || atomic_load(&l->stop))
            return true;
        struct pollfd p = {.fd = store_listen_socket(l->listen), .events = POLLIN};
        if (p.fd < 0)
            return false;
        int r = poll(&p, 1, (int)left);
        if (r > 0 && store_listen_consume(l->listen, on_notify, l) < 0)
            return false;
    }
}

/* "SYMBOL:TF" on PREDICT_MODELS_CHANNEL: rescan that series of the
 * repository now, then process it (a _default change: every series of the
 * timeframe this loop knows). */
static void on_models_notify(const char *payload, void *arg)
{
    predict_loop *l = arg;
    char symbol[24];
    const char *tf;
    if (!payload_series(payload, symbol, &tf))
        return;
    int rc = registry_scan(predict_registry(l->svc), symbol, tf);
    if (rc) {
        LOG_DEBUG(MOD, "models notification %s: rescan: %s", payload, util_strerror(rc));
        return;
    }
    LOG_DEBUG(MOD, "models notification: rescanned %s %s", symbol, tf);
    if (strcmp(symbol, REGISTRY_DEFAULT_SYMBOL) != 0) {
        on_notify(payload, l);
        return;
    }
    for (size_t i = 0; i < l->nseries; i++)
        if (strcmp(l->series[i].tf, tf) == 0)
            mark(l, &l->series[i]);
}

/* Takes or keeps the leader lock; on becoming leader, catches up so that
 * what the previous leader left unrecorded is recorded. Returns
 * store_lock_try's result. */
static int leader_tick(predict_loop *l, bool connected)
{
    bool held = false;
    int rc = store_lock_try(l->leader_lock, &held);
    bool now = rc == 0 && held, was = atomic_load(&l->leader);
    if (now == was)
        return rc;
    atomic_store(&l->leader, now);
    if (now) {
        LOG_INFO(MOD, "leader: this replica records, settles and publishes predictions");
        for (size_t i = 0; i < l->nseries; i++) /* the ledger decides what is new */
            l->series[i].rec_candle = 0, l->series[i].rec_version = 0;
        if (connected)
            catch_up(l);
    } else {
        LOG_WARN(MOD, "follower: lost the leader lock (%s); another replica records and "
                      "publishes",
                 rc < 0 ? util_strerror(rc) : "taken elsewhere");
    }
    return rc;
}

static void *loop_main(void *arg)
{
    predict_loop *l = arg;
    bool connected = false, ever = false;
    int backoff_ms = 0;
    uint64_t next_connect = 0, next_resolve = 0, next_lock = 0, next_models = 0;
    bool models_connected = false;
    int lock_failures = 0;
    while (!atomic_load(&l->stop)) {
        uint64_t now_ns = util_mono_ns();
        if (now_ns >= next_lock) {
            /* a database away: each try may wait for connect_timeout, so
             * after two failures in a row try less often until it answers */
            int rc = leader_tick(l, connected);
            lock_failures = rc < 0 ? lock_failures + 1 : 0;
            int ms = lock_failures >= 2 ? BACKOFF_MAX_MS : LEADER_TRY_MS;
            next_lock = util_mono_ns() + (uint64_t)ms * 1000000u;
        }
        if (!models_connected && now_ns >= next_models) {
            models_connected = store_listen_connect(l->models) == 0;
            next_models = util_mono_ns() + (uint64_t)BACKOFF_MAX_MS * 1000000u;
            if (models_connected && ever) /* changes may have been missed meanwhile */
                registry_request_scan(predict_registry(l->svc));
        }
        if (!connected && now_ns >= next_connect) {
            if (store_listen_connect(l->listen) == 0) {
                connected = true;
                backoff_ms = 0;
                set_state(l, "listening");
                LOG_INFO(MOD, "listening for new candles on %s%s", CHANNEL, ever ? " again" : "");
                ever = true;
                catch_up(l);
                next_resolve = util_mono_ns() + (uint64_t)RESOLVE_S * 1000000000u;
            } else {
                backoff_ms = backoff_ms ? backoff_ms * 2 : BACKOFF_MIN_MS;
                if (backoff_ms > BACKOFF_MAX_MS)
                    backoff_ms = BACKOFF_MAX_MS;
                next_connect = util_mono_ns() + (uint64_t)backoff_ms * 1000000u;
                set_state(l, "reconnecting");
                set_error(l, "cannot LISTEN: the database is unavailable");
            }
            continue;
        }

        /* sleep until something happens, a series is due, or a tick */
        int64_t now = util_now();
        int64_t timeout = TICK_MS;
        for (size_t i = 0; i < l->nseries; i++)
            if (l->series[i].due && (l->series[i].due - now) * 1000 < timeout)
                timeout = (l->series[i].due - now) * 1000;
        if (!connected)
            timeout = ms_until(next_connect, util_mono_ns()) < timeout
                          ? ms_until(next_connect, util_mono_ns())
                          : timeout;
        if (ms_until(next_lock, util_mono_ns()) < timeout)
            timeout = ms_until(next_lock, util_mono_ns());
        if (l->catch_up_at && ms_until(l->catch_up_at, util_mono_ns()) < timeout)
            timeout = ms_until(l->catch_up_at, util_mono_ns());
        if (timeout < 0)
            timeout = 0;
        struct pollfd p[3] = {
            {.fd = l->wake_fd, .events = POLLIN},
            {.fd = connected ? store_listen_socket(l->listen) : -1, .events = POLLIN},
            {.fd = models_connected ? store_listen_socket(l->models) : -1, .events = POLLIN}};
        int r = poll(p, 3, (int)timeout);
        if (r < 0 && errno != EINTR)
            LOG_WARN(MOD, "poll: %s", strerror(errno));
        if (atomic_load(&l->stop))
            break;
        if (r > 0 && (p[1].revents & (POLLIN | POLLERR | POLLHUP))) {
            if (store_listen_consume(l->listen, on_notify, l) < 0 || !coalesce(l)) {
                connected = false;
                next_connect = util_mono_ns(); /* at once, then backing off */
                set_state(l, "reconnecting");
                LOG_WARN(MOD, "lost the LISTEN connection; reconnecting");
            }
        }
        if (r > 0 && (p[2].revents & (POLLIN | POLLERR | POLLHUP)) &&
            store_listen_consume(l->models, on_models_notify, l) < 0) {
            models_connected = false;
            next_models = util_mono_ns() + (uint64_t)BACKOFF_MIN_MS * 1000000u;
        }

        now = util_now();
        size_t ndue = 0;
        for (size_t i = 0; i < l->nseries; i++) {
            struct series *s = &l->series[i];
            if (s->pending || (s->due && now >= s->due))
                l->batch[ndue++] = s;
        }
        if (ndue && !atomic_load(&l->stop))
            process_many(l, l->batch, ndue, now);
        if (connected && l->catch_up_at && util_mono_ns() >= l->catch_up_at &&
            !atomic_load(&l->stop)) {
            l->catch_up_at = 0;
            catch_up(l);
        }
        if (connected && atomic_load(&l->leader) && util_mono_ns() >= next_resolve) {
            resolve_all(l, now);
            next_resolve = util_mono_ns() + (uint64_t)RESOLVE_S * 1000000000u;
        }
    }
    set_state(l, "stopped");
    store_lock_release(l->leader_lock); /* a standby may take over at once */
    atomic_store(&l->leader, false);
    store_thread_cleanup();
    return NULL;
}

/* ------------------------------------------------------------------------
 * Lifecycle.
 */
static void loop_free(predict_loop *l)
{
    if (!l)
        return;
    if (l->svc && l->ledger_api)
        predict_set_ledger(l->svc, NULL);
    store_listen_close(l->listen);
    store_listen_close(l->models);
    store_lock_close(l->leader_lock);
    store_ledger_close(l->ledger);
    store_ledger_close(l->ledger_api);
    store_pub_close(l->pub);
    if (l->wake_fd >= 0)
        close(l->wake_fd);
    pthread_mutex_destroy(&l->status_lock);
    free(l->series);
    free(l->batch);
    free(l);
}

int predict_loop_start(predict_service *svc, const predict_loop_options *opt, predict_loop **out)
{
    if (!svc || !opt || !out || !opt->database_url)
        return PD_EINVAL;
    predict_loop *l = calloc(1, sizeof *l);
    if (!l)
        return PD_ENOMEM;
    l->svc = svc;
    l->opt = *opt;
    l->opt.database_url = l->opt.redis_url = NULL;
    l->wake_fd = -1;
    l->state = "starting";
    pthread_mutex_init(&l->status_lock, NULL);
    int rc = store_listen_open(opt->database_url, CHANNEL, &l->listen);
    if (rc == 0)
        rc = store_listen_open(opt->database_url, PREDICT_MODELS_CHANNEL, &l->models);
    if (rc == 0)
        rc = store_lock_open(opt->database_url, STORE_LOCK_KEY_LEADER, &l->leader_lock);
    if (rc == 0)
        rc = store_ledger_open(opt->database_url, &l->ledger);
    if (rc == 0)
        rc = store_ledger_open(opt->database_url, &l->ledger_api);
    if (rc == 0 && opt->redis_url && store_pub_open(opt->redis_url, &l->pub) != 0)
        LOG_WARN(MOD, "predictions will not be published on Redis");
    if (rc == 0 && (l->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0)
        rc = PD_EIO;
    if (rc) {
        loop_free(l);
        return rc;
    }
    predict_set_ledger(svc, l->ledger_api);
    if (pthread_create(&l->thread, NULL, loop_main, l) != 0) {
        loop_free(l);
        return PD_EIO;
    }
    *out = l;
    return 0;
}

void predict_loop_stop(predict_loop *l)
{
    if (!l)
        return;
    atomic_store(&l->stop, true);
    uint64_t one = 1;
    if (write(l->wake_fd, &one, sizeof one) < 0)
        LOG_DEBUG(MOD, "wake: %s", strerror(errno));
    pthread_join(l->thread, NULL);
    loop_free(l);
}
