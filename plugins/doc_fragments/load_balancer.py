# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The load_balancer option shared by modules, action plugins and roles.
    DOCUMENTATION = r"""
options:
  load_balancer:
    description:
      - The load balancers the hosts are taken out of (BlockTraffic) and put back into (AllowTraffic).
      - Only the target groups and load balancers named here are looked at; nothing is scanned region-wide.
      - Every named target group or load balancer must exist, or the task fails before anything changes.
    type: dict
    suboptions:
      target_group_arns:
        description:
          - ARNs of ELBv2 (ALB, NLB) target groups of type C(instance).
          - A host registered on several ports of a group has one membership per port; all are recorded and restored.
        type: list
        elements: str
        default: []
      target_group_names:
        description:
          - Names of ELBv2 target groups, resolved to ARNs with one DescribeTargetGroups call.
        type: list
        elements: str
        default: []
      classic_elb_names:
        description:
          - Names of classic Elastic Load Balancers.
          - When connection draining is enabled on one, deregistration waits up to its draining timeout.
        type: list
        elements: str
        default: []
"""

    WAIT = r"""
options:
  wait:
    description:
      - Wait for deregistered targets to finish draining, and for registered targets to become healthy.
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait.
      - By default derived from the load balancers' settings, plus a margin of 15 seconds or 10%, whichever is larger.
        Draining waits the target group's C(deregistration_delay.timeout_seconds)
        (or the classic ELB's connection draining timeout). Becoming healthy waits
        HealthyThresholdCount x HealthCheckIntervalSeconds + one interval.
      - A target still not drained or not healthy when the time is up fails the task, naming it.
    type: float
"""
