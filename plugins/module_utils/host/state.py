# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host state directory: ``<state_root>/<application>/<deployment_group>/`` on one host, its sealed files
(written atomically, read without following symlinks), the deployment directories and their pointers, and the
errors of the host engine.

Runs on the hosts: stdlib only.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass

from ansible_collections.rollwright.deploy.plugins.module_utils.errors import RollwrightError
from ansible_collections.rollwright.deploy.plugins.module_utils.host import fs as _fs
from ansible_collections.rollwright.deploy.plugins.module_utils.revisions.deployment_id import DEPLOYMENT_ID_RE

DEFAULT_STATE_ROOT = "/var/lib/rollwright"
DEFAULT_KEEP_REVISIONS = 5
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+=,-]{0,254}$")


class StateError(RollwrightError):
    """The host state directory is unusable."""


class InstallError(RollwrightError):
    """Install cannot proceed; the message names the path or appspec field at fault."""


class EventFailed(RollwrightError):
    """A lifecycle event failed on this host; the message says why."""


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

def validate_deployment_id(value) -> str:
    if not isinstance(value, str) or not DEPLOYMENT_ID_RE.match(value):
        raise StateError(f"deployment_id must look like a CodeDeploy id, 'd-' and 9 upper-case letters or digits "
                         f"(e.g. d-4KJ2N8F0Q), got {value!r}")
    return value


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


def _describe_deployment(state: HostState, deployment_id: str | None) -> dict | None:
    """One deployment kept on the host: its id, status, failed event, revision identity and the events its appspec
    has scripts for (the controller decides from them whether BeforeBlockTraffic needs a call)."""
    if not deployment_id:
        return None
    status: dict = {}
    revision = None
    hook_events = None
    if state.has_deployment(deployment_id):
        status = state.load_status(deployment_id) or {}
        revision = state.load_revision(deployment_id)
        appspec = state.load_appspec(deployment_id)
        if isinstance(appspec, dict) and isinstance(appspec.get("hooks") or {}, dict):
            hook_events = sorted(name for name, scripts in (appspec.get("hooks") or {}).items() if scripts)
    return {"deployment_id": deployment_id, "status": status.get("status"),
            "failed_event": status.get("failed_event"), "revision": revision, "hook_events": hook_events}


def describe_host_state(state: HostState) -> dict:
    """What the host runs for one deployment group, as host_deployment_info reports it (and host_lifecycle with
    report_state): the last successful deployment, the most recent one, and every deployment kept."""
    last = _describe_deployment(state, state.last_successful)
    if last:
        last.pop("status", None)
        last.pop("failed_event", None)
    return {"exists": os.path.isdir(state.group_dir), "group_dir": state.group_dir, "last_successful": last,
            "most_recent": _describe_deployment(state, state.most_recent),
            "deployments": [_describe_deployment(state, d) for d in state.list_deployments()]}
