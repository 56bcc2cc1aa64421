# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Dry runs (``--check``): what a deployment would do, from reads only.

A dry run resolves the revision (the appspec is validated), reads the current state (hosts' last
successful revisions, load-balancer membership and health, the group's lock, alarms) and returns
a plan and its text. It creates no record, takes no lock, calls no load-balancer, EC2, Auto
Scaling or Lambda write API and runs no hook. The plan's state is ``done`` with ``dry_run`` set,
so the roles' later steps have nothing left to do.
"""

from __future__ import annotations

from typing import Any, Optional

from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import config as dc

DRY_RUN_ID = "d-DRYRUN000"  # a valid deployment id that no real deployment gets (ids are random)
NO_LOAD_BALANCER = "no load balancer: hosts stay in service while they are deployed"
HEADER = "DRY RUN - nothing was changed: no record, no lock, no load-balancer/EC2/Auto Scaling/Lambda call, no hook"


def describe_revision(revision: dict) -> str:
    sha = f"sha256 {str(revision.get('sha256'))[:12]}" if revision.get("sha256") else "no sha256"
    if revision.get("bucket"):
        version = f" version {revision['version']}" if revision.get("version") else ""
        return f"s3://{revision['bucket']}/{revision['key']}{version} ({sha})"
    where = revision.get("local_path") or revision.get("path")
    return f"{where} ({sha})" if where else sha


def describe_load_balancer(config: Optional[dict]) -> list[str]:
    """One phrase per target group / classic ELB / HAProxy backend of a load-balancer configuration."""
    config = config or {}
    out = [f"target group {arn}" for arn in config.get("target_group_arns") or []]
    out += [f"classic ELB {name}" for name in config.get("classic_elb_names") or []]
    for instance in (config.get("haproxy") or {}).get("instances") or []:
        name = instance.get("name") or instance.get("socket") or instance.get("address") or "haproxy"
        out.append(f"HAProxy {name} backend(s) {', '.join(instance.get('backends') or []) or '-'}")
    return out


def _scripts(appspec: dict, event: str) -> str:
    hooks = (appspec.get("hooks") or {}).get(event) or []
    return ", ".join(f"{h['location']} (runas {h.get('runas') or 'the connection user'}, timeout {h.get('timeout')}s)"
                     for h in hooks) or "no script"


def inplace_plan(*, application: str, deployment_group: str, hosts: list[dict], infos: list, config: Any,
                 revision: dict, appspec: dict, host_calls: dict[str, list[str]], load_balancer: Optional[dict],
                 lb_health: dict[str, str], host_states: dict[str, Optional[dict]], lock: Any,
                 alarm_reason: Optional[str], auto_rollback: dict, last_successful: Any,
                 rollback: Optional[dict] = None) -> dict:
    """The state of an in-place dry run: batches, load-balancer calls, events, rollback; and its text."""
    resolved = dc.resolve_config(config)
    batches = dc.plan_preview(resolved, infos)
    ids = {h["name"]: h.get("instance_id") or h["name"] for h in hosts}
    lbs = describe_load_balancer(load_balancer)
    lines = [HEADER, f"{'rollback' if rollback else 'deployment'} of {application}/{deployment_group}: "
                     f"{describe_revision(revision)}, {resolved.name}, {len(hosts)} host(s), {len(batches)} batch(es)"]
    if rollback:
        lines.append(f"  rolls back {rollback['rollback_of']} to the revision of {rollback['target_deployment_id']}")
        for host, memberships in sorted((rollback.get("original_memberships") or {}).items()):
            if memberships:
                lines.append(f"  restores {host} into its recorded membership: {len(memberships)} membership(s)")
    if not lbs:
        lines.append(f"  WARNING {NO_LOAD_BALANCER}")
    else:
        lines.append(f"  load balancer: {'; '.join(lbs)}")
        for host in hosts:
            lines.append(f"    {host['name']} ({ids[host['name']]}): {lb_health.get(ids[host['name']], 'unknown')}")
    lines.append(f"  lock of {application}/{deployment_group}: "
                 + (f"held by {lock.deployment_id} - the deployment would be refused" if lock is not None else "free"))
    if alarm_reason:
        lines.append(f"  alarms: {alarm_reason} - the deployment would be refused")
    lines.append("  hosts now:")
    for host in hosts:
        info = host_states.get(host["name"]) or {}
        last = info.get("last_successful") or {}
        lines.append(f"    {host['name']}: last successful {last.get('deployment_id') or 'none'}"
                     + (f" ({describe_revision(last['revision'])})" if last.get("revision") else ""))
    plan_batches = []
    groups = list(host_calls.values())
    steps = [f"{group[0]}..{group[-1]} on the hosts" if len(group) > 1 else f"{group[0]} on the hosts" for group in groups]
    if lbs:
        steps = [steps[0], "BlockTraffic (controller)", steps[1], "AllowTraffic (controller)", steps[2]]
    lines.append(f"  each batch: {' -> '.join(steps)}")
    for number, batch in enumerate(batches, 1):
        lines.append(f"  batch {number}: {', '.join(batch)}")
        calls = []
        if lbs:
            targets = ", ".join(ids[h] for h in batch)
            calls = [f"BlockTraffic: deregister {targets} from {'; '.join(lbs)} and wait until drained",
                     f"AllowTraffic: register {targets} again into their recorded membership and wait until healthy"]
            lines += [f"    {call}" for call in calls]
        plan_batches.append({"hosts": batch, "load_balancer_calls": calls})
    lines.append("  lifecycle scripts (this revision; ApplicationStop, BeforeBlockTraffic and AfterBlockTraffic "
                 "run the scripts of each host's last successful revision):")
    for event in [e for group in host_calls.values() for e in group]:
        if event in ("DownloadBundle", "Install"):
            continue
        lines.append(f"    {event}: {_scripts(appspec, event)}")
    on_failure = bool((auto_rollback or {}).get("on_failure"))
    if rollback:
        lines.append("  on failure: the rollback stops; `rollwright.deploy.recover` puts hosts back")
    elif on_failure and last_successful is not None:
        lines.append(f"  on failure: automatic rollback to {last_successful.deployment_id}'s revision "
                     f"({describe_revision(last_successful.revision)}) on every host reached, original memberships restored")
    elif on_failure:
        lines.append("  on failure: no automatic rollback possible (no successful deployment of this group yet)")
    else:
        lines.append("  on failure: the deployment stops, failed hosts stay out of their load balancers "
                     "(rollwright_auto_rollback.on_failure rolls back automatically)")
    text = "\n".join(lines)
    return {"deployment_id": DRY_RUN_ID, "dry_run": True, "done": True, "status": "DryRun", "batch": [],
            "active": [], "hosts": [h["name"] for h in hosts], "with_load_balancer": bool(lbs),
            "host_calls": host_calls, "appspec": appspec, "revision": dict(revision),
            "plan": {"batches": plan_batches, "load_balancer": lbs, "lock": getattr(lock, "deployment_id", None),
                     "alarm": alarm_reason, "rollback": rollback, "no_load_balancer": not lbs},
            "summary": {"deployment_id": DRY_RUN_ID, "status": "DryRun", "batches": batches},
            "summary_text": text, "error": None, "outcome": {"failed": []}}


def _host_plan(result: dict) -> tuple[list[dict], dict]:
    """(events, files) from one host_lifecycle check-mode result, or from the results of a loop over calls."""
    events: list[dict] = []
    files: dict[str, list] = {}
    for item in result.get("results") or [result]:
        plan = item.get("plan") or {}
        if plan.get("events") is not None:
            events += plan["events"]
        else:  # the events check mode reports: scripts and whose revision they come from
            events += [{"event": e.get("name"),
                        "scripts": [dict(s, from_revision=e.get("revision_deployment_id")) for s in e.get("scripts") or []]}
                       for e in item.get("events") or []]
        for kind, paths in (plan.get("files") or {}).items():
            files.setdefault(kind, []).extend(paths or [])
    return events, files


def format_host_plans(results: dict[str, Optional[dict]], diff: bool = False) -> str:
    """Per host: the lifecycle events and scripts host_lifecycle would run (check mode), and with diff the files."""
    lines = ["per host (read on each host, nothing run):"]
    for host, result in results.items():
        result = result or {}
        if result.get("unreachable") or (result.get("failed") and not result.get("results")):
            lines.append(f"  {host}: could not be read - {result.get('msg', 'failed')}")
            continue
        events, files = _host_plan(result)
        lines.append(f"  {host}:")
        for event in events:
            scripts = ", ".join(
                f"{s.get('location')}" + (f" (of {s['from_revision']})"
                                          if s.get("from_revision") not in (None, DRY_RUN_ID) else "")
                for s in event.get("scripts") or []) or "no script"
            lines.append(f"    {event.get('event')}: {scripts}")
        if diff:
            for kind in ("create", "overwrite", "remove"):
                for path in files.get(kind) or []:
                    lines.append(f"    {kind} {path}")
    return "\n".join(lines)


def bluegreen_dry_run(*, application: str, deployment_group: str, revision: dict, config_name: str, mode: str,
                      serving: dict, originals: dict[str, str], replacement: dict, expected: int, minimum: int,
                      batch: int, ready: dict, original: dict, bg: dict, lock: Any) -> dict:
    """The state of a blue/green dry run and its text."""
    lines = [HEADER, f"blue/green deployment of {application}/{deployment_group}: {describe_revision(revision)}, "
                     f"{config_name}, reroute mode {mode}"]
    lines.append(f"  original fleet ({len(originals)}): "
                 + ", ".join(f"{name} ({iid})" for iid, name in originals.items())
                 + f" serving {'; '.join(describe_load_balancer(serving))}")
    kind = replacement["kind"]
    if kind == "copy_auto_scaling_group":
        launch = (f"copy Auto Scaling group {replacement['auto_scaling_group']} as "
                  f"{replacement['auto_scaling_group']}-<deployment id>: {expected} instance(s) launched")
    elif kind == "launch_template":
        template = replacement.get("launch_template") or {}
        launch = (f"launch {expected} instance(s) from launch template "
                  f"{template.get('name') or template.get('id')} version {template.get('version') or '$Default'}")
    else:
        launch = f"take {expected} running instance(s) tagged {replacement.get('tags')}: {', '.join(bg.get('replacement_ids') or [])}"
    lines.append(f"  replacement fleet: {launch}")
    lines.append("  install on the replacements: ApplicationStop .. ValidateService")
    lines.append("  ready: " + ("reroute as soon as install and validation pass" if ready.get("action") == "continue"
                                else f"wait up to {ready.get('wait')} s for `rollwright.deploy.continue`"))
    if mode == "listener":
        lines.append(f"  reroute: swap listener {bg.get('listener_arn')}{' rule ' + bg['rule_arn'] if bg.get('rule_arn') else ''} "
                     f"from {bg.get('blue_tg')} to {bg.get('green_tg')} (replacements registered there first)")
    else:
        lines.append(f"  reroute: register replacements into {'; '.join(describe_load_balancer(serving))} "
                     f"then deregister originals, in batches of {batch} (minimum healthy {minimum})")
    lines.append("  originals: " + (f"terminated after {original.get('wait')} s" if original.get("action") == "terminate"
                                    else "deregistered and kept running"))
    lines.append("  on failure: the replacement fleet is torn down and the originals stay (or are put back) in service")
    lines.append(f"  lock of {application}/{deployment_group}: "
                 + (f"held by {lock.deployment_id} - the deployment would be refused" if lock is not None else "free"))
    text = "\n".join(lines)
    return {"deployment_id": DRY_RUN_ID, "dry_run": True, "done": True, "status": "DryRun",
            "originals": [{"name": n, "instance_id": i} for i, n in originals.items()], "replacements": [],
            "new_hosts": [], "plan": {"replacement": launch, "expected": expected, "mode": mode, "batch_size": batch,
                                      "minimum": minimum, "lock": getattr(lock, "deployment_id", None)},
            "summary": {"deployment_id": DRY_RUN_ID, "status": "DryRun"}, "summary_text": text}
