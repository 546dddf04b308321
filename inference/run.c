/*
 * run.c: the hot path. Scales a raw feature vector (or a window of them),
 * runs dense stacks, convolutions, an LSTM or a tree ensemble over it, and
 * turns the logits into probabilities in canonical class order. Also the
 * golden-case check, which is inference_run in a loop.
 *
 * inference_run does no allocation, takes no lock and does no I/O: it reads
 * the immutable model and writes only the caller's scratch and probs, so
 * any number of threads may run one model at once, each with its own
 * scratch.
 *
 * DESIGN: one matrix-vector kernel serves every layer type (a conv step
 * and an LSTM step are dense products, see inference_internal.h), and the
 * few element-wise functions that matter are vectorised too; both come
 * from the kernel set the model picked at build (kernels.h: AVX2+FMA when
 * the CPU has it, else two-lane generic vectors). GELU uses libm's erf.
 */
#include "inference/inference_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

/* In place over n values; the same formulas as PyTorch's CPU kernels. */
static void activate(const struct inf_kernels *k, int act, double *restrict y, size_t n)
{
    switch (act) {
    case PREDICTD__ACTIVATION__RELU:
        k->relu(y, n);
        break;
    case PREDICTD__ACTIVATION__TANH:
        k->tanh(y, n);
        break;
    case PREDICTD__ACTIVATION__SIGMOID:
        k->sigmoid(y, n);
        break;
    case PREDICTD__ACTIVATION__GELU:
        for (size_t i = 0; i < n; i++)
            y[i] = 0.5 * y[i] * (1.0 + erf(y[i] * M_SQRT1_2));
        break;
    default: /* LINEAR */
        break;
    }
}

/* Runs n dense layers from x; layer i writes y0 when i is even, else y1.
 * Returns the last output. */
static const double *stack_fwd(const struct inf_kernels *k, const struct inf_dense *L, size_t n,
                               const double *x, double *y0, double *y1)
{
    for (size_t i = 0; i < n; i++) {
        double *y = (i & 1) ? y1 : y0;
        k->dense(&L[i], x, y);
        activate(k, L[i].act, y, L[i].out);
        x = y;
    }
    return x;
}

/* out = (in - mean) / scale over steps vectors; PD_EINVAL when an input is
 * not finite. Division, not a stored reciprocal, to match StandardScaler. */
static int scale_input(const inference_model *m, const double *restrict in, double *restrict out)
{
    const size_t nf = m->n_features;
    int bad = 0;
    for (size_t s = 0; s < m->steps; s++, in += nf, out += nf)
        bad |= m->k->scale(in, m->mean, m->scale, out, nf);
    return bad ? PD_EINVAL : 0;
}

static int run_dense(const inference_model *m, const double *input, double *s, double z[3])
{
    size_t w = inf_round_panel(m->dense_max);
    double *a = s, *b = s + w;
    if (scale_input(m, input, a))
        return PD_EINVAL;
    const double *y = stack_fwd(m->k, m->dense, m->n_dense, a, b, a);
    memcpy(z, y, INFERENCE_NCLASS * sizeof(double));
    return 0;
}

/* One step down a tree: a conditional move, not a branch. At a leaf the
 * comparison with its NaN threshold is false and right is the leaf. */
#define TREE_STEP(i, le)                                                                           \
    do {                                                                                           \
        const struct inf_node *n_ = nodes + (i);                                                   \
        const double v_ = x[n_->feature];                                                          \
        (i) = ((le) ? v_ <= n_->thr : v_ < n_->thr) ? n_->left : n_->right;                        \
    } while (0)

/*
 * Sums the trees' leaves into z (file class order), in tree order.
 * INF_TREE_GROUP trees are walked in lockstep for as many steps as the
 * deepest of them has edges, so their dependent loads overlap and no
 * branch depends on the data. le selects the rule; callers pass a
 * constant so each rule gets its own loop. x must not hold NaN.
 */
_Static_assert(INF_TREE_GROUP == 4, "trees_sum walks four trees at a time");

static inline void trees_sum(const inference_model *m, const double *restrict x, double z[3],
                             const int le)
{
    const struct inf_node *restrict nodes = m->nodes;
    double acc[INFERENCE_NCLASS] = {m->base_score[0], m->base_score[1], m->base_score[2]};
    const size_t n = m->n_trees;
    size_t t = 0;
    for (; t + INF_TREE_GROUP <= n; t += INF_TREE_GROUP) {
        int32_t a = m->roots[t], b = m->roots[t + 1], c = m->roots[t + 2], d = m->roots[t + 3];
        for (uint32_t s = m->group_depth[t / INF_TREE_GROUP]; s; s--) {
            TREE_STEP(a, le);
            TREE_STEP(b, le);
            TREE_STEP(c, le);
            TREE_STEP(d, le);
        }
        acc[m->tree_class[t]] += nodes[a].value;
        acc[m->tree_class[t + 1]] += nodes[b].value;
        acc[m->tree_class[t + 2]] += nodes[c].value;
        acc[m->tree_class[t + 3]] += nodes[d].value;
    }
    for (; t < n; t++) {
        int32_t a = m->roots[t];
        for (uint32_t s = m->depth[t]; s; s--)
            TREE_STEP(a, le);
        acc[m->tree_class[t]] += nodes[a].value;
    }
    memcpy(z, acc, sizeof acc);
}

static int run_trees(const inference_model *m, const double *input, double *s, double z[3])
{
    const double *x = input;
    if (m->mean) {
        if (scale_input(m, input, s))
            return PD_EINVAL;
        x = s;
    } else {
        for (size_t f = 0; f < m->n_features; f++)
            if (!isfinite(input[f]))
                return PD_EINVAL;
    }
    if (m->rule_less_equal)
        trees_sum(m, x, z, 1);
    else
        trees_sum(m, x, z, 0);
    return 0;
}

/*
 * Scratch: two sequence buffers P and Q (m->seq_buf doubles each) that
 * alternate as each conv's zero-padded input and output, then the LSTM's
 * [x_t ; h], gates and cell, then the head's two buffers.
 */
static int run_sequence(const inference_model *m, const double *input, double *s, double z[3])
{
    double *cur = s, *other = s + m->seq_buf, *rest = s + 2 * m->seq_buf;
    const size_t nf = m->n_features;
    const size_t pad0 = m->n_conv ? m->conv[0].pad : 0;
    if (scale_input(m, input, cur + pad0 * nf))
        return PD_EINVAL;
    const double *seq = cur;
    size_t len = m->steps, ch = nf;

    for (size_t j = 0; j < m->n_conv; j++) {
        const struct inf_conv *c = &m->conv[j];
        const size_t padn = (size_t)c->pad * c->cin;
        memset(cur, 0, padn * sizeof(double));
        memset(cur + padn + (size_t)c->lin * c->cin, 0, padn * sizeof(double));
        const size_t next_pad = j + 1 < m->n_conv ? m->conv[j + 1].pad : 0;
        double *dst = other + next_pad * c->cout;
        for (size_t t = 0; t < c->lout; t++)
            m->k->dense(&c->d, cur + t * c->cin, dst + t * c->cout);
        activate(m->k, c->d.act, dst, (size_t)c->lout * c->cout);
        double *tmp = cur;
        cur = other;
        other = tmp;
        seq = dst;
        len = c->lout;
        ch = c->cout;
    }

    const double *head_in = seq + (len - 1) * ch;
    if (m->has_lstm) {
        const size_t in = m->lstm.in, H = m->lstm.hidden;
        double *xh = rest;
        double *g = xh + inf_round_panel(in + H);
        double *c = g + inf_round_panel(4 * H);
        rest = c + inf_round_panel(H);
        double *h = xh + in;
        memset(h, 0, H * sizeof(double));
        memset(c, 0, H * sizeof(double));
        for (size_t t = 0; t < len; t++) {
            memcpy(xh, seq + t * in, in * sizeof(double));
            m->k->dense(&m->lstm.gates, xh, g);
            m->k->sigmoid(g, 2 * H);     /* i, f */
            m->k->tanh(g + 2 * H, H);    /* g */
            m->k->sigmoid(g + 3 * H, H); /* o */
            const double *restrict ig = g, *restrict fg = g + H, *restrict gg = g + 2 * H;
            for (size_t k = 0; k < H; k++) {
                c[k] = fg[k] * c[k] + ig[k] * gg[k];
                h[k] = c[k];
            }
            m->k->tanh(h, H);
            const double *restrict og = g + 3 * H;
            for (size_t k = 0; k < H; k++)
                h[k] *= og[k];
        }
        head_in = h;
    }
    const size_t w = inf_round_panel(m->dense_max);
    const double *y = stack_fwd(m->k, m->dense, m->n_dense, head_in, rest, rest + w);
    memcpy(z, y, INFERENCE_NCLASS * sizeof(double));
    return 0;
}

int inference_run(const inference_model *m, const double *input, double probs[INFERENCE_NCLASS],
                  void *scratch)
{
    double z[INFERENCE_NCLASS];
    int rc;
    if (!m || !input || !probs || (!scratch && m->scratch_bytes))
        return PD_EINVAL;
    switch (m->kind) {
    case PREDICTD__MODEL_KIND__SOFTMAX:
    case PREDICTD__MODEL_KIND__MLP:
        rc = run_dense(m, input, scratch, z);
        break;
    case PREDICTD__MODEL_KIND__TREES:
        rc = run_trees(m, input, scratch, z);
        break;
    case PREDICTD__MODEL_KIND__SEQUENCE:
        rc = run_sequence(m, input, scratch, z);
        break;
    default:
        rc = PD_EINTERNAL;
    }
    if (rc)
        return rc;
    if (!isfinite(z[0]) || !isfinite(z[1]) || !isfinite(z[2]))
        return PD_EINVAL;
    inference_softmax(z, INFERENCE_NCLASS, m->temperature);
    for (size_t j = 0; j < INFERENCE_NCLASS; j++)
        probs[m->canon[j]] = z[j];
    return 0;
}

void inference_softmax(double *v, size_t n, double temperature)
{
    if (n == 0)
        return;
    if (!(temperature > 0 && isfinite(temperature)))
        temperature = 1.0;
    if (temperature != 1.0)
        for (size_t i = 0; i < n; i++)
            v[i] /= temperature;
    double mx = v[0];
    for (size_t i = 1; i < n; i++)
        if (v[i] > mx)
            mx = v[i];
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        v[i] = exp(v[i] - mx);
        sum += v[i];
    }
    for (size_t i = 0; i < n; i++)
        v[i] /= sum;
}

static int golden_fail(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int golden_fail(char *why, size_t whylen, const char *fmt, ...)
{
    if (why && whylen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, whylen, fmt, ap);
        va_end(ap);
    }
    return PD_EVERIFY;
}

int inference_check_golden(const inference_model *m, const Predictd__Model *msg, double tol,
                           char *why, size_t whylen)
{
    if (why && whylen)
        why[0] = '\0';
    if (!m || !msg || !(tol >= 0))
        return PD_EINVAL;
    if (msg->n_golden == 0)
        return 0;
    const size_t want = m->steps * m->n_features;
    void *scratch = malloc(m->scratch_bytes ? m->scratch_bytes : sizeof(double));
    if (!scratch)
        return PD_ENOMEM;
    int rc = 0;
    for (size_t g = 0; g < msg->n_golden && !rc; g++) {
        const Predictd__GoldenCase *gc = msg->golden[g];
        double p[INFERENCE_NCLASS];
        if (!gc) {
            rc = golden_fail(why, whylen, "golden[%zu]: missing", g);
        } else if (gc->n_input != want) {
            rc = golden_fail(why, whylen,
                             "golden[%zu]: input has %zu values, expected steps x n_features = "
                             "%zux%u = %zu",
                             g, gc->n_input, (size_t)m->steps, m->n_features, want);
        } else if (gc->n_probabilities != INFERENCE_NCLASS) {
            rc = golden_fail(why, whylen, "golden[%zu]: probabilities has %zu values, expected 3",
                             g, gc->n_probabilities);
        } else if (inference_run(m, gc->input, p, scratch) != 0) {
            rc = golden_fail(why, whylen,
                             "golden[%zu]: the model rejects the input (a value is not finite "
                             "or the logits overflow)",
                             g);
        } else {
            for (size_t j = 0; j < INFERENCE_NCLASS && !rc; j++) {
                const double want_p = gc->probabilities[j], got = p[m->canon[j]];
                const double diff = fabs(got - want_p);
                if (!(diff <= tol))
                    rc = golden_fail(why, whylen,
                                     "golden[%zu]: P(%s) is %.9g, expected %.9g (|diff| %.3g > "
                                     "tolerance %.3g)",
                                     g, inference_class_name(m->canon[j]), got, want_p, diff, tol);
            }
        }
    }
    free(scratch);
    return rc;
}
