"""A burst at a candle close: many series' next candles committed in one
transaction are predicted, recorded once each, cached and published by the
inference loop's batched path (predict_refresh_many, one multi-row ledger
INSERT, one PUBLISH pipeline), and a `_default` model's symbols are caught
up together at start. Nothing is timed: the assertions are about every
series being handled exactly once; a bounded wait only keeps a broken build
from hanging.
"""
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (REDIS_URL, RedisSubscriber, Service, check, check_eq,  # noqa: E402
                     need_services, prepare_database, psql, run_tests, test, train)

TF, TFS = "1h", 3600
SYMBOLS = [f"BURST{c}USDT" for c in "ABCDEFGHIJKL"]  # 12 series: a burst (>= 4)
MODELS = tempfile.mkdtemp(prefix="predictd-burst-models-")
DEADLINE = 30
state = {}


def service():
    if "svc" not in state:
        need_services()
        prepare_database(symbols=SYMBOLS, timeframes=(TF,), count=800)
        # the newest closed candle of every series is held back, to be the burst
        last = int(time.time()) // TFS * TFS - TFS
        state["held"] = json.loads(psql(
            "SELECT coalesce(json_agg(row_to_json(c)), '[]') FROM (SELECT symbol, "
            "extract(epoch FROM open_time)::bigint AS t, open, high, low, close, volume "
            f"FROM candles WHERE timeframe = '{TF}' AND open_time = to_timestamp({last})) c"))
        check_eq(len(state["held"]), len(SYMBOLS), "every series has its last closed candle")
        psql(f"DELETE FROM candles WHERE timeframe = '{TF}' AND open_time = to_timestamp({last})")
        # one model for all of them: _default
        train(MODELS, SYMBOLS[0], TF)
        shutil.copytree(os.path.join(MODELS, SYMBOLS[0], TF), os.path.join(MODELS, "_default", TF))
        shutil.rmtree(os.path.join(MODELS, SYMBOLS[0]))
        state["svc"] = Service(MODELS)
    return state["svc"]


def ledger_rows(candle):
    return int(psql(f"SELECT count(*) FROM predictions WHERE timeframe = '{TF}' "
                    f"AND candle_time = to_timestamp({candle})"))


def wait_for(fn, what):
    deadline = time.time() + DEADLINE
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@test
def catch_up_records_every_default_series_once():
    service()
    before = int(time.time()) // TFS * TFS - 2 * TFS
    wait_for(lambda: ledger_rows(before) == len(SYMBOLS), "the catch-up of every series")
    dup = psql("SELECT count(*) FROM (SELECT symbol FROM predictions GROUP BY symbol, timeframe,"
               " candle_time, model_version HAVING count(*) > 1) d")
    check_eq(dup, "0", "no prediction recorded twice")


@test
def a_burst_is_predicted_recorded_and_published_once_per_series():
    svc = service()
    sub = RedisSubscriber(REDIS_URL, "predictd:predictions")
    try:
        values = ",".join(
            f"('{c['symbol']}', '{TF}', to_timestamp({c['t']}), {c['open']}, {c['high']}, "
            f"{c['low']}, {c['close']}, {c['volume']})" for c in state["held"])
        psql("INSERT INTO candles (symbol, timeframe, open_time, open, high, low, close, volume) "
             f"VALUES {values}")
        candle = state["held"][0]["t"]
        wait_for(lambda: ledger_rows(candle) == len(SYMBOLS), "a ledger row for every series")
        got = set()
        deadline = time.time() + DEADLINE
        while len(got) < len(SYMBOLS) and time.time() < deadline:
            kind, _, payload = sub.read(timeout=max(0.1, deadline - time.time()))
            if kind != b"message":
                continue
            data = json.loads(payload)["data"]
            if data["candle_time"].startswith(time.strftime("%Y-%m-%dT%H", time.gmtime(candle))):
                check(data["symbol"] not in got, f"{data['symbol']} published twice")
                got.add(data["symbol"])
        check_eq(sorted(got), sorted(SYMBOLS), "every series published once")
    finally:
        sub.close()
    # every series serves the new candle from the cache
    status, _, body = svc.get(f"/api/predictions?timeframe={TF}&symbols={','.join(SYMBOLS)}")
    check_eq(status, 200)
    check_eq(body["count"], len(SYMBOLS))
    for p in body["predictions"]:
        check_eq(p["candle_time"][:13], time.strftime("%Y-%m-%dT%H", time.gmtime(candle)))
    check_eq(ledger_rows(candle), len(SYMBOLS), "still exactly one row per series")


if __name__ == "__main__":
    sys.exit(run_tests())
