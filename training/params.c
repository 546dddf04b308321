/*
 * params: training parameters: defaults, the one name/value setter both the
 * CLI flags and the admin API's JSON go through (so both accept and reject
 * the same things), whole-set validation and a JSON rendering (stored with
 * each job).
 *
 * training_params_from_json reads back what training_params_json wrote (a
 * job's parameters, claimed by another replica than the one that queued it).
 *
 * Not here: reading flags or the API's request bodies (server/, api/). Pure
 * and thread-safe.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "training/internal.h"

void training_params_default(training_params *p)
{
    memset(p, 0, sizeof *p);
    p->kind = TRAINING_SOFTMAX;
    p->hidden[0] = 64;
    p->hidden[1] = 32;
    p->n_hidden = 2;
    p->epochs = -1;
    p->batch = 256;
    p->learning_rate = 0;
    p->l2 = 1e-4;
    p->patience = 10;
    p->window = 200;
    training_policy_default(&p->policy);
    p->val_frac = 0.15;
    p->test_frac = 0.20;
    p->seed = 42;
    p->promote_if_better = false;
    p->publish = true;
}

int32_t training__params_epochs(const training_params *p)
{
    if (p->epochs >= 0)
        return p->epochs;
    return p->kind == TRAINING_MLP ? 60 : 200;
}

double training__params_lr(const training_params *p)
{
    if (p->learning_rate > 0)
        return p->learning_rate;
    return p->kind == TRAINING_MLP ? 0.002 : 0.01;
}

const char *training_params_target(const training_params *p)
{
    if (p->target[0])
        return p->target;
    if (p->n_symbols == 1)
        return p->symbols[0];
    return REGISTRY_DEFAULT_SYMBOL;
}

static int fail(char *why, size_t whylen, const char *fmt, const char *a, const char *b)
{
    if (why && whylen)
        snprintf(why, whylen, fmt, a, b);
    return PD_EINVAL;
}

static int parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(v))
        return PD_EINVAL;
    *out = v;
    return 0;
}

static int parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi)
        return PD_EINVAL;
    *out = v;
    return 0;
}

static int parse_bool(const char *s, bool *out)
{
    if (!strcmp(s, "true") || !strcmp(s, "1") || !strcmp(s, "yes") || !strcmp(s, "on"))
        *out = true;
    else if (!strcmp(s, "false") || !strcmp(s, "0") || !strcmp(s, "no") || !strcmp(s, "off"))
        *out = false;
    else
        return PD_EINVAL;
    return 0;
}

/* Splits a comma list into at most max items of at most len-1 chars each;
 * empty items are an error. Returns the count or -1. */
static long split_list(const char *s, char *items, size_t len, size_t max)
{
    size_t n = 0;
    const char *q = s;
    if (!*s)
        return -1;
    for (;;) {
        const char *comma = strchr(q, ',');
        size_t l = comma ? (size_t)(comma - q) : strlen(q);
        while (l && isspace((unsigned char)*q)) {
            q++;
            l--;
        }
        while (l && isspace((unsigned char)q[l - 1]))
            l--;
        if (l == 0 || l >= len || n >= max)
            return -1;
        memcpy(items + n * len, q, l);
        items[n * len + l] = '\0';
        n++;
        if (!comma)
            break;
        q = comma + 1;
    }
    return (long)n;
}

int training_params_set(training_params *p, const char *name_in, const char *v, char *why,
                        size_t whylen)
{
    char name[32];
    if (!name_in || !v || strlen(name_in) >= sizeof name)
        return fail(why, whylen, "unknown parameter '%s'%s", name_in ? name_in : "(null)", "");
    for (size_t i = 0;; i++) {
        name[i] = name_in[i] == '-' ? '_' : name_in[i];
        if (!name[i])
            break;
    }
    training_params q = *p;
    double d;
    int64_t i64;
    char items[TRAINING_MAX_FEATURES][TRAINING_SPEC_LEN];

    if (!strcmp(name, "symbols") || !strcmp(name, "symbol")) {
        long n = split_list(v, &q.symbols[0][0], TRAINING_NAME_LEN, TRAINING_MAX_SYMBOLS);
        if (n < 0)
            return fail(why, whylen,
                        "symbols: a comma-separated list of at most 64 symbols ('%s')%s", v, "");
        for (long k = 0; k < n; k++)
            if (!util_symbol_valid(q.symbols[k]))
                return fail(why, whylen, "symbols: '%s' is not a symbol (^[A-Z0-9]{2,20}$)%s",
                            q.symbols[k], "");
        q.n_symbols = (size_t)n;
    } else if (!strcmp(name, "target")) {
        if (strcmp(v, REGISTRY_DEFAULT_SYMBOL) != 0 && !util_symbol_valid(v))
            return fail(why, whylen, "target: '%s' is neither a symbol nor %s", v,
                        REGISTRY_DEFAULT_SYMBOL);
        snprintf(q.target, sizeof q.target, "%s", v);
    } else if (!strcmp(name, "timeframe")) {
        if (util_tf_seconds(v) == 0)
            return fail(why, whylen, "timeframe: '%s' is not one of %s", v, util_tf_list());
        snprintf(q.timeframe, sizeof q.timeframe, "%s", v);
    } else if (!strcmp(name, "from") || !strcmp(name, "to") || !strcmp(name, "now")) {
        int64_t t = 0;
        if (*v && util_parse_time(v, &t) != 0 && parse_i64(v, 0, INT64_MAX / 2, &t) != 0)
            return fail(why, whylen, "%s: '%s' is not an RFC 3339 time or a date", name, v);
        if (!strcmp(name, "from"))
            q.from = t;
        else if (!strcmp(name, "to"))
            q.to = t;
        else
            q.now = t;
    } else if (!strcmp(name, "kind")) {
        if (!strcmp(v, "softmax"))
            q.kind = TRAINING_SOFTMAX;
        else if (!strcmp(v, "mlp"))
            q.kind = TRAINING_MLP;
        else
            return fail(why, whylen, "kind: '%s' is not softmax or mlp%s", v, "");
    } else if (!strcmp(name, "hidden")) {
        long n = split_list(v, &items[0][0], TRAINING_SPEC_LEN, TRAINING_MAX_HIDDEN);
        if (n < 1)
            return fail(why, whylen, "hidden: 1 to 4 comma-separated layer sizes ('%s')%s", v, "");
        for (long k = 0; k < n; k++) {
            if (parse_i64(items[k], 1, 4096, &i64) != 0)
                return fail(why, whylen, "hidden: '%s' is not a size in 1..4096%s", items[k], "");
            q.hidden[k] = (uint32_t)i64;
        }
        q.n_hidden = (size_t)n;
    } else if (!strcmp(name, "epochs")) {
        if (parse_i64(v, 0, 100000, &i64) != 0)
            return fail(why, whylen, "epochs: '%s' is not in 0..100000%s", v, "");
        q.epochs = (int32_t)i64;
    } else if (!strcmp(name, "batch")) {
        if (parse_i64(v, 1, 1 << 20, &i64) != 0)
            return fail(why, whylen, "batch: '%s' is not in 1..1048576%s", v, "");
        q.batch = (uint32_t)i64;
    } else if (!strcmp(name, "learning_rate")) {
        if (parse_double(v, &d) != 0 || !(d > 0 && d <= 10))
            return fail(why, whylen, "learning_rate: '%s' is not in (0, 10]%s", v, "");
        q.learning_rate = d;
    } else if (!strcmp(name, "l2")) {
        if (parse_double(v, &d) != 0 || !(d >= 0 && d <= 100))
            return fail(why, whylen, "l2: '%s' is not in [0, 100]%s", v, "");
        q.l2 = d;
    } else if (!strcmp(name, "patience")) {
        if (parse_i64(v, 1, 100000, &i64) != 0)
            return fail(why, whylen, "patience: '%s' is not in 1..100000%s", v, "");
        q.patience = (uint32_t)i64;
    } else if (!strcmp(name, "features")) {
        if (!strcmp(v, "default")) {
            q.n_features = 0;
        } else {
            long n = split_list(v, &items[0][0], TRAINING_SPEC_LEN, TRAINING_MAX_FEATURES);
            if (n < 1)
                return fail(why, whylen,
                            "features: a comma-separated list of specs or 'default'%s%s", "", "");
            for (long k = 0; k < n; k++)
                memcpy(q.features[k], items[k], TRAINING_SPEC_LEN);
            q.n_features = (size_t)n;
        }
    } else if (!strcmp(name, "window")) {
        if (parse_i64(v, 2, 100000, &i64) != 0)
            return fail(why, whylen, "window: '%s' is not in 2..100000%s", v, "");
        q.window = (uint32_t)i64;
    } else if (!strcmp(name, "sl_atr")) {
        if (parse_double(v, &d) != 0 || !(d > 0))
            return fail(why, whylen, "sl_atr: '%s' is not a positive number%s", v, "");
        q.policy.sl_atr = d;
    } else if (!strcmp(name, "tp_r")) {
        long n = split_list(v, &items[0][0], TRAINING_SPEC_LEN, INFERENCE_NTP);
        double r[INFERENCE_NTP];
        if (n != INFERENCE_NTP)
            return fail(why, whylen, "tp_r: three comma-separated multiples ('%s')%s", v, "");
        for (int k = 0; k < INFERENCE_NTP; k++)
            if (parse_double(items[k], &r[k]) != 0 || !(r[k] > 0) || (k && r[k] < r[k - 1]))
                return fail(why, whylen, "tp_r: '%s' is not three ascending positive numbers%s", v,
                            "");
        memcpy(q.policy.tp_r, r, sizeof r);
    } else if (!strcmp(name, "horizon")) {
        if (parse_i64(v, 1, 10000, &i64) != 0)
            return fail(why, whylen, "horizon: '%s' is not in 1..10000 candles%s", v, "");
        q.policy.horizon = (uint32_t)i64;
    } else if (!strcmp(name, "min_confidence")) {
        if (parse_double(v, &d) != 0 || !(d >= 0 && d <= 1))
            return fail(why, whylen, "min_confidence: '%s' is not in [0, 1]%s", v, "");
        q.policy.min_confidence = d;
    } else if (!strcmp(name, "cost_bps")) {
        if (parse_double(v, &d) != 0 || !(d >= 0 && d < 10000))
            return fail(why, whylen, "cost_bps: '%s' is not in [0, 10000) basis points%s", v, "");
        q.policy.cost_bps = d;
    } else if (!strcmp(name, "force")) {
        bool b;
        if (parse_bool(v, &b) != 0)
            return fail(why, whylen, "force: '%s' is not true or false%s", v, "");
        q.force = b;
    } else if (!strcmp(name, "atr_period")) {
        if (parse_i64(v, 1, 1000, &i64) != 0)
            return fail(why, whylen, "atr_period: '%s' is not in 1..1000%s", v, "");
        q.policy.atr_period = (uint32_t)i64;
    } else if (!strcmp(name, "max_age_s")) {
        if (parse_i64(v, 0, INT64_MAX / 2, &i64) != 0)
            return fail(why, whylen, "max_age_s: '%s' is not a number of seconds >= 0%s", v, "");
        q.policy.max_age_s = i64;
    } else if (!strcmp(name, "val_frac") || !strcmp(name, "test_frac")) {
        if (parse_double(v, &d) != 0 || !(d > 0 && d < 0.5))
            return fail(why, whylen, "%s: '%s' is not in (0, 0.5)", name, v);
        if (name[0] == 'v')
            q.val_frac = d;
        else
            q.test_frac = d;
    } else if (!strcmp(name, "seed")) {
        char *end;
        errno = 0;
        unsigned long long s = strtoull(v, &end, 10);
        if (end == v || *end || errno || v[0] == '-')
            return fail(why, whylen, "seed: '%s' is not an unsigned integer%s", v, "");
        q.seed = s;
    } else if (!strcmp(name, "promote_if_better") || !strcmp(name, "publish")) {
        bool b;
        if (parse_bool(v, &b) != 0)
            return fail(why, whylen, "%s: '%s' is not true or false", name, v);
        if (name[0] == 'p' && name[1] == 'r')
            q.promote_if_better = b;
        else
            q.publish = b;
    } else {
        return fail(why, whylen, "unknown parameter '%s'%s", name_in, "");
    }
    *p = q;
    return 0;
}

int training__params_features(const training_params *p, features_set **out, char *why,
                              size_t whylen)
{
    const char *specs[TRAINING_MAX_FEATURES];
    const char *const *list;
    size_t n;
    if (p->n_features == 0) {
        list = features_default_specs(&n);
    } else {
        for (size_t i = 0; i < p->n_features; i++)
            specs[i] = p->features[i];
        list = specs;
        n = p->n_features;
    }
    return features_set_new(list, n, out, why, whylen);
}

int training_params_validate(const training_params *p, char *why, size_t whylen)
{
    if (p->n_symbols == 0)
        return fail(why, whylen, "no symbol given%s%s", "", "");
    for (size_t i = 0; i < p->n_symbols; i++)
        if (!util_symbol_valid(p->symbols[i]))
            return fail(why, whylen, "'%s' is not a symbol%s", p->symbols[i], "");
    if (util_tf_seconds(p->timeframe) == 0)
        return fail(why, whylen, "timeframe '%s' is not one of %s", p->timeframe, util_tf_list());
    const char *target = training_params_target(p);
    if (strcmp(target, REGISTRY_DEFAULT_SYMBOL) != 0 && !util_symbol_valid(target))
        return fail(why, whylen, "target '%s' is not a symbol%s", target, "");
    if (p->from && p->to && p->from >= p->to)
        return fail(why, whylen, "from must be before to%s%s", "", "");
    if (p->kind != TRAINING_SOFTMAX && p->kind != TRAINING_MLP)
        return fail(why, whylen, "kind must be softmax or mlp%s%s", "", "");
    if (p->kind == TRAINING_MLP && (p->n_hidden < 1 || p->n_hidden > TRAINING_MAX_HIDDEN))
        return fail(why, whylen, "an mlp needs 1 to 4 hidden layers%s%s", "", "");
    if (!(p->val_frac > 0 && p->test_frac > 0 && p->val_frac + p->test_frac < 0.8))
        return fail(why, whylen,
                    "val_frac and test_frac must be positive and leave a train slice%s%s", "", "");
    char pw[160];
    if (training__policy_check(&p->policy, pw, sizeof pw) != 0)
        return fail(why, whylen, "policy: %s%s", pw, "");
    features_set *fs = NULL;
    char fw[200];
    int frc = training__params_features(p, &fs, fw, sizeof fw);
    if (frc == PD_ENOMEM) {
        if (why && whylen)
            snprintf(why, whylen, "out of memory");
        return frc;
    }
    if (frc != 0)
        return fail(why, whylen, "features: %s%s", fw, "");
    size_t minw = features_set_min_window(fs);
    features_set_free(fs);
    if (p->window < minw) {
        char a[32], b[32];
        snprintf(a, sizeof a, "%" PRIu32, p->window);
        snprintf(b, sizeof b, "%zu", minw);
        return fail(why, whylen, "window %s is below the features' minimum of %s candles", a, b);
    }
    if (p->window < p->policy.atr_period + 1) {
        return fail(why, whylen, "window must exceed atr_period%s%s", "", "");
    }
    return 0;
}

void training_params_json(const training_params *p, util_buf *b)
{
    char t[32];
    util_buf_puts(b, "{");
    util_json_key(b, "symbols");
    util_buf_puts(b, "[");
    for (size_t i = 0; i < p->n_symbols; i++) {
        if (i)
            util_buf_puts(b, ",");
        util_json_str(b, p->symbols[i]);
    }
    util_buf_puts(b, "],");
    util_json_key(b, "target");
    util_json_str(b, training_params_target(p));
    util_buf_puts(b, ",");
    util_json_key(b, "timeframe");
    util_json_str(b, p->timeframe);
    util_buf_puts(b, ",");
    util_json_key(b, "from");
    if (p->from)
        util_json_str(b, util_rfc3339(p->from, t));
    else
        util_buf_puts(b, "null");
    util_buf_puts(b, ",");
    util_json_key(b, "to");
    if (p->to)
        util_json_str(b, util_rfc3339(p->to, t));
    else
        util_buf_puts(b, "null");
    util_buf_puts(b, ",");
    if (p->now) { /* a fixed "now" (reproducible runs) travels with the job */
        util_json_key(b, "now");
        util_json_str(b, util_rfc3339(p->now, t));
        util_buf_puts(b, ",");
    }
    util_json_key(b, "kind");
    util_json_str(b, p->kind == TRAINING_MLP ? "mlp" : "softmax");
    if (p->kind == TRAINING_MLP) {
        util_buf_puts(b, ",");
        util_json_key(b, "hidden");
        util_buf_puts(b, "[");
        for (size_t i = 0; i < p->n_hidden; i++)
            util_buf_printf(b, "%s%" PRIu32, i ? "," : "", p->hidden[i]);
        util_buf_puts(b, "]");
    }
    util_buf_printf(b, ",\"epochs\":%" PRId32 ",\"batch\":%" PRIu32 ",", training__params_epochs(p),
                    p->batch);
    util_json_key(b, "learning_rate");
    util_json_num(b, training__params_lr(p));
    util_buf_puts(b, ",");
    util_json_key(b, "l2");
    util_json_num(b, p->l2);
    util_buf_printf(b, ",\"patience\":%" PRIu32 ",", p->patience);
    util_json_key(b, "features");
    if (p->n_features == 0) {
        util_json_str(b, "default");
    } else {
        util_buf_puts(b, "[");
        for (size_t i = 0; i < p->n_features; i++) {
            if (i)
                util_buf_puts(b, ",");
            util_json_str(b, p->features[i]);
        }
        util_buf_puts(b, "]");
    }
    util_buf_printf(b, ",\"window\":%" PRIu32 ",", p->window);
    util_json_key(b, "sl_atr");
    util_json_num(b, p->policy.sl_atr);
    util_buf_puts(b, ",");
    util_json_key(b, "tp_r");
    util_buf_puts(b, "[");
    for (int k = 0; k < INFERENCE_NTP; k++) {
        if (k)
            util_buf_puts(b, ",");
        util_json_num(b, p->policy.tp_r[k]);
    }
    util_buf_printf(b, "],\"horizon\":%" PRIu32 ",", p->policy.horizon);
    util_json_key(b, "min_confidence");
    util_json_num(b, p->policy.min_confidence);
    util_buf_printf(b, ",\"atr_period\":%" PRIu32 ",\"max_age_s\":%" PRId64 ",",
                    p->policy.atr_period, p->policy.max_age_s);
    util_json_key(b, "cost_bps");
    util_json_num(b, p->policy.cost_bps);
    util_buf_printf(b, ",\"force\":%s,", p->force ? "true" : "false");
    util_json_key(b, "val_frac");
    util_json_num(b, p->val_frac);
    util_buf_puts(b, ",");
    util_json_key(b, "test_frac");
    util_json_num(b, p->test_frac);
    util_buf_printf(b, ",\"seed\":%" PRIu64 ",\"promote_if_better\":%s,\"publish\":%s}", p->seed,
                    p->promote_if_better ? "true" : "false", p->publish ? "true" : "false");
}

/* Writes a JSON scalar or an array of scalars as training_params_set reads
 * it. false for objects, nested arrays and null. */
static bool value_text(json_t *v, util_buf *out)
{
    if (json_is_string(v)) {
        util_buf_puts(out, json_string_value(v));
    } else if (json_is_integer(v)) {
        util_buf_printf(out, "%lld", (long long)json_integer_value(v));
    } else if (json_is_real(v)) {
        util_buf_printf(out, "%.17g", json_real_value(v));
    } else if (json_is_boolean(v)) {
        util_buf_puts(out, json_is_true(v) ? "true" : "false");
    } else if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e)
        {
            if (json_is_array(e) || !value_text(e, out))
                return false;
            if (i + 1 < json_array_size(v))
                util_buf_puts(out, ",");
        }
    } else {
        return false;
    }
    return true;
}

int training_params_apply_json(const char *text, size_t len, bool skip_null, training_params *p,
                               char *bad_key, size_t keylen, char *why, size_t whylen)
{
    if (!p)
        return PD_EINVAL;
    json_t *o = text && len ? json_loadb(text, len, 0, NULL) : NULL;
    if (!json_is_object(o)) {
        json_decref(o);
        return PD_EPARSE;
    }
    training_params q = *p;
    int rc = 0;
    const char *key;
    json_t *v;
    util_buf value;
    util_buf_init(&value);
    json_object_foreach(o, key, v)
    {
        if (skip_null && json_is_null(v))
            continue; /* from/to unset */
        util_buf_reset(&value);
        util_buf_puts(&value, "");
        bool scalar = value_text(v, &value);
        if (!util_buf_ok(&value)) {
            rc = PD_ENOMEM;
            break;
        }
        if (!scalar) {
            if (bad_key && keylen)
                snprintf(bad_key, keylen, "%s", key);
            rc = PD_EINVAL;
            break;
        }
        const char *name = strcmp(key, "symbol") == 0 ? "symbols" : key;
        if ((rc = training_params_set(&q, name, value.data, why, whylen)) != 0)
            break;
    }
    util_buf_cleanup(&value);
    json_decref(o);
    if (rc == 0)
        *p = q;
    return rc;
}

int training_params_from_json(const char *json, training_params *p, char *why, size_t whylen)
{
    if (!json || !p)
        return PD_EINVAL;
    training_params q;
    training_params_default(&q);
    char bad[64] = "";
    int rc = training_params_apply_json(json, strlen(json), true, &q, bad, sizeof bad, why, whylen);
    if (rc == PD_EPARSE)
        return fail(why, whylen, "parameters are not a JSON object%s%s", "", "");
    if (rc == PD_EINVAL && bad[0])
        return fail(why, whylen, "%s: not a scalar or a list of scalars%s", bad, "");
    if (rc == 0)
        *p = q;
    return rc;
}
