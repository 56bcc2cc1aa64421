# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Refuse variables with the collection's prefixes that no role option declares, check the options the roles
share, and warn about deprecated names (see plugins/modules/check_variables.py)."""

from __future__ import annotations

import difflib
from typing import Any, Callable

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.rollwright.deploy.plugins.plugin_utils import role_options
from ansible_collections.rollwright.deploy.plugins.plugin_utils.step_action import RollwrightAction, spec_of

# Every role's own prefix; rollwright_ is shared by all of them.
PREFIXES = ("rollwright_", "bluegreen_ec2_")
# Names that are not role options: playbook inputs and the results the roles and playbooks set.
PLAYBOOK_VARIABLES = ("rollwright_hosts", "rollwright_deployment_id", "rollwright_force_recover")
RESULT_VARIABLES = ("rollwright_deployment", "rollwright_recovery", "rollwright_lambda_result", "rollwright_control")


def declared_options() -> list[str]:
    """Every option of every role's meta/argument_specs.yml (all entry points, the shared ones and the deprecated names)."""
    return role_options.declared_options()


def unknown_variables(names, known, prefixes=PREFIXES) -> dict[str, str | None]:
    """Prefixed names that are not known -> the closest known name (or None)."""
    known = set(known)
    out = {}
    for name in sorted(names):
        if name.startswith(tuple(prefixes)) and name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
            out[name] = close[0] if close else None
    return out


def deprecated_in_use(values: dict[str, Any]) -> tuple[list[dict], list[str]]:
    """(deprecations, conflicts) for the deprecated names set in ``values`` (templated variables).

    A deprecated name is read through the new name's default; when the new name is set to something else as well,
    it would be ignored silently, so that is a conflict.
    """
    deprecations, conflicts = [], []
    for old, (new, role) in role_options.DEPRECATED_ALIASES.items():
        if old not in values:
            continue
        if new in values and values[new] != values[old]:
            conflicts.append(f"{old} (deprecated) and {new} are both set, to different values: remove {old}")
            continue
        deprecations.append({
            "msg": f"{old} is deprecated: use {new} (the {role} role reads the old name until release "
                   f"{role_options.ALIASES_REMOVED_IN})",
            "version": role_options.ALIASES_REMOVED_IN, "collection_name": "rollwright.deploy"})
    return deprecations, conflicts


def shared_option_errors(values: dict[str, Any]) -> list[str]:
    """The shared options set in ``values`` (templated) checked against their one specification (roles/_common)."""
    shared = role_options.shared_options()
    given = {name: value for name, value in values.items() if name in shared}
    if not given:
        return []
    validated = ArgumentSpecValidator(spec_of({name: shared[name] for name in given})).validate(given)
    return [str(error) for error in validated.errors]


def unsupported_set(unsupported: dict[str, str], values: dict[str, Any]) -> dict[str, str]:
    """The unsupported options the task sees with a value other than their shared default (a role's own defaults
    are not in the play of a role that does not support them; a shared one always is)."""
    defaults = role_options.shared_defaults()
    return {name: why for name, why in unsupported.items()
            if name in values and not (name in defaults and values[name] == defaults[name])}


class ActionModule(RollwrightAction):
    """See plugins/modules/check_variables.py for the documentation."""

    MODULE = "check_variables"
    AWS_OPTIONS = False

    def run_step(self, result: dict, args: dict, task_vars: dict) -> dict:
        known = (declared_options() + list(role_options.DEPRECATED_ALIASES) + list(PLAYBOOK_VARIABLES)
                 + list(RESULT_VARIABLES) + list(args["extra_names"]))
        unknown = unknown_variables(task_vars, known)
        values = self._templated(task_vars, set(role_options.shared_options()) | set(args["unsupported"])
                                 | set(role_options.DEPRECATED_ALIASES)
                                 | {new for new, dummy in role_options.DEPRECATED_ALIASES.values()})
        unsupported = unsupported_set(args["unsupported"], values)
        if unsupported:
            raise AnsibleActionFail(
                "; ".join(f"{name}: not supported here ({why})" for name, why in unsupported.items())
                + ". Remove it; nothing was changed", result={"unsupported": unsupported})
        if unknown:
            parts = [f"{name} (did you mean {close}?)" if close else name for name, close in unknown.items()]
            raise AnsibleActionFail(
                f"unknown variable{'s' if len(parts) > 1 else ''}: {', '.join(parts)}. No option of the "
                "rollwright.deploy roles has this name, so it would be ignored; fix the name (see the role's "
                "README or meta/argument_specs.yml) or remove it. Nothing was changed",
                result={"unknown": unknown})
        deprecations, conflicts = deprecated_in_use(values)
        errors = conflicts + shared_option_errors(values)
        if errors:
            raise AnsibleActionFail("; ".join(errors) + ". Nothing was changed")
        if deprecations:
            result["deprecations"] = deprecations
        result.update(changed=False, checked=len([n for n in task_vars if n.startswith(PREFIXES)]))
        return result

    def _templated(self, task_vars: dict, names: set) -> dict[str, Any]:
        """The values of ``names`` the task sees, templated (a role default may be made of another variable)."""
        template: Callable[[Any], Any] = self._templar.template
        return {name: template(task_vars[name]) for name in sorted(names) if name in task_vars}
