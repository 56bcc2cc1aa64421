# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""ansible-rulebook event source: one event per new bundle version uploaded under an S3 bucket/prefix."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

DOCUMENTATION = r"""
---
short_description: One event per new revision (object version) uploaded to S3.
description:
  - Emits C({s3_revision: {bucket, key, version_id, etag, size, time, source}}) for every new version of a bundle
    (C(.zip), C(.tar), C(.tar.gz), C(.tgz)) under O(bucket)/O(prefix). Delete markers and other keys are ignored.
  - The event also carries O(prefix) and O(order), for the C(rollwright.deploy.deploy_upload) playbook.
  - With O(queue_url), reads the S3 event notifications the bucket sends to that SQS queue (the production set-up,
    see C(docs/event-driven.md)) and deletes each message once its event is queued. Without it, polls
    C(ListObjectVersions) every O(interval) seconds.
  - At start it emits the uploads the deployment group has not handled yet, read from the deployment records (not
    from a local file), so a restart replays nothing that was deployed, and an upload made while it was stopped is
    not lost. The bucket needs versioning, so that every event names an exact version.
options:
  bucket:
    description: The bucket revisions are uploaded to.
    type: str
    required: true
  prefix:
    description: Only keys under this prefix.
    type: str
    default: ""
  queue_url:
    description: The SQS queue that receives the bucket's C(s3:ObjectCreated:*) notifications; empty means polling.
    type: str
    default: ""
  interval:
    description: Seconds between two listings (polling), or the SQS long-poll wait (at most 20).
    type: float
    default: 30
  order:
    description:
      - C(latest) (uploads made while a deployment runs - only the newest is deployed next) or C(in_order) (each in
        turn). Applied by the C(rollwright.deploy.deploy_upload) playbook.
    type: str
    default: latest
  application:
    description: The application whose records say what was handled.
    type: str
    required: true
  deployment_group:
    description: The deployment group whose records say what was handled.
    type: str
    required: true
  record_backend:
    description: C(sqlite) or C(dynamodb), as for the deployments.
    type: str
    default: sqlite
  record_sqlite_path:
    description: The SQLite records file (empty means the default path).
    type: str
  record_dynamodb_table:
    description: The DynamoDB records table.
    type: str
  region:
    description: AWS region (default the AWS_REGION environment).
    type: str
  endpoint_url:
    description: AWS endpoint URL (default the AWS_ENDPOINT_URL environment).
    type: str
"""

EXAMPLES = r"""
- rollwright.deploy.s3_revisions:
    bucket: releases
    prefix: shop/
    queue_url: https://sqs.eu-west-1.amazonaws.com/123456789012/shop-releases
    application: shop
    deployment_group: web
"""


# ansible-rulebook runs this file by path: put its collection's root on the path (before importing it)
_ROOT = os.path.abspath(__file__).rpartition(f"{os.sep}ansible_collections{os.sep}")[0]
if _ROOT and _ROOT not in sys.path:
    sys.path.append(_ROOT)

from ansible_collections.rollwright.deploy.plugins.module_utils.events import sources as es  # noqa: E402
from ansible_collections.rollwright.deploy.plugins.module_utils.revisions import revision_watch as rw  # noqa: E402


def _event(upload: rw.Upload, source: str, args: dict) -> dict:
    return {"s3_revision": {"bucket": upload.bucket, "key": upload.key, "version_id": upload.version_id,
                            "etag": upload.etag, "size": upload.size, "time": upload.last_modified, "source": source,
                            "prefix": args.get("prefix") or "", "order": args.get("order") or "latest"}}


def _unhandled(args: dict, factory: Any) -> tuple[list, list]:
    """(every upload listed now, the uploads the group's records have not handled yet). Runs in one thread
    (an SQLite connection stays in the thread that opened it)."""
    uploads = rw.list_uploads(factory.client("s3"), args["bucket"], args.get("prefix") or "")
    store = es.record_store(args, factory)
    try:
        records = rw.group_records(store, args["application"], args["deployment_group"])
    finally:
        store.close()
    return uploads, rw.pending_uploads(uploads, records)


async def main(queue: asyncio.Queue, args: dict[str, Any]) -> None:
    for name in ("bucket", "application", "deployment_group"):
        if not args.get(name):
            raise ValueError(f"{name}: required by rollwright.deploy.s3_revisions")
    if (args.get("order") or "latest") not in rw.ORDERS:
        raise ValueError(f"order: expected one of {', '.join(rw.ORDERS)}, got {args.get('order')!r}")
    seconds = es.interval(args)
    prefix = args.get("prefix") or ""
    factory = es.clients(args)
    emitted: set = set()
    # catch up from the records first: nothing handled is replayed, nothing missed is lost
    listed, pending = await es.until_done("reading the uploads and the deployment records", seconds,
                                          lambda: es.call(_unhandled, args, factory))
    known = {u.identity for u in listed}
    for upload in pending:
        await queue.put(_event(upload, "records", args))
        emitted.add(upload.identity)
    queue_url = args.get("queue_url") or ""
    sqs = factory.client("sqs") if queue_url else None

    async def emit_notified(body: Any) -> None:
        for upload in rw.uploads_from_notification(body if isinstance(body, dict) else {}, prefix):
            if upload.bucket == args["bucket"] and upload.identity not in emitted:
                await queue.put(_event(upload, "notification", args))
                emitted.add(upload.identity)

    async def poll() -> None:
        await asyncio.sleep(seconds)
        listed = await es.call(rw.list_uploads, factory.client("s3"), args["bucket"], prefix)
        for upload in listed:
            if upload.identity not in known and upload.identity not in emitted:
                await queue.put(_event(upload, "listing", args))
                emitted.add(upload.identity)
        known.update(u.identity for u in listed)

    step = poll if sqs is None else (lambda: es.each_message(sqs, queue_url, seconds, emit_notified))
    await es.forever(f"watching s3://{args['bucket']}/{prefix}", seconds, step)


if __name__ == "__main__":

    class _PrintQueue(asyncio.Queue):
        async def put(self, item: Any) -> None:
            print(item)  # noqa: T201

    asyncio.run(main(_PrintQueue(), {"bucket": sys.argv[1], "prefix": sys.argv[2] if len(sys.argv) > 2 else "",
                                     "application": "demo", "deployment_group": "demo", "interval": 5}))
