# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: deployment_recover
short_description: Finish a deployment whose controller died - in-place, blue/green EC2 (Lambda - the command to run)
version_added: 0.1.0
description:
  - Picks the deployment to recover - I(deployment_id), else the one that holds the deployment group's lock, else the
    group's newest deployment that has not ended (or an in-place one C(Stopped) with hosts still out of their load
    balancers) - and finishes it from its record, as its C(deployment_type) requires. Then releases the group's lock.
  - C(in_place) - registers every host it took out again into exactly the membership recorded before
    deregistration (with the load-balancer configuration recorded at its start, HAProxy sockets included), waits
    until they are healthy and marks the deployment C(Stopped). Hosts whose install failed (a C(Failed) event from
    C(ApplicationStop) to C(ValidateService)) stay out and are reported, as the deployment left them.
  - C(blue_green_ec2) - up to the reroute, rolls back (originals registered and healthy first, replacement fleet torn
    down, status C(Failed)); while retiring, completes the retirement (status C(Succeeded)); a finished deployment is
    left alone. The same as C(rollwright.deploy.bluegreen_step) with C(step=recover).
  - C(lambda) - fails with the exact C(ansible-playbook rollwright.deploy.lambda ... -e rollwright_lambda_recover=true
    -e rollwright_force_lock=true) command that recovers it (its recovery is part of the Lambda playbook).
  - Refuses while the deployment looks alive (its lock renewed within its ttl and its record not ended), and
    while another deployment holds the group's lock, unless I(force=true).
  - Safe to run twice; the second run changes nothing.
  - This is an action plugin that runs on the controller. The C(rollwright.deploy.recover) playbook wraps it.
author:
  - Rollwright maintainers (@rollwright)
options:
  application:
    description: The application name. Required unless I(deployment_id) is given.
    type: str
  deployment_group:
    description: The deployment group; defaults to the application name.
    type: str
  deployment_id:
    description:
      - The deployment to recover, of any type. Default - the group's lock holder, else the newest deployment that has
        not ended (C(InProgress), or C(Ready) for blue/green) or is an in-place one C(Stopped) with hosts out of their
        load balancers.
    type: str
  backend:
    description: Where records and locks live.
    type: str
    choices: [sqlite, dynamodb]
    default: sqlite
  sqlite_path:
    description: The SQLite file (default C(~/.local/state/rollwright/deployments.sqlite3)).
    type: path
  dynamodb_table:
    description: The DynamoDB table.
    type: str
  load_balancer:
    description:
      - Overrides the load-balancer configuration an in-place deployment recorded at its start
        (C(extra.inplace.load_balancer) - target groups, classic ELBs, HAProxy instances and backends). Not needed
        normally; give it when the HAProxy runtime API moved (another socket path or address) since the deployment,
        or for a record written before the configuration was recorded. ELBv2 and classic ELB memberships are
        restored from the record alone.
    type: raw
  healthy_timeout:
    description: Seconds to wait for the restored hosts to become healthy.
    type: float
    default: 300
  force:
    description:
      - Recover even though the deployment's lock looks alive or another deployment holds the group's lock.
      - A blue/green deployment keeps its lock for hours (no lease keeper); after its controller died, pass C(true).
    type: bool
    default: false
extends_documentation_fragment:
  - rollwright.deploy.attributes
  - rollwright.deploy.attributes.action
  - rollwright.deploy.step.aws
  - amazon.aws.common.modules
  - amazon.aws.region.modules
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Recover whatever a dead controller left in web/prod
  rollwright.deploy.deployment_recover:
    application: web
    deployment_group: prod

- name: Recover a blue/green deployment whose AWX job was killed (its lock is still fresh)
  rollwright.deploy.deployment_recover:
    application: web
    deployment_group: prod
    force: true
    region: eu-west-1

- name: Recover one deployment, records in DynamoDB
  rollwright.deploy.deployment_recover:
    application: web
    deployment_group: prod
    deployment_id: d-ABC123XYZ
    backend: dynamodb
    dynamodb_table: rollwright-deployments
"""

RETURN = r"""
deployment_id:
  description: The deployment looked at (null when there was nothing to recover).
  returned: always
  type: str
  sample: d-ABC123XYZ
deployment_type:
  description: The recovered deployment's type (null when there was nothing to recover).
  returned: always
  type: str
  sample: in_place
plan:
  description:
    - What recovery decided. In-place - C(restore) (host -> memberships), C(left_out) (host -> why), C(interrupted),
      C(lock), C(mark_stopped). Blue/green - C(phase), C(action) (C(rolled_back), C(retired) or C(none)), C(lock),
      C(refused). Lambda - C(refused) (the command to run).
  returned: when a deployment was found
  type: dict
report:
  description:
    - What was done. In-place - C(restored), C(left_out), C(unhealthy), C(status), C(lock_released), C(hosts).
      Blue/green - C(action), C(phase_before), C(status_before), C(status), C(restored), C(lock_released).
  returned: when something was done
  type: dict
message:
  description: One line for a person.
  returned: always
  type: str
"""
