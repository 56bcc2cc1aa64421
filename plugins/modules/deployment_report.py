# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: deployment_report
short_description: Write a deployment's timeline report and its group's history page
version_added: 0.1.0
description:
  - Writes one self-contained HTML page per deployment (inline SVG and CSS, nothing fetched from the network, so it
    opens from a file or an AWX artifact) from the deployment record, and the deployment group's history page.
  - The timeline has the hosts down the side and time across, a bar per lifecycle event coloured by outcome (hover
    for its script, exit code and log tail), in-place batches, each host's time out of its load balancer as its own
    band (BlockTraffic is the drain wait, AllowTraffic the health wait), blue/green phases and continue requests,
    Lambda traffic weights over time as a step chart with the alarm checks, and links between a deployment and
    its rollback.
  - The history page lists the group's last O(history) deployments with status, duration, revision and who
    started them, each linking to its timeline.
  - With O(summary), also prints that text as plain lines (the deployment roles print their summary table this
    way) followed by the report's path.
  - This is an action plugin that runs on the controller; the files are written there.
author:
  - Rollwright maintainers (@rollwright)
options:
  deployment_id:
    description:
      - The deployment to report on. Its rollback (or the deployment it rolled back) is written too, so that the
        links between them work.
      - Omitted, the pages of the group's last O(history) deployments are written (needs O(application)).
    type: str
  application:
    description: The application, when O(deployment_id) is omitted.
    type: str
  deployment_group:
    description: The deployment group, when O(deployment_id) is omitted; defaults to the application name.
    type: str
  report_dir:
    description:
      - The directory on the controller the pages are written to (created when missing). Pages are named
        C(DEPLOYMENT_ID.html) and C(history-APPLICATION-GROUP.html).
      - Required unless only O(summary) is printed.
    type: path
  history:
    description: How many of the group's deployments the history page lists, newest first.
    type: int
    default: 20
  summary:
    description: A text (a deployment's summary table) to print as plain lines before the report's path.
    type: str
  record:
    description: >-
      Where the deployment records live - C({backend: sqlite, sqlite_path}) or C({backend: dynamodb, dynamodb_table}).
    type: dict
  aws:
    description: amazon.aws connection options (C(region), C(endpoint_url), C(profile), ...) for DynamoDB records.
    type: dict
extends_documentation_fragment:
  - rollwright.deploy.attributes
  - rollwright.deploy.attributes.action
attributes:
  check_mode:
    support: full
    details: In check mode nothing is written; the summary is still printed.
  diff_mode:
    support: none
notes:
  - The deployment roles call it at the end when C(rollwright_report_dir) is set; the playbook
    C(rollwright.deploy.report) writes the pages of any recorded deployment.
"""

EXAMPLES = r"""
- name: Write the timeline of one deployment
  rollwright.deploy.deployment_report:
    deployment_id: d-4HXY2KQ7A
    report_dir: /var/www/deployments
    record:
      backend: sqlite

- name: Write the last 50 deployments of a group and its history page
  rollwright.deploy.deployment_report:
    application: shop
    deployment_group: web
    history: 50
    report_dir: "{{ playbook_dir }}/reports"
"""

RETURN = r"""
report:
  description: The path of the deployment's page (with O(deployment_id)).
  returned: when written
  type: str
  sample: /var/www/deployments/d-4HXY2KQ7A.html
history:
  description: The path of the group's history page.
  returned: when written
  type: str
  sample: /var/www/deployments/history-shop-web.html
summary_lines:
  description: The lines of O(summary), as printed.
  returned: always
  type: list
  elements: str
written:
  description: Every page written.
  returned: always
  type: list
  elements: str
"""
