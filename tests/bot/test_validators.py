"""Validators take the whole text or nothing: a trailing newline is not part of a name."""

from __future__ import annotations

import pytest

from bot.procedures.escalation import escalation_id
from bot.validators import (
    config_pairs,
    container_name,
    duration,
    format_duration,
    image_reference,
    k8s_name,
    label_selector,
    parse_duration,
)


@pytest.mark.parametrize(("convert", "good"), [
    (k8s_name, "aia-api-blue"),
    (container_name, "api"),
    (image_reference, "gcr.io/a-467519/aia-system:v1.5.0"),
    (label_selector, "app=aia-api"),
])
def test_a_trailing_newline_is_refused(convert, good: str) -> None:  # type: ignore[no-untyped-def]
    assert convert(good) == good
    for bad in (good + "\n", good + "\n--all-namespaces", "\n" + good):
        with pytest.raises(ValueError):
            convert(bad)


def test_config_keys_and_durations_are_full_matches() -> None:
    with pytest.raises(ValueError):
        config_pairs("LOG_LEVEL\n=DEBUG")
    assert duration(3600)("30m") == 1800
    with pytest.raises(ValueError):
        duration(3600)("30m\nx")


def test_escalation_ids_are_full_matches() -> None:
    assert escalation_id("E7K3Q2X") == "E7K3Q2X"
    with pytest.raises(ValueError):
        escalation_id("E7K3Q2X9")


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("5m", 300), ("1h", 3600), ("1h30m", 5400),
                                               ("1h 30m", 5400), ("1.5h", 5400), ("2d", 172800), (90, 90),
                                               ("-5m", -300)])
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "5 minutes", "", "30", "1h30", "m", True])
def test_parse_duration_refuses(text: object) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (45, "45s"), (44.6, "45s"), (300, "5m"), (5400, "1h 30m"),
                                               (5415, "1h 30m"), (86400 + 3 * 3600, "1d 3h"), (-3, "0s")])
def test_format_duration_shows_the_two_largest_units(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [45, 300, 5400, 7 * 86400, 86400 + 3600, 90])
def test_parse_duration_reads_what_format_duration_writes(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


def test_the_duration_parameter_is_bounded_whole_seconds() -> None:
    assert duration(7200)("1h30m") == 5400
    with pytest.raises(ValueError, match="at most 2h"):
        duration(7200)("3h")
    with pytest.raises(ValueError, match="more than zero"):
        duration(7200)("0s")
    with pytest.raises(ValueError, match="like 30m"):
        duration(7200)("soon")
