/*
 * inference_internal.h: the built model's layout, shared by model.c (which
 * validates a file and fills it) and run.c (which computes with it). Not a
 * public header: nothing outside inference/ includes it.
 *
 * DESIGN: every weight matrix is stored "panel-packed": the output rows are
 * grouped by INF_PANEL, and within a group the weights are interleaved by
 * input, so the inner loop of a matrix-vector product reads INF_PANEL
 * consecutive doubles per input and keeps INF_PANEL independent
 * accumulators. Each output is still summed as bias + w0*x0 + w1*x1 + ...
 * in input order, exactly like a naive dot product. Rows past `out` in the
 * last panel are zero. Panels are 64-byte aligned.
 *
 * Convolutions and the LSTM reuse the same product: a Conv1d output step is
 * a dense layer over the contiguous window of `kernel` input steps (weights
 * reordered to out x kernel x in), and an LSTM step is one dense layer over
 * [x_t ; h_{t-1}] with [W_ih | W_hh] and bias_ih + bias_hh.
 */
#ifndef PREDICTD_INFERENCE_INTERNAL_H
#define PREDICTD_INFERENCE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "inference/inference.h"

#define INF_PANEL 8
#define INF_TREE_GROUP 4 /* trees walked in lockstep */

/* y = act(W x + b), W panel-packed (see above). */
struct inf_dense {
    uint32_t in, out;
    int act;   /* Predictd__Activation */
    double *w; /* ceil(out / INF_PANEL) panels of in x INF_PANEL */
    double *b; /* out rounded up to INF_PANEL, zero-padded */
};

/*
 * The hot loops, one set per instruction set (kernels.h): y = W x + b over
 * a panel-packed matrix; out = (in - mean) / scale, nonzero when an input
 * is not finite; and in-place ReLU (NaN stays NaN), sigmoid
 * 1 / (1 + exp(-x)) and tanh over n values (a few ulp from libm).
 */
struct inf_kernels {
    const char *name; /* "generic", "avx2" */
    void (*dense)(const struct inf_dense *d, const double *restrict x, double *restrict y);
    int (*scale)(const double *restrict in, const double *restrict mean,
                 const double *restrict scale, double *restrict out, size_t n);
    void (*relu)(double *v, size_t n);
    void (*sigmoid)(double *v, size_t n);
    void (*tanh)(double *v, size_t n);
};

extern const struct inf_kernels inference__kernels_generic;
/* The AVX2+FMA set when this CPU has it, else NULL. */
const struct inf_kernels *inference__kernels_avx2(void);
/* The fastest set this CPU runs; what inference_model_build picks. */
const struct inf_kernels *inference__kernels_best(void);

/* Conv1d as a dense layer over a window of kernel x in_channels inputs. */
struct inf_conv {
    uint32_t cin, cout, kernel, pad;
    uint32_t lin, lout; /* input and output steps */
    struct inf_dense d; /* in = kernel * cin, out = cout, act = the conv's */
};

/* One LSTM layer: gates = [W_ih | W_hh] [x ; h] + (b_ih + b_hh). */
struct inf_lstm {
    uint32_t in, hidden;
    struct inf_dense gates; /* in + hidden -> 4 * hidden, LINEAR */
};

/* A tree node, 32 bytes. Internal: the sample goes to left when
 * x[feature] < thr (or <= under LESS_EQUAL), else to right; indices are
 * into the model's node array. A leaf is stored as a node that loops to
 * itself (thr NaN: every comparison is false, right == itself) with its
 * output in value, so a walk can take a fixed number of steps, branch-free,
 * several trees at once. default_left is checked at build but not stored:
 * inference_run rejects NaN inputs, so it never decides a path. */
struct inf_node {
    double thr;
    double value;
    int32_t feature;
    int32_t left, right;
    int32_t leaf;
};

struct inference_model {
    int kind;                    /* Predictd__ModelKind */
    const struct inf_kernels *k; /* chosen at build for this CPU */
    uint32_t n_features;
    uint32_t steps;
    int canon[INFERENCE_NCLASS]; /* canonical class of the file's class j */
    double temperature;          /* > 0; the file's 0 becomes 1 */
    size_t scratch_bytes;

    /* Input scaling: x' = (x - mean) / scale. NULL when not applied (trees
     * with scaled_input false). */
    double *mean, *scale;

    /* SOFTMAX, MLP: the layers; SEQUENCE: the head. */
    size_t n_dense;
    struct inf_dense *dense;
    uint32_t dense_max; /* widest input or output of the stack */

    /* SEQUENCE */
    size_t n_conv;
    struct inf_conv *conv;
    bool has_lstm;
    struct inf_lstm lstm;
    size_t seq_buf; /* doubles in each of the two sequence buffers */

    /* TREES */
    size_t n_trees;
    int32_t *roots;        /* node index of each tree's root */
    uint8_t *tree_class;   /* the file's class index of each tree */
    uint32_t *depth;       /* edges on each tree's longest path */
    uint32_t *group_depth; /* deepest of each group of INF_TREE_GROUP trees */
    struct inf_node *nodes;
    size_t n_nodes;
    double base_score[INFERENCE_NCLASS];
    bool rule_less_equal;

    inference_policy policy;
};

/* Rounds n doubles up to a whole number of panels. */
static inline size_t inf_round_panel(size_t n)
{
    return (n + INF_PANEL - 1) / INF_PANEL * INF_PANEL;
}

#endif
