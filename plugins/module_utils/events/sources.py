# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the collection's Event-Driven Ansible sources share: their AWS clients, the deployment
records, reading an SQS queue, and the polling interval. Blocking boto3 calls run in a thread so
ansible-rulebook's event loop keeps going."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Awaitable, Callable

from ansible_collections.rollwright.deploy.plugins.module_utils.aws.client import aws_client_factory

LOG = logging.getLogger("rollwright.deploy.event_sources")
SQS_LONG_POLL_MAX = 20  # seconds, SQS's limit


def clients(args: dict) -> Any:
    """A boto3 client factory from the source's C(region), C(endpoint_url), C(profile) (or the AWS_* environment)."""
    return aws_client_factory({k: args.get(k) for k in ("region", "endpoint_url", "profile") if args.get(k)})


def record_store(args: dict, factory: Any) -> Any:
    from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_store

    backend = args.get("record_backend") or "sqlite"
    options = ({"path": args.get("record_sqlite_path") or None} if backend == "sqlite"
               else {"table": args.get("record_dynamodb_table") or "rollwright-deployments"})
    return open_store(backend, options, client_factory=factory.client)


def interval(args: dict, default: float = 30.0) -> float:
    """The polling interval in seconds (rulebook variables arrive as strings), at least one second."""
    value = args.get("interval")
    try:
        seconds = float(value) if value not in (None, "") else default
    except (TypeError, ValueError) as exc:
        raise ValueError(f"interval: expected a number of seconds, got {value!r}") from exc
    return max(1.0, seconds)


def group_list(value: Any) -> list[str]:
    if not value:
        return []
    if isinstance(value, str):
        return [g.strip() for g in value.split(",") if g.strip()]
    return [str(g) for g in value]


async def call(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, lambda: func(*args, **kwargs))


async def receive(sqs: Any, queue_url: str, wait: float) -> list[tuple[Any, str]]:
    """One long poll of the queue: ``[(body, receipt handle)]`` (a JSON body parsed; SNS envelopes opened)."""
    reply = await call(sqs.receive_message, QueueUrl=queue_url, MaxNumberOfMessages=10,
                       WaitTimeSeconds=int(min(SQS_LONG_POLL_MAX, max(1, wait))))
    found = []
    for message in reply.get("Messages") or []:
        body: Any = message.get("Body", "")
        try:
            body = json.loads(body)
            if isinstance(body, dict) and body.get("Type") == "Notification" and "Message" in body:
                body = json.loads(body["Message"])  # delivered through an SNS topic
        except ValueError:
            pass
        found.append((body, message["ReceiptHandle"]))
    return found


async def delete(sqs: Any, queue_url: str, receipt: str) -> None:
    await call(sqs.delete_message, QueueUrl=queue_url, ReceiptHandle=receipt)


async def retry_later(what: str, exc: Exception, seconds: float) -> None:
    """An AWS or records error does not end the source: say so and try again after the interval."""
    from ansible_collections.rollwright.deploy.plugins.module_utils.errors import access_denied_hint

    # only S3 answers a bare "Access Denied" (the other services name the action): say which one it needs
    LOG.warning("%s failed, retrying in %.0f s: %s%s", what, seconds, exc, access_denied_hint(exc, "s3"))
    await asyncio.sleep(seconds)


async def until_done(what: str, seconds: float, attempt: Callable[[], Awaitable[Any]]) -> Any:
    """``await attempt()`` until it succeeds (an AWS or records outage at start), its result."""
    while True:
        try:
            return await attempt()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # pylint: disable=broad-except
            await retry_later(what, exc, seconds)


async def forever(what: str, seconds: float, step: Callable[[], Awaitable[Any]]) -> None:
    """``await step()`` again and again; a failed step is logged and retried after the interval."""
    while True:
        await until_done(what, seconds, step)


async def each_message(sqs: Any, queue_url: str, wait: float, handle: Callable[[Any], Awaitable[Any]]) -> None:
    """One long poll of the queue: ``await handle(body)`` for each message, then delete it (handled, or not ours)."""
    for body, receipt in await receive(sqs, queue_url, wait):
        await handle(body)
        await delete(sqs, queue_url, receipt)
