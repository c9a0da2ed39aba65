"""Shared fixtures: real PostgreSQL, the local Kubernetes and Slack servers, settings."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bot.settings import BotConfigFile, RolesConfig
from sandbox.slack_server import FakeSlackServer
from tests.harness.users import SLACK_USERS, TEAM_ID, install_users

PG_ADMIN_URL = os.environ.get("AIA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _admin_conninfo() -> str:
    return PG_ADMIN_URL


@contextlib.contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database; dropped afterwards."""
    name = f"aia_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_pg_database() as url:
        yield url


@pytest.fixture
def kube():  # type: ignore[no-untyped-def]
    from sandbox.aia_seed import seed_aia_system
    from sandbox.kube_server import FakeKubeAPIServer

    server = FakeKubeAPIServer().start()
    seed_aia_system(server)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def slack() -> Iterator[FakeSlackServer]:
    server = FakeSlackServer(team_id=TEAM_ID).start()
    install_users(server)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def roles() -> BotConfigFile:
    return BotConfigFile(
        roles=RolesConfig(
            viewer=[SLACK_USERS["viewer"].user_id, "S0ONCALL"],
            operator=[SLACK_USERS["operator"].user_id],
            approver=[SLACK_USERS["approver"].user_id],
            admin=[SLACK_USERS["admin"].user_id],
        )
    )


@pytest.fixture(scope="session")
def image_registry():  # type: ignore[no-untyped-def]
    """Debian's docker-registry with the app's tags pushed (v1.4.1 ... v1.6.0)."""
    from tests.harness.registry import aia_registry

    with aia_registry() as registry:
        yield registry


@pytest.fixture
def bot_env(tmp_path: Path, kube, slack: FakeSlackServer, image_registry) -> dict[str, str]:  # type: ignore[no-untyped-def]
    kubeconfig = kube.write_kubeconfig(str(tmp_path / "kubeconfig"))
    return {
        "AIA_REGISTRY_URL": image_registry.url,
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_SIGNING_SECRET": "test-signing-secret-0123456789",
        "SLACK_API_URL": slack.api_url,
        "DATABASE_URL": f"sqlite:///{tmp_path}/aia-bot.db",
        "KUBECONFIG": kubeconfig,
        "AIA_NAMESPACE": "aia-production",
        "AIA_AUDIT_KEY": "test-audit-key-0123456789abcdef",
        "ALERTMANAGER_WEBHOOK_TOKEN": "test-alertmanager-token-0123",
    }


@pytest.fixture
def core(bot_env: dict[str, str], roles: BotConfigFile):  # type: ignore[no-untyped-def]
    from bot.core import build_core
    from bot.settings import load_settings

    built = build_core(load_settings(bot_env), roles)
    try:
        yield built
    finally:
        built.engine.dispose()


@pytest.fixture(scope="session")
def prometheus():  # type: ignore[no-untyped-def]
    """Real Prometheus scraping the test exporter, with the error-rate data warm."""
    from tests.harness.prometheus import AiaExporter, PrometheusProcess

    exporter = AiaExporter().start()
    prom = PrometheusProcess([f"127.0.0.1:{exporter.port}"]).start()
    prom.wait_for('sum(rate(http_requests_total{status=~"5.."}[5m])) > 0')
    yield prom
    prom.stop()
    exporter.stop()


@pytest.fixture
def secret_manager():  # type: ignore[no-untyped-def]
    """The local Secret Manager (gRPC), seeded with the secrets the seeded ExternalSecrets read."""
    from sandbox.secretmanager_server import FakeSecretManager, seed_aia_secrets

    server = FakeSecretManager().start()
    seed_aia_secrets(server)
    try:
        yield server
    finally:
        server.stop()
