"""The sandbox External Secrets Operator: force-sync refreshes from the Secret Manager stand-in."""

from __future__ import annotations

import base64
import time

import pytest

from sandbox.external_secrets import ExternalSecretsController

NS = "aia-production"


@pytest.fixture
def operator(kube, secret_manager):  # type: ignore[no-untyped-def]
    controller = ExternalSecretsController(kube, secret_manager, interval=0.05).start()
    yield controller
    controller.stop()


def _force(kube, name: str, stamp: str) -> None:  # type: ignore[no-untyped-def]
    es = kube.get("ExternalSecret", name, NS)
    es["metadata"].setdefault("annotations", {})["force-sync"] = stamp
    kube.put(es)


def _ready(kube, name: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    es = kube.get("ExternalSecret", name, NS)
    return next(c for c in es["status"]["conditions"] if c["type"] == "Ready")


def _wait(predicate, timeout: float = 5) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_force_sync_writes_the_latest_versions_into_the_secret(kube, secret_manager, operator) -> None:  # type: ignore[no-untyped-def]
    secret_manager._secrets["aia-api-key"].versions.clear()
    secret_manager.put("aia-api-key", b"brand-new")
    _force(kube, "aia-secrets", "1")
    _wait(lambda: operator.syncs == 1)
    data = kube.get("Secret", "aia-secrets", NS)["data"]
    assert base64.b64decode(data["API_KEY"]) == b"brand-new"
    assert _ready(kube, "aia-secrets")["reason"] == "SecretSynced"
    _force(kube, "aia-secrets", "1")  # the same value again is no new request
    time.sleep(0.3)
    assert operator.syncs == 1


def test_unreadable_secret_is_a_sync_error_and_a_stopped_operator_never_syncs(kube, operator) -> None:  # type: ignore[no-untyped-def]
    _force(kube, "aia-oauth-credentials", "5")
    _wait(lambda: "permission" in _ready(kube, "aia-oauth-credentials")["message"].lower())
    assert _ready(kube, "aia-oauth-credentials")["reason"] == "SecretSyncedError"
    operator.syncing = False
    before = kube.get("ExternalSecret", "aia-secrets", NS)["status"]["refreshTime"]
    _force(kube, "aia-secrets", "6")
    time.sleep(0.4)
    assert kube.get("ExternalSecret", "aia-secrets", NS)["status"]["refreshTime"] == before
