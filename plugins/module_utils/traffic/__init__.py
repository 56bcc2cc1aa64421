# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Traffic: load balancers, listener swap, Lambda alias weights. Stdlib only (hosts import it too)."""

from __future__ import annotations

from typing import Any


def parse_number(value: Any, error: Exception) -> float:
    """``value`` as a float; raises ``error`` (which names the field) for a boolean or a non-number."""
    if isinstance(value, bool):  # float(True) would pass silently
        raise error
    try:
        return float(value)
    except (TypeError, ValueError):
        raise error from None
