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
"""

    # The deprecated nested AWS options of the action plugins that start a lease keeper or recover.
    AWS = r"""
options:
  aws:
    description:
      - Deprecated, give the amazon.aws options (O(region), O(endpoint_url), O(profile), ...) at the top level instead,
        where C(module_defaults) for C(group/rollwright.deploy.aws) also reach them. Top-level options win.
      - C(secret_key) and C(session_token) are no_log - never shown, never written to a record, never on a command
        line (the lease keeper reads its configuration on its stdin).
    type: dict
"""
