"""A small External Secrets Operator for the sandbox cluster: ExternalSecrets sync from the
local Secret Manager.

It follows the operator's conventions the bot relies on: a changed ``force-sync``
annotation makes it refresh at once; a refresh reads every ``remoteRef`` (latest
version unless one is named), writes the target Secret and sets ``status.refreshTime``
and the ``Ready`` condition (``SecretSynced``); a failed read leaves the Secret alone
and sets ``Ready=False`` / ``SecretSyncedError`` with the reason. ``syncing = False``
models an operator that is down: nothing ever syncs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
from datetime import UTC, datetime
from typing import Any

from sandbox.kube_server import FakeKubeAPIServer
from sandbox.secretmanager_server import FakeSecretManager

log = logging.getLogger(__name__)
FORCE_SYNC = "force-sync"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ExternalSecretsController:
    def __init__(self, kube: FakeKubeAPIServer, secret_manager: FakeSecretManager,
                 namespace: str = "aia-production", interval: float = 0.1) -> None:
        self.kube = kube
        self.secret_manager = secret_manager
        self.namespace = namespace
        self.interval = interval
        self.syncing = True
        # Secret Manager secrets the operator's own identity may not read (the seeded failure).
        self.unreadable: set[str] = {"aia-oauth-client-secret"}
        self.syncs = 0
        self._seen: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ExternalSecretsController:
        self._thread = threading.Thread(target=self._run, name="sandbox-external-secrets", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def reset(self) -> None:
        self.syncing = True
        self.syncs = 0
        self.unreadable = {"aia-oauth-client-secret"}
        self._seen.clear()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if not self.syncing:
                continue
            try:
                self.reconcile()
            except Exception:  # noqa: BLE001 - a sandbox controller keeps running, like the real one
                log.exception("sandbox ExternalSecrets controller: reconcile failed")

    def reconcile(self) -> None:
        for es in self.kube.list("ExternalSecret", self.namespace):
            meta = es["metadata"]
            forced = (meta.get("annotations") or {}).get(FORCE_SYNC)
            key = meta["name"]
            if forced and self._seen.get(key) != forced:
                self._seen[key] = forced
                self.sync(key)

    def sync(self, name: str) -> None:
        """Refresh one ExternalSecret now (reads the object again under the server's lock)."""
        values: dict[str, str] = {}
        error = None
        with self.kube._lock:  # noqa: SLF001 - a controller inside the server, not a client of it
            es = self.kube.get("ExternalSecret", name, self.namespace)
            if es is None:
                return
        for item in (es.get("spec") or {}).get("data") or []:
            ref = item.get("remoteRef") or {}
            secret = str(ref.get("key"))
            version = ref.get("version")
            try:
                if secret in self.unreadable:
                    raise PermissionError(f"Permission 'secretmanager.versions.access' denied for resource "
                                          f"'projects/{self.secret_manager.project}/secrets/{secret}/versions/latest'")
                data = self.secret_manager.value(secret, int(version) if version and version != "latest" else None)
            except Exception as exc:  # noqa: BLE001 - whatever failed becomes the condition's message
                error = f"could not get secret data from provider: {exc}"
                break
            values[str(item.get("secretKey"))] = base64.b64encode(data).decode()
        with self.kube._lock:  # noqa: SLF001
            es = self.kube.get("ExternalSecret", name, self.namespace)
            if es is None:
                return
            status: dict[str, Any] = dict(es.get("status") or {})
            now = _now()
            if error is None:
                target = ((es.get("spec") or {}).get("target") or {}).get("name") or name
                secret_obj = self.kube.get("Secret", target, self.namespace) or {
                    "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                    "metadata": {"name": target, "namespace": self.namespace}}
                secret_obj["data"] = values
                secret_obj["metadata"].setdefault("annotations", {})["reconcile.external-secrets.io/data-hash"] = \
                    hashlib.md5(json.dumps(values, sort_keys=True).encode(), usedforsecurity=False).hexdigest()
                self.kube.put(secret_obj)
                hashed = hashlib.md5(json.dumps(es["metadata"].get("annotations") or {}, sort_keys=True).encode(),
                                     usedforsecurity=False).hexdigest()
                status.update({
                    "refreshTime": now, "binding": {"name": target},
                    "syncedResourceVersion": f"{es['metadata'].get('generation', 1)}-{hashed}",
                    "conditions": [{"type": "Ready", "status": "True", "reason": "SecretSynced",
                                    "message": "Secret was synced", "lastTransitionTime": now}],
                })
                self.syncs += 1
            else:
                status["conditions"] = [{"type": "Ready", "status": "False", "reason": "SecretSyncedError",
                                         "message": error, "lastTransitionTime": now}]
            es["status"] = status
            self.kube.put(es)
