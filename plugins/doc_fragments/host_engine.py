# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared documentation of the host engine options (where a deployment group's state lives on a host)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  application:
    description:
      - The application name (CodeDeploy's applicationName). Names one directory level of the host state,
        so it is limited to letters, digits and C(._@+=,-), starting with a letter or digit.
    type: str
    required: true
  deployment_group:
    description:
      - The deployment group name (CodeDeploy's deploymentGroupName); same character rules as O(application).
    type: str
    required: true
  state_root:
    description:
      - Where the host keeps its deployment state, one directory per application and deployment group
        (C(<state_root>/<application>/<deployment_group>/)), laid out as in docs/architecture.md ("Host state").
    type: path
    default: /var/lib/rollwright
"""
