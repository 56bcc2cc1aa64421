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
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.rollwright.deploy.plugins.module_utils.lambda_deploy import (
    ARGUMENT_SPEC,
    LAMBDA_CLIENT_CONFIG,
    execute,
)

display = Display()

_LOCAL_TRANSPORTS = ("local", "ansible.builtin.local", "ansible.legacy.local")


class ActionModule(ActionBase):
    """See plugins/modules/lambda_deploy.py for the documentation."""

    TRANSFERS_FILES = False

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
        result = super().run(tmp, task_vars)
        del tmp

        if not self._runs_on_controller():
            # Delegated to a non-controller host: run the module there.
            result.update(self._execute_module(module_name="rollwright.deploy.lambda_deploy",
                                               module_args=self._task.args, task_vars=task_vars))
            return result

        from ansible_collections.rollwright.deploy.plugins.module_utils.aws_session import (
            AWS_OPTION_SPEC,
            AWSSessionError,
            aws_client_factory,
        )

        spec = {k: dict(v) for k, v in ARGUMENT_SPEC.items()}
        spec.update({k: dict(v) for k, v in AWS_OPTION_SPEC.items()})
        dummy, args = self.validate_argument_spec(argument_spec=spec)
        aws_options = {k: args.get(k) for k in AWS_OPTION_SPEC}
        options = {k: args.get(k) for k in ARGUMENT_SPEC}
        options["code"] = self._resolve_zip(options.get("code"))
        check_mode = bool(self._task.check_mode) if self._task.check_mode is not None else bool(self._play_context.check_mode)
        diff = bool(self._task.diff) if self._task.diff is not None else bool(self._play_context.diff)

        try:
            default_factory = aws_client_factory(aws_options)
            lambda_options = dict(aws_options)
            lambda_options["aws_config"] = dict(aws_options.get("aws_config") or {}, **LAMBDA_CLIENT_CONFIG)
            lambda_factory = aws_client_factory(lambda_options)
        except AWSSessionError as exc:
            raise AnsibleActionFail(str(exc)) from None

        def client(service: str):
            try:
                return (lambda_factory if service == "lambda" else default_factory).client(service)
            except AWSSessionError as exc:
                raise AnsibleActionFail(str(exc)) from None

        label = options.get("function_name") or "appspec"
        if options.get("alias"):
            label = f"{label}:{options['alias']}"

        def progress(event: dict) -> None:
            display.display(f"lambda_deploy {label} [{event.get('time')}] {event.get('message')}")

        try:
            outcome = execute(options, client, check_mode=check_mode, progress=progress)
        except AnsibleActionFail:
            raise
        except Exception as exc:  # botocore errors and the like: fail the task with the message
            code = None
            response = getattr(exc, "response", None)
            if isinstance(response, dict):
                code = (response.get("Error") or {}).get("Code")
            raise AnsibleActionFail(f"AWS call failed during the Lambda deployment: {to_text(exc)}"
                                    + (f" ({code})" if code else "")) from None
        if not diff:
            outcome.pop("diff", None)
        result.update(outcome)
        if not result.get("failed"):
            result.pop("failed", None)
        return result
