# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""EC2 fleets for blue/green deployments: inputs, provisioning, discovery and tear-down.

A *replacement fleet* (green) is one of:

- ``copy_auto_scaling_group``: a new Auto Scaling group ``<original>-<deployment id>`` made from the
  original group's launch template (the very version the original uses), capacity, subnets, health
  check settings and tags; it is NOT attached to any load balancer (the deployment registers its
  instances in batches, then attaches the target groups);
- ``launch_template``: ``count`` instances run from a launch template version, spread over ``subnets``;
- ``instances``: existing running instances chosen by tags (never terminated by a rollback: they
  were not created by the deployment).

Every instance the deployment creates carries the tag ``rollwright:deployment-id = <id>`` from its
launch on (copied groups propagate it), so a controller that dies between a create call and the
record write leaves nothing that a recovery cannot find.

Controller-side, boto3 clients handed in (anything with ``client(service)``); no Ansible imports.
"""

from __future__ import annotations

import re
import time
from typing import Any, Callable, Optional
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments.inputs import split_list
from ansible_collections.rollwright.deploy.plugins.module_utils.errors import RollwrightError

DEPLOYMENT_TAG = "rollwright:deployment-id"
FLEET_TAG = "rollwright:fleet"
REPLACEMENT_KINDS = ("copy_auto_scaling_group", "launch_template", "instances")
ORIGINAL_KINDS = ("hosts", "tags", "auto_scaling_group", "target_groups")
ASG_NAME_MAX = 255
LIVE_STATES = ("pending", "running")
LAUNCH_TEMPLATE_ID_RE = re.compile(r"^lt-[0-9a-f]{8,17}$")

Progress = Callable[[str], None]


class FleetError(RollwrightError):
    """A fleet input is malformed or a fleet operation failed; the message names the field or the resource."""


# ----------------------------------------------------------------------------------------------
# scalar inputs (AWX surveys pass scalars)
# ----------------------------------------------------------------------------------------------

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)", re.IGNORECASE)
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any, field: str) -> float:
    """Seconds from 90, "90", "90s", "30m", "1h", "1h30m", "2d" (0 allowed)."""
    if isinstance(value, bool):
        raise FleetError(f"{field}: expected a duration such as 90, '90s', '30m' or '1h', got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise FleetError(f"{field}: expected a duration >= 0, got {value!r}")
        return float(value)
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        if text and re.fullmatch(r"(?:\d+(?:\.\d+)?[smhdSMHD]?)+", text):
            parts = _DURATION_RE.findall(text)
            if len(parts) > 1 and any(part[1] == "" for part in parts):
                raise FleetError(f"{field}: every number of a compound duration needs a unit (s, m, h, d), got {value!r}")
            return float(sum(float(n) * _UNIT[u.lower()] for n, u in parts))
    raise FleetError(f"{field}: expected a duration such as 90, '90s', '30m', '1h' or '1h30m', got {value!r}")


def parse_tags(value: Any, field: str) -> dict[str, str]:
    """{key: value} from a dict or from 'k=v,k2=v2' (survey form)."""
    if value in (None, "", {}):
        return {}
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or not k:
                raise FleetError(f"{field}: tag keys must be non-empty strings, got {k!r}")
            out[k] = "" if v is None else str(v)
        return out
    if isinstance(value, str):
        out = {}
        for item in [p.strip() for p in value.split(",") if p.strip()]:
            if "=" not in item:
                raise FleetError(f"{field}: expected 'key=value' pairs separated by commas, got {item!r} in {value!r}")
            k, v = item.split("=", 1)
            if not k.strip():
                raise FleetError(f"{field}: empty tag key in {value!r}")
            out[k.strip()] = v.strip()
        return out
    raise FleetError(f"{field}: expected a dict of tags or 'key=value,key2=value2', got {value!r}")


def _count(value: Any, field: str) -> int:
    try:
        if isinstance(value, bool):
            raise ValueError
        count = int(value)
    except (TypeError, ValueError):
        raise FleetError(f"{field}: expected a whole number of instances >= 1, got {value!r}") from None
    if count < 1:
        raise FleetError(f"{field}: expected a whole number of instances >= 1, got {value!r}")
    return count


def normalise_launch_template(value: Any, version: Any = None, field: str = "launch_template") -> dict[str, str]:
    """{'name' or 'id', 'version'} from a dict or a scalar (a name, or an lt-... id)."""
    if isinstance(value, str):
        text = value.strip()
        value = {"id": text} if LAUNCH_TEMPLATE_ID_RE.match(text) else {"name": text}
    if not isinstance(value, dict):
        raise FleetError(f"{field}: expected {{name|id, version}} or a launch template name or id, got {value!r}")
    unknown = set(value) - {"name", "id", "version"}
    if unknown:
        raise FleetError(f"{field}: unknown key(s) {sorted(unknown)}; expected name or id, and version")
    if bool(value.get("name")) == bool(value.get("id")):
        raise FleetError(f"{field}: expected exactly one of name or id")
    out = {"name": value["name"]} if value.get("name") else {"id": value["id"]}
    chosen = value.get("version") if value.get("version") not in (None, "") else version
    out["version"] = str(chosen) if chosen not in (None, "") else "$Default"
    return out


def normalise_replacement(value: Any = None, *, copy_auto_scaling_group: str = "", launch_template: Any = "",
                          launch_template_version: Any = "", count: Any = None, subnets: Any = "",
                          instance_tags: Any = "", field: str = "bluegreen_ec2_replacement") -> dict[str, Any]:
    """Exactly one replacement fleet, from the dict form and/or the scalar (survey) variables."""
    value = dict(value or {})
    if not isinstance(value, dict):
        raise FleetError(f"{field}: expected a dict, got {value!r}")
    unknown = set(value) - {"copy_auto_scaling_group", "launch_template", "count", "subnets", "instances"}
    if unknown:
        raise FleetError(f"{field}: unknown key(s) {sorted(unknown)}; expected one of copy_auto_scaling_group, "
                         "launch_template (+ count, subnets), instances: {tags}")
    copy = value.get("copy_auto_scaling_group") or copy_auto_scaling_group
    template = value.get("launch_template") or launch_template
    instances = value.get("instances") or ({"tags": instance_tags} if instance_tags else None)
    chosen = [k for k, v in (("copy_auto_scaling_group", copy), ("launch_template", template), ("instances", instances)) if v]
    if len(chosen) != 1:
        raise FleetError(
            f"{field}: expected exactly one replacement fleet - copy_auto_scaling_group (bluegreen_ec2_copy_auto_scaling_group), "
            "launch_template with count and subnets (bluegreen_ec2_launch_template, bluegreen_ec2_count, bluegreen_ec2_subnets), "
            f"or instances by tags (bluegreen_ec2_instance_tags); got {', '.join(chosen) if chosen else 'none'}")
    if copy:
        if not isinstance(copy, str):
            raise FleetError(f"{field}.copy_auto_scaling_group: expected an Auto Scaling group name, got {copy!r}")
        return {"kind": "copy_auto_scaling_group", "auto_scaling_group": copy.strip()}
    if template:
        lt = normalise_launch_template(template, launch_template_version, f"{field}.launch_template")
        n = _count(value.get("count") if value.get("count") not in (None, "") else count, f"{field}.count")
        nets = split_list(value.get("subnets") or subnets, f"{field}.subnets", FleetError)
        if not nets:
            raise FleetError(f"{field}.subnets: expected at least one subnet id for the launch template's instances")
        return {"kind": "launch_template", "launch_template": lt, "count": n, "subnets": nets}
    if not isinstance(instances, dict) or set(instances) - {"tags"}:
        raise FleetError(f"{field}.instances: expected {{tags: {{key: value}}}}, got {instances!r}")
    tags = parse_tags(instances.get("tags"), f"{field}.instances.tags")
    if not tags:
        raise FleetError(f"{field}.instances.tags: expected at least one tag to choose the replacement instances by")
    return {"kind": "instances", "tags": tags}


def normalise_original(value: Any = None, *, hosts: Any = "", tags: Any = "", auto_scaling_group: str = "",
                       replacement: Optional[dict] = None, field: str = "bluegreen_ec2_original_fleet") -> dict[str, Any]:
    """How the original (blue) fleet is found: inventory hosts, tags, an Auto Scaling group, or (default) the
    members of the load balancer now serving; a copied group's source is the default when copying."""
    value = dict(value or {})
    unknown = set(value) - {"hosts", "tags", "auto_scaling_group"}
    if unknown:
        raise FleetError(f"{field}: unknown key(s) {sorted(unknown)}; expected one of hosts, tags, auto_scaling_group")
    host_list = split_list(value.get("hosts") or hosts, f"{field}.hosts", FleetError)
    tag_dict = parse_tags(value.get("tags") or tags, f"{field}.tags")
    asg = value.get("auto_scaling_group") or auto_scaling_group
    chosen = [k for k, v in (("hosts", host_list), ("tags", tag_dict), ("auto_scaling_group", asg)) if v]
    if len(chosen) > 1:
        raise FleetError(f"{field}: expected at most one of hosts, tags, auto_scaling_group; got {', '.join(chosen)}")
    if host_list:
        return {"kind": "hosts", "hosts": host_list}
    if tag_dict:
        return {"kind": "tags", "tags": tag_dict}
    if asg:
        return {"kind": "auto_scaling_group", "auto_scaling_group": asg}
    if replacement and replacement.get("kind") == "copy_auto_scaling_group":
        return {"kind": "auto_scaling_group", "auto_scaling_group": replacement["auto_scaling_group"]}
    return {"kind": "target_groups"}


def copy_name(original: str, deployment_id: str) -> str:
    name = f"{original}-{deployment_id}"
    if len(name) > ASG_NAME_MAX:
        raise FleetError(f"copy_auto_scaling_group: {name!r} would be longer than {ASG_NAME_MAX} characters")
    return name


def copy_request(original: dict[str, Any], new_name: str, deployment_id: str) -> dict[str, Any]:
    """CreateAutoScalingGroup arguments copying `original` (a DescribeAutoScalingGroups entry).

    Same launch template and version (or mixed instances policy, or launch configuration), capacity,
    subnets, health check settings, termination policies and user tags (plus the deployment tag,
    propagated at launch); no target groups or classic ELBs.
    """
    request: dict[str, Any] = {"AutoScalingGroupName": new_name}
    if original.get("MixedInstancesPolicy"):
        request["MixedInstancesPolicy"] = original["MixedInstancesPolicy"]
    elif original.get("LaunchTemplate"):
        lt = original["LaunchTemplate"]
        spec = {"LaunchTemplateId": lt["LaunchTemplateId"]} if lt.get("LaunchTemplateId") else {"LaunchTemplateName": lt["LaunchTemplateName"]}
        spec["Version"] = str(lt.get("Version") or "$Default")
        request["LaunchTemplate"] = spec
    elif original.get("LaunchConfigurationName"):
        request["LaunchConfigurationName"] = original["LaunchConfigurationName"]
    else:
        raise FleetError(f"copy_auto_scaling_group: {original.get('AutoScalingGroupName')} has no launch template, "
                         "mixed instances policy or launch configuration to copy")
    for key in ("MinSize", "MaxSize", "DesiredCapacity", "DefaultCooldown", "HealthCheckType", "HealthCheckGracePeriod",
                "TerminationPolicies", "NewInstancesProtectedFromScaleIn", "CapacityRebalance", "MaxInstanceLifetime",
                "PlacementGroup", "DefaultInstanceWarmup"):
        if original.get(key) not in (None, "", []):
            request[key] = original[key]
    if original.get("VPCZoneIdentifier"):
        request["VPCZoneIdentifier"] = original["VPCZoneIdentifier"]
    elif original.get("AvailabilityZones"):
        request["AvailabilityZones"] = list(original["AvailabilityZones"])
    tags = []
    for tag in original.get("Tags") or []:
        if tag["Key"].startswith("aws:") or tag["Key"] in (DEPLOYMENT_TAG, FLEET_TAG):
            continue
        tags.append({"Key": tag["Key"], "Value": tag.get("Value", ""), "PropagateAtLaunch": bool(tag.get("PropagateAtLaunch")),
                     "ResourceId": new_name, "ResourceType": "auto-scaling-group"})
    for key, val in ((DEPLOYMENT_TAG, deployment_id), (FLEET_TAG, "replacement")):
        tags.append({"Key": key, "Value": val, "PropagateAtLaunch": True, "ResourceId": new_name, "ResourceType": "auto-scaling-group"})
    request["Tags"] = tags
    return request


def spread(count: int, subnets: list[str]) -> list[tuple[str, int]]:
    """`count` instances over subnets, round robin: 5 over [a, b] -> [(a, 3), (b, 2)]."""
    out = []
    for i, subnet in enumerate(subnets):
        n = count // len(subnets) + (1 if i < count % len(subnets) else 0)
        if n:
            out.append((subnet, n))
    return out


# ----------------------------------------------------------------------------------------------
# the API side
# ----------------------------------------------------------------------------------------------

def _code(exc: BaseException) -> Optional[str]:
    response = getattr(exc, "response", None)
    return response.get("Error", {}).get("Code") if isinstance(response, dict) else None


class Ec2Fleet:
    """EC2 and Auto Scaling calls for one deployment (batched: one call per group of instances)."""

    def __init__(self, clients: Any, sleep: Callable[[float], None] = time.sleep, now: Callable[[], float] = time.monotonic):
        self.clients = clients
        self.sleep = sleep
        self.now = now

    @property
    def ec2(self) -> Any:
        return self.clients.client("ec2")

    @property
    def autoscaling(self) -> Any:
        return self.clients.client("autoscaling")

    # -- reading ----------------------------------------------------------------------------
    def describe_asg(self, name: str, missing_ok: bool = False) -> Optional[dict[str, Any]]:
        groups = self.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
        if not groups:
            if missing_ok:
                return None
            raise FleetError(f"auto_scaling_group: no Auto Scaling group named {name!r} in this region")
        return groups[0]

    def asg_instance_ids(self, name: str) -> list[str]:
        group = self.describe_asg(name)
        return [i["InstanceId"] for i in group.get("Instances", [])
                if not str(i.get("LifecycleState", "")).startswith(("Terminat", "Detach", "Standby"))]

    def describe(self, instance_ids: list[str]) -> dict[str, dict[str, Any]]:
        """id -> {state, private_ip, subnet_id, tags} (one DescribeInstances call per 100 ids)."""
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(instance_ids), 100):
            chunk = instance_ids[i:i + 100]
            try:
                pages = self.ec2.get_paginator("describe_instances").paginate(InstanceIds=chunk)
                for page in pages:
                    self._collect(page, out)
            except Exception as exc:
                if _code(exc) != "InvalidInstanceID.NotFound":
                    raise
                for iid in chunk:  # error path only: find the missing ones
                    try:
                        self._collect(self.ec2.describe_instances(InstanceIds=[iid]), out)
                    except Exception as inner:
                        if _code(inner) != "InvalidInstanceID.NotFound":
                            raise
        return out

    @staticmethod
    def _collect(page: dict[str, Any], out: dict[str, dict[str, Any]]) -> None:
        for reservation in page.get("Reservations", []):
            for inst in reservation.get("Instances", []):
                out[inst["InstanceId"]] = {
                    "state": inst.get("State", {}).get("Name"),
                    "private_ip": inst.get("PrivateIpAddress"),
                    "subnet_id": inst.get("SubnetId"),
                    "tags": {t["Key"]: t.get("Value", "") for t in inst.get("Tags") or []},
                }

    def find(self, tags: dict[str, str], states: tuple = LIVE_STATES) -> list[str]:
        filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in tags.items()]
        filters.append({"Name": "instance-state-name", "Values": list(states)})
        found: dict[str, dict[str, Any]] = {}
        for page in self.ec2.get_paginator("describe_instances").paginate(Filters=filters):
            self._collect(page, found)
        return sorted(found)

    def created_by(self, deployment_id: str) -> list[str]:
        """Live instances carrying this deployment's tag (what a recovery must not orphan)."""
        return self.find({DEPLOYMENT_TAG: deployment_id}, states=("pending", "running", "stopping", "stopped"))

    # -- creating ---------------------------------------------------------------------------
    def create_copy(self, original_name: str, new_name: str, deployment_id: str) -> dict[str, Any]:
        if self.describe_asg(new_name, missing_ok=True):
            raise FleetError(f"copy_auto_scaling_group: an Auto Scaling group named {new_name!r} already exists")
        request = copy_request(self.describe_asg(original_name), new_name, deployment_id)
        self.autoscaling.create_auto_scaling_group(**request)
        return request

    def launch(self, template: dict[str, str], count: int, subnets: list[str], deployment_id: str) -> list[str]:
        spec = {"LaunchTemplateName": template["name"]} if template.get("name") else {"LaunchTemplateId": template["id"]}
        spec["Version"] = template.get("version") or "$Default"
        tags = [{"Key": DEPLOYMENT_TAG, "Value": deployment_id}, {"Key": FLEET_TAG, "Value": "replacement"}]
        ids: list[str] = []
        for subnet, n in spread(count, subnets):
            resp = self.ec2.run_instances(LaunchTemplate=spec, MinCount=n, MaxCount=n, SubnetId=subnet,
                                          ClientToken=f"{deployment_id}-{subnet}"[:64],
                                          TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
            ids += [i["InstanceId"] for i in resp["Instances"]]
        return ids

    def wait_running(self, instance_ids: list[str], timeout: float, progress: Optional[Progress] = None) -> dict[str, dict[str, Any]]:
        """Wait until every instance is running with a private IP; FleetError names those that are not."""
        deadline = self.now() + timeout
        last: dict[str, dict[str, Any]] = {}
        while True:
            last = self.describe(instance_ids)
            pending = [i for i in instance_ids if (last.get(i) or {}).get("state") != "running" or not last[i].get("private_ip")]
            dead = [i for i in pending if (last.get(i) or {}).get("state") in ("shutting-down", "terminated", "stopping", "stopped")]
            if dead:
                raise FleetError(f"replacement instance(s) {', '.join(dead)} stopped or terminated while starting")
            if not pending:
                return last
            if self.now() >= deadline:
                states = ", ".join(f"{i} {(last.get(i) or {}).get('state', 'not found')}" for i in pending)
                raise FleetError(f"replacement instances not running after {timeout:.0f}s: {states}")
            if progress:
                progress(f"waiting for {len(pending)} replacement instance(s) to run")
            self.sleep(min(2.0, max(0.1, deadline - self.now())))

    def wait_asg_instances(self, name: str, timeout: float, progress: Optional[Progress] = None) -> list[str]:
        """Wait until the group has DesiredCapacity instances (ids returned)."""
        deadline = self.now() + timeout
        while True:
            group = self.describe_asg(name)
            ids = [i["InstanceId"] for i in group.get("Instances", []) if not str(i.get("LifecycleState", "")).startswith("Terminat")]
            if len(ids) >= int(group.get("DesiredCapacity") or 0):
                return ids
            if self.now() >= deadline:
                raise FleetError(f"Auto Scaling group {name} has {len(ids)} of {group.get('DesiredCapacity')} instances after {timeout:.0f}s")
            if progress:
                progress(f"Auto Scaling group {name}: {len(ids)} of {group.get('DesiredCapacity')} instances launched")
            self.sleep(min(2.0, max(0.1, deadline - self.now())))

    # -- load balancer attachments of groups -------------------------------------------------
    def attached_target_groups(self, name: str) -> list[str]:
        group = self.describe_asg(name, missing_ok=True)
        return list((group or {}).get("TargetGroupARNs") or [])

    def attached_classic_elbs(self, name: str) -> list[str]:
        group = self.describe_asg(name, missing_ok=True)
        return list((group or {}).get("LoadBalancerNames") or [])

    def attach(self, name: str, target_group_arns: list[str], classic_elb_names: list[str]) -> None:
        if target_group_arns:
            self.autoscaling.attach_load_balancer_target_groups(AutoScalingGroupName=name, TargetGroupARNs=target_group_arns)
        if classic_elb_names:
            self.autoscaling.attach_load_balancers(AutoScalingGroupName=name, LoadBalancerNames=classic_elb_names)

    def detach(self, name: str, target_group_arns: list[str], classic_elb_names: list[str]) -> None:
        """Detach (the instances are already deregistered by the deployment; an emulator that complains
        about deregistering them again is ignored)."""
        for call, kwargs in (("detach_load_balancer_target_groups", {"TargetGroupARNs": target_group_arns}),
                             ("detach_load_balancers", {"LoadBalancerNames": classic_elb_names})):
            if not list(kwargs.values())[0]:
                continue
            try:
                getattr(self.autoscaling, call)(AutoScalingGroupName=name, **kwargs)
            except Exception as exc:
                if _code(exc) not in ("InvalidTarget", "InvalidInstance"):
                    raise

    # -- tearing down -----------------------------------------------------------------------
    def terminate(self, instance_ids: list[str]) -> None:
        ids = list(dict.fromkeys(instance_ids))
        for i in range(0, len(ids), 500):
            try:
                self.ec2.terminate_instances(InstanceIds=ids[i:i + 500])
            except Exception as exc:
                if _code(exc) != "InvalidInstanceID.NotFound":
                    raise
                for iid in ids[i:i + 500]:
                    try:
                        self.ec2.terminate_instances(InstanceIds=[iid])
                    except Exception as inner:
                        if _code(inner) != "InvalidInstanceID.NotFound":
                            raise

    def scale_to_zero(self, name: str) -> list[str]:
        """Terminate a group's instances by setting its capacity to 0 (the group itself stays)."""
        ids = self.asg_instance_ids(name) if self.describe_asg(name, missing_ok=True) else []
        if ids or self.describe_asg(name, missing_ok=True):
            self.autoscaling.update_auto_scaling_group(AutoScalingGroupName=name, MinSize=0, DesiredCapacity=0)
        return ids

    def delete_asg(self, name: str) -> bool:
        """Delete a group and terminate its instances (ForceDelete). False when it did not exist."""
        if not self.describe_asg(name, missing_ok=True):
            return False
        try:
            self.autoscaling.delete_auto_scaling_group(AutoScalingGroupName=name, ForceDelete=True)
        except Exception as exc:
            if _code(exc) != "ValidationError":
                raise
            return False
        return True
