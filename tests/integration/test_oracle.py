"""An independent oracle for predictions: for every model kind (softmax and
MLP from `predictd train`, softmax, MLP and gradient-boosted trees from
scikit-learn, XGBoost trees, a PyTorch Conv1d+LSTM sequence model, each
exported with tools/), the prediction the API serves is recomputed from the
candles in PostgreSQL with tools/predictd_reference.py (numpy and plain
Python, not predictd's C): the features, the probabilities, entry, ATR,
stop-loss and take-profits, direction and levels_for, to 1e-6.

A second server with PREDICTD_CACHE=off (and no Redis) must give the same
numbers as the cached one. And the oracle must be able to fail: the same
comparison against a window shifted by one candle is refused.
"""
import csv
import io
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from harness import (ROOT, Service, Skip, check, check_eq, cli, need_services,  # noqa: E402
                     prepare_database, psql, run_tests, test, train)

sys.path.insert(0, os.path.join(ROOT, "tools"))
import predictd_model as pm  # noqa: E402
import predictd_reference as ref  # noqa: E402

import tempfile  # noqa: E402

TF = "15m"
TOL = 1e-6
MODELS = tempfile.mkdtemp(prefix="predictd-oracle-models-")
# symbol -> how its model is made
KINDS = {
    "BTCUSDT": "predictd train softmax",
    "ETHUSDT": "predictd train mlp",
    "SOLUSDT": "sklearn LogisticRegression (softmax)",
    "ADAUSDT": "sklearn MLPClassifier (mlp)",
    "BNBUSDT": "sklearn GradientBoostingClassifier (trees)",
    "XRPUSDT": "xgboost (trees)",
    "DOTUSDT": "torch Conv1d+LSTM (sequence)",
}
STEPS = 6
state = {}


def candles(symbol, until=None, limit=100000):
    """(open times in s, n x 5 OHLCV) of symbol's TF candles, oldest first,
    at or before the open time `until` (RFC 3339), straight from PostgreSQL."""
    cond = f"AND open_time <= '{until}'" if until else ""
    out = psql(f"COPY (SELECT extract(epoch FROM open_time)::bigint, open, high, low, close, "
               f"volume FROM candles WHERE symbol = '{symbol}' AND timeframe = '{TF}' {cond} "
               f"ORDER BY open_time DESC LIMIT {limit}) TO STDOUT WITH CSV")
    rows = [r for r in csv.reader(io.StringIO(out))]
    rows.reverse()
    return [int(r[0]) for r in rows], np.array([[float(v) for v in r[1:]] for r in rows])


def training_set(ohlcv, n=500):
    """Reference features of the last n windows and a 3-class label from the
    next 4 candles' return (the data only has to be realistic in scale)."""
    specs = pm.DEFAULT_FEATURES
    start = len(ohlcv) - n - 4
    X = np.array([ref.features(specs, ohlcv[i + 1 - pm.DEFAULT_WINDOW:i + 1])
                  for i in range(start, start + n)])
    fwd = ohlcv[start + 4:start + n + 4, 3] / ohlcv[start:start + n, 3] - 1
    q1, q2 = np.quantile(fwd, [0.35, 0.65])
    y = np.where(fwd > q2, "LONG", np.where(fwd < q1, "SHORT", "NO_TRADE"))
    return X, y


def make_models():
    train(MODELS, "BTCUSDT", TF)
    train(MODELS, "ETHUSDT", TF, "--kind", "mlp", "--hidden", "16,8", "--epochs", "20")
    _, ohlcv = candles("BTCUSDT")
    X, y = training_set(ohlcv)
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    import export_sklearn as es
    for symbol, est in (
            ("SOLUSDT", make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))),
            ("ADAUSDT", make_pipeline(StandardScaler(),
                                      MLPClassifier((12,), max_iter=300, random_state=1))),
            ("BNBUSDT", GradientBoostingClassifier(n_estimators=20, max_depth=3,
                                                   random_state=1))):
        est.fit(X, y)
        m, sc = es.export(est, golden_inputs=X)
        pm.publish(MODELS, symbol, TF, m, sc)
    import xgboost as xgb
    import export_xgboost as ex
    yi = np.array([pm.CLASS_NAMES.index(v) for v in y])
    booster = xgb.train({"objective": "multi:softprob", "num_class": 3, "max_depth": 3,
                         "eta": 0.3, "nthread": 1, "seed": 1},
                        xgb.DMatrix(X, label=yi), num_boost_round=15)
    m, sc = ex.export(booster, golden_inputs=X)
    pm.publish(MODELS, "XRPUSDT", TF, m, sc)
    import torch
    import export_torch as et
    torch.manual_seed(1)
    torch.set_num_threads(1)
    net = et.ConvLstmNet(n_features=X.shape[1], steps=STEPS, conv=((8, 3, 1, "relu"),),
                         lstm_hidden=8)
    seqs = np.array([X[i:i + STEPS] for i in range(len(X) - STEPS)])
    mean, scale = X.mean(0), X.std(0)
    net(torch.from_numpy(((seqs[:4] - mean) / scale).astype(np.float32)))  # shapes check
    m, sc = et.export(net, mean, scale, golden_inputs=seqs)
    pm.publish(MODELS, "DOTUSDT", TF, m, sc)


def setup():
    if "cached" not in state:
        need_services()
        for mod in ("sklearn", "xgboost", "torch"):
            try:
                __import__(mod)
            except ImportError as e:
                raise Skip(f"{mod} is not importable: {e} (make deps)")
        prepare_database(symbols=tuple(KINDS), timeframes=(TF,), count=1200)
        make_models()
        state["cached"] = Service(MODELS, name="oracle-cached")
        state["uncached"] = Service(MODELS, env={"PREDICTD_CACHE": "off"}, redis=False,
                                    name="oracle-uncached")
    return state["cached"], state["uncached"]


def serving_model(symbol):
    d = os.path.join(MODELS, symbol, TF)
    v = max(int(n) for n in os.listdir(d) if n.isdigit())
    p = pm.pb2()
    m, sc = p.Model(), p.Scaler()
    with open(os.path.join(d, str(v), "model.pb"), "rb") as f:
        m.ParseFromString(f.read())
    with open(os.path.join(d, str(v), "scaler.pb"), "rb") as f:
        sc.ParseFromString(f.read())
    return v, m, sc


def served(svc, symbol):
    status, _, body = svc.get(f"/api/predictions/{symbol}?timeframe={TF}")
    check_eq(status, 200, body)
    return body["prediction"]


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-12)


def compare(p, want, what):
    """Raises AssertionError naming every field of the served prediction p
    that differs from the oracle's want by more than TOL."""
    bad = []
    for c in pm.CLASS_NAMES:
        # the API prints probabilities with 6 decimals: at most 5e-7 off
        if not abs(p["probabilities"][c] - want["probabilities"][c]) <= TOL:
            bad.append(f"P({c}) {p['probabilities'][c]} vs {want['probabilities'][c]:.9f}")
    levels = [("entry", p["entry"], want["entry"]), ("atr", p["atr"], want["atr"]),
              ("stop_loss", p["stop_loss"], want["stop_loss"])]
    levels += [(f"tp{k + 1}", t["price"], w) for k, (t, w) in
               enumerate(zip(p["take_profits"], want["take_profits"]))]
    for name, a, b in levels:
        if not rel(a, b) <= TOL:
            bad.append(f"{name} {a!r} vs {b!r}")
    for k in ("direction", "levels_for", "model_choice", "no_trade_reason"):
        if p.get(k) != want[k]:
            bad.append(f"{k} {p.get(k)} vs {want[k]}")
    if not abs(p["confidence"] - want["confidence"]) <= TOL:
        bad.append(f"confidence {p['confidence']} vs {want['confidence']}")
    if bad:
        raise AssertionError(f"{what}: " + "; ".join(bad))


def oracle(symbol, candle_time, shift=0):
    """The reference prediction for the window ending at candle_time (shift
    candles earlier when shift > 0), and the candles it read."""
    _, m, sc = serving_model(symbol)
    need = ref.candles_needed(m)
    times, ohlcv = candles(symbol, candle_time, need + shift)
    check(len(times) == need + shift, f"{symbol}: {len(times)} candles in PostgreSQL")
    if shift:
        times, ohlcv = times[:-shift], ohlcv[:-shift]
    return ref.predict(m, sc, ohlcv), times, ohlcv, m


def c_features(m, times, ohlcv):
    """predictd's own features (`predictd features`) of the last steps windows."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["open_time", "open", "high", "low", "close", "volume"])
    for t, row in zip(times, ohlcv.tolist()):
        w.writerow([t] + [repr(v) for v in row])
    out = cli("features", "-", "--spec", ",".join(m.features), "--window", str(m.window),
              stdin=buf.getvalue()).stdout.splitlines()
    rows = np.array([[float(v) for v in line.split(",")[1:]] for line in out[1:]])
    return rows[-ref.steps_of(m):]


@test
def every_model_kind_is_served_and_its_kind_is_what_was_made():
    cached, _ = setup()
    p = pm.pb2()
    names = {p.SOFTMAX: "softmax", p.MLP: "mlp", p.TREES: "trees", p.SEQUENCE: "sequence"}
    kinds = set()
    for symbol, how in KINDS.items():
        v, m, _ = serving_model(symbol)
        got = served(cached, symbol)
        check_eq(got["model"]["version"], v, symbol)
        check_eq(got["model"]["kind"], names[m.kind], f"{symbol} ({how})")
        kinds.add(names[m.kind])
    check_eq(kinds, {"softmax", "mlp", "trees", "sequence"})


@test
def served_predictions_match_the_numpy_reference():
    cached, _ = setup()
    for symbol, how in KINDS.items():
        p = served(cached, symbol)
        want, times, ohlcv, m = oracle(symbol, p["candle_time"])
        compare(p, want, f"{symbol} ({how})")
        dp = max(abs(p["probabilities"][c] - want["probabilities"][c]) for c in pm.CLASS_NAMES)
        dl = max(rel(p[k], want[k]) for k in ("entry", "atr", "stop_loss"))
        print(f"     {symbol} {m.window}x{ref.steps_of(m)} {how}: {p['direction']}, "
              f"max |dP| {dp:.1e}, levels rel {dl:.1e}", flush=True)
        # the features predictd computes are the reference's
        got = c_features(m, times, ohlcv)
        check_eq(got.shape, want["features"].shape, symbol)
        d = np.abs(got - want["features"]) / np.maximum(np.abs(want["features"]), 1e-3)
        check(float(d.max()) <= TOL, f"{symbol}: features differ by {float(d.max()):.3g} "
              f"(relative) at {np.unravel_index(int(np.argmax(d)), d.shape)}")
        # a cached answer is the same answer
        compare(served(cached, symbol), want, f"{symbol} ({how}), second (cached) read")


@test
def uncached_instance_gives_the_same_numbers():
    cached, uncached = setup()
    fields = ("direction", "levels_for", "confidence", "probabilities", "entry", "stop_loss",
              "take_profits", "atr", "candle_time", "model")
    for symbol in KINDS:
        a, b = served(cached, symbol), served(uncached, symbol)
        for k in fields:
            check_eq(b[k], a[k], f"{symbol} {k}: PREDICTD_CACHE=off vs on")
        want, _, _, _ = oracle(symbol, b["candle_time"])
        compare(b, want, f"{symbol} uncached")
    # the multi-symbol route computes the same numbers as the one-symbol one
    status, _, body = uncached.get(f"/api/predictions?timeframe={TF}")
    check_eq(status, 200, body)
    check_eq(sorted(x["symbol"] for x in body["predictions"]), sorted(KINDS))
    for x in body["predictions"]:
        want, _, _, _ = oracle(x["symbol"], x["candle_time"])
        compare(x, want, f"{x['symbol']} in the list")


@test
def a_window_shifted_by_one_candle_fails_the_oracle():
    cached, _ = setup()
    for symbol, how in KINDS.items():
        pred = served(cached, symbol)
        shifted, _, _, _ = oracle(symbol, pred["candle_time"], shift=1)
        try:
            compare(pred, shifted, symbol)
        except AssertionError as e:
            msg = str(e)
        else:
            raise AssertionError(f"{symbol} ({how}): the oracle accepted a window shifted by "
                                 "one candle")
        check("entry" in msg and "atr" in msg, msg)
        # the probabilities must be compared too: wherever the reference's
        # own probabilities of the two windows differ by more than TOL, the
        # comparison must name them (trees may send both windows to the
        # same leaves, and a model trained on a random walk can be nearly
        # flat at this point: then there is nothing to catch)
        want, _, _, _ = oracle(symbol, pred["candle_time"])
        moved = max(abs(want["probabilities"][c] - shifted["probabilities"][c])
                    for c in pm.CLASS_NAMES)
        if moved > 2 * TOL:
            check("P(" in msg, f"{symbol} ({how}): the reference's probabilities moved by "
                  f"{moved:.2e} but the comparison did not say so: {msg}")
        else:
            print(f"     {symbol} ({how}): probabilities moved {moved:.1e} with the shift",
                  flush=True)


if __name__ == "__main__":
    sys.exit(run_tests())
