# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test-world CLI.

    python -m tests.harness up --hosts N --dir DIR [--subnet 10.213.0.0/24] [--endpoint URL]
    python -m tests.harness down --dir DIR
    python -m tests.harness down-all
    python -m tests.harness demo
    python -m tests.harness demo-events
"""

from __future__ import annotations

import argparse
import sys
import time

from tests.harness.proc import HarnessError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.harness", description="rollwright test world")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="bring a world up (emulator + SSH fleet + EC2 view) and write its files into DIR")
    p_up.add_argument("--hosts", type=int, required=True)
    p_up.add_argument("--dir", required=True)
    p_up.add_argument("--subnet", help="a free /24 (default: the first free 10.213.X.0/24)")
    p_up.add_argument("--endpoint", help="share a running emulator instead of starting one")
    p_down = sub.add_parser("down", help="tear the world in DIR down (safe to repeat)")
    p_down.add_argument("--dir", required=True)
    sub.add_parser("down-all", help="tear down every world of this machine")
    sub.add_parser("demo", help="bring a 3-host world up, prove SSH and AWS answer, tear it down")
    sub.add_parser("demo-events", help="an S3 upload deploys itself through ansible-rulebook (2-host world)")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "up":
            from tests.harness.world import up

            start = time.monotonic()
            world = up(args.dir, args.hosts, subnet=args.subnet, endpoint=args.endpoint)
            print(f"world {world.name} up in {time.monotonic() - start:.1f}s: {len(world.hosts)} hosts on {world.fleet_state.subnet}, "
                  f"emulator {world.endpoint}")
            print(f"  inventory: {world.inventory}\n  aws env:   {world.dir / 'aws.env'}\n  world:     {world.dir / 'world.json'}")
            return 0
        if args.cmd == "down":
            from tests.harness.world import down

            print("down" if down(args.dir) else f"nothing to tear down in {args.dir}")
            return 0
        if args.cmd == "down-all":
            from tests.harness.world import down_all

            done = down_all()
            print("\n".join(f"removed {d}" for d in done) if done else "no worlds found")
            return 0
        if args.cmd == "demo":
            from tests.harness.demo import demo

            return demo()
        if args.cmd == "demo-events":
            from tests.harness.demo_events import demo_events

            return demo_events()
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
