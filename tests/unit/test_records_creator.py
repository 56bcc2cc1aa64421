# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Who started a deployment (the AWX job or user@host), and SQLite refused under AWX."""

from __future__ import annotations

import os
import re
import socket
import sqlite3

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.records import (
    DeploymentRecord,
    InvalidRecord,
    StoreNotReady,
    open_store,
)
from ansible_collections.rollwright.deploy.plugins.module_utils.records import creator as C
from ansible_collections.rollwright.deploy.plugins.module_utils.records.sqlite import SCHEMA_VERSION, _SCHEMA_V1

# What AWX puts in a job's extra variables (each twice: awx_ and tower_), as ansible-runner hands them over.
AWX_VARS = {
    "awx_job_id": 42, "tower_job_id": 42,
    "awx_job_launch_type": "workflow", "awx_job_template_id": 7, "awx_job_template_name": "web deploy",
    "awx_user_id": 3, "awx_user_name": "alice", "awx_user_email": "alice@example.com",
    "awx_workflow_job_id": 40, "awx_workflow_job_name": "web blue/green (approved)",
    "awx_inventory_id": 2, "awx_inventory_name": "web", "awx_project_revision": "3f2a9c1",
}


def test_awx_job_variables_make_the_creator():
    identity = C.creator_identity(AWX_VARS)
    assert identity["kind"] == "awx" and identity["job_id"] == 42 and identity["job_template_id"] == 7
    assert identity["job_template_name"] == "web deploy" and identity["user_name"] == "alice"
    assert identity["workflow_job_id"] == 40 and identity["host"] == socket.gethostname()
    assert "user_email" not in identity  # the account is recorded, not contact details
    assert C.describe(identity) == "AWX job 42 (web deploy) in workflow job 40 by alice"


def test_tower_variables_and_text_ids_are_read():
    identity = C.creator_identity({"tower_job_id": "17", "tower_job_template_name": "legacy", "tower_schedule_name": "nightly"})
    assert identity["job_id"] == 17 and identity["job_template_name"] == "legacy"
    assert C.describe(identity) == "AWX job 17 (legacy) on schedule nightly"


def test_without_a_job_id_the_creator_is_the_local_controller():
    identity = C.creator_identity({"awx_user_name": "alice", "rollwright_application": "web"})
    assert identity == {"kind": "local", "user": identity["user"], "host": socket.gethostname(), "pid": os.getpid()}
    assert re.match(r"^.+@.+ pid \d+$", C.describe(identity))
    assert C.creator_identity(None)["kind"] == "local"


def test_identity_is_checked():
    with pytest.raises(InvalidRecord, match=r"creator_identity.kind: expected one of awx, local"):
        C.check_identity({"kind": "robot"})
    with pytest.raises(InvalidRecord, match=r"creator_identity.user_name: expected a string or a number"):
        C.check_identity({"kind": "awx", "job_id": 1, "user_name": {"nested": True}})
    with pytest.raises(InvalidRecord, match="creator_identity: expected a dict"):
        C.check_identity("alice")
    long_name = C.check_identity({"kind": "awx", "job_id": 1, "job_template_name": "x" * 1000})
    assert len(long_name["job_template_name"]) == 255


def test_records_carry_the_awx_job(tmp_path):
    store = open_store("sqlite", {"path": str(tmp_path / "r.sqlite3")}, creator=C.creator_identity(AWX_VARS),
                       allow_sqlite_under_awx=True)
    rec = store.create(DeploymentRecord(application="web", deployment_group="prod"))
    got = store.get(rec.deployment_id).to_dict()
    assert got["creator"] == "user"  # CodeDeploy's creator kind is unchanged
    assert got["creator_identity"]["job_id"] == 42 and got["creator_identity"]["user_name"] == "alice"
    assert got["started_by"] == "AWX job 42 (web deploy) in workflow job 40 by alice"
    lock = store.acquire_lock("web", "prod", rec.deployment_id)
    assert lock.owner == got["started_by"]
    listed = store.list("web", "prod")[0]
    assert listed.creator_identity["job_template_name"] == "web deploy"


def test_a_record_made_elsewhere_keeps_its_own_creator(tmp_path):
    store = open_store("sqlite", {"path": str(tmp_path / "r.sqlite3")})
    mine = {"kind": "awx", "job_id": 9, "user_name": "bob"}
    rec = store.create(DeploymentRecord(application="web", deployment_group="prod", creator_identity=mine))
    assert store.get(rec.deployment_id).creator_identity == mine and rec.started_by == "AWX job 9 by bob"
    plain = store.create(DeploymentRecord(application="web", deployment_group="prod"))
    assert store.get(plain.deployment_id).creator_identity["kind"] == "local"


def test_sqlite_is_refused_under_awx_unless_allowed(tmp_path):
    path = tmp_path / "r.sqlite3"
    with pytest.raises(StoreNotReady) as refused:
        open_store("sqlite", {"path": str(path)}, creator=C.creator_identity(AWX_VARS))
    message = str(refused.value)
    assert "AWX job 42" in message and "rollwright_record_backend: dynamodb" in message
    assert "docs/awx.md" in message and C.ALLOW_SQLITE_UNDER_AWX_VAR in message
    assert not path.exists()  # refused before anything is written
    open_store("sqlite", {"path": str(path)}, creator=C.creator_identity({"rollwright_application": "web"})).close()
    open_store("sqlite", {"path": str(path)}, creator=C.creator_identity(AWX_VARS), allow_sqlite_under_awx=True).close()
    C.refuse_sqlite_under_awx("dynamodb", C.creator_identity(AWX_VARS))  # the backend to use: no error


@pytest.mark.parametrize("value, allowed", [(True, True), ("true", True), ("yes", True), ("{{ flag }}", True),
                                            (False, False), ("false", False), ("0", False), (None, False)])
def test_the_allow_variable_is_read_as_a_bool(value, allowed):
    variables = dict(AWX_VARS, **({} if value is None else {C.ALLOW_SQLITE_UNDER_AWX_VAR: value}))
    context = C.store_context(variables, template=lambda text: "true" if text == "{{ flag }}" else text)
    assert context["allow_sqlite_under_awx"] is allowed and context["creator"]["job_id"] == 42


def test_a_version_1_file_is_migrated_and_its_records_read(tmp_path):
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(str(path))
    conn.executescript(_SCHEMA_V1)
    conn.execute("INSERT INTO deployments (deployment_id, application, deployment_group, deployment_type, creator, "
                 "status, create_time, started_by) VALUES ('d-OLD000001', 'web', 'prod', 'in_place', 'user', "
                 "'Succeeded', '2026-01-01T00:00:00.000000Z', 'ops@box pid 1')")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    store = open_store("sqlite", {"path": str(path)})
    assert store.schema_version() == SCHEMA_VERSION == 3
    old = store.get("d-OLD000001")
    assert store.list_requests("d-OLD000001") == []  # version 3: the control requests table
    assert old.started_by == "ops@box pid 1" and old.creator_identity == {}
