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
int cmd_models(server_config *cfg, int argc, char **argv);
int cmd_keygen(server_config *cfg, int argc, char **argv);
int cmd_version(server_config *cfg, int argc, char **argv);

/* True when argv holds -h or --help. */
int cmd_wants_help(int argc, char **argv);
/* Where a subcommand's usage goes: stdout when --help or -h was asked for;
 * otherwise stderr, after a line naming argv[bad] (an unknown option or an
 * unexpected argument) when bad is a valid index (0: name nothing). */
FILE *cmd_usage_out(const char *cmd, int argc, char **argv, int bad);

#endif
