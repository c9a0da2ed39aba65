"""User-supplied regular expressions, guarded.

A pattern from Slack runs over megabytes of logs on the bot's CPU. The
``regex`` module can stop a match after a timeout, which is what stops a
catastrophic-backtracking pattern like ``(a+)+$`` from pinning a core; a total
budget across all lines stops a merely slow pattern from doing the same.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import regex

from bot.errors import UserError

MAX_PATTERN_LENGTH = 300
PER_LINE_TIMEOUT = 0.05
USAGE = "Use a regular expression like `ERROR|WARN` or `memory|oom` (case-insensitive)."


class SafePattern:
    def __init__(self, pattern: str, total_budget_seconds: float = 3.0) -> None:
        if len(pattern) > MAX_PATTERN_LENGTH:
            raise UserError(f"The pattern is {len(pattern)} characters; the limit is {MAX_PATTERN_LENGTH}.", USAGE)
        # grep's basic syntax writes alternation as \| (the runbook does): accept it.
        translated = pattern.replace(r"\|", "|")
        try:
            self._compiled = regex.compile(translated, regex.IGNORECASE | regex.VERSION0)
        except regex.error as exc:
            raise UserError(f"The pattern `{pattern[:60]}` does not compile: {exc}.", USAGE) from None
        self.pattern = pattern
        self._budget = total_budget_seconds

    def filter(self, lines: Iterable[str]) -> Iterator[str]:
        """Yield matching lines; raise UserError when the pattern is too slow."""
        deadline = time.monotonic() + self._budget
        for line in lines:
            try:
                hit = self._compiled.search(line[:4000], timeout=PER_LINE_TIMEOUT)
            except TimeoutError:
                raise UserError(
                    f"The pattern `{self.pattern[:60]}` takes too long to match "
                    "(nested repetition such as `(a+)+` backtracks without end). Simplify it.",
                    USAGE,
                ) from None
            if hit:
                yield line
            if time.monotonic() > deadline:
                raise UserError(
                    f"Searching with `{self.pattern[:60]}` took more than {self._budget:.0f}s; "
                    "narrow it with --since or a simpler pattern.",
                    USAGE,
                )
