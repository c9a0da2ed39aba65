from __future__ import annotations

import pytest

from bot.procedures import build_registry
from bot.registry import RiskClass
from bot.roles import Role


def test_overrides_may_raise_a_risk_class() -> None:
    registry = build_registry({"logs": "write"})
    assert registry.get("logs").risk is RiskClass.WRITE  # type: ignore[union-attr]
    assert registry.get("logs").required_role is Role.OPERATOR  # type: ignore[union-attr]


def test_overrides_may_never_lower_one() -> None:
    from dataclasses import replace

    registry = build_registry()
    proc = registry.get("pods")
    assert proc is not None
    registry.procedures["pods"] = replace(proc, risk=RiskClass.DESTRUCTIVE)
    with pytest.raises(ValueError, match="cannot lower destructive to read"):
        registry.with_overrides({"pods": "read"})


@pytest.mark.parametrize(("overrides", "message"), [({"nope": "write"}, "unknown procedure"),
                                                    ({"pods": "dangerous"}, "not one of")])
def test_bad_overrides_are_named(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_registry(overrides)


def test_names_are_unique_and_syntax_is_derived() -> None:
    registry = build_registry()
    assert registry.get("describe pod").syntax == "/aia describe pod NAME"  # type: ignore[union-attr]
    assert len({p.name for p in registry.all()}) == len(registry.all())
