"""openapi.yaml is clean under `redocly lint` (the recommended rules, with
the two exceptions redocly.yaml explains). The CLI comes from npm into
tests/contract/node_modules (`make deps`, from the committed
package-lock.json); without npm the test says so and skips."""
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import ROOT, Skip, check, run_tests, test  # noqa: E402

CONTRACT = os.path.join(ROOT, "tests", "contract")
REDOCLY = os.path.join(CONTRACT, "node_modules", ".bin", "redocly")


@test
def openapi_passes_redocly_lint():
    if not os.access(REDOCLY, os.X_OK):
        if not shutil.which("npm"):
            raise Skip("npm is absent: redocly lint of openapi.yaml not run")
        raise Skip("tests/contract/node_modules has no redocly: run `make deps` "
                   "(npm ci --prefix tests/contract)")
    env = dict(os.environ, REDOCLY_TELEMETRY="off", REDOCLY_SUPPRESS_UPDATE_NOTICE="true")
    p = subprocess.run([REDOCLY, "lint", "openapi.yaml", "--format", "stylish"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, env=env)
    out = p.stdout + p.stderr
    check(p.returncode == 0, f"redocly lint failed:\n{out[-4000:]}")
    problems = [ln for ln in out.splitlines() if " error " in ln or " warning " in ln]
    check(not problems, "redocly lint problems:\n" + "\n".join(problems))


if __name__ == "__main__":
    run_tests()
