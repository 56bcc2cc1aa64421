# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Recover a deployment whose controller died (see plugins/modules/deployment_recover.py).

Picks the deployment (by id, else the group's lock holder, else the newest one that needs it) and
hands it to ``deployment_session.recover``, which dispatches on its ``deployment_type``.
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail

from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import inputs as deploy_inputs
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import session as deployment_session
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import recovery
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
        try:
            outcome = deployment_session.recover(
                store, clients, record, force=bool(args.get("force")), check_mode=self.check_mode,
                load_balancer=deploy_inputs.normalise_load_balancer(args.get("load_balancer") or None),
                healthy_timeout=float(args.get("healthy_timeout") or 300),
                record_options=dict(options, backend=backend), aws_options=self.aws_options(args), progress=_progress)
        except recovery.RecoveryError as exc:  # refused: the message says why and what to do
            raise AnsibleActionFail(str(exc)) from None
        result.update(outcome)
        return result
