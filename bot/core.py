"""Wiring: settings and config in, a ready Dispatcher out. Used by every entry point."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from slack_sdk import WebClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from bot.adapters.slack import make_web_client, user_directory, usergroup_members
from bot.alerts.service import AlertService
from bot.approvals.service import ApprovalService
from bot.context import Backends
from bot.errors import ConfigurationError
from bot.escalation.service import EscalationService, build_escalation
from bot.escalation.state import utcnow
from bot.events import EventBus
from bot.procedures import build_registry
from bot.redaction import redact
from bot.registry import Registry
from bot.roles import RoleResolver
from bot.service import Dispatcher
from bot.settings import BotConfigFile, Settings, load_config_file
from bot.store.audit import AuditLog
from bot.store.db import make_engine, make_sessionmaker, migrate


@dataclass
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
    events: EventBus = field(default_factory=EventBus)
    # Optional services: None where their part is not built (a script, a test of one part).
    approvals: ApprovalService | None = None
    alerts: AlertService | None = None
    escalation: EscalationService | None = None


def build_core(settings: Settings, config: BotConfigFile | None = None, run_migrations: bool = True,
               clock: Callable[[], datetime] = utcnow) -> Core:
    """``clock``: the escalation engine's time (tests move it instead of sleeping)."""
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
    backends = Backends(settings)
    events = EventBus()
    approvals = ApprovalService(
        settings, sessions, registry, backends, audit, roles,
        user_directory(web) if web else None, events, config.approvals_required,
    )
    dispatcher = Dispatcher(settings, registry, backends, audit, roles, approvals)
    core = Core(
        settings, config, registry, engine, sessions, audit, backends, roles, dispatcher, web,
        events=events, approvals=approvals,
    )
    # Built after `core`: the escalation service needs the whole core (dispatcher, events, web).
    core.alerts = AlertService(settings, config, registry, sessions, backends, core.events, web)
    core.escalation = build_escalation(core, clock)
    backends.alerts, backends.escalation = core.alerts, core.escalation
    return core
