"""The retraining schedule (PREDICTD_RETRAIN_INTERVAL): every series with a
serving version gets a scheduled job whose parameters reproduce how its
model was trained (kind and hidden layers of an MLP, the pooled symbols of
a _default model, the cost and seed), promoted only if better; a _default
model exported by another trainer (tools/, no symbols recorded) retrains
on every symbol with candles of its timeframe; a tree ensemble (which this
trainer does not make) is skipped and the log says so; a queued
scheduled job can be cancelled; the server still drains and exits 0 with a
job running. The real binary against this file's PostgreSQL database."""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (ROOT, Service, check, check_eq, check_in, cli,  # noqa: E402
                     need_services, prepare_database, run_tests, test)

MODELS = tempfile.mkdtemp(prefix="predictd-retrain-")
KEY = "r" * 40
TF = "1h"
state = {}


def setup():
    if "ready" not in state:
        need_services()
        prepare_database(symbols=("SOFTUSDT", "MLPUSDT", "PAUSDT", "PBUSDT"), timeframes=(TF,),
                         count=1200)
        common = ["--timeframe", TF, "--models-dir", MODELS, "--epochs", "3", "--force"]
        cli("train", "--symbol", "SOFTUSDT", "--seed", "5", "--cost-bps", "6", *common,
            timeout=900)
        cli("train", "--symbol", "MLPUSDT", "--kind", "mlp", "--hidden", "8,4", "--seed", "6",
            *common, timeout=900)
        cli("train", "--symbols", "PAUSDT,PBUSDT", "--seed", "7", *common, timeout=900)
        # a _default/4h model exported by another trainer: no symbols in its
        # metadata; two symbols have 4h candles
        cli("seed", "--symbols", "FOURAUSDT,FOURBUSDT", "--timeframes", "4h", "--count", "400")
        publish_external_default("4h")
        publish_trees("TREEUSDT", TF)
        state["ready"] = True


def publish_trees(symbol, tf):
    """A tree ensemble of three one-leaf trees (an XGBoost export's shape)."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import numpy as np
    import predictd_model as pm
    p = pm.pb2()
    nf = len(pm.DEFAULT_FEATURES)
    m = pm.new_model("TREES", pm.DEFAULT_FEATURES, ["LONG", "SHORT", "NO_TRADE"],
                     meta=pm.make_meta("xgboost", trained_at=1700000000))
    te = m.trees
    te.n_features, te.n_classes, te.rule = nf, 3, p.LESS
    for c, v in enumerate((0.2, -0.1, 0.0)):
        te.trees.append(pm.compact_tree([-1], [0.0], [-1], [-1], [v]))
        te.tree_class.append(c)
    te.base_score.extend([0.5, 0.5, 0.5])
    sc = pm.make_scaler(pm.DEFAULT_FEATURES)
    X = np.random.default_rng(2).standard_normal((8, nf))
    pm.add_golden(m, X, pm.reference_predict(m, sc, X))
    version, d = pm.publish(MODELS, symbol, tf, m, sc)
    check_eq(cli("models", "verify", d).returncode, 0)


def publish_external_default(tf):
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import numpy as np
    import predictd_model as pm
    nf = len(pm.DEFAULT_FEATURES)
    m = pm.new_model("SOFTMAX", pm.DEFAULT_FEATURES, ["LONG", "SHORT", "NO_TRADE"],
                     meta=pm.make_meta("external", trained_at=1700000000))
    m.layers.append(pm.dense(np.arange(3 * nf, dtype=np.float64).reshape(3, nf) / 1000,
                             [0.1, -0.2, 0.0]))
    sc = pm.make_scaler(pm.DEFAULT_FEATURES)
    X = np.random.default_rng(1).standard_normal((8, nf))
    pm.add_golden(m, X, pm.reference_predict(m, sc, X))
    version, d = pm.publish(MODELS, "_default", tf, m, sc)
    check_eq(cli("models", "verify", d).returncode, 0)


def admin(svc, method, path):
    return svc.request(method, path, headers={"X-API-Key": KEY})


@test
def the_schedule_queues_one_job_per_serving_series_with_its_parameters():
    setup()
    svc = Service(MODELS, env={"PREDICTD_API_KEY": KEY, "PREDICTD_RETRAIN_INTERVAL": "1"},
                  name="retrain-schedule")
    try:
        want = {"SOFTUSDT/1h", "MLPUSDT/1h", "_default/1h", "_default/4h"}
        seen = {}
        deadline = time.time() + 120
        while time.time() < deadline and set(seen) != want:
            status, _, body = admin(svc, "GET", "/admin/training")
            check_eq(status, 200, body)
            for j in body["jobs"]:
                if j["scheduled"]:
                    seen.setdefault(f"{j['symbol']}/{j['timeframe']}", j)
            time.sleep(0.2)
        check_eq(set(seen), want, f"scheduled jobs: {sorted(seen)}")
        for j in seen.values():
            check_eq(j["params"]["promote_if_better"], True, j["params"])
        mlp, soft = seen["MLPUSDT/1h"]["params"], seen["SOFTUSDT/1h"]["params"]
        check_eq(mlp["kind"], "mlp")
        check_eq(mlp["hidden"], [8, 4])
        check_eq(mlp["seed"], 6)
        check_eq(soft["kind"], "softmax")
        check_eq(soft["cost_bps"], 6)
        check_eq(soft["symbols"], ["SOFTUSDT"])
        check_eq(sorted(seen["_default/1h"]["params"]["symbols"]), ["PAUSDT", "PBUSDT"])
        check_eq(seen["_default/1h"]["params"]["target"], "_default")
        # the external model recorded no symbols: every symbol with 4h candles
        check_eq(sorted(seen["_default/4h"]["params"]["symbols"]), ["FOURAUSDT", "FOURBUSDT"])
        check_eq(seen["_default/4h"]["params"]["kind"], "softmax")
        # the tree ensemble serves but is not retrained: skipped, with the reason
        check("TREEUSDT/1h" not in seen, seen.get("TREEUSDT/1h"))
        check_in("retrain TREEUSDT/1h: v1 is not a model this trainer makes; skipped",
                 svc.logs())
        # the status says the schedule runs
        status, _, body = svc.get("/health/status")
        check_eq(status, 200, body)
        training = [j for j in body["components"]["jobs"] if j["name"] == "training"]
        check_eq(len(training), 1, body["components"]["jobs"])
        # a job still queued can be cancelled; one that already ended cannot (409)
        status, _, body = admin(svc, "GET", "/admin/training")
        queued = [j for j in body["jobs"] if j["state"] == "queued"]
        if queued:
            jid = queued[-1]["id"]
            status, _, body = admin(svc, "DELETE", f"/admin/training/{jid}")
            if status == 200:
                status, _, body = admin(svc, "GET", f"/admin/training/{jid}")
                check_eq(status, 200, body)
                check_in(body["job"]["state"], ("canceled", "running"), body)
            else:
                check_eq(status, 409, body)  # it started and ended meanwhile
        finished = None
        deadline = time.time() + 300
        while time.time() < deadline and finished is None:
            status, _, body = admin(svc, "GET", "/admin/training")
            done = [j for j in body["jobs"] if j["state"] not in ("queued", "running")
                    and j["state"] != "canceled"]
            finished = done[0] if done else None
            time.sleep(0.2)
        check(finished is not None, "no scheduled job finished")
        # a finished job is refused a cancel with a conflict
        status, _, body = admin(svc, "DELETE", f"/admin/training/{finished['id']}")
        check_eq(status, 409, body)
    finally:
        # SIGTERM with the schedule's jobs queued or running: exit 0 in time
        check_eq(svc.stop(), 0)


if __name__ == "__main__":
    sys.exit(run_tests())
