# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 3: the host engine end to end on a real SSH fleet.

Playbooks (lists of plays) run ``rollwright.deploy.revision`` on the controller (S3 bundles from a
versioned bucket of the emulator, and local files) and ``rollwright.deploy.host_lifecycle`` /
``host_deployment_info`` on a 3-host fleet; every check of a host's state is made over SSH by a probe
task (a small stdlib Python script run with ``ansible.builtin.command``).

One world (3 hosts) serves the whole module; each test uses its own application / deployment group
and destinations, so the tests do not depend on each other's order.
"""

from __future__ import annotations

import json
import os
import secrets
import string
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.bundles import build_bundle
from tests.harness.ansible_run import AnsibleResult, run_playbook

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

HOSTS = ["host1", "host2", "host3"]
FULL_EVENTS = ["ApplicationStop", "DownloadBundle", "BeforeInstall", "Install", "AfterInstall", "ApplicationStart",
               "ValidateService"]
HOST_REVISION_KEYS = ["source", "bucket", "key", "version", "etag", "sha256", "bundle_type"]
EVENTS_LOG = "/var/log/rollwright/events.log"

# Prints, as JSON, what exists at each path given (mode, uid, whether a directory, a regular file's text).
PROBE = r"""
import json, os, sys
out = {}
for p in json.loads(sys.argv[1]):
    if not os.path.lexists(p):
        out[p] = None
        continue
    st = os.lstat(p)
    item = {"mode": "%04o" % (st.st_mode & 0o7777), "uid": st.st_uid, "dir": os.path.isdir(p)}
    if os.path.isfile(p):
        with open(p, errors="replace") as fh:
            item["text"] = fh.read(65536)
    out[p] = item
print(json.dumps(out))
"""

# Lists the argv of every process of the host (its own PID namespace), one per line: "<pid> <args>".
PS = ["/bin/ps", "-e", "-o", "pid=,args="]


# ----------------------------------------------------------------------------------------------
# fixtures: one world for the module
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(aws: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A 3-host world on the session's emulator, shared by this module (conftest's ``fleet`` is per test)."""
    if os.geteuid() != 0:
        pytest.skip("the SSH fleet needs root (network, mount and PID namespaces); run the tests as root")
    from tests.harness.world import down, up

    made = up(tmp_path_factory.mktemp("hostengine-world"), 3, emulator_handle=aws.handle.to_json(), region=aws.region)
    try:
        yield made
    finally:
        down(made.dir)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostengine-work")


@pytest.fixture(scope="module")
def play(world: Any, aws: Any) -> Callable[..., AnsibleResult]:
    """``play(plays, timeout=120)``: run a playbook against the module's world."""

    def _run(plays: list[dict[str, Any]], timeout: float = 120, **kwargs: Any) -> AnsibleResult:
        return run_playbook(plays, world.inventory, aws_env=aws.env, control_path_dir=str(world.control_path_dir),
                            timeout=timeout, **kwargs)

    return _run


@pytest.fixture(scope="module")
def bucket(aws: Any) -> str:
    name = f"hostengine-{uuid.uuid4().hex[:10]}"
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------

def new_deployment_id() -> str:
    return "d-" + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _i in range(9))


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"appspec edit: {old!r} not found exactly once in:\n{text}"
    return text.replace(old, new)


def upload(aws: Any, bucket: str, key: str, path: Path) -> dict[str, str]:
    resp = aws.client("s3").put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
    assert resp.get("VersionId"), "the bucket is not versioned"
    return {"version": resp["VersionId"], "etag": resp["ETag"].strip('"')}


def revision_task(register: str, cache_dir: Path, *, s3: dict[str, str] | None = None, path: Path | None = None,
                  ignore_errors: bool = False) -> dict[str, Any]:
    args: dict[str, Any] = {"cache_dir": str(cache_dir)}
    if s3 is not None:
        args["s3"] = s3
    else:
        args["path"] = str(path)
    task = {"name": register, "rollwright.deploy.revision": args, "register": register}
    if ignore_errors:
        task["ignore_errors"] = True
    return task


def controller_play(*tasks: dict[str, Any]) -> dict[str, Any]:
    return {"name": "controller", "hosts": "localhost", "gather_facts": False, "tasks": list(tasks)}


def hosts_play(hosts: str, *tasks: dict[str, Any], name: str = "hosts") -> dict[str, Any]:
    return {"name": name, "hosts": hosts, "gather_facts": False, "tasks": list(tasks)}


def lifecycle_task(name: str, rev: str, *, application: str, group: str, deployment_id: str,
                   events: tuple[str, ...] = tuple(FULL_EVENTS), src: bool | str = True, complete: bool = True,
                   ignore_errors: bool = False, **extra: Any) -> dict[str, Any]:
    """A host_lifecycle task using the revision registered as `rev` on localhost (bundle, identity, appspec)."""
    r = f"hostvars['localhost']['{rev}']"
    args: dict[str, Any] = {
        "application": application, "deployment_group": group, "deployment_id": deployment_id, "events": list(events),
        "appspec": "{{ %s.appspec }}" % r,
        "revision": "{{ %s.bundle | dict2items | selectattr('key', 'in', %r) | items2dict }}" % (r, HOST_REVISION_KEYS),
        "complete": complete,
    }
    if src is True:
        args["src"] = "{{ %s.bundle.path }}" % r
    elif src:
        args["src"] = src
    args.update(extra)
    task: dict[str, Any] = {"name": name, "rollwright.deploy.host_lifecycle": args}
    if ignore_errors:
        task["ignore_errors"] = True
    return task


def probe_task(name: str, paths: list[str]) -> dict[str, Any]:
    return {"name": name, "ansible.builtin.command": {"argv": ["/usr/bin/python3", "-c", PROBE, json.dumps(paths)]},
            "changed_when": False}


def ps_task(name: str) -> dict[str, Any]:
    return {"name": name, "ansible.builtin.command": {"argv": PS}, "changed_when": False}


def info_task(name: str, application: str, group: str) -> dict[str, Any]:
    return {"name": name, "rollwright.deploy.host_deployment_info": {"application": application, "deployment_group": group}}


def probed(res: AnsibleResult, name: str) -> dict[str, dict[str, Any]]:
    return {host: json.loads(r["stdout"]) for host, r in res.task(name).items()}


def processes(res: AnsibleResult, name: str, args: str) -> dict[str, list[int]]:
    """Per host, the pids of processes whose full argv is exactly `args`."""
    found: dict[str, list[int]] = {}
    for host, r in res.task(name).items():
        pids = []
        for line in r["stdout"].splitlines():
            pid, _sep, argv = line.strip().partition(" ")
            if argv.strip() == args:
                pids.append(int(pid))
        found[host] = pids
    return found


def task_seconds(res: AnsibleResult, name: str) -> float:
    """Wall time of the last task called `name`, from the json callback's task duration."""
    return res.task_seconds(name)


def failures(res: AnsibleResult) -> str:
    """What a failing assert on a run shows: every failed or unreachable task result's message."""
    lines = [f"ansible-playbook rc={res.rc} in {res.seconds:.1f}s timed_out={res.timed_out}"]
    for task in res.tasks():
        for host, r in task["hosts"].items():
            if r.get("failed") or r.get("unreachable"):
                lines.append(f"[{task['name']}] {host}: {r.get('msg')}")
    if res.data is None:
        lines.append(f"STDERR: {res.stderr[-3000:]}\nSTDOUT: {res.stdout[-3000:]}")
    return "\n".join(lines)


def event(result: dict[str, Any], name: str) -> dict[str, Any]:
    matches = [e for e in result["events"] if e["name"] == name]
    assert len(matches) == 1, f"event {name} reported {len(matches)} times: {result['events']}"
    return matches[0]


def log_lines(probe: dict[str, Any], path: str = EVENTS_LOG) -> list[list[str]]:
    """events.log as [event, deployment id, revision, application, group, bundle key, user] per line."""
    item = probe[path]
    if item is None:
        return []
    return [line.split(" ") for line in item["text"].splitlines() if line.strip()]


def env_file(probe: dict[str, Any], path: str) -> dict[str, str]:
    item = probe[path]
    assert item is not None, f"{path} was not written (the hook did not run)"
    return dict(line.split("=", 1) for line in item["text"].splitlines() if "=" in line)


# ----------------------------------------------------------------------------------------------
# v1 then v2: order of events, previous revision's ApplicationStop, environment, files, cleanup
# ----------------------------------------------------------------------------------------------

DUMP_ENV = '#!/bin/sh\nenv | sort > "/var/log/rollwright/env-$DEPLOYMENT_ID-$LIFECYCLE_EVENT"\n'
APP, GROUP = "sample-app", "web-fleet"
HOOKED = ["BeforeInstall", "AfterInstall", "ApplicationStart", "ValidateService"]


def _with_dump_env(text: str) -> str:
    return replace_once(text, "  AfterInstall:\n    - location: scripts/record_event.sh\n",
                        "  AfterInstall:\n    - location: scripts/record_event.sh\n    - location: scripts/dump_env.sh\n")


def _v1_appspec(text: str) -> str:
    text = replace_once(text, "    destination: /opt/app/sample\n",
                        "    destination: /opt/app/sample\n  - source: conf\n    destination: /srv/sample-conf\n")
    return _with_dump_env(text)


def test_deploy_v1_then_v2_s3_and_local(play: Callable[..., AnsibleResult], aws: Any, bucket: str, work: Path) -> None:
    key = "releases/sample-app.zip"
    v1 = build_bundle("v1", work / "v1", extra_files={"app/v1-only.txt": "only in v1\n", "conf/v1.conf": "v1 conf\n",
                                                      "scripts/dump_env.sh": DUMP_ENV}, edit_appspec=_v1_appspec)
    v2 = build_bundle("v2", work / "v2", extra_files={"scripts/dump_env.sh": DUMP_ENV}, edit_appspec=_with_dump_env)
    v2_local = build_bundle("v2-local", work / "v2-local", fmt="tgz", top_dir="sample-app-v2-local",
                            extra_files={"scripts/dump_env.sh": DUMP_ENV}, edit_appspec=_with_dump_env)
    obj1 = upload(aws, bucket, key, v1)
    obj2 = upload(aws, bucket, key, v2)  # same key: a second version of the object
    assert obj1["version"] != obj2["version"]
    cache = work / "cache-v1v2"
    d1, d2, d3 = new_deployment_id(), new_deployment_id(), new_deployment_id()
    site = "/opt/app/sample"
    paths = [EVENTS_LOG, f"{site}/index.html", f"{site}/bin/server.py", f"{site}/v1-only.txt", "/srv/sample-conf",
             "/srv/sample-conf/v1.conf", f"/var/log/rollwright/env-{d1}-AfterInstall",
             f"/var/log/rollwright/env-{d2}-AfterInstall", f"/var/log/rollwright/env-{d3}-AfterInstall"]
    common = {"application": APP, "group": GROUP}

    # -- v1 (S3, pinned version and ETag) on host1 and host2 only; then the same deployment again ----------
    res = play([
        controller_play(revision_task("rev_v1", cache, s3={"bucket": bucket, "key": key, "version": obj1["version"],
                                                           "etag": obj1["etag"]})),
        hosts_play("host1:host2",
                   lifecycle_task("deploy v1", "rev_v1", deployment_id=d1, **common),
                   lifecycle_task("rerun Install", "rev_v1", deployment_id=d1, events=["Install"], src=False, **common),
                   lifecycle_task("rerun DownloadBundle", "rev_v1", deployment_id=d1, events=["DownloadBundle"],
                                  **common)),
        hosts_play("fleet", probe_task("probe v1", paths), info_task("info v1", APP, GROUP)),
    ])
    assert res.rc == 0, failures(res)
    rev_v1 = res.task("rev_v1")["localhost"]
    assert rev_v1["bundle"]["version"] == obj1["version"] and rev_v1["bundle"]["etag"] == obj1["etag"]
    deploy = res.task("deploy v1")
    assert set(deploy) == {"host1", "host2"}
    for host in ("host1", "host2"):
        r = deploy[host]
        assert r["changed"] is True and r["failed_event"] is None, r
        assert [e["name"] for e in r["events"]] == FULL_EVENTS
        assert event(r, "ApplicationStop")["status"] == "Skipped"  # first deployment: no previous revision
        assert all(event(r, e)["status"] == "Succeeded" for e in FULL_EVENTS[1:]), r["events"]
        assert r["last_successful"] == {"before": None, "after": d1}
        assert "/opt/app/sample/v1-only.txt" in event(r, "Install")["install"]["created"]
        # idempotent re-runs of the same deployment: nothing changes
        again = res.task("rerun Install")[host]
        assert again["changed"] is False, again
        assert event(again, "Install")["status"] == "Succeeded" and event(again, "Install")["changed"] is False
        again = res.task("rerun DownloadBundle")[host]
        assert again["changed"] is False, again
    probe = probed(res, "probe v1")
    for host in ("host1", "host2"):
        p = probe[host]
        assert log_lines(p) == [[e, d1, "v1", APP, GROUP, key, "root"] for e in HOOKED], p[EVENTS_LOG]
        assert p[f"{site}/index.html"]["text"] == "sample-app v1\n"
        assert p[f"{site}/index.html"]["mode"] == "0644"
        assert p[f"{site}/bin/server.py"]["mode"] == "0755"
        assert p[f"{site}/v1-only.txt"]["text"] == "only in v1\n"
        assert p["/srv/sample-conf"]["dir"] and p["/srv/sample-conf/v1.conf"]["text"] == "v1 conf\n"
        env = env_file(p, f"/var/log/rollwright/env-{d1}-AfterInstall")
        assert {k: env.get(k) for k in ("LIFECYCLE_EVENT", "DEPLOYMENT_ID", "APPLICATION_NAME", "DEPLOYMENT_GROUP_NAME",
                                        "DEPLOYMENT_GROUP_ID", "BUNDLE_BUCKET", "BUNDLE_KEY", "BUNDLE_VERSION",
                                        "BUNDLE_ETAG", "USER", "HOME")} == {
            "LIFECYCLE_EVENT": "AfterInstall", "DEPLOYMENT_ID": d1, "APPLICATION_NAME": APP,
            "DEPLOYMENT_GROUP_NAME": GROUP, "DEPLOYMENT_GROUP_ID": GROUP, "BUNDLE_BUCKET": bucket, "BUNDLE_KEY": key,
            "BUNDLE_VERSION": obj1["version"], "BUNDLE_ETAG": obj1["etag"], "USER": "root", "HOME": "/root"}
        info = res.task("info v1")[host]
        assert info["last_successful"]["deployment_id"] == d1
        assert info["last_successful"]["revision"]["version"] == obj1["version"]
    # host3 got nothing: no files, no log, no state
    assert all(v is None for v in probe["host3"].values()), probe["host3"]
    assert res.task("info v1")["host3"]["exists"] is False
    assert res.task("info v1")["host3"]["last_successful"] is None

    # -- v2: from S3 (the object's second version) on host1, from a local tar.gz on host2 ------------------
    res = play([
        controller_play(revision_task("rev_v2", cache, s3={"bucket": bucket, "key": key, "version": obj2["version"]}),
                        revision_task("rev_v2_local", cache, path=v2_local)),
        hosts_play("host1", lifecycle_task("deploy v2", "rev_v2", deployment_id=d2, **common)),
        hosts_play("host2", lifecycle_task("deploy v2-local", "rev_v2_local", deployment_id=d3, **common)),
        hosts_play("fleet", probe_task("probe v2", paths), info_task("info v2", APP, GROUP)),
    ])
    assert res.rc == 0, failures(res)
    assert res.task("rev_v2_local")["localhost"]["bundle"]["source"] == "local"
    for host, dep, version, bundle_key, task in (("host1", d2, "v2", key, "deploy v2"),
                                                 ("host2", d3, "v2-local", "", "deploy v2-local")):
        r = res.task(task)[host]
        assert r["failed_event"] is None and [e["status"] for e in r["events"]] == ["Succeeded"] * len(FULL_EVENTS), r
        stop = event(r, "ApplicationStop")
        assert stop["revision_deployment_id"] == d1  # the last successful revision's scripts
        assert r["last_successful"] == {"before": d1, "after": dep}
        install = event(r, "Install")["install"]
        assert "/opt/app/sample/v1-only.txt" in install["removed"] and "/srv/sample-conf" in install["removed"]
        p = probed(res, "probe v2")[host]
        lines = log_lines(p)
        assert lines[:4] == [[e, d1, "v1", APP, GROUP, key, "root"] for e in HOOKED]
        # v2's ApplicationStop ran v1's script (it reads v1's REVISION file), with v2's deployment environment
        assert lines[4:] == [["ApplicationStop", dep, "v1", APP, GROUP, bundle_key, "root"]] + \
            [[e, dep, version, APP, GROUP, bundle_key, "root"] for e in HOOKED], p[EVENTS_LOG]
        assert p[f"{site}/index.html"]["text"] == f"sample-app {version}\n" and p[f"{site}/index.html"]["mode"] == "0644"
        assert p[f"{site}/bin/server.py"]["mode"] == "0755"
        # cleanup: what v1 installed and v2 no longer ships is gone (file, file of another mapping, its directory)
        assert p[f"{site}/v1-only.txt"] is None and p["/srv/sample-conf"] is None and p["/srv/sample-conf/v1.conf"] is None
        info = res.task("info v2")[host]
        assert info["last_successful"]["deployment_id"] == dep
        assert [d["deployment_id"] for d in info["deployments"]] == [d1, dep]
    env = env_file(probed(res, "probe v2")["host1"], f"/var/log/rollwright/env-{d2}-AfterInstall")
    assert (env["DEPLOYMENT_ID"], env["BUNDLE_BUCKET"], env["BUNDLE_KEY"], env["BUNDLE_VERSION"], env["BUNDLE_ETAG"]) == \
        (d2, bucket, key, obj2["version"], obj2["etag"])
    env = env_file(probed(res, "probe v2")["host2"], f"/var/log/rollwright/env-{d3}-AfterInstall")
    assert env["DEPLOYMENT_ID"] == d3 and env["LIFECYCLE_EVENT"] == "AfterInstall"
    assert not [k for k in env if k.startswith("BUNDLE_")], f"a local revision has no S3 variables: {env}"
    # each host has only what was deployed to it
    p1, p2, p3 = (probed(res, "probe v2")[h] for h in HOSTS)
    assert f"env-{d3}-AfterInstall" not in json.dumps({k: v for k, v in p1.items() if v})
    assert p1[f"/var/log/rollwright/env-{d3}-AfterInstall"] is None and p2[f"/var/log/rollwright/env-{d2}-AfterInstall"] is None
    assert all(v is None for v in p3.values()), p3


# ----------------------------------------------------------------------------------------------
# hook timeout, background child
# ----------------------------------------------------------------------------------------------

def _moved_to(destination: str) -> Callable[[str], str]:
    """The sample appspec with its files (and permissions) at `destination` instead of /opt/app/sample."""
    def edit(text: str) -> str:
        replace_once(text, "destination: /opt/app/sample\n", "")  # the edit below must hit the files section
        return text.replace("/opt/app/sample", destination)
    return edit


def _only_hooks(hooks: str) -> Callable[[str], str]:
    return lambda _text: f"version: 0.0\nos: linux\nhooks:\n{hooks}"


def test_hook_timeout_is_killed_and_reported_quickly(play: Callable[..., AnsibleResult], work: Path) -> None:
    # On host3 the script ignores SIGTERM (and so does its sleep): the SIGKILL after the grace period must end it.
    # On host1 and host2 the SIGTERM at the timeout ends it.
    hang = "#!/bin/sh\nif [ \"$(hostname)\" = host3 ]; then trap '' TERM; fi\necho hanging\nsleep 31\necho never\n"
    bundle = build_bundle("timeout", work / "timeout", extra_files={"scripts/hang.sh": hang},
                          edit_appspec=_only_hooks("  ApplicationStart:\n    - location: scripts/hang.sh\n      timeout: 2\n"
                                                   "  ValidateService:\n    - location: scripts/record_event.sh\n"))
    dep = new_deployment_id()
    res = play([
        controller_play(revision_task("rev_timeout", work / "cache-timeout", path=bundle)),
        hosts_play("fleet",
                   lifecycle_task("deploy hanging", "rev_timeout", application="timeout-app", group="g", deployment_id=dep,
                                  hook_timeout_grace=1, ignore_errors=True),
                   ps_task("ps after timeout"),
                   info_task("info timeout", "timeout-app", "g")),
    ], timeout=90)
    assert not res.timed_out, failures(res)
    assert res.failed_hosts() == set() and res.rc == 0, failures(res)  # ignore_errors: the failures are in the results
    assert task_seconds(res, "deploy hanging") < 15, f"deploy took {task_seconds(res, 'deploy hanging'):.1f}s"
    for host, r in res.task("deploy hanging").items():
        assert r["failed"] is True and r["failed_event"] == "ApplicationStart", r
        start = event(r, "ApplicationStart")
        script = start["scripts"][0]
        sigkill = host == "host3"
        assert script["timed_out"] is True and script["killed"] is sigkill, script
        assert 2 <= script["duration"] < (9 if sigkill else 7), script  # timeout 2 s (+ grace 1 s), headroom for load
        assert ("SIGKILLed after the grace period" if sigkill else "terminated with SIGTERM") in r["msg"], r["msg"]
        assert "hanging" in script["output_tail"] and "never" not in script["output_tail"]
        assert "did not finish within its timeout of 2 s" in r["msg"] and "scripts/hang.sh" in r["msg"], r["msg"]
        assert event(r, "ValidateService")["status"] == "Skipped"
        info = res.task("info timeout")[host]
        assert info["last_successful"] is None
        assert info["most_recent"]["deployment_id"] == dep and info["most_recent"]["status"] == "Failed"
        assert info["most_recent"]["failed_event"] == "ApplicationStart"
    assert processes(res, "ps after timeout", "sleep 31") == {h: [] for h in HOSTS}, "the timed-out script's sleep survived"


def test_background_child_holding_stdout_does_not_block(play: Callable[..., AnsibleResult], work: Path) -> None:
    bundle = build_bundle("bg", work / "bg",
                          extra_files={"scripts/bg.sh": '#!/bin/sh\nsleep 61 &\necho "child $!"\n'},
                          edit_appspec=_only_hooks("  ApplicationStart:\n    - location: scripts/bg.sh\n      timeout: 30\n"))
    dep = new_deployment_id()
    res = play([
        controller_play(revision_task("rev_bg", work / "cache-bg", path=bundle)),
        hosts_play("host2", lifecycle_task("deploy with child", "rev_bg", application="bg-app", group="g", deployment_id=dep,
                                           events=["DownloadBundle", "BeforeInstall", "Install", "AfterInstall",
                                                   "ApplicationStart"]),
                   probe_task("bg log", [f"/var/lib/rollwright/bg-app/g/deployments/{dep}/logs/scripts.log"])),
        hosts_play("fleet", ps_task("ps after child")),
    ], timeout=60)
    assert not res.timed_out, failures(res)
    assert res.rc == 0, failures(res)
    r = res.task("deploy with child")["host2"]
    # a hook that waited for the child's end of stdout would run into its 30 s timeout (the child sleeps 61 s):
    # the bounds sit well under that, with room for a loaded machine (the task took 16 s at load 20)
    assert task_seconds(res, "deploy with child") < 30, f"took {task_seconds(res, 'deploy with child'):.1f}s"
    script = event(r, "ApplicationStart")["scripts"][0]
    assert script["exit_code"] == 0 and script["timed_out"] is False and script["duration"] < 15, script
    assert script["output_tail"] == ""  # a script that succeeded returns no output; it stays in the sealed log
    log = probed(res, "bg log")["host2"][f"/var/lib/rollwright/bg-app/g/deployments/{dep}/logs/scripts.log"]["text"]
    child = int(log.split("child ")[1].split()[0])
    sleeps = processes(res, "ps after child", "sleep 61")
    assert sleeps == {"host1": [], "host2": [child], "host3": []}, sleeps


# ----------------------------------------------------------------------------------------------
# runas
# ----------------------------------------------------------------------------------------------

def test_runas_non_root_user(play: Callable[..., AnsibleResult], work: Path) -> None:
    prepare = "#!/bin/sh\nmkdir -p /var/log/rollwright\n: > /var/log/rollwright/runas.log\nchown rwapp /var/log/rollwright/runas.log\n"
    as_app = ('#!/bin/sh\necho "$LIFECYCLE_EVENT $DEPLOYMENT_ID $(id -un) $HOME $USER $(pwd)" >> /var/log/rollwright/runas.log\n'
              'echo "whoami=$(id -un)"\n')
    bundle = build_bundle("runas", work / "runas", extra_files={"scripts/prepare.sh": prepare, "scripts/as_app.sh": as_app},
                          edit_appspec=_only_hooks("  BeforeInstall:\n    - location: scripts/prepare.sh\n"
                                                   "  AfterInstall:\n    - location: scripts/as_app.sh\n      runas: rwapp\n"))
    dep = new_deployment_id()
    res = play([
        controller_play(revision_task("rev_runas", work / "cache-runas", path=bundle)),
        hosts_play("host3", lifecycle_task("deploy runas", "rev_runas", application="runas-app", group="g", deployment_id=dep,
                                           events=["DownloadBundle", "BeforeInstall", "Install", "AfterInstall"]),
                   probe_task("probe runas", ["/var/log/rollwright/runas.log",
                                              f"/var/lib/rollwright/runas-app/g/deployments/{dep}/logs/scripts.log"])),
    ], timeout=60)
    assert res.rc == 0, failures(res)
    r = res.task("deploy runas")["host3"]
    script = event(r, "AfterInstall")["scripts"][0]
    assert script["runas"] == "rwapp" and script["output_tail"] == "", script
    assert "\nwhoami=rwapp\n" in probed(res, "probe runas")["host3"][
        f"/var/lib/rollwright/runas-app/g/deployments/{dep}/logs/scripts.log"]["text"]
    root = f"/var/lib/rollwright/runas-app/g/deployments/{dep}/archive"
    line = probed(res, "probe runas")["host3"]["/var/log/rollwright/runas.log"]["text"]
    assert line == f"AfterInstall {dep} rwapp /home/rwapp rwapp {root}\n"


# ----------------------------------------------------------------------------------------------
# bad revisions: ETag mismatch, corrupt bundle
# ----------------------------------------------------------------------------------------------

def test_etag_mismatch_and_corrupt_bundle(play: Callable[..., AnsibleResult], aws: Any, bucket: str, work: Path) -> None:
    good = build_bundle("good", work / "good", edit_appspec=_moved_to("/opt/app/corrupt"))
    obj = upload(aws, bucket, "releases/etag.zip", good)
    wrong = "0123456789abcdef0123456789abcdef"
    truncated = work / "truncated.zip"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    etag_cache = work / "cache-etag"
    dep = new_deployment_id()
    res = play([
        controller_play(
            revision_task("rev_wrong_etag", etag_cache, ignore_errors=True,
                          s3={"bucket": bucket, "key": "releases/etag.zip", "version": obj["version"], "etag": wrong}),
            revision_task("rev_truncated", work / "cache-corrupt", path=truncated, ignore_errors=True),
            revision_task("rev_good", work / "cache-corrupt", path=good)),
        hosts_play("host1",
                   lifecycle_task("deploy truncated", "rev_good", application="corrupt-app", group="g", deployment_id=dep,
                                  src=str(truncated), revision={"source": "local"}, ignore_errors=True),
                   probe_task("probe corrupt", ["/opt/app/corrupt", f"/var/lib/rollwright/corrupt-app/g/deployments/{dep}/archive"]),
                   info_task("info corrupt", "corrupt-app", "g")),
    ], timeout=60)
    assert res.rc == 0, failures(res)
    r = res.task("rev_wrong_etag")["localhost"]
    assert r["failed"] is True and wrong in r["msg"] and obj["etag"] in r["msg"] and "ETag" in r["msg"], r["msg"]
    cached = [p.name for p in etag_cache.rglob("*") if p.is_file()] if etag_cache.exists() else []
    assert cached == [], f"a bundle with the wrong ETag was kept in the cache: {cached}"
    r = res.task("rev_truncated")["localhost"]
    assert r["failed"] is True and str(truncated) in r["msg"] and "not a readable zip bundle" in r["msg"], r["msg"]
    r = res.task("deploy truncated")["host1"]
    assert r["failed"] is True and r["failed_event"] == "DownloadBundle", r
    assert "cannot unpack bundle" in r["msg"] and "not a readable zip bundle" in r["msg"], r["msg"]
    assert [e["status"] for e in r["events"]] == ["Skipped", "Failed"] + ["Skipped"] * 5
    assert all(v is None for v in probed(res, "probe corrupt")["host1"].values()), "a corrupt bundle installed something"
    assert res.task("info corrupt")["host1"]["last_successful"] is None


# ----------------------------------------------------------------------------------------------
# file_exists_behavior
# ----------------------------------------------------------------------------------------------

def test_file_exists_behavior_disallow_overwrite_retain(play: Callable[..., AnsibleResult], work: Path) -> None:
    bundle = build_bundle("feb", work / "feb",
                          edit_appspec=_moved_to("/srv/feb"))
    dep = new_deployment_id()
    behavior = "{{ {'host1': 'DISALLOW', 'host2': 'OVERWRITE', 'host3': 'RETAIN'}[inventory_hostname] }}"
    res = play([
        controller_play(revision_task("rev_feb", work / "cache-feb", path=bundle)),
        hosts_play("fleet",
                   {"name": "stray dir", "ansible.builtin.file": {"path": "/srv/feb", "state": "directory"}},
                   {"name": "stray file", "ansible.builtin.copy": {"dest": "/srv/feb/index.html", "content": "stray\n",
                                                                   "mode": "0600"}},
                   lifecycle_task("deploy over stray", "rev_feb", application="feb-app", group="g", deployment_id=dep,
                                  events=["DownloadBundle", "BeforeInstall", "Install"], file_exists_behavior=behavior, ignore_errors=True),
                   probe_task("probe feb", ["/srv/feb/index.html", "/srv/feb/bin/server.py"])),
    ], timeout=60)
    assert res.rc == 0, failures(res)
    deploy, probe = res.task("deploy over stray"), probed(res, "probe feb")
    # DISALLOW: fails naming the stray file, installs nothing
    assert deploy["host1"]["failed"] is True and deploy["host1"]["failed_event"] == "Install", deploy["host1"]
    assert "DISALLOW" in deploy["host1"]["msg"] and "/srv/feb/index.html" in deploy["host1"]["msg"], deploy["host1"]["msg"]
    assert probe["host1"]["/srv/feb/index.html"]["text"] == "stray\n" and probe["host1"]["/srv/feb/bin/server.py"] is None
    # OVERWRITE: the bundle's file replaces it (with the appspec's mode)
    assert deploy["host2"].get("failed") is not True, deploy["host2"]
    assert event(deploy["host2"], "Install")["install"]["overwritten"] == ["/srv/feb/index.html"]
    assert probe["host2"]["/srv/feb/index.html"] == {"mode": "0644", "uid": 0, "dir": False, "text": "sample-app feb\n"}
    assert probe["host2"]["/srv/feb/bin/server.py"]["mode"] == "0755"
    # RETAIN: the stray file is kept as it was, the rest is installed
    assert deploy["host3"].get("failed") is not True, deploy["host3"]
    assert event(deploy["host3"], "Install")["install"]["retained"] == ["/srv/feb/index.html"]
    assert probe["host3"]["/srv/feb/index.html"] == {"mode": "0600", "uid": 0, "dir": False, "text": "stray\n"}
    assert probe["host3"]["/srv/feb/bin/server.py"]["mode"] == "0755"

    # -- the next deployment (deployment default DISALLOW) -----------------------------------------------
    # host2: the file OVERWRITE replaced was recorded, so it is removed first and installed again: no conflict.
    # host3: RETAIN recorded nothing, so the stray file is still not ours: DISALLOW fails naming it.
    # host1: the appspec's file_exists_behavior (OVERWRITE) overrides the deployment's DISALLOW.
    feb2 = build_bundle("feb2", work / "feb2", edit_appspec=_moved_to("/srv/feb"))
    feb2_ow = build_bundle("feb2-ow", work / "feb2-ow", edit_appspec=lambda t: replace_once(
        _moved_to("/srv/feb")(t), "os: linux\n", "os: linux\nfile_exists_behavior: OVERWRITE\n"))
    dep2, dep3 = new_deployment_id(), new_deployment_id()
    events = ["ApplicationStop", "DownloadBundle", "BeforeInstall", "Install"]
    res = play([
        controller_play(revision_task("rev_feb2", work / "cache-feb", path=feb2),
                        revision_task("rev_feb2_ow", work / "cache-feb", path=feb2_ow)),
        hosts_play("host2:host3", lifecycle_task("redeploy", "rev_feb2", application="feb-app", group="g", deployment_id=dep2,
                                                 events=events, ignore_errors=True)),
        hosts_play("host1", lifecycle_task("redeploy with appspec OVERWRITE", "rev_feb2_ow", application="feb-app",
                                           group="g", deployment_id=dep3, events=events)),
        hosts_play("fleet", probe_task("probe feb2", ["/srv/feb/index.html"])),
    ], timeout=60)
    assert res.rc == 0, failures(res)
    redeploy, probe = res.task("redeploy"), probed(res, "probe feb2")
    assert redeploy["host2"].get("failed") is not True, redeploy["host2"]
    assert "/srv/feb/index.html" in event(redeploy["host2"], "Install")["install"]["removed"]
    assert probe["host2"]["/srv/feb/index.html"]["text"] == "sample-app feb2\n"
    assert redeploy["host3"]["failed"] is True and redeploy["host3"]["failed_event"] == "Install", redeploy["host3"]
    assert "/srv/feb/index.html" in redeploy["host3"]["msg"], redeploy["host3"]["msg"]
    assert probe["host3"]["/srv/feb/index.html"]["text"] == "stray\n"
    r = res.task("redeploy with appspec OVERWRITE")["host1"]
    assert event(r, "Install")["install"]["file_exists_behavior"] == "OVERWRITE"
    assert event(r, "Install")["install"]["overwritten"] == ["/srv/feb/index.html"]
    assert probe["host1"]["/srv/feb/index.html"]["text"] == "sample-app feb2-ow\n"
