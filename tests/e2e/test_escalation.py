"""Escalation end to end: three `aia-bot serve` processes on one PostgreSQL, the local Slack
server, a real SMTP server (aiosmtpd, STARTTLS + AUTH) and a local paging webhook.

Every page is counted at the receivers: thread mentions and DMs at Slack, emails at the SMTP
server, PagerDuty events at the webhook. Processes are killed with SIGKILL, not stopped.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.slack_server import FakeSlackServer
from tests.conftest import fresh_pg_database
from tests.harness.bot_process import BotProcess, aia_bot_executable, start_all
from tests.harness.smtp import SMTP_PASSWORD, SmtpServer
from tests.harness.users import CHANNEL_ID, SLACK_USERS, TEAM_ID, install_users
from tests.harness.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e

SIGNING_SECRET = "e2e-escalation-secret-7d21"
ROUTING_KEY = "pd-routing-key-e2e-9f8e7d6c"
WAIT = 2.0  # seconds between levels


def config_yaml(webhook_url: str, wait: str = f"{int(WAIT)}s") -> str:
    return f"""\
roles:
  viewer:   [U0VIEW1, S0ONCALL]
  operator: [U0OPS01]
  approver: [U0APR01]
  admin:    [U0ADM01]
escalation:
  start_on: {{severity: [critical]}}
  repeat: 0
  levels:
    - name: on-call
      notify: [U0OPS01, S0ONCALL]
      email: [oncall@013a.tech]
      wait: {wait}
    - name: troubleshooting
      notify: [U0APR01]
      wait: {wait}
    - name: devops-team
      notify: [U0ADM01]
      email: [devops@013a.tech]
      webhook: {webhook_url}
      wait: {wait}
    - name: architect
      notify: [U0VIEW1]
      wait: {wait}
"""


@pytest.fixture(scope="module")
def esc_slack() -> Iterator[FakeSlackServer]:
    server = FakeSlackServer(team_id=TEAM_ID).start()
    install_users(server)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def esc_smtp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpServer]:
    server = SmtpServer(tmp_path_factory.mktemp("smtp")).up()
    yield server
    server.down()


@pytest.fixture(scope="module")
def esc_webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


class Cluster:
    """Three replicas of `aia-bot serve` sharing one database."""

    def __init__(self, env: dict[str, str], config: str, workdir: Path) -> None:
        self.env, self.config, self.workdir = env, config, workdir
        self.replicas: list[BotProcess] = []
        self.starts = 0

    def start_one(self) -> BotProcess:
        self.starts += 1
        process = BotProcess(self.env, self.workdir / f"bot-{self.starts}.log", config_yaml=self.config)
        return process

    def kill9(self, replica: BotProcess) -> None:
        assert replica.process is not None
        replica.process.send_signal(signal.SIGKILL)
        replica.process.wait(10)
        replica.http.close()

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("bot-*.log")))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, esc_slack: FakeSlackServer, esc_smtp: SmtpServer,
            esc_webhook: WebhookReceiver) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("escalation")
    with fresh_pg_database() as url:
        env = {
            "SLACK_BOT_TOKEN": esc_slack.bot_token, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": esc_slack.api_url, "DATABASE_URL": url, "AIA_LOG_LEVEL": "DEBUG",
            "AIA_PAGING_ROUTING_KEY": ROUTING_KEY, "AIA_ESCALATION_POLL_SECONDS": "0.5",
            "AIA_ESCALATION_RETRY_SECONDS": "1", "AIA_ESCALATION_LATE_SECONDS": "1",
            "AIA_ESCALATION_LEASE_SECONDS": "5", "AIA_WORKER_THREADS": "4", **esc_smtp.env(),
        }
        group = Cluster(env, config_yaml(esc_webhook.url), workdir)
        group.replicas = start_all([group.start_one() for _ in range(3)], timeout=120)  # CI can be busy
        yield group
        for replica in group.replicas:
            if replica.process is not None and replica.process.poll() is None:
                replica.stop()
        logs = group.logs()
        assert SMTP_PASSWORD not in logs and ROUTING_KEY not in logs, "a secret reached the bot's log"


# ---------------------------------------------------------------------- helpers
def _page(cluster: Cluster, slack: FakeSlackServer, replica: int, text: str) -> str:
    before = len(slack.calls_to("chat.postMessage"))
    cluster.replicas[replica].slash(f"page {text}", SLACK_USERS["operator"].user_id, slack.new_response_url())
    post = slack.wait_for(lambda: [c for c in slack.calls_to("chat.postMessage")[before:]
                                   if re.search(r"escalation (E[0-9A-Z]{6}) started", c.args.get("text") or "")])
    match = re.search(r"escalation (E[0-9A-Z]{6}) started", post[0].args["text"])
    assert match
    return match.group(1)


def _card(slack: FakeSlackServer, esc_id: str) -> Any:
    return slack.wait_for(lambda: [m for m in slack.messages(CHANNEL_ID) if m.text.startswith(f"Escalation {esc_id}")])[0]


def _thread(slack: FakeSlackServer, esc_id: str) -> list[str]:
    card = _card(slack, esc_id)
    return [m.text for m in slack.thread(CHANNEL_ID, card.thread_ts or card.ts) if m.ts != card.ts]


def _pages(slack: FakeSlackServer, esc_id: str) -> list[str]:
    return [t for t in _thread(slack, esc_id) if "Paging level" in t]


def _levels(pages: list[str]) -> list[int]:
    return [int(re.search(r"Paging level (\d)", p).group(1)) for p in pages]  # type: ignore[union-attr]


def _dms(slack: FakeSlackServer, esc_id: str) -> Counter[str]:
    return Counter(m.channel for m in slack.messages() if m.channel.startswith("D") and esc_id in m.text)


def _click(cluster: Cluster, slack: FakeSlackServer, replica: int, esc_id: str, action: str, user: str) -> None:
    card = _card(slack, esc_id)
    payload = {
        "type": "block_actions", "team": {"id": TEAM_ID, "domain": "aia"},
        "user": {"id": user, "username": user.lower(), "team_id": TEAM_ID}, "api_app_id": "A0AIABOT",
        "token": "deprecated", "trigger_id": "1.2.3",
        "container": {"type": "message", "message_ts": card.ts, "channel_id": CHANNEL_ID, "is_ephemeral": False},
        "channel": {"id": CHANNEL_ID, "name": "aia-production-alerts"},
        "message": {"type": "message", "ts": card.ts, "text": card.text},
        "response_url": slack.new_response_url(),
        "actions": [{"action_id": f"aia_esc:{action}", "block_id": "b", "value": esc_id, "type": "button",
                     "text": {"type": "plain_text", "text": action}, "action_ts": str(time.time())}],
    }
    assert cluster.replicas[replica].click(payload).status_code == 200


def _assert_exactly_once(slack: FakeSlackServer, smtp: SmtpServer, webhook: WebhookReceiver, esc_id: str) -> None:
    assert _levels(_pages(slack, esc_id)) == [1, 2, 3, 4]
    assert _dms(slack, esc_id) == Counter({"D0OPS01": 1, "D0ONCALL": 1, "D0APR01": 1, "D0ADM01": 1, "D0VIEW1": 1})
    assert sorted((m.rcpt_tos[0], m.message["X-AIA-Level"]) for m in smtp.received(esc_id)) == [
        ("devops@013a.tech", "3"), ("oncall@013a.tech", "1")]
    assert [(e.action, e.details.get("level")) for e in webhook.received(esc_id)] == [("trigger", 3)]


# ---------------------------------------------------------------------- tests
def test_bad_policy_stops_the_bot_at_start(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(config_yaml("http://127.0.0.1:9/v2").replace("wait: 2s\n    - name: devops-team",
                                                                      "wait: -2s\n    - name: devops-team"))
    result = subprocess.run(
        [aia_bot_executable(), "serve", "--port", "1"], capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "SLACK_BOT_TOKEN": "xoxb-x", "SLACK_SIGNING_SECRET": "s",
             "AIA_BOT_CONFIG": str(config), "DATABASE_URL": f"sqlite:///{tmp_path}/x.db"},
    )
    assert result.returncode == 2
    assert "config.escalation.levels.1.wait" in result.stderr and "negative wait '-2s'" in result.stderr


def test_three_replicas_page_once_and_survive_kill9_of_the_creator(
    cluster: Cluster, esc_slack: FakeSlackServer, esc_smtp: SmtpServer, esc_webhook: WebhookReceiver
) -> None:
    esc_id = _page(cluster, esc_slack, 0, "1 API answers 500 since 03:10")
    esc_slack.wait_for(lambda: _pages(esc_slack, esc_id))
    creator = cluster.replicas[0]
    cluster.kill9(creator)  # it held the next timer; the other two hold it too
    esc_slack.wait_for(lambda: len(_pages(esc_slack, esc_id)) == 4, timeout=20)
    time.sleep(1.5)  # anything duplicated would arrive by now
    _assert_exactly_once(esc_slack, esc_smtp, esc_webhook, esc_id)
    # The others hold backup timers 0.5 s after the first choice's: at worst that late.
    late = [re.search(r"This page is \*(\d+)s late\*", p) for p in _pages(esc_slack, esc_id)]
    assert all(m is None or int(m.group(1)) <= 3 for m in late)
    # The creator comes back and takes part again.
    cluster.replicas[0] = cluster.start_one().start(timeout=120)


def test_buttons_acknowledge_escalate_snooze_resolve_across_replicas(
    cluster: Cluster, esc_slack: FakeSlackServer, esc_webhook: WebhookReceiver
) -> None:
    esc_id = _page(cluster, esc_slack, 1, "devops-team database unreachable")
    esc_slack.wait_for(lambda: esc_webhook.received(esc_id))
    _click(cluster, esc_slack, 2, esc_id, "escalate", SLACK_USERS["operator"].user_id)
    esc_slack.wait_for(lambda: _levels(_pages(esc_slack, esc_id)) == [3, 4])
    _click(cluster, esc_slack, 0, esc_id, "snooze:30m", SLACK_USERS["operator"].user_id)  # silencing paging is a write: operator
    esc_slack.wait_for(lambda: any("Snoozed" in t and "30m" in t for t in _thread(esc_slack, esc_id)))
    # The architect level paged U0VIEW1: a viewer may acknowledge a page they got.
    _click(cluster, esc_slack, 1, esc_id, "ack", SLACK_USERS["viewer"].user_id)
    esc_slack.wait_for(lambda: any("Acknowledged" in t for t in _thread(esc_slack, esc_id)))
    nobody = esc_slack.new_response_url()
    before = len(esc_slack.responses)
    _click(cluster, esc_slack, 2, esc_id, "resolve", SLACK_USERS["nobody"].user_id)  # no role: refused privately
    refusal = esc_slack.wait_for(lambda: esc_slack.responses[before:])[0]
    assert refusal.body["response_type"] == "ephemeral" and "role" in refusal.body["text"]
    assert nobody  # (a fresh URL per click)
    _click(cluster, esc_slack, 2, esc_id, "resolve", SLACK_USERS["admin"].user_id)
    esc_slack.wait_for(lambda: [e.action for e in esc_webhook.received(esc_id)] == ["trigger", "trigger", "acknowledge", "resolve"]
                       or [e.action for e in esc_webhook.received(esc_id)] == ["trigger", "acknowledge", "resolve"])
    card = esc_slack.wait_for(lambda: (c := _card(esc_slack, esc_id)) and "resolved" in c.text and c)
    assert not any(b.get("type") == "actions" for b in card.blocks or [])  # no buttons once resolved


def test_ack_racing_the_timer_tells_the_truth(
    cluster: Cluster, esc_slack: FakeSlackServer, esc_webhook: WebhookReceiver
) -> None:
    esc_id = _page(cluster, esc_slack, 2, "1 checkout is failing")
    esc_slack.wait_for(lambda: _pages(esc_slack, esc_id))
    first = next(m for m in esc_slack.messages(CHANNEL_ID) if "Paging level 1" in m.text and esc_id in str(
        [c.text for c in esc_slack.messages() if esc_id in c.text]))
    # Click Acknowledge on another replica at the moment level 2 falls due.
    due = float(first.ts) + WAIT
    time.sleep(max(0.0, due - time.time() - 0.01))
    _click(cluster, esc_slack, 0, esc_id, "ack", SLACK_USERS["operator"].user_id)
    ack = esc_slack.wait_for(lambda: [t for t in _thread(esc_slack, esc_id) if "Acknowledged" in t])[0]
    time.sleep(WAIT + 1)  # a timer that ignored the acknowledgement would page by now
    levels = _levels(_pages(esc_slack, esc_id))
    if "level 2 troubleshooting had been paged" in ack:
        assert levels == [1, 2]
    else:
        assert "level 1 on-call had been paged" in ack and levels == [1]
    assert sum("Acknowledged" in t for t in _thread(esc_slack, esc_id)) == 1


def test_smtp_down_the_email_is_retried_while_slack_paging_goes_on(
    cluster: Cluster, esc_slack: FakeSlackServer, esc_smtp: SmtpServer
) -> None:
    esc_smtp.down()
    try:
        esc_id = _page(cluster, esc_slack, 0, "1 payments failing")
        note = esc_slack.wait_for(lambda: [t for t in _thread(esc_slack, esc_id) if "failed" in t])[0]
        assert "Email page to oncall@013a.tech failed" in note and "Slack paging goes on" in note
        assert _dms(esc_slack, esc_id)["D0OPS01"] == 1
        esc_slack.wait_for(lambda: 2 in _levels(_pages(esc_slack, esc_id)), timeout=10)  # the chain goes on too
    finally:
        esc_smtp.up()
    esc_slack.wait_for(lambda: any("went out on attempt" in t for t in _thread(esc_slack, esc_id)), timeout=20)
    esc_slack.wait_for(lambda: len(esc_smtp.received(esc_id)) >= 1)
    time.sleep(1)
    assert [m.message["X-AIA-Level"] for m in esc_smtp.received(esc_id) if m.rcpt_tos == ["oncall@013a.tech"]] == ["1"]
    _click(cluster, esc_slack, 1, esc_id, "resolve", SLACK_USERS["operator"].user_id)
    esc_slack.wait_for(lambda: any("Resolved" in t for t in _thread(esc_slack, esc_id)))


def test_all_replicas_killed_then_restart_fires_overdue_steps_in_order_and_late(
    cluster: Cluster, esc_slack: FakeSlackServer, esc_smtp: SmtpServer, esc_webhook: WebhookReceiver
) -> None:
    esc_id = _page(cluster, esc_slack, 1, "1 everything is down")
    esc_slack.wait_for(lambda: _dms(esc_slack, esc_id)["D0ONCALL"] == 1 and esc_smtp.received(esc_id))
    for replica in cluster.replicas:
        cluster.kill9(replica)
    killed_at = time.time()
    time.sleep(2 * WAIT + 0.5)  # levels 2 and 3 fall due while nothing runs
    restarted_at = time.time()
    cluster.replicas = [cluster.start_one().start(timeout=120)]
    esc_slack.wait_for(lambda: len(_pages(esc_slack, esc_id)) == 4, timeout=20)
    time.sleep(1)
    pages = _pages(esc_slack, esc_id)
    assert _levels(pages) == [1, 2, 3, 4]
    late = [re.search(r"This page is \*([^*]+) late\*", p) for p in pages]
    assert late[0] is None, pages
    # Every page the restarted replica sent for a step that fell due while nothing ran says
    # how late it is. (Which levels those are depends on how fast the machine got to the kill:
    # on a busy one level 2 may have gone out on time before it.)
    card = _card(esc_slack, esc_id)
    posted = [float(m.ts) for m in esc_slack.thread(CHANNEL_ID, card.thread_ts or card.ts)
              if m.ts != card.ts and "Paging level" in m.text]
    overdue = [i for i, at in enumerate(posted) if at > restarted_at and i < 3]
    assert overdue and all(late[i] is not None for i in overdue), pages
    assert time.time() - killed_at > 2 * WAIT
    _assert_exactly_once(esc_slack, esc_smtp, esc_webhook, esc_id)
