"""Wiring: settings and config in, a ready Dispatcher out. Used by every entry point."""

from __future__ import annotations

from dataclasses import dataclass, field

from slack_sdk import WebClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from bot.adapters.slack import make_web_client, usergroup_members
from bot.context import Backends
from bot.errors import ConfigurationError
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
    # Issues #3, #4, #5 add their services as fields below, each defaulting to None.


def build_core(settings: Settings, config: BotConfigFile | None = None, run_migrations: bool = True) -> Core:
    if config is None:
        config = load_config_file(settings.aia_bot_config)
    try:
        registry = build_registry(config.risk_overrides)
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
    audit = AuditLog(sessions)
    web = None
    if settings.slack_bot_token is not None:
        web = make_web_client(settings.slack_bot_token.get_secret_value(), settings.slack_api_url)
    roles = RoleResolver(config.roles, usergroup_members(web) if web else None)
    backends = Backends(settings)
    dispatcher = Dispatcher(settings, registry, backends, audit, roles)
    return Core(settings, config, registry, engine, sessions, audit, backends, roles, dispatcher, web)
