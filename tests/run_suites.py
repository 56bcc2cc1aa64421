"""Run every test suite of the collection, print one line per suite and a final `N passed, N failed`.

Usage: python -m tests.run_suites [suite ...]   (suites: unit integration molecule sanity lint)

unit then integration run in one lane, sanity, lint and molecule in a second lane beside it;
ROLLWRIGHT_SUITES_SEQUENTIAL=1 runs every suite one after the other.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
OUTPUT = ROOT / "tests" / "output"
PYCACHE = ROOT / "build" / "pycache"  # bytecode caches, outside the source tree (as the Makefile sets)
SANITY_TREE = ROOT / "build" / "sanity" / "ansible_collections" / "rollwright" / "deploy"


@dataclass
class SuiteResult:
    name: str
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    note: str = ""
    fleet_playbook_tests: int = 0  # passed tests that ran a collection playbook end to end on a test world


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    env["ANSIBLE_COLLECTIONS_PATH"] = str(ROOT / "build")
    env.setdefault("ANSIBLE_HOST_KEY_CHECKING", "False")
    env.setdefault("PYTHONPYCACHEPREFIX", str(PYCACHE))
    # The prefix holds every module's bytecode, the standard library's too: it must be writable (see the Makefile).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _run(cmd: list[str], log_name: str, cwd: Path = ROOT) -> tuple[int, str]:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    log_path = OUTPUT / f"{log_name}.log"
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, cwd=cwd, env=_env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False)
    return proc.returncode, log_path.read_text(errors="replace")


def _hostile_log(name: str) -> Path:
    return OUTPUT / f"hostile-{name}.txt"


def hostile_cases(names: list[str]) -> int:
    """How many tests marked ``hostile`` ran in the given pytest suites (tests/conftest.py writes one line each)."""
    total = 0
    for name in names:
        log = _hostile_log(name)
        if log.exists():
            total += sum(1 for line in log.read_text().splitlines() if line.strip())
    return total


def _pytest_suite(name: str, path: str, extra: list[str] | None = None) -> SuiteResult:
    result = SuiteResult(name)
    if not any((ROOT / path).rglob("test_*.py")):
        result.note = "no tests yet"
        return result
    junit = OUTPUT / f"{name}.xml"
    OUTPUT.mkdir(parents=True, exist_ok=True)
    _hostile_log(name).unlink(missing_ok=True)
    os.environ["ROLLWRIGHT_HOSTILE_LOG"] = str(_hostile_log(name))
    rc, text = _run([str(VENV_BIN / "python"), "-m", "pytest", path, "-q", "-rfE", f"--junitxml={junit}"] + (extra or []), name)
    if junit.exists():
        suite = ET.parse(junit).getroot()
        suites = [suite] if suite.tag == "testsuite" else list(suite)
        for s in suites:
            total = int(s.get("tests", 0))
            bad = int(s.get("failures", 0)) + int(s.get("errors", 0))
            skipped = int(s.get("skipped", 0))
            result.failed += bad
            result.skipped += skipped
            result.passed += total - bad - skipped
        result.fleet_playbook_tests = _fleet_playbook_tests(suite)
    if rc not in (0, 5) and result.failed == 0:
        result.failed = 1
        result.note = f"pytest exited {rc}"
    if result.failed:
        _show_tail(text)
    return result


def _fleet_playbook_tests(junit_root: ET.Element) -> int:
    """Passed test cases the conftest marked with the `fleet_playbook_runs` property."""
    return sum(1 for case in junit_root.iter("testcase")
               if not any(case.find(tag) is not None for tag in ("failure", "error", "skipped"))
               and any(p.get("name") == "fleet_playbook_runs" for p in case.iter("property")))


def _show_tail(text: str, lines: int = 60) -> None:
    tail = "\n".join(text.splitlines()[-lines:])
    print(f"----- last {lines} lines -----\n{tail}\n-----------------------------", flush=True)


def suite_unit() -> SuiteResult:
    # The slow unit tests wait (emulated waits, process races), so they too run side by side.
    return _pytest_suite("unit", "tests/unit", ["-n", os.environ.get("ROLLWRIGHT_UNIT_WORKERS", "3")])


def suite_integration() -> SuiteResult:
    # Most integration time is waiting (load-balancer delays, hooks, SSH): run files side by side.
    # Each worker has its own emulator, and every test world its own subnet and namespaces.
    # Three workers: the timing assertions keep seconds of headroom (the tight figures are measured by
    # `make bench-timing`, not asserted), so a loaded 2-core machine does not fail them.
    workers = os.environ.get("ROLLWRIGHT_TEST_WORKERS", "3")
    return _pytest_suite("integration", "tests/integration", ["-n", workers, "--dist", "loadfile", "--no-loadscope-reorder"])


def suite_molecule() -> SuiteResult:
    result = SuiteResult("molecule")
    scenario_root = ROOT / "extensions" / "molecule"
    scenarios = sorted(p.parent.name for p in scenario_root.glob("*/molecule.yml")) if scenario_root.exists() else []
    if not scenarios:
        result.note = "no scenarios yet"
        return result
    for scenario in scenarios:
        rc, text = _run([str(VENV_BIN / "molecule"), "test", "-s", scenario], f"molecule-{scenario}", cwd=ROOT / "extensions")
        if rc == 0:
            result.passed += 1
        else:
            result.failed += 1
            print(f"molecule scenario {scenario} failed", flush=True)
            _show_tail(text)
    return result


def _sync_sanity_tree() -> None:
    """ansible-test needs the collection at .../ansible_collections/rollwright/deploy, as a git checkout."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    if SANITY_TREE.exists():
        shutil.rmtree(SANITY_TREE)
    for rel in files:
        src = ROOT / rel
        if not src.is_file():
            continue
        dst = SANITY_TREE / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst, follow_symlinks=False)
    # The collections we depend on must sit beside ours for the import test.
    site_collections = ROOT / ".venv" / "lib" / "python3.11" / "site-packages" / "ansible_collections"
    for namespace in ("amazon", "community"):
        link = SANITY_TREE.parent.parent / namespace
        if not link.exists():
            link.symlink_to(site_collections / namespace)
    git = ["git", "-c", "user.email=ci@localhost", "-c", "user.name=ci"]
    subprocess.run(git + ["init", "-q"], cwd=SANITY_TREE, check=True)
    subprocess.run(git + ["add", "-A"], cwd=SANITY_TREE, check=True)
    subprocess.run(git + ["commit", "-q", "-m", "sanity"], cwd=SANITY_TREE, check=True)


def _seed_pip_bootstrap() -> None:
    """ansible-test downloads a pip bootstrap script from a host outside the package registries; give it ours."""
    source = (ROOT / ".venv/lib/python3.11/site-packages/ansible_test/_internal/python_requirements.py").read_text()
    match = re.search(r"pip='([0-9.]+)'", source)
    version = match.group(1) if match else "24.2"
    cache = Path.home() / ".ansible" / "test" / "cache" / f"get_pip_{version.replace('.', '_')}.py"
    cache.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ROOT / "tests" / "sanity" / "get_pip_offline.py", cache)


def suite_sanity() -> SuiteResult:
    result = SuiteResult("sanity")
    _seed_pip_bootstrap()
    _sync_sanity_tree()
    cmd = [str(VENV_BIN / "ansible-test"), "sanity", "--python", "3.11", "--local", "--color", "no"]
    skip = os.environ.get("ROLLWRIGHT_SANITY_SKIP", "").split()
    for test in skip:
        cmd += ["--skip-test", test]
    rc, text = _run(cmd, "sanity", cwd=SANITY_TREE)
    ran = [line for line in text.splitlines() if line.startswith("Running sanity test")]
    failed = [line for line in text.splitlines() if line.startswith("ERROR: Found") or "failed" in line.lower() and line.startswith("ERROR")]
    if rc == 0:
        result.passed = max(1, len(ran))
    else:
        result.passed = max(0, len(ran) - max(1, len(failed)))
        result.failed = max(1, len(failed))
        _show_tail(text)
    return result


def suite_lint() -> SuiteResult:
    result = SuiteResult("lint")
    targets = [p for p in ("roles", "playbooks", "extensions") if any((ROOT / p).rglob("*.yml"))]
    if not targets:
        result.note = "nothing to lint yet"
        return result
    rc, text = _run([str(VENV_BIN / "ansible-lint"), "--profile", "production", "--offline", "--nocolor", *targets], "lint")
    if rc == 0:
        result.passed = 1
    else:
        result.failed = 1
        _show_tail(text)
    return result


PYTEST_SUITES = ("unit", "integration")
SUITES = {
    "unit": suite_unit,
    "integration": suite_integration,
    "molecule": suite_molecule,
    "sanity": suite_sanity,
    "lint": suite_lint,
}


# The static suites (sanity, lint, molecule) run beside the pytest suites: the integration tests
# mostly wait (load-balancer delays, hooks, SSH), so the machine has the room, and `make test` takes
# the time of the longest lane rather than the sum of all suites.
SIDE_LANE = ("sanity", "lint", "molecule")


def _run_lane(names: list[str], results: dict[str, SuiteResult], lock: threading.Lock) -> None:
    for name in names:
        with lock:
            print(f"== {name} ...", flush=True)
        start = time.monotonic()
        try:
            res = SUITES[name]()
        except Exception as exc:  # a crash of the runner itself is one failed suite, not a lost lane
            res = SuiteResult(name, failed=1, note=f"runner error: {exc}")
        res.seconds = time.monotonic() - start
        with lock:
            results[name] = res
            note = f" ({res.note})" if res.note else ""
            print(f"{name}: {res.passed} passed, {res.failed} failed, {res.skipped} skipped in {res.seconds:.0f}s{note}",
                  flush=True)


def main(argv: list[str]) -> int:
    names = argv or list(SUITES)
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        print(f"unknown suite(s): {', '.join(unknown)}; choose from {', '.join(SUITES)}", file=sys.stderr)
        return 2
    sequential = os.environ.get("ROLLWRIGHT_SUITES_SEQUENTIAL") == "1"
    main_lane = [n for n in names if sequential or n not in SIDE_LANE]
    side_lane = [] if sequential else [n for n in names if n in SIDE_LANE]
    results: dict[str, SuiteResult] = {}
    lock = threading.Lock()
    side = threading.Thread(target=_run_lane, args=(side_lane, results, lock), daemon=True)
    side.start()
    _run_lane(main_lane, results, lock)
    side.join()
    ordered = [results[n] for n in names if n in results]
    pytest_suites = [n for n in names if n in PYTEST_SUITES]
    if pytest_suites:
        print(f"hostile-input cases: {hostile_cases(pytest_suites)}", flush=True)
    passed = sum(r.passed for r in ordered)
    failed = sum(r.failed for r in ordered)
    skipped = sum(r.skipped for r in ordered)
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    if any(r.name == "integration" for r in ordered):
        print(f"{sum(r.fleet_playbook_tests for r in ordered)} tests ran a collection playbook end to end on the fleet")
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
