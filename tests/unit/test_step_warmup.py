"""Loading a step's action plugin (ansible-playbook does it before it forks the task's worker) imports what the step
will use and reads the argument specs its host calls validate against, so a batch's worker does neither again."""

import json
import subprocess
import sys
import textwrap

import pytest

from tests.run_suites import ROOT

SCRIPT = textwrap.dedent("""
    import gc, importlib, json, sys
    from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder
    _AnsibleCollectionFinder(paths=[sys.argv[1]])._install()  # as ansible-playbook does
    from ansible_collections.rollwright.deploy.plugins.plugin_utils import step_action
    prefix = "ansible_collections.rollwright.deploy.plugins.module_utils."
    before = sorted(name[len(prefix):] for name in sys.modules if name.startswith(prefix))
    frozen_before = gc.get_freeze_count()
    plugin = importlib.import_module("ansible_collections.rollwright.deploy.plugins.action." + sys.argv[2])
    cls = plugin.ActionModule
    engine = vars(importlib.import_module(prefix + "deployments.inplace"))  # a module namespace the load brought
    print(json.dumps({
        "warm_imports": list(cls.WARM_IMPORTS),
        "warm_specs": list(cls.WARM_SPECS),
        "before": before,
        "imported": sorted(name[len(prefix):] for name in sys.modules if name.startswith(prefix)),
        "specs": sorted(step_action._SPECS),
        "frozen": [frozen_before, gc.get_freeze_count()],
        # collectable, yet not among the objects the collector looks at: frozen
        "engine_frozen": gc.is_tracked(engine) and not any(o is engine for o in gc.get_objects()),
    }))
""")


def _load(action: str) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT / "build"), action], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("action", ["inplace_step"])
def test_loading_the_step_imports_its_module_utils_and_reads_its_host_specs(action: str) -> None:
    seen = _load(action)
    assert seen["warm_imports"] and seen["warm_specs"]
    # every name is a real module (a stale name after a move would be skipped silently by the warm-up)
    missing = [name for name in seen["warm_imports"] if name not in seen["imported"]]
    assert not missing, f"WARM_IMPORTS of {action} that do not import: {missing}"
    assert not set(seen["warm_imports"]) & set(seen["before"])  # imported by the plugin's load, not before it
    assert {action, *seen["warm_specs"]} <= set(seen["specs"])


def test_what_the_load_leaves_is_kept_out_of_the_collectors_sight() -> None:
    """ansible-playbook's collections and its forked steps' do not traverse boto3, the models and the step's
    module_utils again: they are frozen once loaded (gc.get_objects() does not list frozen objects)."""
    seen = _load("inplace_step")
    frozen_before, frozen_after = seen["frozen"]
    assert frozen_before > 10_000, seen["frozen"]  # Ansible, boto3 and the models, once step_action is imported
    assert frozen_after > frozen_before, seen["frozen"]  # and what the plugin's own load imported
    assert seen["engine_frozen"], seen


def test_documentation_is_read_with_libyaml_where_pyyaml_has_it() -> None:
    import yaml

    from ansible_collections.rollwright.deploy.plugins.plugin_utils import step_action

    spec = step_action.documented_spec("host_lifecycle")
    assert spec["deployment_id"]["required"] is True and spec["events"]["type"] == "list"
    if getattr(yaml, "CSafeLoader", None) is None:
        pytest.skip("this PyYAML has no libyaml")
    calls = []
    real = yaml.CSafeLoader

    class Counting(real):  # pylint: disable=too-few-public-methods
        def __init__(self, stream):
            calls.append(1)
            super().__init__(stream)

    yaml.CSafeLoader = Counting
    try:
        step_action._doc("modules", "host_lifecycle")
    finally:
        yaml.CSafeLoader = real
    assert calls
