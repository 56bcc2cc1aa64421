# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Lambda blue/green on the controller, in-process, printing every step as it happens.

When the task runs on the controller (connection ``local``, e.g. ``delegate_to: localhost``), the
engine (module_utils/deployments/lambda_deploy.py) runs inside this process and each event (hook, step with
its time, weight and the alarms' state, rollback) is printed with Display as it happens. Anywhere
else the module of the same name is executed on that host as usual (no live progress).

With ``record`` the deployment is recorded and locked through the deployment session
(module_utils/deployments/session.py): the group's lock taken and kept by the lease keeper, the
record created before anything changes, the lifecycle events appended as they happen
(module_utils/deployments/lambda_record.py), the outcome written and the lock released at the end. With
``recover: true`` and ``record`` the interrupted deployment's record and lock are closed too.
"""

from __future__ import annotations

import os

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.text.converters import to_text

from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import control_requests
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import session as deployment_session
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import lambda_record
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import lease
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments.session import (
    DeploymentSession,
    LeaseSettings,
)
from ansible_collections.rollwright.deploy.plugins.module_utils.errors import ControllerGone
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments.lambda_deploy import (
    ARGUMENT_SPEC,
    LambdaDeployment,
    execute,
)
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
        """The record store, when the task gives ``record``, not in check mode."""
        if self.check_mode or options.get("record") is None:
            return None
        from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_store
        from ansible_collections.rollwright.deploy.plugins.module_utils.records.creator import store_context

        record_options = dict(options["record"])
        backend = record_options.pop("backend", None) or "sqlite"
        return open_store(backend, {k: v for k, v in record_options.items() if v}, client_factory=clients.client,
                          **store_context(task_vars, self._templar.template))

    def _safe_point(self, store, deployment_id: str, label: str, renew=None):
        """Requests (stop / promote / pause / resume) are read between traffic steps of a recorded deployment."""
        return control_requests.SafePoint(
            store, deployment_id, control_requests.APPLICABLE["lambda"], heartbeat=renew or (lambda: None),
            progress=lambda message: display.display(f"lambda_deploy {label} {message}"),
            guard=lease.controller_guard())

    def _external_lock(self, options: dict, clients, task_vars: dict, label: str):
        """``lock_token`` given: the caller recorded and locked the deployment itself (deployment_record
        tasks); requests are read when its record exists, and a pause renews the caller's lock."""
        store = self._store(options, clients, task_vars)
        if store is None or options.get("recover") or not options.get("deployment_id"):
            return None
        try:
            record = store.get(options["deployment_id"])
        except RecordNotFound:  # not recorded (the module used on its own): no requests to read
            return None
        lock = (record.application, record.deployment_group, record.deployment_id, options["lock_token"])
        return self._safe_point(store, record.deployment_id, label, renew=lambda: store.heartbeat(lock))

    def run_step(self, result: dict, args: dict, task_vars: dict) -> dict:
        options = {k: args.get(k) for k in ARGUMENT_SPEC}
        options["code"] = self._resolve_zip(options.get("code"))
        clients = self.clients(args)
        label = options.get("function_name") or "appspec"
        if options.get("alias"):
            label = f"{label}:{options['alias']}"

        def progress(event: dict) -> None:
            display.display(f"lambda_deploy {label} [{event.get('time')}] {event.get('message')}")

        store = self._store(options, clients, task_vars)
        if store is not None and options.get("recover"):
            outcome = self._recover(options, clients, store, progress)
        elif store is not None and not options.get("lock_token"):
            outcome = self._recorded(args, options, clients, store, label, progress)
        else:
            control = self._external_lock(options, clients, task_vars, label) if options.get("lock_token") else None
            outcome = execute(options, clients.client, check_mode=self.check_mode, progress=progress,
                              **({"control": control} if control is not None else {}))
            if control is not None:
                control_requests.close_open(control.store, control.deployment_id,
                                            f"the shift ended ({outcome.get('status')}) before it was seen")
        if self.check_mode and not outcome.get("failed") and not options.get("recover"):
            outcome["lock_ttl"] = float(options.get("lock_ttl") or deployment_session.DEFAULT_LOCK_TTL)
        if not self.diff_mode:
            outcome.pop("diff", None)
        result.update(outcome)
        if not result.get("failed"):
            result.pop("failed", None)
        return result

    def _names(self, options: dict, plan: dict) -> tuple:
        application = options.get("application") or plan["function_name"]
        return application, options.get("deployment_group") or f"{plan['function_name']}:{plan['alias']}"

    def _recorded(self, args: dict, options: dict, clients, store, label: str, progress) -> dict:
        """Plan (read only), then record, lock and shift through the deployment session."""
        plan = execute(dict(options, recover=False), clients.client, check_mode=True)
        ttl = float(options.get("lock_ttl") or deployment_session.DEFAULT_LOCK_TTL)
        plan["lock_ttl"] = ttl
        if self.check_mode or plan.get("failed") or plan.get("status") != "Planned":
            return plan  # refused, nothing to do (Unchanged), or a dry run: no record, no lock
        application, group = self._names(options, plan)
        session = DeploymentSession.open(
            store, lambda_record.new_record(plan, options, application, group, ttl), ttl=ttl,
            force=bool(options.get("force_lock")), record_refusal=False,
            lease_settings=LeaseSettings.for_task(options.get("record"), self.aws_options(args), self.task_environment()),
            progress=lambda message: display.display(f"lambda_deploy {label} {message}"))
        recorder = lambda_record.LambdaRecorder(session, plan["function_name"])

        def live(event: dict) -> None:
            progress(event)
            recorder(event)

        try:
            session.mark_in_progress()
            control = self._safe_point(store, session.deployment_id, label, renew=session.renew)
            outcome = execute(dict(options, deployment_id=session.deployment_id), clients.client, progress=live,
                              control=control)
        except ControllerGone:
            raise  # the lease keeper marks it Stopped and leaves the lock (and the alias) for recovery
        except Exception as exc:
            session.end("Failed", error=str(exc) or type(exc).__name__)
            raise
        outcome["record_status"] = lambda_record.close(session, outcome, plan)
        outcome["lock_ttl"] = ttl
        return outcome

    def _recover(self, options: dict, clients, store, progress) -> dict:
        """recover: true with a record: the alias back, the interrupted deployment's record and lock closed."""
        if self.check_mode:
            return execute(options, clients.client, check_mode=True, progress=progress)
        for key in ("function_name", "alias"):
            if not options.get(key):
                raise AnsibleActionFail(f"{key}: required with recover: true")
        engine = LambdaDeployment(clients.client("lambda"), progress=progress)
        application, group = self._names(options, options)
        result = deployment_session.recover_lambda(
            store, application, group,
            lambda version: engine.recover(options["function_name"], options["alias"], version),
            force=bool(options.get("force_lock")), current_version=options.get("current_version"),
            function_name=options["function_name"])
        held = result.get("recovered_record")
        if held:  # the dead controller's open requests, as recovery carried them out
            version = (result.get("final_alias") or {}).get("function_version")
            result["requests"] = [r.to_dict() for r in control_requests.settle_by_recovery(
                store, held, promote_outcome=f"the alias went back to version {version}")]
        result["failed"] = False
        return result
