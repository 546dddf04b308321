/*
 * jobs: background training for the admin API.
 *
 * One worker thread runs queued jobs one at a time (FIFO), at a raised
 * niceness and pinned to one CPU (the last one the process may use), so a
 * training run never takes more than one core from serving. A job is a
 * copy of training_params plus its state; the worker calls training_run()
 * with a cancel flag polled between samples, epochs and batches.
 *
 * The queue is the training_jobs table of the database, shared by every
 * replica on it: a job is inserted 'queued', and whichever replica's worker
 * claims it first (store_jobs_claim: FOR UPDATE SKIP LOCKED) runs it. The
 * running worker names itself in the row and a heartbeat thread refreshes
 * heartbeat_at, progress and stage every BEAT_MS, reading back
 * cancel_requested, which a cancel through any replica sets. Reads (one
 * job, the list) come from the table, so every replica answers the same.
 * A running job whose heartbeat is older than STALE_S lost its worker (the
 * process died): every worker sweeps such jobs to 'failed' every
 * SWEEP_S and at start, so restarting a replica never touches a job
 * another live replica runs. A replica that stops hands its running job
 * back to the queue (unless a cancel was requested), so a rolling restart
 * does not lose it. A rejected job (trained, not promoted) is
 * stored as 'rejected' with the reason in error; "outcome" in its metrics
 * says the same.
 *
 * Schedule: every retrain_interval_s, each series with a serving version
 * is retrained with the parameters its serving model was trained with
 * (kind, layer sizes, features, window, policy, symbols, seed) under the
 * promote-if-better rule. Only softmax and MLP models (the kinds this
 * trainer makes) are retrained. With replicas, only the leader's schedule
 * runs (cfg.is_leader).
 *
 * THREAD SAFETY: j->lock guards j->current and its info, the counters and
 * the stopping flag; the worker holds it only to pick a job and to copy or
 * update state, never across training or a database round trip. A job's
 * cancel flag is atomic. Database writes happen outside the lock, through
 * the store_jobs_db handle (itself serialised).
 */
#define _GNU_SOURCE /* sched_setaffinity, CPU_SET */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "training/internal.h"
#include "store/store.h"

#define MOD "jobs"
#define MAX_QUEUED 16
#define BEAT_MS 1000   /* heartbeat of the running job (and cancel poll) */
#define CLAIM_MS 1000  /* an idle worker looks for queued jobs this often */
#define STALE_S 15     /* a running job without a heartbeat for this long lost its worker */
#define SWEEP_S 5      /* how often a worker looks for such jobs */

typedef struct job {
    training_job_info info; /* guarded by training_jobs.lock */
    training_params params; /* immutable once claimed */
    atomic_bool cancel;
    double persisted; /* progress last written (worker only) */
    char persisted_stage[24]; /* stage last written (worker only) */
} job;

struct training_jobs {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    char *models_dir;
    registry *reg;
    store_jobs_db *db;
    int64_t interval_s;
    int nice;
    size_t keep;

    /* guarded by lock */
    bool stopping;
    uint64_t next_retrain_ns;
    uint64_t finished, failed;
    int64_t last_activity;
    char last_error[256];

    pthread_t worker;

    char worker_name[64];   /* this replica in the rows it claims; immutable */
    job *current;           /* guarded by lock: the job this replica runs; NULL: none */
    pthread_cond_t beat_cond; /* wakes the heartbeat thread (stop) */
    pthread_t beat;
    bool beat_started;
    bool (*is_leader)(void *arg); /* NULL: always */
    void *leader_arg;
};

const char *training_job_state_name(training_job_state s)
{
    switch (s) {
    case TRAINING_JOB_QUEUED:
        return "queued";
    case TRAINING_JOB_RUNNING:
        return "running";
    case TRAINING_JOB_SUCCEEDED:
        return "succeeded";
    case TRAINING_JOB_FAILED:
        return "failed";
    case TRAINING_JOB_CANCELED:
        return "canceled";
    case TRAINING_JOB_REJECTED:
        return "rejected";
    case TRAINING_JOB_BELOW_BASELINE:
        return "below_baseline";
    }
    return "unknown";
}

bool training_job_state_final(training_job_state s)
{
    return s != TRAINING_JOB_QUEUED && s != TRAINING_JOB_RUNNING;
}

static int parse_state(const char *s, training_job_state *out)
{
    for (int i = TRAINING_JOB_QUEUED; i <= TRAINING_JOB_BELOW_BASELINE; i++)
        if (strcmp(s, training_job_state_name((training_job_state)i)) == 0) {
            *out = (training_job_state)i;
            return 0;
        }
    return PD_EINVAL;
}

static void info_reset(training_job_info *i)
{
    memset(i, 0, sizeof *i);
    i->test_accuracy = i->baseline_accuracy = NAN;
}

/* ---------------------------------------------------------------------------
 * JSON.
 */
static void time_or_null(util_buf *b, int64_t t)
{
    char buf[32];
    if (t)
        util_json_str(b, util_rfc3339(t, buf));
    else
        util_buf_puts(b, "null");
}

static const char *outcome_of(const training_job_info *j)
{
    switch (j->state) {
    case TRAINING_JOB_SUCCEEDED:
        return j->version ? "published" : "not_published";
    case TRAINING_JOB_REJECTED:
        return "rejected";
    case TRAINING_JOB_BELOW_BASELINE:
        return "below_baseline";
    default:
        return NULL;
    }
}

/* The metrics column: the metrics, plus outcome and scheduled. */
static void metrics_json(const training_job_info *j, util_buf *b)
{
    util_buf_puts(b, "{");
    const char *o = outcome_of(j);
    if (o) {
        util_json_key(b, "outcome");
        util_json_str(b, o);
        util_buf_puts(b, ",");
    }
    util_buf_printf(b, "\"scheduled\":%s", j->scheduled ? "true" : "false");
    for (size_t i = 0; i < j->n_metrics; i++) {
        if (!isfinite(j->metrics[i].value))
            continue;
        util_buf_puts(b, ",");
        util_json_key(b, j->metrics[i].name);
        /* all digits: the record reads back the same double */
        util_buf_printf(b, "%.17g", j->metrics[i].value);
    }
    util_buf_puts(b, "}");
}

void training_job_json(const training_job_info *j, util_buf *b)
{
    util_buf_printf(b, "{\"id\":%" PRId64 ",", j->id);
    util_json_key(b, "state");
    util_json_str(b, training_job_state_name(j->state));
    util_buf_puts(b, ",");
    util_json_key(b, "symbol");
    util_json_str(b, j->symbol);
    util_buf_puts(b, ",");
    util_json_key(b, "timeframe");
    util_json_str(b, j->timeframe);
    util_buf_puts(b, ",");
    util_json_key(b, "progress");
    util_json_fixed(b, j->progress, 4);
    util_buf_puts(b, ",");
    util_json_key(b, "stage");
    if (j->stage[0])
        util_json_str(b, j->stage);
    else
        util_buf_puts(b, "null");
    util_buf_puts(b, ",");
    util_json_key(b, "version");
    if (j->version)
        util_buf_printf(b, "%" PRIu32, j->version);
    else
        util_buf_puts(b, "null");
    util_buf_puts(b, ",");
    util_json_key(b, "test_accuracy");
    util_json_num(b, j->test_accuracy);
    util_buf_puts(b, ",");
    util_json_key(b, "baseline_accuracy");
    util_json_num(b, j->baseline_accuracy);
    util_buf_puts(b, ",");
    util_json_key(b, "metrics");
    util_buf_puts(b, "{");
    for (size_t i = 0; i < j->n_metrics; i++) {
        if (i)
            util_buf_puts(b, ",");
        util_json_key(b, j->metrics[i].name);
        util_json_num(b, j->metrics[i].value);
    }
    util_buf_puts(b, "},");
    util_json_key(b, "error");
    if (j->error[0])
        util_json_str(b, j->error);
    else
        util_buf_puts(b, "null");
    util_buf_puts(b, ",");
    util_json_key(b, "params");
    util_buf_puts(b, j->params_json[0] ? j->params_json : "{}");
    util_buf_puts(b, ",");
    util_json_key(b, "scheduled");
    util_buf_puts(b, j->scheduled ? "true" : "false");
    util_buf_puts(b, ",");
    util_json_key(b, "created_at");
    time_or_null(b, j->created_at);
    util_buf_puts(b, ",");
    util_json_key(b, "started_at");
    time_or_null(b, j->started_at);
    util_buf_puts(b, ",");
    util_json_key(b, "finished_at");
    time_or_null(b, j->finished_at);
    util_buf_puts(b, "}");
}

/* ---------------------------------------------------------------------------
 * Records.
 */
/* 0, or PD_ENOMEM when the metrics (jsonb: always valid JSON) could not be
 * read for want of memory: the outcome ("rejected") and the scheduled flag
 * are in them, so a snapshot without them would be wrong, not partial. */
static int from_row(const store_job_row *r, training_job_info *out)
{
    info_reset(out);
    out->id = r->id;
    if (parse_state(r->state, &out->state) != 0)
        out->state = TRAINING_JOB_FAILED;
    snprintf(out->symbol, sizeof out->symbol, "%s", r->symbol);
    snprintf(out->timeframe, sizeof out->timeframe, "%s", r->timeframe);
    out->progress = r->progress;
    out->version = r->version > 0 ? (uint32_t)r->version : 0;
    snprintf(out->error, sizeof out->error, "%s", r->error ? r->error : "");
    snprintf(out->params_json, sizeof out->params_json, "%s", r->params ? r->params : "{}");
    out->created_at = r->created_at;
    out->started_at = r->started_at;
    out->finished_at = r->finished_at;
    if (out->state == TRAINING_JOB_RUNNING)
        snprintf(out->stage, sizeof out->stage, "%s", r->stage);
    if (!r->metrics)
        return 0;
    json_t *m = json_loads(r->metrics, 0, NULL);
    if (!m)
        return PD_ENOMEM;
    if (!json_is_object(m)) {
        json_decref(m);
        return 0;
    }
    const char *key;
    json_t *v;
    json_object_foreach(m, key, v)
    {
        if (strcmp(key, "outcome") == 0) {
            if (json_is_string(v) && strcmp(json_string_value(v), "rejected") == 0)
                out->state = TRAINING_JOB_REJECTED;
        } else if (strcmp(key, "scheduled") == 0) {
            out->scheduled = json_is_true(v);
        } else if (json_is_number(v) && out->n_metrics < TRAINING_MAX_METRICS) {
            training_metric *t = &out->metrics[out->n_metrics++];
            snprintf(t->name, sizeof t->name, "%s", key);
            t->value = json_number_value(v);
        }
    }
    json_decref(m);
    for (size_t i = 0; i < out->n_metrics; i++) {
        if (strcmp(out->metrics[i].name, "accuracy") == 0)
            out->test_accuracy = out->metrics[i].value;
        else if (strcmp(out->metrics[i].name, "baseline_accuracy") == 0)
            out->baseline_accuracy = out->metrics[i].value;
    }
    return 0;
}

/* Writes a snapshot's state to the table (outside the lock). */
static void persist(training_jobs *j, const training_job_info *s)
{
    util_buf m;
    util_buf_init(&m);
    metrics_json(s, &m);
    store_job_row row;
    memset(&row, 0, sizeof row);
    row.id = s->id;
    snprintf(row.state, sizeof row.state, "%s", training_job_state_name(s->state));
    row.progress = s->progress;
    row.metrics = util_buf_ok(&m) ? m.data : NULL;
    row.error = s->error[0] ? (char *)s->error : NULL;
    row.version = (int32_t)s->version;
    row.started_at = s->started_at;
    row.finished_at = s->finished_at;
    snprintf(row.stage, sizeof row.stage, "%s", s->state == TRAINING_JOB_RUNNING ? s->stage : "");
    int rc = store_jobs_update(j->db, &row);
    if (rc != 0)
        LOG_WARN(MOD, "job %" PRId64 ": recording state %s failed: %s", s->id, row.state,
                 util_strerror(rc));
    util_buf_cleanup(&m);
}

/* ---------------------------------------------------------------------------
 * The worker.
 */
typedef struct progress_ctx {
    training_jobs *j;
    job *x;
} progress_ctx;

static void on_progress(void *ud, double f, const char *stage)
{
    progress_ctx *c = ud;
    training_job_info snap;
    bool write = false;
    pthread_mutex_lock(&c->j->lock);
    if (f > c->x->info.progress)
        c->x->info.progress = f > 1 ? 1 : f;
    snprintf(c->x->info.stage, sizeof c->x->info.stage, "%s", stage);
    if (c->x->info.progress - c->x->persisted >= 0.1 ||
        strcmp(c->x->persisted_stage, c->x->info.stage) != 0) {
        c->x->persisted = c->x->info.progress;
        memcpy(c->x->persisted_stage, c->x->info.stage, sizeof c->x->persisted_stage);
        snap = c->x->info;
        write = true;
    }
    pthread_mutex_unlock(&c->j->lock);
    if (write)
        persist(c->j, &snap);
}

/* Lowers the calling thread's priority and binds it to one CPU. */
static void confine_thread(int nice_value)
{
    pid_t tid = (pid_t)syscall(SYS_gettid);
    if (setpriority(PRIO_PROCESS, (id_t)tid, nice_value) != 0)
        LOG_WARN(MOD, "worker: setpriority(%d): %s", nice_value, strerror(errno));
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) {
        LOG_WARN(MOD, "worker: sched_getaffinity: %s", strerror(errno));
        return;
    }
    int last = -1;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &set))
            last = c;
    if (last < 0)
        return;
    CPU_ZERO(&set);
    CPU_SET(last, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0)
        LOG_WARN(MOD, "worker: sched_setaffinity(cpu %d): %s", last, strerror(errno));
    else
        LOG_DEBUG(MOD, "worker: nice %d, cpu %d", nice_value, last);
}

static void run_job(training_jobs *j, job *x)
{
    training_ctx ctx = {
        .models_dir = j->models_dir,
        .reg = j->reg,
        .progress = on_progress,
        .cancel = &x->cancel,
    };
    progress_ctx pc = {j, x};
    ctx.progress_ud = &pc;
    training_result *res = calloc(1, sizeof *res);
    int rc = res ? training_run(&x->params, &ctx, res) : PD_ENOMEM;

    pthread_mutex_lock(&j->lock);
    bool stopping = j->stopping;
    pthread_mutex_unlock(&j->lock);
    if (rc == PD_ECANCELED && stopping &&
        store_jobs_requeue(j->db, x->info.id, j->worker_name) == 0) {
        /* this replica stops (a restart, a scale-down): another one, or
         * this one when it is back, runs the job from the start */
        LOG_INFO(MOD, "job %" PRId64 " handed back to the queue: this replica stops",
                 x->info.id);
        free(res);
        return;
    }

    training_job_info snap;
    pthread_mutex_lock(&j->lock);
    training_job_info *i = &x->info;
    i->finished_at = util_now();
    if (res) {
        i->n_metrics = res->n_metrics;
        memcpy(i->metrics, res->metrics, res->n_metrics * sizeof res->metrics[0]);
        i->test_accuracy = res->test_accuracy;
        i->baseline_accuracy = res->baseline_accuracy;
    }
    if (rc == 0 && res->outcome == TRAINING_REJECTED) {
        i->state = TRAINING_JOB_REJECTED;
        snprintf(i->error, sizeof i->error, "%s", res->message);
    } else if (rc == 0 && res->outcome == TRAINING_BELOW_BASELINE) {
        i->state = TRAINING_JOB_BELOW_BASELINE;
        snprintf(i->error, sizeof i->error, "%s", res->message);
    } else if (rc == 0) {
        i->state = TRAINING_JOB_SUCCEEDED;
        i->version = res->version;
        i->progress = 1;
    } else if (rc == PD_ECANCELED) {
        i->state = TRAINING_JOB_CANCELED;
        snprintf(i->error, sizeof i->error, "canceled");
    } else {
        i->state = TRAINING_JOB_FAILED;
        snprintf(i->error, sizeof i->error, "%s",
                 res && res->message[0] ? res->message : util_strerror(rc));
    }
    i->stage[0] = '\0';
    j->finished++;
    j->last_activity = i->finished_at;
    if (i->state == TRAINING_JOB_FAILED) {
        j->failed++;
        snprintf(j->last_error, sizeof j->last_error, "job %" PRId64 ": %.200s", i->id, i->error);
    }
    snap = *i;
    pthread_mutex_unlock(&j->lock);
    LOG_INFO(MOD, "job %" PRId64 " %s/%s %s%s%s", snap.id, snap.symbol, snap.timeframe,
             training_job_state_name(snap.state), snap.error[0] ? ": " : "", snap.error);
    persist(j, &snap);
    free(res);
}

/* Waits on cond until the monotonic deadline (ns). Caller holds lock. */
static void wait_until(pthread_cond_t *cond, pthread_mutex_t *lock, uint64_t deadline)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now = util_mono_ns();
    uint64_t wait = deadline > now ? deadline - now : 0;
    /* pthread_cond_timedwait on the condvar's clock (monotonic) */
    uint64_t ns = (uint64_t)ts.tv_nsec + wait % 1000000000ull;
    ts.tv_sec += (time_t)(wait / 1000000000ull + ns / 1000000000ull);
    ts.tv_nsec = (long)(ns % 1000000000ull);
    pthread_cond_timedwait(cond, lock, &ts);
}

/* The retrain schedule, when it is due (and this replica leads). Caller
 * holds lock; it is released while jobs are queued. */
static void schedule_tick(training_jobs *j)
{
    if (j->interval_s <= 0 || util_mono_ns() < j->next_retrain_ns)
        return;
    j->next_retrain_ns = util_mono_ns() + (uint64_t)j->interval_s * 1000000000ull;
    pthread_mutex_unlock(&j->lock);
    if (j->is_leader && !j->is_leader(j->leader_arg)) {
        LOG_DEBUG(MOD, "scheduled retrain: not the leader; the leader's schedule runs");
    } else {
        int n = training_jobs_retrain_all(j);
        if (n < 0)
            LOG_WARN(MOD, "scheduled retrain: %s", util_strerror(n));
        else
            LOG_INFO(MOD, "scheduled retrain: %d job(s) queued", n);
    }
    pthread_mutex_lock(&j->lock);
}

/* Marks failed the running jobs whose worker is gone (any replica's). */
static void sweep_orphans(training_jobs *j)
{
    size_t n = 0;
    char why[160];
    snprintf(why, sizeof why,
             "interrupted: the replica running it stopped (no heartbeat for %d s)", STALE_S);
    if (store_jobs_fail_orphaned(j->db, STALE_S, why, &n) == 0 && n)
        LOG_WARN(MOD, "%zu training job(s) lost their worker: marked failed", n);
}

/* A claimed row as a job this worker runs; NULL (the row marked failed)
 * when its parameters do not read back. */
static job *job_from_claim(training_jobs *j, const store_job_row *row)
{
    job *x = calloc(1, sizeof *x);
    if (!x || from_row(row, &x->info) != 0) {
        /* out of memory: back in the queue rather than claimed by a worker
         * that does not run it (until the orphan sweep failed it) */
        free(x);
        (void)store_jobs_requeue(j->db, row->id, j->worker_name);
        return NULL;
    }
    atomic_init(&x->cancel, false);
    x->info.state = TRAINING_JOB_RUNNING;
    snprintf(x->info.stage, sizeof x->info.stage, "load");
    memcpy(x->persisted_stage, x->info.stage, sizeof x->persisted_stage);
    char why[256] = "";
    int rc = training_params_from_json(row->params ? row->params : "{}", &x->params, why,
                                       sizeof why);
    if (rc == 0)
        rc = training_params_validate(&x->params, why, sizeof why);
    if (rc == 0)
        return x;
    x->info.state = TRAINING_JOB_FAILED;
    x->info.finished_at = util_now();
    snprintf(x->info.error, sizeof x->info.error, "parameters: %.200s", why);
    LOG_WARN(MOD, "job %" PRId64 ": %s", x->info.id, x->info.error);
    persist(j, &x->info);
    free(x);
    return NULL;
}

/* Claims jobs from the shared table and runs them, one at a time. */
static void worker_loop(training_jobs *j)
{
    uint64_t next_sweep = 0;
    pthread_mutex_lock(&j->lock);
    while (!j->stopping) {
        pthread_mutex_unlock(&j->lock);
        if (util_mono_ns() >= next_sweep) {
            sweep_orphans(j);
            next_sweep = util_mono_ns() + (uint64_t)SWEEP_S * 1000000000ull;
        }
        store_job_row row;
        job *x = NULL;
        bool claimed = store_jobs_claim(j->db, j->worker_name, &row) == 0;
        if (claimed) {
            x = job_from_claim(j, &row);
            store_job_row_cleanup(&row);
        }
        pthread_mutex_lock(&j->lock);
        if (x) {
            if (j->stopping) /* claimed while stopping: give it up as canceled */
                atomic_store(&x->cancel, true);
            j->current = x;
            j->last_activity = util_now();
            pthread_mutex_unlock(&j->lock);
            LOG_INFO(MOD, "job %" PRId64 " claimed: %s/%s", x->info.id, x->info.symbol,
                     x->info.timeframe);
            run_job(j, x);
            pthread_mutex_lock(&j->lock);
            j->current = NULL;
            free(x);
            continue;
        }
        if (claimed) /* a job that could not run: look for the next at once */
            continue;
        schedule_tick(j);
        if (j->stopping)
            break;
        uint64_t until = util_mono_ns() + (uint64_t)CLAIM_MS * 1000000ull;
        if (j->interval_s > 0 && j->next_retrain_ns < until)
            until = j->next_retrain_ns;
        wait_until(&j->cond, &j->lock, until);
    }
    pthread_mutex_unlock(&j->lock);
}

static void *worker_main(void *arg)
{
    training_jobs *j = arg;
    confine_thread(j->nice);
    worker_loop(j);
    store_thread_cleanup();
    return NULL;
}

/* The running job's heartbeat: every BEAT_MS, writes its
 * progress and stage with heartbeat_at and reads back a cancel request
 * made through any replica. */
static void *beat_main(void *arg)
{
    training_jobs *j = arg;
    bool told = false;
    int64_t told_id = 0;
    pthread_mutex_lock(&j->lock);
    while (!j->stopping) {
        wait_until(&j->beat_cond, &j->lock, util_mono_ns() + (uint64_t)BEAT_MS * 1000000ull);
        if (j->stopping || !j->current)
            continue;
        int64_t id = j->current->info.id;
        double progress = j->current->info.progress;
        char stage[24];
        memcpy(stage, j->current->info.stage, sizeof stage);
        pthread_mutex_unlock(&j->lock);
        bool cancel = false;
        int rc = store_jobs_heartbeat(j->db, id, j->worker_name, progress, stage, &cancel);
        pthread_mutex_lock(&j->lock);
        if (!j->current || j->current->info.id != id || (rc != 0 && rc != PD_ENOTFOUND))
            continue;
        if (told_id != id)
            told = false, told_id = id;
        if (rc == PD_ENOTFOUND && !training_job_state_final(j->current->info.state)) {
            /* another replica marked it failed (this one looked gone) */
            atomic_store(&j->current->cancel, true);
            if (!told)
                LOG_WARN(MOD, "job %" PRId64 ": no longer this replica's; stopping it", id);
            told = true;
        } else if (rc == 0 && cancel && !atomic_exchange(&j->current->cancel, true)) {
            LOG_INFO(MOD, "job %" PRId64 ": cancel requested; stopping at the next batch", id);
        }
    }
    pthread_mutex_unlock(&j->lock);
    store_thread_cleanup();
    return NULL;
}

/* ---------------------------------------------------------------------------
 * API.
 */
int training_jobs_start(const training_jobs_config *cfg, training_jobs **out)
{
    if (!cfg || !cfg->models_dir || !cfg->database_url || !out || cfg->retrain_interval_s < 0)
        return PD_EINVAL;
    training_jobs *j = calloc(1, sizeof *j);
    if (!j)
        return PD_ENOMEM;
    int rc = PD_ENOMEM;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    bool cond_ok = pthread_cond_init(&j->cond, &ca) == 0;
    pthread_condattr_destroy(&ca);
    if (!cond_ok) {
        free(j);
        return PD_ENOMEM;
    }
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    cond_ok = pthread_cond_init(&j->beat_cond, &ca) == 0;
    pthread_condattr_destroy(&ca);
    if (!cond_ok) {
        pthread_cond_destroy(&j->cond);
        free(j);
        return PD_ENOMEM;
    }
    if (pthread_mutex_init(&j->lock, NULL) != 0) {
        pthread_cond_destroy(&j->cond);
        pthread_cond_destroy(&j->beat_cond);
        free(j);
        return PD_ENOMEM;
    }
    j->is_leader = cfg->is_leader;
    j->leader_arg = cfg->leader_arg;
    char host[48] = "";
    if (gethostname(host, sizeof host - 1) != 0 || !host[0])
        snprintf(host, sizeof host, "localhost");
    snprintf(j->worker_name, sizeof j->worker_name, "%s:%d", host, (int)getpid());
    j->models_dir = strdup(cfg->models_dir);
    j->reg = cfg->reg;
    j->interval_s = cfg->retrain_interval_s;
    j->nice = cfg->nice ? cfg->nice : 10;
    j->keep = cfg->keep ? cfg->keep : 50;
    j->next_retrain_ns = util_mono_ns() + (uint64_t)j->interval_s * 1000000000ull;
    if (!j->models_dir)
        goto fail;
    if ((rc = store_jobs_open(cfg->database_url, &j->db)) != 0)
        goto fail;
    size_t queued = 0;
    if ((rc = store_jobs_count_queued(j->db, &queued)) != 0) {
        LOG_ERROR(MOD, "reading the training jobs failed: %s", util_strerror(rc));
        goto fail;
    }
    LOG_INFO(MOD, "training jobs shared through the database as %s (%zu queued)",
             j->worker_name, queued);
    sweep_orphans(j);
    if (pthread_create(&j->beat, NULL, beat_main, j) != 0) {
        rc = PD_ENOMEM;
        goto fail;
    }
    j->beat_started = true;
    if (pthread_create(&j->worker, NULL, worker_main, j) != 0) {
        rc = PD_ENOMEM;
        goto fail;
    }
    *out = j;
    return 0;
fail:
    if (j->beat_started) {
        pthread_mutex_lock(&j->lock);
        j->stopping = true;
        pthread_cond_broadcast(&j->beat_cond);
        pthread_mutex_unlock(&j->lock);
        pthread_join(j->beat, NULL);
    }
    store_jobs_close(j->db);
    free(j->models_dir);
    pthread_mutex_destroy(&j->lock);
    pthread_cond_destroy(&j->cond);
    pthread_cond_destroy(&j->beat_cond);
    free(j);
    return rc;
}

void training_jobs_stop(training_jobs *j)
{
    if (!j)
        return;
    pthread_mutex_lock(&j->lock);
    j->stopping = true;
    if (j->current) /* queued rows stay in the table for the other replicas */
        atomic_store(&j->current->cancel, true);
    pthread_cond_broadcast(&j->cond);
    pthread_cond_broadcast(&j->beat_cond);
    pthread_mutex_unlock(&j->lock);
    pthread_join(j->worker, NULL);
    if (j->beat_started)
        pthread_join(j->beat, NULL);
    store_jobs_close(j->db);
    free(j->models_dir);
    pthread_mutex_destroy(&j->lock);
    pthread_cond_destroy(&j->cond);
    pthread_cond_destroy(&j->beat_cond);
    free(j);
}

/* The job goes into the shared table, where the first idle worker of any
 * replica claims it. Takes x. */
static int submit_shared(training_jobs *j, job *x, int64_t *id, char *why, size_t whylen)
{
    training_job_info *i = &x->info;
    pthread_mutex_lock(&j->lock);
    bool stopping = j->stopping;
    pthread_mutex_unlock(&j->lock);
    size_t queued = 0;
    int rc = stopping ? PD_ENOTREADY : store_jobs_count_queued(j->db, &queued);
    if (rc == 0 && queued >= MAX_QUEUED) {
        rc = PD_EBUSY;
        if (why && whylen)
            snprintf(why, whylen, "the queue is full (%d jobs waiting)", MAX_QUEUED);
    }
    util_buf m;
    util_buf_init(&m);
    metrics_json(i, &m); /* {"scheduled":...} */
    if (rc == 0)
        rc = util_buf_ok(&m) ? store_jobs_insert_ex(j->db, i->symbol, i->timeframe,
                                                    i->params_json, m.data, &i->id,
                                                    &i->created_at)
                             : PD_ENOMEM;
    util_buf_cleanup(&m);
    if (rc == PD_EBUSY && why && whylen && !why[0])
        snprintf(why, whylen, "a job for %s/%s is already queued or running", i->symbol,
                 i->timeframe);
    else if (rc != 0 && rc != PD_EBUSY && why && whylen && !why[0])
        snprintf(why, whylen, "%s",
                 rc == PD_ENOTREADY ? "the server is stopping" : "the job could not be recorded");
    if (rc == 0) {
        *id = i->id;
        LOG_INFO(MOD, "job %" PRId64 " queued: %s/%s%s", i->id, i->symbol, i->timeframe,
                 i->scheduled ? " (scheduled)" : "");
        pthread_mutex_lock(&j->lock);
        pthread_cond_broadcast(&j->cond); /* this replica's worker may claim it at once */
        pthread_mutex_unlock(&j->lock);
    }
    free(x);
    return rc;
}

static int submit(training_jobs *j, const training_params *p, bool scheduled, int64_t *id,
                  char *why, size_t whylen)
{
    if (!j || !p)
        return PD_EINVAL;
    int rc = training_params_validate(p, why, whylen);
    if (rc != 0)
        return rc;
    job *x = calloc(1, sizeof *x);
    if (!x)
        return PD_ENOMEM;
    x->params = *p;
    atomic_init(&x->cancel, false);
    training_job_info *i = &x->info;
    info_reset(i);
    i->state = TRAINING_JOB_QUEUED;
    i->scheduled = scheduled;
    snprintf(i->symbol, sizeof i->symbol, "%s", training_params_target(p));
    snprintf(i->timeframe, sizeof i->timeframe, "%s", p->timeframe);
    util_buf b;
    util_buf_init(&b);
    training_params_json(p, &b);
    if (!util_buf_ok(&b) || b.len >= sizeof i->params_json) {
        util_buf_cleanup(&b);
        free(x);
        return PD_ENOMEM;
    }
    memcpy(i->params_json, b.data, b.len + 1);
    util_buf_cleanup(&b);
    return submit_shared(j, x, id, why, whylen);
}

int training_jobs_submit(training_jobs *j, const training_params *p, int64_t *id, char *why,
                         size_t whylen)
{
    return submit(j, p, false, id, why, whylen);
}

int training_jobs_get(training_jobs *j, int64_t id, training_job_info *out)
{
    if (!j || !out)
        return PD_EINVAL;
    if (id <= 0) /* the table, so every replica answers the same */
        return PD_ENOTFOUND;
    store_job_row row;
    int rc = store_jobs_get(j->db, id, &row);
    if (rc != 0)
        return rc;
    rc = from_row(&row, out);
    store_job_row_cleanup(&row);
    return rc;
}

int training_jobs_list(training_jobs *j, size_t limit, training_job_info **out, size_t *n)
{
    if (!j || !out || !n)
        return PD_EINVAL;
    store_job_row *rows = NULL;
    size_t nr = 0;
    int rc = store_jobs_list(j->db, limit ? limit : j->keep, &rows, &nr);
    if (rc != 0)
        return rc;
    training_job_info *v = malloc((nr ? nr : 1) * sizeof *v);
    if (!v) {
        store_job_rows_free(rows, nr);
        return PD_ENOMEM;
    }
    for (size_t k = 0; k < nr && rc == 0; k++)
        rc = from_row(&rows[k], &v[k]);
    store_job_rows_free(rows, nr);
    if (rc) {
        free(v);
        return rc;
    }
    *out = v;
    *n = nr;
    return 0;
}

int training_jobs_cancel(training_jobs *j, int64_t id)
{
    if (!j)
        return PD_EINVAL;
    bool was_queued = false;
    int rc = id > 0 ? store_jobs_cancel(j->db, id, &was_queued) : PD_ENOTFOUND;
    if (rc == 0 && !was_queued) {
        /* ours: stop now rather than at the next heartbeat */
        pthread_mutex_lock(&j->lock);
        if (j->current && j->current->info.id == id)
            atomic_store(&j->current->cancel, true);
        pthread_mutex_unlock(&j->lock);
    }
    if (rc == 0)
        LOG_INFO(MOD, "job %" PRId64 " %s", id,
                 was_queued ? "canceled while queued" : "cancel requested");
    return rc;
}

void training_jobs_stats_get(training_jobs *j, training_jobs_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!j)
        return;
    size_t shared_queued = 0; /* the table's, every replica's (0 when unreadable) */
    (void)store_jobs_count_queued(j->db, &shared_queued);
    pthread_mutex_lock(&j->lock);
    out->running = j->current != NULL;
    out->queued = shared_queued;
    out->finished = j->finished;
    out->failed = j->failed;
    out->last_activity = j->last_activity;
    out->retrain_interval_s = j->interval_s;
    memcpy(out->last_error, j->last_error, sizeof out->last_error);
    pthread_mutex_unlock(&j->lock);
}

/* ---------------------------------------------------------------------------
 * Schedule.
 */

/* Parameters that reproduce how the serving model m of series s/tf was
 * trained. PD_EINVAL for a kind this trainer does not make. */
static int params_from_model(const Predictd__Model *m, const char *symbol, const char *tf,
                             training_params *p)
{
    training_params_default(p);
    if (m->kind == PREDICTD__MODEL_KIND__SOFTMAX) {
        p->kind = TRAINING_SOFTMAX;
    } else if (m->kind == PREDICTD__MODEL_KIND__MLP && m->n_layers >= 2 &&
               m->n_layers - 1 <= TRAINING_MAX_HIDDEN) {
        p->kind = TRAINING_MLP;
        p->n_hidden = m->n_layers - 1;
        for (size_t l = 0; l + 1 < m->n_layers; l++)
            p->hidden[l] = m->layers[l]->out;
    } else {
        return PD_EINVAL;
    }
    if (m->n_features > TRAINING_MAX_FEATURES)
        return PD_EINVAL;
    for (size_t i = 0; i < m->n_features; i++) {
        if (strlen(m->features[i]) >= TRAINING_SPEC_LEN)
            return PD_EINVAL;
        snprintf(p->features[i], TRAINING_SPEC_LEN, "%s", m->features[i]);
    }
    p->n_features = m->n_features;
    p->window = m->window;
    if (m->policy) {
        const Predictd__SignalPolicy *q = m->policy;
        p->policy.sl_atr = q->sl_atr;
        for (size_t k = 0; k < INFERENCE_NTP && k < q->n_tp_r; k++)
            p->policy.tp_r[k] = q->tp_r[k];
        p->policy.horizon = q->horizon;
        p->policy.min_confidence = q->min_confidence;
        p->policy.atr_period = q->atr_period ? q->atr_period : 14;
        p->policy.max_age_s = q->max_age_s;
        if (q->costs) {
            p->policy.cost_bps = q->costs->round_trip_bps;
            if (q->costs->min_risk_costs > 0)
                p->policy.min_risk_costs = q->costs->min_risk_costs;
        }
    }
    if (m->meta) {
        p->seed = m->meta->seed;
        for (size_t i = 0; i < m->meta->n_symbols && i < TRAINING_MAX_SYMBOLS; i++)
            snprintf(p->symbols[p->n_symbols++], TRAINING_NAME_LEN, "%s", m->meta->symbols[i]);
    }
    snprintf(p->target, sizeof p->target, "%s", symbol);
    snprintf(p->timeframe, sizeof p->timeframe, "%s", tf);
    if (p->n_symbols == 0 && strcmp(symbol, REGISTRY_DEFAULT_SYMBOL) != 0)
        snprintf(p->symbols[p->n_symbols++], TRAINING_NAME_LEN, "%s", symbol);
    if (p->n_symbols == 0) {
        char **v = NULL;
        size_t n = 0;
        int rc = store_list_symbols(tf, &v, &n);
        if (rc != 0)
            return rc;
        for (size_t i = 0; i < n && p->n_symbols < TRAINING_MAX_SYMBOLS; i++)
            if (util_symbol_valid(v[i]))
                snprintf(p->symbols[p->n_symbols++], TRAINING_NAME_LEN, "%s", v[i]);
        store_strv_free(v, n);
    }
    p->promote_if_better = true;
    p->publish = true;
    return 0;
}

int training_jobs_retrain_all(training_jobs *j)
{
    if (!j)
        return PD_EINVAL;
    if (!j->reg)
        return PD_ENOTREADY;
    registry_series_info *s = NULL;
    size_t n = 0;
    int rc = registry_list(j->reg, &s, &n);
    if (rc != 0)
        return rc;
    int queued = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t serving = 0;
        for (size_t k = 0; k < s[i].n_versions; k++)
            if (s[i].versions[k].serving)
                serving = s[i].versions[k].version;
        if (!serving)
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s/%s/%" PRIu32 "/model.pb", j->models_dir, s[i].symbol,
                 s[i].timeframe, serving);
        Predictd__Model *m = NULL;
        char why[200];
        if (registry_read_model(path, &m, why, sizeof why) != 0) {
            LOG_WARN(MOD, "retrain %s/%s: cannot read v%" PRIu32 ": %s", s[i].symbol,
                     s[i].timeframe, serving, why);
            continue;
        }
        training_params p;
        int prc = params_from_model(m, s[i].symbol, s[i].timeframe, &p);
        predictd__model__free_unpacked(m, NULL);
        if (prc != 0) {
            LOG_INFO(MOD, "retrain %s/%s: v%" PRIu32 " is not a model this trainer makes; skipped",
                     s[i].symbol, s[i].timeframe, serving);
            continue;
        }
        int64_t id;
        int src = submit(j, &p, true, &id, why, sizeof why);
        if (src == 0)
            queued++;
        else if (src != PD_EBUSY)
            LOG_WARN(MOD, "retrain %s/%s: %s", s[i].symbol, s[i].timeframe,
                     src == PD_EINVAL ? why : util_strerror(src));
    }
    registry_list_free(s, n);
    return queued;
}
