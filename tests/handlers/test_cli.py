"""The `aia-bot` command as a user runs it: real processes, real output."""

from __future__ import annotations

import os
import re
import subprocess

from tests.harness.bot_process import aia_bot_executable


def _run(args: list[str], env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 60):  # type: ignore[no-untyped-def]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "AIA_", "KUBECONFIG", "PROMETHEUS"))}
    return subprocess.run([aia_bot_executable(), *args], env={**clean, **(env or {})}, input=stdin,
                          capture_output=True, text=True, timeout=timeout)


def test_console_sandbox_reads_commands_from_a_pipe() -> None:
    done = _run(["console", "--sandbox"], stdin="/aia pods\n")
    assert done.returncode == 0, done.stderr
    assert "aia-api-blue-" in done.stdout and "CrashLoopBackOff" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_console_switches_user_and_clicks_buttons() -> None:
    script = "status\n:click 1\n:user eve\npods\n:user carol\nhelp\n"
    done = _run(["console", "--sandbox"], stdin=script)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "System status" in out
    assert "Pod aia-api-blue-" in out  # button 1 of status: describe the worst pod
    assert "you are now eve (none)" in out
    assert "refused: /aia pods needs the viewer role; you have no role" in out
    assert "/aia top pods" in out


def test_console_sandbox_pages_and_acknowledges() -> None:
    script = "oncall\npage 1 checkout answers 500\n:user bob\nack\n"
    done = _run(["console", "--sandbox"], stdin=script)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "1 · on-call · then wait 2m" in out and "@alice" in out
    # The pages the bot posted to the sandbox Slack, printed under the command that started them.
    assert "slack thread: 🚨 Paging level 1 · on-call: @alice" in out
    assert "slack DM: 🚨 You are paged (level 1 on-call)" in out
    assert "Acknowledged by @bob" in out and "Timers stopped" in out
    assert "Traceback" not in out + done.stderr


def test_console_sandbox_has_images_and_secret_rotation() -> None:
    script = "images --limit 2\nsecrets rotate aia-api-key\n:user bob\n:click 1\nsecrets versions aia-api-key\n"
    done = _run(["console", "--sandbox"], stdin=script)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "v1.6.0  sha256:" in out and "v1.5.1" in out
    assert "Added version 3 of aia-api-key" in out and "Restarted aia-api-blue" in out
    assert "successfully rolled out" in out
    assert "Traceback" not in out + done.stderr


def test_serve_without_signing_secret_names_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    done = _run(["serve", "--port", "0"], env={"SLACK_BOT_TOKEN": "xoxb-test-0000000", "DATABASE_URL": f"sqlite:///{tmp_path}/x.db"})
    assert done.returncode == 2
    assert "SLACK_SIGNING_SECRET is not set" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_with_malformed_setting_names_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    done = _run(["serve"], env={"SLACK_API_URL": "slack.com/api", "DATABASE_URL": f"sqlite:///{tmp_path}/x.db"})
    assert done.returncode == 2
    assert "SLACK_API_URL" in done.stderr and "Traceback" not in done.stderr


def test_serve_with_rejected_token_says_so(bot_env) -> None:  # type: ignore[no-untyped-def]
    done = _run(["serve", "--port", "0"], env={**bot_env, "SLACK_BOT_TOKEN": "xoxb-wrong-1111111"})
    assert done.returncode == 2
    assert "SLACK_BOT_TOKEN was refused by Slack (invalid_auth)" in done.stderr
    assert "xoxb-wrong-1111111" not in done.stderr


def test_check_reports_each_backend(bot_env, prometheus) -> None:  # type: ignore[no-untyped-def]
    from bot.core import build_core
    from bot.settings import load_settings

    build_core(load_settings(bot_env)).engine.dispose()  # `check` looks at a database, never creates one
    done = _run(["check"], env={**bot_env, "PROMETHEUS_URL": prometheus.url})
    assert done.returncode == 0, done.stdout + done.stderr
    for backend in ("settings", "database", "slack", "kubernetes", "prometheus"):
        assert any(line.startswith("ok") and backend in line for line in done.stdout.splitlines()), backend
    assert "all configured backends answer" in done.stdout


def test_check_reaches_the_registry_and_the_rotatable_secrets(bot_env, secret_manager) -> None:  # type: ignore[no-untyped-def]
    env = {**bot_env, "SECRETMANAGER_EMULATOR_HOST": secret_manager.address, "AIA_ROTATABLE_SECRETS": "aia-api-key"}
    done = _run(["check"], env=env)
    # Other tests of the session may have pushed more tags to the shared registry.
    assert re.search(r"ok   registry +gcr.io/a-467519/aia-system: \d+ tags", done.stdout), done.stdout
    assert "ok   secret manager  aia-api-key: 2 versions readable" in done.stdout
    secret_manager.deny("secretmanager.versions.list", "aia-api-key")
    done = _run(["check"], env=env)
    assert done.returncode == 1 and "lacks `secretmanager.versions.list`" in done.stdout
    assert "sandbox-api-key" not in done.stdout + done.stderr


def test_check_reaches_cloud_sql_and_names_a_missing_permission(bot_env) -> None:  # type: ignore[no-untyped-def]
    from sandbox.cloudsql_server import FakeCloudSqlServer, seed_cloudsql

    server = FakeCloudSqlServer().start()
    seed_cloudsql(server)
    try:
        done = _run(["check"], env={**bot_env, "CLOUDSQL_EMULATOR_HOST": server.host})
        assert any(line.startswith("ok") and "cloudsql" in line and "a-467519:mas-system-postgres RUNNABLE" in line
                   for line in done.stdout.splitlines()), done.stdout
        server.deny.add("cloudsql.instances.get")
        denied = _run(["check"], env={**bot_env, "CLOUDSQL_EMULATOR_HOST": server.host})
        assert denied.returncode == 1 and "`cloudsql.instances.get`" in denied.stdout
    finally:
        server.stop()


def test_check_fails_when_kubernetes_is_down(bot_env, kube) -> None:  # type: ignore[no-untyped-def]
    kube.stop()
    done = _run(["check"], env=bot_env)
    assert done.returncode == 1
    assert any(line.startswith("FAIL") and "kubernetes" in line for line in done.stdout.splitlines())


def test_audit_verify(bot_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import sqlite3

    env = {**bot_env, "DATABASE_URL": f"sqlite:///{tmp_path}/audit.db"}
    from bot.core import build_core
    from bot.settings import load_settings
    from bot.store.audit import AuditRecord

    core = build_core(load_settings(env))
    for i in range(3):
        core.audit.append(AuditRecord(actor="U1", action="pods", outcome="ok", arguments=str(i)))
    core.engine.dispose()
    assert "intact" in _run(["audit", "verify"], env=env).stdout
    with sqlite3.connect(f"{tmp_path}/audit.db") as conn:
        conn.execute("UPDATE audit_log SET actor='U2' WHERE id=2")
    broken = _run(["audit", "verify"], env=env)
    assert broken.returncode == 1 and "entry 2: content was edited" in broken.stdout


def test_check_reaches_smtp_and_the_paging_webhook_without_paging(bot_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json
    import socket

    from tests.harness.smtp import SMTP_PASSWORD, SmtpServer
    from tests.harness.webhook_receiver import WebhookReceiver

    (tmp_path / "smtp").mkdir()
    smtp = SmtpServer(tmp_path / "smtp").up()
    webhook = WebhookReceiver().start()
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        closed_port = free.getsockname()[1]
    try:
        def config(url: str) -> str:
            path = tmp_path / f"aia-{len(url)}-{url.rsplit(':', 1)[-1].split('/')[0]}.yaml"
            path.write_text(json.dumps({"escalation": {"levels": [
                {"name": "on-call", "notify": ["U0OPS01"], "email": ["oncall@013a.tech"], "wait": "5m"},
                {"name": "phone", "webhook": url, "wait": "5m"}]}}))
            return str(path)

        env = {**bot_env, **smtp.env(), "AIA_PAGING_ROUTING_KEY": "R0UTING-check-key",
               "AIA_BOT_CONFIG": config(webhook.url)}
        done = _run(["check"], env=env)
        lines = done.stdout.splitlines()
        assert any(x.startswith("ok") and "smtp" in x and "STARTTLS, login accepted" in x for x in lines), done.stdout
        assert any(x.startswith("ok") and "paging webhook" in x and "reachable" in x for x in lines), done.stdout
        assert smtp.received() == [] and webhook.received() == []  # nobody was paged by a check

        broken = _run(["check"], env={**env, "SMTP_PASSWORD": "wrong-" + SMTP_PASSWORD,
                                      "AIA_BOT_CONFIG": config(f"http://127.0.0.1:{closed_port}/v2/enqueue")})
        assert broken.returncode == 1
        out = broken.stdout + broken.stderr
        assert any(x.startswith("FAIL") and "smtp" in x and "login refused" in x for x in out.splitlines()), out
        assert any(x.startswith("FAIL") and "paging webhook" in x and "refused the connection" in x
                   for x in out.splitlines()), out
        assert SMTP_PASSWORD not in out and "R0UTING-check-key" not in out and "Traceback" not in out
    finally:
        smtp.down()
        webhook.stop()
