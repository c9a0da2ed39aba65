"""Every configuration mistake a newcomer makes: one line naming the setting, exit 2, no traceback.

The corpus is fed to `check`, `serve` and `socket` as real processes. Slack's URL points at a
closed port, so a mistake that slipped through to a backend call would name SLACK_API_URL
instead of the setting that is wrong.
"""

from __future__ import annotations

import os
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.harness.bot_process import aia_bot_executable

# (setting that is wrong, its value; "{tmp}" is the test's directory)
CORPUS: list[tuple[str, str]] = [
    ("DATABASE_URL", "not-a-url"),
    ("DATABASE_URL", "mysql://aia:hunter2-db-password@db.internal/aia"),
    ("KUBECONFIG", "{tmp}/kubeconfig-bad-yaml"),
    ("KUBECONFIG", "{tmp}/no-such-kubeconfig"),
    ("KUBECONFIG", "{tmp}/kubeconfig-no-clusters"),
    ("AIA_BOT_CONFIG", "{tmp}/bad-yaml.yaml"),
    ("AIA_BOT_CONFIG", "{tmp}/no-such-config.yaml"),
    ("AIA_BOT_CONFIG", "{tmp}/bad-role.yaml"),
    ("AIA_NAMESPACE", "AIA_Production"),
    ("AIA_DEPLOYMENT_BLUE", "aia api blue"),
    ("AIA_CONFIG_MAP", "-aia-config"),
    ("SLACK_APP_TOKEN", "xoxb-1234-pasted-into-the-wrong-place"),
    ("SLACK_BOT_TOKEN", "xapp-1-pasted-into-the-wrong-place"),
    ("SLACK_API_URL", "slack.com/api"),
    ("PROMETHEUS_URL", "prometheus:9090"),
    ("AIA_WORKER_THREADS", "many"),
    ("AIA_APP_SELECTOR", "app=aia api"),
    ("AIA_LOG_LEVEL", "verbose"),
]
SECRETS = ("hunter2-db-password", "1234-pasted-into-the-wrong-place", "1-pasted-into-the-wrong-place")


def _closed_port() -> int:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        return int(free.getsockname()[1])


def _files(tmp: Path) -> None:
    (tmp / "kubeconfig-bad-yaml").write_text("apiVersion: v1\nclusters: [\n  - name: x\n")
    (tmp / "kubeconfig-no-clusters").write_text("apiVersion: v1\nkind: Config\n")
    (tmp / "bad-yaml.yaml").write_text("roles:\n  viewer: [U0VIEW1\n")
    (tmp / "bad-role.yaml").write_text("roles:\n  viewer: [alice]\n")


def _base_env(tmp: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("SLACK_", "AIA_", "KUBECONFIG", "PROMETHEUS", "DATABASE_URL", "ALERTMANAGER"))}
    return {**clean, "SLACK_BOT_TOKEN": "xoxb-corpus-0000", "SLACK_SIGNING_SECRET": "corpus-signing-secret",
            "SLACK_APP_TOKEN": "xapp-corpus-0000", "ALERTMANAGER_WEBHOOK_TOKEN": "corpus-webhook-token",
            "SLACK_API_URL": f"http://127.0.0.1:{_closed_port()}/",
            "DATABASE_URL": f"sqlite:///{tmp}/corpus.db"}


def _run(command: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    args = [aia_bot_executable(), command] + (["--port", "0"] if command == "serve" else [])
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("command", ["check", "serve", "socket"])
def test_each_configuration_mistake_is_one_line_naming_the_setting(command: str, tmp_path: Path) -> None:
    _files(tmp_path)
    base = _base_env(tmp_path)
    cases = [(name, value.format(tmp=tmp_path)) for name, value in CORPUS]
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda case: _run(command, {**base, case[0]: case[1]}, tmp_path), cases))
    for (name, value), done in zip(cases, runs, strict=True):
        output = done.stdout + done.stderr
        lines = [line for line in output.splitlines() if line.strip()]
        assert done.returncode == 2, (name, value, output)
        assert len(lines) == 1, (name, value, output)
        assert name in lines[0], (name, value, output)
        assert "Traceback" not in output
        assert not any(secret in output for secret in SECRETS), output
    # Nothing was created where the command was run, but the files the corpus wrote.
    assert not (tmp_path / "aia-bot.db").exists() and not (tmp_path / "corpus.db").exists()


def test_an_unreachable_slack_is_one_line_without_the_client_retry_noise(tmp_path: Path) -> None:
    done = _run("serve", _base_env(tmp_path), tmp_path)
    output = done.stdout + done.stderr
    errors = [line for line in output.splitlines() if line.startswith("aia-bot: configuration error")]
    assert done.returncode == 2
    assert len(errors) == 1 and "SLACK_API_URL" in errors[0] and "does not answer" in errors[0], output
    assert "slack_sdk" not in output and "retry" not in output.lower(), output


def test_check_creates_no_database_file_in_the_current_directory(tmp_path: Path) -> None:
    env = _base_env(tmp_path)
    del env["DATABASE_URL"]
    done = _run("check", env, tmp_path)
    assert done.returncode == 1  # Kubernetes is not reachable here; the database part is what matters
    assert any(line.startswith("warn") and "aia-bot.db does not exist yet" in line
               for line in done.stdout.splitlines()), done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_version_and_help_for_every_option() -> None:
    version = subprocess.run([aia_bot_executable(), "--version"], capture_output=True, text=True, timeout=30)
    assert version.returncode == 0 and version.stdout.startswith("aia-bot ") and "unknown" not in version.stdout
    from handlers.cli import build_parser

    def walk(parser):  # type: ignore[no-untyped-def]
        for action in parser._actions:
            if action.choices and isinstance(action.choices, dict):
                for sub in action.choices.values():
                    yield from walk(sub)
            else:
                yield parser.prog, action

    undocumented = [f"{prog} {action.dest}" for prog, action in walk(build_parser()) if not action.help]
    assert undocumented == []
