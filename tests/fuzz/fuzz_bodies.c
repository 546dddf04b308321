/* libFuzzer target: the admin routes' JSON bodies (api/bodies.c). The
 * first byte picks the route: reload, pin, label or training. */
#include <stdint.h>
#include <stdlib.h>

#include "api/bodies_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    char why[512], sym[24], tf[8], label[16];
    uint32_t version = 0;
    int share = 0;
    training_params p;
    switch (data[0] & 3) {
    case 0:
        (void)api__body_reload(body, len, sym, tf, why, sizeof why);
        break;
    case 1:
        if (api__body_pin(body, len, &version, why, sizeof why) == 0 && version == 0)
            abort();
        break;
    case 2:
        if (api__body_label(body, len, label, &version, &share, why, sizeof why) == 0 &&
            (share < 0 || share > 100))
            abort();
        break;
    default:
        (void)api__body_training(body, len, &p, why, sizeof why);
        break;
    }
    return 0;
}
