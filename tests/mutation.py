# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Mutation check: do the tests catch a broken core rule?  (``make mutation``; not part of ``make test``.)

    python -m tests.mutation [--list] [--only NAME[,NAME...]] [--baseline]

Each mutant below is a hand-written change to one core rule: (file, exact original snippet,
replacement). For every mutant the working tree (``git ls-files``, uncommitted changes included) is
copied to a temporary directory, the snippet is replaced there, and the mutant's test subset runs
against the copy. A mutant is *caught* when a test fails, *survived* when every test passes.

A snippet that is not found exactly once is an error, never a pass: the code moved and the mutant
must be re-targeted. The exit status is 0 only when every mutant was applied and caught.
``--baseline`` first runs every subset on an unmutated copy (each must pass, or the check means nothing).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"

ENGINE = "plugins/module_utils"


@dataclass(frozen=True)
class Mutant:
    name: str
    rule: str
    file: str
    original: str
    replacement: str
    tests: tuple[str, ...]


MUTANTS: tuple[Mutant, ...] = (
    Mutant("batch-size-off-by-one", "batch size: at most hosts - minimum per batch",
           f"{ENGINE}/deployments/config.py",
           "return max(self.total - self.minimum, 0)",
           "return max(self.total - self.minimum + 1, 0)",
           ("tests/unit/test_deployment_config.py",)),
    Mutant("batch-ignores-healthy-budget", "batch size: never more healthy hosts down than healthy now - minimum",
           f"{ENGINE}/deployments/config.py",
           "                if budget <= 0:\n                    break\n",
           "                if budget < 0:\n                    break\n",
           ("tests/unit/test_deployment_config.py",)),
    Mutant("minimum-healthy-rounds-down", "minimum healthy: FLEET_PERCENT rounds up",
           f"{ENGINE}/deployments/config.py",
           "return -(-total_hosts * cfg.minimum_value // 100)",
           "return total_hosts * cfg.minimum_value // 100",
           ("tests/unit/test_deployment_config.py",)),
    Mutant("previous-revision-most-recent", "previous-revision rule: stop scripts of the last successful revision",
           f"{ENGINE}/host/events.py",
           "source_id = self.state.last_successful\n",
           "source_id = self.state.most_recent\n",
           ("tests/unit/test_host_install.py", "tests/integration/test_previous_revision.py")),
    Mutant("etag-user-value-ignored", "ETag check: a revision whose ETag differs from the given one is refused",
           f"{ENGINE}/revisions/revision.py",
           "if pinned is not None and actual != pinned:",
           "if expected is None and pinned is not None and actual != pinned:",
           ("tests/unit/test_revision.py", "tests/integration/test_revision_s3.py")),
    Mutant("archive-dotdot-only-leading", "unsafe archive: no member path with '..' anywhere",
           f"{ENGINE}/revisions/revision.py",
           'if ".." in parts:',
           'if parts[:1] == [".."]:',
           ("tests/unit/test_revision.py",)),
    Mutant("archive-absolute-symlink", "unsafe archive: no symlink to an absolute path",
           f"{ENGINE}/revisions/revision.py",
           'if m.linkname.startswith("/"):',
           'if m.linkname.startswith("//"):',
           ("tests/unit/test_revision.py",)),
    Mutant("archive-write-through-symlink", "unsafe archive: no member below a symlink of the archive",
           f"{ENGINE}/revisions/revision.py",
           "            if prefix in links:\n",
           "            if prefix in links and False:\n",
           ("tests/unit/test_revision.py",)),
    Mutant("lock-takeover-without-stale", "lock takeover: only a stale lock, only with force (SQLite)",
           f"{ENGINE}/records/sqlite.py",
           "if not (info.stale and force):",
           "if not force:",
           ("tests/unit/test_records_sqlite.py",)),
    Mutant("lock-takeover-without-force", "lock takeover: only a stale lock, only with force (SQLite)",
           f"{ENGINE}/records/sqlite.py",
           "if not (info.stale and force):",
           "if not info.stale:",
           ("tests/unit/test_records_sqlite.py",)),
    # (DynamoDB: `if not force` would be an equivalent mutant, the conditional put refuses a live lock anyway)
    Mutant("lock-takeover-dynamodb", "lock takeover: only a stale lock, only with force (DynamoDB)",
           f"{ENGINE}/records/dynamodb.py",
           "if not (info.stale and force):",
           "if not info.stale:",
           ("tests/integration/test_records_contract.py::test_lock_contract",)),
)


class SnippetError(Exception):
    """The mutant's original snippet is not in its file exactly once."""


def copy_tree(dest: Path) -> None:
    """The working tree as git sees it (tracked and untracked-not-ignored files), plus the build/ link."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if not src.is_file() or src.is_symlink():
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    (dest / ".venv").symlink_to(ROOT / ".venv")
    link = dest / "build" / "ansible_collections" / "rollwright" / "deploy"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to("../../..")


def apply(tree: Path, mutant: Mutant) -> None:
    path = tree / mutant.file
    if not path.is_file():
        raise SnippetError(f"{mutant.name}: {mutant.file} does not exist")
    text = path.read_text()
    count = text.count(mutant.original)
    if count != 1:
        raise SnippetError(f"{mutant.name}: the original snippet occurs {count} times in {mutant.file} (expected once): "
                           f"{mutant.original!r}; re-target the mutant")
    path.write_text(text.replace(mutant.original, mutant.replacement))


def run_tests(tree: Path, tests: tuple[str, ...], log: Path) -> int:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", ANSIBLE_COLLECTIONS_PATH=str(tree / "build"),
               PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ.get('PATH', '')}")
    with open(log, "w") as out:
        return subprocess.run([str(PYTHON), "-m", "pytest", *tests, "-q", "-x", "-n", "0", "-p", "no:randomly"],
                              cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              check=False).returncode


def check(mutant: Mutant | None, tests: tuple[str, ...], logs: Path) -> tuple[str, float, Path]:
    """'caught' / 'survived' / 'passes' / 'FAILS' / 'error: ...' for one mutant (None: the unmutated baseline)."""
    start = time.monotonic()
    log = logs / f"{mutant.name if mutant else 'baseline'}.log"
    with tempfile.TemporaryDirectory(prefix="rw-mutant-") as tmp:
        tree = Path(tmp)
        copy_tree(tree)
        if mutant is not None:
            try:
                apply(tree, mutant)
            except SnippetError as exc:
                return f"error: {exc}", time.monotonic() - start, log
        rc = run_tests(tree, tests, log)
    took = time.monotonic() - start
    if rc not in (0, 1):  # 2 interrupted/usage, 3 internal error, 4 usage, 5 no tests collected
        return f"error: pytest exited {rc} (see {log})", took, log
    if mutant is None:
        return ("passes" if rc == 0 else "FAILS"), took, log
    return ("caught" if rc == 1 else "survived"), took, log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--only", default="", help="comma-separated mutant names")
    parser.add_argument("--baseline", action="store_true", help="first check every test subset passes unmutated")
    args = parser.parse_args(argv)
    mutants = list(MUTANTS)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(wanted) - {m.name for m in MUTANTS})
        if unknown:
            print(f"--only: unknown mutant(s) {unknown}; expected some of {[m.name for m in MUTANTS]}", file=sys.stderr)
            return 2
        mutants = [m for m in MUTANTS if m.name in wanted]
    if args.list:
        for m in mutants:
            print(f"{m.name:32} {m.rule}\n{'':32} {m.file}: {m.original.strip()!r} -> {m.replacement.strip()!r}")
        return 0

    logs = ROOT / "tests" / "output" / "mutation"
    logs.mkdir(parents=True, exist_ok=True)
    bad = 0
    if args.baseline:
        subsets = sorted({t for m in mutants for t in m.tests})
        outcome, took, log = check(None, tuple(subsets), logs)
        print(f"baseline (unmutated, {len(subsets)} test files): {outcome} in {took:.0f} s", flush=True)
        if outcome != "passes":
            print(f"the unmutated tree fails its tests; see {log}", file=sys.stderr)
            return 1
    rows = []
    for m in mutants:
        outcome, took, log = check(m, m.tests, logs)
        rows.append((m, outcome, took))
        print(f"{m.name}: {outcome} ({took:.0f} s)", flush=True)
        if outcome != "caught":
            bad += 1
            if outcome == "survived":
                print(f"  survived: every test of {', '.join(m.tests)} passes with the mutant; log {log}", flush=True)
            elif outcome.startswith("error"):
                print(f"  !! {outcome}", flush=True)

    print()
    header = f"{'mutant':32} {'rule':72} {'result':10} {'s':>4}  tests"
    print(header)
    print("-" * len(header))
    for m, outcome, took in rows:
        short = outcome if not outcome.startswith("error") else "ERROR"
        print(f"{m.name:32} {m.rule:72} {short:10} {took:>4.0f}  {', '.join(Path(t).name for t in m.tests)}")
    caught = sum(1 for _m, o, _t in rows if o == "caught")
    print(f"\n{caught} of {len(rows)} mutants caught" + (f"; {bad} NOT caught or not applied" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
