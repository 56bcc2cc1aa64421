#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: check_variables
short_description: Refuse rollwright variables that no role option declares (typos)
version_added: 0.1.0
description:
  - Fails when a variable visible to the task is named C(rollwright_*) or C(bluegreen_ec2_*) and no option of the
    collection's roles (their C(meta/argument_specs.yml)) declares it, naming it and the closest valid name
    (C(rollwright_target_group_arn) - did you mean C(rollwright_target_group_arns)?). A misspelt option would
    otherwise be ignored silently and its default used.
  - The playbooks' own inputs (C(rollwright_hosts), C(rollwright_deployment_id), C(rollwright_force_recover)) and
    the results the roles set (C(rollwright_deployment), C(rollwright_recovery), C(rollwright_lambda_result)) are
    accepted.
  - The options the roles share (the internal role C(rollwright.deploy._common) documents them, one entry point per
    group) are checked against their one specification - type and choices - naming each one that does not fit.
  - A deprecated name (for example C(rollwright_lambda_alarms), now C(rollwright_auto_rollback_alarms)) is accepted
    with a deprecation warning naming the new name; setting both to different values fails, as one would be ignored.
  - An option in O(unsupported) fails when it has a value other than its default.
  - The roles and playbooks of the collection run it first; nothing is changed before it passed.
  - This is an action plugin that runs on the controller.
author:
  - Rollwright maintainers (@rollwright)
options:
  extra_names:
    description: More accepted variable names (a playbook's own inputs).
    type: list
    elements: str
    default: []
  unsupported:
    description:
      - Variables another role declares that this one does not support, with why; setting one (to a value other than
        its shared default) fails, as it would be ignored otherwise. For example C(rollwright_lock_ttl) with the reason
        C(blue/green keeps its lock until it ends).
    type: dict
    default: {}
extends_documentation_fragment:
  - rollwright.deploy.attributes
  - rollwright.deploy.attributes.action
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Refuse misspelt rollwright variables before anything changes
  rollwright.deploy.check_variables:
  run_once: true
"""

RETURN = r"""
checked:
  description: How many prefixed variables were checked.
  returned: success
  type: int
unknown:
  description: Unknown variable -> the closest valid name (null when none is close).
  returned: failure
  type: dict
"""
