# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # Deployment notifications (module_utils/deployments/notifications.py), the same for every deployment type.
    DOCUMENTATION = r"""
options:
  notifications:
    description:
      - Send CodeDeploy's trigger events of the deployment to SNS topics and HTTP webhooks - C(DeploymentStart),
        C(DeploymentSuccess), C(DeploymentFailure), C(DeploymentStop), C(DeploymentRollback), C(DeploymentReady),
        C(InstanceStart), C(InstanceSuccess), C(InstanceFailure).
      - Each message is JSON with the deployment id, application, group, type, revision, status, who started it,
        the failing host, event, script and exit code when there is one, and the timeline report's location.
      - A delivery that fails is retried with backoff within O(notifications.timeout), then recorded in the record's
        C(extra.notification_failures); it never fails the deployment. A destination whose failed deliveries have
        taken O(notifications.timeout) in a deployment is skipped for the rest of it.
      - Omitted or empty, nothing is sent.
    type: dict
    suboptions:
      sns:
        description: SNS topic ARNs, or C({topic_arn, events}) to send only some events to a topic.
        type: list
        elements: raw
      webhooks:
        description: HTTP(S) endpoints that receive a POST per event.
        type: list
        elements: dict
        suboptions:
          url:
            description: The C(http://) or C(https://) URL.
            type: str
            required: true
          events:
            description: The trigger events this endpoint gets (default O(notifications.events)).
            type: list
            elements: str
          template:
            description:
              - The body, with C($name) placeholders instead of the JSON message - every top-level field of the
                message (C($deployment_id), C($status), C($summary), ...), C($failure_host), C($failure_event),
                C($failure_script), C($failure_exit_code) and C($message_json).
              - Values are inserted JSON-escaped, so a JSON template stays valid JSON.
            type: str
          headers:
            description: Extra request headers.
            type: dict
          secret:
            description: A shared secret sent in the O(notifications.webhooks[].secret_header) header.
            type: str
          secret_header:
            description: The header that carries the secret.
            type: str
            default: X-Rollwright-Secret
      events:
        description: The trigger events to send (default all of them).
        type: list
        elements: str
      timeout:
        description: Seconds one message may take, all attempts and backoff included (at most 1).
        type: float
        default: 1.0
      retries:
        description: Attempts after the first one (0 to 5), with exponential backoff from 50 ms.
        type: int
        default: 2
      report_dir:
        description: Where the timeline reports are written; messages carry the path of this deployment's report.
        type: path
      report_url:
        description: A URL prefix where the reports are published; messages then carry C(REPORT_URL/DEPLOYMENT_ID.html).
        type: str
"""
