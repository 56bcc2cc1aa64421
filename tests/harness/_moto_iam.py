# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""IAM enforcement in the emulator closer to AWS than moto's own (emulator process only).

moto enforces identity policies for signed requests once ``/moto-api/reset-auth`` sets the number of
unauthenticated requests (INITIAL_NO_AUTH_ACTION_COUNT) to 0, but outside S3 (and SQS, IAM roles)
it authorises every action against resource ``*`` (a statement scoped to an ARN never matches),
ignores conditions, names the action by the signing name (``monitoring:`` for CloudWatch) and the
API operation (``lambda:Invoke``, ``dynamodb:TransactWriteItems``). Inert while enforcement is off
(every other emulator). With it on, for the services the collection calls:

- the action is the IAM action (``cloudwatch:DescribeAlarms``, ``lambda:InvokeFunction``; a
  transaction checks each item's PutItem / UpdateItem / DeleteItem on its table);
- the resource is the ARN AWS authorises (target group, listener, rule, classic ELB, alarm,
  instance, Auto Scaling group, function with its qualifier, table or index, queue); Describe*/List calls
  that AWS only authorises on ``*`` stay ``*``;
- conditions are evaluated (StringEquals, StringLike, Null) with the keys AWS sets:
  ``aws:ResourceTag/K`` and ``autoscaling:ResourceTag/K`` (the instance's or group's tags),
  ``aws:RequestTag/K`` (tags in the request), ``ec2:CreateAction``; a missing key fails the condition;
- the actions AWS checks besides the call's own are checked too: ``ec2:CreateTags`` for RunInstances
  with TagSpecifications, ``autoscaling:CreateOrUpdateTags`` for CreateAutoScalingGroup with Tags,
  ``ec2:RunInstances`` on the launch template of Create/UpdateAutoScalingGroup,
  ``iam:PassRole`` (``iam:PassedToService`` = ``ec2.amazonaws.com``) on the roles of the instance
  profile of RunInstances, and of the launch template of RunInstances or Create/UpdateAutoScalingGroup,
  and (passed to ``autoscaling.amazonaws.com``) on the notification role of PutLifecycleHook;
- requests signed with the harness's own key (tests.harness.emulator.ACCESS_KEY) are the account's
  administrator: the harness sets the world up and watches it while a deployment runs as an IAM user.

S3 keeps moto's own evaluation (bucket and object resources; no conditions), with HeadObject of a
version authorised by ``s3:GetObjectVersion`` as in AWS, and the signature checked over the URI as
sent. Not modelled: resource-based policies, permission boundaries, SCPs.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any
from urllib.parse import unquote, urlparse

HARNESS_ACCESS_KEY = "rollwright-test-access-key"

# IAM action names that differ from the API operation's
_ACTION_NAMES = {("lambda", "Invoke"): "InvokeFunction"}
_SERVICE_PREFIX = {"monitoring": "cloudwatch"}


def _access_key_id(headers: Any) -> str:
    auth = headers.get("Authorization") or ""
    return auth.partition("Credential=")[2].partition("/")[0]


def _query_list(qs: dict[str, list[str]], prefix: str) -> list[str]:
    pattern = re.compile(rf"^{re.escape(prefix)}\.(?:member\.)?(\d+)$")
    return [v[0] for k, v in sorted(qs.items(), key=lambda kv: kv[0]) if pattern.match(k)]


def _query_tags(qs: dict[str, list[str]]) -> dict[str, str]:
    tags: dict[str, dict[str, str]] = {}
    for key, values in qs.items():
        m = re.match(r"^Tags\.member\.(\d+)\.(Key|Value)$", key)
        if m:
            tags.setdefault(m.group(1), {})[m.group(2)] = values[0]
    return {t["Key"]: t.get("Value", "") for t in tags.values() if "Key" in t}


class _Checks:
    """The (action, resource, condition context) triples one request is authorised by."""

    def __init__(self, response: Any, service: str, region: str):
        self.r, self.service, self.region = response, service, region
        self.account = response.current_account
        operation = response._get_action()
        self.operation = operation[0] if isinstance(operation, list) else operation
        self.prefix = _SERVICE_PREFIX.get(service, service)

    def arn(self, service: str, resource: str, sep: str = ":") -> str:
        return f"arn:aws:{service}:{self.region}:{self.account}{sep}{resource}"

    def action(self, operation: str | None = None) -> str:
        op = operation or self.operation
        return f"{self.prefix}:{_ACTION_NAMES.get((self.prefix, op), op)}"

    def all(self) -> list[tuple[str, str, dict[str, str]]]:
        handler = getattr(self, f"_{self.prefix}", None)
        found = handler() if handler else None
        return found if found is not None else [(self.action(), "*", {})]

    # -- per service ---------------------------------------------------------------------------
    def _elasticloadbalancing(self) -> Any:
        qs = self.r.querystring
        for param in ("TargetGroupArn", "ListenerArn", "RuleArn"):
            if self.operation in ("RegisterTargets", "DeregisterTargets", "ModifyListener", "ModifyRule") and qs.get(param):
                return [(self.action(), qs[param][0], {})]
        if self.operation in ("RegisterInstancesWithLoadBalancer", "DeregisterInstancesFromLoadBalancer"):
            return [(self.action(), self.arn("elasticloadbalancing", f"loadbalancer/{qs['LoadBalancerName'][0]}"), {})]
        return None

    def _cloudwatch(self) -> Any:
        if self.operation == "DescribeAlarms":
            names = self.r._get_param("AlarmNames", []) or []
            if names:
                return [(self.action(), self.arn("cloudwatch", f"alarm:{n}"), {}) for n in names]
        return None

    def _ec2(self) -> Any:
        if self.operation == "TerminateInstances":
            from moto.ec2.models import ec2_backends

            backend = ec2_backends[self.account][self.region]
            out = []
            for instance_id in self.r._get_param("InstanceIds", []) or _query_list(self.r.querystring, "InstanceId"):
                try:
                    tags = {t["key"]: t["value"] for t in backend.describe_tags(filters={"resource-id": [instance_id]})}
                except Exception:  # pylint: disable=broad-except
                    tags = {}
                out.append((self.action(), self.arn("ec2", f"instance/{instance_id}"),
                            {f"aws:ResourceTag/{k}": v for k, v in tags.items()}))
            return out
        if self.operation == "RunInstances":
            out = [(self.action(), self.arn("ec2", "instance/*"), {})]
            specs = self.r._get_param("TagSpecifications", []) or []
            if specs or any(k.startswith("TagSpecification") for k in self.r.querystring):
                out.append(("ec2:CreateTags", self.arn("ec2", "instance/*"), {"ec2:CreateAction": "RunInstances"}))
            qs = self.r.querystring
            profile = {"Arn": (qs.get("IamInstanceProfile.Arn") or [None])[0], "Name": (qs.get("IamInstanceProfile.Name") or [None])[0]}
            return out + self._pass_roles(profile, "LaunchTemplate")
        return None

    def _pass_roles(self, profile: dict[str, Any] | None, template_prefix: str) -> list[tuple[str, str, dict[str, str]]]:
        """iam:PassRole on the roles of the instance profile the instances get (given in the request, or
        in the launch template it names), passed to EC2: what AWS checks for RunInstances and for an Auto
        Scaling group whose launch template has an instance profile."""
        qs = self.r.querystring
        if not (profile and (profile.get("Arn") or profile.get("Name"))):
            template_id = (qs.get(f"{template_prefix}.LaunchTemplateId") or [None])[0]
            template_name = (qs.get(f"{template_prefix}.LaunchTemplateName") or [None])[0]
            if not (template_id or template_name):
                return []
            from moto.ec2.models import ec2_backends

            backend = ec2_backends[self.account][self.region]
            try:
                template = (backend.get_launch_template(template_id) if template_id
                            else backend.get_launch_template_by_name(template_name))
                version = template.get_version((qs.get(f"{template_prefix}.Version") or ["$Default"])[0])
            except Exception:  # pylint: disable=broad-except  # the call itself fails on it, as in AWS
                return []
            profile = version.data.get("IamInstanceProfile") or {}
        from moto.iam.models import iam_backends

        iam = iam_backends[self.account]["global"]
        try:
            found = (iam.get_instance_profile_by_arn(profile["Arn"]) if profile.get("Arn")
                     else iam.get_instance_profile(profile["Name"]))
        except Exception:  # pylint: disable=broad-except
            return []
        return [("iam:PassRole", role.arn, {"iam:PassedToService": "ec2.amazonaws.com"}) for role in found.roles]

    def _autoscaling(self) -> Any:
        qs = self.r.querystring
        name = (qs.get("AutoScalingGroupName") or [None])[0]
        if not name:
            return None
        from moto.autoscaling.models import autoscaling_backends

        group = autoscaling_backends[self.account][self.region].autoscaling_groups.get(name)
        arn = getattr(group, "arn", None) or self.arn("autoscaling", f"autoScalingGroup:new:autoScalingGroupName/{name}")
        context: dict[str, str] = {}
        for tag in getattr(group, "tags", None) or []:
            key, value = tag.get("Key", tag.get("key")), tag.get("Value", tag.get("value", ""))
            context[f"aws:ResourceTag/{key}"] = context[f"autoscaling:ResourceTag/{key}"] = value
        request_tags = _query_tags(qs)
        context.update({f"aws:RequestTag/{k}": v for k, v in request_tags.items()})
        out = [(self.action(), arn, context)]
        if self.operation == "CreateAutoScalingGroup" and request_tags:
            out.append(("autoscaling:CreateOrUpdateTags", arn, context))
        if self.operation in ("CreateAutoScalingGroup", "UpdateAutoScalingGroup"):
            template = (qs.get("LaunchTemplate.LaunchTemplateId") or qs.get("LaunchTemplate.LaunchTemplateName") or [None])[0]
            if template:  # AWS checks the caller may launch from the template (and pass its instance role)
                out.append(("ec2:RunInstances", self.arn("ec2", f"launch-template/{template}"), {}))
            out += self._pass_roles(None, "LaunchTemplate")
        if self.operation == "PutLifecycleHook" and qs.get("RoleARN"):  # the role Auto Scaling notifies with
            out.append(("iam:PassRole", qs["RoleARN"][0], {"iam:PassedToService": "autoscaling.amazonaws.com"}))
        return out

    def _sqs(self) -> Any:
        url = self.r._get_param("QueueUrl") or (self.r.querystring.get("QueueUrl") or [None])[0]
        if not url:
            return None
        return [(self.action(), self.arn("sqs", urlparse(url).path.rstrip("/").rsplit("/", 1)[-1]), {})]

    def _lambda(self) -> Any:
        path = unquote(urlparse(self.r.uri).path)
        m = re.search(r"/functions/([^/]+)", path)
        if not m:
            return None
        name = m.group(1)
        if name.startswith("arn:"):
            name = name.split(":")[6]
        qualifier = (self.r.querystring.get("Qualifier") or [None])[0]
        alias = re.search(r"/aliases/([^/]+)", path)
        qualifier = qualifier or (alias.group(1) if alias else None)
        resource = self.arn("lambda", f"function:{name}" + (f":{qualifier}" if qualifier else ""))
        return [(self.action(), resource, {})]

    def _dynamodb(self) -> Any:
        if self.operation == "TransactWriteItems":
            ops = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem", "ConditionCheck": "ConditionCheckItem"}
            return [(self.action(ops[kind]), self.arn("dynamodb", f"table/{spec['TableName']}"), {})
                    for item in self.r._get_param("TransactItems", []) for kind, spec in item.items()]
        table = self.r._get_param("TableName")
        if not table:
            return None
        index = self.r._get_param("IndexName")
        return [(self.action(), self.arn("dynamodb", f"table/{table}" + (f"/index/{index}" if index else "")), {})]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _condition_holds(condition: dict[str, Any], context: dict[str, str]) -> bool:
    for operator, entries in condition.items():
        for key, expected in entries.items():
            actual = context.get(key)
            if operator == "Null":
                if (actual is None) != (str(expected).lower() == "true"):
                    return False
            elif operator in ("StringEquals", "StringLike"):
                if actual is None:
                    return False
                match = (lambda e, a=actual: a == e) if operator == "StringEquals" else (lambda e, a=actual: fnmatch.fnmatchcase(a, e))
                if not any(match(str(e)) for e in _as_list(expected)):
                    return False
            else:
                return False  # an operator this emulator does not know never grants
    return True


def _statement_applies(statement: dict[str, Any], action: str, resource: str, context: dict[str, str]) -> bool:
    if not any(fnmatch.fnmatchcase(action.lower(), str(a).lower()) for a in _as_list(statement.get("Action", []))):
        return False
    if not any(pattern == "*" or fnmatch.fnmatchcase(resource, pattern) for pattern in _as_list(statement.get("Resource", []))):
        return False
    return _condition_holds(statement.get("Condition") or {}, context)


def _authorise(request: Any, action: str, resource: str, context: dict[str, str]) -> None:
    from moto.core.exceptions import AccessDeniedError, JsonRESTError
    from moto.iam.access_control import IAMPolicy

    allowed = False
    for policy in request._access_key.collect_policies():
        document = IAMPolicy(policy)._policy_json
        for statement in _as_list(document.get("Statement", [])):
            if _statement_applies(statement, action, resource, context):
                if statement.get("Effect") == "Deny":
                    allowed = False
                    break
                allowed = True
    if not allowed:
        message = f"User: {request._access_key.arn} is not authorized to perform: {action} on resource: {resource}"
        if request._service in ("dynamodb", "lambda"):  # JSON protocols: AWS answers AccessDeniedException in JSON
            error = JsonRESTError("AccessDeniedException", message)
            error.code = 400 if request._service == "dynamodb" else 403
            raise error
        error = AccessDeniedError(user_arn=request._access_key.arn, action=action)
        error.description = error.description.replace(f"perform: {action}</Message>", f"perform: {action} on resource: {resource}</Message>")
        raise error


def _as_sent(response: Any) -> str:
    """The request's URI with its path and query exactly as the client sent (and signed) them."""
    raw = getattr(response, "_rw_raw_uri", None)
    if not raw:
        return response.uri
    parsed = urlparse(response.uri)
    return f"{parsed.scheme}://{parsed.netloc}{raw}"


def apply() -> None:
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.core.responses import BaseResponse
    from moto.iam.access_control import IAMRequest

    original_setup = BaseResponse.setup_class

    def setup_class(self: Any, request: Any, full_url: str, headers: Any, use_raw_body: bool = False) -> None:
        original_setup(self, request, full_url, headers, use_raw_body)
        self._rw_raw_uri = (getattr(request, "environ", None) or {}).get("RAW_URI")

    BaseResponse.setup_class = setup_class

    original = ActionAuthenticatorMixin._authenticate_and_authorize_action

    def authenticate(self: Any, iam_request_cls: type, resource: str = "*") -> None:
        enforced = ActionAuthenticatorMixin.request_count >= settings.INITIAL_NO_AUTH_ACTION_COUNT
        if not enforced:
            return original(self, iam_request_cls, resource)
        if _access_key_id(self.headers) == HARNESS_ACCESS_KEY:
            return None
        if iam_request_cls is not IAMRequest:  # S3: moto's own evaluation (bucket / object resources)
            # signed over the URI as sent: moto's own rebuilds the query decoded (prefix=app/ for the
            # prefix=app%2F the client signed), so a ListObjectVersions with a prefix never matched
            signed_uri, self.uri = self.uri, _as_sent(self)
            try:
                return original(self, iam_request_cls, resource)
            finally:
                self.uri = signed_uri
        parsed = urlparse(self.uri)
        path = parsed.path + (f"?{parsed.query}" if parsed.query else "")
        # a GET has no body to sign (moto falls back to its parsed params, which breaks the signature of
        # rest-json GETs such as lambda:GetFunction); a form POST's body is in self.data
        no_body = self.method in ("GET", "HEAD") and not self.raw_body
        request = IAMRequest(account_id=self.current_account, method=self.method, path=path,
                             data={} if no_body else self.data, body=self.raw_body, headers=self.headers,
                             action=self._get_action())
        request.check_signature()
        checks = _Checks(self, request._service, request._region).all()
        for action, checked_resource, context in checks:
            request._action = action
            _authorise(request, action, checked_resource, context)
        return None

    ActionAuthenticatorMixin._authenticate_and_authorize_action = authenticate

    # AWS authorises HeadObject of a given version with s3:GetObjectVersion (moto: always GetObject)
    from moto.s3 import responses as s3_responses

    s3_responses.ACTION_MAP["KEY"]["HEAD"]["versionId"] = "GetObjectVersion"
