# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: deployment_control
short_description: Ask a running deployment to stop, promote, pause or resume
version_added: 0.2.0
description:
  - Writes a control request next to the deployment's record (its own row or item, so it never overwrites what
    the running controller writes). The controller honours it at its next safe point and marks it C(Acknowledged),
    then C(Done) (or C(Refused)); C(rollwright.deploy.recover) honours it when the controller is gone.
  - C(stop) - in-place - finishes the batch in progress (its hosts back in their load balancers), starts no other
    and ends C(Stopped); with I(rollback=true) it then redeploys the last successful revision to the hosts that got
    the new one. Lambda - the alias goes back to the current version, status C(Stopped).
  - C(promote) - Lambda - skips the remaining traffic steps and goes to 100 % now (then the normal finish,
    AfterAllowTraffic hook included). Not for in-place deployments.
  - C(pause) - holds before the next batch (in-place) or the next traffic step (Lambda), with the lock kept
    renewed, for at most I(max_pause) seconds, after which the deployment stops. C(resume) ends the pause.
  - Refuses, naming why, what does not apply - a deployment that already ended, an action its type does not take,
    a resume of a deployment that is not paused, a pause of one already paused, anything after a pending stop.
  - This is an action plugin that runs on the controller. The C(rollwright.deploy.control) playbook wraps it.
author:
  - Rollwright maintainers (@rollwright)
options:
  action:
    description: What to ask for.
    type: str
    required: true
    choices: [stop, promote, pause, resume]
  deployment_id:
    description: The deployment. Default - the running deployment of I(application) and I(deployment_group).
    type: str
  application:
    description: The application name. Required unless I(deployment_id) is given.
    type: str
  deployment_group:
    description: The deployment group; defaults to the application name.
    type: str
  rollback:
    description: With I(action=stop) on an in-place deployment - also redeploy the last successful revision.
    type: bool
    default: false
  max_pause:
    description: With I(action=pause) - seconds after which a pause that was not resumed stops the deployment.
    type: float
    default: 3600
  wait:
    description:
      - Wait until the controller (or recovery) has handled the request - C(Done) or C(Refused) - for at most
        I(wait_timeout) seconds. A pause counts as handled once it is C(Acknowledged) (the deployment holds).
    type: bool
    default: false
  wait_timeout:
    description: Seconds to wait with I(wait=true); the task fails when the request is still open then.
    type: float
    default: 600
extends_documentation_fragment:
  - rollwright.deploy.attributes
  - rollwright.deploy.attributes.action
  - rollwright.deploy.records
  - amazon.aws.common.modules
  - amazon.aws.region.modules
attributes:
  check_mode:
    support: full
    details: Checks that the request applies and reports it; writes nothing.
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Stop the running deployment of web/prod and roll its hosts back
  rollwright.deploy.deployment_control:
    action: stop
    rollback: true
    application: web
    deployment_group: prod

- name: Promote a Lambda shift now, records in DynamoDB
  rollwright.deploy.deployment_control:
    action: promote
    deployment_id: d-ABC123XYZ
    backend: dynamodb
    dynamodb_table: rollwright-deployments
    wait: true

- name: Pause before the next batch for at most 30 minutes
  rollwright.deploy.deployment_control:
    action: pause
    max_pause: 1800
    application: web
"""

RETURN = r"""
deployment_id:
  description: The deployment the request is for.
  returned: always
  type: str
  sample: d-ABC123XYZ
deployment_type:
  description: Its type (C(in_place), C(lambda), C(blue_green_ec2)).
  returned: always
  type: str
request:
  description:
    - The request - C(request_id) (null in check mode), C(action), C(options), C(state) (C(Pending),
      C(Acknowledged), C(Done), C(Refused)), C(requested_by), C(requested_at), C(acknowledged_at), C(ended_at),
      C(handled_by) (C(controller) or C(recover)), C(message).
  returned: always
  type: dict
controller_alive:
  description:
    - Whether the deployment's controller holds the group's lock with a lease that is not stale.
    - False for a split-form blue/green deployment waiting for approval, whose lease is held by the record with no
      process behind it.
  returned: always
  type: bool
message:
  description: One line for a person.
  returned: always
  type: str
"""
