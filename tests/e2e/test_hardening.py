"""The trust boundary, attacked end to end: signed (and forged) HTTP into `aia-bot serve`, the
local Slack and Kubernetes servers, one PostgreSQL, real Prometheus. Each test is one hole an
older version had; it failed there and passes here."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from sandbox.slack_server import FakeSlackServer
from tests.conftest import fresh_pg_database
from tests.harness.bot_process import BotProcess, aia_bot_executable, slash_body
from tests.harness.users import CHANNEL_ID, SLACK_USERS, TEAM_ID, install_users

pytestmark = pytest.mark.e2e

SIGNING_SECRET = "hardening-signing-secret-5b9e"
AM_TOKEN = "hardening-alertmanager-token-31c7"
VIEWER, OPS, ADMIN, ONCALL = (SLACK_USERS[k].user_id for k in ("viewer", "operator", "admin", "oncall"))
GUEST = "U0GUEST1"
CONNECT = "C0CONNECT"  # a Slack Connect channel shared with another company
NS = "aia-production"

CONFIG = """\
roles:
  viewer:   [U0VIEW1, S0ONCALL, U0GUEST1]
  operator: [U0OPS01]
  approver: [U0APR01]
  admin:    [U0ADM01]
escalation:
  start_on: {severity: [critical]}
  repeat: 0
  levels:
    - name: on-call
      notify: [S0ONCALL]
      wait: 10m
    - name: troubleshooting
      notify: [U0APR01]
      wait: 10m
    - name: devops-team
      notify: [U0ADM01]
      wait: 10m
"""


class Hardened:
    def __init__(self, bot: BotProcess, slack: FakeSlackServer, kube: Any, database_url: str) -> None:
        self.bot, self.slack, self.kube, self.database_url = bot, slack, kube, database_url

    def answer(self, user: str, text: str, channel: str = CHANNEL_ID) -> str:
        """The ephemeral answer (response URL) to a slash command."""
        url = self.slack.new_response_url()
        assert self.bot.slash(text, user, url, channel_id=channel).status_code == 200
        found = self.slack.wait_for(lambda: [r for r in self.slack.responses if r.url == url], timeout=20)
        return str(found[0].body.get("text"))

    def resolve(self, esc_id: str) -> None:
        """An operator resolves the escalation; wait until the database says so."""
        self.bot.slash(f"resolve {esc_id}", OPS, self.slack.new_response_url())
        deadline = time.monotonic() + 20
        while self.sql("SELECT status FROM escalations WHERE id = %s", esc_id)[0][0] != "resolved":
            assert time.monotonic() < deadline, f"{esc_id} was not resolved"
            time.sleep(0.2)

    def posted_after(self, count: int, method: str = "chat.postMessage") -> list[Any]:
        return self.slack.calls_to(method)[count:]

    def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            cursor = conn.execute(query, args)
            return list(cursor.fetchall()) if cursor.description else []

    def audit_text(self) -> str:
        return json.dumps(self.sql("SELECT actor, action, outcome, arguments, detail FROM audit_log"))

    def metric(self, name: str, **labels: str) -> float:
        text = self.bot.http.get("/metrics").text
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{"):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total


@pytest.fixture(scope="module")
def hardened(tmp_path_factory: pytest.TempPathFactory, prometheus) -> Iterator[Hardened]:  # type: ignore[no-untyped-def]
    from sandbox.aia_seed import seed_aia_system
    from sandbox.kube_server import FakeKubeAPIServer

    workdir: Path = tmp_path_factory.mktemp("hardening")
    kube = FakeKubeAPIServer().start()
    seed_aia_system(kube)
    slack = FakeSlackServer(team_id=TEAM_ID).start()
    install_users(slack)
    slack.add_user(GUEST, "gwen", "gwen@partner.example", is_restricted=True)
    slack.add_channel(CONNECT, "aia-with-vendor", [VIEWER], ext_shared=True)
    try:
        with fresh_pg_database() as url:
            env = {
                "SLACK_BOT_TOKEN": slack.bot_token, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "SLACK_API_URL": slack.api_url, "DATABASE_URL": url,
                "KUBECONFIG": kube.write_kubeconfig(str(workdir / "kubeconfig")),
                "AIA_ALERT_CHANNEL": CHANNEL_ID, "PROMETHEUS_URL": prometheus.url,
                "ALERTMANAGER_WEBHOOK_TOKEN": AM_TOKEN, "AIA_BREAK_GLASS_ENABLED": "true",
                "AIA_ESCALATION_POLL_SECONDS": "0.5", "AIA_LOG_LEVEL": "DEBUG",
            }
            bot = BotProcess(env, workdir / "bot.log", config_yaml=CONFIG).start()
            try:
                yield Hardened(bot, slack, kube, url)
            finally:
                bot.stop()
                assert SIGNING_SECRET not in bot.logs() and AM_TOKEN not in bot.logs()
    finally:
        slack.stop()
        kube.stop()


def _run(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "AIA_", "ALERTMANAGER_"))}
    return subprocess.run([aia_bot_executable(), *args], env={**full, **env}, capture_output=True, text=True,
                          timeout=timeout)


# -- fail closed, never open ---------------------------------------------------------------

def test_blank_signing_secret_stops_serve_with_one_clear_line(tmp_path: Path) -> None:
    done = _run(["serve", "--port", "0"], {"SLACK_BOT_TOKEN": "xoxb-test-0000000", "SLACK_SIGNING_SECRET": "   ",
                                           "DATABASE_URL": f"sqlite:///{tmp_path}/x.db"})
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "SLACK_SIGNING_SECRET is not set" in lines[0], done.stderr


def test_serve_without_audit_key_refuses_to_start(tmp_path: Path) -> None:
    slack = FakeSlackServer(team_id=TEAM_ID).start()
    try:
        done = _run(["serve", "--port", "0"], {
            "SLACK_BOT_TOKEN": slack.bot_token, "SLACK_SIGNING_SECRET": SIGNING_SECRET, "AIA_AUDIT_KEY": " ",
            "SLACK_API_URL": slack.api_url, "DATABASE_URL": f"sqlite:///{tmp_path}/x.db"})
    finally:
        slack.stop()
    assert done.returncode == 2
    assert "AIA_AUDIT_KEY is not set" in done.stderr and "Traceback" not in done.stderr


def test_check_reports_blank_secret_missing_key_and_alert_intake_off(tmp_path: Path, kube) -> None:  # type: ignore[no-untyped-def]
    # A real kubeconfig: a missing one is a configuration mistake of its own (exit 2 before the rest).
    done = _run(["check"], {"SLACK_SIGNING_SECRET": "", "DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
                            "KUBECONFIG": kube.write_kubeconfig(str(tmp_path / "kubeconfig"))})
    out = done.stdout
    assert done.returncode == 1
    assert re.search(r"^FAIL\s+SLACK_SIGNING_SECRET\s+not set or blank", out, re.M), out
    assert re.search(r"^FAIL\s+AIA_AUDIT_KEY", out, re.M), out
    assert re.search(r"^warn\s+alert intake\s+OFF", out, re.M), out


def test_alertmanager_without_a_token_is_off_not_open(tmp_path: Path, kube, slack) -> None:  # type: ignore[no-untyped-def]
    env = {"SLACK_BOT_TOKEN": slack.bot_token, "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_API_URL": slack.api_url,
           "DATABASE_URL": f"sqlite:///{tmp_path}/am.db", "KUBECONFIG": kube.write_kubeconfig(str(tmp_path / "kc"))}
    bot = BotProcess(env, tmp_path / "bot.log").start()
    try:
        payload = {"version": "4", "groupKey": "{}:{}", "status": "firing", "receiver": "aia", "groupLabels": {},
                   "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am", "truncatedAlerts": 0,
                   "alerts": [{"status": "firing", "labels": {"alertname": "Forged"}, "annotations": {},
                               "startsAt": "2026-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                               "generatorURL": "", "fingerprint": "abc"}]}
        response = bot.http.post("/alertmanager", json=payload)
        assert response.status_code == 503 and "alert intake is off" in response.text
        assert "alert intake is OFF" in bot.logs()
    finally:
        bot.stop()
    import sqlite3

    with sqlite3.connect(tmp_path / "am.db") as conn:
        assert conn.execute("SELECT count(*) FROM alert_inbox").fetchone()[0] == 0


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _raw_post(port: int, path: str, headers: dict[str, str], parts: Iterator[bytes]) -> int:
    """POST over a plain socket, sending ``parts`` until the server answers; its status code."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        sock.sendall(head.encode() + b"\r\n")
        try:
            for part in parts:
                sock.sendall(part)
        except OSError:
            pass  # the server answered and closed while we were still sending: that is the point
        answer = sock.recv(4096).decode("latin-1")
    return int(answer.split(" ", 2)[1])


def test_oversized_and_undecodable_bodies_are_refused_before_parsing(hardened: Hardened) -> None:
    bot = hardened.bot
    assert bot.process is not None
    before = _peak_rss_kib(bot.process.pid)
    auth = {"Authorization": f"Bearer {AM_TOKEN}", "Content-Type": "application/x-www-form-urlencoded"}
    for path in ("/slack/events", "/alertmanager"):
        # Declared 20 MB, unsigned: answered from the headers, the body is never read.
        declared = _raw_post(bot.port, path, {**auth, "Content-Length": str(20 * 1024 * 1024)},
                             iter([b"payload=" + b"x" * 4096]))
        assert declared == 413, path
        # No Content-Length (chunked): cut off once past the cap while streaming.
        chunk = b"x" * (256 * 1024)
        streamed = _raw_post(bot.port, path, {**auth, "Transfer-Encoding": "chunked"},
                             (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" for _ in range(80)))
        assert streamed == 413, path
    # A 20 MB body was never held (the old main peaked at ~115 MB more for one such request).
    assert _peak_rss_kib(bot.process.pid) - before < 30 * 1024
    # Invalid UTF-8, correctly signed: 400, not 500.
    body = b"payload=%7B%22type%22%3A\xff\xfe"
    ts = str(int(time.time()))
    signature = "v0=" + hmac.new(SIGNING_SECRET.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    bad = bot.http.post("/slack/events", content=body, headers={
        "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature,
        "Content-Type": "application/x-www-form-urlencoded"})
    assert bad.status_code == 400
    am = bot.http.post("/alertmanager", content=b'{"version": "4\xff"}',
                       headers={"Authorization": f"Bearer {AM_TOKEN}", "Content-Type": "application/json"})
    assert am.status_code == 400
    assert bot.http.get("/healthz").status_code == 200


def test_bad_signature_and_bad_token_floods_are_counted_and_sampled(hardened: Hardened) -> None:
    bot = hardened.bot
    rows_before = hardened.sql("SELECT count(*) FROM audit_log WHERE outcome = 'refused'")[0][0]
    counted = hardened.metric("aia_bot_refused_requests_total", route="/slack/events", reason="bad_signature")
    body = slash_body(f"scale aia-api-green 0 --break-glass {'x' * 20}", ADMIN, hardened.slack.new_response_url())
    for _ in range(40):
        forged = bot.http.post("/slack/events", content=body.encode(),
                               headers=bot.signed_headers(body, secret="not-the-signing-secret"))
        assert forged.status_code == 401
        wrong = bot.http.post("/alertmanager", json={}, headers={"Authorization": "Bearer wrong-token"})
        assert wrong.status_code == 401
    assert hardened.metric("aia_bot_refused_requests_total", route="/slack/events",
                           reason="bad_signature") - counted == 40
    rows = hardened.sql("SELECT action, detail FROM audit_log WHERE outcome = 'refused' ORDER BY id")[rows_before:]
    # One row per source per minute and route (maybe written by an earlier test already), not 80.
    for route in ("POST /slack/events", "POST /alertmanager"):
        assert len([r for r in rows if r[0] == route]) <= 1
        assert hardened.sql("SELECT count(*) FROM audit_log WHERE action = %s", route)[0][0] >= 1
    assert int(hardened.kube.get("Deployment", "aia-api-green", NS)["spec"]["replicas"]) == 2


# -- no side-door leaks ------------------------------------------------------------------------

def test_config_set_of_a_secret_is_refused_and_never_stored_or_shown(hardened: Hardened) -> None:
    before = dict(hardened.kube.get("ConfigMap", "aia-config", NS)["data"])
    text = hardened.answer(OPS, "config set DB_PASSWORD=hunter2-typed-pw")
    assert "Secret Manager" in text and "hunter2-typed-pw" not in text
    assert hardened.kube.get("ConfigMap", "aia-config", NS)["data"] == before
    assert "hunter2-typed-pw" not in hardened.audit_text()
    count = len(hardened.slack.calls_to("chat.postMessage"))
    hardened.bot.slash("audit 20", VIEWER, hardened.slack.new_response_url())
    posted = hardened.slack.wait_for(lambda: hardened.posted_after(count), timeout=20)
    assert "hunter2-typed-pw" not in json.dumps([c.args for c in posted])


def test_config_backup_posts_and_stores_no_secret_values(hardened: Hardened) -> None:
    kube = hardened.kube
    secret = copy.deepcopy(kube.get("Secret", "aia-secrets", NS))
    secret["metadata"].setdefault("annotations", {})["kubectl.kubernetes.io/last-applied-configuration"] = (
        json.dumps({"apiVersion": "v1", "kind": "Secret", "data": secret["data"]}))
    kube.put(secret)
    dep = copy.deepcopy(kube.get("Deployment", "aia-api-green", NS))
    dep["spec"]["template"]["spec"]["containers"][0].setdefault("env", []).append(
        {"name": "PGPASSWORD", "value": "literal-pg-pw-77"})
    kube.put(dep)
    files_before = len(hardened.slack.files)
    count = len(hardened.slack.calls_to("chat.postMessage"))
    hardened.bot.slash("config backup", OPS, hardened.slack.new_response_url())
    hardened.slack.wait_for(lambda: len([f for f in hardened.slack.files if f.completed]) > files_before, timeout=30)
    shown = json.dumps([c.args for c in hardened.posted_after(count)]) + "".join(
        f.content.decode(errors="replace") for f in hardened.slack.files[files_before:])
    stored = hardened.sql("SELECT content FROM config_backups")
    everything = shown + json.dumps(stored)
    import base64

    for value in secret["data"].values():
        assert value not in everything and base64.b64decode(value).decode() not in everything
    assert "literal-pg-pw-77" not in everything and "last-applied-configuration" not in everything
    assert "kind: HorizontalPodAutoscaler" in stored[-1][0] and "kind: NetworkPolicy" in stored[-1][0]


# -- roles and the two-person rule -------------------------------------------------------------

def _start_escalation(hardened: Hardened) -> str:
    count = len(hardened.slack.calls_to("chat.postMessage"))
    hardened.bot.slash("page 1 API answers 500 since 03:10", OPS, hardened.slack.new_response_url())
    posted = hardened.slack.wait_for(lambda: [c for c in hardened.posted_after(count)
                                              if re.search(r"E[2-9A-HJ-NP-Z]{6}", json.dumps(c.args))], timeout=20)
    found = re.search(r"E[2-9A-HJ-NP-Z]{6}", json.dumps(posted[0].args))
    assert found
    esc_id = found.group(0)
    # Wait until the paged on-call member has had the DM: then the page is on record.
    hardened.slack.wait_for(lambda: [c for c in hardened.slack.calls_to("chat.postMessage")
                                     if c.args.get("channel") in ("D0ONCALL", ONCALL) and esc_id in json.dumps(c.args)],
                            timeout=20)
    return esc_id


def test_a_viewer_cannot_silence_paging(hardened: Hardened) -> None:
    assert "needs the operator role" in hardened.answer(VIEWER, "page 1 everything is on fire here")
    esc_id = _start_escalation(hardened)
    for command in (f"snooze 1h {esc_id}", f"resolve {esc_id}", f"escalate {esc_id}"):
        assert "needs the operator role" in hardened.answer(VIEWER, command), command
    # A viewer who was not paged cannot acknowledge; the paged on-call member (viewer through
    # the S0ONCALL group) can.
    assert "you were not paged" in hardened.answer(VIEWER, f"ack {esc_id}")
    assert hardened.sql("SELECT status FROM escalations WHERE id = %s", esc_id)[0][0] == "active"
    hardened.bot.slash(f"ack {esc_id}", ONCALL, hardened.slack.new_response_url())
    deadline = time.monotonic() + 20
    while hardened.sql("SELECT status FROM escalations WHERE id = %s", esc_id)[0][0] != "acknowledged":
        assert time.monotonic() < deadline, "the paged viewer's ack did not land"
        time.sleep(0.2)
    hardened.resolve(esc_id)


def test_the_break_glass_user_cannot_close_its_review(hardened: Hardened) -> None:
    count = len(hardened.slack.calls_to("chat.postMessage"))
    hardened.bot.slash('scale aia-api-green 0 --break-glass "database migration stuck, nobody else awake"', ADMIN,
                       hardened.slack.new_response_url())
    hardened.slack.wait_for(lambda: [c for c in hardened.posted_after(count) if "BREAK-GLASS" in json.dumps(c.args)],
                            timeout=20)
    deadline = time.monotonic() + 20
    rows: list[tuple[Any, ...]] = []
    while not rows:
        rows = hardened.sql("SELECT id FROM escalations WHERE source = 'break_glass' AND status = 'active'")
        assert time.monotonic() < deadline, "no break-glass review escalation"
        time.sleep(0.2)
    esc_id = rows[0][0]
    for command in (f"resolve {esc_id}", f"ack {esc_id}", f"snooze 1h {esc_id}"):
        assert "You used break-glass" in hardened.answer(ADMIN, command), command
    assert hardened.sql("SELECT status FROM escalations WHERE id = %s", esc_id)[0][0] == "active"
    hardened.resolve(esc_id)


# -- chat markup injection ------------------------------------------------------------------------

HOSTILE = ["<!channel>", "<!here>", "<@U0NOBODY>", "<https://evil.example|Grafana>"]


def _slack_encoded(text: str) -> str:
    """What Slack sends when a person types these characters literally."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _assert_inert(calls: list[Any]) -> None:
    dumped = json.dumps([c.args for c in calls])
    for raw in HOSTILE:
        assert raw not in dumped, raw
    assert "<https://evil" not in dumped
    for token in ("*PWNB*", "_PWNI_", "~PWNS~"):
        # Inside code, formatting characters are inert; anywhere else they must not reach Slack raw.
        outside_code = re.sub(r"```.*?```|`[^`]*`", "", dumped, flags=re.S)
        assert token not in outside_code, token


def test_query_text_cannot_ping_or_disguise_links(hardened: Hardened) -> None:
    count = len(hardened.slack.calls_to("chat.postMessage"))
    typed = "up # <!channel> <https://evil.example|Grafana> *PWNB* _PWNI_ ~PWNS~ `x` &"
    hardened.bot.slash(f"query {_slack_encoded(typed)}", VIEWER, hardened.slack.new_response_url())
    posted = hardened.slack.wait_for(lambda: [c for c in hardened.posted_after(count) if "Query" in json.dumps(c.args)],
                                     timeout=30)
    _assert_inert(posted)
    assert "&lt;!channel&gt;" in json.dumps(posted[0].args)  # shown, as text


def test_page_text_cannot_ping_anywhere_it_is_placed(hardened: Hardened) -> None:
    count = len(hardened.slack.calls_to("chat.postMessage"))
    updates = len(hardened.slack.calls_to("chat.update"))
    typed = "1 <!here> <@U0NOBODY> <https://evil.example|Grafana> *PWNB* _PWNI_ ~PWNS~ db down"
    hardened.bot.slash(f"page {_slack_encoded(typed)}", OPS, hardened.slack.new_response_url())
    dms = hardened.slack.wait_for(lambda: [c for c in hardened.posted_after(count)
                                           if c.args.get("channel", "").startswith(("D", "U")) and "db down" in
                                           json.dumps(c.args)], timeout=20)
    assert dms
    _assert_inert(hardened.posted_after(count) + hardened.slack.calls_to("chat.update")[updates:])
    for esc_id in {m for c in hardened.posted_after(count) for m in re.findall(r"E[2-9A-HJ-NP-Z]{6}", json.dumps(c.args))}:
        hardened.resolve(esc_id)


# -- audit and channels ------------------------------------------------------------------------------

def test_a_write_does_not_run_when_its_intent_cannot_be_audited(hardened: Hardened) -> None:
    hardened.sql("""
        CREATE OR REPLACE FUNCTION refuse_intent() RETURNS trigger AS $$
        BEGIN
            IF NEW.outcome = 'intent' THEN RAISE EXCEPTION 'audit storage full'; END IF;
            RETURN NEW;
        END $$ LANGUAGE plpgsql""")
    hardened.sql("CREATE TRIGGER refuse_intent BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION refuse_intent()")
    try:
        writes = len([r for r in hardened.kube.requests if r.method == "PATCH"])
        text = hardened.answer(OPS, "scale aia-api-blue 4")
        assert "audit log cannot be written" in text and "nothing was run" in text
        assert len([r for r in hardened.kube.requests if r.method == "PATCH"]) == writes
        assert int(hardened.kube.get("Deployment", "aia-api-blue", NS)["spec"]["replicas"]) != 4
    finally:
        hardened.sql("DROP TRIGGER refuse_intent ON audit_log")
    hardened.bot.slash("scale aia-api-blue 4", OPS, hardened.slack.new_response_url())
    hardened.slack.wait_for(lambda: int(hardened.kube.get("Deployment", "aia-api-blue", NS)["spec"]["replicas"]) == 4,
                            timeout=20)
    time.sleep(0.5)
    outcomes = [o for (o,) in hardened.sql("SELECT outcome FROM audit_log WHERE action = 'scale' ORDER BY id")]
    assert outcomes[-2:] == ["intent", "ok"]  # intent first, then the result


def test_audit_chain_is_keyed_and_verify_needs_the_key(hardened: Hardened) -> None:
    env = {"DATABASE_URL": hardened.database_url, "AIA_AUDIT_KEY": "test-audit-key-0123456789abcdef"}
    assert "intact" in _run(["audit", "verify"], env).stdout
    without = _run(["audit", "verify"], {"DATABASE_URL": hardened.database_url})
    assert "AIA_AUDIT_KEY is not set" in without.stdout and without.returncode != 0
    assert {s for (s,) in hardened.sql("SELECT DISTINCT scheme FROM audit_log")} == {"hmac-sha256"}


def test_results_only_in_configured_channels_and_members_dms(hardened: Hardened) -> None:
    slack = hardened.slack
    count = len(slack.calls_to("chat.postMessage"))
    assert "shared with another organisation" in hardened.answer(VIEWER, "pods", channel=CONNECT)
    assert "Guests get no answers" in hardened.answer(GUEST, "pods", channel="D" + GUEST[1:])
    time.sleep(1)
    assert not [c for c in hardened.posted_after(count) if c.args.get("channel") in (CONNECT, "D" + GUEST[1:])]
    hardened.bot.slash("pods", VIEWER, slack.new_response_url(), channel_id="D0VIEW1")
    slack.wait_for(lambda: [c for c in hardened.posted_after(count) if c.args.get("channel") == "D0VIEW1"], timeout=20)
    refused = hardened.sql("SELECT detail FROM audit_log WHERE outcome = 'refused' AND action = '(command)'")
    assert any("Slack Connect" in d for (d,) in refused) and any("Guests" in d for (d,) in refused)


def test_forged_unsigned_break_glass_never_runs(hardened: Hardened) -> None:
    before = hardened.kube.get("Deployment", "aia-api-blue", NS)["spec"]["replicas"]
    body = slash_body('scale aia-api-blue 1 --break-glass "forged forged forged"', ADMIN,
                      hardened.slack.new_response_url())
    for headers in ({}, {"X-Slack-Request-Timestamp": str(int(time.time())), "X-Slack-Signature": ""}):
        response = httpx.post(hardened.bot.url + "/slack/events", content=body.encode(),
                              headers={"Content-Type": "application/x-www-form-urlencoded", **headers})
        assert response.status_code == 401
    time.sleep(1)
    assert hardened.kube.get("Deployment", "aia-api-blue", NS)["spec"]["replicas"] == before
    assert not hardened.sql("SELECT 1 FROM audit_log WHERE detail LIKE '%%forged%%'")


def test_alert_thread_rollback_button_names_the_live_colour(hardened: Hardened) -> None:
    """After a switch green is live: the HighErrorRate thread's rollback button must say so."""
    from tests.bot.alerts.payloads import alert, payload

    kube = hardened.kube
    service = copy.deepcopy(kube.get("Service", "aia-api", NS))
    before = copy.deepcopy(service)
    service["spec"]["selector"]["version"] = "green"
    kube.put(service)
    try:
        body = payload([alert("HighErrorRate", severity="warning", pod="aia-api-green-x1")], group="LiveColourProbe")
        answer = hardened.bot.http.post("/alertmanager", json=body, headers={"Authorization": f"Bearer {AM_TOKEN}"})
        assert answer.status_code == 200, answer.text

        def buttons() -> list[str]:
            posted = [c.args for c in hardened.slack.calls_to("chat.postMessage") if "LiveColourProbe" in json.dumps(c.args)
                      or "aia_run" in json.dumps(c.args)]
            return re.findall(r"rollback aia-api-(?:blue|green)", json.dumps(posted))

        found = hardened.slack.wait_for(buttons, timeout=60)
        assert any("rollback aia-api-green" in v for v in found), found
        assert not any("rollback aia-api-blue" in v for v in found), found
    finally:
        kube.put(before)
