/*
 * cmd_train: the `predictd train` subcommand (training/ does the work).
 */
#ifndef PREDICTD_SERVER_CMD_TRAIN_H
#define PREDICTD_SERVER_CMD_TRAIN_H

/*
 * Runs `predictd train`. argv[0] is "train"; every flag is parsed here,
 * including --database-url and --models-dir (with their PREDICTD_* variables
 * as defaults). Prints a metrics table per model to stdout, progress and
 * errors to stderr. Returns the exit code: 0 when every run trained (a
 * version published, or not promoted under --promote-if-better), 1 when a
 * run failed, 2 for a usage error, 130 when interrupted (SIGINT/SIGTERM
 * cancel the run in progress cleanly).
 */
int cmd_train(int argc, char **argv);

#endif
