"""Answers that say what is true: --tail honoured everywhere, no card for a change that changes
nothing, and a usage line only after a mistake in the usage."""

from __future__ import annotations

from collections import Counter

from bot.results import Preformatted
from bot.service import OutcomeKind
from tests.harness.calls import run_as

NS = "aia-production"


def test_app_wide_logs_honour_tail(core, kube) -> None:  # type: ignore[no-untyped-def]
    outcome = run_as(core, "viewer", "logs --app --since 1d --tail 3")
    assert outcome.kind is OutcomeKind.OK, outcome.message
    text = next(p for p in outcome.result.parts if isinstance(p, Preformatted)).text
    per_container = Counter(line.split(" | ", 1)[0] for line in text.splitlines())
    assert per_container and max(per_container.values()) == 3, per_container
    assert "last 3 lines each" in outcome.result.title
    everything = run_as(core, "viewer", "logs --app --since 1d")
    full = next(p for p in everything.result.parts if isinstance(p, Preformatted)).text
    assert len(full.splitlines()) > len(text.splitlines())
    # The tail is the newest lines: each container's last line is the same either way.
    last = {line.split(" | ", 1)[0]: line for line in full.splitlines()}
    assert all(line in text.splitlines() for line in last.values())


def test_maintenance_off_when_already_off_says_so_without_a_card(core, kube) -> None:  # type: ignore[no-untyped-def]
    assert kube.get("ConfigMap", "aia-config", NS)["data"]["MAINTENANCE_MODE"] == "false"
    kube.requests.clear()
    outcome = run_as(core, "operator", "maintenance off")
    assert outcome.kind is OutcomeKind.USER_ERROR and outcome.approval is None
    assert outcome.message == "Maintenance mode is already off (MAINTENANCE_MODE=false in `aia-config`); nothing to do."
    assert outcome.usage is None
    assert not [r for r in kube.requests if r.method in ("PATCH", "PUT", "POST", "DELETE")]
    assert run_as(core, "operator", "maintenance on").kind is OutcomeKind.APPROVAL_REQUESTED


def test_maintenance_on_when_already_on_says_so(core, kube) -> None:  # type: ignore[no-untyped-def]
    config = kube.get("ConfigMap", "aia-config", NS)
    config["data"]["MAINTENANCE_MODE"] = "true"
    kube.put(config)
    outcome = run_as(core, "operator", "maintenance on")
    assert outcome.kind is OutcomeKind.USER_ERROR and outcome.approval is None
    assert "already on" in outcome.message
    assert run_as(core, "operator", "maintenance off").kind is OutcomeKind.APPROVAL_REQUESTED


def test_usage_line_only_after_usage_mistakes(core, kube) -> None:  # type: ignore[no-untyped-def]
    missing = run_as(core, "viewer", "describe pod no-such-pod-0")
    assert missing.kind is OutcomeKind.USER_ERROR and missing.usage is None, missing.usage
    typo = run_as(core, "viewer", "describe pod Bad_Name")
    assert typo.kind is OutcomeKind.USER_ERROR and typo.usage and "Usage" in typo.usage
    no_pod = run_as(core, "viewer", "logs")
    assert no_pod.kind is OutcomeKind.USER_ERROR and no_pod.usage and "--tail N" in no_pod.usage
