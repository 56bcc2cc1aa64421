# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the collection's roles declare: their options, the options they share, and the old names still read.

The options the deployment roles share are documented and defaulted once, in the internal role ``_common``
(``meta/argument_specs.yml``, one entry point per group, and ``defaults/main.yml``); each role's own
``meta/argument_specs.yml`` keeps only its own options. ``rollwright.deploy.check_variables``, every role's first
task, reads this module.
"""

from __future__ import annotations

import os
from typing import Any

import yaml

ROLES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "roles")
COMMON_ROLE = "_common"

#: The release in which the deprecated names below stop being read.
ALIASES_REMOVED_IN = "0.3.0"
#: Deprecated role variable -> (the name to use instead, the role that read the old name). The role's defaults give
#: the new name the old one's value when only the old one is set (roles/lambda_shift/defaults/main.yml).
DEPRECATED_ALIASES: dict[str, tuple[str, str]] = {
    "rollwright_lambda_alarms": ("rollwright_auto_rollback_alarms", "lambda_shift"),
    "rollwright_lambda_ignore_poll_alarm_failure": ("rollwright_auto_rollback_ignore_poll_alarm_failure", "lambda_shift"),
    "rollwright_lambda_lock_ttl": ("rollwright_lock_ttl", "lambda_shift"),
    "rollwright_lambda_deployment_config": ("rollwright_deployment_config", "lambda_shift"),
}

_CACHE: dict[str, Any] = {}


def _load(path: str) -> Any:
    if path not in _CACHE:
        with open(path, encoding="utf-8") as handle:
            _CACHE[path] = yaml.safe_load(handle) or {}
    return _CACHE[path]


def role_specs() -> dict[str, dict[str, dict]]:
    """role -> entry point -> its options (as in the role's meta/argument_specs.yml)."""
    out = {}
    for role in sorted(os.listdir(ROLES_DIR)):
        path = os.path.join(ROLES_DIR, role, "meta", "argument_specs.yml")
        if os.path.isfile(path):
            specs = _load(path).get("argument_specs") or {}
            out[role] = {entry: dict((spec or {}).get("options") or {}) for entry, spec in specs.items()}
    return out


def declared_options() -> list[str]:
    """Every option of every role (all entry points, the shared ones included)."""
    return sorted({name for entries in role_specs().values() for options in entries.values() for name in options})


def shared_options() -> dict[str, dict]:
    """The options the roles share: name -> its documentation (from every entry point of ``_common``)."""
    return {name: option for options in role_specs().get(COMMON_ROLE, {}).values() for name, option in options.items()}


def shared_defaults() -> dict[str, Any]:
    """The shared options' defaults (``_common``'s defaults/main.yml, the values the roles start from)."""
    return dict(_load(os.path.join(ROLES_DIR, COMMON_ROLE, "defaults", "main.yml")))
