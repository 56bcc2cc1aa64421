# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 12, host side, end to end: hostile application users and bundles against host_lifecycle over SSH.

Each case runs ``ansible-playbook`` on a 3-host world (the fixtures of test_host_engine_fleet): the revision is fetched on the controller,
host_lifecycle runs on the hosts (as root), the attacker acts as the app user ``rwapp`` (``runuser``
or a ``runas`` hook), and a probe over SSH checks the hosts. Victims live in the hosts' private
``/srv`` (standing in for ``/etc``): every case asserts the victim is unchanged and the failure
names the path or the limit at fault.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.harness.ansible_run import AnsibleResult
from tests.integration import test_host_engine_fleet as engine
from tests.integration.test_host_engine_fleet import (
    controller_play,
    event,
    failures,
    hosts_play,
    lifecycle_task,
    new_deployment_id,
    probe_task,
    probed,
    processes,
    ps_task,
    revision_task,
)

pytestmark = [pytest.mark.fleet, pytest.mark.slow, pytest.mark.hostile]

# the module-scoped fixtures of the host engine tests: this module gets its own 3-host world
world, work, play = engine.world, engine.work, engine.play

APP_USER = "rwapp"
STATE = "/var/lib/rollwright"
VICTIM = "/srv/hh-victim"
VICTIM_FILES = [VICTIM, f"{VICTIM}/passwd", f"{VICTIM}/sub", f"{VICTIM}/sub/app.conf"]


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------

def make_zip(path: Path, appspec: str, files: dict[str, str], modes: dict[str, int] | None = None,
             dirs: dict[str, int] | None = None) -> Path:
    """A zip bundle: appspec.yml, files (mode 0755 for .sh, else 0644 unless `modes` says), explicit dir entries."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, mode in (dirs or {}).items():
            info = zipfile.ZipInfo(name.rstrip("/") + "/", date_time=(2026, 1, 1, 0, 0, 0))
            info.external_attr = (0o040000 | mode) << 16
            archive.writestr(info, b"")
        for name, text in {"appspec.yml": appspec, **files}.items():
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            mode = (modes or {}).get(name, 0o755 if name.endswith(".sh") else 0o644)
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, text)
    return path


def appspec_text(destination: str, hooks: str = "", permissions: str = "") -> str:
    return (f"version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: {destination}\n"
            + (f"permissions:\n{permissions}" if permissions else "") + (f"hooks:\n{hooks}" if hooks else ""))


def victim_tasks() -> list[dict[str, Any]]:
    """Create the victim tree (root's, like /etc) on the hosts."""
    return [
        {"name": "victim dirs", "ansible.builtin.file": {"path": f"{VICTIM}/sub", "state": "directory", "mode": "0755"}},
        {"name": "victim passwd", "ansible.builtin.copy": {"dest": f"{VICTIM}/passwd", "content": "root:x:0:0\n",
                                                           "mode": "0644"}},
        {"name": "victim app.conf", "ansible.builtin.copy": {"dest": f"{VICTIM}/sub/app.conf", "content": "precious\n",
                                                             "mode": "0600"}},
    ]


def as_app_user(name: str, script: str) -> dict[str, Any]:
    return {"name": name, "ansible.builtin.command": {"argv": ["runuser", "-u", APP_USER, "--", "/bin/sh", "-c", script]}}


def assert_victim_unchanged(before: dict[str, Any], after: dict[str, Any]) -> None:
    for host, paths in before.items():
        assert paths[f"{VICTIM}/passwd"] is not None, f"{host}: the victim was not created"
        assert after[host] == paths, f"{host}: the victim outside the appspec destinations changed"


def lifecycle(name: str, rev: str, app: str, dep: str, **extra: Any) -> dict[str, Any]:
    return lifecycle_task(name, rev, application=app, group="g", deployment_id=dep, ignore_errors=True, **extra)


# ----------------------------------------------------------------------------------------------
# symlink swaps by the app user: directly (host1) and from a runas hook right before Install (host2)
# ----------------------------------------------------------------------------------------------

OWNED_BY_APP = (f"  - object: /opt/app/hh-swap\n    pattern: \"**\"\n    owner: {APP_USER}\n    type:\n      - directory\n")


def test_symlink_swap_in_app_owned_tree_is_refused(play: Callable[..., AnsibleResult], work: Path) -> None:
    dest = "/opt/app/hh-swap"
    v1 = make_zip(work / "swap" / "v1.zip", appspec_text(dest, permissions=OWNED_BY_APP),
                  {"app/conf/sub/app.conf": "v1\n", "app/index.html": "v1\n"})
    swap = (f"set -e; cd {dest}/conf; [ -L sub ] || {{ mv sub sub.moved; ln -s {VICTIM}/sub sub; }}")
    v2 = make_zip(work / "swap" / "v2.zip", appspec_text(dest, permissions=OWNED_BY_APP, hooks=(
        f"  BeforeInstall:\n    - location: scripts/swap.sh\n      runas: {APP_USER}\n")),
        {"app/conf/sub/app.conf": "v2\n", "app/index.html": "v2\n", "scripts/swap.sh": f"#!/bin/sh\n{swap}\n"})
    d1, d2 = new_deployment_id(), new_deployment_id()
    res = play([
        controller_play(revision_task("rev_v1", work / "swap" / "cache", path=v1),
                        revision_task("rev_v2", work / "swap" / "cache", path=v2)),
        hosts_play("fleet", *victim_tasks(), probe_task("victim before", VICTIM_FILES),
                   lifecycle("deploy v1", "rev_v1", "hh-swap", d1)),
        hosts_play("host1", as_app_user("app user swaps conf/sub for a symlink", swap)),
        hosts_play("fleet", lifecycle("deploy v2", "rev_v2", "hh-swap", d2),
                   probe_task("victim after", VICTIM_FILES),
                   probe_task("dest after", [f"{dest}/index.html", f"{dest}/conf/sub.moved/app.conf"])),
    ], timeout=120)
    assert res.rc == 0, failures(res)
    for host, r in res.task("deploy v1").items():
        assert not r.get("failed"), r["msg"]
    for host, r in res.task("deploy v2").items():
        assert r["failed"] is True and r["failed_event"] == "Install", (host, r)
        assert f"refusing {dest}/conf/sub: is a symlink" in r["msg"] and "nothing was removed" in r["msg"], r["msg"]
        assert event(r, "BeforeInstall")["status"] == "Succeeded"  # host2: the hook made the swap
    assert_victim_unchanged(probed(res, "victim before"), probed(res, "victim after"))
    for host, p in probed(res, "dest after").items():
        assert p[f"{dest}/index.html"]["text"] == "v1\n", "the refusal came before anything was removed or copied"


def test_state_dir_swapped_for_symlink_is_refused(play: Callable[..., AnsibleResult], work: Path) -> None:
    dest = "/opt/app/hh-state"
    bundle = make_zip(work / "state" / "b.zip", appspec_text(dest, hooks="  AfterInstall:\n    - location: scripts/ok.sh\n"),
                      {"app/a.txt": "a\n", "scripts/ok.sh": "#!/bin/sh\necho ok\n"})
    dep = new_deployment_id()
    logs = f"{STATE}/hh-state/g/deployments/{dep}/logs"
    res = play([
        controller_play(revision_task("rev_state", work / "state" / "cache", path=bundle)),
        hosts_play("host1", *victim_tasks(), probe_task("victim before", VICTIM_FILES),
                   lifecycle("unpack", "rev_state", "hh-state", dep, events=["DownloadBundle", "BeforeInstall", "Install"],
                             complete=False),
                   {"name": "plant a symlink for the logs", "ansible.builtin.shell": f"rm -rf {logs} && ln -s {VICTIM}/sub {logs}"},
                   lifecycle("hook with swapped logs", "rev_state", "hh-state", dep, events=["AfterInstall"], src=False),
                   probe_task("victim after", VICTIM_FILES)),
    ], timeout=90)
    assert res.rc == 0, failures(res)
    r = res.task("hook with swapped logs")["host1"]
    assert r["failed"] is True and f"refusing {logs}: is a symlink" in r["msg"], r
    assert "Traceback" not in json.dumps(r)
    assert_victim_unchanged(probed(res, "victim before"), probed(res, "victim after"))


# ----------------------------------------------------------------------------------------------
# sealed state, masked modes, the bundle removed, check mode plan
# ----------------------------------------------------------------------------------------------

def test_state_sealed_modes_masked_bundle_removed(play: Callable[..., AnsibleResult], work: Path) -> None:
    dest = "/opt/app/hh-seal"
    bundle = make_zip(work / "seal" / "b.zip", appspec_text(dest), {"app/bin/run.sh": "#!/bin/sh\n", "app/key.pem": "k\n"},
                      modes={"app/bin/run.sh": 0o777, "app/key.pem": 0o600}, dirs={"app/bin": 0o777, "app": 0o777})
    dep = new_deployment_id()
    ddir = f"{STATE}/hh-seal/g/deployments/{dep}"
    paths = [ddir, f"{ddir}/logs", f"{ddir}/revision.json", f"{ddir}/status.json", f"{ddir}/appspec.json",
             f"{ddir}/bundle.zip", f"{STATE}/hh-seal/g", f"{STATE}/hh-seal/g/install.json", f"{STATE}/hh-seal/g/cleanup.json",
             f"{ddir}/archive/app/bin", f"{ddir}/archive/app/bin/run.sh", f"{dest}/bin", f"{dest}/bin/run.sh", f"{dest}/key.pem"]
    res = play([
        controller_play(revision_task("rev_seal", work / "seal" / "cache", path=bundle)),
        hosts_play("host2", lifecycle("deploy", "rev_seal", "hh-seal", dep), probe_task("probe seal", paths)),
    ], timeout=90)
    assert res.rc == 0, failures(res)
    r = res.task("deploy")["host2"]
    assert not r.get("failed"), r["msg"]
    p = probed(res, "probe seal")["host2"]
    modes = {k: (v["mode"] if v else None) for k, v in p.items()}
    assert modes[ddir] == "0700" and modes[f"{ddir}/logs"] == "0700" and modes[f"{STATE}/hh-seal/g"] == "0711", modes
    for name in ("revision.json", "status.json", "appspec.json"):
        assert modes[f"{ddir}/{name}"] == "0600", modes
    assert modes[f"{STATE}/hh-seal/g/install.json"] == "0600" and modes[f"{STATE}/hh-seal/g/cleanup.json"] == "0600"
    assert p[f"{ddir}/bundle.zip"] is None, "the bundle is removed once unpacked"
    assert json.loads(p[f"{ddir}/revision.json"]["text"])["sha256"] == res.task("rev_seal")["localhost"]["bundle"]["sha256"]
    # group/other write masked on extraction, so also on the installed copies
    assert (modes[f"{ddir}/archive/app/bin"], modes[f"{ddir}/archive/app/bin/run.sh"]) == ("0755", "0755"), modes
    assert (modes[f"{dest}/bin"], modes[f"{dest}/bin/run.sh"], modes[f"{dest}/key.pem"]) == ("0755", "0755", "0600"), modes


def test_check_mode_returns_a_plan_and_changes_nothing(play: Callable[..., AnsibleResult], work: Path) -> None:
    dest = "/opt/app/hh-plan"
    marker = "/srv/hh-plan-hook-ran"
    stop = "  ApplicationStop:\n    - location: scripts/mark.sh\n      timeout: 20\n"
    hooks = stop + f"  BeforeInstall:\n    - location: scripts/mark.sh\n      runas: {APP_USER}\n"
    v1 = make_zip(work / "plan" / "v1.zip", appspec_text(dest, hooks=stop),
                  {"app/old.txt": "old\n", "app/keep.txt": "v1\n", "scripts/mark.sh": f"#!/bin/sh\ntouch {marker}\n"})
    v2 = make_zip(work / "plan" / "v2.zip", appspec_text(dest, hooks=hooks),
                  {"app/new.txt": "new\n", "app/keep.txt": "v2\n", "scripts/mark.sh": f"#!/bin/sh\ntouch {marker}\n"})
    d1, d2 = new_deployment_id(), new_deployment_id()
    events = ["ApplicationStop", "DownloadBundle", "BeforeInstall", "Install"]
    check = dict(lifecycle("plan v2", "rev_v2", "hh-plan", d2, events=events), check_mode=True, diff=True)
    res = play([
        controller_play(revision_task("rev_v1", work / "plan" / "cache", path=v1),
                        revision_task("rev_v2", work / "plan" / "cache", path=v2)),
        hosts_play("host1", lifecycle("deploy v1", "rev_v1", "hh-plan", d1, events=["DownloadBundle", "BeforeInstall", "Install"]),
                   probe_task("before", [f"{dest}/old.txt", f"{dest}/keep.txt", marker, f"{STATE}/hh-plan/g/deployments/{d2}"]),
                   check,
                   probe_task("after", [f"{dest}/old.txt", f"{dest}/keep.txt", marker, f"{STATE}/hh-plan/g/deployments/{d2}"])),
    ], timeout=90)
    assert res.rc == 0, failures(res)
    assert not res.task("deploy v1")["host1"].get("failed"), res.task("deploy v1")["host1"]["msg"]
    r = res.task("plan v2")["host1"]
    assert not r.get("failed"), r["msg"]
    plan = r["plan"]
    assert [e["event"] for e in plan["events"]] == events
    stop = plan["events"][0]["scripts"]
    assert stop == [{"location": "scripts/mark.sh", "runas": None, "timeout": 20, "from_revision": d1}], stop
    assert plan["events"][2]["scripts"] == [{"location": "scripts/mark.sh", "runas": APP_USER, "timeout": 3600,
                                             "from_revision": d2}]
    files = plan["files"]
    assert {f"{dest}/keep.txt", f"{dest}/new.txt"} <= set(files["create"]) and f"{dest}/old.txt" not in files["create"], files
    assert f"{dest}/old.txt" in files["remove"] and files["overwrite"] == [], files
    assert f"{dest}/new.txt" in r["diff"]["after"] and f"{dest}/old.txt" in r["diff"]["before"], r["diff"]
    before, after = probed(res, "before")["host1"], probed(res, "after")["host1"]
    assert before == after and after[marker] is None, "check mode changed the host or ran a hook"


# ----------------------------------------------------------------------------------------------
# unpack limits
# ----------------------------------------------------------------------------------------------

def test_zip_bomb_and_member_count_fail_naming_the_limit(play: Callable[..., AnsibleResult], work: Path) -> None:
    dest = "/opt/app/hh-bomb"
    bomb = make_zip(work / "bomb" / "bomb.zip", appspec_text(dest), {"app/zeros": "\0" * (16 * 1024 * 1024)})
    many = make_zip(work / "bomb" / "many.zip", appspec_text(dest), {f"app/f{i}.txt": str(i) for i in range(30)})
    d1, d2 = new_deployment_id(), new_deployment_id()
    res = play([
        controller_play(revision_task("rev_bomb", work / "bomb" / "cache", path=bomb),
                        revision_task("rev_many", work / "bomb" / "cache", path=many)),
        hosts_play("host1", lifecycle("deploy bomb", "rev_bomb", "hh-bomb", d1),
                   lifecycle("deploy many", "rev_many", "hh-bomb", d2, unpack_limits={"members": 20}),
                   probe_task("probe bomb", [dest, f"{STATE}/hh-bomb/g/deployments/{d1}/archive",
                                             f"{STATE}/hh-bomb/g/deployments/{d2}/archive"])),
    ], timeout=90)
    assert res.rc == 0, failures(res)
    r = res.task("deploy bomb")["host1"]
    assert r["failed"] is True and r["failed_event"] == "DownloadBundle", r
    assert "unpack limit unpack_limits.ratio exceeded" in r["msg"], r["msg"]
    r = res.task("deploy many")["host1"]
    assert r["failed"] is True and "unpack limit unpack_limits.members exceeded" in r["msg"], r["msg"]
    assert all(v is None for v in probed(res, "probe bomb")["host1"].values()), "an over-limit bundle left files"


# ----------------------------------------------------------------------------------------------
# hooks: setsid children, secrets in output, invalid appspec
# ----------------------------------------------------------------------------------------------

def test_setsid_child_killed_at_timeout(play: Callable[..., AnsibleResult], work: Path) -> None:
    hang = "#!/bin/sh\nsetsid sleep 307 &\n( setsid sleep 308 & )\nsleep 309\n"
    bundle = make_zip(work / "setsid" / "b.zip", appspec_text("/opt/app/hh-setsid", hooks=(
        "  ApplicationStart:\n    - location: scripts/hang.sh\n      timeout: 2\n")), {"app/a": "a", "scripts/hang.sh": hang})
    dep = new_deployment_id()
    res = play([
        controller_play(revision_task("rev_setsid", work / "setsid" / "cache", path=bundle)),
        hosts_play("host2", lifecycle("deploy hang", "rev_setsid", "hh-setsid", dep, hook_timeout_grace=1,
                                      events=["DownloadBundle", "BeforeInstall", "Install", "AfterInstall", "ApplicationStart"]),
                   ps_task("ps after")),
    ], timeout=90)
    assert res.rc == 0, failures(res)
    r = res.task("deploy hang")["host2"]
    assert r["failed"] is True and "did not finish within its timeout of 2 s" in r["msg"], r["msg"]
    for args in ("sleep 307", "sleep 308", "sleep 309"):
        assert processes(res, "ps after", args) == {"host2": []}, f"{args} survived the timeout"


SECRETS = "DB_PASSWORD=hunter2\nexport API_TOKEN=tok-123\nAKIAIOSFODNN7EXAMPLE\n"


def test_secrets_in_hook_output_are_redacted_and_kept_on_the_host(play: Callable[..., AnsibleResult], work: Path) -> None:
    hooks = ("  AfterInstall:\n    - location: scripts/chatty.sh\n"
             "  ApplicationStart:\n    - location: scripts/leak.sh\n")
    bundle = make_zip(work / "secret" / "b.zip", appspec_text("/opt/app/hh-secret", hooks=hooks), {
        "app/a": "a", "scripts/chatty.sh": f"#!/bin/sh\nprintf '{SECRETS}'\n", "scripts/leak.sh": f"#!/bin/sh\nprintf '{SECRETS}'\nexit 4\n"})
    d1, d2 = new_deployment_id(), new_deployment_id()
    events = ["DownloadBundle", "BeforeInstall", "Install", "AfterInstall", "ApplicationStart"]
    res = play([
        controller_play(revision_task("rev_secret", work / "secret" / "cache", path=bundle)),
        hosts_play("host1", lifecycle("deploy leak", "rev_secret", "hh-secret", d1, events=events),
                   lifecycle("deploy leak quiet", "rev_secret", "hh-secret2", d2, events=events, hook_output="none",
                             file_exists_behavior="OVERWRITE"),
                   probe_task("log", [f"{STATE}/hh-secret/g/deployments/{d1}/logs/scripts.log"])),
    ], timeout=90)
    assert res.rc == 0, failures(res)
    r = res.task("deploy leak")["host1"]
    assert r["failed"] is True and r["failed_event"] == "ApplicationStart" and "exit code 4" in r["msg"], r["msg"]
    text = json.dumps(r)
    for secret in ("hunter2", "tok-123", "AKIAIOSFODNN7EXAMPLE"):
        assert secret not in text, f"{secret} left the host"
    assert "DB_PASSWORD=[REDACTED]" in r["msg"] and "API_TOKEN=[REDACTED]" in r["msg"], r["msg"]
    assert event(r, "AfterInstall")["scripts"][0]["output_tail"] == "", "a script that succeeded returned output"
    quiet = res.task("deploy leak quiet")["host1"]
    assert quiet["failed"] is True and quiet["failed_event"] == "ApplicationStart", quiet["msg"]
    assert event(quiet, "ApplicationStart")["scripts"][0]["output_tail"] == ""
    assert "REDACTED" not in quiet["msg"] and "DB_PASSWORD" not in quiet["msg"], quiet["msg"]
    log = probed(res, "log")["host1"][f"{STATE}/hh-secret/g/deployments/{d1}/logs/scripts.log"]
    assert log["mode"] == "0600" and "hunter2" in log["text"], "the sealed log keeps the full output"


def test_invalid_appspec_on_the_host_is_a_clear_error(play: Callable[..., AnsibleResult], work: Path) -> None:
    dest = "/opt/app/hh-badspec"
    bad = {"version": "0.0", "os": "linux", "files": [{"source": "app", "destination": dest}], "file_exists_behavior": None,
           "permissions": [], "hooks": {"AfterInstall": [{"location": "scripts/x.sh", "timeout": "abc", "runas": None}]}}
    bundle = make_zip(work / "badspec" / "b.zip", appspec_text(dest), {"app/a": "a"})
    dep = new_deployment_id()
    task = lifecycle("deploy bad appspec", "rev_badspec", "hh-badspec", dep)
    task["rollwright.deploy.host_lifecycle"]["appspec"] = bad
    res = play([
        controller_play(revision_task("rev_badspec", work / "badspec" / "cache", path=bundle)),
        hosts_play("host2", task, probe_task("probe badspec", [dest, f"{STATE}/hh-badspec"])),
    ], timeout=60)
    assert res.rc == 0, failures(res)
    r = res.task("deploy bad appspec")["host2"]
    assert r["failed"] is True and "hooks.AfterInstall[0].timeout" in r["msg"] and "abc" in r["msg"], r["msg"]
    assert "Traceback" not in json.dumps(r) and "MODULE FAILURE" not in r["msg"], r
    assert all(v is None for v in probed(res, "probe badspec")["host2"].values())
