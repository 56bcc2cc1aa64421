# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""boto3 clients for controller-side action plugins, from the options amazon.aws modules take.

Action plugins run in the controller process (so they can print progress) and have no
AnsibleAWSModule; this mirrors amazon.aws's connection semantics (module_utils/modules.py
``aws_argument_spec`` and module_utils/botocore.py ``_aws_connection_info`` / ``_boto3_conn``)
without importing its private modules:

- options and their aliases: access_key (aws_access_key_id, aws_access_key), secret_key
  (aws_secret_access_key, aws_secret_key), session_token (aws_session_token), profile
  (aws_profile), region (aws_region), endpoint_url (aws_endpoint_url), validate_certs,
  aws_ca_bundle, aws_config, debug_botocore_endpoint_logs (accepted, unused);
- environment fallbacks when an option is unset: AWS_ACCESS_KEY_ID, AWS_ACCESS_KEY;
  AWS_SECRET_ACCESS_KEY, AWS_SECRET_KEY; AWS_SESSION_TOKEN; AWS_PROFILE, AWS_DEFAULT_PROFILE;
  AWS_REGION, AWS_DEFAULT_REGION; AWS_URL (and AWS_ENDPOINT_URL, which botocore also reads);
  AWS_CA_BUNDLE;
- a profile together with keys is an error; empty strings mean "unset"; with validate_certs and
  a CA bundle, the bundle verifies; without a region option the profile's/boto3's region applies.

Unlike amazon.aws, every client gets botocore's ``standard`` retry mode (8 attempts) and the
user agent names this collection.
"""

from __future__ import annotations

import os
import threading
from typing import Any

COLLECTION_USER_AGENT = "rollwright.deploy/0.1.0"
RETRY_CONFIG = {"mode": "standard", "total_max_attempts": 8}

try:
    from ansible.module_utils.basic import env_fallback
except ImportError:  # pragma: no cover - the controller always has ansible

    def env_fallback(*args, **kwargs):  # type: ignore[misc]
        for arg in args:
            if arg in os.environ:
                return os.environ[arg]
        raise ValueError("no fallback")


# (option, aliases, environment variables, spec extras)
_OPTIONS: list[tuple[str, list[str], list[str], dict[str, Any]]] = [
    ("access_key", ["aws_access_key_id", "aws_access_key"], ["AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY"], {"no_log": False}),
    ("secret_key", ["aws_secret_access_key", "aws_secret_key"], ["AWS_SECRET_ACCESS_KEY", "AWS_SECRET_KEY"], {"no_log": True}),
    ("session_token", ["aws_session_token"], ["AWS_SESSION_TOKEN"], {"no_log": True}),
    ("profile", ["aws_profile"], ["AWS_PROFILE", "AWS_DEFAULT_PROFILE"], {}),
    ("region", ["aws_region"], ["AWS_REGION", "AWS_DEFAULT_REGION"], {}),
    ("endpoint_url", ["aws_endpoint_url"], ["AWS_URL", "AWS_ENDPOINT_URL"], {}),
    ("validate_certs", [], [], {"type": "bool", "default": True}),
    ("aws_ca_bundle", [], ["AWS_CA_BUNDLE"], {"type": "path"}),
    ("aws_config", [], [], {"type": "dict"}),
    ("debug_botocore_endpoint_logs", [], ["ANSIBLE_DEBUG_BOTOCORE_LOGS"], {"type": "bool", "default": False}),
]

AWS_OPTION_SPEC: dict[str, dict[str, Any]] = {}
for _name, _aliases, _env, _extra in _OPTIONS:
    _spec: dict[str, Any] = dict(_extra)
    if _aliases:
        _spec["aliases"] = list(_aliases)
    if _env:
        _spec["fallback"] = (env_fallback, list(_env))
    AWS_OPTION_SPEC[_name] = _spec

#: Every option name and alias an action plugin should pop from its task args.
AWS_OPTION_NAMES: list[str] = [n for opt in _OPTIONS for n in [opt[0]] + opt[1]]

#: The spec of an ``aws`` dict option (inplace_step, bluegreen_step, deployment_recover): the options
#: above as sub-options (no environment fallback or default: aws_client_factory applies those), the
#: secret ones no_log, so that argument validation registers them and Ansible never shows them.
AWS_DICT_OPTION: dict[str, Any] = {
    "type": "dict",
    "options": {name: {k: v for k, v in spec.items() if k not in ("fallback", "default")}
                for name, spec in AWS_OPTION_SPEC.items()},
}

_ALIASES = {alias: opt[0] for opt in _OPTIONS for alias in opt[1]}
_ENV = {opt[0]: opt[2] for opt in _OPTIONS}


class AWSSessionError(Exception):
    """Bad connection options (message meant for a person)."""


def split_aws_options(task_args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split task args into (AWS connection options, everything else)."""
    aws = {k: v for k, v in task_args.items() if k in AWS_OPTION_NAMES}
    rest = {k: v for k, v in task_args.items() if k not in AWS_OPTION_NAMES}
    return aws, rest


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on", "y", "t")


def resolve_aws_options(options: dict[str, Any] | None, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Canonical option names, aliases folded in, environment fallbacks applied (as amazon.aws)."""
    environ = os.environ if environ is None else environ
    resolved: dict[str, Any] = {}
    for key, value in (options or {}).items():
        canonical = _ALIASES.get(key, key)
        if canonical not in _ENV:
            raise AWSSessionError(f"{key}: not an AWS connection option (expected one of {sorted(AWS_OPTION_NAMES)})")
        if canonical in resolved and resolved[canonical] is not None and value is not None and resolved[canonical] != value:
            raise AWSSessionError(f"{key}: conflicts with another spelling of {canonical}")
        if value is not None or canonical not in resolved:
            resolved[canonical] = value
    for name, env_names in _ENV.items():
        if resolved.get(name) is None:
            for env_name in env_names:
                if env_name in environ:
                    resolved[name] = environ[env_name]
                    break
    resolved["validate_certs"] = _truthy(resolved["validate_certs"]) if resolved.get("validate_certs") is not None else True
    if resolved.get("aws_config") is not None and not isinstance(resolved["aws_config"], dict):
        raise AWSSessionError(f"aws_config: expected a dictionary of botocore Config options, got {resolved['aws_config']!r}")
    return resolved


def connection_kwargs(options: dict[str, Any] | None, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Session and client keyword arguments: {'session': {...}, 'client': {...}}."""
    opts = resolve_aws_options(options, environ)
    access_key = opts.get("access_key") or None
    secret_key = opts.get("secret_key") or None
    session_token = opts.get("session_token") or None
    profile = opts.get("profile") or None
    if profile and (access_key or secret_key or session_token):
        raise AWSSessionError("Passing both a profile and access tokens is not supported.")
    session: dict[str, Any] = {}
    if profile:
        session["profile_name"] = profile
    else:
        session.update(aws_access_key_id=access_key, aws_secret_access_key=secret_key, aws_session_token=session_token)
    if opts.get("region"):
        session["region_name"] = opts["region"]
    client: dict[str, Any] = {}
    if opts.get("endpoint_url"):
        client["endpoint_url"] = opts["endpoint_url"]
    ca_bundle = opts.get("aws_ca_bundle")
    if opts["validate_certs"] and ca_bundle:
        client["verify"] = os.path.expanduser(ca_bundle)
    else:
        client["verify"] = opts["validate_certs"]
    return {"session": session, "client": client, "aws_config": opts.get("aws_config")}


def _user_agent_extra() -> str:
    try:
        from ansible.module_utils.ansible_release import __version__ as ansible_version
    except ImportError:  # pragma: no cover
        return COLLECTION_USER_AGENT
    return f"APN/1.0 Ansible/{ansible_version} {COLLECTION_USER_AGENT}"


class AWSClientFactory:
    """Builds and caches one boto3 client per service from amazon.aws-style options."""

    def __init__(self, options: dict[str, Any] | None = None, environ: dict[str, str] | None = None):
        self._kwargs = connection_kwargs(options, environ)
        self._clients: dict[str, Any] = {}
        self._session: Any = None
        self._lock = threading.Lock()

    @property
    def region(self) -> str | None:
        return self.session().region_name

    @property
    def endpoint_url(self) -> str | None:
        return self._kwargs["client"].get("endpoint_url")

    def session(self) -> Any:
        if self._session is None:
            import boto3

            self._session = boto3.session.Session(**self._kwargs["session"])
        return self._session

    def config(self) -> Any:
        import botocore.config

        config = botocore.config.Config(user_agent_extra=_user_agent_extra(), retries=dict(RETRY_CONFIG))
        extra = self._kwargs.get("aws_config")
        if extra:
            config = config.merge(botocore.config.Config(**extra))
        return config

    def client(self, service: str) -> Any:
        with self._lock:
            if service not in self._clients:
                session = self.session()
                if session.region_name is None:
                    raise AWSSessionError(
                        "region: no AWS region was given (set the region option, AWS_REGION or "
                        "AWS_DEFAULT_REGION, or a region in the profile)"
                    )
                self._clients[service] = session.client(service, config=self.config(), **self._kwargs["client"])
            return self._clients[service]


def aws_client_factory(options: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> AWSClientFactory:
    """The entry point for action plugins: ``aws_client_factory(aws_opts).client("elbv2")``."""
    return AWSClientFactory(options, environ)


class ModuleClientFactory:
    """ClientFactory over an AnsibleAWSModule (for modules): same retry config and user agent."""

    def __init__(self, module: Any):
        self.module = module
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            import botocore.config

            config = botocore.config.Config(retries=dict(RETRY_CONFIG))
            self._clients[service] = self.module.client(service, config=config)
        return self._clients[service]
