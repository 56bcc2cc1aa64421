# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's one error model: a base exception, AWS error codes, and AWS errors with a hint.

Every error meant for a person derives from :class:`RollwrightError` (each part has its own
subclass: ``InPlaceError``, ``RecordError``, ``LoadBalancerError`` ...), so a plugin boundary
catches one class and fails the task with the message, never a traceback. Stdlib only: hosts
import it too.
"""

from __future__ import annotations

import re
from typing import Any, Optional


class RollwrightError(Exception):
    """An error with a message for a person; ``field`` names the input at fault when one is."""

    def __init__(self, *args: Any, field: Optional[str] = None):
        super().__init__(*args)
        self.field = field


class ControllerGone(RollwrightError):
    """The ansible-playbook process a step belongs to died (Ansible's workers run in their own session and
    outlive it): the step stops before its next change and leaves the rest to recovery."""


class AWSError(RollwrightError):
    """An AWS call failed; the message says which setting to look at."""


# The AWS settings a person can change, named once for every hint.
CREDENTIALS_HINT = ("set access_key/secret_key (or rollwright_aws_profile / profile), the AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY or AWS_PROFILE environment, or give the controller an instance role")
ENDPOINT_HINT = ("check endpoint_url (rollwright_aws_endpoint_url, AWS_ENDPOINT_URL) and region "
                 "(rollwright_aws_region, AWS_REGION), and that the controller reaches it")
_ACCESS_DENIED = ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError",
                  "UnrecognizedClientException", "InvalidClientTokenId", "AuthFailure", "SignatureDoesNotMatch",
                  "403")  # S3's HEAD answers with the bare status
_CREDENTIAL_ERRORS = ("NoCredentialsError", "PartialCredentialsError", "NoRegionError", "ProfileNotFound")
_CONNECTION_ERRORS = ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError", "ReadTimeoutError",
                      "ProxyConnectionError", "SSLError", "ConnectionError")


def aws_error_code(exc: BaseException) -> Optional[str]:
    """The AWS error code of a botocore ClientError (``Throttling``, ``AccessDenied`` ...), else None."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return (response.get("Error") or {}).get("Code") or None
    return None


def aws_error_message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return (response.get("Error") or {}).get("Message") or str(exc)
    return str(exc)


def is_aws_error(exc: BaseException) -> bool:
    """botocore's exceptions (ClientError and BotoCoreError), without importing botocore."""
    return any(c.__module__.startswith("botocore") for c in type(exc).__mro__)


def _needed_actions(exc: BaseException, operation: Optional[str], service: Optional[str]) -> list[str]:
    """The IAM actions an access-denied call needed: named by AWS's message, else from the policy tables."""
    found = re.search(r"perform:\s*([A-Za-z0-9-]+:[A-Za-z0-9*]+)", aws_error_message(exc))
    if found:
        return [found.group(1)]
    operation = operation or getattr(exc, "operation_name", None)
    if operation and service:
        from ansible_collections.rollwright.deploy.plugins.module_utils.aws.iam_policy import iam_actions_for

        return iam_actions_for(service, operation)
    return []


def access_denied_hint(exc: BaseException, service: str) -> str:
    """For an access-denied error whose message does not name the action (S3 says only "Access Denied"):
    `` (IAM: needs s3:GetObject or s3:GetObjectVersion)``; otherwise ""."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    code = str(aws_error_code(exc) or (response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or "")
    if code not in _ACCESS_DENIED or not getattr(exc, "operation_name", None):
        return ""
    actions = _needed_actions(exc, None, service)
    if not actions or any(a in aws_error_message(exc) for a in actions):
        return ""
    return f" (IAM: needs {' or '.join(actions)})"


def explain_aws_error(exc: BaseException, step: str = "", service: Optional[str] = None,
                      operation: Optional[str] = None) -> AWSError:
    """An AWSError whose message names the step, what failed and the AWS setting to look at."""
    where = f"{step}: " if step else ""
    name = type(exc).__name__
    code = aws_error_code(exc)
    if name in _CREDENTIAL_ERRORS:
        what = "no AWS region" if name == "NoRegionError" else f"no usable AWS credentials ({exc})"
        hint = ENDPOINT_HINT if name == "NoRegionError" else CREDENTIALS_HINT
        return AWSError(f"{where}{what}: {hint}", field="region" if name == "NoRegionError" else "access_key")
    if name in _CONNECTION_ERRORS or (name.endswith("ConnectionError") and not code):
        return AWSError(f"{where}the AWS endpoint cannot be reached ({exc}): {ENDPOINT_HINT}", field="endpoint_url")
    if code in _ACCESS_DENIED:
        actions = _needed_actions(exc, operation, service)
        needs = f"; the controller's identity needs the IAM action {' or '.join(actions)}" if actions else ""
        return AWSError(f"{where}access denied by AWS ({code}: {aws_error_message(exc)}){needs}", field="access_key")
    if code:
        return AWSError(f"{where}AWS call failed: {code}: {aws_error_message(exc)}")
    return AWSError(f"{where}AWS call failed: {name}: {exc}")


def failure_message(exc: BaseException, step: str = "") -> Optional[str]:
    """The message a plugin boundary fails with for a known error, or None for a bug (let it show)."""
    if isinstance(exc, AWSError):
        text = str(exc)
        return text if not step or text.startswith(f"{step}:") else f"{step}: {text}"
    if isinstance(exc, RollwrightError):
        return f"{step}: {exc}" if step else str(exc)
    if is_aws_error(exc):
        return str(explain_aws_error(exc, step))
    return None


def error_result(exc: BaseException, step: str = "") -> Optional[dict[str, Any]]:
    """A failed task result for a known error: msg, the field at fault, the AWS error code."""
    message = failure_message(exc, step)
    if message is None:
        return None
    result: dict[str, Any] = {"failed": True, "msg": message}
    if getattr(exc, "field", None):
        result["field"] = exc.field  # type: ignore[attr-defined]
    if aws_error_code(exc):
        result["error_code"] = aws_error_code(exc)
    return result
