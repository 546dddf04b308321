/*
 * model.c: turns an unpacked model file (proto/model.proto) into a runnable
 * inference_model. Every shape, index and number is checked before anything
 * is copied, and a failure names the field and what was expected, because
 * the reason is shown to whoever published the version (admin API, logs).
 * The weights are copied into panel-packed double arrays (see
 * inference_internal.h) and the run scratch is sized here once.
 *
 * It does not resolve feature names (the features module does, through the
 * registry), run golden cases (run.c) or read files.
 *
 * DESIGN: validation and copying are interleaved per component, on a model
 * allocated zeroed, so every failure path is one inference_model_free().
 * Sizes are bounded by the INFERENCE_MAX_* limits before any allocation
 * that depends on them, and computed in 64 bits so no product overflows.
 *
 * THREAD SAFETY: building touches only its arguments; a built model is
 * never written again and may be shared by any number of threads.
 */
#include "inference/inference_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

/* State of one build: where the reason goes and what has been counted. */
struct build {
    char *why;
    size_t whylen;
    uint64_t params;      /* stored values so far (INFERENCE_MAX_PARAMS) */
    uint64_t scratch_max; /* doubles, checked against the limit */
};

static int fail(struct build *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(struct build *b, const char *fmt, ...)
{
    if (b->why && b->whylen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(b->why, b->whylen, fmt, ap);
        va_end(ap);
    }
    return PD_EVERIFY;
}

static int oom(struct build *b)
{
    if (b->why && b->whylen)
        snprintf(b->why, b->whylen, "out of memory building the model");
    return PD_ENOMEM;
}

static const char *kind_name(int kind)
{
    switch (kind) {
    case PREDICTD__MODEL_KIND__SOFTMAX:
        return "SOFTMAX";
    case PREDICTD__MODEL_KIND__MLP:
        return "MLP";
    case PREDICTD__MODEL_KIND__TREES:
        return "TREES";
    case PREDICTD__MODEL_KIND__SEQUENCE:
        return "SEQUENCE";
    default:
        return "?";
    }
}

static const char *act_name(int act)
{
    switch (act) {
    case PREDICTD__ACTIVATION__LINEAR:
        return "LINEAR";
    case PREDICTD__ACTIVATION__RELU:
        return "RELU";
    case PREDICTD__ACTIVATION__TANH:
        return "TANH";
    case PREDICTD__ACTIVATION__SIGMOID:
        return "SIGMOID";
    case PREDICTD__ACTIVATION__GELU:
        return "GELU";
    default:
        return NULL;
    }
}

/* Doubles a packed in -> out matrix and its bias take (inference_internal.h:
 * output rows padded to a panel), so the limit bounds memory, not just the
 * file's numbers. */
static uint64_t stored(uint64_t in, uint64_t out)
{
    const uint64_t rows = (out + INF_PANEL - 1) / INF_PANEL * INF_PANEL;
    return in * rows + rows;
}

/* Adds n stored values to the running count; fails past the limit. */
static int count_params(struct build *b, const char *what, uint64_t n)
{
    b->params += n;
    if (b->params > INFERENCE_MAX_PARAMS)
        return fail(b, "%s: the model has more than %u parameters (the limit)", what,
                    INFERENCE_MAX_PARAMS);
    return 0;
}

/* A width field (in, out, channels, ...) must be in [1, INFERENCE_MAX_WIDTH]. */
static int check_width(struct build *b, const char *what, const char *field, uint64_t v)
{
    if (v == 0)
        return fail(b, "%s: %s is 0", what, field);
    if (v > INFERENCE_MAX_WIDTH)
        return fail(b, "%s: %s is %llu, over the limit of %u", what, field, (unsigned long long)v,
                    INFERENCE_MAX_WIDTH);
    return 0;
}

static int check_len(struct build *b, const char *what, const char *field, size_t have,
                     uint64_t want, const char *how)
{
    if (have != want)
        return fail(b, "%s: %s has %zu values, expected %s=%llu", what, field, have, how,
                    (unsigned long long)want);
    return 0;
}

static int check_finite(struct build *b, const char *what, const char *field, const double *v,
                        size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return fail(b, "%s: %s[%zu] is not finite (%g)", what, field, i, v[i]);
    return 0;
}

static void *alloc_aligned(size_t bytes)
{
    bytes = (bytes + 63) / 64 * 64;
    void *p = aligned_alloc(64, bytes ? bytes : 64);
    if (p)
        memset(p, 0, bytes ? bytes : 64);
    return p;
}

static void dense_cleanup(struct inf_dense *d)
{
    free(d->w);
    free(d->b);
    d->w = d->b = NULL;
}

/*
 * Packs a row-major out x in matrix (w) and its bias into d (see
 * inference_internal.h). Layers with another layout (conv, LSTM) reorder
 * into a temporary row-major matrix first. Returns 0 or PD_ENOMEM.
 */
static int dense_pack(struct inf_dense *d, uint32_t in, uint32_t out, int act, const double *w,
                      const double *bias)
{
    size_t panels = inf_round_panel(out) / INF_PANEL;
    d->in = in;
    d->out = out;
    d->act = act;
    d->w = alloc_aligned(panels * (size_t)in * INF_PANEL * sizeof(double));
    d->b = alloc_aligned(inf_round_panel(out) * sizeof(double));
    if (!d->w || !d->b) {
        dense_cleanup(d);
        return PD_ENOMEM;
    }
    for (size_t o = 0; o < out; o++) {
        double *panel = d->w + (o / INF_PANEL) * (size_t)in * INF_PANEL;
        for (size_t i = 0; i < in; i++)
            panel[i * INF_PANEL + o % INF_PANEL] = w[o * (size_t)in + i];
        d->b[o] = bias ? bias[o] : 0.0;
    }
    return 0;
}

/*
 * Checks one Dense message whose input must be `want_in` (described by
 * `from` for the message) and packs it into dst.
 */
static int dense_build(struct build *b, const char *what, const Predictd__Dense *msg,
                       uint32_t want_in, const char *from, struct inf_dense *dst)
{
    int rc;
    if (!msg)
        return fail(b, "%s: missing", what);
    if ((rc = check_width(b, what, "in", msg->in)) || (rc = check_width(b, what, "out", msg->out)))
        return rc;
    if (msg->in != want_in)
        return fail(b, "%s: in is %u, expected %u (%s)", what, msg->in, want_in, from);
    if (!act_name(msg->activation))
        return fail(b, "%s: unknown activation %d", what, (int)msg->activation);
    uint64_t nw = (uint64_t)msg->in * msg->out;
    char how[64];
    snprintf(how, sizeof how, "%ux%u", msg->out, msg->in);
    if ((rc = count_params(b, what, stored(msg->in, msg->out))) ||
        (rc = check_len(b, what, "weights", msg->n_weights, nw, how)) ||
        (rc = check_len(b, what, "bias", msg->n_bias, msg->out, "out")) ||
        (rc = check_finite(b, what, "weights", msg->weights, msg->n_weights)) ||
        (rc = check_finite(b, what, "bias", msg->bias, msg->n_bias)))
        return rc;
    if (dense_pack(dst, msg->in, msg->out, msg->activation, msg->weights, msg->bias))
        return oom(b);
    return 0;
}

/*
 * A stack of Dense layers from `in` inputs to 3 logits (SOFTMAX and MLP
 * layers, or a sequence head). `from` names what feeds the first layer.
 * Sets m->dense, m->n_dense and m->dense_max.
 */
static int stack_build(struct build *b, inference_model *m, const char *field,
                       Predictd__Dense *const *layers, size_t n, uint32_t in, const char *from,
                       bool last_linear)
{
    char what[64], prev[96];
    int rc;
    if (n == 0)
        return fail(b, "%s: no layers", field);
    if (n > INFERENCE_MAX_WIDTH)
        return fail(b, "%s: %zu layers, over the limit of %u", field, n, INFERENCE_MAX_WIDTH);
    m->dense = calloc(n, sizeof *m->dense);
    if (!m->dense)
        return oom(b);
    m->n_dense = n;
    m->dense_max = in;
    snprintf(prev, sizeof prev, "%s", from);
    for (size_t i = 0; i < n; i++) {
        snprintf(what, sizeof what, "%s[%zu]", field, i);
        if ((rc = dense_build(b, what, layers[i], in, prev, &m->dense[i])))
            return rc;
        in = layers[i]->out;
        if (in > m->dense_max)
            m->dense_max = in;
        snprintf(prev, sizeof prev, "the out of %s", what);
    }
    const Predictd__Dense *last = layers[n - 1];
    if (last->out != INFERENCE_NCLASS)
        return fail(b, "%s[%zu]: out is %u, expected %d (one logit per class)", field, n - 1,
                    last->out, INFERENCE_NCLASS);
    if (last_linear && last->activation != PREDICTD__ACTIVATION__LINEAR)
        return fail(b, "%s[%zu]: the last layer's activation is %s, expected LINEAR (logits)",
                    field, n - 1, act_name(last->activation));
    return 0;
}

static int classes_build(struct build *b, inference_model *m, const Predictd__Model *msg)
{
    if (msg->n_classes != INFERENCE_NCLASS)
        return fail(b, "classes: %zu names, expected 3 (a permutation of LONG, SHORT, NO_TRADE)",
                    msg->n_classes);
    bool seen[INFERENCE_NCLASS] = {false};
    for (size_t j = 0; j < INFERENCE_NCLASS; j++) {
        int c = inference_class_parse(msg->classes[j]);
        if (c < 0)
            return fail(b, "classes[%zu]: unknown class \"%.32s\" (expected LONG, SHORT, NO_TRADE)",
                        j, msg->classes[j] ? msg->classes[j] : "");
        if (seen[c])
            return fail(b, "classes[%zu]: %s appears twice", j, inference_class_name(c));
        seen[c] = true;
        m->canon[j] = c;
    }
    return 0;
}

/* An optional list of medians: empty (all unknown) or exactly n values,
 * each NaN (unknown) or finite and >= 0. */
static int eta_build(struct build *b, const char *field, const double *v, size_t have, size_t n,
                     double *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = NAN;
    if (have == 0)
        return 0;
    if (have != n)
        return fail(b, "policy: %s has %zu values, expected 0 or %zu", field, have, n);
    for (size_t i = 0; i < n; i++) {
        if (!isnan(v[i]) && !(isfinite(v[i]) && v[i] >= 0))
            return fail(b, "policy: %s[%zu] is %g, expected >= 0 (or NaN for unknown)", field, i,
                        v[i]);
        out[i] = v[i];
    }
    return 0;
}

static int policy_build(struct build *b, inference_model *m, const Predictd__SignalPolicy *p)
{
    inference_policy *o = &m->policy;
    int rc;
    if (!p)
        return fail(b, "policy: missing");
    if (!(isfinite(p->sl_atr) && p->sl_atr > 0))
        return fail(b, "policy: sl_atr is %g, expected a positive number", p->sl_atr);
    if (p->n_tp_r != INFERENCE_NTP)
        return fail(b, "policy: tp_r has %zu values, expected %d", p->n_tp_r, INFERENCE_NTP);
    for (size_t k = 0; k < INFERENCE_NTP; k++) {
        if (!(isfinite(p->tp_r[k]) && p->tp_r[k] > 0))
            return fail(b, "policy: tp_r[%zu] is %g, expected a positive number", k, p->tp_r[k]);
        if (k > 0 && !(p->tp_r[k] > p->tp_r[k - 1]))
            return fail(b, "policy: tp_r is not ascending (tp_r[%zu]=%g after %g)", k, p->tp_r[k],
                        p->tp_r[k - 1]);
        o->tp_r[k] = p->tp_r[k];
    }
    if (p->horizon == 0)
        return fail(b, "policy: horizon is 0, expected >= 1 candle");
    if (!(p->min_confidence >= 0 && p->min_confidence <= 1))
        return fail(b, "policy: min_confidence is %g, expected a value in [0, 1]",
                    p->min_confidence);
    uint32_t atr = p->atr_period ? p->atr_period : 14;
    if (atr > INFERENCE_MAX_WINDOW)
        return fail(b, "policy: atr_period is %u, over the limit of %u", atr, INFERENCE_MAX_WINDOW);
    if (p->max_age_s < 0)
        return fail(b, "policy: max_age_s is %lld, expected >= 0 (0 = never expires)",
                    (long long)p->max_age_s);
    if ((rc = eta_build(b, "eta_candles", p->eta_candles, p->n_eta_candles, 2, o->eta_candles)) ||
        (rc = eta_build(b, "eta_candles_tp", p->eta_candles_tp, p->n_eta_candles_tp, INFERENCE_NTP,
                        o->eta_candles_tp)))
        return rc;
    double cost = p->costs ? p->costs->round_trip_bps : INFERENCE_DEFAULT_COST_BPS;
    double floor_costs = p->costs ? p->costs->min_risk_costs : 0;
    if (!(isfinite(cost) && cost >= 0 && cost < 10000))
        return fail(b, "policy: costs.round_trip_bps is %g, expected a value in [0, 10000)", cost);
    if (!(isfinite(floor_costs) && floor_costs >= 0))
        return fail(b, "policy: costs.min_risk_costs is %g, expected >= 0 (0 = %g)", floor_costs,
                    INFERENCE_DEFAULT_MIN_RISK_COSTS);
    o->cost_bps = cost;
    o->min_risk_costs = floor_costs > 0 ? floor_costs : INFERENCE_DEFAULT_MIN_RISK_COSTS;
    o->sl_atr = p->sl_atr;
    o->horizon = p->horizon;
    o->min_confidence = p->min_confidence;
    o->atr_period = atr;
    o->max_age_s = p->max_age_s;
    return 0;
}

/* Checks the scaler against the model and, when use is set, copies it. */
static int scaler_build(struct build *b, inference_model *m, const Predictd__Model *msg,
                        const Predictd__Scaler *s, bool use)
{
    int rc;
    if (!s) {
        if (use)
            return fail(b, "scaler: missing (this model reads scaled features)");
        return 0;
    }
    size_t n = m->n_features;
    if ((rc = check_len(b, "scaler", "mean", s->n_mean, n, "n_features")) ||
        (rc = check_len(b, "scaler", "scale", s->n_scale, n, "n_features")))
        return rc;
    if (s->n_features) {
        if (s->n_features != n)
            return fail(b, "scaler: lists %zu features, the model %zu", s->n_features, n);
        for (size_t i = 0; i < n; i++) {
            const char *f = s->features[i] ? s->features[i] : "";
            if (strcmp(f, msg->features[i]) != 0)
                return fail(b, "scaler: features[%zu] is \"%.40s\", the model's is \"%.40s\"", i, f,
                            msg->features[i]);
        }
    }
    if ((rc = check_finite(b, "scaler", "mean", s->mean, n)) ||
        (rc = check_finite(b, "scaler", "scale", s->scale, n)))
        return rc;
    for (size_t i = 0; i < n; i++)
        if (s->scale[i] == 0)
            return fail(b, "scaler: scale[%zu] is 0 (feature \"%.40s\")", i, msg->features[i]);
    if (!use)
        return 0;
    m->mean = malloc(n * sizeof(double));
    m->scale = malloc(n * sizeof(double));
    if (!m->mean || !m->scale)
        return oom(b);
    memcpy(m->mean, s->mean, n * sizeof(double));
    memcpy(m->scale, s->scale, n * sizeof(double));
    return 0;
}

/*
 * Checks one tree's arrays and that every node is reached from the root
 * at most once (so the walk ends: no cycle, no shared subtree), with the
 * children of reachable internal nodes in range. Nodes no path reaches are
 * allowed (XGBoost keeps pruned slots) but checked like the rest. Sets
 * *depth to the number of edges on the longest path. seen and stack have
 * room for the tree's nodes, dep too.
 */
static int tree_check(struct build *b, const char *what, const Predictd__Tree *t,
                      uint32_t n_features, uint8_t *seen, int32_t *stack, uint32_t *dep,
                      uint32_t *depth)
{
    int rc;
    size_t n = t->n_feature;
    if (n == 0)
        return fail(b, "%s: no nodes", what);
    if ((rc = check_len(b, what, "threshold", t->n_threshold, n, "nodes")) ||
        (rc = check_len(b, what, "left", t->n_left, n, "nodes")) ||
        (rc = check_len(b, what, "right", t->n_right, n, "nodes")) ||
        (rc = check_len(b, what, "value", t->n_value, n, "nodes")))
        return rc;
    if (t->n_default_left != 0 && t->n_default_left != n)
        return fail(b, "%s: default_left has %zu values, expected 0 or nodes=%zu", what,
                    t->n_default_left, n);
    if ((rc = check_finite(b, what, "threshold", t->threshold, n)) ||
        (rc = check_finite(b, what, "value", t->value, n)))
        return rc;
    for (size_t i = 0; i < n; i++) {
        if (t->feature[i] < 0)
            continue;
        if ((uint32_t)t->feature[i] >= n_features)
            return fail(b, "%s: node %zu splits on feature %d, the model has %u features", what, i,
                        t->feature[i], n_features);
        if (t->left[i] < 0 || (size_t)t->left[i] >= n)
            return fail(b, "%s: node %zu: left child %d out of range (the tree has %zu nodes)",
                        what, i, t->left[i], n);
        if (t->right[i] < 0 || (size_t)t->right[i] >= n)
            return fail(b, "%s: node %zu: right child %d out of range (the tree has %zu nodes)",
                        what, i, t->right[i], n);
    }
    memset(seen, 0, n);
    size_t top = 0;
    uint32_t deepest = 0;
    stack[top++] = 0;
    seen[0] = 1;
    dep[0] = 0;
    while (top) {
        int32_t i = stack[--top];
        if (dep[i] > deepest)
            deepest = dep[i];
        if (t->feature[i] < 0)
            continue;
        int32_t kids[2] = {t->left[i], t->right[i]};
        for (int k = 0; k < 2; k++) {
            if (seen[kids[k]])
                return fail(b, "%s: node %d is reached twice (from node %d): not a tree", what,
                            kids[k], i);
            seen[kids[k]] = 1;
            dep[kids[k]] = dep[i] + 1;
            stack[top++] = kids[k];
        }
    }
    *depth = deepest;
    return 0;
}

static int trees_build(struct build *b, inference_model *m, const Predictd__TreeEnsemble *e)
{
    int rc;
    if (e->n_features != m->n_features)
        return fail(b, "trees: n_features is %u, the model lists %u features", e->n_features,
                    m->n_features);
    if (e->n_classes != INFERENCE_NCLASS)
        return fail(b, "trees: n_classes is %u, expected 3", e->n_classes);
    if (e->n_trees == 0)
        return fail(b, "trees: no trees");
    if (e->n_tree_class != e->n_trees)
        return fail(b, "trees: tree_class has %zu values, expected one per tree (%zu)",
                    e->n_tree_class, e->n_trees);
    if (e->n_base_score != INFERENCE_NCLASS)
        return fail(b, "trees: base_score has %zu values, expected 3", e->n_base_score);
    if ((rc = check_finite(b, "trees", "base_score", e->base_score, INFERENCE_NCLASS)))
        return rc;
    if (e->rule != PREDICTD__SPLIT_RULE__LESS && e->rule != PREDICTD__SPLIT_RULE__LESS_EQUAL)
        return fail(b, "trees: unknown split rule %d", (int)e->rule);
    if ((rc = count_params(b, "trees", e->n_trees)))
        return rc;
    size_t total = 0, widest = 0;
    for (size_t t = 0; t < e->n_trees; t++) {
        if (!e->trees[t])
            return fail(b, "trees.trees[%zu]: missing", t);
        if (e->tree_class[t] >= INFERENCE_NCLASS)
            return fail(b, "trees: tree_class[%zu] is %u, expected < 3", t, e->tree_class[t]);
        size_t n = e->trees[t]->n_feature;
        if ((rc = count_params(b, "trees", n * (sizeof(struct inf_node) / sizeof(double)))))
            return rc;
        total += n;
        if (n > widest)
            widest = n;
    }
    uint8_t *seen = malloc(widest);
    int32_t *stack = malloc(widest * sizeof *stack);
    uint32_t *dep = malloc(widest * sizeof *dep);
    size_t groups = (e->n_trees + INF_TREE_GROUP - 1) / INF_TREE_GROUP;
    m->roots = malloc(e->n_trees * sizeof *m->roots);
    m->tree_class = malloc(e->n_trees);
    m->depth = malloc(e->n_trees * sizeof *m->depth);
    m->group_depth = calloc(groups, sizeof *m->group_depth);
    m->nodes = malloc(total * sizeof *m->nodes);
    if (!seen || !stack || !dep || !m->roots || !m->tree_class || !m->depth || !m->group_depth ||
        !m->nodes) {
        rc = oom(b);
        goto out;
    }
    size_t at = 0;
    for (size_t t = 0; t < e->n_trees; t++) {
        const Predictd__Tree *tr = e->trees[t];
        char what[48];
        snprintf(what, sizeof what, "trees.trees[%zu]", t);
        if ((rc = tree_check(b, what, tr, m->n_features, seen, stack, dep, &m->depth[t])))
            goto out;
        m->roots[t] = (int32_t)at;
        m->tree_class[t] = (uint8_t)e->tree_class[t];
        if (m->depth[t] > m->group_depth[t / INF_TREE_GROUP])
            m->group_depth[t / INF_TREE_GROUP] = m->depth[t];
        for (size_t i = 0; i < tr->n_feature; i++) {
            struct inf_node *nd = &m->nodes[at + i];
            const int32_t self = (int32_t)(at + i);
            nd->leaf = tr->feature[i] < 0;
            nd->feature = nd->leaf ? 0 : tr->feature[i];
            nd->thr = nd->leaf ? NAN : tr->threshold[i];
            nd->value = nd->leaf ? tr->value[i] : 0.0;
            nd->left = nd->leaf ? self : (int32_t)at + tr->left[i];
            nd->right = nd->leaf ? self : (int32_t)at + tr->right[i];
        }
        at += tr->n_feature;
    }
    m->n_trees = e->n_trees;
    m->n_nodes = total;
    memcpy(m->base_score, e->base_score, sizeof m->base_score);
    m->rule_less_equal = e->rule == PREDICTD__SPLIT_RULE__LESS_EQUAL;
    rc = 0;
out:
    free(seen);
    free(stack);
    free(dep);
    return rc;
}

static int conv_build(struct build *b, const char *what, const Predictd__Conv1d *c, uint32_t cin,
                      uint32_t lin, struct inf_conv *dst)
{
    int rc;
    if (!c)
        return fail(b, "%s: missing", what);
    if ((rc = check_width(b, what, "in_channels", c->in_channels)) ||
        (rc = check_width(b, what, "out_channels", c->out_channels)) ||
        (rc = check_width(b, what, "kernel", c->kernel)))
        return rc;
    if (c->in_channels != cin)
        return fail(b, "%s: in_channels is %u, expected %u (the previous output's channels)", what,
                    c->in_channels, cin);
    if (c->padding > INFERENCE_MAX_WIDTH)
        return fail(b, "%s: padding is %u, over the limit of %u", what, c->padding,
                    INFERENCE_MAX_WIDTH);
    int64_t lout = (int64_t)lin + 2 * (int64_t)c->padding - c->kernel + 1;
    if (lout < 1)
        return fail(b, "%s: output length %lld < 1 (steps %u + 2 x padding %u - kernel %u + 1)",
                    what, (long long)lout, lin, c->padding, c->kernel);
    if (lout > INFERENCE_MAX_WIDTH)
        return fail(b, "%s: output length %lld, over the limit of %u", what, (long long)lout,
                    INFERENCE_MAX_WIDTH);
    if (!act_name(c->activation))
        return fail(b, "%s: unknown activation %d", what, (int)c->activation);
    uint64_t nw = (uint64_t)c->out_channels * c->in_channels * c->kernel;
    char how[64];
    snprintf(how, sizeof how, "%ux%ux%u", c->out_channels, c->in_channels, c->kernel);
    if ((rc = count_params(b, what,
                           stored((uint64_t)c->in_channels * c->kernel, c->out_channels))) ||
        (rc = check_len(b, what, "weights", c->n_weights, nw, how)) ||
        (rc = check_len(b, what, "bias", c->n_bias, c->out_channels, "out_channels")) ||
        (rc = check_finite(b, what, "weights", c->weights, c->n_weights)) ||
        (rc = check_finite(b, what, "bias", c->bias, c->n_bias)))
        return rc;
    /* out x in x kernel (PyTorch) -> out x kernel x in: a window of kernel
     * time-major input steps is then contiguous. */
    size_t K = c->kernel, I = c->in_channels, O = c->out_channels;
    double *w = malloc(nw * sizeof(double));
    if (!w)
        return oom(b);
    for (size_t o = 0; o < O; o++)
        for (size_t k = 0; k < K; k++)
            for (size_t i = 0; i < I; i++)
                w[(o * K + k) * I + i] = c->weights[(o * I + i) * K + k];
    rc = dense_pack(&dst->d, (uint32_t)(K * I), c->out_channels, c->activation, w, c->bias);
    free(w);
    if (rc)
        return oom(b);
    dst->cin = cin;
    dst->cout = c->out_channels;
    dst->kernel = c->kernel;
    dst->pad = c->padding;
    dst->lin = lin;
    dst->lout = (uint32_t)lout;
    return 0;
}

static int lstm_build(struct build *b, const Predictd__Lstm *l, uint32_t in, struct inf_lstm *dst)
{
    const char *what = "sequence.lstm";
    int rc;
    if ((rc = check_width(b, what, "input_size", l->input_size)) ||
        (rc = check_width(b, what, "hidden_size", l->hidden_size)))
        return rc;
    if (l->input_size != in)
        return fail(b, "%s: input_size is %u, expected %u (the channels feeding it)", what,
                    l->input_size, in);
    uint64_t H = l->hidden_size, G = 4 * H;
    char how[64];
    snprintf(how, sizeof how, "4x%llux%u", (unsigned long long)H, in);
    if ((rc = count_params(b, what, stored(in + H, G))) ||
        (rc = check_len(b, what, "weight_ih", l->n_weight_ih, G * in, how)))
        return rc;
    snprintf(how, sizeof how, "4x%llux%llu", (unsigned long long)H, (unsigned long long)H);
    if ((rc = check_len(b, what, "weight_hh", l->n_weight_hh, G * H, how)) ||
        (rc = check_len(b, what, "bias_ih", l->n_bias_ih, G, "4xhidden")) ||
        (rc = check_len(b, what, "bias_hh", l->n_bias_hh, G, "4xhidden")) ||
        (rc = check_finite(b, what, "weight_ih", l->weight_ih, l->n_weight_ih)) ||
        (rc = check_finite(b, what, "weight_hh", l->weight_hh, l->n_weight_hh)) ||
        (rc = check_finite(b, what, "bias_ih", l->bias_ih, l->n_bias_ih)) ||
        (rc = check_finite(b, what, "bias_hh", l->bias_hh, l->n_bias_hh)))
        return rc;
    size_t cols = in + H;
    double *w = malloc(G * cols * sizeof(double));
    double *bias = malloc(G * sizeof(double));
    if (!w || !bias) {
        free(w);
        free(bias);
        return oom(b);
    }
    for (size_t g = 0; g < G; g++) {
        memcpy(w + g * cols, l->weight_ih + g * in, in * sizeof(double));
        memcpy(w + g * cols + in, l->weight_hh + g * H, H * sizeof(double));
        bias[g] = l->bias_ih[g] + l->bias_hh[g];
    }
    rc =
        dense_pack(&dst->gates, (uint32_t)cols, (uint32_t)G, PREDICTD__ACTIVATION__LINEAR, w, bias);
    free(w);
    free(bias);
    if (rc)
        return oom(b);
    dst->in = in;
    dst->hidden = (uint32_t)H;
    return 0;
}

/* Adds a scratch region of n doubles (rounded to a panel) to the total. */
static void scratch_add(uint64_t *total, uint64_t n)
{
    *total += (n + INF_PANEL - 1) / INF_PANEL * INF_PANEL;
}

static int sequence_build(struct build *b, inference_model *m, const Predictd__SequenceNet *s)
{
    int rc;
    if ((rc = check_width(b, "sequence", "steps", s->steps)))
        return rc;
    if (s->n_conv > INFERENCE_MAX_WIDTH)
        return fail(b, "sequence: %zu conv layers, over the limit", s->n_conv);
    m->steps = s->steps;
    uint32_t ch = m->n_features, len = s->steps;
    /* Buffer j holds conv j's zero-padded input; the last holds the final
     * output. Two buffers alternate, each as large as the largest. */
    uint64_t buf = (uint64_t)len * ch;
    if (s->n_conv) {
        m->conv = calloc(s->n_conv, sizeof *m->conv);
        if (!m->conv)
            return oom(b);
        m->n_conv = s->n_conv;
    }
    for (size_t j = 0; j < s->n_conv; j++) {
        char what[48];
        snprintf(what, sizeof what, "sequence.conv[%zu]", j);
        if ((rc = conv_build(b, what, s->conv[j], ch, len, &m->conv[j])))
            return rc;
        uint64_t in_buf = ((uint64_t)len + 2 * (uint64_t)m->conv[j].pad) * ch;
        if (in_buf > buf)
            buf = in_buf;
        ch = m->conv[j].cout;
        len = m->conv[j].lout;
        if ((uint64_t)len * ch > buf)
            buf = (uint64_t)len * ch;
        if (buf * sizeof(double) > INFERENCE_MAX_SCRATCH_BYTES)
            return fail(b, "%s: needs %llu doubles of scratch, over the limit of %u bytes", what,
                        (unsigned long long)buf, INFERENCE_MAX_SCRATCH_BYTES);
    }
    uint64_t scratch = 0;
    scratch_add(&scratch, buf);
    scratch_add(&scratch, buf);
    m->seq_buf = (size_t)inf_round_panel((size_t)buf);
    const char *from = s->n_conv ? "the last conv's out_channels" : "n_features";
    if (s->lstm) {
        if ((rc = lstm_build(b, s->lstm, ch, &m->lstm)))
            return rc;
        m->has_lstm = true;
        ch = m->lstm.hidden;
        from = "the LSTM's hidden_size";
        scratch_add(&scratch, (uint64_t)m->lstm.in + ch); /* [x_t ; h] */
        scratch_add(&scratch, 4 * (uint64_t)ch);          /* gates */
        scratch_add(&scratch, ch);                        /* c */
    }
    if ((rc = stack_build(b, m, "sequence.head", s->head, s->n_head, ch, from, false)))
        return rc;
    scratch_add(&scratch, m->dense_max);
    scratch_add(&scratch, m->dense_max);
    b->scratch_max = scratch;
    return 0;
}

static int body_check(struct build *b, const Predictd__Model *msg)
{
    int kind = msg->kind;
    bool layers = msg->n_layers > 0, trees = msg->trees != NULL, seq = msg->sequence != NULL;
    if (kind == PREDICTD__MODEL_KIND__MODEL_KIND_UNSPECIFIED)
        return fail(b, "kind is unset (expected SOFTMAX, MLP, TREES or SEQUENCE)");
    if (kind < PREDICTD__MODEL_KIND__SOFTMAX || kind > PREDICTD__MODEL_KIND__SEQUENCE)
        return fail(b, "kind %d is unknown (expected SOFTMAX, MLP, TREES or SEQUENCE)", kind);
    bool want_layers = kind == PREDICTD__MODEL_KIND__SOFTMAX || kind == PREDICTD__MODEL_KIND__MLP;
    bool want_trees = kind == PREDICTD__MODEL_KIND__TREES;
    bool want_seq = kind == PREDICTD__MODEL_KIND__SEQUENCE;
    const char *body = want_layers ? "layers" : want_trees ? "trees" : "sequence";
    if ((want_layers && !layers) || (want_trees && !trees) || (want_seq && !seq))
        return fail(b, "kind %s without its body: %s is missing", kind_name(kind), body);
    if (layers && !want_layers)
        return fail(b, "kind %s also has layers (only SOFTMAX and MLP have them)", kind_name(kind));
    if (trees && !want_trees)
        return fail(b, "kind %s also has a trees body (only TREES has one)", kind_name(kind));
    if (seq && !want_seq)
        return fail(b, "kind %s also has a sequence body (only SEQUENCE has one)", kind_name(kind));
    if (kind == PREDICTD__MODEL_KIND__SOFTMAX && msg->n_layers != 1)
        return fail(b, "kind SOFTMAX has %zu layers, expected exactly 1", msg->n_layers);
    return 0;
}

int inference_model_build(const Predictd__Model *msg, const Predictd__Scaler *scaler,
                          inference_model **out, char *why, size_t whylen)
{
    struct build b = {why, whylen, 0, 0};
    if (why && whylen)
        why[0] = '\0';
    if (!msg || !out) {
        if (why && whylen)
            snprintf(why, whylen, "no model message");
        return PD_EINVAL;
    }
    if (msg->format != 1)
        return fail(&b, "format is %u, this server reads format 1", msg->format);
    int rc = body_check(&b, msg);
    if (rc)
        return rc;
    if (msg->n_features == 0)
        return fail(&b, "features: empty (the model must list its input features)");
    if (msg->n_features > INFERENCE_MAX_WIDTH)
        return fail(&b, "features: %zu, over the limit of %u", msg->n_features,
                    INFERENCE_MAX_WIDTH);
    for (size_t i = 0; i < msg->n_features; i++)
        if (!msg->features[i] || !msg->features[i][0])
            return fail(&b, "features[%zu] is empty", i);
    if (msg->window == 0)
        return fail(&b, "window is 0, expected >= 1 candle");
    if (msg->window > INFERENCE_MAX_WINDOW)
        return fail(&b, "window is %u, over the limit of %u", msg->window, INFERENCE_MAX_WINDOW);
    if (!(isfinite(msg->temperature) && msg->temperature >= 0))
        return fail(&b, "temperature is %g, expected a finite number >= 0 (0 means 1)",
                    msg->temperature);

    inference_model *m = calloc(1, sizeof *m);
    if (!m)
        return oom(&b);
    m->kind = msg->kind;
    m->k = inference__kernels_best();
    m->n_features = (uint32_t)msg->n_features;
    m->steps = 1;
    m->temperature = msg->temperature > 0 ? msg->temperature : 1.0;
    if ((rc = classes_build(&b, m, msg)) || (rc = policy_build(&b, m, msg->policy)))
        goto fail;

    uint64_t scratch = 0;
    switch (msg->kind) {
    case PREDICTD__MODEL_KIND__SOFTMAX:
    case PREDICTD__MODEL_KIND__MLP:
        if ((rc = scaler_build(&b, m, msg, scaler, true)) ||
            (rc = stack_build(&b, m, "layers", msg->layers, msg->n_layers, m->n_features,
                              "n_features", true)))
            goto fail;
        scratch_add(&scratch, m->dense_max); /* scaled input, then ping-pong */
        scratch_add(&scratch, m->dense_max);
        break;
    case PREDICTD__MODEL_KIND__TREES:
        if ((rc = scaler_build(&b, m, msg, scaler, msg->trees->scaled_input)) ||
            (rc = trees_build(&b, m, msg->trees)))
            goto fail;
        scratch_add(&scratch, m->n_features);
        break;
    case PREDICTD__MODEL_KIND__SEQUENCE:
        if ((rc = scaler_build(&b, m, msg, scaler, true)) ||
            (rc = sequence_build(&b, m, msg->sequence)))
            goto fail;
        scratch = b.scratch_max;
        break;
    default: /* body_check accepted only the four kinds */
        rc = PD_EINTERNAL;
        goto fail;
    }
    if (scratch * sizeof(double) > INFERENCE_MAX_SCRATCH_BYTES) {
        rc = fail(&b, "the model needs %llu bytes of scratch, over the limit of %u",
                  (unsigned long long)(scratch * sizeof(double)), INFERENCE_MAX_SCRATCH_BYTES);
        goto fail;
    }
    m->scratch_bytes = (size_t)scratch * sizeof(double);
    *out = m;
    return 0;
fail:
    inference_model_free(m);
    return rc;
}

void inference_model_free(inference_model *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_dense; i++)
        dense_cleanup(&m->dense[i]);
    free(m->dense);
    for (size_t j = 0; j < m->n_conv; j++)
        dense_cleanup(&m->conv[j].d);
    free(m->conv);
    dense_cleanup(&m->lstm.gates);
    free(m->roots);
    free(m->tree_class);
    free(m->depth);
    free(m->group_depth);
    free(m->nodes);
    free(m->mean);
    free(m->scale);
    free(m);
}

size_t inference_n_features(const inference_model *m)
{
    return m->n_features;
}

size_t inference_steps(const inference_model *m)
{
    return m->steps;
}

size_t inference_scratch_size(const inference_model *m)
{
    return m->scratch_bytes;
}

const inference_policy *inference_model_policy(const inference_model *m)
{
    return &m->policy;
}

int inference_model_kind(const inference_model *m)
{
    return m->kind;
}
