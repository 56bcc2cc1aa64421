"""Build versions of the sample application bundle (tests/sample_app) for tests, the demo and benchmarks."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path
from typing import Callable, Optional

SAMPLE_APP = Path(__file__).resolve().parent / "sample_app"


def _members(version: str, extra_files: Optional[dict[str, str]] = None) -> list[tuple[str, bytes, int]]:
    """(relative path, content, mode) for every file of the bundle, with the version substituted."""
    members = []
    for path in sorted(SAMPLE_APP.rglob("*")):
        if path.is_dir():
            continue
        rel = path.relative_to(SAMPLE_APP).as_posix()
        data = path.read_bytes()
        if rel == "app/index.html":
            data = data.replace(b"VERSION", version.encode())
        members.append((rel, data, path.stat().st_mode & 0o777))
    members.append(("REVISION", f"{version}\n".encode(), 0o644))
    for rel, text in (extra_files or {}).items():
        members.append((rel, text.encode(), 0o755 if rel.endswith(".sh") else 0o644))
    return members


def build_bundle(version: str, out_dir: str | os.PathLike, fmt: str = "zip", top_dir: Optional[str] = None,
                 extra_files: Optional[dict[str, str]] = None,
                 edit_appspec: Optional[Callable[[str], str]] = None) -> Path:
    """Write sample-app-<version>.<fmt> into out_dir and return its path.

    top_dir wraps everything in one top-level directory (the agent treats it as the root);
    extra_files adds files (e.g. a hook script), edit_appspec rewrites appspec.yml's text.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ext = {"zip": "zip", "tar": "tar", "tgz": "tar.gz"}[fmt]
    target = out / f"sample-app-{version}.{ext}"
    members = _members(version, extra_files)
    if edit_appspec:
        members = [(rel, edit_appspec(data.decode()).encode() if rel == "appspec.yml" else data, mode)
                   for rel, data, mode in members]
    prefix = f"{top_dir}/" if top_dir else ""
    if fmt == "zip":
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
            for rel, data, mode in members:
                info = zipfile.ZipInfo(prefix + rel, date_time=(2026, 1, 1, 0, 0, 0))
                info.external_attr = (0o100000 | mode) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, data)
    else:
        with tarfile.open(target, "w:gz" if fmt == "tgz" else "w") as archive:
            for rel, data, mode in members:
                info = tarfile.TarInfo(prefix + rel)
                info.size = len(data)
                info.mode = mode
                info.mtime = 1767225600
                archive.addfile(info, io.BytesIO(data))
    return target
