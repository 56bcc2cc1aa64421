# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs the deployment_record module with who runs the task (the AWX job, when there is one).

A module sees its arguments, not the play's variables; AWX passes its job id, template and user
as variables. This plugin reads them (records/creator.py) and hands them to the module as
``creator_identity``, with ``allow_sqlite_under_awx`` from ``rollwright_record_allow_sqlite_under_awx``.
"""

from __future__ import annotations

from ansible.plugins.action import ActionBase

from ansible_collections.rollwright.deploy.plugins.module_utils.records.creator import store_context


class ActionModule(ActionBase):
    """See plugins/modules/deployment_record.py for the documentation."""

    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        args = dict(self._task.args)
        context = store_context(task_vars, self._templar.template)
        if args.get("creator_identity") is None and context["creator"]["kind"] == "awx":
            args["creator_identity"] = context["creator"]  # a local run keeps the module's own user@host pid
        if args.get("allow_sqlite_under_awx") is None:
            args["allow_sqlite_under_awx"] = context["allow_sqlite_under_awx"]
        result.update(self._execute_module(module_name="rollwright.deploy.deployment_record", module_args=args,
                                           task_vars=task_vars))
        return result
