# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 14, host side: staging a revision ahead of the batch, installing from the staged copy, discarding unused
copies, the presigned download (served by a local HTTP server), and the staged copy against a hostile user.

Real files in temp dirs. The hostile cases attack the staged copy between staging and its use (symlink swap,
replaced file, file turned into a link to a victim) and assert that the batch refuses it and the victim tree
outside the appspec destinations is unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import shutil
import threading

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.host import events as hev
from ansible_collections.rollwright.deploy.plugins.module_utils.host import state as hst
from ansible_collections.rollwright.deploy.plugins.module_utils.host import unpack as hun
from ansible_collections.rollwright.deploy.plugins.module_utils.host import staging as hs
from tests.unit.test_hostile_host import _bundle_tgz, _request, victim  # noqa: F401  # pylint: disable=unused-import

DEP = "d-STAGED001"
BATCH = ["DownloadBundle", "BeforeInstall", "Install"]
FILES = {"appspec.yml": "version: 0.0\n", "site/index.html": "v2", "site/conf/app.conf": "a=1"}


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def staged(tmp_path):
    """A revision staged for DEP: (state, bundle path, its sha256, revision dict)."""
    bundle = _bundle_tgz(tmp_path / "b.tgz", FILES)
    revision = {"source": "local", "sha256": _sha(bundle), "bundle_type": "tgz"}
    state = hst.HostState(str(tmp_path / "state"), "app", "dg")
    run = hev.HostDeployment(state, _request(DEP, ["DownloadBundle"], tmp_path / "dest", bundle, revision=revision,
                                             staging="stage")).execute()
    assert not run.failed, run.message
    return state, bundle, revision


def _batch(tmp_path, state, revision, deployment_id=DEP, **extra):
    return hev.HostDeployment(state, _request(deployment_id, BATCH, tmp_path / "dest", None, revision=revision,
                                              **extra)).execute()


def test_stage_unpacks_and_fingerprints_without_moving_pointers(tmp_path, staged):
    state, _bundle, revision = staged
    assert state.load_status(DEP)["status"] == hs.STAGED
    record = state.load_revision(DEP)
    assert record["sha256"] == revision["sha256"] and len(record["staged"]["tree_sha256"]) == 64
    assert state.most_recent is None and state.last_successful is None
    listed = sorted(os.listdir(state.deployment_dir(DEP)))
    assert listed == [".created", "appspec.json", "archive", "logs", "revision.json", "status.json"]
    assert not os.path.exists(tmp_path / "dest")  # nothing installed


def test_batch_installs_from_the_staged_copy(tmp_path, staged):
    state, _bundle, revision = staged
    run = _batch(tmp_path, state, revision, complete=True)
    assert not run.failed, run.message
    assert "using the copy staged before the batch" in run.events[0]["message"]
    assert (tmp_path / "dest" / "index.html").read_text() == "v2"
    assert state.load_status(DEP)["status"] == "Succeeded" and state.most_recent == DEP


def test_staging_twice_is_a_no_op(tmp_path, staged):
    state, bundle, revision = staged
    before = state.load_revision(DEP)
    run = hev.HostDeployment(state, _request(DEP, ["DownloadBundle"], tmp_path / "dest", bundle, revision=revision,
                                             staging="stage")).execute()
    assert not run.failed and not run.events[0]["changed"]
    assert state.load_revision(DEP)["staged"] == before["staged"]


def test_staged_copy_of_another_bundle_is_refused(tmp_path, staged):
    state, _bundle, revision = staged
    run = _batch(tmp_path, state, dict(revision, sha256="0" * 64))
    assert run.failed_event == "DownloadBundle" and "refusing to install it" in run.message
    assert not os.path.exists(tmp_path / "dest")


def test_staging_takes_download_bundle_only(tmp_path):
    state = hst.HostState(str(tmp_path / "state"), "app", "dg")
    with pytest.raises(hst.StateError, match=r"staging=stage takes events \[DownloadBundle\] only"):
        hev.HostDeployment(state, _request(DEP, BATCH, tmp_path / "dest", None, staging="stage"))
    with pytest.raises(hst.StateError, match="staging must be stage or discard"):
        hev.HostDeployment(state, _request(DEP, ["DownloadBundle"], tmp_path / "dest", None, staging="later"))


def test_discard_removes_an_unused_copy_only(tmp_path, staged):
    state, bundle, revision = staged
    discard = _request(DEP, ["DownloadBundle"], tmp_path / "dest", None, staging="discard")
    run = hev.HostDeployment(state, discard).execute()
    assert run.changed and not state.has_deployment(DEP)
    # a copy a batch used keeps its directory (logs)
    used = "d-STAGED002"
    hev.HostDeployment(state, _request(used, ["DownloadBundle"], tmp_path / "dest", bundle, revision=revision,
                                       staging="stage")).execute()
    assert not _batch(tmp_path, state, revision, deployment_id=used).failed
    run = hev.HostDeployment(state, _request(used, ["DownloadBundle"], tmp_path / "dest", None, staging="discard")).execute()
    assert not run.changed and state.has_deployment(used)


def test_a_new_staging_removes_stale_unused_copies(tmp_path, staged):
    state, bundle, revision = staged
    run = hev.HostDeployment(state, _request("d-STAGED002", ["DownloadBundle"], tmp_path / "dest", bundle,
                                             revision=revision, staging="stage")).execute()
    assert run.pruned == [DEP] and not state.has_deployment(DEP)


def test_a_failed_staging_is_recorded_and_discarded(tmp_path):
    bundle = _bundle_tgz(tmp_path / "b.tgz", FILES)
    state = hst.HostState(str(tmp_path / "state"), "app", "dg")
    run = hev.HostDeployment(state, _request(DEP, ["DownloadBundle"], tmp_path / "dest", bundle,
                                             revision={"sha256": "1" * 64}, staging="stage")).execute()
    assert run.failed and state.load_status(DEP)["status"] == hun.STAGING_FAILED
    assert hev.HostDeployment(state, _request(DEP, ["DownloadBundle"], tmp_path / "dest", None,
                                              staging="discard")).execute().changed
    assert not state.has_deployment(DEP)


# ----------------------------------------------------------------------------------------------
# presigned download (a local HTTP server stands in for S3)
# ----------------------------------------------------------------------------------------------

@pytest.fixture
def server(tmp_path):
    """(base URL, served paths): serves files of tmp_path/www on loopback."""
    www = tmp_path / "www"
    www.mkdir()
    seen = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(www), **kwargs)

        def log_message(self, *args):  # quiet
            seen.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", www
    httpd.shutdown()
    httpd.server_close()


def _presigned(tmp_path, server, sha=None, limits=None):
    base, www = server
    bundle = _bundle_tgz(tmp_path / "b.tgz", FILES)
    shutil.copy(bundle, www / "obj.tgz")
    url = f"{base}/obj.tgz?X-Amz-Signature=secretsig123456"
    state = hst.HostState(str(tmp_path / "state"), "app", "dg")
    revision = {"source": "s3", "bucket": "b", "key": "k", "version": "v1", "sha256": sha or _sha(bundle),
                "bundle_type": "tgz"}
    run = hev.HostDeployment(state, _request(DEP, ["DownloadBundle"], tmp_path / "dest", None, revision=revision,
                                             staging="stage", bundle_url=url, unpack_limits=limits)).execute()
    return state, run, url


def test_presigned_download_is_hash_checked_and_staged(tmp_path, server):
    state, run, _url = _presigned(tmp_path, server)
    assert not run.failed, run.message
    assert state.load_status(DEP)["status"] == hs.STAGED
    assert hs.DOWNLOAD_NAME not in os.listdir(state.deployment_dir(DEP))


@pytest.mark.hostile
def test_presigned_download_with_another_hash_is_refused_and_the_url_never_shown(tmp_path, server):
    state, run, url = _presigned(tmp_path, server, sha="2" * 64)
    assert run.failed and "refusing to unpack it" in run.message and "s3://b/k version v1" in run.message
    assert "secretsig" not in json.dumps(run.to_dict()) and url not in run.message
    assert state.bundle_root(DEP) is None
    assert hs.DOWNLOAD_NAME not in os.listdir(state.deployment_dir(DEP))


def test_presigned_download_over_the_size_limit_or_missing_fails_naming_the_object(tmp_path, server):
    _state, run, _url = _presigned(tmp_path, server, limits={"total_bytes": 10})
    assert run.failed and "larger than unpack_limits.total_bytes" in run.message
    base, _www = server
    with pytest.raises(hs.StagingError, match=r"downloading s3://x: HTTP 404") as info:
        hs.download(f"{base}/missing?X-Amz-Signature=secretsig123456", os.open(str(tmp_path), os.O_RDONLY),
                    "f", 100, "s3://x")
    assert "secretsig" not in str(info.value)
    with pytest.raises(hs.StagingError, match="must be http or https"):
        hs.download("file:///etc/passwd", os.open(str(tmp_path), os.O_RDONLY), "f", 100, "s3://x")


def _sent(tmp_path, sha=None, limits=None, content=None):
    """DownloadBundle (staging) with the bundle's bytes in the request, as the action plugin sends a small bundle."""
    bundle = _bundle_tgz(tmp_path / "b.tgz", FILES)
    state = hst.HostState(str(tmp_path / "state"), "app", "dg")
    revision = {"source": "local", "sha256": sha or _sha(bundle), "bundle_type": "tgz"}
    if content is None:
        content = base64.b64encode(open(bundle, "rb").read()).decode("ascii")
    run = hev.HostDeployment(state, _request(DEP, ["DownloadBundle"], tmp_path / "dest", None, revision=revision,
                                             staging="stage", bundle_content=content, unpack_limits=limits)).execute()
    return state, run


def test_a_bundle_sent_with_the_call_is_hash_checked_staged_and_its_archive_removed(tmp_path):
    state, run = _sent(tmp_path)
    assert not run.failed, run.message
    assert "sent with the call" in run.events[0]["message"], run.events
    assert state.load_status(DEP)["status"] == hs.STAGED
    assert state.load_revision(DEP)["sha256"] == _sha(tmp_path / "b.tgz")
    assert hs.DOWNLOAD_NAME not in os.listdir(state.deployment_dir(DEP))
    assert sorted(os.listdir(state.archive_dir(DEP))) == ["appspec.yml", "site"]


@pytest.mark.hostile
@pytest.mark.parametrize("case, expected", [
    ("another hash", "the bundle sent with the call has sha256"),
    ("over the size limit", "larger than unpack_limits.total_bytes"),
    ("not base64", "expected the bundle's bytes in base64"),
])
def test_a_bundle_sent_with_the_call_that_is_not_the_revision_is_refused(tmp_path, case, expected):
    state, run = _sent(tmp_path, sha="2" * 64 if case == "another hash" else None,
                       limits={"total_bytes": 10} if case == "over the size limit" else None,
                       content="%%% not base64 %%%" if case == "not base64" else None)
    assert run.failed and expected in run.message, run.message
    assert state.bundle_root(DEP) is None
    assert hs.DOWNLOAD_NAME not in os.listdir(state.deployment_dir(DEP))


def test_scrub_removes_the_url_and_its_query():
    url = "http://h/k?X-Amz-Signature=abc&X-Amz-Credential=AKIA"
    assert hs.scrub(f"failed {url} and X-Amz-Signature=abc&X-Amz-Credential=AKIA", url) == \
        "failed <presigned URL> and <presigned URL>"


# ----------------------------------------------------------------------------------------------
# hostile: the staged copy changed between staging and the batch
# ----------------------------------------------------------------------------------------------

def _swap_archive_for_a_symlink(tmp_path, state, _victim):
    archive = state.archive_dir(DEP)
    shutil.copytree(archive, tmp_path / "elsewhere", symlinks=True)
    shutil.rmtree(archive)
    os.symlink(str(tmp_path / "elsewhere"), archive)


def _replace_a_file(_tmp_path, state, _victim):
    index = os.path.join(state.bundle_root(DEP), "site", "index.html")
    os.unlink(index)
    with open(index, "w") as handle:
        handle.write("evil")


def _link_a_file_to_the_victim(_tmp_path, state, victim):
    conf = os.path.join(state.bundle_root(DEP), "site", "conf", "app.conf")
    os.unlink(conf)
    os.symlink(str(victim / "passwd"), conf)


def _add_a_file(_tmp_path, state, _victim):
    with open(os.path.join(state.bundle_root(DEP), "site", "planted.sh"), "w") as handle:
        handle.write("#!/bin/sh\n")


def _swap_the_revision_record_for_a_symlink(tmp_path, state, _victim):
    record = state.revision_file(DEP)
    forged = tmp_path / "forged.json"
    forged.write_text(open(record).read())
    os.unlink(record)
    os.symlink(str(forged), record)


@pytest.mark.hostile
@pytest.mark.parametrize("attack,refusal", [
    (_swap_archive_for_a_symlink, "symlink"),
    (_replace_a_file, "changed since it was staged"),
    (_link_a_file_to_the_victim, "changed since it was staged"),
    (_add_a_file, "changed since it was staged"),
    (_swap_the_revision_record_for_a_symlink, "symbolic link"),
])
def test_a_staged_copy_changed_before_the_batch_is_refused(tmp_path, staged, victim, attack, refusal):
    state, _bundle, revision = staged
    attack(tmp_path, state, victim)
    run = _batch(tmp_path, state, revision)
    assert run.failed_event == "DownloadBundle" and refusal in run.message, run.message
    assert not os.path.exists(tmp_path / "dest")


# ----------------------------------------------------------------------------------------------
# controller: the presigned URL
# ----------------------------------------------------------------------------------------------

def test_presigned_url_names_the_exact_version_with_sigv4(monkeypatch):
    from ansible_collections.rollwright.deploy.plugins.action.host_lifecycle import presigned_url

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNITTEST0000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unit-test-secret-key-0000")
    url = presigned_url({"source": "s3", "bucket": "rel", "key": "shop/app.zip", "version": "v.1_a", "sha256": "ab"},
                        {"region": "eu-west-1", "endpoint_url": "http://10.213.9.1:4566", "expires": 60})
    assert url.startswith("http://10.213.9.1:4566/rel/shop/app.zip?versionId=v.1_a&")
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url and "X-Amz-Expires=60" in url and "X-Amz-Signature=" in url


def test_presigned_url_refuses_a_revision_without_an_exact_version():
    from ansible.errors import AnsibleActionFail

    from ansible_collections.rollwright.deploy.plugins.action.host_lifecycle import presigned_url

    with pytest.raises(AnsibleActionFail, match="missing: version"):
        presigned_url({"source": "s3", "bucket": "rel", "key": "k", "sha256": "ab"}, {"region": "eu-west-1"})
    with pytest.raises(AnsibleActionFail, match="needs an S3 revision"):
        presigned_url({"source": "local", "sha256": "ab"}, {})
