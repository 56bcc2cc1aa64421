# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host sessions: the host_lifecycle module run with ``session`` (a real process on real bundles), driven by the
controller's gate commands run with /bin/sh, as the batch step runs them through a host's connection."""

from __future__ import annotations

import json
import re
import os
import stat
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.host.session import (
    HostSession, process_start_ticks, session_dir,
)
from ansible_collections.rollwright.deploy.plugins.module_utils.host.state import HostState, StateError
from ansible_collections.rollwright.deploy.plugins.plugin_utils import host_session as hs

from tests.unit.test_host_lifecycle_module import BUILD, MODULES, appspec, make_bundle

PRE = ["BeforeBlockTraffic"]
MAIN = ["AfterBlockTraffic", "ApplicationStop", "DownloadBundle", "BeforeInstall", "Install", "AfterInstall",
        "ApplicationStart", "ValidateService", "BeforeAllowTraffic"]
POST = ["AfterAllowTraffic"]


@pytest.fixture
def world(tmp_path):
    trace = tmp_path / "trace.log"
    base = {"application": "shop", "deployment_group": "web", "state_root": str(tmp_path / "state")}
    return tmp_path, trace, base, str(tmp_path / "www")


def start_module(tmp_path, args, name="session"):
    args_file = tmp_path / f"args-{name}.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    return subprocess.Popen([sys.executable, os.path.join(MODULES, "host_lifecycle.py"), str(args_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=BUILD))


def module_result(proc, timeout=60):
    out, err = proc.communicate(timeout=timeout)
    try:
        return json.loads(out)
    except ValueError:
        raise AssertionError(f"module printed no JSON: rc={proc.returncode}\n{out}\n{err}")


def gate(path, index, word=None, wait=True, start_limit=hs.START_LIMIT, timeout=60):
    """What the batch step's raw call gets back: the gate command run by /bin/sh on 'the host'."""
    proc = subprocess.run(["/bin/sh", "-c", hs.gate_command(path, index, word, wait, start_limit=start_limit)],
                          capture_output=True, text=True, timeout=timeout, check=False)
    return hs.read_gate_output({"stdout": proc.stdout, "stderr": proc.stderr, "rc": proc.returncode,
                                "failed": proc.returncode != 0})


def session_args(base, dest, deployment_id, bundle, name, **session):
    return dict(base, deployment_id=deployment_id, events=PRE, appspec=appspec(dest), bundle=bundle,
                revision={"source": "s3", "bucket": "b", "key": "shop.tgz", "version": "v", "etag": "e"},
                session=dict({"name": name, "groups": [{"events": MAIN}, {"events": POST, "complete": True}]}, **session))


def path_of(base, deployment_id, name):
    return session_dir(HostState(base["state_root"], base["application"], base["deployment_group"]), deployment_id, name)


def deploy_in_session(tmp_path, base, dest, deployment_id, bundle, name="b1-x"):
    proc = start_module(tmp_path, session_args(base, dest, deployment_id, bundle, name), name=deployment_id)
    path = path_of(base, deployment_id, name)
    results = [gate(path, 0), gate(path, 1, "run"), gate(path, 2, "run", wait=False)]
    return results, module_result(proc), path


def test_a_session_runs_each_group_on_the_controllers_word_and_ends_as_separate_calls_would(world):
    tmp_path, trace, base, dest = world
    v1 = make_bundle(tmp_path / "v1.tgz", "v1", trace)
    _results, first, _path = deploy_in_session(tmp_path, base, dest, "d-AAAAAAAA1", v1)
    assert not first.get("failed"), first["msg"]
    v2 = make_bundle(tmp_path / "v2.tgz", "v2", trace)
    proc = start_module(tmp_path, session_args(base, dest, "d-BBBBBBBB2", v2, "b1-y"))
    path = path_of(base, "d-BBBBBBBB2", "b1-y")

    said, pre = gate(path, 0)
    assert said == "result" and [e["name"] for e in pre["events"]] == PRE and not pre["failed"]
    # Until the controller says run, nothing of the next group happens.
    time.sleep(0.5)
    assert "d-BBBBBBBB2 v2" not in trace.read_text()
    assert open(os.path.join(dest, "index.html")).read() == "<h1>v1</h1>\n"

    said, main = gate(path, 1, "run")
    assert said == "result" and [e["name"] for e in main["events"]] == MAIN, main
    assert [e["status"] for e in main["events"] if e["name"] == "ApplicationStop"] == ["Succeeded"]
    assert main["last_successful"] == {"before": "d-AAAAAAAA1", "after": "d-AAAAAAAA1"}  # not complete yet
    assert open(os.path.join(dest, "index.html")).read() == "<h1>v2</h1>\n"

    assert gate(path, 2, "run", wait=False) == (hs.SENT, None)
    final = module_result(proc)
    assert not final.get("failed"), final["msg"]
    assert [e["name"] for e in final["events"]] == POST
    assert final["last_successful"] == {"before": "d-AAAAAAAA1", "after": "d-BBBBBBBB2"}
    assert final["session"]["ended"] == "completed"
    assert [g["events"] for g in final["session"]["groups"]] == [PRE, MAIN, POST]
    # The previous revision's scripts ran for the stop events, the new one's for the rest, in lifecycle order.
    lines = [line for line in trace.read_text().splitlines() if "d-BBBBBBBB2" in line]
    assert lines == ["ApplicationStop d-BBBBBBBB2 v1", "BeforeInstall d-BBBBBBBB2 v2", "AfterInstall d-BBBBBBBB2 v2",
                     "ApplicationStart d-BBBBBBBB2 v2", "ValidateService d-BBBBBBBB2 v2"]
    # The session's directory is root's alone and says the engine stopped.
    assert oct(os.stat(path).st_mode & 0o777) == "0o700"
    assert os.path.exists(os.path.join(path, "done"))


def test_an_abort_at_a_gate_runs_nothing_more_and_is_not_a_failure(world):
    tmp_path, trace, base, dest = world
    v1 = make_bundle(tmp_path / "v1.tgz", "v1", trace)
    deploy_in_session(tmp_path, base, dest, "d-AAAAAAAA1", v1)
    v2 = make_bundle(tmp_path / "v2.tgz", "v2", trace)
    proc = start_module(tmp_path, session_args(base, dest, "d-BBBBBBBB2", v2, "b2-z"))
    path = path_of(base, "d-BBBBBBBB2", "b2-z")
    assert gate(path, 0)[0] == "result"
    assert gate(path, 1, "abort still draining after the timeout", wait=False)[0] == hs.SENT
    final = module_result(proc)
    assert not final.get("failed"), final
    assert final["session"]["ended"] == "abort" and final["session"]["reason"] == "still draining after the timeout"
    assert "d-BBBBBBBB2 v2" not in trace.read_text() and "ApplicationStop d-BBBBBBBB2" not in trace.read_text()
    assert open(os.path.join(dest, "index.html")).read() == "<h1>v1</h1>\n"
    # A command that comes after the end reads that the engine stopped, at once.
    started = time.monotonic()
    assert gate(path, 2, "run") == (hs.ENDED, None) and time.monotonic() - started < 5


def test_a_gate_expires_without_a_sign_of_life_and_alive_keeps_it_open(world):
    tmp_path, trace, base, dest = world
    v1 = make_bundle(tmp_path / "v1.tgz", "v1", trace)
    proc = start_module(tmp_path, session_args(base, dest, "d-AAAAAAAA1", v1, "b1-q", gate_timeout=1.5))
    path = path_of(base, "d-AAAAAAAA1", "b1-q")
    assert gate(path, 0)[0] == "result"
    # The controller is alive: it touches `alive` while it works, for longer than the gate's timeout.
    for _beat in range(8):
        time.sleep(0.4)
        with open(os.path.join(path, "alive"), "a"):
            pass
        os.utime(os.path.join(path, "alive"))
    said, main = gate(path, 1, "run")
    assert said == "result" and not main["failed"], main
    # Then it dies: nothing more comes, and the engine gives up after the timeout without running the last group.
    final = module_result(proc, timeout=30)
    assert final["failed"] and final["session"]["ended"] == "expired"
    assert "no word from the controller for 1.5 s before event group 2" in final["msg"]
    assert final["events"] == []  # nothing of group 2 ran; group 1's events were reported with its result
    assert HostState(base["state_root"], "shop", "web").last_successful is None  # never recorded as succeeded


def test_a_failed_group_ends_the_session_and_the_gate_reads_its_result(world):
    tmp_path, trace, base, dest = world
    v1 = make_bundle(tmp_path / "v1.tgz", "v1", trace, stop_exit=3)  # its ApplicationStop fails the next deployment
    deploy_in_session(tmp_path, base, dest, "d-AAAAAAAA1", v1)
    v2 = make_bundle(tmp_path / "v2.tgz", "v2", trace)
    proc = start_module(tmp_path, session_args(base, dest, "d-BBBBBBBB2", v2, "b1-f"))
    path = path_of(base, "d-BBBBBBBB2", "b1-f")
    assert gate(path, 0)[0] == "result"
    said, main = gate(path, 1, "run")
    assert said == "result" and main["failed"] and main["failed_event"] == "ApplicationStop"
    assert hs.handled_failure(main, "web1")["lifecycle_failed"]  # the deployment judges it, as a separate call's
    final = module_result(proc)
    assert final["failed"] and final["session"]["ended"] == "failed"
    assert gate(path, 2, "run", wait=False)[0] in (hs.SENT, hs.ENDED)  # a late word changes nothing
    assert [g["index"] for g in final["session"]["groups"]] == [0, 1]


def test_gate_commands_do_not_wait_for_an_engine_that_never_started_or_died(tmp_path):
    path = str(tmp_path / "never")
    started = time.monotonic()
    assert gate(path, 0, start_limit=1) == (hs.NO_START, None)
    assert time.monotonic() - started < 10
    dead_dir = tmp_path / "dead"
    dead_dir.mkdir(mode=0o700)
    dead = subprocess.run(["/bin/sh", "-c", "echo $$"], capture_output=True, text=True, check=True).stdout.strip()
    (dead_dir / "pid").write_text(dead + "\n")
    assert gate(str(dead_dir), 1, "run") == (hs.GONE, None)
    assert (dead_dir / "go-1").read_text() == "run\n"
    # A live process under the pid, started at another time than the engine was: the engine is gone (pid reused).
    (dead_dir / "pid").write_text(f"{os.getpid()} 1\n")
    assert gate(str(dead_dir), 2, "run") == (hs.GONE, None)
    (dead_dir / "pid").write_text(f"{os.getpid()} {process_start_ticks()}\n")
    (dead_dir / "result-2.json").write_text('{"failed": false, "msg": "ok"}\n')
    assert gate(str(dead_dir), 2) == ("result", {"failed": False, "msg": "ok"})


def test_gate_commands_trust_only_a_sealed_directory(tmp_path):
    """Anything but a 0700 directory of the command's own user (root on the hosts) is never read or written:
    what someone else prepared there (a pid, a result) is not taken, and no word is written through a link."""
    target = tmp_path / "target"
    target.mkdir(mode=0o700)

    def someone_elses(p):
        p.mkdir(mode=0o700)
        os.chown(p, 65534, 65534)

    makers = [("open", lambda p: p.mkdir(mode=0o755)), ("link", lambda p: p.symlink_to(target))]
    if os.geteuid() == 0:  # a 0700 directory of another user's (nobody's)
        makers.append(("other owner", someone_elses))
    for name, make in makers:
        forged = tmp_path / name
        make(forged)
        os.chmod(target, 0o700)
        (forged / "pid").write_text(f"{os.getpid()}\n")
        (forged / "result-1.json").write_text('{"failed": false, "msg": "forged"}\n')
        assert gate(str(forged), 1, "run", start_limit=1) == (hs.NO_START, None), name
        assert not (forged / "go-1").exists() and not (target / "go-1").exists()
        touched = subprocess.run(["/bin/sh", "-c", hs.touch_command(str(forged))], capture_output=True, check=False)
        assert touched.returncode == 0 and not (forged / "alive").exists()
        for leftover in ("pid", "result-1.json"):
            (forged / leftover).unlink()


def test_read_gate_output_takes_the_marked_line_only():
    out = "Shared connection closed\r\nRWS-RESULT:" + json.dumps({"failed": False, "msg": "ok"}) + "\r\n"
    assert hs.read_gate_output({"stdout": out, "rc": 0}) == ("result", {"failed": False, "msg": "ok"})
    unreachable = hs.read_gate_output({"unreachable": True, "msg": "ssh: no route"})
    assert unreachable == ("unreachable", {"unreachable": True, "msg": "ssh: no route"})
    said, data = hs.read_gate_output({"stdout": "sh: 1: cannot create\r\n", "rc": 2, "failed": True})
    assert said == "error" and data["failed"] and "rc 2" in data["msg"]


def test_a_session_directory_is_never_made_through_a_link_or_twice(world):
    tmp_path, _trace, base, _dest = world
    state = HostState(base["state_root"], base["application"], base["deployment_group"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    deployment = os.path.join(state.deployments_dir, "d-CCCCCCCC3")
    os.makedirs(deployment)
    os.symlink(elsewhere, os.path.join(deployment, "sessions"))
    with pytest.raises(StateError, match="symlink|link"):
        HostSession(state, "d-CCCCCCCC3", "b1-a", 60).open()
    assert os.listdir(elsewhere) == []
    session = HostSession(state, "d-DDDDDDDD4", "b1-a", 60)
    session.open()
    with pytest.raises(StateError, match="exists already"):
        HostSession(state, "d-DDDDDDDD4", "b1-a", 60).open()
    with pytest.raises(StateError, match="session.name"):
        HostSession(state, "d-DDDDDDDD4", "../x", 60)


class LocalCaller:
    """HostCaller's interface over local processes: a 'host' is a state root here, the module a real process, a raw
    command /bin/sh - what the batch step gets, without SSH."""

    forks = 10

    def __init__(self, tmp_path, start_delay=0.0, return_delay=0.0):
        self.tmp_path = tmp_path
        self.raw_calls = []
        # a slow start (a long push, a slow host) and a result that comes back late (still on its way over SSH)
        self.start_delay, self.return_delay = start_delay, return_delay

    def _run_module(self, host, args):
        time.sleep(self.start_delay)
        result = module_result(start_module(self.tmp_path, args, name=host))
        time.sleep(self.return_delay)
        return result

    def submit(self, module, args_by_host):
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=len(args_by_host))
        futures = {h: pool.submit(self._run_module, h, a) for h, a in args_by_host.items()}
        pool.shutdown(wait=False)
        return futures

    @staticmethod
    def _run_raw(args):
        proc = subprocess.run(["/bin/sh", "-c", args["_raw_params"]], capture_output=True, text=True, timeout=60,
                              check=False)
        return {"stdout": proc.stdout, "stderr": proc.stderr, "rc": proc.returncode, "failed": bool(proc.returncode)}

    def call(self, module, args_by_host, on_results=None, hold=None):
        from concurrent.futures import ThreadPoolExecutor

        from ansible_collections.rollwright.deploy.plugins.plugin_utils.host_calls import as_they_come

        assert module == hs.RAW
        self.raw_calls.append(sorted(args_by_host))

        def run(host, raw):
            if hold is not None and not hold(host):
                return {"failed": True, "msg": f"{host} was not called"}
            return self._run_raw(raw)

        with ThreadPoolExecutor(max_workers=max(1, len(args_by_host))) as pool:
            return as_they_come({h: pool.submit(run, h, a) for h, a in args_by_host.items()}, on_results)


def _web_sessions(tmp_path, caller, name, progress=None):
    """BatchSessions of one batch over two local 'hosts' (web1, web2), each with a v1 bundle; and their paths."""
    trace = tmp_path / "trace.log"
    args, paths = {}, {}
    for host in ("web1", "web2"):
        base = {"application": "shop", "deployment_group": "web", "state_root": str(tmp_path / host)}
        bundle = make_bundle(tmp_path / f"{host}.tgz", "v1", trace)
        args[host] = dict(session_args(base, str(tmp_path / host / "www"), "d-AAAAAAAA1", bundle, name),
                          failure_handled=True)
        paths[host] = path_of(base, "d-AAAAAAAA1", name)
    return hs.BatchSessions(caller, "rollwright.deploy.host_lifecycle", args, paths, progress=progress), paths


def test_batch_sessions_continue_the_batch_and_abort_the_hosts_it_leaves(tmp_path):
    caller = LocalCaller(tmp_path, return_delay=2)  # web1's call still returning when the batch closes
    lines = []
    sessions, paths = _web_sessions(tmp_path, caller, "b1-t-0", progress=lines.append)
    sessions.start()
    pre = sessions.results(0, ["web1", "web2"], "BeforeBlockTraffic")
    assert {h: [e["name"] for e in r["events"]] for h, r in pre.items()} == {"web1": PRE, "web2": PRE}
    # web2 is still draining after the timeout: the batch goes on with web1 alone.
    main = sessions.results(1, ["web1"], "AfterBlockTraffic..BeforeAllowTraffic")
    assert list(main) == ["web1"] and not main["web1"]["failed"]
    post = sessions.results(2, ["web1"], "AfterAllowTraffic")
    assert post["web1"]["last_successful"]["after"] == "d-AAAAAAAA1" and not post["web1"]["failed"]
    calls_before_close = len(caller.raw_calls)
    sessions.close("the batch is over")
    # Only web2 is told to abort: web1 is past its last gate (it is only finishing its run), no go-3 for it.
    assert caller.raw_calls[calls_before_close:] == [["web2"]], caller.raw_calls
    assert sorted(n for n in os.listdir(paths["web1"]) if n.startswith("go-")) == ["go-0", "go-1", "go-2"]
    # Each detached engine leaves its own result in its directory (read with a shell command, as a gate is).
    assert sessions.final("web1")["session"]["ended"] == "completed"
    assert sessions.final("web2")["session"] == dict(sessions.final("web2")["session"], ended="abort",
                                                     reason="the batch is over")
    assert not sessions.final("web2").get("failed")
    assert (tmp_path / "web1" / "www" / "index.html").exists() and not (tmp_path / "web2" / "www").exists()
    # Nothing waits any more: every start call returned (web1's late), and every engine is gone.
    assert sessions.wait_started() == {} and all(f.done() for f in sessions.futures.values())
    for host in ("web1", "web2"):
        assert os.path.exists(os.path.join(paths[host], "done"))
        assert _gone(_engine_pid(paths[host]))


def test_a_held_word_goes_only_to_the_hosts_its_hold_lets_go_and_the_others_are_told_nothing(tmp_path):
    """A paced batch sets its words up while the hosts drain and holds them: a host its hold refuses (still
    draining) gets no word at its gate, runs nothing, and is aborted when the batch closes."""
    sessions, paths = _web_sessions(tmp_path, LocalCaller(tmp_path), "b1-h-0")
    sessions.start()
    sessions.results(0, ["web1", "web2"], "BeforeBlockTraffic")
    held = []
    arrived = []
    main = sessions.results(1, ["web1", "web2"], "AfterBlockTraffic..BeforeAllowTraffic",
                            on_results=arrived.extend,
                            hold=lambda host: held.append(host) or host == "web1")
    assert sorted(held) == ["web1", "web2"]
    assert not main["web1"]["failed"] and [e["name"] for e in main["web1"]["events"]] == MAIN
    assert main["web2"]["failed"] and arrived == ["web1"]  # the refused host's failure is no group result
    assert sorted(n for n in os.listdir(paths["web2"]) if n.startswith("go-")) == ["go-0"]  # no word at gate 1
    sessions.close("the batch is over")
    assert sessions.final("web2")["session"]["ended"] == "abort"
    assert (tmp_path / "web1" / "www" / "index.html").exists() and not (tmp_path / "web2" / "www").exists()
    assert sessions.wait_started() == {}


def test_a_session_that_starts_late_is_waited_for_not_given_up(tmp_path):
    """An engine that takes longer than the gate command's start limit to start (a long push, a slow host) is
    asked again while its call runs: the word is said once it is there, and the batch gets its results."""
    trace = tmp_path / "trace.log"
    caller = LocalCaller(tmp_path, start_delay=3)
    base = {"application": "shop", "deployment_group": "web", "state_root": str(tmp_path / "web1")}
    args = {"web1": dict(session_args(base, str(tmp_path / "www"), "d-AAAAAAAA1",
                                      make_bundle(tmp_path / "v1.tgz", "v1", trace), "b1-s-0"), failure_handled=True)}
    sessions = hs.BatchSessions(caller, "rollwright.deploy.host_lifecycle", args,
                                {"web1": path_of(base, "d-AAAAAAAA1", "b1-s-0")}, start_limit=1)
    sessions.start()
    main = sessions.results(1, ["web1"])  # said before the engine exists: asked again until it is there
    assert not main["web1"]["failed"] and [e["name"] for e in main["web1"]["events"]] == MAIN
    assert len(caller.raw_calls) >= 2  # at least one NOSTART, then the word and the result
    assert not sessions.results(2, ["web1"])["web1"]["failed"]
    sessions.close("the batch is over")
    assert sessions.final("web1")["session"]["ended"] == "completed"


def sleepy_bundle(path, version, event, seconds):
    """A tar.gz bundle whose hook sleeps ``seconds`` in ``event`` (and does nothing in the others)."""
    import io
    import tarfile

    files = {"appspec.yml": "version: 0.0\nos: linux\n", "site/index.html": f"<h1>{version}</h1>\n",
             "scripts/hook.sh": f"#!/bin/sh\n[ \"$LIFECYCLE_EVENT\" = {event} ] && sleep {seconds}\nexit 0\n",
             "scripts/stop.sh": "#!/bin/sh\nexit 0\n"}
    with tarfile.open(path, "w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content.encode()), 0o755 if name.startswith("scripts/") else 0o644
            tar.addfile(info, io.BytesIO(content.encode()))
    return str(path)


def test_a_long_hook_in_a_session_gets_a_progress_line_naming_its_script(tmp_path, monkeypatch):
    """As with a module call per group: a hook running longer than PROGRESS_AFTER is named, with its event, read
    from the deployment's scripts.log on the host while the gate waits."""
    monkeypatch.setattr(hs, "PROGRESS_AFTER", 0.5)
    bundle = sleepy_bundle(tmp_path / "slow.tgz", "v1", "BeforeInstall", 2)
    caller = LocalCaller(tmp_path)
    base = {"application": "shop", "deployment_group": "web", "state_root": str(tmp_path / "web1")}
    args = {"web1": dict(session_args(base, str(tmp_path / "www"), "d-AAAAAAAA1", bundle, "b1-p-0"),
                         failure_handled=True)}
    lines = []
    sessions = hs.BatchSessions(caller, "rollwright.deploy.host_lifecycle", args,
                                {"web1": path_of(base, "d-AAAAAAAA1", "b1-p-0")}, progress=lines.append)
    sessions.start()
    sessions.results(0, ["web1"], "BeforeBlockTraffic")
    assert not sessions.results(1, ["web1"], "AfterBlockTraffic..BeforeAllowTraffic")["web1"]["failed"]
    sessions.results(2, ["web1"], "AfterAllowTraffic")
    sessions.close("the batch is over")
    assert any(re.fullmatch(r"web1: BeforeInstall scripts/hook\.sh running \(\d+ s\)", line) for line in lines), lines
    assert not any("AfterBlockTraffic..BeforeAllowTraffic" in line for line in lines), lines  # the script, not the group


def test_results_of_a_group_come_to_the_batch_as_each_host_finishes(tmp_path):
    """on_results: the batch sees a host's main-group result as soon as that host is done (it can go back into its
    load balancer then), not when the slowest host of the batch is; every host's result is still returned."""
    caller = LocalCaller(tmp_path)
    args, paths = {}, {}
    for host, sleep in (("fast", 0), ("slow", 3)):
        base = {"application": "shop", "deployment_group": "web", "state_root": str(tmp_path / host)}
        bundle = sleepy_bundle(tmp_path / f"{host}.tgz", host, "ValidateService", sleep)
        args[host] = dict(session_args(base, str(tmp_path / host / "www"), "d-AAAAAAAA1", bundle,
                                       f"b1-r-{host}"), failure_handled=True)
        paths[host] = path_of(base, "d-AAAAAAAA1", f"b1-r-{host}")
    sessions = hs.BatchSessions(caller, "rollwright.deploy.host_lifecycle", args, paths)
    sessions.start()
    sessions.results(0, ["fast", "slow"], "BeforeBlockTraffic")
    arrivals = []
    main = sessions.results(1, ["fast", "slow"], "AfterBlockTraffic..BeforeAllowTraffic",
                            on_results=lambda ran: arrivals.append((time.monotonic(), sorted(ran))))
    done = time.monotonic()
    assert [hosts for _at, hosts in arrivals] == [["fast"], ["slow"]], arrivals
    assert done - arrivals[0][0] > 2, arrivals  # the fast host was seen while the slow one still validated
    assert sorted(main) == ["fast", "slow"] and not any(r["failed"] for r in main.values())
    sessions.results(2, ["fast", "slow"], "AfterAllowTraffic")
    sessions.close("the batch is over")


def _engine_pid(path):
    with open(os.path.join(path, "pid"), encoding="ascii") as handle:
        return int(handle.read().split()[0])


def _running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        return handle.read().rsplit(") ", 1)[1].split()[0] != "Z"  # a zombie has ended


def _gone(pid, timeout=10):
    """Whether the process ends within ``timeout`` seconds (it may still be on its way out after ``done``)."""
    deadline = time.monotonic() + timeout
    while _running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_detached_session_answers_at_once_then_waits_at_gate_0_with_nothing_run(world):
    tmp_path, trace, base, dest = world
    v1 = make_bundle(tmp_path / "v1.tgz", "v1", trace)
    proc = start_module(tmp_path, session_args(base, dest, "d-AAAAAAAA1", v1, "b1-d", detach=True, first_gate=True))
    answer = module_result(proc, timeout=30)
    path = path_of(base, "d-AAAAAAAA1", "b1-d")
    assert answer["session"]["detached"] is True and not answer.get("failed"), answer
    # The engine that waits is the detached child, not the process that answered (that one is gone).
    assert _engine_pid(path) == answer["session"]["pid"] != proc.pid and _running(answer["session"]["pid"])
    time.sleep(0.5)
    assert not trace.exists() or "v1" not in trace.read_text()  # nothing ran before the word at gate 0
    said, pre = gate(path, 0, "run")
    assert said == "result" and [e["name"] for e in pre["events"]] == PRE and not pre["failed"]
    assert gate(path, 1, "run")[1]["failed"] is False
    said, post = gate(path, 2, "run")
    assert said == "result" and post["last_successful"]["after"] == "d-AAAAAAAA1"
    final = wait_for_file(os.path.join(path, "final.json"))
    assert json.loads(final)["session"]["ended"] == "completed"
    assert open(os.path.join(dest, "index.html")).read() == "<h1>v1</h1>\n"


def test_a_detached_session_nobody_calls_expires_at_gate_0_and_runs_nothing(world):
    tmp_path, trace, base, dest = world
    v1 = make_bundle(tmp_path / "v1.tgz", "v1", trace)
    proc = start_module(tmp_path, session_args(base, dest, "d-AAAAAAAA1", v1, "b2-e", detach=True, first_gate=True,
                                               gate_timeout=1))
    answer = module_result(proc, timeout=30)
    path = path_of(base, "d-AAAAAAAA1", "b2-e")
    final = json.loads(wait_for_file(os.path.join(path, "final.json"), timeout=20))
    assert final["session"]["ended"] == "expired" and final["failed"] and final["events"] == []
    assert "before event group 0" in final["msg"]
    assert _gone(answer["session"]["pid"]) and not os.path.exists(dest)
    assert not trace.exists() or "v1" not in trace.read_text()


def wait_for_file(path, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
            if text.endswith("\n"):
                return text
        time.sleep(0.05)
    raise AssertionError(f"{path} did not appear within {timeout} s")


def _batch_args(tmp_path, trace, hosts, deployment_id, name, **session):
    args, paths = {}, {}
    for number, host in enumerate(hosts):
        base = {"application": "shop", "deployment_group": "web", "state_root": str(tmp_path / host)}
        bundle = make_bundle(tmp_path / f"{host}.tgz", "v1", trace)
        args[host] = dict(session_args(base, str(tmp_path / host / "www"), deployment_id, bundle, f"{name}-{number}",
                                       **session), failure_handled=True)
        paths[host] = path_of(base, deployment_id, f"{name}-{number}")
    return args, paths


def test_sessions_started_ahead_by_one_task_are_adopted_by_the_next(tmp_path):
    """The batch before starts the sessions and lets go of them; the batch's own task adopts them by name (another
    caller, nothing started again) and runs them; a host the batch does not take is told to abort at gate 0."""
    trace = tmp_path / "trace.log"
    args, paths = _batch_args(tmp_path, trace, ["web1", "web2"], "d-AAAAAAAA1", "b2-a")
    ahead = hs.BatchSessions(LocalCaller(tmp_path), "rollwright.deploy.host_lifecycle", args, paths)
    ahead.start()
    assert ahead.wait_started() == {}
    ahead.release()
    time.sleep(0.3)
    assert not trace.exists() or "v1" not in trace.read_text()  # waiting at gate 0, nothing ran
    caller = LocalCaller(tmp_path)
    batch = hs.BatchSessions(caller, "rollwright.deploy.host_lifecycle", {"web1": args["web1"]},
                             {"web1": paths["web1"]})
    batch.adopt(["web1"])
    main = batch.results(1, ["web1"], "main")  # says run at gates 0 and 1 (no BeforeBlockTraffic call asked)
    assert not main["web1"]["failed"] and [e["name"] for e in main["web1"]["events"]] == MAIN
    assert not batch.results(2, ["web1"])["web1"]["failed"]
    batch.close("the batch is over")
    assert batch.futures == {}  # nothing started by this task
    # gate 0's word came with the main group's: group 0 ran first, then the main group
    groups = batch.final("web1")["session"]["groups"]
    assert [(g["index"], g["events"]) for g in groups] == [(0, PRE), (1, MAIN), (2, POST)]
    # web2 was not part of the batch: aborted at gate 0, before anything ran.
    rest = hs.BatchSessions(caller, "rollwright.deploy.host_lifecycle", {"web2": args["web2"]},
                            {"web2": paths["web2"]})
    rest.adopt(["web2"])
    rest.close("not in this batch as planned")
    final = rest.final("web2")
    assert final["session"]["ended"] == "abort" and final["session"]["groups"] == [] and final["events"] == []
    assert not (tmp_path / "web2" / "www").exists() and (tmp_path / "web1" / "www" / "index.html").exists()


def test_a_session_started_ahead_that_expired_is_started_again_under_a_new_name(tmp_path):
    """A long pause between batches: the session started ahead expired at gate 0 (nothing ran); the batch starts
    a new one instead of failing the host."""
    trace = tmp_path / "trace.log"
    args, paths = _batch_args(tmp_path, trace, ["web1"], "d-AAAAAAAA1", "b3-x", gate_timeout=1)
    ahead = hs.BatchSessions(LocalCaller(tmp_path), "rollwright.deploy.host_lifecycle", args, paths)
    ahead.start()
    assert ahead.wait_started() == {}
    ahead.release()
    wait_for_file(os.path.join(paths["web1"], "final.json"), timeout=20)  # expired
    batch_args = {"web1": dict(args["web1"], session=dict(args["web1"]["session"], gate_timeout=60))}
    batch = hs.BatchSessions(LocalCaller(tmp_path), "rollwright.deploy.host_lifecycle", batch_args, paths)
    batch.adopt(["web1"])
    pre = batch.results(0, ["web1"], "BeforeBlockTraffic")
    assert not pre["web1"]["failed"] and [e["name"] for e in pre["web1"]["events"]] == PRE
    assert batch.paths["web1"] == paths["web1"] + "-again" and list(batch.futures) == ["web1"]
    assert not batch.results(1, ["web1"])["web1"]["failed"]
    assert not batch.results(2, ["web1"])["web1"]["failed"]
    assert batch.final("web1")["session"]["ended"] == "completed"


def test_gate_0_is_polled_gently_and_later_gates_quickly_at_first(world):
    """Sessions started ahead wait at gate 0 for a whole batch: tens of them polling every 10 ms would take the CPU
    the running batch needs. A later gate's word usually comes within seconds: polled quickly at first."""
    _tmp_path, _trace, base, _dest = world
    state = HostState(base["state_root"], base["application"], base["deployment_group"])
    sleeps = []
    now = [0.0]
    session = None

    def sleep(seconds):
        sleeps.append(round(seconds, 3))
        now[0] += seconds
        if len(sleeps) % 5 == 0:  # the controller's word after five polls
            with open(os.path.join(session.path, f"go-{len(sleeps) // 5 - 1}"), "w", encoding="ascii") as handle:
                handle.write("run\n")

    session = HostSession(state, "d-AAAAAAAA1", "b1-poll", 60, clock=lambda: now[0], sleep=sleep,
                          wall=lambda: 1_000_000 + now[0])
    session.open()
    assert session.wait_gate(0) == ("run", "")
    assert sleeps == [0.1] * 5
    assert session.wait_gate(1) == ("run", "")
    assert sleeps[5:] == [0.01] * 5


def _counting_path(tmp_path):
    """A PATH whose ``sleep`` logs each run to a file before it sleeps: how often a waiting command naps."""
    bin_dir = tmp_path / "counting-bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "sleeps.log"
    wrapper = bin_dir / "sleep"
    wrapper.write_text(f"#!/bin/sh\necho x >> {log}\nexec /bin/sleep \"$@\"\n")
    wrapper.chmod(0o755)
    return f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}", log


def _waiting_gate(path, index, env):
    return subprocess.Popen(["/bin/sh", "-c", hs.gate_command(path, index, None, True)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_a_command_waiting_for_a_result_blocks_on_the_ready_pipe_instead_of_polling(world):
    """Tens of hosts' commands polling every 20 ms (a sleep, a cat, a sed each time) spawned thousands of processes
    a second on the shared machine, which slowed every hook. Woken by the engine's line on the ready pipe, a wait
    naps only with its half-second ticker."""
    tmp_path, _trace, base, dest = world
    v1 = make_bundle(tmp_path / "v1.tgz", "v1", _trace)
    proc = start_module(tmp_path, session_args(base, dest, "d-AAAAAAAA1", v1, "b1-pipe"))
    path = path_of(base, "d-AAAAAAAA1", "b1-pipe")
    assert gate(path, 0)[0] == "result"
    assert all(stat.S_ISFIFO(os.stat(os.path.join(path, name)).st_mode) for name in ("ready", "wake"))
    search_path, log = _counting_path(tmp_path)
    waiting = _waiting_gate(path, 1, dict(os.environ, PATH=search_path))  # waits for group 1, says nothing
    time.sleep(2.0)
    assert waiting.poll() is None  # nothing to read yet: still waiting
    assert gate(path, 1, "run", wait=False)[0] == hs.SENT  # another command says the word; the engine runs group 1
    out, err = waiting.communicate(timeout=30)
    said, main = hs.read_gate_output({"stdout": out, "stderr": err, "rc": waiting.returncode})
    assert said == "result" and [e["name"] for e in main["events"]] == MAIN, (out, err)
    naps = len(log.read_text().splitlines()) if log.exists() else 0
    assert naps <= 12, f"{naps} naps in about 2 s of waiting: it polled"  # polling: a hundred in 2 s
    assert gate(path, 2, "run", wait=False)[0] == hs.SENT
    assert not module_result(proc).get("failed")


def test_without_the_pipes_the_commands_poll_as_before(world):
    tmp_path, trace, base, dest = world
    v1 = make_bundle(tmp_path / "v1.tgz", "v1", trace)
    proc = start_module(tmp_path, session_args(base, dest, "d-AAAAAAAA1", v1, "b1-old"))
    path = path_of(base, "d-AAAAAAAA1", "b1-old")
    assert gate(path, 0)[0] == "result"
    for name in ("ready", "wake"):  # an engine that makes none (an older one)
        os.unlink(os.path.join(path, name))
    said, main = gate(path, 1, "run")
    assert said == "result" and [e["name"] for e in main["events"]] == MAIN
    assert gate(path, 2, "run", wait=False)[0] == hs.SENT
    final = module_result(proc)
    assert not final.get("failed") and final["session"]["ended"] == "completed"


def test_the_controllers_word_wakes_an_engine_waiting_at_a_gate_before_its_nap_ends(world, monkeypatch):
    _tmp_path, _trace, base, _dest = world
    from ansible_collections.rollwright.deploy.plugins.module_utils.host import session as engine_session

    monkeypatch.setattr(engine_session, "_SLOW_POLL", 60.0)  # a nap the word must cut short
    state = HostState(base["state_root"], base["application"], base["deployment_group"])
    session = HostSession(state, "d-AAAAAAAA1", "b1-wake", 600)
    session.open()
    sayer = threading.Timer(0.5, lambda: gate(session.path, 0, "run", wait=False))
    sayer.start()
    started = time.monotonic()
    assert session.wait_gate(0) == ("run", "")
    assert time.monotonic() - started < 30  # woken by the line on the wake pipe, not at the end of the 60 s nap
    sayer.join()


class TouchRecorder:
    """A caller that starts nothing: it records when each host's session was touched (the keepalive's raw command)."""

    def __init__(self):
        self.touches: list[tuple[float, str]] = []
        self.lock = threading.Lock()

    def submit(self, module, args_by_host):
        from concurrent.futures import Future

        futures = {}
        for host, args in args_by_host.items():
            if module == hs.RAW:
                assert "touch" in args["_raw_params"]
                with self.lock:
                    self.touches.append((time.monotonic(), host))
            future = Future()
            future.set_result({"changed": False, "session": {"detached": True}})
            futures[host] = future
        return futures


def test_the_keepalive_touches_sessions_started_together_a_few_at_a_time_each_once_its_last_sign_is_old():
    hosts = [f"h{i:02d}" for i in range(20)]
    caller = TouchRecorder()
    sessions = hs.BatchSessions(caller, "rollwright.deploy.host_lifecycle",
                                {h: {"session": {"groups": [["x"]]}} for h in hosts},
                                {h: f"/var/lib/rollwright/s/{h}" for h in hosts})
    sessions.keepalive_every, sessions.keepalive_tick, sessions.keepalive_spread = 1.0, 0.02, 0.2
    per_look = 2  # 20 hosts over a 0.2 s spread at a look every 0.02 s
    started = time.monotonic()
    sessions.start()
    time.sleep(0.15)
    adopted = time.monotonic()
    sessions.adopt(["h00"])  # a later sign of life: its touch is due later than the others'

    def after_adoption():
        return [at for at, host in caller.touches if host == "h00" and at >= adopted]

    try:
        deadline = time.monotonic() + 20
        while ((len({h for _t, h in caller.touches}) < len(hosts) or not after_adoption())
               and time.monotonic() < deadline):
            time.sleep(0.02)
    finally:
        sessions.release()
    touched = {}
    for at, host in caller.touches:
        touched.setdefault(host, at)
    assert set(touched) == set(hosts)
    # none before its last sign of life is keepalive_every old (h00's last sign is its adoption, once adopted)
    assert all(at - started >= 1.0 for at in touched.values())
    assert min(after_adoption()) - adopted >= 1.0
    # never a burst: the touches of one look (a few milliseconds apart) are at most its share of the batch
    looks, last = [], None
    for at, host in sorted(caller.touches):
        if last is None or at - last > 0.01:
            looks.append([])
        looks[-1].append(host)
        last = at
    assert max(len(look) for look in looks) <= per_look
    assert len(looks) >= len(hosts) // per_look
