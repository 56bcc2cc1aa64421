# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Who started a deployment, and whether the record backend suits where it runs.

AWX / Automation Controller passes its job's metadata to every job as extra variables, each twice
(``awx_job_id`` and ``tower_job_id``, ...). When they are there, a new record's
``creator_identity`` holds the job id, template and user, and ``started_by`` says the same in
words; elsewhere they hold ``user@host pid N`` of the controller.

Under AWX each job runs in a fresh execution environment container, so a SQLite records file is
empty at every job's start and gone at its end: the history is empty and the group lock locks
nothing. ``refuse_sqlite_under_awx`` stops that unless it is explicitly allowed (e.g. a persistent
volume mounted into the execution environment).
"""

from __future__ import annotations

import getpass
import os
import socket
from typing import Any, Mapping, Optional

from .base import InvalidRecord, StoreNotReady

CREATOR_KINDS = ("awx", "local")

# AWX's job metadata variables, without their awx_ / tower_ prefix (the user's email and full name
# are left out: a record names the account, not the person's contact details).
AWX_JOB_FIELDS = (
    "job_id", "job_template_id", "job_template_name", "job_launch_type", "user_id", "user_name",
    "workflow_job_id", "workflow_job_name", "schedule_id", "schedule_name", "parent_job_schedule_id",
    "parent_job_schedule_name", "project_revision", "inventory_id", "inventory_name", "execution_node",
)
AWX_PREFIXES = ("awx_", "tower_")

ALLOW_SQLITE_UNDER_AWX_VAR = "rollwright_record_allow_sqlite_under_awx"
_MAX_VALUE_LENGTH = 255


def _scalar(value: Any) -> Any:
    """A plain JSON scalar (Ansible hands over str subclasses); long text is cut."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    text = str(value)
    if text.isdigit() and len(text) < 19:
        return int(text)  # ids come as numbers from AWX and as text from a CLI -e
    return text[:_MAX_VALUE_LENGTH]


def awx_job(variables: Optional[Mapping[str, Any]]) -> Optional[dict]:
    """The AWX job's metadata found in ``variables`` (``awx_*`` first, then ``tower_*``), or None
    when no job id is there (not run by AWX)."""
    if not variables:
        return None
    job = {}
    for name in AWX_JOB_FIELDS:
        for prefix in AWX_PREFIXES:
            value = variables.get(prefix + name)
            if value is not None and value != "":
                job[name] = _scalar(value)
                break
    return job if "job_id" in job else None


def local_identity() -> dict:
    """The account, host and process running the controller."""
    try:
        user = getpass.getuser()
    except Exception:  # pragma: no cover - no passwd entry, no env
        user = str(os.getuid())
    return {"kind": "local", "user": user, "host": socket.gethostname(), "pid": os.getpid()}


def creator_identity(variables: Optional[Mapping[str, Any]] = None) -> dict:
    """``{"kind": "awx", "job_id": ..., "job_template_name": ..., "user_name": ..., ...}`` under AWX,
    else ``{"kind": "local", "user": ..., "host": ..., "pid": ...}``."""
    job = awx_job(variables)
    if job is None:
        return local_identity()
    return dict(job, kind="awx", host=socket.gethostname())


def describe(identity: Mapping[str, Any]) -> str:
    """The one-line ``started_by`` text of an identity."""
    if identity.get("kind") == "awx":
        text = f"AWX job {identity.get('job_id')}"
        if identity.get("job_template_name"):
            text += f" ({identity['job_template_name']})"
        if identity.get("workflow_job_id"):
            text += f" in workflow job {identity['workflow_job_id']}"
        if identity.get("user_name"):
            text += f" by {identity['user_name']}"
        elif identity.get("schedule_name"):
            text += f" on schedule {identity['schedule_name']}"
        return text
    return f"{identity.get('user')}@{identity.get('host')} pid {identity.get('pid')}"


def check_identity(value: Any, field_name: str = "creator_identity") -> dict:
    """A creator identity: a dict with a known ``kind`` and plain scalar values."""
    if not isinstance(value, Mapping):
        raise InvalidRecord(f"{field_name}: expected a dict (kind, and job_id, user_name, ... or user, host, pid), got {value!r}")
    if value.get("kind") not in CREATOR_KINDS:
        raise InvalidRecord(f"{field_name}.kind: expected one of {', '.join(CREATOR_KINDS)}, got {value.get('kind')!r}")
    checked = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise InvalidRecord(f"{field_name}: keys must be non-empty strings, got {key!r}")
        if isinstance(item, (dict, list, tuple, set)):
            raise InvalidRecord(f"{field_name}.{key}: expected a string or a number, got {item!r}")
        checked[key] = _scalar(item)
    return checked


def sqlite_under_awx_message(identity: Mapping[str, Any]) -> str:
    return (
        f"rollwright_record_backend: sqlite is refused under AWX / Automation Controller ({describe(identity)}): "
        "each job runs in a fresh execution environment, so a SQLite records file starts empty and is thrown "
        "away with the job - no history, no rollback target, and a group lock that locks nothing. Use the "
        "DynamoDB backend: set rollwright_record_backend: dynamodb (and rollwright_record_dynamodb_table, default "
        "rollwright-deployments) in the job template's or inventory's variables, attach an AWS credential allowed "
        "to use that table, and create the table once (docs/awx.md, docs/operations.md). To keep SQLite anyway "
        f"(a persistent volume mounted into the execution environment), set {ALLOW_SQLITE_UNDER_AWX_VAR}: true"
    )


def refuse_sqlite_under_awx(backend: str, identity: Optional[Mapping[str, Any]], allow_sqlite: bool = False) -> None:
    """Raise StoreNotReady for the SQLite backend under AWX, unless explicitly allowed."""
    if backend == "sqlite" and identity and identity.get("kind") == "awx" and not allow_sqlite:
        raise StoreNotReady(sqlite_under_awx_message(identity))


def allow_sqlite_from_vars(variables: Optional[Mapping[str, Any]]) -> bool:
    """The ``rollwright_record_allow_sqlite_under_awx`` variable as a bool (true/yes/1/on)."""
    value = (variables or {}).get(ALLOW_SQLITE_UNDER_AWX_VAR, False)
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on", "y", "t")
    return bool(value)


def store_context(task_vars: Optional[Mapping[str, Any]], template: Optional[Any] = None) -> dict:
    """``open_store``'s ``creator`` and ``allow_sqlite_under_awx`` for a task's variables (an action
    plugin's ``task_vars``; ``template`` renders a templated allow flag)."""
    variables = task_vars or {}
    allow = variables.get(ALLOW_SQLITE_UNDER_AWX_VAR, False)
    if template is not None and isinstance(allow, str):
        allow = template(allow)
    return {"creator": creator_identity(variables),
            "allow_sqlite_under_awx": allow_sqlite_from_vars({ALLOW_SQLITE_UNDER_AWX_VAR: allow})}
