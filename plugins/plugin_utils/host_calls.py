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

import contextvars
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

from ansible.errors import AnsibleActionFail


def _worker():
    """The Ansible worker process this action runs in (it holds the inventory, variables and loaders)."""
    from ansible.executor.process import worker

    current = getattr(worker, "current_worker", None)
    if current is None:
        raise AnsibleActionFail("this step calls hosts itself: it runs only as a task of ansible-playbook")
    return current


def call_hosts(task: Any, module: str, args_by_host: dict[str, dict], forks: int = 50) -> dict[str, Optional[dict]]:
    """Run ``module`` on each host of ``args_by_host`` with its args, in parallel; return each host's result.

    A result is what a registered task result holds (``unreachable``, ``failed``, the module's keys); an
    exception while calling one host is that host's failed result, never the batch's.
    """
    if not args_by_host:
        return {}
    from ansible._internal import _task
    from ansible.executor.task_executor import TaskExecutor

    current = _worker()
    variables = current._variable_manager
    play = task.get_play()

    def call(name: str, args: dict) -> Optional[dict]:
        host = variables._inventory.get_host(name)
        if host is None:
            return {"failed": True, "msg": f"host {name} is not in the inventory"}
        sub = task.copy()  # keeps the block and role: module_defaults, environment, become
        sub.action = module
        sub._resolved_action = None  # resolved again for the new action
        sub.args = dict(args)
        sub.delegate_to = None
        sub.delegate_facts = False
        sub.run_once = False
        sub.register = None
        sub.loop = None
        sub.when = []
        sub.ignore_errors = True
        sub.ignore_unreachable = True
        try:
            job_vars = variables.get_vars(play=play, host=host, task=sub)
            with _task.TaskContext(sub):
                return TaskExecutor(host, sub, job_vars, current._play_context, current._loader,
                                    current._shared_loader_obj, current._final_q, variables).run()
        except Exception as exc:  # pylint: disable=broad-except  # one host's problem is that host's failure
            return {"failed": True, "msg": f"calling {name}: {exc}"}

    names = list(args_by_host)
    with ThreadPoolExecutor(max_workers=max(1, min(int(forks or 1), len(names)))) as pool:
        # each thread runs in a copy of this context (Ansible keeps the running task and templar there)
        futures = {name: pool.submit(contextvars.copy_context().run, call, name, args_by_host[name]) for name in names}
        return {name: future.result() for name, future in futures.items()}
