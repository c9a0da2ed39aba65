"""The runbook as code: every procedure module contributes to one registry."""

from __future__ import annotations

from bot.procedures import cluster, info, logs, metrics
from bot.registry import Registry

# Each module declares PROCEDURES; issues #3, #4, #5 add theirs to this tuple.
MODULES = (info, cluster, logs, metrics)


def build_registry(risk_overrides: dict[str, str] | None = None) -> Registry:
    registry = Registry()
    for module in MODULES:
        for procedure in module.PROCEDURES:
            registry.register(procedure)
    return registry.with_overrides(risk_overrides or {})
