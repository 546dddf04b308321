/*
 * live.c: the live accuracy table. For each series and model version, the
 * hit rate of its resolved LONG/SHORT predictions and how many there are,
 * as the inference loop last read them from the ledger
 * (predict_set_live_accuracy). A computed prediction looks its version up once
 * (predict__live_get, from pipeline.c) and renders model_accuracy from it; no
 * request ever queries the ledger for it.
 *
 * It does not decide when figures are refreshed (predict/loop.c does, after
 * the resolver settles rows) and does not talk SQL.
 *
 * THREADING: one mutex guards the table; entries are never removed, and a
 * series has few versions, so the table stays small (bounded by
 * LIVE_MAX entries; past it new series are not tracked and keep their test
 * accuracy).
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "predict/predict_internal.h"
#include "inference/inference.h"

_Static_assert(INFERENCE_NTP == 3, "predict_result holds three take-profits");

#define LIVE_BUCKETS 256
#define LIVE_MAX 100000

struct live_entry {
    char symbol[24];
    char tf[8];
    uint32_t version;
    double hit_rate;
    uint64_t resolved;
    struct live_entry *next;
};

struct predict_live {
    util_mutex lock; /* guards buckets, count and every entry's figures */
    struct live_entry *buckets[LIVE_BUCKETS];
    size_t count;
};

int predict__live_new(struct predict_live **out)
{
    struct predict_live *l = calloc(1, sizeof *l);
    if (!l)
        return PD_ENOMEM;
    if (util_mutex_init(&l->lock) != 0) {
        free(l);
        return PD_ENOMEM;
    }
    *out = l;
    return 0;
}

void predict__live_free(struct predict_live *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < LIVE_BUCKETS; i++) {
        struct live_entry *e = l->buckets[i];
        while (e) {
            struct live_entry *next = e->next;
            free(e);
            e = next;
        }
    }
    util_mutex_destroy(&l->lock);
    free(l);
}

static size_t bucket(const char *symbol, const char *tf, uint32_t version)
{
    uint32_t h = util_fnv1a(util_fnv1a(UTIL_FNV1A_INIT, symbol), tf);
    return util_fnv1a_u32(h, version) % LIVE_BUCKETS;
}

/* The entry of a version, or NULL; caller holds the lock. */
static struct live_entry *find(struct predict_live *l, size_t b, const char *symbol, const char *tf,
                               uint32_t version)
{
    UTIL_ASSERT_HELD(&l->lock);
    for (struct live_entry *e = l->buckets[b]; e; e = e->next)
        if (e->version == version && strcmp(e->symbol, symbol) == 0 && strcmp(e->tf, tf) == 0)
            return e;
    return NULL;
}

int predict_set_live_accuracy(predict_service *svc, const char *symbol, const char *tf, uint32_t version,
                          double hit_rate, uint64_t resolved)
{
    if (!svc || !symbol || !util_symbol_valid(symbol) || !tf || !util_tf_seconds(tf) ||
        version == 0 || !(hit_rate >= 0 && hit_rate <= 1))
        return PD_EINVAL;
    struct predict_live *l = svc->live;
    size_t b = bucket(symbol, tf, version);
    int rc = 0;
    util_mutex_lock(&l->lock);
    struct live_entry *e = find(l, b, symbol, tf, version);
    if (!e) {
        e = l->count < LIVE_MAX ? calloc(1, sizeof *e) : NULL;
        if (!e) {
            rc = PD_ENOMEM;
            goto out;
        }
        snprintf(e->symbol, sizeof e->symbol, "%s", symbol);
        snprintf(e->tf, sizeof e->tf, "%s", tf);
        e->version = version;
        e->next = l->buckets[b];
        l->buckets[b] = e;
        l->count++;
    }
    e->hit_rate = hit_rate;
    e->resolved = resolved;
out:
    util_mutex_unlock(&l->lock);
    return rc;
}

bool predict__live_get(predict_service *svc, const char *symbol, const char *tf, uint32_t version,
                  double *hit_rate, uint64_t *resolved)
{
    struct predict_live *l = svc ? svc->live : NULL;
    if (!l || !symbol || !tf)
        return false;
    size_t b = bucket(symbol, tf, version);
    util_mutex_lock(&l->lock);
    const struct live_entry *e = find(l, b, symbol, tf, version);
    bool found = e != NULL;
    if (found) {
        *hit_rate = e->hit_rate;
        *resolved = e->resolved;
    }
    util_mutex_unlock(&l->lock);
    return found;
}

void predict_set_ledger(predict_service *svc, struct store_ledger *db)
{
    atomic_store(&svc->ledger, db);
}

struct store_ledger *predict_ledger(predict_service *svc)
{
    return atomic_load(&svc->ledger);
}
