# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Lambda blue/green on the controller, in-process, printing every step as it happens.

When the task runs on the controller (connection ``local``, e.g. ``delegate_to: localhost``), the
engine (module_utils/lambda_deploy.py) runs inside this process and each event (hook, step with
its time, weight and the alarms' state, rollback) is printed with Display as it happens. Anywhere
else the module of the same name is executed on that host as usual (no live progress).
"""

from __future__ import annotations

import os

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.text.converters import to_text

from ansible_collections.rollwright.deploy.plugins.module_utils import control_requests
from ansible_collections.rollwright.deploy.plugins.module_utils import recovery
from ansible_collections.rollwright.deploy.plugins.module_utils.lambda_deploy import ARGUMENT_SPEC, execute
from ansible_collections.rollwright.deploy.plugins.module_utils.records import RecordNotFound
from ansible_collections.rollwright.deploy.plugins.plugin_utils.step_action import RollwrightAction, display

_LOCAL_TRANSPORTS = ("local", "ansible.builtin.local", "ansible.legacy.local")


class ActionModule(RollwrightAction):
    """See plugins/modules/lambda_deploy.py for the documentation."""

    MODULE = "lambda_deploy"

    def argument_spec(self) -> dict:
        spec = {k: dict(v) for k, v in ARGUMENT_SPEC.items()}
        spec.update({k: v for k, v in super().argument_spec().items() if k not in ARGUMENT_SPEC and k != "aws"})
        return spec

    def _runs_on_controller(self) -> bool:
        transport = getattr(self._connection, "transport", None)
        load_name = getattr(self._connection, "_load_name", None)
        return transport in _LOCAL_TRANSPORTS or load_name in _LOCAL_TRANSPORTS

    def _resolve_zip(self, code: dict | None) -> dict | None:
        if not code or not code.get("zip_file"):
            return code
        path = os.path.expanduser(code["zip_file"])
        if not os.path.isabs(path):
            try:
                path = self._find_needle("files", path)
            except Exception as exc:  # AnsibleError with the searched paths
                raise AnsibleActionFail(f"code.zip_file: {to_text(exc)}") from None
        return dict(code, zip_file=path)

    def run(self, tmp=None, task_vars=None):
        if not self._runs_on_controller():
            # Delegated to a non-controller host: run the module there.
            result = super(RollwrightAction, self).run(tmp, task_vars)  # pylint: disable=bad-super-call
            result.update(self._execute_module(module_name="rollwright.deploy.lambda_deploy",
                                               module_args=self._task.args, task_vars=task_vars))
            return result
        return super().run(tmp, task_vars)

    def _store(self, options: dict, clients, task_vars: dict):
        """The record store, when the task names a recorded deployment (``record`` and ``deployment_id``), not in check mode."""
        if self.check_mode or options.get("record") is None or not options.get("deployment_id"):
            return None
        from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_store
        from ansible_collections.rollwright.deploy.plugins.module_utils.records.creator import store_context

        record_options = dict(options["record"])
        backend = record_options.pop("backend", None) or "sqlite"
        return open_store(backend, {k: v for k, v in record_options.items() if v}, client_factory=clients.client,
                          **store_context(task_vars, self._templar.template))

    def _safe_point(self, options: dict, clients, task_vars: dict, label: str):
        """Requests (stop / promote / pause / resume) are read when the deployment has a record: with
        ``record`` and ``deployment_id`` given, not in check mode, not for a recovery."""
        if options.get("recover"):
            return None
        store = self._store(options, clients, task_vars)
        if store is None:
            return None
        try:
            record = store.get(options["deployment_id"])
        except RecordNotFound:  # not recorded (the module used on its own): no requests to read
            return None
        token = options.get("lock_token")
        lock = (record.application, record.deployment_group, record.deployment_id, token)

        def renew() -> None:
            if token:
                store.heartbeat(lock)

        return control_requests.SafePoint(
            store, record.deployment_id, control_requests.APPLICABLE["lambda"], heartbeat=renew,
            progress=lambda message: display.display(f"lambda_deploy {label} {message}"),
            guard=recovery.controller_guard(os.getppid()))

    def run_step(self, result: dict, args: dict, task_vars: dict) -> dict:
        options = {k: args.get(k) for k in ARGUMENT_SPEC}
        options["code"] = self._resolve_zip(options.get("code"))
        clients = self.clients(args)
        label = options.get("function_name") or "appspec"
        if options.get("alias"):
            label = f"{label}:{options['alias']}"

        def progress(event: dict) -> None:
            display.display(f"lambda_deploy {label} [{event.get('time')}] {event.get('message')}")

        control = self._safe_point(options, clients, task_vars, label)
        outcome = execute(options, clients.client, check_mode=self.check_mode, progress=progress,
                          **({"control": control} if control is not None else {}))
        if control is not None:
            control_requests.close_open(control.store, control.deployment_id,
                                        f"the shift ended ({outcome.get('status')}) before it was seen")
        elif options.get("recover") and not outcome.get("failed"):
            store = self._store(options, clients, task_vars)
            if store is not None:  # recovery of a dead controller's shift: its open requests, as recovery did them
                version = (outcome.get("final_alias") or {}).get("function_version")
                outcome["requests"] = [r.to_dict() for r in control_requests.settle_by_recovery(
                    store, options["deployment_id"], promote_outcome=f"the alias went back to version {version}")]
        if not self.diff_mode:
            outcome.pop("diff", None)
        result.update(outcome)
        if not result.get("failed"):
            result.pop("failed", None)
        return result
