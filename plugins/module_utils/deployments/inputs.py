# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Normalise the shared deployment inputs (`rollwright_*`), including their survey-friendly scalar forms.

AWX surveys can only pass scalars, so every structured input also has a string form:

- revision: ``s3://bucket/key.zip?versionId=V&etag=E&bundleType=zip`` or a controller path;
- load balancer: comma-separated target group ARNs and classic ELB names.
"""

from __future__ import annotations

from typing import Any, Optional
from urllib.parse import unquote, urlsplit
from ansible_collections.rollwright.deploy.plugins.module_utils.errors import RollwrightError
from ansible_collections.rollwright.deploy.plugins.module_utils.revisions.revision import BUNDLE_TYPES


class InputError(RollwrightError, ValueError):
    """A deployment input is malformed; the message names the field and what was expected."""


def split_list(value: Any, field: str, error: type[Exception] = InputError, what: str = "strings") -> list[str]:
    """Names from a list of strings or from a comma-separated string (the survey form); none for None, "" or [].
    A bad value raises ``error``, the calling part's error class, naming ``field``."""
    if value is None or value == "" or value == []:
        return []
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    raise error(f"{field}: expected a list of {what} or a comma-separated string, got {value!r}")


S3_URL_FORM = "s3://BUCKET/KEY[?versionId=V&etag=E&bundleType=T]"
S3_URL_PARAMETERS = {"versionId": "version", "etag": "etag", "bundleType": "bundle_type"}


def parse_s3_url(text: str, field: str = "rollwright_revision") -> dict:
    """``s3://bucket/key?versionId=V&etag=E&bundleType=T`` -> the revision dict.

    The key and the values are percent-decoded; a ``+`` stays a ``+`` (S3 version ids contain it,
    it is not a space as in an HTML form). A ``#`` is refused: it would silently cut the key or
    the version id short (write it ``%23``).
    """
    if "#" in text:
        raise InputError(f"{field}: a '#' in an s3:// URL would cut it short; percent-encode it as %23 in the key "
                         f"(expected {S3_URL_FORM}), got {text!r}")
    parts = urlsplit(text, allow_fragments=False)
    key = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
    if not parts.netloc or not key:
        raise InputError(f"{field}: expected {S3_URL_FORM}, got {text!r}")
    query: dict[str, str] = {}
    for item in filter(None, parts.query.split("&")):
        name, dummy, raw = item.partition("=")
        name = unquote(name)
        if name not in S3_URL_PARAMETERS:
            raise InputError(f"{field}: unknown query parameter {name!r}; expected versionId, etag, bundleType")
        if name in query:
            raise InputError(f"{field}: query parameter {name!r} given twice in {text!r}")
        query[name] = unquote(raw)
    return {"s3": {"bucket": parts.netloc, "key": key, "version": query.get("versionId") or None,
                   "etag": query.get("etag") or None}, "bundle_type": query.get("bundleType") or None}


def normalise_revision(value: Any, field: str = "rollwright_revision") -> dict:
    """Return {'s3': {bucket, key, version, etag}, 'bundle_type'} or {'path', 'bundle_type'}."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise InputError(f"{field}: expected an s3:// URL, a path, or a dict with 's3' or 'path', got an empty string")
        if text.startswith("s3://"):
            value = parse_s3_url(text, field)
        else:
            value = {"path": text}
    if not isinstance(value, dict):
        raise InputError(f"{field}: expected a dict with 's3' or 'path' (or a string), got {type(value).__name__}")
    unknown = set(value) - {"s3", "path", "bundle_type"}
    if unknown:
        raise InputError(f"{field}: unknown key(s) {sorted(unknown)}; expected s3, path, bundle_type")
    if bool(value.get("s3")) == bool(value.get("path")):
        raise InputError(f"{field}: expected exactly one of 's3' or 'path'")
    bundle_type = value.get("bundle_type")
    if bundle_type is not None and bundle_type not in BUNDLE_TYPES:
        raise InputError(f"{field}.bundle_type: expected one of {', '.join(BUNDLE_TYPES)}, got {bundle_type!r}")
    if value.get("path"):
        if not isinstance(value["path"], str):
            raise InputError(f"{field}.path: expected a string, got {value['path']!r}")
        return {"path": value["path"], "bundle_type": bundle_type}
    s3 = value["s3"]
    if not isinstance(s3, dict):
        raise InputError(f"{field}.s3: expected a dict with bucket and key, got {s3!r}")
    unknown = set(s3) - {"bucket", "key", "version", "etag"}
    if unknown:
        raise InputError(f"{field}.s3: unknown key(s) {sorted(unknown)}; expected bucket, key, version, etag")
    for required in ("bucket", "key"):
        if not isinstance(s3.get(required), str) or not s3.get(required):
            raise InputError(f"{field}.s3.{required}: expected a non-empty string, got {s3.get(required)!r}")
    return {"s3": {"bucket": s3["bucket"], "key": s3["key"], "version": s3.get("version") or None,
                   "etag": s3.get("etag") or None}, "bundle_type": bundle_type}


def normalise_load_balancer(value: Any, target_group_arns: Any = None, classic_elb_names: Any = None,
                            field: str = "rollwright_load_balancer") -> Optional[dict]:
    """Return {'target_group_arns': [...], 'classic_elb_names': [...]} or None for no load balancer."""
    if value in (None, "", {}):
        value = {}
    if not isinstance(value, dict):
        raise InputError(f"{field}: expected a dict with target_group_arns and/or classic_elb_names, got {value!r}")
    unknown = set(value) - {"target_group_arns", "classic_elb_names", "haproxy"}
    if unknown:
        raise InputError(f"{field}: unknown key(s) {sorted(unknown)}; expected target_group_arns, classic_elb_names, haproxy")
    result = {
        "target_group_arns": split_list(value.get("target_group_arns"), f"{field}.target_group_arns")
        + split_list(target_group_arns, "rollwright_target_group_arns"),
        "classic_elb_names": split_list(value.get("classic_elb_names"), f"{field}.classic_elb_names")
        + split_list(classic_elb_names, "rollwright_classic_elb_names"),
    }
    if value.get("haproxy"):
        result["haproxy"] = value["haproxy"]
    if not any(result.values()):
        return None
    return result
