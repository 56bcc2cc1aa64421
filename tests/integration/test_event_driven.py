# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Event-driven deployments end to end: the real ansible-rulebook runs this collection's rulebooks
and event sources against the emulator and an SSH fleet.

- auto_deploy: an upload deploys itself (exact version, within the interval plus the deployment's
  time); uploads during a running deployment - only the newest is deployed next; an invalid bundle
  is a Failed record and touches nothing; a restarted rulebook redeploys nothing.
- scale_out: an instance the Auto Scaling group launches is held until it has the group's last
  successful revision, then CONTINUE and healthy in the target group; a failing deployment ABANDONs
  it and it never joins.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Optional

import pytest
import yaml

from ansible_collections.rollwright.deploy.plugins.module_utils.records import DeploymentRecord, open_store
from tests.bundles import build_bundle
from tests.harness.ansible_run import ROOT as H_ROOT
from tests.harness.rulebook import Rulebook
from tests.integration import inplace_helpers as H
from tests.integration.test_emulator_events import Group

pytestmark = pytest.mark.fleet

APP = "eda-shop"
GROUP = "web"
PREFIX = "shop/"
INTERVAL = 2  # seconds: the sources' SQS long poll / listing interval
AMI = "ami-03cf127a"


def _bundle_with(version: str, out: Path, hooks: dict[str, str], fmt: str = "zip") -> Path:
    """The sample app with extra BeforeInstall scripts (name -> shell text)."""
    lines = "".join(f"    - location: scripts/{name}\n" for name in hooks)
    return build_bundle(version, out, fmt=fmt, extra_files={f"scripts/{n}": t for n, t in hooks.items()},
                        edit_appspec=lambda text: text.replace("  BeforeInstall:\n", "  BeforeInstall:\n" + lines, 1))


class Site:
    """A versioned bucket whose uploads under PREFIX notify an SQS queue, and this test's records."""

    def __init__(self, world: Any, tmp: Path) -> None:
        self.world, self.tmp = world, tmp
        self.s3, self.sqs = world.client("s3"), world.client("sqs")
        self.bucket = H.unique("eda-releases").lower()
        self.s3.create_bucket(Bucket=self.bucket)
        self.s3.put_bucket_versioning(Bucket=self.bucket, VersioningConfiguration={"Status": "Enabled"})
        self.queue_url = self.sqs.create_queue(QueueName=H.unique("eda-uploads"))["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.s3.put_bucket_notification_configuration(Bucket=self.bucket, NotificationConfiguration={"QueueConfigurations": [{
            "QueueArn": arn, "Events": ["s3:ObjectCreated:*"],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": PREFIX}]}}}]})
        self.records_path = tmp / "records.sqlite3"

    def upload(self, bundle: Path, key: str = "shop.zip") -> str:
        return self.s3.put_object(Bucket=self.bucket, Key=PREFIX + key, Body=bundle.read_bytes())["VersionId"]

    def records(self) -> list[dict[str, Any]]:
        if not self.records_path.exists():
            return []
        store = open_store("sqlite", {"path": str(self.records_path)})
        try:
            return [store.get(r.deployment_id).to_dict() for r in reversed(store.list(APP, GROUP, limit=100))]
        finally:
            store.close()

    def record_of(self, version: str) -> Optional[dict[str, Any]]:
        found = [r for r in self.records() if r["revision"].get("version") == version]
        return found[-1] if found else None

    def wait_record(self, version: str, statuses: tuple[str, ...], timeout: float, rulebook: Rulebook) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.record_of(version)
            if found and found["status"] in statuses:
                return found
            assert rulebook.running, f"ansible-rulebook ended:\n{rulebook.log()[-4000:]}"
            time.sleep(0.2)
        raise AssertionError(f"no {statuses} record of version {version} after {timeout}s; records: "
                             f"{[(r['revision'].get('version'), r['status']) for r in self.records()]}\n"
                             f"rulebook log:\n{rulebook.log()[-6000:]}")

    def settings(self, hosts: str, **extra: Any) -> dict[str, Any]:
        return {"rollwright_bucket": self.bucket, "rollwright_prefix": PREFIX, "rollwright_application": APP,
                "rollwright_deployment_group": GROUP, "rollwright_hosts": hosts, "rollwright_poll_interval": INTERVAL,
                "rollwright_deployment_config": "CodeDeployDefault.AllAtOnce",
                "rollwright_record_sqlite_path": str(self.records_path), **extra}


def installed_version(world: Any, host: str) -> str:
    out = world.fleet.exec(host, ["cat", "/opt/app/sample/index.html"], check=False).stdout.strip()
    return out.replace("sample-app ", "")


def most_recent(world: Any, host: str) -> str:
    return world.fleet.exec(host, ["cat", f"/var/lib/rollwright/{APP}/{GROUP}/most_recent"], check=False).stdout.strip()


def test_uploads_deploy_themselves(fleet: Any, aws: Any, tmp_path: Path) -> None:
    world = fleet(2)
    hosts = [h.name for h in world.hosts]
    site = Site(world, tmp_path)
    out = tmp_path / "bundles"
    bundles = {"v2": _bundle_with("v2", out, {"slow.sh": "#!/bin/sh\nsleep 2\n"}),
               "v3": build_bundle("v3", out), "v4": build_bundle("v4", out),
               "bad": build_bundle("bad", out, edit_appspec=lambda text: text.replace("os: linux", "os: plan9")),
               "v5": build_bundle("v5", out)}
    versions: dict[str, str] = {}
    # How long to wait for a deployment's end: a bound on machine speed (two hosts, each deployment ~10 s
    # idle, past 90 s at load 20), not a promise; the promise (the upload's latency) is asserted below.
    deployed_within = 240

    rulebook = Rulebook("auto_deploy", world.inventory, site.settings("fleet", rollwright_queue_url=site.queue_url),
                        tmp_path / "eda-1", aws.env).start()
    try:
        wait_ready(rulebook)
        # v2 deploys itself, exactly that version, within the interval plus the deployment's time.
        uploaded_at = time.time()
        versions["v2"] = site.upload(bundles["v2"])
        running = site.wait_record(versions["v2"], ("InProgress", "Succeeded", "Failed"), 60, rulebook)
        # v3 and v4 are uploaded while v2 is being deployed: only v4 is deployed next.
        assert running["status"] == "InProgress", running
        versions["v3"] = site.upload(bundles["v3"])
        versions["v4"] = site.upload(bundles["v4"])
        assert site.record_of(versions["v2"])["status"] == "InProgress", "v3 and v4 must land during v2's deployment"
        second = site.wait_record(versions["v2"], ("Succeeded", "Failed"), deployed_within, rulebook)
        assert second["status"] == "Succeeded", second
        done_at = time.time()
        assert second["revision"]["bucket"] == site.bucket and second["revision"]["key"] == PREFIX + "shop.zip"
        assert second["extra"]["trigger"] == {
            "event": "s3_upload", "bucket": site.bucket, "key": PREFIX + "shop.zip", "version_id": versions["v2"],
            "etag": second["revision"]["etag"],
            "rule": "Deploy every new S3 revision of a deployment group/Deploy the uploaded revision"}
        deploy_seconds = _seconds(second["create_time"], second["end_time"])
        latency = done_at - uploaded_at
        noticed = received_at(rulebook.log())[versions["v2"]] - uploaded_at
        assert noticed <= INTERVAL + 1, f"the upload's event came {noticed:.1f}s after the upload"
        # ansible-playbook's start-up and the decision play (before the record exists) are part of the
        # deployment's time, as seen from outside: 60 s for them on a loaded 2-core machine (load 20).
        assert latency <= INTERVAL + deploy_seconds + 60, (latency, deploy_seconds)

        fourth = site.wait_record(versions["v4"], ("Succeeded", "Failed"), deployed_within, rulebook)
        assert fourth["status"] == "Succeeded", fourth
        assert all(installed_version(world, h) == "v4" for h in hosts)
        assert site.record_of(versions["v3"]) is None, "v3 was superseded by v4 (latest wins) and never deployed"
        assert "superseded by the newer upload" in rulebook.log()

        # An invalid bundle: a Failed record with the appspec error, and nothing touched.
        before = {h: most_recent(world, h) for h in hosts}
        versions["bad"] = site.upload(bundles["bad"])
        bad = site.wait_record(versions["bad"], ("Failed", "Succeeded"), 60, rulebook)
        assert bad["status"] == "Failed" and "os: expected linux, got 'plan9'" in bad["error"], bad
        assert bad["extra"]["trigger"]["version_id"] == versions["bad"]
        assert all(h["status"] == "Skipped" and not h["events"] for h in bad["hosts"]), bad["hosts"]
        assert {h: most_recent(world, h) for h in hosts} == before
        assert all(installed_version(world, h) == "v4" for h in hosts)
    finally:
        rulebook.stop()
    print(f"upload->event {noticed:.1f}s, upload->deployed {latency:.1f}s, deployment record {deploy_seconds:.1f}s")

    # v5 is uploaded while the rulebook is stopped. Restarted (polling this time), it deploys v5 and
    # replays nothing that the records name.
    versions["v5"] = site.upload(bundles["v5"])
    rulebook = Rulebook("auto_deploy", world.inventory, site.settings("fleet"), tmp_path / "eda-2", aws.env).start()
    try:
        fifth = site.wait_record(versions["v5"], ("Succeeded", "Failed"), deployed_within, rulebook)
        assert fifth["status"] == "Succeeded", fifth
        wait_jobs_done(rulebook, 1)
        time.sleep(INTERVAL)
        replayed = [e for e in received_at(rulebook.log()) if e != versions["v5"]]
    finally:
        rulebook.stop()
    assert not replayed, f"the restarted rulebook replayed {replayed}"
    assert [r["revision"].get("version") for r in site.records()] == [versions[v] for v in ("v2", "v4", "bad", "v5")]
    assert all(installed_version(world, h) == "v5" for h in hosts)


def wait_ready(rulebook: Rulebook, timeout: float = 90) -> None:
    """Until ansible-rulebook's rule engine is up and its source runs."""
    deadline = time.monotonic() + timeout
    while "Waiting for events" not in rulebook.log():
        assert time.monotonic() < deadline and rulebook.running, rulebook.log()[-4000:]
        time.sleep(0.2)


def wait_jobs_done(rulebook: Rulebook, count: int, timeout: float = 60) -> None:
    """Until the rulebook's log shows `count` finished playbook runs."""
    deadline = time.monotonic() + timeout
    while rulebook.log().count("PLAY RECAP") < count:
        assert time.monotonic() < deadline and rulebook.running, rulebook.log()[-4000:]
        time.sleep(0.2)


def received_at(log: str) -> dict[str, float]:
    """version id -> when ansible-rulebook received its s3_revision event (from --print-events)."""
    from datetime import datetime

    found = {}
    for block in log.split("[received event]")[1:]:
        when = re.search(r"'received_at': '([^']+)'", block)
        version = re.search(r"'version_id': '([^']+)'", block)
        if when and version and version.group(1) not in found:
            found[version.group(1)] = datetime.fromisoformat(when.group(1).replace("Z", "+00:00")).timestamp()
    return found


def _seconds(start: str, end: str) -> float:
    from datetime import datetime

    def parse(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    return (parse(end) - parse(start)).total_seconds()


def _ec2_inventory(world: Any, path: Path) -> Path:
    """An inventory directory: localhost (the playbooks' controller plays; ansible-rulebook limits runs to the
    ruleset's hosts, which leaves out an implicit localhost) and an amazon.aws.aws_ec2 source of the world's
    subnet, hosts named by instance id (evaluated at every run, so it knows an instance the moment it launches)."""
    path.mkdir()
    (path / "local.yml").write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": str(H_ROOT / ".venv" / "bin" / "python")}}}}))

    def literal(text: Any) -> str:  # a Jinja string literal for compose
        return "'" + str(text) + "'"

    (path / "fleet.aws_ec2.yml").write_text(yaml.safe_dump({
        "plugin": "amazon.aws.aws_ec2", "regions": [world.region],
        "filters": {"subnet-id": world.subnet_id, "instance-state-name": "running"},
        "hostnames": ["instance-id"],
        "compose": {"ansible_host": "private_ip_address", "ec2_instance_id": "instance_id",
                    "ansible_user": literal("root"), "ansible_ssh_private_key_file": literal(world.key_path),
                    "ansible_python_interpreter": literal("/usr/bin/python3"),
                    "ansible_ssh_common_args": literal(world.ssh_common_args()),
                    "ansible_control_path_dir": literal(world.control_path_dir)},
    }))
    return path


class Launches:
    """An Auto Scaling group in the fleet subnet behind a target group, and the SQS queue its launching hook
    notifies (the hook itself is put by the rollwright.deploy.asg_lifecycle_hook module: see hook_tasks)."""

    def __init__(self, world: Any) -> None:
        self.world = world
        self.asg, self.ec2, self.sqs = world.client("autoscaling"), world.client("ec2"), world.client("sqs")
        self.tg = H.create_target_group(world, [], name=H.unique("eda"), wait=False)
        template = self.ec2.create_launch_template(
            LaunchTemplateName=H.unique("eda-lt"), LaunchTemplateData={"ImageId": AMI, "InstanceType": "t3.micro"},
        )["LaunchTemplate"]["LaunchTemplateName"]
        self.name = H.unique("eda-asg")
        self.asg.create_auto_scaling_group(
            AutoScalingGroupName=self.name, LaunchTemplate={"LaunchTemplateName": template, "Version": "1"},
            MinSize=0, MaxSize=3, DesiredCapacity=0, VPCZoneIdentifier=world.subnet_id, TargetGroupARNs=[self.tg])
        self.queue_url = self.sqs.create_queue(QueueName=H.unique("eda-launches"))["QueueUrl"]
        self.queue_arn = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.seen_in_tg: set[str] = set()

    def hook_play(self) -> dict[str, Any]:
        """A play that puts the launching hook, twice (the second time changes nothing)."""
        hook = {"group": self.name, "heartbeat_timeout": 600, "notification_target_arn": self.queue_arn,
                "role_arn": "arn:aws:iam::123456789012:role/asg-lifecycle-to-sqs"}
        return {"name": "hook", "hosts": "localhost", "gather_facts": False, "tasks": [
            {"name": "put the hook", "rollwright.deploy.asg_lifecycle_hook": hook},
            {"name": "put it again", "rollwright.deploy.asg_lifecycle_hook": hook}]}

    def scale_to(self, count: int) -> str:
        before = set(self.instance_states())
        self.asg.set_desired_capacity(AutoScalingGroupName=self.name, DesiredCapacity=count)
        new = sorted(set(self.instance_states()) - before)
        assert len(new) == 1, new
        return new[0]

    def instance_states(self) -> dict[str, str]:
        group = self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[self.name])["AutoScalingGroups"][0]
        return {i["InstanceId"]: i["LifecycleState"] for i in group["Instances"]}

    def targets(self) -> dict[str, str]:
        found = {i: s for (i, _port), s in H.tg_states(self.world, self.tg).items()}
        self.seen_in_tg.update(found)
        return found

    def ec2_state(self, instance_id: str) -> str:
        return self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]


def test_scale_out_gets_the_last_successful_revision(fleet: Any, aws: Any, ansible_run: Any, tmp_path: Path) -> None:
    t0 = time.monotonic()

    def phase(what: str) -> None:
        print(f"{time.monotonic() - t0:6.1f}s {what}")

    world = fleet(2)
    world.start_ec2_sync()
    site = Site(world, tmp_path)
    deny = tmp_path / "deny-new-instances"
    # The revision fails validation on a host that finds the deny file while it installs.
    v1 = _bundle_with("v1", tmp_path / "bundles", {"deny.sh": f"#!/bin/sh\n[ -e {deny} ] && touch /srv/fail-validate\nexit 0\n"})
    version = site.upload(v1)
    etag = site.s3.head_object(Bucket=site.bucket, Key=PREFIX + "shop.zip", VersionId=version)["ETag"].strip('"')
    group = Launches(world)
    # ansible-rulebook starts (its JVM takes a while) while v1 is deployed and the hook is put.
    rulebook = Rulebook("scale_out", _ec2_inventory(world, tmp_path / "inventory"), {
        "rollwright_asg_names": group.name, "rollwright_asg_queue_url": group.queue_url, "rollwright_poll_interval": INTERVAL,
        "rollwright_application": APP, "rollwright_deployment_group": GROUP,
        "rollwright_record_sqlite_path": str(site.records_path)}, tmp_path / "eda", aws.env).start()
    try:
        res = ansible_run([{"ansible.builtin.import_playbook": str(H_ROOT / "playbooks" / "inplace.yml")}, group.hook_play()],
                          world.inventory, extra_vars={
            "rollwright_hosts": "fleet", "rollwright_application": APP, "rollwright_deployment_group": GROUP,
            "rollwright_deployment_config": "CodeDeployDefault.AllAtOnce", "rollwright_record_sqlite_path": str(site.records_path),
            "rollwright_revision": {"s3": {"bucket": site.bucket, "key": PREFIX + "shop.zip", "version": version, "etag": etag}}})
        assert res.rc == 0, res
        assert res.task("put the hook")["localhost"]["changed"] and not res.task("put it again")["localhost"]["changed"]
        phase("v1 deployed, hook put")
        wait_ready(rulebook)
        phase("rulebook ready")
        # Scale out by one: the instance is held until it has v1, then CONTINUE, then healthy in the target group.
        good = group.scale_to(1)
        assert group.instance_states()[good] == "Pending:Wait" and good not in group.targets()
        record = wait_scale_out(site, group, good, rulebook)
        assert record["status"] == "Succeeded", record
        assert good not in group.seen_in_tg, "the instance joined the target group before its deployment ended"
        assert record["revision"]["version"] == version and [h["name"] for h in record["hosts"]] == [good]
        assert record["extra"]["trigger"]["event"] == "asg_launch" and record["extra"]["trigger"]["group"] == group.name
        H.wait_until(lambda: group.instance_states().get(good) == "InService" and group.targets().get(good) == "healthy",
                     30, what=f"{good} InService and healthy in the target group")
        assert installed_version(world, good) == "v1"
        phase("scale-out CONTINUE")

        # A revision that fails on the new instance: ABANDON, terminated, never in the target group.
        deny.touch()
        broken = group.scale_to(2)
        record = wait_scale_out(site, group, broken, rulebook)
        assert record["status"] == "Failed", record
        H.wait_until(lambda: group.ec2_state(broken) in ("shutting-down", "terminated"), 30, what=f"{broken} abandoned")
        assert broken not in group.instance_states() and broken not in group.seen_in_tg
        wait_jobs_done(rulebook, 2)
        assert f"{broken} abandoned" in rulebook.log()
        phase("scale-out ABANDON")
    finally:
        rulebook.stop()
        world.stop_ec2_sync()
    assert group.instance_states()[good] == "InService" and group.targets()[good] == "healthy"


def wait_scale_out(site: Site, group: Launches, instance_id: str, rulebook: Rulebook, timeout: float = 120) -> dict[str, Any]:
    """The ended scale-out deployment of the instance (sampling the target group meanwhile)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        group.targets()
        found = [r for r in site.records() if (r["extra"].get("trigger") or {}).get("instance_id") == instance_id]
        if found and found[-1]["status"] in ("Succeeded", "Failed", "Stopped"):
            return found[-1]
        assert rulebook.running, rulebook.log()[-4000:]
        time.sleep(0.3)
    raise AssertionError(f"no ended deployment to {instance_id} after {timeout}s:\n{rulebook.log()[-6000:]}")


def test_pending_revision_info_without_eda(aws: Any, ansible_run: Any, tmp_path: Path) -> None:
    """The module a schedule uses instead of the event source: the same answers, from the same records."""
    s3 = aws.client("s3")
    bucket = H.unique("eda-pending").lower()
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    put = {v: s3.put_object(Bucket=bucket, Key=PREFIX + "app.zip", Body=v.encode()) for v in ("v1", "v2", "v3")}
    s3.put_object(Bucket=bucket, Key=PREFIX + "notes.txt", Body=b"not a bundle")
    s3.delete_object(Bucket=bucket, Key=PREFIX + "notes.txt")
    records = tmp_path / "records.sqlite3"
    args = {"application": APP, "deployment_group": GROUP, "bucket": bucket, "prefix": PREFIX, "sqlite_path": str(records)}

    def upload(version: str) -> dict[str, Any]:
        return {"bucket": bucket, "key": PREFIX + "app.zip", "version_id": put[version]["VersionId"]}

    def play() -> list[dict[str, Any]]:
        return [{"name": "pending", "hosts": "localhost", "gather_facts": False, "tasks": [
            {"name": "nothing deployed", "rollwright.deploy.pending_revision_info": args},
            {"name": "after v1", "rollwright.deploy.pending_revision_info": dict(args, upload=upload("v2"))},
            {"name": "in order", "rollwright.deploy.pending_revision_info": dict(args, upload=upload("v2"), order="in_order")},
        ]}]

    inventory = tmp_path / "local.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": str(H_ROOT / ".venv" / "bin" / "python")}}}}))
    res = ansible_run([dict(play()[0], tasks=play()[0]["tasks"][:1])], inventory, check=True)
    assert res.rc == 0, res
    first = res.task("nothing deployed")["localhost"]
    assert first["pending"] and [u["version_id"] for u in first["uploads"]] == [put["v3"]["VersionId"]]
    assert not records.exists(), "a read-only module must not create the records file"
    store = open_store("sqlite", {"path": str(records)})
    store.create(DeploymentRecord(application=APP, deployment_group=GROUP, status="Succeeded", revision={
        "source": "s3", "bucket": bucket, "key": PREFIX + "app.zip", "version": put["v1"]["VersionId"]}))
    store.close()
    res = ansible_run(play(), inventory)
    assert res.rc == 0, res
    after = res.task("after v1")["localhost"]
    assert after["pending"] and after["changed"] is False
    assert [u["version_id"] for u in after["uploads"]] == [put["v2"]["VersionId"], put["v3"]["VersionId"]]
    assert after["revision"] == {"s3": {"bucket": bucket, "key": PREFIX + "app.zip", "version": put["v3"]["VersionId"],
                                        "etag": put["v3"]["ETag"].strip('"')}}
    assert after["upload_status"] == "superseded"
    assert res.task("in order")["localhost"]["upload_status"] == "pending"


def test_sources_poll_without_a_queue(aws: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both event sources, loaded by path as ansible-rulebook loads them, in polling mode."""
    import asyncio

    for name, value in aws.env.items():  # the sources read AWS_* like ansible-rulebook's environment
        monkeypatch.setenv(name, value)

    sources = H_ROOT / "build" / "ansible_collections" / "rollwright" / "deploy" / "extensions" / "eda" / "plugins" / "event_source"

    def load(name: str) -> Any:
        # What runpy.run_path does for ansible-rulebook (under pytest, Ansible's collection path hook would claim it).
        path = sources / f"{name}.py"
        namespace: dict[str, Any] = {"__file__": str(path), "__name__": f"<run_path {name}>"}
        exec(compile(path.read_text(), str(path), "exec"), namespace)  # pylint: disable=exec-used  # noqa: S102
        return namespace["main"]

    s3_main, asg_main = load("s3_revisions"), load("asg_launches")
    s3, asg = aws.client("s3"), aws.client("autoscaling")
    bucket = H.unique("eda-poll").lower()
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    old = s3.put_object(Bucket=bucket, Key=PREFIX + "app.zip", Body=b"old")["VersionId"]
    records = tmp_path / "records.sqlite3"
    store = open_store("sqlite", {"path": str(records)})
    store.create(DeploymentRecord(application=APP, deployment_group=GROUP, status="Succeeded", revision={
        "source": "s3", "bucket": bucket, "key": PREFIX + "app.zip", "version": old}))
    store.close()
    group = Group(aws)

    async def scenario() -> list[dict[str, Any]]:
        queue: asyncio.Queue = asyncio.Queue()
        tasks = [asyncio.create_task(s3_main(queue, dict(bucket=bucket, prefix=PREFIX, interval=1, application=APP,
                                                         deployment_group=GROUP, record_sqlite_path=str(records)))),
                 asyncio.create_task(asg_main(queue, dict(groups=group.name, hook="hold", interval=1)))]
        # A first new upload: its event (from the start-up catch-up or the listing) shows the source is past its start.
        await asyncio.to_thread(s3.put_object, Bucket=bucket, Key=PREFIX + "app.zip", Body=b"mid")
        events = [await asyncio.wait_for(queue.get(), 30)]
        await asyncio.to_thread(s3.put_object, Bucket=bucket, Key=PREFIX + "notes.txt", Body=b"not a bundle")
        await asyncio.to_thread(s3.put_object, Bucket=bucket, Key=PREFIX + "app.zip", Body=b"new")
        await asyncio.to_thread(group.asg.set_desired_capacity, AutoScalingGroupName=group.name, DesiredCapacity=1)
        deadline = asyncio.get_running_loop().time() + 20
        while len(events) < 3 and asyncio.get_running_loop().time() < deadline:
            try:
                events.append(await asyncio.wait_for(queue.get(), 1))
            except asyncio.TimeoutError:
                pass
        await asyncio.sleep(2.5)  # two more polls: nothing is emitted twice
        while not queue.empty():
            events.append(queue.get_nowait())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return events

    events = asyncio.run(scenario())
    uploads = [e["s3_revision"] for e in events if "s3_revision" in e]
    launches = [e["asg_launch"] for e in events if "asg_launch" in e]
    versions = [v["VersionId"] for v in s3.list_object_versions(Bucket=bucket, Prefix=PREFIX + "app.zip")["Versions"]]
    assert [u["version_id"] for u in uploads] == versions[1::-1], events  # mid then new; never the handled one
    assert uploads[1]["source"] == "listing" and uploads[1]["prefix"] == PREFIX and uploads[1]["order"] == "latest"
    (held,) = group.states()
    assert launches == [{"group": group.name, "instance_id": held, "hook": "hold", "token": None, "source": "polling"}]
