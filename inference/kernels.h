/*
 * kernels.h: the hot loops, written once over a generic vector of VW
 * doubles and compiled once per instruction set: kernels_generic.c (two
 * lanes: SSE2 on x86-64, NEON on arm64, scalar code elsewhere) and
 * kernels_avx2.c (four lanes with FMA, chosen at model build when the CPU
 * has it). Not a header in the usual sense: it has no include guard and
 * each includer defines, before including it:
 *
 *   VW          lanes per vector (2 or 4)
 *   NPASS       panels per pass of the matrix-vector product (enough
 *               independent accumulators to hide the add latency without
 *               running out of registers)
 *   KNAME(f)    the function name for this instruction set
 *   VMAX_KEEPNAN(x, lo), VMIN_KEEPNAN(x, hi)
 *               lane-wise max/min that return x when x is NaN
 *
 * and gets inference__kernels_<set> (declared in inference_internal.h).
 *
 * dense: y = W x + b with W panel-packed (inference_internal.h). Each
 * output is summed as bias + w0 x0 + w1 x1 + ... in input order, whatever
 * the lane count; with FMA each step rounds once instead of twice.
 *
 * exp/sigmoid/tanh: exp(x) = 2^k exp(r), k = round(x / ln2), r = x - k ln2
 * (ln2 in two parts, so k ln2_hi is exact), |r| <= ln2/2; expm1(r) by its
 * Taylor series to degree 13 (truncation < 5e-18) in Estrin's scheme; 2^k
 * built in the exponent bits from the integer the 1.5 * 2^52 shift leaves
 * in the low mantissa bits. Keeping expm1(r) apart gives expm1(x) =
 * 2^k expm1(r) + (2^k - 1), exact for |x| < ln2/2, which tanh needs near
 * zero. Within a few ulp of libm (the unit tests sweep the range); |x| is
 * clamped to 708, past which the results are saturated anyway. NaN in,
 * NaN out.
 *
 * THREAD SAFETY: pure functions on the caller's arrays.
 */

typedef double vd __attribute__((vector_size(VW * 8)));
typedef unsigned long long vu __attribute__((vector_size(VW * 8)));

#define NV (INF_PANEL / VW) /* vectors per panel */

#if VW == 2
#define SPLAT(s) ((vd){(s), (s)})
#else
#define SPLAT(s) ((vd){(s), (s), (s), (s)})
#endif

/* np panels (np * INF_PANEL outputs, of which the first nout are stored)
 * from panel-packed weights w. Inlined with a constant np, so acc[] lives
 * in registers. */
static inline __attribute__((always_inline)) void
KNAME(dense_block)(const int np, const double *restrict w, const double *restrict b, size_t in,
                   const double *restrict x, double *restrict y, size_t nout)
{
    vd acc[NPASS * NV];
#pragma GCC unroll 16
    for (int j = 0; j < np * NV; j++)
        memcpy(&acc[j], b + j * VW, sizeof(vd));
    for (size_t i = 0; i < in; i++) {
        const vd xi = SPLAT(x[i]);
#pragma GCC unroll 16
        for (int p = 0; p < np; p++) {
#pragma GCC unroll 16
            for (int v = 0; v < NV; v++) {
                vd t;
                memcpy(&t, w + ((size_t)p * in + i) * INF_PANEL + v * VW, sizeof t);
                acc[p * NV + v] += t * xi;
            }
        }
    }
    if (nout == (size_t)np * INF_PANEL) {
#pragma GCC unroll 16
        for (int j = 0; j < np * NV; j++)
            memcpy(y + j * VW, &acc[j], sizeof(vd));
    } else {
        double tmp[NPASS * INF_PANEL];
#pragma GCC unroll 16
        for (int j = 0; j < np * NV; j++)
            memcpy(tmp + j * VW, &acc[j], sizeof(vd));
        memcpy(y, tmp, nout * sizeof(double));
    }
}

static void KNAME(dense)(const struct inf_dense *d, const double *restrict x, double *restrict y)
{
    const size_t in = d->in, out = d->out;
    size_t o = 0;
    for (; o + NPASS * INF_PANEL <= out; o += NPASS * INF_PANEL)
        KNAME(dense_block)(NPASS, d->w + o * in, d->b + o, in, x, y + o, NPASS * INF_PANEL);
    for (; o < out; o += INF_PANEL) {
        const size_t n = out - o < INF_PANEL ? out - o : INF_PANEL;
        KNAME(dense_block)(1, d->w + o * in, d->b + o, in, x, y + o, n);
    }
}

/* out = (in - mean) / scale over n values (true division, as
 * StandardScaler; lane-wise it rounds exactly like the scalar one).
 * Returns nonzero when an input is not finite (x - x is NaN only then). */
static int KNAME(scale)(const double *restrict in, const double *restrict mean,
                        const double *restrict sc, double *restrict out, size_t n)
{
    vu bad = (vu)(SPLAT(0.0) != SPLAT(0.0));
    size_t i = 0;
    for (; i + VW <= n; i += VW) {
        vd x, m, s;
        memcpy(&x, in + i, sizeof x);
        memcpy(&m, mean + i, sizeof m);
        memcpy(&s, sc + i, sizeof s);
        const vd d = x - x;
        bad |= (vu)(d != d);
        const vd y = (x - m) / s;
        memcpy(out + i, &y, sizeof y);
    }
    int any = 0;
    for (int l = 0; l < VW; l++)
        any |= bad[l] != 0;
    for (; i < n; i++) {
        any |= !isfinite(in[i]);
        out[i] = (in[i] - mean[i]) / sc[i];
    }
    return any;
}

/* expm1(x) = s * p + (s - 1) and exp(x) = s * p + s, for |x| <= 708. */
static inline __attribute__((always_inline)) vd KNAME(expm1_parts)(vd x, vd *s)
{
    const double LN2_HI = 6.93147180369123816490e-01; /* 32 trailing zero bits */
    const double LN2_LO = 1.90821492927058770002e-10;
    const double INV_LN2 = 1.44269504088896338700e+00;
    const double SHIFT = 0x1.8p52;
    vd kd = x * INV_LN2 + SHIFT;
    vu ki;
    memcpy(&ki, &kd, sizeof ki);
    kd -= SHIFT;
    const vd r = (x - kd * LN2_HI) - kd * LN2_LO;
    ki = (ki << 52) + 0x3ff0000000000000ull;
    memcpy(s, &ki, sizeof ki);
    /* q = sum c[j] r^j, c[j] = 1/(j+2)!, by Estrin's scheme: a shallow
     * dependency tree instead of Horner's chain of 11 multiply-adds. */
    const vd r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    const vd p0 = (1.0 / 2) + r * (1.0 / 6), p1 = (1.0 / 24) + r * (1.0 / 120);
    const vd p2 = (1.0 / 720) + r * (1.0 / 5040), p3 = (1.0 / 40320) + r * (1.0 / 362880);
    const vd p4 = (1.0 / 3628800) + r * (1.0 / 39916800);
    const vd p5 = (1.0 / 479001600) + r * (1.0 / 6227020800);
    const vd q = (p0 + r2 * p1) + r4 * (p2 + r2 * p3) + r8 * (p4 + r2 * p5);
    return r + r2 * q;
}

static inline __attribute__((always_inline)) vd KNAME(sigmoid_v)(vd x)
{
    /* exp(-x) with -x clamped to [-708, 708] */
    const vd t = VMIN_KEEPNAN(VMAX_KEEPNAN(-x, SPLAT(-708.0)), SPLAT(708.0));
    vd s;
    const vd p = KNAME(expm1_parts)(t, &s);
    return 1.0 / (1.0 + (s * p + s));
}

static inline __attribute__((always_inline)) vd KNAME(tanh_v)(vd x)
{
    vu bits, sign;
    memcpy(&bits, &x, sizeof bits);
    sign = bits & 0x8000000000000000ull;
    bits ^= sign;
    vd a; /* |x| */
    memcpy(&a, &bits, sizeof a);
    const vd t = VMAX_KEEPNAN(-2.0 * a, SPLAT(-708.0));
    vd s;
    const vd p = KNAME(expm1_parts)(t, &s);
    const vd e = s * p + (s - 1.0); /* expm1(-2|x|), in (-1, 0] */
    vd y = -e / (2.0 + e);          /* tanh |x| */
    memcpy(&bits, &y, sizeof bits);
    bits |= sign;
    memcpy(&y, &bits, sizeof y);
    return y;
}

static inline __attribute__((always_inline)) vd KNAME(relu_v)(vd x)
{
    const vd zero = SPLAT(0.0);
    vu bits, neg = (vu)(x < zero); /* false for NaN: NaN passes */
    memcpy(&bits, &x, sizeof bits);
    bits &= ~neg;
    memcpy(&x, &bits, sizeof x);
    return x;
}

/* Applies f to v[0..n) two vectors at a time (their latency chains
 * overlap); the tail goes through a zero-padded vector. */
#define KERNEL_MAP(v, n, f)                                                                        \
    do {                                                                                           \
        size_t i_ = 0;                                                                             \
        for (; i_ + 2 * VW <= (n); i_ += 2 * VW) {                                                 \
            vd a_, b_;                                                                             \
            memcpy(&a_, (v) + i_, sizeof a_);                                                      \
            memcpy(&b_, (v) + i_ + VW, sizeof b_);                                                 \
            a_ = f(a_);                                                                            \
            b_ = f(b_);                                                                            \
            memcpy((v) + i_, &a_, sizeof a_);                                                      \
            memcpy((v) + i_ + VW, &b_, sizeof b_);                                                 \
        }                                                                                          \
        for (; i_ < (n); i_ += VW) {                                                               \
            const size_t k_ = (n)-i_ < VW ? (n)-i_ : VW;                                           \
            double t_[VW] = {0};                                                                   \
            vd a_;                                                                                 \
            memcpy(t_, (v) + i_, k_ * sizeof(double));                                             \
            memcpy(&a_, t_, sizeof a_);                                                            \
            a_ = f(a_);                                                                            \
            memcpy(t_, &a_, sizeof a_);                                                            \
            memcpy((v) + i_, t_, k_ * sizeof(double));                                             \
        }                                                                                          \
    } while (0)

static void KNAME(relu)(double *v, size_t n)
{
    KERNEL_MAP(v, n, KNAME(relu_v));
}

static void KNAME(sigmoid)(double *v, size_t n)
{
    KERNEL_MAP(v, n, KNAME(sigmoid_v));
}

static void KNAME(tanh)(double *v, size_t n)
{
    KERNEL_MAP(v, n, KNAME(tanh_v));
}

#undef KERNEL_MAP
#undef SPLAT
#undef NV
