# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""lifecycle: event orders, the previous-revision rule, host call grouping, event list validation."""

from __future__ import annotations

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.revisions import lifecycle as lc


def test_inplace_orders():
    assert lc.inplace_events(True) == [
        "BeforeBlockTraffic", "BlockTraffic", "AfterBlockTraffic", "ApplicationStop", "DownloadBundle",
        "BeforeInstall", "Install", "AfterInstall", "ApplicationStart", "ValidateService",
        "BeforeAllowTraffic", "AllowTraffic", "AfterAllowTraffic",
    ]
    assert lc.inplace_events(False) == [
        "ApplicationStop", "DownloadBundle", "BeforeInstall", "Install", "AfterInstall", "ApplicationStart",
        "ValidateService",
    ]


def test_bluegreen_and_lambda_orders():
    assert lc.events_for("bluegreen_replacement")[0] == "ApplicationStop"
    assert lc.events_for("bluegreen_replacement")[-3:] == ["BeforeAllowTraffic", "AllowTraffic", "AfterAllowTraffic"]
    assert lc.events_for("bluegreen_original") == ["BeforeBlockTraffic", "BlockTraffic", "AfterBlockTraffic"]
    assert lc.events_for("lambda") == ["BeforeAllowTraffic", "AllowTraffic", "AfterAllowTraffic"]
    with pytest.raises(lc.LifecycleError):
        lc.events_for("rolling")


def test_event_sets():
    assert len(lc.SCRIPTABLE_EVENTS) == 9 and len(lc.RESERVED_EVENTS) == 4
    assert not set(lc.SCRIPTABLE_EVENTS) & set(lc.RESERVED_EVENTS)
    assert set(lc.SCRIPTABLE_EVENTS) | set(lc.RESERVED_EVENTS) == set(lc.ALL_EVENTS)
    assert lc.PREVIOUS_REVISION_EVENTS == ("BeforeBlockTraffic", "AfterBlockTraffic", "ApplicationStop")
    assert lc.uses_previous_revision("ApplicationStop") and not lc.uses_previous_revision("BeforeInstall")
    assert lc.is_reserved("Install") and lc.is_scriptable("ValidateService") and not lc.is_scriptable("AllowTraffic")


def test_split_host_calls():
    assert lc.split_host_calls(lc.inplace_events(True)) == [
        ["BeforeBlockTraffic"],
        ["AfterBlockTraffic", "ApplicationStop", "DownloadBundle", "BeforeInstall", "Install", "AfterInstall",
         "ApplicationStart", "ValidateService", "BeforeAllowTraffic"],
        ["AfterAllowTraffic"],
    ]
    assert lc.split_host_calls(lc.inplace_events(False)) == [lc.inplace_events(False)]
    assert lc.split_host_calls(lc.events_for("bluegreen_original")) == [["BeforeBlockTraffic"], ["AfterBlockTraffic"]]
    assert lc.plan_steps(lc.events_for("bluegreen_original")) == [
        ("host", ["BeforeBlockTraffic"]), ("controller", ["BlockTraffic"]), ("host", ["AfterBlockTraffic"])]


def test_every_host_group_validates():
    for kind in ("inplace", "bluegreen_replacement", "bluegreen_original"):
        for group in lc.split_host_calls(lc.events_for(kind)):
            assert lc.validate_events(group, allow_controller_events=False) == group


@pytest.mark.parametrize("events, message", [
    ([], "at least one"),
    (["Deploy"], "unknown lifecycle event 'Deploy'"),
    (["ApplicationStop", "ApplicationStop"], "more than once"),
    (["BeforeInstall", "ApplicationStop"], "contiguous"),
    (["ApplicationStop", "BeforeInstall"], "after 'ApplicationStop' comes 'DownloadBundle'"),
    (["BeforeBlockTraffic", "AfterBlockTraffic"], "comes 'BlockTraffic'"),
])
def test_validate_rejects(events, message):
    with pytest.raises(lc.LifecycleError, match=message):
        lc.validate_events(events)


def test_validate_controller_events_and_other_orders():
    assert lc.validate_events(["BlockTraffic", "AfterBlockTraffic"]) == ["BlockTraffic", "AfterBlockTraffic"]
    with pytest.raises(lc.LifecycleError, match="controller"):
        lc.validate_events(["BlockTraffic"], allow_controller_events=False)
    with pytest.raises(lc.LifecycleError, match="not part of this deployment's order"):
        lc.validate_events(["ApplicationStop"], order=lc.LAMBDA_EVENTS)
