/* libFuzzer target: bytes as a series' policy.json, parsed as the
 * registry's scanner does. */
#include <stdint.h>
#include <stdlib.h>

#include "registry/registry_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char why[256];
    (void)registry__policy_check((const char *)data, size, why, sizeof why);
    return 0;
}
