# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The roles' options: the shared ones documented and defaulted once (roles/_common), the same name for the same
idea in every role, the deprecated names still read, and the wiring the role tasks pass to the step plugins."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleActionFail

from ansible_collections.rollwright.deploy.plugins.action import check_variables
from ansible_collections.rollwright.deploy.plugins.plugin_utils import role_options
from ansible_collections.rollwright.deploy.plugins.plugin_utils.step_action import RollwrightAction

ROOT = Path(__file__).resolve().parents[2]
ROLES = ("inplace", "bluegreen_ec2", "lambda_shift")
# Options more than one role declares because each role gives them its own meaning (required or not, another
# default, other values): documented in each role, never in roles/_common.
OWN_MEANING = {"rollwright_application", "rollwright_deployment_group", "rollwright_deployment_config",
               "rollwright_load_balancer", "rollwright_lock_ttl"}
STEP_MODULES = ("rollwright.deploy.inplace_step", "rollwright.deploy.bluegreen_step", "rollwright.deploy.deployment_report")
# The steps that judge the hosts' registered results, and so name the variable the role registered them under.
JUDGING_STEPS = {"rollwright.deploy.inplace_step": {"start", "rollback", "plan", "block", "allow", "staged"},
                 "rollwright.deploy.bluegreen_step": {"ready", "reroute", "finish"}}


def _yaml(path: Path):
    return yaml.safe_load(path.read_text()) or {}


def _role_options(role: str) -> dict[str, dict]:
    specs = _yaml(ROOT / "roles" / role / "meta" / "argument_specs.yml")["argument_specs"]
    return {name: option for entry in specs.values() for name, option in (entry.get("options") or {}).items()}


def _tasks(role: str):
    """Every task (blocks flattened) of a role's task files: (file name, task dict)."""
    def walk(items, name):
        for item in items or []:
            yield name, item
            for key in ("block", "rescue", "always"):
                yield from walk(item.get(key), name)
    for path in sorted((ROOT / "roles" / role / "tasks").glob("*.yml")):
        yield from walk(_yaml(path) if isinstance(_yaml(path), list) else [], path.name)


def test_a_shared_option_is_documented_once_and_an_own_option_by_its_role():
    shared = role_options.shared_options()
    for role in ROLES:
        assert not set(_role_options(role)) & set(shared), f"{role} documents shared options again"
    for one, other in itertools.combinations(ROLES, 2):
        twice = set(_role_options(one)) & set(_role_options(other))
        assert twice <= OWN_MEANING, f"{one} and {other} both document {sorted(twice - OWN_MEANING)}: move to roles/_common"
    assert not OWN_MEANING & set(shared)


def test_the_shared_defaults_are_those_the_shared_spec_documents():
    defaults = role_options.shared_defaults()
    shared = role_options.shared_options()
    assert set(defaults) == set(shared)
    for name, option in shared.items():
        assert defaults[name] == option["default"], name
        assert "Not for direct use" not in option["description"]  # the groups say it, not each option
    specs = _yaml(ROOT / "roles" / "_common" / "meta" / "argument_specs.yml")["argument_specs"]
    assert "main" not in specs  # a dependency with a main entry point would add a validation task to every play
    assert all(s["short_description"].startswith("Internal - ") for s in specs.values())
    assert not (ROOT / "roles" / "_common" / "tasks").exists()


@pytest.mark.parametrize("role", ROLES)
def test_every_role_gets_the_shared_options_from_common(role):
    meta = _yaml(ROOT / "roles" / role / "meta" / "main.yml")
    assert meta["dependencies"] == [{"role": "rollwright.deploy._common"}]
    defaults = _yaml(ROOT / "roles" / role / "defaults" / "main.yml")
    own = _role_options(role)
    aliased = {new: old for old, (new, owner) in role_options.DEPRECATED_ALIASES.items() if owner == role}
    for name, value in defaults.items():
        if name in aliased:
            continue  # checked with the aliases
        assert name in own, f"{role} defaults {name}, which is not its own option (shared ones live in roles/_common)"
        assert value == own[name].get("default"), name


def test_deprecated_names_are_read_through_the_new_names_default_and_documented():
    shared = role_options.shared_options()
    for old, (new, role) in role_options.DEPRECATED_ALIASES.items():
        own = _role_options(role)
        assert old in own and own[old]["description"].startswith(f"Deprecated - use C({new})"), old
        assert "default" not in own[old]  # unset unless the user sets it: that is how the role knows
        base = (own.get(new) or shared[new])["default"]
        default = _yaml(ROOT / "roles" / role / "defaults" / "main.yml")[new]
        match = re.fullmatch(r"\{\{ (\w+) \| default\((.*)\) \}\}", default)
        assert match and match.group(1) == old, default
        assert yaml.safe_load(match.group(2)) in (base, False if base == "" else base), (new, default)
        readme = (ROOT / "roles" / role / "README.md").read_text()
        assert f"`{old}`" in readme and f"`{new}`" in readme
        assert old in (ROOT / "changelogs" / "fragments" / "13-role-options.yml").read_text()


def test_no_role_task_playbook_or_survey_reads_a_deprecated_name():
    olds = set(role_options.DEPRECATED_ALIASES)
    paths = [*ROOT.glob("roles/*/tasks/*.yml"), *ROOT.glob("roles/*/templates/*"), *ROOT.glob("playbooks/*.yml"),
             *ROOT.glob("extensions/awx/**/*.json"), *ROOT.glob("extensions/molecule/**/*.yml")]
    for path in paths:
        used = {old for old in olds if old in path.read_text()}
        assert not used, f"{path.relative_to(ROOT)} reads {sorted(used)}: use the new names"


def test_check_variables_warns_about_a_deprecated_name_and_refuses_both_names_set():
    deprecations, conflicts = check_variables.deprecated_in_use(
        {"rollwright_lambda_alarms": "a,b", "rollwright_auto_rollback_alarms": "a,b", "rollwright_lock_ttl": 0})
    assert conflicts == []
    (warning,) = deprecations
    assert warning["msg"].startswith("rollwright_lambda_alarms is deprecated: use rollwright_auto_rollback_alarms")
    assert warning["version"] == role_options.ALIASES_REMOVED_IN and warning["collection_name"] == "rollwright.deploy"
    deprecations, conflicts = check_variables.deprecated_in_use(
        {"rollwright_lambda_lock_ttl": 30, "rollwright_lock_ttl": 60})
    assert deprecations == [] and conflicts == [
        "rollwright_lambda_lock_ttl (deprecated) and rollwright_lock_ttl are both set, to different values: "
        "remove rollwright_lambda_lock_ttl"]
    known = check_variables.declared_options() + list(role_options.DEPRECATED_ALIASES)
    assert check_variables.unknown_variables(list(role_options.DEPRECATED_ALIASES), known) == {}
    assert check_variables.unknown_variables(["rollwright_lambda_alarm"], known) == {
        "rollwright_lambda_alarm": "rollwright_lambda_alarms"}


def test_check_variables_validates_the_shared_options_against_their_one_spec():
    assert check_variables.shared_option_errors({"rollwright_healthy_timeout": 30, "rollwright_record_backend": "dynamodb",
                                                 "rollwright_lambda_alias": "live"}) == []
    errors = check_variables.shared_option_errors({"rollwright_healthy_timeout": "soon", "rollwright_hook_output": "all"})
    assert len(errors) == 2 and "rollwright_healthy_timeout" in errors[0] and "rollwright_hook_output" in errors[1]


def test_an_unsupported_option_counts_only_when_set_to_something_else_than_its_shared_default():
    unsupported = {"rollwright_auto_rollback_alarms": "no alarms here", "rollwright_lock_ttl": "no lease here"}
    assert check_variables.unsupported_set(unsupported, {"rollwright_auto_rollback_alarms": ""}) == {}
    assert check_variables.unsupported_set(unsupported, {"rollwright_auto_rollback_alarms": "cpu"}) == {
        "rollwright_auto_rollback_alarms": "no alarms here"}
    assert check_variables.unsupported_set(unsupported, {"rollwright_lock_ttl": 60}) == {"rollwright_lock_ttl": "no lease here"}


def test_inputs_are_the_options_given_as_one_dict_and_an_option_given_on_its_own_wins():
    merged = RollwrightAction.merged_inputs({"step": "start", "inputs": {"application": "shop", "lock_ttl": 30},
                                             "lock_ttl": 90})
    assert merged == {"step": "start", "application": "shop", "lock_ttl": 90}
    assert RollwrightAction.merged_inputs({"step": "plan"}) == {"step": "plan"}
    with pytest.raises(AnsibleActionFail, match="inputs: expected a dict"):
        RollwrightAction.merged_inputs({"inputs": "application=shop"})


def test_the_aws_dict_the_roles_pass_wins_over_top_level_options():
    action = RollwrightAction.__new__(RollwrightAction)
    options = action.aws_options({"aws": {"region": "eu-west-1", "profile": ""}, "region": "us-east-1",
                                  "profile": "ops", "endpoint_url": None})
    assert options == {"region": "eu-west-1", "profile": "ops"}


@pytest.mark.parametrize("role", ROLES)
def test_role_tasks_pass_the_record_and_aws_wiring_as_one_argument_each(role):
    for name, task in _tasks(role):
        for module in STEP_MODULES:
            args = task.get(module)
            if args is None:
                continue
            written_out = {"region", "endpoint_url", "profile", "backend", "sqlite_path", "dynamodb_table"} & set(args)
            assert not written_out, f"{role}/{name} {task.get('name')}: {sorted(written_out)} (pass aws/record)"
            if "aws" in args:
                assert args["aws"] == "{{ _rollwright_aws }}", (name, task.get("name"))
            if "record" in args:
                assert args["record"] == "{{ _rollwright_record }}", (name, task.get("name"))


@pytest.mark.parametrize("role", ["inplace", "bluegreen_ec2"])
def test_steps_judge_results_registered_under_the_names_the_role_gives(role):
    tasks = list(_tasks(role))
    registered = {task["register"] for dummy, task in tasks if "register" in task}
    role_vars = _yaml(ROOT / "roles" / role / "vars" / "main.yml")
    for name, task in tasks:
        for module, steps in JUDGING_STEPS.items():
            args = task.get(module) or {}
            if args.get("step") not in steps:
                continue
            if "host_args" in args or args.get("within") == []:
                continue  # calls the hosts itself, or only finishes after the batch step judged its hosts
            assert "host_results" in args, f"{role}/{name} {task.get('name')}: name the registered results"
            names = {args["host_results"], args.get("connect_results")} - {None}
            for value in list(names):
                if value.startswith("{{"):  # a role variable choosing between registered names
                    names.discard(value)
                    names |= set(re.findall(r"'(_\w+)'", role_vars[value.strip("{} ")]))
            assert names and names <= registered, (name, task.get("name"), names - registered)
