# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 11's pure parts: revision URLs, unknown-variable suggestions, the error model, the spec from docs."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

from ansible_collections.rollwright.deploy.plugins.action.check_variables import declared_options, unknown_variables
from ansible_collections.rollwright.deploy.plugins.module_utils import errors
from ansible_collections.rollwright.deploy.plugins.module_utils.aws import client as aws_session
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments.inputs import InputError, normalise_revision
from ansible_collections.rollwright.deploy.plugins.plugin_utils.step_action import documented_spec

ROOT = Path(__file__).resolve().parents[2]
# Version ids as S3 returns them: base64-like, with '+', '/', '.' and '_' (from AWS's documentation and the README).
VERSION_IDS = ["3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY", "3/L4kqtJlcp.XroDTDmJ+rmSpXd3dIbrHY+MTRCxf3vjVBH40Nr8X8gdRQBpUMLUo",
               "null", "Wl0Pk_xYdG8e.5uoGzM7vA"]


@pytest.mark.parametrize("version", VERSION_IDS)
@pytest.mark.parametrize("key", ["shop/shop-1.4.2.zip", "shop/my app+v2 (100%).zip", "a/ü/ß.tgz"])
def test_s3_url_round_trip(version, key):
    url = f"s3://releases/{quote(key)}?versionId={quote(version, safe='')}&etag=b1946ac9&bundleType=zip"
    assert normalise_revision(url)["s3"] == {"bucket": "releases", "key": key, "version": version, "etag": "b1946ac9"}
    # an unencoded '+' is a plus, not a space (the README's own example)
    raw = f"s3://releases/{quote(key, safe='/+')}?versionId={version}"
    assert normalise_revision(raw)["s3"]["version"] == version


def test_s3_url_refuses_a_fragment_and_unknown_parameters():
    with pytest.raises(InputError, match=r"rollwright_revision: a '#' in an s3:// URL would cut it short.*%23"):
        normalise_revision("s3://releases/app#1.zip?versionId=abc")
    with pytest.raises(InputError, match=r"unknown query parameter 'version'"):
        normalise_revision("s3://releases/app.zip?version=abc")
    with pytest.raises(InputError, match=r"given twice"):
        normalise_revision("s3://releases/app.zip?etag=a&etag=b")
    with pytest.raises(InputError, match=r"expected s3://BUCKET/KEY"):
        normalise_revision("s3://releases/")
    assert normalise_revision("s3://releases/a%23b.zip")["s3"]["key"] == "a#b.zip"


def test_unknown_variables_get_the_closest_declared_name():
    known = declared_options()
    assert "rollwright_target_group_arns" in known and "bluegreen_ec2_reroute_mode" in known
    found = unknown_variables(["rollwright_target_group_arn", "rollwright_deployment_cofnig", "bluegreen_ec2_rerout_mode",
                               "rollwright_zzz", "rollwright_application", "ansible_host", "_rollwright"], known)
    assert found == {"rollwright_target_group_arn": "rollwright_target_group_arns",
                     "rollwright_deployment_cofnig": "rollwright_deployment_config",
                     "bluegreen_ec2_rerout_mode": "bluegreen_ec2_reroute_mode", "rollwright_zzz": None}


def test_required_role_options_have_no_empty_default():
    for role in (ROOT / "roles").iterdir():
        specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
        defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
        for entry in specs.values():
            for name, option in (entry.get("options") or {}).items():
                if option.get("required"):
                    assert name not in defaults, f"{role.name}: {name} is required but defaults to {defaults[name]!r}"


def test_one_version_constant():
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text())
    assert aws_session.COLLECTION_VERSION == galaxy["version"]
    assert aws_session.COLLECTION_USER_AGENT == f"rollwright.deploy/{galaxy['version']}"


def test_every_collection_error_has_one_base():
    from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import alarms
    from ansible_collections.rollwright.deploy.plugins.module_utils.revisions import appspec
    from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import bluegreen
    from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import inputs as deploy_inputs
    from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import config as deployment_config
    from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import fleet_provision
    from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import inplace
    from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import lambda_deploy
    from ansible_collections.rollwright.deploy.plugins.module_utils.revisions import lifecycle
    from ansible_collections.rollwright.deploy.plugins.module_utils.traffic import listener
    from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import recovery
    from ansible_collections.rollwright.deploy.plugins.module_utils.revisions import revision
    from ansible_collections.rollwright.deploy.plugins.module_utils.traffic import traffic_shift
    from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.loadbalancers import LoadBalancerError
    from ansible_collections.rollwright.deploy.plugins.module_utils.records import RecordError

    for cls in (alarms.AlarmConfigError, appspec.AppSpecError, bluegreen.BlueGreenError, deploy_inputs.InputError,
                deployment_config.DeploymentConfigError, fleet_provision.FleetError, inplace.InPlaceError,
                lambda_deploy.LambdaDeployError, lifecycle.LifecycleError, listener.ListenerError,
                recovery.RecoveryError, revision.RevisionError, traffic_shift.ShiftConfigError, LoadBalancerError,
                RecordError, aws_session.AWSSessionError):
        assert issubclass(cls, errors.RollwrightError), cls
    result = errors.error_result(inplace.InPlaceError("hosts: expected at least one host"), "inplace_step step=start")
    assert result == {"failed": True, "msg": "inplace_step step=start: hosts: expected at least one host"}
    assert errors.error_result(KeyError("bug")) is None  # a bug is not dressed up as a known error


def test_aws_errors_are_explained():
    import botocore.exceptions as bex

    creds = errors.explain_aws_error(bex.NoCredentialsError(), "inplace_step step=start")
    assert str(creds).startswith("inplace_step step=start: no usable AWS credentials") and creds.field == "access_key"
    assert "AWS_ACCESS_KEY_ID" in str(creds) and "rollwright_aws_profile" in str(creds)
    unreachable = errors.explain_aws_error(bex.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    assert "cannot be reached" in str(unreachable) and "rollwright_aws_endpoint_url" in str(unreachable)
    denied = bex.ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "DeregisterTargets")
    assert errors.aws_error_code(denied) == "AccessDenied"
    assert "IAM action elasticloadbalancing:DeregisterTargets" in str(errors.explain_aws_error(denied, service="elbv2"))


def test_step_plugin_specs_come_from_their_documentation():
    spec = documented_spec("inplace_step")
    assert spec["step"] == {"type": "str", "required": True,
                            "choices": ["start", "rollback", "plan", "block", "allow", "stop", "staged", "batch"]}
    assert spec["lock_ttl"]["type"] == "float"
    host = documented_spec("host_lifecycle")
    assert "state_root" in host and "src" in host  # the doc fragment's options are merged
    assert aws_session.AWS_OPTION_SPEC["secret_key"]["no_log"] is True
    assert aws_session.AWS_OPTION_SPEC["session_token"]["no_log"] is True


@pytest.mark.parametrize("plugin", ["inplace_step", "bluegreen_step", "deployment_recover"])
def test_step_plugins_validate_the_nested_aws_dict_with_its_secrets_no_log(plugin):
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    from ansible_collections.rollwright.deploy.plugins.plugin_utils.step_action import RollwrightAction

    action = type("Step", (RollwrightAction,), {"MODULE": plugin})
    spec = action.argument_spec(action.__new__(action))
    assert spec["aws"]["options"]["secret_key"]["no_log"] is True
    ok = ArgumentSpecValidator({"aws": spec["aws"]}).validate({"aws": {"region": "eu-west-1", "secret_key": "wJalrXUtnFEMI"}})
    assert "wJalrXUtnFEMI" in ok._no_log_values  # pylint: disable=protected-access
    typo = ArgumentSpecValidator({"aws": spec["aws"]}).validate({"aws": {"regoin": "eu-west-1"}})
    assert any("regoin" in m for m in typo.error_messages), typo.error_messages


def test_a_previous_steps_state_is_handed_over_uncopied_and_still_checked():
    from types import SimpleNamespace

    from ansible.errors import AnsibleActionFail

    from ansible_collections.rollwright.deploy.plugins.plugin_utils.step_action import RollwrightAction

    cls = type("Step", (RollwrightAction,), {"MODULE": "inplace_step"})
    action = cls.__new__(cls)
    action._load_name = "rollwright.deploy.inplace_step"  # pylint: disable=protected-access
    state = {"deployment_id": "d-ABCDEFGHI", "planner": {"hosts": [{"name": f"web{n}"} for n in range(100)]}}
    action._task = SimpleNamespace(args={"step": "batch", "state": state, "last": "yes"})  # pylint: disable=protected-access
    args = action.validated_args()
    assert args["state"] is state  # the very dict: not copied
    assert args["last"] is True and args["step"] == "batch"  # the other options validated and converted as before
    assert action._task.args["state"] is state  # pylint: disable=protected-access  # the task's arguments as given
    action._task = SimpleNamespace(args={"step": "batch", "state": "not a dict"})  # pylint: disable=protected-access
    with pytest.raises(AnsibleActionFail, match="state"):
        action.validated_args()
    action._task = SimpleNamespace(args={"step": "batch", "state": state, "stat": {}})  # pylint: disable=protected-access
    with pytest.raises(AnsibleActionFail, match="stat"):
        action.validated_args()
    record = type("Record", (RollwrightAction,), {"MODULE": "deployment_record"})
    action = record.__new__(record)
    action._load_name = "rollwright.deploy.deployment_record"  # pylint: disable=protected-access
    action._task = SimpleNamespace(args={"state": {"a": 1}})  # pylint: disable=protected-access
    with pytest.raises(AnsibleActionFail, match="state"):  # a str option given a dict is refused as before
        action.validated_args()
