# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side steps of an EC2 blue/green deployment, run in-process so waits print progress live.

Shares the in-place step plugin's plumbing (AWS clients, record store, revision fetch, reading
registered host results) by subclassing it; the deployment logic is module_utils/deployments/bluegreen.py.
"""

from __future__ import annotations

import os
import time

from ansible.errors import AnsibleActionFail

from ansible_collections.rollwright.deploy.plugins.action.inplace_step import ActionModule as _InPlaceStep
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import inputs as deploy_inputs
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import fleet_provision as fp
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import lease
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import recovery
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments.bluegreen import (
    CONNECTION_VARS,
    DEFAULT_CONTINUE_WAIT,
    ORIGINAL_ACTIONS,
    READY_ACTIONS,
    REROUTE_MODES,
    BlueGreenRun,
    recover,
    request_continue,
    stop_requested,
)

from ansible_collections.rollwright.deploy.plugins.plugin_utils.step_action import progress as _progress
from ansible_collections.rollwright.deploy.plugins.plugin_utils.step_action import state_result

# The variables the bluegreen_ec2 role registers the hosts' results under, read when a task does not name them
# (host_results, connect_results).
RESULT_VARS = {
    "install": "_bluegreen_r_install",
    "connect": "_bluegreen_r_connect",
    "pre": "_bluegreen_r_pre",
    "post": "_bluegreen_r_post",
}


def _choice(value, allowed, field):
    if value not in allowed:
        raise AnsibleActionFail(f"{field}: expected one of {', '.join(allowed)}, got {value!r}")
    return value


class ActionModule(_InPlaceStep):
    """See plugins/modules/bluegreen_step.py for the documentation."""

    MODULE = "bluegreen_step"

    def run_step(self, result: dict, args: dict, task_vars: dict) -> dict:
        step = args["step"]
        clients = self.clients(args)
        store = self._store(args, clients, task_vars)
        if step == "recover":
            return self._recover(result, args, store, clients)
        if step == "continue":
            return self._continue(result, args, store)
        if step == "resume" and self.check_mode:
            raise AnsibleActionFail("step=resume: not run in check mode (it takes the handed-over deployment's lock)")
        # Ansible's workers outlive a killed ansible-playbook (they run in their own session): an
        # orphaned step must not go on changing load balancers while `recover` puts them back.
        guard = lease.controller_guard()

        def guarded_progress(message: str) -> None:
            guard()
            _progress(message)

        def guarded_sleep(seconds: float) -> None:
            guard()
            time.sleep(seconds)

        run = BlueGreenRun(store, clients, progress=guarded_progress, sleep=guarded_sleep)
        if step == "start":
            state = self._start(args, task_vars, clients, run)
        elif step == "resume":
            if not args.get("deployment_id"):
                raise AnsibleActionFail("deployment_id: required for step=resume (the deployment handed over in Ready)")
            state = run.resume(args["deployment_id"], host_vars=args.get("host_vars") or {})
            hostvars = task_vars.get("hostvars", {})
            state["inventory_originals"] = [h["name"] for h in state["originals"] if h["name"] in hostvars]
            state["new_hosts"] = self._new_hosts(state, task_vars, run)
        else:
            state = dict(args.get("state") or {})
            if not state.get("deployment_id"):
                raise AnsibleActionFail("state: expected the deployment state returned by step=start")
            if state.get("dry_run"):
                result.update(changed=False, ansible_facts={"_bluegreen": state}, deployment_id=state["deployment_id"],
                              done=True)
                return result
            if self.check_mode:
                raise AnsibleActionFail(f"step={step} in check mode takes the dry-run state of step=start run in "
                                        "check mode; with a real deployment's state it would change it")
            if step == "provision":
                state = run.provision(state, timeout=float(state["options"].get("provision_timeout") or 600))
                state["new_hosts"] = self._new_hosts(state, task_vars, run)
            elif step == "ready":
                names = run.replacement_names(state)
                results = self._host_results(task_vars, names, args["host_results"] or RESULT_VARS["install"])
                connects = self._host_results(task_vars, names, args["connect_results"] or RESULT_VARS["connect"])
                for name, connect in connects.items():
                    if connect and connect.get("failed") and (not results.get(name) or results[name].get("skipped")):
                        results[name] = {"failed": True, "msg": f"did not answer over SSH: {connect.get('msg', '')}".strip()}
                state = run.ready(state, results)
            elif step == "reroute":
                names = run.replacement_names(state) + run.original_names(state)
                state = run.reroute(state, self._host_results(task_vars, names, args["host_results"] or RESULT_VARS["pre"]))
            elif step == "finish":
                names = run.replacement_names(state) + run.original_names(state)
                state = run.finish(state, self._host_results(task_vars, names, args["host_results"] or RESULT_VARS["post"]))
            elif step == "abort":
                state = run.abort(state, args.get("reason") or "unexpected error")
        if not state.get("dry_run"):
            self._keep_lease(args, state)  # the lease keeper renews the lock between and during steps
        return state_result(result, state, "_bluegreen")

    def _recover(self, result: dict, args: dict, store, clients) -> dict:
        """step=recover: finish a deployment whose controller died (check mode: the plan only)."""
        deployment_id = args.get("deployment_id")
        if not deployment_id and args.get("application"):
            info = store.get_lock(args["application"], args.get("deployment_group") or args["application"])
            deployment_id = info.deployment_id if info else None
            if not deployment_id:
                result.update(changed=False, recovery={"action": "none", "reason": "no deployment holds the group's lock"})
                return result
        if not deployment_id:
            raise AnsibleActionFail("deployment_id: required for step=recover (or application and deployment_group: "
                                    "the deployment that holds the group's lock)")
        if self.check_mode:
            record = store.get(deployment_id)
            plan = recovery.bluegreen_plan(record, store.get_lock(record.application, record.deployment_group),
                                           force=bool(args.get("force_lock")),
                                           stop_requested=stop_requested(store, deployment_id))
            result.update(changed=bool(plan["needs_action"]), deployment_id=deployment_id,
                          recovery={"action": plan["action"], "check_mode": True, "plan": plan})
            return result
        outcome = recover(store, clients, deployment_id, progress=_progress, force=bool(args.get("force_lock")))
        result.update(changed=outcome["action"] != "none", recovery=outcome, deployment_id=deployment_id)
        return result

    def _continue(self, result: dict, args: dict, store) -> dict:
        """step=continue: let a deployment waiting in Ready reroute."""
        if self.check_mode:
            raise AnsibleActionFail("step=continue: not run in check mode (it only records a signal; "
                                    "run it without --check to let the deployment reroute)")
        wait = fp.parse_duration(args["wait"], "wait") if args.get("wait") not in (None, "") else DEFAULT_CONTINUE_WAIT
        outcome = request_continue(store, deployment_id=args.get("deployment_id") or None,
                                   application=args.get("application") or None,
                                   deployment_group=args.get("deployment_group") or None,
                                   by=args.get("creator") or store.lock_owner(), wait=wait, progress=_progress)
        result.update(changed=outcome["changed"], deployment_id=outcome["deployment_id"], continued=outcome)
        return result

    # ------------------------------------------------------------------ start
    def _start(self, args: dict, task_vars: dict, clients, run: BlueGreenRun) -> dict:
        application = args.get("application")
        if not application:
            raise AnsibleActionFail("application: expected the application name (rollwright_application)")
        group = args.get("deployment_group") or application
        revision = deploy_inputs.normalise_revision(args.get("revision"))
        lb_config = deploy_inputs.normalise_load_balancer(args.get("load_balancer"), args.get("target_group_arns"),
                                                          args.get("classic_elb_names"))
        replacement = fp.normalise_replacement(
            args.get("replacement"), copy_auto_scaling_group=args.get("copy_auto_scaling_group") or "",
            launch_template=args.get("launch_template") or "", launch_template_version=args.get("launch_template_version"),
            count=args.get("count"), subnets=args.get("subnets") or "", instance_tags=args.get("instance_tags") or "")
        original_fleet = fp.normalise_original(
            args.get("original_fleet"), hosts=args.get("original_hosts") or "", tags=args.get("original_tags") or "",
            auto_scaling_group=args.get("original_auto_scaling_group") or "", replacement=replacement)
        reroute = dict(args.get("reroute") or {})
        reroute.setdefault("mode", args.get("reroute_mode") or "targets")
        reroute.setdefault("listener_arn", args.get("listener_arn") or None)
        reroute.setdefault("rule_arn", args.get("listener_rule_arn") or None)
        _choice(reroute["mode"], REROUTE_MODES, "reroute.mode")
        ready = dict(args.get("ready") or {})
        ready.setdefault("action_on_timeout", args.get("ready_action") or "continue")
        ready = {"action": _choice(ready["action_on_timeout"], READY_ACTIONS, "ready.action_on_timeout"),
                 "wait": fp.parse_duration(ready.get("wait", args.get("ready_wait") or "30m"), "ready.wait"),
                 "split": ready.get("split", args.get("ready_split") or False)}
        if not isinstance(ready["split"], bool):
            raise AnsibleActionFail(f"ready.split: expected true or false, got {ready['split']!r}")
        if ready["split"] and ready["action"] != "stop":
            raise AnsibleActionFail("bluegreen_ec2_ready_split: the split form ends the job in Ready to wait for an "
                                    "approval; it needs bluegreen_ec2_ready_action: stop (the wait is the approval window)")
        original = dict(args.get("original") or {})
        original.setdefault("action", args.get("original_action") or "terminate")
        original = {"action": _choice(original["action"], ORIGINAL_ACTIONS, "original.action"),
                    "wait": fp.parse_duration(original.get("wait", args.get("original_wait") or "1h"), "original.wait"),
                    "delete_auto_scaling_group": bool(original.get("delete_auto_scaling_group",
                                                                   args.get("delete_original_auto_scaling_group") or False))}
        id_var = args.get("instance_id_var") or "ec2_instance_id"
        inventory_ids = {}
        hostvars = task_vars.get("hostvars", {})
        for host in task_vars.get("groups", {}).get("all", []):
            try:
                hv = hostvars[host]
                iid = hv.get(id_var) or hv.get("instance_id")
            except Exception:  # pylint: disable=broad-except
                continue
            if iid:
                inventory_ids[str(iid)] = host
        cache_dir = os.path.expanduser(args.get("cache_dir") or "~/.cache/rollwright/bundles")
        identity, appspec = self._fetch_revision(revision, clients, cache_dir, args.get("appspec_name") or "appspec.yml")
        options = {
            "healthy_timeout": float(args.get("healthy_timeout") or 300),
            "drain_timeout": float(args["drain_timeout"]) if args.get("drain_timeout") not in (None, "") else None,
            "provision_timeout": float(args.get("provision_timeout") or 600),
            "host_vars": dict(args.get("host_vars") or {}),
        }
        state = run.start(application=application, deployment_group=group, revision=identity, appspec=appspec,
                          config=args.get("deployment_config"), lb_config=lb_config, reroute=reroute, ready=ready,
                          original=original, replacement_spec=replacement, original_spec=original_fleet,
                          inventory_ids=inventory_ids, options=options, creator=args.get("creator") or "user",
                          rollback_of=args.get("rollback_of"), force_lock=bool(args.get("force_lock")),
                          dry_run=self.check_mode)
        if state.get("dry_run"):
            return state
        state["inventory_originals"] = [h["name"] for h in state["originals"] if h["name"] in task_vars.get("hostvars", {})]
        return state

    # ------------------------------------------------------------------ hosts to add
    def _new_hosts(self, state: dict, task_vars: dict, run: BlueGreenRun) -> list[dict]:
        """Hosts for add_host: every replacement, and originals that are not in the inventory yet."""
        connection = dict(state["options"].get("host_vars") or {})
        hostvars = task_vars.get("hostvars", {})
        if not connection:
            for name in state.get("inventory_originals") or []:
                hv = hostvars[name]
                connection = {k: hv.get(k) for k in CONNECTION_VARS if hv.get(k) not in (None, "")}
                break
        out = []
        for host in state["replacements"]:
            out.append({"name": host["name"], "address": host["address"], "instance_id": host["instance_id"],
                        "group": "rollwright_bluegreen_replacement", "vars": connection})
        missing = [h for h in state["originals"] if h["name"] not in (state.get("inventory_originals") or [])]
        described = run.fleet.describe([h["instance_id"] for h in missing]) if missing else {}
        for host in state["originals"]:
            if host in missing:
                address = (described.get(host["instance_id"]) or {}).get("private_ip")
                out.append({"name": host["name"], "address": address, "instance_id": host["instance_id"],
                            "group": "rollwright_bluegreen_original", "vars": connection})
            else:
                out.append({"name": host["name"], "address": None, "instance_id": host["instance_id"],
                            "group": "rollwright_bluegreen_original", "vars": {}})
        return out
