"""Validators take the whole text or nothing: a trailing newline is not part of a name."""

from __future__ import annotations

import pytest

from bot.procedures.escalation import escalation_id
from bot.validators import (
    config_pairs,
    container_name,
    duration,
    image_reference,
    k8s_name,
    label_selector,
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
