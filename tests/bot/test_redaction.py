from __future__ import annotations

import pytest

from bot.redaction import MASK, redact


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("using xoxb-123456789012-abcdefABCDEF", "xoxb-123456789012"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGciOiJIUzI1NiJ9"),
        ("DATABASE_URL=postgresql://aia:s3cr3t-pw@10.0.0.5:5432/aia", "s3cr3t-pw"),
        ("password=hunter2 user=bob", "hunter2"),
        ('{"api_key": "AKIA-123"}', "AKIA-123"),
        ("REDIS_PASSWORD: foo-bar-baz", "foo-bar-baz"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----", "MIIEow"),
    ],
)
def test_secret_values_are_masked(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out
    assert MASK in out


def test_ordinary_log_lines_are_untouched() -> None:
    line = "2026-11-27T03:00:00Z ERROR upstream timed out after 30s (request id 42)"
    assert redact(line) == line


# -- the corpus of secret shapes, property-tested -----------------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from bot.redaction import looks_secret_key, redact_env_value  # noqa: E402

# A secret: long enough to be one, from characters every shape below allows.
SECRETS = st.text(alphabet="abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789", min_size=12, max_size=40)
# What surrounds it in a log line, an error or an argument list.
NOISE = st.text(alphabet="lo01IO .,:()[]-\n", max_size=40)  # no character a secret uses

SHAPES = [
    "redis://:{s}@aia-redis:6379/0",
    "postgresql://aia_app:{s}@10.0.0.5:5432/aia",
    "PGPASSWORD={s}",
    "export PGPASSWORD={s}",
    "AWS_SECRET_ACCESS_KEY={s}",
    "AWS_SECRET_ACCESS_KEY: {s}",
    "SECRET_KEY={s}",
    "DB_PASSWORD={s}",
    "jwt_secret: '{s}'",
    '{{"api_key": "{s}"}}',
    "{{'DB_PASSWORD': '{s}'}}",
    "clientSecret={s}",
    "--password={s}",
    "--password {s}",
    "Authorization: Token {s}",
    "Authorization: Bearer {s}",
    "authorization: Basic {s}",
    "Authorization: {s}",
    "curl -H 'Authorization: Bearer {s}'",
    "bearer {s}",
    "xoxb-1234-{s}",
    "xoxp-1234-5678-{s}",
    "xapp-1-A0AIA-{s}",
    "xoxe.xoxp-1-{s}",
    "https://hooks.slack.com/services/T0AIA/B0HOOK/{s}",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.{s}",
    "-----BEGIN PRIVATE KEY-----\nMIIE{s}\n-----END PRIVATE KEY-----",
    "-----BEGIN RSA PRIVATE KEY-----\n{s}\n-----END RSA PRIVATE KEY-----",
    "-----BEGIN OPENSSH PRIVATE KEY-----\n{s}",  # a log cut off before the END line
    "SENTRY_DSN={s}",
    "refresh_token={s}&grant_type=refresh_token",
]


@settings(max_examples=60, deadline=None)
@given(secret=SECRETS, before=NOISE, after=NOISE, shape=st.sampled_from(SHAPES))
def test_every_secret_shape_is_masked_wherever_it_appears(secret: str, before: str, after: str, shape: str) -> None:
    text = f"{before} {shape.format(s=secret)}\n{after}"
    out = redact(text)
    assert secret not in out, (shape, out)
    assert MASK in out


@settings(max_examples=60, deadline=None)
@given(secret=SECRETS, shape=st.sampled_from(SHAPES))
def test_redaction_is_idempotent(secret: str, shape: str) -> None:
    once = redact(shape.format(s=secret))
    assert redact(once) == once


@given(st.text(alphabet="abcdefghij klmnop0123456789.,:()-\n", max_size=200))
def test_plain_words_are_left_alone(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize("line", [
    "secretKeyRef:\n  name: aia-secrets\n  key: DATABASE_URL",
    "secretName: aia-tls",
    "tokenPath: /var/run/secrets/token",
    "passenger=3 tokenizer=bpe",
    "GET /health 200 in 3ms",
    "Token refreshed for user 42",
])
def test_references_to_secrets_and_prose_are_not_masked(line: str) -> None:
    assert redact(line) == line


@pytest.mark.parametrize(("name", "secret"), [
    ("DB_PASSWORD", True), ("PGPASSWORD", True), ("AWS_SECRET_ACCESS_KEY", True), ("SECRET_KEY", True),
    ("API_KEY", True), ("slackToken", True), ("SENTRY_DSN", True), ("LOG_LEVEL", False),
    ("secretName", False), ("TOKEN_TTL", False), ("DATABASE_URL", False), ("MAINTENANCE_MODE", False),
])
def test_secret_key_names(name: str, secret: bool) -> None:
    assert looks_secret_key(name) is secret


def test_env_values_are_masked_by_name_or_content() -> None:
    assert redact_env_value("DB_PASSWORD", "hunter2") == MASK
    assert "pw1234567" not in redact_env_value("DATABASE_URL", "postgresql://u:pw1234567@db/aia")
    assert redact_env_value("LOG_LEVEL", "INFO") == "INFO"
