#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: host_deployment_info
short_description: Report which revision a host runs for one deployment group
version_added: 0.1.0
description:
  - Reads the host state kept by M(rollwright.deploy.host_lifecycle) for one application and deployment group,
    namely the last successful deployment (id and revision identity), the most recent deployment (id and status) and
    the deployments kept on the host.
  - The controller uses it to order hosts like CodeDeploy (unknown revision, old revision, current revision).
  - Read-only; a host that never ran a deployment of the group returns C(exists=false) and nulls.
author:
  - Rollwright maintainers (@rollwright)
extends_documentation_fragment:
  - rollwright.deploy.attributes
  - rollwright.deploy.host_engine
attributes:
  check_mode:
    support: full
    details: The module only reads, so check mode behaves as a normal run.
  diff_mode:
    support: none
    details: No diff is produced.
"""

EXAMPLES = r"""
- name: Which revision does each host run?
  rollwright.deploy.host_deployment_info:
    application: shop
    deployment_group: web
  register: host_rev

- name: Hosts not yet on the revision being deployed
  ansible.builtin.debug:
    msg: "{{ inventory_hostname }} runs {{ host_rev.last_successful.revision.etag | default('nothing') }}"
"""

RETURN = r"""
exists:
  description: Whether the host has any state for this deployment group.
  returned: always
  type: bool
last_successful:
  description:
    - The last successful deployment, C(deployment_id) and C(revision) (the content of C(revision.json), with
      source, bucket, key, version, etag, sha256, bundle_type, ...), or null.
    - C(hook_events) lists the lifecycle events its stored appspec has scripts for (null when the appspec is
      gone); the in-place role skips the host call for an event that has none.
  returned: always
  type: dict
most_recent:
  description:
    - The most recent deployment whose bundle reached the host, C(deployment_id) and C(status)
      (C(InProgress), C(Succeeded), C(Failed) or null when unknown), C(failed_event), C(revision); or null.
  returned: always
  type: dict
deployments:
  description: The deployments kept on the host, oldest first, each with C(deployment_id), C(status) and C(revision).
  returned: always
  type: list
  elements: dict
group_dir:
  description: The group's state directory on the host.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.rollwright.deploy.plugins.module_utils.host.state import (
    HostState, StateError, describe_host_state,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            application=dict(type="str", required=True),
            deployment_group=dict(type="str", required=True),
            state_root=dict(type="path", default="/var/lib/rollwright"),
        ),
        supports_check_mode=True,
    )
    try:
        state = HostState(module.params["state_root"], module.params["application"], module.params["deployment_group"])
        result = dict(changed=False, **describe_host_state(state))
    except (StateError, OSError) as exc:
        module.fail_json(msg=f"cannot read the host state: {exc}")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
