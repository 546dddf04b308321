/* Unit tests of training parameters: every name training_params_set knows,
 * with a good value (the field it lands in, checked) and a bad one (refused
 * with a reason, the set left as it was); the whole-set checks of
 * training_params_validate one by one; the JSON a job shows, for the fields
 * that only appear when set. Pure: no database. */
#include "tests/unit/unit.h"
#include "training/training.h"
#include "util/util.h"

#include <jansson.h>

static void base(training_params *p)
{
    training_params_default(p);
    CHECK_EQ_INT(training_params_set(p, "symbols", "BTCUSDT", NULL, 0), 0);
    CHECK_EQ_INT(training_params_set(p, "timeframe", "1h", NULL, 0), 0);
}

/* one good value per name: each lands in its own field */
TEST(test_each_name_sets_its_field)
{
    training_params p;
    base(&p);
    char why[256] = "";
    CHECK_EQ_INT(training_params_set(&p, "batch", "64", why, sizeof why), 0);
    CHECK_EQ_INT(p.batch, 64);
    CHECK_EQ_INT(training_params_set(&p, "learning-rate", "0.05", why, sizeof why), 0);
    CHECK_NEAR(p.learning_rate, 0.05, 1e-15);
    CHECK_EQ_INT(training_params_set(&p, "l2", "0", why, sizeof why), 0);
    CHECK_EQ_INT(p.l2 == 0.0, 1);
    CHECK_EQ_INT(training_params_set(&p, "patience", "3", why, sizeof why), 0);
    CHECK_EQ_INT(p.patience, 3);
    CHECK_EQ_INT(training_params_set(&p, "min_confidence", "0.6", why, sizeof why), 0);
    CHECK_NEAR(p.policy.min_confidence, 0.6, 1e-15);
    CHECK_EQ_INT(training_params_set(&p, "cost_bps", "25", why, sizeof why), 0);
    CHECK_NEAR(p.policy.cost_bps, 25, 1e-15);
    CHECK_EQ_INT(training_params_set(&p, "force", "yes", why, sizeof why), 0);
    CHECK(p.force);
    CHECK_EQ_INT(training_params_set(&p, "force", "off", why, sizeof why), 0);
    CHECK(!p.force);
    CHECK_EQ_INT(training_params_set(&p, "atr_period", "10", why, sizeof why), 0);
    CHECK_EQ_INT(p.policy.atr_period, 10);
    CHECK_EQ_INT(training_params_set(&p, "max_age_s", "3600", why, sizeof why), 0);
    CHECK_EQ_INT(p.policy.max_age_s, 3600);
    CHECK_EQ_INT(training_params_set(&p, "val_frac", "0.1", why, sizeof why), 0);
    CHECK_NEAR(p.val_frac, 0.1, 1e-15);
    CHECK_EQ_INT(training_params_set(&p, "test-frac", "0.25", why, sizeof why), 0);
    CHECK_NEAR(p.test_frac, 0.25, 1e-15);
    CHECK_NEAR(p.val_frac, 0.1, 1e-15); /* the other one untouched */
    CHECK_EQ_INT(training_params_set(&p, "publish", "0", why, sizeof why), 0);
    CHECK(!p.publish);
    CHECK_EQ_INT(training_params_set(&p, "publish", "on", why, sizeof why), 0);
    CHECK(p.publish);
    CHECK_EQ_INT(training_params_set(&p, "promote_if_better", "no", why, sizeof why), 0);
    CHECK(!p.promote_if_better);
    CHECK(p.publish);
    CHECK_EQ_INT(training_params_set(&p, "kind", "mlp", why, sizeof why), 0);
    CHECK_EQ_INT(training_params_set(&p, "kind", "softmax", why, sizeof why), 0);
    CHECK_EQ_INT(p.kind, TRAINING_SOFTMAX);
    CHECK_EQ_INT(training_params_set(&p, "now", "2024-03-01T00:00:00Z", why, sizeof why), 0);
    CHECK_EQ_INT(p.now, 1709251200);
    CHECK_EQ_INT(training_params_set(&p, "now", "1709251260", why, sizeof why), 0);
    CHECK_EQ_INT(p.now, 1709251260);
    CHECK_EQ_INT(training_params_set(&p, "from", "", why, sizeof why), 0);
    CHECK_EQ_INT(p.from, 0);
    CHECK_EQ_INT(training_params_set(&p, "target", "_default", why, sizeof why), 0);
    CHECK_EQ_STR(training_params_target(&p), "_default");
    CHECK_EQ_INT(training_params_set(&p, "target", "ETHUSDT", why, sizeof why), 0);
    CHECK_EQ_STR(training_params_target(&p), "ETHUSDT");
    /* spaces around list items are trimmed */
    CHECK_EQ_INT(training_params_set(&p, "symbols", " BTCUSDT , ETHUSDT ", why, sizeof why), 0);
    CHECK_EQ_INT(p.n_symbols, 2);
    CHECK_EQ_STR(p.symbols[1], "ETHUSDT");
    CHECK_EQ_INT(training_params_set(&p, "seed", "18446744073709551615", why, sizeof why), 0);
    CHECK(p.seed == UINT64_MAX);
    CHECK_EQ_INT(training_params_validate(&p, why, sizeof why), 0);
}

/* a bad value for each: PD_EINVAL, a reason naming the parameter, p intact */
TEST(test_bad_values_are_refused_and_named)
{
    training_params p;
    base(&p);
    training_params q = p;
    const char *bad[][3] = {
        {"batch", "0", "batch"},
        {"batch", "2000000", "batch"},
        {"learning_rate", "0", "learning_rate"},
        {"learning_rate", "11", "learning_rate"},
        {"learning_rate", "nan", "learning_rate"},
        {"learning_rate", "1e999", "learning_rate"},
        {"l2", "-0.1", "l2"},
        {"l2", "abc", "l2"},
        {"patience", "0", "patience"},
        {"cost_bps", "10000", "cost_bps"},
        {"cost_bps", "-1", "cost_bps"},
        {"force", "maybe", "force"},
        {"atr_period", "0", "atr_period"},
        {"atr_period", "1001", "atr_period"},
        {"max_age_s", "-5", "max_age_s"},
        {"test_frac", "0.5", "test_frac"},
        {"test_frac", "0", "test_frac"},
        {"min_confidence", "-0.1", "min_confidence"},
        {"hidden", "1,2,3,4,5", "hidden"},
        {"hidden", "5000", "hidden"},
        {"tp_r", "1,2,x", "tp_r"},
        {"tp_r", "0,1,2", "tp_r"},
        {"features", "", "features"},
        {"features", "rsi:14,,macd", "features"},
        {"window", "1", "window"},
        {"epochs", "-1", "epochs"},
        {"epochs", "100001", "epochs"},
        {"seed", "12x", "seed"},
        {"seed", "", "seed"},
        {"promote_if_better", "2", "promote_if_better"},
        {"symbols", "", "symbols"},
        {"target", "btc", "target"},
        {"to", "2024-02-30x", "to"},
        {"this_name_is_far_too_long_for_any_parameter", "1", "unknown parameter"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char why[256] = "";
        int rc = training_params_set(&p, bad[i][0], bad[i][1], why, sizeof why);
        if (rc != PD_EINVAL || !strstr(why, bad[i][2]))
            UNIT_FAIL_("set %s=%s: rc %d why '%s'", bad[i][0], bad[i][1], rc, why);
    }
    CHECK(memcmp(&p, &q, sizeof p) == 0);
    /* NULL name or value, and no room for a reason: still refused, no crash */
    CHECK_EQ_INT(training_params_set(&p, NULL, "1", NULL, 0), PD_EINVAL);
    CHECK_EQ_INT(training_params_set(&p, "batch", NULL, NULL, 0), PD_EINVAL);
    CHECK_EQ_INT(training_params_set(&p, "batch", "0", NULL, 0), PD_EINVAL);
    /* 65 symbols is one too many */
    char many[65 * 4 + 1] = "";
    for (int i = 0; i < 65; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "%sS%02d", i ? "," : "", i);
    CHECK_EQ_INT(training_params_set(&p, "symbols", many, NULL, 0), PD_EINVAL);
    CHECK(memcmp(&p, &q, sizeof p) == 0);
}

/* each whole-set rule on its own, with the reason it gives */
TEST(test_validate_rules)
{
    char why[256];
    training_params p;
    base(&p);
    strcpy(p.symbols[0], "bad");
    CHECK_EQ_INT(training_params_validate(&p, why, sizeof why), PD_EINVAL);
    CHECK(strstr(why, "not a symbol") != NULL);

    base(&p);
    strcpy(p.timeframe, "2h");
    CHECK_EQ_INT(training_params_validate(&p, why, sizeof why), PD_EINVAL);
    CHECK(strstr(why, "timeframe") != NULL);

    base(&p);
    strcpy(p.target, "x");
    CHECK_EQ_INT(training_params_validate(&p, why, sizeof why), PD_EINVAL);
    CHECK(strstr(why, "target") != NULL);

    base(&p);
    p.kind = 7;
    CHECK_EQ_INT(training_params_validate(&p, why, sizeof why), PD_EINVAL);
    CHECK(strstr(why, "kind") != NULL);

    base(&p);
    p.kind = TRAINING_MLP;
    p.n_hidden = 0;
    CHECK_EQ_INT(training_params_validate(&p, why, sizeof why), PD_EINVAL);
    CHECK(strstr(why, "hidden") != NULL);

    base(&p);
    p.val_frac = 0.45;
    p.test_frac = 0.45;
    CHECK_EQ_INT(training_params_validate(&p, why, sizeof why), PD_EINVAL);
    CHECK(strstr(why, "train slice") != NULL);

    base(&p);
    p.policy.sl_atr = 0;
    CHECK_EQ_INT(training_params_validate(&p, why, sizeof why), PD_EINVAL);
    CHECK(strncmp(why, "policy:", 7) == 0);

    /* a window the features accept but too short for the ATR */
    base(&p);
    CHECK_EQ_INT(training_params_set(&p, "features", "ret:1", why, sizeof why), 0);
    CHECK_EQ_INT(training_params_set(&p, "atr_period", "50", why, sizeof why), 0);
    CHECK_EQ_INT(training_params_set(&p, "window", "20", why, sizeof why), 0);
    CHECK_EQ_INT(training_params_validate(&p, why, sizeof why), PD_EINVAL);
    CHECK(strstr(why, "atr_period") != NULL);
    CHECK_EQ_INT(training_params_set(&p, "window", "51", why, sizeof why), 0);
    CHECK_EQ_INT(training_params_validate(&p, why, sizeof why), 0);
}

/* the JSON shows from/to as times, several symbols, a feature list */
TEST(test_json_of_a_full_set)
{
    training_params p;
    base(&p);
    CHECK_EQ_INT(training_params_set(&p, "symbols", "BTCUSDT,ETHUSDT", NULL, 0), 0);
    CHECK_EQ_INT(training_params_set(&p, "from", "2024-01-01", NULL, 0), 0);
    CHECK_EQ_INT(training_params_set(&p, "to", "2024-02-01T12:00:00Z", NULL, 0), 0);
    CHECK_EQ_INT(training_params_set(&p, "features", "rsi:14,ret:1", NULL, 0), 0);
    CHECK_EQ_INT(training_params_set(&p, "learning_rate", "0.5", NULL, 0), 0);
    util_buf b;
    util_buf_init(&b);
    training_params_json(&p, &b);
    CHECK(util_buf_ok(&b));
    json_error_t err;
    json_t *j = json_loads(b.data, 0, &err);
    CHECK(j != NULL);
    if (j) {
        CHECK_EQ_INT(json_array_size(json_object_get(j, "symbols")), 2);
        CHECK_EQ_STR(json_string_value(json_array_get(json_object_get(j, "symbols"), 1)),
                     "ETHUSDT");
        CHECK_EQ_STR(json_string_value(json_object_get(j, "target")), "_default");
        CHECK_EQ_STR(json_string_value(json_object_get(j, "from")), "2024-01-01T00:00:00Z");
        CHECK_EQ_STR(json_string_value(json_object_get(j, "to")), "2024-02-01T12:00:00Z");
        CHECK_EQ_STR(json_string_value(json_array_get(json_object_get(j, "features"), 1)), "ret:1");
        CHECK_NEAR(json_number_value(json_object_get(j, "learning_rate")), 0.5, 1e-15);
        CHECK(json_object_get(j, "hidden") == NULL); /* softmax has none */
        json_decref(j);
    }
    util_buf_cleanup(&b);
}

/* The one JSON reader of job bodies and stored parameters: what it sets,
 * what it refuses, and that a refusal leaves the set as it was. */
TEST(test_apply_json_sets_refuses_and_keeps)
{
    training_params p;
    training_params_default(&p);
    char bad[64] = "", why[256] = "";
    const char *ok = "{\"symbol\": \"BTCUSDT\", \"timeframe\": \"15m\", \"epochs\": 7,"
                     " \"tp_r\": [1, 1.5, 2], \"from\": null}";
    CHECK_EQ_INT(training_params_apply_json(ok, strlen(ok), true, &p, bad, sizeof bad, why,
                                            sizeof why),
                 0);
    CHECK_EQ_INT((int)p.n_symbols, 1);
    CHECK_EQ_STR(p.symbols[0], "BTCUSDT"); /* "symbol" is read as "symbols" */
    CHECK_EQ_STR(p.timeframe, "15m");
    CHECK_EQ_INT(p.epochs, 7);
    CHECK_NEAR(p.policy.tp_r[1], 1.5, 0);

    training_params before = p;
    /* a null is refused unless skipped, and names its key */
    CHECK_EQ_INT(training_params_apply_json(ok, strlen(ok), false, &p, bad, sizeof bad, why,
                                            sizeof why),
                 PD_EINVAL);
    CHECK_EQ_STR(bad, "from");
    const char *nested = "{\"epochs\": 9, \"kind\": {\"a\": 1}}";
    bad[0] = '\0';
    CHECK_EQ_INT(training_params_apply_json(nested, strlen(nested), true, &p, bad, sizeof bad,
                                            why, sizeof why),
                 PD_EINVAL);
    CHECK_EQ_STR(bad, "kind");
    const char *refused = "{\"epochs\": \"many\"}";
    bad[0] = '\0';
    CHECK_EQ_INT(training_params_apply_json(refused, strlen(refused), true, &p, bad, sizeof bad,
                                            why, sizeof why),
                 PD_EINVAL);
    CHECK_EQ_STR(bad, "");
    CHECK(strstr(why, "epochs") != NULL);
    CHECK_EQ_INT(training_params_apply_json("[1, 2]", 6, true, &p, bad, sizeof bad, why,
                                            sizeof why),
                 PD_EPARSE);
    CHECK_EQ_INT(training_params_apply_json("not json", 8, true, &p, bad, sizeof bad, why,
                                            sizeof why),
                 PD_EPARSE);
    CHECK_EQ_INT(training_params_apply_json(NULL, 0, true, &p, bad, sizeof bad, why, sizeof why),
                 PD_EPARSE);
    /* nothing of the refused objects was kept (epochs 9 came before "kind") */
    CHECK_EQ_INT(p.epochs, before.epochs);
    CHECK(memcmp(&p, &before, sizeof p) == 0);
}

/* Each JSON value kind as the body of a job carries it: booleans, reals
 * with all their digits, lists of scalars; a list holding a list, an
 * object or a null is refused with its key; the key/why buffers may be
 * absent. */
TEST(test_apply_json_value_kinds)
{
    training_params p;
    training_params_default(&p);
    char bad[64] = "", why[256] = "";
    const char *ok = "{\"symbols\": [\"BTCUSDT\", \"ETHUSDT\"], \"force\": true,"
                     " \"publish\": false, \"promote_if_better\": true,"
                     " \"learning_rate\": 0.1234567890123, \"tp_r\": [1, 2.5, 4]}";
    CHECK_EQ_INT(training_params_apply_json(ok, strlen(ok), false, &p, bad, sizeof bad, why,
                                            sizeof why),
                 0);
    CHECK_EQ_INT((int)p.n_symbols, 2);
    CHECK_EQ_STR(p.symbols[1], "ETHUSDT");
    CHECK(p.force);
    CHECK(!p.publish);
    CHECK(p.promote_if_better);
    CHECK(p.learning_rate == 0.1234567890123); /* %.17g: not one bit lost */
    CHECK(p.policy.tp_r[1] == 2.5);
    CHECK(p.policy.tp_r[2] == 4);
    /* the reverse booleans land in the same two fields */
    const char *flip = "{\"publish\": true, \"promote_if_better\": false}";
    CHECK_EQ_INT(training_params_apply_json(flip, strlen(flip), false, &p, bad, sizeof bad, why,
                                            sizeof why),
                 0);
    CHECK(p.publish);
    CHECK(!p.promote_if_better);

    training_params before = p;
    static const struct {
        const char *json, *key;
    } refused[] = {
        {"{\"symbols\": [[\"BTCUSDT\"]]}", "symbols"},
        {"{\"symbols\": [\"BTCUSDT\", {\"a\": 1}]}", "symbols"},
        {"{\"tp_r\": [1, null, 3]}", "tp_r"},
        {"{\"epochs\": 3, \"seed\": {}}", "seed"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        bad[0] = '\0';
        int rc = training_params_apply_json(refused[i].json, strlen(refused[i].json), true, &p,
                                            bad, sizeof bad, why, sizeof why);
        if (rc != PD_EINVAL || strcmp(bad, refused[i].key) != 0)
            UNIT_FAIL_("%s: rc %d key '%s'", refused[i].json, rc, bad);
        /* without buffers: the same refusal */
        rc = training_params_apply_json(refused[i].json, strlen(refused[i].json), true, &p, NULL,
                                        0, NULL, 0);
        if (rc != PD_EINVAL)
            UNIT_FAIL_("%s (no buffers): rc %d", refused[i].json, rc);
    }
    CHECK(memcmp(&p, &before, sizeof p) == 0);
    CHECK_EQ_INT(training_params_apply_json(ok, strlen(ok), false, NULL, bad, sizeof bad, why,
                                            sizeof why),
                 PD_EINVAL);
    /* a refused value with no why buffer */
    const char *word = "{\"force\": \"maybe\"}";
    CHECK_EQ_INT(training_params_apply_json(word, strlen(word), true, &p, NULL, 0, NULL, 0),
                 PD_EINVAL);
    CHECK_EQ_INT(p.force, before.force);
}

/* The stored-parameters reader: defaults, then the object; each refusal
 * with its message. */
TEST(test_from_json_messages)
{
    training_params p;
    char why[256] = "";
    CHECK_EQ_INT(training_params_from_json("{\"symbols\": \"BTCUSDT\", \"timeframe\": \"4h\","
                                           " \"from\": null}",
                                           &p, why, sizeof why),
                 0);
    CHECK_EQ_STR(p.symbols[0], "BTCUSDT");
    CHECK_EQ_STR(p.timeframe, "4h");
    CHECK_EQ_INT(p.from, 0);
    training_params q = p;
    CHECK_EQ_INT(training_params_from_json("[]", &q, why, sizeof why), PD_EINVAL);
    CHECK_EQ_STR(why, "parameters are not a JSON object");
    CHECK_EQ_INT(training_params_from_json("{\"kind\": [[1]]}", &q, why, sizeof why), PD_EINVAL);
    CHECK_EQ_STR(why, "kind: not a scalar or a list of scalars");
    CHECK_EQ_INT(training_params_from_json("{\"kind\": \"forest\"}", &q, why, sizeof why),
                 PD_EINVAL);
    CHECK(strstr(why, "kind") != NULL);
    CHECK(memcmp(&p, &q, sizeof p) == 0); /* untouched by every refusal */
    CHECK_EQ_INT(training_params_from_json(NULL, &q, why, sizeof why), PD_EINVAL);
    CHECK_EQ_INT(training_params_from_json("{}", NULL, why, sizeof why), PD_EINVAL);
}

/* The whole-set checks at the edges the first test does not reach: too
 * many hidden layers, a zero validation or test slice, no why buffer. */
TEST(test_validate_edges)
{
    char why[256];
    training_params p;
    base(&p);
    p.kind = TRAINING_MLP;
    p.n_hidden = TRAINING_MAX_HIDDEN;
    for (size_t i = 0; i < TRAINING_MAX_HIDDEN; i++)
        p.hidden[i] = 8;
    CHECK_EQ_INT(training_params_validate(&p, why, sizeof why), 0);
    p.n_hidden = TRAINING_MAX_HIDDEN + 1;
    CHECK_EQ_INT(training_params_validate(&p, why, sizeof why), PD_EINVAL);
    CHECK_EQ_STR(why, "an mlp needs 1 to 4 hidden layers");
    CHECK_EQ_INT(training_params_validate(&p, NULL, 0), PD_EINVAL);

    base(&p);
    p.val_frac = 0;
    CHECK_EQ_INT(training_params_validate(&p, why, sizeof why), PD_EINVAL);
    CHECK(strstr(why, "train slice") != NULL);
    base(&p);
    p.test_frac = 0;
    CHECK_EQ_INT(training_params_validate(&p, why, sizeof why), PD_EINVAL);
    CHECK(strstr(why, "train slice") != NULL);
    base(&p);
    p.test_frac = -0.1;
    CHECK_EQ_INT(training_params_validate(&p, why, sizeof why), PD_EINVAL);
    base(&p);
    CHECK_EQ_INT(training_params_validate(&p, why, sizeof why), 0);
}

int main(void)
{
    RUN(test_each_name_sets_its_field);
    RUN(test_bad_values_are_refused_and_named);
    RUN(test_validate_rules);
    RUN(test_json_of_a_full_set);
    RUN(test_apply_json_sets_refuses_and_keeps);
    RUN(test_apply_json_value_kinds);
    RUN(test_from_json_messages);
    RUN(test_validate_edges);
    return unit_report();
}
