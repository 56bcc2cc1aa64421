# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which uploaded S3 revisions a deployment group has not deployed yet.

Shared by the ``pending_revision_info`` module (a plain playbook on a schedule) and the
``s3_revisions`` event source (Event-Driven Ansible). "Deployed" is read from the deployment
records, never from a local file, so a restarted watcher does not replay what was handled:

- an upload is *handled* when any record of the group names its bucket, key and version
  (whatever the status: a Failed record of an invalid bundle is handled too);
- an upload is *pending* when it is not handled and newer than the newest handled upload of the
  watched bucket and prefix (or, when the group has no such record, when it is the newest upload);
- uploads are ordered by S3's LastModified, then by the order S3 lists a key's versions.

Delete markers and keys that are not bundles (``.zip``, ``.tar``, ``.tar.gz``, ``.tgz``) are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Optional
from urllib.parse import unquote_plus

from ansible_collections.rollwright.deploy.plugins.module_utils.revisions.revision import normalise_etag

BUNDLE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
ORDERS = ("latest", "in_order")


@dataclass(frozen=True)
class Upload:
    """One object version of a bundle in S3."""

    bucket: str
    key: str
    version_id: Optional[str]
    etag: Optional[str]
    size: Optional[int]
    last_modified: str  # ISO 8601, UTC
    sequence: int = 0  # tie-breaker within one listing (S3 lists a key's versions newest first)

    @property
    def identity(self) -> tuple:
        return (self.bucket, self.key, self.version_id)

    def revision(self) -> dict:
        """The exact ``rollwright_revision`` of this upload (pinned by version id and ETag)."""
        s3 = {"bucket": self.bucket, "key": self.key, "version": self.version_id, "etag": self.etag}
        return {"s3": {k: v for k, v in s3.items() if v is not None}}

    def to_dict(self) -> dict:
        return {"bucket": self.bucket, "key": self.key, "version_id": self.version_id, "etag": self.etag,
                "size": self.size, "last_modified": self.last_modified, "revision": self.revision()}


def is_bundle_key(key: str, prefix: str = "") -> bool:
    return key.startswith(prefix) and not key.endswith("/") and key.lower().endswith(BUNDLE_SUFFIXES)


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        value = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return str(value or "")


def _sort_key(upload: Upload) -> tuple:
    return (upload.last_modified, upload.sequence)


def list_uploads(s3: Any, bucket: str, prefix: str = "") -> list[Upload]:
    """Every bundle version under bucket/prefix, oldest first (delete markers and other keys left out)."""
    found: list[Upload] = []
    paginator = s3.get_paginator("list_object_versions")
    sequence = 0
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        versions = page.get("Versions") or []
        for item in versions:
            if not is_bundle_key(item["Key"], prefix):
                continue
            sequence -= 1  # listed newest first: later in the listing means older
            version = item.get("VersionId")
            found.append(Upload(bucket, item["Key"], None if version in (None, "null") else version,
                                normalise_etag(item.get("ETag")), item.get("Size"), _iso(item.get("LastModified")),
                                sequence))
    return sorted(found, key=_sort_key)


def uploads_from_notification(body: dict, prefix: str = "") -> list[Upload]:
    """The bundle uploads an S3 event notification (as delivered to SQS) announces.

    Test events, removals (delete markers included) and keys outside prefix are left out.
    """
    found = []
    for record in body.get("Records") or []:
        if not str(record.get("eventName", "")).startswith("ObjectCreated:"):
            continue
        s3 = record.get("s3") or {}
        obj = s3.get("object") or {}
        key = unquote_plus(str(obj.get("key", "")))
        if not is_bundle_key(key, prefix):
            continue
        found.append(Upload(str((s3.get("bucket") or {}).get("name", "")), key, obj.get("versionId"),
                            normalise_etag(obj.get("eTag")), obj.get("size"), str(record.get("eventTime", ""))))
    return found


def _recorded_identity(record: dict) -> Optional[tuple]:
    revision = record.get("revision") or {}
    if not revision.get("bucket") or not revision.get("key"):
        return None
    return (revision["bucket"], revision["key"], revision.get("version"))


def handled_identities(records: Iterable[dict]) -> set:
    """(bucket, key, version) of every S3 revision the group's records name."""
    return {ident for ident in (_recorded_identity(r) for r in records) if ident}


def pending_uploads(uploads: list[Upload], records: Iterable[dict]) -> list[Upload]:
    """Uploads (oldest first) that are newer than the newest handled one and not handled themselves."""
    handled = handled_identities(records)
    ordered = sorted(uploads, key=_sort_key)
    handled_positions = [i for i, u in enumerate(ordered) if u.identity in handled]
    if not handled_positions:
        return ordered[-1:]
    newest = handled_positions[-1]
    return [u for u in ordered[newest + 1:] if u.identity not in handled]


def upload_status(identity: tuple, pending: list[Upload], records: Iterable[dict], order: str = "latest") -> str:
    """What to do with one announced upload: ``pending`` (deploy it), ``handled`` (a record names it) or
    ``superseded`` (older than the newest handled upload or gone, or - latest wins - a newer one is pending)."""
    if order not in ORDERS:
        raise ValueError(f"order: expected one of {', '.join(ORDERS)}, got {order!r}")
    identity = tuple(identity)
    if identity in handled_identities(records):
        return "handled"
    waiting = [u.identity for u in pending]
    if identity not in waiting or (order == "latest" and waiting[-1] != identity):
        return "superseded"
    return "pending"


def group_records(store: Any, application: str, deployment_group: str, limit: int = 200) -> list[dict]:
    """The group's newest records (enough to find the newest handled upload)."""
    return [r.to_dict() for r in store.list(application, deployment_group, limit=limit)]
