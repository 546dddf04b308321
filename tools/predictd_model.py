"""predictd model files from Python: the shared half of the exporters.

What it does
- Generates the Python protobuf code for proto/model.proto at run time with
  `protoc` into a cache directory (nothing generated is committed) and
  imports it: pb2() returns the module with Model, Scaler, ...
- Builds the messages every exporter needs: the signal policy, training
  metadata, scaler, golden cases.
- Re-implements predictd's forward pass in numpy from the (serialised, then
  parsed) messages: reference_predict(). Exporters run it on their golden
  inputs before publishing and refuse to write a model whose file does not
  reproduce the library's probabilities, so a mistake in an exporter shows
  up here rather than as a version predictd rejects.
- Publishes a version directory the way predictd does: the next version
  number (one more than the highest numeric directory under
  MODELS/SYMBOL/TF/), model.pb, scaler.pb and a MANIFEST in `sha256sum`
  format written into a hidden temporary directory in the series directory,
  fsynced, then renamed into place (scans ignore names starting with '.').
- Maps float32 tree thresholds (XGBoost, scikit-learn trees compare float32
  feature values) to double thresholds predictd can compare exactly: see
  f32_le_threshold().

What it does not do: train anything, or talk to predictd. Nothing here is
thread-safe beyond what the protobuf runtime gives; exporters are CLIs.

Python: Debian's /usr/bin/python3 (numpy, google.protobuf); protoc on PATH.
"""

import hashlib
import importlib.util
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTO = os.path.join(ROOT, "proto", "model.proto")

CLASS_NAMES = ("LONG", "SHORT", "NO_TRADE")  # predictd's canonical order
DEFAULT_FEATURES = (
    "rsi:14", "macd:12:26:9", "macd_signal:12:26:9", "macd_hist:12:26:9", "natr:14",
    "ema_dist:12", "ema_dist:26", "bb_pctb:20:2", "bb_width:20:2", "ret:1", "ret:5",
    "vol:20", "zscore:60", "volume_ratio:20",
)
DEFAULT_WINDOW = 200
DEFAULT_POLICY = dict(sl_atr=1.5, tp_r=(1.0, 2.0, 3.0), horizon=16, min_confidence=0.45,
                      atr_period=14, max_age_s=0)
TIMEFRAMES = ("1m", "5m", "15m", "1h", "4h", "1d")
SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,20}$")
GOLDEN_TOL = 1e-6  # what predictd's registry allows
N_GOLDEN = 8


class ExportError(Exception):
    """A model that cannot be exported faithfully; the message says why."""


# ---------------------------------------------------------------------------
# Generated protobuf code

_pb2 = None


def _cache_root():
    env = os.environ.get("PREDICTD_PROTO_CACHE")
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "predictd")


def pb2(proto=PROTO):
    """The generated module for proto/model.proto (cached per process, and
    on disk per content hash of the .proto and the protobuf runtime version,
    so a schema or runtime change regenerates)."""
    global _pb2
    if _pb2 is not None:
        return _pb2
    import google.protobuf
    with open(proto, "rb") as f:
        h = hashlib.sha256(f.read())
    h.update(google.protobuf.__version__.encode())
    digest = h.hexdigest()[:16]
    out = None
    fallback = os.path.join(tempfile.gettempdir(), "predictd-proto-%d" % os.getuid())
    for root in (_cache_root(), fallback):
        target = os.path.join(root, "proto-" + digest)
        if os.path.isfile(os.path.join(target, "model_pb2.py")) and \
                os.stat(target).st_uid == os.getuid():
            out = target
            break
        try:
            os.makedirs(root, mode=0o700, exist_ok=True)
            if os.stat(root).st_uid != os.getuid():
                continue  # never import code from a directory someone else owns
            tmp = tempfile.mkdtemp(prefix=".gen-", dir=root)
        except OSError:
            continue
        try:
            try:
                r = subprocess.run(["protoc", "--python_out=" + tmp, "-I",
                                    os.path.dirname(proto), os.path.basename(proto)],
                                   capture_output=True, text=True)
            except FileNotFoundError:
                raise ExportError("protoc not found (apt-get install protobuf-compiler)")
            if r.returncode != 0:
                raise ExportError("protoc failed: " + r.stderr.strip())
            try:
                os.rename(tmp, target)  # atomic; a concurrent generator may win
            except OSError:
                if not os.path.isfile(os.path.join(target, "model_pb2.py")):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        out = target
        break
    if out is None:
        raise ExportError("no writable cache directory for generated protobuf code")
    spec = importlib.util.spec_from_file_location("predictd_model_pb2",
                                                  os.path.join(out, "model_pb2.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    _pb2 = mod
    return mod


# ---------------------------------------------------------------------------
# Building messages

def resolve_classes(labels, mapping=None):
    """Class names (LONG/SHORT/NO_TRADE) for a library's class labels, in the
    library's output order.

    labels: the library's labels in output order (sklearn classes_, or
    [0, 1, 2] for XGBoost). mapping: None, a list of names, or a string:
    "LONG,SHORT,NO_TRADE" (positional, one per output) or
    "0=LONG,1=SHORT,2=NO_TRADE" (by label). Without a mapping, labels that
    already are the names are used as they are, and the integer labels
    0, 1, 2 mean LONG, SHORT, NO_TRADE (predictd's canonical order)."""
    labels = [l.item() if hasattr(l, "item") else l for l in labels]
    if len(labels) != 3:
        raise ExportError("the model has %d classes, predictd needs exactly 3" % len(labels))
    if mapping is None:
        if all(isinstance(l, str) for l in labels):
            names = list(labels)
        elif sorted(labels) == [0, 1, 2] and all(isinstance(l, (int, np.integer)) for l in labels):
            names = [CLASS_NAMES[int(l)] for l in labels]
        else:
            raise ExportError("class labels %r: give --classes (e.g. '-1=SHORT,0=NO_TRADE,1=LONG')"
                              % (labels,))
    else:
        if isinstance(mapping, str):
            parts = [p.strip() for p in mapping.split(",") if p.strip()]
        else:
            parts = list(mapping)
        if parts and all("=" in p for p in parts):
            table = {}
            for p in parts:
                k, v = p.split("=", 1)
                table[k.strip()] = v.strip()
            missing = [l for l in labels if str(l) not in table]
            if missing:
                raise ExportError("--classes has no name for label(s) %r" % (missing,))
            names = [table[str(l)] for l in labels]
        else:
            if len(parts) != 3:
                raise ExportError("--classes needs 3 names, got %r" % (parts,))
            names = parts
    if sorted(names) != sorted(CLASS_NAMES):
        raise ExportError("classes %r are not a permutation of LONG, SHORT, NO_TRADE" % (names,))
    return names


def make_policy(sl_atr=None, tp_r=None, horizon=None, min_confidence=None, atr_period=None,
                max_age_s=None, eta_candles=None, eta_candles_tp=None):
    p = pb2().SignalPolicy()
    d = DEFAULT_POLICY
    p.sl_atr = d["sl_atr"] if sl_atr is None else float(sl_atr)
    p.tp_r.extend(d["tp_r"] if tp_r is None else [float(v) for v in tp_r])
    p.horizon = d["horizon"] if horizon is None else int(horizon)
    p.min_confidence = d["min_confidence"] if min_confidence is None else float(min_confidence)
    p.atr_period = d["atr_period"] if atr_period is None else int(atr_period)
    p.max_age_s = d["max_age_s"] if max_age_s is None else int(max_age_s)
    if eta_candles:
        p.eta_candles.extend(float(v) for v in eta_candles)
    if eta_candles_tp:
        p.eta_candles_tp.extend(float(v) for v in eta_candles_tp)
    if not (p.sl_atr > 0 and math.isfinite(p.sl_atr)):
        raise ExportError("sl_atr must be positive")
    if len(p.tp_r) != 3 or any(not (v > 0) for v in p.tp_r) or list(p.tp_r) != sorted(p.tp_r):
        raise ExportError("tp_r needs three positive ascending multiples")
    if not 0 <= p.min_confidence <= 1:
        raise ExportError("min_confidence must be in [0, 1]")
    if p.horizon < 1 or p.atr_period < 1:
        raise ExportError("horizon and atr_period must be positive")
    if len(p.eta_candles) not in (0, 2) or len(p.eta_candles_tp) not in (0, 3):
        raise ExportError("eta_candles needs 2 values (LONG, SHORT), eta_candles_tp 3")
    return p


def make_meta(trainer, symbol="", timeframe="", trained_at=None, **kw):
    """TrainingMeta; kw: any TrainingMeta field (data_from, test_accuracy,
    symbols, metrics as a {name: value} dict, ...)."""
    m = pb2().TrainingMeta()
    m.trainer = trainer
    m.trained_at = int(time.time()) if trained_at is None else int(trained_at)
    m.symbol = symbol or ""
    m.timeframe = timeframe or ""
    for k, v in kw.items():
        if v is None:
            continue
        if k == "metrics":
            for name, value in dict(v).items():
                m.metrics.add(name=name, value=float(value))
        elif k == "symbols":
            m.symbols.extend(v)
        else:
            setattr(m, k, v)
    return m


def make_scaler(features, mean=None, scale=None):
    """Scaler message; mean None means 0, scale None means 1 (a model
    trained without a scaler)."""
    n = len(features)
    mean = np.zeros(n) if mean is None else np.asarray(mean, dtype=np.float64).ravel()
    scale = np.ones(n) if scale is None else np.asarray(scale, dtype=np.float64).ravel()
    if mean.shape != (n,) or scale.shape != (n,):
        raise ExportError("scaler has %d/%d values for %d features" % (mean.size, scale.size, n))
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(scale)) and np.all(scale != 0)):
        raise ExportError("scaler values must be finite and scale non-zero")
    s = pb2().Scaler()
    s.features.extend(features)
    s.mean.extend(float(v) for v in mean)
    s.scale.extend(float(v) for v in scale)
    return s


def new_model(kind, features, classes, window=DEFAULT_WINDOW, policy=None, meta=None):
    p = pb2()
    m = p.Model()
    m.format = 1
    m.kind = kind if isinstance(kind, int) else p.ModelKind.Value(kind)
    m.features.extend(features)
    m.window = int(window)
    m.classes.extend(classes)
    m.policy.CopyFrom(policy if policy is not None else make_policy())
    if meta is not None:
        m.meta.CopyFrom(meta)
    return m


def dense(weights, bias, activation="LINEAR"):
    """A Dense message from W (out x in) and b (out)."""
    p = pb2()
    w = np.asarray(weights, dtype=np.float64)
    b = np.asarray(bias, dtype=np.float64).ravel()
    if w.ndim != 2 or b.shape != (w.shape[0],):
        raise ExportError("dense layer shapes %r / %r" % (w.shape, b.shape))
    d = p.Dense()
    setattr(d, "in", int(w.shape[1]))  # "in" is a Python keyword
    d.out = int(w.shape[0])
    d.weights.extend(w.ravel().tolist())
    d.bias.extend(b.tolist())
    d.activation = activation if isinstance(activation, int) else p.Activation.Value(activation)
    return d


def add_golden(model, inputs, probabilities):
    """Appends golden cases: inputs (n x n_features, or n x steps x
    n_features, raw) and probabilities (n x 3 in the model's class order)."""
    inputs = np.asarray(inputs, dtype=np.float64)
    probs = np.asarray(probabilities, dtype=np.float64)
    if inputs.shape[0] != probs.shape[0] or probs.shape[1:] != (3,):
        raise ExportError("golden shapes %r / %r" % (inputs.shape, probs.shape))
    if not (np.all(np.isfinite(inputs)) and np.all(np.isfinite(probs))):
        raise ExportError("golden inputs and probabilities must be finite")
    for x, pr in zip(inputs, probs):
        g = model.golden.add()
        g.input.extend(x.ravel().tolist())
        g.probabilities.extend(pr.tolist())


def pick_rows(X, n=N_GOLDEN):
    """n rows spread evenly over X (deterministic)."""
    X = np.asarray(X, dtype=np.float64)
    if X.shape[0] == 0:
        raise ExportError("no input rows for golden cases")
    idx = np.unique(np.linspace(0, X.shape[0] - 1, min(n, X.shape[0])).round().astype(int))
    return X[idx]


# ---------------------------------------------------------------------------
# float32 thresholds

def f32_le_threshold(thr):
    """The double T with (x <= T) == (float32(x) <= thr) for every finite
    double x, where float32() rounds to nearest even as numpy and C casts do.

    scikit-learn trees cast features to float32 and compare them with a
    double threshold; predictd compares doubles. Storing T instead of thr
    makes predictd take exactly the library's branch for every input; T and
    thr differ by at most half a float32 ulp."""
    thr = float(thr)
    if not math.isfinite(thr):
        raise ExportError("non-finite threshold %r" % thr)
    if abs(thr) > float(np.finfo(np.float32).max):
        raise ExportError("threshold %r is outside the float32 range" % thr)
    f = np.float32(thr)
    if float(f) > thr:
        f = np.nextafter(f, np.float32(-np.inf))  # the largest float32 <= thr
    with np.errstate(over="ignore"):
        g = np.nextafter(f, np.float32(np.inf))
    if np.isinf(g):  # f is FLT_MAX: values round to inf from FLT_MAX + ulp/2
        g_val = float(f) + (float(f) - float(np.nextafter(f, np.float32(0))))
    else:
        g_val = float(g)
    m = (float(f) + g_val) / 2  # exact in double: the rounding boundary above f
    with np.errstate(over="ignore"):
        tie_down = np.float32(m) == f  # round-half-even sends m itself to f
    return m if tie_down else float(np.nextafter(m, -np.inf))


def f32_lt_threshold(t):
    """The double T with (x < T) == (float32(x) < t) for every finite double
    x; t must be a float32 value (XGBoost's split conditions)."""
    t32 = np.float32(t)
    if float(t32) != float(t):
        raise ExportError("threshold %r is not a float32 value" % t)
    p = np.nextafter(t32, np.float32(-np.inf))  # largest float32 < t
    if np.isinf(p):
        raise ExportError("threshold %r has no float32 below it" % t)
    return float(np.nextafter(f32_le_threshold(float(p)), np.inf))


def compact_tree(feature, threshold, left, right, value, default_left=None):
    """A Tree message from a library's flat arrays (leaves: feature < 0),
    keeping only nodes reachable from the root and renumbering them in
    breadth-first order, so every child follows its parent and deleted or
    recycled slots (XGBoost after pruning) disappear."""
    n = len(feature)
    t = pb2().Tree()
    order, index = [0], {0: 0}
    k = 0
    while k < len(order):
        i = order[k]
        k += 1
        if feature[i] >= 0:
            for c in (left[i], right[i]):
                if not 0 <= c < n or c in index:
                    raise ExportError("tree node %d: bad or repeated child %d" % (i, c))
                index[c] = len(order)
                order.append(c)
    for i in order:
        leaf = feature[i] < 0
        t.feature.append(-1 if leaf else int(feature[i]))
        t.threshold.append(0.0 if leaf else float(threshold[i]))
        t.left.append(-1 if leaf else index[left[i]])
        t.right.append(-1 if leaf else index[right[i]])
        t.value.append(float(value[i]) if leaf else 0.0)
        if default_left is not None:
            t.default_left.append(bool(default_left[i]))
    if default_left is not None and all(t.default_left):
        del t.default_left[:]  # empty means all true
    return t


def standard_scaler_params(ss):
    """(mean, scale) of a fitted sklearn StandardScaler as predictd applies
    them: (x - mean) / scale, with mean 0 when with_mean is false and scale
    1 when with_std is false."""
    n = int(ss.n_features_in_)
    mean = np.asarray(ss.mean_, dtype=np.float64) if ss.with_mean and ss.mean_ is not None \
        else np.zeros(n)
    scale = np.asarray(ss.scale_, dtype=np.float64) if ss.with_std and ss.scale_ is not None \
        else np.ones(n)
    return mean, scale


def load_scaler(path):
    """(mean, scale) from a pickled StandardScaler (joblib or pickle), an
    .npz with arrays mean and scale, or a .json {"mean": [...],
    "scale": [...]}."""
    if path.endswith(".npz"):
        z = np.load(path)
        return np.asarray(z["mean"], dtype=np.float64), np.asarray(z["scale"], dtype=np.float64)
    if path.endswith(".json"):
        import json
        with open(path) as f:
            d = json.load(f)
        return np.asarray(d["mean"], dtype=np.float64), np.asarray(d["scale"], dtype=np.float64)
    obj = load_pickle(path)
    if not hasattr(obj, "scale_"):
        raise ExportError("%s: not a StandardScaler" % path)
    return standard_scaler_params(obj)


def load_pickle(path):
    """An object saved with joblib.dump or pickle.dump. Only load files you
    trust: unpickling runs code."""
    try:
        import joblib
        return joblib.load(path)
    except ImportError:
        import pickle
        with open(path, "rb") as f:
            return pickle.load(f)


def synth_inputs(n, n_features, mean=None, scale=None, seed=0):
    """n deterministic raw rows around a scaler's mean (N(mean, scale^2)),
    or N(0, 1) without one."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, n_features))
    if mean is None:
        return z
    return np.asarray(mean) + z * np.asarray(scale)


# ---------------------------------------------------------------------------
# Reference forward pass (numpy), what predictd computes

_ACT = {
    0: lambda v: v,
    1: lambda v: np.maximum(v, 0.0),
    2: np.tanh,
    3: lambda v: 1.0 / (1.0 + np.exp(-v)),
    4: lambda v: 0.5 * v * (1.0 + np.vectorize(math.erf)(v / math.sqrt(2.0))),
}


def _softmax(z, temperature):
    t = temperature if temperature else 1.0
    z = z / t
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _dense_fwd(layer, x):
    w = np.asarray(layer.weights, dtype=np.float64).reshape(layer.out, getattr(layer, "in"))
    return _ACT[layer.activation](x @ w.T + np.asarray(layer.bias))


def _tree_fwd(tree, x, rule):
    feat, thr = tree.feature, tree.threshold
    dl = tree.default_left
    i = 0
    for _ in range(len(feat) + 1):
        f = feat[i]
        if f < 0:
            return tree.value[i]
        v = x[f]
        if math.isnan(v):
            left = dl[i] if len(dl) else True
        else:
            left = v < thr[i] if rule == 0 else v <= thr[i]
        i = tree.left[i] if left else tree.right[i]
    raise ExportError("tree has a cycle")


def reference_logits(model, scaler, X):
    """Logits in the model's class order for raw inputs X (n x n_features,
    or n x steps x n_features for SEQUENCE), as predictd computes them."""
    p = pb2()
    X = np.asarray(X, dtype=np.float64)
    mean = np.asarray(scaler.mean, dtype=np.float64)
    scale = np.asarray(scaler.scale, dtype=np.float64)
    nf = len(model.features)
    if model.kind in (p.SOFTMAX, p.MLP):
        h = (X.reshape(-1, nf) - mean) / scale
        for layer in model.layers:
            h = _dense_fwd(layer, h)
        return h
    if model.kind == p.TREES:
        te = model.trees
        Z = X.reshape(-1, nf)
        if te.scaled_input:
            Z = (Z - mean) / scale
        out = np.tile(np.asarray(te.base_score, dtype=np.float64), (Z.shape[0], 1))
        for r, z in enumerate(Z):
            for t, c in zip(te.trees, te.tree_class):
                out[r, c] += _tree_fwd(t, z, te.rule)
        return out
    if model.kind == p.SEQUENCE:
        sq = model.sequence
        X = X.reshape(-1, sq.steps, nf)
        outs = []
        for seq in X:
            h = (seq - mean) / scale  # steps x channels
            for cv in sq.conv:
                w = np.asarray(cv.weights).reshape(cv.out_channels, cv.in_channels, cv.kernel)
                hp = np.pad(h, ((cv.padding, cv.padding), (0, 0)))
                lout = hp.shape[0] - cv.kernel + 1
                o = np.empty((lout, cv.out_channels))
                for t in range(lout):
                    o[t] = np.einsum("oik,ki->o", w, hp[t:t + cv.kernel]) + np.asarray(cv.bias)
                h = _ACT[cv.activation](o)
            if sq.HasField("lstm"):
                ls = sq.lstm
                H = ls.hidden_size
                wi = np.asarray(ls.weight_ih).reshape(4 * H, ls.input_size)
                wh = np.asarray(ls.weight_hh).reshape(4 * H, H)
                b = np.asarray(ls.bias_ih) + np.asarray(ls.bias_hh)
                hs, cs = np.zeros(H), np.zeros(H)
                sig = _ACT[3]
                for xt in h:
                    g = wi @ xt + wh @ hs + b
                    i, f = sig(g[:H]), sig(g[H:2 * H])
                    gg, o = np.tanh(g[2 * H:3 * H]), sig(g[3 * H:])
                    cs = f * cs + i * gg
                    hs = o * np.tanh(cs)
                v = hs
            else:
                v = h[-1]
            for layer in sq.head:
                v = _dense_fwd(layer, v)
            outs.append(v)
        return np.asarray(outs)
    raise ExportError("unknown model kind %d" % model.kind)


def reference_predict(model, scaler, X):
    """Probabilities in the model's class order (n x 3)."""
    return _softmax(reference_logits(model, scaler, X), model.temperature)


def to_canonical(probs, classes):
    """Reorders n x 3 probabilities from `classes` order to LONG, SHORT,
    NO_TRADE (the order `predictd models eval` prints)."""
    probs = np.asarray(probs)
    return probs[:, [list(classes).index(c) for c in CLASS_NAMES]]


# ---------------------------------------------------------------------------
# Checks and files

def check_model(model, scaler):
    """The structural checks predictd makes, in Python, so an exporter fails
    early with a readable reason. Raises ExportError."""
    p = pb2()
    nf = len(model.features)
    if model.format != 1:
        raise ExportError("format must be 1")
    if nf == 0 or list(scaler.features) != list(model.features):
        raise ExportError("scaler features differ from the model's")
    if len(scaler.mean) != nf or len(scaler.scale) != nf:
        raise ExportError("scaler has wrong length")
    if sorted(model.classes) != sorted(CLASS_NAMES):
        raise ExportError("classes must be a permutation of LONG, SHORT, NO_TRADE")
    if model.window < 1:
        raise ExportError("window must be positive")
    nums = []

    def chain(layers, n_in, what):
        for k, layer in enumerate(layers):
            if getattr(layer, "in") != n_in or len(layer.weights) != layer.out * n_in \
                    or len(layer.bias) != layer.out:
                raise ExportError("%s layer %d: shape" % (what, k))
            nums.extend([layer.weights, layer.bias])
            n_in = layer.out
        if n_in != 3:
            raise ExportError("%s ends with %d outputs, not 3" % (what, n_in))

    if model.kind == p.SOFTMAX:
        if len(model.layers) != 1 or model.layers[0].activation != p.LINEAR:
            raise ExportError("SOFTMAX needs one LINEAR dense layer")
        chain(model.layers, nf, "softmax")
    elif model.kind == p.MLP:
        if not model.layers or model.layers[-1].activation != p.LINEAR:
            raise ExportError("MLP's last layer must be LINEAR")
        chain(model.layers, nf, "mlp")
    elif model.kind == p.TREES:
        te = model.trees
        if te.n_features != nf or te.n_classes != 3 or len(te.trees) != len(te.tree_class) \
                or len(te.base_score) != 3 or not te.trees:
            raise ExportError("tree ensemble header")
        nums.append(te.base_score)
        for k, t in enumerate(te.trees):
            n = len(t.feature)
            if not n or any(len(a) != n for a in (t.threshold, t.left, t.right, t.value)) \
                    or len(t.default_left) not in (0, n):
                raise ExportError("tree %d: array lengths" % k)
            for i in range(n):
                if t.feature[i] >= nf:
                    raise ExportError("tree %d: feature index" % k)
                if t.feature[i] >= 0 and not (i < t.left[i] < n and i < t.right[i] < n):
                    raise ExportError("tree %d: child index (children must follow parents)" % k)
            nums.extend([t.threshold, t.value])
            if te.tree_class[k] >= 3:
                raise ExportError("tree %d: class" % k)
    elif model.kind == p.SEQUENCE:
        sq = model.sequence
        n_in, steps = nf, sq.steps
        if steps < 1:
            raise ExportError("sequence steps")
        for k, cv in enumerate(sq.conv):
            if cv.in_channels != n_in or cv.kernel < 1 or \
                    len(cv.weights) != cv.out_channels * cv.in_channels * cv.kernel or \
                    len(cv.bias) != cv.out_channels:
                raise ExportError("conv %d: shape" % k)
            steps = steps + 2 * cv.padding - cv.kernel + 1
            if steps < 1:
                raise ExportError("conv %d: no output steps" % k)
            nums.extend([cv.weights, cv.bias])
            n_in = cv.out_channels
        if sq.HasField("lstm"):
            ls, H = sq.lstm, sq.lstm.hidden_size
            if ls.input_size != n_in or H < 1 or len(ls.weight_ih) != 4 * H * n_in or \
                    len(ls.weight_hh) != 4 * H * H or len(ls.bias_ih) != 4 * H or \
                    len(ls.bias_hh) != 4 * H:
                raise ExportError("lstm: shape")
            nums.extend([ls.weight_ih, ls.weight_hh, ls.bias_ih, ls.bias_hh])
            n_in = H
        chain(sq.head, n_in, "head")
    else:
        raise ExportError("unknown model kind")
    for arr in nums:
        if len(arr) and not np.all(np.isfinite(np.asarray(arr, dtype=np.float64))):
            raise ExportError("non-finite weight")
    if not model.golden:
        raise ExportError("no golden cases")


def self_check(model, scaler, tol=1e-9):
    """Round-trips the messages through their bytes and checks that the
    numpy forward pass reproduces every golden case within tol. Returns the
    largest difference. Raises ExportError."""
    p = pb2()
    m2 = p.Model.FromString(model.SerializeToString(deterministic=True))
    s2 = p.Scaler.FromString(scaler.SerializeToString(deterministic=True))
    check_model(m2, s2)
    worst = 0.0
    for k, g in enumerate(m2.golden):
        got = reference_predict(m2, s2, np.asarray(g.input)[None, :])[0]
        d = float(np.max(np.abs(got - np.asarray(g.probabilities))))
        worst = max(worst, d)
        if not d <= tol:
            raise ExportError("golden case %d: the exported file gives %r, the library %r"
                              % (k, got.tolist(), list(g.probabilities)))
    return worst


def _sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path, data):
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_manifest(dirpath, names=("model.pb", "scaler.pb")):
    """(Re)writes MANIFEST in `sha256sum` format for the named files."""
    text = "".join("%s  %s\n" % (_sha256_file(os.path.join(dirpath, n)), n) for n in names)
    _write_file(os.path.join(dirpath, "MANIFEST"), text.encode())


def write_version_dir(dirpath, model, scaler):
    """Writes model.pb, scaler.pb and MANIFEST into an existing directory
    (not atomic: publish() is). Returns dirpath."""
    _write_file(os.path.join(dirpath, "model.pb"), model.SerializeToString(deterministic=True))
    _write_file(os.path.join(dirpath, "scaler.pb"), scaler.SerializeToString(deterministic=True))
    write_manifest(dirpath)
    _fsync_dir(dirpath)
    return dirpath


def series_versions(series_dir):
    """Numeric version directories present, ascending."""
    try:
        names = os.listdir(series_dir)
    except FileNotFoundError:
        return []
    out = []
    for n in names:
        if n.isdigit() and int(n) > 0 and os.path.isdir(os.path.join(series_dir, n)):
            out.append(int(n))
    return sorted(out)


def check_series(symbol, timeframe):
    if symbol != "_default" and not SYMBOL_RE.match(symbol or ""):
        raise ExportError("symbol %r must match ^[A-Z0-9]{2,20}$ (or be _default)" % symbol)
    if timeframe not in TIMEFRAMES:
        raise ExportError("timeframe %r must be one of %s" % (timeframe, " ".join(TIMEFRAMES)))


def publish(models_dir, symbol, timeframe, model, scaler, attempts=20):
    """Publishes the next version of symbol/timeframe atomically: writes the
    files into a hidden temporary directory in the series directory, fsyncs,
    renames it to max(version)+1, fsyncs the series directory. Sets
    model.meta.version (and symbol/timeframe when empty) first. Returns
    (version, path).

    A concurrent publisher that takes the same number makes our rename fail
    (the target exists and is not empty); we then retry with the next one."""
    check_series(symbol, timeframe)
    series = os.path.join(models_dir, symbol, timeframe)
    os.makedirs(series, exist_ok=True)
    if not model.meta.symbol:
        model.meta.symbol = symbol
    if not model.meta.timeframe:
        model.meta.timeframe = timeframe
    for _ in range(attempts):
        have = series_versions(series)
        version = (have[-1] if have else 0) + 1
        model.meta.version = version
        tmp = tempfile.mkdtemp(prefix=".publish-", dir=series)
        try:
            os.chmod(tmp, 0o755)
            write_version_dir(tmp, model, scaler)
            final = os.path.join(series, str(version))
            if os.path.exists(final):
                continue
            try:
                os.rename(tmp, final)
            except OSError:
                continue
            tmp = None
            _fsync_dir(series)
            return version, final
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
    raise ExportError("could not claim a version number in %s" % series)


# ---------------------------------------------------------------------------
# Input files and the common command line

def read_rows(path):
    """Raw feature rows from a .npy file or a CSV (optional header line,
    comma-separated numbers)."""
    if path.endswith(".npy"):
        return np.load(path).astype(np.float64)
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                rows.append([float(v) for v in line.split(",")])
            except ValueError:
                if rows:
                    raise ExportError("%s: bad number in line %r" % (path, line[:60]))
                continue  # header
    if not rows or len({len(r) for r in rows}) != 1:
        raise ExportError("%s: no rows, or rows of different lengths" % path)
    return np.asarray(rows, dtype=np.float64)


def _floats(s):
    return [float(v) for v in s.split(",") if v.strip()]


def add_common_args(ap):
    """Arguments every exporter takes: where to write, the feature specs and
    window, the signal policy, training metadata, golden inputs."""
    g = ap.add_argument_group("output")
    g.add_argument("--models-dir", default=os.environ.get("PREDICTD_MODELS_DIR", "./models"),
                   help="model repository (default $PREDICTD_MODELS_DIR or ./models)")
    g.add_argument("--symbol", help="series symbol, e.g. BTCUSDT, or _default")
    g.add_argument("--timeframe", help="1m 5m 15m 1h 4h 1d")
    g.add_argument("--out", help="write the version files into this directory instead of "
                   "publishing the next version (the directory is created)")
    g.add_argument("--dry-run", action="store_true", help="build and check, write nothing")
    g = ap.add_argument_group("model")
    g.add_argument("--features", help="comma-separated feature specs in input order, or @FILE "
                   "with one per line (default: the 14 default specs)")
    g.add_argument("--window", type=int, default=DEFAULT_WINDOW, help="lookback candles (200)")
    g.add_argument("--classes", help="class names for the library's labels: "
                   "'LONG,SHORT,NO_TRADE' (positional) or '0=LONG,1=SHORT,2=NO_TRADE'")
    g.add_argument("--inputs", help="raw feature rows (CSV or .npy) to take golden cases from; "
                   "default: synthesised from the scaler or the tree thresholds")
    g.add_argument("--n-golden", type=int, default=N_GOLDEN, help="golden cases (8)")
    g = ap.add_argument_group("signal policy")
    g.add_argument("--sl-atr", type=float, default=DEFAULT_POLICY["sl_atr"])
    g.add_argument("--tp-r", type=_floats, default=list(DEFAULT_POLICY["tp_r"]),
                   help="three take-profit multiples of risk (1,2,3)")
    g.add_argument("--horizon", type=int, default=DEFAULT_POLICY["horizon"])
    g.add_argument("--min-confidence", type=float, default=DEFAULT_POLICY["min_confidence"])
    g.add_argument("--atr-period", type=int, default=DEFAULT_POLICY["atr_period"])
    g.add_argument("--max-age-s", type=int, default=0)
    g.add_argument("--eta-candles", type=_floats, help="median candles to TP1: LONG,SHORT")
    g.add_argument("--eta-candles-tp", type=_floats, help="median candles per TP level (3)")
    g = ap.add_argument_group("training metadata")
    g.add_argument("--trained-at", type=int, help="Unix seconds (default now)")
    g.add_argument("--data-from", type=int)
    g.add_argument("--data-to", type=int)
    g.add_argument("--train-samples", type=int)
    g.add_argument("--test-samples", type=int)
    g.add_argument("--test-accuracy", type=float)
    g.add_argument("--baseline-accuracy", type=float)
    g.add_argument("--seed", type=int)
    g.add_argument("--notes")
    return ap


def features_from_args(args):
    if not args.features:
        return list(DEFAULT_FEATURES)
    if args.features.startswith("@"):
        with open(args.features[1:]) as f:
            specs = [l.strip() for l in f if l.strip() and not l.startswith("#")]
    else:
        specs = [s.strip() for s in args.features.split(",") if s.strip()]
    if not specs:
        raise ExportError("--features is empty")
    return specs


def policy_from_args(args):
    return make_policy(args.sl_atr, args.tp_r, args.horizon, args.min_confidence,
                       args.atr_period, args.max_age_s, args.eta_candles, args.eta_candles_tp)


def meta_from_args(args, trainer):
    return make_meta(trainer, symbol=args.symbol, timeframe=args.timeframe,
                     trained_at=args.trained_at, data_from=args.data_from, data_to=args.data_to,
                     train_samples=args.train_samples, test_samples=args.test_samples,
                     test_accuracy=args.test_accuracy, baseline_accuracy=args.baseline_accuracy,
                     seed=args.seed, notes=args.notes)


def write_from_args(args, model, scaler):
    """Runs the self-check, then publishes, writes --out, or (--dry-run)
    nothing. Prints one line saying what was written; returns the path."""
    worst = self_check(model, scaler)
    if args.dry_run:
        print("ok: %d golden cases reproduce (max diff %.3g); nothing written"
              % (len(model.golden), worst))
        return None
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        path = write_version_dir(args.out, model, scaler)
    else:
        if not args.symbol or not args.timeframe:
            raise ExportError("give --symbol and --timeframe (or --out DIR)")
        _, path = publish(args.models_dir, args.symbol, args.timeframe, model, scaler)
    print(path)
    return path


def run_cli(main):
    """Calls main(), turning ExportError into a one-line message and exit 1."""
    try:
        sys.exit(main())
    except ExportError as e:
        print("error: %s" % e, file=sys.stderr)
        sys.exit(1)
