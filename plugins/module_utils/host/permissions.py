# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The appspec's ``permissions`` on a host, with the CodeDeploy agent's semantics: which installed paths a
permission matches (object, pattern, except), ACL entries and the full ACL setfacl gets, and applying mode, ACL,
SELinux context and owner to one path (chmod, setfacl, chcon, chown: the agent's order) without following
symlinks.

Runs on the hosts: stdlib only.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import stat as _stat
import subprocess
from dataclasses import dataclass

from ansible_collections.rollwright.deploy.plugins.module_utils.host import fs as _fs
from ansible_collections.rollwright.deploy.plugins.module_utils.host.state import InstallError, state_uids

SELINUX_ENFORCE = "/sys/fs/selinux/enforce"


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


@dataclass
class PermissionOp:
    path: str
    index: int  # position in appspec permissions
    mode: str | None = None
    acls: list | None = None
    context: dict | None = None
    owner: str | None = None
    group: str | None = None


def check_default_acl(perm: dict, index: int, path: str) -> None:
    for ace in perm.get("acls") or []:
        if parse_ace(ace)["default"]:
            raise InstallError(
                f"permissions[{index}]: default acl entry {ace!r} applies to directories only, but {path} is a file"
            )


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
