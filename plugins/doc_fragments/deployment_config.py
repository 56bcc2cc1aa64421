# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The deployment_config option of in-place and blue/green EC2 deployments
    # (module_utils/deployments/config.py; rules in docs/deployment-configs.md).
    DOCUMENTATION = r"""
options:
  deployment_config:
    description:
      - How many hosts must stay healthy during the deployment (CodeDeploy's minimum healthy hosts), which sets
        the batch size and what counts as success.
      - A predefined name, case-insensitive, the C(CodeDeployDefault.) prefix optional.
        C(CodeDeployDefault.OneAtATime) keeps all hosts but one healthy, so one host at a time; it succeeds even
        if the last host fails, fails as soon as any other host fails, and a one-host group must succeed.
        C(CodeDeployDefault.HalfAtATime) is C(FLEET_PERCENT) 50 (9 hosts - minimum 5, 4 at a time, 5 must
        succeed). C(CodeDeployDefault.AllAtOnce) is C(HOST_COUNT) 0 (all at once, at least one must succeed).
      - "A custom minimum as a string, convenient for AWX surveys - C(HOST_COUNT:N) (N >= 0), C(FLEET_PERCENT:N)
        (0 to 99) or C(N%) (same as C(FLEET_PERCENT:N)) - or as a mapping
        C({minimum_healthy_hosts: {type: HOST_COUNT|FLEET_PERCENT, value: N}}); CodeDeploy's camelCase
        C(minimumHealthyHosts) is accepted too."
      - A percentage is converted to a host count at the start, rounding up. A batch holds at most
        C(hosts - minimum) hosts, and never more healthy hosts than would take the healthy count below the
        minimum; a failed host stays out and counts against the minimum. When the minimum can no longer be kept
        the deployment stops and fails.
      - A minimum that leaves no host to deploy to (for example 95% of 10 hosts, that is 10) fails before
        anything is touched.
      - Hosts are deployed in this order - unhealthy, unknown revision, old revision, current revision; a host
        whose last install of this very revision succeeded is skipped and counts as on the new revision.
      - The deployment succeeds when at least the minimum number of hosts, and at least one, are on the new
        revision.
    type: raw
    default: CodeDeployDefault.OneAtATime
"""
