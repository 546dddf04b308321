/* libFuzzer target: bytes as PREDICTD_REDIS_URL (store/redis.c). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store/redis_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *url = malloc(size + 1);
    if (!url)
        return 0;
    memcpy(url, data, size);
    url[size] = '\0';
    store__redis_url u;
    if (store__redis_url_parse(url, &u) == 0) {
        if (!u.host[0] || u.port < 0 || u.port > 65535)
            abort();
        store__redis_url_cleanup(&u);
    }
    free(url);
    return 0;
}
