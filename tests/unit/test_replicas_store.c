/*
 * Unit tests for what lets several predictd processes share one database:
 * store/lock.c (the advisory lock a leader holds), store/notifier.c, the
 * shared training queue of store/jobs.c (claims with SKIP LOCKED,
 * heartbeats, cancel requests, orphans) and the job parameters' JSON round
 * trip (training_params_from_json), against the real PostgreSQL of
 * tests/run (PREDICTD_TEST_DATABASE_URL; skipped without it).
 */
#include <poll.h>
#include <stdint.h>
#include <unistd.h>

#include "store/store.h"
#include "tests/unit/unit.h"
#include "training/training.h"
#include "util/util.h"

#define DB_ENV "PREDICTD_TEST_DATABASE_URL"

static bool db_ready(void)
{
    static char dir[1024];
    const char *root = getenv("PREDICTD_ROOT");
    snprintf(dir, sizeof dir, "%s/db", root && *root ? root : ".");
    return store_init(getenv(DB_ENV), NULL, false) == 0 && store_migrate(dir) == 0;
}

TEST(lock_is_held_by_one_session_and_passes_on_release)
{
    UNIT_NEED_ENV(DB_ENV);
    CHECK(db_ready());
    int64_t key = STORE_LOCK_KEY_LEADER + 1000; /* not the key a running server may hold */
    store_lock *a = NULL, *b = NULL;
    CHECK_EQ_INT(store_lock_open(getenv(DB_ENV), key, &a), 0);
    CHECK_EQ_INT(store_lock_open(getenv(DB_ENV), key, &b), 0);
    if (!a || !b)
        return;
    bool ha = false, hb = true;
    CHECK_EQ_INT(store_lock_try(a, &ha), 0);
    CHECK(ha);
    CHECK_EQ_INT(store_lock_try(b, &hb), 0);
    CHECK(!hb);
    CHECK_EQ_INT(store_lock_try(a, &ha), 0); /* kept: checked on the server */
    CHECK(ha);
    store_lock_release(a); /* the standby takes over at its next try */
    hb = false;
    for (int i = 0; i < 100 && !hb; i++) {
        CHECK_EQ_INT(store_lock_try(b, &hb), 0);
        if (!hb)
            usleep(20000);
    }
    CHECK(hb);
    CHECK_EQ_INT(store_lock_try(a, &ha), 0);
    CHECK(!ha);
    store_lock_close(a);
    store_lock_close(b);
}

TEST(lock_errors)
{
    store_lock *l = NULL;
    bool held = true;
    CHECK_EQ_INT(store_lock_open("postgresql://[bad", 1, &l), PD_EINVAL);
    CHECK_EQ_INT(store_lock_try(NULL, &held), PD_EINVAL);
    /* nothing listens on port 1: PD_EDB, and trying again is fine */
    CHECK_EQ_INT(store_lock_open("postgresql://127.0.0.1:1/x?connect_timeout=1", 1, &l), 0);
    if (!l)
        return;
    CHECK_EQ_INT(store_lock_try(l, &held), PD_EDB);
    CHECK_EQ_INT(store_lock_try(l, &held), PD_EDB);
    CHECK_EQ_INT(store_lock_check(l, &held), 0);
    CHECK(!held);
    store_lock_close(l);
}

static void on_note(const char *payload, void *arg)
{
    snprintf(arg, 64, "%s", payload);
}

TEST(notifier_reaches_a_listener)
{
    UNIT_NEED_ENV(DB_ENV);
    store_listener *l = NULL;
    store_notifier *n = NULL;
    CHECK_EQ_INT(store_listen_open(getenv(DB_ENV), "predictd_models", &l), 0);
    CHECK_EQ_INT(store_notifier_open(getenv(DB_ENV), &n), 0);
    if (!l || !n)
        goto out;
    CHECK_EQ_INT(store_listen_connect(l), 0);
    CHECK_EQ_INT(store_notifier_send(n, "predictd_models", "BTCUSDT:15m"), 0);
    char got[64] = "";
    for (int i = 0; i < 100 && !got[0]; i++) {
        struct pollfd p = {.fd = store_listen_socket(l), .events = POLLIN};
        if (poll(&p, 1, 50) > 0)
            CHECK(store_listen_consume(l, on_note, got) >= 0);
    }
    CHECK_EQ_STR(got, "BTCUSDT:15m");
    CHECK_EQ_INT(store_notifier_send(n, "", "x"), PD_EINVAL);
    CHECK_EQ_INT(store_notifier_send(NULL, "predictd_models", "x"), PD_EINVAL);
out:
    store_listen_close(l);
    store_notifier_close(n);
}

TEST(two_workers_claim_different_jobs)
{
    UNIT_NEED_ENV(DB_ENV);
    CHECK(db_ready());
    store_jobs_db *a = NULL, *b = NULL;
    CHECK_EQ_INT(store_jobs_open(getenv(DB_ENV), &a), 0);
    CHECK_EQ_INT(store_jobs_open(getenv(DB_ENV), &b), 0);
    if (!a || !b)
        return;
    int64_t id1 = 0, id2 = 0;
    CHECK_EQ_INT(store_jobs_insert(a, "AAAUSDT", "1h", "{}", &id1, NULL), 0);
    CHECK_EQ_INT(store_jobs_insert(a, "BBBUSDT", "1h", "{}", &id2, NULL), 0);
    store_job_row r1, r2, r3;
    CHECK_EQ_INT(store_jobs_claim(a, "host:1", &r1), 0);
    CHECK_EQ_INT(store_jobs_claim(b, "host:2", &r2), 0);
    CHECK_EQ_INT(r1.id, id1); /* oldest first */
    CHECK_EQ_INT(r2.id, id2);
    CHECK_EQ_STR(r1.state, "running");
    CHECK_EQ_STR(r1.worker, "host:1");
    CHECK_EQ_STR(r1.stage, "load");
    CHECK_EQ_INT(store_jobs_claim(b, "host:2", &r3), PD_ENOTFOUND);
    CHECK_EQ_INT(store_jobs_claim(b, "", &r3), PD_EINVAL);

    /* the heartbeat writes progress and stage and reads the cancel request */
    bool cancel = true;
    CHECK_EQ_INT(store_jobs_heartbeat(a, id1, "host:1", 0.25, "fit", &cancel), 0);
    CHECK(!cancel);
    CHECK_EQ_INT(store_jobs_heartbeat(a, id1, "host:2", 0.25, "fit", &cancel), PD_ENOTFOUND);
    bool was_queued = true;
    CHECK_EQ_INT(store_jobs_cancel(b, id1, &was_queued), 0); /* through the other worker */
    CHECK(!was_queued);
    CHECK_EQ_INT(store_jobs_heartbeat(a, id1, "host:1", 0.5, NULL, &cancel), 0);
    CHECK(cancel);
    store_job_row g;
    CHECK_EQ_INT(store_jobs_get(b, id1, &g), 0);
    CHECK_EQ_STR(g.state, "running"); /* until its worker stops */
    CHECK_NEAR(g.progress, 0.5, 1e-9);
    CHECK_EQ_STR(g.stage, "fit");
    CHECK(g.cancel_requested);
    store_job_row_cleanup(&g);

    /* a queued job is canceled at once; a finished one cannot be */
    int64_t id3 = 0;
    CHECK_EQ_INT(store_jobs_insert(a, "CCCUSDT", "1h", "{}", &id3, NULL), 0);
    CHECK_EQ_INT(store_jobs_cancel(b, id3, &was_queued), 0);
    CHECK(was_queued);
    CHECK_EQ_INT(store_jobs_get(a, id3, &g), 0);
    CHECK_EQ_STR(g.state, "canceled");
    CHECK(g.finished_at > 0);
    store_job_row_cleanup(&g);
    CHECK_EQ_INT(store_jobs_cancel(b, id3, NULL), PD_EINVAL);
    CHECK_EQ_INT(store_jobs_cancel(b, 987654321, NULL), PD_ENOTFOUND);
    CHECK_EQ_INT(store_jobs_claim(b, "host:2", &r3), PD_ENOTFOUND); /* not claimable */

    /* orphans: only jobs whose heartbeat is older than the limit */
    size_t n = 99;
    CHECK_EQ_INT(store_jobs_fail_orphaned(b, 3600, "gone", &n), 0);
    CHECK_EQ_INT(n, 0);
    sleep(2);
    CHECK_EQ_INT(store_jobs_heartbeat(b, id2, "host:2", 0.1, NULL, &cancel), 0);
    CHECK_EQ_INT(store_jobs_fail_orphaned(b, 1, "gone", &n), 0);
    CHECK_EQ_INT(n, 1); /* id1, silent for 2 s; id2 just beat */
    CHECK_EQ_INT(store_jobs_get(b, id1, &g), 0);
    CHECK_EQ_STR(g.state, "failed");
    CHECK_EQ_STR(g.error, "gone");
    store_job_row_cleanup(&g);
    CHECK_EQ_INT(store_jobs_heartbeat(a, id1, "host:1", 0.6, NULL, &cancel), PD_ENOTFOUND);
    /* a stopping worker hands its job back; a canceled one stays canceled */
    CHECK_EQ_INT(store_jobs_requeue(b, id2, "host:1"), PD_ENOTFOUND); /* not its job */
    CHECK_EQ_INT(store_jobs_requeue(b, id2, "host:2"), 0);
    CHECK_EQ_INT(store_jobs_get(a, id2, &g), 0);
    CHECK_EQ_STR(g.state, "queued");
    CHECK_EQ_STR(g.worker, "");
    CHECK(g.started_at == 0 && g.progress == 0);
    store_job_row_cleanup(&g);
    CHECK_EQ_INT(store_jobs_claim(a, "host:1", &r3), 0);
    CHECK_EQ_INT(r3.id, id2);
    store_job_row_cleanup(&r3);
    CHECK_EQ_INT(store_jobs_cancel(b, id2, NULL), 0);
    CHECK_EQ_INT(store_jobs_requeue(a, id2, "host:1"), PD_ENOTFOUND);
    store_job_row_cleanup(&r1);
    store_job_row_cleanup(&r2);
    store_jobs_close(a);
    store_jobs_close(b);
}

TEST(params_json_round_trip)
{
    training_params p;
    training_params_default(&p);
    char why[256];
    CHECK_EQ_INT(training_params_set(&p, "symbols", "BTCUSDT,ETHUSDT", why, sizeof why), 0);
    CHECK_EQ_INT(training_params_set(&p, "timeframe", "15m", why, sizeof why), 0);
    CHECK_EQ_INT(training_params_set(&p, "kind", "mlp", why, sizeof why), 0);
    CHECK_EQ_INT(training_params_set(&p, "hidden", "32,16", why, sizeof why), 0);
    CHECK_EQ_INT(training_params_set(&p, "features", "rsi_14,natr_14", why, sizeof why), 0);
    CHECK_EQ_INT(training_params_set(&p, "tp_r", "1,1.5,2.25", why, sizeof why), 0);
    CHECK_EQ_INT(training_params_set(&p, "learning_rate", "0.003", why, sizeof why), 0);
    CHECK_EQ_INT(training_params_set(&p, "from", "2024-01-01T00:00:00Z", why, sizeof why), 0);
    CHECK_EQ_INT(training_params_set(&p, "now", "2024-06-01T00:00:00Z", why, sizeof why), 0);
    CHECK_EQ_INT(training_params_set(&p, "seed", "42", why, sizeof why), 0);
    CHECK_EQ_INT(training_params_set(&p, "promote_if_better", "false", why, sizeof why), 0);
    util_buf a, b;
    util_buf_init(&a);
    util_buf_init(&b);
    training_params_json(&p, &a);
    training_params q;
    CHECK_EQ_INT(training_params_from_json(a.data, &q, why, sizeof why), 0);
    training_params_json(&q, &b);
    CHECK(util_buf_ok(&a) && util_buf_ok(&b));
    CHECK_EQ_STR(b.data, a.data);
    CHECK(q.now == p.now && q.from == p.from && q.seed == 42 && !q.promote_if_better);

    training_params keep = q;
    CHECK_EQ_INT(training_params_from_json("[1]", &q, why, sizeof why), PD_EINVAL);
    CHECK_EQ_INT(training_params_from_json("{\"window\": {\"a\": 1}}", &q, why, sizeof why),
                 PD_EINVAL);
    CHECK_EQ_INT(training_params_from_json("{\"no_such\": 1}", &q, why, sizeof why), PD_EINVAL);
    CHECK(strstr(why, "no_such") != NULL);
    CHECK_EQ_INT(training_params_from_json("{not json", &q, why, sizeof why), PD_EINVAL);
    CHECK(memcmp(&keep, &q, sizeof q) == 0); /* unchanged on error */
    util_buf_cleanup(&a);
    util_buf_cleanup(&b);
}

int main(void)
{
    util_log_configure(UTIL_LOG_ERROR, false);
    RUN(lock_errors);
    RUN(lock_is_held_by_one_session_and_passes_on_release);
    RUN(notifier_reaches_a_listener);
    RUN(two_workers_claim_different_jobs);
    RUN(params_json_round_trip);
    int rc = unit_report();
    store_shutdown();
    return rc;
}
