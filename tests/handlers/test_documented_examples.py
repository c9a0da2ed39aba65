"""Every `/aia …` example in the README, the docs and the registry runs as written in the sandbox.

An example is a command with nothing left to fill in. Syntax lines (``/aia logs POD [--since 1h]``)
and mentions of a procedure by name (``/aia scale`` runs at once) are not examples; the
collector says which it left out and why, and a test checks that it still finds the examples.
The escalation id in the examples (``E7K3Q2X``) stands for "the id on the card": each example
that names it runs against an escalation paged just before, with that escalation's id.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import threading
import time
from pathlib import Path

from bot.procedures import build_registry
from tests.harness.bot_process import aia_bot_executable

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_ESCALATION_ID = "E7K3Q2X"
# Ids and times in the Cloud SQL and recovery examples stand for "one the sandbox has".
EXAMPLE_DB_BACKUP_ID = "1764558000000"
EXAMPLE_CONFIG_BACKUP_ID = "3f9c2a7b1d04"
# The sandbox is healthy: an example whose right answer there is a refusal, and why it is right.
EXPECTED_REFUSALS = {
    "dr": ("Nothing to restore from backup",),  # a fresh backup of a complete namespace has nothing missing
}
EXAMPLE_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
ERROR_PREFIXES = ("error:", "failed:", "refused:")
DELIMITER = "you are now dave (admin)"


def _placeholders() -> set[str]:
    registry = build_registry({}, set())
    words = {"K=V", "KEY=VALUE", "RE", "REGEX", "PROMQL", "ID", "N"}
    for proc in registry.procedures.values():
        for param in proc.params:
            if param.metavar:
                words.add(param.metavar)
        words.update(w for w in re.findall(r"[A-Z][A-Z_=-]+", proc.syntax) if len(w) > 1)
    return words


def _names_a_procedure(command: str) -> bool:
    """``/aia scale`` alone names the procedure, ``/aia top`` a family of them: not examples of running
    them. A bare name is still an example when the procedure needs nothing more (``/aia pods``)."""
    registry = build_registry({}, set())
    words = tuple(command.split()[1:])
    for proc in registry.procedures.values():
        if proc.words == words:
            needs = any(p.required for p in proc.params)
            # `/aia logs` needs a POD or --app, which the registry cannot say as "required".
            return needs or proc.name == "logs"
        if proc.words[:len(words)] == words:
            return True
    return False


def collect() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(where, command) of the examples, and (command, why) of what is not an example."""
    found: list[tuple[str, str]] = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"`(/aia [^`\n]+)`|^\s*(/aia [^\n]+)$", text, re.MULTILINE):
            found.append((path.name, (match.group(1) or match.group(2)).strip()))
    registry = build_registry({}, set())
    for proc in registry.procedures.values():
        found.extend((f"registry:{proc.name}", example) for example in proc.examples)
    placeholders = _placeholders()
    examples: list[tuple[str, str]] = []
    left_out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for where, command in found:
        if command in seen:
            continue
        seen.add(command)
        unquoted = re.sub(r'"[^"]*"', "", command)
        if (re.search(r"(^|\s)\[", unquoted) or "…" in command or "..." in command or "\\|" in command
                or re.search(r"<[^>]+>", unquoted)):
            left_out.append((command, "syntax"))
        elif any(token in placeholders for token in unquoted.split()[1:]):
            left_out.append((command, "has a placeholder"))
        elif _names_a_procedure(command):
            left_out.append((command, "names a procedure"))
        else:
            examples.append((where, command))
    return examples, left_out


class Console:
    """One piped console session, one command at a time, as the admin (dave)."""

    def __init__(self) -> None:
        clean = {k: v for k, v in os.environ.items()
                 if not k.startswith(("SLACK_", "AIA_", "KUBECONFIG", "PROMETHEUS"))}
        self.process = subprocess.Popen([aia_bot_executable(), "console", "--sandbox"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        env={**clean, "PYTHONUNBUFFERED": "1"})
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self._send(":user dave")
        self._read_answer(90)

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def _send(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{text}\n")
        self.process.stdin.flush()

    def run(self, command: str, timeout: float = 90) -> list[str]:
        """The answer to ``command``: everything printed before the delimiter that follows it."""
        self._send(f"{command}\n:user dave")
        return self._read_answer(timeout)

    def _read_answer(self, timeout: float) -> list[str]:
        answer: list[str] = []
        end = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.1, end - time.monotonic()))
            if line == DELIMITER:
                return answer
            answer.append(line)

    def close(self) -> str:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=180)  # the end waits for changes still followed
        rest = []
        while not self.lines.empty():
            rest.append(self.lines.get())
        return "\n".join(rest)


def _with_sandbox_ids(console: Console, command: str) -> str:
    """The example with the sandbox's own ids and a time inside its recovery window; a Cloud SQL
    change waits until the instance is idle (an example is not about "instance busy")."""
    from datetime import UTC, datetime, timedelta

    if " ".join(command.split()[1:3]) in (*CLOUD_SQL_CHANGES, "secrets rotate"):  # not `db backups`, a read
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ops = "\n".join(console.run("/aia db operations"))
            busy = re.search(r"\b(\d+) running\b", ops)
            if busy is None or busy.group(1) == "0":
                break
            time.sleep(0.2)
    if EXAMPLE_DB_BACKUP_ID in command:
        listed = console.run("/aia db backups 10")
        ids = [m.group(0) for line in listed if "successful" in line.lower()
               for m in [re.search(r"\b\d{10,}\b", line)] if m]
        assert ids, "\n".join(listed)
        command = command.replace(EXAMPLE_DB_BACKUP_ID, ids[0])
    if EXAMPLE_CONFIG_BACKUP_ID in command:
        taken = "\n".join(console.run("/aia config backup"))
        match = re.search(r"backup ([0-9a-f]{12})", taken)
        assert match, taken
        command = command.replace(EXAMPLE_CONFIG_BACKUP_ID, match.group(1))
    an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return EXAMPLE_TIME.sub(an_hour_ago, command)


def test_the_collector_finds_the_examples_and_leaves_out_only_syntax() -> None:
    examples, left_out = collect()
    commands = {command for _, command in examples}
    assert {"/aia status", "/aia pods", "/aia page 1 checkout is down", "/aia metrics"} <= commands
    assert any(c.startswith("/aia logs aia-api-blue-") for c in commands)
    assert any(c.startswith("/aia ack " + EXAMPLE_ESCALATION_ID) for c in commands)
    left = dict(left_out)
    assert left["/aia logs POD [--container C] [--previous] [--since 1h] [--grep RE]"] == "syntax"
    assert left["/aia scale DEPLOYMENT N"] == "has a placeholder"
    assert left.get("/aia scale") == "names a procedure"


CLOUD_SQL_CHANGES = ("db backup", "db restore", "db clone")  # change no pod; one sandbox operation runs 4 s


def _reads_first(examples: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Reads before changes: a change (a restart, a deploy) replaces the pods a read example names.

    A Cloud SQL change replaces no pod, and the next one waits until the sandbox instance is idle
    again (`_with_sandbox_ids`): so the Cloud SQL changes are spread among the reads, and the
    secret rotations (a restart, and a Cloud SQL user change) among the other changes, where
    they find the instance idle instead of waiting for it."""
    from bot.registry import RiskClass

    registry = build_registry({}, set())
    reads: list[tuple[str, str]] = []
    cloud_sql: list[tuple[str, str]] = []
    rotations: list[tuple[str, str]] = []
    changes: list[tuple[str, str]] = []
    for example in examples:
        proc = registry.match(example[1].split()[1:])
        if proc is None or proc.risk is RiskClass.READ:
            reads.append(example)
        elif proc.name in CLOUD_SQL_CHANGES:
            cloud_sql.append(example)
        elif proc.name == "secrets rotate":
            rotations.append(example)
        else:
            changes.append(example)
    return _spread(reads, cloud_sql) + _spread(changes, rotations)


def _spread(base: list[tuple[str, str]], extra: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``base`` in order with the ``extra`` (in order) evenly between its items, none first."""
    if not extra:
        return list(base)
    step = max(1, len(base) // (len(extra) + 1))
    out: list[tuple[str, str]] = []
    pending = list(extra)
    for i, item in enumerate(base, start=1):
        out.append(item)
        if pending and i % step == 0:
            out.append(pending.pop(0))
    return out + pending


def test_every_documented_example_runs_as_written() -> None:
    examples, _ = collect()
    examples = _reads_first(examples)
    console = Console()
    failures: list[str] = []
    try:
        for where, command in examples:
            escalation = None
            if EXAMPLE_ESCALATION_ID in command or command.split()[1] in ("ack", "snooze", "resolve", "escalate",
                                                                            "timeline"):
                paged = "\n".join(console.run("/aia page 1 a fresh escalation for the next example"))
                match = re.search(r"Escalation (E[0-9A-Z]{6})", paged)
                assert match, paged
                escalation = match.group(1)
            command = _with_sandbox_ids(console, command)
            answer = console.run(command.replace(EXAMPLE_ESCALATION_ID, escalation or EXAMPLE_ESCALATION_ID))
            errors = [line for line in answer if line.startswith((*ERROR_PREFIXES, "Traceback"))
                      and not any(line.startswith(f"error: {ok}") for ok in EXPECTED_REFUSALS.get(command.split()[1], ()))]
            if errors or not answer:
                failures.append(f"{where}: {command}\n    " + "\n    ".join(errors or ["(no answer)"]))
            opened = re.search(r"Escalation (E[0-9A-Z]{6}) started", "\n".join(answer))
            for done in {escalation, opened.group(1) if opened else None} - {None}:
                console.run(f"/aia resolve {done}")  # one open escalation at a time, as the examples assume
    finally:
        rest = console.close()
    assert not any(line.startswith("Traceback") for line in rest.splitlines())
    assert not failures, "examples that do not run as written:\n" + "\n".join(failures)
