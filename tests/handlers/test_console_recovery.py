"""`aia-bot console --sandbox`: the database check and a disaster recovery a newcomer can try.

The backup id is only known once `config backup` answered, so the script reads the console's
output as it goes, as a person at the keyboard would."""

from __future__ import annotations

import re
from collections.abc import Callable

from handlers.console import run_console

Step = str | Callable[[str], str]


class _Keyboard:
    def __init__(self, steps: list[Step]) -> None:
        self.steps = list(steps)
        self.lines: list[str] = []

    def isatty(self) -> bool:
        return False

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def readline(self) -> str:
        if not self.steps:
            return ""
        step = self.steps.pop(0)
        line = step(self.text) if callable(step) else step
        self.lines.append(f">>> {line}")
        return line + "\n"


def _backup_id(text: str) -> str:
    return re.findall(r"Configuration backup ([0-9a-f]+)", text)[0]


def test_db_check_and_a_two_approver_recovery_in_the_console() -> None:
    keys = _Keyboard([
        "db check",
        "config backup",
        "bluegreen cleanup", ":user bob", ":click 1",  # the idle colour is gone now
        ":user alice", lambda t: f"dr plan {_backup_id(t)}",
        lambda t: f"dr restore {_backup_id(t)}", ":user bob", ":click 1", ":user dave", ":click 1",
    ])
    assert run_console(True, stdin=keys, out=keys.lines.append) == 0
    out = keys.text
    assert "[OK] Database connectivity check" in out and "mas-system-postgres:5432" in out
    assert "sandbox-fake-password" not in out
    assert re.search(r"Deployment/aia-api-green\s+missing: would be created", out)
    assert "+ create Deployment/aia-api-green" in out and "approvals 0/2" in out
    assert "Approval 1 of 2 recorded." in out
    assert "[OK] Recreated 1 object from backup" in out and "Fresh backup " in out
    assert "Traceback" not in out
