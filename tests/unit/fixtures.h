/*
 * fixtures.h: what several unit-test files share: the test database (a
 * libpq connection for checks behind a module's back, SQL helpers), the
 * migrations directory, and temporary directories under $TMPDIR (tests/run
 * points it into a directory it removes, so a test that fails before its
 * clean-up leaves nothing behind).
 *
 * Include after unit.h. Every function is static: each test binary has its
 * own copy; the returned static buffers are per process (each test runs in
 * a process of its own, see unit.h).
 */
#ifndef PREDICTD_UNIT_FIXTURES_H
#define PREDICTD_UNIT_FIXTURES_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UNIT_DB_ENV "PREDICTD_TEST_DATABASE_URL"
#define UNIT_REDIS_ENV "PREDICTD_TEST_REDIS_URL"

/* The test database's URL (tests/run: a fresh database per file), or NULL. */
static inline const char *unit_db_url(void)
{
    return getenv(UNIT_DB_ENV);
}

static inline const char *unit_redis_url(void)
{
    return getenv(UNIT_REDIS_ENV);
}

/* db/ of the checkout (PREDICTD_ROOT, else the current directory). */
static inline const char *unit_migrations_dir(void)
{
    static char dir[1024];
    const char *root = getenv("PREDICTD_ROOT");
    snprintf(dir, sizeof dir, "%s/db", root && *root ? root : ".");
    return dir;
}

/* A connection to the test database, or NULL (the reason printed). The
 * caller PQfinish()es it. */
static inline PGconn *unit_db_admin(void)
{
    PGconn *c = PQconnectdb(unit_db_url() ? unit_db_url() : "");
    if (PQstatus(c) != CONNECTION_OK) {
        printf("  admin connection: %s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

/* Runs sql; false (the error printed) unless it succeeded. */
static inline bool unit_sql_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
        printf("  %s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
    return ok;
}

/* The single value of a one-row query as an integer; -1 (printed) otherwise. */
static inline long long unit_sql_int(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    long long v = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    else
        printf("  %s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
    return v;
}

/* The first column of the first row as text ("" when none); static buffer. */
static inline const char *unit_sql_text(PGconn *c, const char *sql)
{
    static char buf[512];
    buf[0] = '\0';
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) >= 1)
        snprintf(buf, sizeof buf, "%s", PQgetvalue(r, 0, 0));
    else if (PQresultStatus(r) != PGRES_TUPLES_OK)
        printf("  %s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
    return buf;
}

/* Creates a new directory $TMPDIR/PREFIX-XXXXXX (/tmp without TMPDIR) and
 * writes its path to out; returns out, or NULL. */
static inline char *unit_tmpdir(char *out, size_t n, const char *prefix)
{
    const char *t = getenv("TMPDIR");
    if (snprintf(out, n, "%s/%s-XXXXXX", t && *t ? t : "/tmp", prefix) >= (int)n)
        return NULL;
    return mkdtemp(out);
}

#endif
