# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared documentation of the revision source options (s3 / path / bundle_type / cache_dir / appspec_name)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  s3:
    description:
      - The revision as an S3 object. Mutually exclusive with O(path).
      - The controller downloads it once (by version id when given), verifies its ETag and keeps it in
        O(cache_dir) under a name derived from bucket, key, version and ETag, so a later run with the same
        identity downloads nothing.
      - With neither O(s3.version) nor O(s3.etag), one HeadObject pins the object's current version and
        ETag first, and the download must match them (an upload racing the deployment fails it).
    type: dict
    suboptions:
      bucket:
        description: The bucket name.
        type: str
        required: true
      key:
        description: The object key. Its extension gives the bundle type unless O(bundle_type) is set.
        type: str
        required: true
      version:
        description: The object version id to deploy (versioned buckets).
        type: str
      etag:
        description:
          - The ETag the object must have; surrounding quotes are ignored.
          - A mismatch fails with both values before anything is installed.
        type: str
  path:
    description:
      - The revision as a local bundle file (zip, tar, tar.gz/tgz) or a directory on the controller.
      - A directory is packed into a reproducible tar.gz in O(cache_dir) (sorted entries, fixed times and
        owners), so the same content always gives the same checksum.
      - Mutually exclusive with O(s3).
    type: path
  bundle_type:
    description:
      - The archive format. Inferred from the key or file name (C(.zip), C(.tar), C(.tar.gz), C(.tgz))
        when absent, then from the file's first bytes.
    type: str
    choices: [zip, tar, tgz]
  cache_dir:
    description: Where fetched and packed bundles are kept on the controller.
    type: path
    default: ~/.cache/rollwright/bundles
  appspec_name:
    description:
      - The AppSpec file name at the bundle root. With the default C(appspec.yml), C(appspec.yaml) is
        tried too.
      - The root is the archive's top, or its only top-level directory when that directory holds the
        AppSpec (as the CodeDeploy agent does).
    type: str
    default: appspec.yml
"""
