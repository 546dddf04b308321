"""Negative answers come from the cache like positive ones: an unknown
symbol, a series without a model and a series with too few candles are
answered without a database query once known, and the answer changes when
what it rests on changes (candles arrive and are notified, a model is
published). Queries are counted with predictd_db_queries_total from
/metrics; nothing here is timed.
"""
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (Service, check, check_eq, need_services, prepare_database,  # noqa: E402
                     psql, run_tests, test, train)

MODELS = tempfile.mkdtemp(prefix="predictd-negative-models-")
TF, TFS = "1h", 3600
state = {}


def service():
    if "svc" not in state:
        need_services()
        prepare_database(symbols=("NEGAUSDT",), timeframes=(TF,), count=1500)
        train(MODELS, "NEGAUSDT", TF)
        state["svc"] = Service(MODELS, env={"PREDICTD_RELOAD_INTERVAL": "1"})
    return state["svc"]


def metric(svc, name, labels=None):
    status, _, body = svc.get("/metrics", validate=False)
    check_eq(status, 200)
    text = body if isinstance(body, str) else body.decode()
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        if labels and not all(f'{k}="{v}"' in line for k, v in labels.items()):
            continue
        if labels is None and line[len(name)] not in " {":
            continue
        return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {labels or ''} not in /metrics")


def queries(svc):
    return metric(svc, "predictd_db_queries_total")


def negative_hits(svc):
    return metric(svc, "predictd_cache_requests_total", {"cache": "negative"})


def insert_candles(symbol, first, last):
    """Closed hourly candles g = first..last hours before the current hour,
    on one smooth, noisy path (so any window of them has finite features)."""
    now = int(time.time()) // TFS * TFS
    psql("INSERT INTO candles (symbol, timeframe, open_time, open, high, low, close, volume) "
         f"SELECT '{symbol}', '{TF}', to_timestamp({now} - g * {TFS}), "
         "100 + sin(g / 7.0) * 3, 101 + sin(g / 7.0) * 3 + (g % 5) * 0.2, "
         "99 + sin(g / 7.0) * 3 - (g % 3) * 0.2, 100 + sin(g / 5.0) * 3, 10 + g % 17 "
         f"FROM generate_series({first}, {last}) g ON CONFLICT DO NOTHING")


def error_code(svc, path):
    status, _, body = svc.get(path)
    check(status >= 400, f"{path} answered {status}")
    return status, body["error"]["code"]


def wait_for(fn, what, limit=20):
    deadline = time.time() + limit
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@test
def unknown_symbol_is_answered_without_a_query():
    svc = service()
    path = f"/api/predictions/NEGNOPE?timeframe={TF}"
    check_eq(error_code(svc, path), (404, "unknown_symbol"))
    q0, h0 = queries(svc), negative_hits(svc)
    for _ in range(50):
        check_eq(error_code(svc, path), (404, "unknown_symbol"))
    check(queries(svc) - q0 < 10, f"{queries(svc) - q0} database queries for 50 'unknown' answers")
    check(negative_hits(svc) >= h0 + 50, "negative cache hits counted")


@test
def the_list_route_pays_no_query_for_symbols_without_a_model():
    svc = service()
    # candles but no model: "no model" for every request of the list
    insert_candles("NEGBUSDT", 1, 40)
    path = f"/api/predictions?timeframe={TF}&symbols=NEGAUSDT,NEGBUSDT,NEGNOPE"
    status, _, body = svc.get(path)
    check_eq(status, 200)
    codes = sorted(e["code"] for e in body["errors"])
    check_eq(codes, ["no_model", "unknown_symbol"])
    # The inference loop works in the background (settling, catching up), so
    # the count may move a little; one query per "no" would add 100.
    q0 = queries(svc)
    for _ in range(50):
        status, _, body = svc.get(path)
        check_eq(status, 200)
        check_eq(body["count"], 1)
    check(queries(svc) - q0 < 10, f"{queries(svc) - q0} database queries for 50 list answers")


@test
def too_few_candles_is_cached_until_candles_arrive():
    svc = service()
    # a model for NEGCUSDT (a copy of NEGAUSDT's) over only a few candles
    src = os.path.join(MODELS, "NEGAUSDT", TF)
    dst = os.path.join(MODELS, "NEGCUSDT", TF)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copytree(src, dst)
    insert_candles("NEGCUSDT", 1, 5)
    path = f"/api/predictions/NEGCUSDT?timeframe={TF}"
    got = wait_for(lambda: error_code(svc, path)[1] == "insufficient_data", "the model to load")
    check(got)
    q0, h0 = queries(svc), negative_hits(svc)
    for _ in range(50):
        check_eq(error_code(svc, path), (503, "insufficient_data"))
    check(queries(svc) - q0 < 10, f"{queries(svc) - q0} database queries for 50 'too few' answers")
    # (the window itself may come from Redis without a query: count the hits too)
    check(negative_hits(svc) >= h0 + 50, "the 'too few candles' answers came from the cache")
    # the missing history arrives (the insert notifies): the next answer is a prediction
    insert_candles("NEGCUSDT", 6, 600)

    def answered():
        status, _, body = svc.get(path)
        return status == 200 and body["prediction"]["symbol"] == "NEGCUSDT"
    wait_for(answered, "a prediction once the candles arrived")


@test
def a_new_model_replaces_a_cached_no_model():
    svc = service()
    path = f"/api/predictions/NEGBUSDT?timeframe={TF}"
    check_eq(error_code(svc, path), (404, "no_model"))
    insert_candles("NEGBUSDT", 41, 900)
    shutil.copytree(os.path.join(MODELS, "NEGAUSDT", TF), os.path.join(MODELS, "NEGBUSDT", TF))

    def served():
        status, _, body = svc.get(path)
        return status == 200
    wait_for(served, "the new model to serve (scan interval 1 s)")


if __name__ == "__main__":
    sys.exit(run_tests())
