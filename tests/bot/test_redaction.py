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
