#!/usr/bin/python3
"""scikit-learn classifiers -> a predictd model version.

  LogisticRegression (multinomial, 3 classes)      -> SOFTMAX
  MLPClassifier (relu/tanh/logistic/identity)      -> MLP
  GradientBoostingClassifier (3 classes, log-loss) -> TREES (rule LESS_EQUAL)

The estimator may come alone, with a separate StandardScaler, or as a
Pipeline [StandardScaler,] classifier. The scaler becomes scaler.pb (mean 0,
scale 1 without one). Linear models and MLPs read the scaled features.
Gradient boosting reads the raw features (scaled_input false), or the scaled
ones when the pipeline scales them first (scaled_input true).

Exactness: sklearn casts the features to float32 before walking its trees
and compares with a double threshold; predictd compares double features.
Each threshold is replaced by the double that splits every double input
exactly as sklearn does (predictd_model.f32_le_threshold), so predictd's
branches are the library's, not just close to them.

Golden cases are sklearn's own predict_proba on 8 raw rows (from --inputs,
or synthesised), in classes_ order, which is the order `classes` is written
in. The exporter checks its own file against them before writing.

Usage: /usr/bin/python3 tools/export_sklearn.py --model MODEL.joblib
           [--scaler SCALER.joblib] --symbol BTCUSDT --timeframe 15m [...]
(see tools/README.md and --help)
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import predictd_model as pm  # noqa: E402

_MLP_ACT = {"identity": "LINEAR", "relu": "RELU", "tanh": "TANH", "logistic": "SIGMOID"}


def _split_pipeline(est):
    """(classifier, scaler-or-None, predict_proba source)."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    if isinstance(est, Pipeline):
        steps = [s for _, s in est.steps if s is not None and s != "passthrough"]
        if len(steps) == 1:
            return steps[0], None, est
        if len(steps) == 2 and isinstance(steps[0], StandardScaler):
            return steps[1], steps[0], est
        raise pm.ExportError("a pipeline must be [StandardScaler,] classifier; got %s"
                             % [type(s).__name__ for s in steps])
    return est, None, est


def _is_multinomial(lr):
    mc = getattr(lr, "multi_class", "auto")
    if mc == "multinomial":
        return True
    if mc == "auto":
        return lr.solver != "liblinear" and len(lr.classes_) > 2
    return False


def _trees_model(gb, features, classes, window, policy, meta, scaled_input):
    p = pm.pb2()
    from sklearn.ensemble import GradientBoostingClassifier
    if not isinstance(gb, GradientBoostingClassifier):
        raise pm.ExportError("not a GradientBoostingClassifier")
    if gb.estimators_.shape[1] != 3:
        raise pm.ExportError("gradient boosting must have 3 class outputs")
    loss = getattr(gb, "loss", "log_loss")
    if loss not in ("log_loss", "deviance"):
        raise pm.ExportError("gradient boosting loss %r: only log_loss (multinomial)" % loss)
    m = pm.new_model("TREES", features, classes, window, policy, meta)
    te = m.trees
    te.n_features = len(features)
    te.n_classes = 3
    te.rule = p.LESS_EQUAL
    te.scaled_input = scaled_input
    lr = float(gb.learning_rate)
    for stage in gb.estimators_:
        for k, reg in enumerate(stage):
            tr = reg.tree_
            feature = tr.feature.copy()
            feature[tr.children_left < 0] = -1
            thr = [pm.f32_le_threshold(t) if f >= 0 else 0.0
                   for f, t in zip(feature, tr.threshold)]
            te.trees.append(pm.compact_tree(feature, thr, tr.children_left, tr.children_right,
                                            tr.value[:, 0, 0] * lr))
            te.tree_class.append(k)
    return m


def _init_raw(gb, rows):
    """The constant raw prediction of gb's init estimator (prior or zero)."""
    raw = np.asarray(gb._raw_predict_init(np.asarray(rows)), dtype=np.float64)
    if not np.all(raw == raw[0]):
        raise pm.ExportError("gradient boosting init estimator is not constant "
                             "(only init=None/'zero' or a prior DummyClassifier are supported)")
    return raw[0]


def _tree_inputs(gb, n, seed=0):
    """Rows spread over the range of the split thresholds, per feature."""
    rng = np.random.default_rng(seed)
    nf = gb.n_features_in_
    lo, hi = np.full(nf, np.inf), np.full(nf, -np.inf)
    for reg in gb.estimators_.ravel():
        tr = reg.tree_
        for f, t in zip(tr.feature, tr.threshold):
            if f >= 0:
                lo[f], hi[f] = min(lo[f], t), max(hi[f], t)
    lo[~np.isfinite(lo)], hi[~np.isfinite(hi)] = -1.0, 1.0
    pad = 0.1 * (hi - lo) + 1e-3
    return rng.uniform(lo - pad, hi + pad, size=(n, nf))


def export(estimator, scaler=None, classes=None, features=pm.DEFAULT_FEATURES,
           window=pm.DEFAULT_WINDOW, policy=None, meta=None, golden_inputs=None,
           n_golden=pm.N_GOLDEN):
    """Builds (Model, Scaler) messages from a fitted estimator or pipeline.

    scaler: a fitted StandardScaler applied before the estimator, or None.
    classes: see predictd_model.resolve_classes. golden_inputs: raw rows to
    pick golden cases from (default: synthesised). Raises ExportError."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.ensemble import GradientBoostingClassifier
    import sklearn

    clf, pipe_scaler, proba_src = _split_pipeline(estimator)
    if pipe_scaler is not None and scaler is not None:
        raise pm.ExportError("the pipeline already has a scaler; do not pass another")
    ss = pipe_scaler if pipe_scaler is not None else scaler
    if not isinstance(clf, (LogisticRegression, MLPClassifier, GradientBoostingClassifier)):
        raise pm.ExportError("unsupported estimator %s (LogisticRegression, MLPClassifier, "
                             "GradientBoostingClassifier)" % type(clf).__name__)
    if not hasattr(clf, "classes_"):
        raise pm.ExportError("the %s is not fitted" % type(clf).__name__)
    features = list(features)
    nf = len(features)
    if getattr(clf, "n_features_in_", nf) != nf:
        raise pm.ExportError("the model reads %d features, %d specs given"
                             % (clf.n_features_in_, nf))
    names = pm.resolve_classes(list(clf.classes_), classes)
    if meta is None:
        meta = pm.make_meta("sklearn " + sklearn.__version__)
    mean, scale = pm.standard_scaler_params(ss) if ss is not None else (None, None)
    if ss is not None and int(ss.n_features_in_) != nf:
        raise pm.ExportError("the scaler reads %d features, %d specs given"
                             % (ss.n_features_in_, nf))

    def predict(X):
        if ss is not None and proba_src is clf:
            return clf.predict_proba(ss.transform(X))
        return proba_src.predict_proba(X)

    if golden_inputs is None:
        if isinstance(clf, GradientBoostingClassifier) and ss is None:
            golden_inputs = _tree_inputs(clf, n_golden)
        else:
            golden_inputs = pm.synth_inputs(n_golden, nf, mean, scale)
    rows = pm.pick_rows(golden_inputs, n_golden)
    if rows.shape[1] != nf:
        raise pm.ExportError("golden input rows have %d values, not %d" % (rows.shape[1], nf))

    if isinstance(clf, LogisticRegression):
        if not _is_multinomial(clf):
            raise pm.ExportError("LogisticRegression must be multinomial (multi_class='ovr' "
                                 "probabilities are not a softmax)")
        m = pm.new_model("SOFTMAX", features, names, window, policy, meta)
        m.layers.append(pm.dense(clf.coef_, clf.intercept_, "LINEAR"))
    elif isinstance(clf, MLPClassifier):
        if clf.out_activation_ != "softmax":
            raise pm.ExportError("MLPClassifier output %r: need softmax (3 classes)"
                                 % clf.out_activation_)
        if clf.activation not in _MLP_ACT:
            raise pm.ExportError("MLP activation %r" % clf.activation)
        m = pm.new_model("MLP", features, names, window, policy, meta)
        last = len(clf.coefs_) - 1
        for i, (w, b) in enumerate(zip(clf.coefs_, clf.intercepts_)):
            m.layers.append(pm.dense(np.asarray(w).T, b,
                                     "LINEAR" if i == last else _MLP_ACT[clf.activation]))
    elif isinstance(clf, GradientBoostingClassifier):
        m = _trees_model(clf, features, names, window, policy, meta, ss is not None)
        base = _init_raw(clf, ss.transform(rows) if ss is not None else rows)
        m.trees.base_score.extend(float(v) for v in base)

    pm.add_golden(m, rows, predict(rows))
    sc = pm.make_scaler(features, mean, scale)
    pm.check_model(m, sc)
    return m, sc


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Export a fitted scikit-learn classifier (LogisticRegression, "
        "MLPClassifier, GradientBoostingClassifier, or a Pipeline with a StandardScaler) "
        "as a predictd model version.")
    ap.add_argument("--model", required=True, help="joblib/pickle file with the estimator "
                    "or pipeline (only load files you trust)")
    ap.add_argument("--scaler", help="StandardScaler the estimator was trained behind "
                    "(joblib/pickle, .npz or .json with mean and scale)")
    pm.add_common_args(ap)
    args = ap.parse_args(argv)
    import sklearn
    est = pm.load_pickle(args.model)
    scaler = None
    if args.scaler:
        mean, scale = pm.load_scaler(args.scaler)
        scaler = _FixedScaler(mean, scale)
    features = pm.features_from_args(args)
    golden = pm.read_rows(args.inputs) if args.inputs else None
    m, sc = export(est, scaler, args.classes, features, args.window, pm.policy_from_args(args),
                   pm.meta_from_args(args, "sklearn " + sklearn.__version__), golden,
                   args.n_golden)
    pm.write_from_args(args, m, sc)
    return 0


class _FixedScaler:
    """A StandardScaler stand-in from (mean, scale) arrays, computing what
    StandardScaler.transform computes."""

    def __init__(self, mean, scale):
        self.mean_ = np.asarray(mean, dtype=np.float64)
        self.scale_ = np.asarray(scale, dtype=np.float64)
        self.with_mean = self.with_std = True
        self.n_features_in_ = self.mean_.size

    def transform(self, X):
        return (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_


if __name__ == "__main__":
    pm.run_cli(main)
