/*
 * test_redis_url.c: PREDICTD_REDIS_URL forms (store/redis.c): redis://
 * with %-encoded credentials, [v6] hosts, ports and databases, unix://
 * sockets, and what is refused (rediss:// without TLS in hiredis, bad
 * escapes, stray parts).
 */
#include <string.h>

#include "store/redis_internal.h"
#include "unit.h"
#include "util/util.h"

TEST(tcp_forms)
{
    store__redis_url u;
    CHECK_EQ_INT(store__redis_url_parse("redis://127.0.0.1:6380/2", &u), 0);
    CHECK_EQ_STR(u.host, "127.0.0.1");
    CHECK_EQ_INT(u.port, 6380);
    CHECK_EQ_INT(u.db, 2);
    CHECK(!u.unix_socket && !u.user && !u.password);
    store__redis_url_cleanup(&u);
    CHECK_EQ_INT(store__redis_url_parse("redis://[::1]/0", &u), 0);
    CHECK_EQ_STR(u.host, "::1");
    CHECK_EQ_INT(u.port, 6379);
    store__redis_url_cleanup(&u);
}

TEST(credentials_are_percent_decoded)
{
    store__redis_url u;
    CHECK_EQ_INT(store__redis_url_parse("redis://app%40team:p%40ss%3Aw%2Frd%25@cache:7000/1", &u),
                 0);
    CHECK_EQ_STR(u.user, "app@team");
    CHECK_EQ_STR(u.password, "p@ss:w/rd%");
    CHECK_EQ_STR(u.host, "cache");
    CHECK_EQ_INT(u.port, 7000);
    store__redis_url_cleanup(&u);
    CHECK_EQ_INT(store__redis_url_parse("redis://:secret@h", &u), 0);
    CHECK(u.user == NULL);
    CHECK_EQ_STR(u.password, "secret");
    store__redis_url_cleanup(&u);
    CHECK_EQ_INT(store__redis_url_parse("redis://:bad%zz@h", &u), PD_EINVAL);
    CHECK_EQ_INT(store__redis_url_parse("redis://:bad%00@h", &u), PD_EINVAL);
    CHECK_EQ_INT(store__redis_url_parse("redis://:bad%4@h", &u), PD_EINVAL);
}

TEST(unix_sockets)
{
    store__redis_url u;
    CHECK_EQ_INT(store__redis_url_parse("unix:///run/redis/redis.sock", &u), 0);
    CHECK(u.unix_socket);
    CHECK_EQ_STR(u.host, "/run/redis/redis.sock");
    CHECK_EQ_INT(u.db, 0);
    store__redis_url_cleanup(&u);
    CHECK_EQ_INT(store__redis_url_parse("unix://:pw%21@/tmp/r.sock?db=3", &u), 0);
    CHECK_EQ_STR(u.host, "/tmp/r.sock");
    CHECK_EQ_STR(u.password, "pw!");
    CHECK_EQ_INT(u.db, 3);
    store__redis_url_cleanup(&u);
    static const char *const bad[] = {"unix://",
                                      "unix://relative.sock",
                                      "unix://host/x.sock",
                                      "unix:///x.sock?db=",
                                      "unix:///x.sock?db=-1",
                                      "unix:///x.sock?foo=1",
                                      "unix:///x.sock#frag"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_EQ_INT(store__redis_url_parse(bad[i], &u), PD_EINVAL);
    char longpath[200] = "unix:///";
    memset(longpath + 8, 'a', 150);
    CHECK_EQ_INT(store__redis_url_parse(longpath, &u), PD_EINVAL);
}

TEST(refused_forms)
{
    store__redis_url u;
    static const char *const bad[] = {"rediss://h:6380", "http://h",        "redis://",
                                      "redis://h:0",     "redis://h:99999", "redis://user@h",
                                      "redis://h/x",     "redis://[::1",    "redis://h/2/3"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_EQ_INT(store__redis_url_parse(bad[i], &u), PD_EINVAL);
}

int main(void)
{
    RUN(tcp_forms);
    RUN(credentials_are_percent_decoded);
    RUN(unix_sockets);
    RUN(refused_forms);
    return unit_report();
}
