#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: host_lifecycle
short_description: Run consecutive CodeDeploy lifecycle events of one deployment on a host
version_added: 0.1.0
description:
  - Does on one host what the CodeDeploy agent does, without an agent. It unpacks the pushed bundle
    (C(DownloadBundle)), installs the revision's files (C(Install)) and runs the appspec's hook scripts,
    for several consecutive lifecycle events in one call (every SSH round trip costs).
  - C(BeforeBlockTraffic), C(AfterBlockTraffic) and C(ApplicationStop) run the scripts of the host's
    B(last successful) revision, as CodeDeploy does; they are skipped on a host's first deployment (and when
    that deployment's directory was pruned). All other hooks run the new revision's scripts.
  - Install follows the agent exactly. The previous install's cleanup list is undone first, then files are
    copied and recorded in a new cleanup list, O(file_exists_behavior) is checked after the cleanup, and the
    appspec's C(permissions) apply only to paths this install created. Re-running the install of the same
    deployment id changes nothing when the installed files are still as installed.
  - Scripts run in their own process group with their output appended to the sealed log
    C(<state_root>/<application>/<deployment_group>/deployments/<id>/logs/scripts.log) (0600); a background child
    that keeps its output open never blocks the hook; at a script's timeout everything it started (children that
    called C(setsid) included) gets SIGTERM, then SIGKILL after O(hook_timeout_grace) seconds.
  - The first failing event fails the task (remaining events are reported C(Skipped)) with a message naming the
    event, the script, the exit code or timeout, the log file and the tail of the output (redacted, see
    O(hook_output)). A script that succeeds returns no output.
  - Root-safe against a hostile application user (see docs/security.md). Every file operation walks from C(/)
    without following symlinks; a destination, cleanup or permissions path whose directories include a symlink or a
    directory owned by someone other than root and the owners the appspec names is refused, naming it. The host
    state is sealed (directories 0700 or 0711, files 0600); the pushed bundle is copied into it, hashed as written,
    unpacked within O(unpack_limits) and removed (its hash stays in C(revision.json)). Extracted files lose
    setuid, setgid, sticky and group/other write bits. The appspec received is validated again on the host.
  - The action plugin of the same name transfers O(src) from the controller to the host's temporary
    directory (one transfer, then one module run) and removes it afterwards. With O(bundle_transfer=presigned) it
    transfers nothing - it makes a presigned GET URL for the exact S3 version and the host downloads the bundle.
  - O(staging=stage) unpacks the revision ahead of the batch, while the host is still in service (C(DownloadBundle)
    only, no hook runs, the host's pointers do not move) and fingerprints the unpacked tree; the batch's
    C(DownloadBundle) without a bundle then uses that copy after checking the fingerprint again, and refuses a copy
    that changed. O(staging=discard) removes a staged copy that no batch used.
  - Nothing keeps running on the host between deployments.
author:
  - Rollwright maintainers (@rollwright)
extends_documentation_fragment:
  - rollwright.deploy.host_engine
options:
  deployment_group_id:
    description:
      - The value of C(DEPLOYMENT_GROUP_ID) for the scripts. Defaults to O(deployment_group).
    type: str
  deployment_id:
    description:
      - The deployment id, CodeDeploy-like C(d-) followed by 9 upper-case letters or digits.
    type: str
    required: true
  events:
    description:
      - The lifecycle events to run, contiguous and in lifecycle order (BeforeBlockTraffic, AfterBlockTraffic,
        ApplicationStop, DownloadBundle, BeforeInstall, Install, AfterInstall, ApplicationStart, ValidateService,
        BeforeAllowTraffic, AfterAllowTraffic). C(BlockTraffic) and C(AllowTraffic) are done on the controller,
        so a call never spans them. With O(session) this is the first group, and may be empty.
    type: list
    elements: str
    required: true
  appspec:
    description:
      - The normalised appspec of the new revision (as returned by M(rollwright.deploy.appspec_info)).
      - Required when O(events) include C(DownloadBundle), C(Install) or a hook of the new revision, unless an
        earlier call of the same deployment stored it on the host.
    type: dict
  bundle:
    description:
      - The bundle archive (zip, tar, tgz) already on the host. The action plugin sets it from O(src) for a bundle
        larger than 1 MiB (a smaller one travels in O(bundle_content)).
    type: path
  src:
    description:
      - The bundle archive on the controller; the action plugin sends it to the host when O(events) include
        C(DownloadBundle) (not in check mode) - inside the module's arguments up to 1 MiB, as a file beyond.
    type: path
  failure_handled:
    description:
      - For the action plugin - a failed lifecycle event is returned as C(lifecycle_failed=true) with the event
        results and message, not as a failed task, and a line says it is handled. The deployment roles set it, as
        they record the failure and judge the deployment, so the job log shows no failed task for it.
    type: bool
    default: false
  progress_after:
    description:
      - For the action plugin - when the call runs longer than this many seconds, a line names the running
        event, script and elapsed time (read from the host's C(scripts.log) over the same connection), then
        every 10 seconds. C(0) prints nothing.
    type: float
    default: 5
  revision:
    description:
      - The revision's identity. Stored in C(revision.json); for S3 revisions its bucket, key, version and
        etag become C(BUNDLE_BUCKET), C(BUNDLE_KEY), C(BUNDLE_VERSION), C(BUNDLE_ETAG) for the scripts.
    type: dict
    suboptions:
      source:
        description: Where the revision came from.
        type: str
        choices: [s3, local]
        default: local
      bucket:
        description: S3 bucket.
        type: str
      key:
        description: S3 key.
        type: str
      version:
        description: S3 version id.
        type: str
      etag:
        description: S3 ETag.
        type: str
      sha256:
        description: SHA-256 the bundle must have; a mismatch fails C(DownloadBundle) before anything is unpacked.
        type: str
      bundle_type:
        description: C(zip), C(tar) or C(tgz); inferred from the file name or its first bytes when not given.
        type: str
        choices: [zip, tar, tgz]
      appspec_name:
        description: The appspec file name inside the bundle (used to find the bundle root).
        type: str
        default: appspec.yml
  file_exists_behavior:
    description:
      - What Install does with a file it would copy over that the previous install did not create.
        C(DISALLOW) fails naming the files, C(OVERWRITE) replaces them (the next deployment removes them),
        C(RETAIN) keeps them. The appspec's C(file_exists_behavior) overrides this.
    type: str
    choices: [DISALLOW, OVERWRITE, RETAIN]
    default: DISALLOW
  ignore_application_stop_failures:
    description:
      - Log failures of C(BeforeBlockTraffic), C(AfterBlockTraffic) and C(ApplicationStop) (scripts of the previous
        revision) as warnings and carry on, like CodeDeploy's C(ignoreApplicationStopFailures).
    type: bool
    default: false
  hook_timeout_grace:
    description:
      - Seconds between the SIGTERM sent to a timed-out script's process group and the SIGKILL.
    type: int
    default: 30
  keep_revisions:
    description:
      - How many deployment directories to keep on the host (the current one included); the last successful one
        is never deleted. Applied when O(complete=true).
    type: int
    default: 5
  complete:
    description:
      - After the events succeed, record this deployment as the host's last successful one and prune old
        deployment directories. Only the current and the last successful deployment keep their unpacked revision.
    type: bool
    default: false
  unpack_limits:
    description:
      - Bounds on what C(DownloadBundle) unpacks, checked on the archive's member list before anything is written
        (with the free space of the state directory). Exceeding one fails the event with a message naming it
        (C(unpack_limits.<name>)). Unset limits keep their defaults.
    type: dict
    suboptions:
      total_bytes:
        description: Total unpacked size in bytes.
        type: int
        default: 4294967296
      member_bytes:
        description: Unpacked size of any one member in bytes.
        type: int
        default: 2147483648
      members:
        description: Number of members (files, directories, links).
        type: int
        default: 200000
      ratio:
        description: Total unpacked size divided by the archive's size (a zip or gzip bomb has thousands).
        type: int
        default: 200
      symlink_target:
        description: Length in bytes of a symlink's target.
        type: int
        default: 1024
  hook_output:
    description:
      - What a failed script returns of its output. C(failure) returns the last 40 lines / 4 KiB after a redaction
        pass (values of C(*PASSWORD*=), C(*SECRET*=), C(*TOKEN*=) assignments, AWS access key ids and secret-key
        shaped words become C([REDACTED])); C(none) returns nothing. Scripts that succeed never return output.
        The full output stays in the host's sealed log either way.
    type: str
    choices: [failure, none]
    default: failure
  staging:
    description:
      - C(stage) - with O(events=[DownloadBundle]), unpack the bundle into the deployment's sealed directory ahead of
        the batch and record it as staged (its status is C(Staged)); staged copies of other deployments that were
        never used (an interrupted deployment) are removed first.
      - C(discard) - with O(events=[DownloadBundle]), remove the deployment's directory when it holds only a staged
        copy that no batch used; a deployment a batch ran keeps its directory (logs) and follows O(keep_revisions).
      - With O(session) (and O(session.detach), O(session.first_gate)), C(stage) stages the revision first and
        answers with how that went; the session then waits at gate 0 for its batch, whose groups install from the
        staged copy - staging and the start of a batch's session in one run of the module.
    type: str
    choices: [stage, discard]
  report_state:
    description:
      - Also report the host's deployment state for the application and deployment group (result C(host_state), as
        M(rollwright.deploy.host_deployment_info) reports it), read before anything of this call changes it.
      - The in-place staging step sets it, so that one call per host both reads and stages (no call of its own to
        read every host before the deployment starts).
    type: bool
    default: false
  bundle_transfer:
    description:
      - For the action plugin - how the bundle reaches the host when O(events) include C(DownloadBundle).
      - C(push) transfers O(src) over the connection. A bundle of at most 1 MiB travels inside the module's
        arguments (O(bundle_content)) - no temporary directory, file transfer or clean-up on the host; a larger one
        is copied as a file.
      - C(presigned) makes, on the controller, a presigned GET URL for the exact S3 version of O(revision) (bucket,
        key and version required; the SHA-256 in O(revision.sha256) is what the host checks the download against) and
        the host downloads it - no AWS credentials on the host, the controller's bandwidth does not grow with the
        fleet. The URL is a secret; it is passed in the module's arguments (O(bundle_url), no_log), never on a
        command line, in a result or in a message.
    type: str
    choices: [push, presigned]
    default: push
  presign:
    description:
      - For the action plugin with O(bundle_transfer=presigned) - how the controller signs the URL.
    type: dict
    suboptions:
      region:
        description: The bucket's region (defaults as for the AWS modules - C(AWS_REGION), the profile).
        type: str
      endpoint_url:
        description: The S3 endpoint as the hosts reach it (the URL points there); AWS's own by default.
        type: str
      profile:
        description: The AWS profile whose credentials sign the URL.
        type: str
      expires:
        description: Seconds the URL stays valid.
        type: int
        default: 900
  bundle_url:
    description:
      - Set by the action plugin with O(bundle_transfer=presigned) - the presigned URL the host downloads the bundle
        from; it is checked against O(revision.sha256) before anything is unpacked. Secret - never logged or returned.
    type: str
  bundle_content:
    description:
      - Set by the action plugin with O(bundle_transfer=push) for a bundle of at most 1 MiB - the bundle's bytes in
        base64, written into the deployment's sealed directory on the host and checked against O(revision.sha256)
        (when given) before anything is unpacked. Not logged or returned.
    type: str
  session:
    description:
      - Run the event groups of a whole batch in this one module run (a host session), as
        M(rollwright.deploy.inplace_step) does behind a load balancer - each run of the module costs its start on the
        host, a session pays it once per batch.
      - O(events) and O(complete) are the first group. The module then waits, before each group of
        O(session.groups), for the controller's word in the session's sealed directory
        C(<state_root>/<application>/<deployment_group>/deployments/<id>/sessions/<name>), and leaves each group's
        result there (C(result-N.json), as this module would return it). The controller writes C(go-N) (C(run), or
        C(abort) and a reason) and reads the results with one shell command per group, without Python.
      - A group that fails ends the session (the host is out of the batch). A word that does not come within
        O(session.gate_timeout) seconds ends it too (a failure), and nothing after that gate runs. A dropped
        connection (SIGHUP) does not stop the module between groups.
      - The result is the last group's run, with C(session) listing every group's outcome.
      - Not in check mode.
    type: dict
    suboptions:
      name:
        description: The session's name (1-64 letters, digits, C(-) or C(_)), used once per deployment and host.
        type: str
        required: true
      first_gate:
        description:
          - Wait for the controller's word before the first group too (C(go-0)), as for every later group.
          - A session started ahead of its batch waits there, before anything runs, until the previous batch is
            done (the minimum-healthy rule applies to O(events) such as C(BeforeBlockTraffic) as well).
        type: bool
        default: false
      detach:
        description:
          - Answer at once, once the engine waits in its session (result C(session.detached=true) and its C(pid)),
            and go on without the connection. The controller then reads every group's result, and the engine's own
            result (C(final.json)), from the session's directory.
          - So a session can outlive the task that started it - the batch before it starts it, ahead of time.
        type: bool
        default: false
      gate_timeout:
        description:
          - Seconds the module waits at a gate without a sign of life from the controller. While it works (a load
            balancer's wait, other hosts' events) the controller touches the session's C(alive) file 20 to 30 s
            after its last sign of life to the session (its start, its word, its last result or touch);
            a controller that died leaves the host engine waiting this long at most.
        type: float
        default: 120
      groups:
        description: The event groups after the first, in order.
        type: list
        elements: dict
        required: true
        suboptions:
          events:
            description: The group's lifecycle events (as O(events)).
            type: list
            elements: str
            required: true
          complete:
            description: As O(complete), for this group.
            type: bool
            default: false
  bundle_entries:
    description:
      - Set by the action plugin in check mode from the bundle on the controller (member path to C(file), C(dir)
        or C(link)), so the plan lists the exact files Install would create without transferring the bundle.
    type: dict
attributes:
  check_mode:
    support: full
    description:
      - A read-only plan (C(plan)) - the events, the scripts each would run and whose revision they come from, the
        files Install would create, overwrite and remove. No hook runs, nothing is transferred or written.
  diff_mode:
    support: full
    description:
      - Returns the paths Install removed or overwrote (before) and installed (after), in check mode what it would.
notes:
  - Scripts with O(appspec) C(runas) switch user with setgid, initgroups and setuid (no password, no PAM, no login
    shell); that needs the module to run as root (C(become)).
  - The host needs only Python 3 (stdlib); C(setfacl) for appspec acls and C(chcon) for SELinux contexts (skipped
    with a warning where SELinux is not enabled).
"""

EXAMPLES = r"""
- name: Stop the old revision, install the new one and start it (one SSH round trip)
  rollwright.deploy.host_lifecycle:
    application: shop
    deployment_group: web
    deployment_id: "{{ deployment_id }}"
    src: "{{ bundle.path }}"
    revision: "{{ bundle | combine({'source': 's3'}) }}"
    appspec: "{{ spec.appspec }}"
    events: [ApplicationStop, DownloadBundle, BeforeInstall, Install, AfterInstall, ApplicationStart, ValidateService]
    complete: true
  become: true

- name: First half of an in-place deployment behind a load balancer (BlockTraffic is done on the controller)
  rollwright.deploy.host_lifecycle:
    application: shop
    deployment_group: web
    deployment_id: "{{ deployment_id }}"
    events: [BeforeBlockTraffic]
    ignore_application_stop_failures: true
"""

RETURN = r"""
deployment_id:
  description: The deployment id.
  returned: always
  type: str
events:
  description:
    - One entry per requested event, in order, with C(name), C(status) (C(Succeeded), C(Failed), C(Skipped)),
      C(start), C(end), C(duration) (s), C(message) and C(scripts).
    - Each script has C(location), C(path), C(exit_code), C(duration), C(timed_out), C(killed), C(output_tail)
      (the last 40 lines / 4 KiB of its output), C(log_file), C(runas), C(timeout) and C(error).
    - Hook events also carry C(revision_deployment_id) (whose scripts ran); Install carries C(install) (created,
      overwritten, retained, removed, permissions); a failure ignored by O(ignore_application_stop_failures) has
      C(ignored=true); in check mode events have C(check_mode=true).
  returned: always
  type: list
  elements: dict
failed_event:
  description: The event that failed, or null.
  returned: always
  type: str
log_file:
  description: The deployment's script log on the host.
  returned: always
  type: str
deployment_dir:
  description: The deployment's directory on the host.
  returned: always
  type: str
last_successful:
  description: The host's last successful deployment id before and after this call.
  returned: always
  type: dict
  sample: {before: d-1A2B3C4D5, after: d-6E7F8G9H0}
pruned:
  description: Deployment directories removed by the retention rule.
  returned: always
  type: list
  elements: str
host_state:
  description:
    - With O(report_state) - the host's deployment state before this call - C(exists), C(group_dir),
      C(last_successful), C(most_recent) and C(deployments), as M(rollwright.deploy.host_deployment_info) returns them.
  returned: with O(report_state)
  type: dict
session:
  description:
    - With O(session) - C(name); C(groups), each group's outcome in order (C(index), C(events) - their names,
      C(failed), C(msg)); C(ended) - C(completed), C(failed), C(abort) (with the controller's reason in C(reason))
      or C(expired). After an abort or an expiry the result holds no events (nothing of that group ran).
    - With O(session.detach), the answer comes before any group runs - C(name), C(detached=true) and the engine's
      C(pid); the rest is in the session's directory.
  returned: with O(session)
  type: dict
plan:
  description:
    - In check mode, what the events would do. C(events) lists each event with C(scripts) (C(location), C(runas),
      C(timeout), C(from_revision) - the deployment whose revision the script belongs to); C(files) has the paths
      Install would C(create), C(overwrite) and C(remove).
  returned: in check mode
  type: dict
  sample:
    events: [{event: ApplicationStop, scripts: [{location: scripts/stop.sh, runas: null, timeout: 60, from_revision: d-6E7F8G9H0}]}]
    files: {create: [/opt/app/index.html], overwrite: [], remove: [/opt/app/old.html]}
"""

import os
import signal
import sys

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.rollwright.deploy.plugins.module_utils.host.events import DeploymentRequest, HostDeployment
from ansible_collections.rollwright.deploy.plugins.module_utils.host.state import (
    HostState, StateError, describe_host_state,
)
from ansible_collections.rollwright.deploy.plugins.module_utils.host.fs import UnsafePathError
from ansible_collections.rollwright.deploy.plugins.module_utils.host.session import (
    ABORT, EXPIRED, RUN, HostSession, detach,
)
from ansible_collections.rollwright.deploy.plugins.module_utils.revisions.lifecycle import LifecycleError


def argument_spec():
    return dict(
        application=dict(type="str", required=True),
        deployment_group=dict(type="str", required=True),
        deployment_group_id=dict(type="str"),
        deployment_id=dict(type="str", required=True),
        events=dict(type="list", elements="str", required=True),
        appspec=dict(type="dict"),
        bundle=dict(type="path"),
        src=dict(type="path"),
        failure_handled=dict(type="bool", default=False),
        progress_after=dict(type="float", default=5),
        revision=dict(type="dict", options=dict(
            source=dict(type="str", choices=["s3", "local"], default="local"),
            bucket=dict(type="str"),
            key=dict(type="str", no_log=False),
            version=dict(type="str"),
            etag=dict(type="str"),
            sha256=dict(type="str"),
            bundle_type=dict(type="str", choices=["zip", "tar", "tgz"]),
            appspec_name=dict(type="str", default="appspec.yml"),
        )),
        file_exists_behavior=dict(type="str", choices=["DISALLOW", "OVERWRITE", "RETAIN"], default="DISALLOW"),
        ignore_application_stop_failures=dict(type="bool", default=False),
        hook_timeout_grace=dict(type="int", default=30),
        keep_revisions=dict(type="int", default=5),
        state_root=dict(type="path", default="/var/lib/rollwright"),
        complete=dict(type="bool", default=False),
        unpack_limits=dict(type="dict", options=dict(
            total_bytes=dict(type="int", default=4 * 1024 ** 3),
            member_bytes=dict(type="int", default=2 * 1024 ** 3),
            members=dict(type="int", default=200000),
            ratio=dict(type="int", default=200),
            symlink_target=dict(type="int", default=1024),
        )),
        hook_output=dict(type="str", choices=["failure", "none"], default="failure"),
        bundle_entries=dict(type="dict"),
        staging=dict(type="str", choices=["stage", "discard"]),
        report_state=dict(type="bool", default=False),
        bundle_transfer=dict(type="str", choices=["push", "presigned"], default="push"),
        presign=dict(type="dict", options=dict(
            region=dict(type="str"),
            endpoint_url=dict(type="str"),
            profile=dict(type="str"),
            expires=dict(type="int", default=900),
        )),
        bundle_url=dict(type="str", no_log=True),
        bundle_content=dict(type="str", no_log=True),  # large, and nothing a result or a log needs
        session=dict(type="dict", options=dict(
            name=dict(type="str", required=True),
            gate_timeout=dict(type="float", default=120),
            first_gate=dict(type="bool", default=False),
            detach=dict(type="bool", default=False),
            groups=dict(type="list", elements="dict", required=True, options=dict(
                events=dict(type="list", elements="str", required=True),
                complete=dict(type="bool", default=False),
            )),
        )),
    )


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    p = module.params
    for name, value in (p["unpack_limits"] or {}).items():
        if value is not None and value < 1:
            module.fail_json(msg=f"unpack_limits.{name} must be an integer >= 1, got {value}")
    if p["keep_revisions"] < 1:
        module.fail_json(msg=f"keep_revisions must be an integer >= 1, got {p['keep_revisions']}")
    if p["hook_timeout_grace"] < 0:
        module.fail_json(msg=f"hook_timeout_grace must be >= 0 seconds, got {p['hook_timeout_grace']}")
    base = dict(deployment_id=p["deployment_id"], events=[], failed_event=None, log_file=None,
                deployment_dir=None, last_successful={}, pruned=[])
    if p["session"] and module.check_mode:
        module.fail_json(msg="session: not in check mode (a dry run reads each group with a call of its own)", **base)
    try:
        state = HostState(p["state_root"], p["application"], p["deployment_group"])
    except StateError as exc:
        module.fail_json(msg=str(exc), **base)
    if p["report_state"]:
        try:
            base["host_state"] = describe_host_state(state)  # before anything below changes it
        except (StateError, OSError) as exc:
            module.fail_json(msg=f"cannot read the host state: {exc}", **base)
    if not p["session"]:
        result, failed, warnings = run_group(module, state, p["events"], p["complete"], base, p["staging"])
        finish(module, result, failed, warnings)
    run_session(module, state, base)


def run_group(module, state, events, complete, base, staging=None):
    """One group of consecutive events: (the module's result, whether it failed, warnings)."""
    p = module.params
    try:
        request = DeploymentRequest(
            deployment_id=p["deployment_id"], events=events, appspec=p["appspec"], bundle=p["bundle"],
            revision=p["revision"], deployment_group_id=p["deployment_group_id"],
            file_exists_behavior=p["file_exists_behavior"],
            ignore_application_stop_failures=p["ignore_application_stop_failures"],
            hook_timeout_grace=p["hook_timeout_grace"], keep_revisions=p["keep_revisions"],
            complete=complete, check_mode=module.check_mode, unpack_limits=p["unpack_limits"],
            hook_output=p["hook_output"], bundle_entries=p["bundle_entries"] if module.check_mode else None,
            staging=staging, bundle_url=p["bundle_url"], bundle_content=p["bundle_content"])
        run = HostDeployment(state, request).execute()
    except (StateError, LifecycleError) as exc:
        return dict(base, msg=str(exc)), True, []
    except UnsafePathError as exc:
        return dict(base, msg=f"host state: {exc}"), True, []
    except OSError as exc:
        return dict(base, msg=f"host state error: {exc}"), True, []
    result = run.to_dict()
    if "host_state" in base:
        result["host_state"] = base["host_state"]
    if module._diff:
        diff = run.diff()
        if diff is not None:
            result["diff"] = diff
    result["msg"] = result.pop("message")
    return result, run.failed, list(run.warnings)


def finish(module, result, failed, warnings):
    for warning in warnings:
        module.warn(warning)
    if failed:
        module.fail_json(**result)
    module.exit_json(**result)


def run_session(module, state, base):
    """Every group of a batch in this run: the first at once (or, with first_gate, on the controller's word too),
    each next one on the controller's word. Detached, the run answers its caller once it waits in its session."""
    p = module.params
    spec = p["session"]
    groups = [(p["events"], p["complete"])] + [(g["events"], g["complete"]) for g in spec["groups"]]
    # A dropped connection must not kill the engine between groups: the results live in the session's files, and
    # the controller reads them over a fresh connection.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    staged = {}
    if p["staging"]:
        # Staging and the start of the batch's session in one run: the revision is staged first (the answer says
        # how it went), then the session waits at gate 0 for its batch, whose groups install from the staged copy.
        if p["staging"] != "stage" or not (spec["detach"] and spec["first_gate"]):
            module.fail_json(msg="session: only staging=stage goes with a session, and then the session waits for its "
                                 "batch (session.detach and session.first_gate)", **base)
        staged, failed, warnings = run_group(module, state, ["DownloadBundle"], False, base, "stage")
        if failed:
            finish(module, staged, failed, warnings)
        for warning in warnings:
            module.warn(warning)
    try:
        session = HostSession(state, p["deployment_id"], spec["name"], spec["gate_timeout"])
        session.open(write_pid=not spec["detach"])
    except (StateError, OSError) as exc:
        module.fail_json(msg=f"session: {exc}", **dict(base, **staged))
    if spec["detach"]:
        try:
            child = detach(session)
        except OSError as exc:
            session.close()
            module.fail_json(msg=f"session: cannot detach the engine: {exc}", **base)
        if child >= 0:  # the caller's process: say the session waits, and leave the rest to the child
            if not child:
                module.fail_json(msg="session: the detached engine stopped before it started", **base)
            answer = dict(base, changed=False, msg="session started")
            answer.update(staged)
            answer["session"] = {"name": spec["name"], "detached": True, "pid": child}
            answer_and_leave(module, answer)
    outcomes, warnings = [], []
    result, failed, ended, reason = dict(base, msg="no event group ran"), False, "completed", ""
    try:
        for index, (events, complete) in enumerate(groups):
            if index or spec["first_gate"]:
                word, reason = session.wait_gate(index)
                if word != RUN:
                    # Nothing of this group ran: the result holds no events (the earlier groups' are reported).
                    ended, failed = word, word == EXPIRED
                    result = dict(base, msg=f"session {word} before event group {index}: {reason}".rstrip(": "))
                    break
            if not events:  # nothing for this host in this group (e.g. no BeforeBlockTraffic scripts to run)
                outcomes.append({"index": index, "events": [], "failed": False, "msg": "no events"})
                session.publish(index, dict(base, msg="no events in this group", failed=False))
                continue
            result, failed, group_warnings = run_group(module, state, events, complete, base)
            warnings.extend(group_warnings)
            outcomes.append({"index": index, "events": list(events), "failed": failed, "msg": result.get("msg")})
            session.publish(index, dict(result, failed=failed, warnings=group_warnings))
            if failed:
                ended = "failed"
                break
    except (StateError, OSError) as exc:  # the session's own files (a gate, a result) could not be read or written
        ended, failed = "failed", True
        result = dict(result, msg=f"session: {exc}")
    finally:
        result["session"] = {"name": spec["name"], "groups": outcomes, "ended": ended,
                             **({"reason": reason} if ended == ABORT else {})}
        if spec["detach"]:
            try:
                session.publish_final(dict(result, failed=failed, warnings=warnings))
            except (StateError, OSError):
                pass  # the controller reads the group results, and sees the engine gone
        session.close()
    # Detached, nobody reads this output (it goes to /dev/null), but the module ends as any run does: its payload
    # and temporary files are removed on the way out.
    finish(module, result, failed, warnings)


def answer_and_leave(module, result):
    """The caller's process of a detached session: print the module's result and end at once. Not exit_json: that
    would remove the module's payload on the way out, which the detached engine still imports from."""
    module._return_formatted(result)  # pylint: disable=protected-access
    sys.stdout.flush()
    os._exit(0)  # pylint: disable=protected-access


if __name__ == "__main__":
    main()
