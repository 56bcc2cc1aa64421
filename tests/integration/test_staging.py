# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 14: pre-staged revisions and the host-side download through a presigned URL, end to end.

One 3-host world serves the module. A sampler thread reads the target group's healthy count every 100 ms (with
wall-clock times, comparable with the staging times the hosts write) and, for the presigned runs, every process's
command line. Hosts are read through nsenter and over HTTP from the root namespace, never through rollwright code.
The hosts reach the emulator's S3 through a relay on the world's bridge (tests/harness/s3_gateway.py).
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.host.staging import INLINE_BUNDLE_MAX
from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_store
from tests.bundles import build_bundle
from tests.harness.s3_gateway import S3Gateway
from tests.integration import inplace_helpers as H

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

PLAYBOOK = "rollwright.deploy.inplace"
N_HOSTS = 3
KEY = "shop/sample-app.zip"
STATE = "/var/lib/rollwright"


@pytest.fixture(scope="module")
def world(aws: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    with H.fleet_world(aws, tmp_path_factory, N_HOSTS, "staging-world") as made:
        yield made


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("staging-bundles")
    made = {v: build_bundle(v, out) for v in ("v1", "v2", "v3")}
    # larger than what travels inside the module's arguments, whatever the compression: copied to the hosts as a file
    padding = base64.b64encode(os.urandom(INLINE_BUNDLE_MAX * 3 // 2)).decode("ascii")
    made["large"] = build_bundle("v4", tmp_path_factory.mktemp("staging-large"), extra_files={"app/padding.txt": padding})
    assert made["large"].stat().st_size > INLINE_BUNDLE_MAX and made["v3"].stat().st_size <= INLINE_BUNDLE_MAX
    return made


class Sampler:
    """Healthy count of a target group (wall clock) and, optionally, every process's command line."""

    def __init__(self, world: Any, arn: str, needle: str = "") -> None:
        self.world, self.arn, self.needle = world, arn, needle
        self.samples: list[tuple[float, int]] = []
        self.cmdlines_with_needle: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        client = self.world.client("elbv2")
        while not self._stop.is_set():
            states = H.tg_states(self.world, self.arn, client)
            self.samples.append((time.time(), sum(1 for s in states.values() if s == "healthy")))
            if self.needle:
                for pid in os.listdir("/proc"):
                    try:
                        with open(f"/proc/{pid}/cmdline", "rb") as handle:
                            line = handle.read().decode("utf-8", "replace")
                    except OSError:
                        continue
                    if self.needle in line:
                        self.cmdlines_with_needle.append(line)
            self._stop.wait(0.1)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(10)

    def first_below(self, count: int) -> float:
        return next((t for t, c in self.samples if c < count), float("inf"))


def run(world: Any, ansible_run: Any, tmp: Path, app: str, revision: str, check: bool = False, **extra: Any) -> Any:
    extra_vars = {"rollwright_hosts": "fleet", "rollwright_application": app, "rollwright_deployment_group": "g",
                  "rollwright_revision": revision, "rollwright_file_exists_behavior": "OVERWRITE",
                  "rollwright_record_sqlite_path": str(tmp / "records.sqlite3"), "rollwright_healthy_timeout": 30,
                  **extra}
    return ansible_run(PLAYBOOK, world.inventory, extra_vars=extra_vars, check=check, timeout=240)


def record(tmp: Path, deployment_id: str) -> dict[str, Any]:
    return open_store("sqlite", {"path": str(tmp / "records.sqlite3")}).get(deployment_id).to_dict()


def host_dirs(world: Any, app: str) -> dict[str, dict[str, Any]]:
    """host -> {deployment id: {status, archive, staged}} read on the host."""
    script = (f"cd {STATE}/{app}/g/deployments 2>/dev/null || exit 0; for d in d-*; do [ -d \"$d\" ] || continue; "
              "printf '%s %s %s %s\\n' \"$d\" \"$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[\"status\"])' "
              "$d/status.json 2>/dev/null)\" \"$([ -d $d/archive ] && echo archive || echo -)\" "
              "\"$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get(\"staged\", {}).get(\"at\", \"-\"))' "
              "$d/revision.json 2>/dev/null)\"; done")
    out = {}
    for h in world.hosts:
        lines = world.fleet.exec(h.name, ["sh", "-c", script]).stdout.split("\n")
        out[h.name] = {p[0]: {"status": p[1], "archive": p[2] == "archive", "staged_at": p[3]}
                       for p in (line.split() for line in lines if line.strip())}
    return out


def fresh(world: Any, prefix: str) -> tuple[str, list[str], str]:
    """Hosts reset; a new application name, the host names, a new target group with every host (healthy)."""
    H.reset_hosts(world)
    return H.unique(prefix), [h.name for h in world.hosts], H.create_target_group(world, [h.instance_id for h in world.hosts])


def test_staged_before_any_host_leaves_and_a_failed_staging_changes_nothing(world: Any, ansible_run: Any, bundles: dict,
                                                                            tmp_path: Path) -> None:
    app, names, arn = fresh(world, "stg")

    # 1. v1, staged: every host staged before the first one left the target group; batches used the staged copy,
    #    which is the only unpacked revision left, and nothing stays Staged
    with Sampler(world, arn) as sampled:
        first = run(world, ansible_run, tmp_path, app, str(bundles["v1"]), rollwright_target_group_arns=arn,
                    rollwright_deployment_config="CodeDeployDefault.HalfAtATime")
    assert first.rc == 0, first
    d1 = H.deployment_fact(first)["deployment_id"]
    dirs = host_dirs(world, app)
    staged_at = [float(dirs[n][d1]["staged_at"]) for n in names]
    assert max(staged_at) < sampled.first_below(N_HOSTS) < float("inf"), (staged_at, sampled.samples[:20])
    events = {h["name"]: {e["name"]: e for e in h["events"]} for h in record(tmp_path, d1)["hosts"]}
    for name in names:
        assert "staged before the batch" in events[name]["DownloadBundle"]["message"], events[name]
    assert {n: H.installed(world, n) for n in names} == {n: "sample-app v1" for n in names}
    assert all({d: (i["status"], i["archive"]) for d, i in dirs[n].items()} == {d1: ("Succeeded", True)} for n in names), dirs

    # 2. --check stages nothing
    checked = run(world, ansible_run, tmp_path, app, str(bundles["v2"]), check=True, rollwright_target_group_arns=arn)
    assert checked.rc == 0, checked
    assert host_dirs(world, app) == dirs

    # 3. v2 with host2's deployments directory swapped for a symlink (hostile): staging fails there, the deployment
    #    fails naming it, no host ever left the target group, the others' staged copies are removed
    bad = names[1]
    deployments = f"{STATE}/{app}/g/deployments"
    world.fleet.exec(bad, ["sh", "-c", f"mv {deployments} {deployments}.real && ln -s {deployments}.real {deployments}"])
    try:
        with Sampler(world, arn) as sampled:
            failed = run(world, ansible_run, tmp_path, app, str(bundles["v2"]), rollwright_target_group_arns=arn)
    finally:
        world.fleet.exec(bad, ["sh", "-c", f"rm {deployments} && mv {deployments}.real {deployments}"])
    assert failed.rc != 0, failed
    assert min(c for _t, c in sampled.samples) == N_HOSTS, sampled.samples
    fact = H.deployment_fact(failed)
    assert fact["status"] == "Failed", fact
    assert "staging failed on 1 of 3 host(s) before any host left its load balancer" in fact["error"], fact["error"]
    assert bad in fact["error"] and "symlink" in fact["error"], fact["error"]
    d2 = fact["deployment_id"]
    hosts = {h["name"]: h["status"] for h in record(tmp_path, d2)["hosts"]}
    assert hosts == {n: "Failed" if n == bad else "Skipped" for n in names}, hosts
    assert all(d2 not in host_dirs(world, app)[n] for n in names), host_dirs(world, app)
    discarded = [t["hosts"] for t in failed.tasks() if t["name"].endswith("Remove staged copies no batch used")][0]
    assert sorted(n for n, r in discarded.items() if r.get("changed")) == sorted(set(names) - {bad}), discarded
    assert {n: H.served(h.address) for n, h in zip(names, world.hosts)} == {n: "sample-app v1" for n in names}

    # 4. without staging, a small bundle travels inside each batch call's arguments and a large one is copied as a
    #    file; both deploy, and each host's DownloadBundle message says which way it came
    for bundle, version, sent in ((bundles["v3"], "v3", True), (bundles["large"], "v4", False)):
        done = run(world, ansible_run, tmp_path, app, str(bundle), rollwright_target_group_arns=arn, rollwright_stage=False,
                   rollwright_deployment_config="CodeDeployDefault.AllAtOnce")
        assert done.rc == 0, done
        downloads = {h["name"]: {e["name"]: e for e in h["events"]}["DownloadBundle"]["message"]
                     for h in record(tmp_path, H.deployment_fact(done)["deployment_id"])["hosts"]}
        assert all(("sent with the call" in message) is sent for message in downloads.values()), downloads
        assert {n: H.served(h.address) for n, h in zip(names, world.hosts)} == {n: f"sample-app {version}" for n in names}


def test_one_call_per_host_reads_and_stages_then_the_plan_follows_the_hosts(world: Any, ansible_run: Any,
                                                                            bundles: dict, tmp_path: Path) -> None:
    """With staging, no call reads the hosts before the deployment starts: each staging call reads its host's state
    before it stages, and the staging step plans again from those states - the host already on the revision is
    skipped and its staged copy discarded, the host that never ran the application goes before the one on an older
    revision."""
    app, names, arn = fresh(world, "stgread")
    current, older, never = names
    for host, bundle in ((current, bundles["v1"]), (older, bundles["v2"])):
        done = run(world, ansible_run, tmp_path, app, str(bundle), rollwright_target_group_arns=arn, rollwright_hosts=host)
        assert done.rc == 0, done
        # A first deployment: the session started in the staging call (BeforeBlockTraffic in it, as the host was not
        # read yet) is taken over, with no call for that event; it is recorded as for any host not called.
        assert "batch 1: host sessions started ahead on 1 of 1 host(s)" in done.stdout, done.stdout
        (only,) = record(tmp_path, H.deployment_fact(done)["deployment_id"])["hosts"]
        before_block = {e["name"]: e for e in only["events"]}["BeforeBlockTraffic"]
        assert (before_block["status"], before_block["message"]) == (
            "Skipped", "first deployment on this host: no previous revision to run scripts of"), before_block

    result = run(world, ansible_run, tmp_path, app, str(bundles["v1"]), rollwright_target_group_arns=arn)
    assert result.rc == 0, result
    fact = H.deployment_fact(result)
    assert fact["status"] == "Succeeded", fact
    deployment_id = fact["deployment_id"]
    assert f"planned again with the hosts' states: batches [['{never}'], ['{older}']], 1 already on the revision" \
        in result.stdout, result.stdout
    # The first batch planned from the load balancer alone was the first host: its session started in its staging
    # call, and was aborted (and ended) before its staged copy was discarded. The planned-again first batch's session
    # starts once the plan is known; that batch starts the second one's.
    for batch in (1, 2):
        assert f"batch {batch}: host sessions started ahead on 1 of 1 host(s)" in result.stdout, result.stdout
    steps = {t["name"].split(" : ")[-1]: next(iter(t["hosts"].values())) for t in result.tasks()
             if t["name"].startswith("rollwright.deploy.inplace : ") and t["hosts"]}
    started = steps["Start the deployment (revision, appspec, host order, record, lock)"]
    staged = [r for n, r in steps.items() if n.startswith("Stage the revision on every host")][0]
    assert "read_hosts" not in started["seconds"] and {"revision", "record"} <= set(started["seconds"]), started["seconds"]
    assert {"stage", "plan", "sessions"} <= set(staged["seconds"]), staged["seconds"]
    hosts = {h["name"]: h for h in record(tmp_path, deployment_id)["hosts"]}
    assert {n: h["status"] for n, h in hosts.items()} == {current: "Skipped", older: "Succeeded", never: "Succeeded"}
    order = sorted((older, never), key=lambda n: {e["name"]: e for e in hosts[n]["events"]}["BlockTraffic"]["start_time"])
    assert order == [never, older]
    dirs = host_dirs(world, app)
    assert deployment_id not in dirs[current], dirs[current]  # staged, then discarded: it was already on v1
    assert {dirs[n][deployment_id]["status"] for n in (older, never)} == {"Succeeded"}, dirs
    assert {n: H.served(h.address) for n, h in zip(names, world.hosts)} == {n: "sample-app v1" for n in names}


def _s3_revision(aws: Any, out: Path) -> tuple[str, dict[str, dict[str, str]]]:
    s3 = aws.client("s3")
    bucket = H.unique("rw-stg")
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    versions = {}
    for version in ("v1", "v2", "v3"):
        put = s3.put_object(Bucket=bucket, Key=KEY, Body=build_bundle(version, out).read_bytes())
        versions[version] = {"id": put["VersionId"], "etag": put["ETag"].strip('"')}
    return bucket, versions


def test_presigned_download_deploys_the_exact_version_and_refuses_a_tampered_one(world: Any, aws: Any, ansible_run: Any,
                                                                                 tmp_path: Path) -> None:
    app, names, arn = fresh(world, "psg")
    bucket, v = _s3_revision(aws, tmp_path / "b")
    revision = f"s3://{bucket}/{KEY}?versionId={v['v2']['id']}&etag={v['v2']['etag']}"
    gateway_address = world.describe()["gateway"]

    # v2 (not the key's current version) through presigned URLs, downloaded inside the batch (staging off)
    with S3Gateway(gateway_address, world.endpoint) as gateway, Sampler(world, arn, needle="X-Amz-Signature") as sampled:
        done = run(world, ansible_run, tmp_path, app, revision, rollwright_target_group_arns=arn,
                   rollwright_deployment_config="CodeDeployDefault.AllAtOnce", rollwright_stage=False,
                   rollwright_bundle_transfer="presigned", rollwright_bundle_url_endpoint=gateway.endpoint_url)
    assert done.rc == 0, done
    assert {n: H.served(h.address) for n, h in zip(names, world.hosts)} == {n: "sample-app v2" for n in names}
    gets = [r for r in gateway.requests if r.startswith("GET ") and "X-Amz-Signature=" in r]
    assert len(gets) == N_HOSTS and all(f"versionId={v['v2']['id']}" in r for r in gets), gateway.requests
    signatures = {r.split("X-Amz-Signature=")[1].split("&")[0].split(" ")[0] for r in gets}
    deployment_id = H.deployment_fact(done)["deployment_id"]
    stored = json.dumps(record(tmp_path, deployment_id))
    for signature in signatures:
        assert signature not in done.stdout and signature not in done.stderr and signature not in stored
    assert sampled.cmdlines_with_needle == []

    # v3 staged through presigned URLs, but the relay serves v2's bytes for v3's URL: every host refuses it at
    # staging, before any host leaves the target group; the hosts keep v2
    def tamper(line: str) -> str:
        return line.replace(v["v3"]["id"], v["v2"]["id"])

    revision3 = f"s3://{bucket}/{KEY}?versionId={v['v3']['id']}&etag={v['v3']['etag']}"
    with S3Gateway(gateway_address, world.endpoint, rewrite=tamper) as gateway, Sampler(world, arn) as sampled:
        refused = run(world, ansible_run, tmp_path, app, revision3, rollwright_target_group_arns=arn,
                      rollwright_bundle_transfer="presigned", rollwright_bundle_url_endpoint=gateway.endpoint_url)
    assert refused.rc != 0, refused
    assert min(c for _t, c in sampled.samples) == N_HOSTS, sampled.samples
    fact = H.deployment_fact(refused)
    assert "staging failed on 3 of 3 host(s)" in fact["error"] and "refusing to unpack it" in fact["error"], fact["error"]
    assert {n: H.served(h.address) for n, h in zip(names, world.hosts)} == {n: "sample-app v2" for n in names}
    assert all(fact["deployment_id"] not in kept for kept in host_dirs(world, app).values())
    assert "X-Amz-Signature" not in refused.stdout + json.dumps(record(tmp_path, fact["deployment_id"]))
