# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Deployment records and the per-deployment-group lock: the data model and the store interface.

A record is written while the deployment runs (each lifecycle event's start and end), as small
independent writes (one row/item per deployment, per host, per host event, per extra key), so
that concurrent writers never lose each other's updates and a record survives the controller's
death up to the last event written.

Backends: ``records/sqlite.py`` (a file on the controller) and ``records/dynamodb.py`` (a table
shared by several controllers, e.g. AWX). Both implement :class:`RecordStore`.
"""

from __future__ import annotations

import abc
import datetime as _dt
import getpass
import json
import os
import re
import secrets
import socket
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Union
from ansible_collections.rollwright.deploy.plugins.module_utils.errors import RollwrightError

from ansible_collections.rollwright.deploy.plugins.module_utils.revisions.deployment_id import (  # noqa: F401  (re-exported)
    DEPLOYMENT_ID_RE,
    new_deployment_id,
)
from ansible_collections.rollwright.deploy.plugins.module_utils.redact import redact_text, redact_value

# --------------------------------------------------------------------------------------------
# Vocabulary (CodeDeploy's names)
# --------------------------------------------------------------------------------------------

DEPLOYMENT_TYPES = ("in_place", "blue_green_ec2", "lambda")
CREATORS = ("user", "rollback", "schedule")
DEPLOYMENT_STATUSES = ("Created", "InProgress", "Ready", "Succeeded", "Failed", "Stopped")
TERMINAL_STATUSES = ("Succeeded", "Failed", "Stopped")
HOST_STATUSES = ("Pending", "InProgress", "Succeeded", "Failed", "Skipped", "Unknown")
EVENT_STATUSES = ("Pending", "InProgress", "Succeeded", "Failed", "Skipped")
EVENT_END_STATUSES = ("Succeeded", "Failed", "Skipped")

DEFAULT_LOCK_TTL = 120.0
_NAME_RE = re.compile(r"^[^#\x00-\x1f\x7f]{1,255}$")


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class RecordError(RollwrightError):
    """Base class of every records error; the message is meant for a person."""


class RecordNotFound(RecordError):
    """No deployment (or host) with that id."""


class RecordExists(RecordError):
    """A deployment with that id already exists."""


class InvalidRecord(RecordError, ValueError):
    """A field has a value outside its allowed set; the message names the field."""


class InvalidTransition(RecordError):
    """A finished deployment (Succeeded, Failed, Stopped) cannot change status again."""


class StoreNotReady(RecordError):
    """The backing store is missing or unusable (e.g. DynamoDB table absent, schema too new)."""


class LockHeld(RecordError):
    """The deployment group is locked by another deployment. ``info`` describes the holder."""

    def __init__(self, message: str, info: "LockInfo"):
        super().__init__(message)
        self.info = info

    @property
    def stale(self) -> bool:
        return self.info.stale

    def failure_fields(self) -> dict:
        """What a failed task returns besides the message: the holder's lock."""
        return {"lock": self.info.to_dict()}


class LockLost(RecordError):
    """Heartbeat or release of a lock that is no longer ours (taken over, released or expired)."""


# --------------------------------------------------------------------------------------------
# Helpers: ids, times, names
# --------------------------------------------------------------------------------------------


def new_token() -> str:
    return secrets.token_hex(16)


def utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def format_time(value: _dt.datetime) -> str:
    """UTC ISO 8601 with microseconds and ``Z``: sorts lexically in time order."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.timezone.utc)
    return value.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_iso() -> str:
    return format_time(utc_now())


def parse_time(value: str) -> _dt.datetime:
    """Parse an ISO 8601 time (``Z`` or offset; naive means UTC)."""
    text = value.strip()
    if text.endswith("Z") or text.endswith("z"):
        text = text[:-1] + "+00:00"
    parsed = _dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_dt.timezone.utc)
    return parsed.astimezone(_dt.timezone.utc)


def normalise_time(value: Optional[Union[str, _dt.datetime]], field_name: str) -> Optional[str]:
    """Accept None, a datetime or an ISO 8601 string; return our canonical string."""
    if value is None or value == "":
        return None
    if isinstance(value, _dt.datetime):
        return format_time(value)
    if isinstance(value, str):
        try:
            return format_time(parse_time(value))
        except ValueError:
            raise InvalidRecord(f"{field_name}: expected an ISO 8601 time such as 2026-11-26T10:00:00Z, got {value!r}")
    raise InvalidRecord(f"{field_name}: expected an ISO 8601 time string, got {type(value).__name__}")


def short_time(value: Optional[str]) -> str:
    """``2026-11-26T10:00:00Z`` (seconds precision) for messages."""
    if not value:
        return "?"
    return parse_time(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_owner() -> str:
    """Who holds a lock: ``user@host pid N``."""
    try:
        user = getpass.getuser()
    except Exception:  # pragma: no cover - no passwd entry, no env
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


def check_name(value: Any, field_name: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise InvalidRecord(
            f"{field_name}: expected a non-empty name of at most 255 characters without '#' or control characters, got {value!r}"
        )
    return value


def check_choice(value: Any, allowed: Iterable[str], field_name: str) -> str:
    allowed = tuple(allowed)
    if value not in allowed:
        raise InvalidRecord(f"{field_name}: expected one of {', '.join(allowed)}, got {value!r}")
    return value


def check_deployment_id(value: Any, field_name: str = "deployment_id") -> str:
    if not isinstance(value, str) or not DEPLOYMENT_ID_RE.match(value):
        raise InvalidRecord(f"{field_name}: expected 'd-' followed by 9 upper-case letters or digits, got {value!r}")
    return value


def _json_roundtrip(value: Any, field_name: str) -> Any:
    """Check that a value is plain JSON (what both backends store) and return a private copy."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise InvalidRecord(f"{field_name}: expected plain JSON data (dicts, lists, strings, numbers, booleans): {exc}")


def stored_json(text: Any, field_name: str, default: Any = None) -> Any:
    """Decode a JSON value read back from a store; a corrupt or tampered value is an InvalidRecord
    naming its field rather than a traceback."""
    if text is None or text == "":
        return default
    try:
        return json.loads(text)
    except (TypeError, ValueError) as exc:
        raise InvalidRecord(f"{field_name}: the stored value is not valid JSON ({exc}); the record was changed "
                            "outside rollwright or is corrupt") from None


# --------------------------------------------------------------------------------------------
# Data model
# --------------------------------------------------------------------------------------------


@dataclass
class EventRecord:
    """One lifecycle event on one host."""

    name: str
    status: str = "Pending"
    start_time: Optional[str] = None
    end_time: Optional[str] = None
    scripts: list = field(default_factory=list)  # [{location, exit_code, duration, ...}] as the hook runner reports
    message: Optional[str] = None  # error text or log tail

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "status": self.status,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "scripts": list(self.scripts),
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "EventRecord":
        return cls(
            name=data["name"],
            status=data.get("status") or "Pending",
            start_time=data.get("start_time"),
            end_time=data.get("end_time"),
            scripts=list(data.get("scripts") or []),
            message=data.get("message"),
        )


@dataclass
class HostRecord:
    """One target of a deployment (an SSH host, a replacement instance, a Lambda function)."""

    name: str
    instance_id: Optional[str] = None
    status: str = "Pending"
    events: list = field(default_factory=list)  # list[EventRecord], in the order first written
    lb_membership: list = field(default_factory=list)  # list of membership dicts (docs/architecture.md)
    lb_restored: bool = False

    def event(self, name: str) -> Optional[EventRecord]:
        for ev in self.events:
            if ev.name == name:
                return ev
        return None

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "instance_id": self.instance_id,
            "status": self.status,
            "events": [ev.to_dict() for ev in self.events],
            "lb_membership": _json_roundtrip(self.lb_membership, "lb_membership"),
            "lb_restored": bool(self.lb_restored),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "HostRecord":
        return cls(
            name=data["name"],
            instance_id=data.get("instance_id"),
            status=data.get("status") or "Pending",
            events=[EventRecord.from_dict(ev) for ev in data.get("events") or []],
            lb_membership=list(data.get("lb_membership") or []),
            lb_restored=bool(data.get("lb_restored", False)),
        )

    def validate(self) -> None:
        check_name(self.name, "hosts[].name")
        check_choice(self.status, HOST_STATUSES, f"hosts[{self.name}].status")
        check_membership(self.lb_membership, f"hosts[{self.name}].lb_membership")
        for ev in self.events:
            check_name(ev.name, f"hosts[{self.name}].events[].name")
            check_choice(ev.status, EVENT_STATUSES, f"hosts[{self.name}].events[{ev.name}].status")


def check_membership(value: Any, field_name: str) -> list:
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        raise InvalidRecord(f"{field_name}: expected a list of membership dicts, got {value!r}")
    return _json_roundtrip(value, field_name)


@dataclass
class DeploymentRecord:
    """One deployment. ``deployment_id`` and ``create_time`` are filled in by ``create`` when empty."""

    application: str
    deployment_group: str
    deployment_type: str = "in_place"
    deployment_id: Optional[str] = None
    revision: dict = field(default_factory=dict)  # {"bucket", "key", "version", "etag", "bundle_type", ...}
    configuration: Any = None  # a configuration name or its dict
    creator: str = "user"
    rollback_of: Optional[str] = None
    rolled_back_by: Optional[str] = None
    status: str = "Created"
    create_time: Optional[str] = None
    start_time: Optional[str] = None
    end_time: Optional[str] = None
    error: Optional[str] = None
    started_by: Optional[str] = None  # "user@host pid N", or "AWX job 42 (template) by user" (creator.describe)
    creator_identity: dict = field(default_factory=dict)  # who started it: AWX job id, template, user; or user@host
    description: Optional[str] = None
    hosts: list = field(default_factory=list)  # list[HostRecord]
    extra: dict = field(default_factory=dict)  # free-form per-type state (blue/green fleets, alias weights)

    def host(self, name: str) -> Optional[HostRecord]:
        for h in self.hosts:
            if h.name == name:
                return h
        return None

    def to_dict(self) -> dict:
        return {
            "deployment_id": self.deployment_id,
            "application": self.application,
            "deployment_group": self.deployment_group,
            "deployment_type": self.deployment_type,
            "revision": _json_roundtrip(self.revision, "revision"),
            "configuration": _json_roundtrip(self.configuration, "configuration"),
            "creator": self.creator,
            "rollback_of": self.rollback_of,
            "rolled_back_by": self.rolled_back_by,
            "status": self.status,
            "create_time": self.create_time,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "error": self.error,
            "started_by": self.started_by,
            "creator_identity": dict(self.creator_identity),
            "description": self.description,
            "hosts": [h.to_dict() for h in self.hosts],
            "extra": _json_roundtrip(self.extra, "extra"),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "DeploymentRecord":
        return cls(
            deployment_id=data.get("deployment_id"),
            application=data["application"],
            deployment_group=data["deployment_group"],
            deployment_type=data.get("deployment_type") or "in_place",
            revision=dict(data.get("revision") or {}),
            configuration=data.get("configuration"),
            creator=data.get("creator") or "user",
            rollback_of=data.get("rollback_of"),
            rolled_back_by=data.get("rolled_back_by"),
            status=data.get("status") or "Created",
            create_time=data.get("create_time"),
            start_time=data.get("start_time"),
            end_time=data.get("end_time"),
            error=data.get("error"),
            started_by=data.get("started_by"),
            creator_identity=dict(data.get("creator_identity") or {}),
            description=data.get("description"),
            hosts=[HostRecord.from_dict(h) for h in data.get("hosts") or []],
            extra=dict(data.get("extra") or {}),
        )

    def prepare_for_create(self) -> None:
        """Validate every field and fill in id, create time and creator identity."""
        if self.deployment_id is None:
            self.deployment_id = new_deployment_id()
        check_deployment_id(self.deployment_id)
        check_name(self.application, "application")
        check_name(self.deployment_group, "deployment_group")
        check_choice(self.deployment_type, DEPLOYMENT_TYPES, "deployment_type")
        check_choice(self.creator, CREATORS, "creator")
        check_choice(self.status, DEPLOYMENT_STATUSES, "status")
        if not isinstance(self.revision, dict):
            raise InvalidRecord(f"revision: expected a dict (bucket, key, version, etag, ...), got {self.revision!r}")
        if self.configuration is not None and not isinstance(self.configuration, (str, dict)):
            raise InvalidRecord(f"configuration: expected a configuration name or dict, got {self.configuration!r}")
        if not isinstance(self.extra, dict):
            raise InvalidRecord(f"extra: expected a dict, got {self.extra!r}")
        if self.rollback_of is not None:
            check_deployment_id(self.rollback_of, "rollback_of")
        if self.rolled_back_by is not None:
            check_deployment_id(self.rolled_back_by, "rolled_back_by")
        self.revision = _json_roundtrip(self.revision, "revision")
        self.configuration = _json_roundtrip(self.configuration, "configuration")
        self.extra = _json_roundtrip(self.extra, "extra")
        self.create_time = normalise_time(self.create_time, "create_time") or now_iso()
        self.start_time = normalise_time(self.start_time, "start_time")
        self.end_time = normalise_time(self.end_time, "end_time")
        from .creator import check_identity, describe, local_identity  # creator.py imports this module

        self.creator_identity = check_identity(self.creator_identity or local_identity())
        if self.started_by is None:
            self.started_by = describe(self.creator_identity)
        seen = set()
        for h in self.hosts:
            h.validate()
            if h.name in seen:
                raise InvalidRecord(f"hosts: host {h.name!r} appears twice")
            seen.add(h.name)


# --------------------------------------------------------------------------------------------
# Control requests (stop / promote / pause / resume a running deployment)
# --------------------------------------------------------------------------------------------

# Which requests exist and how they move: a requester writes Pending; the controller (or recovery)
# moves it to Acknowledged when it sees it, then to Done or Refused. Every move is conditional on
# the state read, so two processes never both act on one request. module_utils/deployments/control_requests.py
# holds what each request means.
REQUEST_ACTIONS = ("stop", "promote", "pause", "resume")
REQUEST_STATES = ("Pending", "Acknowledged", "Done", "Refused")
REQUEST_OPEN_STATES = ("Pending", "Acknowledged")
REQUEST_ID_RE = re.compile(r"^r-\d{20}-[0-9a-f]{6}$")


class RequestConflict(RecordError):
    """A request is not in the state its update expected (another process moved it first)."""

    def __init__(self, message: str, current: Optional["ControlRequest"] = None):
        super().__init__(message)
        self.current = current


def new_request_id() -> str:
    """``r-<UTC time to the microsecond, 20 digits>-<6 hex>``: sorts in the order requests were made."""
    return "r-" + utc_now().strftime("%Y%m%d%H%M%S%f") + "-" + secrets.token_hex(3)


def check_request_id(value: Any) -> str:
    if not isinstance(value, str) or not REQUEST_ID_RE.match(value):
        raise InvalidRecord(f"request_id: expected 'r-' followed by 20 digits, '-' and 6 hex digits, got {value!r}")
    return value


@dataclass
class ControlRequest:
    """One request against one deployment (its own row/item: never a field of the record the controller rewrites)."""

    action: str
    options: dict = field(default_factory=dict)  # stop: {"rollback": bool}; pause: {"max_pause": seconds}
    request_id: Optional[str] = None
    state: str = "Pending"
    requested_by: Optional[str] = None
    requested_at: Optional[str] = None
    acknowledged_at: Optional[str] = None
    ended_at: Optional[str] = None
    handled_by: Optional[str] = None  # "controller" or "recover"
    message: Optional[str] = None  # what was done, or why it was refused

    @property
    def open(self) -> bool:
        return self.state in REQUEST_OPEN_STATES

    def to_dict(self) -> dict:
        return {
            "request_id": self.request_id,
            "action": self.action,
            "options": _json_roundtrip(self.options, "options"),
            "state": self.state,
            "requested_by": self.requested_by,
            "requested_at": self.requested_at,
            "acknowledged_at": self.acknowledged_at,
            "ended_at": self.ended_at,
            "handled_by": self.handled_by,
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "ControlRequest":
        return cls(
            action=data["action"],
            options=dict(data.get("options") or {}),
            request_id=data.get("request_id"),
            state=data.get("state") or "Pending",
            requested_by=data.get("requested_by"),
            requested_at=data.get("requested_at"),
            acknowledged_at=data.get("acknowledged_at"),
            ended_at=data.get("ended_at"),
            handled_by=data.get("handled_by"),
            message=data.get("message"),
        )

    def prepare_for_add(self) -> None:
        """Validate and fill in id, time and state for ``add_request``."""
        check_choice(self.action, REQUEST_ACTIONS, "action")
        if not isinstance(self.options, dict):
            raise InvalidRecord(f"options: expected a dict, got {self.options!r}")
        self.options = _json_roundtrip(self.options, "options")
        self.request_id = check_request_id(self.request_id) if self.request_id else new_request_id()
        self.state = "Pending"
        self.requested_at = normalise_time(self.requested_at, "requested_at") or now_iso()
        self.requested_by = redact_text(str(self.requested_by or default_owner()))[:255]


# --------------------------------------------------------------------------------------------
# Lock
# --------------------------------------------------------------------------------------------


@dataclass
class Lock:
    """A held lease on one deployment group. ``token`` identifies this holder (a takeover changes it)."""

    application: str
    deployment_group: str
    deployment_id: str
    owner: str
    token: str
    ttl: float
    acquired_at: str
    heartbeat_at: str

    def to_dict(self) -> dict:
        return {
            "application": self.application,
            "deployment_group": self.deployment_group,
            "deployment_id": self.deployment_id,
            "owner": self.owner,
            "token": self.token,
            "ttl": self.ttl,
            "acquired_at": self.acquired_at,
            "heartbeat_at": self.heartbeat_at,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Lock":
        return cls(
            application=data["application"],
            deployment_group=data["deployment_group"],
            deployment_id=data["deployment_id"],
            owner=data.get("owner") or "",
            token=data.get("token") or "",
            ttl=float(data.get("ttl") or DEFAULT_LOCK_TTL),
            acquired_at=data.get("acquired_at") or "",
            heartbeat_at=data.get("heartbeat_at") or "",
        )


@dataclass
class LockInfo:
    """What ``get_lock`` reports about a group's lock (whoever holds it)."""

    application: str
    deployment_group: str
    deployment_id: str
    owner: str
    acquired_at: str
    heartbeat_at: str
    ttl: float
    stale: bool
    heartbeat_age: float  # seconds since the last heartbeat, by this machine's clock

    def to_dict(self) -> dict:
        return {
            "application": self.application,
            "deployment_group": self.deployment_group,
            "deployment_id": self.deployment_id,
            "owner": self.owner,
            "acquired_at": self.acquired_at,
            "heartbeat_at": self.heartbeat_at,
            "ttl": self.ttl,
            "stale": self.stale,
            "heartbeat_age": round(self.heartbeat_age, 3),
        }

    def describe(self) -> str:
        return (
            f"deployment group {self.application}/{self.deployment_group} is locked by deployment {self.deployment_id} "
            f"(started by {self.owner} at {short_time(self.acquired_at)}, last heartbeat {int(self.heartbeat_age)} s ago)"
        )


def lock_info(application: str, group: str, deployment_id: str, owner: str, acquired_at: str,
              heartbeat_at: str, ttl: float, now: Optional[_dt.datetime] = None) -> LockInfo:
    now = now or utc_now()
    age = max(0.0, (now - parse_time(heartbeat_at)).total_seconds())
    return LockInfo(application, group, deployment_id, owner, acquired_at, heartbeat_at, float(ttl), age > float(ttl), age)


def lock_held_error(info: LockInfo) -> LockHeld:
    if info.stale:
        msg = (
            f"{info.describe()}; the lock is stale (no heartbeat for more than its {int(info.ttl)} s ttl), "
            f"so the controller that held it has probably died. Run recovery for {info.deployment_id} first "
            f"(playbook rollwright.deploy.recover) to restore its hosts, or take the lock over with force=true"
        )
    else:
        msg = (
            f"{info.describe()}; wait for it to finish, or stop it. "
            f"If its controller died, the lock becomes stale {max(0, int(info.ttl - info.heartbeat_age))} s from now"
        )
    return LockHeld(msg, info)


LockRef = Union[Lock, LockInfo, dict, tuple]


def lock_ref(lock_or_ids: LockRef) -> tuple:
    """(application, deployment_group, deployment_id, token or None) from a Lock, LockInfo, dict or tuple."""
    if isinstance(lock_or_ids, Lock):
        return lock_or_ids.application, lock_or_ids.deployment_group, lock_or_ids.deployment_id, lock_or_ids.token
    if isinstance(lock_or_ids, LockInfo):
        return lock_or_ids.application, lock_or_ids.deployment_group, lock_or_ids.deployment_id, None
    if isinstance(lock_or_ids, dict):
        try:
            return (lock_or_ids["application"], lock_or_ids["deployment_group"], lock_or_ids["deployment_id"],
                    lock_or_ids.get("token") or None)
        except KeyError as exc:
            raise InvalidRecord(f"lock: missing key {exc.args[0]!r} (need application, deployment_group, deployment_id)")
    if isinstance(lock_or_ids, (tuple, list)) and len(lock_or_ids) in (3, 4):
        items = tuple(lock_or_ids)
        return items if len(items) == 4 else items + (None,)
    raise InvalidRecord(
        f"lock: expected a Lock, or (application, deployment_group, deployment_id), got {lock_or_ids!r}"
    )


def token_ref(lock: LockRef, action: str) -> tuple:
    """:func:`lock_ref` for a renewal or a release, which only the holder may do: the token is required."""
    application, group, deployment_id, token = lock_ref(lock)
    if not token:
        raise InvalidRecord(
            f"lock_token: {action} the lock of {application}/{group} needs the token its holder got when it took it "
            f"(a lock is renewed and released by its token only); to end the lock of a dead deployment "
            f"({deployment_id}), run recovery or take the lock over (force)")
    return application, group, deployment_id, token


# --------------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------------


class RecordStore(abc.ABC):
    """Where deployment records and group locks live. Every method is one small atomic write or a read."""

    backend = "abstract"
    # Who opened the store (records/creator.py; open_store sets it): stamped on the records it creates
    # and named as the owner of the locks it takes.
    creator_identity: Optional[dict] = None

    def stamp(self, record: DeploymentRecord) -> None:
        """Validate a new record and fill in its id, create time and creator (for ``create``)."""
        if not record.creator_identity and self.creator_identity:
            record.creator_identity = dict(self.creator_identity)
        record.prepare_for_create()

    def lock_owner(self, owner: Optional[str] = None) -> str:
        """The owner a lock is taken under: the one given, the store's creator, or user@host pid N."""
        if owner:
            return owner
        if self.creator_identity:
            from .creator import describe

            return describe(self.creator_identity)
        return default_owner()

    # records -------------------------------------------------------------------------------
    @abc.abstractmethod
    def create(self, record: DeploymentRecord) -> DeploymentRecord:
        """Store a new record (and its hosts, if any). Fills in deployment_id, create_time, started_by.
        With ``rollback_of`` set, the original's ``rolled_back_by`` is set in the same transaction.
        Raises RecordExists, RecordNotFound (rollback_of unknown), InvalidRecord."""

    @abc.abstractmethod
    def get(self, deployment_id: str) -> DeploymentRecord:
        """The whole record with hosts, events and extra. Raises RecordNotFound."""

    @abc.abstractmethod
    def update_status(self, deployment_id: str, status: str, error: Optional[str] = None) -> DeploymentRecord:
        """Set the status (InProgress sets start_time once; Succeeded/Failed/Stopped set end_time).
        A finished deployment keeps its status: raises InvalidTransition (same status again is allowed)."""

    @abc.abstractmethod
    def set_hosts(self, deployment_id: str, hosts: list) -> None:
        """Add or replace the given hosts (whole host state, events included); other hosts stay."""

    @abc.abstractmethod
    def update_host(self, deployment_id: str, host: str, status: Optional[str] = None,
                    instance_id: Optional[str] = None, lb_membership: Optional[list] = None,
                    lb_restored: Optional[bool] = None) -> None:
        """Update only the given fields of one host (the host is added when new)."""

    @abc.abstractmethod
    def event(self, deployment_id: str, host: str, event_name: str, status: str,
              start: Optional[str] = None, end: Optional[str] = None, scripts: Optional[list] = None,
              message: Optional[str] = None) -> None:
        """Record one lifecycle event's state on one host. InProgress without ``start`` stamps the start
        time now; Succeeded/Failed/Skipped without ``end`` stamp the end time now. Fields left None keep
        their stored value. The host is added when new."""

    @abc.abstractmethod
    def set_extra(self, deployment_id: str, key: str, value: Any) -> None:
        """Set one key of the record's ``extra`` dict (atomic per key)."""

    @abc.abstractmethod
    def list(self, application: str, deployment_group: Optional[str] = None, status: Optional[str] = None,
             limit: int = 50, include_hosts: bool = False) -> list:
        """Records of an application (and group, and status), newest first. Without include_hosts the
        records carry no hosts (a cheap history); use get() for the full record."""

    def last_successful(self, application: str, deployment_group: str) -> Optional[DeploymentRecord]:
        """The group's newest Succeeded deployment (full record), or None."""
        found = self.list(application, deployment_group, status="Succeeded", limit=1)
        return self.get(found[0].deployment_id) if found else None

    # lock ----------------------------------------------------------------------------------
    @abc.abstractmethod
    def acquire_lock(self, application: str, deployment_group: str, deployment_id: str, owner: Optional[str] = None,
                     ttl: float = DEFAULT_LOCK_TTL, force: bool = False) -> Lock:
        """Take the group's lock at once or raise LockHeld. A stale lock (heartbeat older than its ttl)
        is taken over only with force=True; a live lock is never taken over."""

    @abc.abstractmethod
    def heartbeat(self, lock: LockRef) -> Lock:
        """Renew the lease (token required). Raises LockLost when the lock is no longer held by this
        lock's holder (released, taken over). Also the fencing check before a step writes to AWS."""

    @abc.abstractmethod
    def release_lock(self, lock_or_ids: LockRef) -> bool:
        """Release if held with that token (required). False when not held at all; LockLost when
        another holder (another deployment, or a takeover) has it."""

    @abc.abstractmethod
    def take_over(self, application: str, deployment_group: str, deployment_id: str, owner: Optional[str] = None,
                  ttl: float = DEFAULT_LOCK_TTL, live: bool = False, token: Optional[str] = None,
                  acquired_at: Optional[str] = None) -> Lock:
        """Take over the lock that ``deployment_id`` holds (for its recovery): a new token and owner,
        same deployment id, so its old holder's renewals and writes fail from now on (fencing).
        Only a stale lock (judged by the store), unless ``live``; a compare-and-swap on the token read
        (or on ``token``, when given: LockLost if the lock no longer has it), so another takeover in
        between wins; ``acquired_at`` (of the lock the caller judged, :class:`LockInfo`) makes it fail
        with LockHeld when the lock was taken over since. RecordNotFound when the group is not locked,
        LockHeld when another deployment holds it or it is live."""

    def break_lock(self, application: str, deployment_group: str, deployment_id: str, owner: Optional[str] = None,
                   live: bool = False) -> bool:
        """End a dead deployment's lock: take it over by its token, then release it by ours.
        False when the group was not locked."""
        try:
            lock = self.take_over(application, deployment_group, deployment_id, owner=owner, live=live)
        except RecordNotFound:
            return False
        return self.release_lock(lock)

    @abc.abstractmethod
    def get_lock(self, application: str, deployment_group: str) -> Optional[LockInfo]:
        """Who holds the group's lock, since when, and whether it is stale; None when free."""

    # control requests ----------------------------------------------------------------------
    @abc.abstractmethod
    def add_request(self, deployment_id: str, request: ControlRequest) -> ControlRequest:
        """Store a new Pending request (its own row/item). Fills in request_id, requested_at, requested_by.
        Raises RecordNotFound, InvalidRecord."""

    @abc.abstractmethod
    def list_requests(self, deployment_id: str) -> list:
        """The deployment's requests (list[ControlRequest]), oldest first (a consistent read)."""

    @abc.abstractmethod
    def update_request(self, deployment_id: str, request_id: str, state: str, expected: Iterable[str],
                       message: Optional[str] = None, handled_by: Optional[str] = None) -> ControlRequest:
        """Move one request to ``state`` only if its state is one of ``expected`` (atomic compare-and-set);
        Acknowledged stamps acknowledged_at, Done/Refused stamp ended_at. Returns the updated request.
        Raises RequestConflict (with the current request) when it is not in an expected state,
        RecordNotFound when there is no such request."""

    @staticmethod
    def _check_request_update(request_id: str, state: str, expected: Iterable[str], message: Optional[str]) -> tuple:
        check_request_id(request_id)
        check_choice(state, REQUEST_STATES, "request state")
        expected = tuple(expected)
        if not expected:
            raise InvalidRecord("expected: name at least one request state the update may start from")
        for item in expected:
            check_choice(item, REQUEST_STATES, "expected request state")
        return expected, (None if message is None else redact_text(str(message)))

    def close(self) -> None:
        """Release connections (optional)."""

    # shared validation ---------------------------------------------------------------------
    @staticmethod
    def _check_event_args(host: str, event_name: str, status: str, start, end, scripts, message) -> tuple:
        check_name(host, "host")
        check_name(event_name, "event_name")
        check_choice(status, EVENT_STATUSES, "event status")
        start = normalise_time(start, "start")
        end = normalise_time(end, "end")
        if status == "InProgress" and start is None:
            start = now_iso()
        if status in EVENT_END_STATUSES and end is None:
            end = now_iso()
        # Hook output is stored redacted (secret shapes masked, module_utils/redact.py) whoever writes it.
        if scripts is not None:
            if not isinstance(scripts, list):
                raise InvalidRecord(f"scripts: expected a list of script result dicts, got {scripts!r}")
            scripts = redact_value(_json_roundtrip(scripts, "scripts"))
        if message is not None and not isinstance(message, str):
            message = str(message)
        return start, end, scripts, redact_text(message)

    @staticmethod
    def _check_host_args(host: str, status, instance_id, lb_membership, lb_restored) -> None:
        check_name(host, "host")
        if status is not None:
            check_choice(status, HOST_STATUSES, "host status")
        if instance_id is not None and not isinstance(instance_id, str):
            raise InvalidRecord(f"instance_id: expected a string, got {instance_id!r}")
        if lb_membership is not None:
            check_membership(lb_membership, "lb_membership")
        if lb_restored is not None and not isinstance(lb_restored, bool):
            raise InvalidRecord(f"lb_restored: expected true or false, got {lb_restored!r}")

    @staticmethod
    def _check_list_args(application, deployment_group, status, limit) -> None:
        check_name(application, "application")
        if deployment_group is not None:
            check_name(deployment_group, "deployment_group")
        if status is not None:
            check_choice(status, DEPLOYMENT_STATUSES, "status")
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise InvalidRecord(f"limit: expected a positive integer, got {limit!r}")

    @staticmethod
    def _check_lock_args(application, deployment_group, deployment_id, ttl) -> None:
        check_name(application, "application")
        check_name(deployment_group, "deployment_group")
        check_deployment_id(deployment_id)
        if not isinstance(ttl, (int, float)) or isinstance(ttl, bool) or ttl <= 0:
            raise InvalidRecord(f"ttl: expected a positive number of seconds, got {ttl!r}")
