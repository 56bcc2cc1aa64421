"""List the functions in plugins/ longer than 80 lines; exit 1 when one has no reason.

A long function carries its reason in a comment on the line above its ``def`` (or its first
decorator), ``# long function: <why>``. KNOWN lists the ones whose files other work is changing
now; each goes once its function is split (or gets its comment there).

Usage: python -m tests.long_functions   (``make long-functions``)
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 80
REASON_MARK = "# long function:"

KNOWN = {
    "plugins/module_utils/deployments/lambda_deploy.py::LambdaDeployment.run":
        "the Lambda engine loop; splits when Lambda moves into the deployment session",
    "plugins/module_utils/deployments/bluegreen.py::BlueGreenRun.start":
        "blue/green start (inputs, fleet, memberships, record); the record and lock are the deployment session's",
    "plugins/module_utils/deployments/inplace.py::InPlaceRun.start":
        "in-place start; splits with the batch-structure change",
    "plugins/action/inplace_step.py::ActionModule._start":
        "in-place step start; splits with the batch-structure change",
}


def long_functions(root: Path = ROOT) -> list[tuple[str, int, str | None]]:
    """(``path::Qualified.name``, lines, reason or None) for every function over LIMIT lines."""
    found = []
    for path in sorted((root / "plugins").rglob("*.py")):
        lines = path.read_text().splitlines()
        rel = path.relative_to(root).as_posix()

        def walk(node: ast.AST, prefix: str = "") -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = child.end_lineno - child.lineno + 1
                    name = f"{rel}::{prefix}{child.name}"
                    if length > LIMIT:
                        first = min([child.lineno] + [d.lineno for d in child.decorator_list])
                        above = lines[first - 2].strip() if first >= 2 else ""
                        reason = above[len(REASON_MARK):].strip() if above.startswith(REASON_MARK) else KNOWN.get(name)
                        found.append((name, length, reason or None))
                    walk(child, f"{prefix}{child.name}.")
                elif isinstance(child, ast.ClassDef):
                    walk(child, f"{prefix}{child.name}.")

        walk(ast.parse("\n".join(lines), rel))
    return found


def main() -> int:
    found = long_functions()
    for name, length, reason in sorted(found, key=lambda f: -f[1]):
        print(f"{length:4d}  {name}  -  {reason or 'NO REASON: split it, or say why above its def'}")
    missing = [name for name, _length, reason in found if not reason]
    print(f"{len(found)} function(s) over {LIMIT} lines, {len(missing)} without a reason")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
