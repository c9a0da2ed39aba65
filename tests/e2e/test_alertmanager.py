"""Alerts end to end: real Prometheus evaluates the shipped rules, real Alertmanager posts to
`aia-bot serve` (on real PostgreSQL), and the local Slack server receives the thread."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from sandbox.slack_server import FakeSlackServer, Message
from tests.bot.alerts.payloads import alert, payload
from tests.conftest import fresh_pg_database
from tests.harness.alertmanager import AlertmanagerProcess, shipped_rules_for_tests
from tests.harness.bot_process import BotProcess
from tests.harness.prometheus import AiaExporter, PrometheusProcess
from tests.harness.users import CHANNEL_ID, TEAM_ID, install_users

pytestmark = pytest.mark.e2e
TOKEN = "am-webhook-token-7d1e9c0b5a"
SIGNING_SECRET = "e2e-alerts-signing-secret-1"
ROLES_YAML = "roles:\n  viewer: [U0VIEW1]\n  operator: [U0OPS01]\n"


@pytest.fixture(scope="module")
def am_slack() -> Iterator[FakeSlackServer]:
    server = FakeSlackServer(team_id=TEAM_ID, post_rate_per_channel=5.0).start()
    install_users(server)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def am_pg() -> Iterator[str]:
    with fresh_pg_database() as url:
        yield url


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, e2e_kube, am_slack: FakeSlackServer,  # type: ignore[no-untyped-def]
          am_pg: str) -> Iterator[dict[str, Any]]:
    workdir: Path = tmp_path_factory.mktemp("alerts")
    env = {
        "SLACK_BOT_TOKEN": am_slack.bot_token,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": am_slack.api_url,
        "DATABASE_URL": am_pg,
        "KUBECONFIG": e2e_kube.write_kubeconfig(str(workdir / "kubeconfig")),
        "AIA_LOG_LEVEL": "DEBUG",
        "AIA_ALERT_CHANNEL": CHANNEL_ID,
        "ALERTMANAGER_WEBHOOK_TOKEN": TOKEN,
        # The local Slack allows 5 posts/s here (Slack: 1/s) to keep the suite quick.
        "AIA_OUTBOX_POST_INTERVAL_SECONDS": "0.2",
        "AIA_OUTBOX_POLL_SECONDS": "0.1",
        "AIA_ALERT_STORM_THRESHOLD": "8",
    }
    exporter = AiaExporter()
    exporter.error_share = 0.0
    exporter.start()
    bot = BotProcess(env, workdir / "bot.log", config_yaml=ROLES_YAML)
    am = AlertmanagerProcess(f"{bot.url}/alertmanager", TOKEN)
    prom = PrometheusProcess([f"127.0.0.1:{exporter.port}"],
                             rule_files=[shipped_rules_for_tests(workdir / "aia-rules.yml")],
                             alertmanager=f"127.0.0.1:{am.port}")
    bot.env["PROMETHEUS_URL"] = prom.url
    bot.spawn()  # it imports while Prometheus and Alertmanager come up
    prom.start()
    am.start()
    bot.wait_ready()
    state = {"bot": bot, "exporter": exporter, "prom": prom, "am": am, "env": env, "workdir": workdir}
    yield state
    state["bot"].stop()
    am.stop()
    prom.stop()
    exporter.stop()


def _post(bot: BotProcess, body: Any, token: str | None = TOKEN, raw: bytes | None = None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return bot.http.post("/alertmanager", content=raw if raw is not None else json.dumps(body), headers=headers)


def _parents(slack: FakeSlackServer, title: str) -> list[Message]:
    return [m for m in slack.messages(CHANNEL_ID) if not m.is_reply
            and m.text.split(": ", 1)[0].startswith(("FIRING", "RESOLVED")) and f"] {title}:" in m.text]


def _sql(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return list(conn.execute(query).fetchall())


def test_bad_input_is_refused_audited_and_nothing_is_stored(stack, am_pg) -> None:  # type: ignore[no-untyped-def]
    bot = stack["bot"]
    good = payload([alert("BadInputProbe")], group="BadInputProbe")
    assert _post(bot, None, raw=b"{not json").status_code == 400
    missing = {k: v for k, v in good.items() if k != "groupKey"}
    answer = _post(bot, missing)
    assert answer.status_code == 400 and "groupKey" in answer.json()["error"]
    wrong = {**good, "alerts": [{**good["alerts"][0], "startsAt": "soon"}]}
    assert _post(bot, wrong).status_code == 400
    assert _post(bot, good, token="not-the-token").status_code == 401
    assert _post(bot, good, token=None).status_code == 401
    assert _sql(am_pg, "SELECT count(*) FROM alerts")[0][0] == 0
    assert _sql(am_pg, "SELECT count(*) FROM alert_groups")[0][0] == 0
    audited = _sql(am_pg, "SELECT outcome, detail FROM audit_log WHERE actor = 'alertmanager' ORDER BY id")
    # Bad tokens are sampled, so a flood cannot fill the audit log: one row per source per minute, the rest only counted.
    assert [o for o, _ in audited] == ["user_error"] * 3 + ["refused"]
    assert "groupKey" in audited[1][1] and "wrong bearer token" in audited[3][1]


def test_a_real_alert_becomes_a_thread_with_graph_and_buttons_then_resolves(stack, am_slack) -> None:  # type: ignore[no-untyped-def]
    stack["exporter"].error_share = 0.3  # the 5xx rate rises; HighErrorRate fires
    parent = am_slack.wait_for(lambda: _parents(am_slack, "HighErrorRate"), timeout=60)[0]
    assert parent.text.startswith("FIRING [warning]")
    blocks = json.dumps(parent.blocks)
    assert "High error rate detected" in blocks and "g0.expr=" in blocks and "Grafana" in blocks
    graph = am_slack.wait_for(lambda: [f for f in am_slack.files if f.completed and f.thread_ts == parent.ts
                                       and f.filename == "alert-1h.png"], timeout=30)[0]
    assert graph.content.startswith(b"\x89PNG")
    reply = am_slack.wait_for(lambda: [m for m in am_slack.thread(CHANNEL_ID, parent.ts) if m.is_reply])[0]
    context = json.dumps(reply.blocks)
    assert "aia_run:0" in context and "top pods --sort cpu" in context and "Expression" in context

    stack["exporter"].error_share = 0.0  # recovery: the rule resolves, Alertmanager says so
    resolved = am_slack.wait_for(lambda: [m for m in _parents(am_slack, "HighErrorRate") if m.text.startswith("RESOLVED")],
                                 timeout=90)[0]
    assert resolved.ts == parent.ts and "Resolved after" in json.dumps(resolved.blocks)
    assert len(_parents(am_slack, "HighErrorRate")) == 1


def test_a_huge_group_and_duplicates(stack, am_slack, am_pg) -> None:  # type: ignore[no-untyped-def]
    bot = stack["bot"]
    big = payload([alert("HugeGroup", pod=f"aia-api-blue-{i:03d}") for i in range(75)], group="HugeGroup")
    for _ in range(3):  # retries and the HA peer: same payload again
        assert _post(bot, big).status_code == 200
    parent = am_slack.wait_for(lambda: _parents(am_slack, "HugeGroup"), timeout=20)[0]
    assert "75 firing" in parent.text and "and 65 more" in json.dumps(parent.blocks)
    am_slack.wait_for(lambda: [f for f in am_slack.files if f.thread_ts == parent.ts and f.filename.endswith(".txt")],
                      timeout=30)
    assert not [c for c in am_slack.calls if c.error in ("invalid_blocks", "msg_too_long")]
    assert _sql(am_pg, "SELECT count(*) FROM alerts a JOIN alert_groups g ON g.id = a.group_id "
                       "WHERE g.alertnames = 'HugeGroup'")[0][0] == 75
    time.sleep(0.5)
    assert len(_parents(am_slack, "HugeGroup")) == 1


def test_slack_answering_429_and_500_for_a_while_loses_nothing(stack, am_slack) -> None:  # type: ignore[no-untyped-def]
    am_slack.fail("chat.postMessage", retry_after=1, times=2)
    am_slack.fail("chat.postMessage", status=500, times=3)
    names = [f"Flaky{i}" for i in range(3)]
    for name in names:
        assert _post(stack["bot"], payload([alert(name, pod="p")], group=name)).status_code == 200
    for name in names:
        am_slack.wait_for(lambda name=name: _parents(am_slack, name), timeout=30)
    time.sleep(0.5)
    assert all(len(_parents(am_slack, name)) == 1 for name in names)


def test_a_restart_in_the_middle_of_a_storm_loses_nothing(stack, am_slack) -> None:  # type: ignore[no-untyped-def]
    names = [f"Storm{i:02d}" for i in range(16)]
    for i, name in enumerate(names):
        severity = "critical" if i % 4 == 0 else "warning"
        assert _post(stack["bot"], payload([alert(name, severity=severity, pod="p")], group=name)).status_code == 200
    am_slack.wait_for(lambda: sum(len(_parents(am_slack, n)) for n in names) >= 3, timeout=20)
    stack["bot"].stop()
    # Same database, new process: what the first one had not sent is still in the outbox.
    restarted = BotProcess(stack["env"], stack["workdir"] / "bot-2.log", config_yaml=ROLES_YAML)
    restarted.env["PROMETHEUS_URL"] = stack["prom"].url
    stack["bot"] = restarted.start()
    for name in names:
        am_slack.wait_for(lambda name=name: _parents(am_slack, name), timeout=30)
    time.sleep(0.5)
    assert all(len(_parents(am_slack, n)) == 1 for n in names)
    criticals = [m.ts for n in names[::4] for m in _parents(am_slack, n)]
    storm = [m for m in am_slack.messages(CHANNEL_ID) if "alert storm" in m.text.lower()]
    assert storm and max(criticals) < max(m.ts for n in names for m in _parents(am_slack, n))


def test_the_webhook_token_never_leaks(stack, am_slack, am_pg) -> None:  # type: ignore[no-untyped-def]
    for call in am_slack.calls:
        assert TOKEN not in json.dumps(call.args)
    for log in ("bot.log", "bot-2.log"):
        assert TOKEN not in (stack["workdir"] / log).read_text(errors="replace")
    rows = _sql(am_pg, "SELECT arguments, detail FROM audit_log")
    assert rows and all(TOKEN not in a and TOKEN not in d for a, d in rows)
