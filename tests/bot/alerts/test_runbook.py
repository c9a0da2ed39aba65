"""Runbook buttons: the alertname map, its defaults, placeholders and configuration."""

from __future__ import annotations

from bot.alerts.runbook import DEFAULT_PROCEDURES, RunbookMap, fill, live_deployment_reader
from bot.procedures import build_registry


def _commands(mapping: RunbookMap, names: list[str], **labels: str) -> list[str]:
    return [a.command for a in mapping.actions(names, labels)]


def test_high_error_rate_defaults_are_the_runbook_steps() -> None:
    assert DEFAULT_PROCEDURES["HighErrorRate"] == [
        r'logs --app --grep "error|exception|5\d\d" --since 1h', "top pods --sort cpu",
        "emergency scale-up", "rollback LIVE_DEPLOYMENT",
    ]
    registry = build_registry()
    commands = _commands(RunbookMap(registry, live_deployment=lambda: "aia-api-blue"), ["HighErrorRate"])
    assert commands[:2] == [r'logs --app --grep "error|exception|5\d\d" --since 1h', "top pods --sort cpu"]
    assert commands[2:] == ["emergency scale-up", "rollback aia-api-blue"]


def test_rollback_button_names_the_live_colour_read_at_render_time() -> None:
    selector = {"version": "blue"}
    live = live_deployment_reader(lambda: selector, "aia-api-blue", "aia-api-green")
    mapping = RunbookMap(build_registry(), live_deployment=live)
    assert "rollback aia-api-blue" in _commands(mapping, ["HighErrorRate"])
    selector["version"] = "green"  # after a switch, green is live
    assert "rollback aia-api-green" in _commands(mapping, ["HighErrorRate"])
    assert not any(c.startswith("rollback aia-api-blue") for c in _commands(mapping, ["HighErrorRate"]))
    selector["version"] = "purple"  # unreadable: no rollback button rather than a wrong one
    assert not any(c.startswith("rollback") for c in _commands(mapping, ["HighErrorRate"]))


def test_pod_placeholders_come_from_labels_and_unfillable_buttons_are_skipped() -> None:
    mapping = RunbookMap(build_registry())
    assert _commands(mapping, ["PodNotReady"], pod="aia-api-blue-x1") == [
        "describe pod aia-api-blue-x1", "events --since 1h", "logs aia-api-blue-x1 --previous",
    ]
    assert _commands(mapping, ["PodNotReady"]) == ["events --since 1h"]
    assert _commands(mapping, ["HighMemoryUsage"], pod="p-1") == [
        "top pods --sort memory", 'logs p-1 --grep "memory|oom"',
    ]
    # A label value that is not a plain name never reaches a command.
    assert fill("describe pod POD", {"pod": "x; rm -rf /"}) is None


def test_families_and_configuration() -> None:
    registry = build_registry()
    mapping = RunbookMap(registry, {"DiskAlmostFull": ["top nodes", "no-such-procedure now"]})
    assert _commands(mapping, ["ContainerMemoryNearLimit"], pod="p")[0] == "top pods --sort memory"
    assert _commands(mapping, ["DiskAlmostFull"]) == ["top nodes"]
    assert _commands(mapping, ["SomethingUnknown"]) == []
    # Two alerts with the same steps give one set of buttons.
    assert len(_commands(mapping, ["HighMemoryUsage", "PodOOMKilled"], pod="p")) == 2
