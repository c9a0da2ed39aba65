"""What a procedure returns: plain data, no Block Kit.

Renderers (``handlers/render_*``) turn a Result into Slack blocks, terminal text
or an audit summary. Keeping presentation out of procedures is what lets the
console, Slack and the tests share every procedure unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum


class Status(StrEnum):
    """How the answer should look at a glance (colour / emoji in Slack)."""

    OK = "ok"
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True)
class Text:
    """A paragraph in Slack's mrkdwn (``*bold*``, ``_italic_``, ``code``)."""

    text: str


@dataclass(frozen=True)
class Fields:
    """Label/value pairs shown side by side."""

    pairs: list[tuple[str, str]]


@dataclass(frozen=True)
class Table:
    """Rows of cells. Long tables are cut inline and uploaded whole as a file."""

    columns: list[str]
    rows: list[list[str]]
    title: str | None = None
    empty_text: str = "nothing"


@dataclass(frozen=True)
class Preformatted:
    """Verbatim text (logs, YAML). Long text goes up as a file named ``filename``."""

    text: str
    filename: str = "output.txt"
    title: str | None = None


@dataclass(frozen=True)
class Image:
    """A PNG (graphs): always uploaded into the thread."""

    png: bytes
    filename: str
    title: str


@dataclass(frozen=True)
class Action:
    """A button that runs another ``/aia`` command as the person who clicks it."""

    label: str
    command: str
    style: str | None = None  # "primary" | "danger" | None


Part = Text | Fields | Table | Preformatted | Image


@dataclass
class Result:
    """The answer of one procedure."""

    title: str
    status: Status = Status.INFO
    parts: list[Part] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    # One line for the audit log and for notifications; never holds secret data.
    summary: str = ""
    # Progress after the answer (a rollout): each yielded Result replaces the previous
    # one in the thread. Runs on a worker thread after the answer was posted.
    followup: Callable[[], Iterator[Result]] | None = None
    # A stored long operation (bot/store/cloud_operations) the followup follows: the handler
    # records where the progress is shown, so a restarted bot updates the same message.
    resume_key: str | None = None

    def add(self, part: Part) -> Result:
        self.parts.append(part)
        return self
