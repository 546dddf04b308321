/*
 * test_loop_start.c: the inference loop's start and stop without a database to
 * talk to: refused arguments and a malformed database URL (nothing
 * started, nothing written), a Redis URL the publisher refuses (the loop
 * runs without publishing), and a database that does not answer (the loop
 * runs, says it is reconnecting and why, never leads, and stops promptly).
 * Everything with a database is tests/integration/test_loop*.py's.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "predict/predict.h"
#include "registry/registry.h"
#include "tests/unit/unit.h"
#include "util/util.h"

/* port 1 on loopback: refused at once */
#define NOWHERE "postgresql://127.0.0.1:1/none?connect_timeout=1"

static registry *reg;
static predict_service *svc;
static char dir[512]; /* an empty repository */

static int setup(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/predictd-unit-loop-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir) || registry_new(dir, &reg) != 0)
        return 0;
    predict_options opt = {.cache = true};
    return predict_service_new(&opt, reg, &svc) == 0;
}

static void teardown(void)
{
    predict_service_free(svc);
    registry_free(reg);
    svc = NULL;
    reg = NULL;
    (void)rmdir(dir);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

TEST(refused_arguments_start_nothing)
{
    CHECK(setup());
    predict_loop *l = NULL; /* stays NULL: out is written only on success */
    predict_loop_options opt = {.database_url = NOWHERE};
    CHECK_EQ_INT(predict_loop_start(NULL, &opt, &l), PD_EINVAL);
    CHECK_EQ_INT(predict_loop_start(svc, NULL, &l), PD_EINVAL);
    CHECK_EQ_INT(predict_loop_start(svc, &opt, NULL), PD_EINVAL);
    predict_loop_options none = {0};
    CHECK_EQ_INT(predict_loop_start(svc, &none, &l), PD_EINVAL);
    /* not a conninfo string nor a URI: refused before any thread starts */
    predict_loop_options bad = {.database_url = "host='unterminated"};
    CHECK_EQ_INT(predict_loop_start(svc, &bad, &l), PD_EINVAL);
    CHECK(l == NULL);
    /* the NULL loop: off, no role, never the leader; stop is a no-op */
    predict_loop_state st;
    memset(&st, 0, sizeof st);
    predict_loop_status(NULL, &st);
    CHECK_EQ_STR(st.state, "off");
    CHECK(st.role == NULL);
    CHECK(!predict_loop_leader(NULL));
    predict_loop_stop(NULL);
    teardown();
}

TEST(an_unreachable_database_reconnects_and_stops_promptly)
{
    CHECK(setup());
    predict_loop *l = NULL;
    /* a Redis URL the publisher cannot parse: the loop runs, unpublished */
    predict_loop_options opt = {.database_url = NOWHERE, .redis_url = "rediss://127.0.0.1/0"};
    CHECK_EQ_INT(predict_loop_start(svc, &opt, &l), 0);
    if (!l)
        return;
    predict_loop_state st;
    bool reconnecting = false;
    for (int i = 0; i < 200 && !reconnecting; i++) { /* up to 10 s */
        predict_loop_status(l, &st);
        reconnecting = strcmp(st.state, "reconnecting") == 0 && st.last_error[0];
        if (!reconnecting)
            sleep_ms(50);
    }
    CHECK(reconnecting);
    CHECK_EQ_STR(st.last_error, "cannot LISTEN: the database is unavailable");
    CHECK_EQ_STR(st.role, "follower");
    CHECK_EQ_INT(st.runs, 0);
    CHECK_EQ_INT(st.last_run, 0);
    CHECK(!predict_loop_leader(l));
    /* stop wakes the thread out of its back-off and joins it (the unit
     * harness' timeout catches a hang) */
    predict_loop_stop(l);
    teardown();
}

int main(void)
{
    RUN(refused_arguments_start_nothing);
    RUN(an_unreachable_database_reconnects_and_stops_promptly);
    return unit_report();
}
