"""Any namespaced kind by apiVersion/kind: read, list and create (with dryRun=All).

`/aia dr plan|restore` recreates what a configuration backup holds, whatever kinds it holds
(Deployments, Services, ConfigMaps, RBAC, HPAs, PDBs, NetworkPolicies, ExternalSecrets...). The
core group goes through CoreV1Api's own methods (named after the kind); every other group
through CustomObjectsApi, which only formats ``/apis/GROUP/VERSION/namespaces/NS/PLURAL``
paths and so serves built-in groups as well, with the plural read from the API's discovery.
Still the official client, no hand-built HTTP.
"""

from __future__ import annotations

import json
import re
import threading
from typing import TYPE_CHECKING, Any

import urllib3
from kubernetes.client.exceptions import ApiException

from bot.errors import BackendUnavailable

if TYPE_CHECKING:
    from bot.adapters.kubernetes import KubeGateway

Obj = dict[str, Any]


class KindUnknown(Exception):
    """The cluster does not serve this apiVersion/kind (or not as a namespaced kind)."""


class ObjectRefused(Exception):
    """The API server refused one object (400/404/409/422): the message is the server's."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (ValueError, TypeError):
        return str(exc.reason)


def _snake(kind: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower()


class KubeObjects:
    def __init__(self, gateway: KubeGateway) -> None:
        self.namespace = gateway.namespace
        self._timeout = gateway._timeout
        self._core = gateway.core
        self._custom = gateway.custom
        self._plurals: dict[str, dict[str, tuple[str, bool]]] = {}
        self._lock = threading.Lock()

    def _raw(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Obj:
        kwargs.setdefault("_request_timeout", self._timeout)
        kwargs["_preload_content"] = False
        try:
            response = fn(*args, **kwargs)
        except ApiException as exc:
            # 403 too: RBAC may allow some kinds and not others; that is one object's answer.
            if exc.status in (400, 403, 404, 409, 422):
                raise ObjectRefused(exc.status, _message(exc)) from None
            if exc.status == 401:
                raise BackendUnavailable(
                    f"Kubernetes refused the bot ({exc.status}) while {what}: {_message(exc)}") from None
            raise BackendUnavailable(f"Kubernetes answered {exc.status} while {what}: {_message(exc)}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise BackendUnavailable(f"Kubernetes API did not answer while {what} ({type(exc).__name__})") from None
        result: Obj = json.loads(response.data)
        return result

    def _resource(self, api_version: str, kind: str) -> tuple[str, bool]:
        """(plural, namespaced) from discovery, cached per group/version."""
        with self._lock:
            known = self._plurals.get(api_version)
        if known is None:
            group, _, version = api_version.rpartition("/")
            try:
                listing = self._raw(f"discovering {api_version}", self._custom.get_api_resources, group, version)
            except ObjectRefused:
                raise KindUnknown(f"the cluster does not serve {api_version}") from None
            known = {str(r.get("kind")): (str(r.get("name")), bool(r.get("namespaced")))
                     for r in listing.get("resources") or [] if "/" not in str(r.get("name"))}
            with self._lock:
                self._plurals[api_version] = known
        if kind not in known:
            raise KindUnknown(f"the cluster does not serve {kind} in {api_version}")
        return known[kind]

    def _core_method(self, verb: str, kind: str) -> Any:
        method = getattr(self._core, f"{verb}_namespaced_{_snake(kind)}", None)
        if method is None:
            raise KindUnknown(f"the cluster does not serve {kind} in v1")
        return method

    def _check_namespaced(self, api_version: str, kind: str) -> str:
        if "/" not in api_version:
            self._core_method("read", kind)
            return ""
        plural, namespaced = self._resource(api_version, kind)
        if not namespaced:
            raise KindUnknown(f"{kind} is not namespaced; a namespace backup does not restore it")
        return plural

    def get(self, api_version: str, kind: str, name: str) -> Obj | None:
        plural = self._check_namespaced(api_version, kind)
        what = f"reading {kind} {name}"
        try:
            if not plural:
                return self._raw(what, self._core_method("read", kind), name, self.namespace)
            group, _, version = api_version.rpartition("/")
            return self._raw(what, self._custom.get_namespaced_custom_object, group, version, self.namespace,
                             plural, name)
        except ObjectRefused as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, api_version: str, kind: str) -> list[Obj]:
        plural = self._check_namespaced(api_version, kind)
        what = f"listing {kind}s"
        if not plural:
            items = self._raw(what, self._core_method("list", kind), self.namespace)["items"]
        else:
            group, _, version = api_version.rpartition("/")
            items = self._raw(what, self._custom.list_namespaced_custom_object, group, version, self.namespace,
                              plural)["items"]
        return list(items)

    def create(self, body: Obj, dry_run: bool = False) -> Obj:
        api_version, kind = str(body.get("apiVersion")), str(body.get("kind"))
        plural = self._check_namespaced(api_version, kind)
        name = (body.get("metadata") or {}).get("name")
        what = f"creating {kind} {name}"
        extra = {"dry_run": "All"} if dry_run else {}
        if not plural:
            return self._raw(what, self._core_method("create", kind), self.namespace, body, **extra)
        group, _, version = api_version.rpartition("/")
        return self._raw(what, self._custom.create_namespaced_custom_object, group, version, self.namespace,
                         plural, body, **extra)
