"""The model repository on a real filesystem that fails: full (ENOSPC) and
read-only (EROFS), as a small volume or a Kubernetes read-only mount gives
them. Each repository is a tmpfs mounted for the test (skipped where the
test may not mount: no CAP_SYS_ADMIN).

- A publish into a full repository fails with a message and exit 1, leaves
  no temporary directory and no version behind, and the version serving
  keeps serving; once space is back the next publish is the next number.
- A read-only repository serves (scans, verifies and answers; what it
  cannot sweep is logged, not fatal), and a publish into it fails cleanly.
- A version number at the limit refuses the next publish with a message.
"""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from harness import (Service, Skip, check, check_eq, check_in, cli, need_services,  # noqa: E402
                     prepare_database, run_tests, test)

SYM, TF = "FSUSDT", "1h"
state = {}
KEY = "k" * 40


def mount_tmpfs(size_kb):
    d = tempfile.mkdtemp(prefix="predictd-repo-fs-")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0755", "tmpfs", d],
                       capture_output=True, text=True)
    if p.returncode != 0:
        os.rmdir(d)
        raise Skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    return d


def umount(d):
    subprocess.run(["umount", "-l", d], capture_output=True)
    os.rmdir(d)


def remount(d, opts):
    p = subprocess.run(["mount", "-o", f"remount,{opts}", d], capture_output=True, text=True)
    check_eq(p.returncode, 0, p.stderr)


def setup():
    if "ready" not in state:
        need_services()
        prepare_database(symbols=(SYM,), timeframes=(TF,), count=1200)
        state["ready"] = True


def train(models, check_rc=True):
    return cli("train", "--symbol", SYM, "--timeframe", TF, "--models-dir", models, "--seed", "1",
               "--force", check_rc=check_rc, timeout=900)


def versions(models):
    d = os.path.join(models, SYM, TF)
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def fill(models):
    """Fills the filesystem: a file grown until the write fails."""
    path = os.path.join(models, "filler")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    return path


@test
def publish_into_a_full_repository_fails_cleanly_and_the_served_version_stays():
    setup()
    models = mount_tmpfs(2048)
    try:
        train(models)
        check_eq(versions(models), ["1"])
        svc = Service(models)
        try:
            filler = fill(models)
            p = train(models, check_rc=False)
            check_eq(p.returncode, 1, p.stderr)
            check_in("failed writing the version's files: input/output error: No space left "
                     "on device", p.stderr)
            check_eq(versions(models), ["1"], "a failed publish leaves no version and no "
                                              "temporary directory")
            status, _, body = svc.get(f"/api/predictions/{SYM}?timeframe={TF}")
            check_eq(status, 200, body)
            check_eq(body["prediction"]["model"]["version"], 1)
            # space again: the next publish is the next number
            os.unlink(filler)
            train(models)
            check_eq(versions(models), ["1", "2"])
            # the server still answers while a scan picks v2 up on its own schedule
            status, _, body = svc.get(f"/api/predictions/{SYM}?timeframe={TF}")
            check_eq(status, 200, body)
            check(body["prediction"]["model"]["version"] in (1, 2), body)
        finally:
            svc.stop()
    finally:
        umount(models)


@test
def a_read_only_repository_serves_and_refuses_a_publish():
    setup()
    models = mount_tmpfs(4096)
    try:
        train(models)
        # a publish that died half-way leaves a temporary directory; a
        # read-only repository cannot sweep it, which must not stop serving
        os.makedirs(os.path.join(models, SYM, TF, ".tmp-1-dead"))
        old = 1_000_000_000
        os.utime(os.path.join(models, SYM, TF, ".tmp-1-dead"), (old, old))
        remount(models, "ro")
        svc = Service(models, env={"PREDICTD_API_KEY": KEY})
        try:
            status, _, body = svc.get(f"/api/predictions/{SYM}?timeframe={TF}")
            check_eq(status, 200, body)
            check_eq(body["prediction"]["model"]["version"], 1)
            status, _, body = svc.get("/health/ready")
            check_eq(status, 200, body)
            # a policy change cannot be written: 500 io_error, and nothing
            # changes; removing a pin when there is none changes nothing: 200
            admin = {"X-API-Key": KEY}
            for path, payload in (("pin", {"version": 1}),
                                  ("labels", {"label": "stable", "version": 1})):
                status, _, body = svc.request("POST", f"/admin/models/{SYM}/{TF}/{path}",
                                              body=payload, headers=admin)
                check_eq(status, 500, body)
                check_eq(body["error"]["code"], "io_error", body)
                check_in(f"{SYM} {TF}", body["error"]["message"])
            status, _, body = svc.request("DELETE", f"/admin/models/{SYM}/{TF}/pin",
                                          headers=admin)
            check_eq(status, 200, body)
            status, _, body = svc.get(f"/api/models/{SYM}/{TF}")
            check_eq(status, 200, body)
            check_eq(body["model"]["pinned_version"], None, body)
            check_eq(body["model"]["serving_version"], 1, body)
            check(not os.path.exists(os.path.join(models, SYM, TF, "policy.json")))
        finally:
            svc.stop()
        p = train(models, check_rc=False)
        check_eq(p.returncode, 1, p.stderr)
        check_in("Read-only file system", p.stderr)
        p = cli("models", "verify", os.path.join(models, SYM, TF, "1"), check_rc=False)
        check_eq(p.returncode, 0, p.stdout + p.stderr)
    finally:
        umount(models)


@test
def the_last_version_number_refuses_the_next_publish():
    setup()
    models = tempfile.mkdtemp(prefix="predictd-repo-max-")
    train(models)
    os.rename(os.path.join(models, SYM, TF, "1"), os.path.join(models, SYM, TF, "2147483648"))
    p = train(models, check_rc=False)
    check_eq(p.returncode, 1, p.stderr)
    check_in("the highest version number is taken", p.stderr)
    check_eq(versions(models), ["2147483648"])


if __name__ == "__main__":
    run_tests()
