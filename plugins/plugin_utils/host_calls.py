# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run one module on several hosts from inside one controller task, in threads.

A batch of an in-place deployment is one Ansible task (delegated to localhost): it calls the batch's hosts
itself, between BlockTraffic and AllowTraffic, instead of being split into a task per host call. Each host
is called exactly as a task of its own would call it: Ansible's TaskExecutor for that host, with that host's
variables (connection, become, pipelining, ControlPersist), the task's module_defaults and environment, and
the module's own action plugin. What a task per host call costs (queueing, a forked worker per host,
templating the whole task for every host of the play, the results' round trip to the strategy) is not paid.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import os
import sys
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Callable, Iterator, Optional

from ansible.errors import AnsibleActionFail


# What a host call changes in a copy of the running task: it runs on the host itself, once, unconditionally, and
# its result (unreachable and failed included) comes back to the caller instead of failing a play host.
HOST_TASK = {"delegate_to": None, "delegate_facts": False, "run_once": False, "register": None, "loop": None,
             "when": [], "ignore_errors": True, "ignore_unreachable": True}


# Ansible's plugin loader is not thread-safe on a plugin's first load: a second thread can find the plugin's Python
# module registered but not yet executed ("module 'ansible.plugins.action.normal' has no attribute 'ActionModule'").
# So what the calls' threads will load is loaded first, once per process, in the calling thread.
_PRELOAD_LOCK = threading.Lock()
_PRELOADED: set[tuple[str, str]] = set()


def _preload(kind: str, name: str) -> None:
    from ansible.plugins import loader

    with _PRELOAD_LOCK:
        if (kind, name) in _PRELOADED:
            return
        plugin_loader = {"action": loader.action_loader, "connection": loader.connection_loader,
                         "shell": loader.shell_loader, "become": loader.become_loader}[kind]
        try:
            plugin_loader.get(name, class_only=True)
        except Exception:  # pylint: disable=broad-except  # a plugin that cannot load fails the host call itself
            pass
        _PRELOADED.add((kind, name))


def _worker():
    """The Ansible worker process this action runs in (it holds the inventory, variables and loaders)."""
    from ansible.executor.process import worker

    current = getattr(worker, "current_worker", None)
    if current is None:
        raise AnsibleActionFail("this step calls hosts itself: it runs only as a task of ansible-playbook")
    return current


# How many host calls of one caller prepare at once (Ansible's templating, connection and module set-up, all Python
# under one lock): the others wait their turn without taking the interpreter from them, nor from the controller's
# own work between the calls. Measured at 100 hosts half at a time (50 calls at once, on hosts sharing the
# controller's two cores): the first host done went back into its load balancer 1.8 s after its result instead of
# 4.8 s. A call leaves its slot once it reaches its host, so a call waiting on its host holds none.
SETUP_SLOTS_PER_CORE = 2


# While a step calls hosts from threads, the interpreter switches between its threads this often (Python's default
# is 5 ms). The step's own thread makes the record's and the load balancer's calls between the calls' set-ups, and
# after each of its waits on I/O it waited up to the whole interval for the interpreter. Measured at 100 hosts half
# at a time: a host went back into its load balancer 0.60 s after its ValidateService on average, against 1.53 s.
SWITCH_INTERVAL = 0.0005


@contextlib.contextmanager
def responsive_threads() -> Iterator[None]:
    """Switch between this process's threads often while host calls prepare in threads of it (see SWITCH_INTERVAL)."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, SWITCH_INTERVAL))
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def _setup_slots() -> int:
    return SETUP_SLOTS_PER_CORE * max(1, os.cpu_count() or 1)


_EXECUTOR_CLASS: Any = None


class HeldBack(Exception):
    """A host call its caller's ``hold`` refused, right before its first command: nothing went to the host."""

    REASON = "held back before its first command (nothing was sent to the host)"


def _executor_class() -> Any:
    """Ansible's TaskExecutor, telling its caller when the host is reached (the connection's first command): the end
    of the call's set-up. Without the method that makes the connection (another ansible-core), the plain one."""
    global _EXECUTOR_CLASS  # pylint: disable=global-statement  # one class per process, made on first use
    if _EXECUTOR_CLASS is None:
        from ansible.executor.task_executor import TaskExecutor

        if not callable(getattr(TaskExecutor, "_get_connection", None)):
            _EXECUTOR_CLASS = TaskExecutor
        else:
            class _ReachingExecutor(TaskExecutor):  # pylint: disable=too-few-public-methods
                REACHES = True  # on_reach is called right before the connection's first command
                on_reach: Optional[Callable[[], None]] = None

                def _get_connection(self, *args: Any, **kwargs: Any) -> Any:
                    connection = super()._get_connection(*args, **kwargs)
                    if self.on_reach is not None and callable(getattr(connection, "exec_command", None)):
                        run = connection.exec_command
                        reached = self.on_reach

                        def exec_command(*cargs: Any, **ckwargs: Any) -> Any:
                            reached()
                            return run(*cargs, **ckwargs)

                        connection.exec_command = exec_command
                    return connection

            _EXECUTOR_CLASS = _ReachingExecutor
    return _EXECUTOR_CLASS


def _task_context(task: Any) -> Any:
    """The ambient task context a worker runs its task in (ansible-core 2.19+; nothing before)."""
    try:
        from ansible._internal._task import TaskContext
    except ImportError:
        return contextlib.nullcontext()
    return TaskContext(task)


class HostCaller:
    """Calls hosts on behalf of ``task`` (the running action's task), at most ``forks`` at once.

    Each host's variables are worked out once and kept for the caller's later calls (a batch calls its
    hosts two or three times); each call still builds the host's connection as Ansible does (with
    ControlPersist, on the SSH master the host already has).
    """

    def __init__(self, task: Any, forks: int = 50) -> None:
        self.task = task
        self.forks = max(1, int(forks or 1))
        self.current = _worker()
        self.play = task.get_play()
        self._vars: dict[str, dict] = {}
        self._setup = threading.BoundedSemaphore(_setup_slots())

    def _host_task(self, module: str, args: dict) -> Any:
        sub = self.task.copy()  # keeps the block and role: module_defaults, environment, become
        sub._resolved_action = None  # resolved again for the new action
        for attribute, value in HOST_TASK.items():
            setattr(sub, attribute, value)
        sub.action, sub.args = module, dict(args)
        return sub

    def _executor(self, host: Any, sub: Any, job_vars: dict, on_reach: Optional[Callable[[], None]] = None) -> Any:
        from ansible.executor.task_executor import TaskExecutor

        current = self.current
        options = {"host": host, "task": sub, "job_vars": job_vars, "play_context": current._play_context,
                   "loader": current._loader, "shared_loader_obj": current._shared_loader_obj,
                   "final_q": current._final_q, "variable_manager": current._variable_manager}
        if "new_stdin" in inspect.signature(TaskExecutor.__init__).parameters:  # ansible-core < 2.19
            options["new_stdin"] = getattr(current, "_new_stdin", None)
        executor = _executor_class()(**options)
        executor.on_reach = on_reach
        return executor

    def connection(self, name: str) -> Optional[str]:
        """The connection plugin a call to ``name`` uses (its ``ansible_connection``, the play's, Ansible's default),
        or None when it is not known before the call (a template)."""
        from ansible import constants as C

        variables = self.current._variable_manager
        host = variables._inventory.get_host(name)
        if host is None:
            return None
        if name not in self._vars:
            self._vars[name] = variables.get_vars(play=self.play, host=host, task=self._host_task("ansible.builtin.raw", {}))
        value = self._vars[name].get("ansible_connection") or self.play.connection or C.DEFAULT_TRANSPORT
        return None if not isinstance(value, str) or "{{" in value or "{%" in value else value

    def _preload_for(self, module: str, names: list[str]) -> None:
        """Load, in this thread, the plugins the calls of ``module`` to ``names`` will load in theirs: the module's
        action plugin (or the one every plain module runs through), and each host's connection, shell and become."""
        from ansible import constants as C
        from ansible.plugins import loader

        found = loader.module_loader.find_plugin_with_context(module, collection_list=self.task.collections)
        if found.resolved and found.action_plugin:
            _preload("action", found.action_plugin)
        elif loader.action_loader.has_plugin(module, collection_list=self.task.collections):
            _preload("action", module)
        else:
            _preload("action", "ansible.legacy.normal")
        for name in names:
            connection = self.connection(name)
            if connection:
                _preload("connection", connection)
            host_vars = self._vars.get(name) or {}
            for kind, key, default in (("shell", "ansible_shell_type", "sh"),
                                       ("become", "ansible_become_method", C.DEFAULT_BECOME_METHOD)):
                value = host_vars.get(key) or default
                if isinstance(value, str) and "{{" not in value:
                    _preload(kind, value)

    def _call(self, name: str, module: str, args: dict,
              hold: Optional[Callable[[str], bool]] = None) -> Optional[dict]:
        variables = self.current._variable_manager
        host = variables._inventory.get_host(name)
        if host is None:
            return {"failed": True, "msg": f"host {name} is not in the inventory"}
        slot = threading.Lock()  # held while this call has a set-up slot

        def leave_slot() -> bool:
            """Give the set-up slot back: once only (True then), on reaching the host or at the end of a call that
            did not."""
            if not slot.acquire(blocking=False):
                return False
            self._setup.release()
            return True

        def reaching() -> None:
            if leave_slot() and hold is not None and not hold(name):
                raise HeldBack(f"{name} was not called: {HeldBack.REASON}")

        self._setup.acquire()
        try:
            sub = self._host_task(module, args)
            if name not in self._vars:
                self._vars[name] = variables.get_vars(play=self.play, host=host, task=sub)
            executor = self._executor(host, sub, dict(self._vars[name]), on_reach=reaching)
            if not getattr(executor, "REACHES", False):
                reaching()  # an executor that cannot say when it reaches its host: held (or not) before it starts
            with _task_context(sub):
                return executor.run()
        except Exception as exc:  # pylint: disable=broad-except  # one host's problem is that host's failure
            return {"failed": True, "msg": f"calling {name}: {exc}"}
        finally:
            leave_slot()

    def submit(self, module: str, args_by_host: dict[str, dict]) -> dict[str, Future]:
        """Start ``module`` on every host of ``args_by_host`` at once, each in a thread of its own, and return at
        once: each host's future result (a host session waits most of its time, so forks do not bound it)."""
        self._preload_for(module, list(args_by_host))
        pool = ThreadPoolExecutor(max_workers=max(1, len(args_by_host)))
        try:
            return {name: pool.submit(contextvars.Context().run, self._call, name, module, args)
                    for name, args in args_by_host.items()}
        finally:
            pool.shutdown(wait=False)  # the threads end with their calls

    def call(self, module: str, args_by_host: dict[str, dict],
             on_results: Optional[Callable[[dict[str, Optional[dict]]], None]] = None,
             hold: Optional[Callable[[str], bool]] = None) -> dict[str, Optional[dict]]:
        """Run ``module`` on each host of ``args_by_host`` with its args, in parallel; return each host's result.

        A result is what a registered task result holds (``unreachable``, ``failed``, the module's keys); an
        exception while calling one host is that host's failed result, never the batch's. ``on_results``, when
        given, is called in this thread with the results that came in since its last call, as they come (the
        hosts that finished together in one call), before the slower hosts are done.

        ``hold``, when given, is called from each call's own thread once the call is set up, right before its first
        command would go to the host (Ansible's templating, connection and module set-up done, its set-up slot given
        back): it may block until the host may be called, and returns whether it may. A call it refuses sends
        nothing to the host: its result is a failure naming the host (HeldBack).
        """
        if not args_by_host:
            return {}
        names = list(args_by_host)
        self._preload_for(module, names)
        with ThreadPoolExecutor(max_workers=min(self.forks, len(names))) as pool:
            # Each call runs in a context of its own, as a worker's task does: Ansible keeps the running task and
            # the templating's access audit there (a copy of this one would share its mutable audit stack).
            futures = {name: pool.submit(contextvars.Context().run, self._call, name, module, args_by_host[name],
                                         hold) for name in names}
            return as_they_come(futures, on_results)


def as_they_come(futures: dict[str, Future], on_results: Optional[Callable[[dict], None]] = None) -> dict:
    """Each name's result, once every future is done; ``on_results`` (if any) sees them as they come, those done
    together in one call (while it runs, the next ones gather)."""
    out: dict = {}
    pending = dict(futures)
    while pending:
        done, _running = wait(list(pending.values()), return_when=FIRST_COMPLETED)
        arrived = {name: future.result() for name, future in pending.items() if future in done}
        for name in arrived:
            del pending[name]
        out.update(arrived)
        if on_results is not None:
            on_results(arrived)
    return {name: out[name] for name in futures}
