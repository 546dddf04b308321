/*
 * commands.h: the subcommands of the predictd binary. Each takes the
 * arguments after its name (argv[0] is the subcommand) with the common
 * configuration flags already removed into cfg, prints errors to stderr and
 * returns the process exit code (0 success, 1 failure, 2 usage).
 */
#ifndef PREDICTD_SERVER_COMMANDS_H
#define PREDICTD_SERVER_COMMANDS_H

#include "server/config.h"

int cmd_serve(server_config *cfg, int argc, char **argv);
int cmd_migrate(server_config *cfg, int argc, char **argv);
int cmd_seed(server_config *cfg, int argc, char **argv);
int cmd_import(server_config *cfg, int argc, char **argv);
int cmd_features(server_config *cfg, int argc, char **argv);
int cmd_predict(server_config *cfg, int argc, char **argv);
int cmd_backtest(server_config *cfg, int argc, char **argv);
int cmd_models(server_config *cfg, int argc, char **argv);
int cmd_keygen(server_config *cfg, int argc, char **argv);
int cmd_version(server_config *cfg, int argc, char **argv);
int cmd_ingest(server_config *cfg, int argc, char **argv);
int cmd_fetch(server_config *cfg, int argc, char **argv);

/* The market feed inside serve (cmd_feed.c). server_feed_start starts a
 * feed_leader when cfg->feed is set (*out NULL when not); 0 or the code of
 * feed_leader_start (logged). server_feed_metrics is api/'s metrics hook
 * over a feed_leader (arg). */
struct feed_leader;
struct util_buf;
int server_feed_start(const server_config *cfg, struct feed_leader **out);
void server_feed_metrics(void *arg, struct util_buf *out);

/* True when argv holds -h or --help. */
int cmd_wants_help(int argc, char **argv);
/* Where a subcommand's usage goes: stdout when --help or -h was asked for;
 * otherwise stderr, after a line naming argv[bad] (an unknown option or an
 * unexpected argument) when bad is a valid index (0: name nothing). */
FILE *cmd_usage_out(const char *cmd, int argc, char **argv, int bad);

#endif
