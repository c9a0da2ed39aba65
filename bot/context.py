"""Who called, and the backends a procedure reaches (created on first use).

:class:`bot.registry.ProcedureContext` bundles these with the registry and the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.errors import BackendUnavailable
from bot.ports import AlertsPort, EscalationPort
from bot.settings import Settings

if TYPE_CHECKING:
    from bot.adapters.cloudsql import CloudSqlGateway
    from bot.adapters.kubernetes import KubeGateway
    from bot.adapters.prometheus import PrometheusGateway
    from bot.adapters.registry import RegistryGateway
    from bot.adapters.secretmanager import SecretManagerGateway


@dataclass(frozen=True)
class Caller:
    """Who asked, and from where (Slack IDs; the console uses sandbox IDs)."""

    user_id: str
    team_id: str | None = None
    channel_id: str | None = None


@dataclass
class Backends:
    """Adapters, created on first use so a missing one only fails what needs it."""

    settings: Settings
    _kube: KubeGateway | None = None
    _prometheus: PrometheusGateway | None = None
    _registry: RegistryGateway | None = None
    _secret_manager: SecretManagerGateway | None = None
    _cloudsql: CloudSqlGateway | None = None
    # Services that procedures read (`/aia alerts`, `/aia page`...), through the narrow
    # interfaces of bot/ports.py; build_core passes them in. None: not running in this process.
    alerts: AlertsPort | None = None
    escalation: EscalationPort | None = None

    @property
    def kube(self) -> KubeGateway:
        if self._kube is None:
            from bot.adapters.kubernetes import KubeGateway

            self._kube = KubeGateway(
                self.settings.kubeconfig,
                self.settings.aia_namespace,
                self.settings.kube_request_timeout_seconds,
            )
        return self._kube

    @property
    def prometheus(self) -> PrometheusGateway:
        if self._prometheus is None:
            if not self.settings.prometheus_url:
                raise BackendUnavailable("Prometheus is not configured (set PROMETHEUS_URL).")
            from bot.adapters.prometheus import PrometheusGateway

            self._prometheus = PrometheusGateway(
                self.settings.prometheus_url, self.settings.prometheus_timeout_seconds
            )
        return self._prometheus

    @property
    def registry(self) -> RegistryGateway:
        if self._registry is None:
            from bot.adapters.registry import RegistryGateway

            self._registry = RegistryGateway(self.settings.aia_registry_url,
                                             self.settings.aia_registry_timeout_seconds)
        return self._registry

    @property
    def secret_manager(self) -> SecretManagerGateway:
        if self._secret_manager is None:
            from bot.adapters.secretmanager import SecretManagerGateway

            self._secret_manager = SecretManagerGateway(
                self.settings.gcp_project, self.settings.secretmanager_emulator_host,
                self.settings.secretmanager_timeout_seconds)
        return self._secret_manager

    @property
    def cloudsql(self) -> CloudSqlGateway:
        if self._cloudsql is None:
            from bot.adapters.cloudsql import CloudSqlGateway

            self._cloudsql = CloudSqlGateway(
                self.settings.gcp_project,
                self.settings.cloudsql_instance,
                self.settings.cloudsql_emulator_host,
                self.settings.cloudsql_timeout_seconds,
            )
        return self._cloudsql
