"""HostCaller loads the plugins its threads will use before starting them (Ansible's loader is not thread-safe)."""

import json
import subprocess
import sys
import textwrap

from tests.run_suites import ROOT

SCRIPT = textwrap.dedent("""
    import json, sys, types
    from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder
    _AnsibleCollectionFinder(paths=[sys.argv[1]])._install()  # as ansible-playbook does
    from ansible_collections.rollwright.deploy.plugins.plugin_utils import host_calls

    def loaded(name):  # "ansible.plugins.action.raw": executed, under the name ansible-core's or a collection's loader gives it
        tail = name.split(".", 1)[1]
        cls = {"action": "ActionModule", "connection": "Connection", "shell": "ShellModule", "become": "BecomeModule"}
        return any(key.endswith(tail) and cls[tail.split(".")[1]] in vars(module) for key, module in list(sys.modules.items()))

    names = ["ansible.plugins.action.normal", "ansible.plugins.action.raw", "ansible.plugins.connection.ssh",
             "ansible.plugins.connection.local", "ansible.plugins.shell.sh", "ansible.plugins.become.sudo",
             "ansible.plugins.become.su"]
    before = {n: loaded(n) for n in names}
    caller = host_calls.HostCaller.__new__(host_calls.HostCaller)
    caller.task = types.SimpleNamespace(collections=[])
    caller._vars = {"a": {"ansible_connection": "ssh"}, "b": {"ansible_connection": "local", "ansible_become_method": "su"}}
    caller.connection = lambda name: caller._vars[name]["ansible_connection"]
    caller._preload_for("ansible.builtin.stat", ["a", "b"])
    after_plain = {n: loaded(n) for n in names}
    caller._preload_for("ansible.builtin.raw", ["a"])
    print(json.dumps({"before": before, "after_plain": after_plain, "after_raw": {n: loaded(n) for n in names}}))
""")


def test_the_plugins_a_call_loads_are_loaded_before_its_threads_start() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT / "build")], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    seen = json.loads(out.strip().splitlines()[-1])
    assert not any(seen["before"].values()), seen["before"]  # a fresh process: nothing loaded yet
    plain = seen["after_plain"]
    # A plain module runs through the normal action; each host's connection, the shell and each become method.
    assert plain == {"ansible.plugins.action.normal": True, "ansible.plugins.action.raw": False,
                     "ansible.plugins.connection.ssh": True, "ansible.plugins.connection.local": True,
                     "ansible.plugins.shell.sh": True, "ansible.plugins.become.sudo": True,
                     "ansible.plugins.become.su": True}, plain
    assert seen["after_raw"]["ansible.plugins.action.raw"] is True  # a module with an action plugin of its own
