"""The webhook payload: what is accepted, and the short reason when it is not."""

from __future__ import annotations

import json

import pytest

from bot.alerts.payload import PayloadError, parse_payload
from tests.bot.alerts.payloads import alert, payload


def _body(data: object) -> bytes:
    return json.dumps(data).encode()


def test_a_version_4_payload_parses() -> None:
    parsed = parse_payload(_body(payload([alert(pod="p-1")])))
    assert parsed.group_key == '{}:{alertname="HighErrorRate"}'
    first = parsed.alerts[0]
    assert first.alertname == "HighErrorRate" and first.severity == "warning"
    assert first.ends_at is None  # Alertmanager's 0001-01-01 means "not ended"
    assert first.starts_at.tzinfo is not None


def test_a_missing_fingerprint_is_derived_from_the_labels() -> None:
    raw = payload([alert()])
    del raw["alerts"][0]["fingerprint"]
    one, two = parse_payload(_body(raw)), parse_payload(_body(raw))
    assert one.alerts[0].fingerprint and one.alerts[0].fingerprint == two.alerts[0].fingerprint


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda p: p.pop("groupKey"), "groupKey"),
        (lambda p: p.update(version="3"), "version"),
        (lambda p: p.update(alerts=[]), "alerts"),
        (lambda p: p.pop("alerts"), "alerts"),
        (lambda p: p["alerts"][0].pop("startsAt"), "startsAt"),
        (lambda p: p["alerts"][0].update(startsAt="yesterday"), "startsAt"),
        (lambda p: p["alerts"][0].update(status="exploded"), "status"),
        (lambda p: p["alerts"][0]["labels"].pop("alertname"), "alertname"),
        (lambda p: p["alerts"][0].update(labels=["not", "a", "map"]), "labels"),
    ],
)
def test_wrong_or_missing_fields_name_the_field(mutate, expected: str) -> None:  # type: ignore[no-untyped-def]
    raw = payload([alert()])
    mutate(raw)
    with pytest.raises(PayloadError) as caught:
        parse_payload(_body(raw))
    assert expected in str(caught.value)
    assert len(str(caught.value)) < 400


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe", b"[1, 2]", b"null", b""])
def test_bodies_that_are_not_a_json_object_are_refused(body: bytes) -> None:
    with pytest.raises(PayloadError):
        parse_payload(body)
