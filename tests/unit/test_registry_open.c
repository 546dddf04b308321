/*
 * registry_open_version (what `backtest --version N` uses for a version the
 * registry does not keep loaded): its refusals, each with its code and a
 * reason naming what is missing. Loading a good old version is tested end
 * to end by test_cli (backtest_of_a_version_the_registry_does_not_keep_loaded).
 */
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "registry/registry.h"
#include "tests/unit/fixtures.h"
#include "tests/unit/unit.h"
#include "util/util.h"

TEST(refusals_name_what_is_missing)
{
    char dir[512], path[700];
    CHECK(unit_tmpdir(dir, sizeof dir, "predictd-open") != NULL);
    registry *r = NULL;
    CHECK_EQ_INT(registry_new(dir, &r), 0);
    if (!r)
        return;
    registry_version *v = NULL;
    char why[256] = "";
    CHECK_EQ_INT(registry_open_version(r, "btc", "1h", 1, &v, why, sizeof why), PD_ESYMBOL);
    CHECK_EQ_INT(registry_open_version(r, "BTCUSDT", "2h", 1, &v, why, sizeof why), PD_ETIMEFRAME);
    CHECK_EQ_INT(registry_open_version(r, "BTCUSDT", "1h", 0, &v, why, sizeof why), PD_EINVAL);
    CHECK_EQ_INT(registry_open_version(r, "BTCUSDT", "1h", 1, NULL, why, sizeof why), PD_EINVAL);
    /* no directory for the symbol, nor _default's */
    CHECK_EQ_INT(registry_open_version(r, "BTCUSDT", "1h", 1, &v, why, sizeof why), PD_ENOMODEL);
    CHECK(strstr(why, "no model directory for BTCUSDT 1h") != NULL);
    /* _default/1h exists: the symbol without its own directory reads it */
    snprintf(path, sizeof path, "%s/_default", dir);
    CHECK_EQ_INT(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/_default/1h", dir);
    CHECK_EQ_INT(mkdir(path, 0755), 0);
    CHECK_EQ_INT(registry_open_version(r, "BTCUSDT", "1h", 3, &v, why, sizeof why), PD_ENOMODEL);
    CHECK(strstr(why, "_default/1h has no version 3") != NULL);
    /* a version directory that is not a model fails verification */
    snprintf(path, sizeof path, "%s/_default/1h/3", dir);
    CHECK_EQ_INT(mkdir(path, 0755), 0);
    CHECK_EQ_INT(registry_open_version(r, "BTCUSDT", "1h", 3, &v, why, sizeof why), PD_EVERIFY);
    CHECK(why[0] != '\0');
    CHECK(v == NULL);
    /* the repository gone: said */
    CHECK_EQ_INT(util_rmtree(dir), 0);
    CHECK_EQ_INT(registry_open_version(r, "BTCUSDT", "1h", 3, &v, why, sizeof why), PD_EIO);
    CHECK(strstr(why, "unreadable") != NULL);
    registry_free(r);
}

int main(void)
{
    util_log_configure(UTIL_LOG_ERROR, false);
    RUN(refusals_name_what_is_missing);
    return unit_report();
}
