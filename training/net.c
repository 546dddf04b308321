/*
 * net: the trainer's dense networks and its PRNG.
 *
 * A network is dim[0] inputs, ReLU hidden layers and a linear 3-logit
 * output, parameters in one flat array laid out as proto Dense layers
 * (W row-major out x in, then b), so exporting is pointing at slices.
 * Softmax regression is the network without hidden layers.
 *
 * The PRNG is util_rng (xoshiro256** seeded by splitmix64): the same seed
 * gives the same stream on any platform, which with the sequential,
 * fixed-order arithmetic of fit.c makes a run reproducible bit for bit.
 *
 * Pure computation; a net is owned by one thread at a time.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "training/internal.h"

double training__rng_normal(util_rng *r)
{
    /* Box-Muller, one value per call (the second is dropped so the stream
     * never depends on call parity). 1 - u keeps log() away from 0. */
    double u1 = 1.0 - util_rng_uniform(r);
    double u2 = util_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void training__rng_shuffle(util_rng *r, size_t *v, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(util_rng_next(r) % i);
        size_t t = v[i - 1];
        v[i - 1] = v[j];
        v[j] = t;
    }
}

int training__net_init(training__net *net, size_t d_in, const uint32_t *hidden, size_t n_hidden,
                       util_rng *rng)
{
    if (d_in == 0 || n_hidden > TRAINING_MAX_HIDDEN)
        return PD_EINVAL;
    training__net n;
    memset(&n, 0, sizeof n);
    n.n_layers = n_hidden + 1;
    n.dim[0] = d_in;
    for (size_t l = 0; l < n_hidden; l++) {
        if (hidden[l] == 0)
            return PD_EINVAL;
        n.dim[l + 1] = hidden[l];
    }
    n.dim[n.n_layers] = INFERENCE_NCLASS;
    size_t off = 0;
    for (size_t l = 0; l < n.n_layers; l++) {
        n.w_off[l] = off;
        off += n.dim[l + 1] * n.dim[l];
        n.b_off[l] = off;
        off += n.dim[l + 1];
    }
    n.n_params = off;
    n.p = calloc(off, sizeof *n.p);
    if (!n.p)
        return PD_ENOMEM;
    if (n.n_layers > 1) {
        for (size_t l = 0; l < n.n_layers; l++) {
            bool last = l + 1 == n.n_layers;
            double fan_in = (double)n.dim[l], fan_out = (double)n.dim[l + 1];
            double sd = last ? sqrt(2.0 / (fan_in + fan_out)) : sqrt(2.0 / fan_in);
            double *w = n.p + n.w_off[l];
            for (size_t k = 0; k < n.dim[l + 1] * n.dim[l]; k++)
                w[k] = sd * training__rng_normal(rng);
        }
    }
    *net = n;
    return 0;
}

void training__net_cleanup(training__net *net)
{
    if (!net)
        return;
    free(net->p);
    net->p = NULL;
}

size_t training__net_scratch(const training__net *net)
{
    size_t w = 0;
    for (size_t l = 0; l <= net->n_layers; l++)
        if (net->dim[l] > w)
            w = net->dim[l];
    return 2 * w;
}

void training__net_logits(const training__net *net, const double *x, double *scratch,
                          double logits[INFERENCE_NCLASS])
{
    size_t w = training__net_scratch(net) / 2;
    const double *in = x;
    double *bufs[2] = {scratch, scratch + w};
    for (size_t l = 0; l < net->n_layers; l++) {
        bool last = l + 1 == net->n_layers;
        size_t ni = net->dim[l], no = net->dim[l + 1];
        const double *W = net->p + net->w_off[l], *b = net->p + net->b_off[l];
        double *out = last ? logits : bufs[l % 2];
        for (size_t o = 0; o < no; o++) {
            double s = b[o];
            const double *row = W + o * ni;
            for (size_t i = 0; i < ni; i++)
                s += row[i] * in[i];
            out[o] = last ? s : (s > 0 ? s : 0);
        }
        in = out;
    }
}
