"""predictd_reference: a prediction recomputed from candles with numpy and
plain Python, independently of predictd's C: the feature catalogue
(features/catalogue.c, features/indicators.c; TA-Lib's conventions as
DESIGN.md states them), the model's forward pass
(predictd_model.reference_predict) and the signal levels
(inference/signal.c: stop = entry -/+ sl_atr * ATR, tp_k = entry +/- r_k *
risk).

The test oracle (tests/integration/test_oracle.py) uses it to check the
numbers predictd serves; bench/peer_python.py has the same definitions.

What it does not do: read the database or talk to predictd; the caller
passes the window of candles (oldest first). Pure functions, thread-safe.

Python: Debian's /usr/bin/python3 with numpy (and the protobuf module
predictd_model generates).
"""

import math

import numpy as np

import predictd_model as pm

# ---------------------------------------------------------------------------
# Indicators. Each works on one window, as predictd does: the recursive
# ones (EMA, MACD, RSI, ATR) start at the window's first candle.


def ema(x, p):
    """EMA seeded with the SMA of the first p inputs (TA-Lib)."""
    k = 2.0 / (p + 1)
    prev = sum(x[:p]) / p
    for xi in x[p:]:
        prev = ((xi - prev) * k) + prev
    return prev


def rsi(x, p):
    """Wilder's RSI seeded with simple means; 50 on a flat window."""
    gain = loss = 0.0
    prev = x[0]
    for xi in x[1:p + 1]:
        d = xi - prev
        prev = xi
        if d < 0.0:
            loss -= d
        else:
            gain += d
    loss /= p
    gain /= p
    for xi in x[p + 1:]:
        d = xi - prev
        prev = xi
        loss = (loss * (p - 1) + (-d if d < 0.0 else 0.0)) / p
        gain = (gain * (p - 1) + (d if d > 0.0 else 0.0)) / p
    s = gain + loss
    return 100.0 * (gain / s) if s != 0.0 else 50.0


def macd(x, fast, slow, sig):
    """MACD line, signal, histogram: the fast EMA's seed window ends where
    the slow one's does (TA-Lib); the signal EMA is seeded with its SMA."""
    ks, kf, kg = 2.0 / (slow + 1), 2.0 / (fast + 1), 2.0 / (sig + 1)
    es = sum(x[:slow]) / slow
    ef = sum(x[slow - fast:slow]) / fast
    first = slow - 1
    lb = first + sig - 1
    acc = sg = m = 0.0
    for i in range(first, len(x)):
        if i > first:
            xi = x[i]
            es = ((xi - es) * ks) + es
            ef = ((xi - ef) * kf) + ef
        m = ef - es
        if i < lb:
            acc += m
        elif i == lb:
            sg = (acc + m) / sig
        else:
            sg = ((m - sg) * kg) + sg
    return m, sg, m - sg


def atr(h, l, c, p):
    """Wilder's ATR: mean of the first p true ranges, then smoothing."""
    h, l, c = (np.asarray(a, dtype=np.float64) for a in (h, l, c))
    tr = np.maximum(h[1:] - l[1:], np.maximum(np.abs(h[1:] - c[:-1]), np.abs(l[1:] - c[:-1])))
    tr = tr.tolist()
    a = sum(tr[:p]) / p
    for t in tr[p:]:
        a = (a * (p - 1) + t) / p
    return a


def bbands(c, p, k):
    w = c[-p:]
    mean, sd = w.mean(), w.std()  # population standard deviation
    return mean + k * sd, mean, mean - k * sd


class _Window:
    def __init__(self, ohlcv):
        ohlcv = np.asarray(ohlcv, dtype=np.float64)
        self.h, self.l, self.c, self.v = ohlcv[:, 1], ohlcv[:, 2], ohlcv[:, 3], ohlcv[:, 4]
        self.cl = self.c.tolist()
        self.close = self.cl[-1]


def _f_bb(w, p, pctb):
    up, mid, lo = bbands(w.c, int(p[0]), p[1])
    if pctb:
        return 0.5 if up == lo else (w.close - lo) / (up - lo)
    return (up - lo) / mid


def _f_zscore(w, p):
    win = w.c[-p[0]:]
    sd = win.std()
    return 0.0 if sd == 0.0 else float((w.close - win.mean()) / sd)


def _f_volume_ratio(w, p):
    avg = w.v[-p[0]:].mean()
    return float(w.v[-1] / avg) if avg != 0.0 else 1.0


def _f_roc(w, p):
    prev = w.cl[-1 - p[0]]
    return (w.close / prev - 1.0) * 100.0 if prev != 0.0 else 0.0


def _f_trange_pct(w, p):
    h, l, pc = w.h[-1], w.l[-1], w.cl[-2]
    return max(h - l, abs(h - pc), abs(l - pc)) / w.close * 100.0


# name: (function(window, params), integer parameters, one real parameter)
FEATURES = {
    "rsi": (lambda w, p: rsi(w.cl, p[0]), 1, False),
    "macd": (lambda w, p: macd(w.cl, *p)[0] / w.close, 3, False),
    "macd_signal": (lambda w, p: macd(w.cl, *p)[1] / w.close, 3, False),
    "macd_hist": (lambda w, p: macd(w.cl, *p)[2] / w.close, 3, False),
    "natr": (lambda w, p: atr(w.h, w.l, w.c, p[0]) / w.close * 100.0, 1, False),
    "trange_pct": (_f_trange_pct, 0, False),
    "ema_dist": (lambda w, p: (w.close - ema(w.cl, p[0])) / w.close, 1, False),
    "sma_dist": (lambda w, p: (w.close - w.c[-p[0]:].mean()) / w.close, 1, False),
    "bb_pctb": (lambda w, p: _f_bb(w, p, True), 1, True),
    "bb_width": (lambda w, p: _f_bb(w, p, False), 1, True),
    "ret": (lambda w, p: w.close / w.cl[-1 - p[0]] - 1.0, 1, False),
    "logret": (lambda w, p: math.log(w.close / w.cl[-1 - p[0]]), 1, False),
    "roc": (_f_roc, 1, False),
    "vol": (lambda w, p: float(np.diff(np.log(w.c[-p[0] - 1:])).std()), 1, False),
    "zscore": (_f_zscore, 1, False),
    "volume_ratio": (_f_volume_ratio, 1, False),
}


def parse_spec(spec):
    """"rsi:14" -> (function, params); ValueError for a feature not here."""
    parts = spec.split(":")
    if parts[0] not in FEATURES:
        raise ValueError("feature '%s' has no reference" % spec)
    fn, nint, real = FEATURES[parts[0]]
    if len(parts) != 1 + nint + (1 if real else 0):
        raise ValueError("feature '%s': wrong number of parameters" % spec)
    params = [int(x) for x in parts[1:1 + nint]] + ([float(parts[-1])] if real else [])
    return fn, params


def features(specs, ohlcv):
    """The feature vector of the last candle of ohlcv (n x 5: open, high,
    low, close, volume; oldest first), from exactly that window."""
    w = _Window(ohlcv)
    return np.array([fn(w, params) for fn, params in (parse_spec(s) for s in specs)],
                    dtype=np.float64)


# ---------------------------------------------------------------------------
# A whole prediction


def steps_of(model):
    p = pm.pb2()
    return model.sequence.steps if model.kind == p.SEQUENCE else 1


def candles_needed(model):
    """How many closed candles a prediction of this model reads."""
    return model.window + steps_of(model) - 1


def price_tick(ohlcv):
    """features/tick.c: the largest 10^-d (d = 0..8) on whose grid every
    open, high, low and close of the window lies; 0 when none."""
    prices = np.asarray(ohlcv, dtype=np.float64)[:, :4].ravel()
    for d in range(9):
        x = prices * 10.0 ** d
        if np.all(np.abs(x - np.round(x)) <= 1e-6 + np.abs(x) * 1e-15):
            return 10.0 ** -d
    return 0.0


MIN_TICKS = 2               # inference.h INFERENCE_MIN_TICKS
DEFAULT_COST_BPS = 10.0     # SignalPolicy without a Costs message
DEFAULT_MIN_RISK_COSTS = 3.0


def signal(policy, probs, entry, atr_value, tick=0.0, beats_baseline=True):
    """inference/signal.c and the answer rules of predict/pipeline.c:
    dict(direction, model_choice, no_trade_reason, levels_for, confidence,
    entry, stop_loss, take_profits); None when a level is not a positive
    price. probs: LONG, SHORT, NO_TRADE order."""
    if not (math.isfinite(entry) and entry > 0 and math.isfinite(atr_value) and atr_value > 0):
        return None
    best = 0
    for c in (1, 2):
        if probs[c] > probs[best]:
            best = c
    direction, reason = best, None
    if probs[best] < policy.min_confidence:
        direction, reason = 2, "below_min_confidence"
    levels_for = 0 if probs[0] >= probs[1] else 1
    sign = 1.0 if levels_for == 0 else -1.0
    stop = entry - sign * policy.sl_atr * atr_value
    risk = sign * (entry - stop)
    tps = [entry + sign * r * risk for r in policy.tp_r]
    if not all(math.isfinite(v) and v > 0 for v in [stop] + tps):
        return None
    if tick > 0:
        def to_tick(v):
            r = round(v / tick) * tick
            return r if r > 0 else tick
        entry, stop, tps = to_tick(entry), to_tick(stop), [to_tick(t) for t in tps]
        for k in (1, 2):  # rounding never reorders the levels
            if sign * (tps[k] - tps[k - 1]) < 0:
                tps[k] = tps[k - 1]
        under = (abs(entry - stop) / tick + 1e-9 < MIN_TICKS or
                 abs(tps[0] - entry) / tick + 1e-9 < MIN_TICKS or
                 sign * (entry - stop) <= 0 or sign * (tps[0] - entry) <= 0)
        if under and direction != 2:
            direction, reason = 2, "levels_under_tick"
    has_costs = policy.HasField("costs")
    cost_bps = policy.costs.round_trip_bps if has_costs else DEFAULT_COST_BPS
    floor = policy.costs.min_risk_costs if has_costs and policy.costs.min_risk_costs > 0 \
        else DEFAULT_MIN_RISK_COSTS
    if direction != 2 and cost_bps > 0 and abs(entry - stop) < floor * cost_bps / 1e4 * entry:
        direction, reason = 2, "cost"
    if not beats_baseline:
        direction, reason = 2, "below_baseline"
    return {"direction": pm.CLASS_NAMES[direction], "model_choice": pm.CLASS_NAMES[best],
            "no_trade_reason": reason, "levels_for": pm.CLASS_NAMES[levels_for],
            "confidence": float(probs[best]), "entry": entry, "stop_loss": stop,
            "take_profits": tps}


def beats_baseline(model):
    """False when the model file's training metrics say it does not beat its
    baselines (a model published with --force)."""
    for m in model.meta.metrics:
        if m.name == "beats_baseline":
            return m.value != 0
    return True


def predict(model, scaler, ohlcv):
    """The prediction of model (predictd_model Model and Scaler messages)
    for the candles ohlcv (at least candles_needed(model) rows, oldest
    first; the last is the candle predicted from). Returns a dict:
    features (steps x n_features), probabilities {LONG, SHORT, NO_TRADE},
    entry, atr, and signal()'s keys."""
    ohlcv = np.asarray(ohlcv, dtype=np.float64)
    steps, window = steps_of(model), model.window
    need = window + steps - 1
    if len(ohlcv) < need:
        raise ValueError("%d candles, the model needs %d" % (len(ohlcv), need))
    ohlcv = ohlcv[-need:]
    x = np.array([features(model.features, ohlcv[s:s + window]) for s in range(steps)])
    probs = pm.to_canonical(pm.reference_predict(model, scaler, x[None, ...]), model.classes)[0]
    lw = ohlcv[-window:]
    a = atr(lw[:, 1], lw[:, 2], lw[:, 3], model.policy.atr_period or 14)
    entry = float(ohlcv[-1, 3])
    out = {"features": x, "probabilities": dict(zip(pm.CLASS_NAMES, map(float, probs))),
           "entry": entry, "atr": a}
    sig = signal(model.policy, probs, entry, a, price_tick(ohlcv), beats_baseline(model))
    if sig is None:
        raise ValueError("no positive level for these candles")
    out.update(sig)
    return out
