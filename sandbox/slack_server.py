"""A local HTTP server that speaks enough of Slack's Web API for tests and the sandbox console.

The official ``slack_sdk`` clients (sync and async) talk to it unmodified: point them at
``FakeSlackServer.api_url`` as ``base_url``. It checks the token, enforces the Block Kit limits
and the per-channel ``chat.postMessage`` rate limit the way Slack does (answers, error codes and
HTTP statuses), records every call, keeps the resulting channel state, and can be told to fail.

Only the standard library is used, so the server can ship inside the product for
``aia-bot console --sandbox`` without pulling test dependencies.
"""

from __future__ import annotations

import copy
import email.parser
import email.policy
import json
import math
import secrets
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

__all__ = [
    "BLOCK_TYPES",
    "Ephemeral",
    "FakeSlackServer",
    "Message",
    "RecordedCall",
    "ResponseUrlPost",
    "UploadedFile",
    "block_kit_errors",
]

T = TypeVar("T")

# Slack's documented limits (https://docs.slack.dev/reference/block-kit/blocks).
MAX_BLOCKS = 50
MAX_TEXT_LENGTH = 40_000
SECTION_TEXT_MAX = 3000
SECTION_FIELDS_MAX = 10
SECTION_FIELD_TEXT_MAX = 2000
HEADER_TEXT_MAX = 150
CONTEXT_ELEMENTS_MAX = 10
ACTIONS_ELEMENTS_MAX = 25
BUTTON_TEXT_MAX = 75
BUTTON_VALUE_MAX = 2000
BUTTON_URL_MAX = 3000
ACTION_ID_MAX = 255
BLOCK_ID_MAX = 255
IMAGE_ALT_TEXT_MAX = 2000
IMAGE_URL_MAX = 3000
# A response_url "can be used up to 5 times within 30 minutes" (Slack's interactivity docs).
RESPONSE_URL_MAX_USES = 5
RESPONSE_URL_TTL_SECONDS = 30 * 60

BLOCK_TYPES = frozenset(
    {"section", "header", "context", "actions", "divider", "image", "rich_text", "input", "file"}
)

# Pseudo-method names accepted by ``fail()`` for the two non-API endpoints.
UPLOAD_PSEUDO_METHOD = "upload"
RESPONSE_URL_PSEUDO_METHOD = "response_url"

# Arguments that form-encoded callers send as JSON strings; decoded so tests see structures.
_JSON_ARGS = ("blocks", "attachments", "files", "metadata")


# --------------------------------------------------------------------------- records


@dataclass
class RecordedCall:
    """One Web API call as the server saw it and answered it."""

    method: str
    args: dict[str, Any]
    token: str | None
    http_status: int
    time: float  # time.monotonic() when the request arrived
    response: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.response.get("ok") is True

    @property
    def error(self) -> str | None:
        error = self.response.get("error")
        return error if isinstance(error, str) else None


@dataclass
class Message:
    """A message as it currently stands in a channel (after any ``chat.update``)."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]] | None
    user: str
    thread_ts: str | None = None
    reply_broadcast: bool = False
    metadata: dict[str, Any] | None = None
    edited: bool = False

    @property
    def is_reply(self) -> bool:
        return self.thread_ts is not None and self.thread_ts != self.ts


@dataclass
class Ephemeral:
    """A message only ``user`` sees: from ``chat.postEphemeral`` or an ephemeral response_url."""

    channel: str | None
    user: str | None
    text: str
    blocks: list[dict[str, Any]] | None
    thread_ts: str | None
    message_ts: str


@dataclass
class ResponseUrlPost:
    """A body POSTed to a response URL, with what the server answered."""

    url: str
    body: dict[str, Any]
    http_status: int
    answer: str


@dataclass
class UploadedFile:
    """A file going through ``getUploadURLExternal`` → upload URL → ``completeUploadExternal``."""

    id: str
    filename: str
    length: int
    title: str | None = None
    content: bytes = b""
    uploaded: bool = False
    completed: bool = False
    channel: str | None = None
    thread_ts: str | None = None
    initial_comment: str | None = None
    alt_txt: str | None = None
    snippet_type: str | None = None


@dataclass
class _User:
    id: str
    name: str
    real_name: str
    email: str | None
    is_bot: bool
    is_restricted: bool
    is_ultra_restricted: bool
    deleted: bool
    team_id: str


@dataclass
class _Channel:
    id: str
    name: str
    members: list[str]
    bot_is_member: bool
    is_im: bool = False
    ext_shared: bool = False  # a Slack Connect channel, shared with another organisation


@dataclass
class _Failure:
    status: int
    error: str
    retry_after: int | None


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class _ResponseUrl:
    url: str
    channel: str | None
    message_ts: str | None
    user: str | None
    created: float
    uses: int = 0


class _ApiError(Exception):
    """Turned into a Slack error answer: HTTP ``status`` with ``{"ok": false, "error": ...}``."""

    def __init__(
        self,
        error: str,
        *,
        status: int = 200,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.extra = extra or {}
        self.headers = headers or {}


# --------------------------------------------------------------------------- Block Kit


def block_kit_errors(blocks: object) -> list[str]:
    """Reasons Slack would refuse these blocks with ``invalid_blocks``; empty when valid.

    Messages follow Slack's style (``reason [json-pointer:/blocks/N/...]``) so a failing test
    points at the offending block. Public so renderers can be checked without a server.
    """
    if not isinstance(blocks, list):
        return ["blocks must be a JSON array [json-pointer:/blocks]"]
    errors: list[str] = []
    if len(blocks) > MAX_BLOCKS:
        errors.append(
            f"no more than {MAX_BLOCKS} items allowed, got {len(blocks)} [json-pointer:/blocks]"
        )
    block_ids: set[str] = set()
    action_ids: set[str] = set()
    for index, block in enumerate(blocks):
        _check_block(block, f"/blocks/{index}", errors, block_ids, action_ids)
    return errors


def _check_block(
    block: object, pointer: str, errors: list[str], block_ids: set[str], action_ids: set[str]
) -> None:
    if not isinstance(block, dict):
        errors.append(f"must be an object [json-pointer:{pointer}]")
        return
    block_type = block.get("type")
    if block_type not in BLOCK_TYPES:
        errors.append(f"unsupported block type {block_type!r} [json-pointer:{pointer}/type]")
        return
    block_id = block.get("block_id")
    if block_id is not None:
        if not isinstance(block_id, str) or not block_id:
            errors.append(f"must be a non-empty string [json-pointer:{pointer}/block_id]")
        elif len(block_id) > BLOCK_ID_MAX:
            errors.append(
                f"must be less than {BLOCK_ID_MAX + 1} characters [json-pointer:{pointer}/block_id]"
            )
        elif block_id in block_ids:
            errors.append(f"duplicate block_id {block_id!r} [json-pointer:{pointer}/block_id]")
        else:
            block_ids.add(block_id)

    if block_type == "section":
        text, fields = block.get("text"), block.get("fields")
        if text is None and fields is None:
            errors.append(f"must define either `text` or `fields` [json-pointer:{pointer}]")
        if text is not None:
            _check_text(text, f"{pointer}/text", SECTION_TEXT_MAX, errors)
        if fields is not None:
            if not isinstance(fields, list) or not fields:
                errors.append(f"must be a non-empty array [json-pointer:{pointer}/fields]")
            else:
                if len(fields) > SECTION_FIELDS_MAX:
                    errors.append(
                        f"no more than {SECTION_FIELDS_MAX} items allowed "
                        f"[json-pointer:{pointer}/fields]"
                    )
                for i, item in enumerate(fields):
                    _check_text(item, f"{pointer}/fields/{i}", SECTION_FIELD_TEXT_MAX, errors)
        if block.get("accessory") is not None:
            _check_element(block["accessory"], f"{pointer}/accessory", errors, action_ids)
    elif block_type == "header":
        _check_text(block.get("text"), f"{pointer}/text", HEADER_TEXT_MAX, errors, plain=True)
    elif block_type == "context":
        elements = block.get("elements")
        if not isinstance(elements, list) or not elements:
            errors.append(f"must be a non-empty array [json-pointer:{pointer}/elements]")
        elif len(elements) > CONTEXT_ELEMENTS_MAX:
            errors.append(
                f"no more than {CONTEXT_ELEMENTS_MAX} items allowed "
                f"[json-pointer:{pointer}/elements]"
            )
    elif block_type == "actions":
        elements = block.get("elements")
        if not isinstance(elements, list) or not elements:
            errors.append(f"must be a non-empty array [json-pointer:{pointer}/elements]")
        else:
            if len(elements) > ACTIONS_ELEMENTS_MAX:
                errors.append(
                    f"no more than {ACTIONS_ELEMENTS_MAX} items allowed "
                    f"[json-pointer:{pointer}/elements]"
                )
            for i, element in enumerate(elements):
                _check_element(element, f"{pointer}/elements/{i}", errors, action_ids)
    elif block_type == "image":
        image_url, alt_text = block.get("image_url"), block.get("alt_text")
        if image_url is None and block.get("slack_file") is None:
            errors.append(f"must provide `image_url` or `slack_file` [json-pointer:{pointer}]")
        elif image_url is not None and (not isinstance(image_url, str) or not image_url):
            errors.append(f"must be a non-empty string [json-pointer:{pointer}/image_url]")
        elif isinstance(image_url, str) and len(image_url) > IMAGE_URL_MAX:
            errors.append(
                f"must be less than {IMAGE_URL_MAX + 1} characters "
                f"[json-pointer:{pointer}/image_url]"
            )
        if not isinstance(alt_text, str) or not alt_text:
            errors.append(f"missing required field: alt_text [json-pointer:{pointer}/alt_text]")
        elif len(alt_text) > IMAGE_ALT_TEXT_MAX:
            errors.append(
                f"must be less than {IMAGE_ALT_TEXT_MAX + 1} characters "
                f"[json-pointer:{pointer}/alt_text]"
            )
    elif block_type == "input":
        _check_text(block.get("label"), f"{pointer}/label", 2000, errors, plain=True)
        if block.get("element") is None:
            errors.append(f"missing required field: element [json-pointer:{pointer}]")
        else:
            _check_element(block["element"], f"{pointer}/element", errors, action_ids)
    elif block_type == "rich_text":
        if not isinstance(block.get("elements"), list):
            errors.append(f"missing required field: elements [json-pointer:{pointer}]")
    elif block_type == "file":
        if not block.get("external_id") or not block.get("source"):
            errors.append(f"must provide `external_id` and `source` [json-pointer:{pointer}]")


def _check_text(
    obj: object, pointer: str, max_len: int, errors: list[str], *, plain: bool = False
) -> None:
    allowed = ("plain_text",) if plain else ("plain_text", "mrkdwn")
    if not isinstance(obj, dict):
        errors.append(f"must be a text object [json-pointer:{pointer}]")
        return
    if obj.get("type") not in allowed:
        errors.append(
            f"must be one of {', '.join(allowed)}, got {obj.get('type')!r} "
            f"[json-pointer:{pointer}/type]"
        )
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        errors.append(f"must be more than 0 characters [json-pointer:{pointer}/text]")
    elif len(text) > max_len:
        errors.append(
            f"must be less than {max_len + 1} characters, got {len(text)} "
            f"[json-pointer:{pointer}/text]"
        )


def _check_element(element: object, pointer: str, errors: list[str], action_ids: set[str]) -> None:
    if not isinstance(element, dict) or not isinstance(element.get("type"), str):
        errors.append(f"must be an element object with a type [json-pointer:{pointer}]")
        return
    action_id = element.get("action_id")
    if action_id is not None:
        if not isinstance(action_id, str) or not action_id:
            errors.append(f"must be a non-empty string [json-pointer:{pointer}/action_id]")
        elif len(action_id) > ACTION_ID_MAX:
            errors.append(
                f"must be less than {ACTION_ID_MAX + 1} characters "
                f"[json-pointer:{pointer}/action_id]"
            )
        elif action_id in action_ids:
            # Slack only routes a click reliably when action_ids are unique per message.
            errors.append(f"duplicate action_id {action_id!r} [json-pointer:{pointer}/action_id]")
        else:
            action_ids.add(action_id)
    if element["type"] == "button":
        _check_text(element.get("text"), f"{pointer}/text", BUTTON_TEXT_MAX, errors, plain=True)
        for key, limit in (("value", BUTTON_VALUE_MAX), ("url", BUTTON_URL_MAX)):
            value = element.get(key)
            if value is None:
                continue
            if not isinstance(value, str):
                errors.append(f"must be a string [json-pointer:{pointer}/{key}]")
            elif len(value) > limit:
                errors.append(
                    f"must be less than {limit + 1} characters, got {len(value)} "
                    f"[json-pointer:{pointer}/{key}]"
                )


# --------------------------------------------------------------------------- request parsing


def _first_values(pairs: dict[str, list[str]]) -> dict[str, Any]:
    return {key: values[0] if len(values) == 1 else values for key, values in pairs.items()}


def _parse_multipart(content_type: str, body: bytes) -> dict[str, Any]:
    # The email package is the standard library's remaining MIME parser (cgi is gone in 3.13).
    raw = b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    fields: dict[str, Any] = {}
    if not message.is_multipart():
        return fields
    for part in message.walk():
        if part is message or part.is_multipart():
            continue
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if not isinstance(name, str) or not isinstance(payload, bytes):
            continue
        if part.get_filename() is not None:
            fields[name] = payload
        else:
            charset = part.get_content_charset() or "utf-8"
            fields[name] = payload.decode(charset, errors="replace")
    return fields


def _parse_body(content_type: str, body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/json":
        try:
            decoded = json.loads(body)
        except ValueError as exc:
            raise _ApiError("invalid_json") from exc
        if not isinstance(decoded, dict):
            raise _ApiError("invalid_json")
        return decoded
    if media_type == "multipart/form-data":
        return _parse_multipart(content_type, body)
    text = body.decode("utf-8", errors="replace")
    return _first_values(urllib.parse.parse_qs(text, keep_blank_values=True))


def _truthy(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


def _opt_str(value: object) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


# --------------------------------------------------------------------------- server


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default listen backlog of 5 drops connections under a burst, and the
    # client's SYN retry then adds a whole second: Slack does not do that to its clients.
    request_queue_size = 256
    fake: FakeSlackServer


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    # Keep-alive so aiohttp sessions reuse connections, but idle connections do not pin threads.
    protocol_version = "HTTP/1.1"
    timeout = 30

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        # The console and the test output must stay readable; calls are recorded instead.
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        body = self._read_body()
        status, headers, payload = self.server.fake._handle_http(
            self.command, self.path, dict(self.headers.items()), body
        )
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class FakeSlackServer:
    """Slack's Web API on localhost, for the official ``slack_sdk`` clients.

    Thread-safe: the HTTP server answers each request on its own thread and every piece of
    state is guarded by one lock; the inspection helpers return snapshots (copies).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        bot_token: str = "xoxb-sandbox-token",  # noqa: S107 (a sandbox token, not a secret)
        team_id: str = "T0AIA",
        bot_user_id: str = "U0BOT",
        post_rate_per_channel: float | None = None,
        burst: int = 1,
    ) -> None:
        self.host = host
        self.port = port
        self.bot_token = bot_token
        # Socket Mode: the app-level token, and the WebSocket URL apps.connections.open hands out.
        self.app_token = "xapp-sandbox-token"  # noqa: S105 - a sandbox value, not a secret
        self.socket_mode_url: str | None = None
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = "B" + bot_user_id[1:]
        self.team_name = "AIA Sandbox"
        self.burst = max(1, burst)
        self._lock = threading.RLock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._post_rate = post_rate_per_channel
        self._users: dict[str, _User] = {}
        self._usergroups: dict[str, tuple[str, list[str]]] = {}
        self._channels: dict[str, _Channel] = {}
        self._calls: list[RecordedCall] = []
        self._messages: list[Message] = []
        self._ephemerals: list[Ephemeral] = []
        self._responses: list[ResponseUrlPost] = []
        self._files: dict[str, UploadedFile] = {}
        self._upload_urls: dict[str, str] = {}  # upload token -> file id
        self._response_urls: dict[str, _ResponseUrl] = {}
        self._failures: dict[str, deque[_Failure]] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._last_ts_us = 0
        self._file_seq = 0
        self.add_user(bot_user_id, "aia-bot", is_bot=True)

    # ----------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("FakeSlackServer is not started; call start() first")
        host, port = self._httpd.server_address[:2]
        host_text = host.decode() if isinstance(host, bytes) else str(host)
        if ":" in host_text:
            host_text = f"[{host_text}]"
        return f"http://{host_text}:{port}"

    @property
    def api_url(self) -> str:
        return self.url + "/api/"

    def start(self) -> FakeSlackServer:
        if self._httpd is not None:
            return self
        httpd = _HTTPServer((self.host, self.port), _Handler)
        httpd.fake = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-slack-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> FakeSlackServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- seeding

    def add_user(
        self,
        user_id: str,
        name: str,
        email: str | None = None,
        *,
        real_name: str | None = None,
        is_bot: bool = False,
        is_restricted: bool = False,
        is_ultra_restricted: bool = False,
        deleted: bool = False,
        team_id: str | None = None,
    ) -> None:
        with self._lock:
            self._users[user_id] = _User(
                id=user_id,
                name=name,
                real_name=real_name or name,
                email=email,
                is_bot=is_bot,
                is_restricted=is_restricted,
                is_ultra_restricted=is_ultra_restricted,
                deleted=deleted,
                team_id=team_id or self.team_id,
            )

    def add_usergroup(self, group_id: str, handle: str, user_ids: Iterable[str]) -> None:
        with self._lock:
            self._usergroups[group_id] = (handle, list(user_ids))

    def add_channel(
        self, channel_id: str, name: str, members: Iterable[str] = (), *, bot_is_member: bool = True,
        ext_shared: bool = False,
    ) -> None:
        with self._lock:
            self._channels[channel_id] = _Channel(
                id=channel_id,
                name=name.lstrip("#"),
                members=list(members),
                bot_is_member=bot_is_member,
                ext_shared=ext_shared,
            )

    def new_response_url(
        self, channel: str | None = None, *, message_ts: str | None = None, user: str | None = None
    ) -> str:
        """A response_url like the one Slack puts in slash command and interaction payloads.

        Every POST is recorded in ``responses``. When ``channel`` is given the post also acts like
        Slack would: ``in_channel`` posts a message, ``replace_original``/``delete_original``
        change the message at ``message_ts``, anything else becomes an ephemeral for ``user``.
        """
        with self._lock:
            url = f"{self.url}/response/{secrets.token_urlsafe(12)}"
            self._response_urls[url.rsplit("/", 1)[1]] = _ResponseUrl(
                url=url, channel=channel, message_ts=message_ts, user=user, created=time.monotonic()
            )
            return url

    # ----------------------------------------------------------------- behaviour controls

    @property
    def post_rate_per_channel(self) -> float | None:
        return self._post_rate

    @post_rate_per_channel.setter
    def post_rate_per_channel(self, rate: float | None) -> None:
        with self._lock:
            self._post_rate = rate
            self._buckets.clear()

    def fail(
        self,
        method: str,
        *,
        status: int | None = None,
        error: str | None = None,
        times: int = 1,
        retry_after: int | None = None,
    ) -> None:
        """Make the next ``times`` calls to ``method`` fail.

        ``retry_after`` answers 429 ``ratelimited`` with that ``Retry-After``; ``error`` alone
        answers HTTP 200 ``ok: false`` with it (Slack's way for API errors); otherwise HTTP
        ``status`` (default 500) with ``internal_error``. ``method`` may also be ``"upload"``
        (the file upload URL) or ``"response_url"``.
        """
        if retry_after is not None:
            failure = _Failure(status or 429, error or "ratelimited", max(0, int(retry_after)))
        elif error is not None:
            failure = _Failure(status or 200, error, None)
        else:
            failure = _Failure(status or 500, "internal_error", None)
        with self._lock:
            queue = self._failures.setdefault(method, deque())
            queue.extend(failure for _ in range(times))

    def reset(self) -> None:
        """Forget calls, messages, files, responses and pending failures; keep the directory."""
        with self._lock:
            self._calls.clear()
            self._messages.clear()
            self._ephemerals.clear()
            self._responses.clear()
            self._files.clear()
            self._upload_urls.clear()
            self._response_urls.clear()
            self._failures.clear()
            self._buckets.clear()

    # ----------------------------------------------------------------- inspection

    @property
    def calls(self) -> list[RecordedCall]:
        with self._lock:
            return copy.deepcopy(self._calls)

    def calls_to(self, method: str) -> list[RecordedCall]:
        with self._lock:
            return copy.deepcopy([call for call in self._calls if call.method == method])

    def messages(self, channel: str | None = None) -> list[Message]:
        with self._lock:
            return copy.deepcopy(
                [m for m in self._messages if channel is None or m.channel == channel]
            )

    def thread(self, channel: str, ts: str) -> list[Message]:
        """The parent message then its replies, as ``conversations.replies`` lists them."""
        with self._lock:
            return copy.deepcopy(
                [
                    m
                    for m in self._messages
                    if m.channel == channel and (m.ts == ts or m.thread_ts == ts)
                ]
            )

    @property
    def ephemerals(self) -> list[Ephemeral]:
        with self._lock:
            return copy.deepcopy(self._ephemerals)

    @property
    def responses(self) -> list[ResponseUrlPost]:
        with self._lock:
            return copy.deepcopy(self._responses)

    @property
    def files(self) -> list[UploadedFile]:
        with self._lock:
            return copy.deepcopy(list(self._files.values()))

    def wait_for(self, predicate: Callable[[], T], timeout: float = 10.0) -> T:
        """Poll ``predicate`` until it returns something truthy, and return that."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        name = getattr(predicate, "__qualname__", repr(predicate))
        with self._lock:
            recent = [
                f"{c.method} -> {c.http_status} {c.response.get('error') or 'ok'}"
                for c in self._calls[-10:]
            ]
        raise AssertionError(
            f"wait_for({name}) still {value!r} after {timeout}s; "
            f"last calls: {recent or 'none'}; messages: {len(self._messages)}"
        )

    # ----------------------------------------------------------------- HTTP entry

    def _handle_http(
        self, verb: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        parsed = urllib.parse.urlsplit(raw_path)
        path = parsed.path
        lowered = {k.lower(): v for k, v in headers.items()}
        if path.startswith("/api/"):
            return self._handle_api(path[len("/api/") :], parsed.query, lowered, body)
        if path.startswith("/upload/v1/") and verb == "POST":
            return self._handle_upload(path.rsplit("/", 1)[1], lowered, body)
        if path.startswith("/response/") and verb == "POST":
            return self._handle_response_url(path.rsplit("/", 1)[1], lowered, body)
        return 404, {"Content-Type": "text/plain"}, b"not_found"

    def _handle_api(
        self, method: str, query: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        received = time.monotonic()
        args: dict[str, Any] = {}
        status, extra_headers = 200, {}
        token: str | None = None
        try:
            args.update(_first_values(urllib.parse.parse_qs(query, keep_blank_values=True)))
            args.update(_parse_body(headers.get("content-type", ""), body))
            for key in _JSON_ARGS:
                if isinstance(args.get(key), str):
                    try:
                        args[key] = json.loads(args[key])
                    except ValueError:
                        pass  # left as a string; the validators then report the bad format
            token = self._token_of(headers, args)
            with self._lock:
                response = self._call(method, token, args)
        except _ApiError as exc:
            status, extra_headers = exc.status, exc.headers
            response = {"ok": False, "error": exc.error, **exc.extra}
        with self._lock:
            self._calls.append(
                RecordedCall(
                    method=method,
                    args=copy.deepcopy(args),
                    token=token,
                    http_status=status,
                    time=received,
                    response=copy.deepcopy(response),
                )
            )
        out_headers = {"Content-Type": "application/json; charset=utf-8", **extra_headers}
        return status, out_headers, json.dumps(response).encode("utf-8")

    @staticmethod
    def _token_of(headers: dict[str, str], args: dict[str, Any]) -> str | None:
        authorization = headers.get("authorization", "")
        if authorization.lower().startswith("bearer "):
            return authorization[len("bearer ") :].strip() or None
        token = args.pop("token", None)
        return str(token) if token else None

    def _take_failure(self, method: str) -> _Failure | None:
        queue = self._failures.get(method)
        if not queue:
            return None
        return queue.popleft()

    def _call(self, method: str, token: str | None, args: dict[str, Any]) -> dict[str, Any]:
        handler = self._methods.get(method)
        if handler is None:
            raise _ApiError("unknown_method", extra={"req_method": method})
        failure = self._take_failure(method)
        if failure is not None:
            headers = {}
            if failure.retry_after is not None:
                headers["Retry-After"] = str(failure.retry_after)
            raise _ApiError(failure.error, status=failure.status, headers=headers)
        if token is None:
            raise _ApiError("not_authed")
        # Socket Mode's connection call takes the app-level token, and only that one.
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        if not secrets.compare_digest(token, expected):
            if token in (self.app_token, self.bot_token):
                raise _ApiError("not_allowed_token_type")
            raise _ApiError("invalid_auth")
        return {"ok": True, **handler(self, args)}

    # ----------------------------------------------------------------- helpers

    def _next_ts(self) -> str:
        # Real-clock based like Slack's, strictly increasing so every ts is a unique key.
        now_us = int(time.time() * 1_000_000)
        self._last_ts_us = max(now_us, self._last_ts_us + 1)
        return f"{self._last_ts_us // 1_000_000}.{self._last_ts_us % 1_000_000:06d}"

    def _resolve_channel(self, raw: object) -> _Channel | None:
        """The target channel, or None when no channel was seeded (then anything goes)."""
        name = str(raw or "").strip()
        if not name:
            raise _ApiError("channel_not_found")
        if name in self._channels:
            return self._channels[name]
        if name in self._users:
            # Posting to a user ID lands in the bot's DM with that user, as on Slack.
            return self._dm_channel(name)
        if name.startswith("D") and ("U" + name[1:]) in self._users:
            return self._dm_channel("U" + name[1:])  # the DM's own id, before anything was posted in it
        bare = name.lstrip("#")
        for channel in self._channels.values():
            if channel.name == bare and not channel.is_im:
                return channel
        if not any(not c.is_im for c in self._channels.values()):
            return None
        raise _ApiError("channel_not_found")

    def _dm_channel(self, user_id: str) -> _Channel:
        dm_id = "D" + user_id[1:]
        channel = self._channels.get(dm_id)
        if channel is None:
            channel = _Channel(
                id=dm_id, name=dm_id, members=[user_id], bot_is_member=True, is_im=True
            )
            self._channels[dm_id] = channel
        return channel

    def _channel_id(self, raw: object) -> str:
        channel = self._resolve_channel(raw)
        return channel.id if channel is not None else str(raw).strip()

    def _writable_channel_id(self, raw: object) -> str:
        channel = self._resolve_channel(raw)
        if channel is None:
            return str(raw).strip()
        if not channel.bot_is_member:
            raise _ApiError("not_in_channel")
        return channel.id

    def _find_message(self, channel: str, ts: object) -> Message:
        for message in self._messages:
            if message.channel == channel and message.ts == str(ts):
                return message
        raise _ApiError("message_not_found")

    @staticmethod
    def _content(args: dict[str, Any], *, require: bool = True) -> tuple[str, list[Any] | None]:
        text = args.get("text")
        text = "" if text is None else str(text)
        blocks = args.get("blocks")
        if blocks in ("", None):
            blocks = None
        if require and not text and blocks is None and not args.get("attachments"):
            raise _ApiError("no_text")
        if len(text) > MAX_TEXT_LENGTH:
            raise _ApiError("msg_too_long")
        if blocks is not None:
            if not isinstance(blocks, list):
                raise _ApiError("invalid_blocks_format")
            errors = block_kit_errors(blocks)
            if errors:
                raise _ApiError(
                    "invalid_blocks",
                    extra={"errors": errors, "response_metadata": {"messages": errors}},
                )
        return text, blocks

    def _message_payload(self, message: Message) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "type": "message",
            "user": message.user,
            "bot_id": self.bot_id,
            "team": self.team_id,
            "text": message.text,
            "ts": message.ts,
        }
        if message.blocks is not None:
            payload["blocks"] = message.blocks
        if message.thread_ts is not None:
            payload["thread_ts"] = message.thread_ts
        if message.metadata is not None:
            payload["metadata"] = message.metadata
        return payload

    def _rate_limit(self, channel: str) -> None:
        rate = self._post_rate
        if rate is None or rate <= 0:
            return
        now = time.monotonic()
        bucket = self._buckets.get(channel)
        if bucket is None:
            bucket = self._buckets[channel] = _Bucket(tokens=float(self.burst), updated=now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return
        wait = (1.0 - bucket.tokens) / rate
        raise _ApiError(
            "ratelimited", status=429, headers={"Retry-After": str(max(1, math.ceil(wait)))}
        )

    def _user_payload(self, user: _User) -> dict[str, Any]:
        profile: dict[str, Any] = {
            "real_name": user.real_name,
            "real_name_normalized": user.real_name,
            "display_name": user.name,
            "display_name_normalized": user.name,
        }
        if user.email is not None:
            profile["email"] = user.email
        if user.is_bot:
            profile["bot_id"] = self.bot_id if user.id == self.bot_user_id else "B" + user.id[1:]
        return {
            "id": user.id,
            "team_id": user.team_id,
            "name": user.name,
            "real_name": user.real_name,
            "deleted": user.deleted,
            "is_bot": user.is_bot,
            "is_app_user": False,
            "is_admin": False,
            "is_owner": False,
            "is_restricted": user.is_restricted,
            "is_ultra_restricted": user.is_ultra_restricted,
            "tz": "UTC",
            "profile": profile,
        }

    def _channel_payload(self, channel: _Channel) -> dict[str, Any]:
        if channel.is_im:
            return {"id": channel.id, "is_im": True, "user": channel.members[0], "is_open": True}
        return {
            "id": channel.id,
            "name": channel.name,
            "is_channel": True,
            "is_private": False,
            "is_archived": False,
            "is_member": channel.bot_is_member,
            "num_members": len(channel.members),
            "is_shared": channel.ext_shared,
            "is_ext_shared": channel.ext_shared,
        }

    # ----------------------------------------------------------------- API methods

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": self.url + "/",
            "team": self.team_name,
            "user": self._users[self.bot_user_id].name,
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        if not self.socket_mode_url:
            raise _ApiError("internal_error")
        return {"url": self.socket_mode_url}

    def _chat_post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        # The bucket is keyed by channel ID (a name or a user ID resolve to it) and charged
        # before content validation, because Slack meters requests, not successful posts.
        channel = self._channel_id(args.get("channel"))
        self._rate_limit(channel)
        channel = self._writable_channel_id(channel)
        text, blocks = self._content(args)
        thread_ts = _opt_str(args.get("thread_ts"))
        metadata = args.get("metadata")
        message = Message(
            channel=channel,
            ts=self._next_ts(),
            text=text,
            blocks=blocks,
            user=self.bot_user_id,
            thread_ts=thread_ts,
            reply_broadcast=thread_ts is not None and _truthy(args.get("reply_broadcast")),
            metadata=metadata if isinstance(metadata, dict) else None,
        )
        self._messages.append(message)
        return {"channel": channel, "ts": message.ts, "message": self._message_payload(message)}

    def _chat_post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._writable_channel_id(args.get("channel"))
        user = _opt_str(args.get("user"))
        if user is None or (len(self._users) > 1 and user not in self._users):
            raise _ApiError("user_not_found")
        text, blocks = self._content(args)
        ts = self._next_ts()
        self._ephemerals.append(
            Ephemeral(
                channel=channel,
                user=user,
                text=text,
                blocks=blocks,
                thread_ts=_opt_str(args.get("thread_ts")),
                message_ts=ts,
            )
        )
        return {"message_ts": ts}

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_id(args.get("channel"))
        message = self._find_message(channel, args.get("ts"))
        text, blocks = self._content(args)
        message.text = text
        if "blocks" in args:
            message.blocks = blocks
        message.edited = True
        return {
            "channel": channel,
            "ts": message.ts,
            "text": message.text,
            "message": self._message_payload(message),
        }

    def _chat_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_id(args.get("channel"))
        message = self._find_message(channel, args.get("ts"))
        self._messages.remove(message)
        return {"channel": channel, "ts": message.ts}

    def _chat_get_permalink(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_id(args.get("channel"))
        message = self._find_message(channel, args.get("message_ts"))
        permalink = f"{self.url}/archives/{channel}/p{message.ts.replace('.', '')}"
        if message.is_reply:
            permalink += f"?thread_ts={message.thread_ts}&cid={channel}"
        return {"channel": channel, "permalink": permalink}

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self._users.get(str(args.get("user") or ""))
        if user is None:
            raise _ApiError("user_not_found")
        return {"user": self._user_payload(user)}

    def _users_lookup_by_email(self, args: dict[str, Any]) -> dict[str, Any]:
        email = str(args.get("email") or "").lower()
        for user in self._users.values():
            if user.email is not None and user.email.lower() == email:
                return {"user": self._user_payload(user)}
        raise _ApiError("users_not_found")

    def _usergroups_users_list(self, args: dict[str, Any]) -> dict[str, Any]:
        group = self._usergroups.get(str(args.get("usergroup") or ""))
        if group is None:
            raise _ApiError("no_such_subteam")
        return {"users": list(group[1])}

    def _usergroups_list(self, args: dict[str, Any]) -> dict[str, Any]:
        include_users = _truthy(args.get("include_users"))
        groups = []
        for group_id, (handle, users) in self._usergroups.items():
            group: dict[str, Any] = {
                "id": group_id,
                "team_id": self.team_id,
                "handle": handle,
                "name": handle,
                "user_count": len(users),
            }
            if include_users:
                group["users"] = list(users)
            groups.append(group)
        return {"usergroups": groups}

    def _conversations_info(self, args: dict[str, Any]) -> dict[str, Any]:
        raw = str(args.get("channel") or "")
        channel = self._resolve_channel(raw)
        if channel is None:
            return {"channel": {"id": raw, "name": raw.lstrip("#").lower(), "is_member": True}}
        return {"channel": self._channel_payload(channel)}

    def _conversations_members(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve_channel(args.get("channel"))
        members = [] if channel is None else list(channel.members)
        return {"members": members, "response_metadata": {"next_cursor": ""}}

    def _conversations_join(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve_channel(args.get("channel"))
        if channel is None:
            return {"channel": {"id": str(args.get("channel")), "is_member": True}}
        channel.bot_is_member = True
        return {"channel": self._channel_payload(channel)}

    def _conversations_open(self, args: dict[str, Any]) -> dict[str, Any]:
        users = [u for u in str(args.get("users") or "").split(",") if u.strip()]
        if len(users) != 1:
            raise _ApiError("invalid_arguments" if not users else "not_supported_in_sandbox")
        user_id = users[0].strip()
        if user_id not in self._users:
            raise _ApiError("user_not_found")
        return {"channel": {"id": self._dm_channel(user_id).id}}

    def _conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_id(args.get("channel"))
        limit = int(args.get("limit") or 100)
        top_level = [
            self._message_payload(m)
            for m in reversed(self._messages)
            if m.channel == channel and (not m.is_reply or m.reply_broadcast)
        ]
        return {
            "messages": top_level[:limit],
            "has_more": len(top_level) > limit,
            "response_metadata": {"next_cursor": ""},
        }

    def _conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_id(args.get("channel"))
        ts = str(args.get("ts") or "")
        self._find_message(channel, ts)
        thread = [
            self._message_payload(m)
            for m in self._messages
            if m.channel == channel and (m.ts == ts or m.thread_ts == ts)
        ]
        if thread and len(thread) > 1:
            thread[0]["reply_count"] = len(thread) - 1
        return {"messages": thread, "has_more": False, "response_metadata": {"next_cursor": ""}}

    def _files_get_upload_url_external(self, args: dict[str, Any]) -> dict[str, Any]:
        filename = _opt_str(args.get("filename"))
        try:
            length = int(args.get("length"))  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise _ApiError("invalid_arguments") from exc
        if filename is None or length < 0:
            raise _ApiError("invalid_arguments")
        self._file_seq += 1
        file_id = f"F{self._file_seq:08d}"
        upload_token = secrets.token_urlsafe(12)
        self._files[file_id] = UploadedFile(
            id=file_id,
            filename=filename,
            length=length,
            alt_txt=_opt_str(args.get("alt_txt")),
            snippet_type=_opt_str(args.get("snippet_type")),
        )
        self._upload_urls[upload_token] = file_id
        return {"upload_url": f"{self.url}/upload/v1/{upload_token}", "file_id": file_id}

    def _files_complete_upload_external(self, args: dict[str, Any]) -> dict[str, Any]:
        items = args.get("files")
        if not isinstance(items, list) or not items:
            raise _ApiError("invalid_arguments")
        channel_arg = args.get("channel_id") or (
            str(args["channels"]).split(",")[0] if args.get("channels") else None
        )
        channel = self._writable_channel_id(channel_arg) if channel_arg else None
        targets: list[tuple[UploadedFile, dict[str, Any]]] = []
        for item in items:
            if not isinstance(item, dict) or not item.get("id"):
                raise _ApiError("invalid_arguments")
            uploaded = self._files.get(str(item["id"]))
            if uploaded is None or not uploaded.uploaded:
                # Slack cannot tell "never issued" from "issued but no bytes arrived".
                raise _ApiError("file_not_found")
            if uploaded.completed:
                raise _ApiError("file_already_completed")
            targets.append((uploaded, item))
        result = []
        for uploaded, item in targets:
            uploaded.title = _opt_str(item.get("title")) or uploaded.filename
            uploaded.completed = True
            uploaded.channel = channel
            uploaded.thread_ts = _opt_str(args.get("thread_ts"))
            uploaded.initial_comment = _opt_str(args.get("initial_comment"))
            result.append(
                {
                    "id": uploaded.id,
                    "title": uploaded.title,
                    "name": uploaded.filename,
                    "size": len(uploaded.content),
                    "permalink": f"{self.url}/files/{self.bot_user_id}/{uploaded.id}",
                }
            )
        return {"files": result}

    _methods: dict[str, Callable[[FakeSlackServer, dict[str, Any]], dict[str, Any]]] = {
        "auth.test": _auth_test,
        "apps.connections.open": _apps_connections_open,
        "chat.postMessage": _chat_post_message,
        "chat.postEphemeral": _chat_post_ephemeral,
        "chat.update": _chat_update,
        "chat.delete": _chat_delete,
        "chat.getPermalink": _chat_get_permalink,
        "users.info": _users_info,
        "users.lookupByEmail": _users_lookup_by_email,
        "usergroups.users.list": _usergroups_users_list,
        "usergroups.list": _usergroups_list,
        "conversations.info": _conversations_info,
        "conversations.members": _conversations_members,
        "conversations.join": _conversations_join,
        "conversations.open": _conversations_open,
        "conversations.history": _conversations_history,
        "conversations.replies": _conversations_replies,
        "files.getUploadURLExternal": _files_get_upload_url_external,
        "files.completeUploadExternal": _files_complete_upload_external,
    }

    # ----------------------------------------------------------------- non-API endpoints

    def _injected_plain_failure(
        self, pseudo_method: str
    ) -> tuple[int, dict[str, str], bytes] | None:
        failure = self._take_failure(pseudo_method)
        if failure is None:
            return None
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if failure.retry_after is not None:
            headers["Retry-After"] = str(failure.retry_after)
        return failure.status, headers, failure.error.encode("utf-8")

    def _handle_upload(
        self, upload_token: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        plain = {"Content-Type": "text/plain; charset=utf-8"}
        with self._lock:
            injected = self._injected_plain_failure(UPLOAD_PSEUDO_METHOD)
            if injected is not None:
                return injected
            file_id = self._upload_urls.get(upload_token)
            if file_id is None or file_id not in self._files:
                return 404, plain, b"not_found"
            content = body
            # slack_sdk posts the raw bytes (urllib even labels them form-encoded); other
            # clients post multipart with a "file" field, so only multipart is unwrapped.
            content_type = headers.get("content-type", "")
            if content_type.lower().startswith("multipart/form-data"):
                fields = _parse_multipart(content_type, body)
                chosen = fields.get("file")
                if not isinstance(chosen, bytes):
                    chosen = next((v for v in fields.values() if isinstance(v, bytes)), None)
                if chosen is None:
                    return 400, plain, b"invalid_multipart"
                content = chosen
            uploaded = self._files[file_id]
            uploaded.content = content
            uploaded.uploaded = True
            return 200, plain, f"OK - {len(content)}".encode()

    def _handle_response_url(
        self, key: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            hook = self._response_urls.get(key)
            url = hook.url if hook is not None else f"{self.url}/response/{key}"
            try:
                payload = _parse_body(headers.get("content-type", ""), body)
            except _ApiError:
                payload = {}
            if isinstance(payload.get("payload"), str):  # legacy form-encoded `payload=` style
                try:
                    payload = json.loads(payload["payload"])
                except ValueError:
                    payload = {}
            if isinstance(payload.get("blocks"), str):
                try:
                    payload["blocks"] = json.loads(payload["blocks"])
                except ValueError:
                    pass
            status, answer = self._apply_response(hook, payload)
            self._responses.append(
                ResponseUrlPost(
                    url=url, body=copy.deepcopy(payload), http_status=status, answer=answer
                )
            )
            return status, {"Content-Type": "text/html; charset=utf-8"}, answer.encode("utf-8")

    def _apply_response(
        self, hook: _ResponseUrl | None, payload: dict[str, Any]
    ) -> tuple[int, str]:
        # Response URLs answer like incoming webhooks: plain-text bodies, 4xx on errors.
        injected = self._injected_plain_failure(RESPONSE_URL_PSEUDO_METHOD)
        if injected is not None:
            return injected[0], injected[2].decode("utf-8")
        if hook is None:
            return 404, "no_service"
        if time.monotonic() - hook.created > RESPONSE_URL_TTL_SECONDS:
            return 404, "expired_url"
        if hook.uses >= RESPONSE_URL_MAX_USES:
            return 404, "used_url"
        if not payload:
            return 400, "invalid_payload"
        delete = _truthy(payload.get("delete_original"))
        try:
            text, blocks = self._content(payload, require=not delete)
        except _ApiError as exc:
            return 400, exc.error
        hook.uses += 1
        if hook.channel is None:
            return 200, "ok"
        thread_ts = _opt_str(payload.get("thread_ts"))
        original = None
        if hook.message_ts is not None:
            original = next(
                (
                    m
                    for m in self._messages
                    if m.channel == hook.channel and m.ts == hook.message_ts
                ),
                None,
            )
        if delete:
            if original is not None:
                self._messages.remove(original)
        elif _truthy(payload.get("replace_original")) and original is not None:
            original.text = text
            original.blocks = blocks
            original.edited = True
        elif payload.get("response_type") == "in_channel":
            self._messages.append(
                Message(
                    channel=hook.channel,
                    ts=self._next_ts(),
                    text=text,
                    blocks=blocks,
                    user=self.bot_user_id,
                    thread_ts=thread_ts,
                )
            )
        else:
            self._ephemerals.append(
                Ephemeral(
                    channel=hook.channel,
                    user=hook.user,
                    text=text,
                    blocks=blocks,
                    thread_ts=thread_ts,
                    message_ts=self._next_ts(),
                )
            )
        return 200, "ok"
