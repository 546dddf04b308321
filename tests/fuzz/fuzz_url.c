/* libFuzzer target: bytes as a request target, through the dispatcher's
 * strict URL check, then (when it passes) every route pattern's matcher
 * and the segment decoder, as api/http.c routes a request. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/http_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *url = (const char *)data;
    const char *why = NULL;
    int rc = api__url_check(url, size, &why);
    if (rc != 0 && !why)
        abort(); /* every refusal has a reason */
    char out[256];
    (void)api__url_decode(url, size < 300 ? size : 300, out, sizeof out);
    if (rc != 0 || size > API_PATH_MAX)
        return 0;
    size_t plen = 0;
    while (plen < size && url[plen] != '?')
        plen++;
    size_t n = 0;
    const struct api_route_def *defs = api_routes(&n);
    struct api_path_params pp;
    for (size_t i = 0; i < n; i++) {
        int m = api__path_match(defs[i].pattern, url, plen, &pp);
        if (m == 1)
            for (size_t k = 0; k < pp.n; k++)
                if (strlen(pp.value[k]) > plen) /* a value comes from the path */
                    abort();
        if (m < 0) /* the check passed: every segment decodes */
            abort();
    }
    return 0;
}
