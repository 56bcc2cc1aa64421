# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""host_lifecycle / host_deployment_info modules: run through their argument specs on real bundles."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.host.session import session_dir
from ansible_collections.rollwright.deploy.plugins.module_utils.host.staging import INLINE_BUNDLE_MAX
from ansible_collections.rollwright.deploy.plugins.module_utils.host.state import HostState

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, "build")
MODULES = os.path.join(ROOT, "plugins", "modules")
VENV_BIN = os.path.join(ROOT, ".venv", "bin")

EVENTS_V = ["ApplicationStop", "DownloadBundle", "BeforeInstall", "Install", "AfterInstall", "ApplicationStart",
            "ValidateService"]
HOOKED = ["ApplicationStop", "BeforeInstall", "AfterInstall", "ApplicationStart", "ValidateService"]


def make_bundle(path, version, trace, stop_exit=0, top_dir=None, padding=0):
    """A tar.gz bundle whose hooks append '<event> <deployment id> <version>' to ``trace`` (with ``padding`` bytes
    of random data in site/padding.bin: a bundle too large to travel in the module's arguments)."""
    files = {
        "appspec.yml": "version: 0.0\nos: linux\n",
        "site/index.html": f"<h1>{version}</h1>\n",
        "scripts/hook.sh": f"#!/bin/sh\necho \"$LIFECYCLE_EVENT $DEPLOYMENT_ID {version}\" >> {trace}\n"
                           f"echo hook {version} $LIFECYCLE_EVENT\n",
        "scripts/stop.sh": f"#!/bin/sh\necho \"$LIFECYCLE_EVENT $DEPLOYMENT_ID {version}\" >> {trace}\n"
                           f"echo stopping {version}; exit {stop_exit}\n",
    }
    if padding:
        files["site/padding.bin"] = os.urandom(padding)
    with tarfile.open(path, "w:gz") as tar:
        for name, content in files.items():
            data = content if isinstance(content, bytes) else content.encode()
            info = tarfile.TarInfo((top_dir + "/" if top_dir else "") + name)
            info.size = len(data)
            info.mode = 0o755 if name.startswith("scripts/") else 0o644
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def appspec(dest):
    hooks = {e: [{"location": "scripts/stop.sh" if e == "ApplicationStop" else "scripts/hook.sh", "timeout": 30,
                  "runas": None}] for e in HOOKED}
    return {"version": "0.0", "os": "linux", "files": [{"source": "site", "destination": dest}],
            "file_exists_behavior": None, "permissions": [], "hooks": hooks}


def run_module(tmp_path, name, args, check_mode=False):
    args = dict(args)
    if check_mode:
        args["_ansible_check_mode"] = True
    args_file = tmp_path / f"args-{name}.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    env = dict(os.environ, PYTHONPATH=BUILD)
    proc = subprocess.run([sys.executable, os.path.join(MODULES, f"{name}.py"), str(args_file)],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"module printed no JSON: rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}")


@pytest.fixture
def world(tmp_path):
    trace = tmp_path / "trace.log"
    state_root = tmp_path / "state"
    dest = str(tmp_path / "www")
    base = {"application": "shop", "deployment_group": "web", "state_root": str(state_root)}
    return tmp_path, trace, base, dest


def deploy(tmp_path, base, dest, deployment_id, bundle, **extra):
    args = dict(base, deployment_id=deployment_id, events=EVENTS_V, appspec=appspec(dest), bundle=bundle,
                revision={"source": "s3", "bucket": "b", "key": "shop.tgz", "version": "v", "etag": "e"}, complete=True)
    args.update(extra)
    return run_module(tmp_path, "host_lifecycle", args)


def test_v1_then_v2_applicationstop_runs_previous_revision(world):
    tmp_path, trace, base, dest = world
    v1 = make_bundle(tmp_path / "v1.tgz", "v1", trace)
    r1 = deploy(tmp_path, base, dest, "d-AAAAAAAA1", v1)
    assert not r1.get("failed"), r1["msg"]
    assert [e["status"] for e in r1["events"]][0] == "Skipped"  # first deployment: no previous revision
    assert "first deployment" in r1["events"][0]["message"]
    assert open(os.path.join(dest, "index.html")).read() == "<h1>v1</h1>\n"
    assert r1["last_successful"] == {"before": None, "after": "d-AAAAAAAA1"}

    v2 = make_bundle(tmp_path / "v2.tgz", "v2", trace, top_dir="shop-2.0")  # root = the single top-level dir
    r2 = deploy(tmp_path, base, dest, "d-BBBBBBBB2", v2)
    assert not r2.get("failed"), r2["msg"]
    assert r2["last_successful"] == {"before": "d-AAAAAAAA1", "after": "d-BBBBBBBB2"}
    assert open(os.path.join(dest, "index.html")).read() == "<h1>v2</h1>\n"
    lines = trace.read_text().splitlines()
    assert lines == [
        "BeforeInstall d-AAAAAAAA1 v1", "AfterInstall d-AAAAAAAA1 v1", "ApplicationStart d-AAAAAAAA1 v1",
        "ValidateService d-AAAAAAAA1 v1",
        "ApplicationStop d-BBBBBBBB2 v1",  # v1's script, told about the new deployment (as the agent does)
        "BeforeInstall d-BBBBBBBB2 v2", "AfterInstall d-BBBBBBBB2 v2", "ApplicationStart d-BBBBBBBB2 v2",
        "ValidateService d-BBBBBBBB2 v2",
    ]
    stop = r2["events"][0]
    assert stop["revision_deployment_id"] == "d-AAAAAAAA1" and stop["scripts"][0]["output_tail"] == ""  # succeeded: log only
    log = open(r2["log_file"]).read()  # previous-revision scripts log into the current deployment's log
    assert "[ApplicationStop] Script - scripts/stop.sh" in log and "stopping v1" in log

    info = run_module(tmp_path, "host_deployment_info", base)
    assert info["exists"] and info["last_successful"]["deployment_id"] == "d-BBBBBBBB2"
    assert info["last_successful"]["revision"]["etag"] == "e"
    assert info["most_recent"] == dict(info["most_recent"], deployment_id="d-BBBBBBBB2", status="Succeeded")
    assert [d["deployment_id"] for d in info["deployments"]] == ["d-AAAAAAAA1", "d-BBBBBBBB2"]


def test_rerun_same_deployment_is_idempotent_for_download_and_install(world):
    tmp_path, trace, base, dest = world
    v1 = make_bundle(tmp_path / "v1.tgz", "v1", trace)
    deploy(tmp_path, base, dest, "d-AAAAAAAA1", v1)
    args = dict(base, deployment_id="d-AAAAAAAA1", events=["DownloadBundle", "BeforeInstall", "Install"],
                appspec=appspec(dest), bundle=v1)
    again = run_module(tmp_path, "host_lifecycle", args)
    assert not again.get("failed"), again["msg"]
    download, _before, install = again["events"]
    assert not download["changed"] and "already unpacked" in download["message"]
    assert not install["changed"] and "unchanged" in install["message"]


def test_broken_applicationstop_fails_and_names_the_escape_hatch(world):
    tmp_path, trace, base, dest = world
    v1 = make_bundle(tmp_path / "v1.tgz", "v1", trace, stop_exit=7)
    deploy(tmp_path, base, dest, "d-AAAAAAAA1", v1)
    v2 = make_bundle(tmp_path / "v2.tgz", "v2", trace)
    r2 = deploy(tmp_path, base, dest, "d-BBBBBBBB2", v2)
    assert r2["failed"] and r2["failed_event"] == "ApplicationStop"
    for part in ("ApplicationStop", "scripts/stop.sh", "exit code 7", r2["log_file"], "stopping v1",
                 "ignore_application_stop_failures"):
        assert part in r2["msg"]
    assert [e["status"] for e in r2["events"][1:]] == ["Skipped"] * 6
    assert r2["last_successful"]["after"] == "d-AAAAAAAA1"
    assert open(os.path.join(dest, "index.html")).read() == "<h1>v1</h1>\n"

    r3 = deploy(tmp_path, base, dest, "d-CCCCCCCC3", v2, ignore_application_stop_failures=True)
    assert not r3.get("failed"), r3["msg"]
    assert r3["events"][0]["status"] == "Failed" and r3["events"][0]["ignored"] is True
    assert "ignore_application_stop_failures" in json.dumps(r3.get("warnings"))  # structured in ansible-core 2.19
    assert open(os.path.join(dest, "index.html")).read() == "<h1>v2</h1>\n"


def test_failing_new_hook_reports_tail_and_skips_rest(world):
    tmp_path, trace, base, dest = world
    v1 = make_bundle(tmp_path / "v1.tgz", "v1", trace)
    spec = appspec(dest)
    spec["hooks"]["AfterInstall"] = [{"location": "scripts/missing.sh", "timeout": 5, "runas": None}]
    r = deploy(tmp_path, base, dest, "d-AAAAAAAA1", v1, appspec=spec)
    assert r["failed"] and r["failed_event"] == "AfterInstall" and "scripts/missing.sh" in r["msg"]
    assert [e["status"] for e in r["events"][-2:]] == ["Skipped", "Skipped"]
    assert r["last_successful"]["after"] is None


def test_sha256_mismatch_fails_before_unpacking(world):
    tmp_path, trace, base, dest = world
    v1 = make_bundle(tmp_path / "v1.tgz", "v1", trace)
    r = deploy(tmp_path, base, dest, "d-AAAAAAAA1", v1, revision={"source": "local", "sha256": "0" * 64})
    assert r["failed"] and r["failed_event"] == "DownloadBundle" and "sha256" in r["msg"]
    assert not os.path.exists(os.path.join(r["deployment_dir"], "archive"))


def test_check_mode_changes_nothing(world):
    tmp_path, trace, base, dest = world
    v1 = make_bundle(tmp_path / "v1.tgz", "v1", trace)
    deploy(tmp_path, base, dest, "d-AAAAAAAA1", v1)
    before = trace.read_text()
    args = dict(base, deployment_id="d-BBBBBBBB2", events=EVENTS_V, appspec=appspec(dest), complete=True)
    r = run_module(tmp_path, "host_lifecycle", args, check_mode=True)
    assert not r.get("failed"), r["msg"]
    assert r["events"][0]["scripts"][0]["location"] == "scripts/stop.sh"
    assert r["events"][0]["revision_deployment_id"] == "d-AAAAAAAA1"
    assert all(e.get("check_mode") for e in r["events"] if e["name"] != "AfterInstall" or e["scripts"])
    assert trace.read_text() == before
    assert not os.path.exists(os.path.join(base["state_root"], "shop", "web", "deployments", "d-BBBBBBBB2"))


@pytest.mark.parametrize("override, expected", [
    ({"deployment_id": "d-short"}, "deployment_id must look like"),
    ({"deployment_id": "d-abcdefgh1"}, "deployment_id must look like"),
    ({"events": ["ApplicationStop", "Deploy"]}, "unknown lifecycle event 'Deploy'"),
    ({"events": ["BeforeInstall", "ApplicationStop"]}, "contiguous and in lifecycle order"),
    ({"events": ["ApplicationStop", "BeforeInstall"]}, "after 'ApplicationStop' comes 'DownloadBundle'"),
    ({"events": ["BeforeBlockTraffic", "BlockTraffic"]}, "done on the controller"),
    ({"events": ["Install"], "appspec": None}, "appspec is required"),
    ({"keep_revisions": 0}, "keep_revisions must be an integer >= 1"),
    ({"application": "../etc"}, "application must be"),
])
def test_bad_input_is_rejected_clearly(world, override, expected):
    tmp_path, trace, base, dest = world
    args = dict(base, deployment_id="d-AAAAAAAA1", events=["ApplicationStop"], appspec=appspec(dest))
    args.update(override)
    if args.get("appspec") is None:
        args.pop("appspec")
    r = run_module(tmp_path, "host_lifecycle", args)
    assert r.get("failed") and expected in r["msg"], r["msg"]


@pytest.mark.slow
@pytest.mark.parametrize("size", ["small", "large"])
def test_through_ansible_with_action_plugin_transfer(world, size):
    """ansible localhost -m rollwright.deploy.host_lifecycle: AnsiballZ packaging + src sent by the action plugin, in
    the module's arguments (small) or copied to the remote temporary directory and cleaned up (large)."""
    ansible = os.path.join(VENV_BIN, "ansible")
    if not os.path.exists(ansible):
        pytest.skip("ansible is not installed in the venv")
    tmp_path, trace, base, dest = world
    v1 = make_bundle(tmp_path / "v1.tgz", "v1", trace, padding=INLINE_BUNDLE_MAX + 4096 if size == "large" else 0)
    assert (os.path.getsize(v1) > INLINE_BUNDLE_MAX) is (size == "large")
    args = dict(base, deployment_id="d-AAAAAAAA1", events=EVENTS_V, appspec=appspec(dest), src=v1, complete=True)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=BUILD, ANSIBLE_LOCALHOST_WARNING="False",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="False", ANSIBLE_LOAD_CALLBACK_PLUGINS="True",
               ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_REMOTE_TMP=str(tmp_path / "remote-tmp"))
    proc = subprocess.run([ansible, "localhost", "-m", "rollwright.deploy.host_lifecycle", "-a", json.dumps(args),
                           "-e", "ansible_python_interpreter=/usr/bin/python3"],
                          capture_output=True, text=True, env=env, timeout=180, cwd=str(tmp_path), check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # The action plugin prints a progress line before the json callback's document when the events take over 5 s
    # (a loaded machine): the document starts at the first line that opens it.
    out = json.loads(proc.stdout[proc.stdout.index("{\n"):])
    result = out["plays"][0]["tasks"][0]["hosts"]["localhost"]
    assert result["last_successful"]["after"] == "d-AAAAAAAA1"
    pushed, sent = (result["invocation"]["module_args"][k] for k in ("bundle", "bundle_content"))
    if size == "large":
        assert pushed.startswith(str(tmp_path / "remote-tmp")) and pushed.endswith("bundle.tgz")  # transferred copy
        assert sent is None
    else:  # in the arguments, and not echoed back
        assert pushed is None and sent == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
        assert "sent with the call" in {e["name"]: e for e in result["events"]}["DownloadBundle"]["message"]
    assert open(os.path.join(dest, "index.html")).read() == "<h1>v1</h1>\n"
    assert "ValidateService d-AAAAAAAA1 v1" in trace.read_text()
    remote_tmp = tmp_path / "remote-tmp"
    assert not remote_tmp.exists() or os.listdir(remote_tmp) == []  # the pushed bundle was cleaned up
    shutil.rmtree(remote_tmp, ignore_errors=True)


@pytest.mark.slow
def test_a_detached_session_through_ansible_keeps_its_payload_until_it_ends(world):
    """ansible localhost -m host_lifecycle with a detached session (AnsiballZ, as a batch starts it): the call
    answers while the engine waits at gate 0; the engine runs every group on the word at its gate, from the payload
    the call left it, and removes the payload and its temporary files when it ends. A bundle too large for the
    call's arguments is refused (its pushed copy would go with the call)."""
    ansible = os.path.join(VENV_BIN, "ansible")
    if not os.path.exists(ansible):
        pytest.skip("ansible is not installed in the venv")
    from ansible_collections.rollwright.deploy.plugins.plugin_utils import host_session as hs

    tmp_path, trace, base, dest = world
    scratch = tmp_path / "scratch"  # the module's TMPDIR: where AnsiballZ unpacks its payload
    scratch.mkdir()
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=BUILD, ANSIBLE_LOCALHOST_WARNING="False",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="False", ANSIBLE_LOAD_CALLBACK_PLUGINS="True",
               ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_REMOTE_TMP=str(tmp_path / "remote-tmp"), TMPDIR=str(scratch))

    def call(bundle, name):
        args = dict(base, deployment_id="d-AAAAAAAA1", events=["BeforeBlockTraffic"], appspec=appspec(dest), src=bundle,
                    session={"name": name, "detach": True, "first_gate": True,
                             "groups": [{"events": EVENTS_V[1:]}, {"events": [], "complete": True}]})
        proc = subprocess.run([ansible, "localhost", "-m", "rollwright.deploy.host_lifecycle", "-a", json.dumps(args),
                               "-e", "ansible_python_interpreter=/usr/bin/python3"],
                              capture_output=True, text=True, env=env, timeout=180, cwd=str(tmp_path), check=False)
        out = json.loads(proc.stdout[proc.stdout.index("{\n"):])
        return out["plays"][0]["tasks"][0]["hosts"]["localhost"]

    answer = call(make_bundle(tmp_path / "v1.tgz", "v1", trace), "b1-z")
    assert answer["session"]["detached"] is True and not answer.get("failed"), answer
    path = session_dir(HostState(base["state_root"], base["application"], base["deployment_group"]),
                       "d-AAAAAAAA1", "b1-z")
    assert [n for n in os.listdir(scratch) if "_payload_" in n]  # the engine still has its payload
    assert not os.path.exists(dest)  # nothing ran before gate 0's word
    for index in range(3):
        command = hs.gate_command(path, index, "run", True)
        said, group = hs.read_gate_output({"stdout": subprocess.run(["/bin/sh", "-c", command], capture_output=True,
                                                                    text=True, timeout=120, check=False).stdout})
        assert said == "result" and not group["failed"], group
    assert open(os.path.join(dest, "index.html")).read() == "<h1>v1</h1>\n"
    deadline = time.monotonic() + 20
    while os.listdir(scratch) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert os.listdir(scratch) == []  # removed by the engine on its way out, not while it ran
    with open(os.path.join(path, "final.json"), encoding="utf-8") as handle:
        assert json.load(handle)["session"]["ended"] == "completed"

    large = make_bundle(tmp_path / "v2.tgz", "v2", trace, padding=INLINE_BUNDLE_MAX + 4096)
    refused = call(large, "b2-z")
    assert refused.get("failed") and "session.detach" in refused["msg"] and "stage it first" in refused["msg"]


def test_revision_source_defaults_to_local_when_revision_is_not_given(world):
    tmp_path, trace, base, dest = world
    v1 = make_bundle(tmp_path / "v1.tgz", "v1", trace)
    args = dict(base, deployment_id="d-AAAAAAAA1", events=EVENTS_V, appspec=appspec(dest), bundle=v1, complete=True)
    r1 = run_module(tmp_path, "host_lifecycle", args)
    assert not r1.get("failed"), r1["msg"]
    info = run_module(tmp_path, "host_deployment_info", base)
    assert info["last_successful"]["revision"]["source"] == "local"
    assert info["last_successful"]["revision"]["bucket"] is None
