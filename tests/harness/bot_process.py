"""`aia-bot serve` as a real process, and requests signed exactly as Slack signs them."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
from slack_sdk.signature import SignatureVerifier


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def aia_bot_executable() -> str:
    candidate = Path(sys.executable).parent / "aia-bot"
    return str(candidate) if candidate.exists() else "aia-bot"


def die_with_parent() -> None:
    """Linux: SIGTERM the bot when the test process dies (a killed test run left bots running)."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class BotProcess:
    def __init__(self, env: dict[str, str], log_path: Path, config_yaml: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.signing_secret = env["SLACK_SIGNING_SECRET"]
        self.log_path = log_path
        # `serve` refuses to start without an audit key; a test that wants to see that removes it.
        self.env = {**os.environ, "AIA_AUDIT_KEY": "test-audit-key-0123456789abcdef", **env}
        self.env = {k: v for k, v in self.env.items() if v is not None}
        if config_yaml is not None:
            config_path = log_path.parent / f"aia-config-{self.port}.yaml"
            config_path.write_text(config_yaml)
            self.env["AIA_BOT_CONFIG"] = str(config_path)
        self.process: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def start(self, timeout: float = 90) -> BotProcess:  # a loaded 2-core CI machine imports slowly
        return self.spawn().wait_ready(timeout)

    def spawn(self) -> BotProcess:
        """Start the process without waiting: several bots import side by side (see `start_all`)."""
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [aia_bot_executable(), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        return self

    def wait_ready(self, timeout: float = 90) -> BotProcess:
        assert self.process is not None, "spawn() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"aia-bot serve exited early:\n{self.log_path.read_text()}")
            try:
                if self.http.get("/healthz").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"aia-bot serve did not come up:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.http.close()
        if self.process is not None:
            self._log.close()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    # -- Slack's side ------------------------------------------------------
    def signed_headers(self, body: str, timestamp: int | None = None, secret: str | None = None) -> dict[str, str]:
        ts = str(timestamp if timestamp is not None else int(time.time()))
        verifier = SignatureVerifier(secret or self.signing_secret)
        return {
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": verifier.generate_signature(timestamp=ts, body=body),
            "Content-Type": "application/x-www-form-urlencoded",
        }

    def post_signed(self, body: str, **kwargs: Any) -> httpx.Response:
        return self.http.post("/slack/events", content=body.encode(), headers=self.signed_headers(body, **kwargs))

    def slash(self, text: str, user_id: str, response_url: str, channel_id: str = "C0ALERTS",
              team_id: str = "T0AIA") -> httpx.Response:
        return self.post_signed(slash_body(text, user_id, response_url, channel_id, team_id))

    def click(self, payload: dict[str, Any]) -> httpx.Response:
        return self.post_signed(urllib.parse.urlencode({"payload": json.dumps(payload)}))


def start_all(bots: list[BotProcess], timeout: float = 90) -> list[BotProcess]:
    """Spawn every bot, then wait for each: their imports overlap instead of queueing."""
    for bot in bots:
        bot.spawn()
    return [bot.wait_ready(timeout) for bot in bots]


def slash_body(text: str, user_id: str, response_url: str, channel_id: str = "C0ALERTS",
               team_id: str = "T0AIA") -> str:
    return urllib.parse.urlencode(
        {
            "token": "deprecated-verification-token",
            "team_id": team_id,
            "team_domain": "aia",
            "channel_id": channel_id,
            "channel_name": "aia-production-alerts",
            "user_id": user_id,
            "user_name": user_id.lower(),
            "command": "/aia",
            "text": text,
            "api_app_id": "A0AIABOT",
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": "1234.5678.abcdef",
        }
    )


def button_payload(command: str, user_id: str, channel_id: str, message_ts: str, response_url: str,
                   team_id: str = "T0AIA") -> dict[str, Any]:
    return {
        "type": "block_actions",
        "team": {"id": team_id, "domain": "aia"},
        "user": {"id": user_id, "username": user_id.lower(), "team_id": team_id},
        "api_app_id": "A0AIABOT",
        "token": "deprecated-verification-token",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel_id, "is_ephemeral": False},
        "trigger_id": "1234.5678.abcdef",
        "channel": {"id": channel_id, "name": "aia-production-alerts"},
        "message": {"type": "message", "ts": message_ts, "text": "x"},
        "response_url": response_url,
        "actions": [
            {
                "action_id": "aia_run:0",
                "block_id": "b1",
                "text": {"type": "plain_text", "text": "Run"},
                "value": json.dumps({"command": command}),
                "type": "button",
                "action_ts": str(time.time()),
            }
        ],
    }
