"""What the registry makes of a repository an operator edits by hand: the
real binary (`predictd models list`, which scans and verifies like
`serve`) over versions published by `predictd train`.

- policy.json that is not JSON, not an object, with labels of the wrong
  shape, an unknown label, a share out of range, or unreadable (a
  directory): refused with the reason, nothing pinned, the newest serves;
- a pin or label naming a version that does not exist or fails
  verification: said in the log, and the newest good version serves;
- a failed version repaired in place is verified again and serves;
- the listing keeps a bounded history, and removing the newest versions
  makes a running server serve the newest left, even one it had forgotten;
- a symbolic link for a symbol, a stray file and a bad timeframe name in
  the repository are ignored or refused with a reason, never followed.
"""
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (Service, check, check_eq, check_in, cli, need_services, prepare_database,  # noqa: E402
                     run_tests, test, train)

SYM, TF = "POLUSDT", "1h"
state = {}


def repo():
    """A repository with versions 1..3 of SYM TF (copied for each test)."""
    if "base" not in state:
        need_services()
        prepare_database(symbols=(SYM,), timeframes=(TF,), count=900)
        base = tempfile.mkdtemp(prefix="predictd-policy-base-")
        for _ in range(3):
            train(base, SYM, TF)
        state["base"] = base
    d = tempfile.mkdtemp(prefix="predictd-policy-")
    shutil.copytree(state["base"], d, dirs_exist_ok=True)
    return d


def series(models):
    return os.path.join(models, SYM, TF)


def listing(models):
    """Runs `predictd models list`; returns ({version: (state, serving, label, rest)}, stderr)."""
    p = cli("models", "list", env={"PREDICTD_MODELS_DIR": models})
    rows = {}
    for line in p.stdout.splitlines()[1:]:
        f = line.split(None, 3)
        if len(f) >= 4 and f[0] == SYM:
            rest = f[3].split()
            state_ = rest[0]
            serving = "yes" in rest[1:2]
            rows[int(f[2])] = (state_, serving, " ".join(rest[1:]))
    return rows, p.stderr


def serving(rows):
    s = [v for v, r in rows.items() if r[1]]
    check(len(s) <= 1, rows)
    return s[0] if s else None


def write_policy(models, text):
    with open(os.path.join(series(models), "policy.json"), "w") as f:
        f.write(text)


@test
def malformed_policies_are_refused_with_their_reason():
    models = repo()
    cases = [
        ("{not json", "policy.json"),
        ("[1, 2]", "not a JSON object"),
        ('{"labels": 3}', '"labels" must be an object'),
        ('{"labels": {"beta": 1}}', 'unknown label "beta"'),
        ('{"labels": {"stable": "one"}}', "label"),
        ('{"canary_share": 101}', '"canary_share" must be an integer percent 0..100'),
        ('{"canary_share": "half"}', '"canary_share" must be an integer percent 0..100'),
        ('{"pinned": -4}', '"pinned"'),
        ('{"pinned": 1, "pinned": 2}', "duplicate"),
    ]
    for text, why in cases:
        write_policy(models, text)
        rows, err = listing(models)
        check_in(why, err, f"policy {text!r}")
        check_eq(serving(rows), 3, f"policy {text!r}: the newest serves: {rows}")


@test
def an_unreadable_policy_is_reported_and_ignored():
    models = repo()
    os.mkdir(os.path.join(series(models), "policy.json"))
    rows, err = listing(models)
    check_in("policy.json", err)
    check_eq(serving(rows), 3, rows)


@test
def pins_and_labels_to_missing_or_failed_versions_are_said():
    models = repo()
    write_policy(models, '{"pinned": 9}')
    rows, err = listing(models)
    check_in("pinned v9 does not exist", err)
    check_eq(serving(rows), 3, rows)
    # pinned to a version that fails verification: the newest good one serves
    with open(os.path.join(series(models), "2", "model.pb"), "r+b") as f:
        f.truncate(10)
    write_policy(models, '{"pinned": 2}')
    rows, err = listing(models)
    check_in("pinned v2 failed verification; serving v3", err)
    check_eq(rows[2][0], "FAILED", rows)
    check_eq(serving(rows), 3, rows)
    write_policy(models, '{"labels": {"stable": 7}}')
    rows, err = listing(models)
    check_in("label stable points at v7, which is not available", err)
    write_policy(models, '{"labels": {"stable": 1, "canary": 8}, "canary_share": 10}')
    rows, err = listing(models)
    check_in("label canary points at v8, which is not available", err)
    check_eq(serving(rows), 3, rows)
    # pinned to the good old version: it serves
    write_policy(models, '{"pinned": 1}')
    rows, err = listing(models)
    check_eq(serving(rows), 1, rows)


@test
def a_failed_version_repaired_in_place_is_verified_again():
    # a scanner keeps its verdict on a failed version until its files change:
    # a serving process sees the repair on its next scan (models list is one scan,
    # so it shows the verdict of the files as they are)
    models = repo()
    good = open(os.path.join(series(models), "3", "model.pb"), "rb").read()
    with open(os.path.join(series(models), "3", "model.pb"), "wb") as f:
        f.write(good[:len(good) // 2])
    rows, err = listing(models)
    check_eq(rows[3][0], "FAILED", rows)
    check_eq(serving(rows), 2, rows)
    check_in("v3 failed verification", err)
    with open(os.path.join(series(models), "3", "model.pb"), "wb") as f:
        f.write(good)
    rows, err = listing(models)
    check_eq(serving(rows), 3, rows)


@test
def strays_in_the_repository_are_ignored_or_refused():
    models = repo()
    other = tempfile.mkdtemp(prefix="predictd-policy-elsewhere-")
    shutil.copytree(os.path.join(models, SYM), os.path.join(other, SYM))
    os.symlink(os.path.join(other, SYM), os.path.join(models, "LINKUSDT"))
    open(os.path.join(models, "README.txt"), "w").write("not a model\n")
    os.makedirs(os.path.join(models, SYM, "2h"))
    os.makedirs(os.path.join(models, "lowercase", TF))
    open(os.path.join(series(models), "notes.txt"), "w").write("x")
    os.makedirs(os.path.join(series(models), "007"))
    rows, err = listing(models)
    check_in("LINKUSDT is a symbolic link: refused", err)
    check_eq(serving(rows), 3, rows)
    p = cli("models", "list", env={"PREDICTD_MODELS_DIR": models})
    check("LINKUSDT" not in p.stdout.replace("LINKUSDT is a symbolic link", ""), p.stdout)
    check_eq(sorted(rows), [1, 2, 3], rows)
    # a series directory that is a symbolic link is refused the same way
    os.rename(series(models), series(models) + ".real")
    os.symlink(series(models) + ".real", series(models))
    rows, err = listing(models)
    check_eq(rows, {}, rows)


@test
def many_versions_list_a_bounded_history_and_removing_the_newest_rolls_back():
    # a version directory copied under a new number serves as that number
    # (how an operator re-publishes an old model); the listing keeps only
    # the 16 most recent retired versions. Removing every newer version
    # from disk makes a running server serve the newest left (v3), as a
    # server starting on that directory would, although v3 had been
    # forgotten from its listing.
    models = repo()
    src = os.path.join(series(models), "3")
    for v in range(4, 24):
        shutil.copytree(src, os.path.join(series(models), str(v)))
    rows, err = listing(models)
    check_eq(serving(rows), 23, rows)
    check_in("v23: model.pb says it is version 3", err)
    retired = sorted(v for v, r in rows.items() if r[0] == "retired")
    check_eq(retired, list(range(7, 23)), rows)
    svc = Service(models, env={"PREDICTD_RELOAD_INTERVAL": "1"})
    try:
        status, _, body = svc.get(f"/api/predictions/{SYM}?timeframe={TF}")
        check_eq(status, 200, body)
        check_eq(body["prediction"]["model"]["version"], 23)
        for v in range(4, 24):
            shutil.rmtree(os.path.join(series(models), str(v)))
        deadline = time.time() + 30
        version = 23
        while time.time() < deadline and version != 3:
            time.sleep(0.2)
            status, _, body = svc.get(f"/api/predictions/{SYM}?timeframe={TF}")
            check_eq(status, 200, body)
            version = body["prediction"]["model"]["version"]
        check_eq(version, 3, "the newest version left on disk serves")
        check_in("v23 left the disk; older versions are listed again", svc.logs())
    finally:
        svc.stop()
    rows, err = listing(models)
    check_eq(sorted(rows), [1, 2, 3], rows)
    check_eq(serving(rows), 3, rows)


if __name__ == "__main__":
    run_tests()
