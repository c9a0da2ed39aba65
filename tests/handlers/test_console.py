"""`aia-bot console --sandbox` driven as a person drives it: on a terminal (a pty) and piped."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import subprocess
import termios
import time
from pathlib import Path

from tests.harness.bot_process import aia_bot_executable

ANSI = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|[78])")


def _env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "AIA_", "KUBECONFIG", "PROMETHEUS"))}
    return {**clean, "TERM": "xterm", "PYTHONUNBUFFERED": "1"}


def _own_terminal() -> None:
    """In the child: a session of its own whose controlling terminal is the pty, so Ctrl-C is SIGINT."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """The console on a pseudo-terminal: what a person types, everything the screen receives."""

    def __init__(self) -> None:
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen([aia_bot_executable(), "console", "--sandbox"], stdin=slave, stdout=slave,
                                        stderr=slave, env=_env(), close_fds=True, preexec_fn=_own_terminal)
        os.close(slave)
        self.screen = ""

    def read(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    self.screen += os.read(self.master, 65536).decode(errors="replace")
                except OSError:
                    return

    def wait_for(self, text: str, timeout: float = 60, after: int = 0) -> int:
        """Wait until ``text`` appears past position ``after``; return where it ends."""
        end = time.monotonic() + timeout
        while text not in self.screen[after:] and time.monotonic() < end:
            self.read(0.2)
        assert text in self.screen[after:], f"{text!r} never appeared in:\n{self.screen[-3000:]}"
        return self.screen.index(text, after) + len(text)

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def ctrl_c(self) -> None:
        self.type("\x03")  # the terminal turns it into SIGINT for the console

    def close(self) -> int:
        try:
            return self.process.wait(timeout=30)
        finally:
            os.close(self.master)


def test_a_rollout_is_followed_in_the_background_and_ctrl_c_stops_only_that() -> None:
    term = Terminal()
    try:
        term.wait_for("alice (operator)> ")
        term.type(":stuck on\n")
        term.wait_for("rollouts hang")
        term.type("scale aia-api-green 3\n")
        term.wait_for("following it in the background")
        term.wait_for("⏳ rollout of aia-api-green: 2/3 ready, 3/3 updated")
        mark = len(term.screen)
        term.read(5)  # the poll runs every 2 s: the line is rewritten in place, not repeated
        updates = term.screen[mark:]
        assert updates.count("\x1b7\x1b[1A") >= 2, repr(updates)
        assert "\n⏳" not in updates and "\r\n⏳" not in updates, repr(updates)
        # The prompt is usable while it follows.
        term.type("pods\n")
        listed = term.wait_for("aia-redis-")
        term.wait_for("alice (operator)> ", after=listed)  # the command is done: only the follow runs
        term.ctrl_c()
        term.wait_for("stopped following rollout of aia-api-green")
        assert term.process.poll() is None  # the session goes on
        term.type(":user bob\n")
        term.wait_for("you are now bob (approver)")
        term.ctrl_c()
        term.wait_for("nothing is running; :quit or Ctrl-D leaves")
        term.type(":quit\n")
        assert term.close() == 0
        assert "Traceback" not in term.screen
    finally:
        if term.process.poll() is None:
            term.process.kill()


def test_a_finished_rollout_replaces_its_progress_line() -> None:
    term = Terminal()
    try:
        term.wait_for("alice (operator)> ")
        term.type("scale aia-api-green 3\n")
        term.wait_for("rollout of aia-api-green: 3/3 ready, 3/3 updated, rolled out")
        term.type(":quit\n")
        assert term.close() == 0
    finally:
        if term.process.poll() is None:
            term.process.kill()


def _piped(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([aia_bot_executable(), "console", "--sandbox"], input=script, env=_env(),
                          capture_output=True, text=True, timeout=120)


def test_slack_markup_is_rendered_for_a_terminal_and_slack_says_when_nothing_is_new() -> None:
    done = _piped(":slack\noncall\npage 1 checkout answers 500\n:slack\n")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.splitlines()[0] == "nothing new in the sandbox Slack since the last look"
    assert "1 · on-call · then wait 2m" in out and "@alice" in out
    assert "slack DM: 🚨 You are paged (level 1 on-call)" in out
    # No raw Slack markup anywhere: mentions, shortcodes, bold markers.
    assert "<@U0" not in out and ":rotating_light:" not in out and "*1 · on-call*" not in out
    assert out.rstrip().splitlines()[-1] == "nothing new in the sandbox Slack since the last look"


def test_metrics_and_query_answer_in_the_sandbox_with_graphs() -> None:
    done = _piped('metrics\nquery sum(rate(http_requests_total{status=~"5.."}[5m])) --range 6h\nalerts\n')
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "not configured" not in out and "error:" not in out and "failed:" not in out, out
    assert re.search(r"Error rate \(5xx\)\s+\d", out) and re.search(r"p95 latency\s+\d+ ms", out), out
    saved = [Path(line.split("saved ", 1)[1]) for line in out.splitlines() if "saved " in line]
    assert [p.name for p in saved] == ["aia-key-metrics.png", "query.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in saved)
    assert "HighErrorRate" in out and "From Prometheus" in out
