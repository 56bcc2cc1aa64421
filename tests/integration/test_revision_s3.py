# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Revisions from S3 against the moto server over HTTP, and the revision/appspec_info modules run by Ansible."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import uuid
import zipfile
from pathlib import Path

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.revisions.revision import (
    RevisionError,
    fetch_s3_bundle,
    safe_extract,
)

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv" / "bin"

APPSPEC = """version: 0.0
os: linux
files:
  - source: /
    destination: /opt/app
hooks:
  ApplicationStart:
    - location: scripts/start.sh
      timeout: 60
"""


def bundle_bytes(marker: str, appspec: str = APPSPEC) -> bytes:
    buf = io.BytesIO()
    stamp = (2024, 1, 2, 3, 4, 6)  # fixed times: the same marker always gives the same bytes
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data, mode in (("appspec.yml", appspec, 0o644), ("scripts/start.sh", "#!/bin/sh\necho %s\n" % marker, 0o755),
                                 ("VERSION", marker, 0o644)):
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.create_system = 3
            info.external_attr = (0o100000 | mode) << 16
            zf.writestr(info, data)
    return buf.getvalue()


class CallCounter:
    """Counts S3 API calls made by a boto3 client (botocore 'before-call' events)."""

    def __init__(self, client):
        self.calls: list[str] = []
        client.meta.events.register("before-call.s3", self._on_call)

    def _on_call(self, model, **_kwargs):
        self.calls.append(model.name)

    def count(self, op: str) -> int:
        return self.calls.count(op)


@pytest.fixture
def s3(aws):
    return aws.client("s3")


@pytest.fixture
def versioned_bucket(s3):
    name = "rev-%s" % uuid.uuid4().hex[:10]
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def put(s3, bucket, key, body):
    r = s3.put_object(Bucket=bucket, Key=key, Body=body)
    return r.get("VersionId"), r["ETag"].strip('"')


def test_fetch_by_old_version_gets_old_bytes(s3, versioned_bucket, tmp_path):
    v1_bytes, v2_bytes = bundle_bytes("one"), bundle_bytes("two")
    v1, etag1 = put(s3, versioned_bucket, "app/app.zip", v1_bytes)
    v2, _etag2 = put(s3, versioned_bucket, "app/app.zip", v2_bytes)
    assert v1 and v2 and v1 != v2

    got = fetch_s3_bundle(s3, versioned_bucket, "app/app.zip", str(tmp_path), version=v1)
    assert Path(got.path).read_bytes() == v1_bytes
    assert (got.bundle_type, got.version, got.etag) == ("zip", v1, etag1)
    assert got.sha256 == hashlib.sha256(v1_bytes).hexdigest() and got.size == len(v1_bytes)
    assert got.downloaded
    root = safe_extract(got.path, str(tmp_path / "out"))
    assert (Path(root) / "VERSION").read_text() == "one"
    assert os.stat(Path(root) / "scripts" / "start.sh").st_mode & 0o777 == 0o755

    latest = fetch_s3_bundle(s3, versioned_bucket, "app/app.zip", str(tmp_path))
    assert Path(latest.path).read_bytes() == v2_bytes and latest.version == v2


def test_etag_match_with_quotes(s3, versioned_bucket, tmp_path):
    v, etag = put(s3, versioned_bucket, "a.zip", bundle_bytes("x"))
    assert etag == hashlib.md5(bundle_bytes("x")).hexdigest()
    got = fetch_s3_bundle(s3, versioned_bucket, "a.zip", str(tmp_path), version=v, etag='"%s"' % etag)
    assert got.etag == etag


def test_etag_mismatch_shows_both_and_leaves_nothing(s3, versioned_bucket, tmp_path):
    _v, etag = put(s3, versioned_bucket, "a.zip", bundle_bytes("x"))
    wrong = "0" * 32
    with pytest.raises(RevisionError) as exc:
        fetch_s3_bundle(s3, versioned_bucket, "a.zip", str(tmp_path), etag=wrong)
    msg = str(exc.value)
    assert msg.startswith("s3.etag: ETag mismatch for s3://%s/a.zip" % versioned_bucket)
    assert "expected %s" % wrong in msg and "the object has %s" % etag in msg
    assert os.listdir(tmp_path) == []


def test_missing_object_and_version(s3, versioned_bucket, tmp_path):
    with pytest.raises(RevisionError, match=r"^s3\.key: object s3://%s/nope\.zip not found" % versioned_bucket):
        fetch_s3_bundle(s3, versioned_bucket, "nope.zip", str(tmp_path))
    put(s3, versioned_bucket, "a.zip", bundle_bytes("x"))
    with pytest.raises(RevisionError, match=r"^s3\.version: version '\w+' of s3://%s/a\.zip not found" % versioned_bucket):
        fetch_s3_bundle(s3, versioned_bucket, "a.zip", str(tmp_path), version="3HL4kqtJlcpXroDTDmJ" + "x" * 13)
    with pytest.raises(RevisionError, match=r"^s3\.bucket: bucket 'no-such-bucket-rw' does not exist"):
        fetch_s3_bundle(s3, "no-such-bucket-rw", "a.zip", str(tmp_path), version="v", etag="e")
    assert [p for p in os.listdir(tmp_path) if not p.endswith(".json")] == []


def test_cache_reuse_makes_no_get_object(s3, versioned_bucket, tmp_path):
    v, etag = put(s3, versioned_bucket, "c.zip", bundle_bytes("cached"))
    counter = CallCounter(s3)
    first = fetch_s3_bundle(s3, versioned_bucket, "c.zip", str(tmp_path), version=v, etag=etag)
    assert counter.count("GetObject") == 1 and first.downloaded

    second = fetch_s3_bundle(s3, versioned_bucket, "c.zip", str(tmp_path), version=v, etag=etag)
    assert counter.count("GetObject") == 1 and counter.count("HeadObject") == 0  # pinned identity: no S3 call at all
    assert second == first and not second.downloaded

    # unpinned: one HeadObject learns the same (version, ETag) identity, so the cached copy is used
    third = fetch_s3_bundle(s3, versioned_bucket, "c.zip", str(tmp_path))
    assert counter.count("GetObject") == 1 and counter.count("HeadObject") == 1
    assert third == first

    # a corrupted cache file is not trusted
    Path(first.path).write_bytes(b"tampered")
    again = fetch_s3_bundle(s3, versioned_bucket, "c.zip", str(tmp_path), version=v, etag=etag)
    assert counter.count("GetObject") == 2 and Path(again.path).read_bytes() == bundle_bytes("cached")


def test_unversioned_bucket_new_upload_is_fetched(s3, tmp_path):
    bucket = "plain-%s" % uuid.uuid4().hex[:10]
    s3.create_bucket(Bucket=bucket)
    put(s3, bucket, "a.zip", bundle_bytes("first"))
    one = fetch_s3_bundle(s3, bucket, "a.zip", str(tmp_path))
    assert one.version is None
    put(s3, bucket, "a.zip", bundle_bytes("second"))
    two = fetch_s3_bundle(s3, bucket, "a.zip", str(tmp_path))
    assert two.path != one.path and Path(two.path).read_bytes() == bundle_bytes("second")


# ---------------------------------------------------------------------------------------------
# the modules, run by Ansible
# ---------------------------------------------------------------------------------------------


def run_module(aws, module: str, args: dict, check: bool = False) -> tuple[int, dict]:
    env = dict(os.environ)
    env.update(aws.env)
    env.update({"ANSIBLE_COLLECTIONS_PATH": str(ROOT / "build"), "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0",
                "ANSIBLE_LOCALHOST_WARNING": "0", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0"})
    cmd = [str(VENV / "ansible"), "localhost", "-m", module, "-a", json.dumps(args),
           "-e", "ansible_python_interpreter=%s" % (VENV / "python")]
    if check:
        cmd.append("--check")
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=120, cwd=str(ROOT))
    m = re.search(r"^localhost \| (SUCCESS|CHANGED|FAILED!) => (\{.*\})\s*$", proc.stdout, re.S | re.M)
    assert m, "unexpected output:\n%s\n%s" % (proc.stdout, proc.stderr)
    return proc.returncode, json.loads(m.group(2))


def test_revision_module_s3(aws, s3, versioned_bucket, tmp_path):
    v, etag = put(s3, versioned_bucket, "rel/app-1.zip", bundle_bytes("mod"))
    args = {"s3": {"bucket": versioned_bucket, "key": "rel/app-1.zip", "version": v, "etag": etag},
            "cache_dir": str(tmp_path / "cache")}

    rc, res = run_module(aws, "rollwright.deploy.revision", args, check=True)
    assert rc == 0 and res["changed"] is True and res["appspec"] is None
    assert res["bundle"]["etag"] == etag and res["bundle"]["size"] == len(bundle_bytes("mod")) and res["bundle"]["sha256"] is None
    assert not (tmp_path / "cache").exists() or os.listdir(tmp_path / "cache") == []

    rc, res = run_module(aws, "rollwright.deploy.revision", args)
    assert rc == 0 and res["changed"] is True
    b = res["bundle"]
    assert (b["source"], b["bucket"], b["key"], b["version"], b["etag"], b["bundle_type"]) == (
        "s3", versioned_bucket, "rel/app-1.zip", v, etag, "zip")
    assert b["sha256"] == hashlib.sha256(bundle_bytes("mod")).hexdigest()
    assert Path(b["path"]).read_bytes() == bundle_bytes("mod")
    assert res["appspec"]["hooks"] == {"ApplicationStart": [{"location": "scripts/start.sh", "timeout": 60, "runas": None}]}
    assert res["appspec_path"] == "appspec.yml"

    rc, again = run_module(aws, "rollwright.deploy.revision", args)
    assert rc == 0 and again["changed"] is False and again["bundle"] == b

    rc, bad = run_module(aws, "rollwright.deploy.revision", dict(args, s3=dict(args["s3"], etag="f" * 32)))
    assert rc != 0 and "s3.etag: ETag mismatch" in bad["msg"] and "f" * 32 in bad["msg"] and etag in bad["msg"]

    rc, both = run_module(aws, "rollwright.deploy.revision", dict(args, path=str(tmp_path)))
    assert rc != 0 and "mutually exclusive" in both["msg"] and "s3" in both["msg"] and "path" in both["msg"]


def test_revision_module_rejects_invalid_appspec_in_s3_bundle(aws, s3, versioned_bucket, tmp_path):
    broken = APPSPEC.replace("timeout: 60", "timeout: abc").replace("scripts/start.sh", "scripts/missing.sh")
    v, _etag = put(s3, versioned_bucket, "bad.zip", bundle_bytes("bad", broken))
    rc, res = run_module(aws, "rollwright.deploy.revision",
                         {"s3": {"bucket": versioned_bucket, "key": "bad.zip", "version": v}, "cache_dir": str(tmp_path)})
    assert rc != 0
    assert res["errors"] == ["appspec.yml: hooks.ApplicationStart[0].timeout: expected an integer > 0 (seconds), got 'abc'"]


def test_appspec_info_module(aws, tmp_path):
    app = tmp_path / "app"
    (app / "scripts").mkdir(parents=True)
    (app / "scripts" / "start.sh").write_text("#!/bin/sh\n")
    (app / "appspec.yml").write_text(APPSPEC)
    rc, res = run_module(aws, "rollwright.deploy.appspec_info", {"path": str(app)}, check=True)
    assert rc == 0 and res["changed"] is False and res["errors"] == []
    assert res["appspec"]["files"] == [{"source": "/", "destination": "/opt/app"}]

    (app / "appspec.yml").write_text(APPSPEC.replace("linux", "windows").replace("ApplicationStart", "Install"))
    rc, res = run_module(aws, "rollwright.deploy.appspec_info", {"path": str(app / "appspec.yml")})
    assert rc != 0 and len(res["errors"]) == 2
    assert any("os: Windows hosts are not supported" in e for e in res["errors"])
    assert any("hooks.Install:" in e for e in res["errors"])
