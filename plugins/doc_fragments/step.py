# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The options the deployment step plugins (in-place, blue/green) share: the record and the fetched bundle.
    DOCUMENTATION = r"""
options:
  record:
    description: >-
      Where the deployment record and lock live - C({backend: sqlite, sqlite_path}) or C({backend: dynamodb, dynamodb_table}).
    type: dict
  cache_dir:
    description: Where fetched bundles are cached on the controller.
    type: path
  appspec_name:
    description: The appspec file name inside the bundle.
    type: str
    default: appspec.yml
  inputs:
    description:
      - The step's options as one dict (how the roles pass a deployment's start inputs, written once); an option also
        given on its own wins. Each key is validated as that option is.
    type: dict
  host_results:
    description:
      - The name of the variable the hosts' results that this step judges are registered under (each host's C(register)
        of the host task before it) - the role names it. Read on every host of the step's hosts through C(hostvars).
      - Omitted, the name the collection's role registers for that step.
    type: str
"""

    # The AWS options as one dict, of the action plugins that start a lease keeper or recover.
    AWS = r"""
options:
  aws:
    description:
      - The amazon.aws options (O(region), O(endpoint_url), O(profile), ...) as one dict - how the roles pass them
        (C(_rollwright_aws), only the options their variables set). Its options win over those given at the top level,
        where C(module_defaults) for C(group/rollwright.deploy.aws) also reach them.
      - C(secret_key) and C(session_token) are no_log - never shown, never written to a record, never on a command
        line (the lease keeper reads its configuration on its stdin).
    type: dict
"""
