"""The retraining schedule (PREDICTD_RETRAIN_INTERVAL): every series with a
serving version gets a scheduled job whose parameters reproduce how its
model was trained (kind and hidden layers of an MLP, the pooled symbols of
a _default model, the cost and seed), promoted only if better; a queued
scheduled job can be cancelled; the server still drains and exits 0 with a
job running. The real binary against this file's PostgreSQL database."""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (Service, check, check_eq, check_in, cli, need_services,  # noqa: E402
                     prepare_database, run_tests, test)

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
        state["ready"] = True


def admin(svc, method, path):
    return svc.request(method, path, headers={"X-API-Key": KEY})


@test
def the_schedule_queues_one_job_per_serving_series_with_its_parameters():
    setup()
    svc = Service(MODELS, env={"PREDICTD_API_KEY": KEY, "PREDICTD_RETRAIN_INTERVAL": "1"},
                  name="retrain-schedule")
    try:
        want = {"SOFTUSDT", "MLPUSDT", "_default"}
        seen = {}
        deadline = time.time() + 120
        while time.time() < deadline and set(seen) != want:
            status, _, body = admin(svc, "GET", "/admin/training")
            check_eq(status, 200, body)
            for j in body["jobs"]:
                if j["scheduled"]:
                    seen.setdefault(j["symbol"], j)
            time.sleep(0.2)
        check_eq(set(seen), want, f"scheduled jobs: {sorted(seen)}")
        for sym, j in seen.items():
            check_eq(j["timeframe"], TF)
            check_eq(j["params"]["promote_if_better"], True, j["params"])
        check_eq(seen["MLPUSDT"]["params"]["kind"], "mlp")
        check_eq(seen["MLPUSDT"]["params"]["hidden"], [8, 4])
        check_eq(seen["MLPUSDT"]["params"]["seed"], 6)
        check_eq(seen["SOFTUSDT"]["params"]["kind"], "softmax")
        check_eq(seen["SOFTUSDT"]["params"]["cost_bps"], 6)
        check_eq(sorted(seen["_default"]["params"]["symbols"]), ["PAUSDT", "PBUSDT"])
        check_eq(seen["_default"]["params"]["target"], "_default")
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
