# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Parse and validate CodeDeploy AppSpec files (EC2/on-premises and Lambda).

Every rule lives here, with the error it produces. Errors name the file, the path inside it
(list indexes are 0-based: ``hooks.AfterInstall[1]`` is the second script) and what was expected;
all errors of a file are collected and reported together.

PyYAML is imported lazily inside the text parsers only: hosts receive the normalised JSON
(:meth:`AppSpec.to_dict`) and re-hydrate it with :meth:`AppSpec.from_dict`, stdlib only.
"""

from __future__ import annotations

import difflib
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, Iterator
from ansible_collections.rollwright.deploy.plugins.module_utils.errors import RollwrightError
from ansible_collections.rollwright.deploy.plugins.module_utils.revisions.lifecycle import (  # noqa: F401  (re-exported)
    LAMBDA_EVENTS,
    RESERVED_EVENTS,
    SCRIPTABLE_EVENTS,
)

# The lifecycle events (which may have scripts, which the engine performs itself) are revisions/lifecycle.py's.
LAMBDA_HOOK_EVENTS: tuple[str, ...] = tuple(e for e in LAMBDA_EVENTS if e in SCRIPTABLE_EVENTS)
FILE_EXISTS_BEHAVIORS: tuple[str, ...] = ("DISALLOW", "OVERWRITE", "RETAIN")
PERMISSION_TYPES: tuple[str, ...] = ("file", "directory")
DEFAULT_HOOK_TIMEOUT = 3600
DEFAULT_APPSPEC_NAMES: tuple[str, ...] = ("appspec.yml", "appspec.yaml")

_TOP_KEYS = ("version", "os", "files", "file_exists_behavior", "permissions", "hooks")
_FILE_KEYS = ("source", "destination")
_PERMISSION_KEYS = ("object", "pattern", "except", "owner", "group", "mode", "acls", "context", "type")
_CONTEXT_KEYS = ("user", "name", "type", "range")
_HOOK_KEYS = ("location", "timeout", "runas")
_LAMBDA_TOP_KEYS = ("version", "Resources", "Hooks")
_LAMBDA_PROPERTY_KEYS = ("Name", "Alias", "CurrentVersion", "TargetVersion")
_RANGE_RE = re.compile(r"^s\d+(?:-s\d+)?(?::c\d+(?:\.c\d+)?(?:,c\d+(?:\.c\d+)?)*)?$")
_ACL_TYPES = {"u": "user", "user": "user", "g": "group", "group": "group", "m": "mask", "mask": "mask", "o": "other", "other": "other"}
_MODE_RE = re.compile(r"^[0-7]{3,4}$")


class AppSpecError(RollwrightError, ValueError):
    """An invalid AppSpec. ``errors`` holds every problem found, each a complete sentence."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


# --------------------------------------------------------------------------------------------
# Normalised model
# --------------------------------------------------------------------------------------------


@dataclass
class FileMapping:
    source: str
    destination: str

    def to_dict(self) -> dict:
        return {"source": self.source, "destination": self.destination}


@dataclass
class SELinuxContext:
    type: str
    user: str | None = None
    range: str | None = None

    def to_dict(self) -> dict:
        return {"user": self.user, "type": self.type, "range": self.range}


@dataclass
class Permission:
    object: str
    pattern: str = "**"
    except_: list[str] = field(default_factory=list)
    owner: str | None = None
    group: str | None = None
    mode: str | None = None
    acls: list[str] = field(default_factory=list)
    context: SELinuxContext | None = None
    type: list[str] = field(default_factory=lambda: list(PERMISSION_TYPES))

    def to_dict(self) -> dict:
        return {
            "object": self.object,
            "pattern": self.pattern,
            "except": list(self.except_),
            "owner": self.owner,
            "group": self.group,
            "mode": self.mode,
            "acls": list(self.acls),
            "context": self.context.to_dict() if self.context else None,
            "type": list(self.type),
        }


@dataclass
class HookScript:
    location: str
    timeout: int = DEFAULT_HOOK_TIMEOUT
    runas: str | None = None

    def to_dict(self) -> dict:
        return {"location": self.location, "timeout": self.timeout, "runas": self.runas}


@dataclass
class AppSpec:
    """A validated EC2/on-premises AppSpec. ``hooks`` holds only events that have scripts."""

    version: str = "0.0"
    os: str = "linux"
    files: list[FileMapping] = field(default_factory=list)
    file_exists_behavior: str | None = None
    permissions: list[Permission] = field(default_factory=list)
    hooks: dict[str, list[HookScript]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The normalised JSON shape of docs/architecture.md (plain types only)."""
        return {
            "version": self.version,
            "os": self.os,
            "files": [f.to_dict() for f in self.files],
            "file_exists_behavior": self.file_exists_behavior,
            "permissions": [p.to_dict() for p in self.permissions],
            "hooks": {event: [s.to_dict() for s in scripts] for event, scripts in self.hooks.items()},
        }

    @classmethod
    def from_dict(cls, data: dict, filename: str = "appspec.json") -> "AppSpec":
        """Re-hydrate (and re-validate) a normalised appspec. Stdlib only; raises AppSpecError."""
        spec, errors = validate_appspec_data(data, filename)
        if errors or spec is None:
            raise AppSpecError(errors)
        return spec

    def scripts_for(self, event: str) -> list[HookScript]:
        return list(self.hooks.get(event, []))


@dataclass
class LambdaAppSpec:
    """A validated Lambda AppSpec: one function alias moving from current to target version."""

    version: str
    logical_id: str
    function_name: str
    alias: str
    current_version: str
    target_version: str
    hooks: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "function": {
                "logical_id": self.logical_id,
                "name": self.function_name,
                "alias": self.alias,
                "current_version": self.current_version,
                "target_version": self.target_version,
            },
            "hooks": dict(self.hooks),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "LambdaAppSpec":
        fn = data["function"]
        return cls(
            version=str(data["version"]),
            logical_id=fn["logical_id"],
            function_name=fn["name"],
            alias=fn["alias"],
            current_version=str(fn["current_version"]),
            target_version=str(fn["target_version"]),
            hooks=dict(data.get("hooks") or {}),
        )


# --------------------------------------------------------------------------------------------
# YAML loading (controller only)
# --------------------------------------------------------------------------------------------


class _Raw:
    """A number that remembers how YAML spelled it."""

    raw: str

    def __new__(cls, value: Any, raw: str):
        obj = super().__new__(cls, value)  # type: ignore[call-arg]
        obj.raw = raw
        return obj


class _RawInt(_Raw, int):
    """``mode: 0644`` must stay '0644', not 420."""


class _RawFloat(_Raw, float):
    """``version: 0.0`` versus ``version: 0.00``."""


def load_yaml(text: str, filename: str = "appspec.yml") -> Any:
    """Load YAML text; raise AppSpecError for syntax errors (line/column) and duplicate keys."""
    import yaml  # controller only

    class _Loader(yaml.SafeLoader):
        pass

    duplicates: list[str] = []

    def _int(loader, node):
        value = yaml.SafeLoader.construct_yaml_int(loader, node)
        return _RawInt(value, node.value)

    def _float(loader, node):
        value = yaml.SafeLoader.construct_yaml_float(loader, node)
        return _RawFloat(value, node.value)

    def _mapping(loader, node):
        seen: dict = {}
        for key_node, _value in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = key_node.value
                if key in seen:
                    mark = key_node.start_mark
                    duplicates.append(
                        "%s: line %d, column %d: duplicate key %r (first at line %d); YAML would silently keep only the last one"
                        % (filename, mark.line + 1, mark.column + 1, key, seen[key] + 1)
                    )
                else:
                    seen[key] = key_node.start_mark.line
        return yaml.SafeLoader.construct_mapping(loader, node, deep=True)

    _Loader.add_constructor("tag:yaml.org,2002:int", _int)
    _Loader.add_constructor("tag:yaml.org,2002:float", _float)
    _Loader.add_constructor("tag:yaml.org,2002:map", _mapping)

    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = "line %d, column %d: " % (mark.line + 1, mark.column + 1) if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise AppSpecError(["%s: %sYAML syntax error: %s" % (filename, where, problem)]) from None
    except yaml.YAMLError as exc:
        raise AppSpecError(["%s: YAML syntax error: %s" % (filename, exc)]) from None
    if duplicates:
        raise AppSpecError(duplicates)
    return data


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _show(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean (%s)" % str(value).lower()
    if isinstance(value, (_RawInt, _RawFloat)):
        return value.raw
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return "a %s" % type(value).__name__


def _join(path: str, key: str) -> str:
    return key if not path else "%s.%s" % (path, key)


def _has_dotdot(path: str) -> bool:
    return ".." in path.replace("\\", "/").split("/")


def _host_path(c: "_Collector", path: str, value: str) -> bool:
    """Whether ``value`` is an absolute path on the host without '..'; if not, the error is added."""
    if not value.startswith("/"):
        c.add(path, "expected an absolute path on the host, got %r" % value)
        return False
    if _has_dotdot(value):
        c.add(path, "expected an absolute path without '..', got %r" % value)
        return False
    return True


class _Collector:
    def __init__(self, filename: str):
        self.filename = filename
        self.errors: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.errors.append("%s: %s: %s" % (self.filename, path, message) if path else "%s: %s" % (self.filename, message))

    def expected(self, path: str, what: str, got: Any) -> None:
        self.add(path, "expected %s, got %s" % (what, _show(got)))

    def unknown_keys(self, path: str, data: dict, allowed: tuple[str, ...], hint: str = "") -> None:
        for key in data:
            if key in allowed:
                continue
            suggestion = difflib.get_close_matches(str(key), allowed, n=1)
            extra = " (did you mean %r?)" % suggestion[0] if suggestion else ""
            self.add(_join(path, str(key)), "unknown key%s; allowed keys here: %s%s" % (extra, ", ".join(allowed), hint))

    def mapping(self, path: str, value: Any) -> dict | None:
        if isinstance(value, dict):
            return value
        self.expected(path or "top level", "a mapping", value)
        return None

    def string(self, path: str, value: Any, required: bool = True, allow_int: bool = False) -> str | None:
        """A non-empty string (stripped). None when absent/null and not required."""
        if value is None:
            if required:
                self.add(path, "is required")
            return None
        if allow_int and isinstance(value, int) and not isinstance(value, bool):
            return value.raw if isinstance(value, _RawInt) else str(value)
        if not isinstance(value, str):
            self.expected(path, "a string", value)
            return None
        value = value.strip()
        if not value:
            self.expected(path, "a non-empty string", "")
            return None
        return value

    def sequence(self, path: str, value: Any, what: str) -> list:
        """``value`` when it is a list, none when it is absent (null); anything else is reported as not ``what``."""
        if value is None:
            return []
        if not isinstance(value, list):
            self.expected(path, what, value)
            return []
        return value

    def entries(self, name: str, value: Any, what: str, keys: tuple[str, ...]) -> Iterator[tuple[int, str, dict]]:
        """(index, path, mapping) of each entry of the list ``name``; an entry that is not a mapping, and unknown
        keys in one that is, are reported."""
        for i, item in enumerate(self.sequence(name, value, what)):
            path = "%s[%d]" % (name, i)
            entry = self.mapping(path, item)
            if entry is not None:
                self.unknown_keys(path, entry, keys)
                yield i, path, entry

    def string_list(self, path: str, value: Any) -> list[str]:
        out = []
        for i, item in enumerate(self.sequence(path, value, "a list of strings")):
            s = self.string("%s[%d]" % (path, i), item)
            if s is not None:
                out.append(s)
        return out


def _version(c: _Collector, value: Any) -> str | None:
    if value is None:
        c.add("version", "is required; expected 0.0")
        return None
    raw = value.raw if isinstance(value, (_RawFloat, _RawInt)) else value
    if isinstance(value, float) and not isinstance(value, _RawFloat):
        raw = "0.0" if value == 0.0 else repr(value)
    if isinstance(raw, str) and raw.strip() == "0.0":
        return "0.0"
    c.add("version", "expected 0.0 (the only AppSpec version), got %s" % _show(value))
    return None


# --------------------------------------------------------------------------------------------
# EC2 / on-premises AppSpec
# --------------------------------------------------------------------------------------------


def validate_appspec_data(data: object, filename: str = "appspec.yml") -> tuple[AppSpec | None, list[str]]:
    """Validate loaded appspec data (YAML-loaded or the normalised JSON). Never raises for bad data."""
    c = _Collector(filename)
    top = c.mapping("", data)
    if top is None:
        return None, c.errors
    hint = ""
    if "Resources" in top or "Hooks" in top:
        hint = " (Resources/Hooks belong to a Lambda or ECS appspec: use kind=lambda)"
    c.unknown_keys("", top, _TOP_KEYS, hint)

    version = _version(c, top.get("version"))

    os_name = None
    os_value = top.get("os")
    if os_value is None:
        c.add("os", "is required; expected linux")
    elif isinstance(os_value, str) and os_value.strip().lower() == "windows":
        c.add("os", "Windows hosts are not supported by rollwright.deploy; expected linux")
    elif isinstance(os_value, str) and os_value.strip() == "linux":
        os_name = "linux"
    else:
        c.expected("os", "linux", os_value)

    files = _files(c, top.get("files"))

    feb = top.get("file_exists_behavior")
    feb_value = None
    if feb is not None:
        if isinstance(feb, str) and feb.strip().upper() in FILE_EXISTS_BEHAVIORS:
            feb_value = feb.strip().upper()
        else:
            c.expected("file_exists_behavior", "one of %s" % ", ".join(FILE_EXISTS_BEHAVIORS), feb)

    permissions = _permissions(c, top.get("permissions"))
    hooks = _hooks(c, top.get("hooks"))

    if c.errors:
        return None, c.errors
    spec = AppSpec(
        version=version or "0.0",
        os=os_name or "linux",
        files=files,
        file_exists_behavior=feb_value,
        permissions=permissions,
        hooks=hooks,
    )
    return spec, []


def _files(c: _Collector, value: Any) -> list[FileMapping]:
    out: list[FileMapping] = []
    seen: dict[tuple[str, str], int] = {}
    for i, path, entry in c.entries("files", value, "a list of {source, destination}", _FILE_KEYS):
        src = c.string(_join(path, "source"), entry.get("source"))
        dst = c.string(_join(path, "destination"), entry.get("destination"))
        ok = src is not None and dst is not None
        if src is not None and _has_dotdot(src):
            c.add(_join(path, "source"), "expected a path inside the bundle (relative to its root, no '..'), got %r" % src)
            ok = False
        if dst is not None and not _host_path(c, _join(path, "destination"), dst):
            ok = False
        if not ok:
            continue
        ident = (posixpath.normpath("/" + src.lstrip("/")), posixpath.normpath(dst))
        if ident in seen:
            c.add(
                path,
                "source %r is copied to destination %r twice (also files[%d]); two sources for one destination are not allowed"
                % (src, dst, seen[ident]),
            )
            continue
        seen[ident] = i
        out.append(FileMapping(source=src, destination=dst))
    return out


def _mode(c: _Collector, path: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        c.expected(path, "an octal mode string such as '0644'", value)
        return None
    if isinstance(value, int):
        text = value.raw if isinstance(value, _RawInt) else str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        c.expected(path, "an octal mode string such as '0644'", value)
        return None
    if text.startswith("0o"):
        text = "0" + text[2:]
    if not _MODE_RE.match(text):
        c.add(path, "expected an octal mode of 3 or 4 digits 0-7 such as '0644', got %r" % text)
        return None
    return text.rjust(4, "0")


def _permissions(c: _Collector, value: Any) -> list[Permission]:
    out: list[Permission] = []
    seen: dict[str, int] = {}
    for i, path, entry in c.entries("permissions", value, "a list of permission entries", _PERMISSION_KEYS):
        ok = True
        obj = c.string(_join(path, "object"), entry.get("object"))
        if obj is None:
            ok = False
        elif not _host_path(c, _join(path, "object"), obj):
            ok = False
        elif posixpath.normpath(obj) in seen:
            c.add(
                _join(path, "object"),
                "object %r already has permissions in permissions[%d]; the same object may appear only once"
                % (obj, seen[posixpath.normpath(obj)]),
            )
            ok = False
        else:
            seen[posixpath.normpath(obj)] = i
        pattern = entry.get("pattern")
        pattern = "**" if pattern is None else c.string(_join(path, "pattern"), pattern)
        excepts = c.string_list(_join(path, "except"), entry.get("except"))
        owner = c.string(_join(path, "owner"), entry.get("owner"), required=False, allow_int=True)
        group = c.string(_join(path, "group"), entry.get("group"), required=False, allow_int=True)
        mode = _mode(c, _join(path, "mode"), entry.get("mode"))
        acls = c.string_list(_join(path, "acls"), entry.get("acls"))
        for j, acl in enumerate(acls):
            problem = acl_problem(acl)
            if problem:
                c.add("%s.acls[%d]" % (path, j), "%s, got %r" % (problem, acl))
        context = _context(c, _join(path, "context"), entry.get("context"))
        types = _ptypes(c, _join(path, "type"), entry.get("type"))
        if ok and pattern is not None and types is not None:
            out.append(
                Permission(
                    object=obj,
                    pattern=pattern,
                    except_=excepts,
                    owner=owner,
                    group=group,
                    mode=mode,
                    acls=acls,
                    context=context,
                    type=types,
                )
            )
    return out


def _context(c: _Collector, path: str, value: Any) -> SELinuxContext | None:
    if value is None:
        return None
    entry = c.mapping(path, value)
    if entry is None:
        return None
    c.unknown_keys(path, entry, _CONTEXT_KEYS)
    ctype = c.string(_join(path, "type"), entry.get("type"))
    user = c.string(_join(path, "user"), entry.get("user"), required=False)
    name = c.string(_join(path, "name"), entry.get("name"), required=False)
    if user is not None and name is not None:
        c.add(_join(path, "name"), "give the SELinux user once: name (the agent's spelling) or user, not both")
    user = user or name
    rng = c.string(_join(path, "range"), entry.get("range"), required=False)
    if rng is not None and not _RANGE_RE.match(rng):
        c.add(_join(path, "range"), "expected an SELinux range such as 's0' or 's0-s0:c0.c1023', got %r" % rng)
        rng = None
    if ctype is None:
        return None
    return SELinuxContext(type=ctype, user=user, range=rng)


def acl_problem(entry: str) -> str | None:
    """What is wrong with one ACL entry (the agent's grammar), or None.

    Accepted: ``[d[efault]:][u[ser]|g[roup]|m[ask]|o[ther]:]name:perms`` where perms is one octal
    digit or letters among r, w, x, -. A non-default user/group entry needs a name (the base entries
    are set with ``mode``); mask and other entries take none.
    """
    parts = entry.split(":")
    if not 2 <= len(parts) <= 4:
        return "expected an ACL entry like 'u:alice:rwx', 'g:staff:r-x' or 'd:u:alice:rw'"
    perms, name = parts[-1], parts[-2]
    prefix = parts[:-2]
    default = False
    kind = None
    if len(prefix) == 2:
        if prefix[0] not in ("d", "default") or prefix[1] not in _ACL_TYPES:
            return "expected [d:]u|g|m|o:name:perms"
        default, kind = True, _ACL_TYPES[prefix[1]]
    elif len(prefix) == 1:
        if prefix[0] in ("d", "default"):
            default = True
        elif prefix[0] in _ACL_TYPES:
            kind = _ACL_TYPES[prefix[0]]
        else:
            return "expected the entry type u, g, m, o (or d: for a default entry)"
    if name in ("m", "mask", "o", "other") and kind is None:
        kind, name = _ACL_TYPES[name], ""
    kind = kind or "user"
    if kind in ("mask", "other") and name:
        return "mask and other ACL entries take no name"
    if not default and kind in ("user", "group") and not name:
        return "a user or group ACL entry needs a name (set the base entries with mode)"
    if len(perms) == 1 and perms in "01234567":
        return None
    if not perms or any(ch not in "rwx-" for ch in perms):
        return "expected permissions as one octal digit or letters among r, w, x, -"
    return None


def _ptypes(c: _Collector, path: str, value: Any) -> list[str] | None:
    if value is None:
        return list(PERMISSION_TYPES)
    if not isinstance(value, list) or not value:
        c.expected(path, "a non-empty list of file, directory", value)
        return None
    out: list[str] = []
    for j, item in enumerate(value):
        if item not in PERMISSION_TYPES:
            c.expected("%s[%d]" % (path, j), "file or directory", item)
            return None
        if item in out:
            c.add("%s[%d]" % (path, j), "%r is listed twice" % item)
            return None
        out.append(item)
    return out


def _hooks(c: _Collector, value: Any) -> dict[str, list[HookScript]]:
    if value is None:
        return {}
    hooks = c.mapping("hooks", value)
    if hooks is None:
        return {}
    out: dict[str, list[HookScript]] = {}
    for event, scripts in hooks.items():
        path = _join("hooks", str(event))
        if event in RESERVED_EVENTS:
            c.add(path, "%s is performed by the deployment engine itself and cannot run scripts; scriptable events: %s"
                  % (event, ", ".join(SCRIPTABLE_EVENTS)))
            continue
        if event not in SCRIPTABLE_EVENTS:
            suggestion = difflib.get_close_matches(str(event), SCRIPTABLE_EVENTS, n=1)
            extra = " (did you mean %r?)" % suggestion[0] if suggestion else ""
            c.add(path, "unknown lifecycle event%s; scriptable events: %s" % (extra, ", ".join(SCRIPTABLE_EVENTS)))
            continue
        if scripts is None:
            continue  # "AfterInstall:" with nothing under it: no scripts
        if not isinstance(scripts, list):
            c.expected(path, "a list of {location, timeout, runas}", scripts)
            continue
        parsed: list[HookScript] = []
        for i, item in enumerate(scripts):
            spath = "%s[%d]" % (path, i)
            entry = c.mapping(spath, item)
            if entry is None:
                continue
            c.unknown_keys(spath, entry, _HOOK_KEYS)
            location = c.string(_join(spath, "location"), entry.get("location"))
            if location is not None and _has_dotdot(location):
                c.add(_join(spath, "location"), "expected a script path inside the bundle (no '..'), got %r" % location)
                location = None
            timeout = _timeout(c, _join(spath, "timeout"), entry.get("timeout"))
            runas = c.string(_join(spath, "runas"), entry.get("runas"), required=False)
            if location is not None and timeout is not None:
                parsed.append(HookScript(location=location, timeout=timeout, runas=runas))
        if parsed:
            out[event] = parsed
    return out


def _timeout(c: _Collector, path: str, value: Any) -> int | None:
    if value is None:
        return DEFAULT_HOOK_TIMEOUT
    if isinstance(value, int) and not isinstance(value, bool):
        if value > 0:
            return int(value)
    elif isinstance(value, str) and value.strip().isdigit() and int(value) > 0:
        return int(value)
    c.expected(path, "an integer > 0 (seconds)", value)
    return None


def parse_appspec(text: str, filename: str = "appspec.yml") -> AppSpec:
    """Parse and validate appspec YAML text. Raises AppSpecError listing every problem."""
    data = load_yaml(text, filename)
    if data is None:
        raise AppSpecError(["%s: the file is empty; expected a mapping with version, os, files, hooks" % filename])
    spec, errors = validate_appspec_data(data, filename)
    if errors or spec is None:
        raise AppSpecError(errors)
    return spec


def normalise(text: str, filename: str = "appspec.yml") -> dict:
    """Parse appspec text into the normalised JSON dict (the controller-to-host contract)."""
    return parse_appspec(text, filename).to_dict()


# --------------------------------------------------------------------------------------------
# Checks against the bundle's contents (controller, before any host is touched)
# --------------------------------------------------------------------------------------------


def check_bundle_consistency(spec: AppSpec, entries: dict[str, str], filename: str = "appspec.yml") -> list[str]:
    """Check an appspec against its bundle's contents.

    ``entries`` maps every path relative to the bundle root (no leading '/', '/'-separated) to its
    kind: 'file', 'dir' or 'link'. Returns errors for: a missing files source or hook script;
    two sources copied to one destination file; a permission whose object is a file copied by this
    deployment but that sets a non-default pattern or an except.
    """
    c = _Collector(filename)
    targets: dict[str, str] = {}  # destination file -> source in bundle
    copied_files: set[str] = set()

    def _copy(dst: str, src: str, i: int) -> None:
        if dst in targets and targets[dst] != src:
            c.add(
                "files[%d]" % i,
                "two sources copy to the same destination %s: %r and %r; rename or remove one" % (dst, targets[dst], src),
            )
        targets[dst] = src
        copied_files.add(dst)

    for i, fm in enumerate(spec.files):
        src = posixpath.normpath(fm.source.strip("/")) if fm.source.strip("/") else ""
        src = "" if src == "." else src
        dst = posixpath.normpath(fm.destination)
        if src and src not in entries:
            c.add("files[%d].source" % i, "%r does not exist in the bundle" % fm.source)
            continue
        if src == "" or entries.get(src) == "dir":
            prefix = src + "/" if src else ""
            for name in sorted(entries):
                if name.startswith(prefix) and entries[name] != "dir":
                    _copy(posixpath.join(dst, name[len(prefix):]), name, i)
        else:
            _copy(posixpath.join(dst, posixpath.basename(src)), src, i)

    for i, perm in enumerate(spec.permissions):
        obj = posixpath.normpath(perm.object)
        if obj in copied_files:
            if perm.pattern != "**":
                c.add("permissions[%d].pattern" % i, "object %s is a file: expected no pattern (or '**'), got %r" % (perm.object, perm.pattern))
            if perm.except_:
                c.add("permissions[%d].except" % i, "object %s is a file: expected no except, got %r" % (perm.object, perm.except_))

    for event, scripts in spec.hooks.items():
        for i, script in enumerate(scripts):
            loc = posixpath.normpath(script.location.strip("/"))
            if entries.get(loc) not in ("file", "link"):
                c.add("hooks.%s[%d].location" % (event, i), "script %r does not exist in the bundle" % script.location)
    return c.errors


# --------------------------------------------------------------------------------------------
# Lambda AppSpec
# --------------------------------------------------------------------------------------------


def _lambda_version(c: _Collector, path: str, value: Any) -> str | None:
    if isinstance(value, bool):
        c.expected(path, "a published version number such as '3'", value)
        return None
    if isinstance(value, int):
        value = str(int(value))
    s = c.string(path, value)
    if s is None:
        return None
    if not s.isdigit() or int(s) < 1:
        c.add(path, "expected a published version number such as '3' ($LATEST cannot take weighted traffic), got %r" % s)
        return None
    return s


def _lambda_function(c: _Collector, resources: Any) -> dict[str, Any]:
    """The one function of a Lambda AppSpec's ``Resources`` (logical_id, name, alias, current, target)."""
    fn: dict[str, Any] = {}
    if resources is None:
        c.add("Resources", "is required; expected a list with one AWS::Lambda::Function")
    elif not isinstance(resources, list):
        c.expected("Resources", "a list with one AWS::Lambda::Function", resources)
    elif len(resources) != 1:
        c.add("Resources", "expected exactly one function, got %d entries" % len(resources))
    else:
        path = "Resources[0]"
        entry = c.mapping(path, resources[0])
        if entry is not None:
            if len(entry) != 1:
                c.add(path, "expected one logical name mapping to {Type, Properties}, got %d keys" % len(entry))
            else:
                logical_id, body = next(iter(entry.items()))
                fn["logical_id"] = str(logical_id)
                bpath = _join(path, str(logical_id))
                body = c.mapping(bpath, body)
                if body is not None:
                    c.unknown_keys(bpath, body, ("Type", "Properties"))
                    rtype = body.get("Type")
                    if rtype != "AWS::Lambda::Function":
                        c.expected(_join(bpath, "Type"), "AWS::Lambda::Function", rtype)
                    ppath = _join(bpath, "Properties")
                    props = c.mapping(ppath, body.get("Properties"))
                    if props is not None:
                        c.unknown_keys(ppath, props, _LAMBDA_PROPERTY_KEYS)
                        fn["name"] = c.string(_join(ppath, "Name"), props.get("Name"))
                        fn["alias"] = c.string(_join(ppath, "Alias"), props.get("Alias"))
                        fn["current"] = _lambda_version(c, _join(ppath, "CurrentVersion"), props.get("CurrentVersion"))
                        fn["target"] = _lambda_version(c, _join(ppath, "TargetVersion"), props.get("TargetVersion"))
    return fn


def _lambda_hooks(c: _Collector, raw_hooks: Any) -> dict[str, str]:
    """A Lambda AppSpec's ``Hooks``: event -> function name."""
    hooks: dict[str, str] = {}
    if raw_hooks is not None:
        if not isinstance(raw_hooks, list):
            c.expected("Hooks", "a list of {BeforeAllowTraffic|AfterAllowTraffic: function}", raw_hooks)
        else:
            for i, item in enumerate(raw_hooks):
                path = "Hooks[%d]" % i
                entry = c.mapping(path, item)
                if entry is None:
                    continue
                if len(entry) != 1:
                    c.add(path, "expected one {event: function} pair, got %d keys" % len(entry))
                    continue
                event, function = next(iter(entry.items()))
                epath = _join(path, str(event))
                if event not in LAMBDA_HOOK_EVENTS:
                    c.add(epath, "expected BeforeAllowTraffic or AfterAllowTraffic as a Lambda hook event")
                    continue
                name = c.string(epath, function)
                if name is None:
                    continue
                if event in hooks:
                    c.add(epath, "%s is given twice; a Lambda hook event takes one function" % event)
                    continue
                hooks[event] = name
    return hooks


def parse_lambda_appspec(text_or_data: Any, filename: str = "appspec.yml") -> LambdaAppSpec:
    """Parse and validate a Lambda AppSpec (YAML/JSON text or loaded data). Raises AppSpecError."""
    data = load_yaml(text_or_data, filename) if isinstance(text_or_data, str) else text_or_data
    c = _Collector(filename)
    top = c.mapping("", data)
    if top is None:
        raise AppSpecError(c.errors)
    hint = ""
    if any(k in top for k in ("files", "hooks", "os", "permissions")):
        hint = " (files/hooks/os/permissions belong to an EC2/on-premises appspec: use kind=ec2)"
    c.unknown_keys("", top, _LAMBDA_TOP_KEYS, hint)
    version = _version(c, top.get("version"))

    fn = _lambda_function(c, top.get("Resources"))
    hooks = _lambda_hooks(c, top.get("Hooks"))
    if c.errors:
        raise AppSpecError(c.errors)
    return LambdaAppSpec(
        version=version or "0.0",
        logical_id=fn["logical_id"],
        function_name=fn["name"],
        alias=fn["alias"],
        current_version=fn["current"],
        target_version=fn["target"],
        hooks=hooks,
    )
