/* libFuzzer target: bytes as PREDICTD_DATABASE_URL, checked as the store
 * checks it before connecting (libpq's conninfo parser). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store/pg_internal.h"
#include "util/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int quiet;
    if (!quiet) {
        /* the refusal is logged at error level: keep the fuzzer's output clean */
        util_log_configure((enum util_log_level)(UTIL_LOG_ERROR + 1), false);
        quiet = 1;
    }
    char *url = malloc(size + 1);
    if (!url)
        return 0;
    memcpy(url, data, size);
    url[size] = '\0';
    (void)store__pg_url_check("fuzz", url);
    free(url);
    return 0;
}
