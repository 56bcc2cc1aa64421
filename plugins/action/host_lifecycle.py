# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of rollwright.deploy.host_lifecycle: push the bundle, then run the module, in one task.

When ``src`` is given and ``events`` include DownloadBundle, the controller-side bundle is transferred
once to the host's remote temporary directory (the SFTP/SCP of the connection Ansible already has), its
remote path is passed to the module as ``bundle``, the module runs once, and the temporary directory
is removed. In check mode nothing is transferred: the bundle's member names are read here and passed
as ``bundle_entries``, so the host's plan lists the exact files Install would touch.
"""

from __future__ import annotations

import os

from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase

from ansible_collections.rollwright.deploy.plugins.plugin_utils.step_action import documented_spec

MODULE = "rollwright.deploy.host_lifecycle"
_EXTENSIONS = (".tar.gz", ".tgz", ".zip", ".tar")


def _remote_name(src: str) -> str:
    lower = src.lower()
    for ext in _EXTENSIONS:
        if lower.endswith(ext):
            return "bundle" + ext
    return "bundle"


class ActionModule(ActionBase):
    TRANSFERS_FILES = True

    def _bundle_entries(self, src, args):
        """Check mode: the bundle's member names, read here, so the host plans the exact install without it."""
        from ansible_collections.rollwright.deploy.plugins.module_utils.revision import RevisionError, bundle_entries

        try:
            local = self._find_needle("files", src)
            revision = args.get("revision") or {}
            _top, entries = bundle_entries(local, revision.get("bundle_type"), revision.get("appspec_name") or "appspec.yml")
        except (AnsibleError, RevisionError, OSError) as exc:
            raise AnsibleActionFail(f"src: cannot read bundle {src} for the check-mode plan: {to_text(exc)}")
        return entries

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp  # tmp no longer has any effect
        # Refuse unknown and mistyped options on the controller, before any transfer (the module's own
        # validation would only run on the host, after the bundle was pushed).
        self.validate_argument_spec(argument_spec=documented_spec("host_lifecycle"))
        args = dict(self._task.args)
        src = args.pop("src", None)
        events = args.get("events") or []
        if isinstance(events, str):
            events = [e.strip() for e in events.split(",")]
        try:
            if src and "DownloadBundle" in events and not self._task.check_mode:
                try:
                    local = self._find_needle("files", src)
                except AnsibleError as exc:
                    raise AnsibleActionFail(f"src: bundle {src} not found on the controller: {to_text(exc)}")
                if not os.path.isfile(local):
                    raise AnsibleActionFail(f"src: {local} is not a file (expected a zip, tar or tar.gz bundle)")
                if self._connection._shell.tmpdir is None:
                    self._make_tmp_path()
                remote = self._connection._shell.join_path(self._connection._shell.tmpdir, _remote_name(local))
                self._transfer_file(local, remote)
                self._fixup_perms2((self._connection._shell.tmpdir, remote))
                args["bundle"] = remote
            elif src and self._task.check_mode and "bundle_entries" not in args:
                args["bundle_entries"] = self._bundle_entries(src, args)
            result.update(self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars))
        except AnsibleActionFail as exc:
            result.update(exc.result)
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result
