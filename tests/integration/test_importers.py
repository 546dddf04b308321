#!/usr/bin/python3
"""Exporter parity: models trained here with scikit-learn, XGBoost and
PyTorch, exported with tools/, and checked by the real predictd binary.

For each exporter: train a small model on deterministic synthetic data with
14 features, export it into a temporary models directory, then
- Python side: the numpy forward pass over the written protobuf
  (predictd_model.reference_predict) reproduces the library on 200 fresh
  inputs (and, for trees, on inputs placed exactly on and next to every
  split threshold, where float32 rounding matters);
- `$PREDICTD_BIN models verify DIR` exits 0 (the registry reproduced the
  golden cases within 1e-6);
- `$PREDICTD_BIN models eval DIR` on the same inputs gives the library's
  probabilities within 1e-5, in LONG,SHORT,NO_TRADE order.
Negative controls: a tampered golden probability, a flipped byte in
model.pb, a NaN weight, an unknown feature spec and a missing scaler.pb each
make verify fail. Also: the float32 threshold mapping, atomic publishing
and MANIFEST format, class-name mapping, the CLIs end to end.

Output: one line per test ("ok NAME", "FAIL NAME: why", "skip NAME: why"),
then "N passed, N failed, N skipped". Run: /usr/bin/python3 this file
(tests/run sets PREDICTD_BIN; the default is build/predictd).
"""

import os
import shutil
import subprocess
import sys
import tempfile
import traceback
import warnings

import numpy as np

ROOT = os.environ.get("PREDICTD_ROOT") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(ROOT, "tools")
sys.path.insert(0, TOOLS)
import predictd_model as pm  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import check, sanitizer_lines  # noqa: E402  (never a bare assert: python -O drops it)

PY = "/usr/bin/python3"
BIN = os.environ.get("PREDICTD_BIN") or os.path.join(ROOT, "build", "predictd")
EVAL_TOL = 1e-5
NF = 14
STEPS = 12
warnings.filterwarnings("ignore")  # sklearn convergence warnings on tiny fits


class Skip(Exception):
    pass


# ---------------------------------------------------------------------------
# Synthetic data: 14 features with realistic, very different scales (RSI
# around 50, returns around 1e-3), labels from a noisy nonlinear rule.

MU = np.array([50, 0, 0, 0, 0.5, 0, 0, 0.5, 0.05, 0, 0, 0.01, 0, 1.0])
SD = np.array([15, 0.002, 0.002, 0.001, 0.2, 0.01, 0.015, 0.3, 0.02, 0.005, 0.01, 0.005, 1, 0.5])


def data(n, seed, labels=("LONG", "SHORT", "NO_TRADE")):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, NF))
    X = MU + SD * z
    w = np.random.default_rng(99).standard_normal((NF, 3))
    score = z @ w + 0.8 * np.tanh(z[:, :3] * z[:, 3:6]) + 0.7 * rng.standard_normal((n, 3))
    y = np.asarray(labels, dtype=object)[np.argmax(score, axis=1)]
    if all(isinstance(l, (int, np.integer)) for l in labels):
        y = y.astype(np.int64)
    return X, y


def seq_data(n, seed):
    rng = np.random.default_rng(seed)
    z = np.cumsum(rng.standard_normal((n, STEPS, NF)), axis=1)
    z /= np.sqrt(np.arange(1, STEPS + 1))[:, None]
    X = MU + SD * z
    y = np.argmax(z[:, -1, :3] - z[:, 0, :3] + 0.5 * rng.standard_normal((n, 3)), axis=1)
    return X, y


def need(mod):
    try:
        return __import__(mod)
    except Exception as e:  # noqa: BLE001 - any import failure means skip
        raise Skip("%s not importable: %s" % (mod, e))


# ---------------------------------------------------------------------------
# predictd

_caps = None


def predictd_caps():
    """Which of `models verify` / `models eval` the binary has."""
    global _caps
    if _caps is None:
        if not os.access(BIN, os.X_OK):
            _caps = "no executable at %s (make)" % BIN
        else:
            txt = ""
            for args in (["models", "--help"], ["models", "verify", "--help"],
                         ["models", "eval", "--help"]):
                r = subprocess.run([BIN] + args, capture_output=True, text=True, timeout=30)
                txt += r.stdout + r.stderr
            missing = [c for c in ("verify", "eval") if c not in txt]
            _caps = ("%s has no 'models %s'" % (BIN, "/".join(missing))) if missing else ""
    if _caps:
        raise AssertionError(_caps)


def verify(d):
    predictd_caps()
    r = subprocess.run([BIN, "models", "verify", d], capture_output=True, text=True, timeout=60)
    san = sanitizer_lines(r.stderr)
    check(not san, "models verify %s: sanitizer report: %s" % (d, san[:1]))
    return r.returncode, (r.stdout + r.stderr).strip()


def predictd_eval(d, X):
    """predictd's probabilities (n x 3, LONG,SHORT,NO_TRADE) for raw rows."""
    predictd_caps()
    X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    text = "".join(",".join(repr(float(v)) for v in row) + "\n" for row in X)
    r = subprocess.run([BIN, "models", "eval", d], input=text, capture_output=True, text=True,
                       timeout=120)
    san = sanitizer_lines(r.stderr)
    check(not san, "models eval %s: sanitizer report: %s" % (d, san[:1]))
    if r.returncode != 0:
        raise AssertionError("models eval exit %d: %s" % (r.returncode, r.stderr.strip()[-300:]))
    rows = []
    for line in r.stdout.splitlines():
        try:
            vals = [float(v) for v in line.split(",")]
        except ValueError:
            continue  # a header
        if len(vals) != 3:
            raise AssertionError("models eval line %r" % line)
        rows.append(vals)
    if len(rows) != len(X):
        raise AssertionError("models eval printed %d rows for %d inputs" % (len(rows), len(X)))
    return np.asarray(rows)


def close(a, b, tol, what):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise AssertionError("%s: shapes %r vs %r" % (what, a.shape, b.shape))
    d = float(np.max(np.abs(a - b)))
    if not d <= tol:
        i = int(np.argmax(np.max(np.abs(a - b), axis=tuple(range(1, a.ndim)))))
        raise AssertionError("%s: max diff %.3g > %.0e (row %d: %r vs %r)"
                             % (what, d, tol, i, a[i].tolist(), b[i].tolist()))
    return d


def check_with_predictd(d, X, lib_probs, classes, extra=None):
    """verify exits 0; eval reproduces lib_probs (model class order)."""
    rc, out = verify(d)
    check(rc == 0, "models verify %s: exit %d: %s" % (d, rc, out[-300:]))
    want = pm.to_canonical(lib_probs, classes)
    close(predictd_eval(d, X), want, EVAL_TOL, "predictd eval vs library")
    if extra is not None:
        Xe, pe = extra
        close(predictd_eval(d, Xe), pm.to_canonical(pe, classes), EVAL_TOL,
              "predictd eval vs library on threshold-edge rows")


def load_dir(d):
    p = pm.pb2()
    with open(os.path.join(d, "model.pb"), "rb") as f:
        m = p.Model.FromString(f.read())
    with open(os.path.join(d, "scaler.pb"), "rb") as f:
        s = p.Scaler.FromString(f.read())
    return m, s


def edge_rows(base, splits):
    """Rows equal to base except one feature placed on, and on each side of,
    a split threshold: the exact value, its neighbouring doubles, its float32
    rounding and that float32's neighbours, and the midpoint between that
    float32 and the one below (where float32 rounding ties)."""
    rows = []
    for f, t in splits:
        t = float(t)
        t32 = float(np.float32(t))
        below32 = float(np.nextafter(np.float32(t32), np.float32(-np.inf)))
        cands = {t, np.nextafter(t, np.inf), np.nextafter(t, -np.inf), t32,
                 np.nextafter(t32, np.inf), np.nextafter(t32, -np.inf), (t32 + below32) / 2,
                 np.nextafter((t32 + below32) / 2, np.inf)}
        for v in sorted(cands):
            r = base.copy()
            r[f] = v
            rows.append(r)
    return np.asarray(rows)


# ---------------------------------------------------------------------------
# Tests: library side

def test_f32_threshold_mapping():
    rng = np.random.default_rng(7)
    thrs = list(rng.standard_normal(400) * 10.0 ** rng.integers(-30, 30, 400))
    thrs += [0.0, -0.0, 1e-45, -1e-45, 1e-50, -1e-50, 1.0, -1.0, 0.1, 3.4e38,
             float(np.finfo(np.float32).max)]
    n = 0
    for thr in thrs:
        T = pm.f32_le_threshold(thr)
        t32 = float(np.float32(thr))
        for base in (thr, t32, T):
            x = base
            pts = [x]
            for step in (np.inf, -np.inf):
                y = x
                for _ in range(3):
                    y = np.nextafter(y, step)
                    pts.append(y)
            for x in pts:
                with np.errstate(over="ignore"):
                    lib = float(np.float32(x)) <= thr
                check((x <= T) == lib, "LE thr=%r x=%r T=%r" % (thr, x, T))
                n += 1
                if abs(t32) < 3e38:
                    T2 = pm.f32_lt_threshold(t32)
                    with np.errstate(over="ignore"):
                        lib = float(np.float32(x)) < t32
                    check((x < T2) == lib, "LT t=%r x=%r T=%r" % (t32, x, T2))
        check(abs(T - thr) <= abs(thr) * 2 ** -23 + 2e-45, "T moved too far: %r -> %r" % (thr, T))
    for bad in (float("nan"), float("inf"), 1e39):
        try:
            pm.f32_le_threshold(bad)
        except pm.ExportError:
            continue
        raise AssertionError("threshold %r accepted" % bad)
    try:
        pm.f32_lt_threshold(0.1)  # not a float32 value
        raise AssertionError("f32_lt_threshold took a non-float32 threshold")
    except pm.ExportError:
        pass


def test_classes_mapping():
    r = pm.resolve_classes
    check(r(["LONG", "NO_TRADE", "SHORT"]) == ["LONG", "NO_TRADE", "SHORT"])
    check(r([0, 1, 2]) == ["LONG", "SHORT", "NO_TRADE"])
    check(r(np.array([0, 1, 2])) == ["LONG", "SHORT", "NO_TRADE"])
    check(r([-1, 0, 1], "-1=SHORT,0=NO_TRADE,1=LONG") == ["SHORT", "NO_TRADE", "LONG"])
    check(r([0, 1, 2], "NO_TRADE,LONG,SHORT") == ["NO_TRADE", "LONG", "SHORT"])
    for labels, mapping in (([-1, 0, 1], None), ([0, 1], None), ([0, 1, 2], "LONG,LONG,SHORT"),
                            ([0, 1, 2], "0=LONG,1=SHORT"), (["A", "B", "C"], None),
                            ([0, 1, 2], "LONG,SHORT")):
        try:
            r(labels, mapping)
        except pm.ExportError:
            continue
        raise AssertionError("accepted %r with %r" % (labels, mapping))


def _tiny_model():
    p = pm.pb2()
    m = pm.new_model("SOFTMAX", pm.DEFAULT_FEATURES, ["LONG", "SHORT", "NO_TRADE"],
                     meta=pm.make_meta("test", trained_at=1700000000))
    w = np.arange(3 * NF, dtype=np.float64).reshape(3, NF) / 100
    m.layers.append(pm.dense(w, [0.1, -0.2, 0.0]))
    sc = pm.make_scaler(pm.DEFAULT_FEATURES, MU, SD)
    X = MU + SD * np.random.default_rng(1).standard_normal((8, NF))
    pm.add_golden(m, X, pm.reference_predict(m, sc, X))
    return p, m, sc


def test_publish_atomic_and_manifest():
    _, m, sc = _tiny_model()
    root = tempfile.mkdtemp(prefix="pub-", dir=TMP)
    v1, d1 = pm.publish(root, "BTCUSDT", "15m", m, sc)
    v2, d2 = pm.publish(root, "BTCUSDT", "15m", m, sc)
    check((v1, v2) == (1, 2), (v1, v2))
    series = os.path.join(root, "BTCUSDT", "15m")
    os.mkdir(os.path.join(series, "7"))
    os.mkdir(os.path.join(series, ".hidden99"))
    os.mkdir(os.path.join(series, "notanumber"))
    with open(os.path.join(series, "40"), "w") as f:  # a file, not a version
        f.write("x")
    v3, d3 = pm.publish(root, "BTCUSDT", "15m", m, sc)
    check(v3 == 8, v3)
    left = [n for n in os.listdir(series) if n.startswith(".publish-")]
    check(not left, "temporary dirs left: %r" % left)
    for v, d in ((1, d1), (2, d2), (8, d3)):
        check(sorted(os.listdir(d)) == ["MANIFEST", "model.pb", "scaler.pb"], os.listdir(d))
        r = subprocess.run(["sha256sum", "-c", "--strict", "MANIFEST"], cwd=d,
                           capture_output=True, text=True)
        check(r.returncode == 0, r.stdout + r.stderr)
        with open(os.path.join(d, "MANIFEST")) as f:
            lines = f.read().split("\n")
        check(lines[2:] == [""] and lines[0].endswith("  model.pb") and \
            lines[1].endswith("  scaler.pb") and len(lines[0]) == 64 + 10, lines)
        mm, ss = load_dir(d)
        check(mm.meta.version == v and mm.meta.symbol == "BTCUSDT" and \
            mm.meta.timeframe == "15m", mm.meta)
        check(list(ss.mean) == list(MU) and list(mm.features) == list(pm.DEFAULT_FEATURES))
        check(mm.window == 200 and mm.policy.sl_atr == 1.5 and list(mm.policy.tp_r) == [1, 2, 3])
        check(mm.policy.horizon == 16 and mm.policy.min_confidence == 0.45 and \
            mm.policy.atr_period == 14)
    # the default series and bad names
    v, _ = pm.publish(root, "_default", "1h", m, sc)
    check(v == 1)
    for sym, tf in (("btcusdt", "15m"), ("BTCUSDT", "2m"), ("../X", "15m"), ("B", "1h")):
        try:
            pm.publish(root, sym, tf, m, sc)
        except pm.ExportError:
            continue
        raise AssertionError("published %s/%s" % (sym, tf))


_PUBLISHER = r"""
import sys
sys.path.insert(0, sys.argv[1])
import predictd_model as pm
m = pm.pb2().Model.FromString(open(sys.argv[3], "rb").read())
s = pm.pb2().Scaler.FromString(open(sys.argv[4], "rb").read())
for _ in range(int(sys.argv[5])):
    print(pm.publish(sys.argv[2], "ADAUSDT", "1m", m, s)[0])
"""


def test_publish_concurrent():
    """Three processes publishing into one series at once get distinct,
    consecutive versions, each directory complete and self-consistent."""
    _, m, sc = _tiny_model()
    work = tempfile.mkdtemp(prefix="conc-", dir=TMP)
    mp, sp = os.path.join(work, "m.pb"), os.path.join(work, "s.pb")
    with open(mp, "wb") as f:
        f.write(m.SerializeToString())
    with open(sp, "wb") as f:
        f.write(sc.SerializeToString())
    root = os.path.join(work, "models")
    procs = [subprocess.Popen([PY, "-c", _PUBLISHER, TOOLS, root, mp, sp, "5"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    got = []
    for pr in procs:
        out, err = pr.communicate(timeout=120)
        check(pr.returncode == 0, err[-300:])
        got += [int(v) for v in out.split()]
    check(sorted(got) == list(range(1, 16)), sorted(got))
    series = os.path.join(root, "ADAUSDT", "1m")
    check(sorted(os.listdir(series), key=lambda n: int(n)) == [str(v) for v in range(1, 16)])
    for v in range(1, 16):
        d = os.path.join(series, str(v))
        r = subprocess.run(["sha256sum", "-c", "--strict", "--quiet", "MANIFEST"], cwd=d,
                           capture_output=True, text=True)
        check(r.returncode == 0, r.stdout + r.stderr)
        check(load_dir(d)[0].meta.version == v)


def test_self_check_catches_bad_files():
    p, m, sc = _tiny_model()
    pm.self_check(m, sc)
    bad = p.Model()
    bad.CopyFrom(m)
    bad.golden[3].probabilities[0] += 1e-4
    _expect_export_error(lambda: pm.self_check(bad, sc), "golden case 3")
    bad.CopyFrom(m)
    bad.layers[0].weights[5] = float("nan")
    _expect_export_error(lambda: pm.self_check(bad, sc), "non-finite")
    bad.CopyFrom(m)
    del bad.layers[0].bias[-1]
    _expect_export_error(lambda: pm.self_check(bad, sc), "shape")
    bad.CopyFrom(m)
    bad.classes[1] = "LONG"
    _expect_export_error(lambda: pm.self_check(bad, sc), "permutation")
    _expect_export_error(lambda: pm.make_scaler(pm.DEFAULT_FEATURES, MU, SD * 0), "non-zero")


def _expect_export_error(fn, words):
    try:
        fn()
    except pm.ExportError as e:
        check(words in str(e), "error %r lacks %r" % (str(e), words))
        return
    raise AssertionError("no ExportError (%s)" % words)


# ---------------------------------------------------------------------------
# scikit-learn

def _export_dir(m, sc, sym="BTCUSDT", tf="15m"):
    root = os.path.join(TMP, "models")
    v, d = pm.publish(root, sym, tf, m, sc)
    return d


def _sk_check(est, X, y, Xt, classes_arg=None, edge=None, scaler=None, on_dir=None):
    """Fits est, exports, checks Python-side parity on Xt (and edge rows),
    then with predictd (on_dir(d) is called before that). Returns the
    version dir and its model."""
    es = __import__("export_sklearn")
    est.fit(X if scaler is None else scaler.fit_transform(X), y)

    def proba(R):
        return est.predict_proba(R if scaler is None else scaler.transform(R))

    m, sc = es.export(est, scaler, classes_arg, golden_inputs=X[:400])
    check(len(m.golden) == 8)
    pm.self_check(m, sc)
    d = _export_dir(m, sc)
    m, sc = load_dir(d)  # what predictd will read
    close(pm.reference_predict(m, sc, Xt), proba(Xt), 1e-9, "numpy over model.pb vs sklearn")
    extra = None
    if edge is not None:
        Xe = edge(est)
        pe = proba(Xe)
        close(pm.reference_predict(m, sc, Xe), pe, 1e-9, "numpy vs sklearn on edge rows")
        extra = (Xe, pe)
    if on_dir:
        on_dir(d)
    check_with_predictd(d, Xt, proba(Xt), m.classes, extra)
    return d, m


def test_sklearn_logreg_softmax():
    need("sklearn")
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    X, y = data(1500, 1)
    Xt, _ = data(200, 2)

    def keep(d):  # the negative controls mutate copies of this export
        global LOGREG_DIR
        LOGREG_DIR = d

    d, m = _sk_check(make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
                     X, y, Xt, on_dir=keep)
    p = pm.pb2()
    check(m.kind == p.SOFTMAX and list(m.classes) == ["LONG", "NO_TRADE", "SHORT"], m.classes)
    check(m.meta.trainer.startswith("sklearn 1."), m.meta.trainer)


def test_sklearn_logreg_separate_scaler_int_labels():
    need("sklearn")
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    X, y = data(1000, 3, labels=(1, -1, 0))
    Xt, _ = data(200, 4)
    _, m = _sk_check(LogisticRegression(max_iter=1000, C=0.5), X, y, Xt,
                     "-1=SHORT,0=NO_TRADE,1=LONG", scaler=StandardScaler())
    check(list(m.classes) == ["SHORT", "NO_TRADE", "LONG"], m.classes)


def test_sklearn_logreg_ovr_refused():
    need("sklearn")
    from sklearn.linear_model import LogisticRegression
    es = __import__("export_sklearn")
    X, y = data(300, 5)
    lr = LogisticRegression(multi_class="ovr", max_iter=500).fit(X, y)
    _expect_export_error(lambda: es.export(lr), "multinomial")
    X2, y2 = data(300, 5, labels=("LONG", "SHORT", "SHORT"))
    lr2 = LogisticRegression(max_iter=500).fit(X2, y2)
    _expect_export_error(lambda: es.export(lr2), "exactly 3")
    lr3 = LogisticRegression(max_iter=500).fit(X[:, :10], y)
    _expect_export_error(lambda: es.export(lr3), "reads 10 features")


def _mlp_test(act):
    def t():
        need("sklearn")
        from sklearn.neural_network import MLPClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        X, y = data(1200, 10, labels=(0, 1, 2))
        Xt, _ = data(200, 11)
        mlp = MLPClassifier((24, 12), activation=act, max_iter=150, random_state=0)
        _, m = _sk_check(make_pipeline(StandardScaler(), mlp), X, y, Xt)
        p = pm.pb2()
        want = {"relu": p.RELU, "tanh": p.TANH, "logistic": p.SIGMOID, "identity": p.LINEAR}[act]
        check(m.kind == p.MLP and [l.activation for l in m.layers] == [want, want, p.LINEAR])
        check([(getattr(l, "in"), l.out) for l in m.layers] == [(14, 24), (24, 12), (12, 3)])
        check(list(m.classes) == ["LONG", "SHORT", "NO_TRADE"])
    t.__name__ = "test_sklearn_mlp_" + act
    return t


def _gb_edges(X0):
    def edges(gb):
        splits = []
        for reg in gb.estimators_.ravel():
            tr = reg.tree_
            splits += [(f, t) for f, t in zip(tr.feature, tr.threshold) if f >= 0]
        return edge_rows(X0.copy(), splits[:150])
    return edges


def test_sklearn_gradient_boosting_trees():
    need("sklearn")
    from sklearn.ensemble import GradientBoostingClassifier
    X, y = data(1200, 20)
    Xt, _ = data(200, 21)
    gb = GradientBoostingClassifier(n_estimators=25, max_depth=3, learning_rate=0.2,
                                    random_state=0)

    def keep(d):
        global GB_DIR
        GB_DIR = d

    _, m = _sk_check(gb, X, y, Xt, edge=_gb_edges(Xt[0]), on_dir=keep)
    p = pm.pb2()
    te = m.trees
    check(m.kind == p.TREES and te.rule == p.LESS_EQUAL and not te.scaled_input)
    check(len(te.trees) == 75 and list(te.tree_class[:6]) == [0, 1, 2, 0, 1, 2])
    prior = np.log(np.bincount(np.searchsorted(gb.classes_, y)) / len(y))
    close(te.base_score, prior, 1e-12, "base_score = log prior")
    _naive_thresholds_disagree(gb, m, Xt[0])


def _naive_thresholds_disagree(gb, m, x0):
    """Control: the raw sklearn thresholds, compared in double, do take other
    branches than sklearn on the edge rows (so the mapping is needed and the
    edge-row checks have teeth)."""
    p = pm.pb2()
    naive = p.Model()
    naive.CopyFrom(m)
    k = 0
    for stage in gb.estimators_:
        for reg in stage:
            tr = reg.tree_
            feat = tr.feature.copy()
            feat[tr.children_left < 0] = -1
            naive.trees.trees[k].CopyFrom(pm.compact_tree(
                feat, tr.threshold, tr.children_left, tr.children_right,
                tr.value[:, 0, 0] * gb.learning_rate))
            k += 1
    Xe = _gb_edges(x0)(gb)
    sc = pm.make_scaler(list(m.features))
    diff = np.max(np.abs(pm.reference_predict(naive, sc, Xe) - gb.predict_proba(Xe)), axis=1)
    check(np.sum(diff > 1e-9) > 0, "naive thresholds agreed everywhere: edge rows too weak")


def test_sklearn_gradient_boosting_scaled_zero_init():
    need("sklearn")
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    X, y = data(1000, 22, labels=(2, 0, 1))
    Xt, _ = data(200, 23)
    gb = GradientBoostingClassifier(n_estimators=15, max_depth=2, init="zero", random_state=1,
                                    subsample=0.8)
    pipe = make_pipeline(StandardScaler(), gb)

    def edges(est):
        ss = est.steps[0][1]
        mean, scale = pm.standard_scaler_params(ss)
        splits = []
        for reg in gb.estimators_.ravel():
            tr = reg.tree_
            splits += [(f, t) for f, t in zip(tr.feature, tr.threshold) if f >= 0]
        z = edge_rows(np.zeros(NF), splits[:100])  # on the scaled thresholds
        return mean + z * scale  # raw rows near them (rounding may move them a little)

    _, m = _sk_check(pipe, X, y, Xt, edge=edges)
    check(m.trees.scaled_input and list(m.trees.base_score) == [0, 0, 0])


# ---------------------------------------------------------------------------
# XGBoost

def _xgb_train(seed=30, rounds=20, nan=False):
    xgb = need("xgboost")
    X, y = data(1200, seed, labels=(0, 1, 2))
    if nan:
        X = X.copy()
        X[np.random.default_rng(seed).random(X.shape) < 0.1] = np.nan
    params = {"objective": "multi:softprob", "num_class": 3, "max_depth": 4, "eta": 0.3,
              "seed": 1, "nthread": 1, "subsample": 0.9}
    return xgb.train(params, xgb.DMatrix(X, label=y), num_boost_round=rounds)


def test_xgboost_trees():
    ex = need("export_xgboost")
    b = _xgb_train()
    m, sc = ex.export(b, "NO_TRADE,LONG,SHORT", golden_inputs=data(50, 31)[0])
    d = _export_dir(m, sc, "ETHUSDT", "1h")
    m, sc = load_dir(d)
    p = pm.pb2()
    check(m.kind == p.TREES and m.trees.rule == p.LESS and not m.trees.scaled_input)
    check(list(m.classes) == ["NO_TRADE", "LONG", "SHORT"])
    check(list(m.trees.base_score) == [0.5] * 3 and len(m.trees.trees) == 60)
    check(m.meta.trainer.startswith("xgboost 1."), m.meta.trainer)
    Xt, _ = data(200, 32)
    f32, dbl, _ = ex.library_proba(b, Xt, None)
    close(pm.reference_predict(m, sc, Xt), dbl, 1e-12, "numpy vs XGBoost leaves in double")
    close(pm.reference_predict(m, sc, Xt), f32, EVAL_TOL, "numpy vs XGBoost predict (float32)")
    splits = []
    for feature, cond, _, _, _ in ex.parse(b)["trees"]:
        splits += [(f, c) for f, c in zip(feature, cond) if f >= 0]
    Xe = edge_rows(Xt[0].copy(), splits[:200])
    f32e, dble, _ = ex.library_proba(b, Xe, None)
    close(pm.reference_predict(m, sc, Xe), dble, 1e-12, "numpy vs XGBoost on edge rows")
    # control: naive float32 thresholds compared in double disagree somewhere
    naive = p.Model()
    naive.CopyFrom(m)
    for t in naive.trees.trees:
        for i, f in enumerate(t.feature):
            if f >= 0:
                t.threshold[i] = float(np.float32(t.threshold[i]))
    diff = np.max(np.abs(pm.reference_predict(naive, sc, Xe) - dble), axis=1)
    check(np.sum(diff > 1e-9) > 0, "naive thresholds agreed everywhere: edge rows too weak")
    check_with_predictd(d, Xt, f32, m.classes, (Xe, f32e))


def test_xgboost_missing_values_default_left():
    ex = need("export_xgboost")
    b = _xgb_train(seed=33, nan=True)
    m, sc = ex.export(b)
    check(any(len(t.default_left) for t in m.trees.trees), "no default_left recorded")
    check(any(not all(t.default_left) for t in m.trees.trees if len(t.default_left)))
    Xt, _ = data(300, 34)
    Xt[np.random.default_rng(35).random(Xt.shape) < 0.2] = np.nan
    _, dbl, _ = ex.library_proba(b, Xt, None)
    # predictd refuses non-finite inputs; the file's missing-value routing
    # is checked in numpy against XGBoost's own leaves
    close(pm.reference_predict(m, sc, Xt), dbl, 1e-12, "numpy vs XGBoost with NaN")
    # get_dump's 'missing' child agrees with default_left
    import json
    for k, js in enumerate(b.get_dump(dump_format="json")[:10]):
        def walk(node, out):
            if "children" in node:
                out.append(node["missing"] == node["yes"])
                for c in node["children"]:
                    walk(c, out)
        dump_dl = []
        walk(json.loads(js), dump_dl)
        t = ex.parse(b)["trees"][k]
        raw_dl = [dl for f, dl in zip(t[0], t[4]) if f >= 0]
        check(sorted(dump_dl) == sorted(raw_dl), "tree %d default_left" % k)


def test_xgboost_classifier_early_stopping_rounds():
    xgb = need("xgboost")
    ex = __import__("export_xgboost")
    X, y = data(800, 40, labels=(0, 1, 2))
    Xv, yv = data(300, 41, labels=(0, 1, 2))
    clf = xgb.XGBClassifier(n_estimators=60, max_depth=3, learning_rate=0.5, n_jobs=1,
                            random_state=0, early_stopping_rounds=3, eval_metric="mlogloss")
    clf.fit(X, y, eval_set=[(Xv, yv)], verbose=False)
    check(clf.best_iteration + 1 < 60, "early stopping did not stop (%d)" % clf.best_iteration)
    m, sc = ex.export(clf)
    check(len(m.trees.trees) == 3 * (clf.best_iteration + 1), len(m.trees.trees))
    Xt, _ = data(200, 42)
    close(pm.reference_predict(m, sc, Xt), clf.predict_proba(Xt), EVAL_TOL,
          "numpy vs XGBClassifier.predict_proba")
    d = _export_dir(m, sc, "SOLUSDT", "4h")
    check_with_predictd(d, Xt, clf.predict_proba(Xt), m.classes)


# ---------------------------------------------------------------------------
# PyTorch

def _torch_net(cfg, seed):
    torch = need("torch")
    et = need("export_torch")
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    net = et.ConvLstmNet(n_features=NF, steps=STEPS, **cfg)
    X, y = seq_data(256, seed)
    mean, scale = X.reshape(-1, NF).mean(0), X.reshape(-1, NF).std(0)
    Z = torch.from_numpy(((X - mean) / scale).astype(np.float32))
    yt = torch.from_numpy(y)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(15):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(Z), yt)
        loss.backward()
        opt.step()
    return net, mean, scale


def _torch_test(name, cfg, classes):
    def t():
        net, mean, scale = _torch_net(cfg, 50 + len(name))
        et = __import__("export_torch")
        Xg, _ = seq_data(40, 60)
        m, sc = et.export(net, mean, scale, classes, golden_inputs=Xg)
        d = _export_dir(m, sc, "BNBUSDT", "5m")
        global TORCH_DIR
        TORCH_DIR = TORCH_DIR or d
        m, sc = load_dir(d)
        p = pm.pb2()
        check(m.kind == p.SEQUENCE and m.sequence.steps == STEPS)
        check(len(m.golden[0].input) == STEPS * NF)
        Xt, _ = seq_data(200, 61)
        p32, p64 = et.library_proba(net, Xt, mean, scale)
        close(pm.reference_predict(m, sc, Xt), p64, 1e-9, "numpy vs torch float64")
        close(p32, p64, EVAL_TOL, "torch float32 vs float64")
        check_with_predictd(d, Xt, p32, m.classes)
        close(predictd_eval(d, Xt), pm.to_canonical(p64, m.classes), 1e-9,
              "predictd eval vs torch float64")
    t.__name__ = "test_torch_" + name
    return t


# ---------------------------------------------------------------------------
# The CLIs end to end

def _cli(script, *args):
    """Runs an exporter as users do: a separate /usr/bin/python3 process."""
    r = subprocess.run([PY, os.path.join(TOOLS, script)] + list(args), capture_output=True,
                       text=True, timeout=120)
    return r.returncode, r.stdout.strip(), r.stderr.strip()


def _main(script, *args):
    """The same exporter's main() in this process (no interpreter start-up):
    (exit code, stdout, error message) as run_cli would give them."""
    import contextlib
    import io
    mod = __import__(script[:-3])
    out, err = io.StringIO(), io.StringIO()
    rc = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = mod.main(list(args))
        except pm.ExportError as e:
            rc, err = 1, io.StringIO("error: %s" % e)
        except SystemExit as e:  # argparse
            rc = e.code
    return rc, out.getvalue().strip(), err.getvalue().strip()


def test_cli_sklearn():
    need("sklearn")
    import joblib
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.preprocessing import StandardScaler
    X, y = data(800, 70)
    gb = GradientBoostingClassifier(n_estimators=10, max_depth=3, random_state=0).fit(X, y)
    ss = StandardScaler().fit(X)
    work = tempfile.mkdtemp(prefix="cli-sk-", dir=TMP)
    mp, inp = os.path.join(work, "gb.joblib"), os.path.join(work, "rows.csv")
    joblib.dump(gb, mp)
    Xg, _ = data(30, 71)
    with open(inp, "w") as f:
        f.write(",".join("f%d" % i for i in range(NF)) + "\n")
        for r in Xg:
            f.write(",".join(repr(float(v)) for v in r) + "\n")
    models = os.path.join(work, "models")
    rc, out, err = _cli("export_sklearn.py", "--model", mp, "--models-dir", models,
                        "--symbol", "XRPUSDT", "--timeframe", "1d", "--inputs", inp,
                        "--horizon", "24", "--tp-r", "1,1.5,2.5", "--min-confidence", "0.5",
                        "--eta-candles", "3,4", "--trained-at", "1700000000",
                        "--test-accuracy", "0.61", "--notes", "cli test")
    check(rc == 0, err)
    check(out == os.path.join(models, "XRPUSDT", "1d", "1"), out)
    m, sc = load_dir(out)
    check(m.policy.horizon == 24 and list(m.policy.tp_r) == [1, 1.5, 2.5])
    check(m.policy.min_confidence == 0.5 and list(m.policy.eta_candles) == [3, 4])
    check(m.meta.trained_at == 1700000000 and m.meta.test_accuracy == 0.61)
    check(m.meta.notes == "cli test" and m.meta.version == 1)
    check(list(sc.mean) == [0.0] * NF and list(sc.scale) == [1.0] * NF)
    close([g.input for g in m.golden], pm.pick_rows(Xg), 0, "golden rows from --inputs")
    Xt, _ = data(200, 72)
    check_with_predictd(out, Xt, gb.predict_proba(Xt), m.classes)
    # errors: unknown estimator, wrong feature count, bad policy
    joblib.dump(ss, os.path.join(work, "ss.joblib"))
    rc, _, err = _main("export_sklearn.py", "--model", os.path.join(work, "ss.joblib"),
                      "--out", os.path.join(work, "x"))
    check(rc == 1 and "unsupported estimator" in err, err)
    rc, _, err = _main("export_sklearn.py", "--model", mp, "--features", "rsi:14,ret:1",
                      "--out", os.path.join(work, "x"))
    check(rc == 1 and "reads 14 features, 2 specs" in err, err)
    rc, _, err = _main("export_sklearn.py", "--model", mp, "--tp-r", "3,2,1", "--dry-run")
    check(rc == 1 and "ascending" in err, err)
    rc, out, err = _main("export_sklearn.py", "--model", mp, "--dry-run")
    check(rc == 0 and out.startswith("ok: 8 golden cases"), out + err)
    # a 5-feature logistic regression behind a separate scaler, specs from a file
    from sklearn.linear_model import LogisticRegression
    cols = [0, 9, 10, 11, 12]
    specs = ["rsi:14", "ret:1", "ret:5", "vol:20", "zscore:60"]
    ss5 = StandardScaler().fit(X[:, cols])
    lr5 = LogisticRegression(max_iter=1000).fit(ss5.transform(X[:, cols]), y)
    joblib.dump(lr5, os.path.join(work, "lr5.joblib"))
    joblib.dump(ss5, os.path.join(work, "ss5.joblib"))
    with open(os.path.join(work, "specs.txt"), "w") as f:
        f.write("# model inputs\n" + "\n".join(specs) + "\n")
    rc, out, err = _main("export_sklearn.py", "--model", os.path.join(work, "lr5.joblib"),
                        "--scaler", os.path.join(work, "ss5.joblib"), "--features",
                        "@" + os.path.join(work, "specs.txt"), "--window", "80",
                        "--models-dir", models, "--symbol", "XRPUSDT", "--timeframe", "1d")
    check(rc == 0 and out.endswith("/XRPUSDT/1d/2"), out + err)
    m5, sc5 = load_dir(out)
    check(list(m5.features) == specs and list(sc5.features) == specs and m5.window == 80)
    close(sc5.scale, ss5.scale_, 0, "scaler scale")
    Xt5 = Xt[:, cols]
    check_with_predictd(out, Xt5, lr5.predict_proba(ss5.transform(Xt5)), m5.classes)
    rc, _, err = _main("export_sklearn.py", "--model", mp, "--models-dir", models)
    check(rc == 1 and "--symbol" in err, err)


def test_cli_xgboost():
    need("xgboost")
    b = _xgb_train(seed=80, rounds=8)
    work = tempfile.mkdtemp(prefix="cli-xgb-", dir=TMP)
    mp = os.path.join(work, "booster.json")
    b.save_model(mp)
    out_dir = os.path.join(work, "v")
    rc, out, err = _cli("export_xgboost.py", "--model", mp, "--out", out_dir,
                        "--classes", "0=SHORT,1=LONG,2=NO_TRADE", "--rounds", "5")
    check(rc == 0, err)
    m, sc = load_dir(out_dir)
    check(list(m.classes) == ["SHORT", "LONG", "NO_TRADE"] and len(m.trees.trees) == 15)
    ex = __import__("export_xgboost")
    Xt, _ = data(200, 81)
    f32, _, _ = ex.library_proba(b, Xt, 5)
    check_with_predictd(out_dir, Xt, f32, m.classes)
    rc, _, err = _main("export_xgboost.py", "--model", mp, "--rounds", "9", "--dry-run")
    check(rc == 1 and "rounds 9" in err, err)


def test_cli_torch():
    need("torch")
    et = need("export_torch")
    net, mean, scale = _torch_net(dict(conv=((6, 3, 1, "relu"),), lstm_hidden=8), 90)
    work = tempfile.mkdtemp(prefix="cli-torch-", dir=TMP)
    ck = os.path.join(work, "net.pt")
    et.save_checkpoint(ck, net, mean, scale, ("SHORT", "LONG", "NO_TRADE"))
    Xg, _ = seq_data(20, 91)
    np.save(os.path.join(work, "g.npy"), Xg)
    models = os.path.join(work, "models")
    rc, out, err = _cli("export_torch.py", "--checkpoint", ck, "--models-dir", models,
                        "--symbol", "_default", "--timeframe", "15m", "--window", "120",
                        "--inputs", os.path.join(work, "g.npy"))
    check(rc == 0, err)
    m, sc = load_dir(out)
    check(m.window == 120 and list(m.classes) == ["SHORT", "LONG", "NO_TRADE"])
    check(m.meta.trainer.startswith("torch "), m.meta.trainer)
    close(sc.mean, mean, 0, "scaler mean")
    Xt, _ = seq_data(200, 92)
    p32, _ = et.library_proba(net, Xt, mean, scale)
    check_with_predictd(out, Xt, p32, m.classes)
    bad = os.path.join(work, "bad.pt")
    need("torch").save({"state_dict": net.state_dict()}, bad)
    rc, _, err = _main("export_torch.py", "--checkpoint", bad, "--dry-run")
    check(rc == 1 and "not a predictd-convlstm-1 checkpoint" in err, err)


# ---------------------------------------------------------------------------
# Negative controls with predictd

def _variant(name, mutate, fix_manifest=True, src=None, lib="sklearn"):
    """A copy of a version dir (default: the logistic regression's) with
    model.pb mutated; MANIFEST rewritten to match unless fix_manifest is
    false."""
    src = src or LOGREG_DIR
    if src is None:
        need(lib)
        raise AssertionError("needs the %s export made by an earlier test" % lib)
    d = os.path.join(TMP, "neg", name)
    shutil.copytree(src, d)
    path = os.path.join(d, "model.pb")
    with open(path, "rb") as f:
        raw = f.read()
    raw = mutate(raw)
    with open(path, "wb") as f:
        f.write(raw)
    if fix_manifest:
        pm.write_manifest(d)
    return d


def _mutate_model(fn):
    def mutate(raw):
        m = pm.pb2().Model.FromString(raw)
        fn(m)
        return m.SerializeToString()
    return mutate


def _expect_verify_fails(d, words):
    rc, out = verify(d)
    check(rc != 0, "models verify accepted %s" % d)
    low = out.lower()
    check(any(w in low for w in words), "reason %r mentions none of %r" % (out[-200:], words))


def test_negative_baseline_verifies():
    if LOGREG_DIR is None:
        need("sklearn")
        raise AssertionError("needs test_sklearn_logreg_softmax's export")
    rc, out = verify(LOGREG_DIR)
    check(rc == 0, out)


def test_negative_tampered_golden():
    def f(m):
        m.golden[2].probabilities[1] += 2e-6  # just over the 1e-6 tolerance
    d = _variant("golden", _mutate_model(f))
    _expect_verify_fails(d, ("golden",))
    d2 = _variant("golden_ok", _mutate_model(
        lambda m: m.golden[2].probabilities.__setitem__(1, m.golden[2].probabilities[1] + 5e-7)))
    rc, out = verify(d2)
    check(rc == 0, "a 5e-7 change (within 1e-6) was refused: " + out)


def test_negative_flipped_byte_manifest():
    def flip(raw):
        b = bytearray(raw)
        b[len(b) // 2] ^= 0x01
        return bytes(b)
    d = _variant("flip", flip, fix_manifest=False)
    _expect_verify_fails(d, ("manifest", "sha256", "hash", "digest", "checksum"))


def test_negative_nan_weight():
    d = _variant("nan", _mutate_model(lambda m: m.layers[0].weights.__setitem__(7, float("nan"))))
    _expect_verify_fails(d, ("finite", "nan"))


def test_negative_unknown_feature_and_missing_scaler():
    def f(m):
        m.features[3] = "no_such_feature:9"
    d = _variant("feature", _mutate_model(f))
    p = pm.pb2()
    with open(os.path.join(d, "scaler.pb"), "rb") as fh:
        s = p.Scaler.FromString(fh.read())
    s.features[3] = "no_such_feature:9"
    with open(os.path.join(d, "scaler.pb"), "wb") as fh:
        fh.write(s.SerializeToString())
    pm.write_manifest(d)
    _expect_verify_fails(d, ("no_such_feature", "feature"))
    d2 = _variant("noscaler", lambda raw: raw)
    os.unlink(os.path.join(d2, "scaler.pb"))
    _expect_verify_fails(d2, ("scaler", "manifest", "no such file"))


def test_negative_tree_structure():
    def cycle(m):  # a child pointing back at the root
        t = m.trees.trees[4]
        i = next(k for k, f in enumerate(t.feature) if f >= 0 and k > 0)
        t.left[i] = 0
    d = _variant("tree_cycle", _mutate_model(cycle), src=GB_DIR)
    _expect_verify_fails(d, ("twice", "cycle", "not a tree"))

    def out_of_range(m):
        m.trees.trees[2].right[0] = len(m.trees.trees[2].feature) + 5
    d = _variant("tree_range", _mutate_model(out_of_range), src=GB_DIR)
    _expect_verify_fails(d, ("out of range",))

    def short_classes(m):
        del m.trees.tree_class[-1]
    d = _variant("tree_class", _mutate_model(short_classes), src=GB_DIR)
    _expect_verify_fails(d, ("tree_class",))


def test_negative_sequence_shapes():
    def lstm_input(m):
        m.sequence.lstm.input_size += 1
    d = _variant("lstm_in", _mutate_model(lstm_input), src=TORCH_DIR, lib="torch")
    _expect_verify_fails(d, ("lstm",))

    def conv_weights(m):
        del m.sequence.conv[0].weights[-1]
    d = _variant("conv_w", _mutate_model(conv_weights), src=TORCH_DIR, lib="torch")
    _expect_verify_fails(d, ("conv",))

    def golden_width(m):
        del m.golden[0].input[-1]
    d = _variant("golden_w", _mutate_model(golden_width), src=TORCH_DIR, lib="torch")
    _expect_verify_fails(d, ("golden",))


# ---------------------------------------------------------------------------

LOGREG_DIR = None
GB_DIR = None
TORCH_DIR = None
TMP = None

TESTS = [
    test_f32_threshold_mapping,
    test_classes_mapping,
    test_publish_atomic_and_manifest,
    test_publish_concurrent,
    test_self_check_catches_bad_files,
    test_sklearn_logreg_softmax,
    test_sklearn_logreg_separate_scaler_int_labels,
    test_sklearn_logreg_ovr_refused,
    _mlp_test("relu"),
    _mlp_test("tanh"),
    _mlp_test("logistic"),
    _mlp_test("identity"),
    test_sklearn_gradient_boosting_trees,
    test_sklearn_gradient_boosting_scaled_zero_init,
    test_xgboost_trees,
    test_xgboost_missing_values_default_left,
    test_xgboost_classifier_early_stopping_rounds,
    _torch_test("conv_lstm", dict(conv=((16, 3, 1, "relu"),), lstm_hidden=16), None),
    _torch_test("conv2_gelu_lstm_mlp_head", dict(conv=((8, 3, 1, "gelu"), (8, 2, 0, "tanh")),
                                                  lstm_hidden=10, head=(12,)),
                ("NO_TRADE", "SHORT", "LONG")),
    _torch_test("conv_only_sigmoid", dict(conv=((8, 5, 0, "sigmoid"),), lstm_hidden=0,
                                          head=(6,), head_activation="tanh"), None),
    test_cli_sklearn,
    test_cli_xgboost,
    test_cli_torch,
    test_negative_baseline_verifies,
    test_negative_tampered_golden,
    test_negative_flipped_byte_manifest,
    test_negative_nan_weight,
    test_negative_unknown_feature_and_missing_scaler,
    test_negative_tree_structure,
    test_negative_sequence_shapes,
]


def main():
    global TMP
    base = os.environ.get("PREDICTD_TEST_TMP") or None
    TMP = tempfile.mkdtemp(prefix="importers-", dir=base)
    os.environ["PREDICTD_PROTO_CACHE"] = os.environ.get("PREDICTD_PROTO_CACHE") or \
        os.path.join(TMP, "proto-cache")
    passed = failed = skipped = 0
    try:
        for t in TESTS:
            name = t.__name__[len("test_"):]
            try:
                t()
            except Skip as e:
                skipped += 1
                print("skip %s: %s" % (name, e))
            except Exception as e:  # noqa: BLE001 - report every failure
                failed += 1
                why = str(e) or type(e).__name__
                if not isinstance(e, AssertionError):
                    why = "%s: %s" % (type(e).__name__, why)
                    tb = traceback.extract_tb(e.__traceback__)[-1]
                    why += " (%s:%d)" % (os.path.basename(tb.filename), tb.lineno)
                print("FAIL %s: %s" % (name, why.replace("\n", " | ")))
            else:
                passed += 1
                print("ok %s" % name)
            sys.stdout.flush()
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
    print("%d passed, %d failed, %d skipped" % (passed, failed, skipped))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
