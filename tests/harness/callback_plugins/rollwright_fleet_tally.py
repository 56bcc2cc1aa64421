# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test-only callback: notes each playbook run that executed a rollwright.deploy module on a test world's SSH host.

tests/conftest.py enables it for every test (``ROLLWRIGHT_FLEET_TALLY`` names the file to append to);
tests/run_suites.py counts the tests that ran at least one such playbook to its end.
"""

from __future__ import annotations

import ipaddress
import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: rollwright_fleet_tally
    type: aggregate
    short_description: test-only tally of playbook runs on a test world's SSH hosts
    description: Appends one JSON line per finished playbook run to the file named by ROLLWRIGHT_FLEET_TALLY.
    requirements: [enabled in callbacks_enabled]
"""

# tests/harness/world.py picks every world's subnet from this pool
WORLD_POOL = ipaddress.IPv4Network("10.213.0.0/16")


def _world_host(host) -> bool:
    address = str(host.get_vars().get("ansible_host") or host.name)
    try:
        return ipaddress.IPv4Address(address) in WORLD_POOL
    except ValueError:
        return False


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "rollwright_fleet_tally"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._playbook = None
        self._fleet_hosts = set()
        self._actions = set()
        self._roles = set()

    def v2_playbook_on_start(self, playbook):
        self._playbook = getattr(playbook, "_file_name", None)

    def _note(self, result):
        task = result._task  # pylint: disable=protected-access
        action = getattr(task, "resolved_action", None) or task.action or ""
        host = result._host  # pylint: disable=protected-access
        if action.startswith("rollwright.deploy.") and _world_host(host):
            self._fleet_hosts.add(host.name)
            self._actions.add(action)
            role = getattr(task, "_role", None)
            if role is not None:
                self._roles.add(role.get_name())

    def v2_runner_on_ok(self, result):
        self._note(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._note(result)

    def v2_playbook_on_stats(self, stats):
        path = os.environ.get("ROLLWRIGHT_FLEET_TALLY")
        if not path:
            return
        line = {"playbook": self._playbook, "fleet_hosts": sorted(self._fleet_hosts), "actions": sorted(self._actions),
                "roles": sorted(self._roles)}
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")
