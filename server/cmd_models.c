/*
 * cmd_models.c: `predictd predict`, `predictd models` (list, verify, eval),
 * `predictd keygen` and `predictd version`.
 *
 * `models verify DIR` and `models eval DIR` run a version directory through
 * exactly the checks and kernel the service uses, so exporters (tools/) can
 * prove their files reproduce the training library's probabilities.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/api.h"
#include "features/features.h"
#include "store/store.h"
#include "inference/inference.h"
#include "registry/registry.h"
#include "server/commands.h"

int cmd_predict(server_config *cfg, int argc, char **argv)
{
    if (cmd_wants_help(argc, argv) || argc != 3) {
        fprintf(cmd_usage_out("predict", argc, argv, argc > 3 ? 3 : 0),
                "usage: predictd predict SYMBOL TIMEFRAME [options]\n"
                "One prediction from the database and the model repository, printed "
                "as the API's JSON.\n");
        return cmd_wants_help(argc, argv) ? 0 : 2;
    }
    const char *symbol = argv[1], *tf = argv[2];
    int exit_code = 1;
    registry *reg = NULL;
    predict_service *svc = NULL;
    if (store_init(cfg->database_url, cfg->redis_url, false) != 0) {
        fprintf(stderr, "predictd predict: the database URL is not usable (see the log line)\n");
        return 1;
    }
    if (registry_new(cfg->models_dir, &reg) != 0 || registry_scan(reg, NULL, NULL) != 0) {
        fprintf(stderr, "predictd predict: cannot read the model repository %s\n", cfg->models_dir);
        goto out;
    }
    predict_options opt = {.cache = false, .stale_tfs = cfg->stale_after};
    if (predict_service_new(&opt, reg, &svc) != 0)
        goto out;
    predict_result *p = NULL;
    char why[256] = "";
    int64_t now = util_now();
    int rc = predict_one(svc, symbol, tf, NULL, now, &p, why, sizeof why);
    util_buf b;
    util_buf_init(&b);
    if (rc) {
        api_render_error(&b, rc, why[0] ? why : NULL);
        fprintf(stderr, "predictd predict: %s\n", why[0] ? why : util_strerror(rc));
    } else {
        char ts[32];
        util_buf_printf(&b, "{\"status\":\"success\",\"timestamp\":\"%s\",\"prediction\":",
                        util_rfc3339(now, ts));
        predict_render(&b, p, now);
        util_buf_puts(&b, "}");
        exit_code = 0;
    }
    if (util_buf_ok(&b))
        printf("%s\n", b.data);
    util_buf_cleanup(&b);
    predict_result_release(p);
out:
    predict_service_free(svc);
    registry_free(reg);
    store_shutdown();
    return exit_code;
}

static int models_list(server_config *cfg)
{
    registry *reg = NULL;
    if (registry_new(cfg->models_dir, &reg) != 0 || registry_scan(reg, NULL, NULL) != 0) {
        fprintf(stderr, "predictd models: cannot read %s\n", cfg->models_dir);
        registry_free(reg);
        return 1;
    }
    registry_series_info *s = NULL;
    size_t n = 0;
    int rc = registry_list(reg, &s, &n);
    if (rc) {
        registry_free(reg);
        return 1;
    }
    printf("%-12s %-4s %-8s %-10s %-8s %-8s %s\n", "SYMBOL", "TF", "VERSION", "STATE", "SERVING",
           "LABEL", "TEST_ACC / REASON");
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < s[i].n_versions; k++) {
            const registry_version_info *v = &s[i].versions[k];
            printf("%-12s %-4s %-8u %-10s %-8s %-8s ", s[i].symbol, s[i].timeframe, v->version,
                   v->state == REGISTRY_FAILED ? "FAILED" : registry_state_name(v->state),
                   v->serving ? "yes" : "", v->label);
            if (v->state == REGISTRY_FAILED)
                printf("%s\n", v->reason);
            else if (isfinite(v->test_accuracy))
                printf("%.4f\n", v->test_accuracy);
            else
                printf("-\n");
        }
    if (n == 0)
        printf("(no models under %s)\n", cfg->models_dir);
    registry_list_free(s, n);
    registry_free(reg);
    return 0;
}

/* Builds the runnable model of a verified version directory. */
static int load_dir(const char *dir, inference_model **out)
{
    char why[512] = "", path[4096];
    int rc = registry_verify_dir(dir, why, sizeof why);
    if (rc) {
        fprintf(stderr, "predictd models: %s: %s\n", dir, why);
        return rc;
    }
    Predictd__Model *m = NULL;
    Predictd__Scaler *s = NULL;
    snprintf(path, sizeof path, "%s/model.pb", dir);
    rc = registry_read_model(path, &m, why, sizeof why);
    snprintf(path, sizeof path, "%s/scaler.pb", dir);
    if (rc == 0)
        rc = registry_read_scaler(path, &s, why, sizeof why);
    if (rc == 0)
        rc = inference_model_build(m, s, out, why, sizeof why);
    if (rc)
        fprintf(stderr, "predictd models: %s: %s\n", dir, why);
    if (m)
        predictd__model__free_unpacked(m, NULL);
    if (s)
        predictd__scaler__free_unpacked(s, NULL);
    return rc;
}

/* Reads CSV rows of raw features on stdin; prints p_long,p_short,p_no_trade. */
static int models_eval(const char *dir)
{
    inference_model *m = NULL;
    if (load_dir(dir, &m))
        return 1;
    size_t width = inference_steps(m) * inference_n_features(m);
    double *x = calloc(width, sizeof *x);
    void *scratch = malloc(inference_scratch_size(m) + 64);
    char *line = NULL;
    size_t cap = 0;
    long lineno = 0;
    int exit_code = x && scratch ? 0 : 1;
    while (exit_code == 0 && getline(&line, &cap, stdin) > 0) {
        lineno++;
        char *p = line;
        size_t k = 0;
        while (*p && *p != '\n' && *p != '\r') {
            char *end;
            errno = 0;
            double v = strtod(p, &end);
            if (end == p || errno || k >= width) {
                fprintf(stderr, "predictd models eval: line %ld: expected %zu numbers\n", lineno,
                        width);
                exit_code = 1;
                break;
            }
            x[k++] = v;
            p = end;
            while (*p == ',' || *p == ' ')
                p++;
        }
        if (exit_code)
            break;
        if (k == 0)
            continue;
        if (k != width) {
            fprintf(stderr, "predictd models eval: line %ld: %zu values, expected %zu\n", lineno, k,
                    width);
            exit_code = 1;
            break;
        }
        double probs[INFERENCE_NCLASS];
        int rc = inference_run(m, x, probs, scratch);
        if (rc) {
            fprintf(stderr, "predictd models eval: line %ld: %s\n", lineno, util_strerror(rc));
            exit_code = 1;
            break;
        }
        printf("%.17g,%.17g,%.17g\n", probs[0], probs[1], probs[2]);
    }
    free(line);
    free(x);
    free(scratch);
    inference_model_free(m);
    return exit_code;
}

int cmd_models(server_config *cfg, int argc, char **argv)
{
    if (cmd_wants_help(argc, argv) || argc > 3 ||
        (argc >= 2 && strcmp(argv[1], "list") && strcmp(argv[1], "verify") &&
         strcmp(argv[1], "eval")) ||
        (argc == 2 && strcmp(argv[1], "list")) || (argc == 3 && !strcmp(argv[1], "list"))) {
        fprintf(cmd_usage_out("models", argc, argv, argc > 3 ? 3 : 0),
                "usage: predictd models [list]      the repository: series, versions, states\n"
                "       predictd models verify DIR  verify one version directory (exit 0 = ok)\n"
                "       predictd models eval DIR    read raw feature rows (CSV) on stdin, print\n"
                "                                   p_long,p_short,p_no_trade per row\n");
        return cmd_wants_help(argc, argv) ? 0 : 2;
    }
    if (argc == 1 || !strcmp(argv[1], "list"))
        return models_list(cfg);
    if (!strcmp(argv[1], "verify")) {
        char why[512] = "";
        int rc = registry_verify_dir(argv[2], why, sizeof why);
        if (rc) {
            fprintf(stderr, "predictd models verify: %s: %s\n", argv[2], why);
            return 1;
        }
        printf("%s: ok\n", argv[2]);
        return 0;
    }
    return models_eval(argv[2]);
}

int cmd_keygen(server_config *cfg, int argc, char **argv)
{
    int force = 0, print = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--force"))
            force = 1;
        else if (!strcmp(argv[i], "--print"))
            print = 1;
        else {
            fprintf(cmd_usage_out("keygen", argc, argv, i),
                    "usage: predictd keygen [--force] [--print] [--api-key-file PATH]\n"
                    "Writes a new random admin key (256 bits, hex) to the key file "
                    "with mode 0600.\n--force replaces an existing file; --print also "
                    "prints the key (otherwise it is never shown).\n");
            return cmd_wants_help(argc, argv) ? 0 : 2;
        }
    }
    unsigned char raw[32];
    size_t got = 0;
    while (got < sizeof raw) {
        ssize_t r = getrandom(raw + got, sizeof raw - got, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "predictd keygen: no system randomness: %s\n", strerror(errno));
            return 1;
        }
        got += (size_t)r;
    }
    char key[65];
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(key + 2 * i, 3, "%02x", raw[i]);
    const char *path = cfg->api_key_file;
    int flags = O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW | (force ? O_TRUNC : O_EXCL);
    int fd = open(path, flags, 0600);
    if (fd < 0) {
        fprintf(stderr, "predictd keygen: %s: %s%s\n", path, strerror(errno),
                errno == EEXIST ? " (use --force to replace it)" : "");
        return 1;
    }
    if (fchmod(fd, 0600) != 0 || write(fd, key, 64) != 64 || write(fd, "\n", 1) != 1 ||
        fsync(fd) != 0) {
        fprintf(stderr, "predictd keygen: %s: %s\n", path, strerror(errno));
        close(fd);
        return 1;
    }
    close(fd);
    fprintf(stderr, "predictd keygen: wrote a new admin key to %s (mode 0600)\n", path);
    if (print)
        printf("%s\n", key);
    return 0;
}

int cmd_version(server_config *cfg, int argc, char **argv)
{
    (void)cfg;
    (void)argv;
    if (argc > 1) {
        fprintf(cmd_usage_out("version", argc, argv, 1), "usage: predictd version\n");
        return cmd_wants_help(argc, argv) ? 0 : 2;
    }
    printf("predictd %s (commit %s, built %s %s)\n", PREDICTD_VERSION, PREDICTD_COMMIT, __DATE__,
           __TIME__);
    return 0;
}
