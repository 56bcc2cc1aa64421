#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pending_revision_info
short_description: Is there an uploaded S3 revision newer than a deployment group's last deployment
version_added: 0.1.0
description:
  - Lists the bundle versions under an S3 bucket and prefix (C(ListObjectVersions); delete markers and keys that
    are not C(.zip), C(.tar), C(.tar.gz) or C(.tgz) are ignored) and compares them with the deployment group's
    records.
  - An upload is handled when a record of the group names its bucket, key and version, whatever that deployment's
    status. It is pending when it is not handled and newer (by S3 C(LastModified)) than the newest handled upload;
    a group without any such record has only its newest upload pending.
  - With O(upload), also says what to do with that one upload (for example the one an event announced).
  - Lets an AWX schedule or cron do what the C(rollwright.deploy.s3_revisions) event source does, with a plain
    playbook (see C(docs/event-driven.md)).
  - Runs on the controller. Read-only.
author:
  - Rollwright maintainers (@rollwright)
options:
  application:
    description: The application name.
    type: str
    required: true
  deployment_group:
    description: The deployment group name.
    type: str
    required: true
  bucket:
    description: The bucket the revisions are uploaded to (versioning enabled, so each upload keeps its version id).
    type: str
    required: true
  prefix:
    description: Only keys that start with this prefix.
    type: str
    default: ""
  upload:
    description:
      - One upload to judge, C({bucket, key, version_id}) (the shape of an C(s3_revisions) event).
    type: dict
  order:
    description:
      - C(latest) (the default) skips a pending O(upload) when a newer upload is pending too (only the newest is
        deployed); C(in_order) deploys every pending upload in turn.
    type: str
    choices: [latest, in_order]
    default: latest
extends_documentation_fragment:
  - rollwright.deploy.attributes
  - rollwright.deploy.records
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
notes:
  - Reads S3 with C(s3:ListBucketVersions) on the bucket.
"""

EXAMPLES = r"""
- name: Deploy the newest upload if the group has not got it yet (an AWX schedule)
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Look for a newer revision
      rollwright.deploy.pending_revision_info:
        application: shop
        deployment_group: web
        bucket: releases
        prefix: shop/
      register: pending

- name: Deploy it
  hosts: web
  gather_facts: false
  tasks:
    - name: In-place deployment of exactly that upload
      ansible.builtin.include_role:
        name: rollwright.deploy.inplace
      vars:
        rollwright_application: shop
        rollwright_deployment_group: web
        rollwright_revision: "{{ hostvars.localhost.pending.revision }}"
      when: hostvars.localhost.pending.pending
"""

RETURN = r"""
pending:
  description: Whether an upload newer than the group's last deployment waits to be deployed.
  returned: always
  type: bool
revision:
  description: "The newest pending upload as a C(rollwright_revision) (C({s3: {bucket, key, version, etag}})), or null."
  returned: always
  type: dict
uploads:
  description: Every pending upload, oldest first (C(bucket), C(key), C(version_id), C(etag), C(size), C(last_modified), C(revision)).
  returned: always
  type: list
  elements: dict
upload_status:
  description:
    - With O(upload), C(pending) (deploy it), C(handled) (a record already names it) or C(superseded) (older than the
      group's newest handled upload or no longer in the bucket, or O(order=latest) and a newer upload is pending,
      see RV(revision)).
  returned: when O(upload) is given
  type: str
"""

from ansible_collections.rollwright.deploy.plugins.module_utils.revisions import revision_watch
from ansible_collections.rollwright.deploy.plugins.module_utils.aws.module import RollwrightAWSModule
from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_existing_store, store_argument_spec


def pending(module):
    """The uploads not deployed yet, and the group's records they were compared with."""
    p = module.params
    store = open_existing_store(p, module.aws_client)
    records = revision_watch.group_records(store, p["application"], p["deployment_group"]) if store else []
    uploads = revision_watch.list_uploads(module.aws_client("s3"), p["bucket"], p["prefix"])
    return revision_watch.pending_uploads(uploads, records), records


def main():
    argument_spec = dict(
        store_argument_spec(),
        application=dict(type="str", required=True),
        deployment_group=dict(type="str", required=True),
        bucket=dict(type="str", required=True),
        prefix=dict(type="str", default=""),
        upload=dict(type="dict"),
        order=dict(type="str", choices=list(revision_watch.ORDERS), default="latest"),
    )
    module = RollwrightAWSModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    upload = p["upload"]
    if upload is not None and not all(isinstance(upload.get(k), str) and upload.get(k) for k in ("bucket", "key")):
        module.fail_json(msg=f"upload: expected {{bucket, key, version_id}} (an s3_revisions event), got {upload!r}")
    waiting, records = module.run_or_fail(f"listing the revisions under s3://{p['bucket']}/{p['prefix']} failed",
                                          pending, module)
    result = dict(changed=False, pending=bool(waiting), revision=waiting[-1].revision() if waiting else None,
                  uploads=[u.to_dict() for u in waiting])
    if upload is not None:
        identity = (upload.get("bucket"), upload.get("key"), upload.get("version_id") or None)
        result["upload_status"] = revision_watch.upload_status(identity, waiting, records, p["order"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
