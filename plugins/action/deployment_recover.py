# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Recover a deployment whose controller died (see plugins/modules/deployment_recover.py)."""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.rollwright.deploy.plugins.module_utils import recovery
from ansible_collections.rollwright.deploy.plugins.module_utils.records import RecordError

display = Display()


def _progress(message: str) -> None:
    display.display(f"rollwright: {message}")


class ActionModule(ActionBase):
    """Controller-side: reads the record, registers recorded memberships, marks the record, releases the lock."""

    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        application = args.get("application")
        if not application:
            raise AnsibleActionFail("application: expected the application name (rollwright_application)")
        group = args.get("deployment_group") or application
        backend = args.get("backend") or "sqlite"
        if backend not in ("sqlite", "dynamodb"):
            raise AnsibleActionFail(f"backend: expected sqlite or dynamodb, got {backend!r}")
        try:
            from ansible_collections.rollwright.deploy.plugins.module_utils.aws_session import aws_client_factory
            from ansible_collections.rollwright.deploy.plugins.module_utils.loadbalancers import load_balancer_from_config
            from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_store
            from ansible_collections.rollwright.deploy.plugins.module_utils import deploy_inputs

            clients = aws_client_factory(args.get("aws") or {})
            options = {"sqlite_path": args.get("sqlite_path"), "dynamodb_table": args.get("dynamodb_table")}
            store = open_store(backend, {k: v for k, v in options.items() if v}, client_factory=clients.client)
            record = recovery.select_deployment(store, application, group, args.get("deployment_id") or None)
            if record is None:
                result.update(changed=False, deployment_id=None, plan=None, report=None,
                              message=f"{application}/{group}: nothing to recover (no deployment in progress, "
                                      "none stopped with hosts out of their load balancers, and the lock is free)")
                return result
            lock = store.get_lock(application, group)
            plan = recovery.plan_recovery(record, lock, force=bool(args.get("force")))
            result["deployment_id"] = record.deployment_id
            result["plan"] = plan.to_dict()
            if plan.refused:
                raise AnsibleActionFail(plan.refused)
            if not plan.needs_action:
                result.update(changed=False, report=None,
                              message=f"{record.deployment_id} ({record.status}): nothing to do, every host it took out "
                                      "of a load balancer is back (or its install failed) and the lock is free"
                                      + (f"; left out: {', '.join(sorted(plan.left_out))}" if plan.left_out else ""))
                return result
            if self._task.check_mode:
                result.update(changed=True, report=None, message=f"{record.deployment_id}: would recover (check mode)")
                return result
            lb = None
            if plan.restore:
                # rollwright_load_balancer overrides what the deployment recorded at its start
                override = deploy_inputs.normalise_load_balancer(args.get("load_balancer") or None)
                lb = load_balancer_from_config(recovery.load_balancer_config(record, override), clients)
            report = recovery.recover(store, lb, record, plan, healthy_timeout=float(args.get("healthy_timeout") or 300),
                                      progress=_progress)
        except (recovery.RecoveryError, RecordError, ValueError) as exc:
            raise AnsibleActionFail(str(exc)) from exc
        except Exception as exc:  # pylint: disable=broad-except  # AWS and load-balancer errors, shown as they are
            if isinstance(exc, AnsibleActionFail):
                raise
            raise AnsibleActionFail(f"recovery failed: {exc}") from exc
        result.update(changed=report["changed"], report=report,
                      message=(f"{record.deployment_id}: restored {', '.join(report['restored']) or 'no host'}; "
                               + (f"left out (install failed): {', '.join(sorted(report['left_out']))}; "
                                  if report["left_out"] else "")
                               + (f"not healthy yet: {report['unhealthy']}; " if report["unhealthy"] else "")
                               + f"status {report['status']}; lock {'released' if report['lock_released'] else 'free'}"))
        return result
