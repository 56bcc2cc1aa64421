# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # Where deployment records and group locks live (module_utils/records).
    DOCUMENTATION = r"""
options:
  backend:
    description:
      - Where deployment records and deployment group locks are kept.
      - C(sqlite) is a file on the controller, safe for several processes on that controller; it needs no AWS
        credentials.
      - C(dynamodb) is one DynamoDB table shared by every controller (for example several AWX execution nodes);
        it uses the standard AWS connection options of this module.
    type: str
    choices: [sqlite, dynamodb]
    default: sqlite
  sqlite_path:
    description:
      - The SQLite file, with C(backend=sqlite).
      - Default C($XDG_STATE_HOME/rollwright/deployments.sqlite3), that is
        C(~/.local/state/rollwright/deployments.sqlite3) when C(XDG_STATE_HOME) is not set.
      - The directory is created when missing.
    type: path
  dynamodb_table:
    description:
      - The DynamoDB table, with C(backend=dynamodb). See C(docs/operations.md) for how to create it.
    type: str
    default: rollwright-deployments
"""
