# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one client path: every boto3 client of the collection, for modules and action plugins alike.

Options are amazon.aws's (module_utils/modules.py ``aws_argument_spec``), so a task's
``module_defaults: {group/rollwright.deploy.aws: {...}}`` and its ``environment:`` reach every
plugin the same way:

- options and their aliases: access_key (aws_access_key_id, aws_access_key), secret_key
  (aws_secret_access_key, aws_secret_key), session_token (aws_session_token), profile
  (aws_profile), region (aws_region), endpoint_url (aws_endpoint_url), validate_certs,
  aws_ca_bundle, aws_config, debug_botocore_endpoint_logs (accepted, unused);
- environment fallbacks when an option is unset (the task's ``environment:`` over the
  controller's): AWS_ACCESS_KEY_ID, AWS_ACCESS_KEY; AWS_SECRET_ACCESS_KEY, AWS_SECRET_KEY;
  AWS_SESSION_TOKEN; AWS_PROFILE, AWS_DEFAULT_PROFILE; AWS_REGION, AWS_DEFAULT_REGION; AWS_URL
  (and AWS_ENDPOINT_URL, which botocore also reads); AWS_CA_BUNDLE;
- a profile together with keys is an error; empty strings mean "unset"; with validate_certs and
  a CA bundle, the bundle verifies; without a region option the profile's/boto3's region applies.

Every client gets one botocore ``Config`` (:func:`client_config`): botocore's ``standard`` retry
mode (throttling and transient errors retried with backoff, :data:`MAX_ATTEMPTS` attempts), a
short connect timeout, and the user agent naming this collection. Retries print a progress line
(:func:`set_retry_reporter`), and an unreachable endpoint fails after one retry instead of backing
off in silence. Clients are cached per process, options and region.
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any, Callable, Optional

from ansible_collections.rollwright.deploy.plugins.module_utils.errors import RollwrightError

COLLECTION_NAME = "rollwright.deploy"
COLLECTION_VERSION = "0.1.0"  # the one version constant (galaxy.yml says the same; a unit test checks)
COLLECTION_USER_AGENT = f"{COLLECTION_NAME}/{COLLECTION_VERSION}"
MAX_ATTEMPTS = 8
CONNECT_TIMEOUT = 5
CONNECTION_RETRIES = 1  # an unreachable endpoint is retried once (a blip), then fails with a hint
# Per-service additions: a Lambda Invoke of a validation hook may run up to 15 minutes.
SERVICE_CONFIG: dict[str, dict[str, Any]] = {"lambda": {"read_timeout": 910, "connect_timeout": 10}}
THROTTLING_CODES = ("Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
                    "TooManyRequestsException", "ProvisionedThroughputExceededException", "RequestLimitExceeded",
                    "SlowDown", "RequestThrottled", "BandwidthLimitExceeded", "LimitExceededException",
                    "EC2ThrottledException", "PriorRequestNotComplete", "TransactionInProgressException")
_CONNECTION_ERRORS = ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError", "ProxyConnectionError")

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


class AWSSessionError(RollwrightError):
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


def client_config(service: str = "", extra: Optional[dict] = None) -> Any:
    """The one botocore Config: standard retries, our user agent, short connect timeout (+ per service, + extra)."""
    import botocore.config

    settings: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT}
    settings.update(SERVICE_CONFIG.get(service, {}))
    config = botocore.config.Config(user_agent_extra=_user_agent_extra(),
                                    retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS}, **settings)
    if extra:
        config = config.merge(botocore.config.Config(**extra))
    return config


_reporter: Optional[Callable[[str], None]] = None


def set_retry_reporter(reporter: Optional[Callable[[str], None]]) -> None:
    """Where retries are announced (an action plugin's progress line); None keeps them silent."""
    global _reporter  # pylint: disable=global-statement
    _reporter = reporter


def _on_needs_retry(attempts: int = 1, response: Any = None, caught_exception: Any = None, operation: Any = None,
                    request_dict: Any = None, **_kwargs: Any) -> None:
    """Announce each retry; stop retrying an unreachable endpoint after CONNECTION_RETRIES."""
    name = getattr(operation, "name", "call")
    url = (request_dict or {}).get("url", "") if isinstance(request_dict, dict) else ""
    reason = None
    if caught_exception is not None:
        if type(caught_exception).__name__ in _CONNECTION_ERRORS:
            if attempts > CONNECTION_RETRIES:
                raise caught_exception  # the error boundary explains it (endpoint_url, region)
            reason = f"endpoint unreachable ({url.split('?')[0] or caught_exception})"
    elif response is not None:
        try:
            http, parsed = response
            code = (parsed.get("Error") or {}).get("Code")
            status = http.status_code
        except (TypeError, ValueError, AttributeError):
            return None
        if code in THROTTLING_CODES:
            reason = f"throttled ({code})"
        elif status >= 500:
            reason = f"AWS error {status} {code or ''}".strip()
    if reason and attempts < MAX_ATTEMPTS and _reporter is not None:
        _reporter(f"AWS {name}: {reason}; retrying (attempt {attempts + 1} of at most {MAX_ATTEMPTS})")
    return None


def watch_retries(client: Any) -> Any:
    """Register the retry announcer on a client (idempotent)."""
    client.meta.events.register("needs-retry", _on_needs_retry, unique_id="rollwright-retry-progress")
    return client


_CACHE: dict[tuple, Any] = {}
_CACHE_LOCK = threading.Lock()

# The services the deployment steps call; their models are read once by warm().
WARM_SERVICES = ("elbv2", "elb", "s3", "dynamodb", "cloudwatch", "autoscaling", "lambda", "sns", "sts")
_SHARED_LOADER: Any = None


def warm(services: tuple = WARM_SERVICES) -> None:
    """Import boto3 and read the service models once, in the process that forks the step workers.

    Ansible runs every task in a worker forked from ansible-playbook, and ansible-playbook imports an
    action plugin before it forks the task's worker: called at that import, this leaves boto3 and the
    parsed models in the parent, so no step imports boto3 or parses JSON models again (on a busy
    2-core machine that was over a second of CPU per step). Clients are then built from this loader.
    """
    global _SHARED_LOADER  # pylint: disable=global-statement
    if _SHARED_LOADER is not None:
        return
    try:
        import boto3  # noqa: F401  # pylint: disable=unused-import
        import botocore.loaders
    except ImportError:  # the step fails later with the client path's own message
        return
    loader = botocore.loaders.create_loader()
    for name in ("endpoints", "partitions", "sdk-default-configuration", "_retry"):
        try:
            loader.load_data(name)
        except Exception:  # pylint: disable=broad-except  # older botocore: fewer data files
            pass
    for service in services:
        for type_name in ("service-2", "endpoint-rule-set-1", "paginators-1", "waiters-2"):
            try:
                loader.load_service_model(service, type_name)
            except Exception:  # pylint: disable=broad-except  # a model file this botocore does not have
                pass
    _SHARED_LOADER = loader


def _cache_key(service: str, kwargs: dict[str, Any]) -> tuple:
    session = dict(kwargs["session"])
    secret = session.pop("aws_secret_access_key", None) or ""
    token = session.pop("aws_session_token", None) or ""
    digest = hashlib.sha256(f"{secret}\0{token}".encode()).hexdigest()  # never keep secrets as keys
    return (service, os.getpid(), tuple(sorted(session.items())), digest,
            tuple(sorted((k, str(v)) for k, v in kwargs["client"].items())), repr(sorted((kwargs.get("aws_config") or {}).items())))


class AWSClientFactory:
    """boto3 clients from amazon.aws-style options, cached per process, options and region."""

    def __init__(self, options: dict[str, Any] | None = None, environ: dict[str, str] | None = None):
        self._kwargs = connection_kwargs(options, environ)
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
            import botocore.session

            core = botocore.session.Session()
            if _SHARED_LOADER is not None:
                core.register_component("data_loader", _SHARED_LOADER)  # models parsed once (warm())
            self._session = boto3.session.Session(botocore_session=core, **self._kwargs["session"])
            if _SHARED_LOADER is not None:  # boto3 appends its data path to the loader each time
                paths = _SHARED_LOADER.search_paths
                paths[:] = list(dict.fromkeys(paths))
        return self._session

    def config(self, service: str = "") -> Any:
        return client_config(service, self._kwargs.get("aws_config"))

    def client(self, service: str) -> Any:
        with self._lock:
            session = self.session()
            if session.region_name is None:
                raise AWSSessionError(
                    "region: no AWS region was given (set the region option or rollwright_aws_region, AWS_REGION "
                    "or AWS_DEFAULT_REGION, or a region in the profile)", field="region")
            session_kwargs = dict(self._kwargs["session"], region_name=session.region_name)
            key = _cache_key(service, dict(self._kwargs, session=session_kwargs))
            with _CACHE_LOCK:
                if key not in _CACHE:
                    _CACHE[key] = watch_retries(session.client(service, config=self.config(service),
                                                               **self._kwargs["client"]))
                return _CACHE[key]


def aws_client_factory(options: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> AWSClientFactory:
    """The entry point for action plugins: ``aws_client_factory(aws_opts).client("elbv2")``."""
    return AWSClientFactory(options, environ)


class ModuleClientFactory:
    """The same clients for modules: the AnsibleAWSModule resolves the options, this adds our Config."""

    def __init__(self, module: Any):
        self.module = module
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = watch_retries(self.module.client(service, config=client_config(service)))
        return self._clients[service]

    __call__ = client
