/*
 * latency.c: latency histograms of PostgreSQL statements and Redis
 * replies, for /metrics. The store's call sites wrap each round trip in
 * STORE__TIMED (store_internal.h), which calls store__observe; this file
 * only counts. It does not know which statement or command ran (a label
 * per statement would be a series per call site; the counters in
 * store_stats already split hits, misses and errors).
 *
 * THREADING: lock-free; relaxed atomic increments, read by
 * store_latency_get at any time (a scrape racing observations sees counts
 * that are each monotonic).
 */
#include <stdatomic.h>

#include "store/store.h"
#include "store/store_internal.h"
#include "util/util.h"

const double store_latency_bounds[STORE_LATENCY_BUCKETS] = {
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025,   0.05,     0.1,     0.25,   0.5,     1,      2.5,   5,      10};

static struct {
    _Atomic uint64_t counts[STORE_LATENCY_BUCKETS + 1];
    _Atomic uint64_t sum_ns;
} hist[STORE_LATENCY_KINDS_];

void store__observe(int kind, uint64_t t0_ns)
{
    if (kind < 0 || kind >= STORE_LATENCY_KINDS_)
        return;
    uint64_t ns = util_mono_ns() - t0_ns;
    double s = (double)ns / 1e9;
    int i = 0;
    while (i < STORE_LATENCY_BUCKETS && s > store_latency_bounds[i])
        i++;
    atomic_fetch_add_explicit(&hist[kind].counts[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&hist[kind].sum_ns, ns, memory_order_relaxed);
}

void store_latency_get(int kind, store_latency *out)
{
    *out = (store_latency){0};
    if (kind < 0 || kind >= STORE_LATENCY_KINDS_)
        return;
    for (int i = 0; i <= STORE_LATENCY_BUCKETS; i++)
        out->counts[i] = atomic_load_explicit(&hist[kind].counts[i], memory_order_relaxed);
    out->sum_s = (double)atomic_load_explicit(&hist[kind].sum_ns, memory_order_relaxed) / 1e9;
}
