from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import ConfigurationError
from bot.escalation.service import check_paging_settings
from bot.escalation_policy import EscalationLevel, EscalationPolicy
from bot.settings import load_config_file, load_settings

DESIGN_SHAPE = """\
escalation:
  start_on: {severity: [critical]}
  repeat: 1
  levels:
    - name: on-call
      notify: [U0OPS01, S0ONCALL]
      email: [oncall@013a.tech]
      wait: 5m
    - name: devops-team
      notify: [S0DEVOPS]
      email: [devops@013a.tech]
      webhook: https://pager.example/v2/enqueue
      wait: 10m
"""


@pytest.mark.parametrize(("wait", "seconds"), [("30s", 30), ("5m", 300), ("1h30m", 5400), (90, 90)])
def test_waits(wait: object, seconds: float) -> None:
    assert EscalationLevel(name="on-call", notify=["U0OPS01"], wait=wait).wait == seconds  # type: ignore[arg-type]


@pytest.mark.parametrize(("wait", "message"), [("-5m", "negative wait"), ("0s", "at least 1s"),
                                               ("soon", "not a duration"), ("5 minutes", "not a duration")])
def test_bad_waits(wait: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EscalationLevel(name="on-call", notify=["U0OPS01"], wait=wait)  # type: ignore[arg-type]


def test_design_shape_loads(tmp_path: Path) -> None:
    path = tmp_path / "aia.yaml"
    path.write_text(DESIGN_SHAPE)
    policy = load_config_file(path).escalation
    assert policy is not None
    assert [level.wait for level in policy.levels] == [300, 600]
    assert policy.repeat == 1 and policy.start_on.matches("critical", {})
    assert not policy.start_on.matches("warning", {})
    assert policy.break_glass == 2  # a two-level policy pages its last level on break-glass
    assert policy.find_level("devops-team") == 2 and policy.find_level("3") is None


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (("wait: 10m", "wait: -10m"), "config.escalation.levels.1.wait: negative wait '-10m'"),
        (("      notify: [S0DEVOPS]\n      email: [devops@013a.tech]\n      webhook: https://pager.example/v2/enqueue\n", ""),
         "config.escalation.levels.1: level 'devops-team' has no targets"),
        (("repeat: 1", "repeat: 1\n  break_glass_level: 5"), "break_glass_level: unknown level 5"),
        (("repeat: 1", "repeat: 1\n  start_level: sre"), "start_level: unknown level 'sre'"),
        (("notify: [S0DEVOPS]", "notify: [devops]"), "'devops' is not a Slack user ID"),
        (("wait: 5m", "wiat: 5m"), "config.escalation.levels.0.wiat"),
        (("email: [oncall@013a.tech]", "email: [oncall]"), "'oncall' is not an email address"),
        (("repeat: 1", "repeat: -1"), "config.escalation.repeat"),
    ],
)
def test_bad_policy_is_named(tmp_path: Path, change: tuple[str, str], named: str) -> None:
    path = tmp_path / "aia.yaml"
    path.write_text(DESIGN_SHAPE.replace(*change))
    with pytest.raises(ConfigurationError) as info:
        load_config_file(path)
    assert named in str(info.value)


def test_no_levels_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "aia.yaml"
    path.write_text("escalation:\n  levels: []\n")
    with pytest.raises(ConfigurationError, match="config.escalation.levels"):
        load_config_file(path)


def test_paging_channels_need_their_settings() -> None:
    policy = EscalationPolicy.model_validate({"levels": [
        {"name": "a", "email": ["x@013a.tech"]}, {"name": "b", "webhook": "http://127.0.0.1:9/v2"}]})
    with pytest.raises(ConfigurationError, match="SMTP_HOST"):
        check_paging_settings(load_settings({}), policy)
    with pytest.raises(ConfigurationError, match="AIA_PAGING_ROUTING_KEY"):
        check_paging_settings(load_settings({"SMTP_HOST": "mail"}), policy)
    check_paging_settings(load_settings({"SMTP_HOST": "mail", "AIA_PAGING_ROUTING_KEY": "k"}), policy)
