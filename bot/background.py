"""Long-running work of `aia-bot serve` besides answering HTTP: outbox, timers, sweeps.

Each part of the core that needs a background loop adds a factory here. They are
started after the database is migrated and stopped on shutdown, in reverse order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from bot.core import Core


class BackgroundService(Protocol):
    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...


def background_services(core: Core) -> list[BackgroundService]:
    services: list[BackgroundService] = []
    # Everything that runs in the background of a replica, started and stopped together.
    if core.alerts is not None:
        services.append(core.alerts.folder)  # webhooks stored in the inbox -> alert groups
        services.append(core.alerts.outbox)  # the Slack outbox (alert threads)
    if core.escalation is not None:  # escalation timers (APScheduler) and page retries
        from bot.escalation.scheduler import EscalationScheduler

        services.append(EscalationScheduler(
            core.escalation, core.settings.aia_escalation_poll_seconds, core.settings.aia_escalation_workers
        ))
    return services
