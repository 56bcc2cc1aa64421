# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The test world: an AWS emulator (moto, patched) and a fleet of SSH hosts in Linux namespaces.

Entry points: ``python -m tests.harness up|down|down-all|demo`` (see ``__main__``),
:func:`tests.harness.world.up` / :func:`tests.harness.world.down` and the pytest fixtures in
``tests/conftest.py``. ``docs/testing.md`` describes the whole.
"""
