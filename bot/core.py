"""The composition root: settings and config in, every service built and wired, once.

Every entry point (handlers/) calls :func:`build_core`; nothing else constructs the
services, and nothing assigns to them afterwards. What only an entry point can know is
passed in: the Block Kit renderers (the core may not import handlers/) and how to learn
the Slack workspace. The one database engine and sessionmaker are made here and shared.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from slack_sdk import WebClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from bot.adapters.slack import make_web_client, user_directory, usergroup_members
from bot.alerts.render import AlertRenderer
from bot.alerts.service import AlertService
from bot.alerts.store import AlertStore
from bot.approvals.service import ApprovalService
from bot.context import Backends
from bot.errors import ConfigurationError
from bot.escalation.service import EscalationService, build_escalation
from bot.escalation.state import utcnow
from bot.escalation.views import EscalationRenderer
from bot.events import EventBus
from bot.procedures import build_registry
from bot.redaction import redact
from bot.registry import Registry
from bot.roles import RoleResolver
from bot.service import Dispatcher
from bot.settings import BotConfigFile, Settings, load_config_file
from bot.store.audit import AuditLog
from bot.store.db import make_engine, make_sessionmaker, make_writer_engine, migrate


@dataclass(frozen=True)
class Core:
    settings: Settings
    config: BotConfigFile
    registry: Registry
    engine: Engine
    sessions: sessionmaker[Session]
    audit: AuditLog
    backends: Backends
    roles: RoleResolver
    dispatcher: Dispatcher
    web: WebClient | None
    events: EventBus
    approvals: ApprovalService
    alerts: AlertService
    escalation: EscalationService


def build_core(settings: Settings, config: BotConfigFile | None = None, run_migrations: bool = True,
               clock: Callable[[], datetime] = utcnow, *,
               alert_renderer: AlertRenderer | None = None,
               escalation_renderer: EscalationRenderer | None = None,
               team_id: Callable[[], str | None] = lambda: None) -> Core:
    """``clock``: the escalation engine's time (tests move it instead of sleeping).
    ``alert_renderer``, ``escalation_renderer``: Block Kit from the Slack entry points;
    plain text without them. ``team_id``: the workspace approvals accept clicks from, asked
    at each decision (the Slack entry points know it once auth.test has answered)."""
    if config is None:
        config = load_config_file(settings.aia_bot_config)
    try:
        safe_keys = {k.strip() for k in settings.aia_safe_config_keys.split(",") if k.strip()}
        registry = build_registry(config.risk_overrides, safe_keys)
    except ValueError as exc:
        raise ConfigurationError(f"AIA_BOT_CONFIG: {exc}") from None
    engine = make_engine(settings.database_url)
    if run_migrations:
        try:
            migrate(engine)
        except Exception as exc:  # noqa: BLE001 - report which setting is wrong, not a traceback
            raise ConfigurationError(
                "DATABASE_URL: cannot prepare the database "
                f"({type(exc).__name__}: {redact(str(exc).splitlines()[0][:200])})"
            ) from None
    sessions = make_sessionmaker(engine)
    audit = AuditLog(sessions, settings.aia_audit_key.get_secret_value() if settings.aia_audit_key else None)
    web = None
    if settings.slack_bot_token is not None:
        web = make_web_client(settings.slack_bot_token.get_secret_value(), settings.slack_api_url)
    roles = RoleResolver(config.roles, usergroup_members(web) if web else None)
    events = EventBus()
    escalation = build_escalation(settings, config.escalation, engine, sessions, web, events, clock,
                                  escalation_renderer)
    alert_store = AlertStore(sessions)
    # Procedures reach the alert groups and the escalation service only through the narrow
    # interfaces of bot/ports.py, so the procedures layer stays below the services.
    backends = Backends(settings, alerts=alert_store, escalation=escalation)
    alerts = AlertService(settings, config, registry, sessions, backends, events, web, store=alert_store,
                          renderer=alert_renderer, writer=make_writer_engine(engine))
    approvals = ApprovalService(
        settings, sessions, registry, backends, audit, roles,
        user_directory(web) if web else None, events, config.approvals_required, team_id,
    )
    dispatcher = Dispatcher(settings, registry, backends, audit, roles, approvals)
    return Core(settings, config, registry, engine, sessions, audit, backends, roles, dispatcher, web,
                events, approvals, alerts, escalation)
