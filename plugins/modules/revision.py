#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: revision
short_description: Fetch, verify and validate a deployment revision on the controller
version_added: 0.1.0
description:
  - Gets a revision bundle from S3 (by version id, ETag verified) or from a local file or directory,
    keeps it in a cache on the controller, reads its AppSpec without unpacking the bundle and validates
    it, including against the bundle's contents (missing scripts or sources, two sources for one
    destination file, pattern/except on a file object).
  - The returned RV(bundle.path) is the exact file to push to hosts; the returned RV(appspec) is the
    normalised AppSpec the host modules take.
  - Runs on the controller. Every problem of the AppSpec is reported at once.
author:
  - Rollwright maintainers (@rollwright)
extends_documentation_fragment:
  - rollwright.deploy.attributes
  - rollwright.deploy.revision
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
attributes:
  check_mode:
    support: full
    details: Reports what would be fetched (one HeadObject) without downloading or packing anything;
      when the bundle is already cached its AppSpec is validated too.
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Fetch an exact S3 object version and validate its appspec
  rollwright.deploy.revision:
    s3:
      bucket: my-releases
      key: myapp/myapp-1.4.2.zip
      version: 3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY
      etag: 0a8d2f7b0e8d4c5e9f1a2b3c4d5e6f70
  delegate_to: localhost
  run_once: true
  register: rev

- name: Use a directory of the controller as the revision (packed into a tar.gz)
  rollwright.deploy.revision:
    path: "{{ playbook_dir }}/app"
  delegate_to: localhost
  run_once: true
  register: rev
"""

RETURN = r"""
bundle:
  description: The bundle on the controller.
  returned: always
  type: dict
  contains:
    path:
      description: The bundle file on the controller (in check mode, where it would be).
      type: str
    bundle_type:
      description: zip, tar or tgz.
      type: str
    sha256:
      description: SHA-256 of the bundle file (null in check mode when not cached).
      type: str
    size:
      description: Size in bytes.
      type: int
    etag:
      description: The S3 ETag without quotes (S3 only).
      type: str
    version:
      description: The S3 object version id (versioned buckets only).
      type: str
    source:
      description: s3 or local.
      type: str
    bucket:
      description: The S3 bucket (S3 only).
      type: str
    key:
      description: The S3 key (S3 only).
      type: str
appspec:
  description: The normalised AppSpec (null in check mode when the bundle is not available yet).
  returned: always
  type: dict
  sample:
    version: "0.0"
    os: linux
    files: [{source: /, destination: /opt/app}]
    file_exists_behavior: null
    permissions: []
    hooks: {ApplicationStart: [{location: scripts/start.sh, timeout: 3600, runas: null}]}
appspec_path:
  description: The AppSpec's path inside the bundle (null when not read).
  returned: always
  type: str
errors:
  description: Every AppSpec problem found (the task fails when there is any).
  returned: on failure
  type: list
  elements: str
"""

import os

from ansible_collections.rollwright.deploy.plugins.module_utils.revisions.appspec import (
    AppSpecError,
    check_bundle_consistency,
    parse_appspec,
)
from ansible_collections.rollwright.deploy.plugins.module_utils.aws.module import RollwrightAWSModule
from ansible_collections.rollwright.deploy.plugins.module_utils.revisions.revision import (
    BUNDLE_TYPES,
    DEFAULT_CACHE_DIR,
    RevisionError,
    bundle_entries,
    cached_s3_bundle,
    fetch_s3_bundle,
    infer_bundle_type,
    local_bundle,
    normalise_etag,
    read_appspec_text,
    s3_cache_path,
    s3_head,
)


def _validate(module, source, bundle_type, appspec_name):
    """Read and validate the appspec of a bundle file or directory; fail listing every error."""
    text, rel = read_appspec_text(source, bundle_type, appspec_name)
    try:
        spec = parse_appspec(text, rel)
    except AppSpecError as exc:
        module.fail_json(msg="%s is invalid (%d errors):\n%s" % (rel, len(exc.errors), exc), errors=exc.errors)
    _top, entries = bundle_entries(source, bundle_type, appspec_name)
    errors = check_bundle_consistency(spec, entries, rel)
    if errors:
        module.fail_json(msg="%s does not match its bundle (%d errors):\n%s" % (rel, len(errors), "\n".join(errors)), errors=errors)
    return spec.to_dict(), rel


def _from_s3(module, cache_dir, bundle_type, appspec_name):
    s3 = module.params["s3"]
    bucket, key = s3["bucket"], s3["key"]
    version, etag = s3.get("version"), normalise_etag(s3.get("etag"))
    btype = bundle_type or infer_bundle_type(key)
    client = module.aws_client("s3")
    result = {"source": "s3", "bucket": bucket, "key": key}
    if module.check_mode:
        pin_version, pin_etag = version, etag
        head = None
        if version is None and etag is None:
            head = s3_head(client, bucket, key)
            pin_version, pin_etag = head["version"], head["etag"]
        cached = cached_s3_bundle(cache_dir, bucket, key, pin_version, pin_etag, btype)
        if cached is not None:
            appspec, rel = _validate(module, cached.path, btype, appspec_name)
            return dict(result, **cached.to_dict()), appspec, rel, False
        if head is None:
            head = s3_head(client, bucket, key, version)
            if etag is not None and head["etag"] != etag:
                raise RevisionError(
                    "s3.etag: ETag mismatch for s3://%s/%s%s: expected %s, the object has %s"
                    % (bucket, key, " version %s" % version if version else "", etag, head["etag"])
                )
        bundle = {
            "path": s3_cache_path(cache_dir, bucket, key, pin_version, pin_etag, btype),
            "bundle_type": btype,
            "sha256": None,
            "size": head["size"],
            "etag": head["etag"],
            "version": head["version"],
        }
        return dict(result, **bundle), None, None, True
    fetched = fetch_s3_bundle(client, bucket, key, cache_dir, version=version, etag=etag, bundle_type=btype)
    appspec, rel = _validate(module, fetched.path, btype, appspec_name)
    return dict(result, **fetched.to_dict()), appspec, rel, fetched.downloaded


def _from_path(module, cache_dir, bundle_type, appspec_name):
    path = module.params["path"]
    if not os.path.exists(path):
        raise RevisionError("path: %s does not exist; expected a bundle file or a directory" % path)
    result = {"source": "local", "bucket": None, "key": None}
    if os.path.isdir(path):
        appspec, rel = _validate(module, path, None, appspec_name)
        if module.check_mode:
            bundle = {"path": None, "bundle_type": "tgz", "sha256": None, "size": None, "etag": None, "version": None}
            return dict(result, **bundle), appspec, rel, True
        before = set(os.listdir(cache_dir)) if os.path.isdir(cache_dir) else set()
        fetched = local_bundle(path, cache_dir)
        changed = os.path.basename(fetched.path) not in before
        return dict(result, **fetched.to_dict()), appspec, rel, changed
    fetched = local_bundle(path, cache_dir, bundle_type)
    appspec, rel = _validate(module, fetched.path, fetched.bundle_type, appspec_name)
    return dict(result, **fetched.to_dict()), appspec, rel, False


def main():
    argument_spec = dict(
        s3=dict(
            type="dict",
            options=dict(
                bucket=dict(type="str", required=True),
                key=dict(type="str", required=True, no_log=False),
                version=dict(type="str"),
                etag=dict(type="str"),
            ),
        ),
        path=dict(type="path"),
        bundle_type=dict(type="str", choices=list(BUNDLE_TYPES)),
        cache_dir=dict(type="path", default=DEFAULT_CACHE_DIR),
        appspec_name=dict(type="str", default="appspec.yml"),
    )
    module = RollwrightAWSModule(
        argument_spec=argument_spec,
        mutually_exclusive=[("s3", "path")],
        required_one_of=[("s3", "path")],
        supports_check_mode=True,
    )
    cache_dir = module.params["cache_dir"]
    bundle_type = module.params["bundle_type"]
    appspec_name = module.params["appspec_name"]
    fetch = _from_s3 if module.params["s3"] else _from_path
    bundle, appspec, rel, changed = module.run_or_fail("fetching the revision failed", fetch, module, cache_dir,
                                                       bundle_type, appspec_name)
    module.exit_json(changed=changed, bundle=bundle, appspec=appspec, appspec_path=rel)


if __name__ == "__main__":
    main()
