/* Temporary entry point while the modules land; replaced by the CLI. */
#include <stdio.h>
#include "util/util.h"
int main(void)
{
    puts(util_strerror(PD_OK));
    return 0;
}
