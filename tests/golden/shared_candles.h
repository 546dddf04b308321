/*
 * shared_candles.h: loads the real candle files of PREDICTD_SHARED_DATA
 * (`open_time,open,high,low,close,volume`, RFC 3339 times, one header line)
 * for the feature tests. A deliberately small parser of its own, so the
 * indicator tests do not depend on feed/csv.c.
 */
#ifndef PREDICTD_SHARED_CANDLES_H
#define PREDICTD_SHARED_CANDLES_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "features/features.h"
#include "util/util.h"

/* The real files, relative to PREDICTD_SHARED_DATA. */
static const char *const shared_candle_files[] = {
    "BTCUSD_1d_bitstamp-coinbase.csv",
    "UNITTEST-BTC_1m_freqtrade.csv",
};
#define SHARED_CANDLE_FILES (sizeof shared_candle_files / sizeof shared_candle_files[0])

/*
 * Loads one file into a malloc'd array. Returns 0, or -1 with a message on
 * stdout (a missing or malformed file is a test failure, not a skip).
 */
static int shared_candles_load(const char *dir, const char *name, features_candle **out, size_t *n)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *text = NULL;
    size_t len = 0;
    if (util_read_file(path, 64u << 20, &text, &len) != 0) {
        printf("  cannot read %s\n", path);
        return -1;
    }
    size_t cap = 1024, cnt = 0;
    features_candle *c = malloc(cap * sizeof *c);
    int line = 0, rc = 0;
    for (char *p = text; c && p < text + len && *p;) {
        char *eol = strchr(p, '\n');
        if (eol)
            *eol = '\0';
        line++;
        if (line > 1 && *p) {
            char *f[6];
            int nf = 0;
            for (char *q = p; nf < 6;) {
                f[nf++] = q;
                char *comma = strchr(q, ',');
                if (!comma)
                    break;
                *comma = '\0';
                q = comma + 1;
            }
            features_candle k;
            char *end;
            if (nf != 6 || util_parse_time(f[0], &k.t) != 0) {
                printf("  %s:%d: bad row\n", name, line);
                rc = -1;
                break;
            }
            double *dst[5] = {&k.open, &k.high, &k.low, &k.close, &k.volume};
            for (int j = 0; j < 5; j++) {
                *dst[j] = strtod(f[1 + j], &end);
                if (end == f[1 + j] || (*end && *end != '\r')) {
                    printf("  %s:%d: bad number\n", name, line);
                    rc = -1;
                }
            }
            if (rc)
                break;
            if (cnt == cap) {
                features_candle *g = realloc(c, 2 * cap * sizeof *c);
                if (!g) {
                    free(c);
                    c = NULL;
                    break;
                }
                c = g;
                cap *= 2;
            }
            c[cnt++] = k;
        }
        if (!eol)
            break;
        p = eol + 1;
    }
    free(text);
    if (!c || rc || cnt == 0) {
        free(c);
        if (rc == 0)
            printf("  %s: no candles\n", name);
        return -1;
    }
    *out = c;
    *n = cnt;
    return 0;
}

#endif
