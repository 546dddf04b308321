/* libFuzzer target: the headers the dispatcher interprets (Origin against
 * a PREDICTD_CORS_ORIGINS list, X-Request-Id, Content-Length). The input
 * is "list\0value". */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/wire_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 2);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    buf[size + 1] = '\0';
    const char *list = buf;
    const char *value = buf + strlen(buf) + 1;
    if (value > buf + size)
        value = buf + size;
    (void)api__origin_allowed(list, value);
    (void)api__origin_allowed(value, list);
    if (api__request_id_ok(value) && strlen(value) >= 64)
        abort();
    (void)api__content_length_over(value, 65536);
    free(buf);
    return 0;
}
