/*
 * fit: gradient training of training__net and temperature calibration.
 *
 * Objective: class-weighted cross-entropy (weights w_c inverse to the train
 * slice's class frequencies, so NO_TRADE-light or LONG-heavy data does not
 * collapse to one class) plus L2 on weights. Optimiser: Adam over shuffled
 * mini-batches (a batch as large as the slice is full-batch gradient
 * descent).
 *
 * Probabilities: a model fit with class weights estimates probabilities
 * proportional to w_c p(c|x), which is not what the API promises. The
 * output bias therefore gets -log w_c (prior correction), and the served
 * model is softmax((logits - log w) / T) with a temperature T fitted on the
 * validation slice's NLL afterwards.
 *
 * Early stopping: after each epoch the validation NLL of the corrected
 * probabilities is measured; the best parameters (including the initial
 * ones) are kept and training stops after `patience` epochs without
 * improvement.
 *
 * Not here: splitting, scaling (the caller passes scaled rows), metrics.
 * Deterministic: the order of every sum is fixed and the only randomness
 * is the seeded shuffle. Single-threaded; cancellation is polled between
 * batches.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "training/internal.h"

/* Mean NLL over idx of softmax(logits + adj): the served probabilities'
 * loss (adj undoes the class weights' prior shift). */
static double val_nll(const training__net *net, const double *xs, const training_label *y,
                      const size_t *idx, size_t n, const double adj[INFERENCE_NCLASS],
                      double *scratch)
{
    if (n == 0)
        return NAN;
    double s = 0;
    size_t d = net->dim[0];
    for (size_t k = 0; k < n; k++) {
        double z[INFERENCE_NCLASS];
        training__net_logits(net, xs + idx[k] * d, scratch, z);
        for (int c = 0; c < INFERENCE_NCLASS; c++)
            z[c] += adj[c];
        double m = z[0] > z[1] ? z[0] : z[1];
        m = m > z[2] ? m : z[2];
        double lse = m + log(exp(z[0] - m) + exp(z[1] - m) + exp(z[2] - m));
        s += lse - z[y[idx[k]].cls];
    }
    return s / (double)n;
}

typedef struct adam {
    double *m, *v, *g;
    double b1t, b2t; /* beta^t */
} adam;

/* Forward and backward of one sample, accumulating scale * dLoss/dparam. */
static void backprop(const training__net *net, const double *x, int cls, double scale, double *g,
                     double *act, double *delta, double *delta2)
{
    /* act: concatenated activations of every layer output, act_off per layer */
    size_t L = net->n_layers;
    size_t off[TRAINING_MAX_HIDDEN + 2];
    off[0] = 0;
    for (size_t l = 0; l < L; l++)
        off[l + 1] = off[l] + net->dim[l + 1];
    /* forward */
    const double *in = x;
    for (size_t l = 0; l < L; l++) {
        size_t ni = net->dim[l], no = net->dim[l + 1];
        const double *W = net->p + net->w_off[l], *b = net->p + net->b_off[l];
        double *out = act + off[l];
        bool last = l + 1 == L;
        for (size_t o = 0; o < no; o++) {
            double s = b[o];
            const double *row = W + o * ni;
            for (size_t i = 0; i < ni; i++)
                s += row[i] * in[i];
            out[o] = last ? s : (s > 0 ? s : 0);
        }
        in = out;
    }
    /* softmax gradient at the logits */
    double *z = act + off[L - 1];
    double m = z[0] > z[1] ? z[0] : z[1];
    m = m > z[2] ? m : z[2];
    double e[INFERENCE_NCLASS], s = 0;
    for (int c = 0; c < INFERENCE_NCLASS; c++)
        s += (e[c] = exp(z[c] - m));
    for (int c = 0; c < INFERENCE_NCLASS; c++)
        delta[c] = scale * (e[c] / s - (c == cls ? 1.0 : 0.0));
    /* backward */
    for (size_t l = L; l-- > 0;) {
        size_t ni = net->dim[l], no = net->dim[l + 1];
        const double *a_in = l == 0 ? x : act + off[l - 1];
        double *gW = g + net->w_off[l], *gb = g + net->b_off[l];
        for (size_t o = 0; o < no; o++) {
            double dl = delta[o];
            if (dl == 0)
                continue;
            double *grow = gW + o * ni;
            for (size_t i = 0; i < ni; i++)
                grow[i] += dl * a_in[i];
            gb[o] += dl;
        }
        if (l == 0)
            break;
        const double *W = net->p + net->w_off[l];
        for (size_t i = 0; i < ni; i++)
            delta2[i] = 0;
        for (size_t o = 0; o < no; o++) {
            double dl = delta[o];
            if (dl == 0)
                continue;
            const double *row = W + o * ni;
            for (size_t i = 0; i < ni; i++)
                delta2[i] += row[i] * dl;
        }
        for (size_t i = 0; i < ni; i++)
            delta[i] = a_in[i] > 0 ? delta2[i] : 0;
    }
}

static void adam_step(training__net *net, adam *a, double lr, double l2)
{
    const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
    a->b1t *= b1;
    a->b2t *= b2;
    double c1 = 1.0 / (1.0 - a->b1t), c2 = 1.0 / (1.0 - a->b2t);
    for (size_t l = 0; l < net->n_layers; l++) {
        size_t nw = net->dim[l + 1] * net->dim[l];
        for (size_t k = net->w_off[l]; k < net->w_off[l] + nw; k++)
            a->g[k] += l2 * net->p[k];
    }
    for (size_t k = 0; k < net->n_params; k++) {
        double gk = a->g[k];
        a->m[k] = b1 * a->m[k] + (1 - b1) * gk;
        a->v[k] = b2 * a->v[k] + (1 - b2) * gk * gk;
        net->p[k] -= lr * (a->m[k] * c1) / (sqrt(a->v[k] * c2) + eps);
    }
}

int training__fit(training__net *net, const double *xs, const training_label *y,
                  const size_t *train, size_t n_train, const size_t *val, size_t n_val,
                  const double cw[INFERENCE_NCLASS], const training__fit_opts *o,
                  training__fit_out *out)
{
    int rc = PD_ENOMEM;
    size_t d = net->dim[0];
    size_t width = training__net_scratch(net);
    size_t act_n = 0;
    for (size_t l = 1; l <= net->n_layers; l++)
        act_n += net->dim[l];
    adam a = {0};
    a.b1t = a.b2t = 1.0;
    double *best = NULL, *scratch = NULL, *logits = NULL;
    size_t *order = NULL;
    a.m = calloc(net->n_params, sizeof(double));
    a.v = calloc(net->n_params, sizeof(double));
    a.g = calloc(net->n_params, sizeof(double));
    best = malloc(net->n_params * sizeof(double));
    scratch = malloc((width + act_n + 2 * width) * sizeof(double));
    order = malloc((n_train ? n_train : 1) * sizeof *order);
    logits = malloc((n_val ? n_val : 1) * INFERENCE_NCLASS * sizeof(double));
    if (!a.m || !a.v || !a.g || !best || !scratch || !order || !logits)
        goto done;
    double *act = scratch + width, *delta = act + act_n, *delta2 = delta + width;

    util_rng rng;
    util_rng_seed(&rng, o->seed ^ 0x5eedf17ull);
    memcpy(order, train, n_train * sizeof *order);
    memcpy(best, net->p, net->n_params * sizeof(double));
    /* A model fit with class weights w estimates probabilities proportional
     * to w_c p(c|x); adding -log w_c to its logits gives back p(c|x). */
    double adj[INFERENCE_NCLASS];
    for (int c = 0; c < INFERENCE_NCLASS; c++)
        adj[c] = cw[c] > 0 ? -log(cw[c]) : -30.0;
    double best_loss = val_nll(net, xs, y, val, n_val, adj, scratch);
    int best_epoch = 0, epochs_run = 0;
    uint32_t stale = 0;
    uint32_t batch = o->batch ? o->batch : 256;
    int32_t epochs = o->epochs < 0 ? 0 : o->epochs;

    for (int32_t ep = 1; ep <= epochs; ep++) {
        training__rng_shuffle(&rng, order, n_train);
        for (size_t start = 0; start < n_train; start += batch) {
            if (o->cancel && atomic_load(o->cancel)) {
                rc = PD_ECANCELED;
                goto done;
            }
            size_t end = start + batch < n_train ? start + batch : n_train;
            memset(a.g, 0, net->n_params * sizeof(double));
            double scale = 1.0 / (double)(end - start);
            for (size_t k = start; k < end; k++) {
                size_t r = order[k];
                int c = y[r].cls;
                backprop(net, xs + r * d, c, scale * cw[c], a.g, act, delta, delta2);
            }
            adam_step(net, &a, o->lr, o->l2);
        }
        epochs_run = ep;
        double vl = val_nll(net, xs, y, val, n_val, adj, scratch);
        if (isfinite(vl) && (!isfinite(best_loss) || vl < best_loss - 1e-7)) {
            best_loss = vl;
            best_epoch = ep;
            memcpy(best, net->p, net->n_params * sizeof(double));
            stale = 0;
        } else if (++stale >= (o->patience ? o->patience : 10)) {
            break;
        }
        if (o->progress)
            o->progress(o->ud, o->p_from + (o->p_to - o->p_from) * (double)ep / (double)epochs,
                        "fit");
    }
    memcpy(net->p, best, net->n_params * sizeof(double));
    double *out_bias = net->p + net->b_off[net->n_layers - 1];
    for (int c = 0; c < INFERENCE_NCLASS; c++)
        out_bias[c] += adj[c];

    for (size_t k = 0; k < n_val; k++)
        training__net_logits(net, xs + val[k] * d, scratch, logits + k * INFERENCE_NCLASS);
    double t = 1.0;
    if (n_val > 0) {
        training_label *vy = malloc(n_val * sizeof *vy);
        size_t *ix = malloc(n_val * sizeof *ix);
        if (!vy || !ix) {
            free(vy);
            free(ix);
            goto done;
        }
        for (size_t k = 0; k < n_val; k++) {
            vy[k] = y[val[k]];
            ix[k] = k;
        }
        t = training__fit_temperature(logits, vy, ix, n_val);
        /* NLL at t */
        double nll = 0;
        for (size_t k = 0; k < n_val; k++) {
            double p[INFERENCE_NCLASS];
            memcpy(p, logits + k * INFERENCE_NCLASS, sizeof p);
            inference_softmax(p, INFERENCE_NCLASS, t);
            double q = p[vy[k].cls];
            nll -= log(q > 1e-15 ? q : 1e-15);
        }
        out->val_nll = nll / (double)n_val;
        free(vy);
        free(ix);
    } else {
        out->val_nll = NAN;
    }
    out->epochs_run = epochs_run;
    out->best_epoch = best_epoch;
    out->val_loss = best_loss;
    out->temperature = t;
    rc = 0;
done:
    free(a.m);
    free(a.v);
    free(a.g);
    free(best);
    free(scratch);
    free(order);
    free(logits);
    return rc;
}

static double nll_at(const double *logits, const training_label *y, const size_t *idx, size_t n,
                     double beta)
{
    double s = 0;
    for (size_t k = 0; k < n; k++) {
        const double *z = logits + idx[k] * INFERENCE_NCLASS;
        double a0 = beta * z[0], a1 = beta * z[1], a2 = beta * z[2];
        double m = a0 > a1 ? a0 : a1;
        m = m > a2 ? m : a2;
        double lse = m + log(exp(a0 - m) + exp(a1 - m) + exp(a2 - m));
        s += lse - beta * z[y[idx[k]].cls];
    }
    return s;
}

double training__fit_temperature(const double *logits, const training_label *y, const size_t *idx,
                                 size_t n)
{
    if (n == 0)
        return 1.0;
    /* NLL(beta) is convex in beta = 1/T: golden-section search on [1/20, 20]. */
    const double gr = 0.6180339887498949;
    double lo = 0.05, hi = 20.0;
    double x1 = hi - gr * (hi - lo), x2 = lo + gr * (hi - lo);
    double f1 = nll_at(logits, y, idx, n, x1), f2 = nll_at(logits, y, idx, n, x2);
    for (int it = 0; it < 80 && hi - lo > 1e-7; it++) {
        if (f1 <= f2) {
            hi = x2;
            x2 = x1;
            f2 = f1;
            x1 = hi - gr * (hi - lo);
            f1 = nll_at(logits, y, idx, n, x1);
        } else {
            lo = x1;
            x1 = x2;
            f1 = f2;
            x2 = lo + gr * (hi - lo);
            f2 = nll_at(logits, y, idx, n, x2);
        }
    }
    double beta = 0.5 * (lo + hi);
    /* Prefer exactly 1 when it is as good (e.g. all-zero logits). */
    if (nll_at(logits, y, idx, n, 1.0) <= nll_at(logits, y, idx, n, beta))
        beta = 1.0;
    return 1.0 / beta;
}
