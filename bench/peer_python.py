"""The Python peer of predictd's prediction endpoint, for `make bench`.

What it is: the service a Python developer would write for the same job,
so the benchmark can put predictd's figures next to it in one run on one
machine. It answers

    GET /api/predictions/<SYMBOL>?timeframe=15m

with the work predictd does on an uncached request (PREDICTD_CACHE=off):
  1. the model serving the series: the highest numeric version directory
     under MODELS/SYMBOL/TF/ (else MODELS/_default/TF/), model.pb and
     scaler.pb parsed with the protobuf module tools/predictd_model.py
     generates; rescanned at most every 15 s, as predictd's registry does;
  2. the last `window` closed candles from PostgreSQL (psycopg2, one query:
     ORDER BY open_time DESC LIMIT window; open_time <= the last closed
     candle's open), through a small blocking connection pool per process;
  3. the model's feature vector of the last candle with numpy and plain
     Python loops for the recursive indicators (EMA, MACD, RSI, ATR), with
     predictd's definitions (features/catalogue.c, features/indicators.c);
  4. the scaler, the dense layers (SOFTMAX, MLP) as numpy matrix products,
     the softmax with the model's temperature; tree and sequence models go
     through tools/predictd_model.reference_logits (correct, not fast);
  5. the signal (inference/signal.c): direction with min_confidence, levels
     for the likelier of LONG/SHORT from the last close and ATR(atr_period)
     of the same window: stop = entry -/+ sl_atr*ATR, tp_k = entry +/- r_k*risk;
  6. JSON shaped like predictd's (predict/render.c), with json.dumps.
With PEER_CACHE=on (or --cache on) a per-process dict keyed by series and
model version holds the computed prediction until the next candle can have
closed (then the database is asked again at most every 2 s), as predictd's
process cache does; a hit is a dict lookup, the time-dependent fields and
json.dumps.

HTTP: Flask (Debian's python3-flask) on werkzeug's threaded server when it
is installed, else the standard library's ThreadingHTTPServer (--server
picks). Like gunicorn, the parent binds the socket and forks --workers
processes that accept on it (each one thread per connection, keep-alive),
so the peer can use every core despite the GIL.

What it does not do: authentication, rate limits, metrics, Redis, the
ledger/live accuracy, policy.json pins and labels, MANIFEST hashes (golden
cases are checked at load), streams, the multi-symbol route. Features other
than the catalogue entries below are refused at load (503 model_invalid).

Check mode: `--check URL` asks a running predictd (URL: its base address)
for the same symbols and compares direction, probabilities, levels and ATR
with this peer's own answer from the same database and models; with
`--predictd-bin BIN` it also compares every window of each series: the
features of `predictd features` and the probabilities of `predictd models
eval` against this peer's, at full precision. Exit 0 when within tolerance.

Command line:
  /usr/bin/python3 bench/peer_python.py --listen 127.0.0.1:PORT --models-dir DIR
with PREDICTD_DATABASE_URL in the environment (--help for the rest).

Threading: a Service is shared by a process's request threads: the model
table and the cache are guarded by locks; feature and model code is pure.
"""

import argparse
import contextlib
import csv
import io
import json
import logging
import math
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import predictd_model as pm  # noqa: E402  (tools/ is not a package)

TF_SECONDS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "4h": 14400, "1d": 86400}
SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,20}$")
CLASSES = ("LONG", "SHORT", "NO_TRADE")
RESCAN_S = 15   # predictd's default PREDICTD_RELOAD_INTERVAL
RECHECK_S = 2   # predictd's predict/pipeline.c
GOLDEN_TOL = 1e-6


class PeerError(Exception):
    """An answer other than success: HTTP status, predictd's error code, message."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# ---------------------------------------------------------------------------
# Features: predictd's definitions (features/catalogue.c, indicators.c).
# Each takes the window's columns (numpy arrays h, l, c, v and the closes as
# a Python list for the loops) and returns the value at the last candle.

def _ema(x, p):
    """EMA seeded with the SMA of the first p inputs (TA-Lib)."""
    k = 2.0 / (p + 1)
    prev = sum(x[:p]) / p
    for xi in x[p:]:
        prev = ((xi - prev) * k) + prev
    return prev


def _rsi(x, p):
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


def _macd(x, fast, slow, sig):
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


def _atr(h, l, c, p):
    """Wilder's ATR: mean of the first p true ranges, then smoothing."""
    tr = np.maximum(h[1:] - l[1:], np.maximum(np.abs(h[1:] - c[:-1]), np.abs(l[1:] - c[:-1])))
    tr = tr.tolist()
    atr = sum(tr[:p]) / p
    for t in tr[p:]:
        atr = (atr * (p - 1) + t) / p
    return atr


def _bbands(c, p, k):
    w = c[-p:]
    mean, sd = w.mean(), w.std()  # population standard deviation
    return mean + k * sd, mean, mean - k * sd


def _f_rsi(w, p):
    return _rsi(w.cl, p[0])


def _f_macd(which):
    def f(w, p):
        return w.memo(("macd",) + tuple(p), lambda: _macd(w.cl, *p))[which] / w.close
    return f


def _f_natr(w, p):
    return _atr(w.h, w.l, w.c, p[0]) / w.close * 100.0


def _f_ema_dist(w, p):
    return (w.close - _ema(w.cl, p[0])) / w.close


def _f_sma_dist(w, p):
    return (w.close - w.c[-p[0]:].mean()) / w.close


def _f_bb(pctb):
    def f(w, p):
        up, mid, lo = w.memo(("bb",) + tuple(p), lambda: _bbands(w.c, int(p[0]), p[1]))
        if pctb:
            return 0.5 if up == lo else (w.close - lo) / (up - lo)
        return (up - lo) / mid
    return f


def _f_ret(w, p):
    return w.close / w.cl[-1 - p[0]] - 1.0


def _f_logret(w, p):
    return math.log(w.close / w.cl[-1 - p[0]])


def _f_roc(w, p):
    prev = w.cl[-1 - p[0]]
    return (w.close / prev - 1.0) * 100.0 if prev != 0.0 else 0.0


def _f_vol(w, p):
    return float(np.diff(np.log(w.c[-p[0] - 1:])).std())


def _f_zscore(w, p):
    win = w.c[-p[0]:]
    sd = win.std()
    return 0.0 if sd == 0.0 else float((w.close - win.mean()) / sd)


def _f_volume_ratio(w, p):
    avg = w.v[-p[0]:].mean()
    return float(w.v[-1] / avg) if avg != 0.0 else 1.0


def _f_trange_pct(w, p):
    h, l, pc = w.h[-1], w.l[-1], w.cl[-2]
    return max(h - l, abs(h - pc), abs(l - pc)) / w.close * 100.0


# name: (function, integer parameters, real parameter, lookback(params))
FEATURES = {
    "rsi": (_f_rsi, 1, False, lambda p: p[0]),
    "macd": (_f_macd(0), 3, False, lambda p: p[1] - 1 + p[2] - 1),
    "macd_signal": (_f_macd(1), 3, False, lambda p: p[1] - 1 + p[2] - 1),
    "macd_hist": (_f_macd(2), 3, False, lambda p: p[1] - 1 + p[2] - 1),
    "natr": (_f_natr, 1, False, lambda p: p[0]),
    "trange_pct": (_f_trange_pct, 0, False, lambda p: 1),
    "ema_dist": (_f_ema_dist, 1, False, lambda p: p[0] - 1),
    "sma_dist": (_f_sma_dist, 1, False, lambda p: p[0] - 1),
    "bb_pctb": (_f_bb(True), 1, True, lambda p: p[0] - 1),
    "bb_width": (_f_bb(False), 1, True, lambda p: p[0] - 1),
    "ret": (_f_ret, 1, False, lambda p: p[0]),
    "logret": (_f_logret, 1, False, lambda p: p[0]),
    "roc": (_f_roc, 1, False, lambda p: p[0]),
    "vol": (_f_vol, 1, False, lambda p: p[0]),
    "zscore": (_f_zscore, 1, False, lambda p: p[0] - 1),
    "volume_ratio": (_f_volume_ratio, 1, False, lambda p: p[0] - 1),
}


def parse_spec(spec):
    """("rsi:14") -> (function, params, lookback); ValueError when unknown."""
    parts = spec.split(":")
    if parts[0] not in FEATURES:
        raise ValueError("feature '%s' is not implemented by the peer" % spec)
    fn, nint, real, lookback = FEATURES[parts[0]]
    if len(parts) != 1 + nint + (1 if real else 0):
        raise ValueError("feature '%s': wrong number of parameters" % spec)
    params = [int(x) for x in parts[1:1 + nint]] + ([float(parts[-1])] if real else [])
    if nint and min(params[:nint]) < 1:
        raise ValueError("feature '%s': bad period" % spec)
    if parts[0].startswith("macd") and params[0] >= params[1]:
        raise ValueError("feature '%s': fast period must be below slow" % spec)
    return fn, params, lookback(params)


class Window:
    """One window's columns and a memo for computations features share."""

    def __init__(self, ohlcv):
        self.h, self.l, self.c, self.v = ohlcv[:, 1], ohlcv[:, 2], ohlcv[:, 3], ohlcv[:, 4]
        self.cl = self.c.tolist()
        self.close = self.cl[-1]
        self._memo = {}

    def memo(self, key, fn):
        r = self._memo.get(key)
        if r is None:
            r = self._memo[key] = fn()
        return r


def candles_valid(ohlcv):
    """predictd's load_columns(): finite, prices > 0, volume >= 0, high >= low."""
    return bool(np.isfinite(ohlcv).all() and (ohlcv[:, :4] > 0).all() and (ohlcv[:, 4] >= 0).all()
                and (ohlcv[:, 1] >= ohlcv[:, 2]).all())


def feature_vector(specs, ohlcv):
    """The features of the last candle of ohlcv (n x 5: open, high, low,
    close, volume), from exactly that window."""
    w = Window(ohlcv)
    return np.array([fn(w, params) for fn, params, _ in specs], dtype=np.float64)


# ---------------------------------------------------------------------------
# Models

_ACT = {
    0: None,
    1: lambda v: np.maximum(v, 0.0),
    2: np.tanh,
    3: lambda v: 1.0 / (1.0 + np.exp(-v)),
}


class Model:
    """One version of one series, ready to run."""

    def __init__(self, directory, owner, tf, version):
        p = pm.pb2()
        self.msg, self.scaler = p.Model(), p.Scaler()
        with open(os.path.join(directory, "model.pb"), "rb") as f:
            self.msg.ParseFromString(f.read())
        with open(os.path.join(directory, "scaler.pb"), "rb") as f:
            self.scaler.ParseFromString(f.read())
        m = self.msg
        pm.check_model(m, self.scaler)
        self.owner, self.tf, self.version = owner, tf, version
        self.kind = m.kind
        self.kind_name = {p.SOFTMAX: "softmax", p.MLP: "mlp", p.TREES: "trees",
                          p.SEQUENCE: "sequence"}.get(m.kind, "unknown")
        self.specs = [parse_spec(s) for s in m.features]
        min_window = max(lb for _, _, lb in self.specs) + 1
        if m.window < min_window:
            raise ValueError("window %d is below the %d candles the features need"
                             % (m.window, min_window))
        self.window = m.window
        self.steps = m.sequence.steps if m.kind == p.SEQUENCE else 1
        self.need = self.window + self.steps - 1
        self.mean = np.asarray(self.scaler.mean, dtype=np.float64)
        self.scale = np.asarray(self.scaler.scale, dtype=np.float64)
        self.temperature = m.temperature or 1.0
        self.order = [list(m.classes).index(c) for c in CLASSES]  # file order -> canonical
        self.layers = []
        if m.kind in (p.SOFTMAX, p.MLP):
            for d in m.layers:
                if d.activation not in _ACT:
                    raise ValueError("activation %d not supported by the peer" % d.activation)
                w = np.asarray(d.weights, dtype=np.float64).reshape(d.out, getattr(d, "in"))
                self.layers.append((np.ascontiguousarray(w.T), np.asarray(d.bias), _ACT[d.activation]))
        pol = m.policy
        self.sl_atr = pol.sl_atr
        self.tp_r = list(pol.tp_r)
        self.horizon = pol.horizon
        self.min_confidence = pol.min_confidence
        self.atr_period = pol.atr_period or 14
        self.max_age_s = pol.max_age_s
        self.eta = list(pol.eta_candles) if len(pol.eta_candles) == 2 else [math.nan, math.nan]
        meta = m.meta
        self.trained_at = meta.trained_at
        # proto3 has no presence: 0 means not recorded (predictd shows null)
        self.test_accuracy = meta.test_accuracy or None
        self.baseline_accuracy = meta.baseline_accuracy or None
        self._check_golden()

    def _check_golden(self):
        nf = len(self.specs)
        for k, g in enumerate(self.msg.golden):
            x = np.asarray(g.input, dtype=np.float64).reshape(self.steps, nf)
            got = self.probabilities(x)
            want = np.asarray(g.probabilities)[self.order]
            if np.max(np.abs(got - want)) > GOLDEN_TOL:
                raise ValueError("golden case %d: %s, expected %s" % (k, got, want))

    def probabilities(self, x):
        """Probabilities in LONG, SHORT, NO_TRADE order for raw features x
        (steps x n_features)."""
        if self.layers:
            h = (x[-1] - self.mean) / self.scale
            for w, b, act in self.layers:
                h = h @ w + b
                if act is not None:
                    h = act(h)
            z = h
        else:
            z = pm.reference_logits(self.msg, self.scaler, x[None, ...])[0]
        z = z / self.temperature
        e = np.exp(z - z.max())
        return (e / e.sum())[self.order]


class Models:
    """The repository: MODELS/SYMBOL/TF/VERSION, or MODELS/_default/TF/...;
    the highest numeric version serves. Rescanned every RESCAN_S."""

    def __init__(self, root):
        self.root = root
        self.lock = threading.Lock()
        self.table = {}  # (symbol, tf) -> (checked_at, Model or PeerError)

    def _latest(self, owner, tf):
        d = os.path.join(self.root, owner, tf)
        try:
            names = os.listdir(d)
        except OSError:
            return None
        nums = [int(n) for n in names if n.isdigit() and int(n) > 0 and n[0] != "0"
                and os.path.isdir(os.path.join(d, n))]
        return (os.path.join(d, str(max(nums))), max(nums)) if nums else None

    def _load(self, symbol, tf, current):
        for owner in (symbol, "_default"):
            found = self._latest(owner, tf)
            if not found:
                continue
            path, version = found
            if isinstance(current, Model) and (current.owner, current.version) == (owner, version):
                return current
            try:
                return Model(path, owner, tf, version)
            except Exception as e:  # a broken file: the series has no model
                logging.warning("model %s rejected: %s", path, e)
                return PeerError(404, "no_model", "no verified model serves %s %s (%s)"
                                 % (symbol, tf, e))
        return PeerError(404, "no_model", "no verified model serves %s %s" % (symbol, tf))

    def get(self, symbol, tf, now):
        key = (symbol, tf)
        ent = self.table.get(key)
        if ent is None or now - ent[0] >= RESCAN_S:
            with self.lock:
                ent = self.table.get(key)
                if ent is None or now - ent[0] >= RESCAN_S:
                    ent = (now, self._load(symbol, tf, ent[1] if ent else None))
                    self.table[key] = ent
        if isinstance(ent[1], PeerError):
            raise ent[1]
        return ent[1]


# ---------------------------------------------------------------------------
# Database

class Pool:
    """A blocking pool of psycopg2 connections (autocommit), made on first
    use, like SQLAlchemy's QueuePool. A connection that failed is dropped."""

    def __init__(self, dsn, size):
        import psycopg2
        self.psycopg2 = psycopg2
        self.dsn = dsn
        self.idle = queue.LifoQueue()
        self.slots = threading.BoundedSemaphore(size)

    @contextlib.contextmanager
    def connection(self):
        self.slots.acquire()
        conn = None
        try:
            try:
                conn = self.idle.get_nowait()
            except queue.Empty:
                conn = self.psycopg2.connect(self.dsn)
                conn.autocommit = True
            yield conn
            self.idle.put(conn)
            conn = None
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
            self.slots.release()


WINDOW_SQL = ("SELECT open_time, open, high, low, close, volume FROM candles"
              " WHERE symbol = %s AND timeframe = %s AND open_time <= %s"
              " ORDER BY open_time DESC LIMIT %s")


def last_closed_open(now, tfs):
    return now - now % tfs - tfs


def rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


# ---------------------------------------------------------------------------
# The service

class Service:
    def __init__(self, models_dir, dsn, pool_size=4, cache=False):
        self.models = Models(models_dir)
        self.pool = Pool(dsn, pool_size)
        self.cache_on = cache
        self.cache = {}  # (symbol, tf, version, series) -> [prediction dict, checked_at]
        self.cache_lock = threading.Lock()

    def series_exists(self, symbol, tf):
        try:
            with self.pool.connection() as conn, conn.cursor() as cur:
                cur.execute("SELECT 1 FROM candles WHERE symbol = %s AND timeframe = %s LIMIT 1",
                            (symbol, tf))
                return cur.fetchone() is not None
        except (self.pool.psycopg2.OperationalError, self.pool.psycopg2.InterfaceError):
            return True  # cannot tell: keep the no_model answer

    def load_window(self, symbol, tf, now, limit):
        """(times in Unix seconds, n x 5 array), oldest first."""
        last = datetime.fromtimestamp(last_closed_open(now, TF_SECONDS[tf]), timezone.utc)
        psycopg2 = self.pool.psycopg2
        try:
            with self.pool.connection() as conn, conn.cursor() as cur:
                cur.execute(WINDOW_SQL, (symbol, tf, last, limit))
                rows = cur.fetchall()
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            raise PeerError(503, "data_unavailable", "the candle database is unavailable")
        if not rows:
            if not self.series_exists(symbol, tf):
                raise PeerError(404, "unknown_symbol", "no candles for %s %s" % (symbol, tf))
            raise PeerError(503, "insufficient_data", "no closed candle of %s %s" % (symbol, tf))
        rows.reverse()
        times = [int(r[0].timestamp()) for r in rows]
        return times, np.array([r[1:] for r in rows], dtype=np.float64)

    def compute(self, symbol, tf, model, now):
        tfs = TF_SECONDS[tf]
        times, ohlcv = self.load_window(symbol, tf, now, model.need)
        n = len(times)
        if n < model.need:
            raise PeerError(503, "insufficient_data", "%s %s has %d closed candles; the model needs %d"
                            % (symbol, tf, n, model.need))
        if not candles_valid(ohlcv):
            raise PeerError(503, "insufficient_data", "the last %d candles of %s %s give no defined "
                            "features: invalid candle" % (n, symbol, tf))
        x = np.array([feature_vector(model.specs, ohlcv[s:s + model.window])
                      for s in range(model.steps)])
        if not np.isfinite(x).all():
            raise PeerError(503, "insufficient_data", "non-finite features for %s %s" % (symbol, tf))
        probs = model.probabilities(x)
        lw = ohlcv[n - model.window:]
        atr = _atr(lw[:, 1], lw[:, 2], lw[:, 3], model.atr_period)
        entry = float(ohlcv[-1, 3])
        sig = make_signal(model, probs, entry, atr)
        if sig is None:
            raise PeerError(503, "insufficient_data", "no usable ATR for levels of %s %s" % (symbol, tf))
        gaps = sum((b - a) // tfs - 1 for a, b in zip(times, times[1:]) if b - a > tfs)
        direction, levels_for, confidence, stop, tps, eta = sig
        p = [float(v) for v in probs]
        return {
            "symbol": symbol,
            "timeframe": tf,
            "direction": CLASSES[direction],
            "confidence": confidence,
            "probabilities": {"LONG": p[0], "SHORT": p[1], "NO_TRADE": p[2]},
            "model_accuracy": model.test_accuracy,
            "accuracy_source": "backtest",
            "prediction_time": rfc3339(now),
            "valid_until": rfc3339(times[-1] + 2 * tfs),
            "candle_time": rfc3339(times[-1]),
            "entry": entry,
            "stop_loss": stop,
            "take_profits": [{"level": k + 1, "price": tp} for k, tp in enumerate(tps)],
            "tp_eta_minutes": None if math.isnan(eta) else round(eta * tfs / 60.0),
            "levels_for": CLASSES[levels_for],
            "atr": atr,
            "model": {"version": model.version, "label": None, "series": model.owner,
                      "kind": model.kind_name, "trained_at": rfc3339(model.trained_at),
                      "test_accuracy": model.test_accuracy,
                      "baseline_accuracy": model.baseline_accuracy},
            "data": {"candles": model.window, "gaps": gaps},
            "_candle_close": times[-1] + tfs,
            "_trained_at": model.trained_at,
            "_max_age_s": model.max_age_s,
            "_tfs": tfs,
        }

    def predict(self, symbol, tf, now):
        """The prediction dict for (symbol, tf) at now; raises PeerError."""
        if not SYMBOL_RE.match(symbol or ""):
            raise PeerError(400, "invalid_symbol", "symbol must match ^[A-Z0-9]{2,20}$")
        if tf not in TF_SECONDS:
            raise PeerError(400, "invalid_timeframe", "timeframe must be one of 1m, 5m, 15m, 1h, 4h, 1d")
        try:
            model = self.models.get(symbol, tf, now)
        except PeerError as e:
            if e.code == "no_model" and not self.series_exists(symbol, tf):
                raise PeerError(404, "unknown_symbol", "no candles for %s %s" % (symbol, tf))
            raise
        if not self.cache_on:
            return self.compute(symbol, tf, model, now)
        key = (symbol, tf, model.version, model.owner)
        ent = self.cache.get(key)
        if ent is not None:
            pred, checked = ent
            if now < pred["_candle_close"] + pred["_tfs"] or now - checked < RECHECK_S:
                return pred
            ent[1] = now  # past its candle: recompute (others keep serving it meanwhile)
        pred = self.compute(symbol, tf, model, now)
        with self.cache_lock:
            old = self.cache.get(key)
            if old is None or old[0]["candle_time"] <= pred["candle_time"]:
                self.cache[key] = [pred, now]
        return pred

    def respond(self, symbol, tf):
        """(HTTP status, JSON body bytes)."""
        now = int(time.time())
        try:
            pred = self.predict(symbol, tf, now)
        except PeerError as e:
            return e.status, error_body(e.code, e.message)
        except Exception as e:  # a bug: say so, as predictd's 500 would
            logging.exception("prediction failed")
            return 500, error_body("internal_error", str(e))
        out = {k: v for k, v in pred.items() if k[0] != "_"}
        staleness = max(0, now - pred["_candle_close"])
        stale = staleness > 2 * pred["_tfs"]
        expired = pred["_max_age_s"] > 0 and pred["_trained_at"] > 0 and \
            now - pred["_trained_at"] > pred["_max_age_s"]
        warnings = []
        if out["data"]["gaps"]:
            warnings.append("%d missing candles in the feature window" % out["data"]["gaps"])
        if stale:
            warnings.append("stale data: the last closed candle ended %d s ago" % staleness)
        if expired:
            warnings.append("model expired: trained %d days ago" % ((now - pred["_trained_at"]) // 86400))
        out.update(staleness_s=staleness, stale=stale, model_expired=expired, warnings=warnings)
        body = {"status": "success", "timestamp": rfc3339(now), "prediction": out}
        return 200, json.dumps(body, separators=(",", ":")).encode()


def make_signal(model, probs, entry, atr):
    """inference/signal.c: (direction, levels_for, confidence, stop, tps,
    eta_candles), or None when a level would not be a positive price."""
    if not (math.isfinite(entry) and entry > 0 and math.isfinite(atr) and atr > 0):
        return None
    best = 0
    for c in (1, 2):
        if probs[c] > probs[best]:
            best = c
    direction = 2 if probs[best] < model.min_confidence else best
    levels_for = 0 if probs[0] >= probs[1] else 1
    sign = 1.0 if levels_for == 0 else -1.0
    stop = entry - sign * model.sl_atr * atr
    risk = sign * (entry - stop)
    tps = [entry + sign * r * risk for r in model.tp_r]
    if not all(math.isfinite(v) and v > 0 for v in [stop] + tps):
        return None
    return direction, levels_for, float(probs[direction]), stop, tps, model.eta[levels_for]


def error_body(code, message):
    return json.dumps({"status": "error", "error": {"code": code, "message": message}},
                      separators=(",", ":")).encode()


# ---------------------------------------------------------------------------
# HTTP front ends

PATH_RE = re.compile(r"^/api/predictions/([^/]+)$")


def flask_server(service, sock, host, port):
    from flask import Flask, Response, request
    from werkzeug.serving import WSGIRequestHandler, make_server

    app = Flask("peer_python")

    @app.get("/api/predictions/<symbol>")
    def prediction(symbol):
        status, body = service.respond(symbol, request.args.get("timeframe"))
        return Response(body, status=status, mimetype="application/json")

    @app.get("/health")
    def health():
        return Response(b'{"status":"ok"}', mimetype="application/json")

    @app.errorhandler(404)
    def not_found(e):
        return Response(error_body("not_found", "no such route"), status=404,
                        mimetype="application/json")

    class Quiet(WSGIRequestHandler):
        def log_request(self, *a, **kw):  # no access log (predictd's bench runs at warn)
            pass

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    return make_server(host, port, app, threaded=True, request_handler=Quiet, fd=sock.fileno())


def stdlib_server(service, sock, host, port):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as wrk expects
        wbufsize = 1 << 16  # headers and body in one write (flushed per request) ...
        disable_nagle_algorithm = True  # ... and no Nagle/delayed-ACK stall

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            m = PATH_RE.match(url.path)
            if m:
                q = urllib.parse.parse_qs(url.query)
                status, body = service.respond(urllib.parse.unquote(m.group(1)),
                                               q.get("timeframe", [None])[0])
            elif url.path == "/health":
                status, body = 200, b'{"status":"ok"}'
            else:
                status, body = 404, error_body("not_found", "no such route")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

    srv = Server((host, port), Handler, bind_and_activate=False)
    srv.socket.close()
    srv.socket = sock
    return srv


def serve(args):
    host, _, port = args.listen.rpartition(":")
    dsn = os.environ.get("PREDICTD_DATABASE_URL")
    if not dsn:
        sys.exit("peer_python: PREDICTD_DATABASE_URL is not set")
    server_kind = args.server
    if server_kind == "auto":
        try:
            import flask  # noqa: F401
            server_kind = "flask"
        except ImportError:
            server_kind = "stdlib"
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(port)))
    sock.listen(1024)
    print("peer_python: %s, %d worker process(es), cache %s, listening on %s"
          % (server_kind, args.workers, "on" if args.cache else "off", args.listen),
          file=sys.stderr, flush=True)

    def run_worker():
        service = Service(args.models_dir, dsn, args.db_pool, args.cache)
        make = flask_server if server_kind == "flask" else stdlib_server
        make(service, sock, host, int(port)).serve_forever()

    if args.workers <= 1:
        run_worker()
        return
    children = []
    for _ in range(args.workers):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            try:
                run_worker()
            finally:
                os._exit(1)
        children.append(pid)

    def stop(signum, frame):
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    pid, status = os.wait()  # a worker died: stop the others, fail
    children.remove(pid)
    print("peer_python: worker %d exited (status %d)" % (pid, status), file=sys.stderr)
    stop(None, None)


# ---------------------------------------------------------------------------
# Check mode

def check(args):
    """Compares predictd (HTTP, and its CLI when given) with this peer."""
    dsn = os.environ.get("PREDICTD_DATABASE_URL")
    if not dsn:
        sys.exit("peer_python: PREDICTD_DATABASE_URL is not set")
    service = Service(args.models_dir, dsn, 1, False)
    base = args.check.rstrip("/")
    if "/api/predictions" in base:
        base = base[:base.index("/api/predictions")]
    tf = args.timeframe
    worst = {"probabilities": 0.0, "levels_rel": 0.0, "features_rel": 0.0, "window_prob": 0.0}
    failures = []
    windows = 0
    for symbol in [s for s in args.symbols.split(",") if s]:
        url = "%s/api/predictions/%s?timeframe=%s" % (base, symbol, tf)
        for _ in range(3):  # a candle may close between the two answers: ask again
            try:
                with urllib.request.urlopen(url, timeout=10) as r:
                    theirs = json.load(r)
            except urllib.error.HTTPError as e:
                theirs = json.load(e)
            except (urllib.error.URLError, OSError) as e:
                print("python_peer_check FAILED: predictd at %s: %s" % (base, e))
                return 2
            st, body = service.respond(symbol, tf)
            ours = json.loads(body)
            if theirs.get("status") != "success" or ours.get("status") != "success" or \
                    theirs["prediction"]["candle_time"] == ours["prediction"]["candle_time"]:
                break
        if theirs.get("status") != "success" or ours.get("status") != "success":
            a = theirs.get("error", {}).get("code", "success")
            b = ours.get("error", {}).get("code", "success")
            print("%s %s: predictd %s, peer %s" % (symbol, tf, a, b))
            if a != b:
                failures.append("%s: error codes differ (%s vs %s)" % (symbol, a, b))
            continue
        t, o = theirs["prediction"], ours["prediction"]
        dp = max(abs(t["probabilities"][c] - o["probabilities"][c]) for c in CLASSES)
        lv_t = [t["entry"], t["stop_loss"], t["atr"]] + [x["price"] for x in t["take_profits"]]
        lv_o = [o["entry"], o["stop_loss"], o["atr"]] + [x["price"] for x in o["take_profits"]]
        dl = max(abs(a - b) / abs(a) for a, b in zip(lv_t, lv_o))
        worst["probabilities"] = max(worst["probabilities"], dp)
        worst["levels_rel"] = max(worst["levels_rel"], dl)
        same = all(t[k] == o[k] for k in ("direction", "levels_for", "candle_time", "tp_eta_minutes"))
        print("%s %s candle %s: predictd %s %s, peer %s %s; max |dp| %.2e (predictd prints 6 "
              "decimals), levels rel %.2e" % (symbol, tf, t["candle_time"], t["direction"],
                                             t["probabilities"], o["direction"], o["probabilities"],
                                             dp, dl))
        if not same:
            failures.append("%s: direction/levels_for/candle/eta differ" % symbol)
        if args.predictd_bin:
            w, f, p = check_windows(service, args.predictd_bin, symbol, tf)
            windows += w
            worst["features_rel"] = max(worst["features_rel"], f)
            worst["window_prob"] = max(worst["window_prob"], p)
    print("max |probability difference|, live answers: %.3e" % worst["probabilities"])
    print("max relative difference of entry/stop/take-profits/ATR: %.3e" % worst["levels_rel"])
    if args.predictd_bin:
        print("every window (%d): max relative feature difference %.3e, max |probability "
              "difference| %.3e" % (windows, worst["features_rel"], worst["window_prob"]))
    if worst["probabilities"] > 1e-6 + 5e-7:  # predictd rounds to 6 decimals
        failures.append("probabilities differ by %.3e" % worst["probabilities"])
    if worst["levels_rel"] > 1e-9:  # predictd prints 10 significant digits
        failures.append("levels differ by %.3e (relative)" % worst["levels_rel"])
    if worst["window_prob"] > 1e-9:
        failures.append("window probabilities differ by %.3e" % worst["window_prob"])
    for f in failures:
        print("FAIL: " + f)
    line = "python_peer_check %s live_max_prob_diff=%.2e" % ("ok" if not failures else "FAILED",
                                                            worst["probabilities"])
    if args.predictd_bin:
        line += " windows=%d window_max_prob_diff=%.2e window_max_feature_rel_diff=%.2e" % (
            windows, worst["window_prob"], worst["features_rel"])
    print(line)
    return 0 if not failures else 1


def check_windows(service, predictd_bin, symbol, tf):
    """Every window of the series: predictd's features (`predictd features`)
    and probabilities (`predictd models eval`) against the peer's. Returns
    (windows, max relative feature difference, max |probability difference|)."""
    now = int(time.time())
    model = service.models.get(symbol, tf, now)
    times, ohlcv = service.load_window(symbol, tf, now, 100000)
    buf = io.StringIO()
    wr = csv.writer(buf)
    wr.writerow(["open_time", "open", "high", "low", "close", "volume"])
    for t, row in zip(times, ohlcv.tolist()):
        wr.writerow([t] + [repr(v) for v in row])
    out = subprocess.run([predictd_bin, "features", "-", "--spec", ",".join(model.msg.features),
                          "--window", str(model.window)], input=buf.getvalue(), capture_output=True,
                         text=True, check=True).stdout.splitlines()
    theirs = np.array([[float(v) for v in line.split(",")[1:]] for line in out[1:]])
    ours = np.array([feature_vector(model.specs, ohlcv[i + 1 - model.window:i + 1])
                     for i in range(model.window - 1, len(times))])
    if theirs.shape != ours.shape:
        raise SystemExit("feature tables differ in shape: %s vs %s" % (theirs.shape, ours.shape))
    fdiff = float(np.max(np.abs(theirs - ours) / np.maximum(np.abs(theirs), 1e-12)))
    if model.steps != 1:
        return len(ours), fdiff, 0.0  # eval reads steps x features rows: not compared here
    rows = "\n".join(",".join(repr(v) for v in r) for r in theirs.tolist()) + "\n"
    path = os.path.join(service.models.root, model.owner, tf, str(model.version))
    ev = subprocess.run([predictd_bin, "models", "eval", path], input=rows, capture_output=True,
                        text=True, check=True).stdout.splitlines()
    p_theirs = np.array([[float(v) for v in line.split(",")] for line in ev])
    p_ours = np.array([model.probabilities(r[None, :]) for r in ours])
    return len(ours), fdiff, float(np.max(np.abs(p_theirs - p_ours)))


def main():
    ap = argparse.ArgumentParser(description="The Python peer of predictd's prediction endpoint "
                                 "(bench/PEER.md).")
    ap.add_argument("--listen", default="127.0.0.1:8090", help="address:port (default %(default)s)")
    ap.add_argument("--models-dir", default=os.environ.get("PREDICTD_MODELS_DIR", "./models"))
    ap.add_argument("--workers", type=int, default=int(os.environ.get("PEER_WORKERS", "2")),
                    help="processes accepting on the socket (default 2, PEER_WORKERS)")
    ap.add_argument("--db-pool", type=int, default=4,
                    help="database connections per process (default %(default)s)")
    ap.add_argument("--cache", choices=("on", "off"), default=os.environ.get("PEER_CACHE", "off"),
                    help="in-process prediction cache (default off, PEER_CACHE)")
    ap.add_argument("--server", choices=("auto", "flask", "stdlib"),
                    default=os.environ.get("PEER_SERVER", "auto"),
                    help="Flask on werkzeug, or http.server (auto: Flask when installed)")
    ap.add_argument("--check", metavar="URL",
                    help="compare with a running predictd at URL instead of serving")
    ap.add_argument("--symbols", default="BTCUSDT", help="symbols for --check (comma list)")
    ap.add_argument("--timeframe", default="15m", help="timeframe for --check")
    ap.add_argument("--predictd-bin", help="with --check: also compare every window through "
                    "`predictd features` and `predictd models eval`")
    args = ap.parse_args()
    args.cache = args.cache == "on"
    logging.basicConfig(level=logging.WARNING, format="peer_python: %(message)s")
    if args.check:
        sys.exit(check(args))
    serve(args)


if __name__ == "__main__":
    main()
