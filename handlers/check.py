"""`aia-bot check`: what is configured, and which backends answer."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bot.errors import BackendUnavailable, ConfigurationError, PageFailed, UserError
from bot.escalation.service import check_paging_settings
from bot.settings import BotConfigFile, Settings, load_config_file, load_settings
from handlers.startup import preflight, quiet_slack_client

if TYPE_CHECKING:
    from bot.core import Core


def run_check(out: Callable[[str], None] = print, config_only: bool = False) -> int:
    """Every check; with ``config_only`` the configuration alone, no backend contacted."""
    failures = 0

    def line(mark: str, what: str, detail: str) -> None:
        out(f"{mark:4} {what:<15} {detail}")

    try:
        settings = load_settings()
        config = load_config_file(settings.aia_bot_config)
        preflight(settings)
    except ConfigurationError as exc:
        # A configuration mistake, not a backend that does not answer: exit 2 like serve and socket.
        line("FAIL", "settings", str(exc))
        return 2
    line("ok", "settings", f"namespace {settings.aia_namespace}, channel {settings.aia_alert_channel}")
    roles = config.roles
    line(
        "ok" if any([roles.viewer, roles.operator, roles.approver, roles.admin]) else "warn",
        "roles",
        f"viewer {len(roles.viewer)}, operator {len(roles.operator)}, approver {len(roles.approver)}, "
        f"admin {len(roles.admin)}" + ("" if settings.aia_bot_config else " (no AIA_BOT_CONFIG: nobody may run anything)"),
    )
    # Blank values count as missing (bot.settings): these lines fail closed, as `serve` does.
    for name in ("slack_bot_token", "slack_signing_secret"):
        if getattr(settings, name) is None:
            line("FAIL", name.upper(), "not set or blank: `aia-bot serve` refuses to start (requests "
                 "could not be verified)" if name == "slack_signing_secret" else "not set or blank (needed by `aia-bot serve`)")
            failures += 1
    if settings.aia_audit_key is None:
        line("FAIL", "AIA_AUDIT_KEY", "not set or blank: `aia-bot serve` refuses to start and "
             "`aia-bot audit verify` cannot check the chain")
        failures += 1
    else:
        line("ok", "audit key", "set (HMAC chain)")
    if settings.alertmanager_webhook_token is None:
        line("warn", "alert intake", "OFF: ALERTMANAGER_WEBHOOK_TOKEN is not set, POST /alertmanager answers 503")
    else:
        line("ok", "alert intake", "on (bearer token required)")

    def failures_only(mark: str, what: str, detail: str) -> None:
        if mark == "FAIL":
            line(mark, what, detail)

    # The full check reports the policy and SMTP itself, by reaching them; here only failures.
    config_failures = check_configuration(settings, config, line if config_only else failures_only)
    failures += config_failures
    if config_only:
        out("configuration valid (--config-only: no backend contacted)" if not failures
            else f"{failures} problem(s)")
        return 0 if not failures else 1
    if config_failures:
        # Building the core would stop on the same problem, under a misleading name.
        out(f"{failures} problem(s): fix the configuration first")
        return 1

    from bot.core import build_core

    scratch, settings = _without_creating_the_database(settings, line)
    try:
        core = build_core(settings, config)
        if scratch is None:
            line("ok", "database", f"{core.engine.dialect.name}, schema up to date")
    except ConfigurationError as exc:
        line("FAIL", "database", str(exc))
        return 1

    if core.web is not None:
        try:
            with quiet_slack_client():
                auth = core.web.auth_test()
            line("ok", "slack", f"workspace {auth.get('team')} ({auth.get('team_id')}), bot {auth.get('user')}")
        except Exception as exc:  # noqa: BLE001 - report and go on to the next backend
            line("FAIL", "slack", f"{settings.slack_api_url}: {getattr(exc, 'response', {}) and exc.response.get('error') or type(exc).__name__}")  # type: ignore[attr-defined]
            failures += 1

    try:
        version = core.backends.kube.version()
        pods = core.backends.kube.pods()
        line("ok", "kubernetes", f"{version.get('gitVersion', '?')}, {len(pods)} pods in {settings.aia_namespace}")
    except (BackendUnavailable, ConfigurationError, UserError) as exc:
        line("FAIL", "kubernetes", str(exc))
        failures += 1

    if settings.prometheus_url:
        try:
            core.backends.prometheus.instant("up")
            line("ok", "prometheus", settings.prometheus_url)
        except (BackendUnavailable, UserError) as exc:
            line("FAIL", "prometheus", str(exc))
            failures += 1
    else:
        line("warn", "prometheus", "PROMETHEUS_URL not set: /aia metrics and /aia query are unavailable")
    failures += _check_google(core, line)
    failures += _check_cloudsql(core, line)
    failures += _check_paging(core, line)
    out("all configured backends answer" if not failures else f"{failures} problem(s)")
    return 0 if not failures else 1


def check_configuration(
    settings: Settings, config: BotConfigFile, line: Callable[[str, str, str], None]
) -> int:
    """What the settings and the YAML file must agree on before anything starts: the
    escalation policy's channels have their settings, the database suits several replicas."""
    failures = 0
    policy = config.escalation
    if policy is None:
        line("warn", "escalation", "no escalation policy in AIA_BOT_CONFIG: nobody is paged")
    else:
        line("ok", "escalation", f"{len(policy.levels)} levels: {policy.describe_levels()}")
        try:
            check_paging_settings(settings, policy)
        except ConfigurationError as exc:
            line("FAIL", "smtp" if "SMTP" in str(exc) else "paging webhook", str(exc))
            failures += 1
        else:
            if policy.uses_email():
                line("ok", "smtp", f"{settings.smtp_host}:{settings.smtp_port} as {settings.smtp_from}"
                     + (" (STARTTLS)" if settings.smtp_starttls else ""))
            if policy.uses_webhook():
                line("ok", "paging webhook", ", ".join(sorted({lv.webhook for lv in policy.levels if lv.webhook})))
    if settings.database_url.startswith("sqlite"):
        line("warn", "database", "DATABASE_URL is SQLite: fine for one process, not for 2-5 replicas")
    return failures


def _without_creating_the_database(
    settings: Settings, line: Callable[[str, str, str], None]
) -> tuple[tempfile.TemporaryDirectory[str] | None, Settings]:
    """A check only looks: a SQLite file that does not exist yet is not created (in the
    current directory, with the default URL); the rest is checked against a scratch copy."""
    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None, settings
    path = Path(url.database)
    if path.exists():
        return None, settings
    line("warn", "database", f"SQLite file {path} does not exist yet; `aia-bot serve` creates it "
         "(set DATABASE_URL=postgresql://… for 2 or more replicas)")
    scratch = tempfile.TemporaryDirectory(prefix="aia-bot-check-")
    return scratch, settings.model_copy(update={"database_url": f"sqlite:///{scratch.name}/check.db"})


def _check_paging(core: Core, line: Callable[[str, str, str], None]) -> int:
    """SMTP and the paging webhook, as the escalation policy uses them; nothing is sent."""
    service = core.escalation
    policy = service.policy if service is not None else None
    if service is None or policy is None:
        line("warn", "escalation", "no escalation policy in AIA_BOT_CONFIG: nobody is paged")
        return 0
    line("ok", "escalation", f"{len(policy.levels)} levels")
    failures = 0
    wants_email = any(level.email for level in policy.levels)
    if wants_email or service.email.config is not None:
        try:
            line("ok", "smtp", service.email.check())
        except PageFailed as exc:
            line("FAIL", "smtp", exc.message)
            failures += 1
    for url in sorted({level.webhook for level in policy.levels if level.webhook}):
        try:
            detail = service.webhook.check(url)
            if service.webhook.routing_key:
                line("ok", "paging webhook", detail)
            else:
                line("warn", "paging webhook", f"{detail}, but AIA_PAGING_ROUTING_KEY is not set")
        except PageFailed as exc:
            line("FAIL", "paging webhook", exc.message)
            failures += 1
    return failures


def _check_google(core: Core, line: Callable[[str, str, str], None]) -> int:
    """The image registry (tags of the app image) and Secret Manager (metadata of the rotatable secrets)."""
    from bot.adapters.registry import ImageName

    settings = core.settings
    failures = 0
    try:
        tags, _ = core.backends.registry.tags(ImageName.parse(settings.aia_image_repository))
        line("ok", "registry", f"{settings.aia_image_repository}: {len(tags)} tags")
    except (BackendUnavailable, UserError, ConfigurationError) as exc:
        line("FAIL", "registry", str(exc))
        failures += 1
    rotatable = [s for s in settings.aia_rotatable_secrets.split(",") if s.strip()]
    if not rotatable:
        line("warn", "secret manager", "AIA_ROTATABLE_SECRETS is empty: /aia secrets rotate refuses every secret")
        return failures
    for secret in rotatable:
        try:
            versions = core.backends.secret_manager.versions(secret.strip())
            line("ok", "secret manager", f"{secret.strip()}: {len(versions)} versions readable")
        except (BackendUnavailable, UserError, ConfigurationError) as exc:
            line("FAIL", "secret manager", str(exc))
            failures += 1
    return failures
def _check_cloudsql(core: Core, line: Callable[[str, str, str], None]) -> int:
    """The Cloud SQL instance through the Admin API, with the credentials the bot will use."""
    import os
    from pathlib import Path

    from bot.adapters.cloudsql import CloudSqlNotAllowed, CloudSqlPermissionDenied

    settings = core.settings
    where = settings.cloudsql_emulator_host or "sqladmin.googleapis.com"
    adc_file = Path(os.environ.get("CLOUDSDK_CONFIG", Path.home() / ".config" / "gcloud")) / \
        "application_default_credentials.json"
    if not (settings.cloudsql_emulator_host or os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
            or os.environ.get("KUBERNETES_SERVICE_HOST") or adc_file.exists()):
        # Off Google and without credentials, google-auth would probe the metadata server for seconds.
        line("warn", "cloudsql", "no Google credentials here (not in a cluster, no GOOGLE_APPLICATION_CREDENTIALS, "
             "no CLOUDSQL_EMULATOR_HOST): /aia db ... is unavailable")
        return 0
    try:
        inst = core.backends.cloudsql.instance()
    except CloudSqlPermissionDenied as exc:
        line("FAIL", "cloudsql", str(exc))
        return 1
    except CloudSqlNotAllowed as exc:
        if settings.cloudsql_emulator_host:
            line("FAIL", "cloudsql", str(exc))
            return 1
        line("warn", "cloudsql", f"{exc} /aia db ... is unavailable.")
        return 0
    except (BackendUnavailable, UserError) as exc:
        line("FAIL", "cloudsql", str(exc))
        return 1
    line("ok", "cloudsql", f"{inst.project}:{inst.name} {inst.state} via {where}")
    return 0
