#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: deployment_record
short_description: Write deployment records and take or release a deployment group's lock
version_added: 0.1.0
description:
  - Writes the deployment record that rollwright.deploy keeps per deployment, one small atomic write per task,
    so that roles and playbooks can record what they do. Each write changes one deployment, host, lifecycle event,
    C(extra) key or lock; concurrent writers do not lose each other's updates.
  - C(state=create) creates a deployment record (a new C(d-XXXXXXXXX) id unless O(deployment_id) is given).
  - C(state=status) sets the deployment status (InProgress stamps the start time; Succeeded, Failed and Stopped
    stamp the end time and are final).
  - C(state=host) updates one host (O(host)) or adds/replaces several (O(hosts)).
  - C(state=event) records one lifecycle event of one host.
  - C(state=extra) sets keys of the record's C(extra) dict.
  - C(state=lock) takes the deployment group's lock (fails at once, naming the holder, when it is held),
    C(state=heartbeat) renews it, C(state=unlock) releases it.
  - Runs on the controller.
author:
  - Rollwright maintainers (@rollwright)
options:
  state:
    description: What to write.
    type: str
    required: true
    choices: [create, status, host, event, extra, lock, unlock, heartbeat]
  create_table:
    description:
      - With O(backend=dynamodb), create the table (on-demand capacity) when it does not exist.
      - Needs C(dynamodb:CreateTable); without it a missing table is an error that shows how to create it.
    type: bool
    default: false
  deployment_id:
    description:
      - The deployment. Required for every state but C(create), where it is generated when omitted.
    type: str
  application:
    description: The application. Required for C(create), C(lock), C(unlock), C(heartbeat).
    type: str
  deployment_group:
    description: The deployment group. Required for C(create), C(lock), C(unlock), C(heartbeat).
    type: str
  deployment_type:
    description: The deployment type (C(create)).
    type: str
    choices: [in_place, blue_green_ec2, lambda]
    default: in_place
  revision:
    description: The revision (C(create)), for example C({bucket, key, version, etag, bundle_type}).
    type: dict
  configuration:
    description: The deployment configuration name or dict (C(create)).
    type: raw
  creator:
    description: Who created the deployment (C(create)).
    type: str
    choices: [user, rollback, schedule]
    default: user
  rollback_of:
    description: The deployment this one rolls back (C(create)); that record gets C(rolled_back_by) set.
    type: str
  description:
    description: A free-form note (C(create)).
    type: str
  status:
    description: The deployment status (C(status)).
    type: str
    choices: [Created, InProgress, Ready, Succeeded, Failed, Stopped]
  error:
    description: Why the deployment failed or stopped (C(status)).
    type: str
  hosts:
    description:
      - Hosts to add or replace (C(create), C(host)); each a host name or a dict with C(name), C(instance_id),
        C(status), C(lb_membership), C(lb_restored), C(events).
    type: list
    elements: raw
  host:
    description: The host to update (C(host), C(event)).
    type: str
  host_status:
    description: The host's status (C(host)).
    type: str
    choices: [Pending, InProgress, Succeeded, Failed, Skipped, Unknown]
  instance_id:
    description: The host's EC2 instance id (C(host)).
    type: str
  lb_membership:
    description:
      - The host's load-balancer membership recorded before deregistration (C(host)), a list of membership dicts
        as described in C(docs/architecture.md).
    type: list
    elements: dict
  lb_restored:
    description: Whether the recorded membership has been restored (C(host)).
    type: bool
  event_name:
    description: The lifecycle event (C(event)), for example C(BeforeInstall).
    type: str
  event_status:
    description: The event's status (C(event)).
    type: str
    choices: [Pending, InProgress, Succeeded, Failed, Skipped]
  start:
    description: When the event started (ISO 8601); default now for C(InProgress).
    type: str
  end:
    description: When the event ended (ISO 8601); default now for C(Succeeded), C(Failed), C(Skipped).
    type: str
  scripts:
    description: The event's script results (C(event)).
    type: list
    elements: dict
  event_message:
    description: The event's error or log tail (C(event)).
    type: str
  extra:
    description: Keys to set in the record's C(extra) dict (C(extra), C(create)); each key is one atomic write.
    type: dict
  owner:
    description:
      - Who takes the lock (C(lock)), shown to anyone who finds the group locked, and the record's C(started_by)
        (C(create)).
      - Default the text of O(creator_identity), for example C(AWX job 42 (deploy web) by alice), or C(user@host pid N)
        of the Ansible process running the task.
    type: str
  creator_identity:
    description:
      - Who starts the deployment, stored as the new record's C(creator_identity) (C(create)) and used as the
        default O(owner).
      - Filled in from the task's variables by the action plugin. Under AWX / Automation Controller (its
        C(awx_*) / C(tower_*) job variables present) the job id, job template, launching user, workflow job and
        schedule; otherwise C(user), C(host) and C(pid) of the controller. Set it only to record someone else.
      - A dict with C(kind) (C(awx) or C(local)) and plain string or number values.
    type: dict
  allow_sqlite_under_awx:
    description:
      - Under AWX each job runs in a fresh execution environment, so O(backend=sqlite) would keep records and
        locks in a file that is thrown away with the job; it is refused unless this is true (for example with a
        persistent volume mounted into the execution environment). Use O(backend=dynamodb) instead.
      - When not set in the task, the action plugin takes the variable C(rollwright_record_allow_sqlite_under_awx).
    type: bool
    default: false
  ttl:
    description:
      - Seconds without heartbeat after which the lock is stale (C(lock)).
    type: float
    default: 120
  force:
    description:
      - Take over a stale lock (C(lock)). A live lock is never taken over by C(lock). Run recovery for the stale
        lock's deployment first when you can, so that its hosts are put back into their load balancers.
      - With C(unlock) and no O(lock_token), end the lock of O(deployment_id) even if it looks alive (its
        controller is known to be dead); without O(force) only a stale lock is ended that way.
    type: bool
    default: false
  lock_token:
    description:
      - The C(token) of the lock returned by C(state=lock). Required for C(heartbeat) - a lock is renewed by its holder
        only. For C(unlock), releases the lock only if it still has this token; without it, the lock of
        O(deployment_id) is taken over by the token read at that moment (only when stale, unless O(force)) and
        released, so a lock that another controller took meanwhile is never removed.
    type: str
extends_documentation_fragment:
  - rollwright.deploy.attributes
  - rollwright.deploy.records
  - rollwright.deploy.notifications
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
attributes:
  check_mode:
    support: full
    details: Reads the records to report what would change (a held lock fails as it would for real); writes nothing.
  diff_mode:
    support: none
notes:
  - The AWS connection options are used only with O(backend=dynamodb).
"""

EXAMPLES = r"""
- name: Create a record and take the group's lock
  delegate_to: localhost
  run_once: true
  block:
    - name: Create the record
      rollwright.deploy.deployment_record:
        state: create
        application: web
        deployment_group: prod
        revision: {bucket: releases, key: web-1.2.0.zip, version: 3HL4kqtJlcpXroDTDmJ, etag: '"9b2cf535f27731c974343645a3985328"'}
        configuration: CodeDeployDefault.HalfAtATime
        hosts: "{{ ansible_play_hosts }}"
      register: rec

    - name: Lock the deployment group
      rollwright.deploy.deployment_record:
        state: lock
        application: web
        deployment_group: prod
        deployment_id: "{{ rec.deployment_id }}"
      register: group_lock

- name: Record an event
  rollwright.deploy.deployment_record:
    state: event
    deployment_id: "{{ rec.deployment_id }}"
    host: "{{ inventory_hostname }}"
    event_name: ValidateService
    event_status: Failed
    event_message: "{{ validate.stdout[-2048:] }}"
  delegate_to: localhost

- name: Finish and release the lock
  delegate_to: localhost
  run_once: true
  block:
    - name: Mark the deployment successful
      rollwright.deploy.deployment_record:
        state: status
        deployment_id: "{{ rec.deployment_id }}"
        status: Succeeded
    - name: Release the lock
      rollwright.deploy.deployment_record:
        state: unlock
        application: web
        deployment_group: prod
        deployment_id: "{{ rec.deployment_id }}"
        lock_token: "{{ group_lock.lock.token }}"
"""

RETURN = r"""
deployment_id:
  description: The deployment written to.
  returned: always, except for O(state=lock), O(state=unlock), O(state=heartbeat) without O(deployment_id)
  type: str
  sample: d-ABC123XYZ
deployment:
  description: The deployment record after the write (same shape as M(rollwright.deploy.deployment_info)'s RV(deployment)).
  returned: when O(state=create) or O(state=status)
  type: dict
lock:
  description: The lock taken or renewed (C(application), C(deployment_group), C(deployment_id), C(owner), C(token), C(ttl),
    C(acquired_at), C(heartbeat_at)); when the lock is held by someone else, the holder (as in M(rollwright.deploy.deployment_info)).
  returned: when O(state=lock) or O(state=heartbeat), and on a lock failure
  type: dict
released:
  description: Whether a lock was released (false when the group was not locked).
  returned: when O(state=unlock)
  type: bool
"""

import os

from ansible_collections.rollwright.deploy.plugins.module_utils.aws.module import RollwrightAWSModule
from ansible_collections.rollwright.deploy.plugins.module_utils.records import (
    CREATORS,
    DEPLOYMENT_STATUSES,
    DEPLOYMENT_TYPES,
    EVENT_STATUSES,
    HOST_STATUSES,
    TERMINAL_STATUSES,
    DeploymentRecord,
    HostRecord,
    InvalidRecord,
    InvalidTransition,
    LockLost,
    open_store,
    store_argument_spec,
)
from ansible_collections.rollwright.deploy.plugins.module_utils.records.creator import check_identity, local_identity
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments.notifications import ARGUMENT_SPEC as NOTIFICATIONS_SPEC
from ansible_collections.rollwright.deploy.plugins.module_utils.records.base import lock_held_error

REQUIRED = {
    "create": ("application", "deployment_group"),
    "status": ("deployment_id", "status"),
    "host": ("deployment_id",),
    "event": ("deployment_id", "host", "event_name", "event_status"),
    "extra": ("deployment_id", "extra"),
    "lock": ("application", "deployment_group", "deployment_id"),
    "unlock": ("application", "deployment_group", "deployment_id"),
    "heartbeat": ("application", "deployment_group", "deployment_id"),
}


def _hosts(value):
    hosts = []
    for index, item in enumerate(value or []):
        if isinstance(item, str):
            hosts.append(HostRecord(name=item))
        elif isinstance(item, dict) and "name" in item:
            hosts.append(HostRecord.from_dict(item))
        else:
            raise InvalidRecord(f"hosts[{index}]: expected a host name or a dict with 'name', got {item!r}")
    return hosts


def _creator(params):
    if params["creator_identity"]:
        return check_identity(params["creator_identity"])
    # the module process ends with the task; the Ansible process that runs it is the better pid to show
    return dict(local_identity(), pid=os.getppid())


def _create(store, p, check):
    record = DeploymentRecord(
        application=p["application"], deployment_group=p["deployment_group"], deployment_type=p["deployment_type"],
        deployment_id=p["deployment_id"], revision=p["revision"] or {}, configuration=p["configuration"],
        creator=p["creator"], rollback_of=p["rollback_of"], description=p["description"], hosts=_hosts(p["hosts"]),
        extra=p["extra"] or {}, started_by=p["owner"] or None,
    )
    if check:
        store.stamp(record)
        if record.rollback_of:
            store.get(record.rollback_of)
    else:
        record = store.create(record)
    return dict(changed=True, deployment_id=record.deployment_id, deployment=record.to_dict())


def _status(store, p, check):
    did = p["deployment_id"]
    if check:
        current = store.get(did)
        if current.status in TERMINAL_STATUSES and current.status != p["status"]:
            raise InvalidTransition(
                f"status: deployment {did} already finished as {current.status}; it cannot become {p['status']}")
        return dict(changed=current.status != p["status"] or p["error"] is not None, deployment_id=did,
                    deployment=current.to_dict())
    store.update_status(did, p["status"], error=p["error"])
    return dict(changed=True, deployment_id=did, deployment=store.get(did).to_dict())


def _write(store, p, check, write, changed=True):
    """``write(deployment_id)``; in check mode only read the deployment (it must exist)."""
    did = p["deployment_id"]
    if check:
        store.get(did)
    else:
        write(did)
    return dict(changed=changed, deployment_id=did)


def _host(store, p, check):
    if not p["host"] and not p["hosts"]:
        raise InvalidRecord("host: state=host needs host (one host to update) or hosts (hosts to add or replace)")
    hosts = _hosts(p["hosts"])

    def write(did):
        if hosts:
            store.set_hosts(did, hosts)
        if p["host"]:
            store.update_host(did, p["host"], status=p["host_status"], instance_id=p["instance_id"],
                              lb_membership=p["lb_membership"], lb_restored=p["lb_restored"])

    return _write(store, p, check, write)


def _event(store, p, check):
    return _write(store, p, check, lambda did: store.event(
        did, p["host"], p["event_name"], p["event_status"], start=p["start"], end=p["end"], scripts=p["scripts"],
        message=p["event_message"]))


def _extra(store, p, check):
    def write(did):
        for key, value in p["extra"].items():
            store.set_extra(did, key, value)

    return _write(store, p, check, write, changed=bool(p["extra"]))


def _lock(store, p, check):
    app, group, did = p["application"], p["deployment_group"], p["deployment_id"]
    if check:
        info = store.get_lock(app, group)
        if info is not None and not (info.stale and p["force"]):
            raise lock_held_error(info)
        return dict(changed=True, deployment_id=did, lock=None)
    lock = store.acquire_lock(app, group, did, owner=store.lock_owner(p["owner"]), ttl=p["ttl"], force=p["force"])
    return dict(changed=True, deployment_id=did, lock=lock.to_dict())


def _heartbeat(store, p, check):
    app, group, did = p["application"], p["deployment_group"], p["deployment_id"]
    if check:
        info = store.get_lock(app, group)
        if info is None or info.deployment_id != did:
            raise LockLost(f"lock of deployment group {app}/{group} is not held by {did}")
        return dict(changed=True, deployment_id=did, lock=info.to_dict())
    lock = store.heartbeat((app, group, did, p["lock_token"]))
    return dict(changed=True, deployment_id=did, lock=lock.to_dict())


def _unlock(store, p, check):
    app, group, did = p["application"], p["deployment_group"], p["deployment_id"]
    if check:
        info = store.get_lock(app, group)
        if info is not None and info.deployment_id != did:
            raise LockLost(f"lock of deployment group {app}/{group} is held by deployment {info.deployment_id}, not by {did}")
        return dict(changed=info is not None, deployment_id=did, released=info is not None)
    if p["lock_token"]:
        released = store.release_lock((app, group, did, p["lock_token"]))
    else:  # a dead deployment's lock: taken over by the token read (stale, or force), then released by ours
        released = store.break_lock(app, group, did, owner=store.lock_owner(p["owner"]), live=p["force"])
    return dict(changed=released, deployment_id=did, released=released)


STATES = {"create": _create, "status": _status, "host": _host, "event": _event, "extra": _extra, "lock": _lock,
          "heartbeat": _heartbeat, "unlock": _unlock}


def run(module, store):
    """The module's result for its O(state); in check mode only reads (a held lock fails as it would)."""
    return STATES[module.params["state"]](store, module.params, module.check_mode)


def main():
    argument_spec = dict(
        store_argument_spec(),
        state=dict(type="str", required=True, choices=list(REQUIRED)),
        create_table=dict(type="bool", default=False),
        deployment_id=dict(type="str"),
        application=dict(type="str"),
        deployment_group=dict(type="str"),
        deployment_type=dict(type="str", choices=list(DEPLOYMENT_TYPES), default="in_place"),
        revision=dict(type="dict"),
        configuration=dict(type="raw"),
        creator=dict(type="str", choices=list(CREATORS), default="user"),
        rollback_of=dict(type="str"),
        description=dict(type="str"),
        status=dict(type="str", choices=list(DEPLOYMENT_STATUSES)),
        error=dict(type="str"),
        hosts=dict(type="list", elements="raw"),
        host=dict(type="str"),
        host_status=dict(type="str", choices=list(HOST_STATUSES)),
        instance_id=dict(type="str"),
        lb_membership=dict(type="list", elements="dict"),
        lb_restored=dict(type="bool"),
        event_name=dict(type="str"),
        event_status=dict(type="str", choices=list(EVENT_STATUSES)),
        start=dict(type="str"),
        end=dict(type="str"),
        scripts=dict(type="list", elements="dict"),
        event_message=dict(type="str"),
        extra=dict(type="dict"),
        owner=dict(type="str"),
        creator_identity=dict(type="dict"),
        allow_sqlite_under_awx=dict(type="bool", default=False),
        ttl=dict(type="float", default=120.0),
        force=dict(type="bool", default=False),
        lock_token=dict(type="str", no_log=True),
    )
    argument_spec.update(NOTIFICATIONS_SPEC)
    module = RollwrightAWSModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_if=[("state", name, fields) for name, fields in REQUIRED.items()],
    )
    p = module.params
    if p["backend"] == "sqlite":
        options = {"path": p["sqlite_path"]}
    else:
        options = {"table": p["dynamodb_table"], "create_table": p["create_table"] and not module.check_mode}
    if p["notifications"]:
        options["notifications"] = p["notifications"]

    def open_and_run():
        store = open_store(p["backend"], options, client_factory=module.aws_client, creator=_creator(p),
                           allow_sqlite_under_awx=p["allow_sqlite_under_awx"])
        return run(module, store)

    result = module.run_or_fail(f"writing deployment records to DynamoDB table {p['dynamodb_table']} failed",
                                open_and_run)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
