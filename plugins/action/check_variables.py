# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Refuse variables with the collection's prefixes that no role option declares (see plugins/modules/check_variables.py)."""

from __future__ import annotations

import difflib
import os

import yaml
from ansible.errors import AnsibleActionFail

from ansible_collections.rollwright.deploy.plugins.plugin_utils.step_action import RollwrightAction

# Every role's own prefix; rollwright_ is shared by all of them.
PREFIXES = ("rollwright_", "bluegreen_ec2_")
# Names that are not role options: playbook inputs and the results the roles and playbooks set.
PLAYBOOK_VARIABLES = ("rollwright_hosts", "rollwright_deployment_id", "rollwright_force_recover")
RESULT_VARIABLES = ("rollwright_deployment", "rollwright_recovery", "rollwright_lambda_result", "rollwright_control")
_DECLARED: list[str] = []


def declared_options() -> list[str]:
    """Every option of every role's meta/argument_specs.yml (all entry points)."""
    if not _DECLARED:
        roles = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "roles")
        names = set()
        for role in sorted(os.listdir(roles)):
            path = os.path.join(roles, role, "meta", "argument_specs.yml")
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as handle:
                    specs = (yaml.safe_load(handle) or {}).get("argument_specs") or {}
                for entry in specs.values():
                    names.update((entry or {}).get("options") or {})
        _DECLARED.extend(sorted(names))
    return list(_DECLARED)


def unknown_variables(names, known, prefixes=PREFIXES) -> dict[str, str | None]:
    """Prefixed names that are not known -> the closest known name (or None)."""
    known = set(known)
    out = {}
    for name in sorted(names):
        if name.startswith(tuple(prefixes)) and name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
            out[name] = close[0] if close else None
    return out


class ActionModule(RollwrightAction):
    """See plugins/modules/check_variables.py for the documentation."""

    MODULE = "check_variables"
    AWS_OPTIONS = False

    def run_step(self, result: dict, args: dict, task_vars: dict) -> dict:
        known = declared_options() + list(PLAYBOOK_VARIABLES) + list(RESULT_VARIABLES) + list(args["extra_names"])
        unknown = unknown_variables(task_vars, known)
        unsupported = {name: why for name, why in args["unsupported"].items() if name in task_vars}
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
        result.update(changed=False, checked=len([n for n in task_vars if n.startswith(PREFIXES)]))
        return result
