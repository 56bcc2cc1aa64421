# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Deployment records in one DynamoDB table (single-table design), shared by several controllers.

Items (``pk`` / ``sk``):

=============================  ===========================  ==========================================
pk                             sk                           what
=============================  ===========================  ==========================================
``DEP#<deployment id>``        ``META``                     the deployment (status, times, revision,
                                                            ``extra`` map: one attribute per key)
``DEP#<deployment id>``        ``HOST#<host>``              one host (status, instance id, LB membership)
``DEP#<deployment id>``        ``EVENT#<host>#<event>``     one lifecycle event on one host
``DEP#<deployment id>``        ``REQUEST#<request id>``     one control request (stop, promote, pause,
                                                            resume); its state moves by conditional update
``LOCK#<application>#<group>`` ``LOCK``                     the group's lock (lease with heartbeat)
=============================  ===========================  ==========================================

Every write touches one item with an update expression (never a read-modify-write of a whole
document), so concurrent writers do not lose updates. History is read from two sparse global
secondary indexes holding only ``META`` items: ``by_group`` (``gsi1pk = GRP#<app>#<group>``) and
``by_application`` (``gsi2pk = APP#<app>``), both sorted by ``<create_time>#<id>``.

The lock is a conditional put (``attribute_not_exists(pk)``); a stale lock (``expires_epoch`` in the
past) is taken over only with ``force`` and only if its token did not change meanwhile.

Clock: lock times are on the *store's* clock, not on the controllers'. Every response carries the
server's ``Date`` header; the store keeps the offset between it and this machine's clock, the
holder writes ``expires_epoch`` = store time + ttl at each renewal, and a reader judges staleness,
and a takeover's condition compares, against store time too. A controller whose clock is a minute
off therefore neither steals a live lock nor keeps a dead one alive; the precision is that of the
header (1 s) plus a request's latency. An endpoint without a ``Date`` header falls back to this
machine's clock (then keep controllers' clocks in sync).
"""

from __future__ import annotations

import datetime as _dt
import email.utils
import json
import re
import time
from typing import Any, Callable, Optional

from .base import (
    DEFAULT_LOCK_TTL,
    DEPLOYMENT_STATUSES,
    TERMINAL_STATUSES,
    DeploymentRecord,
    EventRecord,
    HostRecord,
    InvalidRecord,
    InvalidTransition,
    Lock,
    LockInfo,
    LockLost,
    ControlRequest,
    RecordError,
    RecordExists,
    RecordNotFound,
    RecordStore,
    RequestConflict,
    StoreNotReady,
    check_choice,
    check_deployment_id,
    check_name,
    lock_held_error,
    lock_info,
    format_time,
    new_token,
    now_iso,
    stored_json,
    token_ref,
)

DEFAULT_TABLE = "rollwright-deployments"
GSI_GROUP = "by_group"
GSI_APPLICATION = "by_application"


def create_table_cli(table: str) -> str:
    """The AWS CLI command that creates the table (what the error message and docs show)."""
    return (
        f"aws dynamodb create-table --table-name {table} --billing-mode PAY_PER_REQUEST "
        "--attribute-definitions AttributeName=pk,AttributeType=S AttributeName=sk,AttributeType=S "
        "AttributeName=gsi1pk,AttributeType=S AttributeName=gsi1sk,AttributeType=S "
        "AttributeName=gsi2pk,AttributeType=S AttributeName=gsi2sk,AttributeType=S "
        "--key-schema AttributeName=pk,KeyType=HASH AttributeName=sk,KeyType=RANGE "
        "--global-secondary-indexes "
        f"'IndexName={GSI_GROUP},KeySchema=[{{AttributeName=gsi1pk,KeyType=HASH}},"
        "{AttributeName=gsi1sk,KeyType=RANGE}],Projection={ProjectionType=ALL}' "
        f"'IndexName={GSI_APPLICATION},KeySchema=[{{AttributeName=gsi2pk,KeyType=HASH}},"
        "{AttributeName=gsi2sk,KeyType=RANGE}],Projection={ProjectionType=ALL}'"
    )


def table_definition(table: str) -> dict:
    """Keyword arguments of ``create_table`` for the records table."""
    def gsi(name, pk, sk):
        return {"IndexName": name, "KeySchema": [{"AttributeName": pk, "KeyType": "HASH"},
                                                 {"AttributeName": sk, "KeyType": "RANGE"}],
                "Projection": {"ProjectionType": "ALL"}}
    return {
        "TableName": table,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": n, "AttributeType": "S"}
                                 for n in ("pk", "sk", "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk")],
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        "GlobalSecondaryIndexes": [gsi(GSI_GROUP, "gsi1pk", "gsi1sk"), gsi(GSI_APPLICATION, "gsi2pk", "gsi2sk")],
    }


# ---- attribute helpers (the low-level client speaks typed attributes) -----------------------

def _s(value: str) -> dict:
    return {"S": value}


def _n(value: float) -> dict:
    return {"N": repr(float(value)) if isinstance(value, float) else str(value)}


def _j(value: Any) -> dict:
    return {"S": json.dumps(value)}


class _Update:
    """One ``SET`` update expression with its ``:value`` placeholders; every ``#name`` in a clause
    is an attribute name placeholder for the attribute of that name (reserved words such as status)."""

    def __init__(self, *clauses: str, **values: dict):
        self.sets: list[str] = []
        self.values: dict[str, dict] = {}
        for clause in clauses:
            self.set(clause)
        self.set_values(**values)

    def set(self, clause: str, **values: dict) -> None:
        self.sets.append(clause)
        self.set_values(**values)

    def set_values(self, **values: dict) -> None:
        self.values.update({":" + key: value for key, value in values.items()})

    def kwargs(self) -> dict:
        """The ``update_item`` arguments: UpdateExpression, values and (when used) names."""
        names = {f"#{name}": name for clause in self.sets for name in re.findall(r"#(\w+)", clause)}
        out = {"UpdateExpression": "SET " + ", ".join(self.sets), "ExpressionAttributeValues": self.values}
        if names:
            out["ExpressionAttributeNames"] = names
        return out


def _get(item: dict, name: str, default: Any = None) -> Any:
    attr = item.get(name)
    if attr is None or "NULL" in attr:
        return default
    if "S" in attr:
        return attr["S"]
    if "N" in attr:
        return float(attr["N"]) if "." in attr["N"] or "e" in attr["N"].lower() else int(attr["N"])
    if "BOOL" in attr:
        return attr["BOOL"]
    if "M" in attr:
        return {k: stored_json(v.get("S"), f"{name}.{k}") for k, v in attr["M"].items()}
    raise RecordError(f"unexpected DynamoDB attribute {name}: {attr!r}")  # pragma: no cover


def _getj(item: dict, name: str, default: Any = None) -> Any:
    raw = _get(item, name)
    return default if raw is None else stored_json(raw, f"{_get(item, 'pk')}/{_get(item, 'sk')}.{name}")


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return (response.get("Error") or {}).get("Code", "")


def _dep_key(deployment_id: str) -> dict:
    return {"pk": _s(f"DEP#{deployment_id}"), "sk": _s("META")}


def _lock_key(application: str, group: str) -> dict:
    return {"pk": _s(f"LOCK#{application}#{group}"), "sk": _s("LOCK")}


class DynamoDBRecordStore(RecordStore):
    backend = "dynamodb"

    def __init__(self, client, table: str = DEFAULT_TABLE, clock: Callable[[], float] = time.time):
        self.client = client
        self.table = table or DEFAULT_TABLE
        self._known_deployments: set = set()
        self._known_hosts: set = set()
        self._clock = clock  # this machine's clock (injectable: tests skew it)
        # store time minus this machine's clock lies in [low, high]: each response's Date header narrows it
        self._bounds: Optional[tuple] = None
        self._sent = clock()

    # the store's clock ---------------------------------------------------------------------
    @property
    def _offset(self) -> Optional[float]:
        return None if self._bounds is None else (self._bounds[0] + self._bounds[1]) / 2.0

    def _observe(self, response: Any) -> None:
        """Narrow the offset to the server's clock with a response's Date header: the server stamped a
        second D while this machine's clock was between the request's send and now, so the offset is in
        [D - now, D + 1 - sent]. Intervals of successive responses are intersected (an empty
        intersection - a clock was stepped - starts over)."""
        try:
            date = response["ResponseMetadata"]["HTTPHeaders"]["date"]
            server = email.utils.parsedate_to_datetime(date).timestamp()
        except (KeyError, TypeError, ValueError, IndexError):
            return
        low, high = server - self._clock(), server + 1.0 - self._sent
        if self._bounds is not None:
            narrowed = (max(low, self._bounds[0]), min(high, self._bounds[1]))
            if narrowed[0] <= narrowed[1]:
                low, high = narrowed
        self._bounds = (low, high)

    def store_time(self) -> float:
        """Now on the store's clock (this machine's clock until a response told the offset)."""
        if self._offset is None:
            self._call("describe_table")
        return self._clock() + (self._offset or 0.0)

    def _store_now(self) -> tuple:
        epoch = self.store_time()
        return epoch, _dt.datetime.fromtimestamp(epoch, tz=_dt.timezone.utc)

    # table ---------------------------------------------------------------------------------
    def ensure_table(self, create: bool = False, wait: float = 120.0) -> bool:
        """Check that the table exists with our indexes; create it (PAY_PER_REQUEST) when allowed.
        Returns True when it was created."""
        try:
            self._sent = self._clock()
            response = self.client.describe_table(TableName=self.table)
            self._observe(response)
            desc = response["Table"]
        except Exception as exc:
            if _code(exc) != "ResourceNotFoundException":
                raise StoreNotReady(f"dynamodb_table: cannot describe table {self.table}: {exc}") from None
            if not create:
                raise StoreNotReady(
                    f"dynamodb_table: the records table {self.table} does not exist. Create it once with "
                    f"create_table=true (needs dynamodb:CreateTable), or with: {create_table_cli(self.table)}"
                ) from None
            try:
                self.client.create_table(**table_definition(self.table))
            except Exception as create_exc:
                if _code(create_exc) != "ResourceInUseException":  # another controller created it just now
                    raise StoreNotReady(f"dynamodb_table: cannot create table {self.table}: {create_exc}") from None
            deadline = time.monotonic() + wait
            while True:
                status = self.client.describe_table(TableName=self.table)["Table"].get("TableStatus")
                if status == "ACTIVE":
                    return True
                if time.monotonic() > deadline:
                    raise StoreNotReady(f"dynamodb_table: table {self.table} is still {status} after {wait:.0f} s")
                time.sleep(1.0)
        indexes = {g["IndexName"] for g in desc.get("GlobalSecondaryIndexes") or []}
        keys = {k["AttributeName"]: k["KeyType"] for k in desc.get("KeySchema") or []}
        missing = {GSI_GROUP, GSI_APPLICATION} - indexes
        if keys != {"pk": "HASH", "sk": "RANGE"} or missing:
            raise StoreNotReady(
                f"dynamodb_table: table {self.table} is not a rollwright records table (needs key pk/sk and indexes "
                f"{GSI_GROUP}, {GSI_APPLICATION}; missing: {', '.join(sorted(missing)) or 'key schema'}). "
                f"Use another table name or create it with: {create_table_cli(self.table)}"
            )
        return False

    # low-level -----------------------------------------------------------------------------
    def _call(self, method: str, **kwargs) -> dict:
        try:
            self._sent = self._clock()
            response = getattr(self.client, method)(TableName=self.table, **kwargs)
            self._observe(response)
            return response
        except Exception as exc:
            if _code(exc) == "ResourceNotFoundException":
                raise StoreNotReady(
                    f"dynamodb_table: the records table {self.table} does not exist "
                    f"(create it with create_table=true or: {create_table_cli(self.table)})"
                ) from None
            raise

    def _require(self, deployment_id: str) -> None:
        if deployment_id in self._known_deployments:
            return
        item = self._call("get_item", Key=_dep_key(deployment_id), ConsistentRead=True,
                          ProjectionExpression="pk").get("Item")
        if not item:
            raise RecordNotFound(f"deployment_id: no deployment {deployment_id} in table {self.table}")
        self._known_deployments.add(deployment_id)

    def _ensure_host(self, deployment_id: str, host: str) -> None:
        if (deployment_id, host) in self._known_hosts:
            return
        self._call(
            "update_item",
            Key={"pk": _s(f"DEP#{deployment_id}"), "sk": _s(f"HOST#{host}")},
            UpdateExpression="SET #kind = :kind, host = :host, seq = if_not_exists(seq, :seq), "
                             "#status = if_not_exists(#status, :pending), "
                             "lb_membership = if_not_exists(lb_membership, :empty), "
                             "lb_restored = if_not_exists(lb_restored, :false)",
            ExpressionAttributeNames={"#kind": "kind", "#status": "status"},
            ExpressionAttributeValues={":kind": _s("host"), ":host": _s(host), ":seq": _n(time.time_ns()),
                                       ":pending": _s("Pending"), ":empty": _s("[]"), ":false": {"BOOL": False}},
        )
        self._known_hosts.add((deployment_id, host))

    def _meta_item(self, record: DeploymentRecord) -> dict:
        order = f"{record.create_time}#{record.deployment_id}"
        item = {
            **_dep_key(record.deployment_id),
            "kind": _s("deployment"),
            "gsi1pk": _s(f"GRP#{record.application}#{record.deployment_group}"),
            "gsi1sk": _s(order),
            "gsi2pk": _s(f"APP#{record.application}"),
            "gsi2sk": _s(order),
            "deployment_id": _s(record.deployment_id),
            "application": _s(record.application),
            "deployment_group": _s(record.deployment_group),
            "deployment_type": _s(record.deployment_type),
            "revision": _j(record.revision),
            "configuration": _j(record.configuration),
            "creator": _s(record.creator),
            "status": _s(record.status),
            "create_time": _s(record.create_time),
            "extra": {"M": {str(k): _j(v) for k, v in record.extra.items()}},
            "creator_identity": _j(record.creator_identity),
        }
        for name in ("rollback_of", "rolled_back_by", "start_time", "end_time", "error", "started_by", "description"):
            value = getattr(record, name)
            if value is not None:
                item[name] = _s(value)
        return item

    @staticmethod
    def _record_from_item(item: dict) -> DeploymentRecord:
        return DeploymentRecord(
            deployment_id=_get(item, "deployment_id"),
            application=_get(item, "application"),
            deployment_group=_get(item, "deployment_group"),
            deployment_type=_get(item, "deployment_type"),
            revision=_getj(item, "revision", {}),
            configuration=_getj(item, "configuration"),
            creator=_get(item, "creator"),
            rollback_of=_get(item, "rollback_of"),
            rolled_back_by=_get(item, "rolled_back_by"),
            status=_get(item, "status"),
            create_time=_get(item, "create_time"),
            start_time=_get(item, "start_time"),
            end_time=_get(item, "end_time"),
            error=_get(item, "error"),
            started_by=_get(item, "started_by"),
            creator_identity=_getj(item, "creator_identity", {}) or {},
            description=_get(item, "description"),
            extra=_get(item, "extra", {}) or {},
        )

    def _host_items(self, deployment_id: str, host: HostRecord, seq: int) -> list:
        items = [{
            "pk": _s(f"DEP#{deployment_id}"), "sk": _s(f"HOST#{host.name}"), "kind": _s("host"),
            "host": _s(host.name), "seq": _n(seq), "status": _s(host.status),
            "lb_membership": _j(host.lb_membership), "lb_restored": {"BOOL": bool(host.lb_restored)},
            **({"instance_id": _s(host.instance_id)} if host.instance_id is not None else {}),
        }]
        for offset, ev in enumerate(host.events):
            item = {
                "pk": _s(f"DEP#{deployment_id}"), "sk": _s(f"EVENT#{host.name}#{ev.name}"), "kind": _s("event"),
                "host": _s(host.name), "event": _s(ev.name), "seq": _n(seq + offset), "status": _s(ev.status),
                "scripts": _j(ev.scripts),
            }
            for name in ("start_time", "end_time", "message"):
                if getattr(ev, name) is not None:
                    item[name] = _s(getattr(ev, name))
            items.append(item)
        return items

    def _write_hosts(self, deployment_id: str, hosts: list) -> None:
        base_seq = time.time_ns()
        for index, host in enumerate(hosts):
            # drop the host's old events first: the given host state replaces it whole
            old = self._query_all(KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
                                  ExpressionAttributeValues={":pk": _s(f"DEP#{deployment_id}"),
                                                             ":prefix": _s(f"EVENT#{host.name}#")},
                                  ProjectionExpression="pk, sk", ConsistentRead=True)
            for item in old:
                self._call("delete_item", Key={"pk": item["pk"], "sk": item["sk"]})
            for item in self._host_items(deployment_id, host, base_seq + index * 1000):
                self._call("put_item", Item=item)
            self._known_hosts.add((deployment_id, host.name))

    def _query_all(self, **kwargs) -> list:
        items, start = [], None
        while True:
            if start:
                kwargs["ExclusiveStartKey"] = start
            page = self._call("query", **kwargs)
            items.extend(page.get("Items", []))
            start = page.get("LastEvaluatedKey")
            if not start:
                return items

    # records -------------------------------------------------------------------------------
    def create(self, record: DeploymentRecord) -> DeploymentRecord:
        self.stamp(record)
        put = {"TableName": self.table, "Item": self._meta_item(record), "ConditionExpression": "attribute_not_exists(pk)"}
        if record.rollback_of is None:
            try:
                self._call("put_item", Item=put["Item"], ConditionExpression=put["ConditionExpression"])
            except Exception as exc:
                if _code(exc) == "ConditionalCheckFailedException":
                    raise RecordExists(f"deployment_id: deployment {record.deployment_id} already exists") from None
                raise
        else:
            link = {
                "TableName": self.table, "Key": _dep_key(record.rollback_of),
                "UpdateExpression": "SET rolled_back_by = :id", "ConditionExpression": "attribute_exists(pk)",
                "ExpressionAttributeValues": {":id": _s(record.deployment_id)},
            }
            try:
                self.client.transact_write_items(TransactItems=[{"Put": put}, {"Update": link}])
            except Exception as exc:
                if _code(exc) != "TransactionCanceledException":
                    raise
                reasons = [r.get("Code") for r in (getattr(exc, "response", {}) or {}).get("CancellationReasons") or []]
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    raise RecordExists(f"deployment_id: deployment {record.deployment_id} already exists") from None
                raise RecordNotFound(
                    f"rollback_of: no deployment {record.rollback_of} in table {self.table} to roll back"
                ) from None
        self._known_deployments.add(record.deployment_id)
        if record.hosts:
            self._write_hosts(record.deployment_id, record.hosts)
        return record

    def get(self, deployment_id: str) -> DeploymentRecord:
        check_deployment_id(deployment_id)
        items = self._query_all(KeyConditionExpression="pk = :pk",
                                ExpressionAttributeValues={":pk": _s(f"DEP#{deployment_id}")}, ConsistentRead=True)
        meta = next((i for i in items if _get(i, "sk") == "META"), None)
        if meta is None:
            raise RecordNotFound(f"deployment_id: no deployment {deployment_id} in table {self.table}")
        record = self._record_from_item(meta)
        hosts = {}
        for item in sorted((i for i in items if _get(i, "kind") == "host"), key=lambda i: (_get(i, "seq", 0), _get(i, "host"))):
            hosts[_get(item, "host")] = HostRecord(
                name=_get(item, "host"), instance_id=_get(item, "instance_id"), status=_get(item, "status", "Pending"),
                lb_membership=_getj(item, "lb_membership", []), lb_restored=bool(_get(item, "lb_restored", False)),
            )
        for item in sorted((i for i in items if _get(i, "kind") == "event"), key=lambda i: (_get(i, "seq", 0), _get(i, "event"))):
            host = hosts.setdefault(_get(item, "host"), HostRecord(name=_get(item, "host")))
            host.events.append(EventRecord(
                name=_get(item, "event"), status=_get(item, "status"), start_time=_get(item, "start_time"),
                end_time=_get(item, "end_time"), scripts=_getj(item, "scripts", []), message=_get(item, "message"),
            ))
        record.hosts = list(hosts.values())
        return record

    def update_status(self, deployment_id: str, status: str, error: Optional[str] = None) -> DeploymentRecord:
        check_deployment_id(deployment_id)
        check_choice(status, DEPLOYMENT_STATUSES, "status")
        now = now_iso()
        update = _Update("#status = :status", status=_s(status), t1=_s("Succeeded"), t2=_s("Failed"), t3=_s("Stopped"))
        if status == "InProgress":
            update.set("start_time = if_not_exists(start_time, :now)", now=_s(now))
        if status in TERMINAL_STATUSES:
            update.set("end_time = if_not_exists(end_time, :now)", now=_s(now))
        if error is not None:
            update.set("#error = :error", error=_s(str(error)))
        try:
            result = self._call(
                "update_item", Key=_dep_key(deployment_id),
                ConditionExpression="attribute_exists(pk) AND (NOT (#status IN (:t1, :t2, :t3)) OR #status = :status)",
                ReturnValues="ALL_NEW", **update.kwargs(),
            )
        except Exception as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
            item = self._call("get_item", Key=_dep_key(deployment_id), ConsistentRead=True).get("Item")
            if not item:
                raise RecordNotFound(f"deployment_id: no deployment {deployment_id} in table {self.table}") from None
            raise InvalidTransition(
                f"status: deployment {deployment_id} already finished as {_get(item, 'status')}; it cannot become {status}"
            ) from None
        return self._record_from_item(result["Attributes"])

    def set_hosts(self, deployment_id: str, hosts: list) -> None:
        check_deployment_id(deployment_id)
        hosts = [h if isinstance(h, HostRecord) else HostRecord.from_dict(h) for h in hosts]
        for h in hosts:
            h.validate()
        self._require(deployment_id)
        self._write_hosts(deployment_id, hosts)

    def update_host(self, deployment_id, host, status=None, instance_id=None, lb_membership=None, lb_restored=None) -> None:
        check_deployment_id(deployment_id)
        self._check_host_args(host, status, instance_id, lb_membership, lb_restored)
        self._require(deployment_id)
        self._ensure_host(deployment_id, host)
        update = _Update()
        if status is not None:
            update.set("#status = :status", status=_s(status))
        if instance_id is not None:
            update.set("instance_id = :iid", iid=_s(instance_id))
        if lb_membership is not None:
            update.set("lb_membership = :lbm", lbm=_j(lb_membership))
        if lb_restored is not None:
            update.set("lb_restored = :lbr", lbr={"BOOL": bool(lb_restored)})
        if not update.sets:
            return
        self._call("update_item", Key={"pk": _s(f"DEP#{deployment_id}"), "sk": _s(f"HOST#{host}")}, **update.kwargs())

    def event(self, deployment_id, host, event_name, status, start=None, end=None, scripts=None, message=None) -> None:
        check_deployment_id(deployment_id)
        start, end, scripts, message = self._check_event_args(host, event_name, status, start, end, scripts, message)
        self._require(deployment_id)
        self._ensure_host(deployment_id, host)
        update = _Update("#kind = :kind", "host = :host", "#event = :event", "seq = if_not_exists(seq, :seq)", "#status = :status",
                         kind=_s("event"), host=_s(host), event=_s(event_name), seq=_n(time.time_ns()), status=_s(status))
        if start is not None:
            update.set("start_time = :start", start=_s(start))
        if end is not None:
            update.set("end_time = :end", end=_s(end))
        # A repeated event without scripts keeps the scripts already recorded.
        update.set("scripts = :scripts" if scripts is not None else "scripts = if_not_exists(scripts, :scripts)",
                   scripts=_j(scripts if scripts is not None else []))
        if message is not None:
            update.set("message = :message", message=_s(message))
        self._call("update_item", Key={"pk": _s(f"DEP#{deployment_id}"), "sk": _s(f"EVENT#{host}#{event_name}")},
                   **update.kwargs())

    def set_extra(self, deployment_id: str, key: str, value: Any) -> None:
        check_deployment_id(deployment_id)
        check_name(key, "extra key")
        try:
            encoded = json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise InvalidRecord(f"extra[{key}]: expected plain JSON data: {exc}") from None
        try:
            self._call("update_item", Key=_dep_key(deployment_id), UpdateExpression="SET extra.#key = :value",
                       ConditionExpression="attribute_exists(pk)", ExpressionAttributeNames={"#key": key},
                       ExpressionAttributeValues={":value": _s(encoded)})
        except Exception as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                raise RecordNotFound(f"deployment_id: no deployment {deployment_id} in table {self.table}") from None
            raise

    def list(self, application, deployment_group=None, status=None, limit=50, include_hosts=False) -> list:
        self._check_list_args(application, deployment_group, status, limit)
        if deployment_group is not None:
            index, key, value = GSI_GROUP, "gsi1pk", f"GRP#{application}#{deployment_group}"
        else:
            index, key, value = GSI_APPLICATION, "gsi2pk", f"APP#{application}"
        kwargs = {"IndexName": index, "KeyConditionExpression": f"{key} = :p", "ScanIndexForward": False,
                  "ExpressionAttributeValues": {":p": _s(value)}}
        if status is not None:
            kwargs["FilterExpression"] = "#status = :status"
            kwargs["ExpressionAttributeNames"] = {"#status": "status"}
            kwargs["ExpressionAttributeValues"][":status"] = _s(status)
        records, start = [], None
        while len(records) < limit:
            page_kwargs = dict(kwargs, Limit=max(limit - len(records), 10) if status is None else 100)
            if start:
                page_kwargs["ExclusiveStartKey"] = start
            page = self._call("query", **page_kwargs)
            records.extend(self._record_from_item(i) for i in page.get("Items", []))
            start = page.get("LastEvaluatedKey")
            if not start:
                break
        records = records[:limit]
        if include_hosts:
            records = [self.get(r.deployment_id) for r in records]
        return records

    # control requests ----------------------------------------------------------------------
    @staticmethod
    def _request_key(deployment_id: str, request_id: str) -> dict:
        return {"pk": _s(f"DEP#{deployment_id}"), "sk": _s(f"REQUEST#{request_id}")}

    @staticmethod
    def _request_from_item(item: dict) -> ControlRequest:
        return ControlRequest(
            request_id=_get(item, "request_id"), action=_get(item, "action"), options=_getj(item, "options", {}),
            state=_get(item, "state"), requested_by=_get(item, "requested_by"), requested_at=_get(item, "requested_at"),
            acknowledged_at=_get(item, "acknowledged_at"), ended_at=_get(item, "ended_at"),
            handled_by=_get(item, "handled_by"), message=_get(item, "message"))

    def add_request(self, deployment_id: str, request: ControlRequest) -> ControlRequest:
        check_deployment_id(deployment_id)
        request.prepare_for_add()
        self._require(deployment_id)
        item = {**self._request_key(deployment_id, request.request_id), "kind": _s("request"),
                "request_id": _s(request.request_id), "action": _s(request.action), "options": _j(request.options),
                "state": _s(request.state), "requested_by": _s(request.requested_by),
                "requested_at": _s(request.requested_at)}
        self._call("put_item", Item=item, ConditionExpression="attribute_not_exists(pk)")
        return request

    def list_requests(self, deployment_id: str) -> list:
        check_deployment_id(deployment_id)
        items = self._query_all(KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
                                ExpressionAttributeValues={":pk": _s(f"DEP#{deployment_id}"), ":prefix": _s("REQUEST#")},
                                ConsistentRead=True)
        return [self._request_from_item(i) for i in sorted(items, key=lambda i: _get(i, "sk"))]

    def update_request(self, deployment_id, request_id, state, expected, message=None, handled_by=None) -> ControlRequest:
        check_deployment_id(deployment_id)
        expected, message = self._check_request_update(request_id, state, expected, message)
        now = now_iso()
        update = _Update("#state = :state", state=_s(state), **{f"e{i}": _s(e) for i, e in enumerate(expected)})
        if state != "Pending":
            update.set("acknowledged_at = if_not_exists(acknowledged_at, :now)", now=_s(now))
        if state in ("Done", "Refused"):
            update.set("ended_at = :now", now=_s(now))
        if message is not None:
            update.set("message = :message", message=_s(message))
        if handled_by is not None:
            update.set("handled_by = :by", by=_s(str(handled_by)))
        try:
            result = self._call(
                "update_item", Key=self._request_key(deployment_id, request_id),
                ConditionExpression=f"attribute_exists(pk) AND #state IN ({', '.join(f':e{i}' for i in range(len(expected)))})",
                ReturnValues="ALL_NEW", **update.kwargs())
        except Exception as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
            item = self._call("get_item", Key=self._request_key(deployment_id, request_id), ConsistentRead=True).get("Item")
            if not item:
                raise RecordNotFound(f"request_id: deployment {deployment_id} has no request {request_id}") from None
            current = self._request_from_item(item)
            raise RequestConflict(f"request {request_id} of {deployment_id} is {current.state}, not "
                                  f"{' or '.join(expected)}: another process handled it", current) from None
        return self._request_from_item(result["Attributes"])

    # lock ----------------------------------------------------------------------------------
    def _lock_item(self, application: str, group: str) -> Optional[dict]:
        return self._call("get_item", Key=_lock_key(application, group), ConsistentRead=True).get("Item")

    def _info(self, item: dict) -> LockInfo:
        """Staleness on the store's clock: ``expires_epoch`` (written by the holder, store time) vs store time now."""
        ttl = float(_get(item, "ttl"))
        epoch, now = self._store_now()
        expires = _get(item, "expires_epoch")
        heartbeat_at = _get(item, "heartbeat_at")
        if expires is not None:
            heartbeat_at = format_time(_dt.datetime.fromtimestamp(float(expires) - ttl, tz=_dt.timezone.utc))
        info = lock_info(_get(item, "application"), _get(item, "deployment_group"), _get(item, "deployment_id"),
                         _get(item, "owner"), _get(item, "acquired_at"), heartbeat_at, ttl, now=now)
        if expires is not None:
            info.stale = float(expires) < epoch
        return info

    def _lock_attributes(self, lock: Lock, epoch: float) -> dict:
        return {
            **_lock_key(lock.application, lock.deployment_group), "kind": _s("lock"),
            "application": _s(lock.application), "deployment_group": _s(lock.deployment_group),
            "deployment_id": _s(lock.deployment_id), "owner": _s(lock.owner), "token": _s(lock.token),
            "ttl": _n(float(lock.ttl)), "acquired_at": _s(lock.acquired_at), "heartbeat_at": _s(lock.heartbeat_at),
            "expires_epoch": _n(epoch + float(lock.ttl)),
        }

    def _new_lock(self, application: str, group: str, deployment_id: str, owner: str, ttl: float) -> tuple:
        epoch, now = self._store_now()
        stamp = format_time(now)
        lock = Lock(application, group, deployment_id, owner, new_token(), float(ttl), stamp, stamp)
        return lock, self._lock_attributes(lock, epoch)

    def _swap(self, item: dict, current: dict) -> bool:
        """Replace ``current`` by ``item`` only if its token is unchanged and it is expired on the store's
        clock (``live`` takeovers pass an expiry condition that always holds). False when it changed."""
        try:
            self._call("put_item", Item=item, ConditionExpression="#token = :old AND expires_epoch < :now",
                       ExpressionAttributeNames={"#token": "token"},
                       ExpressionAttributeValues={":old": current["token"], ":now": _n(self.store_time())})
            return True
        except Exception as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
        return False

    def acquire_lock(self, application, deployment_group, deployment_id, owner=None, ttl=DEFAULT_LOCK_TTL, force=False) -> Lock:
        self._check_lock_args(application, deployment_group, deployment_id, ttl)
        owner = self.lock_owner(owner)
        for _attempt in range(5):
            lock, item = self._new_lock(application, deployment_group, deployment_id, owner, ttl)
            try:
                self._call("put_item", Item=item, ConditionExpression="attribute_not_exists(pk)")
            except Exception as exc:
                if _code(exc) != "ConditionalCheckFailedException":
                    raise
            else:
                self._prove_lock_access(lock)
                return lock
            current = self._lock_item(application, deployment_group)
            if current is None:
                continue  # released between our put and our read: try again
            info = self._info(current)
            if not (info.stale and force):
                raise lock_held_error(info)
            # take over the stale lock, only if nobody renewed or took it meanwhile
            if self._swap(item, current):
                return lock
        current = self._lock_item(application, deployment_group)
        if current is not None:
            raise lock_held_error(self._info(current))
        raise LockLost(f"lock of deployment group {application}/{deployment_group}: too much contention, try again")

    def _prove_lock_access(self, lock: Lock) -> None:
        """Prove, while the deployment has changed nothing yet, the two calls its end needs: reading the
        group's records (GetItem) and releasing the lock (DeleteItem). Without this a policy missing
        either fails the deployment after its work (a Lambda alias already shifted). The delete's
        condition never holds (no lock has the token "(none)"), so AWS checks the permission and deletes
        nothing. A refusal releases the lock when it can, and names the action."""
        key = _lock_key(lock.application, lock.deployment_group)
        try:
            self._call("get_item", Key=key, ConsistentRead=True)
            try:
                self._call("delete_item", Key=key, ConditionExpression="#token = :none",
                           ExpressionAttributeNames={"#token": "token"}, ExpressionAttributeValues={":none": _s("(none)")})
            except Exception as exc:
                if _code(exc) != "ConditionalCheckFailedException":
                    raise
        except Exception as exc:
            try:
                self.release_lock(lock)
                held = "the lock was released"
            except Exception:  # pylint: disable=broad-except  # the same refusal, said below
                held = ("the group's lock stays held until it is released with the full policy "
                        "(the recover playbook) or its ttl passes")
            raise LockLost(f"lock of deployment group {lock.application}/{lock.deployment_group}: the records table "
                           f"refuses a call the deployment needs, before anything changed ({held}): {exc}") from exc

    def take_over(self, application, deployment_group, deployment_id, owner=None, ttl=DEFAULT_LOCK_TTL, live=False,
                  token=None, acquired_at=None) -> Lock:
        self._check_lock_args(application, deployment_group, deployment_id, ttl)
        owner = self.lock_owner(owner)
        current = self._lock_item(application, deployment_group)
        if current is None:
            raise RecordNotFound(f"deployment group {application}/{deployment_group} is not locked")
        if token and _get(current, "token") != token:
            raise LockLost(f"lock of deployment group {application}/{deployment_group} no longer has the expected "
                           f"token: held by deployment {_get(current, 'deployment_id')} ({_get(current, 'owner')})")
        info = self._info(current)
        if info.deployment_id != deployment_id or not (info.stale or live) or \
                (acquired_at and _get(current, "acquired_at") != acquired_at):
            raise lock_held_error(info)
        lock, item = self._new_lock(application, deployment_group, deployment_id, owner, ttl)
        if live:
            condition = {"ConditionExpression": "#token = :old", "ExpressionAttributeNames": {"#token": "token"},
                         "ExpressionAttributeValues": {":old": current["token"]}}
            try:
                self._call("put_item", Item=item, **condition)
                return lock
            except Exception as exc:
                if _code(exc) != "ConditionalCheckFailedException":
                    raise
        elif self._swap(item, current):
            return lock
        now = self._lock_item(application, deployment_group)
        if now is None:
            raise RecordNotFound(f"deployment group {application}/{deployment_group} is not locked (released meanwhile)")
        raise lock_held_error(self._info(now))

    def _holder(self, application: str, group: str) -> str:
        item = self._lock_item(application, group)
        return "nobody" if item is None else f"deployment {_get(item, 'deployment_id')} ({_get(item, 'owner')})"

    def heartbeat(self, lock) -> Lock:
        application, group, deployment_id, token = token_ref(lock, "renewing")
        epoch, now_dt = self._store_now()
        now = format_time(now_dt)
        try:
            result = self._call(
                "update_item", Key=_lock_key(application, group),
                UpdateExpression="SET heartbeat_at = :now, expires_epoch = #ttl + :epoch",
                ConditionExpression="deployment_id = :id AND #token = :token",
                ExpressionAttributeNames={"#ttl": "ttl", "#token": "token"},
                ExpressionAttributeValues={":id": _s(deployment_id), ":now": _s(now), ":epoch": _n(epoch),
                                           ":token": _s(token)},
                ReturnValues="ALL_NEW",
            )
        except Exception as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
            raise LockLost(
                f"lock of deployment group {application}/{group} is no longer held by {deployment_id}: "
                f"now held by {self._holder(application, group)}"
            ) from None
        item = result["Attributes"]
        renewed = Lock(application, group, deployment_id, _get(item, "owner"), _get(item, "token"),
                       float(_get(item, "ttl")), _get(item, "acquired_at"), now)
        if isinstance(lock, Lock):
            lock.heartbeat_at = now
        return renewed

    def release_lock(self, lock_or_ids) -> bool:
        application, group, deployment_id, token = token_ref(lock_or_ids, "releasing")
        try:
            self._call("delete_item", Key=_lock_key(application, group),
                       ConditionExpression="deployment_id = :id AND #token = :token",
                       ExpressionAttributeValues={":id": _s(deployment_id), ":token": _s(token)},
                       ExpressionAttributeNames={"#token": "token"})
            return True
        except Exception as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
        item = self._lock_item(application, group)
        if item is None:
            return False
        taken = " with another token (taken over)" if _get(item, "deployment_id") == deployment_id else ""
        raise LockLost(
            f"lock of deployment group {application}/{group} is held by deployment {_get(item, 'deployment_id')} "
            f"({_get(item, 'owner')}){taken}, not by this holder of {deployment_id}: not released"
        )

    def get_lock(self, application, deployment_group) -> Optional[LockInfo]:
        check_name(application, "application")
        check_name(deployment_group, "deployment_group")
        item = self._lock_item(application, deployment_group)
        return None if item is None else self._info(item)


def client_from_options(options: dict, client_factory: Optional[Callable] = None):
    """A DynamoDB client: from ``client_factory('dynamodb')`` or boto3 with region/endpoint_url options."""
    if client_factory is not None:
        return client_factory("dynamodb")
    from ansible_collections.rollwright.deploy.plugins.module_utils.aws.client import aws_client_factory

    return aws_client_factory({k: options[k] for k in ("region", "endpoint_url", "profile") if options.get(k)}).client("dynamodb")
