"""Secret Manager through the official client (`google.cloud.secretmanager_v1`).

The bot reads metadata (secrets, versions, states) and adds versions; it never reads
a value (no AccessSecretVersion here, and its service account is not granted
`secretmanager.versions.access`). With ``SECRETMANAGER_EMULATOR_HOST`` the client
talks plaintext gRPC to a local server with anonymous credentials (Google's emulator
convention, as ``PUBSUB_EMULATOR_HOST``); otherwise application default credentials
(Workload Identity in GKE). Every call has a deadline; gRPC errors become short
messages that name the missing IAM permission, never a stack trace.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from bot.errors import BackendUnavailable, ConfigurationError, UserError

log = logging.getLogger(__name__)

T = TypeVar("T")
_PERMISSION = re.compile(r"Permission '([a-z.A-Z]+)' denied")
SECRET_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")

# The permission each call needs, for the message when it is refused without naming it.
NEEDS = {
    "get_secret": "secretmanager.secrets.get",
    "list_secret_versions": "secretmanager.versions.list",
    "add_secret_version": "secretmanager.versions.add",
}
ROLE_OF = {
    "secretmanager.secrets.get": "roles/secretmanager.viewer",
    "secretmanager.versions.list": "roles/secretmanager.viewer",
    "secretmanager.versions.get": "roles/secretmanager.viewer",
    "secretmanager.versions.add": "roles/secretmanager.secretVersionAdder",
}


@dataclass(frozen=True)
class VersionInfo:
    number: int
    state: str  # ENABLED | DISABLED | DESTROYED
    created: datetime | None
    destroyed: datetime | None = None


class SecretManagerGateway:
    def __init__(self, project: str, emulator_host: str | None, timeout: float) -> None:
        self.project = project
        self._timeout = timeout
        try:
            from google.cloud import secretmanager_v1
            from google.cloud.secretmanager_v1.services.secret_manager_service.transports.grpc import (
                SecretManagerServiceGrpcTransport,
            )
        except ImportError:  # pragma: no cover - a dependency of the package
            raise ConfigurationError("google-cloud-secret-manager is not installed") from None
        self._types = secretmanager_v1
        if emulator_host:
            import grpc
            from google.auth.credentials import AnonymousCredentials

            transport = SecretManagerServiceGrpcTransport(
                channel=grpc.insecure_channel(emulator_host), credentials=AnonymousCredentials())
            self._client = secretmanager_v1.SecretManagerServiceClient(transport=transport)
        else:
            from google.auth.exceptions import DefaultCredentialsError

            try:
                self._client = secretmanager_v1.SecretManagerServiceClient()
            except DefaultCredentialsError:
                raise BackendUnavailable(
                    "No Google credentials for Secret Manager (Workload Identity or "
                    "GOOGLE_APPLICATION_CREDENTIALS), or set SECRETMANAGER_EMULATOR_HOST.") from None

    def secret_path(self, secret: str) -> str:
        return f"projects/{self.project}/secrets/{secret}"

    def _call(self, method: str, secret: str, fn: Callable[..., T], **kwargs: Any) -> T:
        from google.api_core import exceptions as gexc

        resource = self.secret_path(secret)
        if "retry" not in kwargs:
            from google.api_core.retry import Retry, if_exception_type

            # Reads retry a flapping connection, but never past the call's own deadline.
            kwargs["retry"] = Retry(initial=0.2, maximum=1.0, multiplier=2.0, timeout=self._timeout,
                                    predicate=if_exception_type(gexc.ServiceUnavailable))
        try:
            return fn(timeout=self._timeout, **kwargs)
        except gexc.PermissionDenied as exc:
            found = _PERMISSION.search(str(exc.message))
            permission = found.group(1) if found else NEEDS.get(method, "secretmanager.*")
            role = ROLE_OF.get(permission, "a Secret Manager role")
            raise BackendUnavailable(
                f"Secret Manager refused the bot: it lacks `{permission}` on `{resource}` (or the secret does "
                f"not exist). Grant {role} on that secret to the bot's service account (docs/deploy.md)."
            ) from None
        except gexc.NotFound:
            raise UserError(f"Secret Manager has no secret `{secret}` in project `{self.project}`.") from None
        except gexc.FailedPrecondition as exc:
            raise UserError(f"Secret Manager refused ({_short(exc)}) for `{resource}`.") from None
        except gexc.Unauthenticated:
            raise BackendUnavailable("Secret Manager did not accept the bot's Google credentials "
                                     "(Workload Identity binding?).") from None
        except (gexc.DeadlineExceeded, gexc.RetryError):
            raise BackendUnavailable(
                f"Secret Manager did not answer within {self._timeout:g}s ({method} on `{resource}`); "
                "nothing more was done. Check the Google Cloud status page and the bot's egress.") from None
        except gexc.ServiceUnavailable:
            raise BackendUnavailable(
                f"Secret Manager is unreachable ({method} on `{resource}`); nothing more was done.") from None
        except gexc.GoogleAPICallError as exc:
            raise BackendUnavailable(f"Secret Manager failed ({type(exc).__name__}) on {method} of "
                                     f"`{resource}`: {_short(exc)}") from None

    # -- reads --------------------------------------------------------------------
    def exists(self, secret: str) -> bool:
        self._call("get_secret", secret, self._client.get_secret, name=self.secret_path(secret))
        return True

    def versions(self, secret: str) -> list[VersionInfo]:
        """Every version, newest first (metadata only: the call carries no payload)."""
        self.exists(secret)  # a clear "no such secret" instead of an empty list
        pager = self._call("list_secret_versions", secret, self._client.list_secret_versions,
                           request={"parent": self.secret_path(secret), "page_size": 100})
        found = []
        for version in pager:
            number = int(str(version.name).rsplit("/", 1)[-1])
            found.append(VersionInfo(number, self._types.SecretVersion.State(version.state).name,
                                     _when(version.create_time), _when(version.destroy_time)))
        return sorted(found, key=lambda v: v.number, reverse=True)

    # -- writes -------------------------------------------------------------------
    def add_version(self, secret: str, value: bytes) -> int:
        """Add ``value`` as the newest version; the version number. Never retried (not idempotent)."""
        version = self._call("add_secret_version", secret, self._client.add_secret_version,
                             request={"parent": self.secret_path(secret), "payload": {"data": value}},
                             retry=None)
        return int(str(version.name).rsplit("/", 1)[-1])


def _when(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromtimestamp(value.timestamp(), tz=value.tzinfo) if value.timestamp() > 0 else None
    except (AttributeError, ValueError, OSError):
        return None


def _short(exc: Any) -> str:
    return str(getattr(exc, "message", "") or type(exc).__name__)[:200]
