/*
 * pipeline.c: the prediction pipeline and its caches.
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
 * Threading: predict_one is called concurrently by HTTP workers, the CLI and
 * the inference loop. The process cache is guarded by svc->cache_lock (a
 * rwlock: lookups share it); predictions are immutable once published.
 * Each thread keeps its own scratch for features and the kernel.
 */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "predict/predict_internal.h"
#include "features/features.h"
#include "store/store.h"
#include "inference/inference.h"

#define RECHECK_S 2
#define SYMBOLS_TTL_S 5

/* An predict_result with its reference count in front. */
struct pred_box {
    atomic_int refs;
    predict_result p;
};

static struct pred_box *box_of(predict_result *p)
{
    return (struct pred_box *)((char *)p - offsetof(struct pred_box, p));
}

void predict_result_retain(predict_result *p)
{
    atomic_fetch_add_explicit(&box_of(p)->refs, 1, memory_order_relaxed);
}

void predict_result_release(predict_result *p)
{
    if (!p)
        return;
    struct pred_box *b = box_of(p);
    if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1) {
        free(b->p.fragment);
        free(b);
    }
}

static predict_result *prediction_new(void)
{
    struct pred_box *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    atomic_init(&b->refs, 1);
    return &b->p;
}

/* ------------------------------------------------------------------------
 * The service.
 */
int predict_service_new(const predict_options *opt, registry *reg, predict_service **out)
{
    predict_service *svc = calloc(1, sizeof *svc);
    if (!svc)
        return PD_ENOMEM;
    svc->opt = *opt;
    svc->reg = reg;
    if (util_rwlock_init(&svc->cache_lock) != 0) {
        free(svc);
        return PD_ENOMEM;
    }
    util_mutex_init(&svc->symbols_lock);
    if (predict__live_new(&svc->live) != 0 || predict__ticks_new(&svc->ticks) != 0 ||
        (opt->cache && predict__neg_new(&svc->neg) != 0)) {
        predict_service_free(svc);
        return PD_ENOMEM;
    }
    *out = svc;
    return 0;
}

void predict_service_free(predict_service *svc)
{
    if (!svc)
        return;
    for (size_t i = 0; i < PREDICT_CACHE_BUCKETS; i++) {
        struct predict_cache_entry *e = svc->buckets[i];
        while (e) {
            struct predict_cache_entry *next = e->next;
            predict_result_release(e->p);
            free(e);
            e = next;
        }
    }
    for (size_t i = 0; i < sizeof svc->symbols / sizeof svc->symbols[0]; i++)
        predict_symbol_list_release(svc->symbols[i].list);
    predict__live_free(svc->live);
    predict__neg_free(svc->neg);
    predict__ticks_free(svc->ticks);
    util_rwlock_destroy(&svc->cache_lock);
    util_mutex_destroy(&svc->symbols_lock);
    free(svc);
}

registry *predict_registry(predict_service *svc)
{
    return svc->reg;
}

void predict_cache_stats_get(predict_service *svc, predict_cache_stats *out)
{
    out->process_hits = atomic_load(&svc->process_hits);
    out->process_misses = atomic_load(&svc->process_misses);
    out->redis_hits = atomic_load(&svc->redis_hits);
    out->redis_misses = atomic_load(&svc->redis_misses);
    out->computed = atomic_load(&svc->computed);
    out->negative_hits = atomic_load(&svc->negative_hits);
}

/* ------------------------------------------------------------------------
 * Process cache.
 */
bool predict__cache_key(char *key, size_t len, const char *symbol, const char *tf, uint32_t version,
                   const char *label)
{
    /* the label is rendered into the prediction, so it is part of the key */
    int n = snprintf(key, len, "%s|%s|v%u|%s", symbol, tf, version, label ? label : "-");
    return n > 0 && (size_t)n < len;
}

static size_t bucket_of(const char *key)
{
    return util_fnv1a(UTIL_FNV1A_INIT, key) % PREDICT_CACHE_BUCKETS;
}

/* Returns a new reference to the cached prediction for key, or NULL. When
 * the entry is past its candle and was last checked RECHECK_S ago, *recheck
 * is set (and the entry is still returned, for use if the recheck fails). */
static predict_result *cache_get(predict_service *svc, const char *key, int64_t now, bool *recheck)
{
    predict_result *p = NULL;
    *recheck = false;
    util_rwlock_rdlock(&svc->cache_lock);
    for (struct predict_cache_entry *e = svc->buckets[bucket_of(key)]; e; e = e->next) {
        if (strcmp(e->key, key) != 0)
            continue;
        p = e->p;
        predict_result_retain(p);
        if (now >= p->valid_until) {
            /* a newer candle may have closed: ask the database, once per RECHECK_S */
            int64_t seen = atomic_load_explicit(&e->checked_at, memory_order_relaxed);
            if (now - seen >= RECHECK_S &&
                atomic_compare_exchange_strong(&e->checked_at, &seen, now))
                *recheck = true;
        }
        break;
    }
    util_rwlock_unlock(&svc->cache_lock);
    return p;
}

/*
 * Keeps at most PREDICT_CACHE_PER_SERIES entries of one series (versions and
 * labels): a series that went through many versions must not keep one
 * entry per version forever. Unlinks the entries with the oldest
 * predictions, except keep, and returns them for freeing outside the lock.
 * Called with cache_lock held for writing; scans every bucket, which costs
 * a few microseconds once per new entry (one per series and version).
 */
static struct predict_cache_entry *evict_series(predict_service *svc, const char *key,
                                            const struct predict_cache_entry *keep)
{
    UTIL_ASSERT_WRITE_HELD(&svc->cache_lock);
    const char *bar = strchr(key, '|');
    bar = bar ? strchr(bar + 1, '|') : NULL;
    size_t plen = bar ? (size_t)(bar - key) + 1 : strlen(key); /* "SYMBOL|TF|" */
    struct predict_cache_entry *victims = NULL;
    for (;;) {
        size_t count = 0;
        struct predict_cache_entry **oldest = NULL;
        for (size_t i = 0; i < PREDICT_CACHE_BUCKETS; i++)
            for (struct predict_cache_entry **pe = &svc->buckets[i]; *pe; pe = &(*pe)->next) {
                if (strncmp((*pe)->key, key, plen) != 0)
                    continue;
                count++;
                if (*pe != keep && (!oldest || !(*oldest)->p ||
                                    ((*pe)->p && (*pe)->p->prediction_time <
                                                     (*oldest)->p->prediction_time)))
                    oldest = pe;
            }
        if (count <= PREDICT_CACHE_PER_SERIES || !oldest)
            return victims;
        struct predict_cache_entry *v = *oldest;
        *oldest = v->next;
        v->next = victims;
        victims = v;
    }
}

/* Publishes p under key (taking a new reference), replacing an older one. */
static void cache_put(predict_service *svc, const char *key, predict_result *p, int64_t now)
{
    size_t b = bucket_of(key);
    predict_result *old = NULL;
    struct predict_cache_entry *victims = NULL;
    util_rwlock_wrlock(&svc->cache_lock);
    struct predict_cache_entry *e = svc->buckets[b];
    while (e && strcmp(e->key, key) != 0)
        e = e->next;
    if (!e) {
        e = calloc(1, sizeof *e);
        if (!e) {
            util_rwlock_unlock(&svc->cache_lock);
            return; /* caching is an optimisation: skip it */
        }
        snprintf(e->key, sizeof e->key, "%s", key);
        e->next = svc->buckets[b];
        svc->buckets[b] = e;
        victims = evict_series(svc, key, e);
    }
    /* never replace a prediction for a newer candle with an older one */
    if (!(e->p && e->p->candle_time > p->candle_time)) {
        old = e->p;
        predict_result_retain(p);
        e->p = p;
    }
    atomic_store(&e->checked_at, now);
    util_rwlock_unlock(&svc->cache_lock);
    predict_result_release(old);
    while (victims) {
        struct predict_cache_entry *next = victims->next;
        predict_result_release(victims->p);
        free(victims);
        victims = next;
    }
}

/* ------------------------------------------------------------------------
 * Redis cache of rendered predictions: one key per series, model version and
 * candle, so replicas share work and a new version or candle never reads an
 * old answer. The value is a header line of the numbers, then the fragment.
 * The header ends with the fragment's length and FNV-1a sum: the fragment is
 * served as it is, so a value cut short or altered in Redis must be a miss,
 * not half a JSON object.
 */
static void redis_key(char *key, size_t len, const char *symbol, const char *tf, uint32_t version,
                      const char *label, int64_t candle)
{
    snprintf(key, len, "predictd:pred:%s:%s:v%u:%s:%lld", symbol, tf, version,
             label ? label : "-", (long long)candle);
}

/* The Redis key and value of p (value appended to b); false when it has
 * nothing left to live for (ttl) or did not fit. */
static bool redis_entry(const predict_result *p, const char *label, int64_t now, char *key,
                        size_t keylen, util_buf *b, int64_t *ttl)
{
    redis_key(key, keylen, p->symbol, p->timeframe, p->version, label, p->candle_time);
    util_buf_printf(b,
                    "PD3 %d %d %d %d %d %a %a %a %a %a %lld %lld %lld %lld %lld %lld %lld %d %zu "
                    "%08x\n",
                    p->direction, p->model_choice, p->no_trade_reason, (int)p->stale_data,
                    p->n_warnings, p->model_accuracy,
                    p->probs[0], p->probs[1], p->probs[2], p->confidence,
                    (long long)p->candle_time, (long long)p->candle_close,
                    (long long)p->prediction_time, (long long)p->valid_until,
                    (long long)p->trained_at, (long long)p->max_age_s, (long long)p->tf_seconds,
                    p->gaps, p->fragment_len,
                    util_fnv1a_bytes(UTIL_FNV1A_INIT, p->fragment, p->fragment_len));
    util_buf_append(b, p->fragment, p->fragment_len);
    *ttl = p->valid_until - now + 1;
    return util_buf_ok(b) && *ttl > 1;
}

static void redis_store(const predict_result *p, const char *label, int64_t now)
{
    char key[128];
    int64_t ttl = 0;
    util_buf b;
    util_buf_init(&b);
    if (redis_entry(p, label, now, key, sizeof key, &b, &ttl))
        (void)store_cache_set(key, b.data, b.len, ttl);
    util_buf_cleanup(&b);
}

static predict_result *redis_fetch(const char *symbol, const char *tf, uint32_t version,
                                   const char *label, int64_t candle)
{
    char key[128];
    redis_key(key, sizeof key, symbol, tf, version, label, candle);
    char *val = NULL;
    size_t len = 0;
    if (store_cache_get(key, &val, &len) != 0)
        return NULL;
    predict_result *p = prediction_new();
    char *nl = memchr(val, '\n', len);
    long long ct, cc, pt, vu, ta, ma, tfs;
    int consumed = 0, stale_data = 0;
    size_t fraglen = 0;
    unsigned sum = 0;
    if (!p || !nl ||
        sscanf(val,
               "PD3 %d %d %d %d %d %la %la %la %la %la %lld %lld %lld %lld %lld %lld %lld %d %zu "
               "%x%n",
               &p->direction, &p->model_choice, &p->no_trade_reason, &stale_data, &p->n_warnings,
               &p->model_accuracy, &p->probs[0], &p->probs[1], &p->probs[2], &p->confidence, &ct,
               &cc, &pt, &vu, &ta, &ma, &tfs, &p->gaps, &fraglen, &sum, &consumed) != 20 ||
        val + consumed != nl || ct != candle || fraglen != len - (size_t)(nl + 1 - val) ||
        sum != util_fnv1a_bytes(UTIL_FNV1A_INIT, nl + 1, fraglen)) {
        predict_result_release(p);
        free(val);
        return NULL;
    }
    p->stale_data = stale_data != 0;
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
        predict_result_release(p);
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
 * The rules between the model's probabilities and the answer, in the order
 * they take precedence: levels on the market's tick, the cost floor, a
 * model that does not beat its baselines, data too old to trade on.
 */
static void apply_rules(const predict_service *svc, registry_version *v, const features_candle *c,
                        size_t n, int64_t tfs, int64_t now, double exchange_tick,
                        inference_signal *sig)
{
    int64_t stale_tfs = svc->opt.stale_tfs > 0 ? svc->opt.stale_tfs : PREDICT_STALE_TFS;
    const inference_policy *pol = inference_model_policy(registry_version_model(v));
    inference_signal_market(pol, exchange_tick > 0 ? exchange_tick : features_price_tick(c, n),
                            sig);
    if (registry_meta_metric(registry_version_meta(v), "beats_baseline") == 0) {
        sig->direction = INFERENCE_NO_TRADE;
        sig->no_trade_reason = INFERENCE_NT_BASELINE;
    }
    if (now - (c[n - 1].t + tfs) > stale_tfs * tfs) {
        sig->direction = INFERENCE_NO_TRADE;
        sig->no_trade_reason = INFERENCE_NT_STALE;
    }
}

/*
 * Computes the prediction of version v from closed candles c[0..n) of the
 * series (oldest first; only the last registry_version_candles(v) are
 * used). Takes ownership of c (frees it) whatever it returns.
 */
static int compute_from(predict_service *svc, registry_version *v, const char *symbol,
                        const char *tf, int64_t now, features_candle *all, size_t n_all,
                        predict_result **out, char *why, size_t whylen)
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
    predict__inference_observe((double)(util_mono_ns() - run_t0) / 1e9);
    if (rc == 0)
        rc = features_atr_last(c + (n - window), window, (int)pol->atr_period, &atr);
    inference_signal sig;
    if (rc == 0)
        rc = inference_signal_make(pol, probs, c[n - 1].close, atr, &sig);
    double exchange_tick = 0;
    if (rc == 0) {
        exchange_tick = predict__exchange_tick(svc, symbol);
        apply_rules(svc, v, c, n, tfs, now, exchange_tick, &sig);
    }
    if (rc) {
        if (why)
            snprintf(why, whylen,
                     "no prediction from the last candles of %s %s (non-finite features, or no "
                     "usable ATR for levels): %s",
                     symbol, tf, util_strerror(rc));
        free(all);
        return rc == PD_EINVAL ? PD_ENODATA : rc;
    }

    predict_result *p = prediction_new();
    if (!p) {
        free(all);
        return PD_ENOMEM;
    }
    snprintf(p->symbol, sizeof p->symbol, "%s", symbol);
    snprintf(p->timeframe, sizeof p->timeframe, "%s", tf);
    p->direction = (int)sig.direction;
    p->model_choice = (int)sig.model_choice;
    p->no_trade_reason = sig.no_trade_reason;
    p->stale_data = sig.no_trade_reason == INFERENCE_NT_STALE;
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
    /* what the ledger records, and the live accuracy the fragment shows */
    p->has_levels = true;
    p->levels_for = (int)sig.levels_for;
    p->entry = sig.entry;
    p->stop_loss = sig.stop_loss;
    memcpy(p->tp, sig.tp, sizeof p->tp);
    p->atr = atr;
    p->horizon = pol->horizon;
    (void)predict__live_get(svc, symbol, tf, p->version, &p->live_hit_rate, &p->live_resolved);
    p->model_accuracy = p->live_resolved >= PREDICT_LIVE_MIN_RESOLVED
                            ? p->live_hit_rate
                            : registry_meta_metric(registry_version_meta(v), "bt_hit_rate");
    rc = predict__render_fragment(p, &sig, v, window, atr, exchange_tick > 0);
    free(all);
    if (rc) {
        predict_result_release(p);
        return rc;
    }
    atomic_fetch_add(&svc->computed, 1);
    *out = p;
    return 0;
}

int predict__compute_window(predict_service *svc, registry_version *v, const char *symbol,
                            const char *tf, int64_t now, const features_candle *c, size_t n,
                            predict_result **out, char *why, size_t whylen)
{
    features_candle *copy = malloc((n ? n : 1) * sizeof *copy);
    if (!copy)
        return PD_ENOMEM;
    if (n)
        memcpy(copy, c, n * sizeof *copy);
    return compute_from(svc, v, symbol, tf, now, copy, n, out, why, whylen);
}

/* Loads the window of symbol/tf that version v needs, then compute_from. */
static int compute(predict_service *svc, registry_version *v, const char *symbol, const char *tf,
                   int64_t now, predict_result **out, char *why, size_t whylen)
{
    features_candle *c = NULL;
    size_t n = 0;
    int rc = store_load_window(symbol, tf, now, registry_version_candles(v), &c, &n, NULL);
    if (rc) {
        if (why && rc == PD_EDB)
            snprintf(why, whylen, "the candle database is unavailable");
        return rc;
    }
    return compute_from(svc, v, symbol, tf, now, c, n, out, why, whylen);
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
    uint64_t generation;     /* the registry's, before it was asked (negative.c) */
    bool neg;                /* a "no" may be cached (the default selection) */
    predict_result *cached;  /* an older answer kept for when the database is down */
    char key[64];
    bool keyed;
    char label[16];          /* copied: v's label is borrowed */
};

/*
 * The cache half of a prediction. Returns 0 with *out when a cache answers,
 * 1 when pd holds what predict_finish needs to compute one, or an error.
 */
static int predict_begin(predict_service *svc, const char *symbol, const char *tf,
                         const registry_selector *sel, int64_t now, struct pending *pd,
                         predict_result **out, char *why, size_t whylen)
{
    memset(pd, 0, sizeof *pd);
    int rc = validate(symbol, tf);
    if (rc)
        return rc;
    /* "No" answers are cached too (negative.c), but looked up only where
     * I/O would follow: a served answer from the process cache never takes
     * the negative cache's lock. */
    pd->neg = svc->neg && (!sel || (!sel->version && !sel->label));
    pd->generation = registry_generation(svc->reg);
    rc = registry_acquire(svc->reg, symbol, tf, sel, &pd->v);
    if (rc) {
        int cached_rc;
        if (pd->neg && predict__neg_get(svc, symbol, tf, now, &cached_rc, why, whylen)) {
            atomic_fetch_add(&svc->negative_hits, 1);
            return cached_rc;
        }
        rc = no_model_reason(symbol, tf, rc);
        if (pd->neg)
            predict__neg_put(svc, symbol, tf, now, pd->generation, rc, NULL);
        return rc;
    }
    uint32_t version = registry_version_number(pd->v);
    const char *vl = registry_version_label(pd->v);
    if (vl)
        snprintf(pd->label, sizeof pd->label, "%s", vl);
    const char *label = pd->label[0] ? pd->label : NULL;
    pd->keyed = svc->opt.cache && predict__cache_key(pd->key, sizeof pd->key, symbol, tf, version, label);
    if (!pd->keyed)
        return 1;
    bool recheck = false;
    pd->cached = cache_get(svc, pd->key, now, &recheck);
    if (pd->cached && !recheck) {
        atomic_fetch_add(&svc->process_hits, 1);
        registry_release(pd->v);
        *out = pd->cached;
        return 0;
    }
    atomic_fetch_add(&svc->process_misses, 1);
    if (pd->neg && predict__neg_get(svc, symbol, tf, now, &rc, why, whylen)) {
        /* a model serves, but its window was found wanting (too few candles) */
        atomic_fetch_add(&svc->negative_hits, 1);
        predict_result_release(pd->cached);
        registry_release(pd->v);
        pd->v = NULL;
        return rc;
    }
    /* the candle a fresh prediction would use; Redis may have it from a replica */
    int64_t expect = util_tf_last_closed_open(now, util_tf_seconds(tf));
    if (!pd->cached || pd->cached->candle_time < expect) {
        predict_result *r = redis_fetch(symbol, tf, version, label, expect);
        if (r) {
            atomic_fetch_add(&svc->redis_hits, 1);
            cache_put(svc, pd->key, r, now);
            predict_result_release(pd->cached);
            registry_release(pd->v);
            *out = r;
            return 0;
        }
        atomic_fetch_add(&svc->redis_misses, 1);
    }
    return 1;
}

/*
 * The computing half: from candles c[0..n) when given (ownership taken),
 * else loaded here; load_rc is the error of a failed preload. Releases
 * everything pd holds.
 */
static int predict_finish(predict_service *svc, const char *symbol, const char *tf, int64_t now,
                          struct pending *pd, features_candle *c, size_t n, int load_rc,
                          predict_result **out, char *why, size_t whylen)
{
    predict_result *p = NULL;
    int rc;
    if (load_rc) {
        free(c);
        rc = load_rc;
        if (why && rc == PD_EDB)
            snprintf(why, whylen, "the candle database is unavailable");
    } else if (c) {
        rc = compute_from(svc, pd->v, symbol, tf, now, c, n, &p, why, whylen);
    } else {
        rc = compute(svc, pd->v, symbol, tf, now, &p, why, whylen);
    }
    registry_release(pd->v);
    pd->v = NULL;
    if (rc) {
        if (pd->cached && rc == PD_EDB) { /* database down: the last answer, flagged by staleness */
            *out = pd->cached;
            return 0;
        }
        predict_result_release(pd->cached);
        if (pd->neg)
            predict__neg_put(svc, symbol, tf, now, pd->generation, rc, why);
        return rc;
    }
    predict_result_release(pd->cached);
    if (pd->keyed) {
        cache_put(svc, pd->key, p, now);
        redis_store(p, pd->label[0] ? pd->label : NULL, now);
    }
    *out = p;
    return 0;
}

int predict_one(predict_service *svc, const char *symbol, const char *tf,
                const registry_selector *sel, int64_t now, predict_result **out, char *why,
                size_t whylen)
{
    struct pending pd;
    int rc = predict_begin(svc, symbol, tf, sel, now, &pd, out, why, whylen);
    if (rc != 1)
        return rc;
    return predict_finish(svc, symbol, tf, now, &pd, NULL, 0, 0, out, why, whylen);
}

int predict_many(predict_service *svc, const char *const *symbols, size_t n, const char *tf,
                     const registry_selector *sel, int64_t now, predict_result **outs, int *rcs,
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
        rcs[i] = predict_begin(svc, symbols[i], tf, sel, now, &pd[i], &outs[i], whys[i], 256);
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
            rcs[i] = predict_finish(svc, symbols[i], tf, now, &pd[i], crc[k] ? NULL : c[k],
                                    crc[k] ? 0 : cn[k], crc[k], &outs[i], whys[i], 256);
        else /* one miss, or the batch could not be read: one at a time */
            rcs[i] = predict_finish(svc, symbols[i], tf, now, &pd[i], NULL, 0, 0, &outs[i],
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

int predict_refresh(predict_service *svc, const char *symbol, const char *tf, int64_t now,
                    predict_result **out, char *why, size_t whylen)
{
    predict_result *p = NULL;
    int rc1 = 0;
    char whys[1][256] = {""};
    int rc = predict_refresh_many(svc, &symbol, 1, tf, now, &p, &rc1, whys);
    if (rc == 0)
        rc = rc1;
    if (rc == 0)
        *out = p;
    else if (why && whylen)
        snprintf(why, whylen, "%s", whys[0]);
    return rc;
}

int predict_refresh_many(predict_service *svc, const char *const *symbols, size_t n,
                         const char *tf, int64_t now, predict_result **outs, int *rcs,
                         char (*whys)[256])
{
    if (!util_tf_seconds(tf))
        return PD_ETIMEFRAME;
    registry_version **v = calloc(n ? n : 1, sizeof *v);
    uint64_t *gen = calloc(n ? n : 1, sizeof *gen);
    const char **miss = calloc(n ? n : 1, sizeof *miss);
    size_t *idx = calloc(n ? n : 1, sizeof *idx);
    features_candle **c = calloc(n ? n : 1, sizeof *c);
    size_t *cn = calloc(n ? n : 1, sizeof *cn);
    int *crc = calloc(n ? n : 1, sizeof *crc);
    util_buf *vals = calloc(n ? n : 1, sizeof *vals);
    char(*keys)[128] = calloc(n ? n : 1, sizeof *keys);
    const char **kp = calloc(n ? n : 1, sizeof *kp), **vp = calloc(n ? n : 1, sizeof *vp);
    size_t *lens = calloc(n ? n : 1, sizeof *lens);
    int64_t *ttls = calloc(n ? n : 1, sizeof *ttls);
    int rc = PD_ENOMEM;
    if (!v || !gen || !miss || !idx || !c || !cn || !crc || !vals || !keys || !kp || !vp ||
        !lens || !ttls)
        goto out;

    /* the versions serving each series, and the longest window they need */
    size_t m = 0, limit = 0;
    for (size_t i = 0; i < n; i++) {
        outs[i] = NULL;
        whys[i][0] = '\0';
        rcs[i] = validate(symbols[i], tf);
        if (rcs[i])
            continue;
        gen[i] = registry_generation(svc->reg);
        rcs[i] = registry_acquire(svc->reg, symbols[i], tf, NULL, &v[i]);
        if (rcs[i]) {
            rcs[i] = no_model_reason(symbols[i], tf, rcs[i]);
            predict__neg_put(svc, symbols[i], tf, now, gen[i], rcs[i], NULL);
            continue;
        }
        size_t need = registry_version_candles(v[i]);
        limit = need > limit ? need : limit;
        miss[m] = symbols[i];
        idx[m++] = i;
    }
    /* every window in one pipelined round trip to Redis, then the database;
     * when the batch itself fails (out of memory), each series gets its code */
    int wrc = m ? store_load_windows(miss, m, tf, now, limit, c, cn, NULL, crc) : 0;
    for (size_t k = 0; wrc && k < m; k++)
        crc[k] = wrc;
    size_t nset = 0;
    for (size_t k = 0; k < m; k++) {
        size_t i = idx[k];
        if (crc[k]) {
            rcs[i] = crc[k];
            if (rcs[i] == PD_EDB)
                snprintf(whys[i], 256, "the candle database is unavailable");
        } else {
            rcs[i] = compute_from(svc, v[i], symbols[i], tf, now, c[k], cn[k], &outs[i],
                                  whys[i], 256);
            c[k] = NULL; /* compute_from took it */
        }
        const char *label = registry_version_label(v[i]);
        if (rcs[i]) {
            predict__neg_put(svc, symbols[i], tf, now, gen[i], rcs[i], whys[i]);
        } else if (svc->opt.cache) {
            predict__neg_forget(svc, symbols[i], tf);
            char key[64];
            if (predict__cache_key(key, sizeof key, symbols[i], tf, registry_version_number(v[i]),
                                   label))
                cache_put(svc, key, outs[i], now);
            util_buf_init(&vals[nset]);
            if (redis_entry(outs[i], label, now, keys[nset], sizeof keys[nset], &vals[nset],
                            &ttls[nset])) {
                kp[nset] = keys[nset];
                vp[nset] = vals[nset].data;
                lens[nset] = vals[nset].len;
                nset++;
            } else {
                util_buf_cleanup(&vals[nset]);
            }
        }
    }
    /* the rendered predictions for the replicas, in one more round trip */
    if (nset)
        (void)store_cache_set_many(kp, vp, lens, ttls, nset);
    for (size_t k = 0; k < nset; k++)
        util_buf_cleanup(&vals[k]);
    rc = 0;
out:
    for (size_t i = 0; v && i < n; i++)
        registry_release(v[i]);
    for (size_t k = 0; c && k < n; k++)
        free(c[k]);
    free(v);
    free(gen);
    free(miss);
    free(idx);
    free(c);
    free(cn);
    free(crc);
    free(vals);
    free(keys);
    free(kp);
    free(vp);
    free(lens);
    free(ttls);
    return rc;
}

/* ------------------------------------------------------------------------
 * Symbols per timeframe.
 */
/* A predict_symbol_list with its reference count and its strings in one
 * allocation. */
struct symbol_box {
    atomic_int refs;
    predict_symbol_list list;
    const char *names[]; /* then the strings */
};

static struct symbol_box *symbol_box_of(predict_symbol_list *l)
{
    return (struct symbol_box *)((char *)l - offsetof(struct symbol_box, list));
}

void predict_symbol_list_release(predict_symbol_list *l)
{
    if (l && atomic_fetch_sub_explicit(&symbol_box_of(l)->refs, 1, memory_order_acq_rel) == 1)
        free(symbol_box_of(l));
}

static predict_symbol_list *symbol_list_new(char **names, size_t n)
{
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += strlen(names[i]) + 1;
    struct symbol_box *b = malloc(sizeof *b + n * sizeof b->names[0] + bytes);
    if (!b)
        return NULL;
    atomic_init(&b->refs, 1);
    char *at = (char *)&b->names[n];
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(names[i]) + 1;
        memcpy(at, names[i], len);
        b->names[i] = at;
        at += len;
    }
    b->list.n = n;
    b->list.names = b->names;
    return &b->list;
}

int predict_symbols_for(predict_service *svc, const char *tf, int64_t now,
                        predict_symbol_list **out)
{
    static const char *tfs[] = {"1m", "5m", "15m", "1h", "4h", "1d"};
    size_t slot = 0;
    while (slot < 6 && strcmp(tfs[slot], tf) != 0)
        slot++;
    if (slot == 6)
        return PD_ETIMEFRAME;
    struct predict_symbols *s = &svc->symbols[slot];
    util_mutex_lock(&svc->symbols_lock);
    bool due = !s->list || now - s->fetched_at >= SYMBOLS_TTL_S || !svc->opt.cache;
    bool mine = due && (!s->refreshing || !s->list);
    if (mine)
        s->refreshing = true;
    predict_symbol_list *cur = s->list;
    if (cur)
        atomic_fetch_add_explicit(&symbol_box_of(cur)->refs, 1, memory_order_relaxed);
    util_mutex_unlock(&svc->symbols_lock);
    if (!mine) {
        *out = cur;
        return 0;
    }

    /* this request reads the list; the others meanwhile use the old one */
    char **names = NULL;
    size_t count = 0;
    int rc = store_list_symbols(tf, &names, &count);
    predict_symbol_list *fresh = rc == 0 ? symbol_list_new(names, count) : NULL;
    if (rc == 0 && !fresh)
        rc = PD_ENOMEM;
    store_strv_free(names, count);
    util_mutex_lock(&svc->symbols_lock);
    s->refreshing = false;
    predict_symbol_list *old = NULL;
    if (fresh) {
        old = s->list;
        s->list = fresh;
        s->fetched_at = now;
        atomic_fetch_add_explicit(&symbol_box_of(fresh)->refs, 1, memory_order_relaxed);
    }
    util_mutex_unlock(&svc->symbols_lock);
    predict_symbol_list_release(old);
    if (fresh) {
        predict_symbol_list_release(cur);
        *out = fresh;
        return 0;
    }
    if (cur) { /* the database failed: the last list still answers */
        *out = cur;
        return 0;
    }
    return rc;
}

/* ------------------------------------------------------------------------
 * What /metrics reads.
 */
size_t predict_freshness_get(predict_service *svc, predict_freshness *out, size_t max)
{
    size_t n = 0;
    util_rwlock_rdlock(&svc->cache_lock);
    for (size_t i = 0; i < PREDICT_CACHE_BUCKETS; i++)
        for (const struct predict_cache_entry *e = svc->buckets[i]; e; e = e->next) {
            const predict_result *p = e->p;
            if (!p)
                continue;
            size_t k = 0;
            while (k < n && !(strcmp(out[k].symbol, p->symbol) == 0 &&
                              strcmp(out[k].timeframe, p->timeframe) == 0))
                k++;
            if (k == n) {
                if (n == max)
                    continue;
                memset(&out[k], 0, sizeof out[k]);
                snprintf(out[k].symbol, sizeof out[k].symbol, "%s", p->symbol);
                snprintf(out[k].timeframe, sizeof out[k].timeframe, "%s", p->timeframe);
                n++;
            }
            if (p->candle_close > out[k].candle_close) {
                out[k].candle_close = p->candle_close;
                out[k].gaps = p->gaps;
            }
        }
    util_rwlock_unlock(&svc->cache_lock);
    return n;
}

/* 1 us .. 100 ms */
static const double latency_bounds[PREDICT_LATENCY_BUCKETS] = {
    0.000001, 0.0000025, 0.000005, 0.00001, 0.000025, 0.00005, 0.0001,
    0.00025,  0.0005,    0.001,    0.0025,  0.01,     0.025,   0.1};
static _Atomic uint64_t latency_counts[PREDICT_LATENCY_BUCKETS + 1];
static _Atomic uint64_t latency_sum_ns;

void predict__inference_observe(double seconds)
{
    if (!(seconds >= 0))
        seconds = 0;
    size_t i = 0;
    while (i < PREDICT_LATENCY_BUCKETS && seconds > latency_bounds[i])
        i++;
    atomic_fetch_add_explicit(&latency_counts[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&latency_sum_ns, (uint64_t)(seconds * 1e9), memory_order_relaxed);
}

void predict_latency_get(predict_latency *out)
{
    out->bounds = latency_bounds;
    for (size_t i = 0; i <= PREDICT_LATENCY_BUCKETS; i++)
        out->counts[i] = atomic_load_explicit(&latency_counts[i], memory_order_relaxed);
    out->sum_s = (double)atomic_load_explicit(&latency_sum_ns, memory_order_relaxed) / 1e9;
}
