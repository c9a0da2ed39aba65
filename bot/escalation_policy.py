"""The escalation policy of the YAML config, validated at start.

A mistake here must stop the bot before it runs with a policy that would page
nobody: every level needs a target, every wait is positive, and every level a
setting refers to exists. Pydantic's messages name the field, e.g.
``config.escalation.levels.1.wait: negative wait '-5m'``.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bot.validators import parse_duration

# Same shapes as bot.settings.SLACK_PRINCIPAL; repeated here so settings can import this module.
SLACK_PRINCIPAL = re.compile(r"^[UWS][A-Z0-9]{2,}$")
EMAIL = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$")


class EscalationLevel(BaseModel):
    """One level: who is paged, by which channels, and how long before the next level."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=60)
    notify: list[str] = Field(default_factory=list, description="Slack users (U…/W…) or user groups (S…)")
    email: list[str] = Field(default_factory=list)
    webhook: str | None = Field(None, description="PagerDuty Events API v2 compatible endpoint")
    wait: float = Field(300.0, description="Before the next level is paged (30s, 5m, 1h)")

    @field_validator("wait", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float:
        seconds = parse_duration(value)
        if seconds < 0:
            raise ValueError(f"negative wait {str(value)!r}: a wait must be more than 0")
        if seconds == 0:
            raise ValueError("a wait of 0 would page the next level at once; use at least 1s")
        return seconds

    @field_validator("notify")
    @classmethod
    def _slack_ids(cls, value: list[str]) -> list[str]:
        for principal in value:
            if not SLACK_PRINCIPAL.fullmatch(str(principal)):
                raise ValueError(f"{principal!r} is not a Slack user ID (U…/W…) or user-group ID (S…)")
        return [str(p) for p in value]

    @field_validator("email")
    @classmethod
    def _emails(cls, value: list[str]) -> list[str]:
        for address in value:
            if not EMAIL.fullmatch(str(address)):
                raise ValueError(f"{address!r} is not an email address")
        return [str(a) for a in value]

    @field_validator("webhook")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @model_validator(mode="after")
    def _has_targets(self) -> EscalationLevel:
        if not (self.notify or self.email or self.webhook):
            raise ValueError(f"level {self.name!r} has no targets: give it notify, email or webhook")
        return self


class StartOn(BaseModel):
    """Which alert groups start an escalation by themselves."""

    model_config = ConfigDict(extra="forbid")

    severity: list[str] = Field(default_factory=lambda: ["critical"])
    labels: dict[str, str] = Field(default_factory=dict, description="all must match, when given")

    @field_validator("severity")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return [str(s).lower() for s in value]

    def matches(self, severity: str, labels: dict[str, str]) -> bool:
        if (severity or "").lower() not in self.severity:
            return False
        return all(labels.get(k) == v for k, v in self.labels.items())


class EscalationPolicy(BaseModel):
    """The ``escalation:`` section of the YAML config: the runbook's levels, plus a few options."""

    model_config = ConfigDict(extra="forbid")

    start_on: StartOn = Field(default_factory=StartOn)
    repeat: int = Field(0, ge=0, le=10, description="times the whole chain runs again")
    levels: list[EscalationLevel] = Field(min_length=1)
    # A new alert in an acknowledged group pages the acknowledged level again.
    repage_on_new_alerts: bool = False
    # Level an alert-started escalation pages first, and the level break-glass pages.
    start_level: int | str = 1
    break_glass_level: int | str | None = None

    @model_validator(mode="after")
    def _levels_exist(self) -> EscalationPolicy:
        names = [level.name for level in self.levels]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"level names must be unique; repeated: {', '.join(duplicates)}")
        for setting in ("start_level", "break_glass_level"):
            value = getattr(self, setting)
            if value is not None and self.find_level(value) is None:
                raise ValueError(f"{setting}: unknown level {value!r} (levels: {self.describe_levels()})")
        return self

    def describe_levels(self) -> str:
        return ", ".join(f"{i} {level.name}" for i, level in enumerate(self.levels, start=1))

    def find_level(self, ref: int | str | Any) -> int | None:
        """A level number (1-based) from a number or a name; None when there is no such level."""
        if isinstance(ref, bool):
            return None
        if isinstance(ref, int):
            return ref if 1 <= ref <= len(self.levels) else None
        text = str(ref).strip()
        if text.isdigit():
            return self.find_level(int(text))
        for number, level in enumerate(self.levels, start=1):
            if level.name.lower() == text.lower():
                return number
        return None

    def level(self, number: int) -> EscalationLevel:
        return self.levels[number - 1]

    @property
    def first_level(self) -> int:
        return self.find_level(self.start_level) or 1

    @property
    def break_glass(self) -> int:
        # The runbook's level 3 is the DevOps team; a shorter policy pages its last level.
        if self.break_glass_level is None:
            return min(3, len(self.levels))
        return self.find_level(self.break_glass_level) or len(self.levels)

    def uses_email(self) -> bool:
        return any(level.email for level in self.levels)

    def uses_webhook(self) -> bool:
        return any(level.webhook for level in self.levels)
