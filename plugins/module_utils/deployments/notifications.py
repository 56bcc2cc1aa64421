# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Deployment notifications: CodeDeploy's trigger events sent to SNS topics and HTTP webhooks.

One place produces them: :class:`NotifyingStore` wraps the record store (``records.open_store`` does it
when its options carry ``notifications``), so every engine that writes a deployment's status or a
host's status notifies without knowing about it. The store writes first; the notification follows.

Delivery never fails a deployment and never holds it up long: each message gets at most ``timeout``
seconds (1 s at most) for all its attempts and backoff, and a destination that keeps failing is given
at most ``timeout`` seconds of failed attempts per deployment, after which it is skipped. Every failed
delivery is recorded in the record's ``extra.notification_failures``.

Between the steps of a deployment (separate processes), what was sent, what failed and the record's
identity are kept in a small JSON file per deployment under ``~/.cache/rollwright/notify``.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import string
import tempfile
import threading
import time
import urllib.parse
from typing import Any, Callable, Optional

from ansible_collections.rollwright.deploy.plugins.module_utils.errors import RollwrightError
from ansible_collections.rollwright.deploy.plugins.module_utils.records.base import InvalidRecord, now_iso

DEPLOYMENT_EVENTS = ("DeploymentStart", "DeploymentSuccess", "DeploymentFailure", "DeploymentStop",
                     "DeploymentRollback", "DeploymentReady")
INSTANCE_EVENTS = ("InstanceStart", "InstanceSuccess", "InstanceFailure")
TRIGGER_EVENTS = DEPLOYMENT_EVENTS + INSTANCE_EVENTS

STATUS_EVENTS = {"InProgress": "DeploymentStart", "Ready": "DeploymentReady", "Succeeded": "DeploymentSuccess",
                 "Failed": "DeploymentFailure", "Stopped": "DeploymentStop"}
HOST_STATUS_EVENTS = {"InProgress": "InstanceStart", "Succeeded": "InstanceSuccess", "Failed": "InstanceFailure"}

MAX_TIMEOUT = 1.0
DEFAULT_TIMEOUT = 1.0
DEFAULT_RETRIES = 2
MAX_RETRIES = 5
FIRST_BACKOFF = 0.05
DEFAULT_SECRET_HEADER = "X-Rollwright-Secret"
_HEADER_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_TOPIC_RE = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_.-]{1,256}$")
_LOG_TAIL = 400


class NotificationConfigError(InvalidRecord):
    """A notifications setting is wrong; the message names it and what was expected."""


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------


def _events(value: Any, where: str) -> tuple:
    if value is None:
        return TRIGGER_EVENTS
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not value:
        raise NotificationConfigError(f"{where}: expected a list of trigger events ({', '.join(TRIGGER_EVENTS)})")
    for name in value:
        if name not in TRIGGER_EVENTS:
            raise NotificationConfigError(f"{where}: expected trigger events among {', '.join(TRIGGER_EVENTS)}, got {name!r}")
    return tuple(value)


def _number(value: Any, where: str, default: float, low: float, high: float) -> float:
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise NotificationConfigError(f"{where}: expected a number of seconds, got {value!r}") from None
    if not low < number <= high:
        raise NotificationConfigError(f"{where}: expected more than {low:g} and at most {high:g}, got {value!r}")
    return number


def parse_config(value: Any) -> Optional[dict]:
    """Validate ``notifications`` (the role variable / module option); None when nothing is configured.

    ``{sns: [{topic_arn, events}], webhooks: [{url, events, template, headers, secret, secret_header}],
    events, timeout, retries, report_dir, report_url}``; ``sns`` and ``webhooks`` also take a single
    topic ARN / URL string.
    """
    if value in (None, "", {}, []):
        return None
    if not isinstance(value, dict):
        raise NotificationConfigError(f"notifications: expected a dict with sns and/or webhooks, got {type(value).__name__}")
    unknown = sorted(set(value) - {"sns", "webhooks", "events", "timeout", "retries", "report_dir", "report_url"})
    if unknown:
        raise NotificationConfigError(f"notifications: unknown key(s) {', '.join(unknown)} (expected sns, webhooks, events, "
                                      "timeout, retries, report_dir, report_url)")
    events = _events(value.get("events"), "notifications.events")
    timeout = _number(value.get("timeout"), "notifications.timeout", DEFAULT_TIMEOUT, 0.0, MAX_TIMEOUT)
    retries = value.get("retries", DEFAULT_RETRIES)
    if isinstance(retries, str) and retries.isdigit():
        retries = int(retries)
    if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= MAX_RETRIES:
        raise NotificationConfigError(f"notifications.retries: expected an integer from 0 to {MAX_RETRIES}, got {retries!r}")
    # Webhooks first: an SNS publish is slower than a local POST, and each destination waits for the previous.
    destinations = [_webhook(item, f"notifications.webhooks[{index}]", events)
                    for index, item in enumerate(_as_list(value.get("webhooks"), "notifications.webhooks"))]
    for index, item in enumerate(_as_list(value.get("sns"), "notifications.sns")):
        where = f"notifications.sns[{index}]"
        item = {"topic_arn": item} if isinstance(item, str) else item
        if not isinstance(item, dict) or not isinstance(item.get("topic_arn"), str) or not _TOPIC_RE.match(item["topic_arn"]):
            raise NotificationConfigError(f"{where}: expected an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME) or "
                                          f"{{topic_arn, events}}, got {item!r}")
        destinations.append({"kind": "sns", "topic_arn": item["topic_arn"],
                             "events": _events(item.get("events"), f"{where}.events") if item.get("events") is not None else events})
    if not destinations:
        return None
    report_url = value.get("report_url") or None
    if report_url is not None and not isinstance(report_url, str):
        raise NotificationConfigError(f"notifications.report_url: expected a URL prefix, got {report_url!r}")
    report_dir = value.get("report_dir") or None
    if report_dir is not None and not isinstance(report_dir, str):
        raise NotificationConfigError(f"notifications.report_dir: expected a directory path, got {report_dir!r}")
    return {"destinations": destinations, "timeout": timeout, "retries": retries,
            "report_dir": report_dir, "report_url": report_url}


def _as_list(value: Any, where: str) -> list:
    if value in (None, "", []):
        return []
    if isinstance(value, (str, dict)):
        return [value]
    if isinstance(value, list):
        return value
    raise NotificationConfigError(f"{where}: expected a list, got {type(value).__name__}")


def _webhook(item: Any, where: str, events: tuple) -> dict:
    item = {"url": item} if isinstance(item, str) else item
    if not isinstance(item, dict):
        raise NotificationConfigError(f"{where}: expected a URL or {{url, events, template, headers, secret}}, got {item!r}")
    url = item.get("url")
    parsed = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise NotificationConfigError(f"{where}.url: expected an http:// or https:// URL, got {url!r}")
    template = item.get("template")
    if template is not None and not isinstance(template, str):
        raise NotificationConfigError(f"{where}.template: expected a string with $placeholders, got {template!r}")
    headers = item.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(k, str) and _HEADER_RE.match(k) for k in headers):
        raise NotificationConfigError(f"{where}.headers: expected a dict of header names to values, got {headers!r}")
    secret = item.get("secret")
    if secret is not None and not isinstance(secret, str):
        raise NotificationConfigError(f"{where}.secret: expected a string")
    secret_header = item.get("secret_header") or DEFAULT_SECRET_HEADER
    if not isinstance(secret_header, str) or not _HEADER_RE.match(secret_header):
        raise NotificationConfigError(f"{where}.secret_header: expected a header name such as {DEFAULT_SECRET_HEADER}, "
                                      f"got {secret_header!r}")
    return {"kind": "webhook", "url": url, "template": template, "secret": secret, "secret_header": secret_header,
            "headers": {k: str(v) for k, v in headers.items()},
            "events": _events(item.get("events"), f"{where}.events") if item.get("events") is not None else events}


def destination_label(destination: dict) -> str:
    """How a destination is named in records and messages: a topic ARN, or a URL without credentials or query."""
    if destination["kind"] == "sns":
        return destination["topic_arn"]
    parts = urllib.parse.urlsplit(destination["url"])
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


# --------------------------------------------------------------------------------------------
# messages
# --------------------------------------------------------------------------------------------


def report_location(config: dict, deployment_id: str) -> Optional[str]:
    """Where the deployment's timeline report is (URL when ``report_url`` is set, else the path)."""
    name = f"{deployment_id}.html"
    if config.get("report_url"):
        return config["report_url"].rstrip("/") + "/" + name
    if config.get("report_dir"):
        return os.path.join(os.path.expanduser(config["report_dir"]), name)
    return None


def failure_details(record: dict) -> Optional[dict]:
    """The first failed host event of a record dict: host, event, script, exit code, message."""
    for host in record.get("hosts") or []:
        for event in host.get("events") or []:
            if event.get("status") == "Failed":
                return event_failure(host.get("name"), event)
    return None


def event_failure(host: Optional[str], event: dict) -> dict:
    scripts = [s for s in event.get("scripts") or [] if isinstance(s, dict)]
    failed = next((s for s in scripts if s.get("exit_code") not in (0, None) or s.get("timed_out")), None)
    failed = failed or (scripts[-1] if scripts else {})
    message = event.get("message") or failed.get("log_tail") or failed.get("error")
    return {"host": host, "event": event.get("name"), "script": failed.get("location") or failed.get("script"),
            "exit_code": failed.get("exit_code"), "message": (str(message)[-_LOG_TAIL:] if message else None)}


def build_message(event: str, context: dict, config: dict, host: Optional[str] = None,
                  failure: Optional[dict] = None, now: Optional[str] = None) -> dict:
    """The JSON body of one notification."""
    deployment_id = context.get("deployment_id")
    message = {
        "event": event,
        "time": now or now_iso(),
        "deployment_id": deployment_id,
        "application": context.get("application"),
        "deployment_group": context.get("deployment_group"),
        "deployment_type": context.get("deployment_type"),
        "status": context.get("status"),
        "revision": context.get("revision"),
        "started_by": context.get("started_by"),
        "creator": context.get("creator"),
        "rollback_of": context.get("rollback_of"),
        "error": context.get("error"),
        "report": report_location(config, deployment_id) if deployment_id else None,
    }
    if context.get("trigger") is not None:
        message["trigger"] = context["trigger"]
    if host is not None:
        message["host"] = host
        message["instance_status"] = {"InstanceStart": "InProgress", "InstanceSuccess": "Succeeded",
                                      "InstanceFailure": "Failed"}.get(event)
    if failure:
        message["failure"] = failure
    message["summary"] = summary_line(message)
    return message


def summary_line(message: dict) -> str:
    """One human line: ``DeploymentFailure d-ABC shop/web: web2 ValidateService scripts/check.sh exit 3``."""
    text = f"{message['event']} {message.get('deployment_id')} {message.get('application')}/{message.get('deployment_group')}"
    if message.get("host"):
        text += f" host {message['host']}"
    failure = message.get("failure")
    if failure:
        bits = [failure.get("host"), failure.get("event"), failure.get("script")]
        text += ": " + " ".join(str(b) for b in bits if b)
        if failure.get("exit_code") is not None:
            text += f" exit {failure['exit_code']}"
    elif message.get("error") and message["event"] in ("DeploymentFailure", "DeploymentStop"):
        text += f": {message['error']}"
    return text[:500]


def render_body(destination: dict, message: dict) -> tuple:
    """(bytes, content type) of a webhook's body: the message as JSON, or the destination's template.

    Templates use ``$name`` / ``${name}`` placeholders (Ansible would take ``{{ }}`` for itself): every
    top-level field, ``failure_host``/``failure_event``/``failure_script``/``failure_exit_code``, and
    ``message_json`` (the whole message). Values are JSON-string escaped so that a JSON template stays JSON.
    """
    raw = json.dumps(message, sort_keys=True)
    if not destination.get("template"):
        return raw.encode("utf-8"), "application/json"
    values = {"message_json": raw}
    flat = dict(message)
    for key, value in (message.get("failure") or {}).items():
        flat[f"failure_{key}"] = value
    for key, value in flat.items():
        if isinstance(value, (dict, list)):
            text = json.dumps(value, sort_keys=True)
        else:
            text = "" if value is None else str(value)
        values[key] = json.dumps(text)[1:-1]
    body = string.Template(destination["template"]).safe_substitute(values)
    try:
        json.loads(body)
        content_type = "application/json"
    except ValueError:
        content_type = "text/plain; charset=utf-8"
    return body.encode("utf-8"), content_type


# --------------------------------------------------------------------------------------------
# delivery
# --------------------------------------------------------------------------------------------


class DeliveryError(RollwrightError):
    """One attempt failed; ``retry`` says whether another attempt can help."""

    def __init__(self, message: str, retry: bool = True, in_flight: bool = False):
        super().__init__(message)
        self.retry = retry
        self.in_flight = in_flight  # sent, no answer yet: it may still arrive (do not retry, do not count it)


def _post_webhook(destination: dict, message: dict, timeout: float) -> None:
    body, content_type = render_body(destination, message)
    headers = {"Content-Type": content_type, "User-Agent": "rollwright.deploy-notifications",
               "X-Rollwright-Event": message["event"]}
    headers.update(destination.get("headers") or {})
    if destination.get("secret"):
        headers[destination["secret_header"]] = destination["secret"]
    parts = urllib.parse.urlsplit(destination["url"])
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    # http.client rather than urllib: no proxy lookup or SSL context per call (a message must take milliseconds)
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=max(0.01, timeout),
                                                 context=_tls_context())
    else:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=max(0.01, timeout))
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read(1024)
    except (OSError, http.client.HTTPException) as exc:
        raise DeliveryError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None
    finally:
        connection.close()
    if response.status >= 300:
        raise DeliveryError(f"HTTP {response.status} {response.reason}",
                            retry=response.status >= 500 or response.status == 429)


_TLS: list = []


def _tls_context():
    if not _TLS:
        import ssl

        _TLS.append(ssl.create_default_context())
    return _TLS[0]


def _publish_sns(client: Any, destination: dict, message: dict, timeout: float) -> None:
    """Publish in a daemon thread, waited for at most ``timeout`` (the SDK's own timeouts are longer)."""
    outcome: dict = {}
    subject = f"rollwright {message['event']} {message.get('deployment_id')}"[:100]

    def _send() -> None:
        try:
            client.publish(TopicArn=destination["topic_arn"], Message=json.dumps(message, sort_keys=True), Subject=subject,
                           MessageAttributes={"event": {"DataType": "String", "StringValue": message["event"]}})
            outcome["ok"] = True
        except Exception as exc:  # pylint: disable=broad-except  # any SDK error is a failed delivery
            outcome["error"] = str(exc)[:300] or type(exc).__name__

    thread = threading.Thread(target=_send, daemon=True)
    thread.start()
    thread.join(max(0.01, timeout))
    if thread.is_alive():
        raise DeliveryError(f"no answer within {timeout:.2f} s (the publish goes on in the background)", retry=False,
                            in_flight=True)
    if "error" in outcome:
        raise DeliveryError(outcome["error"])


class Notifier:
    """Sends one message to every destination that wants its event, within the time budget."""

    def __init__(self, config: dict, client_factory: Optional[Callable] = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.config = config
        self.client_factory = client_factory
        self.clock = clock
        self.sleep = sleep
        self._sns = None

    def _sns_client(self):
        if self._sns is None:
            if self.client_factory is None:
                raise DeliveryError("no AWS client available for SNS", retry=False)
            self._sns = self.client_factory("sns")
            self._sns.meta.service_model.operation_model("Publish")  # botocore loads it lazily on the first call
        return self._sns

    def deliver(self, destination: dict, message: dict, budget: float) -> dict:
        """Try up to 1 + retries times with exponential backoff, all within ``budget`` seconds.
        Returns ``{ok, attempts, seconds, error}``."""
        client = None
        if destination["kind"] == "sns":
            try:
                client = self._sns_client()  # made (and its model loaded) outside the budget: local work only
            except Exception as exc:  # pylint: disable=broad-except
                return {"ok": False, "attempts": 0, "seconds": 0.0, "error": f"no SNS client: {exc}"[:300]}
        started = self.clock()
        deadline = started + budget
        attempts = 0
        error = "no time left"
        in_flight = False
        for attempt in range(self.config["retries"] + 1):
            left = deadline - self.clock()
            if left <= 0.01:
                break
            attempts += 1
            try:
                if destination["kind"] == "sns":
                    _publish_sns(client, destination, message, left)
                else:
                    _post_webhook(destination, message, left)
                return {"ok": True, "attempts": attempts, "seconds": round(self.clock() - started, 3), "error": None}
            except DeliveryError as exc:
                error, in_flight = str(exc), exc.in_flight
                if not exc.retry:
                    break
            pause = FIRST_BACKOFF * (2 ** attempt)
            if self.clock() + pause >= deadline:
                break
            self.sleep(pause)
        return {"ok": False, "attempts": attempts, "seconds": round(self.clock() - started, 3), "error": error,
                "in_flight": in_flight}


# --------------------------------------------------------------------------------------------
# the store wrapper: the one place notifications are produced
# --------------------------------------------------------------------------------------------


def state_dir() -> str:
    return os.path.expanduser("~/.cache/rollwright/notify")


class _DeploymentState:
    """What this controller knows about one deployment's notifications (a JSON file between steps)."""

    def __init__(self, deployment_id: str, directory: str):
        self.path = os.path.join(directory, f"{deployment_id}.json")
        self.data: dict = {"sent": [], "spent": {}, "skipped": [], "failures": [], "context": None, "host_failures": {}}
        try:
            with open(self.path, encoding="utf-8") as handle:
                self.data.update(json.load(handle))
        except (OSError, ValueError):
            pass

    def save(self) -> None:
        directory = os.path.dirname(self.path)
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".notify-")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(self.data, handle)
            os.replace(tmp, self.path)
        except OSError:
            pass  # notifications are best effort: a read-only home only loses de-duplication

    def forget(self) -> None:
        try:
            os.remove(self.path)
        except OSError:
            pass


def _record_context(record: Any) -> dict:
    data = record.to_dict() if hasattr(record, "to_dict") else dict(record)
    context = {k: data.get(k) for k in ("deployment_id", "application", "deployment_group", "deployment_type", "status",
                                        "revision", "started_by", "creator", "rollback_of", "error")}
    trigger = data.get("trigger")
    if trigger is None:
        trigger = (data.get("extra") or {}).get("trigger")
    context["trigger"] = trigger
    revision = dict(context.get("revision") or {})
    revision.pop("path", None)  # the controller's cache path says nothing to a reader
    context["revision"] = revision
    return context


class NotifyingStore:
    """A record store that sends trigger events after the writes that make them happen.

    Everything else is passed through unchanged. Notification errors never propagate.
    """

    def __init__(self, store: Any, config: dict, client_factory: Optional[Callable] = None,
                 notifier: Optional[Notifier] = None, directory: Optional[str] = None):
        self._store = store
        self.config = config
        self.notifier = notifier or Notifier(config, client_factory)
        self.directory = directory or state_dir()
        self.backend = getattr(store, "backend", "wrapped")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    # writes that notify ----------------------------------------------------------------------
    def create(self, record):
        created = self._store.create(record)
        self._safely(self._after_create, created)
        return created

    def update_status(self, deployment_id: str, status: str, error: Optional[str] = None):
        updated = self._store.update_status(deployment_id, status, error=error)
        self._safely(self._after_status, deployment_id, status, updated)
        return updated

    def update_host(self, deployment_id: str, host: str, status: Optional[str] = None, instance_id: Optional[str] = None,
                    lb_membership: Optional[list] = None, lb_restored: Optional[bool] = None) -> None:
        self._store.update_host(deployment_id, host, status=status, instance_id=instance_id,
                                lb_membership=lb_membership, lb_restored=lb_restored)
        if status in HOST_STATUS_EVENTS:
            self._safely(self._after_host, deployment_id, host, status)

    def event(self, deployment_id: str, host: str, event_name: str, status: str, start: Optional[str] = None,
              end: Optional[str] = None, scripts: Optional[list] = None, message: Optional[str] = None) -> None:
        self._store.event(deployment_id, host, event_name, status, start=start, end=end, scripts=scripts, message=message)
        if status == "Failed":
            self._safely(self._remember_failure, deployment_id, host,
                         {"name": event_name, "scripts": scripts or [], "message": message})

    # ----------------------------------------------------------------------------------------
    def _safely(self, func: Callable, *args: Any) -> None:
        try:
            func(*args)
        except Exception:  # pylint: disable=broad-except  # a notification never fails a deployment
            pass

    def _state(self, deployment_id: str) -> _DeploymentState:
        return _DeploymentState(deployment_id, self.directory)

    def _context(self, state: _DeploymentState, deployment_id: str) -> dict:
        if not state.data.get("context"):
            state.data["context"] = _record_context(self._store.get(deployment_id))
        return dict(state.data["context"])

    def _remember_failure(self, deployment_id: str, host: str, event: dict) -> None:
        state = self._state(deployment_id)
        if host not in state.data["host_failures"]:
            state.data["host_failures"][host] = event_failure(host, event)
            state.save()

    def _after_create(self, record) -> None:
        state = self._state(record.deployment_id)
        state.data["context"] = _record_context(record)
        if record.rollback_of:
            self._send(state, "DeploymentRollback", key="DeploymentRollback")
        state.save()

    def _after_status(self, deployment_id: str, status: str, updated: Any) -> None:
        event = STATUS_EVENTS.get(status)
        if event is None:
            return
        state = self._state(deployment_id)
        context = self._context(state, deployment_id)
        context.update(status=status, error=getattr(updated, "error", None) or context.get("error"))
        failure = None
        if status in ("Failed", "Stopped"):
            full = self._store.get(deployment_id).to_dict()
            context["error"] = full.get("error") or context.get("error")
            failure = failure_details(full)
            lambda_info = (full.get("extra") or {}).get("lambda") or {}
            if lambda_info.get("rolled_back"):
                # Lambda rolls back inside the deployment (the alias goes back): say so before the failure.
                self._send(state, "DeploymentRollback", context=context, key="DeploymentRollback")
        self._send(state, event, context=context, failure=failure, key=event)
        if status in ("Succeeded", "Failed", "Stopped"):
            state.forget()  # a finished deployment sends nothing more
        else:
            state.save()

    def _after_host(self, deployment_id: str, host: str, status: str) -> None:
        event = HOST_STATUS_EVENTS[status]
        state = self._state(deployment_id)
        context = self._context(state, deployment_id)
        failure = state.data["host_failures"].get(host) if status == "Failed" else None
        self._send(state, event, context=context, host=host, failure=failure, key=f"{event}:{host}")
        state.save()

    def _send(self, state: _DeploymentState, event: str, context: Optional[dict] = None, host: Optional[str] = None,
              failure: Optional[dict] = None, key: str = "") -> None:
        if key in state.data["sent"]:
            return  # e.g. a blue/green deployment goes back to InProgress after Ready: one DeploymentStart
        state.data["sent"].append(key)
        context = context or dict(state.data["context"] or {})
        message = build_message(event, context, self.config, host=host, failure=failure)
        timeout = self.config["timeout"]
        new_failures = []
        for destination in self.config["destinations"]:
            if event not in destination["events"]:
                continue
            label = destination_label(destination)
            budget = min(timeout, timeout - float(state.data["spent"].get(label, 0.0)))
            if budget <= 0.02:
                if label not in state.data["skipped"]:
                    state.data["skipped"].append(label)
                    new_failures.append({"time": now_iso(), "destination": label, "event": event, "host": host,
                                         "attempts": 0, "error": f"skipped for the rest of the deployment: failed "
                                                                 f"deliveries already took {timeout:g} s"})
                continue
            outcome = self.notifier.deliver(destination, message, budget)
            if not outcome["ok"]:
                if not outcome.get("in_flight"):
                    # An SNS publish still under way (a slow SDK call, not an unreachable endpoint) is not
                    # counted: the next message gets its full timeout again.
                    state.data["spent"][label] = float(state.data["spent"].get(label, 0.0)) + outcome["seconds"]
                new_failures.append({"time": now_iso(), "destination": label, "event": event, "host": host,
                                     "attempts": outcome["attempts"], "error": outcome["error"]})
        if new_failures:
            state.data["failures"].extend(new_failures)
            self._store.set_extra(message["deployment_id"], "notification_failures", state.data["failures"][-50:])


def wrap_store(store: Any, notifications: Any, client_factory: Optional[Callable] = None) -> Any:
    """The store itself when nothing is configured, else a :class:`NotifyingStore` around it."""
    config = parse_config(notifications)
    if config is None:
        return store
    return NotifyingStore(store, config, client_factory=client_factory)


# The module option (deployment_record); secrets are no_log. Keep in sync with doc_fragments/notifications.py.
ARGUMENT_SPEC = {
    "notifications": dict(type="dict", options=dict(
        sns=dict(type="list", elements="raw"),
        webhooks=dict(type="list", elements="dict", options=dict(
            url=dict(type="str", required=True),
            events=dict(type="list", elements="str"),
            template=dict(type="str"),
            headers=dict(type="dict"),
            secret=dict(type="str", no_log=True),
            secret_header=dict(type="str", default=DEFAULT_SECRET_HEADER, no_log=False),
        )),
        events=dict(type="list", elements="str"),
        timeout=dict(type="float", default=DEFAULT_TIMEOUT),
        retries=dict(type="int", default=DEFAULT_RETRIES),
        report_dir=dict(type="path"),
        report_url=dict(type="str"),
    )),
}
