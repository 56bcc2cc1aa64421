# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Write timeline reports on the controller and print a deployment's summary as plain lines."""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.rollwright.deploy.plugins.module_utils.records import RecordError

display = Display()

ARGUMENT_SPEC = dict(
    deployment_id=dict(type="str"),
    application=dict(type="str"),
    deployment_group=dict(type="str"),
    report_dir=dict(type="path"),
    history=dict(type="int", default=20),
    summary=dict(type="str"),
    record=dict(type="dict"),
    aws=dict(type="dict"),
)


class ActionModule(ActionBase):
    """See plugins/modules/deployment_report.py for the documentation."""

    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        dummy, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        if args["history"] < 1:
            raise AnsibleActionFail(f"history: expected a positive number of deployments, got {args['history']}")
        written = {}
        if args["report_dir"] and not self._task.check_mode:
            written = self._write(args)
        elif not args["report_dir"] and not args["summary"]:
            raise AnsibleActionFail("report_dir: expected the directory to write the reports to")
        if args["summary"]:
            # Plain lines (no JSON quoting, no escaped newlines): reads the same in a terminal and in AWX.
            for line in args["summary"].splitlines():
                display.display(line)
            if written.get("report"):
                display.display(f"  timeline report: {written['report']}")
        result.update(changed=bool(written), report=written.get("report"), history=written.get("history"),
                      written=written.get("written", []), summary_lines=(args["summary"] or "").splitlines())
        return result

    @staticmethod
    def _write(args: dict) -> dict:
        from ansible_collections.rollwright.deploy.plugins.module_utils.aws.client import AWSSessionError, aws_client_factory
        from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_store
        from ansible_collections.rollwright.deploy.plugins.module_utils.deployments.timeline import write_reports

        record = {k: v for k, v in (args["record"] or {}).items() if k != "notifications" and v}
        backend = record.pop("backend", None) or "sqlite"
        try:
            clients = aws_client_factory(args["aws"] or {})
            store = open_store(backend, record, client_factory=clients.client)
            return write_reports(store, args["report_dir"], deployment_id=args["deployment_id"],
                                 application=args["application"], deployment_group=args["deployment_group"],
                                 history=args["history"])
        except (RecordError, AWSSessionError, ValueError, OSError) as exc:
            raise AnsibleActionFail(f"writing the timeline report failed: {exc}") from exc
