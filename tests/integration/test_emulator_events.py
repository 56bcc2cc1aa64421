# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The emulator's event behaviour (tests/harness/_moto_patches.py), as event-driven deployments rely on it:
S3 event notifications to SQS name the object version; Auto Scaling launching lifecycle hooks hold
instances in Pending:Wait until CompleteLifecycleAction (CONTINUE / ABANDON / heartbeat timeout)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.integration import inplace_helpers as H

LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"


def _queue(aws: Any) -> tuple[str, str]:
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName=H.unique("harness-events"))["QueueUrl"]
    return url, sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def _drain(aws: Any, url: str) -> list[dict[str, Any]]:
    sqs, bodies = aws.client("sqs"), []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages") or []
        if not got:
            return bodies
        for message in got:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def test_s3_notifications_to_sqs_name_the_version(aws: Any) -> None:
    s3 = aws.client("s3")
    url, arn = _queue(aws)
    bucket = H.unique("harness-notify").lower()
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={"QueueConfigurations": [{
        "QueueArn": arn, "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "app/"}]}}}]})
    first = s3.put_object(Bucket=bucket, Key="app/a b.zip", Body=b"one")
    second = s3.put_object(Bucket=bucket, Key="app/a b.zip", Body=b"two")
    s3.put_object(Bucket=bucket, Key="other/c.zip", Body=b"not under the prefix")
    bodies = _drain(aws, url)
    assert bodies[0]["Event"] == "s3:TestEvent"  # AWS's test message when the configuration is put
    records = [b["Records"][0] for b in bodies[1:]]
    assert [r["eventName"] for r in records] == ["ObjectCreated:Put", "ObjectCreated:Put"]
    objects = [r["s3"]["object"] for r in records]
    assert [o["key"] for o in objects] == ["app%2Fa+b.zip"] * 2  # URL-encoded, as AWS sends keys
    assert [o["versionId"] for o in objects] == [first["VersionId"], second["VersionId"]]
    assert [o["eTag"] for o in objects] == [first["ETag"].strip('"'), second["ETag"].strip('"')]
    assert objects[0]["sequencer"] < objects[1]["sequencer"]


class Group:
    def __init__(self, aws: Any, hook_timeout: int = 600, default_result: str = "ABANDON") -> None:
        ec2, self.asg, self.elbv2 = aws.client("ec2"), aws.client("autoscaling"), aws.client("elbv2")
        self.ec2 = ec2
        vpc = ec2.create_vpc(CidrBlock="10.77.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.77.1.0/24")["Subnet"]["SubnetId"]
        template = ec2.create_launch_template(LaunchTemplateName=H.unique("harness-lt"),
                                              LaunchTemplateData={"ImageId": "ami-03cf127a", "InstanceType": "t3.micro"})
        self.tg = self.elbv2.create_target_group(Name=H.unique("harness-hold")[:32], Protocol="HTTP", Port=80, VpcId=vpc,
                                                 TargetType="instance")["TargetGroups"][0]["TargetGroupArn"]
        self.name = H.unique("harness-asg")
        self.asg.create_auto_scaling_group(
            AutoScalingGroupName=self.name, MinSize=0, MaxSize=4, DesiredCapacity=0, VPCZoneIdentifier=subnet,
            LaunchTemplate={"LaunchTemplateId": template["LaunchTemplate"]["LaunchTemplateId"]}, TargetGroupARNs=[self.tg])
        self.url, arn = _queue(aws)
        self.asg.put_lifecycle_hook(AutoScalingGroupName=self.name, LifecycleHookName="hold", LifecycleTransition=LAUNCHING,
                                    HeartbeatTimeout=hook_timeout, DefaultResult=default_result,
                                    NotificationTargetARN=arn, RoleARN="arn:aws:iam::123456789012:role/hook")

    def states(self) -> dict[str, str]:
        found = self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[self.name])["AutoScalingGroups"][0]
        return {i["InstanceId"]: i["LifecycleState"] for i in found["Instances"]}

    def targets(self) -> set[str]:
        return {d["Target"]["Id"] for d in self.elbv2.describe_target_health(TargetGroupArn=self.tg)["TargetHealthDescriptions"]}

    def complete(self, result: str, **which: str) -> None:
        self.asg.complete_lifecycle_action(AutoScalingGroupName=self.name, LifecycleHookName="hold",
                                           LifecycleActionResult=result, **which)


def test_launching_hook_holds_until_continue_or_abandon(aws: Any) -> None:
    group = Group(aws)
    hook = aws.client("autoscaling").describe_lifecycle_hooks(AutoScalingGroupName=group.name)["LifecycleHooks"][0]
    assert hook["NotificationTargetARN"].endswith(group.url.rsplit("/", 1)[1]) and hook["RoleARN"].endswith("role/hook")
    group.asg.set_desired_capacity(AutoScalingGroupName=group.name, DesiredCapacity=2)
    held = group.states()
    assert sorted(held.values()) == ["Pending:Wait", "Pending:Wait"] and not group.targets()
    group.asg.set_desired_capacity(AutoScalingGroupName=group.name, DesiredCapacity=2)
    assert group.states() == held, "held instances count toward the desired capacity"
    bodies = _drain(aws, group.url)
    assert bodies[0]["Event"] == "autoscaling:TEST_NOTIFICATION"
    launches = {b["EC2InstanceId"]: b for b in bodies[1:]}
    assert set(launches) == set(held)
    assert all(b["LifecycleTransition"] == LAUNCHING and b["LifecycleHookName"] == "hold" and b["LifecycleActionToken"]
               and b["AutoScalingGroupName"] == group.name for b in launches.values())
    first, second = sorted(held)

    group.complete("CONTINUE", LifecycleActionToken=launches[first]["LifecycleActionToken"])
    assert group.states()[first] == "InService" and group.targets() == {first}
    with pytest.raises(ClientError, match="No active Lifecycle Action found with token"):
        group.complete("CONTINUE", LifecycleActionToken=launches[first]["LifecycleActionToken"])

    group.complete("ABANDON", InstanceId=second)
    states = group.states()
    assert second not in states and group.targets() == {first}
    reservation = group.ec2.describe_instances(InstanceIds=[second])["Reservations"][0]
    assert reservation["Instances"][0]["State"]["Name"] == "terminated"
    replacement = [i for i in states if i not in held]
    assert len(replacement) == 1 and states[replacement[0]] == "Pending:Wait", "the group replaces an abandoned instance"
    with pytest.raises(ClientError, match="No active Lifecycle Action found with instance ID"):
        group.complete("CONTINUE", InstanceId=second)


def test_launching_hook_heartbeat_timeout_applies_the_default(aws: Any) -> None:
    group = Group(aws, hook_timeout=1, default_result="CONTINUE")
    group.asg.set_desired_capacity(AutoScalingGroupName=group.name, DesiredCapacity=1)
    (instance, state), = group.states().items()
    assert state == "Pending:Wait"
    time.sleep(1.2)
    assert group.states() == {instance: "InService"} and group.targets() == {instance}
