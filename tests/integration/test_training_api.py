"""Background training over the admin API: a job trains and
publishes, the new version serves, a job whose model is not better is not
promoted, a long job can be cancelled, job history survives a restart,
and bad requests get clear errors."""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (Service, check, check_eq, need_services, prepare_database, psql,  # noqa: E402
                     run_tests, test, train)

MODELS = tempfile.mkdtemp(prefix="predictd-models-")
KEY = "k" * 40
state = {}


def service():
    if "svc" not in state:
        need_services()
        prepare_database(symbols=("BTCUSDT", "ETHUSDT"), timeframes=("15m",), count=2500)
        train(MODELS, "BTCUSDT", "15m")
        state["svc"] = Service(MODELS, env={"PREDICTD_API_KEY": KEY})
    return state["svc"]


def admin(method, path, body=None):
    return service().request(method, path, body=body, headers={"X-API-Key": KEY})


def wait_final(job_id, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        status, _, body = admin("GET", f"/admin/training/{job_id}")
        check_eq(status, 200, body)
        if body["job"]["state"] not in ("queued", "running"):
            return body["job"]
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


@test
def job_trains_publishes_and_serves():
    service()
    status, _, body = admin("POST", "/admin/training",
                            {"symbols": "ETHUSDT", "timeframe": "15m", "seed": 3})
    check_eq(status, 202, body)
    job = wait_final(body["job"]["id"])
    check_eq(job["state"], "succeeded", job)
    check_eq(job["version"], 1)
    check(job["progress"] == 1, job)
    check("accuracy" in job["metrics"], job)
    # the service rescanned: the new model serves at once
    status, _, body = service().get("/api/predictions/ETHUSDT?timeframe=15m")
    check_eq(status, 200, body)
    check_eq(body["prediction"]["model"]["version"], 1)


@test
def model_not_better_is_not_promoted():
    service()
    # the same data, parameters and seed as the serving v1 give the same
    # model: not better, so it must not be published
    status, _, body = admin("POST", "/admin/training",
                            {"symbols": ["BTCUSDT"], "timeframe": "15m", "seed": 1})
    check_eq(status, 202, body)
    job = wait_final(body["job"]["id"])
    check_eq(job["state"], "rejected", job)
    check(job["error"], "says why")
    check_eq(job["version"], None)
    status, _, body = service().get("/api/models/BTCUSDT/15m")
    check_eq([v["version"] for v in body["model"]["versions"]], [1])


@test
def running_job_can_be_cancelled():
    service()
    status, _, body = admin("POST", "/admin/training",
                            {"symbols": "BTCUSDT", "timeframe": "15m", "kind": "mlp",
                             "hidden": [256, 256], "epochs": 5000, "patience": 5000,
                             "promote_if_better": False})
    check_eq(status, 202, body)
    job_id = body["job"]["id"]
    status, _, body = admin("POST", "/admin/training", {"symbols": "BTCUSDT", "timeframe": "15m"})
    check_eq(status, 409, body)  # one job per series at a time
    status, _, body = admin("DELETE", f"/admin/training/{job_id}")
    check_eq(status, 200, body)
    job = wait_final(job_id, timeout=120)
    check_eq(job["state"], "canceled", job)
    status, _, body = admin("DELETE", f"/admin/training/{job_id}")
    check_eq(status, 409, body)
    status, _, body = admin("GET", "/admin/training")
    check_eq(status, 200, body)
    check(any(j["id"] == job_id for j in body["jobs"]))


@test
def history_is_in_postgresql():
    service()
    n = int(psql("SELECT count(*) FROM training_jobs WHERE state IN "
                 "('succeeded','rejected','canceled')"))
    check(n >= 3, f"{n} finished jobs recorded")


@test
def bad_requests():
    service()
    for body in ({"timeframe": "15m"}, {"symbols": "BTCUSDT", "timeframe": "2h"},
                 {"symbols": "BTCUSDT", "timeframe": "15m", "kind": "forest"},
                 {"symbols": "BTCUSDT", "timeframe": "15m", "nonsense": 1},
                 {"symbols": {"a": 1}, "timeframe": "15m"}):
        status, _, r = admin("POST", "/admin/training", body)
        check_eq(status, 400, (body, r))
    status, _, r = service().request("POST", "/admin/training", body=b"{not json",
                                     headers={"X-API-Key": KEY})
    check_eq(status, 400, r)
    status, _, r = admin("GET", "/admin/training/999999")
    check_eq(status, 404, r)
    status, _, r = admin("GET", "/admin/training/abc")
    check_eq(status, 400, r)
    status, _, r = service().request("POST", "/admin/training",
                                     body={"symbols": "BTCUSDT", "timeframe": "15m"})
    check_eq(status, 401, r)


if __name__ == "__main__":
    sys.exit(run_tests())
