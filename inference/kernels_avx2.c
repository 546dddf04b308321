/*
 * kernels_avx2.c: the hot loops (kernels.h) on four-lane AVX2 vectors with
 * fused multiply-add, for x86-64 CPUs that have them (Haswell, Zen and
 * later). Compiled with a target attribute rather than -mavx2, so the rest
 * of the binary still runs on any x86-64; inference__kernels_avx2() checks
 * the CPU before offering them. Elsewhere it offers nothing.
 *
 * FMA rounds each multiply-add once, so results can differ from the
 * generic kernels in the last bits (far below golden-case tolerances).
 *
 * THREAD SAFETY: constant tables and pure functions.
 */
#include "inference/inference_internal.h"

#include <stddef.h>
#include <math.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif

#include <immintrin.h>

/* maxpd/minpd return their second operand when either is NaN. */
#define VMAX_KEEPNAN(x, lo) ((vd)_mm256_max_pd((__m256d)(lo), (__m256d)(x)))
#define VMIN_KEEPNAN(x, hi) ((vd)_mm256_min_pd((__m256d)(hi), (__m256d)(x)))

#define VW 4
#define NPASS 4
#define KNAME(f) f##_avx2
#include "inference/kernels.h"

static const struct inf_kernels kernels_avx2 = {
    "avx2", dense_avx2, scale_avx2, relu_avx2, sigmoid_avx2, tanh_avx2,
};

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

const struct inf_kernels *inference__kernels_avx2(void)
{
    /* libgcc / compiler-rt fill the CPU model in a constructor, before
     * main, so no __builtin_cpu_init() is needed (or racy) here. */
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return &kernels_avx2;
    return NULL;
}

#else

const struct inf_kernels *inference__kernels_avx2(void)
{
    return NULL;
}

#endif
