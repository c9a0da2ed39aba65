"""RBAC for the sandbox Kubernetes API server, from the Roles the manifests actually render.

``RBACAuthorizer.from_objects(objs, user)`` takes the rendered Role/ClusterRole and their
bindings (``kubectl kustomize manifests/overlays/production``) and, once set as
``FakeKubeAPIServer.authorizer``, answers every request the rules do not grant with the
403 ``Status`` the real API server sends, word for word. Least privilege is then
proved by running the bot against it (tests/test_least_privilege.py), not asserted.

Request attributes follow the API server's RequestInfo: the verb from the HTTP method
(GET on a collection is ``list``, with ``watch=true`` ``watch``; DELETE on a collection is
``deletecollection``), ``pods/log`` style subresources, the namespace from the path.
Discovery paths (/version, /api, /apis...) are granted to every authenticated user by the
default ``system:discovery`` ClusterRole, so they are allowed here too.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from sandbox.kube_server import ApiError

Obj = dict[str, Any]

_VERB_BY_METHOD = {"POST": "create", "PUT": "update", "PATCH": "patch"}
# Since Kubernetes 1.31 a websocket upgrade (an HTTP GET) to these needs `create`, as a POST does.
_CREATE_SUBRESOURCES = {"exec", "attach", "portforward"}


@dataclass(frozen=True)
class RequestAttributes:
    verb: str
    group: str
    resource: str  # plural, with "/subresource" when there is one
    namespace: str
    name: str

    @property
    def qualified(self) -> str:
        base = self.resource.split("/", 1)[0]
        return f"{base}.{self.group}" if self.group else base


def request_attributes(method: str, path: str, query: dict[str, str]) -> RequestAttributes | None:
    """What RBAC sees of a request; None for the non-resource (discovery) paths."""
    parts = [unquote(p) for p in path.split("/") if p]
    if len(parts) >= 3 and parts[0] == "api":
        group, rest = "", parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, rest = parts[1], parts[3:]
    else:
        return None
    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    elif rest[0] == "namespaces" and len(rest) == 2:
        namespace = rest[1]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if subresource in _CREATE_SUBRESOURCES:
        verb = "create"
    elif method == "GET":
        verb = "get" if name else ("watch" if query.get("watch") in ("true", "1") else "list")
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = _VERB_BY_METHOD.get(method, method.lower())
    full = f"{resource}/{subresource}" if subresource else resource
    return RequestAttributes(verb, group, full, namespace, name)


@dataclass(frozen=True)
class Grant:
    """One PolicyRule, with where it applies: a namespace, or the whole cluster ("")."""

    namespace: str
    verbs: frozenset[str]
    groups: frozenset[str]
    resources: frozenset[str]
    names: frozenset[str]
    source: str  # "Role aia-production/aia-bot rule 3", for messages

    def allows(self, req: RequestAttributes) -> bool:
        if self.namespace and req.namespace != self.namespace:
            return False
        if not ({req.verb, "*"} & self.verbs and {req.group, "*"} & self.groups):
            return False
        base, _, sub = req.resource.partition("/")
        wanted = {req.resource, "*"} | ({f"*/{sub}"} if sub else set())
        if not wanted & self.resources:
            return False
        # resourceNames restrict to named requests: a list or a create never matches them.
        return not self.names or req.name in self.names


def service_account_user(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def _binds(binding: Obj, user: str) -> bool:
    for subject in binding.get("subjects") or []:
        kind = subject.get("kind")
        if kind == "ServiceAccount" and service_account_user(
            subject.get("namespace", ""), subject.get("name", "")
        ) == user:
            return True
        if kind == "User" and subject.get("name") == user:
            return True
    return False


@dataclass
class RBACAuthorizer:
    """Grants a user what its RoleBindings and ClusterRoleBindings give it, nothing else."""

    user: str
    grants: tuple[Grant, ...]
    denied: list[RequestAttributes] = field(default_factory=list)
    allowed: list[RequestAttributes] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_objects(cls, objects: Iterable[Obj], user: str) -> RBACAuthorizer:
        objs = list(objects)
        roles = {
            (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
            for o in objs
            if o.get("kind") in ("Role", "ClusterRole")
        }
        grants: list[Grant] = []
        for binding in objs:
            if binding.get("kind") not in ("RoleBinding", "ClusterRoleBinding"):
                continue
            if not _binds(binding, user):
                continue
            ref = binding["roleRef"]
            # A RoleBinding grants in its own namespace, even when it points at a ClusterRole.
            where = binding["metadata"].get("namespace", "") if binding["kind"] == "RoleBinding" else ""
            role_ns = where if ref["kind"] == "Role" else ""
            role = roles.get((ref["kind"], role_ns, ref["name"]))
            if role is None:
                continue  # a binding to a missing role grants nothing, as in a real cluster
            for index, rule in enumerate(role.get("rules") or []):
                grants.append(Grant(
                    namespace=where,
                    verbs=frozenset(rule.get("verbs") or ()),
                    groups=frozenset(rule.get("apiGroups") or ()),
                    resources=frozenset(rule.get("resources") or ()),
                    names=frozenset(rule.get("resourceNames") or ()),
                    source=f"{ref['kind']} {role_ns + '/' if role_ns else ''}{ref['name']} rule {index}",
                ))
        return cls(user=user, grants=tuple(grants))

    def allows(self, req: RequestAttributes) -> bool:
        return any(grant.allows(req) for grant in self.grants)

    def authorize(self, method: str, path: str, query: dict[str, str]) -> None:
        """Raise the API server's 403 for a request the grants do not cover."""
        req = request_attributes(method, path, query)
        if req is None:
            return
        if self.allows(req):
            with self._lock:
                self.allowed.append(req)
            return
        with self._lock:
            self.denied.append(req)
        raise forbidden(req, self.user)


def forbidden(req: RequestAttributes, user: str) -> ApiError:
    """The exact Status the API server answers (k8s.io/apiserver's forbidden responder)."""
    subject = f'{req.qualified} "{req.name}"' if req.name else req.qualified
    scope = f'in the namespace "{req.namespace}"' if req.namespace else "at the cluster scope"
    message = (
        f'{subject} is forbidden: User "{user}" cannot {req.verb} resource "{req.resource}" '
        f'in API group "{req.group}" {scope}'
    )
    details: Obj = {"name": req.name} if req.name else {}
    if req.group:
        details["group"] = req.group
    details["kind"] = req.resource.split("/", 1)[0]
    return ApiError(403, message, reason="Forbidden", details=details)
