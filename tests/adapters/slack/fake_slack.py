"""A loopback fake of the Slack Web API, a Socket Mode websocket and a response_url sink (aiohttp).

Importable (`FakeSlack`, started inside a test's event loop) and runnable on its own, for harnesses that run
the real bot process against it:

    python -m tests.adapters.slack.fake_slack --port 0 --record calls.jsonl

prints the bound port on its first stdout line, then serves until SIGINT/SIGTERM. Point the bot at it with
`SLACK_API_URL=http://127.0.0.1:PORT/api/`. Control routes for such harnesses: `GET /_state` (messages, calls,
responses, acks, violations), `POST /_control/fail` (a `Failure` as JSON), `POST /_control/error`
(`{"channel"|"user": id, "error": code}`), `POST /_control/inject` (a Socket Mode envelope).

It speaks the wire protocol slack_sdk uses (JSON or form bodies, `Authorization: Bearer`, `{"ok": false,
"error"}` with HTTP 200, HTTP 429 with `Retry-After`) and checks Slack's message limits on every message it
receives; a violation is answered like Slack does (`invalid_blocks`, `msg_blocks_too_long`) and recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

BOT_TOKEN = "xoxb-fake-bot-token"
APP_TOKEN = "xapp-fake-app-token"
TEAM_ID = "T0FAKE"
BOT_USER = "UBOT"
BOT_ID = "BFAKE"

_TS = re.compile(r"\d{10}\.\d{6}")


@dataclass
class Failure:
    """A scripted failure for the next `count` calls of `method` (optionally only for one channel/user)."""

    method: str
    status: int = 429  # HTTP status; 200 with `error` gives an ok:false answer
    error: str = "ratelimited"
    retry_after: int | None = 1
    count: int = 1
    channel: str | None = None


@dataclass
class FakeUser:
    id: str
    name: str
    is_admin: bool = False
    is_owner: bool = False
    is_bot: bool = False
    deleted: bool = False


@dataclass
class Posted:
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None = None
    metadata: dict[str, Any] | None = None
    user: str = BOT_USER


@dataclass
class FakeSlack:
    bot_token: str = BOT_TOKEN
    app_token: str = APP_TOKEN
    team_id: str = TEAM_ID
    record: Path | None = None
    users: dict[str, FakeUser] = field(default_factory=dict)
    messages: list[Posted] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)  # bodies POSTed to response_url
    acks: list[dict[str, Any]] = field(default_factory=list)  # Socket Mode acks
    violations: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    channel_errors: dict[str, str] = field(default_factory=dict)  # channel id -> error code
    user_errors: dict[str, str] = field(default_factory=dict)  # user id -> error for conversations.open
    page_size: int = 1000  # history/replies pages are at most this long, to exercise cursors
    port: int = 0

    def __post_init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self._sockets: list[web.WebSocketResponse] = []
        self._changed = asyncio.Condition() if _has_loop() else None
        self._last_us = 0
        self._hello: dict[str, Any] = {
            "type": "hello",
            "num_connections": 1,
            "debug_info": {"host": "fake"},
            "connection_info": {"app_id": "AFAKE"},
        }
        self.users.setdefault("UADMIN", FakeUser("UADMIN", "ada", is_admin=True))
        self.users.setdefault("UOWNER", FakeUser("UOWNER", "olga", is_owner=True))
        self.users.setdefault("UMEMBER", FakeUser("UMEMBER", "mia"))
        self.users.setdefault(BOT_USER, FakeUser(BOT_USER, "paperboy", is_bot=True))

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    def response_url(self, name: str = "r1") -> str:
        return f"{self.base_url}/response/{name}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)
        app.router.add_post("/response/{name}", self._response)
        app.router.add_get("/link", self._link)
        app.router.add_get("/_state", self._state)
        app.router.add_post("/_control/fail", self._control_fail)
        app.router.add_post("/_control/error", self._control_error)
        app.router.add_post("/_control/inject", self._control_inject)
        return app

    async def start(self, port: int = 0) -> FakeSlack:
        if self._changed is None:
            self._changed = asyncio.Condition()
        self._runner = web.AppRunner(self.app(), handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeSlack:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ test helpers

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until `predicate()` holds (checked after every request the fake handles)."""
        assert self._changed is not None
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    async def inject(self, envelope: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Send a Socket Mode envelope to the connected client and return its ack."""
        await self.wait_for(lambda: bool(self._sockets), timeout)
        await self._sockets[-1].send_json(envelope)
        eid = envelope["envelope_id"]
        await self.wait_for(lambda: any(a.get("envelope_id") == eid for a in self.acks), timeout)
        return next(a for a in self.acks if a.get("envelope_id") == eid)

    def posts_in(self, channel: str) -> list[Posted]:
        return [m for m in self.messages if m.channel == channel]

    def method_calls(self, method: str) -> list[dict[str, Any]]:
        return [args for name, args in self.calls if name == method]

    @property
    def connected(self) -> int:
        return len(self._sockets)

    # ------------------------------------------------------------------ plumbing

    async def _notify(self) -> None:
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    def _log(self, kind: str, **data: Any) -> None:
        if self.record is not None:
            with self.record.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"t": time.time(), "kind": kind, **data}, default=str) + "\n")

    def _next_ts(self) -> str:
        # Like Slack: the post time in microseconds, unique and increasing within the fake.
        self._last_us = max(int(time.time() * 1_000_000), self._last_us + 1)
        return f"{self._last_us // 1_000_000}.{self._last_us % 1_000_000:06d}"

    @staticmethod
    def _ok(**data: Any) -> web.Response:
        return web.json_response({"ok": True, **data})

    @staticmethod
    def _err(error: str, **data: Any) -> web.Response:
        return web.json_response({"ok": False, "error": error, **data})

    async def _args(self, request: web.Request) -> dict[str, Any]:
        args: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                body = await request.json()
                if isinstance(body, dict):
                    args.update(body)
            else:
                args.update(dict(await request.post()))
        return args

    def _scripted(self, method: str, args: dict[str, Any]) -> web.Response | None:
        for failure in self.failures:
            if failure.method != method or failure.count <= 0:
                continue
            if failure.channel is not None and failure.channel not in (
                args.get("channel"),
                args.get("users"),
            ):
                continue
            failure.count -= 1
            headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
            if failure.status == 200:
                return web.json_response({"ok": False, "error": failure.error}, headers=headers)
            return web.json_response({"ok": False, "error": failure.error}, status=failure.status, headers=headers)
        return None

    # ------------------------------------------------------------------ Web API

    async def _api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        args = await self._args(request)
        self.calls.append((method, args))
        self._log("call", method=method, args=args)
        try:
            scripted = self._scripted(method, args)
            if scripted is not None:
                return scripted
            auth = request.headers.get("Authorization", "")
            token = auth.removeprefix("Bearer ").strip() or str(args.get("token", ""))
            wanted = self.app_token if method == "apps.connections.open" else self.bot_token
            if token != wanted:
                return self._err("invalid_auth" if token else "not_authed")
            handler = getattr(self, "_m_" + method.replace(".", "_"), None)
            if handler is None:
                return self._err("unknown_method")
            response: web.StreamResponse = await handler(args)
            return response
        finally:
            await self._notify()

    async def _m_auth_test(self, args: dict[str, Any]) -> web.Response:
        return self._ok(
            url="https://fake.slack.com/",
            team="Fake",
            user="paperboy",
            team_id=self.team_id,
            user_id=BOT_USER,
            bot_id=BOT_ID,
            is_enterprise_install=False,
        )

    async def _m_users_info(self, args: dict[str, Any]) -> web.Response:
        user = self.users.get(str(args.get("user", "")))
        if user is None:
            return self._err("user_not_found")
        return self._ok(
            user={
                "id": user.id,
                "name": user.name,
                "team_id": self.team_id,
                "is_admin": user.is_admin,
                "is_owner": user.is_owner,
                "is_bot": user.is_bot,
                "deleted": user.deleted,
            }
        )

    async def _m_conversations_open(self, args: dict[str, Any]) -> web.Response:
        users = str(args.get("users", ""))
        if not users or "," in users:
            return self._err("invalid_arguments" if not users else "not_implemented_in_fake")
        if users in self.user_errors:
            return self._err(self.user_errors[users])
        user = self.users.get(users)
        if user is None:
            return self._err("user_not_found")
        if user.is_bot:
            return self._err("cannot_dm_bot")
        if user.deleted:
            return self._err("user_disabled")
        return self._ok(channel={"id": "D" + users, "is_im": True, "user": users})

    def _check_message(self, args: dict[str, Any]) -> str | None:
        """Slack's limits; returns the error Slack would answer with, and records the violation."""
        problems: list[str] = []
        blocks = args.get("blocks")
        if isinstance(blocks, str):
            try:
                blocks = json.loads(blocks)
            except ValueError:
                problems.append("blocks is not JSON")
                blocks = []
        blocks = blocks or []
        text = args.get("text")
        if not text and not blocks:
            problems.append("no text and no blocks")
        if text is not None and len(str(text)) > 40_000:
            problems.append(f"text has {len(str(text))} characters > 40000")
        if len(blocks) > 50:
            problems.append(f"{len(blocks)} blocks > 50")
        total = 0
        for i, block in enumerate(blocks):
            kind = block.get("type")
            if kind == "section":
                n = len(block.get("text", {}).get("text", ""))
                total += n
                if n > 3000 or n == 0:
                    problems.append(f"block {i}: section text of {n} characters")
            elif kind == "header":
                n = len(block.get("text", {}).get("text", ""))
                total += n
                if n > 150 or block.get("text", {}).get("type") != "plain_text":
                    problems.append(f"block {i}: header of {n} characters")
            elif kind == "context":
                elements = block.get("elements", [])
                if not 1 <= len(elements) <= 10:
                    problems.append(f"block {i}: {len(elements)} context elements")
                total += sum(len(e.get("text", "")) for e in elements)
            elif kind != "divider":
                problems.append(f"block {i}: unexpected type {kind!r}")
        if total > 12_000:
            problems.append(f"blocks carry {total} characters > 12000")
        thread_ts = args.get("thread_ts")
        if thread_ts is not None and not _TS.fullmatch(str(thread_ts)):
            problems.append(f"thread_ts {thread_ts!r} is not a ts")
        if problems:
            self.violations.extend(problems)
            return "msg_blocks_too_long" if any("characters > 12000" in p for p in problems) else "invalid_blocks"
        return None

    async def _m_chat_postMessage(self, args: dict[str, Any]) -> web.Response:
        channel = str(args.get("channel", ""))
        if not channel:
            return self._err("channel_not_found")
        if channel in self.channel_errors:
            return self._err(self.channel_errors[channel])
        problem = self._check_message(args)
        if problem:
            return self._err(problem)
        thread_ts = args.get("thread_ts")
        if thread_ts is not None and not any(m.ts == thread_ts and m.channel == channel for m in self.messages):
            self.violations.append(f"thread_ts {thread_ts} is no message in {channel}")
            return self._err("thread_not_found")
        metadata = args.get("metadata")
        if isinstance(metadata, str):
            metadata = json.loads(metadata)
        blocks = args.get("blocks") or []
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        posted = Posted(
            channel=channel,
            ts=self._next_ts(),
            text=str(args.get("text", "")),
            blocks=blocks,
            thread_ts=str(thread_ts) if thread_ts else None,
            metadata=metadata,
        )
        self.messages.append(posted)
        self._log("message", **asdict(posted))
        return self._ok(channel=channel, ts=posted.ts, message=self._as_message(posted, with_metadata=True))

    def _as_message(self, m: Posted, *, with_metadata: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "message",
            "user": m.user,
            "bot_id": BOT_ID,
            "text": m.text,
            "ts": m.ts,
            "blocks": m.blocks,
        }
        if m.thread_ts:
            out["thread_ts"] = m.thread_ts
        if with_metadata and m.metadata:
            out["metadata"] = m.metadata
        return out

    @staticmethod
    def _flag(value: Any) -> bool:
        return str(value).lower() in ("1", "true")

    def _page(self, items: list[Posted], args: dict[str, Any], key: str) -> web.Response:
        limit = max(1, min(int(args.get("limit") or 100), 1000, self.page_size))
        start = int(args.get("cursor") or 0)
        page = items[start : start + limit]
        more = start + limit < len(items)
        meta = self._flag(args.get("include_all_metadata"))
        return self._ok(
            **{key: [self._as_message(m, with_metadata=meta) for m in page]},
            has_more=more,
            response_metadata={"next_cursor": str(start + limit) if more else ""},
        )

    async def _m_conversations_history(self, args: dict[str, Any]) -> web.Response:
        channel = str(args.get("channel", ""))
        if channel in self.channel_errors:
            return self._err(self.channel_errors[channel])
        oldest = float(args.get("oldest") or 0)
        latest = float(args.get("latest") or "inf")
        found = [
            m for m in self.messages if m.channel == channel and m.thread_ts is None and oldest < float(m.ts) <= latest
        ]
        found.sort(key=lambda m: float(m.ts), reverse=True)  # newest first, as Slack does
        return self._page(found, args, "messages")

    async def _m_conversations_replies(self, args: dict[str, Any]) -> web.Response:
        channel = str(args.get("channel", ""))
        if channel in self.channel_errors:
            return self._err(self.channel_errors[channel])
        ts = str(args.get("ts", ""))
        parent = [m for m in self.messages if m.channel == channel and m.ts == ts]
        if not parent:
            return self._err("thread_not_found")
        replies = [m for m in self.messages if m.channel == channel and m.thread_ts == ts]
        return self._page(parent + sorted(replies, key=lambda m: float(m.ts)), args, "messages")

    async def _m_apps_connections_open(self, args: dict[str, Any]) -> web.Response:
        return self._ok(url=f"ws://127.0.0.1:{self.port}/link")

    # ------------------------------------------------------------------ response_url and Socket Mode

    async def _response(self, request: web.Request) -> web.Response:
        body = await request.json()
        body["_path"] = request.path
        problem = self._check_message(body)
        self.responses.append(body)
        self._log("response", body=body)
        await self._notify()
        if problem:
            return web.Response(status=400, text=problem)
        return web.Response(text="ok")

    async def _link(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_json(self._hello)
        await self._notify()
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    data = json.loads(msg.data)
                    self.acks.append(data)
                    self._log("ack", body=data)
                    await self._notify()
        finally:
            self._sockets.remove(ws)
            await self._notify()
        return ws

    # ------------------------------------------------------------------ control routes (standalone use)

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "messages": [asdict(m) for m in self.messages],
                "calls": [{"method": m, "args": a} for m, a in self.calls],
                "responses": self.responses,
                "acks": self.acks,
                "violations": self.violations,
                "connected": len(self._sockets),
            },
            dumps=lambda o: json.dumps(o, default=str),
        )

    async def _control_fail(self, request: web.Request) -> web.Response:
        self.failures.append(Failure(**(await request.json())))
        return web.json_response({"ok": True})

    async def _control_error(self, request: web.Request) -> web.Response:
        body = await request.json()
        if "channel" in body:
            self.channel_errors[body["channel"]] = body["error"]
        if "user" in body:
            self.user_errors[body["user"]] = body["error"]
        return web.json_response({"ok": True})

    async def _control_inject(self, request: web.Request) -> web.Response:
        envelope = await request.json()
        if not self._sockets:
            return web.json_response({"ok": False, "error": "no socket connected"}, status=409)
        await self._sockets[-1].send_json(envelope)
        return web.json_response({"ok": True})


def _has_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def _serve(port: int, record: Path | None) -> None:
    fake = FakeSlack(record=record)
    await fake.start(port)
    print(fake.port, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await fake.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Loopback fake of the Slack Web API and Socket Mode")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on stdout)")
    parser.add_argument("--record", type=Path, default=None, help="append every call as JSON lines here")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.port, args.record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
