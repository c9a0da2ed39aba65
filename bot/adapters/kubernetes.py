"""Kubernetes through the official client.

Responses are read as the API's own JSON (``_preload_content=False``) instead
of the client's model classes: the procedures then speak the same field names
as ``kubectl -o json`` and the runbook, and we skip the client's slow
deserialisation of large pod lists.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from bot.errors import BackendUnavailable, ConfigurationError, UserError

log = logging.getLogger(__name__)

Obj = dict[str, Any]

EXTERNAL_SECRETS_GROUP = "external-secrets.io"
EXTERNAL_SECRETS_VERSION = "v1"


def _status_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "{}")
        return str(body.get("message") or exc.reason)
    except (ValueError, TypeError):
        return str(exc.reason)


def load_api_modules() -> None:
    """Import the API classes a gateway is built with.

    The client imports them on first use, some 90,000 objects. A long-running process
    (``aia-bot serve``) loads them at start, before it freezes what it has built out of
    the garbage collector's full passes: loaded later, they make every full pass (several
    per alert storm) stall all threads for 50+ ms.
    """
    for name in ("ApiClient", "CoreV1Api", "AppsV1Api", "CustomObjectsApi"):
        getattr(client, name)


class KubeGateway:
    def __init__(self, kubeconfig: str | None, namespace: str, timeout: float) -> None:
        self.namespace = namespace
        self._timeout = timeout
        try:
            if kubeconfig:
                api_client = config.new_client_from_config(config_file=kubeconfig)
            else:
                try:
                    config.load_incluster_config()
                    api_client = client.ApiClient()
                except ConfigException:
                    api_client = config.new_client_from_config()
        except (ConfigException, OSError, TypeError) as exc:
            raise ConfigurationError(f"KUBECONFIG: cannot load a Kubernetes configuration ({exc})") from None
        # Several worker threads share this client: size the pool for them.
        api_client.rest_client.pool_manager.connection_pool_kw["maxsize"] = 32
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    # -- plumbing -----------------------------------------------------------
    def _call(self, what: str, fn: Any, *args: Any, not_found: str | None = None, **kwargs: Any) -> Any:
        kwargs.setdefault("_request_timeout", self._timeout)
        kwargs["_preload_content"] = False
        try:
            response = fn(*args, **kwargs)
        except ApiException as exc:
            if exc.status == 404 and not_found:
                raise UserError(not_found) from None
            if exc.status in (400, 422):
                raise UserError(_status_message(exc)) from None
            if exc.status == 409:
                raise UserError(
                    f"Kubernetes refused ({_status_message(exc)}): the object changed meanwhile; try again."
                ) from None
            if exc.status in (401, 403):
                raise BackendUnavailable(
                    f"Kubernetes refused the bot ({exc.status}) while {what}: {_status_message(exc)}"
                ) from None
            raise BackendUnavailable(
                f"Kubernetes answered {exc.status} while {what}: {_status_message(exc)}"
            ) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise BackendUnavailable(
                f"Kubernetes API did not answer while {what} ({type(exc).__name__})"
            ) from None
        data = response.data
        return data

    def _json(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Obj:
        return json.loads(self._call(what, fn, *args, **kwargs))

    # -- reads ---------------------------------------------------------------
    def version(self) -> Obj:
        return self._json("reading the version", client.VersionApi(self.api_client).get_code)

    def nodes(self) -> list[Obj]:
        return self._json("listing nodes", self.core.list_node)["items"]

    def pods(self, selector: str | None = None, field_selector: str | None = None) -> list[Obj]:
        kwargs: dict[str, Any] = {}
        if selector:
            kwargs["label_selector"] = selector
        if field_selector:
            kwargs["field_selector"] = field_selector
        return self._json(
            "listing pods", self.core.list_namespaced_pod, self.namespace, **kwargs
        )["items"]

    def pod(self, name: str) -> Obj:
        return self._json(
            f"reading pod {name}",
            self.core.read_namespaced_pod,
            name,
            self.namespace,
            not_found=f"Pod `{name}` does not exist in namespace `{self.namespace}`. "
            "List pods with `/aia pods`.",
        )

    def events(self, field_selector: str | None = None) -> list[Obj]:
        kwargs = {"field_selector": field_selector} if field_selector else {}
        return self._json(
            "listing events", self.core.list_namespaced_event, self.namespace, **kwargs
        )["items"]

    def pod_log(
        self,
        name: str,
        container: str | None = None,
        previous: bool = False,
        since_seconds: int | None = None,
        tail_lines: int | None = None,
        limit_bytes: int | None = None,
    ) -> str:
        kwargs: dict[str, Any] = {"previous": previous}
        if container:
            kwargs["container"] = container
        if since_seconds:
            kwargs["since_seconds"] = since_seconds
        if tail_lines:
            kwargs["tail_lines"] = tail_lines
        if limit_bytes:
            kwargs["limit_bytes"] = limit_bytes
        raw = self._call(
            f"reading the log of {name}",
            self.core.read_namespaced_pod_log,
            name,
            self.namespace,
            not_found=f"Pod `{name}` does not exist in namespace `{self.namespace}`. "
            "List pods with `/aia pods`.",
            **kwargs,
        )
        return raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)

    def deployments(self) -> list[Obj]:
        return self._json(
            "listing deployments", self.apps.list_namespaced_deployment, self.namespace
        )["items"]

    def deployment(self, name: str) -> Obj:
        return self._json(
            f"reading deployment {name}",
            self.apps.read_namespaced_deployment,
            name,
            self.namespace,
            not_found=f"Deployment `{name}` does not exist in namespace `{self.namespace}`.",
        )

    def resource_quotas(self) -> list[Obj]:
        return self._json(
            "listing resource quotas", self.core.list_namespaced_resource_quota, self.namespace
        )["items"]

    def external_secrets(self) -> list[Obj]:
        """ExternalSecrets at ``external-secrets.io/v1``, the only version External Secrets
        Operator serves since v0.17 (v1 exists since v0.16). An older operator serving only
        v1beta1 answers 404 here: say so rather than "not found"."""
        try:
            return self._json(
                "listing external secrets",
                self.custom.list_namespaced_custom_object,
                EXTERNAL_SECRETS_GROUP,
                EXTERNAL_SECRETS_VERSION,
                self.namespace,
                "externalsecrets",
            )["items"]
        except BackendUnavailable as exc:
            if "answered 404" not in str(exc):
                raise
            raise BackendUnavailable(self._external_secrets_missing()) from None

    def _external_secrets_missing(self) -> str:
        try:
            group = self._json(
                "reading the external-secrets.io API group",
                client.ApisApi(self.api_client).get_api_versions,
            )
        except BackendUnavailable:
            group = {}
        served = sorted(
            v.get("version", "")
            for g in group.get("groups") or []
            if g.get("name") == EXTERNAL_SECRETS_GROUP
            for v in g.get("versions") or []
        )
        if not served:
            return (
                "This cluster has no External Secrets Operator (no external-secrets.io API): "
                "install it (v0.17 or later) to sync secrets from Secret Manager."
            )
        return (
            f"External Secrets Operator here serves only external-secrets.io/{', '.join(served)}; "
            f"the bot reads {EXTERNAL_SECRETS_GROUP}/{EXTERNAL_SECRETS_VERSION}. Upgrade the "
            "operator to v0.17 or later (v1 exists since v0.16; v1beta1 is no longer served)."
        )

    def external_secret(self, name: str) -> Obj:
        return self._json(
            f"reading external secret {name}",
            self.custom.get_namespaced_custom_object,
            EXTERNAL_SECRETS_GROUP, EXTERNAL_SECRETS_VERSION, self.namespace, "externalsecrets", name,
            not_found=f"ExternalSecret `{name}` does not exist in namespace `{self.namespace}`.",
        )

    def annotate_external_secret(self, name: str, annotations: dict[str, str]) -> Obj:
        """A merge patch of annotations only (``force-sync`` makes the operator refresh now)."""
        return self._json(
            f"annotating external secret {name}",
            self.custom.patch_namespaced_custom_object,
            EXTERNAL_SECRETS_GROUP, EXTERNAL_SECRETS_VERSION, self.namespace, "externalsecrets", name,
            {"metadata": {"annotations": annotations}},
            not_found=f"ExternalSecret `{name}` does not exist in namespace `{self.namespace}`.",
        )

    def pod_metrics(self) -> list[Obj]:
        return self._json(
            "reading pod metrics (metrics.k8s.io)",
            self.custom.list_namespaced_custom_object,
            "metrics.k8s.io",
            "v1beta1",
            self.namespace,
            "pods",
        )["items"]

    def node_metrics(self) -> list[Obj]:
        return self._json(
            "reading node metrics (metrics.k8s.io)",
            self.custom.list_cluster_custom_object,
            "metrics.k8s.io",
            "v1beta1",
            "nodes",
        )["items"]

    # -- writes (namespace-scoped only) ------------------------------------
    # Every write takes dry_run: a server-side dry run (dryRun=All) validates and
    # answers with the object as it would be, which is what previews are made of.

    @staticmethod
    def _dry(dry_run: bool) -> dict[str, Any]:
        return {"dry_run": "All"} if dry_run else {}

    def patch_deployment(self, name: str, patch: Obj, dry_run: bool = False) -> Obj:
        return self._json(
            f"patching deployment {name}",
            self.apps.patch_namespaced_deployment,
            name,
            self.namespace,
            patch,
            not_found=f"Deployment `{name}` does not exist in namespace `{self.namespace}`.",
            **self._dry(dry_run),
        )

    def scale_deployment(self, name: str, replicas: int, dry_run: bool = False) -> Obj:
        return self._json(
            f"scaling deployment {name}",
            self.apps.patch_namespaced_deployment_scale,
            name,
            self.namespace,
            {"spec": {"replicas": replicas}},
            not_found=f"Deployment `{name}` does not exist in namespace `{self.namespace}`.",
            **self._dry(dry_run),
        )

    def create_deployment(self, body: Obj, dry_run: bool = False) -> Obj:
        return self._json(
            "creating a deployment", self.apps.create_namespaced_deployment, self.namespace, body,
            **self._dry(dry_run),
        )

    def delete_deployment(self, name: str, dry_run: bool = False) -> Obj:
        return self._json(
            f"deleting deployment {name}",
            self.apps.delete_namespaced_deployment,
            name,
            self.namespace,
            not_found=f"Deployment `{name}` does not exist in namespace `{self.namespace}`.",
            **self._dry(dry_run),
        )

    def replica_sets(self, selector: str | None = None) -> list[Obj]:
        kwargs = {"label_selector": selector} if selector else {}
        return self._json(
            "listing replica sets", self.apps.list_namespaced_replica_set, self.namespace, **kwargs
        )["items"]

    def service(self, name: str) -> Obj:
        return self._json(
            f"reading service {name}",
            self.core.read_namespaced_service,
            name,
            self.namespace,
            not_found=f"Service `{name}` does not exist in namespace `{self.namespace}`.",
        )

    def patch_service(self, name: str, patch: Obj, dry_run: bool = False) -> Obj:
        return self._json(
            f"patching service {name}",
            self.core.patch_namespaced_service,
            name,
            self.namespace,
            patch,
            not_found=f"Service `{name}` does not exist in namespace `{self.namespace}`.",
            **self._dry(dry_run),
        )

    def config_map(self, name: str) -> Obj:
        return self._json(
            f"reading config map {name}",
            self.core.read_namespaced_config_map,
            name,
            self.namespace,
            not_found=f"Config map `{name}` does not exist in namespace `{self.namespace}`.",
        )

    def patch_config_map(self, name: str, patch: Obj, dry_run: bool = False) -> Obj:
        return self._json(
            f"patching config map {name}",
            self.core.patch_namespaced_config_map,
            name,
            self.namespace,
            patch,
            not_found=f"Config map `{name}` does not exist in namespace `{self.namespace}`.",
            **self._dry(dry_run),
        )

    def delete_pod(self, name: str, dry_run: bool = False) -> Obj:
        return self._json(
            f"deleting pod {name}",
            self.core.delete_namespaced_pod,
            name,
            self.namespace,
            not_found=f"Pod `{name}` does not exist in namespace `{self.namespace}`.",
            **self._dry(dry_run),
        )

    def service_health(self, service: str, port: int, path: str = "health") -> tuple[int, str]:
        """GET through the API server's service proxy: (HTTP status, body)."""
        try:
            raw = self._call(
                f"calling /{path} of service {service}",
                self.core.connect_get_namespaced_service_proxy_with_path,
                f"{service}:{port}",
                self.namespace,
                path,
            )
        except (UserError, BackendUnavailable) as exc:
            return 503, str(exc)
        text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
        return 200, text[:500]

    def list_for_backup(self) -> dict[str, list[Obj]]:
        """What rebuilds the namespace, for `/aia config backup`, in the order it is re-applied.

        Secrets are not read at all: they come back from Secret Manager through the
        ExternalSecret (and the bot needs no right to read them for a backup).
        """
        ns = self.namespace
        rbac = client.RbacAuthorizationV1Api(self.api_client)
        networking = client.NetworkingV1Api(self.api_client)
        autoscaling = client.AutoscalingV2Api(self.api_client)
        policy = client.PolicyV1Api(self.api_client)

        def custom(group: str, version: str, plural: str) -> Any:
            return lambda namespace, **kw: self.custom.list_namespaced_custom_object(
                group, version, namespace, plural, **kw)

        sources: dict[str, Any] = {
            "ServiceAccount": self.core.list_namespaced_service_account,
            "Role": rbac.list_namespaced_role,
            "RoleBinding": rbac.list_namespaced_role_binding,
            "ConfigMap": self.core.list_namespaced_config_map,
            "SecretStore": custom(EXTERNAL_SECRETS_GROUP, EXTERNAL_SECRETS_VERSION, "secretstores"),
            "Deployment": self.apps.list_namespaced_deployment,
            "Service": self.core.list_namespaced_service,
            "HorizontalPodAutoscaler": autoscaling.list_namespaced_horizontal_pod_autoscaler,
            "PodDisruptionBudget": policy.list_namespaced_pod_disruption_budget,
            "NetworkPolicy": networking.list_namespaced_network_policy,
            "Ingress": networking.list_namespaced_ingress,
        }
        listed = {kind: self._json(f"listing {kind}s", fn, ns)["items"] for kind, fn in sources.items()}
        listed["ExternalSecret"] = self.external_secrets()
        return listed
