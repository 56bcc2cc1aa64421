# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Deployment records and the per-group lock. ``open_store`` picks the backend.

>>> store = open_store("sqlite", {"path": "/tmp/records.sqlite3"})
>>> rec = store.create(DeploymentRecord(application="app", deployment_group="web"))
"""

from __future__ import annotations

import os
from typing import Callable, Optional

from .base import (  # noqa: F401  (re-exported: the package is the public API)
    CREATORS,
    DEFAULT_LOCK_TTL,
    DEPLOYMENT_STATUSES,
    DEPLOYMENT_TYPES,
    EVENT_STATUSES,
    HOST_STATUSES,
    REQUEST_ACTIONS,
    REQUEST_OPEN_STATES,
    REQUEST_STATES,
    TERMINAL_STATUSES,
    ControlRequest,
    DeploymentRecord,
    EventRecord,
    HostRecord,
    InvalidRecord,
    InvalidTransition,
    Lock,
    LockHeld,
    LockInfo,
    LockLost,
    RecordError,
    RecordExists,
    RecordNotFound,
    RecordStore,
    RequestConflict,
    StoreNotReady,
    default_owner,
    new_deployment_id,
    now_iso,
)
from .creator import creator_identity, refuse_sqlite_under_awx  # noqa: F401

BACKENDS = ("sqlite", "dynamodb")


def store_argument_spec() -> dict:
    """The module options documented by the ``rollwright.deploy.records`` doc fragment."""
    return dict(
        backend=dict(type="str", choices=list(BACKENDS), default="sqlite"),
        sqlite_path=dict(type="path"),
        dynamodb_table=dict(type="str", default="rollwright-deployments"),
    )


def open_existing_store(params: dict, client_factory: Callable) -> Optional[RecordStore]:
    """For modules that only read (options of :func:`store_argument_spec`): the store, or None when the
    SQLite file does not exist - no records yet, and a reader does not create the file."""
    if params["backend"] == "dynamodb":
        return open_store("dynamodb", {"table": params["dynamodb_table"]}, client_factory=client_factory)
    from .sqlite import default_path

    path = params["sqlite_path"] or str(default_path())
    if not os.path.exists(path):
        return None
    return open_store("sqlite", {"path": path})


def open_store(backend: str = "sqlite", options: Optional[dict] = None,
               client_factory: Optional[Callable] = None, creator: Optional[dict] = None,
               allow_sqlite_under_awx: bool = False) -> RecordStore:
    """Open a record store.

    sqlite options: ``path`` (or ``sqlite_path``; default ``$XDG_STATE_HOME/rollwright/deployments.sqlite3``).
    dynamodb options: ``table`` (or ``dynamodb_table``; default ``rollwright-deployments``),
    ``create_table`` (bool, default False: a missing table is an error that says how to create it),
    and without ``client_factory`` also ``region`` / ``endpoint_url`` for a plain boto3 client.
    ``client_factory(service_name)`` returns a boto3 client (e.g. an AnsibleAWSModule's ``client``).
    ``creator`` (``creator.creator_identity(task_vars)``) is who runs the deployment: stamped on the records
    this store creates and named as its locks' owner; under AWX the SQLite backend is refused unless
    ``allow_sqlite_under_awx``.
    ``notifications`` (any backend): trigger events to SNS topics and webhooks (module_utils/deployments/notifications.py);
    the store returned then sends them after the writes that cause them.
    """
    options = dict(options or {})
    notifications = options.pop("notifications", None)
    refuse_sqlite_under_awx(backend, creator, allow_sqlite_under_awx)
    store = _open_backend(backend, options, client_factory)
    store.creator_identity = dict(creator) if creator else None
    if notifications:
        from ansible_collections.rollwright.deploy.plugins.module_utils.deployments.notifications import wrap_store

        return wrap_store(store, notifications, client_factory)
    return store


def _open_backend(backend: str, options: dict, client_factory: Optional[Callable]) -> RecordStore:
    if backend == "sqlite":
        from .sqlite import SQLiteRecordStore

        return SQLiteRecordStore(options.get("path") or options.get("sqlite_path"))
    if backend == "dynamodb":
        from .dynamodb import DEFAULT_TABLE, DynamoDBRecordStore, client_from_options

        store = DynamoDBRecordStore(client_from_options(options, client_factory),
                                    options.get("table") or options.get("dynamodb_table") or DEFAULT_TABLE)
        store.ensure_table(create=bool(options.get("create_table", False)))
        return store
    raise InvalidRecord(f"backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
