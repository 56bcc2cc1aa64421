# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: inplace_step
short_description: Controller-side steps of an in-place rolling deployment
version_added: 0.1.0
description:
  - Runs one controller-side step of an in-place deployment and returns the deployment state as the
    C(_rollwright) fact, which the next step takes.
  - C(start) validates the inputs, fetches and verifies the revision (S3 by version id and ETag, or a
    controller path), validates its appspec, orders the hosts (unhealthy, unknown revision, old
    revision, current revision), creates the deployment record and takes the deployment group's lock.
  - C(plan) judges the hosts of the previous batch and picks the next batch by the minimum healthy
    hosts rule, or finishes the deployment (status, lock release, summary).
  - C(block) is BlockTraffic, C(allow) is AllowTraffic (see M(rollwright.deploy.lb_membership)).
  - C(batch) is a whole batch in one task - pick it (as C(plan), among C(within)), run BeforeBlockTraffic on the hosts
    that need it, BlockTraffic, the events from ApplicationStop to BeforeAllowTraffic, AllowTraffic, the events after
    AllowTraffic, and judge it. The step calls the batch's hosts itself, in parallel, each through its own Ansible
    connection and variables, with M(rollwright.deploy.host_lifecycle) and C(host_args); so a batch costs one task.
  - C(stop) ends the deployment as Stopped and releases the lock.
  - C(staged) judges the staging calls (M(rollwright.deploy.host_lifecycle) with C(staging=stage) on every host of
    C(stage_hosts), before the first batch). With C(host_args) it makes those calls itself first, in parallel.
    When one host could not stage, the deployment fails before any host leaves its load balancer, naming every
    such host and why; no automatic rollback is due, as nothing changed.
  - C(rollback) starts a rollback - a new deployment (creator C(rollback), linked both ways to the deployment it
    rolls back) of an earlier deployment's revision (S3 by version id and ETag, or the controller's cached bundle,
    SHA-256 checked), which puts back into their recorded load-balancer membership the hosts the rolled-back
    deployment left out.
  - The first step starts a detached lease keeper that renews the group lock while ansible-playbook runs and marks
    the deployment Stopped if ansible-playbook dies (see docs/operations.md).
  - CloudWatch alarms (C(auto_rollback.alarms)) are read before the start (one in ALARM refuses it) and at every
    step (one in ALARM stops the deployment); the result says whether an automatic rollback is due.
  - This is an action plugin that runs on the controller and prints progress while it waits. It is the
    engine of the P(rollwright.deploy.inplace#role) role; use the role rather than calling it directly.
author:
  - Rollwright maintainers (@rollwright)
options:
  step:
    description: The step to run.
    type: str
    required: true
    choices: [start, rollback, plan, block, allow, stop, staged, batch]
  state:
    description: The deployment state returned by the previous step (the C(_rollwright) fact). Required for every step but C(start).
    type: dict
  application:
    description: The application name (C(start)).
    type: str
  deployment_group:
    description: The deployment group name (C(start)); defaults to the application name.
    type: str
  hosts:
    description: The inventory hostnames to deploy to (C(start)).
    type: list
    elements: str
  revision:
    description:
      - The revision to deploy (C(start)), as in C(rollwright_revision) - a dict with C(s3) or C(path), or a string
        C(s3://bucket/key?versionId=V&etag=E) or a controller path.
    type: raw
  deployment_config:
    description: >-
      A predefined configuration name or C({minimum_healthy_hosts: {type, value}}).
    type: raw
  load_balancer:
    description: C({target_group_arns, classic_elb_names}); absent means no traffic events.
    type: raw
  target_group_arns:
    description: Extra target group ARNs (list or comma-separated string, for surveys).
    type: raw
  classic_elb_names:
    description: Extra classic ELB names (list or comma-separated string, for surveys).
    type: raw
  instance_id_var:
    description: The host variable that holds each host's EC2 instance id; C(instance_id) is the fallback.
    type: str
    default: ec2_instance_id
  drain_timeout:
    description: Seconds to wait for deregistration to finish; default is each target group's deregistration delay plus a margin.
    type: float
  healthy_timeout:
    description: Seconds to wait for re-registered targets to become healthy.
    type: float
  creator:
    description: Who creates the deployment.
    type: str
    choices: [user, rollback, schedule]
    default: user
  trigger:
    description:
      - >-
        What triggered the deployment (C(start)), kept in the record as C(extra.trigger), for example
        C({event: s3_upload, bucket, key, version_id}) or C({event: asg_launch, group, instance_id}).
      - A triggered deployment whose revision cannot be fetched or whose appspec is invalid is still recorded, as
        Failed with the reason, and nothing is touched (nobody watches an event-driven run).
    type: dict
  rollback_of:
    description: The deployment id this deployment rolls back (C(rollback) - default the group's newest deployment).
    type: str
  force_lock:
    description: Take over a stale lock of the deployment group (run recovery first when you can).
    type: bool
    default: false
  within:
    description:
      - The hosts the next batch may be picked from (C(plan)), those of the Ansible play batch the step runs
        for, so that a C(serial) play's batch deploys its own hosts only. Omitted, any waiting host may be picked.
      - With an empty list the step only judges the previous batch, and finishes the deployment when no host waits.
    type: list
    elements: str
  host_args:
    description:
      - C(batch) and C(staged) - the options of M(rollwright.deploy.host_lifecycle) every host call takes (application,
        deployment group, state root, hook options, C(bundle_transfer), C(presign)); the step adds the deployment, the
        revision, the events and where the bundle comes from.
      - C(start) and C(rollback) - the step reads each host's deployment state itself, with
        M(rollwright.deploy.host_deployment_info) on every host in parallel (at most O(forks) at once), taking its
        C(application), C(deployment_group) and C(state_root) from here (the first two default to the step's own);
        without O(host_args), O(host_results) names the results of such a task. A rollback reads the hosts as they
        are then, after the deployment it rolls back.
      - C(start) and C(rollback) in check mode - with O(host_args) the step also asks every host what it would run,
        with M(rollwright.deploy.host_lifecycle) in check mode (its other options, such as C(file_exists_behavior), from
        here), and adds each host's events and scripts (and with C(--diff) its file changes) to the plan; without it,
        C(plan) adds those of a task whose results O(host_results) names.
    type: dict
  read_hosts:
    description:
      - C(start) - when the hosts' deployment states (last successful revision, its hooks) are read.
      - C(start) - now, by this step (O(host_args) or O(host_results)), before anything else.
      - C(staging) - in the staging calls (M(rollwright.deploy.host_lifecycle) with C(report_state=true)), one call per
        host for both; this step then plans from the load balancer's health alone, and C(staged) plans again with
        the states (the order - unknown revision, old, current -, the hosts already on the revision, which hosts
        BeforeBlockTraffic calls) before any host leaves its load balancer, discards the staged copies of hosts
        already on the revision (and aborts their sessions), and starts the first batch's host sessions unless
        the staging calls started them. The steps after C(start) refuse its
        state until C(staged) has read the hosts. The role uses it when C(rollwright_stage) is on.
      - In check mode the hosts are read now whatever this says (a dry run stages nothing). A C(rollback) reads
        them now.
    type: str
    choices: [start, staging]
    default: start
  last:
    description: C(batch) - the last planned batch; after it the deployment is judged (and finished when no host waits).
    type: bool
    default: false
  all_batches:
    description:
      - C(batch) - deploy every batch left in this one task, as a C(serial) play would one task per batch - the
        planned batches in order (O(within) is not used), then any host they left, one batch at a time by the
        minimum-healthy-hosts rule - and judge the last. Batches, their order, the host sessions started ahead, the
        record and the failure rules are the same.
      - What changes is what Ansible sees - one task for the whole rollout instead of one per batch, so the job log
        shows each batch as progress lines of that task, and no task per batch is queued, forked and returned
        (about a tenth of a second per batch, most of it hidden in the registration wait by RV(handed_over)
        otherwise). The result's C(seconds) adds up the batches' phases; C(batch_seconds) keeps each batch's.
    type: bool
    default: false
  forks:
    description: C(batch) and C(staged) - at most this many hosts are called at once (default the run's C(--forks)).
    type: int
  host_sessions:
    description:
      - C(batch) behind a load balancer - run each host's event groups of the batch (BeforeBlockTraffic; AfterBlockTraffic
        to BeforeAllowTraffic; AfterAllowTraffic) in one run of the host engine, a host session (see
        M(rollwright.deploy.host_lifecycle)'s O(rollwright.deploy.host_lifecycle#module:session)), instead of a module run per group. The engine
        starts once per host and batch and waits before each group for the controller's word; each group costs one
        shell command on the host. Scripts, their order, the events recorded and the failure rules are the same,
        plus one - a gate that hears nothing from the controller for two minutes gives up.
      - A batch starts the next planned batch's sessions while its own hosts become healthy again, and C(staged)
        starts the first batch's in the same call that stages their revision (with O(read_hosts=staging) the first
        batch planned before the hosts were read; those sessions hold BeforeBlockTraffic wherever it may be due,
        and run no script for it where none is due); the batch then takes them over. A session started ahead runs
        nothing before its batch says so.
      - Used when the batch has at most O(forks) hosts, every host is reached with the C(ssh) or C(local)
        connection, the state root is an absolute path without C(~) or C($), and every unstaged host gets its
        bundle in the call (not through a presigned URL, not over 1 MiB); otherwise each group is a call of its
        own, as before.
    type: bool
    default: true
  reason:
    description: Why the deployment is stopped (C(stop)).
    type: str
  lock_ttl:
    description: Seconds without a heartbeat after which the group lock is stale; the lease keeper beats every C(ttl/6) s (at most 10).
    type: float
    default: 60
  auto_rollback:
    description: C({on_failure, on_alarm, alarms, ignore_poll_alarm_failure}) (up to 10 CloudWatch alarm names).
    type: raw
  auto_rollback_on_failure:
    description: Survey form of C(auto_rollback.on_failure); empty means not set.
    type: raw
  auto_rollback_on_alarm:
    description: Survey form of C(auto_rollback.on_alarm); empty means not set.
    type: raw
  auto_rollback_alarms:
    description: Survey form of C(auto_rollback.alarms), comma-separated (added to the dict's).
    type: raw
  auto_rollback_ignore_poll_alarm_failure:
    description: Survey form of C(auto_rollback.ignore_poll_alarm_failure); empty means not set.
    type: raw
  rollback_to:
    description: C(rollback) - the deployment whose revision to deploy again (default - see C(rollback_auto)).
    type: str
  rollback_auto:
    description:
      - C(rollback) - true for the automatic rollback of C(rollback_of) (the group's last successful revision, to the hosts
        it reached); false for a rollback on request (the newest successful deployment other than the rolled-back one,
        to the given hosts).
    type: bool
    default: false
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
      - C(step=start) and C(step=rollback) in check mode is a dry run - it reads the current state and returns the plan as the
        state (C(dry_run=true), done) and its text (RV(summary_text)), creating no record and taking no lock.
      - The later steps do nothing with a dry-run state, and refuse a real deployment's state in check mode.
  diff_mode:
    support: full
    details:
      - With C(step=plan) on a dry-run state, each host's file changes reported by M(rollwright.deploy.host_lifecycle)
        in check mode are added to the plan.
"""

EXAMPLES = r"""
- name: Start an in-place deployment (the inplace role does this for you)
  rollwright.deploy.inplace_step:
    step: start
    application: web
    hosts: "{{ ansible_play_hosts }}"
    revision: s3://releases/web-1.2.0.zip
    deployment_config: CodeDeployDefault.HalfAtATime
  run_once: true
  delegate_to: localhost
"""

RETURN = r"""
deployment_id:
  description: The deployment id.
  returned: always
  type: str
  sample: d-4HXY2KQ7A
batch:
  description: The hosts of the batch now in progress (empty when done).
  returned: always
  type: list
  elements: str
done:
  description: Whether the deployment has finished.
  returned: always
  type: bool
seconds:
  description:
    - C(batch) - where the batch's time went, by phase - C(plan) (pick the batch), C(pre_block), C(main) and C(post_allow)
      (the host calls), C(block) and C(allow) (the load balancer's changes and waits), C(judge), C(finish).
    - C(start) and C(rollback) - C(read_hosts) (every host's deployment state), C(revision) (fetch, check, appspec),
      C(record) (record, lock, load-balancer preflight).
    - C(staged) - C(stage) (the staging calls to every host); with O(read_hosts=staging) also C(plan) (planned again
      with the hosts' states) and C(sessions) (the first batch's host sessions started).
  returned: with step=batch, start, rollback and staged
  type: dict
  sample: {"plan": 0.004, "pre_block": 0.41, "block": 2.06, "main": 0.93, "allow": 2.2, "post_allow": 0.38, "judge": 0.002}
host_results:
  description:
    - C(batch) - what each host call reported, by call (C(pre_block), C(main), C(post_allow)) and host - C(changed),
      C(failed), C(lifecycle_failed), C(unreachable), C(msg) and the C(events) the host ran.
  returned: with step=batch, when a batch ran
  type: dict
handed_over:
  description:
    - C(batch) behind a load balancer, with another planned batch after it (one task per batch) - this batch's task
      ended once its hosts were registered again, and handed them over to the next batch's task, which waits until
      they are healthy, runs their AfterAllowTraffic and judges the batch before its own hosts leave (Ansible's move
      to the next task then overlaps the registration). C(batch_number), C(hosts) (the hosts registered again),
      C(time) (UTC, as in the record).
    - The state returned keeps what the next step needs; only O(step=batch) takes it over (O(step=stop) ends it, the
      other steps refuse it).
  returned: with step=batch, when the batch handed its hosts over
  type: dict
  sample: {"batch_number": 1, "hosts": ["web1"], "time": "2026-11-28T05:06:05.120344Z"}
took_over:
  description:
    - C(batch) - the batch the step before handed over, finished by this step before its own batch - C(batch_number)
      and C(hosts). Its hosts' AfterAllowTraffic results are in RV(host_results) (C(post_allow)).
  returned: with step=batch, when the step before handed a batch over
  type: dict
  sample: {"batch_number": 1, "hosts": ["web1"]}
started_ahead:
  description:
    - C(batch) in host sessions - the next planned batch's host sessions this batch started while its own hosts became
      healthy again (they wait at their first gate until that batch's turn) - C(batch_number), C(hosts), and
      C(time), when the controller started them (UTC, as in the record). One entry per batch that started any.
  returned: with step=batch, when the batch started the next one's sessions; with O(all_batches), always (empty when none
    did)
  type: list
  elements: dict
  sample: [{"batch_number": 2, "hosts": ["web2"], "time": "2026-11-28T05:06:05.120344Z"}]
rollwright_deployment:
  description: The deployment summary (id, revision, status, per host status, failed event and event durations).
  returned: when done
  type: dict
summary_text:
  description: The summary as a text table.
  returned: when done
  type: str
"""
