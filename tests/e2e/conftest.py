"""`aia-bot serve` processes on real PostgreSQL, with local Slack and Kubernetes.

Starting a bot (its imports) is what an end-to-end test pays most for. So a bot is shared as
widely as its settings allow: the plain two-person-rule stack and the Google Cloud stack serve
every module of this package that needs nothing else, and each test resets the cluster, Slack
and database under the running bot instead of starting a new one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.slack_server import FakeSlackServer
from tests.conftest import fresh_pg_database
from tests.harness.approvals import Stack, approval_stack
from tests.harness.bot_process import BotProcess
from tests.harness.google_cloud import CloudStack, cloud_stack
from tests.harness.users import TEAM_ID, install_users

SIGNING_SECRET = "e2e-signing-secret-4f1c2a"
ROLES_YAML = """\
roles:
  viewer:   [U0VIEW1, S0ONCALL]
  operator: [U0OPS01]
  approver: [U0APR01]
  admin:    [U0ADM01]
"""


@pytest.fixture(scope="module")
def e2e_kube():  # type: ignore[no-untyped-def]
    from sandbox.aia_seed import seed_aia_system
    from sandbox.kube_server import FakeKubeAPIServer

    server = FakeKubeAPIServer().start()
    seed_aia_system(server)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def e2e_slack() -> Iterator[FakeSlackServer]:
    server = FakeSlackServer(team_id=TEAM_ID).start()
    install_users(server)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def e2e_pg() -> Iterator[str]:
    with fresh_pg_database() as url:
        yield url


@pytest.fixture(scope="module")
def bot(tmp_path_factory: pytest.TempPathFactory, e2e_kube, e2e_slack, e2e_pg, prometheus) -> Iterator[BotProcess]:  # type: ignore[no-untyped-def]
    workdir: Path = tmp_path_factory.mktemp("bot")
    env = {
        "SLACK_BOT_TOKEN": e2e_slack.bot_token,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": e2e_slack.api_url,
        "DATABASE_URL": e2e_pg,
        "KUBECONFIG": e2e_kube.write_kubeconfig(str(workdir / "kubeconfig")),
        "AIA_LOG_LEVEL": "DEBUG",
        "PROMETHEUS_URL": prometheus.url,
        "AIA_COMMAND_CHANNELS": "C0PRIVATE",  # test_serve's channel the bot is not in
    }
    process = BotProcess(env, workdir / "bot.log", config_yaml=ROLES_YAML).start()
    yield process
    process.stop()


@pytest.fixture(scope="package")
def approvals_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The two-person-rule stack with default settings (two-person rule, database check, disaster
    recovery); a test that needs other settings starts its own stack or `Stack.extra_bot`."""
    with approval_stack(tmp_path_factory.mktemp("approvals")) as built:
        yield built


@pytest.fixture(scope="package")
def cloud_shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudStack]:
    """The Google Cloud stack with default settings (Secret Manager procedures, image tags)."""
    with cloud_stack(tmp_path_factory.mktemp("cloud")) as built:
        yield built
