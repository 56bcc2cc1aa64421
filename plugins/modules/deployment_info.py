#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: deployment_info
short_description: Read deployment records and the deployment group lock
version_added: 0.1.0
description:
  - Reads the deployment records that rollwright.deploy writes while it deploys (the equivalent of
    C(aws deploy get-deployment), C(list-deployments) and C(get-deployment-instance)).
  - With O(deployment_id), returns that deployment with every host, lifecycle event, script result and
    recorded load-balancer membership.
  - With O(application), returns the history of the application (or of one deployment group), newest first,
    and the group's lock holder when O(deployment_group) is given.
  - With O(last_successful=true), also returns the group's last successful deployment (what a rollback redeploys).
  - Runs on the controller. Read-only; with the C(sqlite) backend a missing file means no records, and it is not
    created.
author:
  - Rollwright maintainers (@rollwright)
options:
  deployment_id:
    description:
      - The deployment to return (C(d-) and 9 upper-case letters or digits).
    type: str
  application:
    description:
      - The application whose history is listed.
    type: str
  deployment_group:
    description:
      - Only this deployment group of O(application). Also returns the group's lock as RV(lock).
    type: str
  status:
    description:
      - Only deployments in this status.
    type: str
    choices: [Created, InProgress, Ready, Succeeded, Failed, Stopped]
  limit:
    description:
      - At most this many deployments in RV(deployments).
    type: int
    default: 50
  include_hosts:
    description:
      - Include hosts and lifecycle events in each RV(deployments) item (one more read per deployment).
    type: bool
    default: false
  last_successful:
    description:
      - Also return the last successful deployment of O(application) / O(deployment_group) as RV(last_successful).
    type: bool
    default: false
extends_documentation_fragment:
  - rollwright.deploy.attributes
  - rollwright.deploy.records
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
notes:
  - The AWS connection options are used only with O(backend=dynamodb).
"""

EXAMPLES = r"""
- name: Show one deployment with its hosts and events
  rollwright.deploy.deployment_info:
    deployment_id: d-ABC123XYZ
  delegate_to: localhost
  register: dep

- name: Last 10 deployments of web/prod, and who holds the group's lock
  rollwright.deploy.deployment_info:
    application: web
    deployment_group: prod
    limit: 10
  delegate_to: localhost
  register: history

- name: What a rollback would redeploy (shared DynamoDB records, e.g. on AWX)
  rollwright.deploy.deployment_info:
    backend: dynamodb
    dynamodb_table: rollwright-deployments
    region: eu-west-1
    application: web
    deployment_group: prod
    last_successful: true
  delegate_to: localhost
  register: last_good
"""

RETURN = r"""
deployment:
  description: The deployment named by O(deployment_id).
  returned: when O(deployment_id) is given
  type: dict
  contains:
    deployment_id:
      description: The id.
      type: str
      sample: d-ABC123XYZ
    application:
      description: The application.
      type: str
    deployment_group:
      description: The deployment group.
      type: str
    deployment_type:
      description: C(in_place), C(blue_green_ec2) or C(lambda).
      type: str
    status:
      description: C(Created), C(InProgress), C(Ready), C(Succeeded), C(Failed) or C(Stopped).
      type: str
    revision:
      description: The revision deployed (S3 bucket, key, version, ETag, or a controller path, and its SHA-256).
      type: dict
    configuration:
      description: The deployment configuration (name or dict).
      type: raw
    creator:
      description: C(user), C(rollback) or C(schedule).
      type: str
    rollback_of:
      description: The deployment this one rolls back.
      type: str
    rolled_back_by:
      description: The deployment that rolled this one back.
      type: str
    create_time:
      description: UTC ISO 8601.
      type: str
    start_time:
      description: UTC ISO 8601, when it went InProgress.
      type: str
    end_time:
      description: UTC ISO 8601, when it finished.
      type: str
    error:
      description: Why it failed or stopped.
      type: str
    started_by:
      description: Who started it, in words - C(AWX job 42 (deploy web) by alice) under AWX / Automation Controller,
        else C(user@host pid N) of the controller.
      type: str
    creator_identity:
      description:
        - Who started it - under AWX C(kind=awx) with C(job_id), C(job_template_id), C(job_template_name),
          C(job_launch_type), C(user_id), C(user_name), C(workflow_job_id), C(workflow_job_name), C(schedule_name),
          C(inventory_name), C(project_revision), C(host) (those AWX passed); else C(kind=local) with C(user),
          C(host), C(pid). Empty for records written before this field existed.
      type: dict
    hosts:
      description:
        - One item per host (target) with C(name), C(instance_id), C(status), C(lb_membership) (list of dicts),
          C(lb_restored) and C(events) (each C(name), C(status), C(start_time), C(end_time), C(scripts), C(message)).
      type: list
      elements: dict
    extra:
      description: Per-deployment-type state (blue/green fleets, Lambda alias weights).
      type: dict
    control:
      description:
        - Live status (only with O(deployment_id)) - C(controller_alive) (the group's lock is held by this deployment
          and its lease is not stale; false while a split-form blue/green deployment waits for approval),
          C(awaiting_approval) (true for such a deployment, whose lease is held by the record with no process
          running), C(lease) (C(owner), C(heartbeat_age), C(ttl), C(stale); null when it holds no
          lock), C(paused) (a pause request holds it now), C(pending_requests) (the open requests - C(Pending) or
          C(Acknowledged)) and C(requests) (all of them, oldest first - C(request_id), C(action), C(options),
          C(state), C(requested_by), C(requested_at), C(acknowledged_at), C(ended_at), C(handled_by), C(message)).
        - Requests are written by M(rollwright.deploy.deployment_control).
      type: dict
deployments:
  description: The history, newest first (same fields as RV(deployment); C(hosts) empty unless O(include_hosts)).
  returned: when O(application) is given
  type: list
  elements: dict
last_successful:
  description: The group's last successful deployment with its hosts, or null.
  returned: when O(last_successful=true)
  type: dict
lock:
  description: The deployment group's lock, or null when free.
  returned: when O(application) and O(deployment_group) are given
  type: dict
  contains:
    deployment_id:
      description: The deployment holding the lock.
      type: str
    owner:
      description: Who took it (C(user@host pid N)).
      type: str
    acquired_at:
      description: UTC ISO 8601.
      type: str
    heartbeat_at:
      description: UTC ISO 8601 of the last heartbeat.
      type: str
    ttl:
      description: Seconds without heartbeat after which the lock is stale.
      type: float
    stale:
      description: True when the holder stopped heartbeating (its controller probably died; run recovery).
      type: bool
    heartbeat_age:
      description: Seconds since the last heartbeat.
      type: float
"""

from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import control_requests
from ansible_collections.rollwright.deploy.plugins.module_utils.aws.module import RollwrightAWSModule
from ansible_collections.rollwright.deploy.plugins.module_utils.records import (
    DEPLOYMENT_STATUSES,
    open_existing_store,
    store_argument_spec,
)
from ansible_collections.rollwright.deploy.plugins.module_utils.records.sqlite import default_path


def read(module):
    p = module.params
    result = dict(changed=False)
    store = open_existing_store(p, module.aws_client)
    if store is None:  # read-only: no SQLite file means no records yet
        if p["deployment_id"]:
            path = p["sqlite_path"] or str(default_path())
            module.fail_json(msg=f"deployment_id: no deployment {p['deployment_id']} in the records ({path} does not exist)")
        result["deployments"] = []
        if p["deployment_group"]:
            result["lock"] = None
        if p["last_successful"]:
            result["last_successful"] = None
        return result
    if p["deployment_id"]:
        record = store.get(p["deployment_id"])
        result["deployment"] = record.to_dict()
        result["deployment"]["control"] = control_requests.status(store, record)
    if p["application"]:
        records = store.list(p["application"], p["deployment_group"], status=p["status"], limit=p["limit"],
                             include_hosts=p["include_hosts"])
        result["deployments"] = [r.to_dict() for r in records]
        if p["deployment_group"]:
            info = store.get_lock(p["application"], p["deployment_group"])
            result["lock"] = info.to_dict() if info else None
        if p["last_successful"]:
            last = store.last_successful(p["application"], p["deployment_group"])
            result["last_successful"] = last.to_dict() if last else None
    return result


def main():
    argument_spec = dict(
        store_argument_spec(),
        deployment_id=dict(type="str"),
        application=dict(type="str"),
        deployment_group=dict(type="str"),
        status=dict(type="str", choices=list(DEPLOYMENT_STATUSES)),
        limit=dict(type="int", default=50),
        include_hosts=dict(type="bool", default=False),
        last_successful=dict(type="bool", default=False),
    )
    module = RollwrightAWSModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_one_of=[("deployment_id", "application")],
        required_if=[("last_successful", True, ("application", "deployment_group"))],
    )
    table = module.params["dynamodb_table"]
    result = module.run_or_fail(f"reading deployment records from DynamoDB table {table} failed", read, module)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
