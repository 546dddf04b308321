#!/usr/bin/python3
"""XGBoost multi-class boosters -> a predictd model version (TREES).

Reads the booster's own JSON model (Booster.save_raw('json')): per tree the
flat arrays left_children, right_children, split_indices, split_conditions,
default_left; a node is a leaf when left_children is -1 and its value is
split_conditions (eta already applied). Trees are round-robin per class
(tree_info gives each tree's class). The margin of class c is
base_score + sum of its trees, for every class (multi:softprob adds the
global base_score, 0.5 by default, to each margin: checked against
predict(output_margin=True) at export). Splits go left when x < threshold
(rule LESS); a missing value (NaN) goes to default_left's side. Trees read
the raw features (scaled_input false, scaler.pb the identity), or, when the
booster was trained on standardised features and --scaler gives that scaler,
the scaled ones (scaled_input true).

Exactness (float32): XGBoost casts every feature value to float32 and
compares it with a float32 threshold; predictd compares doubles. A double
feature just below a threshold can round up onto it in float32 and go right
in XGBoost, left in a naive double comparison. Each threshold t is written
as the double T for which `x < T` holds exactly when `float32(x) < t`
(predictd_model.f32_lt_threshold), so predictd takes XGBoost's branch for
every double input. XGBoost also sums leaves and takes the softmax in
float32; predictd does both in double. The golden probabilities are
therefore computed from XGBoost's own leaf assignment (predict(pred_leaf=
True)) with the leaf values summed and the softmax taken in double; they
agree with booster.predict() to ~1e-7 (checked at export within 1e-5).

Usage: /usr/bin/python3 tools/export_xgboost.py --model MODEL.json
           --classes LONG,SHORT,NO_TRADE --symbol BTCUSDT --timeframe 15m [...]
(see tools/README.md and --help)
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import predictd_model as pm  # noqa: E402

FLOAT32_TOL = 1e-5  # booster.predict (float32) vs the double golden


def _booster(model):
    import xgboost as xgb
    if isinstance(model, xgb.Booster):
        return model, None
    if hasattr(model, "get_booster"):
        try:
            best = model.best_iteration
        except AttributeError:
            best = None
        return model.get_booster(), (best + 1 if best is not None else None)
    raise pm.ExportError("not an XGBoost Booster or XGBClassifier: %s" % type(model).__name__)


def parse(booster, rounds=None):
    """The booster's JSON model reduced to what predictd needs:
    dict(base_score, trees=[(feature, threshold, left, right, value,
    default_left)], tree_class, n_features, objective). rounds limits the
    ensemble to the first boosting rounds (as iteration_range=(0, rounds))."""
    j = json.loads(bytes(booster.save_raw(raw_format="json")))
    lr = j["learner"]
    obj = lr["objective"]["name"]
    if obj not in ("multi:softprob", "multi:softmax"):
        raise pm.ExportError("objective %r: only multi:softprob / multi:softmax" % obj)
    mp = lr["learner_model_param"]
    if int(mp["num_class"]) != 3:
        raise pm.ExportError("num_class %s: predictd needs 3" % mp["num_class"])
    if int(mp.get("num_target", "1")) != 1:
        raise pm.ExportError("multi-target models are not supported")
    gbm = lr["gradient_booster"]
    if gbm["name"] != "gbtree":
        raise pm.ExportError("booster %r: only gbtree (dart scales trees at prediction time)"
                             % gbm["name"])
    model = gbm["model"]
    per_round = 3 * int(model["gbtree_model_param"]["num_parallel_tree"])
    trees, info = model["trees"], model["tree_info"]
    if len(trees) % per_round:
        raise pm.ExportError("%d trees is not a whole number of rounds" % len(trees))
    if rounds is not None:
        if not 0 < rounds <= len(trees) // per_round:
            raise pm.ExportError("rounds %d: the booster has %d"
                                 % (rounds, len(trees) // per_round))
        trees, info = trees[:rounds * per_round], info[:rounds * per_round]
    out = []
    for k, t in enumerate(trees):
        if any(int(s) != 0 for s in t.get("split_type", [])):
            raise pm.ExportError("tree %d has categorical splits (not supported)" % k)
        left = [int(v) for v in t["left_children"]]
        right = [int(v) for v in t["right_children"]]
        cond = np.asarray(t["split_conditions"], dtype=np.float64).astype(np.float32)
        feature = [int(f) if left[i] >= 0 else -1 for i, f in enumerate(t["split_indices"])]
        out.append((feature, cond, left, right, [bool(v) for v in t["default_left"]]))
    return dict(base_score=float(np.float32(float(mp["base_score"]))), trees=out,
                tree_class=[int(c) for c in info], n_features=int(mp["num_feature"]),
                objective=obj, rounds=len(trees) // per_round)


def _margins_from_leaves(parsed, leaves):
    """Margins in double from XGBoost's leaf assignment (n x trees)."""
    n = leaves.shape[0]
    out = np.full((n, 3), parsed["base_score"], dtype=np.float64)
    for k, ((_, cond, _, _, _), c) in enumerate(zip(parsed["trees"], parsed["tree_class"])):
        out[:, c] += cond[leaves[:, k].astype(np.int64)].astype(np.float64)
    return out


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _tree_inputs(parsed, n, seed=0):
    rng = np.random.default_rng(seed)
    nf = parsed["n_features"]
    lo, hi = np.full(nf, np.inf), np.full(nf, -np.inf)
    for feature, cond, _, _, _ in parsed["trees"]:
        for f, c in zip(feature, cond):
            if f >= 0:
                lo[f], hi[f] = min(lo[f], c), max(hi[f], c)
    lo[~np.isfinite(lo)], hi[~np.isfinite(hi)] = -1.0, 1.0
    pad = 0.1 * (hi - lo) + 1e-3
    return rng.uniform(lo - pad, hi + pad, size=(n, nf))


def library_proba(booster, X, rounds):
    """(probabilities from booster.predict in float32, from its leaves in
    double) for raw rows X, class order = label order 0, 1, 2."""
    import xgboost as xgb
    dm = xgb.DMatrix(np.asarray(X, dtype=np.float64))  # already scaled, if trained so
    parsed = parse(booster, rounds)
    rng = (0, parsed["rounds"])
    leaves = booster.predict(dm, pred_leaf=True, iteration_range=rng)
    leaves = np.asarray(leaves).reshape(len(X), -1)
    margins = _margins_from_leaves(parsed, leaves)
    if parsed["objective"] == "multi:softprob":
        f32 = booster.predict(dm, iteration_range=rng).reshape(len(X), 3)
    else:
        f32 = _softmax(booster.predict(dm, output_margin=True, iteration_range=rng)
                       .reshape(len(X), 3).astype(np.float64))
    return f32.astype(np.float64), _softmax(margins), margins


def export(model, classes=None, features=pm.DEFAULT_FEATURES, window=pm.DEFAULT_WINDOW,
           policy=None, meta=None, golden_inputs=None, n_golden=pm.N_GOLDEN, rounds=None,
           scaler=None):
    """(Model, Scaler) from a Booster or XGBClassifier (rounds: default all,
    or best_iteration + 1 for an early-stopped XGBClassifier). classes: the
    names of labels 0, 1, 2 (default LONG, SHORT, NO_TRADE). scaler:
    optional (mean, scale) to record; the trees read raw features either
    way. Raises ExportError."""
    import xgboost as xgb
    p = pm.pb2()
    booster, best_rounds = _booster(model)
    if rounds is None:
        rounds = best_rounds
    parsed = parse(booster, rounds)
    features = list(features)
    nf = len(features)
    if parsed["n_features"] != nf:
        raise pm.ExportError("the booster reads %d features, %d specs given"
                             % (parsed["n_features"], nf))
    names = pm.resolve_classes([0, 1, 2], classes)
    mean, scale = scaler if scaler is not None else (None, None)
    sc = pm.make_scaler(features, mean, scale)

    def scaled(X):
        X = np.asarray(X, dtype=np.float64)
        return X if scaler is None else (X - np.asarray(sc.mean)) / np.asarray(sc.scale)

    if meta is None:
        meta = pm.make_meta("xgboost " + xgb.__version__)

    m = pm.new_model("TREES", features, names, window, policy, meta)
    te = m.trees
    te.n_features, te.n_classes, te.rule = nf, 3, p.LESS
    te.scaled_input = scaler is not None
    for (feature, cond, left, right, dl), c in zip(parsed["trees"], parsed["tree_class"]):
        thr = [pm.f32_lt_threshold(float(cond[i])) if f >= 0 else 0.0
               for i, f in enumerate(feature)]
        te.trees.append(pm.compact_tree(feature, thr, left, right, cond.astype(np.float64), dl))
        te.tree_class.append(c)
    te.base_score.extend([parsed["base_score"]] * 3)

    if golden_inputs is None:
        golden_inputs = (_tree_inputs(parsed, n_golden) if scaler is None else
                         pm.synth_inputs(n_golden, nf, sc.mean, sc.scale))
    rows = pm.pick_rows(golden_inputs, n_golden)
    if rows.shape[1] != nf:
        raise pm.ExportError("golden input rows have %d values, not %d" % (rows.shape[1], nf))
    f32, dbl, margins = library_proba(booster, scaled(rows), parsed["rounds"])
    dm = xgb.DMatrix(scaled(rows))
    lib_margin = booster.predict(dm, output_margin=True,
                                 iteration_range=(0, parsed["rounds"])).reshape(len(rows), 3)
    if np.max(np.abs(lib_margin - margins)) > FLOAT32_TOL * max(1.0, np.max(np.abs(margins))):
        raise pm.ExportError("margins differ from predict(output_margin=True) by %.3g: "
                             "base_score semantics changed?"
                             % np.max(np.abs(lib_margin - margins)))
    if np.max(np.abs(f32 - dbl)) > FLOAT32_TOL:
        raise pm.ExportError("double and float32 probabilities differ by %.3g"
                             % np.max(np.abs(f32 - dbl)))
    pm.add_golden(m, rows, dbl)
    pm.check_model(m, sc)
    return m, sc


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Export an XGBoost multi:softprob booster (3 classes) as a predictd "
        "model version.")
    ap.add_argument("--model", required=True, help="booster file (.json, .ubj, or the binary "
                    "format) or a joblib/pickle of an XGBClassifier")
    ap.add_argument("--rounds", type=int, help="use the first N boosting rounds "
                    "(default: all, or best_iteration+1 of an early-stopped XGBClassifier)")
    ap.add_argument("--scaler", help="the booster was trained on standardised features: "
                    "this scaler (joblib/pickle StandardScaler, .npz, .json); default raw features")
    pm.add_common_args(ap)
    args = ap.parse_args(argv)
    import xgboost as xgb
    if args.model.endswith((".json", ".ubj", ".model", ".bin", ".xgb")):
        model = xgb.Booster()
        model.load_model(args.model)
    else:
        model = pm.load_pickle(args.model)
    scaler = pm.load_scaler(args.scaler) if args.scaler else None
    golden = pm.read_rows(args.inputs) if args.inputs else None
    m, sc = export(model, args.classes, pm.features_from_args(args), args.window,
                   pm.policy_from_args(args),
                   pm.meta_from_args(args, "xgboost " + xgb.__version__), golden,
                   args.n_golden, args.rounds, scaler)
    pm.write_from_args(args, m, sc)
    return 0


if __name__ == "__main__":
    pm.run_cli(main)
