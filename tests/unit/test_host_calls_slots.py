"""HostCaller: its calls prepare a few at a time (Ansible's set-up is Python under one lock) and leave their slot
once they reach the host, so calls waiting on their hosts hold none; results reach the caller as they come; a hold
keeps calls, set up, from their hosts until it lets them go."""

from __future__ import annotations

import contextlib
import threading
import time
import types

from ansible.executor.task_executor import TaskExecutor

from ansible_collections.rollwright.deploy.plugins.plugin_utils import host_calls


def test_the_executor_says_when_its_connection_first_reaches_the_host(monkeypatch) -> None:
    seen: list[str] = []

    class Connection:
        def exec_command(self, cmd, in_data=None, sudoable=True):
            seen.append(f"ran {cmd}")
            return 0, b"", b""

    monkeypatch.setattr(TaskExecutor, "_get_connection", lambda self, *args, **kwargs: Connection())
    executor_class = host_calls._executor_class()
    assert issubclass(executor_class, TaskExecutor)
    executor = executor_class.__new__(executor_class)
    executor.on_reach = lambda: seen.append("reached")
    connection = executor._get_connection({}, None, "ssh")
    connection.exec_command("echo one")
    assert seen == ["reached", "ran echo one"]


def _caller(monkeypatch, slots: int, run, reaches: bool = True) -> host_calls.HostCaller:
    caller = host_calls.HostCaller.__new__(host_calls.HostCaller)
    caller.task, caller.forks, caller.play, caller._vars = types.SimpleNamespace(collections=[]), 50, None, {}
    caller.current = types.SimpleNamespace(_variable_manager=types.SimpleNamespace(
        _inventory=types.SimpleNamespace(get_host=lambda name: name), get_vars=lambda **_kw: {}))
    caller._setup = threading.BoundedSemaphore(slots)
    caller._preload_for = lambda module, names: None
    caller._host_task = lambda module, args: types.SimpleNamespace(args=args)
    caller._executor = lambda host, sub, job_vars, on_reach=None: types.SimpleNamespace(
        REACHES=reaches, run=lambda: run(host, on_reach))
    monkeypatch.setattr(host_calls, "_task_context", lambda task: contextlib.nullcontext())
    return caller


def test_calls_prepare_a_few_at_a_time_and_wait_on_their_hosts_without_a_slot(monkeypatch) -> None:
    lock = threading.Lock()
    preparing, most = [0], [0]

    def run(host, on_reach):
        with lock:
            preparing[0] += 1
            most[0] = max(most[0], preparing[0])
        time.sleep(0.05)  # Ansible's set-up
        with lock:
            preparing[0] -= 1
        if host == "h3":
            raise RuntimeError("no connection")  # fails before reaching its host: its slot is freed all the same
        on_reach()
        time.sleep(1.0)  # the host runs its group
        return {"host": host}

    caller = _caller(monkeypatch, 2, run)
    arrivals: list[list[str]] = []
    began = time.monotonic()
    results = caller.call("ansible.builtin.raw", {f"h{i}": {} for i in range(10)},
                          on_results=lambda arrived: arrivals.append(sorted(arrived)))
    spent = time.monotonic() - began
    assert most[0] == 2
    # ten set-ups two at a time (0.25 s), the waits overlapping: not five rounds of set-up and wait (5.25 s)
    assert spent < 2.5, spent
    assert results["h3"]["failed"] and "no connection" in results["h3"]["msg"]
    assert {h: r for h, r in results.items() if h != "h3"} == {f"h{i}": {"host": f"h{i}"} for i in range(10) if i != 3}
    assert arrivals[0] == ["h3"]  # the failure came first, alone, before any host was done
    assert sorted(h for batch in arrivals for h in batch) == sorted(results)


def test_held_calls_are_set_up_then_wait_without_a_slot_and_a_refused_one_sends_nothing(monkeypatch) -> None:
    sent: dict[str, float] = {}
    held: dict[str, float] = {}
    release = threading.Event()

    def run(host, on_reach):
        time.sleep(0.05)  # Ansible's set-up, two at a time
        on_reach()  # the connection's first command is about to go: the hold decides
        sent[host] = time.monotonic()
        return {"host": host}

    def hold(host):
        held[host] = time.monotonic()
        release.wait()
        return host != "h2"

    caller = _caller(monkeypatch, 2, run)
    threading.Timer(0.6, release.set).start()
    began = time.monotonic()
    results = caller.call("ansible.builtin.raw", {f"h{i}": {} for i in range(6)}, hold=hold)
    # all six set up while held (three rounds of two: the held ones gave their slot back), none sent before the
    # release; the refused one sent nothing and failed, naming itself
    assert len(held) == 6 and max(held.values()) - began < 0.5
    assert sorted(sent) == ["h0", "h1", "h3", "h4", "h5"] and min(sent.values()) - began >= 0.6
    assert results["h2"]["failed"] and "h2 was not called" in results["h2"]["msg"]
    assert {h: r for h, r in results.items() if h != "h2"} == {h: {"host": h} for h in sent}


def test_an_executor_that_cannot_say_when_it_reaches_its_host_is_held_before_it_starts(monkeypatch) -> None:
    started: list[str] = []

    def run(host, on_reach):
        started.append(host)
        return {"host": host}

    caller = _caller(monkeypatch, 2, run, reaches=False)
    results = caller.call("ansible.builtin.raw", {"h0": {}, "h1": {}}, hold=lambda host: host == "h0")
    assert started == ["h0"] and results["h0"] == {"host": "h0"}
    assert results["h1"]["failed"] and "held back" in results["h1"]["msg"]
