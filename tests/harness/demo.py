# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``python -m tests.harness demo`` (``make demo``): an interim smoke test of the test world.

Brings up a world of 3 hosts in a temporary directory, proves each host answers over SSH through
Ansible (``ansible -m ping`` with the generated inventory) and each AWS API answers, prints a
summary and tears the world down, even on failure. The deployment demo will replace ``demo()``.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from tests.harness.world import ROOT, down, up

AWS_CHECKS = [
    ("ec2", "describe_instances", {}),
    ("elbv2", "describe_target_groups", {}),
    ("s3", "list_buckets", {}),
    ("dynamodb", "list_tables", {}),
    ("lambda", "list_functions", {}),
    ("cloudwatch", "describe_alarms", {}),
    ("autoscaling", "describe_auto_scaling_groups", {}),
]


def ansible_env(world_env: dict[str, str], control_dir: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(world_env)
    env.update({
        "ANSIBLE_COLLECTIONS_PATH": str(ROOT / "build"),
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_SSH_CONTROL_PATH_DIR": control_dir,
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_FORKS": "20",
        "PATH": f"{ROOT / '.venv' / 'bin'}:{env.get('PATH', '')}",
    })
    return env


def demo() -> int:
    """Run the interim demo; returns the process exit code."""
    started = time.monotonic()
    ok = True
    with tempfile.TemporaryDirectory(prefix="rollwright-demo-") as tmp:
        world_dir = Path(tmp) / "demo"
        try:
            print("== bringing up a world of 3 hosts ...", flush=True)
            world = up(world_dir, 3)
            print(f"   up in {time.monotonic() - started:.1f}s: subnet {world.fleet_state.subnet}, emulator {world.endpoint}")
            print("== ansible -m ping over SSH ...", flush=True)
            env = ansible_env(world.aws_env(), str(world.control_path_dir))
            proc = subprocess.run([str(ROOT / ".venv" / "bin" / "ansible"), "-i", str(world.inventory), "fleet", "-m", "ping"],
                                  env={**env, "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"},
                                  capture_output=True, text=True, timeout=120, check=False)
            pongs = {}
            try:
                stats = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]
                pongs = {name: r.get("ping") == "pong" for name, r in stats.items()}
            except (ValueError, KeyError, IndexError):
                pass
            for h in world.hosts:
                good = pongs.get(h.name, False)
                ok &= good
                print(f"   {h.name:8} {h.address:15} {h.instance_id}  ssh: {'pong' if good else 'FAILED'}")
            if proc.returncode != 0 and not pongs:
                print(proc.stdout[-2000:], proc.stderr[-2000:])
                ok = False
            print("== AWS APIs on the emulator ...", flush=True)
            for service, op, kwargs in AWS_CHECKS:
                try:
                    getattr(world.client(service), op)(**kwargs)
                    print(f"   {service:12} {op:30} ok")
                except Exception as exc:  # pylint: disable=broad-except
                    ok = False
                    print(f"   {service:12} {op:30} FAILED: {exc}")
        except Exception as exc:  # pylint: disable=broad-except
            ok = False
            print(f"demo failed: {exc}")
        finally:
            down(world_dir)
            print(f"== world torn down; total {time.monotonic() - started:.1f}s")
    print("demo: OK" if ok else "demo: FAILED")
    return 0 if ok else 1
