"""`aia-bot socket`: Slack's Socket Mode, over a real WebSocket, with the same procedures."""

from __future__ import annotations

import os
import subprocess
import time

from tests.harness.bot_process import aia_bot_executable
from tests.harness.socket_mode import SocketModeServer
from tests.harness.users import CHANNEL_ID, SLACK_USERS, TEAM_ID


def test_slash_command_over_socket_mode(tmp_path, kube, slack) -> None:  # type: ignore[no-untyped-def]
    socket = SocketModeServer().start()
    slack.socket_mode_url = socket.url
    env = {
        **os.environ,
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_APP_TOKEN": slack.app_token,
        "SLACK_API_URL": slack.api_url,
        "DATABASE_URL": f"sqlite:///{tmp_path}/bot.db",
        "KUBECONFIG": kube.write_kubeconfig(str(tmp_path / "kubeconfig")),
        "AIA_BOT_CONFIG": str(tmp_path / "roles.yaml"),
        "AIA_AUDIT_KEY": "socket-test-audit-key-0123456789",
    }
    env.pop("SLACK_SIGNING_SECRET", None)
    (tmp_path / "roles.yaml").write_text(f"roles:\n  viewer: [{SLACK_USERS['viewer'].user_id}]\n")
    log = open(tmp_path / "socket.log", "wb")  # noqa: SIM115
    process = subprocess.Popen([aia_bot_executable(), "socket"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while socket.connections == 0 and time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "socket.log").read_text()
            time.sleep(0.1)
        assert socket.connections == 1
        time.sleep(0.5)
        envelope = socket.send("slash_commands", {
            "token": "x", "team_id": TEAM_ID, "team_domain": "aia", "channel_id": CHANNEL_ID,
            "channel_name": "aia-production-alerts", "user_id": SLACK_USERS["viewer"].user_id,
            "user_name": "vera", "command": "/aia", "text": "pods", "api_app_id": "A0AIABOT",
            "response_url": slack.new_response_url(), "trigger_id": "1.2.3",
        })
        slack.wait_for(lambda: envelope in socket.acks, timeout=10)
        post = slack.wait_for(lambda: slack.calls_to("chat.postMessage"), timeout=15)[0]
        assert "aia-api-blue-" in str(post.args["blocks"])
    finally:
        process.terminate()
        process.wait(10)
        socket.stop()
        log.close()


def test_socket_mode_without_app_token_names_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    env.update({"SLACK_BOT_TOKEN": "xoxb-1111-never-used", "DATABASE_URL": f"sqlite:///{tmp_path}/x.db"})
    done = subprocess.run([aia_bot_executable(), "socket"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "SLACK_APP_TOKEN is not set" in done.stderr
