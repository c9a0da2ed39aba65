"""The fake Slack Web API, driven by the official slack_sdk clients, unmodified."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook import WebhookClient

from sandbox.slack_server import FakeSlackServer, block_kit_errors

TOKEN = "xoxb-test-token"


@pytest.fixture
def server() -> Iterator[FakeSlackServer]:
    with FakeSlackServer(bot_token=TOKEN) as fake:
        fake.add_user("U0OPS01", "olga", "olga@013a.tech", real_name="Olga Ops")
        fake.add_user("U0APR01", "anna", "anna@013a.tech")
        fake.add_user("U0GUEST", "gus", is_restricted=True)
        fake.add_user("U0GONE1", "gone", deleted=True)
        fake.add_usergroup("S0ONCALL", "oncall", ["U0OPS01", "U0APR01"])
        fake.add_channel("C0ALERTS", "aia-production-alerts", ["U0OPS01", "U0APR01"])
        yield fake


def open_local(request: str | urllib.request.Request, data: bytes | None = None) -> Any:
    # Always an http:// URL of the fake server started by the test.
    return urllib.request.urlopen(request, data, timeout=5)  # noqa: S310


def client_for(server: FakeSlackServer, token: str | None = TOKEN) -> WebClient:
    # No retry handlers: the tests want to see every answer, 429s included.
    return WebClient(token=token, base_url=server.api_url, retry_handlers=[])


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def test_auth_test_identifies_the_bot(server: FakeSlackServer) -> None:
    response = client_for(server).auth_test()
    assert response["ok"] is True
    assert response["team_id"] == "T0AIA"
    assert response["user_id"] == "U0BOT"
    assert response["bot_id"] == "B0BOT"
    assert response["url"].startswith(server.url)
    assert server.calls_to("auth.test")[0].token == TOKEN


def test_post_update_thread_reply_and_ephemeral_are_recorded(server: FakeSlackServer) -> None:
    client = client_for(server)
    parent = client.chat_postMessage(
        channel="C0ALERTS", text="alert", blocks=[section("*HighErrorRate*")]
    )
    assert parent["channel"] == "C0ALERTS"
    assert parent["message"]["text"] == "alert"
    reply = client.chat_postMessage(
        channel="C0ALERTS", thread_ts=parent["ts"], text="runbook steps", reply_broadcast=False
    )
    assert float(reply["ts"]) > float(parent["ts"])
    updated = client.chat_update(
        channel="C0ALERTS", ts=parent["ts"], text="resolved", blocks=[section("~resolved~")]
    )
    assert updated["ts"] == parent["ts"] and updated["text"] == "resolved"
    ephemeral = client.chat_postEphemeral(channel="C0ALERTS", user="U0OPS01", text="only you")
    assert ephemeral["message_ts"]

    messages = server.messages("C0ALERTS")
    assert [m.text for m in messages] == ["resolved", "runbook steps"]
    assert messages[0].blocks == [section("~resolved~")] and messages[0].edited
    assert messages[1].thread_ts == parent["ts"] and messages[1].is_reply
    assert [m.ts for m in server.thread("C0ALERTS", parent["ts"])] == [parent["ts"], reply["ts"]]
    assert server.ephemerals[0].user == "U0OPS01"
    assert server.ephemerals[0].text == "only you"

    post = server.calls_to("chat.postMessage")[0]
    assert post.args["blocks"] == [section("*HighErrorRate*")]
    assert post.http_status == 200 and post.ok

    link = client.chat_getPermalink(channel="C0ALERTS", message_ts=reply["ts"])
    assert link["permalink"].startswith(server.url)
    client.chat_delete(channel="C0ALERTS", ts=reply["ts"])
    assert [m.ts for m in server.messages()] == [parent["ts"]]
    with pytest.raises(SlackApiError) as excinfo:
        client.chat_update(channel="C0ALERTS", ts="1.000001", text="x")
    assert excinfo.value.response["error"] == "message_not_found"


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
def test_channel_checks_and_message_errors(server: FakeSlackServer) -> None:
    client = client_for(server)
    assert client.chat_postMessage(channel="#aia-production-alerts", text="x")["channel"] == (
        "C0ALERTS"
    )
    cases: list[tuple[dict[str, Any], str]] = [
        ({"channel": "C0NOWHERE", "text": "x"}, "channel_not_found"),
        ({"channel": "C0ALERTS"}, "no_text"),
        ({"channel": "C0ALERTS", "text": "x" * 40_001}, "msg_too_long"),
    ]
    for kwargs, error in cases:
        with pytest.raises(SlackApiError) as excinfo:
            client.chat_postMessage(**kwargs)
        assert excinfo.value.response["error"] == error
    # Posting to a user ID lands in the DM, like Slack.
    dm = client.chat_postMessage(channel="U0OPS01", text="you are paged")
    assert dm["channel"].startswith("D")
    assert client.conversations_open(users="U0OPS01")["channel"]["id"] == dm["channel"]

    server.add_channel("C0QUIET", "quiet", bot_is_member=False)
    with pytest.raises(SlackApiError) as excinfo:
        client.chat_postMessage(channel="C0QUIET", text="x")
    assert excinfo.value.response["error"] == "not_in_channel"


def test_any_channel_is_accepted_when_none_was_seeded() -> None:
    with FakeSlackServer(bot_token=TOKEN) as fake:
        response = client_for(fake).chat_postMessage(channel="C0ANY", text="hello")
        assert response["channel"] == "C0ANY"
        assert fake.messages("C0ANY")[0].text == "hello"


def test_files_upload_v2_end_to_end(server: FakeSlackServer) -> None:
    client = client_for(server)
    parent = client.chat_postMessage(channel="C0ALERTS", text="alert")
    content = "line\n" * 10_000
    response = client.files_upload_v2(
        channel="C0ALERTS",
        thread_ts=parent["ts"],
        content=content,
        filename="logs.txt",
        title="aia-api logs",
        initial_comment="last hour of logs",
    )
    assert response["file"]["title"] == "aia-api logs"
    [uploaded] = server.files
    assert uploaded.content == content.encode()
    assert uploaded.filename == "logs.txt"
    assert uploaded.channel == "C0ALERTS" and uploaded.thread_ts == parent["ts"]
    assert uploaded.initial_comment == "last hour of logs"
    assert uploaded.completed and uploaded.length == len(content.encode())


def test_upload_protocol_errors(server: FakeSlackServer) -> None:
    client = client_for(server)
    with pytest.raises(SlackApiError) as excinfo:
        client.api_call("files.getUploadURLExternal", params={"filename": "x.txt"})
    assert excinfo.value.response["error"] == "invalid_arguments"

    issued = client.files_getUploadURLExternal(filename="x.txt", length=3)
    with pytest.raises(SlackApiError) as excinfo:
        client.files_completeUploadExternal(files=[{"id": issued["file_id"], "title": "x"}])
    assert excinfo.value.response["error"] == "file_not_found"

    # Other clients send the bytes as multipart with a "file" field.
    boundary = "XyZ"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.txt"\r\n'
        f"Content-Type: text/plain\r\n\r\nabc\r\n--{boundary}--\r\n"
    ).encode()
    request = urllib.request.Request(  # noqa: S310 (the fake server's http:// URL)
        issued["upload_url"],
        data=body,
        method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with open_local(request) as answer:
        assert answer.status == 200 and answer.read() == b"OK - 3"
    client.files_completeUploadExternal(files=[{"id": issued["file_id"], "title": "x"}])
    assert server.files[0].content == b"abc"


def test_wrong_or_missing_token(server: FakeSlackServer) -> None:
    with pytest.raises(SlackApiError) as excinfo:
        client_for(server, "xoxb-wrong").chat_postMessage(channel="C0ALERTS", text="x")
    assert excinfo.value.response.status_code == 200
    assert excinfo.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as excinfo:
        client_for(server, None).auth_test()
    assert excinfo.value.response["error"] == "not_authed"
    assert server.messages() == []
    assert [c.error for c in server.calls] == ["invalid_auth", "not_authed"]


def test_block_kit_limits(server: FakeSlackServer) -> None:
    client = client_for(server)
    cases: list[list[dict[str, Any]]] = [
        [section(f"block {i}") for i in range(51)],
        [section("x" * 3001)],
        [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}],
        [{"type": "banner"}],
        [
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Go"},
                        "action_id": "a",
                    },
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Go"},
                        "action_id": "a",
                    },
                ],
            }
        ],
        [{"type": "image", "image_url": "https://example.com/x.png"}],
        [{**section("a"), "block_id": "b"}, {**section("b"), "block_id": "b"}],
    ]
    for blocks in cases:
        with pytest.raises(SlackApiError) as excinfo:
            client.chat_postMessage(channel="C0ALERTS", text="fallback", blocks=blocks)
        assert excinfo.value.response["error"] == "invalid_blocks"
        assert excinfo.value.response["errors"], blocks
    assert server.messages() == []
    assert "3001" in " ".join(block_kit_errors([section("x" * 3001)]))
    assert block_kit_errors([section("x" * 3000), {"type": "divider"}]) == []


def test_rate_limit_answers_429_with_retry_after(server: FakeSlackServer) -> None:
    client = client_for(server)
    server.post_rate_per_channel = 1.0
    client.chat_postMessage(channel="C0ALERTS", text="first")
    with pytest.raises(SlackApiError) as excinfo:
        client.chat_postMessage(channel="C0ALERTS", text="second")
    assert excinfo.value.response.status_code == 429
    assert excinfo.value.response.headers["Retry-After"] == "1"
    assert excinfo.value.response["error"] == "ratelimited"
    # The limit is per channel.
    client.chat_postMessage(channel="U0OPS01", text="dm")
    assert [m.text for m in server.messages("C0ALERTS")] == ["first"]
    assert [c.http_status for c in server.calls_to("chat.postMessage")] == [200, 429, 200]

    server.post_rate_per_channel = None
    client.chat_postMessage(channel="C0ALERTS", text="third")


def test_sdk_rate_limit_handler_honours_retry_after(server: FakeSlackServer) -> None:
    server.post_rate_per_channel = 4.0
    client = WebClient(
        token=TOKEN,
        base_url=server.api_url,
        retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=2)],
    )
    client.chat_postMessage(channel="C0ALERTS", text="one")
    client.chat_postMessage(channel="C0ALERTS", text="two")
    calls = server.calls_to("chat.postMessage")
    assert [c.http_status for c in calls] == [200, 429, 200]
    assert calls[2].time - calls[1].time >= 1.0
    assert len(server.messages()) == 2


def test_fail_injection(server: FakeSlackServer) -> None:
    client = client_for(server)
    server.fail("chat.postMessage", status=500, times=2)
    for _ in range(2):
        with pytest.raises(SlackApiError) as excinfo:
            client.chat_postMessage(channel="C0ALERTS", text="x")
        assert excinfo.value.response.status_code == 500
        assert excinfo.value.response["error"] == "internal_error"
    client.chat_postMessage(channel="C0ALERTS", text="x")

    server.fail("chat.postMessage", error="not_in_channel")
    with pytest.raises(SlackApiError) as excinfo:
        client.chat_postMessage(channel="C0ALERTS", text="x")
    assert excinfo.value.response.status_code == 200
    assert excinfo.value.response["error"] == "not_in_channel"

    server.fail("users.info", retry_after=7)
    with pytest.raises(SlackApiError) as excinfo:
        client.users_info(user="U0OPS01")
    assert excinfo.value.response.status_code == 429
    assert excinfo.value.response.headers["Retry-After"] == "7"
    assert client.users_info(user="U0OPS01")["ok"]
    assert len(server.messages()) == 1

    server.fail("upload", status=503)
    # slack_sdk's sync upload step uses bare urllib, so a failing upload URL surfaces as HTTPError.
    with pytest.raises(urllib.error.HTTPError, match="503"):
        client.files_upload_v2(channel="C0ALERTS", content="x", filename="x.txt")


def test_users_info_and_usergroups(server: FakeSlackServer) -> None:
    client = client_for(server)
    user = client.users_info(user="U0OPS01")["user"]
    assert user["id"] == "U0OPS01" and user["team_id"] == "T0AIA"
    assert user["name"] == "olga" and user["real_name"] == "Olga Ops"
    assert user["profile"]["email"] == "olga@013a.tech"
    assert user["profile"]["display_name"] == "olga"
    assert (user["is_bot"], user["deleted"], user["is_restricted"]) == (False, False, False)
    assert client.users_info(user="U0GUEST")["user"]["is_restricted"] is True
    assert client.users_info(user="U0GONE1")["user"]["deleted"] is True
    assert client.users_info(user="U0BOT")["user"]["is_bot"] is True
    with pytest.raises(SlackApiError) as excinfo:
        client.users_info(user="U0NOBODY")
    assert excinfo.value.response["error"] == "user_not_found"

    assert client.usergroups_users_list(usergroup="S0ONCALL")["users"] == ["U0OPS01", "U0APR01"]
    with pytest.raises(SlackApiError) as excinfo:
        client.usergroups_users_list(usergroup="S0NOPE")
    assert excinfo.value.response["error"] == "no_such_subteam"

    info = client.conversations_info(channel="C0ALERTS")["channel"]
    assert info["name"] == "aia-production-alerts" and info["is_member"] is True
    assert client.conversations_members(channel="C0ALERTS")["members"] == ["U0OPS01", "U0APR01"]


def test_response_url_recording_and_effects(server: FakeSlackServer) -> None:
    plain_url = server.new_response_url()
    answer = WebhookClient(plain_url).send(text="working on it", response_type="ephemeral")
    assert (answer.status_code, answer.body) == (200, "ok")
    assert server.responses[0].url == plain_url
    assert server.responses[0].body["text"] == "working on it"

    bad = WebhookClient(plain_url).send(blocks=[section("x" * 3001)])
    assert (bad.status_code, bad.body) == (400, "invalid_blocks")

    posted = client_for(server).chat_postMessage(channel="C0ALERTS", text="approve?")
    url = server.new_response_url("C0ALERTS", message_ts=posted["ts"], user="U0APR01")
    WebhookClient(url).send(text="approved by anna", replace_original=True)
    assert server.messages("C0ALERTS")[0].text == "approved by anna"
    WebhookClient(url).send(text="done", response_type="in_channel")
    WebhookClient(url).send(text="just you")
    assert [m.text for m in server.messages("C0ALERTS")] == ["approved by anna", "done"]
    assert server.ephemerals[-1].user == "U0APR01"

    for _ in range(2):
        assert WebhookClient(url).send(text="again").status_code == 200
    assert WebhookClient(url).send(text="sixth").status_code == 404  # five uses, as on Slack


def test_unknown_method_and_raw_http_shapes(server: FakeSlackServer) -> None:
    with pytest.raises(SlackApiError) as excinfo:
        client_for(server).api_call("nope.nothing")
    assert excinfo.value.response["error"] == "unknown_method"

    # GET with the token as a query parameter, as curl users and some clients do.
    query = urllib.parse.urlencode({"token": TOKEN, "user": "U0APR01"})
    with open_local(f"{server.api_url}users.info?{query}") as answer:
        assert json.loads(answer.read())["user"]["name"] == "anna"
    # Form-encoded POST with JSON-encoded blocks.
    form = urllib.parse.urlencode(
        {"token": TOKEN, "channel": "C0ALERTS", "text": "x", "blocks": json.dumps([section("y")])}
    ).encode()
    with open_local(f"{server.api_url}chat.postMessage", form) as answer:
        assert json.loads(answer.read())["ok"] is True
    assert server.calls_to("chat.postMessage")[0].args["blocks"] == [section("y")]
    assert server.calls_to("users.info")[0].token == TOKEN


def test_async_web_client() -> None:
    async def scenario(fake: FakeSlackServer) -> None:
        client = AsyncWebClient(token=TOKEN, base_url=fake.api_url)
        auth = await client.auth_test()
        assert auth["user_id"] == "U0BOT"
        user = await client.users_info(user="U0OPS01")  # a GET with a query string
        assert user["user"]["profile"]["email"] == "olga@013a.tech"
        parent = await client.chat_postMessage(channel="C0ALERTS", text="alert")
        await client.chat_postMessage(channel="C0ALERTS", text="reply", thread_ts=parent["ts"])
        done = await client.files_upload_v2(
            channel="C0ALERTS", thread_ts=parent["ts"], content=b"\x00\x01binary", filename="b.bin"
        )
        assert done["file"]["name"] == "b.bin"
        with pytest.raises(SlackApiError) as excinfo:
            await AsyncWebClient(token="xoxb-bad", base_url=fake.api_url).auth_test()
        assert excinfo.value.response["error"] == "invalid_auth"

    with FakeSlackServer(bot_token=TOKEN) as fake:
        fake.add_user("U0OPS01", "olga", "olga@013a.tech")
        fake.add_channel("C0ALERTS", "aia-production-alerts")
        asyncio.run(scenario(fake))
        [uploaded] = fake.files
        assert uploaded.content == b"\x00\x01binary"
        assert uploaded.channel == "C0ALERTS" and uploaded.completed
        assert len(fake.thread("C0ALERTS", fake.messages()[0].ts)) == 2


def test_concurrent_posts_get_unique_increasing_ts(server: FakeSlackServer) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            client = client_for(server)
            for i in range(10):
                client.chat_postMessage(channel="C0ALERTS", text=f"{n}-{i}")
        except BaseException as exc:  # collected so the main thread can fail the test
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    stamps = [m.ts for m in server.messages()]
    assert len(stamps) == len(set(stamps)) == 80
    assert stamps == sorted(stamps, key=float)


def test_wait_for_and_reset(server: FakeSlackServer) -> None:
    client = client_for(server)
    threading.Timer(0.1, lambda: client.chat_postMessage(channel="C0ALERTS", text="late")).start()
    message = server.wait_for(lambda: server.messages("C0ALERTS"), timeout=5)
    assert message[0].text == "late"
    with pytest.raises(AssertionError, match="chat.postMessage"):
        server.wait_for(lambda: server.ephemerals, timeout=0.1)
    server.reset()
    assert server.calls == [] and server.messages() == []
    assert client.users_info(user="U0OPS01")["ok"]  # the directory survives a reset


def test_http_errors_outside_the_api(server: FakeSlackServer) -> None:
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        open_local(f"{server.url}/upload/v1/unknown", b"x")
    assert excinfo.value.code == 404
