/*
 * main.c: the predictd binary. Loads the configuration (flags and
 * environment), sets up logging, and runs one subcommand. See
 * `predictd --help` and DESIGN.md.
 */
#include <stdio.h>
#include <string.h>

#include "server/cmd_train.h"
#include "server/commands.h"
#include "util/util.h"

static int cmd_train_adapter(server_config *cfg, int argc, char **argv)
{
    (void)cfg;
    return cmd_train(argc, argv);
}

static const struct {
    const char *name;
    int (*fn)(server_config *, int, char **);
    const char *help;
} commands[] = {
    {"serve", cmd_serve, "the HTTP service (SIGTERM drains, SIGHUP reloads models)"},
    {"migrate", cmd_migrate, "apply db/ migrations (idempotent)"},
    {"seed", cmd_seed, "write deterministic synthetic candles for the demo symbols"},
    {"import", cmd_import, "load candles from a CSV file"},
    {"ingest", cmd_ingest, "run the market-data feed (PREDICTD_FEED) alone"},
    {"fetch", cmd_fetch, "download 1m history from the exchange's REST API"},
    {"train", cmd_train_adapter, "train a model from candles and publish the next version"},
    {"features", cmd_features, "print the feature table of candles in a CSV"},
    {"predict", cmd_predict, "one prediction as the API's JSON, without a server"},
    {"backtest", cmd_backtest, "replay history through the serving path and report the calls"},
    {"models", cmd_models, "list, verify or evaluate the model repository"},
    {"keygen", cmd_keygen, "write a new admin API key to the key file (mode 0600)"},
    {"version", cmd_version, "version and build info"},
};

/* The overview: on stdout when asked for (--help), on stderr after an
 * error. */
static void usage(FILE *out)
{
    fprintf(out, "usage: predictd COMMAND [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-9s %s\n", commands[i].name, commands[i].help);
    fprintf(out, "\n`predictd COMMAND --help` describes a command; `predictd --version` "
                 "prints the version.\n");
    server_config_usage(out);
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
        printf("predictd %s (commit %s)\n", PREDICTD_VERSION, PREDICTD_COMMIT);
        return 0;
    }
    const char *name = argv[1];
    size_t i = 0, n = sizeof commands / sizeof commands[0];
    while (i < n && strcmp(commands[i].name, name) != 0)
        i++;
    if (i == n) {
        fprintf(stderr, "predictd: unknown %s '%s'\n", name[0] == '-' ? "option" : "command", name);
        usage(stderr);
        return 2;
    }
    /* train parses its own flags, including the shared ones it needs */
    if (commands[i].fn == cmd_train_adapter)
        return cmd_train(argc - 1, argv + 1);

    server_config cfg;
    char why[512] = "";
    int sub_argc = argc - 1;
    char **sub_argv = argv + 1;
    int rc = server_config_load(&cfg, &sub_argc, sub_argv, why, sizeof why);
    if (rc) {
        fprintf(stderr, "predictd %s: %s\n", name, why);
        server_config_cleanup(&cfg);
        return 2;
    }
    enum util_log_level level = !strcmp(cfg.log_level, "debug")  ? UTIL_LOG_DEBUG
                                : !strcmp(cfg.log_level, "warn")  ? UTIL_LOG_WARN
                                : !strcmp(cfg.log_level, "error") ? UTIL_LOG_ERROR
                                                                  : UTIL_LOG_INFO;
    util_log_configure(level, !strcmp(cfg.log_format, "json"));
    rc = commands[i].fn(&cfg, sub_argc, sub_argv);
    server_config_cleanup(&cfg);
    return rc;
}
