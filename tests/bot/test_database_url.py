"""AIA_DATABASE_URL_TEMPLATES: how the bot builds a database URL secret it never reads."""

from __future__ import annotations

import urllib.parse

import pytest

from bot.database_url import database_url_parts, database_url_templates
from bot.errors import ConfigurationError
from bot.settings import load_settings


@pytest.mark.parametrize("template", [
    "postgresql://aia_app:{password}@10.20.0.3:5432/aia",
    "postgres://aia_app:{password}@db.internal/aia?sslmode=require",
    "postgresql+psycopg://aia_app:{password}@10.20.0.3/aia",
])
def test_good_templates_give_their_parts(template: str) -> None:
    parts = database_url_parts(template)
    assert parts is not None and parts.user == "aia_app" and parts.database == "aia"
    assert parts.port == 5432 and "{password}" not in parts.target and "aia_app@" in parts.target


@pytest.mark.parametrize("template", [
    "postgresql://aia_app:hunter2@10.20.0.3:5432/aia",  # a real password where {password} belongs
    "postgresql://aia_app@10.20.0.3:5432/aia",
    "postgresql://:{password}@10.20.0.3:5432/aia",
    "postgresql://aia_app:{password}@10.20.0.3:5432/",
    "postgresql://aia_app:{password}@:5432/aia",
    "postgresql://aia_app:{password}@10.20.0.3:99999/aia",
    "mysql://aia_app:{password}@10.20.0.3/aia",
    "postgresql://aia_app:{password}@10.20.0.3/aia?p={password}",
])
def test_bad_templates_are_refused(template: str) -> None:
    assert database_url_parts(template) is None


def test_render_puts_the_password_in_the_password_position_only() -> None:
    parts = database_url_parts("postgresql://aia_app:{password}@10.20.0.3:5432/aia?sslmode=require")
    assert parts is not None
    url = urllib.parse.urlsplit(parts.render("a/b:c@d"))
    assert url.username == "aia_app" and urllib.parse.unquote(url.password or "") == "a/b:c@d"
    assert url.hostname == "10.20.0.3" and url.path == "/aia" and url.query == "sslmode=require"


def test_setting_maps_secrets_to_templates() -> None:
    settings = load_settings({"AIA_DATABASE_URL_TEMPLATES": "  aia-database-url=postgresql://aia_app:{password}@h/aia\n"
                                                            " other=postgresql://u:{password}@h2:6432/o"})
    found = database_url_templates(settings.aia_database_url_templates)
    assert sorted(found) == ["aia-database-url", "other"] and found["other"].port == 6432


def test_a_bad_template_fails_at_start_without_echoing_it() -> None:
    with pytest.raises(ConfigurationError, match="AIA_DATABASE_URL_TEMPLATES") as caught:
        load_settings({"AIA_DATABASE_URL_TEMPLATES": "aia-database-url=postgresql://aia_app:hunter2@h/aia"})
    assert "hunter2" not in str(caught.value) and "entry 1" in str(caught.value)
