"""The Secret Manager adapter: the official client over gRPC against the local stand-in."""

from __future__ import annotations

import time

import grpc
import pytest

from bot.adapters.secretmanager import SecretManagerGateway
from bot.errors import BackendUnavailable, UserError


def gateway(server, timeout: float = 3) -> SecretManagerGateway:  # type: ignore[no-untyped-def]
    return SecretManagerGateway("a-467519", server.address, timeout)


def test_versions_newest_first_with_state_and_time(secret_manager) -> None:  # type: ignore[no-untyped-def]
    secret_manager.put("multi", b"one", b"two", b"three")
    secret_manager._secrets["multi"].versions[0].state = "DISABLED"
    versions = gateway(secret_manager).versions("multi")
    assert [(v.number, v.state) for v in versions] == [(3, "ENABLED"), (2, "ENABLED"), (1, "DISABLED")]
    assert all(v.created is not None for v in versions)
    # Metadata only: the bot never asked for a payload.
    assert secret_manager.count("AccessSecretVersion") == 0


def test_versions_follow_pages(secret_manager) -> None:  # type: ignore[no-untyped-def]
    secret_manager.put("long", *[f"v{i}".encode() for i in range(130)])
    assert [v.number for v in gateway(secret_manager).versions("long")] == list(range(130, 0, -1))


def test_add_version_stores_exactly_the_bytes(secret_manager) -> None:  # type: ignore[no-untyped-def]
    number = gateway(secret_manager).add_version("aia-api-key", b"new-value-123")
    assert number == 3 and secret_manager.value("aia-api-key") == b"new-value-123"


def test_unknown_secret_is_a_user_error(secret_manager) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UserError, match="no secret `nope` in project `a-467519`"):
        gateway(secret_manager).versions("nope")


def test_permission_denied_names_the_permission_and_the_role(secret_manager) -> None:  # type: ignore[no-untyped-def]
    secret_manager.deny("secretmanager.versions.add", "aia-api-key")
    with pytest.raises(BackendUnavailable) as caught:
        gateway(secret_manager).add_version("aia-api-key", b"x")
    assert "secretmanager.versions.add" in str(caught.value)
    assert "roles/secretmanager.secretVersionAdder" in str(caught.value)
    assert secret_manager.latest("aia-api-key") == 2


def test_a_slow_service_times_out_within_the_deadline(secret_manager) -> None:  # type: ignore[no-untyped-def]
    secret_manager.delay_seconds = 3
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="did not answer within 1s"):
        gateway(secret_manager, timeout=1).versions("aia-api-key")
    assert time.monotonic() - started < 2.5


def test_unavailable_is_retried_then_reported(secret_manager) -> None:  # type: ignore[no-untyped-def]
    secret_manager.fail_next(grpc.StatusCode.UNAVAILABLE, "GetSecret", times=1)
    assert gateway(secret_manager).versions("aia-api-key")  # one flap is retried
    secret_manager.fail_next(grpc.StatusCode.UNAVAILABLE, "GetSecret", times=1000)
    with pytest.raises(BackendUnavailable):
        gateway(secret_manager, timeout=1).versions("aia-api-key")


def test_adding_a_version_is_never_retried(secret_manager) -> None:  # type: ignore[no-untyped-def]
    secret_manager.fail_next(grpc.StatusCode.UNAVAILABLE, "AddSecretVersion", times=1)
    with pytest.raises(BackendUnavailable, match="unreachable"):
        gateway(secret_manager).add_version("aia-api-key", b"x")
    assert secret_manager.count("AddSecretVersion") == 1 and secret_manager.latest("aia-api-key") == 2
