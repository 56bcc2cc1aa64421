# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which uploads a deployment group has not deployed (revision_watch) and the lifecycle-hook messages
the asg_launches source reads (asg_lifecycle)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.rollwright.deploy.plugins.module_utils.traffic import asg_lifecycle
from ansible_collections.rollwright.deploy.plugins.module_utils.revisions import revision_watch as rw


def up(version: str, second: int, key: str = "shop/app.zip", sequence: int = 0) -> rw.Upload:
    return rw.Upload("rel", key, version, f"etag-{version}", 10, f"2026-01-01T00:00:{second:02d}.000000Z", sequence)


def rec(version: str, status: str = "Succeeded", key: str = "shop/app.zip") -> dict:
    return {"status": status, "revision": {"source": "s3", "bucket": "rel", "key": key, "version": version}}


def test_pending_is_what_comes_after_the_newest_handled_upload() -> None:
    uploads = [up("v1", 1), up("v2", 2), up("v3", 3), up("v4", 4)]
    assert [u.version_id for u in rw.pending_uploads(uploads, [rec("v2")])] == ["v3", "v4"]
    # a Failed deployment (invalid bundle) is handled too: never replayed
    assert [u.version_id for u in rw.pending_uploads(uploads, [rec("v2"), rec("v3", "Failed")])] == ["v4"]
    # a rollback to an old revision does not make the newer, handled uploads pending again
    assert rw.pending_uploads(uploads, [rec("v4", "Failed"), rec("v1")]) == []
    # no record at all: only the newest upload
    assert [u.version_id for u in rw.pending_uploads(uploads, [])] == ["v4"]
    assert rw.pending_uploads([], [rec("v1")]) == []


def test_upload_status_latest_wins_or_in_order() -> None:
    uploads = [up("v1", 1), up("v2", 2), up("v3", 3), up("v4", 4)]
    records = [rec("v2")]
    pending = rw.pending_uploads(uploads, records)

    def ident(version: str) -> tuple:
        return ("rel", "shop/app.zip", version)

    assert rw.upload_status(ident("v3"), pending, records) == "superseded"
    assert rw.upload_status(ident("v4"), pending, records) == "pending"
    assert rw.upload_status(ident("v3"), pending, records, "in_order") == "pending"
    assert rw.upload_status(ident("v2"), pending, records) == "handled"
    assert rw.upload_status(ident("v1"), pending, records, "in_order") == "superseded"  # older than what was deployed
    assert rw.upload_status(ident("gone"), pending, records) == "superseded"
    with pytest.raises(ValueError, match="order: expected one of latest, in_order, got 'random'"):
        rw.upload_status(ident("v4"), pending, records, "random")


def test_same_second_uploads_keep_the_listing_order() -> None:
    class Paginator:
        def paginate(self, **kwargs):
            assert kwargs == {"Bucket": "rel", "Prefix": "shop/"}
            when = datetime(2026, 1, 1, tzinfo=timezone.utc)
            yield {"Versions": [  # S3 lists a key's versions newest first
                {"Key": "shop/app.zip", "VersionId": "v2", "ETag": '"e2"', "Size": 2, "LastModified": when},
                {"Key": "shop/app.zip", "VersionId": "v1", "ETag": '"e1"', "Size": 1, "LastModified": when},
                {"Key": "shop/readme.txt", "VersionId": "r1", "ETag": '"r"', "Size": 1, "LastModified": when},
                {"Key": "shop/", "VersionId": "null", "ETag": '"d"', "Size": 0, "LastModified": when},
            ], "DeleteMarkers": [{"Key": "shop/app.zip", "VersionId": "dm", "LastModified": when}]}

    class S3:
        def get_paginator(self, name):
            assert name == "list_object_versions"
            return Paginator()

    uploads = rw.list_uploads(S3(), "rel", "shop/")
    assert [(u.version_id, u.etag) for u in uploads] == [("v1", "e1"), ("v2", "e2")]
    assert uploads[1].revision() == {"s3": {"bucket": "rel", "key": "shop/app.zip", "version": "v2", "etag": "e2"}}


@given(st.lists(st.integers(0, 59), min_size=1, max_size=8, unique=True), st.data())
def test_pending_never_contains_a_handled_upload(seconds: list, data) -> None:
    uploads = [up(f"v{s}", s) for s in seconds]
    handled = data.draw(st.lists(st.sampled_from(uploads), max_size=len(uploads)))
    pending = rw.pending_uploads(uploads, [rec(u.version_id) for u in handled])
    assert not {u.identity for u in pending} & {u.identity for u in handled}
    if handled:
        newest = max(u.last_modified for u in handled)
        assert all(u.last_modified > newest for u in pending)
    else:
        assert pending == [max(uploads, key=lambda u: u.last_modified)]


def test_notifications_give_created_bundles_only() -> None:
    body = {"Records": [
        {"eventName": "ObjectCreated:Put", "eventTime": "t1",
         "s3": {"bucket": {"name": "rel"}, "object": {"key": "shop/a+b%2B.zip", "versionId": "v1", "eTag": "e1", "size": 3}}},
        {"eventName": "ObjectRemoved:DeleteMarkerCreated", "eventTime": "t2",
         "s3": {"bucket": {"name": "rel"}, "object": {"key": "shop/c.zip", "versionId": "dm"}}},
        {"eventName": "ObjectCreated:Put", "eventTime": "t3",
         "s3": {"bucket": {"name": "rel"}, "object": {"key": "shop/notes.txt", "versionId": "n1"}}},
        {"eventName": "ObjectCreated:Put", "eventTime": "t4",
         "s3": {"bucket": {"name": "rel"}, "object": {"key": "other/d.zip", "versionId": "o1"}}},
    ]}
    found = rw.uploads_from_notification(body, "shop/")
    assert [(u.key, u.version_id, u.etag, u.size) for u in found] == [("shop/a b+.zip", "v1", "e1", 3)]
    assert rw.uploads_from_notification({"Service": "Amazon S3", "Event": "s3:TestEvent"}) == []


def test_lifecycle_messages_and_hook_spec() -> None:
    message = {"LifecycleTransition": asg_lifecycle.LAUNCHING, "AutoScalingGroupName": "web", "EC2InstanceId": "i-1",
               "LifecycleHookName": "rollwright-deploy", "LifecycleActionToken": "tok"}
    expected = {"group": "web", "instance_id": "i-1", "hook": "rollwright-deploy", "token": "tok"}
    assert asg_lifecycle.launch_from_message(message) == expected
    assert asg_lifecycle.launch_from_message({"detail-type": "EC2 Instance-launch Lifecycle Action", "detail": message}) == expected
    assert asg_lifecycle.launch_from_message({"Event": "autoscaling:TEST_NOTIFICATION"}) is None
    assert asg_lifecycle.launch_from_message("not json") is None
    assert asg_lifecycle.launch_from_message(dict(message, LifecycleTransition="autoscaling:EC2_INSTANCE_TERMINATING")) is None

    spec = asg_lifecycle.hook_spec("h", 300, "ABANDON")
    assert spec == {"LifecycleHookName": "h", "LifecycleTransition": asg_lifecycle.LAUNCHING, "HeartbeatTimeout": 300,
                    "DefaultResult": "ABANDON"}
    assert not asg_lifecycle.hook_differs(dict(spec, AutoScalingGroupName="web", GlobalTimeout=30000), spec)
    assert asg_lifecycle.hook_differs(dict(spec, HeartbeatTimeout=60), spec)
    with pytest.raises(asg_lifecycle.LifecycleError, match="default_result: expected one of CONTINUE, ABANDON"):
        asg_lifecycle.hook_spec("h", 300, "MAYBE")
    with pytest.raises(asg_lifecycle.LifecycleError, match="heartbeat_timeout: expected 30 to 7200"):
        asg_lifecycle.hook_spec("h", 5, "ABANDON")
    with pytest.raises(asg_lifecycle.LifecycleError, match="expected both"):
        asg_lifecycle.hook_spec("h", 300, "ABANDON", notification_target_arn="arn:aws:sqs:r:1:q")
