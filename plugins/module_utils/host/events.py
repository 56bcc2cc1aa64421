# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One call of the host_lifecycle module: several consecutive lifecycle events of one deployment on this host
(DownloadBundle, Install, the hooks), their status in the deployment directory, and the result the controller
gets (with the plan of a check-mode run).

Runs on the hosts: stdlib only.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field

from ansible_collections.rollwright.deploy.plugins.module_utils.revisions import appspec as _appspec
from ansible_collections.rollwright.deploy.plugins.module_utils.host import hooks as _hooks
from ansible_collections.rollwright.deploy.plugins.module_utils.host import fs as _fs
from ansible_collections.rollwright.deploy.plugins.module_utils.host import staging as _staging
from ansible_collections.rollwright.deploy.plugins.module_utils.revisions import lifecycle as _lifecycle
from ansible_collections.rollwright.deploy.plugins.module_utils.host.install import bundle_skeleton, install
from ansible_collections.rollwright.deploy.plugins.module_utils.host.state import (
    DEFAULT_KEEP_REVISIONS, EventFailed, HostState, InstallError, StateError, validate_deployment_id,
)
from ansible_collections.rollwright.deploy.plugins.module_utils.host.unpack import STAGING_FAILED, BundleUnpack


@dataclass
class DeploymentRequest:
    """What the controller asks a host to do in one module call."""

    deployment_id: str
    events: list
    appspec: dict | None = None
    bundle: str | None = None
    revision: dict | None = None
    deployment_group_id: str | None = None
    file_exists_behavior: str = "DISALLOW"
    ignore_application_stop_failures: bool = False
    hook_timeout_grace: float = 30
    keep_revisions: int = DEFAULT_KEEP_REVISIONS
    complete: bool = False
    check_mode: bool = False
    unpack_limits: dict | None = None
    hook_output: str = _hooks.OUTPUT_ON_FAILURE
    bundle_entries: dict | None = None  # check mode: the bundle's members (path -> file|dir|link), read on the controller
    staging: str | None = None  # "stage": unpack ahead of the batch; "discard": remove an unused staged copy
    bundle_url: str | None = None  # presigned GET URL of the exact S3 version (a secret: never in a message)
    bundle_content: str | None = None  # a small pushed bundle's bytes (base64), carried in the module's arguments


@dataclass
class DeploymentRun:
    deployment_id: str
    deployment_dir: str
    log_file: str
    events: list = field(default_factory=list)
    failed_event: str | None = None
    message: str = ""
    changed: bool = False
    warnings: list = field(default_factory=list)
    last_successful_before: str | None = None
    last_successful_after: str | None = None
    pruned: list = field(default_factory=list)
    plan: dict | None = None

    @property
    def failed(self) -> bool:
        return self.failed_event is not None

    def build_plan(self) -> dict:
        """What the events would do (check mode): the scripts each would run (and whose revision they come
        from) and the files Install would create, overwrite and remove."""
        events, files = [], {"create": [], "overwrite": [], "remove": []}
        for item in self.events:
            source = item.get("revision_deployment_id")
            events.append({"event": item["name"], "scripts": [
                {"location": s.get("location"), "runas": s.get("runas"), "timeout": s.get("timeout"), "from_revision": source}
                for s in item.get("scripts") or []]})
            install_plan = item.get("install")
            if install_plan:
                overwritten = set(install_plan.get("overwritten") or [])
                files["create"] = [p for p in install_plan.get("created") or [] if p not in overwritten]
                files["overwrite"] = sorted(overwritten)
                files["remove"] = list(install_plan.get("removed") or [])
        return {"events": events, "files": files}

    def diff(self) -> dict | None:
        """An Ansible diff of the files Install changed (or would change): paths before and after."""
        install_event = next((e for e in self.events if e.get("install")), None)
        if install_event is None:
            return None
        data = install_event["install"]
        removed = set(data.get("removed") or [])
        created = list(data.get("created") or [])
        before = sorted(removed | set(data.get("overwritten") or []))
        after = sorted(set(created))
        return {"before_header": "paths of the previous install (removed or overwritten)",
                "after_header": f"paths installed by {self.deployment_id}",
                "before": "".join(p + "\n" for p in before), "after": "".join(p + "\n" for p in after)}

    def to_dict(self) -> dict:
        return {
            "deployment_id": self.deployment_id, "deployment_dir": self.deployment_dir, "log_file": self.log_file,
            "events": self.events, "failed_event": self.failed_event, "message": self.message,
            "changed": self.changed, "pruned": self.pruned,
            "last_successful": {"before": self.last_successful_before, "after": self.last_successful_after},
            **({"plan": self.plan} if self.plan is not None else {}),
        }


def validate_host_appspec(data, what: str) -> dict:
    """Re-validate a normalised appspec on the host (the controller's word is not enough) and return its
    normalised form; StateError lists every problem."""
    try:
        return _appspec.AppSpec.from_dict(data, what).to_dict()
    except _appspec.AppSpecError as exc:
        raise StateError(f"the {what} given to the host is not a valid normalised appspec: " + "; ".join(exc.errors)) from None


class HostDeployment:
    """Runs lifecycle events of one deployment on this host (DownloadBundle, Install, hooks)."""

    def __init__(self, state: HostState, request: DeploymentRequest):
        hook_runner, lifecycle = _hooks, _lifecycle
        self.hooks = hook_runner
        self.lifecycle = lifecycle
        self.state = state
        self.req = request
        validate_deployment_id(request.deployment_id)
        if request.appspec is not None:
            request.appspec = validate_host_appspec(request.appspec, "appspec")
        if request.hook_output not in _hooks.OUTPUT_CHOICES:
            raise StateError(f"hook_output must be one of {', '.join(_hooks.OUTPUT_CHOICES)}, got {request.hook_output!r}")
        self.events = lifecycle.validate_events(request.events, allow_controller_events=False)
        if request.staging not in (None, "stage", "discard"):
            raise StateError(f"staging must be stage or discard, got {request.staging!r}")
        if request.staging and self.events != ["DownloadBundle"]:
            raise StateError(f"staging={request.staging} takes events [DownloadBundle] only, got {self.events}")
        self.id = request.deployment_id
        self.unpack = BundleUnpack(state, request)
        self.run = DeploymentRun(deployment_id=self.id, deployment_dir=state.deployment_dir(self.id),
                                 log_file=state.scripts_log(self.id))
        self.context = hook_runner.HookContext(
            deployment_id=self.id, application=state.application, deployment_group=state.deployment_group,
            deployment_group_id=request.deployment_group_id or state.deployment_group, revision=request.revision or {})

    # helpers --------------------------------------------------------------------------------
    def needs_new_appspec(self) -> bool:
        lc = self.lifecycle
        return any(e in lc.HOST_RESERVED_EVENTS or (lc.is_scriptable(e) and not lc.uses_previous_revision(e))
                   for e in self.events)

    def new_appspec(self) -> dict:
        appspec = self.req.appspec or self.state.load_appspec(self.id)
        if appspec is None:
            raise StateError(
                f"appspec is required for events {', '.join(self.events)}: give the normalised appspec of the "
                f"new revision (none is stored yet for deployment {self.id} on this host)")
        return appspec

    def _record(self, status: str) -> None:
        if self.req.check_mode:
            return
        previous = self.state.load_status(self.id) or {}
        events = dict(previous.get("events") or {})
        for item in self.run.events:
            events[item["name"]] = {"status": item["status"], "end": item.get("end"), "message": item.get("message")}
        self.state.write_status(self.id, {"deployment_id": self.id, "status": status, "updated": time.time(),
                                          "events": events, "failed_event": self.run.failed_event})

    def discard_staged(self) -> DeploymentRun:
        """Remove this deployment's directory when it only holds a staged copy no batch used (the deployment
        ended before this host's turn); a directory a batch used keeps its logs and follows the prune rule."""
        status = (self.state.load_status(self.id) or {}).get("status")
        unused = status in (_staging.STAGED, STAGING_FAILED)
        if unused and not self.req.check_mode:
            self.state.remove_below(self.state.deployments_dir, self.id)
        message = (f"{'would remove' if self.req.check_mode else 'removed'} the unused staged copy of {self.id}"
                   if unused else f"no unused staged copy of {self.id} on this host")
        self.run.events.append(_hooks.event_summary("DownloadBundle", "Succeeded", message, changed=unused))
        self.run.changed = unused
        self.run.message = f"deployment {self.id}: {message}"
        return self.run

    def discard_stale_staged(self) -> list[str]:
        """Staged copies of other deployments that never got used (their deployment was interrupted)."""
        removed = []
        for other in self.state.list_deployments():
            if other != self.id and (self.state.load_status(other) or {}).get("status") in (_staging.STAGED, STAGING_FAILED):
                self.state.remove_below(self.state.deployments_dir, other)
                removed.append(other)
        return removed

    def install(self) -> dict:
        start = self.hooks.now_iso()
        t0 = time.monotonic()
        root = self.state.bundle_root(self.id)
        appspec = self.new_appspec()
        skeleton = None
        if root is None:
            if self.req.check_mode and self.req.bundle_entries is not None:
                skeleton = root = bundle_skeleton(self.req.bundle_entries)
            elif self.req.check_mode:
                files = [f"{f.get('source')} -> {f.get('destination')}" for f in appspec.get("files") or []]
                return _hooks.event_summary("Install", "Skipped", "check mode: the bundle is not on the host yet; would install "
                                            + (", ".join(files) or "no files"), changed=True, check_mode=True)
            else:
                raise EventFailed(f"Install: the revision of {self.id} is not unpacked on this host; run DownloadBundle first")
        try:
            result = install(self.state, self.id, appspec, root, self.req.file_exists_behavior, check_mode=self.req.check_mode)
        except (InstallError, StateError) as exc:
            raise EventFailed(f"Install failed: {exc}") from exc
        finally:
            if skeleton:
                shutil.rmtree(skeleton, ignore_errors=True)
        self.run.warnings.extend(result.warnings)
        status = "Skipped" if self.req.check_mode else "Succeeded"
        data = _hooks.event_summary("Install", status, result.message, changed=result.changed, install=result.to_dict(),
                                    check_mode=self.req.check_mode)
        data.update(start=start, duration=round(time.monotonic() - t0, 3))
        return data

    def hook(self, name: str) -> dict:
        lc = self.lifecycle
        if lc.uses_previous_revision(name):
            source_id = self.state.last_successful
            if source_id is None:
                return _hooks.event_summary(name, "Skipped", "first deployment on this host: no previous revision to run scripts of")
            appspec = self.state.load_appspec(source_id)
            if appspec is not None:
                try:
                    appspec = validate_host_appspec(appspec, f"stored appspec of deployment {source_id}")
                except StateError as exc:
                    raise EventFailed(str(exc)) from None
            root = self.state.bundle_root(source_id) if appspec is not None else None
            if appspec is None or root is None:
                return _hooks.event_summary(name, "Skipped", f"the last successful deployment {source_id} is no longer on this host")
        else:
            source_id = self.id
            appspec = self.new_appspec()
            root = self.state.bundle_root(self.id)
        hooks = (appspec.get("hooks") or {}).get(name) or []
        if self.req.check_mode:
            scripts = [{"location": h.get("location"), "runas": h.get("runas"), "timeout": h.get("timeout")} for h in hooks]
            return _hooks.event_summary(name, "Skipped", f"check mode: {len(hooks)} script(s) of deployment {source_id} would run",
                                        scripts=scripts, revision_deployment_id=source_id, check_mode=True, changed=bool(hooks))
        if root is None:
            if not hooks:
                return _hooks.event_summary(name, "Succeeded", "no scripts for this event", revision_deployment_id=source_id)
            raise EventFailed(f"{name}: the revision of {self.id} is not unpacked on this host; run DownloadBundle first")
        try:
            result = self.hooks.run_event(name, hooks, root, self.context, self.run.log_file,
                                          grace=self.req.hook_timeout_grace, output=self.req.hook_output)
        except _fs.UnsafePathError as exc:
            raise EventFailed(f"{name}: host state: {exc}") from None
        data = result.to_dict()
        data.update(revision_deployment_id=source_id, changed=bool(hooks))
        return data

    # the run ---------------------------------------------------------------------------------
    def execute(self) -> DeploymentRun:
        lc = self.lifecycle
        run = self.run
        run.last_successful_before = run.last_successful_after = self.state.last_successful
        if self.req.staging == "discard":
            return self.discard_staged()
        if self.req.staging == "stage" and not self.req.check_mode:
            run.pruned = self.discard_stale_staged()
        in_progress = _staging.STAGED if self.req.staging else "InProgress"
        if self.needs_new_appspec() and self.req.appspec is None and self.state.load_appspec(self.id) is None:
            self.new_appspec()  # raises the clear error before anything runs
        if not self.req.check_mode:
            self.state.ensure_deployment_dir(self.id, traversable=self.unpack.runs_as_others())
            self._record(in_progress)
        for index, name in enumerate(self.events):
            try:
                if name == "DownloadBundle":
                    data = self.unpack.run()
                elif name == "Install":
                    data = self.install()
                else:
                    data = self.hook(name)
            except (EventFailed, StateError) as exc:
                data = _hooks.event_summary(name, "Failed", str(exc))
            except _fs.UnsafePathError as exc:
                data = _hooks.event_summary(name, "Failed", f"host state: {exc}")
            run.events.append(data)
            run.changed = run.changed or bool(data.get("changed"))
            if data["status"] == "Failed":
                if lc.uses_previous_revision(name) and self.req.ignore_application_stop_failures:
                    data["ignored"] = True
                    run.warnings.append(f"{name} failed and was ignored (ignore_application_stop_failures): {data['message']}")
                    continue
                run.failed_event = name
                run.message = self._failure_message(data)
                for rest in self.events[index + 1:]:
                    run.events.append(_hooks.event_summary(rest, "Skipped", f"not run: {name} failed"))
                break
        if self.req.check_mode:
            run.plan = run.build_plan()
        if run.failed:
            self._record(STAGING_FAILED if self.req.staging else "Failed")
            return run
        if self.req.complete and not self.req.check_mode:
            if self.state.last_successful != self.id:
                self.state.set_last_successful(self.id)
                run.changed = True
            run.last_successful_after = self.id
            run.pruned = self.state.prune(self.req.keep_revisions, current=self.id)
            self._record("Succeeded")
        else:
            self._record(in_progress)
        done = ", ".join(f"{e['name']} {e['status']}" for e in run.events)
        run.message = f"deployment {self.id}: {done}"
        return run

    def _failure_message(self, data: dict) -> str:
        name = data["name"]
        lines = [f"lifecycle event {name} failed on this host for deployment {self.id}: {data.get('message')}"]
        scripts = data.get("scripts") or []
        if scripts:
            last = scripts[-1]
            if data.get("revision_deployment_id") and data["revision_deployment_id"] != self.id:
                lines.append(f"(the script belongs to the last successful deployment {data['revision_deployment_id']})")
            lines.append(f"log file: {last.get('log_file') or self.run.log_file}")
            if last.get("output_tail"):
                lines.append("output (tail):")
                lines.append(last["output_tail"])
        if self.lifecycle.uses_previous_revision(name):
            lines.append("this event runs the previous revision's scripts; set ignore_application_stop_failures: true to "
                         "log such a failure and carry on with the deployment (CodeDeploy's ignoreApplicationStopFailures)")
        return "\n".join(lines)
