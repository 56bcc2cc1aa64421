# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""ansible-rulebook event source: one event per instance an Auto Scaling group holds in Pending:Wait."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

DOCUMENTATION = r"""
---
short_description: One event per instance an Auto Scaling launching lifecycle hook holds.
description:
  - Emits C({asg_launch: {group, instance_id, hook, token, source}}) for every instance an Auto Scaling group holds in
    C(Pending:Wait) by a launching lifecycle hook (see the C(rollwright.deploy.asg_lifecycle_hook) module).
  - With O(queue_url), reads the hook's notifications from that SQS queue (or EventBridge events delivered to it),
    which carry the lifecycle action token, and deletes each message once its event is queued; Auto Scaling's test
    notification is ignored. Without it, polls the O(groups) every O(interval) seconds (no token: the action is then
    completed by instance id).
  - At start it also emits the instances the O(groups) hold already, so a restart loses none.
options:
  groups:
    description: The Auto Scaling group names (a list or a comma-separated string); required without O(queue_url).
    type: list
    elements: str
  hook:
    description: The lifecycle hook name (events of other hooks are ignored).
    type: str
    default: rollwright-deploy
  queue_url:
    description: The SQS queue the hook notifies; empty means polling.
    type: str
    default: ""
  interval:
    description: Seconds between two polls, or the SQS long-poll wait (at most 20).
    type: float
    default: 10
  region:
    description: AWS region (default the AWS_REGION environment).
    type: str
  endpoint_url:
    description: AWS endpoint URL (default the AWS_ENDPOINT_URL environment).
    type: str
"""

EXAMPLES = r"""
- rollwright.deploy.asg_launches:
    groups: [web-asg]
    queue_url: https://sqs.eu-west-1.amazonaws.com/123456789012/web-launches
"""


# ansible-rulebook runs this file by path: put its collection's root on the path (before importing it)
_ROOT = os.path.abspath(__file__).rpartition(f"{os.sep}ansible_collections{os.sep}")[0]
if _ROOT and _ROOT not in sys.path:
    sys.path.append(_ROOT)

from ansible_collections.rollwright.deploy.plugins.module_utils.traffic import asg_lifecycle  # noqa: E402
from ansible_collections.rollwright.deploy.plugins.module_utils.events import sources as es  # noqa: E402


def _event(launch: dict, hook: str, source: str) -> dict:
    return {"asg_launch": {"group": launch["group"], "instance_id": launch["instance_id"],
                           "hook": launch.get("hook") or hook, "token": launch.get("token"), "source": source}}


async def main(queue: asyncio.Queue, args: dict[str, Any]) -> None:
    groups = es.group_list(args.get("groups"))
    queue_url = args.get("queue_url") or ""
    hook = args.get("hook") or asg_lifecycle.DEFAULT_HOOK_NAME
    if not groups and not queue_url:
        raise ValueError("groups: required by rollwright.deploy.asg_launches without queue_url")
    seconds = es.interval(args, default=10.0)
    factory = es.clients(args)
    autoscaling = factory.client("autoscaling")
    sqs = factory.client("sqs") if queue_url else None
    emitted: set = set()

    async def emit_held(source: str) -> None:
        for launch in await es.call(asg_lifecycle.held_instances, autoscaling, groups):
            if launch["instance_id"] not in emitted:
                await queue.put(_event(launch, hook, source))
                emitted.add(launch["instance_id"])

    async def emit_notified(body: Any) -> None:
        launch = asg_lifecycle.launch_from_message(body)
        if (launch and launch.get("hook") in (None, hook) and (not groups or launch["group"] in groups)
                and launch["instance_id"] not in emitted):
            await queue.put(_event(launch, hook, "notification"))
            emitted.add(launch["instance_id"])

    async def poll() -> None:
        await asyncio.sleep(seconds)
        await emit_held("polling")

    if groups:  # at start: the instances held already (launched while no rulebook ran)
        await es.until_done("listing the held instances", seconds, lambda: emit_held("polling"))
    step = poll if sqs is None else (lambda: es.each_message(sqs, queue_url, seconds, emit_notified))
    await es.forever("watching Auto Scaling launches", seconds, step)


if __name__ == "__main__":

    class _PrintQueue(asyncio.Queue):
        async def put(self, item: Any) -> None:
            print(item)  # noqa: T201

    asyncio.run(main(_PrintQueue(), {"groups": sys.argv[1:], "interval": 5}))
