"""The shipped Prometheus rule file: valid for promtool, and every rule points at a procedure."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from bot.alerts.runbook import RunbookMap
from bot.procedures import build_registry

RULES = Path(__file__).resolve().parents[3] / "manifests" / "monitoring" / "aia-rules.yaml"


def rule_file_text() -> str:
    """The PrometheusRule's ``spec``: what a plain Prometheus loads as its rule file."""
    return yaml.safe_dump(yaml.safe_load(RULES.read_text())["spec"], sort_keys=False)


def _rules() -> list[dict]:
    return [r for g in yaml.safe_load(rule_file_text())["groups"] for r in g["rules"]]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool comes with Debian's prometheus")
def test_promtool_accepts_the_rule_file(tmp_path: Path) -> None:
    rule_file = tmp_path / "aia-rules.yml"
    rule_file.write_text(rule_file_text())
    done = subprocess.run(["promtool", "check", "rules", str(rule_file)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_it_is_a_prometheus_rule_object() -> None:
    doc = yaml.safe_load(RULES.read_text())
    assert doc["kind"] == "PrometheusRule" and doc["metadata"]["name"] == "aia-rules"


def test_the_runbooks_high_error_rate_rule_is_there() -> None:
    rule = next(r for r in _rules() if r["alert"] == "HighErrorRate")
    assert 'status=~"5.."' in rule["expr"] and rule["expr"].rstrip().endswith("> 0.1")
    assert rule["for"] == "5m" and rule["labels"]["severity"] == "warning"


def test_every_rule_names_a_registered_procedure_and_has_buttons() -> None:
    registry = build_registry()
    mapping = RunbookMap(registry)
    for rule in _rules():
        pointer = rule["annotations"]["runbook_url"]
        assert pointer.startswith("/aia "), rule["alert"]
        words = pointer.removeprefix("/aia ").replace("{{ $labels.pod }}", "pod-1").split()
        assert registry.match(words) is not None, pointer
        assert mapping.commands_for(rule["alert"]), f"no runbook buttons for {rule['alert']}"
