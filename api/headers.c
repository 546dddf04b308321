/*
 * headers.c: the request headers the dispatcher interprets itself, parsed
 * by pure functions (see wire_internal.h): Origin against
 * PREDICTD_CORS_ORIGINS, X-Request-Id, Content-Length. It does not read
 * the request or decide the answer (http.c does).
 *
 * Threading: no state; reentrant.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "api/wire_internal.h"

bool api__origin_allowed(const char *list, const char *origin)
{
    if (!list || !origin)
        return false;
    size_t ol = strlen(origin);
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > p && t[-1] == ' ')
            t--;
        if ((size_t)(t - p) == 1 && *p == '*')
            return true;
        if (t > p && (size_t)(t - p) == ol && strncmp(p, origin, ol) == 0)
            return true;
        p = e;
    }
    return false;
}

bool api__request_id_ok(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    return n > 0 && n < 64 &&
           strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:") == n;
}

bool api__content_length_over(const char *value, unsigned long long max)
{
    errno = 0;
    char *end;
    unsigned long long n = strtoull(value, &end, 10);
    return errno == ERANGE || n > max;
}
