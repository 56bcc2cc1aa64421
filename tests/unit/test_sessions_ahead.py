# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which host sessions started ahead a batch takes over: only the ones started for it, for its hosts, with exactly
the arguments it would give them (whatever the session's name); and what the step takes as a host's state."""

import pytest

from ansible_collections.rollwright.deploy.plugins.action.inplace_step import (
    args_digest, prestarted_for, reported_state, session_path,
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
