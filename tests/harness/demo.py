# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``python -m tests.harness demo`` (``make demo``): a real deployment, end to end, on the defaults.

Brings up a world of 3 SSH hosts (network namespaces) and the AWS emulator, puts the hosts behind
an application load balancer target group, uploads two versions of the sample application (a
CodeDeploy bundle in the form of AWS's samples) to a versioned S3 bucket, and deploys v1 then v2
with ``ansible-playbook rollwright.deploy.inplace`` and ``CodeDeployDefault.OneAtATime``. It then
shows what each host serves, the deployment history from the record, and tears the world down,
even on failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from tests.bundles import build_bundle
from tests.harness.world import ROOT, down, up

APPLICATION = "sample"
GROUP = "demo"
# Short AWS delays so the demo takes a minute, not AWS's 300 s deregistration delay per batch.
DEREGISTRATION_DELAY = "3"
REGISTRATION_SECONDS = "3"


def ansible_env(world_env: dict[str, str], control_dir: str, state_dir: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(world_env)
    env.update({
        "ANSIBLE_COLLECTIONS_PATH": str(ROOT / "build"),
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_SSH_CONTROL_PATH_DIR": control_dir,
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_DISPLAY_SKIPPED_HOSTS": "False",
        "ANSIBLE_FORKS": "20",
        # Deployment records in the world's directory, not in the user's own history.
        "XDG_STATE_HOME": state_dir,
        "PATH": f"{ROOT / '.venv' / 'bin'}:{env.get('PATH', '')}",
    })
    return env


def _load_balancer(world) -> str:
    elbv2 = world.client("elbv2")
    subnet = world.subnet_id
    alb = elbv2.create_load_balancer(Name="demo-alb", Subnets=[subnet], Scheme="internal", Type="application")
    alb_arn = alb["LoadBalancers"][0]["LoadBalancerArn"]
    fast_health = [{"Key": "rollwright-emulator:registration-seconds", "Value": REGISTRATION_SECONDS}]
    tg = elbv2.create_target_group(Name="demo-web", Protocol="HTTP", Port=8080, VpcId=world.vpc_id, TargetType="instance",
                                   HealthCheckPath="/", Tags=fast_health)
    tg_arn = tg["TargetGroups"][0]["TargetGroupArn"]
    elbv2.modify_target_group_attributes(TargetGroupArn=tg_arn, Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": DEREGISTRATION_DELAY}])
    elbv2.create_listener(LoadBalancerArn=alb_arn, Protocol="HTTP", Port=80,
                          DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}])
    elbv2.register_targets(TargetGroupArn=tg_arn, Targets=[{"Id": h.instance_id, "Port": 8080} for h in world.hosts])
    return tg_arn


def _upload(world, bundles: dict[str, Path]) -> dict[str, str]:
    s3 = world.client("s3")
    s3.create_bucket(Bucket="demo-releases")
    s3.put_bucket_versioning(Bucket="demo-releases", VersioningConfiguration={"Status": "Enabled"})
    urls = {}
    for version, path in bundles.items():
        key = f"sample/{path.name}"
        put = s3.put_object(Bucket="demo-releases", Key=key, Body=path.read_bytes())
        urls[version] = f"s3://demo-releases/{key}?versionId={put['VersionId']}&etag={put['ETag'].strip(chr(34))}"
    return urls


def _serving(world) -> dict[str, str]:
    answers = {}
    for host in world.hosts:
        try:
            with urllib.request.urlopen(f"http://{host.address}:8080/", timeout=3) as response:
                answers[host.name] = response.read().decode().strip()
        except OSError as exc:
            answers[host.name] = f"no answer ({exc})"
    return answers


def _targets(world, tg_arn: str) -> dict[str, str]:
    health = world.client("elbv2").describe_target_health(TargetGroupArn=tg_arn)["TargetHealthDescriptions"]
    return {d["Target"]["Id"]: d["TargetHealth"]["State"] for d in health}


def demo() -> int:
    """Run the demo; returns the process exit code."""
    started = time.monotonic()
    ok = True
    with tempfile.TemporaryDirectory(prefix="rollwright-demo-") as tmp:
        world_dir = Path(tmp) / "demo"
        try:
            print("== bringing up a world: 3 SSH hosts + the AWS emulator ...", flush=True)
            world = up(world_dir, 3)
            for h in world.hosts:
                print(f"   {h.name:6} {h.address:15} {h.instance_id}")
            tg_arn = _load_balancer(world)
            print(f"== behind an application load balancer, target group {tg_arn.split(':')[-1]}")
            bundles = {v: build_bundle(v, Path(tmp) / "bundles") for v in ("v1", "v2")}
            urls = _upload(world, bundles)
            print("== sample application v1 and v2 uploaded to a versioned S3 bucket")
            env = ansible_env(world.aws_env(), str(world.control_path_dir), str(Path(tmp) / "state"))
            for version in ("v1", "v2"):
                deploy_vars = {
                    "rollwright_hosts": "fleet",
                    "rollwright_application": APPLICATION,
                    "rollwright_deployment_group": GROUP,
                    "rollwright_revision": urls[version],
                    "rollwright_deployment_config": "CodeDeployDefault.OneAtATime",
                    "rollwright_load_balancer": {"target_group_arns": [tg_arn]},
                }
                vars_file = world_dir / f"deploy-{version}.yml"
                vars_file.write_text(yaml.safe_dump(deploy_vars, sort_keys=False))
                print(f"\n== ansible-playbook rollwright.deploy.inplace -i inventory.yml -e @deploy-{version}.yml", flush=True)
                print("   " + vars_file.read_text().replace("\n", "\n   "), flush=True)
                proc = subprocess.run([str(ROOT / ".venv" / "bin" / "ansible-playbook"), "rollwright.deploy.inplace",
                                       "-i", str(world.inventory), "-e", f"@{vars_file}"],
                                      env=env, timeout=900, check=False)
                if proc.returncode != 0:
                    ok = False
                    print(f"deployment of {version} failed (exit {proc.returncode})")
                    break
                answers = _serving(world)
                print(f"== after {version}: what each host serves, and its target health")
                health = _targets(world, tg_arn)
                for h in world.hosts:
                    print(f"   {h.name:6} {answers[h.name]:22} {health.get(h.instance_id, 'not registered')}")
                    ok &= answers[h.name] == f"sample-app {version}" and health.get(h.instance_id) == "healthy"
            print("\n== deployment history (rollwright.deploy.deployment_info)", flush=True)
            history = subprocess.run([str(ROOT / ".venv" / "bin" / "ansible"), "localhost", "-i", str(world.inventory),
                                      "-m", "rollwright.deploy.deployment_info",
                                      "-a", f"application={APPLICATION} deployment_group={GROUP}"],
                                     env={**env, "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
                                          "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"},
                                     capture_output=True, text=True, timeout=120, check=False)
            try:
                result = json.loads(history.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
                for record in result["deployments"]:
                    rev = record["revision"]
                    print(f"   {record['deployment_id']}  {record['status']:10} {record['create_time'][:19]}  "
                          f"s3://{rev.get('bucket')}/{rev.get('key')} version {rev.get('version')}")
            except (ValueError, KeyError, IndexError):
                ok = False
                print(history.stdout[-2000:], history.stderr[-2000:])
        except Exception as exc:  # pylint: disable=broad-except
            ok = False
            print(f"demo failed: {exc}")
        finally:
            down(world_dir)
            print(f"== world torn down; total {time.monotonic() - started:.1f}s")
    print("demo: OK" if ok else "demo: FAILED")
    return 0 if ok else 1
