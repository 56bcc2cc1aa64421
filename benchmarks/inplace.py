# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""In-place rolling deployment: rollwright.deploy.inplace against a plain Ansible playbook.

    python -m benchmarks.inplace [--hosts 12] [--drain 2] [--registration 2] [--configs one,half]
    make bench-inplace BENCH_ARGS="--hosts 100 --configs half --stage on"  (the Makefile's bytecode cache)

Brings up a test world (SSH hosts in namespaces + the AWS emulator, root needed), puts the fleet
behind an ELBv2 target group and deploys the sample app (tests/sample_app: trivial hooks) twice per
configuration, once with each tool, from the same starting point (every host on v1, registered and
healthy). By default the deployment that puts v1 there goes through the same target group, as a group's
earlier deployment would, so rollwright's measured deployment starts with the registration time that one
learnt (`--group-history none`: the target group is new to it, and its first registration wait looks from
0.25 s, a third later each time). The peer (benchmarks/peer/rolling.yml) is the same rollout written with `serial`,
`community.aws.elb_target`, `ansible.builtin.unarchive` and `ansible.builtin.command`. Both run with
SSH pipelining (the world's inventory sets it), 50 forks, and the same load-balancer delays.

ELB API calls are counted on the wire by a small HTTP proxy in front of the emulator (every AWS
call of both tools goes through it), by action.

Per run it reports: wall time; the intrinsic waits (per batch the deregistration delay and the
registration time a target needs, plus the hooks' own run time on the hosts: the longest sum of
script durations of a host of the batch, from rollwright's record; the peer runs the same scripts,
so its batches are given the same median hook time); overhead = wall - intrinsic, and per batch;
the Ansible tasks per batch and the seconds before the first batch
and after the last; controller CPU seconds per host (user + system time of ansible-playbook and every process it
waited for: workers, ssh); the time each host is out of service, from the calls that moved it as the proxy saw
them: from its deregistration forwarded to the emulator until its registration was answered, plus the
registration time (the emulator makes a target healthy exactly that long after it took the call), an upper bound
of what the emulator did; beside it, as a cross-check, the same sampled from the emulator (a host leaves `healthy`
until it is `healthy` again; every `--sample-every` seconds, 1 by default), which is off by up to a sample's interval
and its call's time at either end: each sample describes the whole target group, which holds the emulator's lock
while it answers, so sampling often slows the very calls it measures on a loaded machine; ELB calls;
the load average of the machine before and after the run (the numbers mean little on a busy machine).
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parent.parent
PEER_PLAYBOOK = ROOT / "benchmarks" / "peer" / "rolling.yml"
CONFIGS = {
    "one": ("CodeDeployDefault.OneAtATime", "1"),
    "half": ("CodeDeployDefault.HalfAtATime", "50%"),
}


# The ELBv2 calls that take targets out of a target group and put them back: the proxy times them per target.
MEMBERSHIP_ACTIONS = ("DeregisterTargets", "RegisterTargets")


class CountingProxy:
    """Forwards every request to the emulator and counts AWS API calls by (service, action); for the ELBv2 calls that
    move targets, it keeps which targets each moved and when (the request forwarded, its answer back)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.calls: Counter[tuple[str, str]] = Counter()
        self.moves: list[tuple[str, list[str], float, float]] = []  # (action, target ids, sent, answered): monotonic
        self.epoch = time.time() - time.monotonic()  # what turns those times into the record's clock
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                service, action = proxy.count(self.headers, self.path, body)
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=120)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
                    sent = time.monotonic()
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    if service == "elbv2" and action in MEMBERSHIP_ACTIONS and resp.status == 200:
                        proxy.moved(action, body, sent, time.monotonic())
                finally:
                    conn.close()
                self.send_response(resp.status, resp.reason)
                for key, value in resp.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def count(self, headers: Any, path: str, body: bytes) -> tuple[str, str]:
        auth = headers.get("Authorization") or ""
        service = "?"
        if "Credential=" in auth:
            scope = auth.split("Credential=", 1)[1].split(",", 1)[0].split("/")
            service = scope[3] if len(scope) > 3 else "?"
        action = headers.get("X-Amz-Target") or ""
        if not action and body:
            form = parse_qs(body.decode("utf-8", "replace"))
            action = (form.get("Action") or [""])[0]
            if service == "elasticloadbalancing":
                service = "elbv2" if (form.get("Version") or [""])[0] == "2015-12-01" else "elb"
        action = action or path.split("?")[0]
        with self.lock:
            self.calls[(service, action)] += 1
        return service, action

    def moved(self, action: str, body: bytes, sent: float, answered: float) -> None:
        form = parse_qs(body.decode("utf-8", "replace"))
        targets = [v[0] for k, v in sorted(form.items()) if k.startswith("Targets.member.") and k.endswith(".Id")]
        with self.lock:
            self.moves.append((action, targets, sent, answered))

    def take(self) -> Counter:
        with self.lock:
            calls, self.calls = self.calls, Counter()
            self.moves = []
        return calls

    def take_moves(self) -> list[tuple[str, list[str], float, float]]:
        with self.lock:
            moves, self.moves = self.moves, []
        return moves

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wire_spans(moves: list[tuple[str, list[str], float, float]], registration: float) -> dict[str, float]:
    """Each target's time out of service from the calls that moved it: from the moment its deregistration was
    forwarded to the emulator until the registration that followed was answered, plus the registration time (the
    emulator makes a registered target healthy exactly that long after it took the call). An upper bound of what
    the emulator did, free of the sampler's 0.2 s steps."""
    left: dict[str, float] = {}
    spans: dict[str, float] = {}
    for action, targets, sent, answered in sorted(moves, key=lambda m: m[2]):
        for target in targets:
            if action == "DeregisterTargets":
                left.setdefault(target, sent)
            elif target in left:
                spans[target] = spans.get(target, 0.0) + answered + registration - left.pop(target)
    return spans


def wire_times(moves: list[tuple[str, list[str], float, float]], epoch: float) -> dict[str, list[list]]:
    """Per target, the calls that moved it, in order: [action, sent, answered] with Unix times (to set beside the
    record's event times)."""
    times: dict[str, list[list]] = {}
    for action, targets, sent, answered in sorted(moves, key=lambda m: m[2]):
        for target in targets:
            times.setdefault(target, []).append([action, round(sent + epoch, 3), round(answered + epoch, 3)])
    return times


class OutOfService:
    """Samples the target group's health in a thread: for each target, how long it was not `healthy`."""

    def __init__(self, client: Any, arn: str, interval: float = 1.0) -> None:
        self.client, self.arn, self.interval = client, arn, interval
        self.left: dict[str, float] = {}
        self.spans: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        now = time.monotonic()
        health = self.client.describe_target_health(TargetGroupArn=self.arn)["TargetHealthDescriptions"]
        healthy = {d["Target"]["Id"] for d in health if d["TargetHealth"]["State"] == "healthy"}
        for target in list(self.left):
            if target in healthy:
                self.spans[target] = self.spans.get(target, 0.0) + now - self.left.pop(target)
        for target in self.known - healthy:
            self.left.setdefault(target, now)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._sample()
            except Exception:  # pylint: disable=broad-except  # one missed sample
                pass
            self._stop.wait(self.interval)

    def __enter__(self) -> "OutOfService":
        health = self.client.describe_target_health(TargetGroupArn=self.arn)["TargetHealthDescriptions"]
        self.known = {d["Target"]["Id"] for d in health}
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(10)
        try:
            self._sample()  # the last host back since the last sample: its span ends here, not unseen
        except Exception:  # pylint: disable=broad-except  # a missed sample
            pass

    def summary(self) -> dict[str, float]:
        return _summary(self.spans)


def _summary(spans_by_target: dict[str, float]) -> dict[str, float]:
    spans = sorted(spans_by_target.values())
    if not spans:
        return {"min": 0.0, "median": 0.0, "max": 0.0, "hosts": 0}
    return {"min": round(spans[0], 2), "median": round(statistics.median(spans), 2), "max": round(spans[-1], 2),
            "hosts": len(spans)}


def _script_seconds(host: dict, events: tuple = ()) -> float:
    """The sum of a recorded host's hook script durations (of ``events`` only, when given)."""
    return sum(float(script.get("duration") or 0) for event in host.get("events", [])
               if not events or event.get("name") in events
               for script in event.get("scripts") or [] if isinstance(script, dict))


def _hook_seconds(record: dict, batches: list[list[str]]) -> list[float]:
    """Per batch, the longest sum of hook script durations of one of its hosts (the hooks' own run time)."""
    per_host = {host["name"]: _script_seconds(host) for host in record.get("hosts", [])}
    return [round(max((per_host.get(h, 0.0) for h in batch), default=0.0), 3) for batch in batches]


# The bound on a host's time out of service: the drain, the registration and the host's own hooks from
# ApplicationStop to ValidateService, plus OOS_SLACK.
OOS_SLACK = 0.5


def _main_events() -> tuple:
    """The lifecycle events from ApplicationStop to ValidateService: the hooks the bound allows a host."""
    from ansible_collections.rollwright.deploy.plugins.module_utils.revisions.lifecycle import INPLACE_WITH_LB

    return INPLACE_WITH_LB[INPLACE_WITH_LB.index("ApplicationStop"):INPLACE_WITH_LB.index("ValidateService") + 1]


def _main_hooks(record: dict) -> dict[str, float]:
    """Each host's (by instance id) hook run time from ApplicationStop to ValidateService."""
    between = _main_events()
    return {host.get("instance_id") or host["name"]: _script_seconds(host, between) for host in record.get("hosts", [])}


# Where a host's time out of service goes beyond its own drain and hooks, part by part (from the calls that moved it
# and its record's events): the drain's confirmation after the delay, the word's way to ApplicationStop, the
# engine's own time between the hooks (the install among it), the result's way to the registration, and the
# registration call.
OOS_PARTS = ("drain_confirmed", "word_to_hooks", "engine", "result_to_registration", "registration_call")


def _out_of_service_parts(record: dict, calls: dict[str, list[list]], drain: float) -> dict[str, dict[str, float]]:
    """Per host (by instance id) that the calls took out and put back, the seconds of each of OOS_PARTS."""
    main = _main_events()
    parts: dict[str, dict[str, float]] = {}
    for host in record.get("hosts", []):
        moved = calls.get(host.get("instance_id") or "")
        events = {e["name"]: e for e in host.get("events", []) if e.get("start_time") and e.get("end_time")}
        if not moved or not all(name in events for name in ("BlockTraffic", "ApplicationStop", "ValidateService")):
            continue
        left = next((c for c in moved if c[0] == "DeregisterTargets"), None)
        back = next((c for c in reversed(moved) if c[0] == "RegisterTargets"), None)
        if left is None or back is None:
            continue
        drained = _iso_seconds(events["BlockTraffic"]["end_time"])
        hooks_start = _iso_seconds(events["ApplicationStop"]["start_time"])
        hooks_end = _iso_seconds(events["ValidateService"]["end_time"])
        values = (drained - left[1] - drain, hooks_start - drained, hooks_end - hooks_start - _script_seconds(host, main),
                  back[1] - hooks_end, back[2] - back[1])
        parts[host["instance_id"]] = {name: round(v, 3) for name, v in zip(OOS_PARTS, values)}
    return parts


def _parts_summary(parts: dict[str, dict[str, float]], spans: dict[str, float], allowed: dict[str, float]) -> dict:
    """Each part's median and largest value over the hosts, and the parts of the host furthest over its bound."""
    if not parts:
        return {}
    summary: dict[str, Any] = {name: {"median": round(statistics.median(p[name] for p in parts.values()), 2),
                                      "max": round(max(p[name] for p in parts.values()), 2)} for name in OOS_PARTS}
    over = [(spans[t] - allowed[t], t) for t in parts if t in spans and t in allowed]
    if over:
        worst_over, worst = max(over)
        summary["worst_host"] = {"target": worst, "over_s": round(worst_over, 2), **parts[worst]}
    return summary


def _over_bound(spans: dict[str, float], allowed: dict[str, float], slack: float) -> dict[str, float]:
    """How far each target's time out of service (``spans``) went over what it was allowed (target -> seconds):
    median, max, and how many targets stayed within ``slack`` of it."""
    over = sorted(span - allowed[t] for t, span in spans.items() if t in allowed)
    if not over:
        return {"median": 0.0, "max": 0.0, "within": 0, "hosts": 0}
    return {"median": round(statistics.median(over), 2), "max": round(over[-1], 2),
            "within": sum(1 for o in over if o <= slack), "hosts": len(over)}


def _sampled_off(spans: dict[str, float], sampled: dict[str, float]) -> dict[str, Any]:
    """How the sampler's spans agree with the calls' (the cross-check): the hosts the calls took out that the sampler
    saw out, those it did not (out between two samples), and the largest difference in a span."""
    seen = [t for t in spans if t in sampled]
    return {"hosts": len(seen), "missing": len(spans) - len(seen),
            "max": round(max((abs(sampled[t] - spans[t]) for t in seen), default=0.0), 2),
            "unexpected": sorted(t for t in sampled if t not in spans)}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _serial_batches(hosts: int, serial: str) -> int:
    """How many batches Ansible's `serial` makes (a percentage rounds down, at least 1 host)."""
    size = max(1, int(hosts * int(serial[:-1]) / 100)) if serial.endswith("%") else int(serial)
    return -(-hosts // size)


def _iso_seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _play_costs(plays: list[dict], batches: int = 0) -> dict[str, Any]:
    """What the run's batches cost in Ansible tasks, and how long the plays before and after them took.

    The batch plays are the plays run once per batch (a `serial` play shows once per batch in the job log; with
    every batch in one task, the one play named for the batches);
    per batch: the tasks it ran, and the task results (one per host a task ran or was skipped for).
    """
    names = Counter(p["play"]["name"] for p in plays)
    # the play run once per batch; with every batch in one task (each play once), the play named for the batches
    batch_name = max(names, key=lambda n: (names[n], "batch" in n.lower())) if plays else None
    spans = [(p["play"]["name"], _iso_seconds(p["play"]["duration"]["start"]), _iso_seconds(p["play"]["duration"]["end"]))
             for p in plays]
    batch_plays = [p for p in plays if p["play"]["name"] == batch_name]
    first = next((i for i, (name, _s, _e) in enumerate(spans) if name == batch_name), len(spans))
    last = max((i for i, (name, _s, _e) in enumerate(spans) if name == batch_name), default=len(spans) - 1)
    count = max(1, batches or len(batch_plays))
    return {
        "tasks_per_batch": round(sum(len(p["tasks"]) for p in batch_plays) / count, 1),
        "task_results_per_batch": round(sum(len(t["hosts"]) for p in batch_plays for t in p["tasks"]) / count, 1),
        "start_s": round(spans[first - 1][2] - spans[0][1], 1) if first > 0 else 0.0,
        "finish_s": round(spans[-1][2] - spans[last + 1][1], 1) if last + 1 < len(spans) else 0.0,
    }


def _time_spent(plays: list[dict]) -> dict[str, Any]:
    """Where the run's time went: seconds per task name (summed over the run), and the steps' own phases (the
    start's read_hosts, revision and record; staging's stage; summed over the batches: plan, the host calls, block,
    allow, judge)."""
    tasks: Counter = Counter()
    phases: Counter = Counter()
    for play in plays:
        for task in play.get("tasks", []):
            info = task.get("task", {})
            span = info.get("duration") or {}
            if span.get("start") and span.get("end"):
                tasks[info.get("name") or "?"] += _iso_seconds(span["end"]) - _iso_seconds(span["start"])
            for result in (task.get("hosts") or {}).values():
                for phase, seconds in ((result or {}).get("seconds") or {}).items():
                    phases[phase] += float(seconds)
    top = dict(sorted(((k, round(v, 1)) for k, v in tasks.items()), key=lambda kv: -kv[1])[:12])
    return {"task_s": top, "batch_phase_s": {k: round(v, 1) for k, v in sorted(phases.items())}}


def _elb_calls(calls: Counter) -> tuple[int, dict[str, int]]:
    elb = {f"{svc}:{action}": n for (svc, action), n in sorted(calls.items()) if svc in ("elbv2", "elb")}
    return sum(elb.values()), elb


def bytecode_setting(environ=None) -> str:
    """Where the Pythons the benchmark starts (ansible-playbook, its workers) find compiled modules. Without bytecode
    every start compiles what it imports from source: about half a second per ansible-playbook here, paid by both
    tools, and again in a worker for each plugin the parent had not imported. ``make bench-inplace`` caches it as the
    Makefile does for every Python it starts."""
    environ = os.environ if environ is None else environ
    if environ.get("PYTHONPYCACHEPREFIX"):
        return f"Python bytecode cached in {environ['PYTHONPYCACHEPREFIX']}"
    if environ.get("PYTHONDONTWRITEBYTECODE"):
        return ("Python bytecode NOT written (PYTHONDONTWRITEBYTECODE): modules without bytecode compile at every "
                "Python start; run it through make bench-inplace")
    return "Python bytecode written beside the sources"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.inplace", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=12)
    parser.add_argument("--drain", type=int, default=2, help="deregistration delay of the target group (s)")
    parser.add_argument("--registration", type=float, default=2, help="seconds a new target stays `initial`")
    parser.add_argument("--configs", default="one,half", help="comma-separated: one (OneAtATime / serial 1), half")
    parser.add_argument("--stage", choices=("on", "off", "default"), default="default",
                        help="rollwright_stage for rollwright's runs (default: the role's default)")
    parser.add_argument("--sessions", choices=("on", "off", "default"), default="default",
                        help="rollwright_host_sessions for rollwright's runs (default: the role's default)")
    parser.add_argument("--tools", default="rollwright,peer",
                        help="comma-separated: rollwright, rollwright-one-task (rollwright_batches_in_one_task), peer")
    parser.add_argument("--group-history", choices=("earlier", "none"), default="earlier",
                        help="earlier (default): the baseline deployment goes through the target group, as a group's "
                             "earlier deployment would, so rollwright's measured one starts with the registration time "
                             "it learnt; none: the measured deployment is the group's first with the target group")
    parser.add_argument("--sample-every", type=float, default=1.0,
                        help="seconds between the cross-check samples of the target group's health (default 1)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if not math.isfinite(args.sample_every) or args.sample_every <= 0:
        print(f"--sample-every: {args.sample_every:g} is not a number of seconds above 0", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("the benchmark needs root (it brings up a test world of SSH hosts in namespaces)", file=sys.stderr)
        return 1
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        print(f"--configs: unknown {unknown}; expected some of {sorted(CONFIGS)}", file=sys.stderr)
        return 2

    sys.path[:0] = [str(ROOT / "build"), str(ROOT)]  # the collection as ansible_collections.rollwright.deploy
    from tests.bundles import build_bundle
    from tests.harness import emulator as emu
    from tests.harness.ansible_run import run_playbook
    from tests.harness.world import down, up
    from tests.integration import inplace_helpers as H

    from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_store

    work = Path(tempfile.mkdtemp(prefix="rw-bench-inplace-"))
    print(f"bringing up {args.hosts} hosts ...", flush=True)
    world = up(work / "world", args.hosts)
    proxy = CountingProxy(world.endpoint)
    aws_env = emu.aws_env(proxy.endpoint, world.region)
    aws_env["AWS_URL"] = proxy.endpoint
    names = [h.name for h in world.hosts]
    ids = [h.instance_id for h in world.hosts]
    results: list[dict[str, Any]] = []
    try:
        for key in configs:
            config, serial = CONFIGS[key]
            for tool in [t.strip() for t in args.tools.split(",") if t.strip()]:
                version = f"v2-{tool}-{key}"
                H.reset_hosts(world)
                arn = H.create_target_group(world, ids, drain_seconds=args.drain, registration_seconds=args.registration)
                through = {"rollwright_target_group_arns": arn} if args.group_history == "earlier" else {}
                baseline = run_playbook("rollwright.deploy.inplace", world.inventory, aws_env=aws_env, timeout=600, extra_vars={
                    "rollwright_hosts": "fleet", "rollwright_application": "bench", "rollwright_deployment_group": "fleet",
                    "rollwright_revision": str(build_bundle("v1", work / "bundles")),
                    "rollwright_deployment_config": "CodeDeployDefault.AllAtOnce", "rollwright_file_exists_behavior": "OVERWRITE",
                    **through,
                }, env={"XDG_STATE_HOME": str(work / "state")})
                if baseline.rc != 0:
                    raise RuntimeError(f"baseline deployment failed: {baseline!r}")
                bundle = build_bundle(version, work / "bundles")
                proxy.take()
                print(f"{tool:10} {config:30} ...", end="", flush=True)
                load_before = os.getloadavg()[0]
                cpu_before = _children_cpu()
                record: dict = {}
                with OutOfService(world.client("elbv2"), arn, args.sample_every) as oos:
                    if tool.startswith("rollwright"):
                        stage = {} if args.stage == "default" else {"rollwright_stage": args.stage == "on"}
                        if tool == "rollwright-one-task":
                            stage["rollwright_batches_in_one_task"] = True
                        if args.sessions != "default":
                            stage["rollwright_host_sessions"] = args.sessions == "on"
                        deploy_vars = {
                            "rollwright_hosts": "fleet", "rollwright_application": "bench", "rollwright_deployment_group": "fleet",
                            "rollwright_revision": str(bundle), "rollwright_deployment_config": config,
                            "rollwright_target_group_arns": arn, "rollwright_file_exists_behavior": "OVERWRITE", **stage,
                        }
                        run = run_playbook("rollwright.deploy.inplace", world.inventory, aws_env=aws_env, timeout=3600,
                                           extra_vars=deploy_vars, env={"XDG_STATE_HOME": str(work / "state")})
                        fact = H.deployment_fact(run) or {}
                        batch_times = list(fact.get("batch_times") or [])
                        if fact.get("deployment_id"):
                            record = open_store("sqlite", {"path": str(work / "state" / "rollwright" / "deployments.sqlite3")}
                                                ).get(fact["deployment_id"]).to_dict()
                    else:
                        run = run_playbook(PEER_PLAYBOOK, world.inventory, aws_env=aws_env, timeout=3600, extra_vars={
                            "peer_hosts": "fleet", "peer_serial": serial, "peer_bundle": str(bundle), "peer_version": version,
                            "peer_target_group_arn": arn,
                        })
                        batch_times = []
                cpu = _children_cpu() - cpu_before
                load_after = os.getloadavg()[0]
                moves = proxy.take_moves()
                wire = wire_spans(moves, args.registration)
                calls_by_target = wire_times(moves, proxy.epoch)
                calls = proxy.take()
                if run.rc != 0:
                    raise RuntimeError(f"{tool} {config} failed: {run!r}")
                expected = f"sample-app {version}"
                wrong = {n: H.served(h.address) for n, h in zip(names, world.hosts) if H.served(h.address) != expected}
                states = H.tg_states(world, arn)
                if wrong or set(states.values()) != {"healthy"} or len(states) != len(ids):
                    raise RuntimeError(f"{tool} {config}: fleet not all on {version} and healthy: {wrong} {states}")
                batches = len(batch_times) or _serial_batches(args.hosts, serial)
                planned = ((record.get("extra") or {}).get("inplace") or {}).get("plan_preview") or []
                total, by_action = _elb_calls(calls)
                row = {"tool": tool, "config": config, "serial": serial, "hosts": args.hosts, "wall_s": round(run.seconds, 1),
                       "batches": batches, "batch_times": batch_times,
                       "hook_s_per_batch": _hook_seconds(record, planned) if planned else [],
                       "cpu_s": round(cpu, 1), "cpu_s_per_host": round(cpu / args.hosts, 2),
                       **_play_costs(run.plays, batches), **_time_spent(run.plays), "out_of_service_s": _summary(wire),
                       "out_of_service_sampled_s": oos.summary(),
                       "main_hooks_s": _main_hooks(record) if record else {},
                       "out_of_service_spans_s": {t: round(v, 3) for t, v in wire.items()},
                       "out_of_service_sampled_spans_s": {t: round(v, 3) for t, v in oos.spans.items()},
                       "out_of_service_calls": calls_by_target,
                       "out_of_service_parts_by_host_s": (_out_of_service_parts(record, calls_by_target, args.drain)
                                                          if record else {}),
                       "load_before": round(load_before, 1), "python_bytecode": bytecode_setting(),
                       "load_after": round(load_after, 1), "elb_calls": total, "elb_calls_by_action": by_action}
                results.append(row)
                if args.json:  # what is measured so far survives an interrupted run
                    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
                print(f" {row['wall_s']} s, {total} ELB calls, load {row['load_before']} -> {row['load_after']}", flush=True)
    finally:
        proxy.close()
        down(world.dir)

    for key in configs:
        config = CONFIGS[key][0]
        rows = [r for r in results if r["config"] == config]
        ours = next((r for r in rows if r["tool"].startswith("rollwright")), None)
        hook_median = statistics.median(ours["hook_s_per_batch"]) if ours and ours["hook_s_per_batch"] else 0.0
        main_median = statistics.median(ours["main_hooks_s"].values()) if ours and ours["main_hooks_s"] else 0.0
        for row in rows:
            # The bound per host: its own hooks (the peer's hosts get rollwright's median host).
            hooks = row["main_hooks_s"] or dict.fromkeys(ids, main_median)
            allowed = {t: args.drain + args.registration + h for t, h in hooks.items()}
            row["out_of_service_over_bound_s"] = _over_bound(row["out_of_service_spans_s"], allowed, OOS_SLACK)
            row["out_of_service_parts_s"] = _parts_summary(row.get("out_of_service_parts_by_host_s") or {},
                                                           row["out_of_service_spans_s"], allowed)
            row["out_of_service_sampled_off_s"] = _sampled_off(row["out_of_service_spans_s"],
                                                               row["out_of_service_sampled_spans_s"])
            hooks = row["hook_s_per_batch"] or [hook_median] * row["batches"]
            row["intrinsic_s"] = round(row["batches"] * (args.drain + args.registration) + sum(hooks), 1)
            row["overhead_s"] = round(row["wall_s"] - row["intrinsic_s"], 1)
            row["overhead_per_batch_s"] = round(row["overhead_s"] / row["batches"], 2)

    print()
    print(f"In-place rollout of the sample app to {args.hosts} hosts behind one ELBv2 target group "
          f"(deregistration delay {args.drain} s, registration {args.registration} s; SSH pipelining, 50 forks; "
          + ("the group's baseline deployment went through it; " if args.group_history == "earlier"
             else "the target group new to each measured deployment; ") + bytecode_setting() + ")")
    header = (f"{'config':30} {'tool':18} {'wall s':>7} {'batches':>7} {'intrinsic':>9} {'overhead':>8} {'ovh/batch':>9} "
              f"{'tasks/batch':>11} {'start s':>7} {'finish s':>8} "
              f"{'CPU s/host':>10} {'out of service s min/med/max':>28} {'ELB calls':>9} {'load':>11}")
    print(header)
    print("-" * len(header))
    for row in results:
        oos = row["out_of_service_s"]
        spans = f"{oos['min']:.2f}/{oos['median']:.2f}/{oos['max']:.2f}"
        load = f"{row['load_before']:.1f}/{row['load_after']:.1f}"
        print(f"{row['config']:30} {row['tool']:18} {row['wall_s']:7.1f} {row['batches']:7d} {row['intrinsic_s']:9.1f} "
              f"{row['overhead_s']:8.1f} {row['overhead_per_batch_s']:9.2f} {row['tasks_per_batch']:11.1f} "
              f"{row['start_s']:7.1f} {row['finish_s']:8.1f} {row['cpu_s_per_host']:10.2f} "
              f"{spans:>28} {row['elb_calls']:9d} {load:>11}")
    print()
    for key in configs:
        config = CONFIGS[key][0]
        peer = next((r for r in results if r["config"] == config and r["tool"] == "peer"), None)
        for rw in [r for r in results if r["config"] == config and r["tool"].startswith("rollwright")]:
            if peer is None:
                break
            print(f"{config}: wall {rw['tool']}/peer = {rw['wall_s'] / peer['wall_s']:.2f}, "
                  f"CPU per host {rw['tool']}/peer = {rw['cpu_s_per_host'] / max(peer['cpu_s_per_host'], 0.01):.2f}, "
                  f"ELB calls {rw['tool']}/peer = {rw['elb_calls'] / max(peer['elb_calls'], 1):.2f}")
    print(f"\nOut of service (from the calls that moved each host) over the bound (the drain + the registration + "
          f"the host's own hooks from ApplicationStop to ValidateService; the goal: at most {OOS_SLACK} s over):")
    for row in results:
        over, off = row["out_of_service_over_bound_s"], row["out_of_service_sampled_off_s"]
        print(f"  {row['config']} {row['tool']}: median {over['median']} s, max {over['max']} s, "
              f"{over['within']} of {over['hosts']} hosts within {OOS_SLACK} s (sampled every {args.sample_every:g} s: "
              f"{off['hosts']} hosts seen out, {off['missing']} not, each within {off['max']} s of the calls' span; "
              f"{len(off['unexpected'])} seen out that no call moved)")
    print("\nWhere a host's time out of service went beyond its drain and hooks (median / max over the hosts, s):")
    for row in results:
        parts = row.get("out_of_service_parts_s") or {}
        if parts:
            print(f"  {row['config']} {row['tool']}: " + ", ".join(
                f"{name.replace('_', ' ')} {parts[name]['median']}/{parts[name]['max']}" for name in OOS_PARTS))
            worst = parts.get("worst_host")
            if worst:
                print(f"    the host furthest over its bound ({worst['target']}, {worst['over_s']} s over): "
                      + ", ".join(f"{name.replace('_', ' ')} {worst[name]}" for name in OOS_PARTS))
    print("\nELB calls by action:")
    for row in results:
        print(f"  {row['config']} {row['tool']}: " + ", ".join(f"{k} {v}" for k, v in row["elb_calls_by_action"].items()))
    print("\nWhere the time went (seconds per task, summed over the run; the batch step's phases):")
    for row in results:
        print(f"  {row['config']} {row['tool']}: " + ", ".join(f"{k} {v}" for k, v in row["task_s"].items()))
        if row["batch_phase_s"]:
            print("    step phases: " + ", ".join(f"{k} {v}" for k, v in row["batch_phase_s"].items()))
    print("\n(tasks/batch: the Ansible tasks a batch ran (a serial play's batch); start s / finish s: the plays before "
          "the first batch / after the last one)")
    print("\n(intrinsic: per batch the deregistration delay + the registration time + the hooks' own run time "
          "(rollwright's record; the peer's batches get rollwright's median); load: 1-minute load average before/after)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
