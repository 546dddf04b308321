/*
 * forwarded.c: the client address of a request, for logs and the rate
 * limit. It is the TCP peer's, unless the peer is a trusted proxy
 * (PREDICTD_TRUSTED_PROXIES: IPv4 addresses or CIDRs): then it is the
 * address the proxy put in X-Forwarded-For, read from the right and
 * skipping the hops that are trusted proxies themselves (a client may send
 * its own X-Forwarded-For; only what trusted hops appended is believed).
 * A hop that is not an IPv4 address ends the walk at the hop after it.
 *
 * It does not decide anything about authorization: admin routes depend on
 * the key, never on an address.
 *
 * Threading: the list is parsed once by api_http_start and read-only
 * afterwards; api_client_address is called by every worker thread.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/http_internal.h"

#define TRUSTED_MAX 64
#define XFF_HOPS_MAX 32

/* "a.b.c.d" or "a.b.c.d/n" (n 0..32) of length len; host bits are masked. */
static bool parse_cidr(const char *s, size_t len, struct api_cidr *out)
{
    char buf[32];
    if (len == 0 || len >= sizeof buf)
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    int bits = 32;
    char *slash = strchr(buf, '/');
    if (slash) {
        *slash = '\0';
        char *end;
        long b = strtol(slash + 1, &end, 10);
        if (slash[1] == '\0' || *end || b < 0 || b > 32 || !isdigit((unsigned char)slash[1]))
            return false;
        bits = (int)b;
    }
    struct in_addr a;
    if (inet_pton(AF_INET, buf, &a) != 1)
        return false;
    out->mask = bits == 0 ? 0 : htonl(0xffffffffu << (32 - bits));
    out->net = a.s_addr & out->mask;
    return true;
}

int api_trusted_proxies_parse(const char *list, struct api_cidr **out, size_t *n, char *why,
                              size_t whylen)
{
    *out = NULL;
    *n = 0;
    if (!list || !*list)
        return 0;
    struct api_cidr *v = calloc(TRUSTED_MAX, sizeof *v);
    if (!v)
        return PD_ENOMEM;
    size_t k = 0;
    for (const char *p = list; *p;) {
        while (*p == ',' || *p == ' ')
            p++;
        if (!*p)
            break;
        const char *e = p;
        while (*e && *e != ',' && *e != ' ')
            e++;
        if (k == TRUSTED_MAX) {
            snprintf(why, whylen, "PREDICTD_TRUSTED_PROXIES: more than %d entries", TRUSTED_MAX);
            free(v);
            return PD_EINVAL;
        }
        if (!parse_cidr(p, (size_t)(e - p), &v[k])) {
            snprintf(why, whylen,
                     "PREDICTD_TRUSTED_PROXIES: '%.*s' is not an IPv4 address or CIDR "
                     "(a.b.c.d or a.b.c.d/n)",
                     (int)(e - p > 64 ? 64 : e - p), p);
            free(v);
            return PD_EINVAL;
        }
        k++;
        p = e;
    }
    *out = v;
    *n = k;
    return 0;
}

static bool trusted(const struct api_http *h, struct in_addr a)
{
    for (size_t i = 0; i < h->ntrusted; i++)
        if ((a.s_addr & h->trusted[i].mask) == h->trusted[i].net)
            return true;
    return false;
}

void api_client_address(const struct api_http *h, const struct _u_request *req, char *out,
                        size_t len)
{
    snprintf(out, len, "unknown");
    if (!req->client_address)
        return;
    if (req->client_address->sa_family == AF_INET6) {
        /* trusted proxies are IPv4 addresses: an IPv6 peer is the client */
        const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)req->client_address;
        inet_ntop(AF_INET6, &a6->sin6_addr, out, (socklen_t)len);
        return;
    }
    if (req->client_address->sa_family != AF_INET)
        return;
    struct in_addr peer = ((const struct sockaddr_in *)req->client_address)->sin_addr;
    inet_ntop(AF_INET, &peer, out, (socklen_t)len);
    if (!h->ntrusted || !trusted(h, peer))
        return;
    const char *xff = u_map_get_case(req->map_header, "X-Forwarded-For");
    if (!xff)
        return;
    /* right to left: the nearest hop first */
    const char *end = xff + strlen(xff);
    for (int hops = 0; end > xff && hops < XFF_HOPS_MAX; hops++) {
        const char *start = end;
        while (start > xff && start[-1] != ',')
            start--;
        const char *a = start, *b = end;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        char hop[INET_ADDRSTRLEN];
        struct in_addr ia;
        if (b - a <= 0 || (size_t)(b - a) >= sizeof hop)
            return;
        memcpy(hop, a, (size_t)(b - a));
        hop[b - a] = '\0';
        if (inet_pton(AF_INET, hop, &ia) != 1)
            return; /* not an address: the hop after it is the client */
        snprintf(out, len, "%s", hop);
        if (!trusted(h, ia))
            return;
        end = start > xff ? start - 1 : xff;
    }
}
