"""A local HTTP server that speaks enough of the Kubernetes REST API for the runbook procedures.

The official ``kubernetes`` client reaches it through an ordinary kubeconfig, unmodified, so the
bot's Kubernetes adapter runs against real wire formats: real URL paths, real JSON shapes, real
``Status`` errors, ``resourceVersion`` optimistic locking, merge / strategic-merge / JSON patch,
the ``scale`` subresource, ``pods/log``, ``dryRun=All`` and the metrics API.

A small controller plays the part of the Deployment and ReplicaSet controllers (new ReplicaSet
per pod template, pods per replica, deployment status), so rollouts, restarts and scaling have
visible effects. It is used by the test-suite and by ``aia-bot console --sandbox``.

Only the standard library (and PyYAML for the kubeconfig) is used, so the sandbox starts anywhere.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import random
import re
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from sandbox.kube_exec import ExecRefused, PodExec, exec_target, plan_exec, serve_exec

Obj = dict[str, Any]
# FakeKubeAPIServer has a method named "list", which hides the builtin in its annotations.
ObjList = list[Obj]

__all__ = ["FakeKubeAPIServer", "RecordedRequest"]

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
POD_TEMPLATE_HASH = "pod-template-hash"
SERVER_VERSION = {
    "major": "1",
    "minor": "30",
    "gitVersion": "v1.30.5-sandbox",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-09-11T00:00:00Z",
    "goVersion": "go1.22.6",
    "compiler": "gc",
    "platform": "linux/amd64",
}

# Label keys and values the API server accepts; anything else is a 400 for a selector.
_LABEL_KEY = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_LABEL_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_RFC3339_PREFIX = re.compile(
    r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})(\s|$)"
)
# Pod-name suffixes use consonants only, as Kubernetes does, so no accidental words appear.
_NAME_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz"


# --------------------------------------------------------------------------------------------
# Resource table
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Resource:
    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    # Virtual resources are computed from other state (metrics, endpoints) and are read-only.
    virtual: bool = False
    # With a status subresource, writes to the main resource leave .status untouched.
    has_status: bool = False
    # Custom resources do not support strategic merge patch: the real server answers 415.
    custom: bool = False
    # Pods, services and namespaces answer DELETE with the object; the rest with a Status.
    returns_deleted: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``deployments.apps`` as the real server names a resource in error messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def verbs(self) -> list[str]:
        if self.virtual:
            return ["get", "list"]
        return ["create", "delete", "deletecollection", "get", "list", "patch", "update"]


_RESOURCES: tuple[_Resource, ...] = (
    _Resource("", "v1", "namespaces", "namespace", "Namespace", False, ("ns",),
              ("status", "finalize"), has_status=True, returns_deleted=True),
    _Resource("", "v1", "nodes", "node", "Node", False, ("no",), ("status",), has_status=True),
    _Resource("", "v1", "pods", "pod", "Pod", True, ("po",), ("log", "status", "exec"),
              has_status=True, returns_deleted=True),
    _Resource("", "v1", "events", "event", "Event", True, ("ev",)),
    _Resource("", "v1", "services", "service", "Service", True, ("svc",), ("proxy", "status"),
              has_status=True, returns_deleted=True),
    _Resource("", "v1", "configmaps", "configmap", "ConfigMap", True, ("cm",)),
    _Resource("", "v1", "secrets", "secret", "Secret", True),
    _Resource("", "v1", "resourcequotas", "resourcequota", "ResourceQuota", True, ("quota",),
              ("status",), has_status=True),
    _Resource("", "v1", "serviceaccounts", "serviceaccount", "ServiceAccount", True, ("sa",)),
    _Resource("", "v1", "endpoints", "endpoints", "Endpoints", True, ("ep",), virtual=True),
    _Resource("apps", "v1", "deployments", "deployment", "Deployment", True, ("deploy",),
              ("scale", "status"), has_status=True),
    _Resource("apps", "v1", "replicasets", "replicaset", "ReplicaSet", True, ("rs",),
              ("scale", "status"), has_status=True),
    _Resource("rbac.authorization.k8s.io", "v1", "roles", "role", "Role", True),
    _Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "rolebinding", "RoleBinding",
              True),
    # What a configuration backup re-applies besides the workloads (and `/aia dr` recreates).
    _Resource("autoscaling", "v2", "horizontalpodautoscalers", "horizontalpodautoscaler",
              "HorizontalPodAutoscaler", True, ("hpa",), ("status",), has_status=True),
    _Resource("policy", "v1", "poddisruptionbudgets", "poddisruptionbudget", "PodDisruptionBudget", True,
              ("pdb",), ("status",), has_status=True),
    _Resource("networking.k8s.io", "v1", "networkpolicies", "networkpolicy", "NetworkPolicy", True,
              ("netpol",)),
    _Resource("networking.k8s.io", "v1", "ingresses", "ingress", "Ingress", True, ("ing",),
              ("status",), has_status=True),
    _Resource("metrics.k8s.io", "v1beta1", "pods", "", "PodMetrics", True, virtual=True),
    _Resource("metrics.k8s.io", "v1beta1", "nodes", "", "NodeMetrics", False, virtual=True),
    _Resource("external-secrets.io", "v1", "externalsecrets", "externalsecret",
              "ExternalSecret", True, ("es",), ("status",), has_status=True, custom=True),
    _Resource("external-secrets.io", "v1", "secretstores", "secretstore", "SecretStore",
              True, ("ss",), ("status",), has_status=True, custom=True),
)
_BY_PATH: dict[tuple[str, str, str], _Resource] = {
    (r.group, r.version, r.plural): r for r in _RESOURCES
}
_BY_NAME: dict[str, _Resource] = {}
for _r in _RESOURCES:
    # Core kinds win a clash ("pods" means core pods, not pod metrics) as in kubectl.
    for _alias in (_r.kind, _r.plural, _r.singular, *_r.short_names):
        if _alias:
            _BY_NAME.setdefault(_alias.lower(), _r)
_GROUP_VERSIONS: dict[str, list[str]] = {}
for _r in _RESOURCES:
    versions = _GROUP_VERSIONS.setdefault(_r.group, [])
    if _r.version not in versions:
        versions.append(_r.version)

# Fields each kind accepts in a fieldSelector, as the real server does (others are a 400).
_FIELD_LABELS: dict[str, set[str]] = {
    "Pod": {"spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
            "spec.serviceAccountName", "spec.hostNetwork", "status.phase", "status.podIP",
            "status.nominatedNodeName"},
    "Event": {"involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
              "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
              "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"},
    "Secret": {"type"},
    "Node": {"spec.unschedulable"},
    "Namespace": {"status.phase"},
    "ReplicaSet": {"status.replicas"},
}

# Strategic-merge list fields and the key their items are merged by (Kubernetes' patchMergeKey).
# "ports" is None because container ports merge by containerPort and service ports by port.
_MERGE_KEYS: dict[str, str | None] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "ports": None,
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "conditions": "type",
    "ownerReferences": "uid",
    "hostAliases": "ip",
}


def _resource_for(kind: str) -> _Resource:
    res = _BY_NAME.get(kind.lower())
    if res is None:
        raise ValueError(f"unknown kind {kind!r}; known: {sorted({r.kind for r in _RESOURCES})}")
    return res


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
_INJECTED_MESSAGES = {
    403: 'forbidden: User "system:serviceaccount:aia-production:aia-runbook-bot" cannot perform '
         "this request",
    409: "Operation cannot be fulfilled: the object has been modified; please apply your changes "
         "to the latest version and try again",
    429: "the server has received too many requests and has asked us to try again later",
    500: "Internal error occurred: sandbox injected failure",
    503: "the server is currently unable to handle the request",
    504: "Timeout: request did not complete within requested timeout - context deadline exceeded",
}


class ApiError(Exception):
    """An error the server answers as a ``Status`` object, exactly like the real API server."""

    def __init__(
        self, code: int, message: str, reason: str | None = None, details: Obj | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or _REASONS.get(code, "Unknown")
        self.details = details
        self.retry_after: int | None = None

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(res: _Resource, name: str, **extra: Any) -> Obj:
    details: Obj = {"name": name}
    if res.group:
        details["group"] = res.group
    details["kind"] = res.plural
    details.update(extra)
    return details


def _not_found(res: _Resource, name: str) -> ApiError:
    return ApiError(404, f'{res.qualified} "{name}" not found', details=_details(res, name))


def _invalid(res: _Resource, name: str, field: str, detail: str) -> ApiError:
    cause = {"reason": "FieldValueInvalid", "message": detail, "field": field}
    return ApiError(
        422,
        f'{res.qualified_kind} "{name}" is invalid: {field}: {detail}',
        details={**_details(res, name), "kind": res.kind, "causes": [cause]},
    )


def _conflict(res: _Resource, name: str) -> ApiError:
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {res.qualified} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        details=_details(res, name),
    )


# --------------------------------------------------------------------------------------------
# Selectors
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        # "!=" and "notin" match objects without the label, as in Kubernetes.
        return not present or value not in self.values


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside ``in (a,b)`` parentheses."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


_SET_TERM = re.compile(rf"^({_LABEL_KEY})\s+(in|notin)\s+\(([^()]*)\)$")
_EQ_TERM = re.compile(rf"^({_LABEL_KEY})\s*(==|=|!=)\s*({_LABEL_VALUE})$")
_EXISTS_TERM = re.compile(rf"^(!?)\s*({_LABEL_KEY})$")


def parse_label_selector(text: str) -> list[_Requirement]:
    """Parse the label selector grammar of the API server; raises ``ApiError`` (400) on junk."""
    requirements = []
    for term in _split_top_level(text):
        if match := _SET_TERM.match(term):
            values = tuple(v.strip() for v in match.group(3).split(",") if v.strip())
            if not values or not all(re.fullmatch(_LABEL_VALUE, v) for v in values):
                raise ApiError(400, f"unable to parse requirement: invalid values in {term!r}")
            requirements.append(_Requirement(match.group(1), match.group(2), values))
        elif match := _EQ_TERM.match(term):
            op = "!=" if match.group(2) == "!=" else "="
            requirements.append(_Requirement(match.group(1), op, (match.group(3),)))
        elif match := _EXISTS_TERM.match(term):
            op = "!exists" if match.group(1) else "exists"
            requirements.append(_Requirement(match.group(2), op))
        else:
            raise ApiError(400, f"unable to parse requirement: found {term!r}, expected a selector")
    return requirements


def _labels_match(requirements: list[_Requirement], labels: dict[str, str] | None) -> bool:
    return all(req.matches(labels or {}) for req in requirements)


def _selector_matches(selector: dict[str, str] | None, labels: dict[str, str] | None) -> bool:
    """A Service-style equality selector; an empty selector matches nothing (as for Services)."""
    if not selector:
        return False
    labels = labels or {}
    return all(labels.get(k) == v for k, v in selector.items())


def _label_selector_matches(selector: Obj | None, labels: dict[str, str] | None) -> bool:
    """A ``metav1.LabelSelector`` (matchLabels + matchExpressions)."""
    if not selector:
        return False
    labels = labels or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}
    for expr in selector.get("matchExpressions") or []:
        req = _Requirement(expr["key"], ops[expr["operator"]], tuple(expr.get("values") or ()))
        if not req.matches(labels):
            return False
    return True


def parse_field_selector(text: str, kind: str) -> list[tuple[str, str, str]]:
    terms = []
    allowed = {"metadata.name", "metadata.namespace"} | _FIELD_LABELS.get(kind, set())
    for term in _split_top_level(text):
        match = re.match(r"^([A-Za-z.]+)\s*(==|=|!=)\s*(.*)$", term)
        if not match:
            raise ApiError(400, f"invalid selector: '{text}'; can't understand '{term}'")
        field, op, value = match.group(1), match.group(2), match.group(3).strip()
        if field not in allowed:
            raise ApiError(400, f'field label not supported: {field}')
        terms.append((field, "!=" if op == "!=" else "=", value))
    return terms


def _field_value(obj: Obj, field: str) -> str:
    if field == "source":  # events expose source.component under the short name "source"
        return str((obj.get("source") or {}).get("component", ""))
    node: Any = obj
    for part in field.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


def _fields_match(terms: list[tuple[str, str, str]], obj: Obj) -> bool:
    for field, op, value in terms:
        equal = _field_value(obj, field) == value
        if equal != (op == "="):
            return False
    return True


# --------------------------------------------------------------------------------------------
# Patches
# --------------------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: maps merge, ``null`` deletes, lists replace."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Kubernetes strategic merge patch for the fields the procedures touch.

    Maps merge recursively and ``null`` deletes, like a merge patch; the list fields of
    ``_MERGE_KEYS`` (containers, env, ports, ...) merge item by item on their key, so patching
    one container's image keeps the others. Directives (``$setElementOrder`` etc.) are ignored,
    except ``$patch: replace`` on a map and ``$patch: delete`` on a list item.
    """
    if not isinstance(patch, dict):
        return _strip_directives(copy.deepcopy(patch))
    if patch.get("$patch") == "replace":
        return _strip_directives(copy.deepcopy(patch))
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and key in _MERGE_KEYS and isinstance(result.get(key), list):
            result[key] = _merge_list(result[key], value, _MERGE_KEYS[key])
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    return result


def _merge_list(current: list[Any], patch: list[Any], key: str | None) -> list[Any]:
    if key is None:
        items = [i for i in [*current, *patch] if isinstance(i, dict)]
        key = "containerPort" if any("containerPort" in i for i in items) else "port"
    result = copy.deepcopy(current)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            result.append(_strip_directives(copy.deepcopy(item)))
            continue
        index = next(
            (i for i, old in enumerate(result) if isinstance(old, dict) and old.get(key) == item[key]),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(_strip_directives(copy.deepcopy(item)))
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return result


class _JsonPatchError(Exception):
    pass


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise _JsonPatchError(f"invalid JSON pointer {path!r}")
    if path == "":
        return []
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str]) -> Any:
    node = doc
    for part in parts:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise _JsonPatchError(f"doc is missing path: /{'/'.join(parts)}: missing value")
    return node


def _pointer_set(doc: Any, parts: list[str], value: Any, *, insert: bool) -> Any:
    if not parts:
        return value
    parent, last = _walk(doc, parts[:-1]), parts[-1]
    if isinstance(parent, dict):
        if not insert and last not in parent:
            raise _JsonPatchError(f"doc is missing key: /{'/'.join(parts)}: missing value")
        parent[last] = value
    elif isinstance(parent, list):
        if insert and last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent) - (0 if insert else 1):
            if insert:
                parent.insert(int(last), value)
            else:
                parent[int(last)] = value
        else:
            raise _JsonPatchError(f"index {last!r} out of range for /{'/'.join(parts)}")
    else:
        raise _JsonPatchError(f"cannot set /{'/'.join(parts)}: parent is not a container")
    return doc


def _pointer_remove(doc: Any, parts: list[str]) -> Any:
    if not parts:
        raise _JsonPatchError("cannot remove the whole document")
    parent, last = _walk(doc, parts[:-1]), parts[-1]
    value = _walk(parent, [last])
    if isinstance(parent, dict):
        del parent[last]
    else:
        del parent[int(last)]
    return value


def json_patch(doc: Any, operations: Any) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test)."""
    if not isinstance(operations, list):
        raise ApiError(400, "json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(doc)
    for op in operations:
        if not isinstance(op, dict):
            raise ApiError(400, "json patch operations must be objects")
        kind, parts = op.get("op"), _pointer(op.get("path"))
        if kind == "add":
            doc = _pointer_set(doc, parts, copy.deepcopy(op.get("value")), insert=True)
        elif kind == "replace":
            doc = _pointer_set(doc, parts, copy.deepcopy(op.get("value")), insert=False)
        elif kind == "remove":
            _pointer_remove(doc, parts)
        elif kind in ("move", "copy"):
            source = _pointer(op.get("from"))
            value = (
                _pointer_remove(doc, source) if kind == "move"
                else copy.deepcopy(_walk(doc, source))
            )
            doc = _pointer_set(doc, parts, value, insert=True)
        elif kind == "test":
            if _walk(doc, parts) != op.get("value"):
                raise _JsonPatchError(f"testing value {op.get('path')} failed: test failed")
        else:
            raise ApiError(400, f"Unexpected kind: {kind}")
    return doc


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def _timestamp(moment: datetime | None = None) -> str:
    return (moment or _now()).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_rfc3339(text: str) -> datetime | None:
    match = _RFC3339_PREFIX.match(text)
    if not match:
        return None
    fraction = (match.group(2) or "")[:7]  # datetime accepts at most microseconds
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    try:
        return datetime.fromisoformat(match.group(1) + fraction + zone)
    except ValueError:
        return None


def _meta(obj: Obj) -> Obj:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = obj["metadata"] = {}
    return meta


def _is_ready(pod: Obj) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _is_active(pod: Obj) -> bool:
    """Counts toward a ReplicaSet: not finished and not being deleted (as the RS controller)."""
    phase = (pod.get("status") or {}).get("phase")
    return phase not in ("Failed", "Succeeded") and not _meta(pod).get("deletionTimestamp")


def _owned_by(obj: Obj, uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in _meta(obj).get("ownerReferences") or [])


def _revision(obj: Obj) -> int:
    try:
        return int((_meta(obj).get("annotations") or {}).get(REVISION_ANNOTATION, "0"))
    except ValueError:
        return 0


def _without_hash(template: Obj) -> Obj:
    """A ReplicaSet's pod template as the Deployment wrote it (without pod-template-hash)."""
    template = copy.deepcopy(template or {})
    labels = (template.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(POD_TEMPLATE_HASH, None)
    return template


def _pruned(value: Any) -> Any:
    """Drop nulls and empty maps/lists, which clients may or may not send (Go's omitempty)."""
    if isinstance(value, dict):
        pruned = {k: _pruned(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


def _same_template(left: Obj, right: Obj) -> bool:
    """Kubernetes' EqualIgnoreHash: pod templates compared without pod-template-hash."""
    return _pruned(_without_hash(left)) == _pruned(_without_hash(right))


def _template_hash(template: Obj) -> str:
    canonical = json.dumps(_pruned(template or {}), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def _int_or_percent(value: Any, total: int, *, round_up: bool) -> int:
    if isinstance(value, int):
        return value
    text = str(value or "25%")
    if text.endswith("%"):
        exact = total * int(text[:-1]) / 100
        return int(-(-exact // 1)) if round_up else int(exact)
    return int(text)


def _check_string_map(value: Any, field: str) -> None:
    """The real server decodes these into map[string]string; anything else is a 400."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise ApiError(400, f"json: cannot unmarshal into Go struct field {field} of type map")
    for key, item in value.items():
        if not isinstance(item, str):
            raise ApiError(
                400,
                f"json: cannot unmarshal {type(item).__name__} into Go struct field "
                f"{field}.{key} of type string",
            )


class RecordedRequest(NamedTuple):
    """One request as the server saw it, for assertions (a tuple, so it also unpacks)."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    content_type: str


@dataclass
class _Failure:
    status: int
    remaining: int
    path_contains: str
    method: str
    retry_after: int | None


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # Many clients connect at once while a delay is set; a short backlog would drop SYNs.
    request_queue_size = 256
    api: FakeKubeAPIServer


class _Handler(BaseHTTPRequestHandler):
    # Keep-alive, like the real server: the client's connection pool reuses connections.
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, each keep-alive request would
    # wait ~40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True
    server_version = "kube-apiserver-sandbox"
    timeout = 120
    server: _HTTPServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.api._serve(self, "GET")

    def do_POST(self) -> None:  # noqa: N802
        self.server.api._serve(self, "POST")

    def do_PUT(self) -> None:  # noqa: N802
        self.server.api._serve(self, "PUT")

    def do_PATCH(self) -> None:  # noqa: N802
        self.server.api._serve(self, "PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self.server.api._serve(self, "DELETE")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (base signature)
        # Access logs would flood the console sandbox and test output; requests are recorded.
        pass


@dataclass(frozen=True)
class _WatchStream:
    """Returned by the dispatcher for ``?watch=true``; the serving loop streams the events."""

    res: _Resource
    namespace: str | None


class _Response(NamedTuple):
    status: int
    body: Any  # a dict/list is sent as JSON, a str as text/plain
    headers: dict[str, str] = {}


class FakeKubeAPIServer:
    """An in-memory Kubernetes API server on a local port, for tests and the console sandbox."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str = "sandbox-token",  # noqa: S107 - a local sandbox's well-known bearer token
    ) -> None:
        self.host = host
        self.port = port
        self.token = token
        self.url = ""
        self.delay_seconds = 0.0
        self.auto_reconcile = True
        # Pods the controller creates from now on start Ready; False simulates a stuck rollout.
        self.new_pods_ready = True
        self.requests: list[RecordedRequest] = []
        # (namespace, pod, container, previous) -> log text
        self.pod_logs: dict[tuple[str, str, str, bool], str] = {}
        self._pod_metrics: dict[tuple[str, str], dict[str, tuple[str, str]]] = {}
        self._node_metrics: dict[str, tuple[str, str]] = {}
        self._objects: dict[tuple[str, str, str], Obj] = {}
        self._failures: list[_Failure] = []
        self._lock = threading.RLock()
        self._rv = 1000
        self._ip_counter = 0
        self._rng = random.Random()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        # pods/exec over WebSocket (sandbox/kube_exec.py): probes, RBAC switch, sessions.
        self.pod_exec = PodExec()
        # RBAC (sandbox/kube_rbac.py): None lets the token do anything, as cluster-admin would.
        self.authorizer: Any = None
        # A fresh cluster has these namespaces; creating objects elsewhere needs the namespace.
        for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    def reset(self) -> None:
        """Forget every object, log, metric, recorded request and failure: a fresh cluster on the
        same address, so a running bot's kubeconfig stays valid between tests."""
        with self._lock:
            self.delay_seconds = 0.0
            self.auto_reconcile = True
            self.new_pods_ready = True
            self.requests.clear()
            self.pod_logs.clear()
            self._pod_metrics.clear()
            self._node_metrics.clear()
            self._objects.clear()
            self._failures.clear()
            self.pod_exec = PodExec()
            for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
                self.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> FakeKubeAPIServer:
        if self._httpd is not None:
            return self
        httpd = _HTTPServer((self.host, self.port), _Handler)
        httpd.api = self
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
            name="fake-kube-apiserver", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeKubeAPIServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def write_kubeconfig(self, path: str | Path, namespace: str = "aia-production") -> str:
        """Write a kubeconfig whose current context reaches this server; returns the path."""
        if not self.url:
            raise RuntimeError("start() the server before writing its kubeconfig")
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "clusters": [{"name": "aia-sandbox", "cluster": {"server": self.url}}],
            "users": [{"name": "aia-sandbox-user", "user": {"token": self.token}}],
            "contexts": [{
                "name": "aia-sandbox",
                "context": {
                    "cluster": "aia-sandbox", "user": "aia-sandbox-user", "namespace": namespace,
                },
            }],
            "current-context": "aia-sandbox",
        }
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(config, sort_keys=False))
        return str(target)

    # ---------------------------------------------------------------- test controls

    def fail_next(
        self,
        status: int,
        times: int = 1,
        path_contains: str = "",
        method: str = "",
        retry_after: int | None = None,
    ) -> None:
        """Answer the next ``times`` matching API requests with a ``Status`` error ``status``.

        ``retry_after`` adds a Retry-After header (the real server sends ``1`` with its 429s).
        Mind that urllib3 under the official client then retries GETs on 429/503 by itself, up
        to 3 times, so a caller only sees the error when ``times`` exceeds that.
        """
        with self._lock:
            self._failures.append(
                _Failure(status, times, path_contains, method.upper(), retry_after)
            )

    def count(self, method: str, path_contains: str) -> int:
        with self._lock:
            return sum(
                1 for r in self.requests
                if r.method == method.upper() and path_contains in r.path
            )

    def set_pod_log(
        self, namespace: str, pod: str, container: str, text: str, previous: bool = False
    ) -> None:
        with self._lock:
            self.pod_logs[(namespace, pod, container, previous)] = text

    def set_pod_metrics(
        self, namespace: str, pod: str, containers: dict[str, tuple[str, str]]
    ) -> None:
        """``containers`` maps a container name to its (cpu, memory) usage, e.g. ("250m", "300Mi")."""
        with self._lock:
            self._pod_metrics[(namespace, pod)] = dict(containers)

    def set_node_metrics(self, node: str, cpu: str, memory: str) -> None:
        with self._lock:
            self._node_metrics[node] = (cpu, memory)

    # ---------------------------------------------------------------- store (Python side)

    def put(self, obj: Obj) -> Obj:
        """Create or replace ``obj`` as-is (status included), bypassing validation and admission.

        This is how seed data gets in: unlike the HTTP API, status is kept and the namespace need
        not exist. The controller then runs, as it would after any write.
        """
        res = _resource_for(str(obj.get("kind", "")))
        obj = copy.deepcopy(obj)
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        meta = _meta(obj)
        if res.namespaced:
            meta.setdefault("namespace", "default")
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ValueError("put() needs metadata.name or metadata.generateName")
            meta["name"] = meta["generateName"] + self._suffix()
        with self._lock:
            old = self._objects.get(self._key(res, meta.get("namespace"), meta["name"]))
            self._apply_defaults(res, obj)
            given_created = meta.get("creationTimestamp")
            stored = self._store(res, obj, old)
            if given_created:
                # Seeds back-date objects (a pod that has crash-looped for hours is not 0s old).
                _meta(stored)["creationTimestamp"] = given_created
            if self.auto_reconcile:
                self.reconcile()
            return copy.deepcopy(stored)

    def get(self, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        res = _resource_for(kind)
        with self._lock:
            if res.virtual:
                found = [o for o in self._virtual_list(res, namespace) if _meta(o)["name"] == name]
                return found[0] if found else None
            obj = self._objects.get(self._key(res, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def list(
        self, kind: str, namespace: str | None = None, label_selector: str | None = None
    ) -> ObjList:
        res = _resource_for(kind)
        requirements = parse_label_selector(label_selector) if label_selector else []
        with self._lock:
            items = self._virtual_list(res, namespace) if res.virtual else [
                copy.deepcopy(o) for o in self._stored(res, namespace)
            ]
        return [o for o in items if _labels_match(requirements, _meta(o).get("labels"))]

    def delete(self, kind: str, name: str, namespace: str | None = None) -> bool:
        res = _resource_for(kind)
        with self._lock:
            obj = self._objects.get(self._key(res, namespace, name))
            if obj is None:
                return False
            self._remove(res, obj, cascade=True)
            if self.auto_reconcile:
                self.reconcile()
            return True

    # ---------------------------------------------------------------- storage internals

    @staticmethod
    def _key(res: _Resource, namespace: str | None, name: str) -> tuple[str, str, str]:
        return (res.kind, (namespace or "default") if res.namespaced else "", name)

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _suffix(self, length: int = 5) -> str:
        return "".join(self._rng.choice(_NAME_SUFFIX_ALPHABET) for _ in range(length))

    def _stored(self, res: _Resource, namespace: str | None = None) -> ObjList:
        """Stored objects of one kind, in the name order etcd lists them (no copies)."""
        items = [
            obj for (kind, ns, _), obj in self._objects.items()
            if kind == res.kind and (namespace is None or not res.namespaced or ns == namespace)
        ]
        return sorted(items, key=lambda o: (_meta(o).get("namespace", ""), _meta(o)["name"]))

    def _store(self, res: _Resource, obj: Obj, old: Obj | None) -> Obj:
        """Write ``obj`` over ``old`` (or create it): server-owned metadata and the counter."""
        meta = _meta(obj)
        if old is not None:
            old_meta = _meta(old)
            meta["uid"] = old_meta["uid"]
            meta["creationTimestamp"] = old_meta["creationTimestamp"]
            generation = old_meta.get("generation")
            if generation is not None:
                if _pruned(obj.get("spec")) != _pruned(old.get("spec")):
                    generation += 1
                meta["generation"] = generation
        else:
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", _timestamp())
            if "spec" in obj or res.kind in ("Deployment", "ReplicaSet"):
                meta["generation"] = 1
        meta["resourceVersion"] = self._next_rv()
        self._objects[self._key(res, meta.get("namespace"), meta["name"])] = obj
        return obj

    def _update_if_changed(self, res: _Resource, new: Obj) -> bool:
        """Controller writes: only bump resourceVersion when something really changed."""
        key = self._key(res, _meta(new).get("namespace"), _meta(new)["name"])
        old = self._objects.get(key)
        if old == new:
            return False
        self._store(res, new, old)
        return True

    def _remove(self, res: _Resource, obj: Obj, *, cascade: bool) -> None:
        meta = _meta(obj)
        self._objects.pop(self._key(res, meta.get("namespace"), meta["name"]), None)
        if res.kind == "Namespace":
            for key in [k for k in self._objects if k[1] == meta["name"]]:
                del self._objects[key]
            for log_key in [k for k in self.pod_logs if k[0] == meta["name"]]:
                del self.pod_logs[log_key]
        if res.kind == "Pod":
            for log_key in [k for k in self.pod_logs if k[:2] == (meta["namespace"], meta["name"])]:
                del self.pod_logs[log_key]
            self._pod_metrics.pop((meta["namespace"], meta["name"]), None)
        if cascade:
            # The garbage collector: dependents go with their owner (background propagation).
            uid = meta.get("uid")
            for (kind, _, _), dependent in list(self._objects.items()):
                if uid and _owned_by(dependent, uid):
                    self._remove(_resource_for(kind), dependent, cascade=True)

    def _apply_defaults(self, res: _Resource, obj: Obj) -> None:
        """The defaulting the real API server does, for the fields the bot reads back."""
        spec = obj.get("spec")
        if res.kind == "Namespace":
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj.setdefault("status", {"phase": "Active"})
            _meta(obj).setdefault("labels", {})["kubernetes.io/metadata.name"] = _meta(obj)["name"]
        elif res.kind == "Deployment" and isinstance(spec, dict):
            spec.setdefault("replicas", 1)
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
            spec.setdefault("strategy", {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            })
            self._default_pod_spec((spec.get("template") or {}).get("spec"))
        elif res.kind == "ReplicaSet" and isinstance(spec, dict):
            spec.setdefault("replicas", 1)
            self._default_pod_spec((spec.get("template") or {}).get("spec"))
        elif res.kind == "Pod":
            self._default_pod_spec(spec)
        elif res.kind == "Service" and isinstance(spec, dict):
            spec.setdefault("type", "ClusterIP")
            spec.setdefault("sessionAffinity", "None")
            if spec["type"] != "ExternalName":
                self._ip_counter += 1
                spec.setdefault("clusterIP", f"10.96.{self._ip_counter // 250}.{self._ip_counter % 250 + 2}")
                spec.setdefault("clusterIPs", [spec["clusterIP"]])
            for port in spec.get("ports") or []:
                port.setdefault("protocol", "TCP")
                port.setdefault("targetPort", port.get("port"))
        elif res.kind == "Secret":
            obj.setdefault("type", "Opaque")
            # stringData is write-only: the server folds it into data.
            for key, value in (obj.pop("stringData", None) or {}).items():
                obj.setdefault("data", {})[key] = base64.b64encode(str(value).encode()).decode()

    @staticmethod
    def _default_pod_spec(spec: Any) -> None:
        if not isinstance(spec, dict):
            return
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("dnsPolicy", "ClusterFirst")
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("securityContext", {})
        for container in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
            if not isinstance(container, dict):
                continue
            image = str(container.get("image", ""))
            latest = ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")
            container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
            container.setdefault("resources", {})
            for port in container.get("ports") or []:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")

    # ---------------------------------------------------------------- virtual resources

    def _virtual_list(self, res: _Resource, namespace: str | None) -> ObjList:
        if res.kind == "PodMetrics":
            return [self._pod_metrics_for(p) for p in self._stored(_BY_NAME["pod"], namespace)
                    if (p.get("status") or {}).get("phase") == "Running"]
        if res.kind == "NodeMetrics":
            return [self._node_metrics_for(n) for n in self._stored(_BY_NAME["node"])
                    if n["metadata"]["name"] in self._node_metrics or _node_ready(n)]
        if res.kind == "Endpoints":
            return [self._endpoints_for(s) for s in self._stored(_BY_NAME["service"], namespace)]
        raise AssertionError(res.kind)

    def _pod_metrics_for(self, pod: Obj) -> Obj:
        meta = _meta(pod)
        usage = self._pod_metrics.get((meta["namespace"], meta["name"]))
        containers = []
        for container in (pod.get("spec") or {}).get("containers") or []:
            # Like metrics-server, every running container has a reading; unset ones idle.
            cpu, memory = (usage or {}).get(container["name"], ("2m", "48Mi"))
            containers.append({"name": container["name"], "usage": {"cpu": cpu, "memory": memory}})
        return {
            "kind": "PodMetrics",
            "apiVersion": "metrics.k8s.io/v1beta1",
            "metadata": {
                "name": meta["name"], "namespace": meta["namespace"],
                "creationTimestamp": _timestamp(), "labels": dict(meta.get("labels") or {}),
            },
            "timestamp": _timestamp(_now() - timedelta(seconds=12)),
            "window": "15s",
            "containers": containers,
        }

    def _node_metrics_for(self, node: Obj) -> Obj:
        name = _meta(node)["name"]
        cpu, memory = self._node_metrics.get(name, ("150m", "1024Mi"))
        return {
            "kind": "NodeMetrics",
            "apiVersion": "metrics.k8s.io/v1beta1",
            "metadata": {
                "name": name, "creationTimestamp": _timestamp(),
                "labels": dict(_meta(node).get("labels") or {}),
            },
            "timestamp": _timestamp(_now() - timedelta(seconds=9)),
            "window": "20s",
            "usage": {"cpu": cpu, "memory": memory},
        }

    def _endpoints_for(self, service: Obj) -> Obj:
        meta = _meta(service)
        selector = (service.get("spec") or {}).get("selector")
        ready: ObjList = []
        not_ready: ObjList = []
        for pod in self._stored(_BY_NAME["pod"], meta["namespace"]):
            if not _is_active(pod) or not _selector_matches(selector, _meta(pod).get("labels")):
                continue
            address = {
                "ip": (pod.get("status") or {}).get("podIP", ""),
                "nodeName": (pod.get("spec") or {}).get("nodeName"),
                "targetRef": {"kind": "Pod", "namespace": meta["namespace"],
                              "name": _meta(pod)["name"], "uid": _meta(pod)["uid"]},
            }
            (ready if _is_ready(pod) else not_ready).append(address)
        ports = [
            {"name": p.get("name"), "port": p.get("targetPort", p.get("port")),
             "protocol": p.get("protocol", "TCP")}
            for p in (service.get("spec") or {}).get("ports") or []
        ]
        subset: Obj = {"ports": ports}
        if ready:
            subset["addresses"] = ready
        if not_ready:
            subset["notReadyAddresses"] = not_ready
        return {
            "kind": "Endpoints",
            "apiVersion": "v1",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                         "labels": dict(meta.get("labels") or {}),
                         "creationTimestamp": meta["creationTimestamp"]},
            "subsets": [subset] if ready or not_ready else [],
        }

    # ---------------------------------------------------------------- controller

    def reconcile(self) -> None:
        """Run the Deployment and ReplicaSet controllers until nothing changes."""
        with self._lock:
            for _ in range(10):
                if not self._reconcile_once():
                    return

    def _reconcile_once(self) -> bool:
        deploy_res, rs_res = _BY_NAME["deployment"], _BY_NAME["replicaset"]
        changed = False
        for deployment in self._stored(deploy_res):
            changed |= self._sync_deployment(deployment)
        for replicaset in self._stored(rs_res):
            changed |= self._sync_replicaset(replicaset)
        for deployment in self._stored(deploy_res):
            changed |= self._sync_deployment_status(deployment)
        return changed

    def _owned(self, kind: str, namespace: str, uid: str) -> ObjList:
        return [o for o in self._stored(_BY_NAME[kind], namespace) if _owned_by(o, uid)]

    def _current_rs(self, deployment: Obj, owned: ObjList) -> Obj | None:
        template = (deployment.get("spec") or {}).get("template") or {}
        for rs in owned:
            if _same_template((rs.get("spec") or {}).get("template") or {}, template):
                return rs
        return None

    def _sync_deployment(self, deployment: Obj) -> bool:
        rs_res = _BY_NAME["replicaset"]
        meta, spec = _meta(deployment), deployment.get("spec") or {}
        namespace = meta["namespace"]
        owned = self._owned("replicaset", namespace, meta["uid"])
        max_revision = max((_revision(rs) for rs in owned), default=0)
        desired = int(spec.get("replicas", 1))
        current = self._current_rs(deployment, owned)
        changed = False
        if current is None:
            if spec.get("paused"):
                return False  # a paused deployment does not roll out its new template
            current = self._new_replicaset(deployment, max_revision + 1)
            self._store(rs_res, current, None)
            changed = True
            owned.append(current)
        current = copy.deepcopy(current)
        annotations = _meta(current).setdefault("annotations", {})
        if _revision(current) < max_revision:
            # Rolling back to an older template makes that ReplicaSet the newest revision.
            annotations[REVISION_ANNOTATION] = str(max_revision + 1)
        annotations["deployment.kubernetes.io/desired-replicas"] = str(desired)
        current["spec"]["replicas"] = desired
        changed |= self._update_if_changed(rs_res, current)

        new_pods = self._owned("pod", namespace, _meta(current)["uid"])
        new_ready = sum(1 for p in new_pods if _is_active(p) and _is_ready(p))
        for old in owned:
            if _meta(old)["uid"] == _meta(current)["uid"]:
                continue
            # Old pods go once the new ones are all ready; until then they keep serving.
            target = 0 if new_ready >= desired else min(old["spec"].get("replicas", 0), desired)
            if old["spec"].get("replicas") != target:
                old = copy.deepcopy(old)
                old["spec"]["replicas"] = target
                changed |= self._update_if_changed(rs_res, old)

        revision = str(_revision(self._objects[self._key(rs_res, namespace, _meta(current)["name"])]))
        if (meta.get("annotations") or {}).get(REVISION_ANNOTATION) != revision:
            updated = copy.deepcopy(deployment)
            _meta(updated).setdefault("annotations", {})[REVISION_ANNOTATION] = revision
            changed |= self._update_if_changed(_BY_NAME["deployment"], updated)
        return changed

    def _new_replicaset(self, deployment: Obj, revision: int) -> Obj:
        meta, spec = _meta(deployment), deployment.get("spec") or {}
        template = _without_hash(spec.get("template") or {})
        pod_hash = _template_hash(template)
        template.setdefault("metadata", {}).setdefault("labels", {})[POD_TEMPLATE_HASH] = pod_hash
        selector = copy.deepcopy(spec.get("selector") or {})
        selector.setdefault("matchLabels", {})[POD_TEMPLATE_HASH] = pod_hash
        labels = dict(template["metadata"]["labels"])
        return {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{meta['name']}-{pod_hash}",
                "namespace": meta["namespace"],
                "labels": labels,
                "annotations": {
                    REVISION_ANNOTATION: str(revision),
                    "deployment.kubernetes.io/desired-replicas": str(spec.get("replicas", 1)),
                },
                "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "Deployment", "name": meta["name"],
                    "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True,
                }],
            },
            "spec": {"replicas": 0, "selector": selector, "template": template},
            "status": {"replicas": 0},
        }

    def _sync_replicaset(self, replicaset: Obj) -> bool:
        pod_res = _BY_NAME["pod"]
        meta = _meta(replicaset)
        namespace, uid = meta["namespace"], meta["uid"]
        desired = int((replicaset.get("spec") or {}).get("replicas", 1))
        active = [p for p in self._owned("pod", namespace, uid) if _is_active(p)]
        changed = False
        while len(active) < desired:
            pod = self._new_pod(replicaset)
            self._store(pod_res, pod, None)
            active.append(pod)
            changed = True
        if len(active) > desired:
            # Like the RS controller: not-ready pods go first, then the youngest.
            surplus = len(active) - desired
            ranked = sorted(active, key=lambda p: (_is_ready(p), _neg_age(p)))
            for pod in ranked[:surplus]:
                self._remove(pod_res, pod, cascade=True)
            active = ranked[surplus:]
            changed = True
        ready = sum(1 for p in active if _is_ready(p))
        status: Obj = {"replicas": len(active), "observedGeneration": meta.get("generation", 1)}
        if active:
            status["fullyLabeledReplicas"] = len(active)
        if ready:
            status["readyReplicas"] = ready
            status["availableReplicas"] = ready
        if replicaset.get("status") != status:
            updated = copy.deepcopy(replicaset)
            updated["status"] = status
            changed |= self._update_if_changed(_BY_NAME["replicaset"], updated)
        return changed

    def _new_pod(self, replicaset: Obj) -> Obj:
        rs_meta = _meta(replicaset)
        template = copy.deepcopy((replicaset.get("spec") or {}).get("template") or {})
        template_meta = template.get("metadata") or {}
        spec = template.get("spec") or {}
        self._default_pod_spec(spec)
        spec.setdefault("serviceAccountName", "default")
        spec.setdefault("nodeName", self._pick_node())
        name = f"{rs_meta['name']}-{self._suffix()}"
        ready = self.new_pods_ready
        now = _timestamp()
        self._ip_counter += 1
        statuses = []
        for container in spec.get("containers") or []:
            image = str(container.get("image", ""))
            digest = hashlib.sha256(image.encode()).hexdigest()
            statuses.append({
                "name": container.get("name", ""),
                "image": image,
                "imageID": f"{image.rsplit(':', 1)[0]}@sha256:{digest}",
                "containerID": f"containerd://{uuid.uuid4().hex}{uuid.uuid4().hex}",
                "ready": ready,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
                "lastState": {},
            })
            # A freshly started container has logged its start-up, as real ones do.
            self.pod_logs[(rs_meta["namespace"], name, container.get("name", ""), False)] = (
                f"{now} INFO Starting {container.get('name', '')} ({image})\n"
                f"{now} INFO Application startup complete\n"
            )
        ready_text = "True" if ready else "False"
        conditions = [
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "Ready", "status": ready_text, "lastTransitionTime": now},
            {"type": "ContainersReady", "status": ready_text, "lastTransitionTime": now},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
        ]
        if not ready:
            for condition in conditions[1:3]:
                condition["reason"] = "ContainersNotReady"
                condition["message"] = "containers with unready status: [" + " ".join(
                    s["name"] for s in statuses) + "]"
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "generateName": f"{rs_meta['name']}-",
                "namespace": rs_meta["namespace"],
                "labels": dict(template_meta.get("labels") or {}),
                "annotations": dict(template_meta.get("annotations") or {}),
                "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs_meta["name"],
                    "uid": rs_meta["uid"], "controller": True, "blockOwnerDeletion": True,
                }],
            },
            "spec": spec,
            "status": {
                "phase": "Running",
                "conditions": conditions,
                "hostIP": "10.128.0.10",
                "podIP": f"10.8.{self._ip_counter // 250}.{self._ip_counter % 250 + 2}",
                "podIPs": [{"ip": f"10.8.{self._ip_counter // 250}.{self._ip_counter % 250 + 2}"}],
                "startTime": now,
                "containerStatuses": statuses,
                "qosClass": "Burstable",
            },
        }

    def _pick_node(self) -> str:
        """The scheduler, roughly: the Ready, schedulable node running the fewest pods."""
        nodes = [n for n in self._stored(_BY_NAME["node"]) if _schedulable(n)]
        if not nodes:
            return "sandbox-node"
        load = {_meta(n)["name"]: 0 for n in nodes}
        for pod in self._stored(_BY_NAME["pod"]):
            node = (pod.get("spec") or {}).get("nodeName")
            if node in load and _is_active(pod):
                load[node] += 1
        return min(load, key=lambda n: (load[n], n))

    def _sync_deployment_status(self, deployment: Obj) -> bool:
        meta, spec = _meta(deployment), deployment.get("spec") or {}
        namespace = meta["namespace"]
        owned = self._owned("replicaset", namespace, meta["uid"])
        current = self._current_rs(deployment, owned)
        desired = int(spec.get("replicas", 1))
        pods: ObjList = []
        new_pods: ObjList = []
        for rs in owned:
            rs_pods = [p for p in self._owned("pod", namespace, _meta(rs)["uid"]) if _is_active(p)]
            pods.extend(rs_pods)
            if current is not None and _meta(rs)["uid"] == _meta(current)["uid"]:
                new_pods = rs_pods
        ready = sum(1 for p in pods if _is_ready(p))
        new_ready = sum(1 for p in new_pods if _is_ready(p))
        rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
        max_unavailable = _int_or_percent(rolling.get("maxUnavailable"), desired, round_up=False)
        max_surge = _int_or_percent(rolling.get("maxSurge"), desired, round_up=True)
        if max_unavailable == 0 and max_surge == 0:
            max_unavailable = 1
        old_status = deployment.get("status") or {}
        status: Obj = {"observedGeneration": meta.get("generation", 1)}
        # The real server omits zero counts (omitempty); clients must cope with missing fields.
        for field, value in (
            ("replicas", len(pods)),
            ("updatedReplicas", len(new_pods)),
            ("readyReplicas", ready),
            ("availableReplicas", ready),
            ("unavailableReplicas", max(desired - ready, 0)),
        ):
            if value:
                status[field] = value
        rs_name = _meta(current)["name"] if current is not None else meta["name"]
        available_ok = ready >= desired - max_unavailable
        progressed = f'ReplicaSet "{rs_name}" has successfully progressed.'
        previous: Obj = next((c for c in old_status.get("conditions") or []
                              if c.get("type") == "Progressing"), {})
        # Once a rollout completed, pods failing later do not reopen it (as in Kubernetes):
        # Progressing only changes with the next ReplicaSet.
        complete = (
            len(new_pods) == desired and new_ready == desired and len(pods) == desired
        ) or previous.get("message") == progressed
        status["conditions"] = [
            self._condition(
                old_status, "Available", available_ok,
                "MinimumReplicasAvailable" if available_ok else "MinimumReplicasUnavailable",
                "Deployment has minimum availability." if available_ok
                else "Deployment does not have minimum availability.",
            ),
            self._condition(
                old_status, "Progressing", True,
                "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
                progressed if complete
                else f'ReplicaSet "{rs_name}" is progressing.',
            ),
        ]
        if old_status == status:
            return False
        updated = copy.deepcopy(deployment)
        updated["status"] = status
        return self._update_if_changed(_BY_NAME["deployment"], updated)

    @staticmethod
    def _condition(old_status: Obj, kind: str, ok: bool, reason: str, message: str) -> Obj:
        text = "True" if ok else "False"
        previous = next(
            (c for c in old_status.get("conditions") or [] if c.get("type") == kind), None
        )
        now = _timestamp()
        if previous and (previous.get("status"), previous.get("reason")) == (text, reason) and (
            previous.get("message") == message
        ):
            return previous  # unchanged conditions keep their times, so nothing churns
        transition = now
        if previous and previous.get("status") == text:
            transition = previous.get("lastTransitionTime", now)
        return {"type": kind, "status": text, "lastUpdateTime": now,
                "lastTransitionTime": transition, "reason": reason, "message": message}

    # ---------------------------------------------------------------- HTTP

    def _serve(self, handler: _Handler, method: str) -> None:
        split = urlsplit(handler.path)
        path = split.path
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        content_type = (handler.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        body: Any = None
        body_error = False
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body, body_error = raw.decode("utf-8", "replace"), True
        with self._lock:
            self.requests.append(RecordedRequest(method, path, query, body, content_type))
        if path in ("/healthz", "/livez", "/readyz"):
            self._send(handler, _Response(200, "ok"))
            return
        if self.delay_seconds > 0:
            time.sleep(self.delay_seconds)
        try:
            if handler.headers.get("Authorization") != f"Bearer {self.token}":
                raise ApiError(401, "Unauthorized")
            if self.authorizer is not None:
                self.authorizer.authorize(method, path, query)
            self._raise_injected_failure(method, path)
            if exec_target(path) is not None:
                self._serve_pod_exec(handler, path, split.query)
                return
            if body_error:
                raise ApiError(400, "couldn't get version/kind; json parse error: invalid JSON")
            with self._lock:
                response = self._dispatch(method, path, query, body, content_type)
            if isinstance(response.body, _WatchStream):
                # Streamed outside the lock: a watch lasts long and must not block writers.
                self._stream_watch(handler, response.body, query)
                return
        except ApiError as error:
            headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else {}
            response = _Response(error.code, error.status(), headers)
        except Exception as error:  # noqa: BLE001 - a bug here must reach the client as a 500
            response = _Response(500, ApiError(500, f"sandbox server error: {error!r}").status())
        self._send(handler, response)

    def _serve_pod_exec(self, handler: _Handler, path: str, raw_query: str) -> None:
        """``pods/exec``: validated under the lock, then the WebSocket session outside it."""
        target = exec_target(path)
        assert target is not None
        namespace, name = target
        upgrade = (handler.headers.get("Upgrade") or "").lower() == "websocket"

        def stored(kind: str, obj_name: str, ns: str) -> Obj | None:
            return self.get(kind, obj_name, ns)

        with self._lock:
            pod = self.get("Pod", name, namespace)
            try:
                plan = plan_exec(self.pod_exec, pod, stored, namespace, name, raw_query, upgrade)
            except ExecRefused as refused:
                details = {"name": name, "kind": "pods"} if refused.code in (403, 404) else None
                raise ApiError(refused.code, refused.message, refused.reason, details) from None
        serve_exec(handler, plan, lambda: self._httpd is None)

    def _stream_watch(self, handler: _Handler, watch: _WatchStream, query: dict[str, str]) -> None:
        """Newline-delimited watch events until timeoutSeconds, by polling the store.

        Polling keeps the store simple; 50 ms is far below any timeout the bot uses.
        """
        def snapshot() -> dict[tuple[str, str], Obj]:
            with self._lock:
                return {
                    (_meta(o).get("namespace", ""), _meta(o)["name"]): copy.deepcopy(o)
                    for o in self._select(watch.res, watch.namespace, query)
                }

        since = query.get("resourceVersion", "")
        seen = snapshot()
        events = [
            ("ADDED" if since in ("", "0") else "MODIFIED", obj) for obj in seen.values()
            if since in ("", "0") or int(_meta(obj).get("resourceVersion", "0")) > int(since)
        ]
        deadline = time.monotonic() + min(float(query.get("timeoutSeconds") or 1800), 1800)
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            # Chunked, as the real server streams: clients hand each chunk on as it arrives.
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            while True:
                for kind, obj in events:
                    line = (json.dumps({"type": kind, "object": obj}) + "\n").encode()
                    handler.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                if time.monotonic() >= deadline or self._httpd is None:
                    handler.wfile.write(b"0\r\n\r\n")
                    return
                time.sleep(0.05)
                current = snapshot()
                events = [("DELETED", obj) for key, obj in seen.items() if key not in current]
                for key, obj in current.items():
                    old = seen.get(key)
                    if old is None:
                        events.append(("ADDED", obj))
                    elif _meta(old).get("resourceVersion") != _meta(obj).get("resourceVersion"):
                        events.append(("MODIFIED", obj))
                seen = current
        except (BrokenPipeError, ConnectionResetError):
            return  # the client stopped watching

    def _raise_injected_failure(self, method: str, path: str) -> None:
        with self._lock:
            for failure in self._failures:
                if failure.path_contains in path and failure.method in ("", method):
                    failure.remaining -= 1
                    if failure.remaining <= 0:
                        self._failures.remove(failure)
                    message = _INJECTED_MESSAGES.get(
                        failure.status, f"sandbox injected failure ({failure.status})"
                    )
                    details = None
                    if failure.retry_after is not None:
                        details = {"retryAfterSeconds": failure.retry_after}
                    error = ApiError(failure.status, message, details=details)
                    error.retry_after = failure.retry_after
                    raise error

    @staticmethod
    def _send(handler: _Handler, response: _Response) -> None:
        if isinstance(response.body, str):
            payload, content_type = response.body.encode(), "text/plain; charset=utf-8"
        else:
            payload, content_type = json.dumps(response.body).encode(), "application/json"
        try:
            handler.send_response(response.status)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(payload)))
            handler.send_header("Cache-Control", "no-cache, private")
            for name, value in response.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its own timeout); nothing left to tell it

    def _dispatch(self, method: str, path: str, query: dict[str, str], body: Any,
                  content_type: str) -> _Response:
        parts = [unquote(p) for p in path.split("/") if p]
        if parts == ["version"]:
            return _Response(200, dict(SERVER_VERSION))
        if parts == ["api"]:
            return _Response(200, {
                "kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self.port}"}
                ],
            })
        if parts == ["apis"]:
            return _Response(200, {
                "kind": "APIGroupList", "apiVersion": "v1",
                "groups": [self._api_group(g) for g in _GROUP_VERSIONS if g],
            })
        if len(parts) == 2 and parts[0] == "apis" and parts[1] in _GROUP_VERSIONS:
            return _Response(200, {"kind": "APIGroup", "apiVersion": "v1",
                                   **self._api_group(parts[1])})
        if len(parts) >= 2 and parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise _unknown_path()
        if version not in _GROUP_VERSIONS.get(group, []):
            raise _unknown_path()
        if not rest:
            return _Response(200, self._resource_list(group, version))

        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3 and not (
            group == "" and len(rest) == 3 and rest[2] in ("status", "finalize")
        ):
            namespace, rest = rest[1], rest[2:]
        res = _BY_PATH.get((group, version, rest[0]))
        if res is None or (namespace is not None and not res.namespaced):
            raise _unknown_path()
        name = rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else None
        if res.namespaced and namespace is None and name is not None:
            raise _unknown_path()
        if len(rest) > 3 and subresource != "proxy":
            raise _unknown_path()
        if res.virtual and method != "GET":
            raise ApiError(405, "the server does not allow this method on the requested resource")
        if query.get("watch") in ("true", "1"):
            if method != "GET" or name is not None:
                raise ApiError(405, "watch is only supported on collections")
            # Validate the selectors now, so a bad one is a 400 rather than a broken stream.
            self._select(res, namespace, query)
            return _Response(200, _WatchStream(res, namespace))

        if subresource is not None:
            if subresource not in res.subresources:
                raise _unknown_path()
            assert name is not None
            return self._subresource(method, res, namespace, name, subresource,
                                     "/".join(rest[3:]), query, body, content_type)
        if name is None:
            if method == "GET":
                return _Response(200, self._api_list(res, namespace, query))
            if method == "POST" and (namespace is not None or not res.namespaced):
                return self._api_create(res, namespace, query, body)
            if method == "DELETE" and (namespace is not None or not res.namespaced):
                return self._api_delete_collection(res, namespace, query, body)
        else:
            if method == "GET":
                return _Response(200, self._api_get(res, namespace, name))
            if method == "PUT":
                return self._api_replace(res, namespace, name, query, body)
            if method == "PATCH":
                return self._api_patch(res, namespace, name, query, body, content_type)
            if method == "DELETE":
                return self._api_delete(res, namespace, name, query, body)
        raise ApiError(405, "the server does not allow this method on the requested resource")

    @staticmethod
    def _api_group(group: str) -> Obj:
        versions = [{"groupVersion": f"{group}/{v}", "version": v} for v in _GROUP_VERSIONS[group]]
        return {"name": group, "versions": versions, "preferredVersion": versions[0]}

    @staticmethod
    def _resource_list(group: str, version: str) -> Obj:
        resources = []
        for res in _RESOURCES:
            if (res.group, res.version) != (group, version):
                continue
            resources.append({
                "name": res.plural, "singularName": res.singular, "namespaced": res.namespaced,
                "kind": res.kind, "verbs": res.verbs, "shortNames": list(res.short_names),
            })
            for sub in res.subresources:
                sub_kind = "Scale" if sub == "scale" else res.kind
                verbs = {"log": ["get"], "exec": ["create", "get"],
                         "proxy": ["get", "create", "update", "patch", "delete"],
                         "finalize": ["update"]}.get(sub, ["get", "patch", "update"])
                resources.append({"name": f"{res.plural}/{sub}", "singularName": "",
                                  "namespaced": res.namespaced, "kind": sub_kind, "verbs": verbs})
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version,
                "resources": resources}

    # -- verbs

    def _find(self, res: _Resource, namespace: str | None, name: str) -> Obj:
        if res.virtual:
            for obj in self._virtual_list(res, namespace):
                if _meta(obj)["name"] == name:
                    return obj
            raise _not_found(res, name)
        stored = self._objects.get(self._key(res, namespace, name))
        if stored is None:
            raise _not_found(res, name)
        return stored

    def _api_get(self, res: _Resource, namespace: str | None, name: str) -> Obj:
        found = copy.deepcopy(self._find(res, namespace, name))
        found["apiVersion"] = res.api_version  # served in the version asked for, as conversion does
        return found

    def _select(self, res: _Resource, namespace: str | None, query: dict[str, str]) -> ObjList:
        labels = parse_label_selector(query.get("labelSelector", ""))
        fields = parse_field_selector(query.get("fieldSelector", ""), res.kind)
        items = self._virtual_list(res, namespace) if res.virtual else self._stored(res, namespace)
        return [o for o in items
                if _labels_match(labels, _meta(o).get("labels")) and _fields_match(fields, o)]

    def _api_list(self, res: _Resource, namespace: str | None, query: dict[str, str]) -> Obj:
        items = [copy.deepcopy(o) for o in self._select(res, namespace, query)]
        return {
            "kind": res.list_kind,
            "apiVersion": res.api_version,
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    @staticmethod
    def _dry_run(query: dict[str, str], body: Any) -> bool:
        if query.get("dryRun") == "All":
            return True
        return isinstance(body, dict) and "All" in (body.get("dryRun") or [])

    def _check_body(self, res: _Resource, namespace: str | None, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise ApiError(400, "the body of the request was in an unknown format")
        obj = copy.deepcopy(body)
        kind, api_version = obj.setdefault("kind", res.kind), obj.setdefault(
            "apiVersion", res.api_version)
        if kind != res.kind or api_version != res.api_version:
            raise ApiError(
                400, f"the API version in the data ({api_version}) does not match the expected "
                f"API version ({res.api_version})" if api_version != res.api_version else
                f"the kind in the data ({kind}) does not match the expected kind ({res.kind})"
            )
        meta = _meta(obj)
        if res.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise ApiError(400, "the namespace of the provided object does not match the "
                                    "namespace sent on the request")
            meta["namespace"] = namespace
        for field in ("labels", "annotations"):
            _check_string_map(meta.get(field), f"ObjectMeta.{field}")
        if res.kind == "ConfigMap":
            _check_string_map(obj.get("data"), "ConfigMap.data")
        if res.kind == "Secret":
            _check_string_map(obj.get("stringData"), "Secret.stringData")
            _check_string_map(obj.get("data"), "Secret.data")
            for key, value in (obj.get("data") or {}).items():
                try:
                    base64.b64decode(value, validate=True)
                except ValueError as error:
                    raise ApiError(400, f"illegal base64 data in Secret.data.{key}") from error
        if res.kind == "Service":
            _check_string_map((obj.get("spec") or {}).get("selector"), "ServiceSpec.selector")
        return obj

    def _validate(self, res: _Resource, obj: Obj, old: Obj | None) -> None:
        """The validation errors (422) the procedures could plausibly provoke."""
        name = _meta(obj).get("name", "")
        if not _DNS_SUBDOMAIN.match(name) or len(name) > 253:
            raise _invalid(res, name, "metadata.name", f'Invalid value: "{name}": a lowercase '
                           "RFC 1123 subdomain must consist of lower case alphanumeric "
                           "characters, '-' or '.', and must start and end with an alphanumeric "
                           "character")
        spec = obj.get("spec") or {}
        if res.kind in ("Deployment", "ReplicaSet"):
            replicas = spec.get("replicas", 1)
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise _invalid(res, name, "spec.replicas", f"Invalid value: {json.dumps(replicas)}:"
                               " must be greater than or equal to 0")
            selector = spec.get("selector") or {}
            template = spec.get("template") or {}
            if not selector:
                raise _invalid(res, name, "spec.selector", "Required value")
            if not _label_selector_matches(selector, (template.get("metadata") or {}).get("labels")):
                raise _invalid(res, name, "spec.template.metadata.labels",
                               "Invalid value: selector does not match template labels")
            if old is not None and (old.get("spec") or {}).get("selector") != selector:
                raise _invalid(res, name, "spec.selector", "Invalid value: field is immutable")
            self._validate_containers(res, name, (template.get("spec") or {}),
                                      "spec.template.spec")
        if res.kind == "Pod" and old is None:
            self._validate_containers(res, name, spec, "spec")

    @staticmethod
    def _validate_containers(res: _Resource, name: str, pod_spec: Obj, prefix: str) -> None:
        containers = pod_spec.get("containers")
        if not containers:
            raise _invalid(res, name, f"{prefix}.containers", "Required value")
        for index, container in enumerate(containers):
            if not isinstance(container, dict) or not container.get("name"):
                raise _invalid(res, name, f"{prefix}.containers[{index}].name", "Required value")
            if not container.get("image"):
                raise _invalid(res, name, f"{prefix}.containers[{index}].image", "Required value")

    def _api_create(self, res: _Resource, namespace: str | None, query: dict[str, str],
                    body: Any) -> _Response:
        obj = self._check_body(res, namespace, body)
        meta = _meta(obj)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise _invalid(res, "", "metadata.name",
                               "Required value: name or generateName is required")
            meta["name"] = meta["generateName"] + self._suffix()
        if res.namespaced and self._objects.get(("Namespace", "", namespace or "")) is None:
            raise ApiError(404, f'namespaces "{namespace}" not found',
                           details={"name": namespace, "kind": "namespaces"})
        if self._objects.get(self._key(res, namespace, meta["name"])) is not None:
            raise ApiError(409, f'{res.qualified} "{meta["name"]}" already exists',
                           "AlreadyExists", details=_details(res, meta["name"]))
        for field in ("uid", "resourceVersion", "creationTimestamp", "generation",
                      "deletionTimestamp"):
            meta.pop(field, None)
        if res.has_status:
            # Status is the controllers' to write; a created object starts from scratch.
            obj.pop("status", None)
            if res.kind == "Pod":
                obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        self._apply_defaults(res, obj)
        self._validate(res, obj, None)
        if self._dry_run(query, body):
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _timestamp()
            return _Response(201, obj)
        stored = copy.deepcopy(self._store(res, obj, None))
        if self.auto_reconcile:
            self.reconcile()
        return _Response(201, stored)

    def _api_replace(self, res: _Resource, namespace: str | None, name: str,
                     query: dict[str, str], body: Any) -> _Response:
        obj = self._check_body(res, namespace, body)
        return self._update(res, namespace, name, obj, query, body, part="main")

    def _update(self, res: _Resource, namespace: str | None, name: str, obj: Obj,
                query: dict[str, str], body: Any, *, part: str) -> _Response:
        """Replace the stored object with ``obj`` (``part`` = "main" or "status" subresource)."""
        old = self._find(res, namespace, name)
        meta = _meta(obj)
        if meta.get("name") != name:
            raise ApiError(400, f"the name of the object ({meta.get('name')}) does not match the "
                                f"name on the URL ({name})")
        if meta.get("resourceVersion") and meta["resourceVersion"] != _meta(old)["resourceVersion"]:
            raise _conflict(res, name)
        if part == "status":
            # The status subresource writes status only; everything else stays as stored.
            new = copy.deepcopy(old)
            new["status"] = copy.deepcopy(obj.get("status"))
        else:
            new = obj
            if res.has_status:
                new["status"] = copy.deepcopy(old.get("status"))
                if new["status"] is None:
                    new.pop("status")
            if res.kind == "Service" and isinstance(new.get("spec"), dict):
                # An update that omits the cluster IP keeps it (it is immutable once allocated).
                for field in ("clusterIP", "clusterIPs"):
                    if field in (old.get("spec") or {}):
                        new["spec"].setdefault(field, old["spec"][field])
            self._apply_defaults(res, new)
            self._validate(res, new, old)
        if self._dry_run(query, body):
            preview = copy.deepcopy(new)
            for field in ("uid", "creationTimestamp", "resourceVersion", "generation"):
                if field in _meta(old):
                    _meta(preview)[field] = _meta(old)[field]
            if (
                "generation" in _meta(old)
                and _pruned(preview.get("spec")) != _pruned(old.get("spec"))
            ):
                _meta(preview)["generation"] = _meta(old)["generation"] + 1
            return _Response(200, preview)
        stored = copy.deepcopy(self._store(res, new, old))
        if self.auto_reconcile:
            self.reconcile()
        return _Response(200, stored)

    def _apply_patch(self, res: _Resource, current: Obj, body: Any, content_type: str) -> Obj:
        if content_type == "application/json-patch+json":
            try:
                patched = json_patch(current, body)
            except _JsonPatchError as error:
                raise ApiError(422, str(error)) from error
        elif content_type == "application/merge-patch+json":
            if not isinstance(body, dict):
                raise ApiError(400, "the body of a merge patch must be a JSON object")
            patched = merge_patch(current, body)
        elif content_type == "application/strategic-merge-patch+json" and not res.custom:
            if not isinstance(body, dict):
                raise ApiError(400, "the body of a strategic merge patch must be a JSON object")
            patched = strategic_merge_patch(current, body)
        else:
            raise ApiError(
                415,
                "the body of the request was in an unknown format - accepted media types include: "
                "application/json-patch+json, application/merge-patch+json"
                + ("" if res.custom else ", application/strategic-merge-patch+json"),
            )
        if not isinstance(patched, dict):
            raise ApiError(422, "the patched object is not a JSON object")
        return patched

    def _api_patch(self, res: _Resource, namespace: str | None, name: str, query: dict[str, str],
                   body: Any, content_type: str, *, part: str = "main") -> _Response:
        current = self._find(res, namespace, name)
        # A patch through another served version sees the object converted to that version.
        current = {**current, "apiVersion": res.api_version}
        patched = self._apply_patch(res, current, body, content_type)
        # A patch that carries metadata.resourceVersion is a precondition, like in a PUT; a patch
        # that leaves it alone is unconditional.
        if _meta(patched).get("resourceVersion") is None:
            _meta(patched)["resourceVersion"] = _meta(current)["resourceVersion"]
        obj = self._check_body(res, namespace, patched)
        # dryRun comes in the query only: the body of a PATCH is the patch itself.
        return self._update(res, namespace, name, obj, query, None, part=part)

    def _api_delete(self, res: _Resource, namespace: str | None, name: str,
                    query: dict[str, str], body: Any) -> _Response:
        obj = copy.deepcopy(self._find(res, namespace, name))
        options = body if isinstance(body, dict) else {}
        preconditions = options.get("preconditions") or {}
        if preconditions.get("resourceVersion") not in (None, _meta(obj)["resourceVersion"]):
            raise _conflict(res, name)
        if preconditions.get("uid") not in (None, _meta(obj)["uid"]):
            raise _conflict(res, name)
        if not self._dry_run(query, body):
            policy = query.get("propagationPolicy") or options.get("propagationPolicy")
            self._remove(res, self._objects[self._key(res, namespace, name)],
                         cascade=policy != "Orphan")
            if self.auto_reconcile:
                self.reconcile()
        if res.returns_deleted:
            _meta(obj)["deletionTimestamp"] = _timestamp()
            if res.kind == "Namespace":
                obj["status"] = {"phase": "Terminating"}
            elif res.kind == "Pod":
                _meta(obj)["deletionGracePeriodSeconds"] = int(
                    query.get("gracePeriodSeconds") or options.get("gracePeriodSeconds") or 30
                )
            return _Response(200, obj)
        return _Response(200, {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": _details(res, name, uid=_meta(obj)["uid"]),
        })

    def _api_delete_collection(self, res: _Resource, namespace: str | None,
                               query: dict[str, str], body: Any) -> _Response:
        selected = [copy.deepcopy(o) for o in self._select(res, namespace, query)]
        if not self._dry_run(query, body):
            for obj in selected:
                stored = self._objects.get(self._key(res, namespace or _meta(obj).get("namespace"),
                                                     _meta(obj)["name"]))
                if stored is not None:
                    self._remove(res, stored, cascade=True)
            if self.auto_reconcile:
                self.reconcile()
        return _Response(200, {
            "kind": res.list_kind, "apiVersion": res.api_version,
            "metadata": {"resourceVersion": str(self._rv)}, "items": selected,
        })

    # -- subresources

    def _subresource(self, method: str, res: _Resource, namespace: str | None, name: str,
                     subresource: str, subpath: str, query: dict[str, str], body: Any,
                     content_type: str) -> _Response:
        if subresource == "log" and method == "GET":
            return _Response(200, self._pod_log(res, namespace or "", name, query))
        if subresource == "proxy":
            return self._service_proxy(res, namespace or "", name, subpath)
        if subresource == "scale":
            return self._scale(method, res, namespace, name, query, body, content_type)
        if subresource == "status":
            if method == "GET":
                return _Response(200, self._api_get(res, namespace, name))
            if method == "PUT":
                obj = self._check_body(res, namespace, body)
                return self._update(res, namespace, name, obj, query, body, part="status")
            if method == "PATCH":
                return self._api_patch(res, namespace, name, query, body, content_type,
                                       part="status")
        if subresource == "finalize" and method == "PUT":
            obj = self._check_body(res, namespace, body)
            return self._update(res, namespace, name, obj, query, body, part="main")
        raise ApiError(405, "the server does not allow this method on the requested resource")

    def _scale_of(self, res: _Resource, obj: Obj) -> Obj:
        meta = _meta(obj)
        selector = (obj.get("spec") or {}).get("selector") or {}
        labels = selector.get("matchLabels") or {}
        status = obj.get("status") or {}
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {key: meta[key] for key in
                         ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")},
            "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 1)},
            "status": {"replicas": status.get("replicas", 0),
                       "selector": ",".join(f"{k}={v}" for k, v in sorted(labels.items()))},
        }

    def _scale(self, method: str, res: _Resource, namespace: str | None, name: str,
               query: dict[str, str], body: Any, content_type: str) -> _Response:
        obj = self._find(res, namespace, name)
        scale = self._scale_of(res, obj)
        if method == "GET":
            return _Response(200, scale)
        if method == "PUT":
            if not isinstance(body, dict):
                raise ApiError(400, "the body of the request was in an unknown format")
            wanted = body
        elif method == "PATCH":
            # Scale is a built-in type, so strategic merge works on it even for custom owners.
            scale_res = _Resource("autoscaling", "v1", res.plural, "", "Scale", True)
            wanted = self._apply_patch(scale_res, scale, body, content_type)
        else:
            raise ApiError(405, "the server does not allow this method on the requested resource")
        wanted_meta = wanted.get("metadata") or {}
        if wanted_meta.get("name") not in (None, name):
            raise ApiError(400, f"the name of the object ({wanted_meta.get('name')}) does not "
                                f"match the name on the URL ({name})")
        if wanted_meta.get("resourceVersion") not in (None, "", _meta(obj)["resourceVersion"]):
            raise _conflict(res, name)
        replicas = (wanted.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise ApiError(
                422, f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: '
                f"{json.dumps(replicas)}: must be greater than or equal to 0",
                details={"name": name, "group": "autoscaling", "kind": "Scale"},
            )
        updated = copy.deepcopy(obj)
        updated["spec"]["replicas"] = replicas
        if self._dry_run(query, body):
            scale["spec"]["replicas"] = replicas
            return _Response(200, scale)
        self._store(res, updated, obj)
        if self.auto_reconcile:
            self.reconcile()
        return _Response(200, self._scale_of(res, self._find(res, namespace, name)))

    def _pod_log(self, res: _Resource, namespace: str, name: str, query: dict[str, str]) -> str:
        pod = self._find(res, namespace, name)
        containers = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []]
        container = query.get("container")
        if not container:
            if len(containers) != 1:
                raise ApiError(400, f"a container name must be specified for pod {name}, "
                                    f"choose one of: [{' '.join(containers)}]")
            container = containers[0]
        elif container not in containers:
            init = [c.get("name") for c in (pod.get("spec") or {}).get("initContainers") or []]
            if container not in init:
                raise ApiError(400, f"container {container} is not valid for pod {name}")
        previous = query.get("previous") in ("true", "1", "True")
        text = self.pod_logs.get((namespace, name, container, previous))
        if text is None:
            if previous:
                raise ApiError(400, f'previous terminated container "{container}" in pod '
                                    f'"{name}" not found')
            text = ""
        lines = text.splitlines(keepends=True)
        stamps = _line_timestamps(lines)
        since: datetime | None = None
        if query.get("sinceSeconds"):
            since = _now() - timedelta(seconds=int(query["sinceSeconds"]))
        elif query.get("sinceTime"):
            since = _parse_rfc3339(query["sinceTime"])
        if since is not None:
            kept = [(line, ts) for line, ts in zip(lines, stamps, strict=True)
                    if ts is None or ts >= since]
            lines, stamps = [k[0] for k in kept], [k[1] for k in kept]
        if query.get("tailLines"):
            tail = int(query["tailLines"])
            lines, stamps = (lines[-tail:], stamps[-tail:]) if tail > 0 else ([], [])
        if query.get("timestamps") in ("true", "1"):
            fallback = (pod.get("status") or {}).get("startTime") or _timestamp()
            lines = [
                f"{(ts.strftime('%Y-%m-%dT%H:%M:%S.%fZ') if ts else fallback)} {line}"
                for line, ts in zip(lines, stamps, strict=True)
            ]
        out = "".join(lines)
        if query.get("limitBytes"):
            out = out.encode()[: int(query["limitBytes"])].decode("utf-8", "ignore")
        return out

    def _service_proxy(self, res: _Resource, namespace: str, name: str,
                       subpath: str) -> _Response:
        # "name", "name:port" and "scheme:name:port" all address the same service.
        pieces = name.split(":")
        service_name = pieces[1] if len(pieces) == 3 else pieces[0]
        service = self._find(res, namespace, service_name)
        selector = (service.get("spec") or {}).get("selector")
        ready = [p for p in self._stored(_BY_NAME["pod"], namespace)
                 if _is_active(p) and _is_ready(p)
                 and _selector_matches(selector, _meta(p).get("labels"))]
        if not ready:
            raise ApiError(503, f'no endpoints available for service "{service_name}"')
        if subpath.strip("/") in ("health", "healthz", "api/health"):
            return _Response(200, {"status": "healthy", "pods": len(ready)})
        return _Response(404, {"detail": "Not Found"})


def _neg_age(pod: Obj) -> float:
    """Sorting key that puts the youngest pod first."""
    created = _parse_rfc3339(_meta(pod).get("creationTimestamp", "")) or _now()
    return -created.timestamp() - int(_meta(pod).get("resourceVersion", "0")) * 1e-6


def _node_ready(node: Obj) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    ready = [c for c in conditions if c.get("type") == "Ready"]
    # A node without conditions (seeded minimally) counts as Ready.
    return not ready or ready[0].get("status") == "True"


def _schedulable(node: Obj) -> bool:
    """Ready, not cordoned, no NoSchedule taint (the sandbox's pods tolerate nothing)."""
    spec = node.get("spec") or {}
    taints = spec.get("taints") or []
    return (
        _node_ready(node)
        and not spec.get("unschedulable")
        and not any(t.get("effect") in ("NoSchedule", "NoExecute") for t in taints)
    )


def _line_timestamps(lines: Iterable[str]) -> list[datetime | None]:
    """The time of each log line; continuation lines (tracebacks) inherit the one before."""
    stamps: list[datetime | None] = []
    last: datetime | None = None
    for line in lines:
        parsed = _parse_rfc3339(line)
        last = parsed or last
        stamps.append(last)
    return stamps


def _unknown_path() -> ApiError:
    return ApiError(404, "the server could not find the requested resource",
                    details={"causes": [{"reason": "UnexpectedServerResponse",
                                         "message": "404 page not found"}]})

