"""`aia-bot console --sandbox` runs the Cloud SQL procedures against its own Cloud SQL server."""

from __future__ import annotations

import tempfile
from pathlib import Path

from bot.core import build_core
from bot.settings import BotConfigFile, load_settings
from handlers.console import Console, Sandbox
from tests.handlers.test_cli import _run


def test_console_shows_status_and_follows_a_backup_to_done() -> None:
    done = _run(["console", "--sandbox"], stdin="/aia db status\n/aia db backup\n:user carol\n/aia db backup\n",
                timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Cloud SQL · mas-system-postgres" in out and "RUNNABLE" in out
    assert "Backup of mas-system-postgres started" in out and "is done" in out
    assert "refused: /aia db backup needs the operator role" in out
    assert "Traceback" not in out + done.stderr


def test_console_restore_needs_two_approvers_then_restores() -> None:
    box = Sandbox()
    lines: list[str] = []
    try:
        core = build_core(load_settings({**box.env(), "CLOUDSQL_POLL_SECONDS": "0.2"}),
                          BotConfigFile(roles=box.roles()))
        box.cloudsql.operation_seconds = 0.5
        console = Console(core, Path(tempfile.mkdtemp()), lines.append, box.slack)
        target = sorted(b.id for b in box.cloudsql.backups("mas-system-postgres") if b.status.name == "SUCCESSFUL")[0]
        for line in (f"/aia db restore {target}", ":user bob", ":click 1", ":user dave", ":click 1"):
            console.handle_line(line)
        console.stop_follows_at_exit()  # as at the end of a piped script: the restore is followed to its end
        out = "\n".join(lines)
        assert "LOST     everything written to mas-system-postgres since" in out  # the card says it plainly
        assert "Approval 1 of 2 recorded" in out and "Approved; running it now." in out
        assert "is restored from backup" in out
        assert box.cloudsql.restored == [("mas-system-postgres", target)]
        core.engine.dispose()
    finally:
        box.close()
