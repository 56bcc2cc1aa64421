# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The DownloadBundle event on a host: the pushed bundle (or one fetched through a presigned URL) checked against
the SHA-256 the controller verified, copied into the sealed deployment directory and unpacked there (the revision
record says what was unpacked), or the copy staged before the batch checked against its fingerprint and used.

Runs on the hosts: stdlib only.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import time

from ansible_collections.rollwright.deploy.plugins.module_utils.host import hooks as _hooks
from ansible_collections.rollwright.deploy.plugins.module_utils.host import fs as _fs
from ansible_collections.rollwright.deploy.plugins.module_utils.host import staging as _staging
from ansible_collections.rollwright.deploy.plugins.module_utils.revisions import revision as _revision
from ansible_collections.rollwright.deploy.plugins.module_utils.host.state import EventFailed, atomic_write_json, ensure_state_dir, state_uids
from ansible_collections.rollwright.deploy.plugins.module_utils.revisions.revision import BUNDLE_EXTENSIONS as _BUNDLE_EXT

STAGING_FAILED = "StagingFailed"  # status.json of a deployment whose staging failed on this host


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


class BundleUnpack:
    """The DownloadBundle event of one deployment (``request``: the host_events DeploymentRequest)."""

    def __init__(self, state, request):
        self.state = state
        self.req = request
        self.id = request.deployment_id

    def run(self) -> dict:
        start = _hooks.now_iso()
        t0 = time.monotonic()
        revision = dict(self.req.revision or {})
        existing = self.state.load_revision(self.id)
        bundle = self.req.bundle
        expected = (revision.get("sha256") or "").lower()
        if not bundle:
            unpacked = bool(existing) and self.state.bundle_root(self.id) is not None
            fetched = self.req.bundle_url or self.req.bundle_content is not None
            if fetched and not self.req.check_mode and not (unpacked and expected and existing.get("sha256") == expected):
                if self.req.bundle_content is not None:
                    return self._receive_and_unpack(revision, expected)
                return self._download_and_unpack(revision, expected)
            if unpacked and existing.get("staged"):
                return self._use_staged(existing, expected)
            if unpacked:
                return _hooks.event_summary("DownloadBundle", "Succeeded", f"bundle of {self.id} already unpacked on this host",
                                            changed=False)
            if self.req.check_mode:
                return _hooks.event_summary("DownloadBundle", "Skipped", "check mode: the bundle would be transferred and unpacked",
                                            changed=True, check_mode=True)
            raise EventFailed("DownloadBundle needs the bundle: give src (a file on the controller, transferred by the "
                              "action plugin) or bundle (a file already on the host)")
        return self._unpack(bundle, revision, existing, expected, start, t0)

    def _unpack(self, bundle: str, revision: dict, existing: dict | None, expected: str, start: str, t0: float,
                came: str = "") -> dict:
        rev = _revision
        if not os.path.isfile(bundle):
            raise EventFailed(f"bundle {bundle} does not exist on this host")
        digest = sha256_file(bundle)
        if expected and digest != expected:
            raise EventFailed(f"bundle {bundle} has sha256 {digest}, expected {expected}: refusing to install it")
        bundle_type = revision.get("bundle_type")
        if not bundle_type:
            try:
                bundle_type = rev.infer_bundle_type(bundle)
            except rev.RevisionError:
                bundle_type = rev.sniff_bundle_type(bundle)
        if bundle_type not in _BUNDLE_EXT:
            raise EventFailed(f"bundle {bundle}: cannot tell its type; set revision.bundle_type to zip, tar or tgz")
        if existing and existing.get("sha256") == digest and self.state.bundle_root(self.id):
            if not self.req.check_mode:
                self.store_appspec()
                if not self.req.staging:
                    self.state.set_most_recent(self.id)
            return _hooks.event_summary("DownloadBundle", "Succeeded", f"the same bundle (sha256 {digest[:12]}…) is already unpacked",
                                        changed=False)
        if self.req.check_mode:
            return _hooks.event_summary("DownloadBundle", "Skipped", f"check mode: would unpack {bundle_type} bundle {bundle}",
                                        changed=True, check_mode=True)
        try:
            limits = rev.UnpackLimits.from_options(self.req.unpack_limits)
        except rev.RevisionError as exc:
            raise EventFailed(str(exc)) from None
        ddir = self.state.ensure_deployment_dir(self.id, traversable=self.runs_as_others())
        name = "bundle." + _BUNDLE_EXT.get(bundle_type, bundle_type)
        written = self._copy_bundle(bundle, ddir, name)
        if written != digest or (expected and written != expected):
            self.state.remove_below(ddir, name)
            raise EventFailed(f"bundle {bundle} changed while it was copied (sha256 {digest} before, {written} as "
                              f"written): refusing to install it")
        archive = self.state.archive_dir(self.id)
        self.state.remove_archive(self.id)
        ensure_state_dir(archive, 0o755)
        try:
            root = rev.safe_extract(os.path.join(ddir, name), archive, bundle_type,
                                    revision.get("appspec_name") or "appspec.yml", limits=limits)
        except (rev.RevisionError, OSError) as exc:
            self.state.remove_archive(self.id)
            raise EventFailed(f"cannot unpack bundle: {exc}") from exc
        finally:
            self.state.remove_below(ddir, name)  # the unpacked revision is what is kept, the archive only as its hash
        target = os.path.join(ddir, name)
        record = {k: revision.get(k) for k in ("source", "bucket", "key", "version", "etag")}
        record["source"] = record["source"] or "local"  # the option's default when `revision` is not given at all
        record.update({"sha256": digest, "bundle_type": bundle_type, "bundle_file": os.path.basename(target), "bundle_kept": False,
                       "bundle_root": os.path.relpath(root, archive), "deployment_id": self.id,
                       "application": self.state.application, "deployment_group": self.state.deployment_group,
                       "downloaded_at": time.time()})
        if self.req.staging:
            try:
                with _fs.dir_fd(archive, state_uids()) as archive_fd:
                    record["staged"] = {"tree_sha256": _staging.tree_digest(archive_fd), "at": time.time()}
            except (_staging.StagingError, OSError) as exc:
                self.state.remove_archive(self.id)
                raise EventFailed(f"cannot fingerprint the staged copy: {exc}") from None
        atomic_write_json(self.state.revision_file(self.id), record)
        self.store_appspec()
        if not self.req.staging:
            self.state.set_most_recent(self.id)
        done = "staged" if self.req.staging else "unpacked"
        data = _hooks.event_summary("DownloadBundle", "Succeeded", f"{done} {bundle_type} bundle (sha256 {digest}{came})",
                                    changed=True)
        data.update(start=start, duration=round(time.monotonic() - t0, 3))
        return data

    def _download_and_unpack(self, revision: dict, expected: str) -> dict:
        """Fetch the bundle through the presigned URL into the sealed deployment directory, check it against the
        SHA-256 the controller verified, unpack it; the downloaded archive is removed either way."""
        what = "s3://{}/{} version {}".format(revision.get("bucket"), revision.get("key"), revision.get("version"))
        if not expected:
            raise EventFailed(f"a bundle fetched by URL needs revision.sha256 to check it against ({what})")
        return self._fetch_and_unpack(revision, expected, f"the bundle downloaded for {what}",
                                      lambda dfd, name, limit: _staging.download(str(self.req.bundle_url), dfd, name,
                                                                                 limit, what))

    def _receive_and_unpack(self, revision: dict, expected: str) -> dict:
        """The bundle the controller sent in the module's arguments: written into the sealed deployment directory,
        checked against revision.sha256 when the controller gave it (as a pushed file is), unpacked, removed."""
        return self._fetch_and_unpack(revision, expected, "the bundle sent with the call",
                                      lambda dfd, name, limit: _staging.receive(str(self.req.bundle_content), dfd, name,
                                                                                limit), came=", sent with the call")

    def _fetch_and_unpack(self, revision: dict, expected: str, what: str, fetch, came: str = "") -> dict:
        """``fetch(dir_fd, name, limit)`` writes the archive below the sealed deployment directory and returns its
        SHA-256; a mismatch with ``expected`` is refused before anything is unpacked; the archive is removed either
        way."""
        start, t0 = _hooks.now_iso(), time.monotonic()
        try:
            limit = _revision.UnpackLimits.from_options(self.req.unpack_limits).total_bytes
        except _revision.RevisionError as exc:
            raise EventFailed(str(exc)) from None
        ddir = self.state.ensure_deployment_dir(self.id, traversable=self.runs_as_others())
        try:
            with _fs.dir_fd(ddir, state_uids()) as dfd:
                digest = fetch(dfd, _staging.DOWNLOAD_NAME, limit)
            if expected and digest != expected:
                raise EventFailed(f"{what} has sha256 {digest}, expected {expected}: refusing to unpack it")
            return self._unpack(os.path.join(ddir, _staging.DOWNLOAD_NAME), revision,
                                self.state.load_revision(self.id), expected, start, t0, came)
        except _staging.StagingError as exc:
            raise EventFailed(str(exc)) from None
        finally:
            self.state.remove_below(ddir, _staging.DOWNLOAD_NAME)

    def _use_staged(self, existing: dict, expected: str) -> dict:
        """The revision staged before the batch, if it is still exactly what was staged (same bundle hash, same
        tree fingerprint); anything else is refused."""
        if expected and existing.get("sha256") != expected:
            raise EventFailed(f"the copy staged for {self.id} has sha256 {existing.get('sha256')}, expected {expected}: "
                              "refusing to install it")
        try:
            with _fs.dir_fd(self.state.archive_dir(self.id), state_uids()) as archive_fd:
                now = _staging.tree_digest(archive_fd)
        except _fs.UnsafePathError as exc:
            raise EventFailed(f"the staged copy: {exc}") from None
        except (_staging.StagingError, OSError) as exc:
            raise EventFailed(f"cannot read the staged copy of {self.id}: {exc}") from None
        if now != (existing.get("staged") or {}).get("tree_sha256"):
            raise EventFailed(f"the copy staged for {self.id} changed since it was staged (its files no longer match "
                              "their fingerprint): refusing to install it")
        if not self.req.check_mode and not self.req.staging:
            self.store_appspec()
            self.state.set_most_recent(self.id)
        return _hooks.event_summary("DownloadBundle", "Succeeded", f"using the copy staged before the batch (sha256 "
                                    f"{str(existing.get('sha256'))[:12]}…, unchanged)", changed=False)

    @staticmethod
    def _copy_bundle(bundle: str, ddir: str, name: str) -> str:
        """Copy the pushed bundle into the sealed deployment directory (0600) and return the sha256 of the bytes
        written, so what is verified is what gets unpacked."""
        with open(bundle, "rb") as src, _fs.dir_fd(ddir, state_uids()) as dfd:
            return _fs.write_stream_at(dfd, name, src)

    def runs_as_others(self) -> bool:
        """True when a script of this deployment runs as a user other than the engine's: its revision must be
        reachable by that user, so the deployment directory is 0711 instead of 0700."""
        appspec = self.req.appspec or self.state.load_appspec(self.id) or {}
        me = pwd.getpwuid(os.geteuid()).pw_name if os.geteuid() != 0 else "root"
        return any((h.get("runas") or me) != me for hooks in (appspec.get("hooks") or {}).values() for h in hooks or [])

    def store_appspec(self) -> None:
        if self.req.appspec is not None:
            atomic_write_json(self.state.appspec_file(self.id), self.req.appspec)
