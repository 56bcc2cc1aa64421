# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hostile input on the controller side (issue 12): tampered and superseded records, lock takeovers
and fencing, a dead or live controller, secrets in records and on the lease keeper's command line.

Every case asserts that nothing was changed on the load balancer (the fake records every call) or
in the record, and that the error names the cause. DynamoDB (store clock, skew) and the playbook
paths are in tests/integration/test_records_hostile.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import inplace as ip
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import lease
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import recovery as rc
from ansible_collections.rollwright.deploy.plugins.module_utils.records import (
    InvalidRecord,
    LockHeld,
    LockLost,
    open_store,
)
from ansible_collections.rollwright.deploy.plugins.module_utils.redact import MASK, redact_text, redact_value
from tests.unit.test_inplace_engine import IDS, TG, TG2, FakeLB, all_registered, ok, start

pytestmark = pytest.mark.hostile


@pytest.fixture
def store(tmp_path):
    s = open_store("sqlite", {"path": str(tmp_path / "records.sqlite3")})
    yield s
    s.close()


def _stopped_with_h1_out(store, lb, config="CodeDeployDefault.OneAtATime", groups=(TG,)):
    """A deployment the lease keeper marked Stopped while h1 was out of its load balancer (lock left)."""
    run, state = start(store, lb, config=config, groups=groups)
    state = run.plan(state, {})
    state = run.block(state, {h: ok(state["host_calls"]["pre_block"]) for h in state["active"]}, None)
    store.update_status(state["deployment_id"], "Stopped", error="controller died")
    return run, state


def _tamper(store, deployment_id, host, memberships, instance_id=None):
    store.update_host(deployment_id, host, lb_membership=memberships, instance_id=instance_id)


def _refused(store, lb, deployment_id, *needles):
    """Recovery of ``deployment_id`` is refused naming every needle, and changes nothing."""
    calls, registered = list(lb.calls), list(lb.registered)
    before = store.get(deployment_id).to_dict()
    record = store.get(deployment_id)
    plan = rc.plan_recovery(record, store.get_lock(record.application, record.deployment_group))
    assert plan.refused, plan
    for needle in needles:
        assert needle in plan.refused, (needle, plan.refused)
    assert "nothing was changed" in plan.refused
    with pytest.raises(rc.RecoveryError):
        rc.recover(store, lb, record, plan)
    assert lb.calls == calls and lb.registered == registered
    assert store.get(deployment_id).to_dict() == before
    return plan.refused


# ------------------------------------------------------------------------------------------------ memberships


def test_membership_of_a_foreign_target_in_another_target_group_is_refused(store):
    lb = FakeLB(store, all_registered())
    _run, state = _stopped_with_h1_out(store, lb)
    did = state["deployment_id"]
    _tamper(store, did, "h1", [{"kind": "elbv2", "target_group_arn": TG2, "target_id": "10.9.9.9", "port": 22}])
    msg = _refused(store, lb, did, "10.9.9.9:22", "is not host h1's instance (i-00000000000000001)",
                   f"target group {TG2} is not a load balancer of the deployment's configuration ({TG})")
    assert "hosts[h1].lb_membership[0]" in msg


def test_membership_in_an_unconfigured_target_group_is_refused_even_with_the_right_instance(store):
    lb = FakeLB(store, all_registered())
    _run, state = _stopped_with_h1_out(store, lb)
    _tamper(store, state["deployment_id"], "h1", [{"kind": "elbv2", "target_group_arn": TG2, "target_id": IDS["h1"], "port": 80}])
    _refused(store, lb, state["deployment_id"], f"target group {TG2} is not a load balancer")


def test_membership_naming_another_host_of_the_deployment_is_refused(store):
    lb = FakeLB(store, all_registered())
    _run, state = _stopped_with_h1_out(store, lb)
    _tamper(store, state["deployment_id"], "h1", [{"kind": "elbv2", "target_group_arn": TG, "target_id": IDS["h2"], "port": 80}])
    _refused(store, lb, state["deployment_id"], f"target {IDS['h2']}:80", "is not host h1's instance")


def test_host_instance_id_rewritten_to_match_a_foreign_target_is_still_bounded_by_the_configuration(store):
    lb = FakeLB(store, all_registered())
    _run, state = _stopped_with_h1_out(store, lb)
    _tamper(store, state["deployment_id"], "h1", [{"kind": "elbv2", "target_group_arn": TG2, "target_id": "i-0evil0000000000", "port": 80}],
            instance_id="i-0evil0000000000")
    _refused(store, lb, state["deployment_id"], f"target group {TG2} is not a load balancer")


def test_classic_elb_membership_outside_the_configuration_is_refused(store):
    lb = FakeLB(store, all_registered())
    _run, state = _stopped_with_h1_out(store, lb)
    _tamper(store, state["deployment_id"], "h1", [{"kind": "classic_elb", "load_balancer_name": "payments", "instance_id": IDS["h1"]}])
    _refused(store, lb, state["deployment_id"], "classic ELB payments is not a load balancer")


def test_haproxy_membership_of_another_server_or_instance_is_refused(store):
    lb = FakeLB(store, all_registered())
    _run, state = _stopped_with_h1_out(store, lb)
    did = state["deployment_id"]
    store.set_extra(did, "inplace", dict(store.get(did).extra["inplace"], load_balancer={
        "target_group_arns": [TG], "haproxy": {"instances": ["/run/lb1.sock"], "backend": "app", "servers": {IDS["h1"]: "web-1"}}}))
    _tamper(store, did, "h1", [{"kind": "haproxy", "instance": "/run/lb1.sock", "backend": "app", "server": "db-primary",
                                "state": "ready", "weight": 100}])
    _refused(store, lb, did, "server db-primary is not host h1's server (h1 or web-1)")
    _tamper(store, did, "h1", [{"kind": "haproxy", "instance": "/run/other.sock", "backend": "admin", "server": "web-1"}])
    _refused(store, lb, did, "admin/web-1 on /run/other.sock", "is not an HAProxy instance and backend")


def test_malformed_memberships_are_refused_naming_the_field(store):
    lb = FakeLB(store, all_registered())
    _run, state = _stopped_with_h1_out(store, lb)
    did = state["deployment_id"]
    _tamper(store, did, "h1", [{"kind": "nfs", "target": "x"}])
    _refused(store, lb, did, "hosts[h1].lb_membership[0].kind: expected one of")
    _tamper(store, did, "h1", [{"kind": "elbv2", "target_group_arn": TG, "target_id": IDS["h1"], "port": "22; rm"}])
    _refused(store, lb, did, "hosts[h1].lb_membership[0].port")
    _tamper(store, did, "h1", [{"kind": "elbv2", "target_group_arn": TG, "target_id": IDS["h1"], "port": 70000}])
    _refused(store, lb, did, "port 70000 is not a TCP port")


def test_corrupt_json_in_the_records_file_is_an_error_naming_the_field(store):
    lb = FakeLB(store, all_registered())
    _run, state = _stopped_with_h1_out(store, lb)
    did = state["deployment_id"]
    with sqlite3.connect(str(store.path)) as conn:
        conn.execute("UPDATE hosts SET lb_membership = '[{\"kind\": ' WHERE deployment_id = ? AND name = 'h1'", (did,))
    with pytest.raises(InvalidRecord, match=rf"{did}\.hosts\[h1\]\.lb_membership: the stored value is not valid JSON"):
        store.get(did)
    assert lb.calls == [("block", [IDS["h1"]])]


def test_rollback_refuses_tampered_original_memberships(store):
    lb = FakeLB(store, all_registered())
    run, state = start(store, lb)  # a good v1 first
    from tests.unit.test_inplace_engine import drive

    drive(run, state)
    _run2, failed = _stopped_with_h1_out(store, lb)
    _tamper(store, failed["deployment_id"], "h1", [{"kind": "elbv2", "target_group_arn": TG2, "target_id": "10.9.9.9", "port": 22}])
    calls = list(lb.calls)
    with pytest.raises(ip.InPlaceError) as err:
        ip.plan_rollback(store, "web", "prod", rollback_of=failed["deployment_id"])
    assert "rollback refused" in str(err.value) and "10.9.9.9:22" in str(err.value)
    assert lb.calls == calls


# ------------------------------------------------------------------------------------------------ superseded


def test_a_superseded_deployment_is_not_picked_and_is_recovered_only_when_named(store):
    lb = FakeLB(store, all_registered())
    _run, old = _stopped_with_h1_out(store, lb)
    old_id = old["deployment_id"]
    store.break_lock("web", "prod", old_id, live=True)  # its lock went away (say, by hand)
    newer = store.create(ip.DeploymentRecord(application="web", deployment_group="prod", status="Created"))
    store.update_status(newer.deployment_id, "InProgress")
    store.update_status(newer.deployment_id, "Succeeded")
    assert rc.superseded_by(store, store.get(old_id)).deployment_id == newer.deployment_id
    assert rc.select_deployment(store, "web", "prod") is None  # never picked by itself
    assert rc.select_deployment(store, "web", "prod", old_id).deployment_id == old_id  # named: allowed


def test_a_superseded_lock_holder_is_refused_naming_the_later_deployment(store):
    lb = FakeLB(store, all_registered())
    _run, old = _stopped_with_h1_out(store, lb)
    newer = store.create(ip.DeploymentRecord(application="web", deployment_group="prod", status="Created"))
    store.update_status(newer.deployment_id, "InProgress")
    with pytest.raises(rc.RecoveryError) as err:
        rc.select_deployment(store, "web", "prod")
    assert f"superseded by the later deployment {newer.deployment_id}" in str(err.value)
    assert "nothing was changed" in str(err.value)
    assert lb.calls == [("block", [IDS["h1"]])]


def test_a_later_deployment_refused_at_its_start_does_not_supersede(store):
    lb = FakeLB(store, all_registered())
    _run, old = _stopped_with_h1_out(store, lb)
    refused = store.create(ip.DeploymentRecord(application="web", deployment_group="prod", status="Created"))
    store.update_status(refused.deployment_id, "Failed", error="locked by another deployment")
    assert rc.superseded_by(store, store.get(old["deployment_id"])) is None
    assert rc.select_deployment(store, "web", "prod").deployment_id == old["deployment_id"]


def test_a_lock_naming_a_missing_or_foreign_record_is_refused(store):
    store.acquire_lock("web", "prod", "d-NOSUCHDEP", owner="someone")
    with pytest.raises(rc.RecoveryError, match="d-NOSUCHDEP .*which has no record"):
        rc.select_deployment(store, "web", "prod")
    other = store.create(ip.DeploymentRecord(application="api", deployment_group="blue"))
    store.acquire_lock("web", "canary", other.deployment_id)
    with pytest.raises(rc.RecoveryError, match="belongs to api/blue: the records do not agree"):
        rc.select_deployment(store, "web", "canary")


# ------------------------------------------------------------------------------------------------ the lock


def test_release_and_renewal_need_the_token(store):
    lock = store.acquire_lock("web", "prod", "d-AAAAAAAAA", owner="alice")
    for call in (store.release_lock, store.heartbeat):
        with pytest.raises(InvalidRecord, match="lock_token: .* needs the token"):
            call(("web", "prod", "d-AAAAAAAAA"))
    info = store.get_lock("web", "prod")
    assert info.deployment_id == "d-AAAAAAAAA" and info.owner == "alice"
    assert store.release_lock(lock) is True


def test_a_taken_over_lock_cannot_be_released_or_renewed_by_its_old_token(store):
    old = store.acquire_lock("web", "prod", "d-AAAAAAAAA", owner="alice", ttl=60)
    with pytest.raises(LockHeld, match="wait for it to finish"):  # live: no takeover without live=True
        store.take_over("web", "prod", "d-AAAAAAAAA", owner="recovery")
    new = store.take_over("web", "prod", "d-AAAAAAAAA", owner="recovery", live=True)
    assert new.token != old.token
    with pytest.raises(LockLost, match="with another token"):
        store.release_lock(old)
    with pytest.raises(LockLost):
        store.heartbeat(old)
    assert store.get_lock("web", "prod").owner == "recovery"
    with pytest.raises(LockHeld):  # another deployment's lock is never taken over for this one
        store.take_over("web", "prod", "d-BBBBBBBBB", live=True)


def test_two_recoveries_racing_only_one_acts(store):
    lb = FakeLB(store, all_registered())
    _run, state = _stopped_with_h1_out(store, lb)
    did = state["deployment_id"]
    record, lock = store.get(did), store.get_lock("web", "prod")
    first = rc.plan_recovery(record, lock)
    second = rc.plan_recovery(record, lock)
    assert first.refused is None and second.refused is None
    held = rc.hold_lock(store, record, first.lock)  # the first recovery took the lock over
    calls = list(lb.calls)
    with pytest.raises(rc.RecoveryError, match="changed since recovery read it, so nothing was changed"):
        rc.recover(store, lb, record, second)
    assert lb.calls == calls
    assert store.get_lock("web", "prod").owner == held.owner


def test_fencing_a_step_whose_lock_was_taken_over_writes_nothing(store):
    lb = FakeLB(store, all_registered())
    run, state = start(store, lb, config="CodeDeployDefault.HalfAtATime")
    state = run.plan(state, {})
    store.take_over("web", "prod", state["deployment_id"], owner="recovery", live=True)
    calls = list(lb.calls)
    with pytest.raises(LockLost, match="no longer held"):
        run.block(state, {h: ok(state["host_calls"]["pre_block"]) for h in state["active"]}, None)
    assert lb.calls == calls == []


def test_fencing_at_allow_traffic(store):
    lb = FakeLB(store, all_registered())
    run, state = start(store, lb, config="CodeDeployDefault.HalfAtATime")
    state = run.plan(state, {})
    state = run.block(state, {h: ok(state["host_calls"]["pre_block"]) for h in state["active"]}, None)
    store.take_over("web", "prod", state["deployment_id"], owner="recovery", live=True)
    calls = list(lb.calls)
    with pytest.raises(LockLost):
        run.allow(state, {h: ok(state["host_calls"]["main"]) for h in state["active"]}, None)
    assert lb.calls == calls and all(c[0] != "allow" for c in lb.calls)


# ------------------------------------------------------------------------------------------------ the controller


def _controller_extra(pid, start, host=None, boot=None):
    return {"host": host or socket.gethostname(), "boot_id": boot or lease.boot_id(), "pid": pid, "start": start}


def test_recover_on_the_controllers_machine_checks_the_process_itself(store):
    lb = FakeLB(store, all_registered())
    run, state = start(store, lb)
    state = run.plan(state, {})
    did = state["deployment_id"]
    dead = subprocess.Popen(["true"])  # pylint: disable=consider-using-with
    dead_start = lease.process_start(dead.pid)
    dead.wait()
    store.set_extra(did, "controller", _controller_extra(dead.pid, dead_start or "1"))
    plan = rc.plan_recovery(store.get(did), store.get_lock("web", "prod"))  # InProgress, lock just renewed
    assert plan.refused is None and plan.mark_stopped
    assert "is gone" in lease.controller_gone(store.get(did))


def test_a_live_controller_or_one_on_another_machine_follows_the_lease_rules(store):
    lb = FakeLB(store, all_registered())
    run, state = start(store, lb)
    did = state["deployment_id"]
    store.set_extra(did, "controller", _controller_extra(os.getpid(), lease.process_start(os.getpid())))
    alive = rc.plan_recovery(store.get(did), store.get_lock("web", "prod"))
    assert "looks alive" in alive.refused and f"pid {os.getpid()} on this machine, is still running" in alive.refused
    store.set_extra(did, "controller", _controller_extra(999999, "1", host="ctl-b.example"))
    elsewhere = rc.plan_recovery(store.get(did), store.get_lock("web", "prod"))
    assert "ran on ctl-b.example" in elsewhere.refused and "the lease rules apply" in elsewhere.refused
    assert "wait until the lock is stale (" in elsewhere.refused
    # another boot of this machine: pid and start time mean nothing any more
    store.set_extra(did, "controller", _controller_extra(999999, "1", boot="00000000-0000-0000-0000-000000000000"))
    assert rc.plan_recovery(store.get(did), store.get_lock("web", "prod")).refused
    # without a start time the pid alone is not trusted
    store.set_extra(did, "controller", {"host": socket.gethostname(), "boot_id": lease.boot_id(), "pid": 999999})
    assert lease.controller_gone(store.get(did)) is None
    assert lb.calls == []


def test_lease_keeper_fences_the_dead_controllers_steps_and_marks_stopped(store):
    lb = FakeLB(store, all_registered())
    run, state = start(store, lb, config="CodeDeployDefault.HalfAtATime")
    state = run.plan(state, {})
    alive = {"n": 2}

    def fake_alive(_pid, _start):
        alive["n"] -= 1
        return alive["n"] > 0

    keeper = lease.LeaseKeeper(store, state["lock"], 4242, "1", interval=1, poll=0, sleep=lambda s: None, alive=fake_alive)
    assert "marked Stopped" in keeper.run()
    assert store.get(state["deployment_id"]).status == "Stopped"
    assert "controller died; held for recovery" in store.get_lock("web", "prod").owner
    with pytest.raises(LockLost):  # the orphaned step's next write is fenced off
        run.block(state, {h: ok(state["host_calls"]["pre_block"]) for h in state["active"]}, None)
    assert lb.calls == []
    assert store.get(state["deployment_id"]).extra["controller"]["pid"] == 4242


def test_lease_keeper_does_not_take_back_a_lock_recovery_took(store):
    lb = FakeLB(store, all_registered())
    _run, state = start(store, lb)
    recovery_lock = store.take_over("web", "prod", state["deployment_id"], owner="recovery", live=True)
    keeper = lease.LeaseKeeper(store, state["lock"], 4242, "1", poll=0, sleep=lambda s: None, alive=lambda p, s: False)
    keeper.run()
    assert store.get_lock("web", "prod").owner == "recovery"
    assert store.release_lock(recovery_lock) is True


def test_lease_keeper_configuration_never_on_its_command_line(tmp_path):
    """The keeper gets AWS keys, session token and lock token on stdin; /proc/<pid>/cmdline shows none."""
    store = open_store("sqlite", {"path": str(tmp_path / "keeper.sqlite3")})
    lb = FakeLB(store, all_registered())
    _run, state = start(store, lb, lock_ttl=6.0)
    secrets = {"secret_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY", "session_token": "FwoGZXIvYXdzSESSIONTOKEN123",
               "access_key": "AKIAIOSFODNN7EXAMPLE"}
    controller = subprocess.Popen(["sleep", "30"])  # pylint: disable=consider-using-with
    keeper = None
    try:
        beat_before = store.get_lock("web", "prod").heartbeat_at
        keeper = lease.spawn_lease_keeper({"backend": "sqlite", "sqlite_path": str(tmp_path / "keeper.sqlite3")}, secrets,
                                          state["lock"], (controller.pid, lease.process_start(controller.pid)), interval=1.0,
                                          work_dir=str(tmp_path / "lease"), log_path=str(tmp_path / "keeper.log"))
        cmdline = Path(f"/proc/{keeper['pid']}/cmdline").read_bytes().decode(errors="replace")
        for value in list(secrets.values()) + [state["lock"]["token"]]:
            assert value not in cmdline
        deadline = time.monotonic() + 20
        while store.get_lock("web", "prod").heartbeat_at == beat_before and time.monotonic() < deadline:
            time.sleep(0.2)
        assert store.get_lock("web", "prod").heartbeat_at != beat_before, (tmp_path / "keeper.log").read_text()
        for value in list(secrets.values()) + [state["lock"]["token"]]:
            assert value not in Path(f"/proc/{keeper['pid']}/cmdline").read_bytes().decode(errors="replace")
        # its controller dies: the deployment is Stopped within 2 s
        controller.kill()
        controller.wait()
        killed = time.monotonic()
        while store.get(state["deployment_id"]).status != "Stopped" and time.monotonic() - killed < 10:
            time.sleep(0.05)
        noticed = time.monotonic() - killed
        assert store.get(state["deployment_id"]).status == "Stopped" and noticed < 2.0, noticed
    finally:
        if controller.poll() is None:
            controller.kill()
        if keeper and lease.process_alive(keeper["pid"], keeper["start"]):
            os.kill(keeper["pid"], signal.SIGTERM)


# ------------------------------------------------------------------------------------------------ secrets in records


def test_hook_output_is_stored_redacted(store):
    rec = store.create(ip.DeploymentRecord(application="web", deployment_group="prod"))
    store.event(rec.deployment_id, "h1", "ValidateService", "Failed",
                message="ValidateService failed; output: DB_PASSWORD=hunter2 api_token: abc123 AKIAIOSFODNN7EXAMPLE",
                scripts=[{"location": "v.sh", "exit_code": 1,
                          "output_tail": "export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\nok"}])
    stored = json.dumps(store.get(rec.deployment_id).to_dict())
    for secret in ("hunter2", "abc123", "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"):
        assert secret not in stored
    assert "DB_PASSWORD=" + MASK in stored and "ValidateService failed" in stored


def test_failed_host_message_reaching_the_summary_is_redacted():
    outcome = ip.host_outcome({"failed": True, "msg": "ValidateService: exit 1: MY_SECRET=s3cr3t printed", "events": []})
    assert "s3cr3t" not in outcome.message and f"MY_SECRET={MASK}" in outcome.message


@pytest.mark.parametrize("text, secret", [
    ("DB_PASSWORD=hunter2", "hunter2"),
    ('export API_TOKEN="a b c"', "a b c"),
    ('{"client_secret": "xyz"}', "xyz"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("key ASIAIOSFODNN7EXAMPLE used", "ASIAIOSFODNN7EXAMPLE"),
    ("Authorization: Bearer eyJhbGciOi.x.y", "eyJhbGciOi.x.y"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----", "MIIEow"),
])
def test_redaction_shapes(text, secret):
    assert secret not in redact_text(text)
    assert redact_text(redact_text(text)) == redact_text(text)


def test_redaction_keeps_ordinary_output():
    text = "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 ok; Secrets Manager: reachable"
    assert redact_text(text) == text
    assert redact_value({"status": "Succeeded", "DbPassword": "x", "n": [1, "TOKEN=t"]}) == \
        {"status": "Succeeded", "DbPassword": MASK, "n": [1, f"TOKEN={MASK}"]}


def test_the_aws_dict_option_registers_its_secrets_as_no_log():
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    from ansible_collections.rollwright.deploy.plugins.module_utils.aws.client import AWS_DICT_OPTION

    result = ArgumentSpecValidator({"aws": AWS_DICT_OPTION}).validate(
        {"aws": {"region": "eu-west-1", "aws_secret_access_key": "wJalrXUtnFEMIK7MDENG", "session_token": "FwoGZXIv"}})
    assert result.error_messages == [], result.error_messages
    assert {"wJalrXUtnFEMIK7MDENG", "FwoGZXIv"} <= set(result._no_log_values)  # pylint: disable=protected-access
    assert "eu-west-1" not in result._no_log_values  # pylint: disable=protected-access
    assert result.validated_parameters["aws"]["secret_key"] == "wJalrXUtnFEMIK7MDENG"
