/*
 * pg_internal.h: the libpq plumbing that store/candles.c, jobs.c and
 * ledger.c share: libpq messages on one line, connecting with our
 * timeouts, classifying (and logging) a statement's result, and the
 * dedicated connection (a store__pg_link) that jobs.c's and ledger.c's
 * handles hold. Names carry a double underscore: exported for the module,
 * not public.
 *
 * candles.c keeps its own per-thread connections and retry loop (back-off,
 * outage logging, prepared statements); it uses the pieces below that are
 * not the link.
 *
 * Every function that logs takes the caller's log module (`mod`), so a
 * line still says which file's connection it is about. None logs a URL.
 */
#ifndef PREDICTD_FEATURES_PG_INTERNAL_H
#define PREDICTD_FEATURES_PG_INTERNAL_H

#include <libpq-fe.h>
#include <pthread.h>
#include <stddef.h>

/* Internal result of a check or an op: the connection is gone (libpq says
 * CONNECTION_BAD, or SQLSTATE class 08, 57P01-57P03, or 26000 "prepared
 * statement does not exist"); run again on a new connection. Never
 * returned to the module's callers. */
#define STORE__PG_LOST 1

/* store__pg_check() flag: a unique violation (23505) is PD_EBUSY,
 * logged at INFO, instead of a rejection (PD_EINVAL). */
#define STORE__PG_UNIQUE_BUSY 1u

/* Copies a libpq message (which ends in newlines) to buf on one line,
 * "unknown error" for NULL or empty; returns buf. */
const char *store__pg_one_line(const char *msg, char *buf, size_t len);

/* 0 when url parses as a conninfo string or URI; PD_EINVAL otherwise (NULL
 * and "" silently, a malformed one logged under mod without echoing it or
 * libpq's message about it, since either may hold a password). */
int store__pg_url_check(const char *mod, const char *url);

/*
 * PQconnectdbParams(kw, val, expand_dbname), then server notices go to the
 * debug log under mod. Returns the connection, or NULL with libpq's reason
 * on one line in why (nothing logged). The caller PQfinish()es it.
 */
PGconn *store__pg_connect_params(const char *mod, const char *const *kw, const char *const *val,
                                    int expand_dbname, char *why, size_t whylen);

/* TCP keepalives of a connection made by store__pg_connect(). */
enum store__pg_keepalive {
    STORE__PG_KEEPALIVE_DEFAULT, /* libpq's default (on, with the system's timers) */
    STORE__PG_KEEPALIVE_OFF,
    STORE__PG_KEEPALIVE_PROBE, /* on: first probe after 10 s idle, every 5 s, 3 probes */
};

/*
 * Connects to url (URI or key=value) with our defaults, which the URL's
 * own settings override: connect_timeout 3 s, options
 * "-c statement_timeout=5000", fallback_application_name app, keepalives
 * as ka. Returns the connection, or NULL after logging
 * "<app>: cannot connect to the database: <reason>" (WARN, under mod).
 */
PGconn *store__pg_connect(const char *mod, const char *url, const char *app,
                             enum store__pg_keepalive ka);

/*
 * Checks a result against the status wanted. Returns 0;
 * STORE__PG_LOST (not logged); PD_EBUSY for a unique violation when
 * flags has STORE__PG_UNIQUE_BUSY (INFO "<what>: <message>"); PD_EINVAL
 * when the data broke a rule or a constraint, SQLSTATE classes 22 and 23
 * (WARN "<what>: rejected by the database: <message>"); else PD_EDB (ERROR
 * "<what> failed: <message>"). Logs under mod; does not free r.
 */
int store__pg_check(const char *mod, PGconn *c, const PGresult *r, ExecStatusType want,
                       const char *what, unsigned flags);

/*
 * Runs one statement with text parameters and text results
 * (PQexecParams), then store__pg_check(). On 0, *out is the result
 * (PQclear it) when out is given, else it is cleared; on failure nothing
 * is kept.
 */
int store__pg_exec(const char *mod, PGconn *c, const char *what, const char *sql, int n,
                      const char *const *vals, ExecStatusType want, unsigned flags, PGresult **out);

/*
 * A dedicated connection shared by a handle's callers: made on first use,
 * made again once when an op finds it lost (a second failure is PD_EDB).
 * The mutex serialises its use; an op runs with it held.
 */
typedef struct store__pg_link {
    pthread_mutex_t lock;
    char *url;
    const char *mod, *app; /* log module and application name (static strings) */
    enum store__pg_keepalive ka;
    PGconn *pg; /* guarded by lock; NULL until first use or after a failure */
} store__pg_link;

/* Checks url (store__pg_url_check) and sets up *l; connects nothing.
 * 0, PD_EINVAL or PD_ENOMEM; on failure *l holds nothing to release. mod
 * and app must outlive the link. */
int store__pg_link_init(store__pg_link *l, const char *url, const char *mod, const char *app,
                           enum store__pg_keepalive ka);

/* Closes the connection and frees what init allocated. Call once, with no
 * op running. */
void store__pg_link_cleanup(store__pg_link *l);

/* An operation on a link's connection: 0, STORE__PG_LOST (run it again
 * on a new connection, so it must be safe to repeat) or a PD_* code. */
typedef int (*store__pg_op)(PGconn *c, void *arg);

/* Runs op under the link's lock, connecting first when there is no live
 * connection; when op returns STORE__PG_LOST, connects again and runs
 * it once more. Returns op's result, or PD_EDB. Thread-safe. */
int store__pg_link_run(store__pg_link *l, store__pg_op op, void *arg);

#endif
