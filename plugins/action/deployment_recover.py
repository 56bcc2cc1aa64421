# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Recover a deployment whose controller died (see plugins/modules/deployment_recover.py).

Picks the deployment (by id, else the group's lock holder, else the newest one that needs it) and
dispatches on its ``deployment_type``: in-place (recovery.py), blue/green EC2 (``bluegreen.recover``),
Lambda (fails with the ``rollwright.deploy.lambda`` command that recovers it).
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail

from ansible_collections.rollwright.deploy.plugins.module_utils import control_requests
from ansible_collections.rollwright.deploy.plugins.module_utils import recovery
from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_store
from ansible_collections.rollwright.deploy.plugins.module_utils.records.creator import store_context
from ansible_collections.rollwright.deploy.plugins.plugin_utils.step_action import RollwrightAction
from ansible_collections.rollwright.deploy.plugins.plugin_utils.step_action import progress as _progress


class ActionModule(RollwrightAction):
    """Controller-side: reads the record and finishes the deployment as its type requires."""

    MODULE = "deployment_recover"

    def run_step(self, result: dict, args: dict, task_vars: dict) -> dict:
        application = args.get("application") or None
        deployment_id = args.get("deployment_id") or None
        if not application and not deployment_id:
            raise AnsibleActionFail("application: expected the application name (rollwright_application), "
                                    "or deployment_id (rollwright_deployment_id)")
        group = args.get("deployment_group") or application
        backend = args.get("backend") or "sqlite"
        clients = self.clients(args)
        options = {"sqlite_path": args.get("sqlite_path"), "dynamodb_table": args.get("dynamodb_table")}
        store = open_store(backend, {k: v for k, v in options.items() if v}, client_factory=clients.client,
                           **store_context(task_vars, self._templar.template))
        record = recovery.select_deployment(store, application, group, deployment_id)
        if record is None:
            result.update(changed=False, deployment_id=None, deployment_type=None, plan=None, report=None,
                          message=f"{application}/{group}: nothing to recover (no deployment in progress, "
                                  "none stopped with hosts out of their load balancers, and the lock is free)")
            return result
        result["deployment_id"] = record.deployment_id
        result["deployment_type"] = record.deployment_type
        lock = store.get_lock(record.application, record.deployment_group)
        if record.deployment_type == "blue_green_ec2":
            return self._bluegreen(result, store, clients, record, lock, bool(args.get("force")))
        if record.deployment_type == "lambda":
            refusal = recovery.lambda_refusal(record, lock, dict(options, backend=backend), self.aws_options(args))
            result["plan"] = {"deployment_type": "lambda", "refused": refusal}
            if refusal:
                raise AnsibleActionFail(refusal)
            result.update(changed=False, report=None,
                          message=f"{record.deployment_id} (Lambda, {record.status}): nothing to do, it ended "
                                  "and does not hold the group's lock")
            return result
        return self._inplace(result, args, store, clients, record, lock)

    def _inplace(self, result: dict, args: dict, store, clients, record, lock) -> dict:
        from ansible_collections.rollwright.deploy.plugins.module_utils import deploy_inputs
        from ansible_collections.rollwright.deploy.plugins.module_utils.loadbalancers import load_balancer_from_config

        # rollwright_load_balancer overrides what the deployment recorded at its start; the recorded
        # memberships are checked against the configuration used
        override = deploy_inputs.normalise_load_balancer(args.get("load_balancer") or None)
        lb_config = recovery.load_balancer_config(record, override)
        plan = recovery.plan_recovery(record, lock, force=bool(args.get("force")), lb_config=lb_config)
        result["plan"] = plan.to_dict()
        if plan.refused:
            raise AnsibleActionFail(plan.refused)
        if not plan.needs_action:
            settled = [] if self.check_mode else self._settle(store, record)
            result.update(changed=bool(settled), report={"requests": settled} if settled else None,
                          message=f"{record.deployment_id} ({record.status}): nothing to do, every host it took out "
                                  "of a load balancer is back (or its install failed) and the lock is free"
                                  + (f"; left out: {', '.join(sorted(plan.left_out))}" if plan.left_out else ""))
            return result
        if self.check_mode:
            restore = "; ".join(f"{host} into {len(ms)} recorded membership(s)" for host, ms in sorted(plan.restore.items()))
            result.update(changed=True, report=None, message=(
                f"DRY RUN - {record.deployment_id} ({record.status}): would restore {restore or 'no host'}"
                + (f"; leave out (install failed): {', '.join(sorted(plan.left_out))}" if plan.left_out else "")
                + (", mark it Stopped" if plan.mark_stopped else "") + ", release the group's lock. Nothing was changed"))
            return result
        lb = None
        if plan.restore:
            lb = load_balancer_from_config(lb_config, clients)
        report = recovery.recover(store, lb, record, plan, healthy_timeout=float(args.get("healthy_timeout") or 300),
                                  progress=_progress)
        report["requests"] = self._settle(store, record)
        result.update(changed=report["changed"], report=report,
                      message=(f"{record.deployment_id}: restored {', '.join(report['restored']) or 'no host'}; "
                               + (f"left out (install failed): {', '.join(sorted(report['left_out']))}; "
                                  if report["left_out"] else "")
                               + (f"not healthy yet: {report['unhealthy']}; " if report["unhealthy"] else "")
                               + f"status {report['status']}; lock {'released' if report['lock_released'] else 'free'}"))
        return result

    @staticmethod
    def _settle(store, record) -> list:
        """Close the dead controller's open control requests as recovery carried them out."""
        settled = control_requests.settle_by_recovery(store, record.deployment_id,
                                                      rollback_hint=recovery.inplace_rollback_command(record))
        for request in settled:
            _progress(f"recover {record.deployment_id}: request {control_requests.describe(request)} {request.state} - "
                      f"{request.message}")
        return [r.to_dict() for r in settled]

    def _bluegreen(self, result: dict, store, clients, record, lock, force: bool) -> dict:
        from ansible_collections.rollwright.deploy.plugins.module_utils.bluegreen import stop_requested

        plan = recovery.bluegreen_plan(record, lock, force=force,
                                       stop_requested=stop_requested(store, record.deployment_id))
        result["plan"] = plan
        if plan["refused"]:
            raise AnsibleActionFail(plan["refused"])
        what = {"rolled_back": "roll back (originals back in service, replacement fleet torn down, status Failed; "
                               "Stopped when a stop was asked or it waited for approval)",
                "retired": "finish retiring the original fleet (status Succeeded)",
                "none": "nothing (it finished)"}[plan["action"]]
        if not plan["needs_action"]:
            result.update(changed=False, report=None,
                          message=f"{record.deployment_id} (blue/green, {record.status}, phase {plan['phase']}): "
                                  "nothing to do, it finished and the lock is free")
            return result
        if self.check_mode:
            result.update(changed=True, report=None,
                          message=f"DRY RUN - {record.deployment_id} (blue/green, phase {plan['phase']}): would {what}. "
                                  "Nothing was changed")
            return result
        report = recovery.recover_bluegreen(store, clients, record, plan, progress=_progress)
        done = {"rolled_back": "rolled back (originals serve, replacement fleet torn down)",
                "retired": "original fleet retired", "none": "nothing to undo"}[report["action"]]
        result.update(changed=report["changed"], report=report,
                      message=(f"{record.deployment_id} (blue/green, phase {report.get('phase_before')}): {done}; "
                               f"status {report['status']}; lock {'released' if report['lock_released'] else 'free'}"))
        return result
