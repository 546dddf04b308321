/* libFuzzer target: bytes as a candle CSV for feed_csv_parse. */
#include <stdint.h>
#include <stdlib.h>

#include "features/features.h"
#include "feed/feed.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    features_candle *c = NULL;
    size_t n = 0;
    char why[256];
    if (feed_csv_parse((const char *)data, size, &c, &n, why, sizeof why) == 0)
        free(c);
    return 0;
}
