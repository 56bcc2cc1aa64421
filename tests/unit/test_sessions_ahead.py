# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which host sessions started ahead a batch takes over: only the ones started for it, for its hosts, with exactly
the arguments it would give them (whatever the session's name); what the step takes as a host's state; and which
batch handed over by the step before (its hosts back in their load balancers) a step takes over."""

import re

import pytest
from ansible.errors import AnsibleActionFail

from ansible_collections.rollwright.deploy.plugins.action.inplace_step import (
    args_digest, checked_hand_over, next_planned, prestarted_for, refuse_handed_over, reported_state, session_path,
)
from ansible_collections.rollwright.deploy.plugins.module_utils.host.state import StateError


def _args(name: str, **extra) -> dict:
    return dict({"application": "shop", "deployment_group": "web", "deployment_id": "d-AAAAAAAA1",
                 "events": ["BeforeBlockTraffic"], "file_exists_behavior": "OVERWRITE", "bundle_transfer": "push",
                 "session": {"name": name, "groups": [{"events": ["ApplicationStop"]},
                                                      {"events": ["AfterAllowTraffic"], "complete": True}]}}, **extra)


def _prestarted(batch_number: int, **hosts) -> dict:
    return {"batch_number": batch_number, "hosts": {
        h: {"name": a["session"]["name"], "gates": 2, "args": args_digest(a)} for h, a in hosts.items()}}


def test_a_batch_takes_the_sessions_started_for_it_whatever_their_name():
    ahead = _prestarted(2, web1=_args("b2-aaaa-0"), web2=_args("b2-aaaa-1"))
    batch = {"web1": _args("b2-bbbb-0"), "web2": _args("b2-bbbb-1")}
    assert sorted(prestarted_for(ahead, 2, batch)) == ["web1", "web2"]
    assert prestarted_for(ahead, 2, batch)["web1"]["name"] == "b2-aaaa-0"


def test_a_batch_refuses_sessions_started_for_another_batch_host_or_with_other_arguments():
    ahead = _prestarted(2, web1=_args("b2-aaaa-0"), web2=_args("b2-aaaa-1"))
    assert prestarted_for(ahead, 3, {"web1": _args("b3-0")}) == {}  # another batch
    assert prestarted_for(None, 2, {"web1": _args("b2-0")}) == {}
    # a host the batch does not take, and one whose options differ (another file_exists_behavior, BeforeBlockTraffic
    # no longer due): not taken
    batch = {"web2": _args("b2-c-1", file_exists_behavior="RETAIN"), "web3": _args("b2-c-2")}
    assert prestarted_for(ahead, 2, batch) == {}
    assert prestarted_for(ahead, 2, {"web1": dict(_args("b2-c-0"), events=[])}) == {}
    # a name that is not a session name (the step builds the session's path from it) is never taken
    forged = {"batch_number": 2, "hosts": {"web1": {"name": "../../../etc", "args": args_digest(_args("x"))}}}
    assert prestarted_for(forged, 2, {"web1": _args("b2-c-0")}) == {}


def test_a_session_path_is_built_from_checked_parts_only():
    where = {"state_root": "/var/lib/rollwright", "application": "shop", "deployment_group": "web"}
    assert session_path("d-AAAAAAAA1", where, "b2-abc-0") == \
        "/var/lib/rollwright/shop/web/deployments/d-AAAAAAAA1/sessions/b2-abc-0"
    assert session_path("d-AAAAAAAA1", dict(where, state_root=None), "b2-abc-0").startswith("/var/lib/rollwright/")
    for bad_where, name in ((dict(where, state_root="relative/root"), "b2-abc-0"),
                            (dict(where, state_root="~root/state"), "b2-abc-0"),
                            (dict(where, application="../etc"), "b2-abc-0"),
                            (where, "../../../../etc")):
        with pytest.raises(StateError):
            session_path("d-AAAAAAAA1", bad_where, name)


def test_a_host_state_is_taken_from_a_result_only_when_it_is_one():
    state = {"exists": True, "last_successful": {"deployment_id": "d-1"}}
    assert reported_state(dict(state, changed=False)) == dict(state, changed=False)  # host_deployment_info's result
    assert reported_state({"changed": True, "host_state": state}, "host_state") == state  # host_lifecycle's
    for result in ({"unreachable": True, "host_state": state}, {"failed": True, "host_state": state}, None, "text",
                   {"changed": True}, {"host_state": "forged"}, {"host_state": {}}):
        assert reported_state(result, "host_state") is None, result


def _handed_state(**handed) -> dict:
    base = {"batch_number": 3, "where": {"state_root": "/var/lib/rollwright", "application": "shop",
                                         "deployment_group": "web"},
            "sessions": {"web1": {"name": "b3-abc-0", "gates": 2}, "web2": {"name": "b3-abc-1", "gates": 2}}}
    return {"batch_number": 3, "batch": ["web1", "web2", "web3"], "active": ["web1", "web2"],
            "handed_over": dict(base, **handed)}


def test_a_batch_handed_over_is_taken_over_only_as_the_step_before_left_it():
    assert checked_hand_over(_handed_state())["sessions"]["web2"]["name"] == "b3-abc-1"
    assert checked_hand_over(_handed_state(sessions={}))["sessions"] == {}  # a module call per group: no session
    bad = {
        "another batch": (_handed_state(batch_number=2), "batch 2 was handed over, but the state is at batch 3"),
        "a host missing": (_handed_state(sessions={"web1": {"name": "b3-abc-0", "gates": 2}}),
                           "expected a session for each of web1, web2"),
        "a host not in the batch": (_handed_state(sessions={"web1": {"name": "b3-abc-0", "gates": 2},
                                                            "web9": {"name": "b3-abc-1", "gates": 2}}),
                                    "expected a session for each of web1, web2"),
        "a forged name": (_handed_state(sessions={"web1": {"name": "../../etc", "gates": 2},
                                                  "web2": {"name": "b3-abc-1", "gates": 2}}),
                          "handed_over.sessions.web1: expected a session name and its gate count"),
        "a gate count past the groups": (_handed_state(sessions={"web1": {"name": "b3-abc-0", "gates": 9},
                                                                 "web2": {"name": "b3-abc-1", "gates": 2}}),
                                         "handed_over.sessions.web1: expected a session name and its gate count (2 to 3)"),
        "a gate count that is not a number": (_handed_state(sessions={"web1": {"name": "b3-abc-0", "gates": True},
                                                                      "web2": {"name": "b3-abc-1", "gates": 2}}),
                                              "handed_over.sessions.web1"),
        "no place": (_handed_state(where="/tmp"), "handed_over.where: expected where the sessions live"),
        "not a dict": (dict(_handed_state(), handed_over=["web1"]), "expected the batch a batch step handed over"),
    }
    for state, message in bad.values():
        with pytest.raises(AnsibleActionFail, match=re.escape(message)):
            checked_hand_over(state)
    no_batch = dict(_handed_state(), batch=[], active=[])
    with pytest.raises(AnsibleActionFail, match="expected a batch in progress with hosts back in their load balancers"):
        checked_hand_over(no_batch)


def test_only_a_batch_step_takes_a_handed_over_batch_and_only_a_planned_batch_with_another_after_it_hands_over():
    for step in ("plan", "block", "allow"):
        with pytest.raises(AnsibleActionFail, match=f"batch 3 was handed over to the next step=batch .* step={step} "):
            refuse_handed_over(_handed_state(), step)
    for step in ("batch", "stop"):
        refuse_handed_over(_handed_state(), step)
    refuse_handed_over({"batch_number": 3}, "plan")  # nothing handed over
    state = {"plan_preview": [["web1"], ["web2", "web3"], ["web4"]]}
    assert next_planned(state, ["web1"]) == ["web2", "web3"]
    assert next_planned(state, ["web2", "web3"]) == ["web4"]
    assert next_planned(state, ["web4"]) is None  # the last planned batch: the finish follows, not a batch step
    assert next_planned(state, None) is None  # hosts left after failures: not a planned batch
    assert next_planned(state, ["web3", "web2"]) is None
