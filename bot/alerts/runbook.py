"""Which runbook steps fit an alert: alertname → `/aia` commands, as buttons in the thread.

Defaults follow RUNBOOK.md; the YAML file's ``alert_procedures`` replaces the list for an
alertname (``alert_procedures: {HighErrorRate: ["logs --app --grep 5xx", ...]}``).
Placeholders are upper-case words filled from the alert's labels (POD from ``pod``,
DEPLOYMENT from ``deployment``, NAMESPACE, CONTAINER); a command whose placeholder has no
label is skipped, and so is one that names no registered procedure (a button that can
only answer "unknown procedure" is worse than none).

``LIVE_DEPLOYMENT`` is the deployment of the colour the API service sends traffic to,
read from the service's selector when the buttons are built (blue and green swap roles
after every switch, so a hard-coded ``rollback aia-api-blue`` would be wrong half the
time). When the selector cannot be read, that button is left out.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence

from bot.parsing import parse_command
from bot.registry import Registry
from bot.results import Action

log = logging.getLogger(__name__)

HIGH_ERROR_RATE = [
    r'logs --app --grep "error|exception|5\d\d" --since 1h',
    "top pods --sort cpu",
    "emergency scale-up",
    "rollback LIVE_DEPLOYMENT",
]
MEMORY = ["top pods --sort memory", 'logs POD --grep "memory|oom"']
POD_NOT_READY = ["describe pod POD", "events --since 1h", "logs POD --previous"]

DEFAULT_PROCEDURES: dict[str, list[str]] = {
    "HighErrorRate": HIGH_ERROR_RATE,
    "HighMemoryUsage": MEMORY,
    "PodOOMKilled": MEMORY,
    "PodNotReady": POD_NOT_READY,
    "PodCrashLooping": POD_NOT_READY,
    "KubePodNotReady": POD_NOT_READY,
    "KubePodCrashLooping": POD_NOT_READY,
    # The other rules of manifests/monitoring/aia-rules.yaml.
    "HighCPUUsage": ["top pods --sort cpu", "describe pod POD"],
    "HighLatency": ["metrics --range 1h", "top pods --sort cpu"],
    "AiaApiNoTraffic": ["status", "pods", "events --since 1h --warnings"],
    "DiskSpaceLow": ["top nodes", "nodes"],
    "DatabaseConnectionsHigh": ["status", "metrics --range 1h"],
}
# Alert names we did not list still get the fitting steps by what they are about.
_FAMILIES: list[tuple[re.Pattern[str], list[str]]] = [
    (re.compile(r"(?i)memory|oom"), MEMORY),
    (re.compile(r"(?i)notready|crashloop|podrestart|unavailable"), POD_NOT_READY),
    (re.compile(r"(?i)error ?rate|5xx"), HIGH_ERROR_RATE),
]
PLACEHOLDERS = {"POD": "pod", "DEPLOYMENT": "deployment", "NAMESPACE": "namespace", "CONTAINER": "container"}
LIVE = "LIVE_DEPLOYMENT"
_PLACEHOLDER = re.compile(r"\b(" + "|".join([LIVE, *PLACEHOLDERS]) + r")\b")
LiveDeployment = Callable[[], str]
# What goes into a command from a label must stay one harmless word.
_SAFE_VALUE = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
MAX_BUTTONS = 10


class RunbookMap:
    def __init__(self, registry: Registry, configured: Mapping[str, Sequence[str]] | None = None,
                 live_deployment: LiveDeployment | None = None) -> None:
        self.registry = registry
        self.live_deployment = live_deployment
        self.procedures = {**DEFAULT_PROCEDURES, **{k: list(v) for k, v in (configured or {}).items()}}
        for name, commands in (configured or {}).items():
            for command in commands:
                if self._procedure_of(command) is None:
                    log.warning("alert_procedures.%s: %r names no registered procedure (yet); "
                                "its button is left out", name, command)

    def commands_for(self, alertname: str) -> list[str]:
        if alertname in self.procedures:
            return list(self.procedures[alertname])
        for pattern, commands in _FAMILIES:
            if pattern.search(alertname):
                return list(commands)
        return []

    def _procedure_of(self, command: str) -> str | None:
        words = _PLACEHOLDER.sub("placeholder", command).split()
        proc = self.registry.match(words)
        return proc.name if proc else None

    def actions(self, alertnames: Sequence[str], labels: Mapping[str, str]) -> list[Action]:
        """Buttons for a group: each alertname's steps, placeholders filled, duplicates once."""
        seen: set[str] = set()
        actions: list[Action] = []
        live: list[str | None] = []  # read once, and only if a template needs it

        def live_name() -> str | None:
            if not live:
                try:
                    live.append(self.live_deployment() if self.live_deployment else None)
                except Exception as exc:  # noqa: BLE001 - no live colour, no button naming one
                    log.warning("live colour unreadable for the alert buttons: %s", type(exc).__name__)
                    live.append(None)
            return live[0]

        for alertname in alertnames:
            for template in self.commands_for(alertname):
                if LIVE in template:
                    name = live_name()
                    if name is None:
                        continue
                    template = template.replace(LIVE, name)
                command = fill(template, labels)
                if command is None or command in seen or self._procedure_of(command) is None:
                    continue
                if not self._parses(command):
                    continue
                seen.add(command)
                actions.append(Action(label=_label(command), command=command, style=_style(command)))
        return actions[:MAX_BUTTONS]

    def _parses(self, command: str) -> bool:
        try:
            parse_command(command, self.registry)
        except Exception:  # noqa: BLE001 - any parse problem means: no button
            return False
        return True


def fill(template: str, labels: Mapping[str, str]) -> str | None:
    missing = False

    def replace(match: re.Match[str]) -> str:
        nonlocal missing
        value = labels.get(PLACEHOLDERS[match.group(1)], "")
        if not _SAFE_VALUE.fullmatch(value):
            missing = True
            return match.group(0)
        return value

    command = _PLACEHOLDER.sub(lambda m: m.group(0) if m.group(1) == LIVE else replace(m), template)
    return None if missing or LIVE in command else command


def live_deployment_reader(read_selector: Callable[[], Mapping[str, str]], blue: str, green: str) -> LiveDeployment:
    """The live colour's deployment from the API service's selector (``version: blue|green``)."""

    def read() -> str:
        colour = read_selector().get("version")
        if colour not in ("blue", "green"):
            raise ValueError(f"the service selects version={colour!r}")
        return blue if colour == "blue" else green

    return read


def _label(command: str) -> str:
    return command if len(command) <= 75 else command[:74] + "…"


def _style(command: str) -> str | None:
    return "danger" if command.split()[0] in {"rollback", "emergency"} else None
