/*
 * util's pure edges no other test reached: the text log's one-event-one-line
 * rule (a newline or DEL inside a message cannot forge a second line), the
 * JSON log's escaping of the same message, the log level filter, the
 * request id prefix; error codes of positive numbers; RFC 3339 of times
 * gmtime cannot represent and of year 0; dates before year 1. No database.
 */
#include <fcntl.h>

#include "unit.h"
#include "util/util.h"

/* Runs fn with stderr sent to a pipe; returns what it wrote (caller frees). */
static char *captured_stderr(void (*fn)(void))
{
    int p[2];
    if (pipe(p) != 0)
        return NULL;
    int saved = dup(STDERR_FILENO);
    dup2(p[1], STDERR_FILENO);
    close(p[1]);
    fn();
    dup2(saved, STDERR_FILENO);
    close(saved);
    char *out = calloc(1, 65536);
    size_t n = 0;
    ssize_t r;
    while (out && n < 65535 && (r = read(p[0], out + n, 65535 - n)) > 0)
        n += (size_t)r;
    close(p[0]);
    return out;
}

static void log_text_forgery(void)
{
    util_log_configure(UTIL_LOG_INFO, false);
    LOG_WARN("feed", "bad line: %s", "x\n2026-01-01 error forged\x7f!");
    LOG_DEBUG("feed", "filtered out"); /* below the level: not written */
    util_log_set_request_id("req-42");
    LOG_ERROR("api", "with an id");
    util_log_set_request_id(NULL);
}

TEST(test_text_log_keeps_one_event_on_one_line)
{
    char *out = captured_stderr(log_text_forgery);
    CHECK(out != NULL);
    if (!out)
        return;
    /* two events (the debug one is below the level), two lines */
    size_t lines = 0;
    for (char *p = out; *p; p++)
        lines += *p == '\n';
    CHECK_EQ_INT(lines, 2);
    CHECK(strstr(out, "warn  feed      bad line: x 2026-01-01 error forged !\n") != NULL);
    CHECK(strstr(out, "filtered out") == NULL);
    CHECK(strstr(out, "error api       [req-42] with an id\n") != NULL);
    free(out);
}

static void log_json_escapes(void)
{
    util_log_configure(UTIL_LOG_DEBUG, true);
    util_log_write(UTIL_LOG_DEBUG, "store", "quote \" and\nnewline");
}

TEST(test_json_log_escapes_the_message)
{
    char *out = captured_stderr(log_json_escapes);
    CHECK(out != NULL);
    if (!out)
        return;
    CHECK(strstr(out, "\"msg\":\"quote \\\" and\\nnewline\"}\n") != NULL);
    CHECK(strstr(out, "\"module\":\"store\"") != NULL);
    size_t lines = 0;
    for (char *p = out; *p; p++)
        lines += *p == '\n';
    CHECK_EQ_INT(lines, 1);
    CHECK(util_log_enabled(UTIL_LOG_DEBUG));
    util_log_configure(UTIL_LOG_ERROR, true);
    CHECK(!util_log_enabled(UTIL_LOG_WARN));
    CHECK(util_log_enabled(UTIL_LOG_ERROR));
    free(out);
}

TEST(test_error_codes_of_any_number)
{
    /* a positive number is no PD_* code: internal, not an out-of-bounds read */
    CHECK_EQ_STR(util_err_code(5), "internal_error");
    CHECK_EQ_STR(util_err_code(-PD_ERR_COUNT_), "internal_error");
    CHECK_EQ_INT(util_err_status(7), 500);
    CHECK(util_strerror(3) != NULL);
    CHECK(util_strerror(-PD_ERR_COUNT_) != NULL);
}

TEST(test_times_at_the_edges)
{
    char buf[32];
    /* beyond what gmtime represents: the epoch, never garbage */
    CHECK_EQ_STR(util_rfc3339(INT64_MAX, buf), "1970-01-01T00:00:00Z");
    CHECK_EQ_STR(util_rfc3339(-1, buf), "1969-12-31T23:59:59Z");
    /* year 0 (proleptic Gregorian, a leap year) and its round trip */
    int64_t t = 0;
    CHECK_EQ_INT(util_parse_time("0000-03-01T00:00:00Z", &t), 0);
    CHECK_EQ_INT(t, INT64_C(-62162035200));
    CHECK_EQ_INT(util_parse_time("0000-02-29T00:00:00Z", &t), 0);
    CHECK_EQ_INT(t, INT64_C(-62162121600));
    CHECK_EQ_INT(util_parse_time("0000-01-01", &t), 0);
    CHECK_EQ_INT(t, INT64_C(-62167219200));
}

int main(void)
{
    RUN(test_text_log_keeps_one_event_on_one_line);
    RUN(test_json_log_escapes_the_message);
    RUN(test_error_codes_of_any_number);
    RUN(test_times_at_the_edges);
    return unit_report();
}
