from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import ConfigurationError
from bot.settings import load_config_file, load_settings


def test_runbook_defaults() -> None:
    settings = load_settings({})
    assert settings.aia_namespace == "aia-production"
    assert settings.aia_deployment_blue == "aia-api-blue"
    assert settings.cloudsql_instance == "mas-system-postgres"
    assert settings.gcp_project == "a-467519"
    assert settings.slack_api_url == "https://slack.com/api/"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SLACK_API_URL": "slack.com"}, "SLACK_API_URL"),
        ({"PROMETHEUS_URL": "prometheus:9090"}, "PROMETHEUS_URL"),
        ({"AIA_HPA_MAX_REPLICAS": "lots"}, "AIA_HPA_MAX_REPLICAS"),
        ({"AIA_WORKER_THREADS": "0"}, "AIA_WORKER_THREADS"),
        ({"CLOUDSQL_EMULATOR_HOST": "http://127.0.0.1:9470"}, "CLOUDSQL_EMULATOR_HOST"),
        ({"CLOUDSQL_TIMEOUT_SECONDS": "0"}, "CLOUDSQL_TIMEOUT_SECONDS"),
    ],
)
def test_malformed_setting_is_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        load_settings(env)


def test_secrets_do_not_show_in_repr() -> None:
    settings = load_settings({"SLACK_BOT_TOKEN": "xoxb-999999999-secret", "SLACK_SIGNING_SECRET": "sig-secret"})
    assert "xoxb-999999999-secret" not in repr(settings)
    assert "sig-secret" not in str(settings)


def test_roles_file_shape_from_design(tmp_path: Path) -> None:
    path = tmp_path / "aia.yaml"
    path.write_text(
        "roles:\n  viewer: [U0VIEW1, S0ONCALL]\n  operator: [U0OPS01]\n"
        "  approver: [U0APR01, U0APR02]\n  admin: [U0ADM01]\n"
    )
    config = load_config_file(path)
    assert config.roles.approver == ["U0APR01", "U0APR02"]


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("roles:\n  viewer: [alice]\n", "config.roles.viewer"),
        ("roles:\n  superuser: [U0X1]\n", "config.roles.superuser"),
        ("rolez: {}\n", "config.rolez"),
        ("roles: [\n", "not valid YAML at line"),
        ("- a\n- b\n", "mapping at the top level"),
    ],
)
def test_bad_config_file_is_named(tmp_path: Path, content: str, named: str) -> None:
    path = tmp_path / "aia.yaml"
    path.write_text(content)
    with pytest.raises(ConfigurationError, match=named.replace(".", r"\.")):
        load_config_file(path)


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_config_file(tmp_path / "nope.yaml")


def test_configuration_can_require_more_approvers_but_never_zero(tmp_path: Path) -> None:
    path = tmp_path / "aia.yaml"
    path.write_text("approvals_required:\n  bluegreen switch: 2\n")
    assert load_config_file(path).approvals_required == {"bluegreen switch": 2}
    path.write_text("approvals_required:\n  bluegreen switch: 0\n")
    with pytest.raises(ConfigurationError, match="at least 1 approver"):
        load_config_file(path)
