# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host side of a deployment: the host state directory and the Install event.

Runs on the hosts: stdlib only.

Install follows the CodeDeploy agent (Installer / InstallInstruction):

1. undo the previous install's cleanup list (files and symlinks deleted, directories removed when
   empty, in reverse creation order, i.e. deepest first);
2. plan the copies: a directory source is copied recursively into the destination, a file source
   goes to ``destination/<basename>``; missing ancestors of a destination are created (and
   recorded); ``file_exists_behavior`` is checked against the file system *after* step 1, so only
   files the previous install did not create count as existing: DISALLOW fails naming the files,
   OVERWRITE replaces and records the file (the next install removes it), RETAIN copies nothing
   and records nothing;
3. the new cleanup list (every planned path, in creation order) is written *before* anything is
   copied, so an install that dies half-way is still undone by the next one;
4. copy (modes, times and, as root, owners preserved; symlinks re-created, never followed);
5. ``permissions``, only on paths this install created, in the agent's order per path: chmod,
   setfacl, SELinux context (chcon, only where SELinux is enabled), chown.

Improvements over the agent (deliberate): symlinks inside a copied directory are re-created as
symlinks rather than followed; an OVERWRITE replaces the file by rename (a stray symlink at the
destination is replaced, never written through); chmod/setfacl are not applied through symlinks.

Idempotence: ``install.json`` records the deployment id, ``status: Succeeded`` and a signature of
every created path (type; for files size, mtime_ns, mode, uid, gid; for symlinks the target; for
directories mode, uid, gid). Re-running the install of the same deployment id verifies those
signatures with lstat (no content hashing: copies keep the archive's mtime, so an edit shows) and
changes nothing when all match; on any drift the install is redone.
"""

from __future__ import annotations

import os
import pwd
import stat as _stat
import tempfile
import time
from dataclasses import asdict, dataclass, field

from ansible_collections.rollwright.deploy.plugins.module_utils.host import fs as _fs
from ansible_collections.rollwright.deploy.plugins.module_utils.revisions.appspec import FILE_EXISTS_BEHAVIORS
from ansible_collections.rollwright.deploy.plugins.module_utils.host.permissions import PermissionOp, apply_permission, check_default_acl, permission_matches
from ansible_collections.rollwright.deploy.plugins.module_utils.host.state import HostState, InstallError, atomic_write_json, read_json, state_uids


# ---------------------------------------------------------------------------------------------
# cleanup list
# ---------------------------------------------------------------------------------------------

def undo_cleanup(paths: list[str], trusted_uids) -> list[str]:
    """Delete what a previous install created: reverse creation order (deepest first); files and
    symlinks are deleted (a symlink itself, never its target), directories removed only when empty;
    missing paths are ignored.

    Every path is reached from ``/`` without following symlinks, through directories owned by
    ``trusted_uids``. All paths are checked before anything is deleted; a path whose parent is a
    symlink or is owned by someone else fails the undo, naming it (nothing is deleted through it).
    """
    refused = []
    for path in paths:
        try:
            with _fs.parent_dir(path, trusted_uids):
                pass
        except (FileNotFoundError, NotADirectoryError):
            continue
        except _fs.UnsafePathError as exc:
            refused.append(str(exc))
    if refused:
        raise InstallError("cannot undo the previous install's cleanup list, nothing was removed: " + "; ".join(refused[:5])
                           + (f" and {len(refused) - 5} more" if len(refused) > 5 else ""))
    removed = []
    for path in reversed(paths):
        try:
            with _fs.parent_dir(path, trusted_uids) as (dfd, name):
                if _fs.remove_at(dfd, name):
                    removed.append(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except _fs.UnsafePathError as exc:  # swapped after the check: stop, naming it
            raise InstallError(f"cleanup of the previous install stopped: {exc}") from None
    return removed


def simulate_undo(paths: list[str]) -> set[str]:
    """The paths undo_cleanup(paths) would remove, without touching anything (check mode)."""
    removed: set[str] = set()
    for path in reversed(paths):
        if os.path.islink(path) or (os.path.lexists(path) and not os.path.isdir(path)):
            removed.add(path)
        elif os.path.isdir(path):
            try:
                entries = os.listdir(path)
            except OSError:
                continue
            if all(os.path.join(path, e) in removed for e in entries):
                removed.add(path)
    return removed


class _FsView:
    """The file system as it will be after a (possibly simulated) undo of the cleanup list."""

    def __init__(self, gone: set[str] | None = None):
        self.gone = gone or set()

    def lexists(self, path: str) -> bool:
        return path not in self.gone and os.path.lexists(path)

    def isdir(self, path: str) -> bool:
        return path not in self.gone and os.path.isdir(path) and not os.path.islink(path)


# ---------------------------------------------------------------------------------------------
# install plan
# ---------------------------------------------------------------------------------------------

@dataclass
class CopyOp:
    kind: str  # "mkdir" | "copy"
    destination: str
    source: str | None = None
    overwrite: bool = False


@dataclass
class InstallPlan:
    file_exists_behavior: str
    ops: list = field(default_factory=list)
    permissions: list = field(default_factory=list)
    retained: list = field(default_factory=list)

    @property
    def created(self) -> list[str]:
        """Every path this install creates or overwrites, in creation order (the cleanup list)."""
        return [op.destination for op in self.ops]

    @property
    def overwritten(self) -> list[str]:
        return [op.destination for op in self.ops if op.overwrite]


def _norm(path: str) -> str:
    return os.path.normpath(path)


def _source_path(bundle_root: str, source: str) -> str:
    rel = (source or "/").lstrip("/")
    path = os.path.normpath(os.path.join(bundle_root, rel)) if rel else os.path.normpath(bundle_root)
    root = os.path.normpath(bundle_root)
    if path != root and not path.startswith(root + os.sep):
        raise InstallError(f"files: source {source!r} leaves the bundle root")
    return path


class _Planner:
    def __init__(self, fs: _FsView, behavior: str):
        self.fs = fs
        self.behavior = behavior
        self.plan = InstallPlan(file_exists_behavior=behavior)
        self.copy_targets: dict[str, str] = {}
        self.mkdir_targets: dict[str, None] = {}  # ordered set
        self.existing: list[str] = []
        self.permission_targets: set[str] = set()

    def mkdir(self, dest: str, origin: str) -> None:
        dest = _norm(dest)
        if dest in self.copy_targets:
            raise InstallError(f"files: {dest} is both a file copied from {self.copy_targets[dest]} and a directory to create (from {origin})")
        if dest not in self.mkdir_targets:
            self.mkdir_targets[dest] = None
            self.plan.ops.append(CopyOp("mkdir", dest))

    def copy(self, source: str, dest: str, overwrite: bool = False) -> None:
        dest = _norm(dest)
        if dest in self.copy_targets:
            raise InstallError(
                f"files: two sources, {self.copy_targets[dest]} and {source}, are copied to the same destination {dest}"
            )
        if dest in self.mkdir_targets:
            raise InstallError(f"files: {source} would be copied to {dest}, which this install also creates as a directory")
        self.copy_targets[dest] = source
        self.plan.ops.append(CopyOp("copy", dest, source=source, overwrite=overwrite))

    def exists(self, path: str) -> bool:
        return self.fs.lexists(path) or path in self.mkdir_targets or path in self.copy_targets

    def isdir(self, path: str) -> bool:
        return self.fs.isdir(path) or path in self.mkdir_targets

    def missing_ancestors(self, dest: str, origin: str) -> None:
        missing = []
        parent = os.path.dirname(_norm(dest))
        while parent not in ("", "/", ".") and not self.exists(parent):
            missing.insert(0, parent)
            parent = os.path.dirname(parent)
        if parent not in ("", "/", ".") and not self.isdir(parent):
            raise InstallError(f"files: cannot install under {parent}: it exists and is not a directory")
        for directory in missing:
            self.mkdir(directory, origin)

    def directory_copy(self, source: str, dest: str) -> None:
        dest = _norm(dest)
        if self.fs.lexists(dest) and not self.isdir(dest):
            raise InstallError(f"files: destination {dest} for directory {source} exists and is not a directory")
        if not self.isdir(dest):
            self.mkdir(dest, source)
        for entry in sorted(os.listdir(source)):
            src = os.path.join(source, entry)
            target = os.path.join(dest, entry)
            if os.path.isdir(src) and not os.path.islink(src):
                self.directory_copy(src, target)
            else:
                self.normal_copy(src, target)

    def normal_copy(self, source: str, dest: str) -> None:
        dest = _norm(dest)
        if not (os.path.islink(source) or os.path.isfile(source)):
            raise InstallError(f"files: {source} is neither a regular file, a directory nor a symlink")
        if self.fs.lexists(dest):
            if self.behavior == "DISALLOW":
                self.existing.append(dest)
            elif self.behavior == "OVERWRITE":
                if self.isdir(dest):
                    raise InstallError(f"files: cannot overwrite directory {dest} with file {source}")
                self.copy(source, dest, overwrite=True)
            else:  # RETAIN: neither copy nor record
                self.plan.retained.append(dest)
        else:
            self.copy(source, dest)

    def set_permissions(self, path: str, index: int, perm: dict) -> None:
        if path in self.permission_targets:
            raise InstallError(f"permissions[{index}]: permissions for {path} are specified more than once")
        self.permission_targets.add(path)
        self.plan.permissions.append(PermissionOp(
            path=path, index=index, mode=perm.get("mode"), acls=perm.get("acls") or None,
            context=perm.get("context") or None, owner=perm.get("owner"), group=perm.get("group"),
        ))


def plan_install(appspec: dict, bundle_root: str, file_exists_behavior: str = "DISALLOW", fs: _FsView | None = None) -> InstallPlan:
    """Plan an install against the file system seen through ``fs`` (default: as it is now)."""
    fs = fs or _FsView()
    behavior = (appspec.get("file_exists_behavior") or file_exists_behavior or "DISALLOW").upper()
    if behavior not in FILE_EXISTS_BEHAVIORS:
        raise InstallError(f"file_exists_behavior must be one of {', '.join(FILE_EXISTS_BEHAVIORS)}, got {behavior!r}")
    planner = _Planner(fs, behavior)
    for index, item in enumerate(appspec.get("files") or []):
        source = item.get("source") or "/"
        destination = item.get("destination")
        if not destination or not os.path.isabs(destination):
            raise InstallError(f"files[{index}].destination must be an absolute path, got {destination!r}")
        src = _source_path(bundle_root, source)
        if not os.path.lexists(src):
            raise InstallError(f"files[{index}].source {source!r} does not exist in the revision ({src})")
        if os.path.isdir(src) and not os.path.islink(src):
            planner.missing_ancestors(destination, src)
            planner.directory_copy(src, destination)
        else:
            target = os.path.join(destination, os.path.basename(src))
            planner.missing_ancestors(target, src)
            planner.normal_copy(src, target)
    if planner.existing:
        shown = ", ".join(planner.existing[:20]) + (f" and {len(planner.existing) - 20} more" if len(planner.existing) > 20 else "")
        raise InstallError(
            f"file_exists_behavior is DISALLOW and {len(planner.existing)} file(s) already exist that the previous "
            f"install did not create: {shown}. Remove them, or deploy with file_exists_behavior OVERWRITE or RETAIN"
        )
    for index, perm in enumerate(appspec.get("permissions") or []):
        obj = perm.get("object")
        if not obj:
            raise InstallError(f"permissions[{index}].object is required")
        obj = _norm(obj)
        types = perm.get("type") or ["file", "directory"]
        if obj in planner.copy_targets:
            if "file" in types:
                if (perm.get("pattern") or "**") != "**":
                    raise InstallError(f"permissions[{index}]: object {obj} is a file, so pattern must be '**', got {perm.get('pattern')!r}")
                if perm.get("except"):
                    raise InstallError(f"permissions[{index}]: object {obj} is a file, so except must be empty")
                check_default_acl(perm, index, obj)
                planner.set_permissions(obj, index, perm)
        elif obj in planner.mkdir_targets or fs.isdir(obj):
            matches = []
            if "file" in types:
                for path in planner.copy_targets:
                    if permission_matches(path, perm):
                        check_default_acl(perm, index, path)
                        matches.append(path)
            if "directory" in types:
                matches.extend(p for p in planner.mkdir_targets if permission_matches(p, perm))
            for path in matches:
                planner.set_permissions(path, index, perm)
    return planner.plan


# ---------------------------------------------------------------------------------------------
# execution
# ---------------------------------------------------------------------------------------------

def destination_uids(*appspecs_or_records) -> frozenset:
    """Who may own a directory on the way to a destination or cleanup path: root, the engine's own user and
    every owner the appspec's permissions name (they own what the install gave them). Accepts normalised
    appspecs and install records."""
    uids = set(state_uids())
    for item in appspecs_or_records:
        item = item or {}
        recorded = [i for i in item.get("instructions") or [] if i.get("type") == "permissions"]
        perms = list(item.get("permissions") or []) + recorded
        for perm in perms:
            owner = perm.get("owner")
            if owner:
                try:
                    uids.add(pwd.getpwnam(owner).pw_uid)
                except KeyError:
                    pass
    return frozenset(uids)


def _copy_one(source: str, dest: str, overwrite: bool, trusted_uids) -> None:
    """Copy one planned file or symlink to ``dest`` through a descriptor of its parent (see host_fs)."""
    st = os.lstat(source)
    owner = (st.st_uid, st.st_gid) if os.geteuid() == 0 else None
    with _fs.parent_dir(dest, trusted_uids) as (dfd, name):
        if _stat.S_ISLNK(st.st_mode):
            _fs.symlink_at(os.readlink(source), dfd, name, replace=overwrite, owner=owner)
        else:
            _fs.copy_file_at(source, dfd, name, replace=overwrite, owner=owner)


def _mkdir_one(dest: str, trusted_uids) -> None:
    with _fs.parent_dir(dest, trusted_uids) as (dfd, name):
        _fs.mkdir_at(dfd, name, 0o755)


def path_signature(path: str) -> dict | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if _stat.S_ISLNK(st.st_mode):
        return {"type": "symlink", "target": os.readlink(path), "uid": st.st_uid, "gid": st.st_gid}
    if _stat.S_ISDIR(st.st_mode):
        return {"type": "directory", "mode": st.st_mode & 0o7777, "uid": st.st_uid, "gid": st.st_gid}
    return {"type": "file", "size": st.st_size, "mtime_ns": st.st_mtime_ns, "mode": st.st_mode & 0o7777,
            "uid": st.st_uid, "gid": st.st_gid}


@dataclass
class InstallResult:
    changed: bool
    deployment_id: str
    file_exists_behavior: str
    created: list = field(default_factory=list)
    overwritten: list = field(default_factory=list)
    retained: list = field(default_factory=list)
    removed: list = field(default_factory=list)
    permissions: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    message: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _previous_cleanup(state: HostState) -> list[str]:
    data = read_json(state.cleanup_file, default=None)
    if data is None:
        return []
    if isinstance(data, dict):
        return list(data.get("paths") or [])
    return list(data)


def installed_unchanged(state: HostState, deployment_id: str) -> bool:
    """True when install.json says this deployment's install completed and every path it created
    still has the recorded signature."""
    record = read_json(state.install_file, default=None) or {}
    if record.get("deployment_id") != deployment_id or record.get("status") != "Succeeded":
        return False
    signatures = record.get("signatures") or {}
    if sorted(signatures) != sorted(_previous_cleanup(state)):
        return False
    return all(path_signature(path) == sig for path, sig in signatures.items())


def check_destinations(appspec: dict, trusted_uids) -> None:
    """Refuse, before anything is removed or copied, a destination whose existing part runs through a symlink,
    a non-directory or a directory owned by someone the appspec does not name."""
    for index, item in enumerate(appspec.get("files") or []):
        destination = item.get("destination")
        if not destination or not os.path.isabs(destination):
            raise InstallError(f"files[{index}].destination must be an absolute path, got {destination!r}")
        try:
            _fs.check_existing_part(destination, trusted_uids)
        except _fs.UnsafePathError as exc:
            raise InstallError(f"files[{index}].destination {destination}: {exc}") from None


def install(state: HostState, deployment_id: str, appspec: dict, bundle_root: str,
            file_exists_behavior: str = "DISALLOW", check_mode: bool = False) -> InstallResult:
    """The Install lifecycle event (see the module docstring)."""
    behavior = (appspec.get("file_exists_behavior") or file_exists_behavior or "DISALLOW").upper()
    if installed_unchanged(state, deployment_id):
        record = read_json(state.install_file, default={})
        return InstallResult(changed=False, deployment_id=deployment_id, file_exists_behavior=behavior,
                             created=list(record.get("signatures") or {}),
                             message=f"deployment {deployment_id} is already installed and its files are unchanged")
    previous = _previous_cleanup(state)
    if check_mode:
        gone = simulate_undo(previous)
        plan = plan_install(appspec, bundle_root, behavior, fs=_FsView(gone))
        return InstallResult(changed=bool(gone or plan.ops or plan.permissions), deployment_id=deployment_id,
                             file_exists_behavior=plan.file_exists_behavior, created=plan.created,
                             overwritten=plan.overwritten, retained=plan.retained, removed=sorted(gone),
                             permissions=[p.path for p in plan.permissions],
                             message=f"check mode: would remove {len(gone)} path(s) of the previous install and create {len(plan.ops)}")
    state.ensure_group_dir()
    uids = destination_uids(appspec, read_json(state.install_file, default=None))
    check_destinations(appspec, uids)
    removed = undo_cleanup(previous, uids)
    plan = plan_install(appspec, bundle_root, behavior)
    created = plan.created
    atomic_write_json(state.install_file, {
        "deployment_id": deployment_id, "status": "InProgress", "started": time.time(),
        "file_exists_behavior": plan.file_exists_behavior,
        "instructions": [asdict(op) for op in plan.ops] + [dict(asdict(p), type="permissions") for p in plan.permissions],
    })
    atomic_write_json(state.cleanup_file, {"deployment_id": deployment_id, "paths": created})
    result = InstallResult(changed=True, deployment_id=deployment_id, file_exists_behavior=plan.file_exists_behavior,
                           created=created, overwritten=plan.overwritten, retained=plan.retained, removed=removed)
    try:
        for op in plan.ops:
            if op.kind == "mkdir":
                _mkdir_one(op.destination, uids)
            else:
                _copy_one(op.source, op.destination, op.overwrite, uids)
        for perm in plan.permissions:
            apply_permission(perm, result.warnings, uids)
            result.permissions.append(perm.path)
    except _fs.UnsafePathError as exc:
        raise InstallError(f"install stopped: {exc}") from None
    except OSError as exc:
        raise InstallError(f"install failed at {getattr(exc, 'filename', None) or '?'}: {exc.strerror or exc}") from exc
    atomic_write_json(state.install_file, {
        "deployment_id": deployment_id, "status": "Succeeded", "finished": time.time(),
        "file_exists_behavior": plan.file_exists_behavior,
        "instructions": [asdict(op) for op in plan.ops] + [dict(asdict(p), type="permissions") for p in plan.permissions],
        "signatures": {path: path_signature(path) for path in created},
    })
    result.message = (f"installed {len(created)} path(s) ({len(plan.overwritten)} overwritten, {len(plan.retained)} retained), "
                      f"removed {len(removed)} path(s) of the previous install")
    return result


def bundle_skeleton(entries: dict) -> str:
    """A private temporary tree with the bundle's names (empty files, directories, dangling links), so check mode
    plans the install exactly without the bundle on the host. The caller removes it."""
    base = tempfile.mkdtemp(prefix="rollwright-plan-")
    for rel in sorted(entries, key=lambda r: r.count("/")):
        parts = [p for p in str(rel).split("/") if p not in ("", ".")]
        if not parts or ".." in parts:
            continue
        path = os.path.join(base, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        kind = entries[rel]
        if kind == "dir":
            os.makedirs(path, exist_ok=True)
        elif kind == "link":
            os.symlink("rollwright-plan-placeholder", path)
        elif not os.path.lexists(path):
            with open(path, "w", encoding="utf-8"):
                pass
    return base
