"""A loopback fake of the parts of Discord paperboy uses: REST (v10) and the gateway websocket.

It speaks the real wire protocol so the real discord.py client can be pointed at it
(`discord.http.Route.BASE` = `api_base`, `DiscordWebSocket.DEFAULT_GATEWAY` = `gateway_url`). Every JSON
body is recorded and validated against Discord's OpenAPI description (shared/specs/discord-openapi.json)
and against the limits the spec does not encode (content 2000, 6000 characters across embeds); a
violation is answered with 400/50035 like Discord and kept in `violations`, which tests assert empty.

Failures can be scripted per route (`fail`): 429 with `Via` + JSON `retry_after`, 5xx, 403/50007...

Standalone, for crash tests that run the real bot process against it:
    python -m tests.adapters.discord.fake_discord --port 0 --record FILE
prints the port on its first stdout line and serves until killed. Control routes (no auth):
GET /_fake/state, POST /_fake/fail, POST /_fake/interact, POST /_fake/block_dm.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

# The shared specs sit next to the repository (../shared), as for the source fixtures.
SPEC_PATH = Path(os.environ.get("DISCORD_OPENAPI_SPEC")
                 or Path(__file__).resolve().parents[4] / "shared" / "specs" / "discord-openapi.json")
API_PREFIX = "/api/v10"
TOKEN = "fake-bot-token.not-a-secret"

BOT_ID = 900000000000000001
APP_ID = 900000000000000002
GUILD_ID = 900000000000000100
TEXT_ID = 900000000000000101
FORUM_ID = 900000000000000102
ANNOUNCE_ID = 900000000000000103
MOD_ROLE_ID = 900000000000000110
USER_ID = 900000000000000201  # an ordinary member
ADMIN_ID = 900000000000000202  # has Manage Server

# Computed permission bits, as Discord sends them: the full set, never just ADMINISTRATOR.
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
READ_HISTORY = 1 << 16
USE_APP_COMMANDS = 1 << 31
SEND_IN_THREADS = 1 << 38
MANAGE_CHANNELS = 1 << 4
MANAGE_GUILD = 1 << 5
MEMBER_PERMISSIONS = VIEW_CHANNEL | SEND_MESSAGES | READ_HISTORY | USE_APP_COMMANDS | SEND_IN_THREADS
ALL_PERMISSIONS = (1 << 51) - 1

CONTENT_MAX = 2000
EMBED_TOTAL_MAX = 6000

Json = dict[str, Any]


@dataclass
class Recorded:
    method: str
    path: str  # the concrete path below /api/v10
    route: str  # the spec's path template
    body: Any
    status: int = 0
    query: dict[str, str] = field(default_factory=dict)
    authorized: bool = False


@dataclass
class Failure:
    method: str
    path: re.Pattern[str]
    status: int
    code: int = 0
    message: str = ""
    times: int = 1
    retry_after: float | None = None
    via: bool = True


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _as_str_ids(value: Any, key: str = "") -> Any:
    """discord.py sends some snowflakes as JSON numbers; the spec types them as strings."""
    if isinstance(value, dict):
        return {k: _as_str_ids(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_str_ids(v, key) for v in value]
    is_id_key = key == "id" or key.endswith("_id") or key.endswith("_ids")
    if is_id_key and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


@cache
def _spec() -> Json:
    result: Json = json.loads(SPEC_PATH.read_text())
    return result


@cache
def _validator(route: str, method: str) -> Any:
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    op = _spec()["paths"].get(route, {}).get(method.lower())
    if not op or "requestBody" not in op:
        return None
    registry: Registry[Any] = Registry().with_resource("urn:discord", Resource.from_contents(
        _spec(), default_specification=DRAFT202012))
    pointer = route.replace("~", "~0").replace("/", "~1")
    ref = f"urn:discord#/paths/{pointer}/{method.lower()}/requestBody/content/application~1json/schema"
    return Draft202012Validator({"$ref": ref}, registry=registry)


def _embeds_length(embeds: list[Json]) -> int:
    total = 0
    for e in embeds:
        total += len(e.get("title") or "") + len(e.get("description") or "")
        total += len((e.get("footer") or {}).get("text") or "") + len((e.get("author") or {}).get("name") or "")
        total += sum(len(f.get("name") or "") + len(f.get("value") or "") for f in e.get("fields") or [])
    return total


def limit_problems(body: Any) -> list[str]:
    """What Discord enforces beyond the spec (which allows 4000 characters of content)."""
    problems: list[str] = []
    if not isinstance(body, dict):
        return problems
    for msg in (body, body.get("message"), body.get("data")):
        if not isinstance(msg, dict):
            continue
        content = msg.get("content")
        if isinstance(content, str) and len(content) > CONTENT_MAX:
            problems.append(f"content is {len(content)} characters (max {CONTENT_MAX})")
        embeds = msg.get("embeds")
        if isinstance(embeds, list):
            if len(embeds) > 10:
                problems.append(f"{len(embeds)} embeds (max 10)")
            if _embeds_length(embeds) > EMBED_TOTAL_MAX:
                problems.append(f"embeds total {_embeds_length(embeds)} characters (max {EMBED_TOTAL_MAX})")
    return problems


def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    rx = "".join(f"(?P<{p[1:-1]}>[^/]+)" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(rx + "$")


Handler = Callable[[web.Request, dict[str, str], Any], Awaitable[web.Response]]


class FakeDiscord:
    def __init__(self, *, validate: bool = True, record: Path | None = None, token: str = TOKEN) -> None:
        self.validate = validate
        self.token = token
        self.record_path = record
        self.requests: list[Recorded] = []
        self.violations: list[str] = []
        self.failures: list[Failure] = []
        self.messages: dict[int, list[Json]] = {}
        self.channels: dict[int, Json] = {}
        self.threads_by_message: dict[int, int] = {}
        self.dm_channels: dict[int, int] = {}  # user id -> dm channel id
        self.dm_blocked: dict[int, int] = {}  # user id -> error code (50007, 50278)
        self.commands: dict[str, list[Json]] = {}  # "global" or guild id -> the last PUT payload
        self.interactions: dict[str, Json] = {}  # token -> the INTERACTION_CREATE data
        self.callbacks: dict[str, list[Json]] = {}  # token -> callback bodies
        self.followups: dict[str, list[Json]] = {}  # token -> followup messages
        self.identifies = 0
        self.last_identify: Json | None = None
        self.resumes = 0
        self.deleted_originals: list[str] = []
        self._ids = itertools.count(950000000000000000)
        self._nonces: dict[tuple[int, str], Json] = {}
        self._sockets: list[web.WebSocketResponse] = []
        self._seq = 0
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._routes: list[tuple[str, str, re.Pattern[str], Handler]] = []
        self._setup_world()
        self._add_routes()

    # ---- world -------------------------------------------------------------------------------------

    def _setup_world(self) -> None:
        base = {"guild_id": str(GUILD_ID), "position": 0, "permission_overwrites": [], "nsfw": False,
                "parent_id": None, "rate_limit_per_user": 0, "last_message_id": None, "flags": 0}
        self.channels[TEXT_ID] = {**base, "id": str(TEXT_ID), "type": 0, "name": "papers", "topic": None}
        self.channels[ANNOUNCE_ID] = {**base, "id": str(ANNOUNCE_ID), "type": 5, "name": "news", "topic": None,
                                      "position": 2}
        self.channels[FORUM_ID] = {**base, "id": str(FORUM_ID), "type": 15, "name": "paper-forum", "position": 1,
                                   "topic": None, "available_tags": [], "default_reaction_emoji": None,
                                   "default_sort_order": None, "default_forum_layout": 0,
                                   "default_thread_rate_limit_per_user": 0}

    def user(self, user_id: int, name: str | None = None) -> Json:
        return {"id": str(user_id), "username": name or f"user{user_id % 1000}", "discriminator": "0",
                "global_name": None, "avatar": None, "bot": user_id == BOT_ID, "public_flags": 0}

    def bot_user(self) -> Json:
        return {**self.user(BOT_ID, "paperboy"), "bot": True, "verified": True, "mfa_enabled": False,
                "flags": 0, "email": None}

    def guild_payload(self) -> Json:
        everyone = {"id": str(GUILD_ID), "name": "@everyone", "permissions": str(MEMBER_PERMISSIONS),
                    "position": 0, "color": 0, "hoist": False, "managed": False, "mentionable": False, "flags": 0}
        mods = {**everyone, "id": str(MOD_ROLE_ID), "name": "mods", "position": 1,
                "permissions": str(MEMBER_PERMISSIONS | MANAGE_GUILD | MANAGE_CHANNELS)}
        guild_channels = [c for c in self.channels.values() if c.get("guild_id") and c["type"] in (0, 5, 15)]
        return {
            "id": str(GUILD_ID), "name": "Paper Club", "icon": None, "owner_id": str(ADMIN_ID),
            "roles": [everyone, mods], "channels": guild_channels, "threads": [], "members": [],
            "member_count": 3, "features": [], "emojis": [], "stickers": [], "voice_states": [],
            "presences": [], "large": False, "unavailable": False, "premium_tier": 0, "afk_timeout": 300,
            "verification_level": 0, "default_message_notifications": 0, "explicit_content_filter": 0,
            "mfa_level": 0, "nsfw_level": 0, "preferred_locale": "en-US", "system_channel_flags": 0,
            "joined_at": _now(), "stage_instances": [], "guild_scheduled_events": [], "soundboard_sounds": [],
        }

    def _new_id(self) -> int:
        return next(self._ids)

    def _message(self, channel_id: int, body: Json, *, author: Json | None = None, msg_id: int | None = None,
                 flags: int = 0) -> Json:
        mid = msg_id or self._new_id()
        channel = self.channels.get(channel_id, {})
        msg = {
            "id": str(mid), "channel_id": str(channel_id), "author": author or self.bot_user(),
            "content": body.get("content") or "", "timestamp": _now(), "edited_timestamp": None, "tts": False,
            "mention_everyone": False, "mentions": [], "mention_roles": [], "attachments": [],
            "embeds": body.get("embeds") or [], "pinned": False, "type": 0,
            "flags": flags | int(body.get("flags") or 0), "components": [],
        }
        if body.get("nonce") is not None:
            msg["nonce"] = body["nonce"]
        if channel.get("guild_id"):
            msg["guild_id"] = channel["guild_id"]
        return msg

    def all_messages(self) -> list[Json]:
        return [m for msgs in self.messages.values() for m in msgs]

    def thread(self, thread_id: int) -> Json | None:
        ch = self.channels.get(thread_id)
        return ch if ch and ch["type"] in (10, 11, 12) else None

    # ---- scripting ---------------------------------------------------------------------------------

    def fail(self, method: str, path: str, status: int, *, code: int = 0, message: str = "", times: int = 1,
             retry_after: float | None = None, via: bool = True) -> None:
        """Answer the next `times` requests whose path matches the regex `path` with an error."""
        self.failures.append(Failure(method.upper(), re.compile(path), status, code,
                                     message or f"scripted {status}", times, retry_after, via))

    def block_dm(self, user_id: int, code: int = 50007) -> None:
        self.dm_blocked[user_id] = code

    def forget_nonces(self) -> None:
        """Discord keeps a nonce for a few minutes only: simulate a restart after a long outage."""
        self._nonces.clear()

    def add_thread(self, parent_id: int, name: str = "a thread") -> int:
        """A thread that exists before the bot connects (a forum post, yesterday's daily thread)."""
        tid = self._new_id()
        self.channels[tid] = self._thread_channel(tid, parent_id, name, 1440)
        self.channels[tid]["owner_id"] = str(ADMIN_ID)
        return tid

    def lock_thread(self, thread_id: int, *, archived: bool = True, locked: bool = True) -> None:
        meta = self.channels[thread_id]["thread_metadata"]
        meta["archived"], meta["locked"] = archived, locked

    # ---- HTTP --------------------------------------------------------------------------------------

    def _add_routes(self) -> None:
        r = self._route
        r("GET", "/users/@me", self._get_me)
        r("GET", "/oauth2/applications/@me", self._get_app)
        r("GET", "/gateway", self._get_gateway)
        r("GET", "/gateway/bot", self._get_gateway)
        r("PUT", "/applications/{application_id}/commands", self._put_commands)
        r("PUT", "/applications/{application_id}/guilds/{guild_id}/commands", self._put_commands)
        r("GET", "/channels/{channel_id}", self._get_channel)
        r("PATCH", "/channels/{channel_id}", self._patch_channel)
        r("POST", "/channels/{channel_id}/messages", self._post_message)
        r("GET", "/channels/{channel_id}/messages", self._get_messages)
        r("POST", "/channels/{channel_id}/messages/{message_id}/threads", self._post_thread_from_message)
        r("POST", "/channels/{channel_id}/threads", self._post_forum_thread)
        r("GET", "/guilds/{guild_id}/threads/active", self._get_active_threads)
        r("POST", "/users/@me/channels", self._post_dm)
        r("POST", "/interactions/{interaction_id}/{interaction_token}/callback", self._post_callback)
        r("POST", "/webhooks/{webhook_id}/{webhook_token}", self._post_followup)
        r("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/@original", self._patch_original)
        r("DELETE", "/webhooks/{webhook_id}/{webhook_token}/messages/@original", self._delete_original)

    def _route(self, method: str, template: str, handler: Handler) -> None:
        self._routes.append((method, template, _template_regex(template), handler))

    def _error(self, status: int, code: int, message: str, *, retry_after: float | None = None,
               via: bool = True) -> web.Response:
        body: Json = {"message": message, "code": code}
        headers = {"Via": "1.1 google"} if via else {}
        if retry_after is not None:
            body["retry_after"] = retry_after
            body["global"] = False
        return web.Response(status=status, body=json.dumps(body).encode(),
                            headers={"Content-Type": "application/json", **headers})

    @staticmethod
    def _json(data: Any, status: int = 200) -> web.Response:
        # Exactly `application/json`: discord.py compares the header string and reads anything else as text.
        return web.Response(status=status, body=json.dumps(data).encode(),
                            headers={"Content-Type": "application/json"})

    async def _dispatch_http(self, request: web.Request) -> web.Response:
        path = request.path[len(API_PREFIX):] if request.path.startswith(API_PREFIX) else request.path
        raw = await request.read()
        body: Any = None
        if raw:
            if request.content_type == "application/json":
                body = json.loads(raw)
            elif request.content_type.startswith("multipart/"):
                body = {"_multipart": True}
            else:
                body = raw.decode(errors="replace")
        auth = request.headers.get("Authorization", "")
        for method, template, rx, handler in self._routes:
            m = rx.match(path)
            if method != request.method or not m:
                continue
            rec = Recorded(request.method, path, template, body, query=dict(request.query),
                           authorized=auth == f"Bot {self.token}")
            self.requests.append(rec)
            response = await self._answer(request, rec, m.groupdict(), handler)
            rec.status = response.status
            self._write_record(rec)
            await self._notify()
            return response
        self.violations.append(f"no such route in the fake: {request.method} {path}")
        return self._error(404, 0, "404: Not Found")

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _answer(self, request: web.Request, rec: Recorded, params: dict[str, str],
                      handler: Handler) -> web.Response:
        needs_auth = not rec.route.startswith(("/interactions/", "/webhooks/"))
        if needs_auth and not rec.authorized:
            return self._error(401, 0, "401: Unauthorized")
        for f in self.failures:
            if f.times > 0 and f.method == rec.method and f.path.search(rec.path):
                f.times -= 1
                return self._error(f.status, f.code, f.message, retry_after=f.retry_after, via=f.via)
        if self.validate and rec.body is not None and not isinstance(rec.body, str):
            problems = self._check_body(rec)
            if problems:
                self.violations.extend(f"{rec.method} {rec.route}: {p}" for p in problems)
                return self._error(400, 50035, "Invalid Form Body: " + "; ".join(problems)[:500])
        return await handler(request, params, rec.body)

    def _check_body(self, rec: Recorded) -> list[str]:
        problems = limit_problems(rec.body)
        if isinstance(rec.body, dict) and rec.body.get("_multipart"):
            return problems
        validator = _validator(rec.route, rec.method)
        if validator is not None:
            for err in validator.iter_errors(_as_str_ids(rec.body)):
                where = "/".join(str(p) for p in err.absolute_path)
                problems.append(f"{where}: {err.message[:200]}")
        return problems

    def _write_record(self, rec: Recorded) -> None:
        if self.record_path is None:
            return
        with self.record_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"method": rec.method, "path": rec.path, "route": rec.route, "status": rec.status,
                                 "body": rec.body}) + "\n")

    # ---- REST handlers -----------------------------------------------------------------------------

    async def _get_me(self, request: web.Request, p: dict[str, str], body: Any) -> web.Response:
        return self._json(self.bot_user())

    async def _get_app(self, request: web.Request, p: dict[str, str], body: Any) -> web.Response:
        return self._json({"id": str(APP_ID), "name": "paperboy", "icon": None, "description": "",
                           "bot_public": True, "bot_require_code_grant": False, "verify_key": "0" * 64,
                           "owner": self.user(ADMIN_ID, "owner"), "flags": 0, "rpc_origins": [],
                           "team": None, "summary": ""})

    async def _get_gateway(self, request: web.Request, p: dict[str, str], body: Any) -> web.Response:
        return self._json({"url": self.gateway_url, "shards": 1, "session_start_limit":
                           {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}})

    async def _put_commands(self, request: web.Request, p: dict[str, str], body: Any) -> web.Response:
        if int(p["application_id"]) != APP_ID:
            return self._error(403, 50001, "Missing Access")
        scope = p.get("guild_id", "global")
        self.commands[scope] = body
        out = []
        for cmd in body:
            out.append({**cmd, "id": str(self._new_id()), "application_id": str(APP_ID), "version": "1",
                        "type": cmd.get("type", 1), "default_member_permissions": None,
                        **({"guild_id": scope} if scope != "global" else {})})
        return self._json(out)

    async def _get_channel(self, request: web.Request, p: dict[str, str], body: Any) -> web.Response:
        ch = self.channels.get(int(p["channel_id"]))
        if ch is None:
            return self._error(404, 10003, "Unknown Channel")
        return self._json(ch)

    async def _patch_channel(self, request: web.Request, p: dict[str, str], body: Any) -> web.Response:
        ch = self.channels.get(int(p["channel_id"]))
        if ch is None:
            return self._error(404, 10003, "Unknown Channel")
        if "thread_metadata" in ch and isinstance(body, dict):
            meta = ch["thread_metadata"]
            if meta.get("locked") and body.get("archived") is False and body.get("locked") is not False:
                return self._error(403, 50013, "Missing Permissions")
            for key in ("archived", "locked"):
                if key in body:
                    meta[key] = body[key]
        return self._json(ch)

    async def _post_message(self, request: web.Request, p: dict[str, str], body: Any) -> web.Response:
        cid = int(p["channel_id"])
        ch = self.channels.get(cid)
        if ch is None:
            return self._error(404, 10003, "Unknown Channel")
        if ch["type"] == 15:
            return self._error(400, 50008, "Cannot send messages in a non-text channel")
        if ch["type"] == 1:
            recipient = int(ch["recipients"][0]["id"])
            if recipient in self.dm_blocked:
                code = self.dm_blocked[recipient]
                return self._error(403, code, "Cannot send messages to this user")
        meta = ch.get("thread_metadata")
        if meta and meta.get("archived"):
            if meta.get("locked"):
                return self._error(400, 50083, "Thread is archived")
            meta["archived"] = False  # posting unarchives an unlocked thread, as on Discord
        nonce = body.get("nonce") if isinstance(body, dict) else None
        if nonce is not None and body.get("enforce_nonce"):
            existing = self._nonces.get((cid, str(nonce)))
            if existing is not None:
                return self._json(existing)
        msg = self._message(cid, body)
        self.messages.setdefault(cid, []).append(msg)
        if nonce is not None and body.get("enforce_nonce"):
            self._nonces[(cid, str(nonce))] = msg
        ch["last_message_id"] = msg["id"]
        return self._json(msg)

    async def _get_messages(self, request: web.Request, p: dict[str, str], body: Any) -> web.Response:
        cid = int(p["channel_id"])
        if cid not in self.channels:
            return self._error(404, 10003, "Unknown Channel")
        limit = min(100, int(request.query.get("limit", "50")))
        # Newest first, and without the nonce: Discord only echoes it on create.
        recent = [{k: v for k, v in m.items() if k != "nonce"} for m in reversed(self.messages.get(cid, []))]
        return self._json(recent[:limit])

    def _thread_channel(self, thread_id: int, parent_id: int, name: str, archive: int) -> Json:
        return {
            "id": str(thread_id), "type": 11, "guild_id": str(GUILD_ID), "parent_id": str(parent_id),
            "owner_id": str(BOT_ID), "name": name, "last_message_id": None, "message_count": 0,
            "member_count": 1, "rate_limit_per_user": 0, "flags": 0, "total_message_sent": 0,
            "thread_metadata": {"archived": False, "auto_archive_duration": archive, "archive_timestamp": _now(),
                                "locked": False, "create_timestamp": _now()},
        }

    async def _post_thread_from_message(self, request: web.Request, p: dict[str, str], body: Any) -> web.Response:
        cid, mid = int(p["channel_id"]), int(p["message_id"])
        if cid not in self.channels:
            return self._error(404, 10003, "Unknown Channel")
        if not any(int(m["id"]) == mid for m in self.messages.get(cid, [])):
            return self._error(404, 10008, "Unknown Message")
        if mid in self.threads_by_message:
            return self._error(400, 160004, "A thread has already been created for this message")
        # Like Discord: a thread started from a message takes the message's id.
        thread = self._thread_channel(mid, cid, body["name"], int(body.get("auto_archive_duration") or 1440))
        self.channels[mid] = thread
        self.threads_by_message[mid] = mid
        return self._json(thread, status=201)

    async def _post_forum_thread(self, request: web.Request, p: dict[str, str], body: Any) -> web.Response:
        cid = int(p["channel_id"])
        ch = self.channels.get(cid)
        if ch is None:
            return self._error(404, 10003, "Unknown Channel")
        if ch["type"] not in (15, 16):
            return self._error(400, 50024, "Cannot execute action on this channel type")
        tid = self._new_id()
        thread = self._thread_channel(tid, cid, body["name"], int(body.get("auto_archive_duration") or 1440))
        self.channels[tid] = thread
        # The starter message of a forum post has the thread's id.
        msg = self._message(tid, body.get("message") or {}, msg_id=tid)
        self.messages.setdefault(tid, []).append(msg)
        thread["last_message_id"] = msg["id"]
        thread["message_count"] = 1
        return self._json({**thread, "message": msg}, status=201)

    async def _get_active_threads(self, request: web.Request, p: dict[str, str], body: Any) -> web.Response:
        threads = [c for c in self.channels.values()
                   if c["type"] in (10, 11, 12) and not c["thread_metadata"]["archived"]]
        return self._json({"threads": threads, "members": []})

    async def _post_dm(self, request: web.Request, p: dict[str, str], body: Any) -> web.Response:
        uid = int(body["recipient_id"])
        if uid not in self.dm_channels:
            did = self._new_id()
            self.dm_channels[uid] = did
            self.channels[did] = {"id": str(did), "type": 1, "last_message_id": None, "flags": 0,
                                  "recipients": [self.user(uid)]}
        return self._json(self.channels[self.dm_channels[uid]])

    async def _post_callback(self, request: web.Request, p: dict[str, str], body: Any) -> web.Response:
        token = p["interaction_token"]
        if token not in self.interactions:
            return self._error(404, 10062, "Unknown interaction")
        if self.callbacks.get(token):
            return self._error(400, 40060, "Interaction has already been acknowledged.")
        self.callbacks.setdefault(token, []).append(body)
        flags = int((body.get("data") or {}).get("flags") or 0)
        return self._json({"interaction": {"id": p["interaction_id"], "type": self.interactions[token]["type"],
                                           "response_message_loading": body.get("type") == 5,
                                           "response_message_ephemeral": bool(flags & 64)},
                           "resource": {"type": body.get("type")}})

    async def _post_followup(self, request: web.Request, p: dict[str, str], body: Any) -> web.Response:
        token = p["webhook_token"]
        if token not in self.interactions or int(p["webhook_id"]) != APP_ID:
            return self._error(404, 10015, "Unknown Webhook")
        if not self.callbacks.get(token):
            return self._error(400, 40060, "Interaction has not been acknowledged")
        channel_id = int(self.interactions[token]["channel_id"])
        msg = self._message(channel_id, body, flags=0)
        msg["webhook_id"] = str(APP_ID)
        self.followups.setdefault(token, []).append(msg)
        return self._json(msg)

    async def _patch_original(self, request: web.Request, p: dict[str, str], body: Any) -> web.Response:
        token = p["webhook_token"]
        if token not in self.interactions:
            return self._error(404, 10015, "Unknown Webhook")
        msg = self._message(int(self.interactions[token]["channel_id"]), body)
        msg["webhook_id"] = str(APP_ID)
        self.followups.setdefault(token, []).append(msg)
        return self._json(msg)

    async def _delete_original(self, request: web.Request, p: dict[str, str], body: Any) -> web.Response:
        token = p["webhook_token"]
        if token not in self.interactions or not self.callbacks.get(token):
            return self._error(404, 10008, "Unknown Message")
        self.deleted_originals.append(token)
        return web.Response(status=204)

    # ---- gateway -----------------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        # Plain JSON text frames: discord.py only decompresses binary frames.
        await ws.send_json({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None})
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                op = data.get("op")
                if op == 1:
                    await ws.send_json({"op": 11, "d": None, "s": None, "t": None})
                elif op == 2:
                    self.identifies += 1
                    self.last_identify = data.get("d")
                    await self._send(ws, "READY", {
                        "v": 10, "user": self.bot_user(), "guilds": [{"id": str(GUILD_ID), "unavailable": True}],
                        "session_id": f"session-{self.identifies}", "resume_gateway_url": self.gateway_url,
                        "application": {"id": str(APP_ID), "flags": 0}, "private_channels": [],
                        "relationships": [], "presences": [], "shard": [0, 1],
                    })
                    await self._send(ws, "GUILD_CREATE", self.guild_payload())
                    await self._notify()
                elif op == 6:
                    self.resumes += 1
                    await self._send(ws, "RESUMED", {})
                    await self._notify()
        finally:
            with contextlib.suppress(ValueError):
                self._sockets.remove(ws)
        return ws

    async def _send(self, ws: web.WebSocketResponse, event: str, data: Json) -> None:
        self._seq += 1
        await ws.send_json({"op": 0, "t": event, "s": self._seq, "d": data})

    async def drop_connections(self, code: int = 4000) -> None:
        """Close every gateway socket, as Discord does on a restart: the client must resume."""
        for ws in list(self._sockets):
            await ws.close(code=code, message=b"fake restart")

    async def dispatch(self, event: str, data: Json) -> None:
        # A killed bot's socket may linger until the server notices; events go to live sockets only.
        self._sockets = [ws for ws in self._sockets if not ws.closed]
        for ws in list(self._sockets):
            await self._send(ws, event, data)

    def interaction_payload(self, sub: str, options: dict[str, str] | None = None, *, user_id: int = USER_ID,
                            permissions: int = MEMBER_PERMISSIONS, channel_id: int = TEXT_ID,
                            dm: bool = False, focused: str | None = None, roles: tuple[int, ...] = ()) -> Json:
        """An INTERACTION_CREATE for `/papers <sub> ...` (type 2), or autocomplete (type 4) when `focused`."""
        token = f"itoken-{self._new_id()}"
        inner = [{"name": k, "type": 3, "value": v, **({"focused": True} if k == focused else {})}
                 for k, v in (options or {}).items()]
        data: Json = {
            "id": str(self._new_id()), "application_id": str(APP_ID), "type": 4 if focused else 2,
            "token": token, "version": 1, "attachment_size_limit": 10485760, "locale": "en-US",
            "entitlements": [], "app_permissions": str(ALL_PERMISSIONS),
            "data": {"id": str(self._new_id()), "name": "papers", "type": 1,
                     "options": [{"name": sub, "type": 1, "options": inner}]},
        }
        user = self.user(user_id)
        if dm:
            did = self.dm_channels.setdefault(user_id, self._new_id())
            self.channels.setdefault(did, {"id": str(did), "type": 1, "last_message_id": None, "flags": 0,
                                           "recipients": [user]})
            data.update(user=user, channel_id=str(did), channel={"id": str(did), "type": 1, "flags": 0},
                        context=1, authorizing_integration_owners={"1": str(user_id)})
        else:
            ch = self.channels[channel_id]
            data.update(
                guild_id=str(GUILD_ID), channel_id=str(channel_id), guild_locale="en-US", context=0,
                channel={k: v for k, v in ch.items()}, authorizing_integration_owners={"0": str(GUILD_ID)},
                member={"user": user, "roles": [str(r) for r in roles], "permissions": str(permissions),
                        "joined_at": _now(), "deaf": False, "mute": False, "flags": 0, "nick": None,
                        "avatar": None, "premium_since": None, "pending": False},
            )
            data["data"]["guild_id"] = str(GUILD_ID)
        self.interactions[token] = data
        return data

    async def interact(self, sub: str, options: dict[str, str] | None = None, **kw: Any) -> str:
        """Send an INTERACTION_CREATE to the connected bot; returns the interaction token."""
        data = self.interaction_payload(sub, options, **kw)
        await self.dispatch("INTERACTION_CREATE", data)
        return str(data["token"])

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    async def wait_answered(self, token: str, count: int = 1, timeout: float = 5.0) -> list[Json]:
        """The followups of an interaction, once `count` have arrived."""
        await self.wait_for(lambda: len(self.followups.get(token, [])) >= count, timeout)
        return self.followups[token]

    # ---- control routes (standalone use) -----------------------------------------------------------

    async def _control(self, request: web.Request) -> web.Response:
        what = request.match_info["what"]
        body = await request.json() if request.can_read_body else {}
        if what == "state":
            return self._json({"messages": {str(k): v for k, v in self.messages.items()},
                               "commands": self.commands, "violations": self.violations,
                               "requests": len(self.requests), "identifies": self.identifies,
                               "followups": self.followups})
        if what == "fail":
            self.fail(body["method"], body["path"], int(body["status"]), code=int(body.get("code", 0)),
                      times=int(body.get("times", 1)), retry_after=body.get("retry_after"))
            return self._json({"ok": True})
        if what == "block_dm":
            self.block_dm(int(body["user_id"]), int(body.get("code", 50007)))
            return self._json({"ok": True})
        if what == "interact":
            token = await self.interact(body["sub"], body.get("options") or {},
                                        **{k: v for k, v in body.items() if k not in ("sub", "options")})
            return self._json({"token": token})
        return self._error(404, 0, "unknown control")

    # ---- lifecycle ---------------------------------------------------------------------------------

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/gateway/", self._gateway)
        app.router.add_route("*", "/_fake/{what}", self._control)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._dispatch_http)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def _serve(port: int, record: Path | None) -> None:
    fake = FakeDiscord(record=record)
    await fake.start(port)
    print(fake.port, flush=True)
    print(f"api {fake.api_base} gateway {fake.gateway_url} token {fake.token}", file=sys.stderr, flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="A loopback fake Discord (REST v10 + gateway) for tests.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--record", type=Path, default=None, help="append every request as a JSON line")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port, args.record))


if __name__ == "__main__":
    main()
