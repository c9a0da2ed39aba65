"""The Secret Manager stand-in answers the official client as the real service does."""

from __future__ import annotations

import grpc
import pytest
from google.api_core import exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import secretmanager_v1
from google.cloud.secretmanager_v1.services.secret_manager_service.transports.grpc import (
    SecretManagerServiceGrpcTransport,
)

PARENT = "projects/a-467519"


@pytest.fixture
def client(secret_manager):  # type: ignore[no-untyped-def]
    transport = SecretManagerServiceGrpcTransport(channel=grpc.insecure_channel(secret_manager.address),
                                                  credentials=AnonymousCredentials())
    return secretmanager_v1.SecretManagerServiceClient(transport=transport)


def test_create_add_access_disable(client, secret_manager) -> None:  # type: ignore[no-untyped-def]
    client.create_secret(request={"parent": PARENT, "secret_id": "fresh", "secret": {"replication": {"automatic": {}}}})
    with pytest.raises(exceptions.AlreadyExists):
        client.create_secret(request={"parent": PARENT, "secret_id": "fresh", "secret": {}})
    with pytest.raises(exceptions.FailedPrecondition):  # no versions yet
        client.access_secret_version(name=f"{PARENT}/secrets/fresh/versions/latest")
    first = client.add_secret_version(parent=f"{PARENT}/secrets/fresh", payload={"data": b"one"})
    client.add_secret_version(parent=f"{PARENT}/secrets/fresh", payload={"data": b"two"})
    assert first.name.endswith("/versions/1")
    assert client.access_secret_version(name=f"{PARENT}/secrets/fresh/versions/latest").payload.data == b"two"
    client.disable_secret_version(name=f"{PARENT}/secrets/fresh/versions/2")
    assert client.access_secret_version(name=f"{PARENT}/secrets/fresh/versions/latest").payload.data == b"one"
    with pytest.raises(exceptions.FailedPrecondition):
        client.access_secret_version(name=f"{PARENT}/secrets/fresh/versions/2")
    states = {v.name.rsplit("/", 1)[1]: v.state.name for v in client.list_secret_versions(parent=f"{PARENT}/secrets/fresh")}
    assert states == {"2": "DISABLED", "1": "ENABLED"}
    assert "fresh" in [s.name.rsplit("/", 1)[1] for s in client.list_secrets(parent=PARENT)]


def test_unknown_secret_and_other_project(client) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(exceptions.NotFound):
        client.get_secret(name=f"{PARENT}/secrets/missing")
    with pytest.raises(exceptions.PermissionDenied, match="secretmanager.secrets.get"):
        client.get_secret(name="projects/someone-else/secrets/aia-api-key")


def test_denied_permission_and_injected_failure(client, secret_manager) -> None:  # type: ignore[no-untyped-def]
    secret_manager.deny("secretmanager.versions.access", "aia-database-url")
    with pytest.raises(exceptions.PermissionDenied, match="'secretmanager.versions.access' denied"):
        client.access_secret_version(name=f"{PARENT}/secrets/aia-database-url/versions/latest")
    assert client.access_secret_version(name=f"{PARENT}/secrets/aia-api-key/versions/1").payload.data
    secret_manager.fail_next(grpc.StatusCode.INTERNAL, "GetSecret")
    with pytest.raises(exceptions.InternalServerError):
        client.get_secret(name=f"{PARENT}/secrets/aia-api-key", retry=None)
    assert client.get_secret(name=f"{PARENT}/secrets/aia-api-key").name.endswith("aia-api-key")
