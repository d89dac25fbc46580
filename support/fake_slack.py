"""A stand-in for the Slack Web API and Socket Mode: a real HTTP server on 127.0.0.1:0.

It records every call (method, arguments, token), keeps the messages it was asked to post
so ``chat.update`` edits them, answers ``ok: false`` where Slack would (bad token,
unknown channel or message or user group, Block Kit limits: 3000 characters per text object, 50
blocks per message, 100 per modal), can be told to fail a method (429 with
``Retry-After``, 5xx, or an error), and serves a Socket Mode WebSocket whose URL
``apps.connections.open`` hands out. Response URLs point back at it too.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web

TEXT_LIMIT = 3000
_ANY = {"type": "plain_text", "text": "-"}  # stands in for an optional text object that is absent
FIELD_LIMIT = 2000
MESSAGE_TEXT_LIMIT = 40000


@dataclass
class Call:
    method: str
    args: dict
    token: str | None
    at: float = field(default_factory=time.monotonic)
    status: int = 200
    response: dict = field(default_factory=dict)


class FakeSlack:
    """The far side of the wire for the Slack desk's tests."""

    def __init__(self, *, bot_token: str = "xoxb-test-token", app_token: str = "xapp-test-token",
                 team_id: str = "T0TEST", bot_user_id: str = "U0JITBOT", app_id: str = "A0JITGATE") -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.team_id = team_id
        self.app_id = app_id
        self.bot_user_id = bot_user_id
        self.calls: list[Call] = []
        self.responses: list[dict] = []            # posts to response URLs
        self.messages: dict[tuple[str, str], dict] = {}
        self.channels: dict[str, str] = {"#approvals": "C0APPROVALS", "#security": "C0SECURITY", "#prod-access": "C0PRODACCESS"}
        self.users: dict[str, dict] = {}           # users.info answers
        self.usergroups: dict[str, list[str]] = {}  # usergroups.users.list answers: user group id → user ids
        self._failures: dict[str, list[tuple[int, str | None, float | None]]] = {}
        self._ts = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.port = 0
        # Socket Mode
        self.sockets: list[web.WebSocketResponse] = []
        self.socket_acks: list[dict] = []
        self._socket_open = asyncio.Event()

    # ------------------------------------------------------------------ lifetime
    async def start(self) -> "FakeSlack":
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/respond/{hook}", self._respond)
        app.router.add_get("/link", self._socket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        for ws in list(self.sockets):
            await ws.close()
        if self._runner:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def response_url(self, hook: str = "hook") -> str:
        return f"http://127.0.0.1:{self.port}/respond/{hook}"

    # ------------------------------------------------------------------ test controls
    def fail(self, method: str, times: int = 1, *, status: int = 429, retry_after: float | None = 1,
             error: str | None = None) -> None:
        """The next ``times`` calls of ``method`` fail: HTTP ``status`` (429 with Retry-After)
        or, with ``error``, HTTP 200 and ``ok: false``."""
        self._failures.setdefault(method, []).extend([(status, error, retry_after)] * times)

    def of(self, method: str, ok: bool | None = True) -> list[Call]:
        """Recorded calls of ``method`` (by default only the successful ones)."""
        return [c for c in self.calls if c.method == method and (ok is None or c.response.get("ok") is ok)]

    def thread(self, channel: str, ts: str) -> list[str]:
        """Texts posted in the thread under message ``ts``."""
        return [c.args.get("text", "") for c in self.of("chat.postMessage")
                if c.response.get("channel") == channel and str(c.args.get("thread_ts")) == ts]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
        """Poll ``predicate`` until it returns something truthy (or fail after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; calls: {[c.method for c in self.calls]}")
            await asyncio.sleep(0.01)

    # ------------------------------------------------------------------ Web API
    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = dict(request.query)
        raw = await request.read()
        if raw:
            if request.content_type == "application/json":
                args.update(json.loads(raw))
            else:
                args.update(dict(parse_qsl(raw.decode())))
        for k in ("blocks", "view"):
            if isinstance(args.get(k), str):
                args[k] = json.loads(args[k])
        auth = request.headers.get("Authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else args.get("token")
        call = Call(method, args, token)
        self.calls.append(call)

        queue = self._failures.get(method)
        if queue:
            status, error, retry_after = queue.pop(0)
            if error:
                call.response = {"ok": False, "error": error}
                return web.json_response(call.response)
            call.status = status
            call.response = {"ok": False, "error": "ratelimited" if status == 429 else "internal_error"}
            headers = {"Retry-After": str(int(retry_after))} if status == 429 and retry_after is not None else {}
            return web.json_response(call.response, status=status, headers=headers)

        call.response = self._answer(method, args, token)
        return web.json_response(call.response)

    def _answer(self, method: str, args: dict, token: str | None) -> dict:
        if method == "apps.connections.open":
            if token != self.app_token:
                return {"ok": False, "error": "invalid_auth"}
            return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/link"}
        if token != self.bot_token:
            return {"ok": False, "error": "invalid_auth"}
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return {"ok": False, "error": "unknown_method"}
        return handler(args)

    def _m_auth_test(self, args: dict) -> dict:
        return {"ok": True, "url": "https://test.slack.com/", "team": "Test", "user": "jitgate", "team_id": self.team_id,
                "user_id": self.bot_user_id, "bot_id": "B0JITBOT", "is_enterprise_install": False}

    def _channel(self, name: str | None) -> str | None:
        if not name:
            return None
        if name in self.channels:
            return self.channels[name]
        if name.startswith("#"):
            return None
        if name[0] in "UW":
            return "D" + name[1:]
        if name[0] in "CGD":
            return name
        return None

    def _m_chat_postMessage(self, args: dict) -> dict:  # noqa: N802 - the Slack method name
        channel = self._channel(args.get("channel"))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        problem = self._message_problem(args)
        if problem:
            return {"ok": False, "error": problem}
        thread = args.get("thread_ts")
        if thread and (channel, str(thread)) not in self.messages:
            return {"ok": False, "error": "thread_not_found"}
        ts = f"{1700000000 + next(self._ts)}.000100"
        message = {"text": args.get("text"), "blocks": args.get("blocks") or [], "ts": ts, "thread_ts": thread}
        self.messages[(channel, ts)] = message
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _m_chat_update(self, args: dict) -> dict:
        channel, ts = args.get("channel"), str(args.get("ts"))
        if (channel, ts) not in self.messages:
            return {"ok": False, "error": "message_not_found"}
        problem = self._message_problem(args)
        if problem:
            return {"ok": False, "error": problem}
        self.messages[(channel, ts)].update(text=args.get("text"), blocks=args.get("blocks") or [])
        return {"ok": True, "channel": channel, "ts": ts}

    def _m_chat_postEphemeral(self, args: dict) -> dict:  # noqa: N802 - the Slack method name
        if self._channel(args.get("channel")) is None or not args.get("user"):
            return {"ok": False, "error": "channel_not_found"}
        problem = self._message_problem(args)
        if problem:
            return {"ok": False, "error": problem}
        return {"ok": True, "message_ts": f"{1700000000 + next(self._ts)}.000200"}

    def _m_views_open(self, args: dict) -> dict:
        if not args.get("trigger_id"):
            return {"ok": False, "error": "invalid_trigger_id"}
        view = args.get("view") or {}
        problem = _view_problem(view)
        if problem:
            return {"ok": False, "error": problem}
        return {"ok": True, "view": {**view, "id": f"V{next(self._ts):08d}"}}

    def _m_users_info(self, args: dict) -> dict:
        user = self.users.get(args.get("user", ""))
        return {"ok": True, "user": user} if user else {"ok": False, "error": "user_not_found"}

    def _m_usergroups_users_list(self, args: dict) -> dict:
        users = self.usergroups.get(args.get("usergroup", ""))
        return {"ok": True, "users": list(users)} if users is not None else {"ok": False, "error": "no_such_subteam"}

    def _message_problem(self, args: dict) -> str | None:
        text = args.get("text") or ""
        if len(text) > MESSAGE_TEXT_LIMIT:
            return "msg_too_long"
        blocks = args.get("blocks")
        if blocks is None:
            return None if text else "no_text"
        if len(blocks) > 50:
            return "invalid_blocks"
        return _blocks_problem(blocks)

    # ------------------------------------------------------------------ response URLs
    async def _respond(self, request: web.Request) -> web.Response:
        body = await request.json()
        body["_hook"] = request.match_info["hook"]
        self.responses.append(body)
        return web.json_response({"ok": True})

    # ------------------------------------------------------------------ Socket Mode
    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        await ws.send_str(json.dumps({"type": "hello", "num_connections": 1,
                                      "debug_info": {"host": "fake", "approximate_connection_time": 3600},
                                      "connection_info": {"app_id": self.app_id}}))
        self._socket_open.set()
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                self.socket_acks.append(json.loads(msg.data))
        self.sockets.remove(ws)
        return ws

    async def socket_connected(self, timeout: float = 15.0) -> None:
        await asyncio.wait_for(self._socket_open.wait(), timeout)

    async def socket_send(self, envelope: dict) -> None:
        """Push one envelope (``interactive``, ``slash_commands``, …) to the connected app."""
        await self.sockets[-1].send_str(json.dumps(envelope))


def _text_problem(obj: Any, limit: int = TEXT_LIMIT, *, plain: bool = False) -> str | None:
    """A text object: mrkdwn or plain_text (only plain_text where Slack says so), 1..limit characters."""
    kinds = ("plain_text",) if plain else ("mrkdwn", "plain_text")
    if not isinstance(obj, dict) or obj.get("type") not in kinds:
        return "invalid_blocks"
    if not isinstance(obj.get("text"), str) or not obj["text"] or len(obj["text"]) > limit:
        return "invalid_blocks"
    return None


def _confirm_problem(confirm: Any) -> str | None:
    """A confirmation dialog: plain_text title ≤ 100, text ≤ 300, confirm and deny ≤ 30."""
    if confirm is None:
        return None
    if not isinstance(confirm, dict) or _text_problem(confirm.get("title"), 100, plain=True) \
            or _text_problem(confirm.get("text"), 300) or _text_problem(confirm.get("confirm"), 30, plain=True) \
            or _text_problem(confirm.get("deny"), 30, plain=True):
        return "invalid_blocks"
    return None


def _element_problem(el: dict) -> str | None:
    kind = el.get("type")
    if len(el.get("action_id", "")) > 255:
        return "invalid_blocks"
    if _confirm_problem(el.get("confirm")):
        return "invalid_blocks"
    if kind == "button":
        if _text_problem(el.get("text"), 75, plain=True) or len(el.get("value", "")) > 2000 \
                or len(el.get("url", "")) > 3000 or el.get("style") not in (None, "primary", "danger"):
            return "invalid_blocks"
    elif kind == "static_select":
        options = el.get("options") or []
        if not 1 <= len(options) <= 100 or _text_problem(el.get("placeholder"), 150, plain=True):
            return "invalid_blocks"
        for o in options:
            if _text_problem(o.get("text"), 75, plain=True) or not 1 <= len(o.get("value", "")) <= 150:
                return "invalid_blocks"
    elif kind == "plain_text_input":
        if not 0 < el.get("max_length", 3000) <= 3000 or _text_problem(el.get("placeholder", _ANY), 150, plain=True):
            return "invalid_blocks"
    else:
        return "invalid_blocks"
    return None


def _blocks_problem(blocks: list) -> str | None:
    block_ids: set[str] = set()
    for b in blocks:
        kind = b.get("type")
        if len(b.get("block_id", "")) > 255:
            return "invalid_blocks"
        if "block_id" in b:  # Slack refuses a message or view with a block_id twice
            if b["block_id"] in block_ids:
                return "invalid_blocks"
            block_ids.add(b["block_id"])
        if kind == "header":
            if _text_problem(b.get("text"), 150, plain=True):
                return "invalid_blocks"
        elif kind == "section":
            if "text" not in b and "fields" not in b:
                return "invalid_blocks"
            if "text" in b and _text_problem(b["text"]):
                return "invalid_blocks"
            fields = b.get("fields") or []
            if len(fields) > 10 or any(_text_problem(f, FIELD_LIMIT) for f in fields):
                return "invalid_blocks"
        elif kind == "context":
            els = b.get("elements") or []
            if not 1 <= len(els) <= 10 or any(_text_problem(e) for e in els):
                return "invalid_blocks"
        elif kind == "actions":
            els = b.get("elements") or []
            if not 1 <= len(els) <= 25 or any(_element_problem(e) for e in els):
                return "invalid_blocks"
            action_ids = [e.get("action_id") for e in els if e.get("action_id")]
            if len(action_ids) != len(set(action_ids)):
                return "invalid_blocks"
        elif kind == "input":
            if _text_problem(b.get("label"), 2000, plain=True) or _element_problem(b.get("element") or {}):
                return "invalid_blocks"
        elif kind == "divider":
            pass
        else:
            return "invalid_blocks"
    return None


def _view_problem(view: dict) -> str | None:
    if view.get("type") != "modal" or _text_problem(view.get("title"), 24, plain=True):
        return "invalid_arguments"
    if any(k in view and _text_problem(view[k], 24, plain=True) for k in ("submit", "close")):
        return "invalid_arguments"
    if len(view.get("callback_id", "")) > 255 or len(view.get("external_id", "")) > 255:
        return "invalid_arguments"
    if len(view.get("private_metadata", "")) > 3000 or len(view.get("blocks") or []) > 100:
        return "invalid_arguments"
    return _blocks_problem(view.get("blocks") or [])
