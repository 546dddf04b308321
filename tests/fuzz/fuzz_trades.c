/* libFuzzer target: bytes as a trades CSV for feed_trades_csv_parse, and
 * the parsed trades through the aggregator (duplicates, any order). */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "features/features.h"
#include "feed/feed.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int check(const features_candle *c, bool correction, void *arg)
{
    (void)correction;
    (void)arg;
    if (!(c->low <= c->open && c->open <= c->high && c->low <= c->close && c->close <= c->high &&
          c->volume >= 0 && c->t % 60 == 0))
        abort(); /* an emitted candle must be consistent */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    feed_trade *t = NULL;
    size_t n = 0;
    char why[256];
    (void)feed_trades_csv_is((const char *)data, size);
    if (feed_trades_csv_parse((const char *)data, size, &t, &n, why, sizeof why) != 0)
        return 0;
    feed_agg *a;
    if (feed_agg_new(&a) == 0) {
        for (size_t i = 0; i < n; i++)
            (void)feed_agg_push(a, &t[i], check, NULL);
        (void)feed_agg_finish(a, check, NULL);
        feed_agg_free(a);
    }
    free(t);
    return 0;
}
