"""The walking skeleton end to end: candles in PostgreSQL, a trained model
in a real repository, predictions over real HTTP, every response checked
against openapi.yaml, and the error paths (unknown symbol, bad
timeframe, no model, malformed symbols, database down)."""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from harness import (Service, Skip, check, check_eq, check_near, cli, need_services,  # noqa: E402
                     prepare_database,
                     psql, run_tests, services, test, train, SHARED_DATA)

MODELS = tempfile.mkdtemp(prefix="predictd-models-")
state = {}


def service():
    if "svc" not in state:
        need_services()
        prepare_database(symbols=("BTCUSDT", "ETHUSDT"), timeframes=("15m", "1h"), count=2500)
        train(MODELS, "BTCUSDT", "15m")
        train(MODELS, "ETHUSDT", "15m")
        train(MODELS, "BTCUSDT", "1h")
        state["svc"] = Service(MODELS)
    return state["svc"]


def check_prediction(p, symbol, tf):
    check_eq(p["symbol"], symbol)
    check_eq(p["timeframe"], tf)
    probs = p["probabilities"]
    check(abs(probs["LONG"] + probs["SHORT"] + probs["NO_TRADE"] - 1) < 1e-5, "probabilities sum")
    check(abs(p["confidence"] - probs[p["model_choice"]]) < 1e-6,
          "confidence is the probability of the model's choice")
    check(max(probs.values()) - p["confidence"] < 1e-6, "the model's choice is its most probable")
    if p["direction"] == "NO_TRADE":
        check(p["no_trade_reason"] in ("model", "below_min_confidence", "stale_data",
                                       "levels_under_tick", "below_baseline", "cost"),
              f"NO_TRADE says why: {p['no_trade_reason']}")
    else:
        check(p["direction"] == p["model_choice"] and p["no_trade_reason"] is None,
              "a call is the model's choice")
    # a model published with --force below its baselines never calls, and
    # says why with the figures; model_accuracy is the hit rate of calls
    if p["model"]["beats_baseline"] is False:
        check(p["direction"] == "NO_TRADE" and p["no_trade_reason"] in ("below_baseline",
                                                                        "stale_data"), p)
        check(any(w.startswith("model below baseline: test log-loss") for w in p["warnings"]),
              p["warnings"])
    check(p["model_accuracy"] == p["model"]["backtest_hit_rate"] or
          p["accuracy_source"] == "live", p)
    check(p["accuracy_source"] != "backtest" or p["model_accuracy"] is not None, p)
    # expiry: one rule; an overdue answer is never clean
    if any(w.startswith("overdue") for w in p["warnings"]):
        check(p["stale"] is True, p)
    entry, sl = p["entry"], p["stop_loss"]
    tps = [t["price"] for t in p["take_profits"]]
    if p["levels_for"] == "LONG":
        check(sl < entry < tps[0] < tps[1] < tps[2], f"LONG levels out of order: {p}")
    else:
        check(sl > entry > tps[0] > tps[1] > tps[2], f"SHORT levels out of order: {p}")
    check(p["atr"] > 0, "atr positive")
    check(p["model"]["version"] >= 1)
    check(p["valid_until"] > p["candle_time"], "valid_until after the candle")
    check(p["stale"] is False, "seeded data ends at the last closed candle")
    check(p["data"]["gaps"] == 0)


@test
def prediction_has_every_field():
    svc = service()
    status, headers, body = svc.get("/api/predictions/BTCUSDT?timeframe=15m")
    check_eq(status, 200, body)
    check("X-Request-Id" in headers, "request id echoed")
    check_prediction(body["prediction"], "BTCUSDT", "15m")


@test
def all_symbols_of_a_timeframe():
    svc = service()
    status, _, body = svc.get("/api/predictions?timeframe=15m")
    check_eq(status, 200, body)
    check_eq(body["count"], 2)
    check_eq(sorted(p["symbol"] for p in body["predictions"]), ["BTCUSDT", "ETHUSDT"])
    check_eq(body["errors"], [])
    for p in body["predictions"]:
        check_prediction(p, p["symbol"], "15m")


@test
def listed_symbols_with_errors_alongside():
    svc = service()
    status, _, body = svc.get("/api/predictions?timeframe=1h&symbols=BTCUSDT,ETHUSDT,NOPEUSDT")
    check_eq(status, 200, body)
    check_eq([p["symbol"] for p in body["predictions"]], ["BTCUSDT"])
    codes = {e["symbol"]: e["code"] for e in body["errors"]}
    check_eq(codes, {"ETHUSDT": "no_model", "NOPEUSDT": "unknown_symbol"})


@test
def batch_of_symbols_equals_one_by_one():
    # with the caches off every symbol is computed: the multi-symbol route
    # reads all windows in one batch (predict_many), the single route one
    # at a time; the answers must be the same
    service()
    svc = Service(MODELS, env={"PREDICTD_CACHE": "off"})
    status, _, many = svc.get("/api/predictions?timeframe=15m&symbols=ETHUSDT,BTCUSDT,NOPEUSDT")
    check_eq(status, 200, many)
    check_eq([p["symbol"] for p in many["predictions"]], ["ETHUSDT", "BTCUSDT"])
    check_eq([e["code"] for e in many["errors"]], ["unknown_symbol"])
    for p in many["predictions"]:
        _, _, one = svc.get(f"/api/predictions/{p['symbol']}?timeframe=15m")
        q = one["prediction"]
        for k in ("probabilities", "entry", "stop_loss", "take_profits", "candle_time", "atr",
                  "data"):
            check_eq(p[k], q[k], k)
    check_eq(svc.stop(), 0)


@test
def cached_answer_equals_computed_one():
    svc = service()
    _, _, a = svc.get("/api/predictions/ETHUSDT?timeframe=15m")
    _, _, b = svc.get("/api/predictions/ETHUSDT?timeframe=15m")
    pa, pb = a["prediction"], b["prediction"]
    for k in ("direction", "probabilities", "entry", "stop_loss", "take_profits", "candle_time",
              "prediction_time", "model"):
        check_eq(pa[k], pb[k], k)


@test
def summary_of_four_timeframes():
    svc = service()
    status, _, body = svc.get("/api/predictions/BTCUSDT/summary")
    check_eq(status, 200, body)
    check_eq(sorted(body["predictions"]), ["15m", "1h"])
    check_eq(sorted(e["timeframe"] for e in body["errors"]), ["1d", "4h"])
    check_prediction(body["predictions"]["1h"], "BTCUSDT", "1h")


@test
def unknown_symbol_is_404():
    svc = service()
    status, _, body = svc.get("/api/predictions/ZZZUSDT?timeframe=15m")
    check_eq(status, 404)
    check_eq(body["error"]["code"], "unknown_symbol")
    status, _, body = svc.get("/api/predictions/ZZZUSDT/summary")
    check_eq(status, 404)
    check_eq(body["error"]["code"], "unknown_symbol")


@test
def bad_or_missing_timeframe_is_400():
    svc = service()
    for q in ("?timeframe=2h", "", "?timeframe="):
        status, _, body = svc.get("/api/predictions/BTCUSDT" + q)
        check_eq(status, 400, q)
        check_eq(body["error"]["code"], "invalid_timeframe")
        check("1m,5m,15m,1h,4h,1d" in body["error"]["message"], "lists the valid timeframes")
    status, _, body = svc.get("/api/predictions?timeframe=7m")
    check_eq(status, 400)
    check_eq(body["error"]["code"], "invalid_timeframe")


@test
def series_without_model_is_404_no_model():
    svc = service()
    status, _, body = svc.get("/api/predictions/ETHUSDT?timeframe=1h")
    check_eq(status, 404)
    check_eq(body["error"]["code"], "no_model")


@test
def malformed_symbols_rejected_before_io():
    svc = service()
    # each is refused as malformed: none may reach the database and come back
    # as unknown_symbol
    for sym in ("btcusdt", "A" * 21, "..%2F..%2Fetc", "BTC-USD", "B"):
        status, _, body = svc.get(f"/api/predictions/{sym}?timeframe=15m")
        check_eq((status, body["error"]["code"]), (400, "invalid_symbol"), sym)
    # an encoded NUL would cut "BTCUSDT%00X" to "BTCUSDT": refused as a whole
    for url in ("/api/predictions/BTCUSDT%00X?timeframe=15m",
                "/api/predictions?timeframe=15m&symbols=BTCUSDT%00X"):
        status, _, body = svc.get(url)
        check_eq((status, body["error"]["code"]), (400, "invalid_argument"), url)
    status, _, body = svc.get("/api/predictions?timeframe=15m&symbols=BTCUSDT,bad")
    check_eq(status, 400)
    check_eq(body["error"]["code"], "invalid_symbol")
    many = ",".join(f"S{i:03d}" for i in range(101))
    status, _, body = svc.get(f"/api/predictions?timeframe=15m&symbols={many}")
    check_eq(status, 400)


@test
def models_routes():
    svc = service()
    status, _, body = svc.get("/api/models")
    check_eq(status, 200, body)
    series = {(m["symbol"], m["timeframe"]): m for m in body["models"]}
    check(("BTCUSDT", "15m") in series)
    check_eq(series[("BTCUSDT", "15m")]["serving_version"], 1)
    status, _, body = svc.get("/api/models/BTCUSDT/1h")
    check_eq(status, 200, body)
    status, _, body = svc.get("/api/models/ETHUSDT/1h")
    check_eq(status, 404)


@test
def admin_routes_refuse_without_key():
    svc = service()
    status, _, body = svc.get("/admin/models")
    check_eq(status, 401)
    check_eq(body["error"]["code"], "unauthorized")


@test
def health_and_metrics():
    svc = service()
    status, _, body = svc.get("/health/ready")
    check_eq(status, 200, body)
    status, _, body = svc.get("/health")
    check_eq(status, 200)
    check_eq(body["models_serving"], 3)
    status, headers, text = svc.get("/metrics")
    check_eq(status, 200)
    check(b"predictd_http_requests_total" in text)
    check(b'predictd_model_info{symbol="BTCUSDT",timeframe="15m",version="1"' in text)


@test
def cli_predict_matches_the_api_shape():
    service()
    p = cli("predict", "BTCUSDT", "15m", "--models-dir", MODELS)
    import json
    from harness import openapi_check
    body = json.loads(p.stdout)
    openapi_check("GET", "/api/predictions/BTCUSDT", 200, body, "application/json")
    check_prediction(body["prediction"], "BTCUSDT", "15m")
    p = cli("predict", "ETHUSDT", "1h", "--models-dir", MODELS, check_rc=False)
    check(p.returncode != 0, "no model is an error")
    check("no_model" in p.stdout)


@test
def levels_use_the_exchanges_tick_when_the_feed_stored_one():
    # without an exchange row the tick is inferred from the candles; with
    # one (what the Binance feed writes from exchangeInfo) the levels are
    # rounded to it, and a tick coarser than the stop's distance makes the
    # answer NO_TRADE levels_under_tick
    import json
    service()
    psql("DELETE FROM exchange_symbols WHERE symbol = 'BTCUSDT'")
    base = json.loads(cli("predict", "BTCUSDT", "15m", "--models-dir", MODELS).stdout)["prediction"]
    check_eq(base["tick_source"], "candles" if base["tick"] is not None else None, base)
    # a fine tick the candles cannot show (they carry two decimals at most)
    fine = 1e-4
    coarse = abs(base["entry"] - base["stop_loss"]) * 1.5
    try:
        psql("INSERT INTO exchange_symbols (venue, symbol, status, tick_size) "
             f"VALUES ('binance', 'BTCUSDT', 'TRADING', {fine!r})")
        p = json.loads(cli("predict", "BTCUSDT", "15m", "--models-dir", MODELS).stdout)["prediction"]
        check_eq(p["tick_source"], "exchange", p)
        check_eq(p["tick"], fine, p)
        for price in [p["entry"], p["stop_loss"]] + [t["price"] for t in p["take_profits"]]:
            check(abs(price / fine - round(price / fine)) < 1e-6, f"{price} is not on the tick {fine}")
        psql(f"UPDATE exchange_symbols SET tick_size = {coarse!r} WHERE symbol = 'BTCUSDT'")
        p = json.loads(cli("predict", "BTCUSDT", "15m", "--models-dir", MODELS).stdout)["prediction"]
        check_eq(p["tick_source"], "exchange", p)
        check_near(p["tick"], coarse, 1e-9 * coarse, p)
        check(abs(p["entry"] - p["stop_loss"]) < 2 * coarse + 1e-9, p)
        check_eq(p["direction"], "NO_TRADE", p)
        # the rules' precedence: a model below its baselines says so first
        if p["model"]["beats_baseline"] is False:
            check_eq(p["no_trade_reason"], "below_baseline", p)
        else:
            check_eq(p["no_trade_reason"], "levels_under_tick", p)
            check(any(w.startswith("levels under the tick") for w in p["warnings"]), p["warnings"])
        # a server reads the same row
        svc = Service(MODELS, env={"PREDICTD_CACHE": "off"})
        try:
            status, _, body = svc.get("/api/predictions/BTCUSDT?timeframe=15m")
            check_eq(status, 200, body)
            check_eq(body["prediction"]["tick_source"], "exchange", body)
            check_eq(body["prediction"]["no_trade_reason"], p["no_trade_reason"], body)
            check_eq(body["prediction"]["tick"], p["tick"], body)
        finally:
            svc.stop()
    finally:
        psql("DELETE FROM exchange_symbols WHERE symbol = 'BTCUSDT'")


@test
def database_down_leaves_a_replica_with_cached_answers_ready():
    need_services()
    service()
    svc = Service(MODELS)  # the caches on
    status, _, _ = svc.get("/api/predictions/BTCUSDT?timeframe=15m")
    check_eq(status, 200)
    services("pg-stop")
    try:
        # what is cached still answers, so the replica stays in the balancer
        status, _, body = svc.get("/api/predictions/BTCUSDT?timeframe=15m")
        check_eq(status, 200, body)
        status, _, body = svc.get("/health/ready")
        check_eq(status, 200, body)
        # a replica with nothing cached cannot answer: not ready, and says why
        empty = Service(MODELS)
        status, _, body = empty.get("/health/ready")
        check_eq(status, 503, body)
        check("no answer is cached" in body["error"]["message"], body)
        empty.stop()
    finally:
        services("pg-start")
    svc.stop()


@test
def database_down_answers_503_and_recovers():
    need_services()
    service()
    svc = Service(MODELS, env={"PREDICTD_CACHE": "off"})
    status, _, _ = svc.get("/api/predictions/BTCUSDT?timeframe=15m")
    check_eq(status, 200)
    services("pg-stop")
    try:
        status, _, body = svc.get("/api/predictions/BTCUSDT?timeframe=15m")
        check_eq(status, 503, body)
        check_eq(body["error"]["code"], "data_unavailable")
        status, _, body = svc.get("/api/predictions?timeframe=15m")
        check_eq(status, 503, body)
        status, _, body = svc.get("/health/ready")
        check_eq(status, 503)
        check(svc.proc.poll() is None, "the process stays up")
    finally:
        services("pg-start")
    # reconnects are throttled (one attempt per 500 ms): it recovers within seconds
    import time
    deadline = time.time() + 10
    while True:
        status, _, body = svc.get("/api/predictions/BTCUSDT?timeframe=15m")
        if status == 200 or time.time() > deadline:
            break
        time.sleep(0.2)
    check_eq(status, 200, body)
    check_eq(svc.stop(), 0)


@test
def import_real_daily_candles_and_bad_rows():
    need_services()
    service()
    if not SHARED_DATA:
        raise Skip("../shared/data is not present")
    path = os.path.join(SHARED_DATA, "BTCUSD_1d_bitstamp-coinbase.csv")
    cli("import", path, "--symbol", "BTCUSD", "--timeframe", "1d")
    check_eq(psql("SELECT count(*) FROM candles WHERE symbol='BTCUSD'"), "5152")
    cli("import", path, "--symbol", "BTCUSD", "--timeframe", "1d")  # idempotent
    check_eq(psql("SELECT count(*) FROM candles WHERE symbol='BTCUSD'"), "5152")
    bad = tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False)
    bad.write("open_time,open,high,low,close,volume\n"
              "2030-01-01T00:00:00Z,1,2,0.5,1.5,10\n"
              "2030-01-02T00:00:00Z,1,2,0.5,oops,10\n")
    bad.close()
    p = cli("import", bad.name, "--symbol", "BADROWS", "--timeframe", "1d", check_rc=False)
    check(p.returncode != 0)
    check("line 3" in p.stderr, p.stderr)
    check_eq(psql("SELECT count(*) FROM candles WHERE symbol='BADROWS'"), "0")


@test
def gaps_in_the_window_are_reported():
    svc = service()
    cli("seed", "--symbols", "GAPUSDT", "--timeframes", "4h", "--count", "2500")
    train(MODELS, "GAPUSDT", "4h")
    psql("DELETE FROM candles WHERE symbol='GAPUSDT' AND timeframe='4h' AND open_time = "
         "(SELECT max(open_time) - interval '40 hours' FROM candles "
         "WHERE symbol='GAPUSDT' AND timeframe='4h')")
    import signal
    import time
    svc.proc.send_signal(signal.SIGHUP)  # rescan the repository for the new model
    deadline = time.time() + 10
    while True:
        status, _, body = svc.get("/api/predictions/GAPUSDT?timeframe=4h")
        if status == 200 or time.time() > deadline:
            break
        time.sleep(0.1)
    check_eq(status, 200, body)
    p = body["prediction"]
    check_eq(p["data"]["gaps"], 1)
    check(any("missing" in w for w in p["warnings"]), p["warnings"])
    _, _, text = svc.get("/metrics")
    check(b'predictd_feature_window_gaps{symbol="GAPUSDT",timeframe="4h"} 1' in text)


@test
def expired_model_still_answers_flagged():
    svc = service()
    cli("seed", "--symbols", "OLDUSDT", "--timeframes", "4h", "--count", "2500")
    train(MODELS, "OLDUSDT", "4h", "--max-age-s", "1")
    import signal
    import time
    time.sleep(2.5)  # whole seconds: older than 1 s for sure
    svc.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 10
    while True:
        status, _, body = svc.get("/api/predictions/OLDUSDT?timeframe=4h")
        if status == 200 or time.time() > deadline:
            break
        time.sleep(0.1)
    check_eq(status, 200, body)
    p = body["prediction"]
    check(p["model_expired"] is True, p)
    check(any("expired" in w for w in p["warnings"]), p["warnings"])
    _, _, st = svc.get("/health/status")
    series = {(x["symbol"], x["timeframe"]): x for x in st["components"]["registry"]["series"]}
    check(series[("OLDUSDT", "4h")]["model_expired"] is True)
    check(series[("BTCUSDT", "15m")]["model_expired"] is False)


@test
def dashboard_page():
    svc = service()
    status, headers, body = svc.get("/")
    check_eq(status, 200)
    check(headers["Content-Type"].startswith("text/html"))
    check(b"/api/predictions?timeframe=" in body, "the page reads the public API")
    other = Service(MODELS, env={"PREDICTD_WEB_DIR": "/nonexistent"})
    status, _, body = other.get("/")
    check_eq(status, 404)
    check_eq(other.stop(), 0)


if __name__ == "__main__":
    sys.exit(run_tests())
