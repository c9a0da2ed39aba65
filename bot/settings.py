"""Typed settings: environment variables plus the YAML file named by AIA_BOT_CONFIG.

Every name the runbook hard-codes (namespace, deployments, service, endpoints...)
is a setting whose default is the runbook's value, so a cluster that differs
only needs environment variables, not code.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.database_url import database_url_parts
from bot.errors import ConfigurationError
from bot.escalation_policy import EscalationPolicy

SLACK_PRINCIPAL = re.compile(r"^[UWS][A-Z0-9]{2,}$")
# What Kubernetes accepts: a namespace is a DNS-1123 label, other objects DNS-1123 subdomains.
_K8S_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_K8S_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class Settings(BaseSettings):
    """Everything that fits in an environment variable. Field name = variable name."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    # --- Slack ---------------------------------------------------------------
    slack_bot_token: SecretStr | None = Field(None, description="Bot token (xoxb-...).")
    slack_signing_secret: SecretStr | None = Field(
        None, description="Signing secret that authenticates requests from Slack."
    )
    slack_app_token: SecretStr | None = Field(None, description="App-level token, Socket Mode only.")
    slack_api_url: str = Field(
        "https://slack.com/api/", description="Web API base URL; tests point it at a local server."
    )
    aia_alert_channel: str = Field(
        "#aia-production-alerts", description="Channel for alerts and approval cards."
    )

    # --- State ---------------------------------------------------------------
    database_url: str = Field(
        "sqlite:///aia-bot.db",
        description="SQLAlchemy URL. SQLite for one replica; PostgreSQL for 2 to 5 replicas.",
    )

    # --- Kubernetes ----------------------------------------------------------
    kubeconfig: str | None = Field(
        None, description="Path to a kubeconfig; unset means in-cluster config (or ~/.kube/config)."
    )
    aia_namespace: str = Field("aia-production", description="The namespace the bot operates in.")
    aia_deployment_blue: str = Field("aia-api-blue", description="Blue API deployment.")
    aia_deployment_green: str = Field("aia-api-green", description="Green API deployment.")
    aia_api_service: str = Field("aia-api", description="Service whose selector picks the live colour.")
    aia_config_map: str = Field("aia-config", description="Application config map.")
    aia_external_secret: str = Field("aia-secrets", description="ExternalSecret of the app.")
    aia_app_selector: str = Field(
        "",
        description="Label selector of the app's pods for `/aia logs --app`; empty = every pod of the namespace.",
    )
    aia_hpa_min_replicas: int = Field(2, ge=1, description="HPA minimum (runbook: 2).")
    aia_hpa_max_replicas: int = Field(5, ge=1, description="HPA maximum (runbook: 5).")
    kube_request_timeout_seconds: float = Field(
        20.0, gt=0, description="Timeout of one Kubernetes API call."
    )
    aia_db_check_timeout_seconds: float = Field(
        20.0, gt=0, le=120,
        description="`/aia db check`: how long the check may run inside the pod before the bot gives up.",
    )

    # --- Prometheus / Grafana / endpoints -----------------------------------
    prometheus_url: str | None = Field(None, description="Prometheus base URL, e.g. http://prometheus:9090.")
    prometheus_timeout_seconds: float = Field(15.0, gt=0, description="Timeout of one PromQL query.")
    aia_grafana_url: str = Field("http://35.192.183.84", description="Grafana dashboard.")
    aia_api_url: str = Field("http://35.225.214.87:8000", description="API service endpoint.")
    aia_frontend_url: str = Field("http://34.41.147.160:3000", description="Frontend endpoint.")

    # --- Alertmanager ---------------------------------------------------------
    alertmanager_webhook_token: SecretStr | None = Field(
        None, description="Bearer token Alertmanager must send to POST /alertmanager."
    )

    # --- Google Cloud --------------------------------------------------------
    gcp_project: str = Field("a-467519", description="Google Cloud project.")
    cloudsql_instance: str = Field("mas-system-postgres", description="Cloud SQL instance.")
    cloudsql_emulator_host: str | None = Field(
        None,
        description="host:port of a local Cloud SQL Admin API (plaintext gRPC, anonymous); unset = Google's, "
        "with application default credentials (Workload Identity).",
    )
    cloudsql_timeout_seconds: float = Field(15.0, gt=0, le=120, description="Timeout of one Cloud SQL Admin API call.")
    cloudsql_poll_seconds: float = Field(
        5.0, gt=0, le=60, description="First wait between two reads of a Cloud SQL operation (grows 1.5x per poll, up to 30 s)."
    )
    cloudsql_operation_timeout_seconds: int = Field(
        3600, ge=10, le=86400, description="How long the bot follows one Cloud SQL operation before it gives up."
    )
    cloudsql_operation_lease_seconds: float = Field(
        60.0, ge=2, le=3600,
        description="A Cloud SQL operation not heartbeated this long is resumed by another replica or a restart.",
    )

    # --- Images and Secret Manager ---------------------------------------------
    aia_image_repository: str = Field(
        "gcr.io/a-467519/aia-system", description="The app's image repository (`/aia images`)."
    )
    aia_allowed_registries: str = Field(
        "gcr.io/a-467519",
        description="Comma-separated registry/path prefixes images must come from (set-image, bluegreen deploy).",
    )
    aia_registry_url: str | None = Field(
        None,
        description="Base URL of an OCI distribution API used for every allowed registry, e.g. http://127.0.0.1:5000; "
        "unset: the image's own host over HTTPS with a Google access token (application default credentials).",
    )
    aia_registry_timeout_seconds: float = Field(10.0, gt=0, le=120, description="Timeout of one registry call.")
    secretmanager_emulator_host: str | None = Field(
        None,
        description="host:port of a local Secret Manager (plaintext gRPC, anonymous); unset: Google's, with ADC.",
    )
    secretmanager_timeout_seconds: float = Field(10.0, gt=0, le=120, description="Timeout of one Secret Manager call.")
    aia_rotatable_secrets: str = Field(
        "",
        description="Comma-separated Secret Manager secrets `/aia secrets rotate` may replace with a generated value "
        "(only secrets the app itself owns; empty: none).",
    )
    aia_database_secrets: str = Field(
        "aia-database-url",
        description="Secrets holding the database password: never given a random value; `secrets rotate` changes "
        "them only with the Cloud SQL user's password, through AIA_DATABASE_URL_TEMPLATES.",
    )
    aia_database_url_templates: str = Field(
        "",
        description="How `secrets rotate` builds a database secret without reading it: space-separated "
        "`SECRET=postgresql://USER:{password}@HOST:PORT/DB` (USER is the Cloud SQL user whose password changes; "
        "empty: database secrets are not rotated).",
    )
    aia_secret_sync_timeout_seconds: int = Field(
        120, ge=5, le=3600, description="How long a forced ExternalSecret refresh is waited for."
    )
    # --- end images and Secret Manager -------------------------------------------

    # --- The bot itself -------------------------------------------------------
    aia_bot_config: Path | None = Field(None, description="YAML file: roles, escalation, alert map.")
    aia_worker_threads: int = Field(
        16, ge=1, le=256, description="Threads doing backend work after the ack."
    )
    aia_max_inline_lines: int = Field(
        25, ge=5, le=200, description="Longer output goes up as a file into the thread."
    )
    aia_log_level: str = Field("INFO", description="Log level of the bot's own logs.")

    # --- Two-person rule and write procedures ---------------------------------
    aia_approval_ttl_seconds: int = Field(
        900, ge=5, le=86400, description="How long a destructive request waits for approval."
    )
    aia_approval_claim_timeout_seconds: int = Field(
        120, ge=2, le=3600,
        description="An execution claimed this long ago without finishing belongs to a dead process.",
    )
    aia_break_glass_enabled: bool = Field(
        False, description="Let an admin run a destructive procedure alone with --break-glass."
    )
    aia_safe_config_keys: str = Field(
        "LOG_LEVEL",
        description="Comma-separated config map keys `/aia config set` changes without approval.",
    )
    aia_rollout_timeout_seconds: int = Field(
        300, ge=10, le=3600, description="How long progress is followed after a change."
    )
    aia_rollout_poll_seconds: float = Field(
        2.0, gt=0, le=60, description="How often rollout progress is read."
    )
    aia_api_port: int = Field(8000, ge=1, le=65535, description="Port of the API service (health checks).")
    # --- end two-person rule ---------------------------------------------------

    # --- Alert threads and the Slack outbox -------------------------------------
    aia_outbox_post_interval_seconds: float = Field(
        1.0, ge=0, le=60,
        description="Seconds between two chat.postMessage calls to one channel, across all replicas (Slack: ~1/s).",
    )
    aia_outbox_senders: int = Field(2, ge=1, le=16, description="Outbox sender threads per replica.")
    aia_outbox_poll_seconds: float = Field(
        0.2, gt=0, le=10,
        description="First wait of an idle outbox's polling thread, doubling up to 2 s (work queued by this replica wakes it at once).",
    )
    aia_outbox_max_attempts: int = Field(
        30, ge=1, description="Attempts (5xx, network errors) before an outbox message is given up."
    )
    aia_alert_storm_threshold: int = Field(
        10, ge=1, description="Alert groups waiting for their first post that make a storm summary message."
    )
    aia_alert_context: bool = Field(
        True, description="Post Prometheus value and graph, pods, events and logs into each alert thread."
    )
    aia_alert_log_lines: int = Field(20, ge=0, le=200, description="Log lines of the worst pod in an alert thread.")
    # --- end alert threads -----------------------------------------------------

    # --- Escalation --------------------------------------------------------------
    smtp_host: str | None = Field(None, description="SMTP server for email pages; unset = no email paging.")
    smtp_port: int = Field(587, ge=1, le=65535, description="SMTP port (587 = submission with STARTTLS).")
    smtp_starttls: bool = Field(True, description="Upgrade the SMTP connection with STARTTLS before sending.")
    smtp_username: str | None = Field(None, description="SMTP login; unset = no AUTH.")
    smtp_password: SecretStr | None = Field(None, description="SMTP password (never logged or posted).")
    smtp_from: str = Field("aia-bot@013a.tech", description="From address of email pages.")
    smtp_ca_file: Path | None = Field(None, description="CA bundle that signs the SMTP server's certificate; unset = system CAs.")
    smtp_timeout_seconds: float = Field(10.0, gt=0, le=120, description="Timeout of one SMTP conversation.")
    aia_paging_routing_key: SecretStr | None = Field(
        None, description="Routing (integration) key sent with PagerDuty Events API v2 webhook pages."
    )
    aia_escalation_poll_seconds: float = Field(
        2.0, gt=0, le=60,
        description="How often each replica reads due escalation steps and deliveries from the database.",
    )
    aia_escalation_late_seconds: float = Field(
        5.0, ge=0, description="A page fired later than this after its due time says how late it is."
    )
    aia_escalation_retry_seconds: float = Field(
        10.0, gt=0, description="First retry delay of a failed email/webhook page (doubles each attempt)."
    )
    aia_escalation_max_attempts: int = Field(5, ge=1, le=50, description="Attempts per email/webhook page.")
    aia_escalation_lease_seconds: float = Field(
        60.0, gt=0, description="A page claimed by a replica that died is retried by another after this."
    )
    aia_escalation_workers: int = Field(8, ge=1, le=64, description="Threads per replica that fire steps and send pages.")
    # --- end escalation ----------------------------------------------------------

    # --- Trust boundary ---------------------------------------------------------
    aia_audit_key: SecretStr | None = Field(
        None,
        description="Key of the audit log's HMAC chain (32+ random bytes, e.g. `openssl rand -hex 32`, from "
                    "Secret Manager). `aia-bot serve` refuses to start without it; `aia-bot audit verify` needs it.",
    )
    aia_max_request_bytes: int = Field(
        1024 * 1024, ge=16 * 1024, le=64 * 1024 * 1024,
        description="Largest body POST /slack/events and POST /alertmanager read (larger: 413, unread).",
    )
    aia_command_channels: str = Field(
        "",
        description="Comma-separated channel IDs or names where `/aia` answers, besides AIA_ALERT_CHANNEL "
                    "(DMs of workspace members always; Slack Connect channels never).",
    )
    aia_refusal_audit_seconds: float = Field(
        60.0, gt=0, le=3600,
        description="Refused requests (bad signature, bad token) are counted; one audit row per source per this many seconds.",
    )

    @field_validator("slack_bot_token", "slack_signing_secret", "slack_app_token", "alertmanager_webhook_token",
                     "aia_audit_key", "smtp_password", "aia_paging_routing_key", mode="before")
    @classmethod
    def _blank_secret_is_missing(cls, value: object) -> object:
        # An empty or whitespace secret is a mistake in a manifest, never a choice:
        # treated as unset, so whatever needs it refuses to start instead of running open.
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value
    # --- end trust boundary -----------------------------------------------------

    @field_validator("slack_api_url")
    @classmethod
    def _api_url_ends_with_slash(cls, value: str) -> str:
        # slack_sdk joins method names onto the base URL: without the slash the
        # method name would be glued to the last path segment.
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL, e.g. https://slack.com/api/")
        return value if value.endswith("/") else value + "/"

    @field_validator("aia_allowed_registries")
    @classmethod
    def _registry_prefixes(cls, value: str) -> str:
        prefixes = [p.strip() for p in value.split(",") if p.strip()]
        for prefix in prefixes:
            if "://" in prefix or not re.fullmatch(r"[a-z0-9.-]+(:\d+)?(/[a-z0-9._-]+)*", prefix):
                raise ValueError(f"{prefix!r} is not a registry/path prefix like gcr.io/a-467519")
        if not prefixes:
            raise ValueError("name at least one registry, e.g. gcr.io/a-467519")
        return ",".join(prefixes)

    @field_validator("aia_database_url_templates")
    @classmethod
    def _database_url_templates(cls, value: str) -> str:
        # Never echoes an entry: a password typed where {password} belongs must not reach a log.
        for number, entry in enumerate(value.split(), 1):
            secret, _, template = entry.partition("=")
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,255}", secret) or database_url_parts(template) is None:
                raise ValueError(f"entry {number} is not SECRET=postgresql://USER:{{password}}@HOST:PORT/DB "
                                 "(the literal text {password} where the password goes)")
        return " ".join(value.split())

    @field_validator("secretmanager_emulator_host", "cloudsql_emulator_host")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not re.fullmatch(r"[A-Za-z0-9.-]+:\d{1,5}", str(value)):
            raise ValueError("must be host:port, e.g. 127.0.0.1:8085")
        return value

    @field_validator("prometheus_url", "aia_grafana_url", "aia_api_url", "aia_frontend_url", "aia_registry_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None if value is None else value
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")


    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        # Parsed here so a typo is one line at start, not a SQLAlchemy traceback; the
        # value itself is never echoed (it may hold a password).
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            backend = make_url(value).get_backend_name()
        except ArgumentError:
            raise ValueError(
                "is not a database URL; use postgresql://USER@HOST/DB or sqlite:///PATH"
            ) from None
        if backend not in ("postgresql", "postgres", "sqlite"):
            raise ValueError(
                f"{backend} is not supported; use postgresql://USER@HOST/DB or sqlite:///PATH"
            )
        return value

    @field_validator("aia_namespace")
    @classmethod
    def _namespace_name(cls, value: str) -> str:
        if not _K8S_LABEL.match(value):
            raise ValueError(
                "is not a Kubernetes namespace name: at most 63 lowercase letters, digits and '-', "
                "starting and ending with a letter or digit (e.g. aia-production)"
            )
        return value

    @field_validator(
        "aia_deployment_blue", "aia_deployment_green", "aia_api_service", "aia_config_map",
        "aia_external_secret",
    )
    @classmethod
    def _object_name(cls, value: str) -> str:
        if not _K8S_SUBDOMAIN.match(value):
            raise ValueError(
                "is not a Kubernetes object name: lowercase letters, digits, '-' and '.', "
                "starting and ending with a letter or digit (e.g. aia-api-blue)"
            )
        return value

    @field_validator("aia_app_selector")
    @classmethod
    def _app_selector(cls, value: str) -> str:
        if value:
            from bot.validators import label_selector

            label_selector(value)  # its ValueError says the right form
        return value

    @field_validator("aia_log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("use DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return value.upper()

    @field_validator("slack_bot_token")
    @classmethod
    def _bot_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("xoxb-"):
            raise ValueError(
                "must be the Bot User OAuth Token (xoxb-…) from the app's OAuth & Permissions page"
            )
        return value

    @field_validator("slack_app_token")
    @classmethod
    def _app_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("xapp-"):
            raise ValueError(
                "must be an app-level token (xapp-…) with connections:write, from the app's "
                "Basic Information page; the xoxb- token goes in SLACK_BOT_TOKEN"
            )
        return value


class RolesConfig(BaseModel):
    """Who may do what. Each role includes the ones listed before it."""

    model_config = ConfigDict(extra="forbid")

    viewer: list[str] = Field(default_factory=list)
    operator: list[str] = Field(default_factory=list)
    approver: list[str] = Field(default_factory=list)
    admin: list[str] = Field(default_factory=list)

    @field_validator("viewer", "operator", "approver", "admin")
    @classmethod
    def _slack_ids(cls, value: list[str]) -> list[str]:
        for principal in value:
            if not SLACK_PRINCIPAL.fullmatch(str(principal)):
                raise ValueError(
                    f"{principal!r} is not a Slack user ID (U…/W…) or user-group ID (S…)"
                )
        return [str(p) for p in value]


class BotConfigFile(BaseModel):
    """The YAML file. Sections other issues add (escalation, alerts) are kept as data here."""

    model_config = ConfigDict(extra="forbid")

    roles: RolesConfig = Field(default_factory=RolesConfig)
    escalation: EscalationPolicy | None = None
    alert_procedures: dict[str, list[str]] | None = None
    risk_overrides: dict[str, str] = Field(
        default_factory=dict,
        description="procedure name -> risk class; may raise a procedure's class, never lower it",
    )
    approvals_required: dict[str, int] = Field(
        default_factory=dict,
        description="procedure name -> approvers a destructive request needs (at least 1)",
    )

    @field_validator("approvals_required")
    @classmethod
    def _at_least_one_approver(cls, value: dict[str, int]) -> dict[str, int]:
        for name, count in value.items():
            if count < 1:
                raise ValueError(f"{name}: the two-person rule needs at least 1 approver, not {count}")
        return value


def _describe_validation_error(exc: ValidationError, prefix: str = "") -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        name = (prefix + where) if prefix else where.upper()
        # pydantic prefixes our own messages with "Value error, ": noise in a one-line answer.
        lines.append(f"{name}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(lines)


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Read settings from the environment (or ``env``); raise ConfigurationError naming the bad one."""
    try:
        if env is None:
            return Settings()
        lowered = {k.lower(): v for k, v in env.items() if k.lower() in Settings.model_fields}
        return Settings.model_validate(lowered)
    except ValidationError as exc:
        raise ConfigurationError("invalid setting: " + _describe_validation_error(exc)) from None


def load_config_file(path: Path | None) -> BotConfigFile:
    """Read the YAML config; no file means no roles (everyone is refused but /aia help)."""
    if path is None:
        return BotConfigFile()
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"AIA_BOT_CONFIG: file {path} does not exist") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigurationError(f"AIA_BOT_CONFIG: {path} is not valid YAML{where}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigurationError(f"AIA_BOT_CONFIG: {path} must hold a mapping at the top level")
    try:
        return BotConfigFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigurationError(
            f"AIA_BOT_CONFIG ({path}): " + _describe_validation_error(exc, prefix="config.")
        ) from None
