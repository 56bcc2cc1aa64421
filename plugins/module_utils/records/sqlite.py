# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Deployment records in a SQLite file on the controller.

Safe with several processes at once: WAL journal, a busy timeout, and every write is one short
``BEGIN IMMEDIATE`` transaction on its own row (deployment, host, host event, extra key, lock), so
two writers never overwrite each other's changes with a stale copy.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator, Optional

from .base import (
    DEFAULT_LOCK_TTL,
    DEPLOYMENT_STATUSES,
    TERMINAL_STATUSES,
    DeploymentRecord,
    EventRecord,
    HostRecord,
    InvalidRecord,
    InvalidTransition,
    Lock,
    LockInfo,
    LockLost,
    ControlRequest,
    RecordExists,
    RecordNotFound,
    RecordStore,
    RequestConflict,
    StoreNotReady,
    check_choice,
    check_deployment_id,
    check_name,
    lock_held_error,
    lock_info,
    new_token,
    token_ref,
    now_iso,
    stored_json,
    utc_now,
)

SCHEMA_VERSION = 3
BUSY_TIMEOUT_MS = 30000

_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS deployments (
    deployment_id   TEXT PRIMARY KEY,
    application     TEXT NOT NULL,
    deployment_group TEXT NOT NULL,
    deployment_type TEXT NOT NULL,
    revision        TEXT NOT NULL DEFAULT '{}',
    configuration   TEXT,
    creator         TEXT NOT NULL,
    rollback_of     TEXT,
    rolled_back_by  TEXT,
    status          TEXT NOT NULL,
    create_time     TEXT NOT NULL,
    start_time      TEXT,
    end_time        TEXT,
    error           TEXT,
    started_by      TEXT,
    description     TEXT
);
CREATE INDEX IF NOT EXISTS deployments_history
    ON deployments (application, deployment_group, create_time DESC);
CREATE TABLE IF NOT EXISTS hosts (
    deployment_id   TEXT NOT NULL REFERENCES deployments(deployment_id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    instance_id     TEXT,
    status          TEXT NOT NULL DEFAULT 'Pending',
    lb_membership   TEXT NOT NULL DEFAULT '[]',
    lb_restored     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (deployment_id, name)
);
CREATE TABLE IF NOT EXISTS events (
    deployment_id   TEXT NOT NULL REFERENCES deployments(deployment_id) ON DELETE CASCADE,
    host            TEXT NOT NULL,
    name            TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    status          TEXT NOT NULL,
    start_time      TEXT,
    end_time        TEXT,
    scripts         TEXT NOT NULL DEFAULT '[]',
    message         TEXT,
    PRIMARY KEY (deployment_id, host, name)
);
CREATE TABLE IF NOT EXISTS extra (
    deployment_id   TEXT NOT NULL REFERENCES deployments(deployment_id) ON DELETE CASCADE,
    key             TEXT NOT NULL,
    value           TEXT NOT NULL,
    PRIMARY KEY (deployment_id, key)
);
CREATE TABLE IF NOT EXISTS locks (
    application     TEXT NOT NULL,
    deployment_group TEXT NOT NULL,
    deployment_id   TEXT NOT NULL,
    owner           TEXT NOT NULL,
    token           TEXT NOT NULL,
    ttl             REAL NOT NULL,
    acquired_at     TEXT NOT NULL,
    heartbeat_at    TEXT NOT NULL,
    PRIMARY KEY (application, deployment_group)
);
"""

# 2: who started each deployment (AWX job, template, user; or user@host), as JSON
_SCHEMA_V2 = """
ALTER TABLE deployments ADD COLUMN creator_identity TEXT;
"""

# 3: control requests (stop / promote / pause / resume), one row each, next to the deployment
_SCHEMA_V3 = """
CREATE TABLE IF NOT EXISTS requests (
    deployment_id   TEXT NOT NULL REFERENCES deployments(deployment_id) ON DELETE CASCADE,
    request_id      TEXT NOT NULL,
    action          TEXT NOT NULL,
    options         TEXT NOT NULL DEFAULT '{}',
    state           TEXT NOT NULL,
    requested_by    TEXT,
    requested_at    TEXT NOT NULL,
    acknowledged_at TEXT,
    ended_at        TEXT,
    handled_by      TEXT,
    message         TEXT,
    PRIMARY KEY (deployment_id, request_id)
);
"""

# schema version -> SQL that upgrades from the previous version (1 is the initial schema)
_MIGRATIONS = {1: _SCHEMA_V1, 2: _SCHEMA_V2, 3: _SCHEMA_V3}


def default_path() -> Path:
    """``$XDG_STATE_HOME/rollwright/deployments.sqlite3`` (default ``~/.local/state/...``)."""
    state_home = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state_home) / "rollwright" / "deployments.sqlite3"


def _seq() -> int:
    return time.time_ns()


class SQLiteRecordStore(RecordStore):
    backend = "sqlite"

    def __init__(self, path: Optional[str] = None, timeout: float = BUSY_TIMEOUT_MS / 1000.0):
        self.path = Path(os.path.expanduser(str(path))) if path else default_path()
        self.timeout = timeout
        self._conn: Optional[sqlite3.Connection] = None
        self._pid: Optional[int] = None
        self._connect()

    # connection ----------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        # A connection must not cross fork(): reopen in a child process.
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            conn = sqlite3.connect(str(self.path), timeout=self.timeout, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreNotReady(f"sqlite_path: cannot open the records database {self.path}: {exc}")
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        try:
            conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError:  # pragma: no cover - another process is switching it right now
            pass
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        self._conn, self._pid = conn, os.getpid()
        self._migrate(conn)
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise StoreNotReady(
                f"sqlite_path: {self.path} has schema version {version}, newer than this collection's "
                f"{SCHEMA_VERSION}; upgrade rollwright.deploy or use another file"
            )
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have migrated
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[target].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {target}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def schema_version(self) -> int:
        return self._connect().execute("PRAGMA user_version").fetchone()[0]

    def _write(self):
        return _Transaction(self._connect())

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None

    # helpers -------------------------------------------------------------------------------
    @staticmethod
    def _require(conn: sqlite3.Connection, deployment_id: str) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM deployments WHERE deployment_id = ?", (deployment_id,)).fetchone()
        if row is None:
            raise RecordNotFound(f"deployment_id: no deployment {deployment_id} in the records")
        return row

    @staticmethod
    def _record_from_row(row: sqlite3.Row) -> DeploymentRecord:
        return DeploymentRecord(
            deployment_id=row["deployment_id"],
            application=row["application"],
            deployment_group=row["deployment_group"],
            deployment_type=row["deployment_type"],
            revision=stored_json(row["revision"], f"{row['deployment_id']}.revision", {}),
            configuration=stored_json(row["configuration"], f"{row['deployment_id']}.configuration"),
            creator=row["creator"],
            rollback_of=row["rollback_of"],
            rolled_back_by=row["rolled_back_by"],
            status=row["status"],
            create_time=row["create_time"],
            start_time=row["start_time"],
            end_time=row["end_time"],
            error=row["error"],
            started_by=row["started_by"],
            creator_identity=json.loads(row["creator_identity"]) if row["creator_identity"] else {},
            description=row["description"],
        )

    def _load_details(self, conn: sqlite3.Connection, record: DeploymentRecord) -> DeploymentRecord:
        did = record.deployment_id
        hosts = {}
        for row in conn.execute("SELECT * FROM hosts WHERE deployment_id = ? ORDER BY seq, name", (did,)):
            hosts[row["name"]] = HostRecord(
                name=row["name"],
                instance_id=row["instance_id"],
                status=row["status"],
                lb_membership=stored_json(row["lb_membership"], f"{did}.hosts[{row['name']}].lb_membership", []),
                lb_restored=bool(row["lb_restored"]),
            )
        for row in conn.execute("SELECT * FROM events WHERE deployment_id = ? ORDER BY seq, name", (did,)):
            host = hosts.get(row["host"])
            if host is None:  # pragma: no cover - events always create their host row
                host = hosts[row["host"]] = HostRecord(name=row["host"])
            host.events.append(EventRecord(
                name=row["name"], status=row["status"], start_time=row["start_time"], end_time=row["end_time"],
                scripts=stored_json(row["scripts"], f"{did}.hosts[{row['host']}].events[{row['name']}].scripts", []),
                message=row["message"],
            ))
        record.hosts = list(hosts.values())
        record.extra = {row["key"]: stored_json(row["value"], f"{did}.extra.{row['key']}")
                        for row in conn.execute("SELECT key, value FROM extra WHERE deployment_id = ? ORDER BY key", (did,))}
        return record

    @staticmethod
    def _insert_host(conn: sqlite3.Connection, did: str, host: HostRecord, seq: int) -> None:
        conn.execute(
            "INSERT INTO hosts (deployment_id, name, seq, instance_id, status, lb_membership, lb_restored) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (deployment_id, name) DO UPDATE SET "
            "instance_id = excluded.instance_id, status = excluded.status, lb_membership = excluded.lb_membership, "
            "lb_restored = excluded.lb_restored",
            (did, host.name, seq, host.instance_id, host.status, json.dumps(host.lb_membership), int(host.lb_restored)),
        )
        conn.execute("DELETE FROM events WHERE deployment_id = ? AND host = ?", (did, host.name))
        for offset, ev in enumerate(host.events):
            conn.execute(
                "INSERT INTO events (deployment_id, host, name, seq, status, start_time, end_time, scripts, message) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (did, host.name, ev.name, seq + offset, ev.status, ev.start_time, ev.end_time,
                 json.dumps(ev.scripts), ev.message),
            )

    @staticmethod
    def _ensure_host(conn: sqlite3.Connection, did: str, host: str) -> None:
        conn.execute(
            "INSERT INTO hosts (deployment_id, name, seq) VALUES (?, ?, ?) ON CONFLICT (deployment_id, name) DO NOTHING",
            (did, host, _seq()),
        )

    @contextlib.contextmanager
    def _host_write(self, deployment_id: str, host: str) -> Iterator[sqlite3.Connection]:
        """A write transaction on an existing deployment whose ``host`` row exists (added if new)."""
        with self._write() as conn:
            self._require(conn, deployment_id)
            self._ensure_host(conn, deployment_id, host)
            yield conn

    # records -------------------------------------------------------------------------------
    def create(self, record: DeploymentRecord) -> DeploymentRecord:
        self.stamp(record)
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM deployments WHERE deployment_id = ?", (record.deployment_id,)).fetchone():
                raise RecordExists(f"deployment_id: deployment {record.deployment_id} already exists")
            if record.rollback_of is not None:
                self._require(conn, record.rollback_of)
            conn.execute(
                "INSERT INTO deployments (deployment_id, application, deployment_group, deployment_type, revision, "
                "configuration, creator, rollback_of, rolled_back_by, status, create_time, start_time, end_time, error, "
                "started_by, creator_identity, description) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.deployment_id, record.application, record.deployment_group, record.deployment_type,
                 json.dumps(record.revision), None if record.configuration is None else json.dumps(record.configuration),
                 record.creator, record.rollback_of, record.rolled_back_by, record.status, record.create_time,
                 record.start_time, record.end_time, record.error, record.started_by,
                 json.dumps(record.creator_identity), record.description),
            )
            if record.rollback_of is not None:
                conn.execute("UPDATE deployments SET rolled_back_by = ? WHERE deployment_id = ?",
                             (record.deployment_id, record.rollback_of))
            base_seq = _seq()
            for index, host in enumerate(record.hosts):
                self._insert_host(conn, record.deployment_id, host, base_seq + index * 1000)
            for key, value in record.extra.items():
                conn.execute("INSERT INTO extra (deployment_id, key, value) VALUES (?, ?, ?)",
                             (record.deployment_id, str(key), json.dumps(value)))
        return record

    def get(self, deployment_id: str) -> DeploymentRecord:
        check_deployment_id(deployment_id)
        conn = self._connect()
        # one read transaction: a consistent snapshot of the deployment, its hosts and events
        conn.execute("BEGIN")
        try:
            record = self._record_from_row(self._require(conn, deployment_id))
            return self._load_details(conn, record)
        finally:
            conn.execute("COMMIT")

    def update_status(self, deployment_id: str, status: str, error: Optional[str] = None) -> DeploymentRecord:
        check_deployment_id(deployment_id)
        check_choice(status, DEPLOYMENT_STATUSES, "status")
        now = now_iso()
        with self._write() as conn:
            row = self._require(conn, deployment_id)
            current = row["status"]
            if current in TERMINAL_STATUSES and status != current:
                raise InvalidTransition(
                    f"status: deployment {deployment_id} already finished as {current}; it cannot become {status}"
                )
            conn.execute(
                "UPDATE deployments SET status = ?, "
                "start_time = CASE WHEN ? AND start_time IS NULL THEN ? ELSE start_time END, "
                "end_time = CASE WHEN ? AND end_time IS NULL THEN ? ELSE end_time END, "
                "error = COALESCE(?, error) WHERE deployment_id = ?",
                (status, status == "InProgress", now, status in TERMINAL_STATUSES, now, error, deployment_id),
            )
            return self._record_from_row(self._require(conn, deployment_id))

    def set_hosts(self, deployment_id: str, hosts: list) -> None:
        check_deployment_id(deployment_id)
        hosts = [h if isinstance(h, HostRecord) else HostRecord.from_dict(h) for h in hosts]
        for h in hosts:
            h.validate()
        base_seq = _seq()
        with self._write() as conn:
            self._require(conn, deployment_id)
            for index, host in enumerate(hosts):
                self._insert_host(conn, deployment_id, host, base_seq + index * 1000)

    def update_host(self, deployment_id, host, status=None, instance_id=None, lb_membership=None, lb_restored=None) -> None:
        check_deployment_id(deployment_id)
        self._check_host_args(host, status, instance_id, lb_membership, lb_restored)
        with self._host_write(deployment_id, host) as conn:
            conn.execute(
                "UPDATE hosts SET status = COALESCE(?, status), instance_id = COALESCE(?, instance_id), "
                "lb_membership = COALESCE(?, lb_membership), lb_restored = COALESCE(?, lb_restored) "
                "WHERE deployment_id = ? AND name = ?",
                (status, instance_id, None if lb_membership is None else json.dumps(lb_membership),
                 None if lb_restored is None else int(lb_restored), deployment_id, host),
            )

    def event(self, deployment_id, host, event_name, status, start=None, end=None, scripts=None, message=None) -> None:
        check_deployment_id(deployment_id)
        start, end, scripts, message = self._check_event_args(host, event_name, status, start, end, scripts, message)
        with self._host_write(deployment_id, host) as conn:
            conn.execute(
                "INSERT INTO events (deployment_id, host, name, seq, status, start_time, end_time, scripts, message) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (deployment_id, host, name) DO UPDATE SET "
                "status = excluded.status, start_time = COALESCE(?, start_time), end_time = COALESCE(?, end_time), "
                "scripts = COALESCE(?, scripts), message = COALESCE(?, message)",
                (deployment_id, host, event_name, _seq(), status, start, end,
                 json.dumps(scripts if scripts is not None else []), message,
                 start, end, None if scripts is None else json.dumps(scripts), message),
            )

    def set_extra(self, deployment_id: str, key: str, value: Any) -> None:
        check_deployment_id(deployment_id)
        check_name(key, "extra key")
        try:
            encoded = json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise InvalidRecord(f"extra[{key}]: expected plain JSON data: {exc}") from None
        with self._write() as conn:
            self._require(conn, deployment_id)
            conn.execute(
                "INSERT INTO extra (deployment_id, key, value) VALUES (?, ?, ?) "
                "ON CONFLICT (deployment_id, key) DO UPDATE SET value = excluded.value",
                (deployment_id, key, encoded),
            )

    def list(self, application, deployment_group=None, status=None, limit=50, include_hosts=False) -> list:
        self._check_list_args(application, deployment_group, status, limit)
        where, args = ["application = ?"], [application]
        if deployment_group is not None:
            where.append("deployment_group = ?")
            args.append(deployment_group)
        if status is not None:
            where.append("status = ?")
            args.append(status)
        conn = self._connect()
        conn.execute("BEGIN")
        try:
            rows = conn.execute(
                f"SELECT * FROM deployments WHERE {' AND '.join(where)} ORDER BY create_time DESC, rowid DESC LIMIT ?",
                args + [limit],
            ).fetchall()
            records = [self._record_from_row(row) for row in rows]
            if include_hosts:
                records = [self._load_details(conn, r) for r in records]
            return records
        finally:
            conn.execute("COMMIT")

    # control requests ----------------------------------------------------------------------
    @staticmethod
    def _request_from_row(row: sqlite3.Row) -> ControlRequest:
        return ControlRequest(
            request_id=row["request_id"], action=row["action"],
            options=stored_json(row["options"], f"{row['deployment_id']}.requests[{row['request_id']}].options", {}),
            state=row["state"], requested_by=row["requested_by"], requested_at=row["requested_at"],
            acknowledged_at=row["acknowledged_at"], ended_at=row["ended_at"], handled_by=row["handled_by"],
            message=row["message"])

    def add_request(self, deployment_id: str, request: ControlRequest) -> ControlRequest:
        check_deployment_id(deployment_id)
        request.prepare_for_add()
        with self._write() as conn:
            self._require(conn, deployment_id)
            conn.execute(
                "INSERT INTO requests (deployment_id, request_id, action, options, state, requested_by, requested_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (deployment_id, request.request_id, request.action, json.dumps(request.options), request.state,
                 request.requested_by, request.requested_at))
        return request

    def list_requests(self, deployment_id: str) -> list:
        check_deployment_id(deployment_id)
        rows = self._connect().execute("SELECT * FROM requests WHERE deployment_id = ? ORDER BY request_id",
                                       (deployment_id,)).fetchall()
        return [self._request_from_row(row) for row in rows]

    def update_request(self, deployment_id, request_id, state, expected, message=None, handled_by=None) -> ControlRequest:
        check_deployment_id(deployment_id)
        expected, message = self._check_request_update(request_id, state, expected, message)
        now = now_iso()
        with self._write() as conn:  # BEGIN IMMEDIATE: the state read and the move are one step
            row = conn.execute("SELECT * FROM requests WHERE deployment_id = ? AND request_id = ?",
                               (deployment_id, request_id)).fetchone()
            if row is None:
                raise RecordNotFound(f"request_id: deployment {deployment_id} has no request {request_id}")
            if row["state"] not in expected:
                current = self._request_from_row(row)
                raise RequestConflict(f"request {request_id} of {deployment_id} is {current.state}, not "
                                      f"{' or '.join(expected)}: another process handled it", current)
            conn.execute(
                "UPDATE requests SET state = ?, "
                "acknowledged_at = CASE WHEN ? THEN COALESCE(acknowledged_at, ?) ELSE acknowledged_at END, "
                "ended_at = CASE WHEN ? THEN ? ELSE ended_at END, "
                "message = COALESCE(?, message), handled_by = COALESCE(?, handled_by) "
                "WHERE deployment_id = ? AND request_id = ?",
                (state, state != "Pending", now, state in ("Done", "Refused"), now, message, handled_by,
                 deployment_id, request_id))
            return self._request_from_row(conn.execute(
                "SELECT * FROM requests WHERE deployment_id = ? AND request_id = ?", (deployment_id, request_id)).fetchone())

    # lock ----------------------------------------------------------------------------------
    @staticmethod
    def _lock_row(conn, application, group) -> Optional[sqlite3.Row]:
        return conn.execute("SELECT * FROM locks WHERE application = ? AND deployment_group = ?",
                            (application, group)).fetchone()

    @staticmethod
    def _info(row: sqlite3.Row) -> LockInfo:
        return lock_info(row["application"], row["deployment_group"], row["deployment_id"], row["owner"],
                         row["acquired_at"], row["heartbeat_at"], row["ttl"], now=utc_now())

    def acquire_lock(self, application, deployment_group, deployment_id, owner=None, ttl=DEFAULT_LOCK_TTL, force=False) -> Lock:
        self._check_lock_args(application, deployment_group, deployment_id, ttl)
        owner = self.lock_owner(owner)
        with self._write() as conn:  # BEGIN IMMEDIATE: one writer decides at a time
            row = self._lock_row(conn, application, deployment_group)
            if row is not None:
                info = self._info(row)
                if not (info.stale and force):
                    raise lock_held_error(info)
                conn.execute("DELETE FROM locks WHERE application = ? AND deployment_group = ?",
                             (application, deployment_group))
            now = now_iso()
            lock = Lock(application, deployment_group, deployment_id, owner, new_token(), float(ttl), now, now)
            conn.execute(
                "INSERT INTO locks (application, deployment_group, deployment_id, owner, token, ttl, acquired_at, heartbeat_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (application, deployment_group, deployment_id, owner, lock.token, lock.ttl, now, now),
            )
        return lock

    def take_over(self, application, deployment_group, deployment_id, owner=None, ttl=DEFAULT_LOCK_TTL, live=False,
                  token=None, acquired_at=None) -> Lock:
        self._check_lock_args(application, deployment_group, deployment_id, ttl)
        owner = self.lock_owner(owner)
        with self._write() as conn:  # read and swap in one BEGIN IMMEDIATE transaction: nobody renews in between
            row = self._lock_row(conn, application, deployment_group)
            if row is None:
                raise RecordNotFound(f"deployment group {application}/{deployment_group} is not locked")
            if token and row["token"] != token:
                raise LockLost(f"lock of deployment group {application}/{deployment_group} no longer has the expected "
                               f"token: held by deployment {row['deployment_id']} ({row['owner']})")
            info = self._info(row)
            if row["deployment_id"] != deployment_id or not (info.stale or live) or \
                    (acquired_at and row["acquired_at"] != acquired_at):
                raise lock_held_error(info)
            now = now_iso()
            lock = Lock(application, deployment_group, deployment_id, owner, new_token(), float(ttl), now, now)
            conn.execute("UPDATE locks SET owner = ?, token = ?, ttl = ?, acquired_at = ?, heartbeat_at = ? "
                         "WHERE application = ? AND deployment_group = ? AND token = ?",
                         (owner, lock.token, lock.ttl, now, now, application, deployment_group, row["token"]))
        return lock

    def heartbeat(self, lock) -> Lock:
        application, group, deployment_id, token = token_ref(lock, "renewing")
        with self._write() as conn:
            row = self._lock_row(conn, application, group)
            if row is None or row["deployment_id"] != deployment_id or row["token"] != token:
                holder = "nobody" if row is None else f"deployment {row['deployment_id']} ({row['owner']})"
                raise LockLost(
                    f"lock of deployment group {application}/{group} is no longer held by {deployment_id}: "
                    f"now held by {holder}"
                )
            now = now_iso()
            conn.execute("UPDATE locks SET heartbeat_at = ? WHERE application = ? AND deployment_group = ?",
                         (now, application, group))
            result = Lock(application, group, deployment_id, row["owner"], row["token"], row["ttl"], row["acquired_at"], now)
        if isinstance(lock, Lock):
            lock.heartbeat_at = now
        return result

    def release_lock(self, lock_or_ids) -> bool:
        application, group, deployment_id, token = token_ref(lock_or_ids, "releasing")
        with self._write() as conn:
            row = self._lock_row(conn, application, group)
            if row is None:
                return False
            if row["deployment_id"] != deployment_id or row["token"] != token:
                raise LockLost(
                    f"lock of deployment group {application}/{group} is held by deployment {row['deployment_id']} "
                    f"({row['owner']}){' with another token (taken over)' if row['deployment_id'] == deployment_id else ''}, "
                    f"not by this holder of {deployment_id}: not released"
                )
            conn.execute("DELETE FROM locks WHERE application = ? AND deployment_group = ? AND token = ?",
                         (application, group, token))
            return True

    def get_lock(self, application, deployment_group) -> Optional[LockInfo]:
        check_name(application, "application")
        check_name(deployment_group, "deployment_group")
        row = self._lock_row(self._connect(), application, deployment_group)
        return None if row is None else self._info(row)


class _Transaction:
    """``with`` block around BEGIN IMMEDIATE ... COMMIT (ROLLBACK on any error)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")
        return False
