"""`aia-bot serve` end to end: signed HTTP requests in, Slack Web API calls out."""

from __future__ import annotations

import time

from tests.harness.bot_process import button_payload
from tests.harness.users import CHANNEL_ID, SLACK_USERS

VIEWER = SLACK_USERS["viewer"].user_id


def _new_posts(slack, before: int):  # type: ignore[no-untyped-def]
    return [c for c in slack.calls_to("chat.postMessage")[before:] if c.http_status == 200]


def test_pods_answers_in_the_channel(bot, e2e_slack, e2e_kube) -> None:  # type: ignore[no-untyped-def]
    before = len(e2e_slack.calls_to("chat.postMessage"))
    response = bot.slash("pods", VIEWER, e2e_slack.new_response_url())
    assert response.status_code == 200
    posts = e2e_slack.wait_for(lambda: _new_posts(e2e_slack, before))
    post = posts[0]
    assert post.args["channel"] == CHANNEL_ID
    blocks_text = str(post.args["blocks"])
    for pod in e2e_kube.list("Pod", "aia-production")[:3]:
        assert pod["metadata"]["name"] in blocks_text
    assert f"<@{VIEWER}>" in blocks_text


def test_bad_signature_old_timestamp_and_missing_headers_get_401(bot) -> None:  # type: ignore[no-untyped-def]
    from tests.harness.bot_process import slash_body

    body = slash_body("pods", VIEWER, "http://127.0.0.1:1/r")
    forged = bot.signed_headers(body, secret="not-the-secret")
    assert bot.http.post("/slack/events", content=body, headers=forged).status_code == 401
    stale = bot.signed_headers(body, timestamp=int(time.time()) - 6 * 60)
    assert bot.http.post("/slack/events", content=body, headers=stale).status_code == 401
    assert bot.http.post("/slack/events", content=body,
                         headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code == 401


def test_unknown_procedure_gets_an_ephemeral_with_the_syntax(bot, e2e_slack) -> None:  # type: ignore[no-untyped-def]
    url = e2e_slack.new_response_url()
    before = len(e2e_slack.calls_to("chat.postMessage"))
    assert bot.slash("frobnicate the cluster", VIEWER, url).status_code == 200
    answer = e2e_slack.wait_for(lambda: [r for r in e2e_slack.responses if r.url == url])[0]
    assert answer.body["response_type"] == "ephemeral"
    assert "Unknown procedure `frobnicate`" in answer.body["text"]
    assert "/aia help" in answer.body["text"]
    time.sleep(0.3)
    assert len(e2e_slack.calls_to("chat.postMessage")) == before


def test_missing_pod_is_a_clear_ephemeral(bot, e2e_slack) -> None:  # type: ignore[no-untyped-def]
    url = e2e_slack.new_response_url()
    bot.slash("describe pod ghost-pod-1", VIEWER, url)
    answer = e2e_slack.wait_for(lambda: [r for r in e2e_slack.responses if r.url == url])[0]
    assert "`ghost-pod-1` does not exist" in answer.body["text"]
    assert "Traceback" not in answer.body["text"]


def test_user_without_role_is_refused(bot, e2e_slack) -> None:  # type: ignore[no-untyped-def]
    url = e2e_slack.new_response_url()
    bot.slash("pods", SLACK_USERS["nobody"].user_id, url)
    answer = e2e_slack.wait_for(lambda: [r for r in e2e_slack.responses if r.url == url])[0]
    assert "needs the viewer role; you have no role" in answer.body["text"]


def test_ack_is_immediate_while_kubernetes_takes_5_seconds(bot, e2e_slack, e2e_kube) -> None:  # type: ignore[no-untyped-def]
    before = len(e2e_slack.calls_to("chat.postMessage"))
    e2e_kube.delay_seconds = 5
    try:
        started = time.monotonic()
        response = bot.slash("pods", VIEWER, e2e_slack.new_response_url())
        ack_seconds = time.monotonic() - started
        assert response.status_code == 200
        assert ack_seconds < 1.5, f"ack took {ack_seconds:.2f}s"
        e2e_slack.wait_for(lambda: _new_posts(e2e_slack, before), timeout=20)
        assert time.monotonic() - started >= 5  # the answer did wait for Kubernetes
    finally:
        e2e_kube.delay_seconds = 0


def test_long_log_goes_up_as_a_file_in_the_thread(bot, e2e_slack, e2e_kube) -> None:  # type: ignore[no-untyped-def]
    pod = e2e_kube.list("Pod", "aia-production")[0]
    name, container = pod["metadata"]["name"], pod["spec"]["containers"][0]["name"]
    e2e_kube.set_pod_log("aia-production", name, container,
                         "".join(f"line {i} INFO request served\n" for i in range(400)))
    before_files = len(e2e_slack.files)
    bot.slash(f"logs {name} --container {container} --tail 400", VIEWER, e2e_slack.new_response_url())
    uploaded = e2e_slack.wait_for(lambda: [f for f in e2e_slack.files[before_files:] if f.completed])
    assert b"line 0 INFO" in uploaded[0].content and b"line 399 INFO" in uploaded[0].content
    parent = next(m for m in e2e_slack.messages(CHANNEL_ID) if m.ts == uploaded[0].thread_ts)
    assert "400 lines" in str(parent.blocks)


def test_button_click_runs_the_command_in_the_thread(bot, e2e_slack) -> None:  # type: ignore[no-untyped-def]
    parent = e2e_slack.messages(CHANNEL_ID)[0]
    before = len(e2e_slack.calls_to("chat.postMessage"))
    payload = button_payload("endpoints", VIEWER, CHANNEL_ID, parent.ts, e2e_slack.new_response_url())
    assert bot.click(payload).status_code == 200
    post = e2e_slack.wait_for(lambda: _new_posts(e2e_slack, before))[0]
    assert post.args.get("thread_ts") == parent.ts
    assert "35.192.183.84" in str(post.args["blocks"])


def test_edited_button_value_gets_no_more_than_the_role_allows(bot, e2e_slack) -> None:  # type: ignore[no-untyped-def]
    url = e2e_slack.new_response_url()
    payload = button_payload("pods", SLACK_USERS["nobody"].user_id, CHANNEL_ID, "1.1", url)
    payload["actions"][0]["value"] = "{not json"
    bot.click(payload)
    answer = e2e_slack.wait_for(lambda: [r for r in e2e_slack.responses if r.url == url])[0]
    assert "malformed" in answer.body["text"]


def test_health_ready_and_metrics(bot) -> None:  # type: ignore[no-untyped-def]
    assert bot.http.get("/healthz").text == "ok"
    assert bot.http.get("/readyz").json() == {"ready": True, "database": "ok"}
    metrics = bot.http.get("/metrics").text
    assert 'aia_bot_commands_total{outcome="ok",procedure="pods"}' in metrics


def test_audit_shows_the_e2e_actions(bot, e2e_slack) -> None:  # type: ignore[no-untyped-def]
    url = e2e_slack.new_response_url()
    before = len(e2e_slack.calls_to("chat.postMessage"))
    bot.slash("audit 20", SLACK_USERS["admin"].user_id, url)
    post = e2e_slack.wait_for(lambda: _new_posts(e2e_slack, before))[0]
    text = str(post.args["blocks"])
    assert "refused" in text and "user_error" in text and "pods" in text


def test_no_secret_reaches_slack_or_the_log(bot, e2e_slack, e2e_kube) -> None:  # type: ignore[no-untyped-def]
    import base64

    before = len(e2e_slack.calls_to("chat.postMessage"))
    bot.slash("secrets", VIEWER, e2e_slack.new_response_url())
    e2e_slack.wait_for(lambda: _new_posts(e2e_slack, before))
    secret = e2e_kube.get("Secret", "aia-secrets", "aia-production")
    values = [base64.b64decode(v).decode() for v in secret["data"].values()] + list(secret["data"].values())
    everything_sent = str([c.args for c in e2e_slack.calls]) + str([r.body for r in e2e_slack.responses])
    log = bot.logs()
    for value in values:
        assert value not in everything_sent
        assert value not in log
    assert e2e_slack.bot_token not in log
    assert bot.signing_secret not in log


def test_query_posts_values_and_uploads_the_graph_to_the_thread(bot, e2e_slack) -> None:  # type: ignore[no-untyped-def]
    from urllib.parse import quote  # noqa: F401 - the text goes form-encoded, as Slack sends it

    before_files = len(e2e_slack.files)
    before = len(e2e_slack.calls_to("chat.postMessage"))
    # Slack escapes ">" as "&gt;" in slash-command text; the bot must undo it.
    bot.slash("query sum(rate(http_requests_total[1m])) &gt; 0 --range 15m", VIEWER, e2e_slack.new_response_url())
    post = e2e_slack.wait_for(lambda: _new_posts(e2e_slack, before), timeout=20)[0]
    assert "sum(rate(http_requests_total[1m])) &gt; 0" in str(post.args["blocks"])  # shown escaped, as Slack needs
    graph = e2e_slack.wait_for(lambda: [f for f in e2e_slack.files[before_files:] if f.completed], timeout=20)[0]
    assert graph.content.startswith(b"\x89PNG")
    assert graph.thread_ts == post.response["ts"]


def test_channel_the_bot_is_not_in_gets_the_answer_through_the_response_url(bot, e2e_slack) -> None:  # type: ignore[no-untyped-def]
    e2e_slack.add_channel("C0PRIVATE", "private-ops", [VIEWER], bot_is_member=False)
    url = e2e_slack.new_response_url()
    bot.slash("endpoints", VIEWER, url, channel_id="C0PRIVATE")
    answer = e2e_slack.wait_for(lambda: [r for r in e2e_slack.responses if r.url == url])[0]
    assert answer.body["response_type"] == "in_channel"
    assert "35.192.183.84" in str(answer.body["blocks"])


def test_slack_answering_500_once_is_retried(bot, e2e_slack) -> None:  # type: ignore[no-untyped-def]
    before = len(e2e_slack.calls_to("chat.postMessage"))
    e2e_slack.fail("chat.postMessage", status=500, times=1)
    bot.slash("endpoints", VIEWER, e2e_slack.new_response_url())
    e2e_slack.wait_for(lambda: _new_posts(e2e_slack, before), timeout=20)
    statuses = [c.http_status for c in e2e_slack.calls_to("chat.postMessage")[before:]]
    assert statuses[:2] == [500, 200]
