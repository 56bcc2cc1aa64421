# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The base of the collection's controller-side action plugins (the deployment steps).

What every step plugin needs once, as amazon.aws's ``plugin_utils/base.py`` does for its plugins:

- its arguments validated like a module's, against the documentation in ``plugins/modules/<name>.py``
  (unknown and mistyped options refused, defaults and choices applied), the amazon.aws connection
  options included;
- its options given one by one, or as one dict (``inputs``: a role's start inputs, written once);
- AWS clients from the one client path (``module_utils/aws/client.py``): the ``aws:`` dict the roles
  pass, over top-level amazon.aws options (so ``module_defaults: {group/rollwright.deploy.aws: ...}``
  reaches it), and the task's ``environment:`` over the controller's;
- progress lines (retries of AWS calls included) and the error boundary: a collection error or an
  AWS error becomes a failed result naming the step and the field, never a plugin traceback.
"""

from __future__ import annotations

import copy
import gc
import importlib
import os
from typing import Any, Callable, Optional

import yaml
from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.rollwright.deploy.plugins.module_utils.aws import client as aws_session
from ansible_collections.rollwright.deploy.plugins.module_utils.errors import error_result

display = Display()

# Imported by ansible-playbook itself before it forks a step's worker: boto3 and the models then
# load once per run, not once per step.
aws_session.warm()


def kept_for_the_run() -> None:
    """What ansible-playbook has loaded by now (Ansible, boto3, the models, a step's module_utils and specs) lives as
    long as it does: kept out of the cyclic collector's sight (``gc.freeze``), so that neither ansible-playbook's
    collections nor a forked step's traverse it again (a step's worker then shares those pages instead of copying
    them), nor does the interpreter's exit collect it. Measured at 12 hosts: the staging step spent 0.23 to 0.26 s in
    collections, 0.055 s after; ansible-playbook took 0.4 to 0.5 s from its last task to its exit, 0.2 s after."""
    gc.freeze()


kept_for_the_run()

_SPEC_KEYS = ("type", "elements", "choices", "default", "required", "aliases", "no_log")
_SPECS: dict[str, dict] = {}


def progress(message: str) -> None:
    """One progress line on the controller's output."""
    display.display(f"rollwright: {message}")


def spec_of(options: dict) -> dict:
    """An argument spec (for ArgumentSpecValidator) from documented options: a module's, or a role's."""
    spec = {}
    for name, doc in (options or {}).items():
        entry = {k: doc[k] for k in _SPEC_KEYS if k in doc}
        if doc.get("suboptions"):
            entry["options"] = spec_of(doc["suboptions"])
        spec[name] = entry
    return spec


def _doc(kind: str, name: str, attribute: str = "DOCUMENTATION") -> dict:
    module = importlib.import_module(f"ansible_collections.rollwright.deploy.plugins.{kind}.{name}")
    if kind == "doc_fragments":
        module = module.ModuleDocFragment
    # libyaml's loader where PyYAML has it: parsing a module's documentation in pure Python costs tenths of a second
    return yaml.load(getattr(module, attribute), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}


def documented_spec(module_name: str) -> dict:
    """The argument spec of ``plugins/modules/<module_name>.py``'s documentation.

    The collection's own doc fragments are merged; amazon.aws's are the connection options, which
    ``RollwrightAction.argument_spec`` adds from the client path.
    """
    if module_name not in _SPECS:
        doc = _doc("modules", module_name)
        options: dict = {}
        for fragment in doc.get("extends_documentation_fragment") or []:
            if fragment.startswith("rollwright.deploy."):
                name, dummy, attribute = fragment[len("rollwright.deploy."):].partition(".")
                options.update(_doc("doc_fragments", name, (attribute or "documentation").upper()).get("options") or {})
        options.update(doc.get("options") or {})
        _SPECS[module_name] = spec_of(options)
    return {k: dict(v) for k, v in _SPECS[module_name].items()}


class RollwrightAction(ActionBase):
    """Validated arguments, AWS clients, progress and one error boundary; subclasses implement run_step."""

    TRANSFERS_FILES = False
    _requires_connection = False
    MODULE = ""  # the module whose documentation is the argument spec
    AWS_OPTIONS = True  # takes the amazon.aws connection options
    # module_utils (under plugins/module_utils) a step imports when it runs; see __init_subclass__
    WARM_IMPORTS: tuple = ()
    # the modules whose documented argument specs a step's host calls validate against (host_lifecycle's action)
    WARM_SPECS: tuple = ()
    # options whose dict value is handed to the step as it is, not copied by the validation (see validated_args)
    PASSED_THROUGH: tuple = ("state",)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Read the argument spec and import the step's module_utils when ansible-playbook loads the plugin.

        ansible-playbook loads an action plugin's class before it forks the task's worker, so what is
        done here is done once per run instead of once per step (YAML documentation parsed, modules
        compiled).
        """
        super().__init_subclass__(**kwargs)
        try:
            for module in (cls.MODULE, *cls.WARM_SPECS):
                if module:
                    documented_spec(module)
            for name in cls.WARM_IMPORTS:
                importlib.import_module(f"ansible_collections.rollwright.deploy.plugins.module_utils.{name}")
        except Exception:  # pylint: disable=broad-except  # the step itself reports what is wrong
            pass
        kept_for_the_run()

    def argument_spec(self) -> dict:
        spec = documented_spec(self.MODULE)
        if self.AWS_OPTIONS:
            for name, option in aws_session.AWS_OPTION_SPEC.items():
                spec[name] = {k: v for k, v in option.items() if k != "fallback"}  # env applied by the client path
            if "aws" in spec:  # the nested dict: its secret sub-options no_log, its typos refused
                spec["aws"] = copy.deepcopy(aws_session.AWS_DICT_OPTION)
        return spec

    def validated_args(self) -> dict:
        spec = self.argument_spec()
        if "inputs" in spec:
            self._task.args = self.merged_inputs(self._task.args)
        # A previous step's state is checked to be a dict here and handed over as it is (the engine checks what is in
        # it): the validator copies every value deeply, and at a hundred hosts that copy was most of a step's start.
        passed = {name: self._task.args[name] for name in self.PASSED_THROUGH
                  if (spec.get(name) or {}).get("type") == "dict" and isinstance(self._task.args.get(name), dict)}
        given = self._task.args
        if passed:
            self._task.args = dict(given, **{name: {} for name in passed})
        try:
            dummy, args = self.validate_argument_spec(argument_spec=spec)
        finally:
            self._task.args = given
        args.update(passed)
        return args

    @staticmethod
    def merged_inputs(task_args: dict) -> dict:
        """The options given as one dict (``inputs``, how a role passes a step's inputs) under those given on their own.

        They are validated as if each had been written out: a misspelt or mistyped key fails the task, named.
        """
        args = dict(task_args)
        inputs = args.pop("inputs", None)
        if inputs in (None, ""):
            return args
        if not isinstance(inputs, dict):
            raise AnsibleActionFail(f"inputs: expected a dict of the step's options, got {type(inputs).__name__}")
        if "inputs" in inputs:
            raise AnsibleActionFail("inputs: expected the step's options, not another inputs")
        return {**inputs, **args}

    @property
    def check_mode(self) -> bool:
        return bool(self._task.check_mode if self._task.check_mode is not None else self._play_context.check_mode)

    @property
    def diff_mode(self) -> bool:
        return bool(self._task.diff if self._task.diff is not None else self._play_context.diff)

    def task_environment(self) -> dict[str, str]:
        """The controller's environment with the task's ``environment:`` over it."""
        environ = dict(os.environ)
        extra: dict[str, Any] = {}
        try:
            self._compute_environment_string(extra)
        except Exception:  # pylint: disable=broad-except  # no shell (no connection): no task environment
            extra = {}
        environ.update({str(k): str(v) for k, v in extra.items() if v is not None})
        return environ

    def aws_options(self, args: dict) -> dict:
        """amazon.aws options: the ``aws:`` dict (how the roles pass them) over the top-level ones.

        A role passes only the options its variables set, so that ``module_defaults`` for
        ``group/rollwright.deploy.aws`` (top-level options) fill in the rest, as they did when the roles
        wrote each option out.
        """
        options = {}
        for name in aws_session.AWS_OPTION_SPEC:
            if args.get(name) not in (None, "") and not (name == "validate_certs" and args[name] is True):
                options[name] = args[name]
        options.update({k: v for k, v in dict(args.get("aws") or {}).items() if v not in (None, "")})
        return options

    def clients(self, args: dict) -> aws_session.AWSClientFactory:
        return aws_session.aws_client_factory(self.aws_options(args), environ=self.task_environment())

    def step_label(self, args: dict) -> str:
        step = args.get("step") if isinstance(args, dict) else None
        return f"{self.MODULE} step={step}" if step else self.MODULE

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        args: dict = {}
        aws_session.set_retry_reporter(progress)
        try:
            args = self.validated_args()
            return self.run_step(result, args, task_vars or {})
        except AnsibleActionFail:
            raise
        except Exception as exc:  # pylint: disable=broad-except  # known errors fail the task; others show
            failed = error_result(exc, self.step_label(args))
            if failed is None:
                raise
            result.update(failed)
            return result
        finally:
            aws_session.set_retry_reporter(None)

    def run_step(self, result: dict, args: dict, task_vars: dict) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError


def state_result(result: dict, state: dict, state_fact: str, changed: bool = True) -> dict:
    """A step's result: its state as the fact ``state_fact`` (for the role's next step), the deployment id and
    whether it is done; once done, the summary (also as the ``rollwright_deployment`` fact) and its text."""
    result["changed"] = changed
    result["ansible_facts"] = {state_fact: state}
    result["deployment_id"] = state["deployment_id"]
    result["done"] = state.get("done", False)
    if state.get("done"):
        result["rollwright_deployment"] = state["summary"]
        result["ansible_facts"]["rollwright_deployment"] = state["summary"]
        result["summary_text"] = state["summary_text"]
    return result


def fail(message: str, field: Optional[str] = None) -> AnsibleActionFail:
    """An AnsibleActionFail naming the field (for ``raise fail(...)``)."""
    return AnsibleActionFail(message, result={"field": field} if field else None)


Progress = Callable[[str], None]
