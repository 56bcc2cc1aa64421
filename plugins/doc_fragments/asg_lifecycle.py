# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The group the Auto Scaling lifecycle modules work on (module_utils/traffic/asg_lifecycle.py).
    DOCUMENTATION = r"""
options:
  group:
    description: The Auto Scaling group name.
    type: str
    required: true
"""
