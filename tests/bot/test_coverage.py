"""Every command of the runbook maps to a procedure or to a named gap."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.coverage import Gap, coverage_markdown, runbook_commands, target_of
from bot.procedures import build_registry

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "docs" / "RUNBOOK.md"


def test_runbook_has_the_commands_we_expect() -> None:
    commands = [c for _, c in runbook_commands(RUNBOOK)]
    assert len(commands) > 40
    assert any(c.startswith("kubectl logs -n aia-production --since=1h") for c in commands)


@pytest.mark.parametrize(("section", "command"), runbook_commands(RUNBOOK))
def test_every_runbook_command_is_covered(section: str, command: str) -> None:
    target = target_of(command)
    assert target is not None, f"no procedure or gap for {command!r} ({section})"
    if isinstance(target, str):
        assert build_registry().get(target) is not None, f"{target!r} is not a registered procedure"
    else:
        assert isinstance(target, Gap) and target.where and target.why


def test_coverage_doc_is_generated_from_the_registry() -> None:
    assert (ROOT / "docs" / "coverage.md").read_text() == coverage_markdown(RUNBOOK), (
        "docs/coverage.md is stale: run `aia-bot docs`"
    )


def test_every_procedure_except_meta_names_its_runbook_section() -> None:
    for proc in build_registry().all():
        assert proc.runbook or proc.name in {"help", "audit"}, proc.name


def test_reference_docs_are_generated_from_the_code() -> None:
    from bot.reference_docs import configuration_markdown, procedures_markdown

    assert (ROOT / "docs" / "procedures.md").read_text() == procedures_markdown(), "run `aia-bot docs`"
    assert (ROOT / "docs" / "configuration.md").read_text() == configuration_markdown(), "run `aia-bot docs`"
