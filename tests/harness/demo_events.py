# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``python -m tests.harness demo-events`` (``make demo-events``): an upload deploys itself.

Brings up a world of 2 SSH hosts and the AWS emulator, a versioned S3 bucket whose uploads notify an
SQS queue, and starts the real ``ansible-rulebook -r rollwright.deploy.auto_deploy``. It then
uploads v1 and v2 of the sample application, one after the other, and shows each one deployed by
the rulebook (what each host serves, the record and what triggered it). Bounded: every wait has a
deadline; the rulebook and the world are stopped and torn down at the end, even on failure.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.bundles import build_bundle
from tests.harness.demo import _serving
from tests.harness.rulebook import Rulebook
from tests.harness.world import ROOT, down, up

APPLICATION = "sample"
GROUP = "demo"
BUCKET = "demo-events-releases"
PREFIX = "sample/"
DEPLOY_TIMEOUT = 240  # seconds for one upload to be deployed


def _record(records: Path, version_id: str) -> dict[str, Any] | None:
    if not records.exists():
        return None
    # The collection, as Ansible sees it (pytest has build/ on its path; this command may not).
    if str(ROOT / "build") not in sys.path:
        sys.path.append(str(ROOT / "build"))
    from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_store

    store = open_store("sqlite", {"path": str(records)})
    try:
        for found in store.list(APPLICATION, GROUP, limit=20):
            if found.revision.get("version") == version_id:
                return store.get(found.deployment_id).to_dict()
    finally:
        store.close()
    return None


def _bucket_and_queue(world: Any) -> str:
    s3, sqs = world.client("s3"), world.client("sqs")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    url = sqs.create_queue(QueueName="demo-events-uploads")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(Bucket=BUCKET, NotificationConfiguration={"QueueConfigurations": [{
        "QueueArn": arn, "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": PREFIX}]}}}]})
    return url


def demo_events() -> int:
    """Run the demo; returns the process exit code."""
    started = time.monotonic()
    ok = True
    with tempfile.TemporaryDirectory(prefix="rollwright-demo-events-") as tmp:
        world_dir, records = Path(tmp) / "demo", Path(tmp) / "records.sqlite3"
        rulebook = None
        try:
            print("== bringing up a world: 2 SSH hosts + the AWS emulator ...", flush=True)
            world = up(world_dir, 2)
            queue_url = _bucket_and_queue(world)
            print(f"== versioned bucket s3://{BUCKET}/{PREFIX} notifies the SQS queue {queue_url.rsplit('/', 1)[1]}")
            settings = {"rollwright_bucket": BUCKET, "rollwright_prefix": PREFIX, "rollwright_queue_url": queue_url,
                        "rollwright_poll_interval": 2, "rollwright_application": APPLICATION,
                        "rollwright_deployment_group": GROUP, "rollwright_hosts": "fleet",
                        "rollwright_record_sqlite_path": str(records)}
            rulebook = Rulebook("auto_deploy", world.inventory, settings, Path(tmp) / "eda", world.aws_env()).start()
            print(f"== ansible-rulebook -r rollwright.deploy.auto_deploy (log {rulebook.log_path.name}) ... ", flush=True)
            deadline = time.monotonic() + 120
            while "Waiting for events" not in rulebook.log():
                if time.monotonic() > deadline or not rulebook.running:
                    raise RuntimeError(f"ansible-rulebook did not start:\n{rulebook.log()[-3000:]}")
                time.sleep(0.5)
            for version in ("v1", "v2"):
                bundle = build_bundle(version, Path(tmp) / "bundles")
                put = world.client("s3").put_object(Bucket=BUCKET, Key=PREFIX + "sample.zip", Body=bundle.read_bytes())
                uploaded = time.monotonic()
                print(f"\n== uploaded {version}: s3://{BUCKET}/{PREFIX}sample.zip version {put['VersionId']}", flush=True)
                record = None
                while time.monotonic() - uploaded < DEPLOY_TIMEOUT:
                    record = _record(records, put["VersionId"])
                    if record and record["status"] in ("Succeeded", "Failed", "Stopped"):
                        break
                    if not rulebook.running:
                        raise RuntimeError(f"ansible-rulebook ended:\n{rulebook.log()[-3000:]}")
                    time.sleep(0.5)
                if not record or record["status"] != "Succeeded":
                    ok = False
                    print(f"   not deployed within {DEPLOY_TIMEOUT}s: {record and record['status']}")
                    break
                print(f"   deployed by the rulebook {time.monotonic() - uploaded:.1f}s after the upload: "
                      f"{record['deployment_id']} {record['status']}")
                print(f"   triggered by: {record['extra'].get('trigger')}")
                for name, answer in _serving(world).items():
                    print(f"   {name:6} serves {answer}")
                    ok &= answer == f"sample-app {version}"
        except Exception as exc:  # pylint: disable=broad-except
            ok = False
            print(f"demo failed: {exc}")
        finally:
            if rulebook is not None:
                rulebook.stop()
                print(f"== ansible-rulebook stopped; its log:\n   ...{rulebook.log()[-1500:]}" if not ok else
                      "== ansible-rulebook stopped")
            down(world_dir)
            print(f"== world torn down; total {time.monotonic() - started:.1f}s")
    print("demo-events: OK" if ok else "demo-events: FAILED")
    return 0 if ok else 1
