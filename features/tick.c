/*
 * tick.c: the price tick of a series inferred from the decimals its candles
 * are quoted with. An exchange's symbol information is the better source
 * when a feed provides it; this is the fallback every series has. Pure and
 * thread-safe; no allocation.
 */
#include <math.h>

#include "features/features.h"

static bool on_grid(double v, double scale)
{
    double x = v * scale;
    return fabs(x - round(x)) <= 1e-6 + fabs(x) * 1e-15; /* a few ulp of x */
}

double features_price_tick(const features_candle *c, size_t n)
{
    if (!c || n == 0)
        return 0;
    for (int d = 0; d <= 8; d++) {
        double scale = pow(10.0, d);
        bool all = true;
        for (size_t i = 0; i < n && all; i++)
            all = on_grid(c[i].open, scale) && on_grid(c[i].high, scale) &&
                  on_grid(c[i].low, scale) && on_grid(c[i].close, scale);
        if (all)
            return 1.0 / scale;
    }
    return 0;
}
