# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""hook_runner: real scripts, real processes, real users, in temp dirs."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.host import hooks as hr

CTX = hr.HookContext(deployment_id="d-ABCDEFGH1", application="app", deployment_group="dg",
                     deployment_group_id="dg-id",
                     revision={"source": "s3", "bucket": "bkt", "key": "k/app.zip", "version": "v1", "etag": "e1"})


def write_script(root, name, body, mode=0o755):
    path = os.path.join(root, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(body)
    os.chmod(path, mode)
    return path


@pytest.fixture
def rev():
    # Not under pytest's 0700 tmp dir: a runas user must be able to reach the revision.
    base = tempfile.mkdtemp(prefix="rw-hook-")
    os.chmod(base, 0o755)
    root = os.path.join(base, "archive")
    os.mkdir(root)
    yield root, os.path.join(base, "logs", "scripts.log")
    shutil.rmtree(base, ignore_errors=True)


def run(rev, event, hooks, grace=hr.DEFAULT_GRACE):
    root, log = rev
    return hr.run_event(event, hooks, root, CTX, log, grace=grace)


def test_env_vars_and_cwd(rev):
    root, log = rev
    write_script(root, "scripts/env.sh", "#!/bin/sh\nenv > \"$0.out\"\npwd >> \"$0.out\"\necho hello\n")
    res = run(rev, "AfterInstall", [{"location": "scripts/env.sh", "timeout": 10}])
    assert res.status == "Succeeded", res.message
    out = open(os.path.join(root, "scripts/env.sh.out")).read().splitlines()
    env = dict(line.split("=", 1) for line in out if "=" in line)
    assert env["LIFECYCLE_EVENT"] == "AfterInstall"
    assert env["DEPLOYMENT_ID"] == "d-ABCDEFGH1"
    assert env["APPLICATION_NAME"] == "app"
    assert env["DEPLOYMENT_GROUP_NAME"] == "dg"
    assert env["DEPLOYMENT_GROUP_ID"] == "dg-id"
    assert env["BUNDLE_BUCKET"] == "bkt" and env["BUNDLE_KEY"] == "k/app.zip"
    assert env["BUNDLE_VERSION"] == "v1" and env["BUNDLE_ETAG"] == "e1"
    assert "/usr/bin" in env["PATH"] and env["HOME"] and env["USER"] == pwd.getpwuid(os.geteuid()).pw_name
    assert out[-1] == root  # cwd is the revision root
    script = res.scripts[0]
    assert script.exit_code == 0 and not script.timed_out
    assert script.output_tail == ""  # a script that succeeded returns no output: it stays in the sealed log
    text = open(log).read()
    assert "LifecycleEvent - AfterInstall" in text and "[AfterInstall] Script - scripts/env.sh" in text
    assert "hello\n" in text


def test_local_revision_has_no_bundle_vars(rev):
    root, log = rev
    write_script(root, "e.sh", "#!/bin/sh\nenv\n")
    ctx = hr.HookContext("d-ABCDEFGH1", "app", "dg", revision={"source": "local"})
    hr.run_event("ApplicationStart", [{"location": "e.sh"}], root, ctx, log)
    tail = open(log).read()
    assert "DEPLOYMENT_GROUP_ID=dg" in tail and "BUNDLE_BUCKET" not in tail


def test_nonzero_exit_fails_and_stops_event(rev):
    root = rev[0]
    write_script(root, "a.sh", "#!/bin/sh\necho boom >&2\nexit 3\n")
    write_script(root, "b.sh", "#!/bin/sh\ntouch \"$0.ran\"\n")
    res = run(rev, "ValidateService", [{"location": "a.sh"}, {"location": "b.sh"}])
    assert res.status == "Failed"
    assert len(res.scripts) == 1 and res.scripts[0].exit_code == 3
    assert "a.sh" in res.message and "exit code 3" in res.message
    assert res.scripts[0].output_tail == "boom"
    assert not os.path.exists(os.path.join(root, "b.sh.ran"))


def test_missing_script_fails_naming_it(rev):
    res = run(rev, "BeforeInstall", [{"location": "scripts/nope.sh"}])
    assert res.status == "Failed"
    assert "scripts/nope.sh" in res.message and "does not exist" in res.message


def test_location_outside_revision_rejected(rev):
    res = run(rev, "BeforeInstall", [{"location": "../../etc/passwd"}])
    assert res.status == "Failed" and "inside the revision" in res.message


def test_non_executable_is_made_executable(rev):
    root = rev[0]
    path = write_script(root, "x.sh", "#!/bin/sh\necho ok\n", mode=0o644)
    res = run(rev, "AfterInstall", [{"location": "x.sh"}])
    assert res.status == "Succeeded", res.message
    assert os.stat(path).st_mode & 0o111


def test_script_without_shebang_runs_with_sh(rev):
    root = rev[0]
    write_script(root, "plain", "echo no-shebang $LIFECYCLE_EVENT\n")
    res = run(rev, "AfterInstall", [{"location": "plain"}])
    assert res.status == "Succeeded", res.message
    assert "\nno-shebang AfterInstall\n" in open(rev[1]).read()


def test_timeout_terminates_group_within_bound(rev):
    root = rev[0]
    write_script(root, "slow.sh", "#!/bin/sh\nsleep 30 &\necho $! > \"$0.child\"\nsleep 30\n")
    t0 = time.monotonic()
    res = run(rev, "ApplicationStart", [{"location": "slow.sh", "timeout": 1}], grace=2)
    elapsed = time.monotonic() - t0
    assert elapsed < 1 + 2 + 1
    script = res.scripts[0]
    assert res.status == "Failed" and script.timed_out and not script.killed
    assert "timeout of 1 s" in res.message
    child = int(open(os.path.join(root, "slow.sh.child")).read())
    time.sleep(0.2)
    assert not _alive(child), "the background child in the script's group was not terminated"


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_sigterm_ignored_gets_sigkill_after_grace(rev):
    root = rev[0]
    write_script(root, "stubborn.sh", "#!/bin/sh\ntrap '' TERM\nwhile :; do sleep 0.1; done\n")
    t0 = time.monotonic()
    res = run(rev, "ApplicationStop", [{"location": "stubborn.sh", "timeout": 1}], grace=1)
    elapsed = time.monotonic() - t0
    script = res.scripts[0]
    assert script.timed_out and script.killed
    assert 2 <= elapsed < 1 + 1 + 4, elapsed  # timeout + grace; the rest is headroom for a loaded machine
    assert "SIGKILL" in res.message


def test_background_child_holding_output_does_not_block(rev):
    root, log = rev
    write_script(root, "start.sh", "#!/bin/sh\nsleep 30 &\necho $! > \"$0.child\"\necho started\nexit 0\n")
    t0 = time.monotonic()
    res = run(rev, "ApplicationStart", [{"location": "start.sh", "timeout": 60}])
    assert time.monotonic() - t0 < 2
    assert res.status == "Succeeded" and "\nstarted\n" in open(log).read()
    child = int(open(os.path.join(root, "start.sh.child")).read())
    assert _alive(child)  # the daemon the script started keeps running
    os.kill(child, 9)


def test_output_tail_is_bounded_and_per_script(rev):
    root, log = rev
    write_script(root, "one.sh", "#!/bin/sh\necho first-script\n")
    write_script(root, "many.sh", "#!/bin/sh\nfor i in $(seq 1 100); do echo line$i; done\nexit 1\n")
    res = run(rev, "AfterInstall", [{"location": "one.sh"}, {"location": "many.sh"}])
    tail = res.scripts[1].output_tail.splitlines()
    assert len(tail) == hr.TAIL_LINES and tail[-1] == "line100" and "first-script" not in tail
    assert res.scripts[0].output_tail == ""  # succeeded: its output stays in the log
    assert res.scripts[1].log_file == log
    text = open(log).read()
    assert "line1\n" in text and "line100\n" in text and text.index("one.sh") < text.index("many.sh")


def test_no_scripts_succeeds(rev):
    res = run(rev, "BeforeInstall", [])
    assert res.status == "Succeeded" and res.scripts == []


@pytest.fixture(scope="module")
def app_user():
    name = "rwapp"
    created = False
    try:
        pwd.getpwnam(name)
    except KeyError:
        if os.geteuid() != 0 or not shutil.which("useradd"):
            pytest.skip("needs root and useradd to create a test user")
        name = "rwt" + uuid.uuid4().hex[:8]
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
        created = True
    yield name
    if created:
        subprocess.run(["userdel", name], check=False)


def test_runas_non_root_user(rev, app_user):
    root = rev[0]
    write_script(root, "who.sh", "#!/bin/sh\nid -un\necho \"$USER $HOME\"\n")
    res = run(rev, "ValidateService", [{"location": "who.sh", "runas": app_user}])
    assert res.status == "Succeeded", res.message
    entry = pwd.getpwnam(app_user)
    assert f"\n{app_user}\n{app_user} {entry.pw_dir}\n" in open(rev[1]).read()


def test_runas_unknown_user_fails(rev):
    root = rev[0]
    write_script(root, "who.sh", "#!/bin/sh\nid -un\n")
    res = run(rev, "ValidateService", [{"location": "who.sh", "runas": "no-such-user-rw"}])
    assert res.status == "Failed" and "no-such-user-rw" in res.message
