/*
 * bodies.c: parsers of the admin routes' JSON bodies (see
 * bodies_internal.h). They check shape and ranges only; whether a series
 * or a version exists is the registry's answer, not theirs.
 *
 * Threading: no state; reentrant.
 */
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "api/bodies_internal.h"
#include "registry/registry.h"
#include "util/util.h"

/* The body as a JSON object; an empty body is an empty object. */
static json_t *object_of(const char *body, size_t len, char *why, size_t whylen)
{
    if (len == 0)
        return json_object();
    json_error_t err;
    json_t *j = json_loadb(body, len, 0, &err);
    if (!j || !json_is_object(j)) {
        snprintf(why, whylen, "body must be a JSON object%s%s", j ? "" : ": ", j ? "" : err.text);
        json_decref(j);
        return NULL;
    }
    return j;
}

int api__body_reload(const char *body, size_t len, char symbol[24], char tf[8], char *why,
                     size_t whylen)
{
    json_t *j = object_of(body, len, why, whylen);
    if (!j)
        return PD_EPARSE;
    const char *s = json_string_value(json_object_get(j, "symbol"));
    const char *t = json_string_value(json_object_get(j, "timeframe"));
    int rc = 0;
    if ((s == NULL) != (t == NULL)) {
        snprintf(why, whylen, "give both symbol and timeframe, or neither");
        rc = PD_EINVAL;
    } else if (s && ((!util_symbol_valid(s) && strcmp(s, REGISTRY_DEFAULT_SYMBOL)) ||
                     !util_tf_seconds(t))) {
        snprintf(why, whylen, "invalid symbol or timeframe");
        rc = PD_EINVAL;
    } else {
        snprintf(symbol, 24, "%s", s ? s : "");
        snprintf(tf, 8, "%s", t ? t : "");
    }
    json_decref(j);
    return rc;
}

int api__body_pin(const char *body, size_t len, uint32_t *version, char *why, size_t whylen)
{
    json_t *j = object_of(body, len, why, whylen);
    if (!j)
        return PD_EPARSE;
    json_t *jv = json_object_get(j, "version");
    json_int_t v = json_is_integer(jv) ? json_integer_value(jv) : 0;
    json_decref(j);
    if (v < 1 || v > 0x7fffffff) {
        snprintf(why, whylen, "body must be {\"version\": N} with N a positive integer");
        return PD_EINVAL;
    }
    *version = (uint32_t)v;
    return 0;
}

int api__body_label(const char *body, size_t len, char label[16], uint32_t *version, int *share,
                    char *why, size_t whylen)
{
    json_t *j = object_of(body, len, why, whylen);
    if (!j)
        return PD_EPARSE;
    const char *l = json_string_value(json_object_get(j, "label"));
    json_t *jv = json_object_get(j, "version");
    json_t *js = json_object_get(j, "canary_share");
    json_int_t v = json_is_integer(jv) ? json_integer_value(jv) : -1;
    json_int_t s = json_is_integer(js) ? json_integer_value(js) : 0;
    bool label_ok = l && (strcmp(l, "stable") == 0 || strcmp(l, "canary") == 0);
    if (label_ok && v >= 0 && v <= 0x7fffffff && s >= 0 && s <= 100) {
        snprintf(label, 16, "%s", l);
        *version = (uint32_t)v;
        *share = (int)s;
        json_decref(j);
        return 0;
    }
    json_decref(j);
    snprintf(why, whylen,
             "body must be {\"label\": \"stable\"|\"canary\", \"version\": N (0 removes), "
             "\"canary_share\": 0..100}");
    return PD_EINVAL;
}

int api__body_training(const char *body, size_t len, training_params *out, char *why, size_t whylen)
{
    training_params p;
    training_params_default(&p);
    p.promote_if_better = true;
    char bad[64] = "";
    int rc = training_params_apply_json(body, len, false, &p, bad, sizeof bad, why, whylen);
    if (rc == PD_EPARSE)
        snprintf(why, whylen,
                 "body must be a JSON object such as {\"symbols\": \"BTCUSDT\", "
                 "\"timeframe\": \"15m\"}");
    else if (rc == PD_EINVAL && bad[0])
        snprintf(why, whylen, "%s: expected a string, number, boolean or array", bad);
    if (rc == 0)
        rc = training_params_validate(&p, why, whylen);
    if (rc == 0)
        *out = p; /* a plain value: nothing to free */
    return rc;
}
