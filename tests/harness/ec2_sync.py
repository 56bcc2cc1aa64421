# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Keep a world's SSH fleet in step with its EC2 view (the emulator).

A watcher thread polls DescribeInstances (every 0.5 s by default): every instance that is
``running`` with a private IP in the world's fleet subnet and has no host yet gets a fleet host at
that address (sshd up, the world's key, named after the instance id), and the host of an instance
that is shutting down or terminated (or gone) goes away. Hosts whose instance id is None (added
without EC2) are left alone. Start it with ``world.start_ec2_sync()``; ``stop()`` ends it.

Auto Scaling groups must use the fleet subnet (moto puts every instance of a group in its first
subnet), e.g. ``VPCZoneIdentifier=world.subnet_id``.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from typing import Any

GONE_STATES = ("shutting-down", "terminated")


class Ec2Sync:
    """The watcher of one world. ``events`` logs (time, 'added'|'removed', name, address)."""

    def __init__(self, world: Any, interval: float = 0.5) -> None:
        self.world = world
        self.interval = interval
        self.events: list[tuple[float, str, str, str]] = []
        self.errors: list[str] = []
        self.lock = threading.RLock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"ec2-sync-{world.world_id}", daemon=True)
        self._network = ipaddress.IPv4Network(world.fleet_state.subnet)
        self._client = world.client("ec2")

    def start(self) -> "Ec2Sync":
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _instances(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        # Only this world's subnet: the emulator outlives worlds, and a later world may reuse an
        # earlier one's CIDR in another VPC, whose instances must not become this world's hosts.
        paginator = self._client.get_paginator("describe_instances")
        for page in paginator.paginate(Filters=[{"Name": "subnet-id", "Values": [self.world.subnet_id]}]):
            for reservation in page.get("Reservations", []):
                for inst in reservation.get("Instances", []):
                    out[inst["InstanceId"]] = {"state": inst.get("State", {}).get("Name"), "ip": inst.get("PrivateIpAddress")}
        return out

    def _in_fleet(self, address: str | None) -> bool:
        if not address:
            return False
        ip = ipaddress.IPv4Address(address)
        return ip in self._network and ip not in (self._network.network_address, self._network.broadcast_address,
                                                  self._network.network_address + 1)

    def sync_once(self) -> None:
        """One pass: add hosts for new running instances, remove hosts of terminated ones."""
        with self.lock:
            instances = self._instances()
            hosts = self.world.hosts
            by_id = {h.instance_id: h for h in hosts if h.instance_id}
            used = {h.address for h in hosts}
            for iid, info in sorted(instances.items()):
                if info["state"] == "running" and iid not in by_id and self._in_fleet(info["ip"]) and info["ip"] not in used:
                    self.world.add_host(address=info["ip"], name=iid, instance_id=iid)
                    used.add(info["ip"])
                    self.events.append((time.time(), "added", iid, info["ip"]))
            for iid, host in by_id.items():
                info = instances.get(iid)
                if info is None or info["state"] in GONE_STATES:
                    self.world.remove_host(host.name)
                    self.events.append((time.time(), "removed", host.name, host.address))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync_once()
            except Exception as exc:  # pylint: disable=broad-except
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(self.interval)

    def wait_settled(self, timeout: float = 30.0) -> None:
        """Wait until a pass finds nothing to do (every running instance has its host)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            before = len(self.events)
            self.sync_once()
            if len(self.events) == before:
                return
        raise TimeoutError(f"EC2 view and fleet not in step after {timeout}s")
