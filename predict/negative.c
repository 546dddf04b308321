/*
 * negative.c: the cache of "no" answers. An unknown symbol, a series
 * without a model and a window with too few candles are answered from
 * here, like positive answers from the process cache, so no request does
 * I/O to say "no" (without it, every such answer cost a database query, and
 * a dashboard's list of symbols paid it on every refresh).
 *
 * An entry holds the code and its detail for one series and is used while:
 * - the registry's generation is the one it was made under (a new version
 *   serving anywhere may turn "no model" into an answer);
 * - its time has not run out: the next candle close of its timeframe, and
 *   never more than NEG_TTL_MAX_S, so a symbol imported behind this
 *   process's back is seen within seconds even without a notification;
 * - the inference loop has not forgotten it (predict__neg_forget, on the
 *   series' NOTIFY).
 * Only the default selection is cached (an explicit version or label asks
 *   something else of the registry), and nothing when caching is off.
 *
 * DESIGN: a fixed table of NEG_SLOTS entries addressed by a hash of the
 * series; a colliding series overwrites the slot. Memory is bounded
 * whatever symbols clients invent, and a lost entry only costs one query.
 *
 * THREADING: NEG_STRIPES mutexes, each guarding the slots whose index is
 * congruent to it; held for a copy, never across I/O.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "predict/predict_internal.h"

#define NEG_SLOTS 4096
#define NEG_STRIPES 16
#define NEG_TTL_MAX_S 30

struct neg_slot {
    char symbol[24]; /* "" when empty */
    char tf[8];
    int rc;
    uint64_t generation;
    int64_t until;
    char why[160];
};

struct predict_neg {
    util_mutex lock[NEG_STRIPES]; /* lock[i] guards slot[j] for j % NEG_STRIPES == i */
    struct neg_slot slot[NEG_SLOTS];
};

int predict__neg_new(struct predict_neg **out)
{
    struct predict_neg *n = calloc(1, sizeof *n);
    if (!n)
        return PD_ENOMEM;
    for (int i = 0; i < NEG_STRIPES; i++)
        util_mutex_init(&n->lock[i]);
    *out = n;
    return 0;
}

void predict__neg_free(struct predict_neg *n)
{
    if (!n)
        return;
    for (int i = 0; i < NEG_STRIPES; i++)
        util_mutex_destroy(&n->lock[i]);
    free(n);
}

static size_t slot_of(const char *symbol, const char *tf)
{
    return util_fnv1a(util_fnv1a(UTIL_FNV1A_INIT, symbol), tf) % NEG_SLOTS;
}

static bool cacheable(int rc)
{
    return rc == PD_EUNKNOWNSYM || rc == PD_ENOMODEL || rc == PD_ENODATA;
}

bool predict__neg_get(predict_service *svc, const char *symbol, const char *tf, int64_t now,
                      int *rc, char *why, size_t whylen)
{
    struct predict_neg *n = svc->neg;
    if (!n)
        return false;
    size_t i = slot_of(symbol, tf);
    uint64_t gen = registry_generation(svc->reg);
    bool hit = false;
    util_mutex_lock(&n->lock[i % NEG_STRIPES]);
    const struct neg_slot *s = &n->slot[i];
    if (s->symbol[0] && strcmp(s->symbol, symbol) == 0 && strcmp(s->tf, tf) == 0 &&
        s->generation == gen && now < s->until) {
        hit = true;
        *rc = s->rc;
        if (why && whylen)
            snprintf(why, whylen, "%s", s->why);
    }
    util_mutex_unlock(&n->lock[i % NEG_STRIPES]);
    return hit;
}

void predict__neg_put(predict_service *svc, const char *symbol, const char *tf, int64_t now,
                      uint64_t generation, int rc, const char *why)
{
    struct predict_neg *n = svc->neg;
    int64_t tfs = util_tf_seconds(tf);
    if (!n || !cacheable(rc) || tfs <= 0 || strlen(symbol) >= 24)
        return;
    /* until the close of the candle now open: a new one may change the answer */
    int64_t until = util_tf_last_closed_open(now, tfs) + 2 * tfs;
    if (until > now + NEG_TTL_MAX_S)
        until = now + NEG_TTL_MAX_S;
    size_t i = slot_of(symbol, tf);
    util_mutex_lock(&n->lock[i % NEG_STRIPES]);
    struct neg_slot *s = &n->slot[i];
    snprintf(s->symbol, sizeof s->symbol, "%s", symbol);
    snprintf(s->tf, sizeof s->tf, "%s", tf);
    s->rc = rc;
    s->generation = generation;
    s->until = until;
    snprintf(s->why, sizeof s->why, "%s", why ? why : "");
    util_mutex_unlock(&n->lock[i % NEG_STRIPES]);
}

void predict__neg_forget(predict_service *svc, const char *symbol, const char *tf)
{
    struct predict_neg *n = svc->neg;
    if (!n)
        return;
    size_t i = slot_of(symbol, tf);
    util_mutex_lock(&n->lock[i % NEG_STRIPES]);
    struct neg_slot *s = &n->slot[i];
    if (strcmp(s->symbol, symbol) == 0 && strcmp(s->tf, tf) == 0)
        s->symbol[0] = '\0';
    util_mutex_unlock(&n->lock[i % NEG_STRIPES]);
}
