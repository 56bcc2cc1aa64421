# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The timeline report: one self-contained HTML page per deployment, and a group's history page.

Pure functions from record dicts (``DeploymentRecord.to_dict()``) to HTML strings: inline CSS and SVG,
no script, nothing fetched, so a page opens from a file or an AWX artifact. Hovering a bar shows its
SVG ``<title>`` (script, exit code, log tail).

Page structure the tests rely on: one ``g.host-row`` per host, one ``rect.event-bar`` per recorded
lifecycle event (events without times are drawn as a thin mark at the end of their host's row).
"""

from __future__ import annotations

import datetime as _dt
import html
import os
import re
from typing import Any, Optional

STATUS_COLOURS = {
    "Succeeded": "#2f9e5f", "Failed": "#d9443f", "Skipped": "#aab2bf", "InProgress": "#3b82f6",
    "Pending": "#d5dbe5", "Stopped": "#e08a1e", "Ready": "#7c5cd6", "Created": "#aab2bf", "Unknown": "#8d95a3",
}
PHASE_COLOURS = {
    "started": "#cfd8e3", "provisioning": "#9bb8e6", "installing": "#6e9ee6", "ready": "#b59cf0",
    "rerouting": "#5fc2b7", "rerouted": "#8dd3a8", "retiring": "#f0c27a", "finished": "#cfd8e3",
}
EVENT_ABBREVIATIONS = {
    "ApplicationStop": "Stop", "DownloadBundle": "Download", "BeforeInstall": "BeforeInst", "Install": "Install",
    "AfterInstall": "AfterInst", "ApplicationStart": "Start", "ValidateService": "Validate",
    "BeforeBlockTraffic": "BfBlock", "BlockTraffic": "Block", "AfterBlockTraffic": "AfBlock",
    "BeforeAllowTraffic": "BfAllow", "AllowTraffic": "Allow", "AfterAllowTraffic": "AfAllow",
}

_WIDTH = 1120
_LABEL = 250
_RIGHT = 24
_ROW = 30
_BAR = 16
_TICKS = (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200)
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")

_CSS = """
:root{--ink:#1f2733;--muted:#5d6878;--line:#e3e8ef;--bg:#f6f8fb}
*{box-sizing:border-box}
body{margin:0;padding:24px 28px;font:14px/1.45 -apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--ink);background:var(--bg)}
h1{font-size:20px;margin:0 0 4px}
h2{font-size:15px;margin:22px 0 8px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
.card{background:#fff;border:1px solid var(--line);border-radius:8px;padding:16px 18px;margin-bottom:14px}
.meta{display:grid;grid-template-columns:repeat(auto-fill,minmax(240px,1fr));gap:6px 20px;margin-top:10px}
.meta div{overflow-wrap:anywhere}.meta b{color:var(--muted);font-weight:600;margin-right:6px}
.badge{display:inline-block;padding:2px 10px;border-radius:999px;color:#fff;font-weight:600;font-size:13px;vertical-align:2px}
.error{margin-top:10px;padding:8px 12px;background:#fdecec;border-left:4px solid #d9443f;border-radius:4px;white-space:pre-wrap}
.note{margin-top:10px;padding:8px 12px;background:#eef4fd;border-left:4px solid #3b82f6;border-radius:4px}
a{color:#2563eb}
svg{display:block;width:100%;height:auto;font:12px -apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
svg text{fill:var(--ink)}
svg .axis text{fill:var(--muted);font-size:11px}
svg .event-bar:hover{stroke:#111;stroke-width:1.5}
svg .bar-label{fill:#fff;font-size:10px;pointer-events:none}
svg .failure-label{fill:#b42318;font-size:11px;font-weight:600}
svg .batch-label,svg .fleet{fill:var(--muted);font-size:10px}
.legend{display:flex;flex-wrap:wrap;gap:14px;margin-top:8px;color:var(--muted);font-size:12px}
.legend span{display:inline-flex;align-items:center;gap:5px}
.legend i{display:inline-block;width:14px;height:10px;border-radius:2px}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid var(--line);vertical-align:top}
th{color:var(--muted);font-weight:600;font-size:12px;text-transform:uppercase;letter-spacing:.03em}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.mono{font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:12.5px}
footer{margin-top:18px;color:var(--muted);font-size:12px}
"""


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _time(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = _dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_dt.timezone.utc)
    return parsed.timestamp()


def _when(value: Optional[str]) -> str:
    """``2026-11-26 14:33:14 UTC`` from a record time."""
    moment = _time(value)
    return _dt.datetime.fromtimestamp(moment, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"


def _clock(seconds: float) -> str:
    return _dt.datetime.fromtimestamp(seconds, _dt.timezone.utc).strftime("%H:%M:%S")


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _badge(status: Optional[str]) -> str:
    colour = STATUS_COLOURS.get(status or "", "#8d95a3")
    return f'<span class="badge" style="background:{colour}">{_esc(status or "?")}</span>'


def report_name(deployment_id: str) -> str:
    return f"{deployment_id}.html"


def history_name(application: str, deployment_group: str) -> str:
    return "history-" + _SAFE_NAME.sub("_", f"{application}-{deployment_group}") + ".html"


def revision_text(revision: Optional[dict]) -> str:
    """A short, human name of a revision: s3://bucket/key@version, a Lambda version, or a file name."""
    rev = revision or {}
    if rev.get("function"):
        return f"{rev['function']}:{rev.get('alias')} v{rev.get('current_version')} -> v{rev.get('target_version') or 'new'}"
    if rev.get("bucket"):
        text = f"s3://{rev['bucket']}/{rev.get('key')}"
        return text + (f" @{str(rev['version'])[:12]}" if rev.get("version") else "")
    path = rev.get("local_path") or rev.get("path")
    if path:
        text = os.path.basename(str(path))
        return text + (f" ({str(rev['sha256'])[:12]})" if rev.get("sha256") else "")
    return "-"


def trigger_text(record: dict) -> str:
    """Who or what started the deployment, as the record holds it (``started_by``, ``trigger`` when present)."""
    parts = []
    trigger = record.get("trigger")
    if trigger is None:
        trigger = (record.get("extra") or {}).get("trigger")
    if isinstance(trigger, dict):
        parts.append(", ".join(f"{k} {v}" for k, v in trigger.items() if v not in (None, "")))
    elif trigger:
        parts.append(str(trigger))
    if record.get("started_by"):
        parts.append(str(record["started_by"]))
    if record.get("creator") and record["creator"] != "user":
        parts.append(f"({record['creator']})")
    return "; ".join(p for p in parts if p) or "-"


def deployment_seconds(record: dict) -> Optional[float]:
    start = _time(record.get("start_time")) or _time(record.get("create_time"))
    end = _time(record.get("end_time"))
    return None if start is None or end is None else max(0.0, end - start)


def _tick_step(span: float) -> float:
    for step in _TICKS:
        if span / step <= 10:
            return step
    return _TICKS[-1]


def _event_title(host: str, event: dict, start: Optional[float], end: Optional[float]) -> str:
    lines = [f"{host} - {event.get('name')}: {event.get('status')}"]
    if start is not None:
        span = f"{_clock(start)} -> {_clock(end)}" if end is not None else f"from {_clock(start)}"
        lines.append(span + (f" ({_duration(end - start)})" if end is not None else ""))
    for script in event.get("scripts") or []:
        if not isinstance(script, dict):
            continue
        bits = [str(script.get("location") or script.get("script") or "script")]
        if script.get("exit_code") is not None:
            bits.append(f"exit {script['exit_code']}")
        if script.get("duration") is not None:
            bits.append(f"{script['duration']} s")
        if script.get("timed_out"):
            bits.append("timed out")
        lines.append("script " + ", ".join(bits))
        tail = script.get("log_tail") or script.get("output")
        if tail:
            lines.append("log: " + str(tail)[-600:])
    if event.get("message"):
        lines.append(str(event["message"])[-600:])
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# the deployment page
# --------------------------------------------------------------------------------------------


class _Scale:
    def __init__(self, t0: float, t1: float):
        self.t0 = t0
        self.span = max(t1 - t0, 1.0)
        self.width = _WIDTH - _LABEL - _RIGHT

    def x(self, moment: float) -> float:
        return round(_LABEL + (moment - self.t0) / self.span * self.width, 2)


def _bounds(record: dict) -> tuple:
    moments = [_time(record.get(k)) for k in ("create_time", "start_time", "end_time")]
    for host in record.get("hosts") or []:
        for event in host.get("events") or []:
            moments += [_time(event.get("start_time")), _time(event.get("end_time"))]
    extra = record.get("extra") or {}
    moments += [_time(p.get("time")) for p in (extra.get("bluegreen") or {}).get("phases") or []]
    moments += [_time(s.get("time")) for s in extra.get("steps_actual") or []]
    moments += [_time(a.get("time")) for a in extra.get("alarm_events") or []]
    known = [m for m in moments if m is not None]
    if not known:
        now = _dt.datetime.now(_dt.timezone.utc).timestamp()
        return now, now + 1
    start = _time(record.get("start_time")) or min(known)
    return min([start] + known), max(known)


def _batches(hosts: list) -> list:
    """Hosts grouped in deployment order: a host whose first event starts after every earlier host's last
    event ended opens a new batch (in-place batches run one after the other)."""
    groups: list = []
    latest_end = None
    for host in hosts:
        starts = [s for s in (_time(e.get("start_time")) for e in host.get("events") or []) if s is not None]
        ends = [s for s in (_time(e.get("end_time")) for e in host.get("events") or []) if s is not None]
        first = min(starts) if starts else None
        if not groups or (first is not None and latest_end is not None and first >= latest_end):
            groups.append([])
        groups[-1].append(host)
        if ends:
            latest_end = max(ends + ([latest_end] if latest_end is not None else []))
    return groups


def _host_order(hosts: list) -> list:
    def first(host: dict) -> float:
        starts = [s for s in (_time(e.get("start_time")) for e in host.get("events") or []) if s is not None]
        return min(starts) if starts else float("inf")
    return sorted(hosts, key=first)


def _axis(scale: _Scale, top: int, bottom: int) -> list:
    step = _tick_step(scale.span)
    out = ['<g class="axis">']
    tick = 0.0
    while tick <= scale.span + 1e-6:
        x = scale.x(scale.t0 + tick)
        out.append(f'<line x1="{x}" y1="{top}" x2="{x}" y2="{bottom}" stroke="#e9edf3"/>')
        label = f"+{tick:g}s" if scale.span < 120 else f"+{_duration(tick)}"
        out.append(f'<text x="{x}" y="{top - 6}" text-anchor="middle">{_esc(label)}</text>')
        tick += step
    out.append("</g>")
    return out


def _phase_lane(record: dict, scale: _Scale, y: int, t_end: float) -> list:
    extra = record.get("extra") or {}
    phases = (extra.get("bluegreen") or {}).get("phases") or []
    if not phases:
        return []
    out = [f'<g class="phases"><text x="8" y="{y + 15}" font-weight="600">phases</text>']
    for index, phase in enumerate(phases):
        start = _time(phase.get("time"))
        if start is None:
            continue
        end = _time(phases[index + 1].get("time")) if index + 1 < len(phases) else t_end
        end = end if end is not None else t_end
        x1, x2 = scale.x(start), scale.x(max(end, start))
        colour = PHASE_COLOURS.get(phase.get("phase"), "#cfd8e3")
        width = max(2.0, x2 - x1)
        out.append(f'<rect class="phase" data-phase="{_esc(phase.get("phase"))}" x="{x1}" y="{y + 2}" width="{width:.2f}" '
                   f'height="{_BAR + 4}" rx="3" fill="{colour}"><title>{_esc(phase.get("phase"))}: {_clock(start)} '
                   f'({_duration(max(0.0, end - start))})</title></rect>')
        if width > 56:
            out.append(f'<text x="{x1 + 5}" y="{y + 16}" font-size="11">{_esc(phase.get("phase"))}</text>')
    for key, label in (("bluegreen_continue", "continue"), ("interrupted", "interrupted"), ("recovery", "recovered")):
        mark = extra.get(key)
        moment = _time((mark or {}).get("at") or (mark or {}).get("time")) if isinstance(mark, dict) else None
        if moment is None:
            continue
        x = scale.x(moment)
        who = f" by {mark.get('by')}" if mark.get("by") else ""
        out.append(f'<g class="request" data-request="{label}"><path d="M{x} {y - 2} l6 8 l-6 8 l-6 -8 z" fill="#1f2733">'
                   f'<title>{_esc(label)} request{_esc(who)} at {_clock(moment)}</title></path></g>')
    out.append("</g>")
    return out


def _traffic_chart(record: dict, scale: _Scale, y: int) -> tuple:
    """Lambda: the alias weight of the new version over time (a step chart) with the alarm checks."""
    extra = record.get("extra") or {}
    steps = [s for s in extra.get("steps_actual") or [] if _time(s.get("time")) is not None]
    alarms = [a for a in extra.get("alarm_events") or [] if _time(a.get("time")) is not None]
    info = extra.get("lambda") or {}
    if not steps and not alarms and not info:
        return [], 0
    height = 110
    top, base = y + 10, y + 10 + height - 20
    out = [f'<g class="traffic"><text x="8" y="{y + 24}" font-weight="600">traffic to the</text>'
           f'<text x="8" y="{y + 40}" font-weight="600">new version</text>']
    for pct in (0, 50, 100):
        py = base - (base - top) * pct / 100
        out.append(f'<line x1="{_LABEL}" y1="{py}" x2="{_WIDTH - _RIGHT}" y2="{py}" stroke="#e9edf3"/>'
                   f'<text x="{_LABEL - 6}" y="{py + 4}" text-anchor="end" font-size="10" fill="#5d6878">{pct}%</text>')
    start = _time(record.get("start_time")) or scale.t0
    points = [(start, 0.0)]
    for step in steps:
        weight = 1.0 if step.get("promote") else float(step.get("weight") or 0.0)
        points.append((_time(step["time"]), weight))
    rollback = info.get("rollback") if isinstance(info.get("rollback"), dict) else None
    end = _time(record.get("end_time")) or max(p[0] for p in points)
    if info.get("rolled_back"):
        moment = _time((rollback or {}).get("time")) or end
        points.append((moment, 0.0))
    path = []
    for index, (moment, weight) in enumerate(points):
        x, py = scale.x(moment), base - (base - top) * weight
        if index == 0:
            path.append(f"M{x} {py}")
        else:
            path.append(f"H{x} V{py}")
    path.append(f"H{scale.x(end)}")
    out.append(f'<path class="weight" d="{" ".join(path)}" fill="none" stroke="#3b82f6" stroke-width="2.5"/>')
    for index, step in enumerate(steps, 1):
        moment = _time(step["time"])
        weight = 1.0 if step.get("promote") else float(step.get("weight") or 0.0)
        out.append(f'<circle class="traffic-step" cx="{scale.x(moment)}" cy="{base - (base - top) * weight}" r="3.5" '
                   f'fill="#3b82f6"><title>step {index}: {weight:.0%} at +{step.get("actual_seconds")} s '
                   f'(planned +{step.get("planned_seconds")} s); alarms {_esc(step.get("alarms"))}</title></circle>'
                   f'<text x="{scale.x(moment) + 5}" y="{base - (base - top) * weight - 6}" font-size="11" '
                   f'fill="#2563eb">{weight:.0%}</text>')
    for alarm in alarms:
        moment = _time(alarm["time"])
        firing = alarm.get("state") == "ALARM" or alarm.get("error")
        colour = "#d9443f" if firing else "#2f9e5f"
        what = f"{alarm.get('alarm')} {alarm.get('state')}" if alarm.get("alarm") else f"alarms unreadable: {alarm.get('error')}"
        out.append(f'<g class="alarm-check"><line x1="{scale.x(moment)}" y1="{top - 4}" x2="{scale.x(moment)}" y2="{base}" '
                   f'stroke="{colour}" stroke-dasharray="3 3"/><circle cx="{scale.x(moment)}" cy="{top - 4}" r="5" '
                   f'fill="{colour}"><title>{_esc(alarm.get("phase"))}: {_esc(what)} at {_clock(moment)}'
                   f'{(" - " + _esc(alarm.get("reason"))) if alarm.get("reason") else ""}</title></circle></g>')
    if info.get("rolled_back"):
        moment = _time((rollback or {}).get("time")) or end
        out.append(f'<text x="{min(scale.x(moment) + 6, _WIDTH - _RIGHT - 80)}" y="{base - 6}" fill="#d9443f" '
                   f'font-weight="600">rolled back</text>')
    out.append("</g>")
    return out, height + 10


def render_deployment(record: dict, generated: Optional[str] = None) -> str:
    """The HTML page of one deployment."""
    hosts = _host_order(list(record.get("hosts") or []))
    t0, t1 = _bounds(record)
    scale = _Scale(t0, t1)
    extra = record.get("extra") or {}
    svg: list = []
    y = 28
    svg += _axis(scale, y, y + 10)
    y += 10
    phase_lane = _phase_lane(record, scale, y, t1)
    if phase_lane:
        svg += phase_lane
        y += _ROW + 6
    traffic, traffic_height = _traffic_chart(record, scale, y)
    svg += traffic
    y += traffic_height
    batches = _batches(hosts) if record.get("deployment_type") == "in_place" else [hosts]
    for number, batch in enumerate(batches, 1):
        batch_top = y
        if len(batches) > 1:
            svg.append(f'<rect class="batch" data-batch="{number}" x="2" y="{batch_top}" width="{_WIDTH - 4}" '
                       f'height="{sum(_row_height(h) for h in batch)}" fill="{"#f3f6fb" if number % 2 else "#ffffff"}"/>')
            svg.append(f'<text class="batch-label" x="{_LABEL - 8}" y="{batch_top + _ROW / 2 + 4}" text-anchor="end">'
                       f'batch {number}</text>')
        for host in batch:
            svg += _host_row(host, scale, y, t1)
            fleet = _fleet_of(record, host)
            if fleet:
                svg.append(f'<text class="fleet" x="{_LABEL - 8}" y="{y + _ROW / 2 + 4}" text-anchor="end">{fleet}</text>')
            y += _row_height(host)
    height = y + 16
    # the axis's grid lines run through every lane
    grid = [f'<line x1="{scale.x(t0 + tick)}" y1="38" x2="{scale.x(t0 + tick)}" y2="{y}" stroke="#eef1f6"/>'
            for tick in _ticks(scale)]
    status_colour = STATUS_COLOURS.get(record.get("status") or "", "#8d95a3")
    svg_text = (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_WIDTH} {height}" role="img" '
                f'aria-label="timeline of {_esc(record.get("deployment_id"))}">'
                + "".join(grid) + "".join(svg)
                + f'<line x1="{scale.x(t1)}" y1="30" x2="{scale.x(t1)}" y2="{y}" stroke="{status_colour}" stroke-width="2"/>'
                + "</svg>")
    return _page(f"{record.get('deployment_id')} - {record.get('application')}/{record.get('deployment_group')}",
                 _header(record) + f'<div class="card"><h2 style="margin-top:0">Timeline</h2>{svg_text}{_legend(record)}</div>'
                 + _hosts_table(hosts) + _notification_failures(extra), generated)


def _row_height(host: dict) -> int:
    """A host with a failed event gets a second line, under its bars, that names the failure."""
    return _ROW + (14 if any(e.get("status") == "Failed" for e in host.get("events") or []) else 0)


def _fleet_of(record: dict, host: dict) -> str:
    """Blue/green: which fleet a host belongs to ("" for other deployment types)."""
    bg = (record.get("extra") or {}).get("bluegreen")
    if not bg:
        return ""
    ids = set(bg.get("replacement_ids") or [])
    return "replacement" if host.get("name") in ids or host.get("instance_id") in ids else "original"


def _ticks(scale: _Scale) -> list:
    step = _tick_step(scale.span)
    count = int(scale.span // step) + 1
    return [i * step for i in range(count)]


def _host_row(host: dict, scale: _Scale, y: int, t_end: float) -> list:
    name = host.get("name") or "?"
    status = host.get("status") or "Pending"
    out = [f'<g class="host-row" data-host="{_esc(name)}" data-status="{_esc(status)}">',
           f'<line x1="{_LABEL}" y1="{y + _row_height(host) - 0.5}" x2="{_WIDTH - _RIGHT}" y2="{y + _row_height(host) - 0.5}" '
           f'stroke="#eef1f6"/>',
           f'<circle cx="12" cy="{y + _ROW / 2}" r="4.5" fill="{STATUS_COLOURS.get(status, "#8d95a3")}"><title>{_esc(status)}</title></circle>',
           f'<text x="22" y="{y + _ROW / 2 + 4}">{_esc(name[:24])}<title>{_esc(name)}'
           f'{(" (" + _esc(host.get("instance_id")) + ")") if host.get("instance_id") and host.get("instance_id") != name else ""}'
           f': {_esc(status)}</title></text>']
    events = host.get("events") or []
    times = {e.get("name"): (_time(e.get("start_time")), _time(e.get("end_time"))) for e in events}
    block, allow = times.get("BlockTraffic"), times.get("AllowTraffic")
    if block and block[0] is not None:
        out_start = block[0]
        out_end = (allow[1] or allow[0]) if allow and (allow[1] or allow[0]) else t_end
        x1, x2 = scale.x(out_start), scale.x(max(out_end, out_start))
        out.append(f'<rect class="lb-band" x="{x1}" y="{y + 4 + _BAR + 2}" width="{max(2.0, x2 - x1):.2f}" height="4" rx="2" '
                   f'fill="#f0a43a"><title>out of its load balancer: {_clock(out_start)} -> {_clock(out_end)} '
                   f'({_duration(out_end - out_start)})</title></rect>')
    cursor = None
    for event in events:
        start, end = _time(event.get("start_time")), _time(event.get("end_time"))
        status = event.get("status") or "Pending"
        colour = STATUS_COLOURS.get(status, "#8d95a3")
        title = _esc(_event_title(name, event, start, end))
        if start is None and end is None:
            x = scale.x(cursor if cursor is not None else t_end)
            out.append(f'<rect class="event-bar untimed" data-event="{_esc(event.get("name"))}" data-status="{_esc(status)}" '
                       f'x="{x}" y="{y + 4}" width="3" height="{_BAR}" fill="{colour}" opacity="0.7"><title>{title}</title></rect>')
            continue
        start = start if start is not None else end
        end = end if end is not None else (t_end if status == "InProgress" else start)
        x1, x2 = scale.x(start), scale.x(max(end, start))
        width = max(6.0 if status == "Failed" else 3.0, x2 - x1)
        cursor = max(end, cursor or end)
        out.append(f'<rect class="event-bar" data-event="{_esc(event.get("name"))}" data-status="{_esc(status)}" x="{x1}" '
                   f'y="{y + 4}" width="{width:.2f}" height="{_BAR}" rx="2" fill="{colour}" stroke="#ffffff" '
                   f'stroke-width="0.75"><title>{title}</title></rect>')
        label = EVENT_ABBREVIATIONS.get(event.get("name"), event.get("name") or "")
        if width >= 7 * len(label) + 6:
            out.append(f'<text class="bar-label" x="{x1 + 4}" y="{y + 4 + _BAR - 4}">{_esc(label)}</text>')
        if status == "Failed":
            # the failure is what a reader looks for: named on its own line under the bar, whatever its width
            failure = _failure_label(event)
            anchor, anchor_x = ("end", x1 + width) if x1 + 7 * len(failure) > _WIDTH - _RIGHT else ("start", x1)
            out.append(f'<text class="failure-label" x="{anchor_x:.2f}" y="{y + _ROW + 8}" text-anchor="{anchor}">'
                       f'{_esc(failure)}</text>')
    out.append("</g>")
    return out


def _failure_label(event: dict) -> str:
    """``ValidateService failed: scripts/check.sh exit 3`` (or timed out)."""
    scripts = [x for x in event.get("scripts") or [] if isinstance(x, dict)]
    bad = next((x for x in scripts if x.get("exit_code") not in (0, None) or x.get("timed_out")), None)
    text = f"{event.get('name')} failed"
    if bad:
        text += f": {bad.get('location') or bad.get('script')}"
        text += " timed out" if bad.get("timed_out") else f" exit {bad.get('exit_code')}"
    return text


def _legend(record: dict) -> str:
    items = [("Succeeded", STATUS_COLOURS["Succeeded"]), ("Failed", STATUS_COLOURS["Failed"]),
             ("Skipped", STATUS_COLOURS["Skipped"]), ("In progress", STATUS_COLOURS["InProgress"])]
    names = {e.get("name") for h in record.get("hosts") or [] for e in h.get("events") or []}
    if "BlockTraffic" in names:
        items.append(("out of the load balancer", "#f0a43a"))
    if record.get("deployment_type") == "lambda":
        items += [("traffic to the new version", "#3b82f6"), ("alarm check OK", "#2f9e5f"), ("alarm in ALARM", "#d9443f")]
    if (record.get("extra") or {}).get("bluegreen"):
        items += [(f"phase: {k}", v) for k, v in PHASE_COLOURS.items() if k not in ("started", "finished")]
    spans = "".join(f'<span><i style="background:{c}"></i>{_esc(t)}</span>' for t, c in items)
    return f'<div class="legend">{spans}<span>hover a bar for its script, exit code and log</span></div>'


def _header(record: dict) -> str:
    did = record.get("deployment_id")
    links = []
    if record.get("rollback_of"):
        links.append(f'rollback of <a href="{_esc(report_name(record["rollback_of"]))}">{_esc(record["rollback_of"])}</a>')
    if record.get("rolled_back_by"):
        links.append(f'rolled back by <a href="{_esc(report_name(record["rolled_back_by"]))}">'
                     f'{_esc(record["rolled_back_by"])}</a>')
    history = history_name(record.get("application") or "", record.get("deployment_group") or "")
    configuration = record.get("configuration")
    if isinstance(configuration, dict):
        configuration = ", ".join(f"{k} {v}" for k, v in configuration.items())
    meta = [
        ("application", record.get("application")), ("group", record.get("deployment_group")),
        ("type", record.get("deployment_type")), ("revision", revision_text(record.get("revision"))),
        ("configuration", configuration or "-"), ("started", _when(record.get("start_time") or record.get("create_time"))),
        ("ended", _when(record.get("end_time"))), ("duration", _duration(deployment_seconds(record))),
        ("started by", trigger_text(record)), ("hosts", len(record.get("hosts") or [])),
    ]
    cells = "".join(f"<div><b>{_esc(k)}</b>{_esc(v)}</div>" for k, v in meta)
    error = f'<div class="error">{_esc(record.get("error"))}</div>' if record.get("error") else ""
    note = f'<div class="note">{" &middot; ".join(links)}</div>' if links else ""
    return (f'<div class="card"><h1>Deployment {_esc(did)} {_badge(record.get("status"))}</h1>'
            f'<div><a href="{_esc(history)}">history of {_esc(record.get("application"))}/'
            f'{_esc(record.get("deployment_group"))}</a></div><div class="meta">{cells}</div>{error}{note}</div>')


def _hosts_table(hosts: list) -> str:
    if not hosts:
        return ""
    rows = []
    for host in hosts:
        events = host.get("events") or []
        failed = next((e for e in events if e.get("status") == "Failed"), None)
        starts = [t for t in (_time(e.get("start_time")) for e in events) if t is not None]
        ends = [t for t in (_time(e.get("end_time")) for e in events) if t is not None]
        span = (max(ends) - min(starts)) if starts and ends else None
        detail = ""
        if failed:
            detail = f"{failed.get('name')}: {str(failed.get('message') or '')[-200:]}"
        rows.append(f"<tr><td>{_esc(host.get('name'))}</td><td>{_badge(host.get('status'))}</td>"
                    f"<td class='num'>{len(events)}</td><td class='num'>{_esc(_duration(span))}</td>"
                    f"<td class='mono'>{_esc(detail)}</td></tr>")
    return ('<div class="card"><h2 style="margin-top:0">Hosts</h2><table><tr><th>host</th><th>status</th>'
            '<th>events</th><th>time</th><th>failure</th></tr>' + "".join(rows) + "</table></div>")


def _notification_failures(extra: dict) -> str:
    failures = extra.get("notification_failures") or []
    if not failures:
        return ""
    rows = "".join(f"<tr><td>{_esc(_when(f.get('time')))}</td><td>{_esc(f.get('event'))}</td><td class='mono'>"
                   f"{_esc(f.get('destination'))}</td><td>{_esc(f.get('error'))}</td></tr>" for f in failures)
    return ('<div class="card"><h2 style="margin-top:0">Notifications not delivered</h2><table><tr><th>time</th>'
            '<th>event</th><th>destination</th><th>error</th></tr>' + rows + "</table></div>")


def _page(title: str, body: str, generated: Optional[str]) -> str:
    stamp = generated or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>{body}"
            f"<footer>rollwright.deploy timeline report, generated {_esc(stamp)}</footer></body></html>\n")


# --------------------------------------------------------------------------------------------
# the history page
# --------------------------------------------------------------------------------------------


def render_history(records: list, application: str, deployment_group: str, generated: Optional[str] = None) -> str:
    """The last deployments of a group (newest first), each linking to its timeline page."""
    rows = []
    for record in records:
        did = record.get("deployment_id")
        relation = ""
        if record.get("rollback_of"):
            relation = f' <span class="mono">rollback of {_esc(record["rollback_of"])}</span>'
        rows.append(
            f'<tr class="deployment" data-deployment="{_esc(did)}"><td><a href="{_esc(report_name(did))}">{_esc(did)}</a>'
            f"{relation}</td><td>{_badge(record.get('status'))}</td>"
            f"<td>{_esc(_when(record.get('start_time') or record.get('create_time')))}</td>"
            f"<td class='num'>{_esc(_duration(deployment_seconds(record)))}</td>"
            f"<td class='mono'>{_esc(revision_text(record.get('revision')))}</td><td>{_esc(trigger_text(record))}</td></tr>")
    table = ('<table><tr><th>deployment</th><th>status</th><th>started</th><th>duration</th><th>revision</th>'
             '<th>started by</th></tr>' + "".join(rows) + "</table>") if rows else "<p>No deployments recorded.</p>"
    body = (f'<div class="card"><h1>{_esc(application)}/{_esc(deployment_group)}</h1>'
            f"<div>the last {len(records)} deployment(s), newest first</div></div><div class=\"card\">{table}</div>")
    return _page(f"{application}/{deployment_group} - deployments", body, generated)


# --------------------------------------------------------------------------------------------
# writing the files
# --------------------------------------------------------------------------------------------


def _write(path: str, text: str) -> None:
    directory = os.path.dirname(path)
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary, path)  # a reader (or AWX collecting artifacts) never sees half a page


def write_reports(store: Any, report_dir: str, deployment_id: Optional[str] = None, application: Optional[str] = None,
                  deployment_group: Optional[str] = None, history: int = 20) -> dict:
    """Write a deployment's page (and those of the deployment it rolled back or that rolled it back), and
    its group's history page; without ``deployment_id``, the pages of the group's last ``history`` deployments.
    Returns ``{report, history, written}`` (paths)."""
    directory = os.path.abspath(os.path.expanduser(report_dir))
    os.makedirs(directory, exist_ok=True)
    pages: dict = {}
    if deployment_id:
        record = store.get(deployment_id).to_dict()
        application, deployment_group = record["application"], record["deployment_group"]
        pages[deployment_id] = record
        for related in (record.get("rollback_of"), record.get("rolled_back_by")):
            if related and related not in pages:
                pages[related] = store.get(related).to_dict()
    elif not application:
        raise ValueError("deployment_id or application (and deployment_group): expected the deployment to report on")
    deployment_group = deployment_group or application
    listed = [r.to_dict() for r in store.list(application, deployment_group, limit=history)]
    if not deployment_id:
        for item in listed:
            pages[item["deployment_id"]] = store.get(item["deployment_id"]).to_dict()
    written = []
    for did, record in pages.items():
        path = os.path.join(directory, report_name(did))
        _write(path, render_deployment(record))
        written.append(path)
    history_path = os.path.join(directory, history_name(application, deployment_group))
    _write(history_path, render_history(listed, application, deployment_group))
    written.append(history_path)
    return {"report": os.path.join(directory, report_name(deployment_id)) if deployment_id else None,
            "history": history_path, "written": written}
