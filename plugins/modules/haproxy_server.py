#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: haproxy_server
short_description: Drain, disable and enable HAProxy servers on one or more HAProxy instances, and wait
version_added: 0.1.0
description:
  - Sets the administrative state of servers of an HAProxy backend through the runtime API (the C(stats socket)),
    on every listed HAProxy instance together (an HA pair is kept in step).
  - V(drain) stops new sessions and, with O(wait), waits until the server's current sessions (C(scur) and queued
    C(qcur) in C(show stat)) reach 0 on every instance.
  - V(maint) with O(wait) drains first, waits for the sessions to end, then puts the server in maintenance;
    without O(wait) it puts the server in maintenance at once (sessions in progress still finish).
  - V(ready) puts the server back in rotation (and sets O(weight) when given) and, with O(wait), waits until its
    health check reports a full C(UP) on every instance (a server without a health check is ready at once).
  - Idempotent, nothing is sent for a server already in the requested state and weight.
  - Runs where the runtime API is reachable; a unix socket is local to the machine running the module (delegate
    the task to the HAProxy host, or use a TCP admin socket bound to a private address).
author:
  - Rollwright maintainers (@rollwright)
options:
  instances:
    description:
      - The HAProxy instances, each a unix socket path (V(/run/haproxy/admin.sock)), a TCP admin socket
        V(host:port), or a dictionary with C(name) and one of C(socket) or C(address).
      - The socket must be declared with C(level admin), for example C(stats socket /run/haproxy/admin.sock mode 600 level admin)
        or C(stats socket ipv4@10.0.0.5:9999 level admin).
    type: list
    elements: raw
    required: true
  backend:
    description:
      - The backend the servers belong to.
    type: str
    required: true
  servers:
    description:
      - Names of the servers in O(backend) (as on the C(server) lines of the configuration).
      - Every server must exist on every instance.
    type: list
    elements: str
    required: true
    aliases: [server, name]
  state:
    description:
      - The administrative state wanted.
    type: str
    choices: [ready, drain, maint]
    required: true
  weight:
    description:
      - The weight to set (0-256). Unchanged when omitted.
    type: int
  wait:
    description:
      - Wait for the sessions to end (V(drain), V(maint)) or for a full C(UP) health check (V(ready)).
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait. The task fails when the wait times out, naming each server and its session count or
        health state; the servers are left as they are (a server still in drain stays in drain).
    type: float
    default: 300
  connect_timeout:
    description:
      - Seconds allowed for each runtime API command.
    type: float
    default: 5
extends_documentation_fragment:
  - rollwright.deploy.attributes
attributes:
  check_mode:
    support: full
    details: Reads every server's state and reports what would change without sending any command.
  diff_mode:
    support: full
    details: Shows each server's state and weight per instance before and after.
notes:
  - In-place deployments use the same code through C(rollwright_load_balancer.haproxy); see C(docs/onprem.md).
"""

EXAMPLES = r"""
- name: Take web1 out of both HAProxy instances gracefully (drain, wait for sessions, maintenance)
  rollwright.deploy.haproxy_server:
    instances:
      - /run/haproxy/admin.sock
      - 10.0.0.6:9999
    backend: app
    server: web1
    state: maint
    wait_timeout: 120

- name: Put it back and wait until the health check passes everywhere
  rollwright.deploy.haproxy_server:
    instances:
      - {name: lb-a, socket: /run/haproxy/admin.sock}
      - {name: lb-b, address: 10.0.0.6:9999}
    backend: app
    servers: [web1]
    state: ready

- name: Drain the server on the HAProxy host itself (its unix socket)
  rollwright.deploy.haproxy_server:
    instances: [/run/haproxy/admin.sock]
    backend: app
    server: "{{ inventory_hostname }}"
    state: drain
  delegate_to: lb-a.example.internal
"""

RETURN = r"""
servers:
  description: Each server on each instance, before and after.
  returned: always
  type: list
  elements: dict
  contains:
    instance:
      description: The HAProxy instance name.
      type: str
    backend:
      description: The backend.
      type: str
    server:
      description: The server name.
      type: str
    state_before:
      description: The administrative state before the task (ready, drain or maint).
      type: str
    state:
      description: The administrative state after the task.
      type: str
    weight_before:
      description: The weight before the task.
      type: int
    weight:
      description: The weight after the task.
      type: int
    status:
      description: HAProxy's status after the task (C(UP), C(DOWN), C(DRAIN), C(MAINT), C(no check), ...).
      type: str
    sessions:
      description: Current sessions (C(scur)) after the task.
      type: int
  sample:
    - {instance: lb-a, backend: app, server: web1, state_before: ready, state: maint, weight_before: 1, weight: 1,
       status: MAINT, sessions: 0}
wait:
  description: The wait's outcome per server (elapsed seconds, polls, last state).
  returned: when O(wait) is true and not in check mode
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.loadbalancers.base import LoadBalancerError
from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.loadbalancers.haproxy import (
    HAProxyAdapter,
    parse_haproxy_config,
    set_servers,
)


def _rows(result):
    after = {(a["instance"], a["backend"], a["server"]): a for a in result.get("after", [])}
    rows = []
    for before in result["before"]:
        key = (before["instance"], before["backend"], before["server"])
        now = after.get(key, before)
        rows.append({"instance": key[0], "backend": key[1], "server": key[2], "state_before": before["state"],
                     "state": now["state"], "weight_before": before["weight"], "weight": now["weight"],
                     "status": now.get("status", before["status"]), "sessions": now.get("sessions", before["sessions"])})
    return rows


def main():
    module = AnsibleModule(
        argument_spec=dict(
            instances=dict(type="list", elements="raw", required=True),
            backend=dict(type="str", required=True),
            servers=dict(type="list", elements="str", required=True, aliases=["server", "name"]),
            state=dict(type="str", required=True, choices=["ready", "drain", "maint"]),
            weight=dict(type="int"),
            wait=dict(type="bool", default=True),
            wait_timeout=dict(type="float", default=300),
            connect_timeout=dict(type="float", default=5),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if p["weight"] is not None and not 0 <= p["weight"] <= 256:
        module.fail_json(msg=f"weight: expected an integer between 0 and 256, got {p['weight']}")
    try:
        config = parse_haproxy_config({"instances": p["instances"], "backend": p["backend"],
                                       "connect_timeout": p["connect_timeout"]}, path="haproxy_server")
        adapter = HAProxyAdapter(config)
        result = set_servers(adapter, p["servers"], p["state"], weight=p["weight"], wait=p["wait"],
                             timeout=p["wait_timeout"], check_mode=module.check_mode)
    except LoadBalancerError as exc:
        module.fail_json(msg=str(exc).replace("load_balancer.haproxy.backend", "backend").replace("haproxy_server.", ""))
    rows = _rows(result)
    out = {"changed": result["changed"], "servers": rows}
    if module._diff:  # pylint: disable=protected-access
        out["diff"] = {
            "before": {f"{r['instance']}:{r['backend']}/{r['server']}": {"state": r["state_before"], "weight": r["weight_before"]}
                       for r in rows},
            "after": {f"{r['instance']}:{r['backend']}/{r['server']}": {"state": r["state"], "weight": r["weight"]}
                      for r in rows},
        }
    if "wait" in result:
        out["wait"] = result["wait"]
        if not result["ok"]:
            module.fail_json(msg=f"haproxy_server: servers not {p['state']} in time: {result['message']}", **out)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
