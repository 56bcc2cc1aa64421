# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A test world = an AWS emulator + a fleet of SSH hosts + the EC2 instances that describe them.

``up(dir, hosts)`` builds one and writes into ``dir``: ``inventory.yml``, ``aws.env``,
``world.json``. ``down(dir)`` undoes everything it recorded (safe twice, safe after a crash);
``down_all()`` tears down every world of this machine. State: ``dir/.state.json`` and a copy in
``/run/rollwright/worlds/<world-id>.json`` (so ``down_all`` works even if ``dir`` was deleted).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import secrets
import shlex
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from tests.harness import emulator as emu
from tests.harness.fleet import Fleet, FleetState, Host, netns_list, rw_links
from tests.harness.proc import HarnessError, ProcRef, run, stop

ROOT = Path(__file__).resolve().parents[2]
VENV_PYTHON = str(ROOT / ".venv" / "bin" / "python")
REGISTRY = Path("/run/rollwright/worlds")
LOCK = Path("/run/rollwright/harness.lock")
SUBNET_POOL = ipaddress.IPv4Network("10.213.0.0/16")
AMI_ID = "ami-03cf127a"  # one of moto's built-in images


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _used_networks() -> list[ipaddress.IPv4Network]:
    used = []
    for cmd in (["ip", "-j", "-4", "addr"], ["ip", "-j", "-4", "route", "show", "table", "all"]):
        try:
            data = json.loads(run(cmd, check=False).stdout or "[]")
        except ValueError:
            data = []
        for item in data:
            if "addr_info" in item:
                for a in item["addr_info"]:
                    with contextlib.suppress(ValueError):
                        used.append(ipaddress.IPv4Network(f"{a['local']}/{a['prefixlen']}", strict=False))
            elif item.get("dst") and item["dst"] != "default":
                with contextlib.suppress(ValueError):
                    used.append(ipaddress.IPv4Network(item["dst"], strict=False))
    for path in REGISTRY.glob("*.json") if REGISTRY.exists() else []:
        with contextlib.suppress(ValueError, OSError, KeyError):
            used.append(ipaddress.IPv4Network(json.loads(path.read_text())["fleet"]["subnet"]))
    return used


def pick_subnet() -> str:
    """The first 10.213.X.0/24 that no address, route or other world of this machine uses."""
    used = _used_networks()
    for candidate in SUBNET_POOL.subnets(new_prefix=24):
        if not any(candidate.overlaps(u) for u in used if u.prefixlen > 0):
            return str(candidate)
    raise HarnessError("no free /24 left in 10.213.0.0/16 for a test world; run `python -m tests.harness down-all`")


@dataclass
class World:
    """A live world. ``state`` is what ``down`` needs; the public files are written by ``write_files``."""

    dir: Path
    world_id: str
    region: str
    emulator: dict[str, Any]
    emulator_owned: bool
    fleet_state: FleetState
    vpc_id: str = ""
    subnet_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    # -- files -------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return str(self.emulator["endpoint"])

    @property
    def fleet(self) -> Fleet:
        return Fleet(self.fleet_state, on_change=self.save)

    @property
    def hosts(self) -> list[Host]:
        return list(self.fleet_state.hosts)

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def inventory(self) -> Path:
        return self.dir / "inventory.yml"

    @property
    def key_path(self) -> Path:
        return self.dir / "ssh" / "id_ed25519"

    @property
    def control_path_dir(self) -> Path:
        # ssh appends ~17 characters to a control socket path while creating it; sun_path holds 107.
        inside = self.dir / ".cp"
        return inside if len(str(inside)) + 1 + 40 + 18 < 104 else Path(f"/run/rollwright/cp-{self.world_id}")

    def state_json(self) -> dict[str, Any]:
        return {"dir": str(self.dir), "world_id": self.world_id, "region": self.region, "emulator": self.emulator,
                "emulator_owned": self.emulator_owned, "fleet": self.fleet_state.to_json(), "vpc_id": self.vpc_id,
                "subnet_id": self.subnet_id, "extra": self.extra}

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> "World":
        return cls(dir=Path(data["dir"]), world_id=data["world_id"], region=data["region"], emulator=data["emulator"],
                   emulator_owned=bool(data["emulator_owned"]), fleet_state=FleetState.from_json(data["fleet"]),
                   vpc_id=data.get("vpc_id", ""), subnet_id=data.get("subnet_id", ""), extra=data.get("extra", {}))

    def save(self) -> None:
        data = json.dumps(self.state_json(), indent=2)
        REGISTRY.mkdir(parents=True, exist_ok=True)
        for path in (REGISTRY / f"{self.world_id}.json", self.dir / ".state.json"):
            if path.parent.exists():
                tmp = path.with_suffix(".tmp")
                tmp.write_text(data)
                os.replace(tmp, path)

    def aws_env(self) -> dict[str, str]:
        return emu.aws_env(self.endpoint, self.region)

    def ssh_common_args(self) -> str:
        opts = [
            "-o StrictHostKeyChecking=no",
            f"-o UserKnownHostsFile={self.dir / 'ssh' / 'known_hosts'}",
            "-o ServerAliveInterval=1",
            "-o ServerAliveCountMax=2",
            "-o ConnectTimeout=5",
            "-o IdentitiesOnly=yes",
            "-o BatchMode=yes",
            "-o LogLevel=ERROR",
        ]
        return " ".join(opts)

    def host_vars(self, h: Host) -> dict[str, Any]:
        return {
            "ansible_host": h.address,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.key_path),
            "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_ssh_common_args": self.ssh_common_args(),
            "ansible_control_path_dir": str(self.control_path_dir),
            "ansible_ssh_timeout": 5,
            "ansible_ssh_pipelining": True,
            "ec2_instance_id": h.instance_id,
        }

    @property
    def world_json(self) -> Path:
        return self.dir / "world.json"

    def describe(self) -> dict[str, Any]:
        """The content of world.json."""
        return {
            "name": self.name,
            "world_id": self.world_id,
            "dir": str(self.dir),
            "endpoint": self.endpoint,
            "region": self.region,
            "vpc_id": self.vpc_id,
            "subnet_id": self.subnet_id,
            "subnet": self.fleet_state.subnet,
            "gateway": str(ipaddress.IPv4Network(self.fleet_state.subnet).network_address + 1),
            "ssh_key": str(self.key_path),
            "inventory": str(self.inventory),
            "aws_env": str(self.dir / "aws.env"),
            "control_path_dir": str(self.control_path_dir),
            "emulator_pid": self.emulator.get("pid"),
            "hosts": [{"name": h.name, "address": h.address, "instance_id": h.instance_id, "netns": h.netns,
                       "pid": (h.init or {}).get("pid")} for h in self.hosts],
        }

    def write_files(self) -> None:
        import yaml

        self.control_path_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        inventory = {
            "all": {
                "hosts": {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": VENV_PYTHON}},
                "children": {"fleet": {"hosts": {h.name: self.host_vars(h) for h in self.hosts}}},
            }
        }
        (self.dir / "inventory.yml").write_text("# Generated by `python -m tests.harness up`; rewritten when hosts change.\n"
                                                + yaml.safe_dump(inventory, sort_keys=False, default_flow_style=False))
        env_lines = [f"export {k}={shlex.quote(v)}" for k, v in self.aws_env().items()]
        (self.dir / "aws.env").write_text("# Source me: . aws.env   (points AWS SDKs, the AWS CLI and amazon.aws at the emulator)\n"
                                          + "\n".join(env_lines) + "\n")
        (self.dir / "world.json").write_text(json.dumps(self.describe(), indent=2) + "\n")
        self.save()

    # -- AWS ---------------------------------------------------------------------------------
    def session(self) -> Any:
        import boto3

        env = self.aws_env()
        return boto3.Session(aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                             region_name=self.region)

    def client(self, service: str) -> Any:
        return self.session().client(service, endpoint_url=self.endpoint)

    def create_vpc(self) -> None:
        ec2 = self.client("ec2")
        cidr = self.fleet_state.subnet
        tags = [{"Key": "Name", "Value": f"rollwright-{self.name}"}, {"Key": "fleet", "Value": self.name}]
        self.vpc_id = ec2.create_vpc(CidrBlock=cidr, TagSpecifications=[{"ResourceType": "vpc", "Tags": tags}])["Vpc"]["VpcId"]
        self.subnet_id = ec2.create_subnet(VpcId=self.vpc_id, CidrBlock=cidr, AvailabilityZone=f"{self.region}a",
                                           TagSpecifications=[{"ResourceType": "subnet", "Tags": tags}])["Subnet"]["SubnetId"]
        self.save()

    def run_instance(self, h: Host) -> str:
        ec2 = self.client("ec2")
        tags = [{"Key": "Name", "Value": h.name}, {"Key": "fleet", "Value": self.name}]
        resp = ec2.run_instances(ImageId=AMI_ID, InstanceType="t3.micro", MinCount=1, MaxCount=1, SubnetId=self.subnet_id,
                                 PrivateIpAddress=h.address, TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
        h.instance_id = resp["Instances"][0]["InstanceId"]
        self.save()
        return h.instance_id

    def down(self) -> None:
        """Tear this world down (same as ``down(dir)``); stops its EC2 sync first."""
        self.stop_ec2_sync()
        down(self.dir)

    # -- EC2 view <-> SSH fleet --------------------------------------------------------------
    def start_ec2_sync(self, interval: float = 0.5) -> Any:
        """Start (once) the watcher that gives every running instance in the fleet subnet a host and
        removes the host of a terminated instance (tests.harness.ec2_sync.Ec2Sync)."""
        from tests.harness.ec2_sync import Ec2Sync

        sync = getattr(self, "_ec2_sync", None)
        if sync is None or not sync.running:
            sync = Ec2Sync(self, interval).start()
            self._ec2_sync = sync  # pylint: disable=attribute-defined-outside-init
        return sync

    def stop_ec2_sync(self) -> None:
        sync = getattr(self, "_ec2_sync", None)
        if sync is not None:
            sync.stop()

    # -- live changes ------------------------------------------------------------------------
    def add_host(self, address: str | None = None, name: str | None = None, instance_id: str | None = None,
                 run_instance: bool = False) -> Host:
        """Add a host to the live world (address defaults to the next free one); rewrites the files.

        With ``run_instance=True`` an EC2 instance is launched for it (unless instance_id is given).
        """
        address = address or self.fleet.next_free_address()[0]
        host = self.fleet.add_host(address, name=name, instance_id=instance_id)
        if run_instance and not instance_id:
            self.run_instance(host)
        self.write_files()
        return host

    def remove_host(self, name: str, terminate_instance: bool = False) -> None:
        """Remove a host from the live world; rewrites the files."""
        host = self.fleet.host(name)
        self.fleet.remove_host(name)
        if terminate_instance and host.instance_id:
            with contextlib.suppress(Exception):
                self.client("ec2").terminate_instances(InstanceIds=[host.instance_id])
        self.write_files()


def up(dir: str | os.PathLike, hosts: int, subnet: str | None = None, endpoint: str | None = None,
       region: str = emu.REGION, emulator_handle: dict[str, Any] | None = None) -> World:
    """Bring a world up in `dir`. With `endpoint` (or `emulator_handle`) an existing emulator is
    shared (and left running by `down`); otherwise the world starts its own."""
    if os.geteuid() != 0:
        raise HarnessError("the test world needs root (network, mount and PID namespaces)")
    if hosts < 0 or hosts > 200:
        raise HarnessError(f"--hosts must be between 0 and 200, got {hosts}")
    path = Path(dir).resolve()
    path.mkdir(parents=True, exist_ok=True)
    if (path / ".state.json").exists():
        old = json.loads((path / ".state.json").read_text())
        if (REGISTRY / f"{old.get('world_id')}.json").exists():
            raise HarnessError(f"a world is already up in {path}; run `python -m tests.harness down --dir {path}` first")
        (path / ".state.json").unlink()
    world_id = secrets.token_hex(3)
    emu_result: dict[str, Any] = {}
    owned = endpoint is None and emulator_handle is None

    def _start_emulator() -> None:
        try:
            emu_result["handle"] = emu.start_emulator(path).to_json()
        except Exception as exc:  # pylint: disable=broad-except
            emu_result["error"] = exc

    starter = threading.Thread(target=_start_emulator, daemon=True) if owned else None
    if starter:
        starter.start()
    with _locked():
        if subnet:
            try:
                net = ipaddress.IPv4Network(subnet)
            except ValueError as exc:
                raise HarnessError(f"--subnet {subnet!r} is not an IPv4 network like 10.213.0.0/24") from exc
            if net.prefixlen > 28:
                raise HarnessError(f"--subnet {subnet} is too small (need at least a /28)")
            clash = [u for u in _used_networks() if u.prefixlen > 0 and net.overlaps(u)]
            if clash:
                raise HarnessError(f"--subnet {subnet} overlaps {clash[0]} already in use on this machine")
            subnet = str(net)
        else:
            subnet = pick_subnet()
        emu_info = emulator_handle or ({"endpoint": endpoint, "pid": None} if endpoint else {"endpoint": "", "pid": None})
        world = World(dir=path, world_id=world_id, region=region, emulator=dict(emu_info), emulator_owned=owned,
                      fleet_state=FleetState(world_id=world_id, dir=str(path), subnet=subnet, bridge=f"rw-{world_id}-br"))
        world.save()
        try:
            world.fleet.create_base()
        except Exception:
            _teardown(world, quiet=True)
            raise
    try:
        fleet = world.fleet
        if hosts:
            fleet.add_hosts(fleet.next_free_address(hosts))
        if starter:
            starter.join(30)
            if "error" in emu_result:
                raise emu_result["error"]
            if "handle" not in emu_result:
                raise HarnessError("AWS emulator did not start within 30s")
            world.emulator = emu_result["handle"]
            world.save()
        world.create_vpc()
        for h in world.hosts:
            world.run_instance(h)
        world.write_files()
    except BaseException:
        if starter:
            starter.join(30)
            if "handle" in emu_result:
                world.emulator = emu_result["handle"]
        _teardown(world, quiet=True)
        raise
    return world


def load(dir: str | os.PathLike) -> World:
    path = Path(dir).resolve() / ".state.json"
    if not path.exists():
        raise HarnessError(f"no world in {Path(dir).resolve()} (no .state.json)")
    return World.from_state(json.loads(path.read_text()))


def _teardown(world: World, quiet: bool = False) -> list[str]:
    problems = world.fleet.teardown()
    if world.emulator_owned and world.emulator.get("pid"):
        emu.stop_emulator(world.emulator)
    cp = Path(f"/run/rollwright/cp-{world.world_id}")
    if cp.exists():
        import shutil

        shutil.rmtree(cp, ignore_errors=True)
    if not problems:
        (REGISTRY / f"{world.world_id}.json").unlink(missing_ok=True)
        (world.dir / ".state.json").unlink(missing_ok=True)
    elif not quiet:
        raise HarnessError("tear-down incomplete:\n" + "\n".join(problems))
    return problems


def down(dir: str | os.PathLike) -> bool:
    """Tear the world in `dir` down. Returns False when there was nothing to tear down."""
    path = Path(dir).resolve() / ".state.json"
    if not path.exists():
        return False
    _teardown(World.from_state(json.loads(path.read_text())))
    return True


def down_all() -> list[str]:
    """Tear down every world of this machine: registered ones, then any rw- namespace or link left."""
    done = []
    for path in sorted(REGISTRY.glob("*.json")) if REGISTRY.exists() else []:
        try:
            world = World.from_state(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError, OSError):
            path.unlink(missing_ok=True)
            continue
        _teardown(world, quiet=True)
        done.append(str(world.dir))
    for ns in netns_list():
        if ns.startswith("rw-"):
            pids = run(["ip", "netns", "pids", ns], check=False).stdout.split()
            stop([ProcRef.of(int(p)) for p in pids if p.isdigit()], grace=0.5)
            run(["ip", "netns", "del", ns], check=False)
            done.append(f"netns {ns}")
    for link in rw_links():
        run(["ip", "link", "del", link], check=False)
        done.append(f"link {link}")
    done += emu.stop_all_emulators()
    return done


def wait_for(predicate: Any, timeout: float, interval: float = 0.1) -> Any:
    """Poll predicate() until truthy (returns it) or raise HarnessError after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise HarnessError(f"condition not met within {timeout}s")
        time.sleep(interval)
