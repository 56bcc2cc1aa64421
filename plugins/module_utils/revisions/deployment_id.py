# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The deployment id, in CodeDeploy's shape: ``d-`` and 9 upper-case letters or digits.

The one definition of its pattern and of how a new one is drawn. Stdlib only: the host engine
checks ids too (a deployment id names a directory on the host).
"""

from __future__ import annotations

import re
import secrets
import string

DEPLOYMENT_ID_RE = re.compile(r"^d-[A-Z0-9]{9}$")
_ID_ALPHABET = string.ascii_uppercase + string.digits


def new_deployment_id() -> str:
    """A new id from a CSPRNG (ids are not secrets, but they must not collide)."""
    return "d-" + "".join(secrets.choice(_ID_ALPHABET) for _position in range(9))
