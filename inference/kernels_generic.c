/*
 * kernels_generic.c: the hot loops (kernels.h) for any CPU, on two-lane
 * vectors: SSE2 on x86-64, NEON on arm64, scalar code elsewhere. Also the
 * choice of kernel set for a model being built.
 *
 * THREAD SAFETY: constant tables and pure functions.
 */
#include "inference/inference_internal.h"

#include <math.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
/* maxpd/minpd return their second operand when either is NaN. */
#define VMAX_KEEPNAN(x, lo) ((vd)_mm_max_pd((__m128d)(lo), (__m128d)(x)))
#define VMIN_KEEPNAN(x, hi) ((vd)_mm_min_pd((__m128d)(hi), (__m128d)(x)))
#else
#define VMAX_KEEPNAN(x, lo)                                                                        \
    ((vd){(x)[0] < (lo)[0] ? (lo)[0] : (x)[0], (x)[1] < (lo)[1] ? (lo)[1] : (x)[1]})
#define VMIN_KEEPNAN(x, hi)                                                                        \
    ((vd){(x)[0] > (hi)[0] ? (hi)[0] : (x)[0], (x)[1] > (hi)[1] ? (hi)[1] : (x)[1]})
#endif

#define VW 2
#define NPASS 2
#define KNAME(f) f##_generic
#include "inference/kernels.h"

const struct inf_kernels inference__kernels_generic = {
    "generic", dense_generic, scale_generic, relu_generic, sigmoid_generic, tanh_generic,
};

const struct inf_kernels *inference__kernels_best(void)
{
    const struct inf_kernels *k = inference__kernels_avx2();
    return k ? k : &inference__kernels_generic;
}

const char *inference_kernels_name(void)
{
    return inference__kernels_best()->name;
}
