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

import grp
import hashlib
import json
import os
import pwd
import re
import shutil
import stat as _stat
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field

from ansible_collections.rollwright.deploy.plugins.module_utils import appspec as _appspec
from ansible_collections.rollwright.deploy.plugins.module_utils import hook_runner as _hooks
from ansible_collections.rollwright.deploy.plugins.module_utils import host_fs as _fs
from ansible_collections.rollwright.deploy.plugins.module_utils import host_staging as _staging
from ansible_collections.rollwright.deploy.plugins.module_utils import lifecycle as _lifecycle
from ansible_collections.rollwright.deploy.plugins.module_utils import revision as _revision
from ansible_collections.rollwright.deploy.plugins.module_utils.appspec import FILE_EXISTS_BEHAVIORS
from ansible_collections.rollwright.deploy.plugins.module_utils.deployment_id import DEPLOYMENT_ID_RE
from ansible_collections.rollwright.deploy.plugins.module_utils.revision import BUNDLE_EXTENSIONS as _BUNDLE_EXT

STAGING_FAILED = "StagingFailed"  # status.json of a deployment whose staging failed on this host
DEFAULT_STATE_ROOT = "/var/lib/rollwright"
DEFAULT_KEEP_REVISIONS = 5
SELINUX_ENFORCE = "/sys/fs/selinux/enforce"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+=,-]{0,254}$")


class InstallError(Exception):
    """Install cannot proceed; the message names the path or appspec field at fault."""


class StateError(Exception):
    """The host state directory is unusable."""


# ---------------------------------------------------------------------------------------------
# small file helpers
# ---------------------------------------------------------------------------------------------

STATE_DIR_MODE = 0o711  # traversable (scripts run as another user reach their revision), not listable
SEALED_DIR_MODE = 0o700
SEALED_FILE_MODE = 0o600


def state_uids() -> frozenset:
    """Who may own the host state tree: root and the engine's own user."""
    return frozenset({0, os.geteuid()})


def _unsafe(exc: _fs.UnsafePathError) -> StateError:
    return StateError(f"host state: {exc}")


def atomic_write(path: str, data: str, mode: int = SEALED_FILE_MODE) -> None:
    """Replace state file ``path`` atomically (temporary file in the same directory, rename), without following
    a symlink anywhere on the way; missing directories are created traversable but not listable."""
    try:
        with _fs.parent_dir(path, state_uids(), create_mode=STATE_DIR_MODE) as (dfd, name):
            _fs.write_bytes_at(dfd, name, data.encode("utf-8"), mode)
    except _fs.UnsafePathError as exc:
        raise _unsafe(exc) from None


def atomic_write_json(path: str, obj) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_text(path: str) -> str | None:
    """A state file's text, or None when it (or its directory) does not exist; symlinks are refused."""
    try:
        with _fs.parent_dir(path, state_uids()) as (dfd, name):
            return _fs.read_bytes_at(dfd, name).decode("utf-8")
    except FileNotFoundError:
        return None
    except _fs.UnsafePathError as exc:
        raise _unsafe(exc) from None
    except OSError as exc:
        raise StateError(f"host state: cannot read {path}: {exc.strerror or exc}") from None


def read_json(path: str, default=None):
    text = read_text(path)
    if text is None:
        return default
    try:
        return json.loads(text)
    except ValueError as exc:
        raise StateError(f"{path} is not valid JSON: {exc}") from exc


def ensure_state_dir(path: str, mode: int) -> None:
    """Create (or re-seal) a directory of the state tree with exactly ``mode``, refusing symlinks on the way."""
    try:
        with _fs.dir_fd(path, state_uids(), create_mode=STATE_DIR_MODE) as dfd:
            os.fchmod(dfd, mode)
    except _fs.UnsafePathError as exc:
        raise _unsafe(exc) from None


def validate_component(value: str, what: str) -> str:
    """A name used as one directory level of the state tree."""
    if not isinstance(value, str) or not _NAME_RE.match(value) or value in (".", ".."):
        raise StateError(
            f"{what} must be 1-255 characters of letters, digits and ._@+=,- starting with a letter or digit "
            f"(it names a directory), got {value!r}"
        )
    return value


# ---------------------------------------------------------------------------------------------
# host state
# ---------------------------------------------------------------------------------------------

@dataclass
class HostState:
    """``<state_root>/<application>/<deployment_group>/`` on one host (see docs/architecture.md)."""

    state_root: str
    application: str
    deployment_group: str

    def __post_init__(self):
        if not os.path.isabs(self.state_root):
            raise StateError(f"state_root must be an absolute path, got {self.state_root!r}")
        validate_component(self.application, "application")
        validate_component(self.deployment_group, "deployment_group")

    # paths --------------------------------------------------------------------------------
    @property
    def group_dir(self) -> str:
        return os.path.join(self.state_root, self.application, self.deployment_group)

    @property
    def deployments_dir(self) -> str:
        return os.path.join(self.group_dir, "deployments")

    def deployment_dir(self, deployment_id: str) -> str:
        validate_component(deployment_id, "deployment_id")
        return os.path.join(self.deployments_dir, deployment_id)

    def archive_dir(self, deployment_id: str) -> str:
        return os.path.join(self.deployment_dir(deployment_id), "archive")

    def logs_dir(self, deployment_id: str) -> str:
        return os.path.join(self.deployment_dir(deployment_id), "logs")

    def scripts_log(self, deployment_id: str) -> str:
        return os.path.join(self.logs_dir(deployment_id), "scripts.log")

    def appspec_file(self, deployment_id: str) -> str:
        return os.path.join(self.deployment_dir(deployment_id), "appspec.json")

    def revision_file(self, deployment_id: str) -> str:
        return os.path.join(self.deployment_dir(deployment_id), "revision.json")

    def status_file(self, deployment_id: str) -> str:
        return os.path.join(self.deployment_dir(deployment_id), "status.json")

    @property
    def install_file(self) -> str:
        return os.path.join(self.group_dir, "install.json")

    @property
    def cleanup_file(self) -> str:
        return os.path.join(self.group_dir, "cleanup.json")

    # pointers -----------------------------------------------------------------------------
    def _read_pointer(self, name: str) -> str | None:
        value = (read_text(os.path.join(self.group_dir, name)) or "").strip()
        return value or None

    def _write_pointer(self, name: str, deployment_id: str) -> None:
        validate_component(deployment_id, "deployment_id")
        atomic_write(os.path.join(self.group_dir, name), deployment_id + "\n")

    @property
    def last_successful(self) -> str | None:
        return self._read_pointer("last_successful")

    def set_last_successful(self, deployment_id: str) -> None:
        self._write_pointer("last_successful", deployment_id)

    @property
    def most_recent(self) -> str | None:
        return self._read_pointer("most_recent")

    def set_most_recent(self, deployment_id: str) -> None:
        self._write_pointer("most_recent", deployment_id)

    # per-deployment records ---------------------------------------------------------------
    def ensure_group_dir(self) -> None:
        ensure_state_dir(self.group_dir, STATE_DIR_MODE)

    def ensure_deployment_dir(self, deployment_id: str, traversable: bool = False) -> str:
        """The deployment's directory, sealed (0700), or 0711 when scripts run as another user must reach its
        revision; its logs directory is always 0700."""
        path = self.deployment_dir(deployment_id)
        ensure_state_dir(self.deployments_dir, STATE_DIR_MODE)
        ensure_state_dir(path, STATE_DIR_MODE if traversable else SEALED_DIR_MODE)
        ensure_state_dir(self.logs_dir(deployment_id), SEALED_DIR_MODE)
        if read_text(os.path.join(path, ".created")) is None:
            atomic_write(os.path.join(path, ".created"), f"{time.time():.6f}\n")
        return path

    def has_deployment(self, deployment_id: str) -> bool:
        return os.path.isdir(self.deployment_dir(deployment_id))

    def load_appspec(self, deployment_id: str) -> dict | None:
        return read_json(self.appspec_file(deployment_id))

    def load_revision(self, deployment_id: str) -> dict | None:
        return read_json(self.revision_file(deployment_id))

    def load_status(self, deployment_id: str) -> dict | None:
        return read_json(self.status_file(deployment_id))

    def write_status(self, deployment_id: str, status: dict) -> None:
        atomic_write_json(self.status_file(deployment_id), status)

    def bundle_root(self, deployment_id: str) -> str | None:
        """The unpacked revision's root (archive/ or its single top-level directory), if unpacked."""
        revision = self.load_revision(deployment_id) or {}
        archive = self.archive_dir(deployment_id)
        try:
            with _fs.dir_fd(archive, state_uids()):
                pass  # the whole way to it is ours and free of symlinks
        except (FileNotFoundError, NotADirectoryError):
            return None
        except _fs.UnsafePathError as exc:
            raise _unsafe(exc) from None
        rel = revision.get("bundle_root") or "."
        root = os.path.normpath(os.path.join(archive, rel))
        if root != archive and not root.startswith(archive + os.sep):
            raise StateError(f"{self.revision_file(deployment_id)}: bundle_root {rel!r} leaves the archive directory")
        if os.path.islink(root):
            raise StateError(f"host state: refusing {root}: is a symlink (never followed by the engine)")
        return root if os.path.isdir(root) else None

    def created_at(self, deployment_id: str) -> float:
        try:
            return float((read_text(os.path.join(self.deployment_dir(deployment_id), ".created")) or "").strip())
        except (StateError, ValueError):
            try:
                return os.lstat(self.deployment_dir(deployment_id)).st_mtime
            except OSError:
                return 0.0

    def list_deployments(self) -> list[str]:
        """Deployment ids kept on this host, oldest first (symlinks in the deployments directory are not ours)."""
        try:
            with _fs.dir_fd(self.deployments_dir, state_uids()) as dfd:
                names = [n for n in os.listdir(dfd) if _NAME_RE.match(n) and _fs.is_dir_at(dfd, n)]
        except FileNotFoundError:
            return []
        except _fs.UnsafePathError as exc:
            raise _unsafe(exc) from None
        return sorted(names, key=lambda n: (self.created_at(n), n))

    def remove_below(self, parent: str, name: str) -> None:
        """Remove ``name`` (a tree) below state directory ``parent``, following no symlink."""
        try:
            with _fs.dir_fd(parent, state_uids()) as dfd:
                _fs.rmtree_at(dfd, name)
        except FileNotFoundError:
            pass
        except _fs.UnsafePathError as exc:
            raise _unsafe(exc) from None

    def remove_archive(self, deployment_id: str) -> None:
        self.remove_below(self.deployment_dir(deployment_id), "archive")

    def prune(self, keep: int, current: str | None = None) -> list[str]:
        """Keep at most ``keep`` deployment dirs (the current one included, like the agent); never delete the
        current one nor the last successful one. Of the kept ones, only those two keep their unpacked revision
        (the previous-revision rule needs no other). Returns the removed ids."""
        if not isinstance(keep, int) or keep < 1:
            raise StateError(f"keep_revisions must be an integer >= 1, got {keep!r}")
        protected = {d for d in (current, self.last_successful) if d}
        kept = self.list_deployments()
        others = [d for d in kept if d != current]
        extra = len(others) - keep + (1 if current else 0)
        removed = []
        if extra > 0:
            for deployment_id in [d for d in others if d not in protected][:extra]:
                self.remove_below(self.deployments_dir, deployment_id)
                removed.append(deployment_id)
        for deployment_id in kept:
            if deployment_id not in protected and deployment_id not in removed:
                self.remove_archive(deployment_id)
        return removed


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
# permissions (agent semantics)
# ---------------------------------------------------------------------------------------------

def _simple_glob(name: str, pattern: str) -> bool:
    """The agent's matches_simple_glob: only ``*`` is special, and never matches across ``/``."""
    if "/" in name:
        return False
    regex = "".join(".*" if ch == "*" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, name, flags=re.DOTALL) is not None


def _under(name: str, obj: str) -> str | None:
    base = os.path.normpath(obj)
    if not base.endswith("/"):
        base += "/"
    name = name.rstrip("/")
    if name.startswith(base):
        return name[len(base):]
    return None


def permission_matches(name: str, perm: dict) -> bool:
    """True when ``name`` lies under the permission's object, matches its pattern and no except.

    As in the agent: the object itself never matches; ``**`` matches everything below the object;
    any other pattern (and every except entry) is a simple ``*`` glob on direct children only.
    """
    rel = _under(name, perm["object"])
    if rel is None:
        return False
    pattern = perm.get("pattern") or "**"
    if pattern != "**" and not _simple_glob(rel, pattern):
        return False
    return not any(_simple_glob(rel, item) for item in (perm.get("except") or []))


_ACE_TYPES = {"u": "user", "user": "user", "g": "group", "group": "group", "m": "mask", "mask": "mask",
              "o": "other", "other": "other"}


def parse_ace(ace: str) -> dict:
    """Parse one appspec ACL entry the way the agent's AceInfo does."""
    parts = ace.split(":")[::-1]
    bad = InstallError(f"permissions: invalid acl entry {ace!r} (expected [d:][u|g|m|o]:[name]:perms)")
    if len(parts) < 2 or len(parts) > 4:
        raise bad
    default = False
    kind = None
    name = ""
    if len(parts) == 4:
        if parts[3] not in ("d", "default"):
            raise bad
        default = True
    if len(parts) >= 3:
        if parts[2] in ("d", "default"):
            if default:
                raise bad
            default = True
        elif parts[2] in _ACE_TYPES:
            kind = _ACE_TYPES[parts[2]]
        else:
            raise bad
    if parts[1] in ("m", "mask", "o", "other"):
        if kind is None:
            kind = _ACE_TYPES[parts[1]]
        else:
            name = parts[1]
    else:
        kind = kind or "user"
        name = parts[1]
    if kind in ("mask", "other") and name:
        raise bad
    if not default and kind != "mask" and not name:
        raise InstallError(f"permissions: acl entry {ace!r} sets a base entry; use mode for the base permissions")
    perm = parts[0]
    if len(perm) == 1 and perm in "01234567":
        bits = int(perm)
        perm = ("r" if bits & 4 else "-") + ("w" if bits & 2 else "-") + ("x" if bits & 1 else "-")
    elif not perm or any(c not in "rwx-" for c in perm):
        raise bad
    else:
        perm = ("r" if "r" in perm else "-") + ("w" if "w" in perm else "-") + ("x" if "x" in perm else "-")
    return {"default": default, "type": kind, "name": name, "perm": perm}


def _ace_text(ace: dict) -> str:
    return ("default:" if ace["default"] else "") + f"{ace['type']}:{ace['name']}:{ace['perm']}"


def full_acl(acls: list[str], mode: int) -> list[str]:
    """The agent's ChangeAclCommand: the listed entries plus base entries from the file's mode
    (and a mask, and default base entries, where the listed entries need them)."""
    aces = [parse_ace(a) for a in acls]
    perm = [(mode >> shift) & 7 for shift in (6, 3, 0)]

    def rwx(bits):
        return ("r" if bits & 4 else "-") + ("w" if bits & 2 else "-") + ("x" if bits & 1 else "-")

    extra = [
        {"default": False, "type": "user", "name": "", "perm": rwx(perm[0])},
        {"default": False, "type": "group", "name": "", "perm": rwx(perm[1])},
        {"default": False, "type": "other", "name": "", "perm": rwx(perm[2])},
    ]
    named = any(not a["default"] and a["name"] for a in aces)
    has_mask = any(not a["default"] and a["type"] == "mask" for a in aces)
    if named and not has_mask:
        extra.append({"default": False, "type": "mask", "name": "", "perm": rwx(perm[1])})
    defaults = [a for a in aces if a["default"]]
    if defaults:
        for kind, bits in (("user", perm[0]), ("group", perm[1]), ("other", perm[2])):
            if not any(a["type"] == kind and not a["name"] for a in defaults):
                extra.append({"default": True, "type": kind, "name": "", "perm": rwx(bits)})
        if any(a["name"] for a in defaults) and not any(a["type"] == "mask" for a in defaults):
            group = next((a for a in defaults if a["type"] == "group" and not a["name"]), None)
            extra.append({"default": True, "type": "mask", "name": "", "perm": group["perm"] if group else rwx(perm[1])})
    return [_ace_text(a) for a in aces + extra]


def selinux_enabled() -> bool:
    return os.path.exists(SELINUX_ENFORCE)


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
class PermissionOp:
    path: str
    index: int  # position in appspec permissions
    mode: str | None = None
    acls: list | None = None
    context: dict | None = None
    owner: str | None = None
    group: str | None = None


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


def _check_default_acl(perm: dict, index: int, path: str) -> None:
    for ace in perm.get("acls") or []:
        if parse_ace(ace)["default"]:
            raise InstallError(
                f"permissions[{index}]: default acl entry {ace!r} applies to directories only, but {path} is a file"
            )


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
                _check_default_acl(perm, index, obj)
                planner.set_permissions(obj, index, perm)
        elif obj in planner.mkdir_targets or fs.isdir(obj):
            matches = []
            if "file" in types:
                for path in planner.copy_targets:
                    if permission_matches(path, perm):
                        _check_default_acl(perm, index, path)
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


def _run(cmd: list[str], what: str, pass_fds=()) -> None:
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False,
                              pass_fds=tuple(pass_fds))
    except FileNotFoundError as exc:
        raise InstallError(f"{what}: command {cmd[0]!r} not found on this host") from exc
    if proc.returncode != 0:
        raise InstallError(
            f"{what}: command {' '.join(cmd)} failed with exit code {proc.returncode}: "
            f"{proc.stdout.decode('utf-8', 'replace').strip()}"
        )


def _context_range(value) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        low, high = value.get("low"), value.get("high")
        if low and high:
            return f"{low}-{high}"
        return low or high
    return str(value)


def _ids(op: PermissionOp) -> tuple[int, int]:
    uid = gid = -1
    if op.owner is not None:
        try:
            uid = pwd.getpwnam(op.owner).pw_uid
        except KeyError as exc:
            raise InstallError(f"permissions[{op.index}].owner: no user named {op.owner!r} on this host") from exc
    if op.group is not None:
        try:
            gid = grp.getgrnam(op.group).gr_gid
        except KeyError as exc:
            raise InstallError(f"permissions[{op.index}].group: no group named {op.group!r} on this host") from exc
    return uid, gid


def apply_permission(op: PermissionOp, warnings: list[str], trusted_uids=None) -> None:
    """chmod, setfacl, chcon, chown (the agent's order) on the object itself: reached through its parent's
    descriptor, changed through its own descriptor (a symlink gets only chcon -h and lchown)."""
    where = f"permissions[{op.index}] on {op.path}"
    mode = None
    if op.mode is not None:
        try:
            mode = int(str(op.mode), 8)
        except ValueError as exc:
            raise InstallError(f"permissions[{op.index}].mode must be an octal string like '0644', got {op.mode!r}") from exc
    uid, gid = _ids(op) if (op.owner is not None or op.group is not None) else (-1, -1)
    with _fs.parent_dir(op.path, trusted_uids if trusted_uids is not None else state_uids()) as (dfd, name):
        st = _fs.lstat_at(dfd, name)
        if st is None:
            raise InstallError(f"{where}: the path disappeared after it was installed")
        if _stat.S_ISLNK(st.st_mode):
            _apply_context(op, f"{_fs.fd_path(dfd)}/{name}", [dfd], True, where, warnings)
            if uid != -1 or gid != -1:
                os.chown(name, uid, gid, dir_fd=dfd, follow_symlinks=False)
            return
        tfd = _fs.open_nofollow_at(dfd, name)
        try:
            if mode is not None:
                os.fchmod(tfd, mode)
            if op.acls:
                acl = full_acl(list(op.acls), os.fstat(tfd).st_mode & 0o777)
                _run(["setfacl", "--set", ",".join(acl), _fs.fd_path(tfd)], where, pass_fds=[tfd])
            _apply_context(op, _fs.fd_path(tfd), [tfd], False, where, warnings)
            if uid != -1 or gid != -1:
                os.fchown(tfd, uid, gid)
        finally:
            os.close(tfd)


def _apply_context(op: PermissionOp, target: str, fds: list, is_link: bool, where: str, warnings: list[str]) -> None:
    if not (op.context and op.context.get("type")):
        return
    if not selinux_enabled():
        warnings.append(f"{where}: SELinux is not enabled on this host ({SELINUX_ENFORCE} missing); context not applied")
        return
    cmd = ["chcon"]
    if op.context.get("user"):
        cmd += ["-u", op.context["user"]]
    cmd += ["-t", op.context["type"]]
    rng = _context_range(op.context.get("range"))
    if rng:
        cmd += ["-l", rng]
    if is_link:
        cmd.append("-h")
    _run(cmd + [target], where, pass_fds=fds)


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


# ---------------------------------------------------------------------------------------------
# one call of the host_lifecycle module: several consecutive lifecycle events of a deployment
# ---------------------------------------------------------------------------------------------


def validate_deployment_id(value) -> str:
    if not isinstance(value, str) or not DEPLOYMENT_ID_RE.match(value):
        raise StateError(f"deployment_id must look like a CodeDeploy id, 'd-' and 9 upper-case letters or digits "
                         f"(e.g. d-4KJ2N8F0Q), got {value!r}")
    return value


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class DeploymentRequest:
    """What the controller asks a host to do in one module call."""

    deployment_id: str
    events: list
    appspec: dict | None = None
    bundle: str | None = None
    revision: dict | None = None
    deployment_group_id: str | None = None
    file_exists_behavior: str = "DISALLOW"
    ignore_application_stop_failures: bool = False
    hook_timeout_grace: float = 30
    keep_revisions: int = DEFAULT_KEEP_REVISIONS
    complete: bool = False
    check_mode: bool = False
    unpack_limits: dict | None = None
    hook_output: str = _hooks.OUTPUT_ON_FAILURE
    bundle_entries: dict | None = None  # check mode: the bundle's members (path -> file|dir|link), read on the controller
    staging: str | None = None  # "stage": unpack ahead of the batch; "discard": remove an unused staged copy
    bundle_url: str | None = None  # presigned GET URL of the exact S3 version (a secret: never in a message)


@dataclass
class DeploymentRun:
    deployment_id: str
    deployment_dir: str
    log_file: str
    events: list = field(default_factory=list)
    failed_event: str | None = None
    message: str = ""
    changed: bool = False
    warnings: list = field(default_factory=list)
    last_successful_before: str | None = None
    last_successful_after: str | None = None
    pruned: list = field(default_factory=list)
    plan: dict | None = None

    @property
    def failed(self) -> bool:
        return self.failed_event is not None

    def build_plan(self) -> dict:
        """What the events would do (check mode): the scripts each would run (and whose revision they come
        from) and the files Install would create, overwrite and remove."""
        events, files = [], {"create": [], "overwrite": [], "remove": []}
        for item in self.events:
            source = item.get("revision_deployment_id")
            events.append({"event": item["name"], "scripts": [
                {"location": s.get("location"), "runas": s.get("runas"), "timeout": s.get("timeout"), "from_revision": source}
                for s in item.get("scripts") or []]})
            install_plan = item.get("install")
            if install_plan:
                overwritten = set(install_plan.get("overwritten") or [])
                files["create"] = [p for p in install_plan.get("created") or [] if p not in overwritten]
                files["overwrite"] = sorted(overwritten)
                files["remove"] = list(install_plan.get("removed") or [])
        return {"events": events, "files": files}

    def diff(self) -> dict | None:
        """An Ansible diff of the files Install changed (or would change): paths before and after."""
        install_event = next((e for e in self.events if e.get("install")), None)
        if install_event is None:
            return None
        data = install_event["install"]
        removed = set(data.get("removed") or [])
        created = list(data.get("created") or [])
        before = sorted(removed | set(data.get("overwritten") or []))
        after = sorted(set(created))
        return {"before_header": "paths of the previous install (removed or overwritten)",
                "after_header": f"paths installed by {self.deployment_id}",
                "before": "".join(p + "\n" for p in before), "after": "".join(p + "\n" for p in after)}

    def to_dict(self) -> dict:
        return {
            "deployment_id": self.deployment_id, "deployment_dir": self.deployment_dir, "log_file": self.log_file,
            "events": self.events, "failed_event": self.failed_event, "message": self.message,
            "changed": self.changed, "pruned": self.pruned,
            "last_successful": {"before": self.last_successful_before, "after": self.last_successful_after},
            **({"plan": self.plan} if self.plan is not None else {}),
        }


class _EventFailed(Exception):
    pass


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


def validate_host_appspec(data, what: str) -> dict:
    """Re-validate a normalised appspec on the host (the controller's word is not enough) and return its
    normalised form; StateError lists every problem."""
    try:
        return _appspec.AppSpec.from_dict(data, what).to_dict()
    except _appspec.AppSpecError as exc:
        raise StateError(f"the {what} given to the host is not a valid normalised appspec: " + "; ".join(exc.errors)) from None


class HostDeployment:
    """Runs lifecycle events of one deployment on this host (DownloadBundle, Install, hooks)."""

    def __init__(self, state: HostState, request: DeploymentRequest):
        hook_runner, lifecycle = _hooks, _lifecycle
        self.hooks = hook_runner
        self.lifecycle = lifecycle
        self.state = state
        self.req = request
        validate_deployment_id(request.deployment_id)
        if request.appspec is not None:
            request.appspec = validate_host_appspec(request.appspec, "appspec")
        if request.hook_output not in _hooks.OUTPUT_CHOICES:
            raise StateError(f"hook_output must be one of {', '.join(_hooks.OUTPUT_CHOICES)}, got {request.hook_output!r}")
        self.events = lifecycle.validate_events(request.events, allow_controller_events=False)
        if request.staging not in (None, "stage", "discard"):
            raise StateError(f"staging must be stage or discard, got {request.staging!r}")
        if request.staging and self.events != ["DownloadBundle"]:
            raise StateError(f"staging={request.staging} takes events [DownloadBundle] only, got {self.events}")
        self.id = request.deployment_id
        self.run = DeploymentRun(deployment_id=self.id, deployment_dir=state.deployment_dir(self.id),
                                 log_file=state.scripts_log(self.id))
        self.context = hook_runner.HookContext(
            deployment_id=self.id, application=state.application, deployment_group=state.deployment_group,
            deployment_group_id=request.deployment_group_id or state.deployment_group, revision=request.revision or {})

    # helpers --------------------------------------------------------------------------------
    def needs_new_appspec(self) -> bool:
        lc = self.lifecycle
        return any(e in lc.HOST_RESERVED_EVENTS or (lc.is_scriptable(e) and not lc.uses_previous_revision(e))
                   for e in self.events)

    def new_appspec(self) -> dict:
        appspec = self.req.appspec or self.state.load_appspec(self.id)
        if appspec is None:
            raise StateError(
                f"appspec is required for events {', '.join(self.events)}: give the normalised appspec of the "
                f"new revision (none is stored yet for deployment {self.id} on this host)")
        return appspec

    def _event(self, name: str, status: str, message: str = "", **extra) -> dict:
        data = self.hooks.EventResult(name=name, status=status, start=self.hooks.now_iso(), end=self.hooks.now_iso(),
                                      message=message).to_dict()
        data.update(extra)
        return data

    def _record(self, status: str) -> None:
        if self.req.check_mode:
            return
        previous = self.state.load_status(self.id) or {}
        events = dict(previous.get("events") or {})
        for item in self.run.events:
            events[item["name"]] = {"status": item["status"], "end": item.get("end"), "message": item.get("message")}
        self.state.write_status(self.id, {"deployment_id": self.id, "status": status, "updated": time.time(),
                                          "events": events, "failed_event": self.run.failed_event})

    # events -----------------------------------------------------------------------------------
    def download_bundle(self) -> dict:
        start = self.hooks.now_iso()
        t0 = time.monotonic()
        revision = dict(self.req.revision or {})
        existing = self.state.load_revision(self.id)
        bundle = self.req.bundle
        expected = (revision.get("sha256") or "").lower()
        if not bundle:
            unpacked = bool(existing) and self.state.bundle_root(self.id) is not None
            if self.req.bundle_url and not self.req.check_mode and not (
                    unpacked and expected and existing.get("sha256") == expected):
                return self._download_and_unpack(revision, expected)
            if unpacked and existing.get("staged"):
                return self._use_staged(existing, expected)
            if unpacked:
                return self._event("DownloadBundle", "Succeeded", f"bundle of {self.id} already unpacked on this host",
                                   changed=False)
            if self.req.check_mode:
                return self._event("DownloadBundle", "Skipped", "check mode: the bundle would be transferred and unpacked",
                                   changed=True, check_mode=True)
            raise _EventFailed("DownloadBundle needs the bundle: give src (a file on the controller, transferred by the "
                               "action plugin) or bundle (a file already on the host)")
        return self._unpack(bundle, revision, existing, expected, start, t0)

    def _unpack(self, bundle: str, revision: dict, existing: dict | None, expected: str, start: str, t0: float) -> dict:
        rev = _revision
        if not os.path.isfile(bundle):
            raise _EventFailed(f"bundle {bundle} does not exist on this host")
        digest = sha256_file(bundle)
        if expected and digest != expected:
            raise _EventFailed(f"bundle {bundle} has sha256 {digest}, expected {expected}: refusing to install it")
        bundle_type = revision.get("bundle_type")
        if not bundle_type:
            try:
                bundle_type = rev.infer_bundle_type(bundle)
            except rev.RevisionError:
                bundle_type = rev.sniff_bundle_type(bundle)
        if bundle_type not in _BUNDLE_EXT:
            raise _EventFailed(f"bundle {bundle}: cannot tell its type; set revision.bundle_type to zip, tar or tgz")
        if existing and existing.get("sha256") == digest and self.state.bundle_root(self.id):
            if not self.req.check_mode:
                self._store_appspec()
                if not self.req.staging:
                    self.state.set_most_recent(self.id)
            return self._event("DownloadBundle", "Succeeded", f"the same bundle (sha256 {digest[:12]}…) is already unpacked",
                               changed=False)
        if self.req.check_mode:
            return self._event("DownloadBundle", "Skipped", f"check mode: would unpack {bundle_type} bundle {bundle}",
                               changed=True, check_mode=True)
        try:
            limits = rev.UnpackLimits.from_options(self.req.unpack_limits)
        except rev.RevisionError as exc:
            raise _EventFailed(str(exc)) from None
        ddir = self.state.ensure_deployment_dir(self.id, traversable=self.runs_as_others())
        name = "bundle." + _BUNDLE_EXT.get(bundle_type, bundle_type)
        written = self._copy_bundle(bundle, ddir, name)
        if written != digest or (expected and written != expected):
            self.state.remove_below(ddir, name)
            raise _EventFailed(f"bundle {bundle} changed while it was copied (sha256 {digest} before, {written} as "
                               f"written): refusing to install it")
        archive = self.state.archive_dir(self.id)
        self.state.remove_archive(self.id)
        ensure_state_dir(archive, 0o755)
        try:
            root = rev.safe_extract(os.path.join(ddir, name), archive, bundle_type,
                                    revision.get("appspec_name") or "appspec.yml", limits=limits)
        except (rev.RevisionError, OSError) as exc:
            self.state.remove_archive(self.id)
            raise _EventFailed(f"cannot unpack bundle: {exc}") from exc
        finally:
            self.state.remove_below(ddir, name)  # the unpacked revision is what is kept, the archive only as its hash
        target = os.path.join(ddir, name)
        record = {k: revision.get(k) for k in ("source", "bucket", "key", "version", "etag")}
        record["source"] = record["source"] or "local"  # the option's default when `revision` is not given at all
        record.update({"sha256": digest, "bundle_type": bundle_type, "bundle_file": os.path.basename(target), "bundle_kept": False,
                       "bundle_root": os.path.relpath(root, archive), "deployment_id": self.id,
                       "application": self.state.application, "deployment_group": self.state.deployment_group,
                       "downloaded_at": time.time()})
        if self.req.staging:
            try:
                with _fs.dir_fd(archive, state_uids()) as archive_fd:
                    record["staged"] = {"tree_sha256": _staging.tree_digest(archive_fd), "at": time.time()}
            except (_staging.StagingError, OSError) as exc:
                self.state.remove_archive(self.id)
                raise _EventFailed(f"cannot fingerprint the staged copy: {exc}") from None
        atomic_write_json(self.state.revision_file(self.id), record)
        self._store_appspec()
        if not self.req.staging:
            self.state.set_most_recent(self.id)
        done = "staged" if self.req.staging else "unpacked"
        data = self._event("DownloadBundle", "Succeeded", f"{done} {bundle_type} bundle (sha256 {digest})", changed=True)
        data.update(start=start, duration=round(time.monotonic() - t0, 3))
        return data

    def _download_and_unpack(self, revision: dict, expected: str) -> dict:
        """Fetch the bundle through the presigned URL into the sealed deployment directory, check it against the
        SHA-256 the controller verified, unpack it; the downloaded archive is removed either way."""
        start, t0 = self.hooks.now_iso(), time.monotonic()
        what = "s3://{}/{} version {}".format(revision.get("bucket"), revision.get("key"), revision.get("version"))
        if not expected:
            raise _EventFailed(f"a bundle fetched by URL needs revision.sha256 to check it against ({what})")
        try:
            limit = _revision.UnpackLimits.from_options(self.req.unpack_limits).total_bytes
        except _revision.RevisionError as exc:
            raise _EventFailed(str(exc)) from None
        ddir = self.state.ensure_deployment_dir(self.id, traversable=self.runs_as_others())
        try:
            with _fs.dir_fd(ddir, state_uids()) as dfd:
                digest = _staging.download(str(self.req.bundle_url), dfd, _staging.DOWNLOAD_NAME, limit, what)
            if digest != expected:
                raise _EventFailed(f"the bundle downloaded for {what} has sha256 {digest}, expected {expected}: "
                                   "refusing to unpack it")
            return self._unpack(os.path.join(ddir, _staging.DOWNLOAD_NAME), revision,
                                self.state.load_revision(self.id), expected, start, t0)
        except _staging.StagingError as exc:
            raise _EventFailed(str(exc)) from None
        finally:
            self.state.remove_below(ddir, _staging.DOWNLOAD_NAME)

    def _use_staged(self, existing: dict, expected: str) -> dict:
        """The revision staged before the batch, if it is still exactly what was staged (same bundle hash, same
        tree fingerprint); anything else is refused."""
        if expected and existing.get("sha256") != expected:
            raise _EventFailed(f"the copy staged for {self.id} has sha256 {existing.get('sha256')}, expected {expected}: "
                               "refusing to install it")
        try:
            with _fs.dir_fd(self.state.archive_dir(self.id), state_uids()) as archive_fd:
                now = _staging.tree_digest(archive_fd)
        except _fs.UnsafePathError as exc:
            raise _EventFailed(f"the staged copy: {exc}") from None
        except (_staging.StagingError, OSError) as exc:
            raise _EventFailed(f"cannot read the staged copy of {self.id}: {exc}") from None
        if now != (existing.get("staged") or {}).get("tree_sha256"):
            raise _EventFailed(f"the copy staged for {self.id} changed since it was staged (its files no longer match "
                               "their fingerprint): refusing to install it")
        if not self.req.check_mode and not self.req.staging:
            self._store_appspec()
            self.state.set_most_recent(self.id)
        return self._event("DownloadBundle", "Succeeded", f"using the copy staged before the batch (sha256 "
                           f"{str(existing.get('sha256'))[:12]}…, unchanged)", changed=False)

    def discard_staged(self) -> DeploymentRun:
        """Remove this deployment's directory when it only holds a staged copy no batch used (the deployment
        ended before this host's turn); a directory a batch used keeps its logs and follows the prune rule."""
        status = (self.state.load_status(self.id) or {}).get("status")
        unused = status in (_staging.STAGED, STAGING_FAILED)
        if unused and not self.req.check_mode:
            self.state.remove_below(self.state.deployments_dir, self.id)
        message = (f"{'would remove' if self.req.check_mode else 'removed'} the unused staged copy of {self.id}"
                   if unused else f"no unused staged copy of {self.id} on this host")
        self.run.events.append(self._event("DownloadBundle", "Succeeded", message, changed=unused))
        self.run.changed = unused
        self.run.message = f"deployment {self.id}: {message}"
        return self.run

    def discard_stale_staged(self) -> list[str]:
        """Staged copies of other deployments that never got used (their deployment was interrupted)."""
        removed = []
        for other in self.state.list_deployments():
            if other != self.id and (self.state.load_status(other) or {}).get("status") in (_staging.STAGED, STAGING_FAILED):
                self.state.remove_below(self.state.deployments_dir, other)
                removed.append(other)
        return removed

    @staticmethod
    def _copy_bundle(bundle: str, ddir: str, name: str) -> str:
        """Copy the pushed bundle into the sealed deployment directory (0600) and return the sha256 of the bytes
        written, so what is verified is what gets unpacked."""
        with open(bundle, "rb") as src, _fs.dir_fd(ddir, state_uids()) as dfd:
            return _fs.write_stream_at(dfd, name, src)

    def runs_as_others(self) -> bool:
        """True when a script of this deployment runs as a user other than the engine's: its revision must be
        reachable by that user, so the deployment directory is 0711 instead of 0700."""
        appspec = self.req.appspec or self.state.load_appspec(self.id) or {}
        me = pwd.getpwuid(os.geteuid()).pw_name if os.geteuid() != 0 else "root"
        return any((h.get("runas") or me) != me for hooks in (appspec.get("hooks") or {}).values() for h in hooks or [])

    def _store_appspec(self) -> None:
        if self.req.appspec is not None:
            atomic_write_json(self.state.appspec_file(self.id), self.req.appspec)

    def install(self) -> dict:
        start = self.hooks.now_iso()
        t0 = time.monotonic()
        root = self.state.bundle_root(self.id)
        appspec = self.new_appspec()
        skeleton = None
        if root is None:
            if self.req.check_mode and self.req.bundle_entries is not None:
                skeleton = root = bundle_skeleton(self.req.bundle_entries)
            elif self.req.check_mode:
                files = [f"{f.get('source')} -> {f.get('destination')}" for f in appspec.get("files") or []]
                return self._event("Install", "Skipped", "check mode: the bundle is not on the host yet; would install "
                                   + (", ".join(files) or "no files"), changed=True, check_mode=True)
            else:
                raise _EventFailed(f"Install: the revision of {self.id} is not unpacked on this host; run DownloadBundle first")
        try:
            result = install(self.state, self.id, appspec, root, self.req.file_exists_behavior, check_mode=self.req.check_mode)
        except (InstallError, StateError) as exc:
            raise _EventFailed(f"Install failed: {exc}") from exc
        finally:
            if skeleton:
                shutil.rmtree(skeleton, ignore_errors=True)
        self.run.warnings.extend(result.warnings)
        status = "Skipped" if self.req.check_mode else "Succeeded"
        data = self._event("Install", status, result.message, changed=result.changed, install=result.to_dict(),
                           check_mode=self.req.check_mode)
        data.update(start=start, duration=round(time.monotonic() - t0, 3))
        return data

    def hook(self, name: str) -> dict:
        lc = self.lifecycle
        if lc.uses_previous_revision(name):
            source_id = self.state.last_successful
            if source_id is None:
                return self._event(name, "Skipped", "first deployment on this host: no previous revision to run scripts of")
            appspec = self.state.load_appspec(source_id)
            if appspec is not None:
                try:
                    appspec = validate_host_appspec(appspec, f"stored appspec of deployment {source_id}")
                except StateError as exc:
                    raise _EventFailed(str(exc)) from None
            root = self.state.bundle_root(source_id) if appspec is not None else None
            if appspec is None or root is None:
                return self._event(name, "Skipped", f"the last successful deployment {source_id} is no longer on this host")
        else:
            source_id = self.id
            appspec = self.new_appspec()
            root = self.state.bundle_root(self.id)
        hooks = (appspec.get("hooks") or {}).get(name) or []
        if self.req.check_mode:
            scripts = [{"location": h.get("location"), "runas": h.get("runas"), "timeout": h.get("timeout")} for h in hooks]
            return self._event(name, "Skipped", f"check mode: {len(hooks)} script(s) of deployment {source_id} would run",
                               scripts=scripts, revision_deployment_id=source_id, check_mode=True, changed=bool(hooks))
        if root is None:
            if not hooks:
                return self._event(name, "Succeeded", "no scripts for this event", revision_deployment_id=source_id)
            raise _EventFailed(f"{name}: the revision of {self.id} is not unpacked on this host; run DownloadBundle first")
        try:
            result = self.hooks.run_event(name, hooks, root, self.context, self.run.log_file,
                                          grace=self.req.hook_timeout_grace, output=self.req.hook_output)
        except _fs.UnsafePathError as exc:
            raise _EventFailed(f"{name}: host state: {exc}") from None
        data = result.to_dict()
        data.update(revision_deployment_id=source_id, changed=bool(hooks))
        return data

    # the run ---------------------------------------------------------------------------------
    def execute(self) -> DeploymentRun:
        lc = self.lifecycle
        run = self.run
        run.last_successful_before = run.last_successful_after = self.state.last_successful
        if self.req.staging == "discard":
            return self.discard_staged()
        if self.req.staging == "stage" and not self.req.check_mode:
            run.pruned = self.discard_stale_staged()
        in_progress = _staging.STAGED if self.req.staging else "InProgress"
        if self.needs_new_appspec() and self.req.appspec is None and self.state.load_appspec(self.id) is None:
            self.new_appspec()  # raises the clear error before anything runs
        if not self.req.check_mode:
            self.state.ensure_deployment_dir(self.id, traversable=self.runs_as_others())
            self._record(in_progress)
        for index, name in enumerate(self.events):
            try:
                if name == "DownloadBundle":
                    data = self.download_bundle()
                elif name == "Install":
                    data = self.install()
                else:
                    data = self.hook(name)
            except (_EventFailed, StateError) as exc:
                data = self._event(name, "Failed", str(exc))
            except _fs.UnsafePathError as exc:
                data = self._event(name, "Failed", f"host state: {exc}")
            run.events.append(data)
            run.changed = run.changed or bool(data.get("changed"))
            if data["status"] == "Failed":
                if lc.uses_previous_revision(name) and self.req.ignore_application_stop_failures:
                    data["ignored"] = True
                    run.warnings.append(f"{name} failed and was ignored (ignore_application_stop_failures): {data['message']}")
                    continue
                run.failed_event = name
                run.message = self._failure_message(data)
                for rest in self.events[index + 1:]:
                    run.events.append(self._event(rest, "Skipped", f"not run: {name} failed"))
                break
        if self.req.check_mode:
            run.plan = run.build_plan()
        if run.failed:
            self._record(STAGING_FAILED if self.req.staging else "Failed")
            return run
        if self.req.complete and not self.req.check_mode:
            if self.state.last_successful != self.id:
                self.state.set_last_successful(self.id)
                run.changed = True
            run.last_successful_after = self.id
            run.pruned = self.state.prune(self.req.keep_revisions, current=self.id)
            self._record("Succeeded")
        else:
            self._record(in_progress)
        done = ", ".join(f"{e['name']} {e['status']}" for e in run.events)
        run.message = f"deployment {self.id}: {done}"
        return run

    def _failure_message(self, data: dict) -> str:
        name = data["name"]
        lines = [f"lifecycle event {name} failed on this host for deployment {self.id}: {data.get('message')}"]
        scripts = data.get("scripts") or []
        if scripts:
            last = scripts[-1]
            if data.get("revision_deployment_id") and data["revision_deployment_id"] != self.id:
                lines.append(f"(the script belongs to the last successful deployment {data['revision_deployment_id']})")
            lines.append(f"log file: {last.get('log_file') or self.run.log_file}")
            if last.get("output_tail"):
                lines.append("output (tail):")
                lines.append(last["output_tail"])
        if self.lifecycle.uses_previous_revision(name):
            lines.append("this event runs the previous revision's scripts; set ignore_application_stop_failures: true to "
                         "log such a failure and carry on with the deployment (CodeDeploy's ignoreApplicationStopFailures)")
        return "\n".join(lines)
