"""A whole stack per test for the two-person rule: local Kubernetes and Slack, a fresh
PostgreSQL database and one or more `aia-bot serve` processes on it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.aia_seed import seed_aia_system
from sandbox.kube_server import FakeKubeAPIServer
from sandbox.slack_server import FakeSlackServer
from tests.conftest import fresh_pg_database
from tests.harness.bot_process import BotProcess, button_payload, start_all
from tests.harness.users import CHANNEL_ID, TEAM_ID, install_users

SIGNING_SECRET = "approval-signing-secret-77"
OPS = "U0OPS01"  # requester (operator), otto@013a.tech
APPROVER = "U0APR01"  # anna@013a.tech
APPROVER_2 = "U0APR02"
TWIN = "U0TWIN1"  # another Slack user with the requester's email
ROBOT, GUEST, GONE = "U0ROBOT", "U0GUEST", "U0GONE"
GROUP_APPROVER = "U0GRP01"  # approver through user group S0APPROVERS
ADMIN = "U0ADM01"
PLUS = "U0PLUS1"  # otto+ops@013a.tech: the requester's own mailbox, plus-addressed
WIDE = "U0WIDE1"  # the requester's email in full-width letters (NFKC folds them)
GROUP_OPS = "U0GOPS1"  # operator through user group S0OPERATORS, which an admin can leave

ROLES_YAML = f"""\
roles:
  viewer:   [U0VIEW1]
  operator: [{OPS}, S0OPERATORS]
  approver: [{APPROVER}, {APPROVER_2}, {TWIN}, {ROBOT}, {GUEST}, {GONE}, {PLUS}, {WIDE}, S0APPROVERS]
  admin:    [{ADMIN}]
approvals_required:
  isolate: 2
"""


@dataclass
class Card:
    request_id: str
    ts: str
    channel: str


@dataclass
class Stack:
    kube: FakeKubeAPIServer
    slack: FakeSlackServer
    database_url: str
    bots: list[BotProcess] = field(default_factory=list)

    @property
    def bot(self) -> BotProcess:
        return self.bots[0]

    def writes(self, path_contains: str = "") -> list[Any]:
        """Requests that changed something at the Kubernetes API (dry runs excluded)."""
        return [r for r in self.kube.requests
                if r.method in ("POST", "PUT", "PATCH", "DELETE") and r.query.get("dryRun") != "All"
                and path_contains in r.path]

    def request_change(self, user: str, text: str, bot: BotProcess | None = None) -> Card:
        before = len(self.slack.calls_to("chat.postMessage"))
        (bot or self.bot).slash(text, user, self.slack.new_response_url())

        def card() -> Any:
            return [c for c in self.slack.calls_to("chat.postMessage")[before:]
                    if c.ok and "Approval needed" in json.dumps(c.args.get("blocks"))]

        call = self.slack.wait_for(card, timeout=15)[0]
        actions = next(b for b in call.args["blocks"] if b["type"] == "actions")
        made = Card(actions["elements"][0]["value"], call.response["ts"], call.response["channel"])
        # The bot records the card's ts just after Slack answers the post; a person cannot click
        # in between, a test can: wait until the request knows its card.
        self._wait_card_attached(made)
        return made

    def _wait_card_attached(self, card: Card, timeout: float = 15) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with psycopg.connect(self.database_url) as conn:
                row = conn.execute("SELECT message_ts FROM approval_requests WHERE id = %s",
                                   (card.request_id,)).fetchone()
            if row and row[0] == card.ts:
                return
            time.sleep(0.05)
        raise AssertionError(f"request {card.request_id} never recorded its card {card.ts}")

    def slash_answer(self, user: str, text: str) -> str:
        url = self.slack.new_response_url()
        self.bot.slash(text, user, url)
        return self.response_text(url)

    def response_text(self, url: str, timeout: float = 15) -> str:
        answer = self.slack.wait_for(lambda: [r for r in self.slack.responses if r.url == url], timeout=timeout)
        return str(answer[0].body.get("text"))

    def click(self, user: str, decision: str, card: Card, *, channel: str | None = None, team: str = TEAM_ID,
              value: str | None = None, bot: BotProcess | None = None,
              extra_headers: dict[str, str] | None = None) -> str:
        url = self.slack.new_response_url()
        payload = click_payload(user, decision, card, url, channel=channel, team=team, value=value)
        target = bot or self.bot
        body = __import__("urllib.parse").parse.urlencode({"payload": json.dumps(payload)})
        headers = target.signed_headers(body)
        headers.update(extra_headers or {})
        response = target.http.post("/slack/events", content=body.encode(), headers=headers)
        assert response.status_code == 200, response.text
        return url

    def status(self, request_id: str) -> str:
        import psycopg

        with psycopg.connect(self.database_url) as conn:
            row = conn.execute("SELECT status FROM approval_requests WHERE id = %s", (request_id,)).fetchone()
        return str(row[0]) if row else "missing"

    def wait_status(self, request_id: str, wanted: str, timeout: float = 15) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(request_id)
            if status == wanted:
                return status
            time.sleep(0.1)
        raise AssertionError(f"request {request_id} is {self.status(request_id)}, not {wanted}")

    def audit_rows(self) -> list[tuple[str, str, str, str]]:
        import psycopg

        with psycopg.connect(self.database_url) as conn:
            return [tuple(r) for r in conn.execute(
                "SELECT actor, action, outcome, detail FROM audit_log ORDER BY id").fetchall()]

    def reset(self) -> None:
        """A clean cluster, Slack and database under the same running bots (fast, per test)."""
        import psycopg

        self.kube.reset()
        seed_aia_system(self.kube)
        self.slack.reset()
        install_approval_users(self.slack)
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute("DELETE FROM approval_requests")
            conn.execute("DELETE FROM config_backups")
            conn.execute("DELETE FROM audit_log")
            conn.execute("UPDATE audit_head SET last_id = 0, last_hash = %s", ("0" * 64,))

    def fresh(self) -> Stack:
        """reset() for the next test, once sure the shared bot still runs (else every later test fails
        for a reason far from its own)."""
        bot = self.bots[0]
        if bot.process is None or bot.process.poll() is not None:
            raise RuntimeError(f"the shared bot died:\n{bot.logs()[-3000:]}")
        self.reset()
        return self

    def start_bot(self, workdir: Path, **env: str) -> BotProcess:
        return self.start_bots(workdir, 1, **env)[0]

    def start_bots(self, workdir: Path, count: int, **env: str) -> list[BotProcess]:
        full_env = {
            "SLACK_BOT_TOKEN": self.slack.bot_token,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": self.slack.api_url,
            "DATABASE_URL": self.database_url,
            "KUBECONFIG": self.kube.write_kubeconfig(str(workdir / "kubeconfig")),
            "AIA_ALERT_CHANNEL": CHANNEL_ID,
            "AIA_APPROVAL_CLAIM_TIMEOUT_SECONDS": "3",
            **env,
        }
        made = [BotProcess(full_env, workdir / f"bot-{len(self.bots) + i}.log", config_yaml=ROLES_YAML)
                for i in range(count)]
        self.bots.extend(made)  # listed before they are up: the stack stops them if one fails to start
        return start_all(made)

    @contextmanager
    def extra_bot(self, workdir: Path, **env: str) -> Iterator[BotProcess]:
        """One more replica on this stack for a test; stopped afterwards, the shared ones go on."""
        bot = self.start_bot(workdir, **env)
        try:
            yield bot
        finally:
            self.bots.remove(bot)
            bot.stop()


def click_payload(user: str, decision: str, card: Card, response_url: str, *, channel: str | None = None,
                  team: str = TEAM_ID, value: str | None = None) -> dict[str, Any]:
    payload = button_payload("unused", user, channel or card.channel, card.ts, response_url, team_id=team)
    payload["actions"] = [{
        "action_id": f"aia_approval:{decision}", "block_id": f"approval-{card.request_id}",
        "text": {"type": "plain_text", "text": decision.title()}, "type": "button",
        "value": value if value is not None else card.request_id, "action_ts": str(time.time()),
    }]
    return payload


def install_approval_users(slack: FakeSlackServer) -> None:
    install_users(slack)
    slack.add_user(APPROVER_2, "arne", "arne@013a.tech")
    slack.add_user(TWIN, "otto2", "Otto@013a.tech")
    slack.add_user(ROBOT, "robot", "robot@013a.tech", is_bot=True)
    slack.add_user(GUEST, "gus", "gus@partner.example", is_restricted=True)
    slack.add_user(GONE, "gone", "gone@013a.tech", deleted=True)
    slack.add_user(GROUP_APPROVER, "greta", "greta@013a.tech")
    slack.add_usergroup("S0APPROVERS", "approvers", [GROUP_APPROVER])
    slack.add_user(PLUS, "otto-ops", "Otto+OPS@013a.tech")
    slack.add_user(WIDE, "otto-wide", "\uff4f\uff54\uff54\uff4f@013a.tech")
    slack.add_user(GROUP_OPS, "gina", "gina@013a.tech")
    slack.add_usergroup("S0OPERATORS", "operators", [GROUP_OPS])


@contextmanager
def approval_stack(workdir: Path, bots: int = 1, **env: str) -> Iterator[Stack]:
    with ExitStack() as stack:
        kube = FakeKubeAPIServer().start()
        stack.callback(kube.stop)
        seed_aia_system(kube)
        slack = FakeSlackServer(team_id=TEAM_ID).start()
        stack.callback(slack.stop)
        install_approval_users(slack)
        database_url = stack.enter_context(fresh_pg_database())
        result = Stack(kube, slack, database_url)
        stack.callback(lambda: [b.stop() for b in result.bots])
        result.start_bots(workdir, bots, **env)
        yield result
