# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Zero downtime behind HAProxy, measured: requests lost during in-place deployments.

    python -m benchmarks.zero_downtime [--hosts 4] [--requests 5000] [--rate 150] [--concurrency 4] [--json FILE]

Brings up a test world (SSH hosts in namespaces, root needed), deploys v1 of the sample app to every
host, and starts HAProxy on 127.0.0.1 in front of the hosts' :8080 (``option httpchk GET /``,
``check inter 200ms rise 2 fall 2``, HAProxy's default ``retries 3`` and no redispatch). Then, for
each deployment configuration, a new revision is deployed in place while a bounded load generator
(benchmarks/loadgen.py: at most --requests GET requests at --rate per second over --concurrency
clients, a new connection per request, loopback only) runs through HAProxy until the deployment
ends:

* with the HAProxy adapter (``rollwright_load_balancer.haproxy``): each batch is drained (no new
  sessions, wait for scur 0), put in maintenance, deployed, and put back once the health check is UP;
* the control: the same deployment with no load balancer configured (hosts are stopped and started
  without draining; HAProxy only notices through its health checks).

An automatic-rollback row runs when the in-place role has ``rollwright_auto_rollback``: a revision
whose ValidateService fails, deployed OneAtATime with ``rollwright_auto_rollback: {on_failure: true}``
(the first host fails, the previous revision is redeployed automatically); otherwise it is reported
as not run. Its timeline shows the share of the *broken* revision (which must stay 0).

Reported per run: requests sent, failed (non-2xx or no complete answer) with their kinds, the
deployment's wall time, and the served version per second (one character per second: the share of
answers already from the new version in tenths, ``#`` = all, ``x`` = a failed request that second).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {"one": "CodeDeployDefault.OneAtATime", "half": "CodeDeployDefault.HalfAtATime"}


def start_script(request_delay: float, start_delay: float, slow_path: str = "") -> str:
    """A start hook that runs the sample app with the given work per request and start-up delay."""
    return f"""#!/bin/sh
PIDFILE=/var/log/rollwright/sample-app.pid
mkdir -p /var/log/rollwright
SAMPLE_APP_REQUEST_DELAY={request_delay} SAMPLE_APP_START_DELAY={start_delay} SAMPLE_APP_SLOW_PATH='{slow_path}' \\
  python3 /opt/app/sample/bin/server.py >> /var/log/rollwright/sample-app.log 2>&1 &
echo $! > "$PIDFILE"
"""


# The "slow" profile: the sample app as a real service behaves - each request takes 50 ms of work,
# and the process needs 2 s after start before it listens. Same server, index.html, pid file and port.
START_SLOW = start_script(0.05, 2)
PROFILES = {
    "instant": "the stock sample app: ~1 ms per request, listening at once after start",
    "slow": "50 ms per request, listening 2 s after start",
}


def build(version: str, out: Path, profile: str, failing: bool = False) -> Path:
    """The sample bundle for a profile; ``failing``: its ValidateService fails (for the rollback row)."""
    from tests.bundles import build_bundle

    files: dict[str, str] = {}
    edits = []
    if profile == "slow":
        files["scripts/start_slow.sh"] = START_SLOW
        edits.append(lambda text: text.replace("scripts/start_server.sh", "scripts/start_slow.sh"))
    if failing:
        files["scripts/fail.sh"] = "#!/bin/sh\necho 'this revision is broken on purpose' >&2\nexit 1\n"
        edits.append(lambda text: text.replace("  ValidateService:\n", "  ValidateService:\n    - location: scripts/fail.sh\n"))

    def edit(text: str) -> str:
        for e in edits:
            text = e(text)
        return text

    return build_bundle(version, out, extra_files=files or None, edit_appspec=edit if edits else None)


def _rollback_supported() -> bool:
    spec = ROOT / "roles" / "inplace" / "meta" / "argument_specs.yml"
    return spec.exists() and "rollwright_auto_rollback" in spec.read_text()


def _run_with_load(world: Any, hx: Any, inv: Path, bundle: Path, state: Path, lb: dict | None, config: str,
                   args: argparse.Namespace, extra_vars: dict | None = None) -> tuple[Any, Any]:
    from benchmarks.loadgen import LoadGenerator
    from tests.haproxy_world import run_inplace

    load = LoadGenerator(hx.url, total=args.requests, concurrency=args.concurrency, rate=args.rate).start()
    time.sleep(1.0)  # a second of steady state before the deployment starts
    run = run_inplace(world, inv, bundle, state, load_balancer=lb, config=config, extra_vars=extra_vars, timeout=1800)
    time.sleep(1.0)  # and one after it
    result = load.stop()
    return run, result


def _settle(hx: Any, names: list[str], timeout: float = 30) -> None:
    """Every server UP (the control leaves HAProxy to notice restarted hosts by itself)."""
    deadline = time.monotonic() + timeout
    while any(hx.status(n) != "UP" for n in names):
        if time.monotonic() > deadline:
            raise RuntimeError(f"HAProxy servers not all UP after {timeout}s: {hx.statuses()}")
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.zero_downtime", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--requests", type=int, default=5000, help="at most this many requests per run")
    parser.add_argument("--rate", type=float, default=150.0, help="requests per second, all clients together")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--configs", default="one,half", help="comma-separated: one (OneAtATime), half (HalfAtATime)")
    parser.add_argument("--profiles", default="instant,slow", help="comma-separated: " + "; ".join(
        f"{k} ({v})" for k, v in PROFILES.items()))
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
    if not profiles or any(p not in PROFILES for p in profiles):
        print(f"--profiles: expected some of {sorted(PROFILES)}, got {args.profiles!r}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("the benchmark needs root (it brings up a test world of SSH hosts in namespaces)", file=sys.stderr)
        return 1
    if args.hosts < 4:
        print("--hosts: at least 4 hosts", file=sys.stderr)
        return 2
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if not configs or any(c not in CONFIGS for c in configs):
        print(f"--configs: expected some of {sorted(CONFIGS)}, got {args.configs!r}", file=sys.stderr)
        return 2

    from tests.harness.world import down, up
    from tests.haproxy_world import backend_servers, onprem_inventory, run_inplace, start_haproxy

    work = Path(tempfile.mkdtemp(prefix="rw-bench-zd-"))
    print(f"bringing up {args.hosts} hosts ...", flush=True)
    world = up(work / "world", args.hosts)
    names = [h.name for h in world.hosts]
    inv = onprem_inventory(world, work / "onprem.yml")
    state = work / "state"
    hx = None
    rows: list[dict[str, Any]] = []
    counter = iter(range(2, 100))
    try:
        first = run_inplace(world, inv, build("v1", work / "bundles", profiles[0]), state,
                            config="CodeDeployDefault.AllAtOnce")
        if first.rc != 0:
            raise RuntimeError(f"initial deployment of v1 failed: {first!r}")
        hx = start_haproxy(work / "hx", backend_servers(world))
        _settle(hx, names)
        lb = {"haproxy": {"instances": [hx.instance_config()], "backend": "app", "poll_interval": 0.1}}
        scenarios: list[tuple[str, str, str, dict | None, dict | None]] = []
        for profile in profiles:
            for key in configs:
                scenarios.append((profile, CONFIGS[key], "HAProxy adapter", lb, None))
                scenarios.append((profile, CONFIGS[key], "control (no LB)", None, None))
            if _rollback_supported():
                scenarios.append((profile, "CodeDeployDefault.OneAtATime", "adapter + rollback", lb,
                                  {"rollwright_auto_rollback": {"on_failure": True}}))
        for profile, config, label, lb_config, extra in scenarios:
            version = f"v{next(counter)}"
            # the rollback row: the new revision fails ValidateService, the previous one is redeployed
            bundle = build(version, work / "bundles", profile, failing=bool(extra))
            print(f"{profile:8} {config:30} {label:20} -> {version} ...", end="", flush=True)
            run, result = _run_with_load(world, hx, inv, bundle, state, lb_config, config, args, extra)
            if extra is None and run.rc != 0:
                raise RuntimeError(f"{config} {label}: deployment failed: {run!r}")
            # the rollback row fails by design (the playbook reports the failed deployment); the fleet must be
            # back on the previous revision and every server UP
            _settle(hx, names)
            row = {"profile": profile, "config": config, "run": label, "version": version, "hosts": args.hosts,
                   "sent": result.sent, "failed": result.failed, "errors": dict(result.errors),
                   "p99_ms": round(result.latency(0.99) * 1000), "max_ms": round(max(result.latencies, default=0) * 1000),
                   "deploy_wall_s": round(run.seconds, 1),
                   "timeline": result.timeline(f"sample-app {version}"), "versions": result.versions(),
                   "first_failures": [(round(t, 2), w) for t, w in result.failures[:10]],
                   "per_second": {str(k): dict(v) for k, v in sorted(result.per_second.items())}}
            rows.append(row)
            print(f" {run.seconds:.1f} s, {result.sent} sent, {result.failed} failed", flush=True)
    finally:
        if hx is not None:
            hx.stop()
        down(world.dir)

    print()
    print(f"In-place deployments of the sample app to {args.hosts} SSH hosts behind HAProxy 2.6 on 127.0.0.1 "
          f"(check inter 200ms rise 2 fall 2, retries 3, no redispatch); load: <= {args.requests} requests at "
          f"{args.rate:g}/s, {args.concurrency} clients, new connection each, until 1 s after the deployment")
    for key, text in PROFILES.items():
        if key in profiles:
            print(f"  profile {key}: {text}")
    header = (f"{'profile':8} {'config':28} {'run':18} {'sent':>6} {'failed':>6} {'p99 ms':>7} {'max ms':>7} "
              f"{'deploy s':>8}  errors")
    print(header)
    print("-" * len(header))
    for r in rows:
        errors = ", ".join(f"{k}x{v}" for k, v in sorted(r["errors"].items())) or "-"
        print(f"{r['profile']:8} {r['config']:28} {r['run']:18} {r['sent']:>6} {r['failed']:>6} {r['p99_ms']:>7} "
              f"{r['max_ms']:>7} {r['deploy_wall_s']:>8}  {errors}")
    if not _rollback_supported():
        print(f"{'any':8} {'CodeDeployDefault.OneAtATime':28} {'adapter + rollback':18} "
              "not run: the in-place role has no automatic rollback yet")
    print()
    print("New version's share of answers per second (0-9 tenths, # = all, x = a failed request that second):")
    for r in rows:
        print(f"  {r['profile']:8} {r['config'][18:]:12} {r['run']:18} {r['timeline']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    adapter_failures = sum(r["failed"] for r in rows if r["run"] != "control (no LB)")
    return 1 if adapter_failures else 0


if __name__ == "__main__":
    sys.exit(main())
