/*
 * predict.c: the prediction pipeline and its caches.
 *
 * One prediction: acquire the model version serving the series, load the
 * last (window + steps - 1) closed candles, compute one feature vector per
 * step with the model's own feature set, run the kernel, and turn the
 * probabilities into a signal with levels from the ATR of the same window.
 * The result is rendered once into a JSON fragment and kept, immutable and
 * reference-counted, in a process cache keyed by series and model version,
 * and in Redis keyed by series, version and candle (shared by replicas).
 *
 * A cached prediction stays valid while no newer candle can have closed
 * (until the close of the candle after the one it used). After that the
 * database is asked again at most every RECHECK_S seconds; when the database
 * is down the cached prediction keeps being served, and its staleness says
 * how old its data is. Nothing here invents a prediction: no model, no
 * candles or too few candles is an error for the caller to report.
 *
 * Threading: api_predict is called concurrently by HTTP workers, the CLI and
 * the inference loop. The process cache is guarded by ctx->cache_lock (a
 * rwlock: lookups share it); predictions are immutable once published.
 * Each thread keeps its own scratch for features and the kernel.
 */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_internal.h"
#include "features/features.h"
#include "store/store.h"
#include "inference/inference.h"

#define RECHECK_S 2
#define SYMBOLS_TTL_S 5

/* An api_prediction with its reference count in front. */
struct pred_box {
    atomic_int refs;
    api_prediction p;
};

static struct pred_box *box_of(api_prediction *p)
{
    return (struct pred_box *)((char *)p - offsetof(struct pred_box, p));
}

void api_prediction_retain(api_prediction *p)
{
    atomic_fetch_add_explicit(&box_of(p)->refs, 1, memory_order_relaxed);
}

void api_prediction_release(api_prediction *p)
{
    if (!p)
        return;
    struct pred_box *b = box_of(p);
    if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1) {
        free(b->p.fragment);
        free(b);
    }
}

static api_prediction *prediction_new(void)
{
    struct pred_box *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    atomic_init(&b->refs, 1);
    return &b->p;
}

/* ------------------------------------------------------------------------
 * Context.
 */
int api_context_new(const api_options *opt, registry *reg, api_context **out)
{
    api_context *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return PD_ENOMEM;
    ctx->opt = *opt;
    ctx->reg = reg;
    if (pthread_rwlock_init(&ctx->cache_lock, NULL) != 0) {
        free(ctx);
        return PD_ENOMEM;
    }
    pthread_mutex_init(&ctx->symbols_lock, NULL);
    if (api_live_new(&ctx->live) != 0 || api_hub_new(&ctx->hub) != 0) { /* issue 7 */
        api_context_free(ctx);
        return PD_ENOMEM;
    }
    *out = ctx;
    return 0;
}

void api_context_free(api_context *ctx)
{
    if (!ctx)
        return;
    for (size_t i = 0; i < API_CACHE_BUCKETS; i++) {
        struct api_cache_entry *e = ctx->buckets[i];
        while (e) {
            struct api_cache_entry *next = e->next;
            api_prediction_release(e->p);
            free(e);
            e = next;
        }
    }
    for (size_t i = 0; i < sizeof ctx->symbols / sizeof ctx->symbols[0]; i++)
        store_strv_free(ctx->symbols[i].names, ctx->symbols[i].n);
    api_hub_free(ctx->hub); /* issue 7 */
    api_live_free(ctx->live);
    pthread_rwlock_destroy(&ctx->cache_lock);
    pthread_mutex_destroy(&ctx->symbols_lock);
    free(ctx);
}

registry *api_context_registry(api_context *ctx)
{
    return ctx->reg;
}

void api_cache_stats_get(api_context *ctx, api_cache_stats *out)
{
    out->process_hits = atomic_load(&ctx->process_hits);
    out->process_misses = atomic_load(&ctx->process_misses);
    out->redis_hits = atomic_load(&ctx->redis_hits);
    out->redis_misses = atomic_load(&ctx->redis_misses);
    out->computed = atomic_load(&ctx->computed);
}

/* ------------------------------------------------------------------------
 * Process cache.
 */
bool api_cache_key(char *key, size_t len, const char *symbol, const char *tf, uint32_t version,
                   const char *label)
{
    /* the label is rendered into the prediction, so it is part of the key */
    int n = snprintf(key, len, "%s|%s|v%u|%s", symbol, tf, version, label ? label : "-");
    return n > 0 && (size_t)n < len;
}

static size_t bucket_of(const char *key)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const char *p = key; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    return h % API_CACHE_BUCKETS;
}

/* Returns a new reference to the cached prediction for key, or NULL. When
 * the entry is past its candle and was last checked RECHECK_S ago, *recheck
 * is set (and the entry is still returned, for use if the recheck fails). */
static api_prediction *cache_get(api_context *ctx, const char *key, int64_t now, bool *recheck)
{
    api_prediction *p = NULL;
    *recheck = false;
    pthread_rwlock_rdlock(&ctx->cache_lock);
    for (struct api_cache_entry *e = ctx->buckets[bucket_of(key)]; e; e = e->next) {
        if (strcmp(e->key, key) != 0)
            continue;
        p = e->p;
        api_prediction_retain(p);
        if (now >= p->valid_until) {
            /* a newer candle may have closed: ask the database, once per RECHECK_S */
            int64_t seen = atomic_load_explicit(&e->checked_at, memory_order_relaxed);
            if (now - seen >= RECHECK_S &&
                atomic_compare_exchange_strong(&e->checked_at, &seen, now))
                *recheck = true;
        }
        break;
    }
    pthread_rwlock_unlock(&ctx->cache_lock);
    return p;
}

/*
 * Keeps at most API_CACHE_PER_SERIES entries of one series (versions and
 * labels): a series that went through many versions must not keep one
 * entry per version forever. Unlinks the entries with the oldest
 * predictions, except keep, and returns them for freeing outside the lock.
 * Called with cache_lock held for writing; scans every bucket, which costs
 * a few microseconds once per new entry (one per series and version).
 */
static struct api_cache_entry *evict_series(api_context *ctx, const char *key,
                                            const struct api_cache_entry *keep)
{
    const char *bar = strchr(key, '|');
    bar = bar ? strchr(bar + 1, '|') : NULL;
    size_t plen = bar ? (size_t)(bar - key) + 1 : strlen(key); /* "SYMBOL|TF|" */
    struct api_cache_entry *victims = NULL;
    for (;;) {
        size_t count = 0;
        struct api_cache_entry **oldest = NULL;
        for (size_t i = 0; i < API_CACHE_BUCKETS; i++)
            for (struct api_cache_entry **pe = &ctx->buckets[i]; *pe; pe = &(*pe)->next) {
                if (strncmp((*pe)->key, key, plen) != 0)
                    continue;
                count++;
                if (*pe != keep && (!oldest || !(*oldest)->p ||
                                    ((*pe)->p && (*pe)->p->prediction_time <
                                                     (*oldest)->p->prediction_time)))
                    oldest = pe;
            }
        if (count <= API_CACHE_PER_SERIES || !oldest)
            return victims;
        struct api_cache_entry *v = *oldest;
        *oldest = v->next;
        v->next = victims;
        victims = v;
    }
}

/* Publishes p under key (taking a new reference), replacing an older one. */
static void cache_put(api_context *ctx, const char *key, api_prediction *p, int64_t now)
{
    size_t b = bucket_of(key);
    api_prediction *old = NULL;
    struct api_cache_entry *victims = NULL;
    pthread_rwlock_wrlock(&ctx->cache_lock);
    struct api_cache_entry *e = ctx->buckets[b];
    while (e && strcmp(e->key, key) != 0)
        e = e->next;
    if (!e) {
        e = calloc(1, sizeof *e);
        if (!e) {
            pthread_rwlock_unlock(&ctx->cache_lock);
            return; /* caching is an optimisation: skip it */
        }
        snprintf(e->key, sizeof e->key, "%s", key);
        e->next = ctx->buckets[b];
        ctx->buckets[b] = e;
        victims = evict_series(ctx, key, e);
    }
    /* never replace a prediction for a newer candle with an older one */
    if (!(e->p && e->p->candle_time > p->candle_time)) {
        old = e->p;
        api_prediction_retain(p);
        e->p = p;
    }
    atomic_store(&e->checked_at, now);
    pthread_rwlock_unlock(&ctx->cache_lock);
    api_prediction_release(old);
    while (victims) {
        struct api_cache_entry *next = victims->next;
        api_prediction_release(victims->p);
        free(victims);
        victims = next;
    }
}

/* ------------------------------------------------------------------------
 * Redis cache of rendered predictions: one key per series, model version and
 * candle, so replicas share work and a new version or candle never reads an
 * old answer. The value is a header line of the numbers, then the fragment.
 */
static void redis_key(char *key, size_t len, const char *symbol, const char *tf, uint32_t version,
                      const char *label, int64_t candle)
{
    snprintf(key, len, "predictd:pred:%s:%s:v%u:%s:%lld", symbol, tf, version,
             label ? label : "-", (long long)candle);
}

static void redis_store(const api_prediction *p, const char *label, int64_t now)
{
    char key[128];
    redis_key(key, sizeof key, p->symbol, p->timeframe, p->version, label, p->candle_time);
    util_buf b;
    util_buf_init(&b);
    util_buf_printf(&b, "PD1 %d %a %a %a %a %lld %lld %lld %lld %lld %lld %lld %d\n", p->direction,
                    p->probs[0], p->probs[1], p->probs[2], p->confidence,
                    (long long)p->candle_time, (long long)p->candle_close,
                    (long long)p->prediction_time, (long long)p->valid_until,
                    (long long)p->trained_at, (long long)p->max_age_s, (long long)p->tf_seconds,
                    p->gaps);
    util_buf_append(&b, p->fragment, p->fragment_len);
    int64_t ttl = p->valid_until - now;
    if (util_buf_ok(&b) && ttl > 0)
        (void)store_cache_set(key, b.data, b.len, ttl + 1);
    util_buf_cleanup(&b);
}

static api_prediction *redis_fetch(const char *symbol, const char *tf, uint32_t version,
                                   const char *label, int64_t candle)
{
    char key[128];
    redis_key(key, sizeof key, symbol, tf, version, label, candle);
    char *val = NULL;
    size_t len = 0;
    if (store_cache_get(key, &val, &len) != 0)
        return NULL;
    api_prediction *p = prediction_new();
    char *nl = memchr(val, '\n', len);
    long long ct, cc, pt, vu, ta, ma, tfs;
    int consumed = 0;
    if (!p || !nl ||
        sscanf(val, "PD1 %d %la %la %la %la %lld %lld %lld %lld %lld %lld %lld %d%n",
               &p->direction, &p->probs[0], &p->probs[1], &p->probs[2], &p->confidence, &ct, &cc,
               &pt, &vu, &ta, &ma, &tfs, &p->gaps, &consumed) != 13 ||
        val + consumed != nl || ct != candle) {
        api_prediction_release(p);
        free(val);
        return NULL;
    }
    p->candle_time = ct;
    p->candle_close = cc;
    p->prediction_time = pt;
    p->valid_until = vu;
    p->trained_at = ta;
    p->max_age_s = ma;
    p->tf_seconds = tfs;
    p->version = version;
    snprintf(p->symbol, sizeof p->symbol, "%s", symbol);
    snprintf(p->timeframe, sizeof p->timeframe, "%s", tf);
    p->fragment_len = len - (size_t)(nl + 1 - val);
    p->fragment = malloc(p->fragment_len + 1);
    if (!p->fragment) {
        api_prediction_release(p);
        free(val);
        return NULL;
    }
    memcpy(p->fragment, nl + 1, p->fragment_len);
    p->fragment[p->fragment_len] = '\0';
    free(val);
    return p;
}

/* ------------------------------------------------------------------------
 * Computing.
 */

/* Per-thread scratch: feature rows and kernel memory, grown as needed and
 * freed when the thread exits. */
struct scratch {
    double *buf;
    size_t cap; /* doubles */
};
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *p)
{
    struct scratch *s = p;
    if (s)
        free(s->buf);
    free(s);
}

static void scratch_init(void)
{
    (void)pthread_key_create(&scratch_key, scratch_free);
}

static double *scratch_get(size_t doubles)
{
    pthread_once(&scratch_once, scratch_init);
    struct scratch *s = pthread_getspecific(scratch_key);
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s || pthread_setspecific(scratch_key, s) != 0) {
            free(s);
            return NULL;
        }
    }
    if (s->cap < doubles) {
        double *nb = realloc(s->buf, doubles * sizeof(double));
        if (!nb)
            return NULL;
        s->buf = nb;
        s->cap = doubles;
    }
    return s->buf;
}

/*
 * Computes the prediction of version v from closed candles c[0..n) of the
 * series (oldest first; only the last registry_version_candles(v) are
 * used). Takes ownership of c (frees it) whatever it returns.
 */
static int compute_from(api_context *ctx, registry_version *v, const char *symbol,
                        const char *tf, int64_t now, features_candle *all, size_t n_all,
                        api_prediction **out, char *why, size_t whylen)
{
    const inference_model *m = registry_version_model(v);
    const features_set *fs = registry_version_features(v);
    const inference_policy *pol = inference_model_policy(m);
    size_t need = registry_version_candles(v);
    size_t steps = inference_steps(m), nf = inference_n_features(m);
    size_t window = need - steps + 1;
    int64_t tfs = util_tf_seconds(tf);
    int rc;

    if (n_all < need) {
        if (why)
            snprintf(why, whylen, "%s %s has %zu closed candles; the model needs %zu", symbol, tf,
                     n_all, need);
        free(all);
        return PD_ENODATA;
    }
    features_candle *c = all + (n_all - need); /* the window this model reads */
    size_t n = need;
    store_window_info info = {.last_open = c[n - 1].t, .last_close = c[n - 1].t + tfs};
    for (size_t i = 1; i < n; i++)
        if (c[i].t - c[i - 1].t > tfs)
            info.gaps += (int)((c[i].t - c[i - 1].t) / tfs - 1);

    size_t scratch_doubles = steps * nf + inference_scratch_size(m) / sizeof(double) + 1;
    double *x = scratch_get(scratch_doubles);
    if (!x) {
        free(all);
        return PD_ENOMEM;
    }
    double *kernel_scratch = x + steps * nf;
    for (size_t s = 0; s < steps; s++) {
        rc = features_compute(fs, c + s, window, x + s * nf);
        if (rc) {
            /* stored candles the features cannot use are a data problem, not the client's */
            if (why)
                snprintf(why, whylen, "the last %zu candles of %s %s give no defined features: %s",
                         window, symbol, tf, util_strerror(rc));
            free(all);
            return rc == PD_EINVAL ? PD_ENODATA : rc;
        }
    }
    double probs[INFERENCE_NCLASS], atr = NAN;
    uint64_t run_t0 = util_mono_ns();
    rc = inference_run(m, x, probs, kernel_scratch);
    api_metrics_inference((double)(util_mono_ns() - run_t0) / 1e9);
    if (rc == 0)
        rc = features_atr_last(c + (n - window), window, (int)pol->atr_period, &atr);
    inference_signal sig;
    if (rc == 0)
        rc = inference_signal_make(pol, probs, c[n - 1].close, atr, &sig);
    if (rc) {
        if (why)
            snprintf(why, whylen,
                     "no prediction from the last candles of %s %s (non-finite features, or no "
                     "usable ATR for levels): %s",
                     symbol, tf, util_strerror(rc));
        free(all);
        return rc == PD_EINVAL ? PD_ENODATA : rc;
    }

    api_prediction *p = prediction_new();
    if (!p) {
        free(all);
        return PD_ENOMEM;
    }
    snprintf(p->symbol, sizeof p->symbol, "%s", symbol);
    snprintf(p->timeframe, sizeof p->timeframe, "%s", tf);
    p->direction = (int)sig.direction;
    memcpy(p->probs, probs, sizeof probs);
    p->confidence = sig.confidence;
    p->version = registry_version_number(v);
    p->candle_time = info.last_open;
    p->candle_close = info.last_close;
    p->prediction_time = now;
    p->valid_until = info.last_close + tfs;
    p->trained_at = registry_version_meta(v)->trained_at;
    p->max_age_s = pol->max_age_s;
    p->tf_seconds = tfs;
    p->gaps = info.gaps;
    /* issue 7: what the ledger records, and the live accuracy the fragment shows */
    p->has_levels = true;
    p->levels_for = (int)sig.levels_for;
    p->entry = sig.entry;
    p->stop_loss = sig.stop_loss;
    memcpy(p->tp, sig.tp, sizeof p->tp);
    p->atr = atr;
    p->horizon = pol->horizon;
    (void)api_live_get(ctx, symbol, tf, p->version, &p->live_hit_rate, &p->live_resolved);
    rc = api_render_fragment(p, &sig, v, window, atr);
    free(all);
    if (rc) {
        api_prediction_release(p);
        return rc;
    }
    atomic_fetch_add(&ctx->computed, 1);
    *out = p;
    return 0;
}

/* Loads the window of symbol/tf that version v needs, then compute_from. */
static int compute(api_context *ctx, registry_version *v, const char *symbol, const char *tf,
                   int64_t now, api_prediction **out, char *why, size_t whylen)
{
    features_candle *c = NULL;
    size_t n = 0;
    int rc = store_load_window(symbol, tf, now, registry_version_candles(v), &c, &n, NULL);
    if (rc) {
        if (why && rc == PD_EDB)
            snprintf(why, whylen, "the candle database is unavailable");
        return rc;
    }
    return compute_from(ctx, v, symbol, tf, now, c, n, out, why, whylen);
}

static int validate(const char *symbol, const char *tf)
{
    if (!util_symbol_valid(symbol))
        return PD_ESYMBOL;
    if (!util_tf_seconds(tf))
        return PD_ETIMEFRAME;
    return 0;
}

/* Distinguishes "no such symbol" from "no model" when the registry has
 * nothing to serve. */
static int no_model_reason(const char *symbol, const char *tf, int rc)
{
    if (rc != PD_ENOMODEL)
        return rc;
    int64_t count = 0;
    if (store_count_candles(symbol, tf, &count) == 0 && count == 0)
        return PD_EUNKNOWNSYM;
    return PD_ENOMODEL;
}

/* A request between its cache lookups and its computation. */
struct pending {
    registry_version *v;     /* one reference, or NULL when done */
    api_prediction *cached;  /* an older answer kept for when the database is down */
    char key[64];
    bool keyed;
    char label[16];          /* copied: v's label is borrowed */
};

/*
 * The cache half of a prediction. Returns 0 with *out when a cache answers,
 * 1 when pd holds what predict_finish needs to compute one, or an error.
 */
static int predict_begin(api_context *ctx, const char *symbol, const char *tf,
                         const registry_selector *sel, int64_t now, struct pending *pd,
                         api_prediction **out)
{
    memset(pd, 0, sizeof *pd);
    int rc = validate(symbol, tf);
    if (rc)
        return rc;
    rc = registry_acquire(ctx->reg, symbol, tf, sel, &pd->v);
    if (rc)
        return no_model_reason(symbol, tf, rc);
    uint32_t version = registry_version_number(pd->v);
    const char *vl = registry_version_label(pd->v);
    if (vl)
        snprintf(pd->label, sizeof pd->label, "%s", vl);
    const char *label = pd->label[0] ? pd->label : NULL;
    pd->keyed = ctx->opt.cache && api_cache_key(pd->key, sizeof pd->key, symbol, tf, version, label);
    if (!pd->keyed)
        return 1;
    bool recheck = false;
    pd->cached = cache_get(ctx, pd->key, now, &recheck);
    if (pd->cached && !recheck) {
        atomic_fetch_add(&ctx->process_hits, 1);
        registry_release(pd->v);
        *out = pd->cached;
        return 0;
    }
    atomic_fetch_add(&ctx->process_misses, 1);
    /* the candle a fresh prediction would use; Redis may have it from a replica */
    int64_t expect = util_tf_last_closed_open(now, util_tf_seconds(tf));
    if (!pd->cached || pd->cached->candle_time < expect) {
        api_prediction *r = redis_fetch(symbol, tf, version, label, expect);
        if (r) {
            atomic_fetch_add(&ctx->redis_hits, 1);
            cache_put(ctx, pd->key, r, now);
            api_prediction_release(pd->cached);
            registry_release(pd->v);
            *out = r;
            return 0;
        }
        atomic_fetch_add(&ctx->redis_misses, 1);
    }
    return 1;
}

/*
 * The computing half: from candles c[0..n) when given (ownership taken),
 * else loaded here; load_rc is the error of a failed preload. Releases
 * everything pd holds.
 */
static int predict_finish(api_context *ctx, const char *symbol, const char *tf, int64_t now,
                          struct pending *pd, features_candle *c, size_t n, int load_rc,
                          api_prediction **out, char *why, size_t whylen)
{
    api_prediction *p = NULL;
    int rc;
    if (load_rc) {
        free(c);
        rc = load_rc;
        if (why && rc == PD_EDB)
            snprintf(why, whylen, "the candle database is unavailable");
    } else if (c) {
        rc = compute_from(ctx, pd->v, symbol, tf, now, c, n, &p, why, whylen);
    } else {
        rc = compute(ctx, pd->v, symbol, tf, now, &p, why, whylen);
    }
    registry_release(pd->v);
    pd->v = NULL;
    if (rc) {
        if (pd->cached && rc == PD_EDB) { /* database down: the last answer, flagged by staleness */
            *out = pd->cached;
            return 0;
        }
        api_prediction_release(pd->cached);
        return rc;
    }
    api_prediction_release(pd->cached);
    if (pd->keyed) {
        cache_put(ctx, pd->key, p, now);
        redis_store(p, pd->label[0] ? pd->label : NULL, now);
    }
    *out = p;
    return 0;
}

int api_predict(api_context *ctx, const char *symbol, const char *tf,
                const registry_selector *sel, int64_t now, api_prediction **out, char *why,
                size_t whylen)
{
    struct pending pd;
    int rc = predict_begin(ctx, symbol, tf, sel, now, &pd, out);
    if (rc != 1)
        return rc;
    return predict_finish(ctx, symbol, tf, now, &pd, NULL, 0, 0, out, why, whylen);
}

int api_predict_many(api_context *ctx, const char *const *symbols, size_t n, const char *tf,
                     const registry_selector *sel, int64_t now, api_prediction **outs, int *rcs,
                     char (*whys)[256])
{
    struct pending *pd = calloc(n ? n : 1, sizeof *pd);
    const char **miss = calloc(n ? n : 1, sizeof *miss);
    size_t *idx = calloc(n ? n : 1, sizeof *idx);
    if (!pd || !miss || !idx) {
        free(pd);
        free(miss);
        free(idx);
        return PD_ENOMEM;
    }
    size_t m = 0, limit = 0;
    for (size_t i = 0; i < n; i++) {
        outs[i] = NULL;
        whys[i][0] = '\0';
        rcs[i] = predict_begin(ctx, symbols[i], tf, sel, now, &pd[i], &outs[i]);
        if (rcs[i] == 1) {
            size_t need = registry_version_candles(pd[i].v);
            limit = need > limit ? need : limit;
            miss[m] = symbols[i];
            idx[m++] = i;
        }
    }
    features_candle **c = NULL;
    size_t *cn = NULL;
    int *crc = NULL;
    /* one pipelined round trip to Redis (then the database) for every miss */
    if (m > 1 && (c = calloc(m, sizeof *c)) && (cn = calloc(m, sizeof *cn)) &&
        (crc = calloc(m, sizeof *crc)) &&
        store_load_windows(miss, m, tf, now, limit, c, cn, NULL, crc) != 0) {
        free(crc);
        crc = NULL;
    }
    for (size_t k = 0; k < m; k++) {
        size_t i = idx[k];
        if (crc)
            rcs[i] = predict_finish(ctx, symbols[i], tf, now, &pd[i], crc[k] ? NULL : c[k],
                                    crc[k] ? 0 : cn[k], crc[k], &outs[i], whys[i], 256);
        else /* one miss, or the batch could not be read: one at a time */
            rcs[i] = predict_finish(ctx, symbols[i], tf, now, &pd[i], NULL, 0, 0, &outs[i],
                                    whys[i], 256);
    }
    free(c);
    free(cn);
    free(crc);
    free(pd);
    free(miss);
    free(idx);
    return 0;
}

int api_predict_refresh(api_context *ctx, const char *symbol, const char *tf, int64_t now,
                        api_prediction **out, char *why, size_t whylen)
{
    int rc = validate(symbol, tf);
    if (rc)
        return rc;
    registry_version *v = NULL;
    rc = registry_acquire(ctx->reg, symbol, tf, NULL, &v);
    if (rc)
        return no_model_reason(symbol, tf, rc);
    api_prediction *p = NULL;
    rc = compute(ctx, v, symbol, tf, now, &p, why, whylen);
    if (rc == 0 && ctx->opt.cache) {
        char key[64];
        if (api_cache_key(key, sizeof key, symbol, tf, registry_version_number(v),
                          registry_version_label(v)))
            cache_put(ctx, key, p, now);
        redis_store(p, registry_version_label(v), now);
    }
    registry_release(v);
    if (rc == 0)
        *out = p;
    return rc;
}

/* ------------------------------------------------------------------------
 * Symbols per timeframe.
 */
int api_symbols_for(api_context *ctx, const char *tf, int64_t now, char ***out, size_t *n)
{
    static const char *tfs[] = {"1m", "5m", "15m", "1h", "4h", "1d"};
    size_t slot = 0;
    while (slot < 6 && strcmp(tfs[slot], tf) != 0)
        slot++;
    if (slot == 6)
        return PD_ETIMEFRAME;
    pthread_mutex_lock(&ctx->symbols_lock);
    struct api_symbols *s = &ctx->symbols[slot];
    if (!s->names || now - s->fetched_at >= SYMBOLS_TTL_S || !ctx->opt.cache) {
        char **names = NULL;
        size_t count = 0;
        int rc = store_list_symbols(tf, &names, &count);
        if (rc && !s->names) {
            pthread_mutex_unlock(&ctx->symbols_lock);
            return rc;
        }
        if (rc == 0) {
            store_strv_free(s->names, s->n);
            s->names = names;
            s->n = count;
            s->fetched_at = now;
        }
    }
    char **copy = calloc(s->n + 1, sizeof *copy);
    int rc = copy ? 0 : PD_ENOMEM;
    for (size_t i = 0; rc == 0 && i < s->n; i++)
        if (!(copy[i] = strdup(s->names[i])))
            rc = PD_ENOMEM;
    size_t count = s->n;
    pthread_mutex_unlock(&ctx->symbols_lock);
    if (rc) {
        store_strv_free(copy, count);
        return rc;
    }
    *out = copy;
    *n = count;
    return 0;
}
