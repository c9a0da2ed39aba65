"""Errors the core raises on purpose.

A :class:`UserError` is the caller's mistake: its message is safe to show in
Slack as is and says what the right form is. Anything else is our fault and is
shown as a short apology with an error id, never as a stack trace.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in what the user typed, or a target that does not exist."""

    def __init__(self, message: str, usage: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.usage = usage


class BackendUnavailable(Exception):
    """A backend (Kubernetes, Prometheus, Slack) could not be reached or failed.

    The message names the backend and what failed; it never carries tokens.
    """


class ConfigurationError(Exception):
    """A missing or malformed setting: the bot refuses to start and names it."""


class PageFailed(Exception):
    """A page did not go out. ``retry`` says whether trying again may help.

    Here rather than with the paging channels: the escalation procedures catch it and
    may not import the escalation package."""

    def __init__(self, message: str, retry: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.retry = retry
