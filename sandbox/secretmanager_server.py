"""A local Secret Manager (v1) that speaks the real gRPC API, for the console sandbox and the tests.

It is built on the client library's own message types (`google.cloud.secretmanager_v1`),
so the official client reaches it unchanged through ``SECRETMANAGER_EMULATOR_HOST``.
State lives in memory. Tests can refuse a permission on a secret (the real service's
PERMISSION_DENIED text, naming the permission), fail the next calls with any status,
or slow every call down.
"""

from __future__ import annotations

import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
from google.cloud.secretmanager_v1 import types
from google.protobuf import empty_pb2

SERVICE = "google.cloud.secretmanager.v1.SecretManagerService"
# The permission each method needs on its secret (as IAM checks them).
PERMISSIONS = {
    "ListSecrets": "secretmanager.secrets.list",
    "CreateSecret": "secretmanager.secrets.create",
    "GetSecret": "secretmanager.secrets.get",
    "DeleteSecret": "secretmanager.secrets.delete",
    "AddSecretVersion": "secretmanager.versions.add",
    "ListSecretVersions": "secretmanager.versions.list",
    "GetSecretVersion": "secretmanager.versions.get",
    "AccessSecretVersion": "secretmanager.versions.access",
    "DisableSecretVersion": "secretmanager.versions.disable",
    "EnableSecretVersion": "secretmanager.versions.enable",
    "DestroySecretVersion": "secretmanager.versions.destroy",
}


@dataclass
class _Version:
    number: int
    data: bytes
    created: datetime
    state: str = "ENABLED"
    destroyed: datetime | None = None


@dataclass
class _Secret:
    name: str  # projects/P/secrets/ID
    created: datetime
    labels: dict[str, str] = field(default_factory=dict)
    versions: list[_Version] = field(default_factory=list)


@dataclass
class _Failure:
    code: grpc.StatusCode
    method: str
    times: int


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class FakeSecretManager:
    """Secret Manager v1 over gRPC on a local port."""

    def __init__(self, project: str = "a-467519", host: str = "127.0.0.1", port: int = 0) -> None:
        self.project = project
        self.host = host
        self.port = port
        self.delay_seconds = 0.0
        self.calls: list[tuple[str, str]] = []  # (method, resource)
        self._secrets: dict[str, _Secret] = {}
        self._denied: set[tuple[str, str]] = set()  # (permission, secret id or "*")
        self._failures: list[_Failure] = []
        self._lock = threading.RLock()
        self._server: grpc.Server | None = None

    # -- lifecycle ----------------------------------------------------------------
    @property
    def address(self) -> str:
        """What SECRETMANAGER_EMULATOR_HOST is set to."""
        return f"{self.host}:{self.port}"

    def start(self) -> FakeSecretManager:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        handlers = {name: self._handler(name, request, response)
                    for name, (request, response) in _METHODS.items()}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        self.port = server.add_insecure_port(f"{self.host}:{self.port}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)
            self._server = None

    def reset(self) -> None:
        with self._lock:
            self._secrets.clear()
            self._denied.clear()
            self._failures.clear()
            self.calls.clear()
            self.delay_seconds = 0.0

    # -- test controls (Python side) ------------------------------------------------
    def put(self, secret: str, *values: bytes, labels: dict[str, str] | None = None) -> None:
        """Create ``secret`` with one version per value (oldest first)."""
        with self._lock:
            now = datetime.now(UTC)
            entry = _Secret(self._path(secret), now, dict(labels or {}))
            for value in values:
                entry.versions.append(_Version(len(entry.versions) + 1, value, now))
            self._secrets[secret] = entry

    def value(self, secret: str, version: int | None = None) -> bytes:
        """The payload of a version (latest enabled by default): how tests check what the bot wrote."""
        with self._lock:
            return self._version(secret, "latest" if version is None else str(version)).data

    def latest(self, secret: str) -> int:
        with self._lock:
            return max(v.number for v in self._secrets[secret].versions)

    def deny(self, permission: str, secret: str = "*") -> None:  # noqa: S107 - "*" means every secret
        with self._lock:
            self._denied.add((permission, secret))

    def allow_all(self) -> None:
        with self._lock:
            self._denied.clear()

    def fail_next(self, code: grpc.StatusCode, method: str = "", times: int = 1) -> None:
        with self._lock:
            self._failures.append(_Failure(code, method, times))

    def count(self, method: str) -> int:
        with self._lock:
            return sum(1 for m, _ in self.calls if m == method)

    # -- plumbing -------------------------------------------------------------------
    def _path(self, secret: str) -> str:
        return f"projects/{self.project}/secrets/{secret}"

    def _handler(self, method: str, request_type: Any, response_type: Any) -> grpc.RpcMethodHandler:
        implementation = getattr(self, "_" + method)

        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            if self.delay_seconds:
                time.sleep(self.delay_seconds)
            try:
                with self._lock:
                    self._check(method, request)
                    return implementation(request)
            except _Abort as abort:
                context.abort(abort.code, abort.message)

        serializer = response_type.SerializeToString if response_type is empty_pb2.Empty else response_type.serialize
        return grpc.unary_unary_rpc_method_handler(
            handle, request_deserializer=request_type.deserialize, response_serializer=serializer)

    def _check(self, method: str, request: Any) -> None:
        resource = str(getattr(request, "name", "") or getattr(request, "parent", ""))
        self.calls.append((method, resource))
        for failure in self._failures:
            if failure.times > 0 and failure.method in ("", method):
                failure.times -= 1
                raise _Abort(failure.code, f"sandbox injected failure ({failure.code.name})")
        parts = resource.split("/")
        if len(parts) < 2 or parts[0] != "projects" or parts[1] != self.project:
            raise _Abort(grpc.StatusCode.PERMISSION_DENIED,
                         f"Permission '{PERMISSIONS[method]}' denied for resource '{resource}' (or it may not exist).")
        secret = parts[3] if len(parts) > 3 else "*"
        permission = PERMISSIONS[method]
        if (permission, secret) in self._denied or (permission, "*") in self._denied:
            raise _Abort(grpc.StatusCode.PERMISSION_DENIED,
                         f"Permission '{permission}' denied for resource '{resource}' (or it may not exist).")

    def _secret(self, secret_id: str) -> _Secret:
        entry = self._secrets.get(secret_id)
        if entry is None:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"Secret [{self._path(secret_id)}] not found or has no versions.")
        return entry

    def _version(self, secret_id: str, which: str) -> _Version:
        entry = self._secret(secret_id)
        if which == "latest":
            enabled = [v for v in entry.versions if v.state == "ENABLED"]
            if not enabled:
                raise _Abort(grpc.StatusCode.FAILED_PRECONDITION,
                             f"Secret [{entry.name}] has no enabled versions.")
            return max(enabled, key=lambda v: v.number)
        found = next((v for v in entry.versions if str(v.number) == which), None)
        if found is None:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"Secret Version [{entry.name}/versions/{which}] not found.")
        return found

    @staticmethod
    def _split(name: str) -> tuple[str, str]:
        parts = name.split("/")
        return parts[3], (parts[5] if len(parts) > 5 else "")

    def _secret_message(self, entry: _Secret) -> types.Secret:
        return types.Secret(name=entry.name, create_time=entry.created, labels=entry.labels,
                            replication=types.Replication(automatic=types.Replication.Automatic()))

    def _version_message(self, entry: _Secret, version: _Version) -> types.SecretVersion:
        message = types.SecretVersion(name=f"{entry.name}/versions/{version.number}", create_time=version.created,
                                      state=getattr(types.SecretVersion.State, version.state))
        if version.destroyed:
            message.destroy_time = version.destroyed
        return message

    # -- the API ------------------------------------------------------------------
    def _ListSecrets(self, request: types.ListSecretsRequest) -> types.ListSecretsResponse:  # noqa: N802
        secrets = [self._secret_message(s) for _, s in sorted(self._secrets.items())]
        return types.ListSecretsResponse(secrets=secrets, total_size=len(secrets))

    def _CreateSecret(self, request: types.CreateSecretRequest) -> types.Secret:  # noqa: N802
        if request.secret_id in self._secrets:
            raise _Abort(grpc.StatusCode.ALREADY_EXISTS, f"Secret [{self._path(request.secret_id)}] already exists.")
        self.put(request.secret_id, labels=dict(request.secret.labels))
        return self._secret_message(self._secrets[request.secret_id])

    def _GetSecret(self, request: types.GetSecretRequest) -> types.Secret:  # noqa: N802
        return self._secret_message(self._secret(self._split(request.name)[0]))

    def _DeleteSecret(self, request: types.DeleteSecretRequest) -> empty_pb2.Empty:  # noqa: N802
        secret_id = self._split(request.name)[0]
        self._secret(secret_id)
        del self._secrets[secret_id]
        return empty_pb2.Empty()

    def _AddSecretVersion(self, request: types.AddSecretVersionRequest) -> types.SecretVersion:  # noqa: N802
        entry = self._secret(self._split(request.parent)[0])
        if len(request.payload.data) > 65536:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "Secret payload data must be at most 65536 bytes.")
        version = _Version(max((v.number for v in entry.versions), default=0) + 1, bytes(request.payload.data),
                           datetime.now(UTC))
        entry.versions.append(version)
        return self._version_message(entry, version)

    def _ListSecretVersions(self, request: types.ListSecretVersionsRequest) -> types.ListSecretVersionsResponse:  # noqa: N802
        entry = self._secret(self._split(request.parent)[0])
        ordered = sorted(entry.versions, key=lambda v: v.number, reverse=True)
        start = int(request.page_token or 0)
        size = request.page_size or 25
        page = ordered[start:start + size]
        token = str(start + size) if start + size < len(ordered) else ""
        return types.ListSecretVersionsResponse(versions=[self._version_message(entry, v) for v in page],
                                                next_page_token=token, total_size=len(ordered))

    def _GetSecretVersion(self, request: types.GetSecretVersionRequest) -> types.SecretVersion:  # noqa: N802
        secret_id, which = self._split(request.name)
        return self._version_message(self._secret(secret_id), self._version(secret_id, which))

    def _AccessSecretVersion(self, request: types.AccessSecretVersionRequest) -> types.AccessSecretVersionResponse:  # noqa: N802
        secret_id, which = self._split(request.name)
        entry = self._secret(secret_id)
        version = self._version(secret_id, which)
        if version.state != "ENABLED":
            raise _Abort(grpc.StatusCode.FAILED_PRECONDITION,
                         f"Secret Version [{entry.name}/versions/{version.number}] is in {version.state} state.")
        return types.AccessSecretVersionResponse(name=f"{entry.name}/versions/{version.number}",
                                                 payload=types.SecretPayload(data=version.data))

    def _set_state(self, name: str, state: str) -> types.SecretVersion:
        secret_id, which = self._split(name)
        entry = self._secret(secret_id)
        version = self._version(secret_id, which)
        if version.state == "DESTROYED":
            raise _Abort(grpc.StatusCode.FAILED_PRECONDITION, "The version is destroyed.")
        version.state = state
        if state == "DESTROYED":
            version.destroyed = datetime.now(UTC)
            version.data = b""
        return self._version_message(entry, version)

    def _DisableSecretVersion(self, request: types.DisableSecretVersionRequest) -> types.SecretVersion:  # noqa: N802
        return self._set_state(request.name, "DISABLED")

    def _EnableSecretVersion(self, request: types.EnableSecretVersionRequest) -> types.SecretVersion:  # noqa: N802
        return self._set_state(request.name, "ENABLED")

    def _DestroySecretVersion(self, request: types.DestroySecretVersionRequest) -> types.SecretVersion:  # noqa: N802
        return self._set_state(request.name, "DESTROYED")


_METHODS: dict[str, tuple[Any, Any]] = {
    "ListSecrets": (types.ListSecretsRequest, types.ListSecretsResponse),
    "CreateSecret": (types.CreateSecretRequest, types.Secret),
    "GetSecret": (types.GetSecretRequest, types.Secret),
    "DeleteSecret": (types.DeleteSecretRequest, empty_pb2.Empty),
    "AddSecretVersion": (types.AddSecretVersionRequest, types.SecretVersion),
    "ListSecretVersions": (types.ListSecretVersionsRequest, types.ListSecretVersionsResponse),
    "GetSecretVersion": (types.GetSecretVersionRequest, types.SecretVersion),
    "AccessSecretVersion": (types.AccessSecretVersionRequest, types.AccessSecretVersionResponse),
    "DisableSecretVersion": (types.DisableSecretVersionRequest, types.SecretVersion),
    "EnableSecretVersion": (types.EnableSecretVersionRequest, types.SecretVersion),
    "DestroySecretVersion": (types.DestroySecretVersionRequest, types.SecretVersion),
}


def seed_aia_secrets(server: FakeSecretManager) -> None:
    """The secrets the seeded ExternalSecrets read; values are obviously fake."""
    server.put("aia-database-url", b"postgresql://aia:sandbox-db-password@10.20.0.3:5432/aia")
    server.put("aia-redis-url", b"redis://:sandbox-redis-password@10.20.0.4:6379/0")
    server.put("aia-api-key", b"sandbox-api-key-v1", b"sandbox-api-key-v2")
    # aia-oauth-client-secret exists, but the bot's sync identity may not read it (the seeded failure).
    server.put("aia-oauth-client-secret", b"sandbox-oauth-secret")
