#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: lambda_deploy
short_description: Lambda blue/green deployment - shift an alias to a new version by canary, linear or all-at-once steps
version_added: 0.1.0
description:
  - Does what an AWS CodeDeploy Lambda deployment does, without CodeDeploy. Optionally updates the
    function's code (SHA256 checked) and publishes C($LATEST), runs the C(BeforeAllowTraffic) hook,
    shifts the alias's traffic from the current version to the target version on schedule
    (C(RoutingConfig.AdditionalVersionWeights)), promotes the alias to the target version, and runs the
    C(AfterAllowTraffic) hook.
  - CloudWatch alarms are polled every O(poll_interval) seconds while traffic shifts. An alarm in
    C(ALARM) puts the alias back on the current version at once and the deployment ends C(Stopped).
    An alarm already in C(ALARM) before the start refuses the deployment.
  - A failed C(BeforeAllowTraffic) hook moves no traffic; a failed C(AfterAllowTraffic) hook puts the
    alias back on the current version. Either way the task fails with RV(status=Failed).
  - Every step is applied within about a second of its planned time, measured on a monotonic clock
    from the start of AllowTraffic; RV(steps) reports planned and actual times.
  - The task runs on the controller through the action plugin of the same name, which prints each
    step as it happens (time, weight on the new version, alarms' state). Delegated to another host
    it runs as a plain module there (no live progress).
  - B(Hook contract.) Hooks are Lambda functions invoked synchronously (C(RequestResponse)) with the
    JSON event C({DeploymentId, LifecycleEventHookExecutionId, LifecycleEvent, FunctionName, Alias,
    CurrentVersion, TargetVersion}). A hook fails when the invocation returns a function error or a
    payload whose C(status) is C(Failed); anything else succeeds. A hook written for CodeDeploy that
    reports through C(PutLifecycleEventHookExecutionStatus) is not supported (there is no CodeDeploy
    deployment to report to); make it return a JSON object whose C(status) is C(Succeeded) or C(Failed).
  - B(Recovery.) During a shift the alias keeps the current version as its primary version and
    carries the target as the additional version. If the controller dies mid-shift the alias stays
    weighted; run the module with O(recover=true) (and the same O(function_name) and O(alias)) to put
    it back on the current version with the routing cleared. A new deployment refuses to start on a
    weighted alias unless O(take_over=true).
author:
  - Rollwright maintainers (@rollwright)
options:
  function_name:
    description:
      - Name or ARN of the function whose alias is shifted. Required unless given by O(appspec).
    type: str
  alias:
    description:
      - Name of the alias to shift. It must exist. Required unless given by O(appspec).
    type: str
  target_version:
    description:
      - The published version to shift the alias to. Never C($LATEST).
      - Mutually exclusive with O(publish); one of them is required (unless O(recover=true)).
    type: str
  publish:
    description:
      - Publish C($LATEST) (after the code update in O(code), if given) and deploy the published version.
      - When C($LATEST) has not changed since the last published version, Lambda returns that version and
        no new one is published; with the alias already on it, nothing changes.
    type: bool
    default: false
  code:
    description:
      - New code for the function, uploaded before publishing (needs O(publish=true)).
      - The code's SHA256 is computed from the zip file (or the S3 object, downloaded on the controller)
        and compared with O(code.sha256) when given, and with the C(CodeSha256) Lambda reports after the
        upload; a mismatch fails the task before anything is published.
    type: dict
    suboptions:
      zip_file:
        description:
          - Path to a zip file on the host the task runs on (the controller through the action plugin;
            a relative path is searched like other C(files/) lookups).
        type: path
      s3_bucket:
        description: Bucket of the code object.
        type: str
      s3_key:
        description: Key of the code object.
        type: str
      s3_object_version:
        description: Version id of the code object (recommended; without it the newest object is used).
        type: str
      sha256:
        description: Expected SHA256 of the code, as 64 hex digits or base64 (Lambda's C(CodeSha256) form).
        type: str
  version_description:
    description: Description of the version published with O(publish=true).
    type: str
  current_version:
    description:
      - The version traffic moves away from. Defaults to the version the alias points at.
      - Giving a version the alias does not point at is an error unless O(take_over=true).
      - With O(recover=true), the version the alias is put back on (default the alias's primary version).
    type: str
  take_over:
    description:
      - Start even if the alias already splits traffic (for example after a controller died mid-shift),
        or points at another version than O(current_version). The routing is overwritten by the first step.
    type: bool
    default: false
  deployment_config:
    description:
      - How traffic moves. A predefined name
        (C(CodeDeployDefault.LambdaCanary10Percent5Minutes), C(...10Minutes), C(...15Minutes), C(...30Minutes),
        C(CodeDeployDefault.LambdaLinear10PercentEvery1Minute), C(...Every2Minutes), C(...Every3Minutes),
        C(...Every10Minutes), C(CodeDeployDefault.LambdaAllAtOnce)); the C(CodeDeployDefault.) prefix may be left out.
      - Or a custom dict with C(type) (C(canary) or C(linear)), C(percentage) (1 to 99) and C(interval)
        (C(5m), C(30s) or a number of seconds). Unlike CodeDeploy, intervals may be given in seconds.
        CodeDeploy's C(TimeBasedCanary) (C(CanaryPercentage), C(CanaryInterval)) and C(TimeBasedLinear)
        (C(LinearPercentage), C(LinearInterval)) shapes, intervals in minutes, are accepted too.
      - Canary moves the percentage at once and the rest after the interval. Linear moves the percentage at
        once and again after every interval; the step that reaches 100% is the promote. At most 2880 minutes
        from the first to the last shift.
    type: raw
    default: CodeDeployDefault.LambdaAllAtOnce
  before_allow_traffic_hook:
    description: Name (or ARN, optionally qualified) of the Lambda function run before any traffic moves.
    type: str
  after_allow_traffic_hook:
    description: Name (or ARN, optionally qualified) of the Lambda function run after the promote.
    type: str
  alarms:
    description:
      - CloudWatch alarm names (metric or composite) watched during the deployment. They must exist.
    type: list
    elements: str
    default: []
  ignore_poll_alarm_failure:
    description:
      - When the alarms cannot be read (CloudWatch error, an alarm deleted), go on instead of stopping and
        rolling back. Each failure is still listed in RV(alarm_events).
    type: bool
    default: false
  poll_interval:
    description: Seconds between two reads of the alarms while traffic shifts.
    type: float
    default: 5.0
  appspec:
    description:
      - A CodeDeploy Lambda AppSpec (dict, or YAML/JSON text) giving C(Resources) (C(Name), C(Alias),
        C(CurrentVersion), C(TargetVersion)) and C(Hooks) (C(BeforeAllowTraffic), C(AfterAllowTraffic)).
      - Its values fill O(function_name), O(alias), O(current_version), O(target_version) and the hooks;
        an option that contradicts the appspec is an error.
    type: raw
  recover:
    description:
      - Do not deploy; put O(alias) back on O(current_version) (default its primary version) with the
        routing cleared. Use it after a controller died mid-shift.
    type: bool
    default: false
  deployment_id:
    description: Use this deployment id (C(d-) and 9 upper-case letters or digits) instead of a new one.
    type: str
  record:
    description:
      - Where the deployment's record lives (C(backend), C(sqlite_path), C(dynamodb_table), and C(notifications) - trigger
        events the record store sends). Only when the task runs on the controller, not in check mode.
      - Without O(lock_token) the deployment is recorded and locked by the task itself (the deployment session). After
        a read-only plan it takes the deployment group's lock (kept renewed by the lease keeper, a detached process that
        marks the deployment C(Stopped) and leaves the lock for recovery when the controller dies), creates the record,
        appends the lifecycle events as they happen, reads control requests (C(rollwright.deploy.deployment_control) -
        stop, promote, pause, resume) between traffic steps, writes the outcome and releases the lock.
      - With O(recover=true) the interrupted deployment that holds the group's lock is closed too (its record
        C(Stopped), its lock released); refused while the lock is held unless O(force_lock=true).
      - With O(lock_token) the caller has recorded and locked the deployment O(deployment_id) itself (tasks of
        C(rollwright.deploy.deployment_record)); only control requests are read.
    type: dict
  application:
    description: The record's application. Default the function's name. Only with O(record).
    type: str
  deployment_group:
    description: The record's deployment group, whose lock the deployment holds. Default C(function:alias). Only with O(record).
    type: str
  lock_ttl:
    description:
      - Seconds after its last renewal before the group's lock counts as stale. The lease keeper renews it every few
        seconds while the controller lives. Default 60. Only with O(record).
    type: float
  force_lock:
    description:
      - With O(record), take over a stale lock of the deployment group; with O(recover=true), recover even though the
        group's lock is held (do it only once its controller is known gone).
    type: bool
    default: false
  lock_token:
    description:
      - The token of the deployment group's lock (C(state=lock) of C(rollwright.deploy.deployment_record)),
        renewed while a pause holds. For a deployment recorded and locked by the caller.
    type: str
attributes:
  check_mode:
    support: full
    description: Returns the planned steps (time, weight) and touches nothing; no hook is invoked.
  diff_mode:
    support: full
    description: Shows the alias's version and routing before and after.
notes:
  - Hooks are invoked with a read timeout above Lambda's 15-minute maximum.
  - An alarm read blocks the schedule for as long as CloudWatch takes to answer (normally well under a second).
  - In check mode with O(publish=true), the version that would be deployed is known only when C($LATEST)'s
    code equals the last published version's; otherwise RV(target_version) is null.
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Canary 10 % for 5 minutes, with hooks and alarms
  rollwright.deploy.lambda_deploy:
    function_name: orders-api
    alias: live
    publish: true
    code:
      zip_file: build/orders-api.zip
    deployment_config: CodeDeployDefault.LambdaCanary10Percent5Minutes
    before_allow_traffic_hook: orders-api-pre-traffic
    after_allow_traffic_hook: orders-api-post-traffic
    alarms:
      - orders-api-errors
      - orders-api-p99-latency

- name: Linear 25 % every 30 seconds to an existing version
  rollwright.deploy.lambda_deploy:
    function_name: orders-api
    alias: live
    target_version: "42"
    deployment_config:
      type: linear
      percentage: 25
      interval: 30s

- name: Deploy from a CodeDeploy Lambda AppSpec
  rollwright.deploy.lambda_deploy:
    appspec: "{{ lookup('file', 'appspec.yml') }}"
    deployment_config: CodeDeployDefault.LambdaLinear10PercentEvery1Minute

- name: Preview the steps without touching anything
  rollwright.deploy.lambda_deploy:
    function_name: orders-api
    alias: live
    target_version: "42"
    deployment_config: CodeDeployDefault.LambdaLinear10PercentEvery3Minutes
  check_mode: true

- name: The controller died mid-shift - put the alias back on its current version
  rollwright.deploy.lambda_deploy:
    function_name: orders-api
    alias: live
    recover: true

- name: Recorded and locked (lease keeper, events as they happen, lock released at the end)
  rollwright.deploy.lambda_deploy:
    function_name: orders-api
    alias: live
    target_version: "42"
    deployment_config: CodeDeployDefault.LambdaCanary10Percent5Minutes
    record:
      backend: dynamodb
      dynamodb_table: rollwright-deployments
"""

RETURN = r"""
deployment_id:
  description: Id of this deployment, C(d-) and 9 upper-case letters or digits.
  returned: always, except with O(recover=true)
  type: str
  sample: d-7K2QW9M0X
status:
  description:
    - C(Succeeded), C(Failed) (a hook failed; the alias is back on the current version), C(Stopped) (an alarm
      fired or could not be read; the alias is back on the current version), C(Unchanged) (the alias was already
      on the target version with no routing), C(Planned) (check mode); C(Recovered) or C(Unchanged) with O(recover=true).
  returned: always
  type: str
  sample: Succeeded
current_version:
  description: The version traffic moved away from.
  returned: always, except with O(recover=true)
  type: str
  sample: "41"
target_version:
  description: The version traffic moved to (null in check mode when a new version would be published).
  returned: always, except with O(recover=true)
  type: str
  sample: "42"
published_version:
  description: The version O(publish=true) published (or found unchanged), else null.
  returned: always, except with O(recover=true)
  type: str
code_sha256:
  description: SHA256 (base64) of the deployed code when O(publish=true).
  returned: always, except with O(recover=true)
  type: str
deployment_config:
  description: The parsed configuration.
  returned: always, except with O(recover=true)
  type: dict
  sample: {name: CodeDeployDefault.LambdaCanary10Percent5Minutes, type: canary, percentage: 10, interval_seconds: 300}
planned_steps:
  description: The plan, C({at_seconds, weight, promote}); weight 1.0 is the promote.
  returned: always, except with O(recover=true)
  type: list
  elements: dict
steps:
  description:
    - The steps taken (in check mode, planned), each with C(planned_seconds), C(actual_seconds) (when the alias
      update returned, from the start of AllowTraffic), C(issued_seconds), C(drift_seconds), C(weight), C(promote),
      C(time) and the alarms' state (C(alarms)).
  returned: always, except with O(recover=true)
  type: list
  elements: dict
  sample: [{index: 1, planned_seconds: 0.0, actual_seconds: 0.012, drift_seconds: 0.012, weight: 0.1, promote: false}]
hooks:
  description: Hook invocations, each with C(lifecycle_event), C(function_name), C(status), C(function_error),
    C(payload) (first 4096 characters), C(error), C(start_time), C(end_time), C(duration_seconds).
  returned: always, except with O(recover=true)
  type: list
  elements: dict
alarm_events:
  description: Alarms found in C(ALARM) (C(alarm), C(state), C(reason), C(time), C(at_seconds), C(phase)) and failed
    alarm reads (C(error), C(ignored)).
  returned: always, except with O(recover=true)
  type: list
  elements: dict
rolled_back:
  description: Whether the alias was put back on the current version.
  returned: always, except with O(recover=true)
  type: bool
rollback:
  description: When and why the alias was put back (C(time), C(reason), C(version)).
  returned: when rolled back
  type: dict
final_alias:
  description: The alias at the end, C({function_version, additional_version_weights}).
  returned: always
  type: dict
  sample: {function_version: "42", additional_version_weights: {}}
initial_alias:
  description: The alias before the deployment.
  returned: always, except with O(recover=true)
  type: dict
start_time:
  description: Start of the deployment (UTC, ISO 8601).
  returned: always, except with O(recover=true)
  type: str
end_time:
  description: End of the deployment (UTC, ISO 8601).
  returned: always, except with O(recover=true)
  type: str
record_status:
  description: The record's final status (C(Succeeded), C(Failed) or C(Stopped)).
  returned: when the task recorded the deployment (O(record) without O(lock_token))
  type: str
lock_ttl:
  description: The ttl in seconds of the group's lock the deployment takes (or took).
  returned: in check mode, and when the task recorded the deployment
  type: float
recovered_deployment_id:
  description: The deployment whose lock the recovery released (null when the group was not locked).
  returned: with O(recover=true) and O(record)
  type: str
"""

try:
    import botocore.exceptions
except ImportError:
    pass  # handled by AnsibleAWSModule

from ansible_collections.rollwright.deploy.plugins.module_utils.aws.module import RollwrightAWSModule
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments.lambda_deploy import (
    ARGUMENT_SPEC,
    execute,
)


def main():
    module = RollwrightAWSModule(
        argument_spec=dict((k, dict(v)) for k, v in ARGUMENT_SPEC.items()),
        supports_check_mode=True,
    )
    try:
        result = execute(module.params, module.aws_client, check_mode=module.check_mode)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        module.fail_json_aws(e, msg="AWS call failed during the Lambda deployment")
    if not module._diff:
        result.pop("diff", None)
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
