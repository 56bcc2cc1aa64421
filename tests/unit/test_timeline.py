# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The timeline report's HTML: a row per host, a bar per event, batches, load-balancer bands, phases,
Lambda traffic, links, history; and write_reports against a real SQLite store."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import timeline
from ansible_collections.rollwright.deploy.plugins.module_utils.records import DeploymentRecord, HostRecord, open_store


class _Classes(HTMLParser):
    def __init__(self, text):
        super().__init__()
        self.count, self.titles, self._in_title = {}, [], False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        for name in (dict(attrs).get("class") or "").split():
            self.count[name] = self.count.get(name, 0) + 1
        self._in_title = tag == "title"

    def handle_data(self, data):
        if self._in_title:
            self.titles.append(data)

    def handle_endtag(self, tag):
        self._in_title = False


def _event(name, start, end, status="Succeeded", **kw):
    return dict(name=name, status=status, start_time=f"2026-11-26T10:00:{start:06.3f}Z" if start is not None else None,
                end_time=f"2026-11-26T10:00:{end:06.3f}Z" if end is not None else None, scripts=kw.get("scripts", []),
                message=kw.get("message"))


def _inplace():
    host1 = {"name": "web1", "status": "Succeeded", "events": [
        _event("BlockTraffic", 1, 3), _event("ApplicationStop", 3, 4), _event("AllowTraffic", 5, 7)]}
    host2 = {"name": "web2", "status": "Failed", "events": [
        _event("BlockTraffic", 8, 9), _event("ValidateService", 9, 12, "Failed",
                                             scripts=[{"location": "scripts/check.sh", "exit_code": 3,
                                                       "log_tail": "port 8080 <closed>"}]),
        _event("AllowTraffic", None, None, "Skipped")]}
    return {"deployment_id": "d-AAAAAAAAA", "application": "shop", "deployment_group": "web", "deployment_type": "in_place",
            "status": "Failed", "error": "web2 failed", "create_time": "2026-11-26T10:00:00.000Z",
            "start_time": "2026-11-26T10:00:00.500Z", "end_time": "2026-11-26T10:00:13.000Z",
            "revision": {"bucket": "rel", "key": "shop.zip"}, "rolled_back_by": "d-BBBBBBBBB", "started_by": "ops@ctl",
            "trigger": {"awx_job_id": 42}, "hosts": [host2, host1], "extra": {}}


def test_a_row_per_host_a_bar_per_event_batches_and_bands():
    page = timeline.render_deployment(_inplace())
    found = _Classes(page)
    assert found.count["host-row"] == 2 and found.count["event-bar"] == 6
    assert found.count["batch"] == 2  # web2 started after web1 ended
    assert found.count["lb-band"] == 2
    assert found.count["untimed"] == 1  # the skipped AllowTraffic is drawn, as a thin mark
    assert any("scripts/check.sh, exit 3" in t and "port 8080 &lt;closed&gt;" not in t and "port 8080 <closed>" in t
               for t in found.titles)
    assert 'href="d-BBBBBBBBB.html"' in page and 'href="history-shop-web.html"' in page
    assert "awx_job_id 42" in page and "ops@ctl" in page
    assert not re.search(r"<script|<link|url\(|(src|href)=\"(https?:)?//", page)
    # rows in deployment order: web1 first
    assert page.index('data-host="web1"') < page.index('data-host="web2"')


def test_lambda_traffic_and_bluegreen_phases():
    record = _inplace()
    record.update(deployment_type="lambda", hosts=[{"name": "fn", "status": "Failed", "events": [_event("AllowTraffic", 2, 5)]}])
    record["extra"] = {"steps_actual": [{"time": "2026-11-26T10:00:03.000Z", "weight": 0.1, "promote": False}],
                       "alarm_events": [{"time": "2026-11-26T10:00:04.000Z", "alarm": "errors", "state": "ALARM"}],
                       "lambda": {"rolled_back": True}}
    found = _Classes(timeline.render_deployment(record))
    assert found.count["traffic-step"] == 1 and found.count["alarm-check"] == 1 and found.count["weight"] == 1
    record["extra"] = {"bluegreen": {"phases": [{"phase": "started", "time": "2026-11-26T10:00:01.000Z"},
                                                {"phase": "ready", "time": "2026-11-26T10:00:05.000Z"},
                                                {"phase": "rerouting", "time": "2026-11-26T10:00:08.000Z"}]},
                       "bluegreen_continue": {"by": "alice", "at": "2026-11-26T10:00:07.000Z"}}
    found = _Classes(timeline.render_deployment(record))
    assert found.count["phase"] == 3 and found.count["request"] == 1


def test_write_reports_from_a_store(tmp_path):
    store = open_store("sqlite", {"path": str(tmp_path / "r.sqlite3")})
    first = store.create(DeploymentRecord(application="shop", deployment_group="web", hosts=[HostRecord(name="h1")]))
    store.event(first.deployment_id, "h1", "Install", "InProgress")
    store.event(first.deployment_id, "h1", "Install", "Failed", message="disk full")
    store.update_status(first.deployment_id, "Failed", error="h1 failed")
    second = store.create(DeploymentRecord(application="shop", deployment_group="web", creator="rollback",
                                           rollback_of=first.deployment_id))
    out = timeline.write_reports(store, str(tmp_path / "reports"), deployment_id=second.deployment_id)
    names = sorted(p.name for p in (tmp_path / "reports").iterdir())
    assert names == sorted([f"{first.deployment_id}.html", f"{second.deployment_id}.html", "history-shop-web.html"])
    assert out["report"] == str(tmp_path / "reports" / f"{second.deployment_id}.html")
    history = (tmp_path / "reports" / "history-shop-web.html").read_text()
    assert _Classes(history).count["deployment"] == 2 and history.index(second.deployment_id) < history.index(first.deployment_id)
    everything = timeline.write_reports(store, str(tmp_path / "all"), application="shop", deployment_group="web", history=1)
    assert len(everything["written"]) == 2 and everything["report"] is None
