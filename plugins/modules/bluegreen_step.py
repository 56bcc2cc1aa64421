#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: bluegreen_step
short_description: Controller-side steps of an EC2 blue/green deployment
version_added: 0.1.0
description:
  - Runs one controller-side step of an EC2 blue/green deployment and returns the deployment state as the
    C(_bluegreen) fact, which the next step takes. The playbook C(rollwright.deploy.bluegreen_ec2)
    (role P(rollwright.deploy.bluegreen_ec2#role)) calls the steps in order; use it rather than calling
    this directly, except for O(step=recover) and O(step=continue).
  - C(start) validates the inputs, fetches and verifies the revision, finds the original fleet (inventory hosts,
    tags, an Auto Scaling group, or the load balancer's current members) and records its load-balancer
    membership, creates the deployment record (type C(blue_green_ec2)) and takes the deployment group's lock.
    Nothing is changed in AWS.
  - C(provision) creates the replacement fleet (a copy of an Auto Scaling group named C(<original>-<deployment id>),
    instances from a launch template, or existing instances chosen by tags), waits until every instance runs, and
    returns the hosts to add to the run (RV(new_hosts)). The group name is recorded before the group is created and
    every instance it launches carries the tag C(rollwright:deployment-id).
  - C(ready) judges ApplicationStop .. ValidateService on the replacements. Any failure tears the replacement
    fleet down and ends the deployment C(Failed). With C(ready.action_on_timeout=stop) the deployment is C(Ready)
    and waits for O(step=continue); without one in time it is torn down and ends C(Stopped).
    With C(ready.split=true) (the split form, for an AWX approval node between two jobs) it does not wait - it hands
    the deployment over in C(Ready) and the step is done - the group's lock is taken over with a new token and a ttl
    of the approval window (C(ready.wait)), a lease held by the record that needs no live process, and what the
    next job needs is written to the record.
  - C(resume) (split form) takes a deployment handed over in C(Ready) back - its lease is taken over with a new token
    (compare-and-swap, so of two approving jobs one wins) - and returns its state and the hosts to add; the
    playbook C(rollwright.deploy.continue) then reroutes and finishes it. Refused once the approval window has passed.
  - C(reroute) judges BeforeAllowTraffic / BeforeBlockTraffic, then moves the traffic - in C(targets) mode a batch
    of replacements is registered and healthy before a batch of originals is deregistered (batches of
    hosts minus the minimum healthy hosts); in C(listener) mode the replacements are registered in the idle target
    group and one listener (or rule) is swapped to it. If even one original fails to deregister, the deployment fails.
  - C(finish) judges AfterAllowTraffic / AfterBlockTraffic and retires the originals (C(terminate) after the wait,
    or C(keep_alive)); a failure before that restores the originals and tears the replacements down.
  - C(abort) rolls back after an unexpected error, from the record. C(recover) does the same for a deployment whose
    controller died (before or during the reroute - originals registered and healthy again before the replacements
    are deregistered, replacement fleet torn down, status C(Failed); while retiring - the retirement is completed,
    status C(Succeeded)), then releases the lock.
  - C(continue) lets a deployment waiting in C(Ready) go on. A continue that comes before the replacement fleet is
    C(Ready) (or before the deployment has taken its group's lock) waits for C(Ready) up to O(wait), then fails
    recording nothing - it approves an installed and validated fleet only.
  - This is an action plugin that runs on the controller and prints progress while it waits.
author:
  - Rollwright maintainers (@rollwright)
options:
  step:
    description: The step to run.
    type: str
    required: true
    choices: [start, provision, ready, resume, reroute, finish, abort, recover, continue]
  state:
    description: The deployment state returned by the previous step (the C(_bluegreen) fact); every step but C(start), C(resume), C(recover), C(continue).
    type: dict
  deployment_id:
    description:
      - The deployment to recover (C(recover)), to continue (C(continue)) or to resume (C(resume), required).
      - Or give O(application) and O(deployment_group) - the deployment that holds the group's lock.
    type: str
  application:
    description: The application name (C(start); C(continue) without O(deployment_id)).
    type: str
  deployment_group:
    description: The deployment group name; defaults to the application name.
    type: str
  revision:
    description: The revision (C(start)), as in C(rollwright_revision).
    type: raw
  deployment_config:
    description:
      - A predefined configuration name, C(HOST_COUNT:N), C(FLEET_PERCENT:N), C(N%) or C({minimum_healthy_hosts{type, value}}).
      - It applies to the replacement fleet.
    type: raw
  load_balancer:
    description: C({target_group_arns, classic_elb_names}); in listener mode exactly two target groups (blue and green, in any order).
    type: raw
  target_group_arns:
    description: Extra target group ARNs (list or comma-separated string).
    type: raw
  classic_elb_names:
    description: Extra classic ELB names (list or comma-separated string).
    type: raw
  instance_id_var:
    description: The host variable that holds each inventory host's EC2 instance id; C(instance_id) is the fallback.
    type: str
    default: ec2_instance_id
  replacement:
    description:
      - The replacement fleet as a dict - C({copy_auto_scaling_group}), C({launch_template{name|id, version}, count, subnets})
        or C({instances{tags}}).
    type: dict
  copy_auto_scaling_group:
    description: Scalar form - the Auto Scaling group to copy.
    type: str
  launch_template:
    description: Scalar form - a launch template name or C(lt-) id.
    type: str
  launch_template_version:
    description: The launch template version (a number, C($Latest) or C($Default), the default).
    type: str
  count:
    description: How many instances to launch from the launch template.
    type: raw
  subnets:
    description: Subnet ids for the launch template's instances (list or comma-separated), used round robin.
    type: raw
  instance_tags:
    description: Scalar form of C(instances.tags) - C(key=value,key2=value2).
    type: raw
  original_fleet:
    description:
      - How to find the original fleet - C({hosts}), C({tags}) or C({auto_scaling_group}).
      - Default - the copied group, else the load balancer's current members.
    type: dict
  original_hosts:
    description: Scalar form - inventory host names (comma-separated).
    type: raw
  original_tags:
    description: Scalar form - C(key=value,...).
    type: raw
  original_auto_scaling_group:
    description: Scalar form - the Auto Scaling group of the original fleet.
    type: str
  reroute:
    description: C({mode, listener_arn, rule_arn}).
    type: dict
  reroute_mode:
    description: C(targets) (register the replacements, then deregister the originals, batch by batch) or C(listener) (swap one listener or rule).
    type: str
    choices: [targets, listener]
    default: targets
  listener_arn:
    description: The ALB listener to swap (listener mode).
    type: str
  listener_rule_arn:
    description: Swap this rule of the listener instead of its default actions.
    type: str
  ready:
    description: C({action_on_timeout, wait, split}).
    type: dict
  ready_action:
    description: C(continue) reroutes as soon as install and validation pass; C(stop) waits for a continue.
    type: str
    choices: [continue, stop]
    default: continue
  ready_wait:
    description: How long C(stop) waits for a continue (C(90s), C(30m), C(1h)); in the split form, the approval window.
    type: raw
    default: 30m
  ready_split:
    description:
      - The split form of C(stop) - end the job in C(Ready) with the lock held by the record for the approval window;
        a second job approves (C(rollwright.deploy.continue), which reroutes and finishes) or denies
        (C(rollwright.deploy.stop) - the replacement fleet is torn down, status C(Stopped)).
      - Needs O(ready_action=stop).
    type: bool
    default: false
  wait:
    description: C(continue) - how long to wait for the deployment to be C(Ready) before refusing (C(90s), C(15m), seconds).
    type: raw
    default: 15m
  original:
    description: C({action, wait, delete_auto_scaling_group}).
    type: dict
  original_action:
    description: C(terminate) the originals after the wait, or C(keep_alive) (deregistered, left running).
    type: str
    choices: [terminate, keep_alive]
    default: terminate
  original_wait:
    description: How long to wait before terminating the originals.
    type: raw
    default: 1h
  delete_original_auto_scaling_group:
    description: With C(terminate) and an original Auto Scaling group, delete the group (default - scale it to 0 and keep it).
    type: bool
    default: false
  host_vars:
    description: Connection variables for hosts added during the run (C(provision), C(resume)); default - copied from the first original host in the inventory.
    type: dict
  drain_timeout:
    description: Seconds to wait for deregistration; default each group's deregistration delay plus a margin.
    type: raw
  healthy_timeout:
    description: Seconds to wait for registered targets to become healthy.
    type: raw
    default: 300
  provision_timeout:
    description: Seconds to wait for the replacement instances to run.
    type: raw
    default: 600
  creator:
    description: Who creates the deployment (C(start)), or who continues it (C(continue)).
    type: str
  rollback_of:
    description: The deployment id this deployment rolls back.
    type: str
  force_lock:
    description: C(start) - take over a stale lock. C(recover) - recover even though the lock's heartbeat is recent.
    type: bool
    default: false
  connect_results:
    description:
      - C(ready) - the name of the variable each replacement host registered its wait for SSH under; a host that did not
        answer fails with that reason. Omitted, the name the role registers (C(_bluegreen_r_connect)).
    type: str
  reason:
    description: Why the deployment is aborted (C(abort)).
    type: str
extends_documentation_fragment:
  - rollwright.deploy.attributes
  - rollwright.deploy.attributes.action
  - rollwright.deploy.step
  - rollwright.deploy.step.aws
  - amazon.aws.common.modules
  - amazon.aws.region.modules
attributes:
  check_mode:
    support: full
    details:
      - C(step=start) in check mode is a dry run - it reads the current state and returns the plan as the
        state (C(dry_run=true), done) and its text (RV(summary_text)), creating no record and taking no lock, launching nothing.
      - The later steps do nothing with a dry-run state, and refuse a real deployment's state in check mode.
      - C(step=recover) in check mode returns the recovery plan and changes nothing; C(step=continue) is refused.
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Recover a blue/green deployment whose controller died
  rollwright.deploy.bluegreen_step:
    step: recover
    deployment_id: d-ABCDEFGHI
    record:
      backend: dynamodb
      dynamodb_table: rollwright-deployments
  delegate_to: localhost

- name: Let a deployment that waits in Ready reroute traffic
  rollwright.deploy.bluegreen_step:
    step: continue
    application: web
    deployment_group: prod
  delegate_to: localhost
"""

RETURN = r"""
deployment_id:
  description: The deployment id.
  returned: always
  type: str
done:
  description: Whether the deployment ended with this step.
  returned: steps that take a state
  type: bool
new_hosts:
  description: (in the C(_bluegreen) fact after C(provision)) hosts to add - C(name), C(address), C(instance_id), C(group), C(vars).
  returned: never
  type: list
  elements: dict
rollwright_deployment:
  description: The deployment summary (hosts, events, status, the blue/green fleets) once the deployment ended.
  returned: when done
  type: dict
summary_text:
  description: The summary as a plain-text table.
  returned: when done
  type: str
recovery:
  description: What C(recover) did - C(action) (C(rolled_back), C(retired), C(none)), C(phase_before), C(status), C(restored).
  returned: step=recover
  type: dict
continued:
  description: What C(continue) did - C(deployment_id), C(status), C(phase), C(changed), C(continue) (who and when),
    C(split) (handed over in the split form - the same playbook resumes it next).
  returned: step=continue
  type: dict
"""
