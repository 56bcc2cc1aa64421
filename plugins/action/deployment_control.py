# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Write a stop / promote / pause / resume request for a running deployment (plugins/modules/deployment_control.py)."""

from __future__ import annotations

import time

from ansible.errors import AnsibleActionFail

from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import control_requests
from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_store
from ansible_collections.rollwright.deploy.plugins.module_utils.records.creator import store_context
from ansible_collections.rollwright.deploy.plugins.plugin_utils.step_action import RollwrightAction
from ansible_collections.rollwright.deploy.plugins.plugin_utils.step_action import progress as _progress

WAIT_POLL_SECONDS = 0.5


class ActionModule(RollwrightAction):
    """Controller-side: one conditional write (or none in check mode), then optionally wait for its outcome."""

    MODULE = "deployment_control"

    def run_step(self, result: dict, args: dict, task_vars: dict) -> dict:
        backend = args.get("backend") or "sqlite"
        options = {"sqlite_path": args.get("sqlite_path"), "dynamodb_table": args.get("dynamodb_table")}
        store = open_store(backend, {k: v for k, v in options.items() if v}, client_factory=self.clients(args).client,
                           **store_context(task_vars, self._templar.template))
        record = control_requests.find_deployment(store, args.get("deployment_id") or None,
                                                  args.get("application") or None, args.get("deployment_group") or None)
        action = args["action"]
        request = control_requests.submit(store, record.deployment_id, action, rollback=bool(args.get("rollback")),
                                          max_pause=args.get("max_pause"), check_mode=self.check_mode)
        live = control_requests.status(store, record)
        result.update(deployment_id=record.deployment_id, deployment_type=record.deployment_type,
                      controller_alive=live["controller_alive"])
        if live["controller_alive"]:
            who = "its controller"
        elif live["awaiting_approval"]:
            who = ("rollwright.deploy.recover (a stop) or rollwright.deploy.continue: the deployment waits for approval "
                   "with no process running")
        else:
            who = "nobody yet: its controller is not alive (no fresh lease); run rollwright.deploy.recover to carry it out"
        if self.check_mode:
            result.update(changed=True, request=request.to_dict(),
                          message=f"DRY RUN - would ask {record.deployment_id} ({record.deployment_type}, {record.status}) "
                                  f"to {control_requests.describe(request)}; handled by {who}. Nothing was written")
            return result
        _progress(f"deployment {record.deployment_id}: requested {control_requests.describe(request)}")
        if args.get("wait"):
            request = self._wait(store, record.deployment_id, request, float(args.get("wait_timeout") or 600))
        result.update(changed=True, request=request.to_dict(),
                      message=f"{record.deployment_id}: {control_requests.describe(request)} is {request.state}"
                              + (f" ({request.message})" if request.message else f"; handled by {who}"))
        if request.state == "Refused":
            result.update(failed=True, msg=result["message"])
        return result

    @staticmethod
    def _wait(store, deployment_id: str, request, timeout: float):
        deadline = time.monotonic() + timeout
        while True:
            current = next((r for r in store.list_requests(deployment_id) if r.request_id == request.request_id), request)
            handled = not current.open or (current.action == "pause" and current.state == "Acknowledged")
            if handled:
                return current
            if time.monotonic() >= deadline:
                raise AnsibleActionFail(f"wait_timeout: {control_requests.describe(current)} is still {current.state} "
                                        f"after {timeout:g} s (is the controller alive? rollwright.deploy.recover "
                                        "carries out requests of a dead one)")
            time.sleep(WAIT_POLL_SECONDS)
