from __future__ import annotations

import time

import pytest

from bot.errors import UserError
from bot.safe_regex import SafePattern


def test_case_insensitive_and_grep_alternation() -> None:
    pattern = SafePattern(r"memory\|oom")
    assert list(pattern.filter(["OOMKilled", "fine", "Memory high"])) == ["OOMKilled", "Memory high"]


def test_invalid_pattern_is_a_user_error() -> None:
    with pytest.raises(UserError, match="does not compile"):
        SafePattern("(unclosed")


def test_catastrophic_backtracking_is_stopped_quickly() -> None:
    pattern = SafePattern(r"(a|aa)+$")
    started = time.monotonic()
    with pytest.raises(UserError, match="too long"):
        list(pattern.filter(["a" * 40 + "!"] * 20))
    assert time.monotonic() - started < 3


def test_overlong_pattern_is_refused() -> None:
    with pytest.raises(UserError, match="limit is 300"):
        SafePattern("a" * 301)
