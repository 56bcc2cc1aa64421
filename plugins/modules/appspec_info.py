#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: appspec_info
short_description: Validate a CodeDeploy AppSpec and return it normalised
version_added: 0.1.0
description:
  - Reads an AppSpec file, or the AppSpec of a bundle directory or archive (zip, tar, tar.gz/tgz) without
    unpacking it, validates it against the CodeDeploy rules and returns its normalised form.
  - Reports every problem at once, each naming the file, the path inside it (list indexes are 0-based)
    and what was expected; the task fails when there is any.
  - For a bundle (directory or archive) and O(kind=ec2), also checks the AppSpec against the bundle's
    contents (missing hook scripts or file sources, two sources copied to one destination file, a
    pattern or except on a file object).
  - Not an AWS module; needs PyYAML, so it normally runs on the controller.
author:
  - Rollwright maintainers (@rollwright)
options:
  path:
    description: An AppSpec file, a bundle directory or a bundle archive.
    type: path
    required: true
  appspec_name:
    description:
      - The AppSpec file name inside a bundle. With the default C(appspec.yml), C(appspec.yaml) is tried too.
    type: str
    default: appspec.yml
  kind:
    description:
      - C(ec2) for EC2/on-premises AppSpecs (files, permissions, hooks); C(lambda) for Lambda AppSpecs
        (Resources, Hooks).
    type: str
    choices: [ec2, lambda]
    default: ec2
extends_documentation_fragment:
  - rollwright.deploy.attributes
attributes:
  check_mode:
    support: full
    details: The module only reads.
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Validate the appspec of the application directory before deploying
  rollwright.deploy.appspec_info:
    path: "{{ playbook_dir }}/app"
  delegate_to: localhost
  register: spec

- name: Validate a Lambda appspec
  rollwright.deploy.appspec_info:
    path: files/lambda-appspec.yml
    kind: lambda
"""

RETURN = r"""
appspec:
  description:
    - The normalised AppSpec. For O(kind=ec2) the keys are version, os, files, file_exists_behavior (null when
      not set), permissions (with defaults filled in) and hooks (only events that have scripts).
    - For O(kind=lambda) the keys are version, function (logical_id, name, alias, current_version,
      target_version) and hooks (event to function name).
  returned: success
  type: dict
appspec_path:
  description: Where the AppSpec was found (inside the bundle for a directory or archive).
  returned: always
  type: str
errors:
  description: Every problem found; empty on success.
  returned: always
  type: list
  elements: str
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.rollwright.deploy.plugins.module_utils.revisions.appspec import (
    AppSpecError,
    check_bundle_consistency,
    parse_appspec,
    parse_lambda_appspec,
)
from ansible_collections.rollwright.deploy.plugins.module_utils.revisions.revision import (
    RevisionError,
    bundle_entries,
    infer_bundle_type,
    read_appspec_text,
    sniff_bundle_type,
)


def _bundle_type(path):
    try:
        return infer_bundle_type(path)
    except RevisionError:
        return sniff_bundle_type(path)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            appspec_name=dict(type="str", default="appspec.yml"),
            kind=dict(type="str", choices=["ec2", "lambda"], default="ec2"),
        ),
        supports_check_mode=True,
    )
    path, name, kind = module.params["path"], module.params["appspec_name"], module.params["kind"]
    bundle = None
    try:
        if os.path.isdir(path):
            bundle = (path, None)
        elif not os.path.isfile(path):
            raise RevisionError("path: %s does not exist; expected an appspec file, a bundle directory or a bundle archive" % path)
        else:
            btype = _bundle_type(path)
            if btype:
                bundle = (path, btype)
        if bundle:
            text, rel = read_appspec_text(bundle[0], bundle[1], name)
        else:
            with open(path, "rb") as fh:
                text, rel = fh.read().decode("utf-8-sig"), path
    except (RevisionError, OSError, UnicodeDecodeError) as exc:
        module.fail_json(msg=str(exc), errors=[str(exc)], appspec_path=None)

    errors = []
    appspec = None
    try:
        if kind == "lambda":
            appspec = parse_lambda_appspec(text, rel).to_dict()
        else:
            spec = parse_appspec(text, rel)
            if bundle:
                _top, entries = bundle_entries(bundle[0], bundle[1], name)
                errors = check_bundle_consistency(spec, entries, rel)
            appspec = spec.to_dict()
    except AppSpecError as exc:
        errors = exc.errors
    if errors:
        module.fail_json(msg="%s: %d error(s):\n%s" % (rel, len(errors), "\n".join(errors)), errors=errors, appspec_path=rel)
    module.exit_json(changed=False, appspec=appspec, appspec_path=rel, errors=[])


if __name__ == "__main__":
    main()
