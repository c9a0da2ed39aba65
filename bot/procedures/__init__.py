"""The runbook as code: every procedure module contributes to one registry."""

from __future__ import annotations

from bot.procedures import (
    alerts,
    cluster,
    database,
    database_check,
    escalation,
    images,
    info,
    logs,
    metrics,
    recovery,
    secret_manager,
    security,
)
from bot.registry import Registry

# Each module declares PROCEDURES; a new module is added to this tuple.
MODULES = (info, cluster, logs, metrics, security, alerts, escalation,
           database, database_check, recovery, images, secret_manager)


def build_registry(
    risk_overrides: dict[str, str] | None = None, safe_config_keys: set[str] | None = None
) -> Registry:
    from bot.procedures import changes

    registry = Registry()
    for module in MODULES:
        for procedure in module.PROCEDURES:
            registry.register(procedure)
    # Which config keys are safe is a setting, so these are built, not imported.
    for procedure in changes.build(safe_config_keys if safe_config_keys is not None else {"LOG_LEVEL"}):
        registry.register(procedure)
    return registry.with_overrides(risk_overrides or {})
