"""Slack adapter: slack-bolt AsyncApp for `/papers`, slack-sdk AsyncWebClient for threads and DMs.

Commands arrive over HTTP (signed requests to `/slack/events`, when `SLACK_SIGNING_SECRET` is set) and/or
Socket Mode (when `SLACK_APP_TOKEN` is set), both in the caller's event loop. Outgoing messages go through one
AsyncWebClient that retries 429 and 5xx; the token for a workspace comes from a `TokenSource`, so a
multi-workspace OAuth install (an installation store) can replace the single bot token without touching the
handlers.

Exactly-once delivery: every message carries Slack message metadata naming its ledger row. When the ledger
says an earlier attempt may have gone out (`attempts > 1`), the channel or thread is read back first and a
message already there is reused instead of posted again.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.render import SlackMessage, render_reply
from bot.commands import parse_line
from bot.models import ChannelRef, Command, Delivery, Reply, UserRef
from bot.ports import CommandService, SendOutcome
from bot.settings import Settings

log = logging.getLogger(__name__)

PLATFORM = "slack"
EVENTS_PATH = "/slack/events"
COMMAND = "/papers"
METADATA_EVENT = "paperboy_delivery"
# respond() may be used 5 times per response_url (Slack's documented budget).
MAX_RESPONSES = 5
# Slack's own signature window is 5 minutes; remember signatures a little longer than that.
REPLAY_WINDOW_SECONDS = 6 * 60

# Errors that mean "this user cannot be reached"; retrying would only spend rate limit.
UNREACHABLE_ERRORS: Mapping[str, str] = {
    "cannot_dm_bot": "the target is a bot user, which cannot receive DMs",
    "user_not_found": "the user does not exist (or left the workspace)",
    "user_not_visible": "the user is not visible to the bot",
    "account_inactive": "the account is deactivated",
    "user_disabled": "the user account is disabled",
}
# Errors that will not go away by retrying the same message.
PERMANENT_ERRORS: Mapping[str, str] = {
    "channel_not_found": "the channel does not exist or the bot cannot see it",
    "not_in_channel": "the bot is not a member of the channel (invite it, or grant chat:write.public)",
    "is_archived": "the channel is archived",
    "missing_scope": "the Slack app lacks a required OAuth scope",
    "invalid_auth": "the bot token is invalid",
    "not_authed": "no bot token was sent",
    "token_revoked": "the bot token was revoked",
    "token_expired": "the bot token expired",
    "no_permission": "the bot has no permission to post there",
    "restricted_action": "the workspace does not allow the bot to post there",
    "team_access_not_granted": "the bot is not installed in that workspace",
    "invalid_blocks": "Slack rejected the message blocks",
    "msg_blocks_too_long": "Slack rejected the message as too long",
    "msg_too_long": "Slack rejected the message as too long",
    "thread_not_found": "the thread's opener no longer exists",
    "not_installed": "paperboy is not installed in that workspace",
}
_TOKEN_LIKE = re.compile(r"xox[a-z]-[A-Za-z0-9-]+|xapp-[A-Za-z0-9-]+")


def scrub(text: str) -> str:
    """Error text may come from the SDK or the network stack; it must never carry a token."""
    return _TOKEN_LIKE.sub("xox?-…", text)


class TokenSource(Protocol):
    """Where a workspace's bot token comes from: one configured token now, an installation store later."""

    async def authorize(
        self, *, client: AsyncWebClient, enterprise_id: str | None, team_id: str | None
    ) -> AuthorizeResult | None:
        """What bolt needs for an incoming request from `team_id` (None = not installed there)."""
        ...

    async def bot_token(self, team_id: str) -> str | None:
        """The bot token for outgoing calls into a workspace (None = not installed there)."""
        ...


class SingleTokenSource:
    """One workspace, one `xoxb-` token. auth.test runs once, on the first request, and is cached."""

    def __init__(self, token: str) -> None:
        self._token = token
        self._auth: AuthorizeResult | None = None
        self._lock = asyncio.Lock()

    async def authorize(
        self, *, client: AsyncWebClient, enterprise_id: str | None, team_id: str | None
    ) -> AuthorizeResult | None:
        async with self._lock:
            if self._auth is None:
                response = await client.auth_test(token=self._token)
                self._auth = AuthorizeResult.from_auth_test_response(bot_token=self._token, auth_test_response=response)
        return self._auth

    async def bot_token(self, team_id: str) -> str | None:
        return self._token


@dataclass(frozen=True, slots=True)
class SlackTarget:
    team_id: str
    id: str  # channel id, or user id for DMs

    @classmethod
    def parse(cls, target: str) -> SlackTarget:
        """`slack:<team_id>:<channel_or_user_id>` (ChannelRef.key / UserRef.key)."""
        platform, _, rest = target.partition(":")
        team, _, ident = rest.partition(":")
        if platform != PLATFORM or not ident:
            raise ValueError(f"not a Slack target: {target!r}")
        return cls(team, ident)


class SlackPlatform:
    """`bot.ports.ChatPlatform` for Slack."""

    name = PLATFORM

    def __init__(
        self,
        settings: Settings,
        service: CommandService,
        *,
        tokens: TokenSource | None = None,
        post_interval: float = 1.0,
        host: str = "0.0.0.0",
        admin_cache_seconds: float = 300.0,
        reconcile_window_seconds: float = 3 * 86400,
        retries: int = 3,
        retry_backoff: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._service = service
        bot_token = Settings.secret(settings.slack_bot_token)
        if tokens is None:
            if not bot_token:
                raise ValueError("SlackPlatform needs SLACK_BOT_TOKEN (or a TokenSource)")
            tokens = SingleTokenSource(bot_token)
        self._tokens = tokens
        self._post_interval = post_interval
        self._host = host
        self._admin_ttl = admin_cache_seconds
        self._reconcile_window = reconcile_window_seconds
        self._clock = clock
        # No token on the shared client: every call names its workspace's token, and bolt hands listeners a
        # per-request copy (same base_url and retry handlers) carrying the authorized token.
        # The default client retries only connection errors, once; a 429 would surface as an error.
        backoff = BackoffRetryIntervalCalculator(backoff_factor=retry_backoff)
        client_args: dict[str, Any] = {
            "retry_handlers": [
                AsyncConnectionErrorRetryHandler(max_retry_count=retries, interval_calculator=backoff),
                AsyncRateLimitErrorRetryHandler(max_retry_count=retries),
                AsyncServerErrorRetryHandler(max_retry_count=retries, interval_calculator=backoff),
            ],
            "timeout": 30,
        }
        if settings.slack_api_url:
            client_args["base_url"] = settings.slack_api_url
        self.client = AsyncWebClient(**client_args)
        self._admin_cache: dict[tuple[str, str], tuple[float, bool]] = {}
        self._dm_channels: dict[tuple[str, str], str] = {}
        self._last_post: dict[str, float] = {}
        self._channel_locks: dict[str, asyncio.Lock] = {}
        self._runner: web.AppRunner | None = None
        self._seen_signatures: dict[str, float] = {}  # signature -> when first seen (replay guard)
        self._socket: AsyncSocketModeHandler | None = None
        self.http_port: int | None = None  # the bound port once serving HTTP (useful with port 0)
        self.app = self._build_app()

    # ------------------------------------------------------------------ bolt app and connection modes

    def _build_app(self) -> AsyncApp:
        tokens = self._tokens

        async def authorize(
            enterprise_id: str | None, team_id: str | None, client: AsyncWebClient
        ) -> AuthorizeResult | None:
            return await tokens.authorize(client=client, enterprise_id=enterprise_id, team_id=team_id)

        app = AsyncApp(
            name="paperboy",
            client=self.client,
            authorize=authorize,  # type: ignore[arg-type]  # bolt handles None: not installed
            # Explicit "" keeps bolt from reading SLACK_SIGNING_SECRET behind our back; HTTP is only served
            # when a secret is configured, so verification never runs with an empty one.
            signing_secret=Settings.secret(self._settings.slack_signing_secret) or "",
            logger=_bolt_logger(),
        )

        async def on_papers(
            ack: Callable[..., Awaitable[Any]],
            body: dict[str, Any],
            respond: Callable[..., Awaitable[Any]],
            client: AsyncWebClient,
        ) -> None:
            # Slack gives 3 s for the ack; everything slow (admin lookup, search) comes after it.
            await ack()
            await self._run_command(body, respond, client)

        app.command(COMMAND)(on_papers)
        return app

    async def start(self) -> None:
        secret = Settings.secret(self._settings.slack_signing_secret)
        app_token = Settings.secret(self._settings.slack_app_token)
        if secret:
            web_app = web.Application()
            web_app.router.add_post(EVENTS_PATH, self._handle_http)
            self._runner = web.AppRunner(web_app, handle_signals=False, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self._host, self._settings.slack_port)
            await site.start()
            server = site._server
            sockets = getattr(server, "sockets", None) or ()
            self.http_port = sockets[0].getsockname()[1] if sockets else self._settings.slack_port
            log.info("slack: serving %s on port %s", EVENTS_PATH, self.http_port)
        if app_token:
            self._socket = AsyncSocketModeHandler(
                self.app,
                app_token=app_token,
                web_client=self.client,
                logger=logging.getLogger("paperboy.slack.socket"),
            )
            await self._socket.connect_async()  # type: ignore[no-untyped-call]
            log.info("slack: Socket Mode connected")
        if not secret and not app_token:
            log.warning(
                "slack: neither SLACK_SIGNING_SECRET nor SLACK_APP_TOKEN is set; /papers cannot be "
                "received, only threads and DMs are sent"
            )

    async def _handle_http(self, request: web.Request) -> web.Response:
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "").strip()
        signature = request.headers.get("X-Slack-Signature", "").strip()
        # slack_sdk's verifier raises on a non-numeric timestamp; such a request is simply not from Slack.
        if not timestamp.isascii() or not timestamp.isdigit() or not signature:
            return web.json_response({"error": "invalid request"}, status=401)
        # Bolt checks the HMAC and the 5-minute window; a request replayed inside that window would pass
        # both, so a signature is accepted once. Recorded before dispatch, so concurrent replays lose too.
        now = time.time()
        if self._seen_signatures.get(signature) is not None:
            return web.json_response({"error": "invalid request"}, status=401)
        self._seen_signatures[signature] = now
        if len(self._seen_signatures) > 64:
            cutoff = now - REPLAY_WINDOW_SECONDS
            for sig in [k for k, t in self._seen_signatures.items() if t < cutoff]:
                del self._seen_signatures[sig]
        bolt_request = await to_bolt_request(request)
        bolt_response = await self.app.async_dispatch(bolt_request)
        return await to_aiohttp_response(bolt_response)

    async def stop(self) -> None:
        if self._socket is not None:
            socket, self._socket = self._socket, None
            try:
                await socket.close_async()  # type: ignore[no-untyped-call]
            except Exception:  # closing must not fail the shutdown of the other platforms
                log.exception("slack: closing Socket Mode failed")
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    # ------------------------------------------------------------------ /papers

    async def _run_command(
        self, body: Mapping[str, Any], respond: Callable[..., Awaitable[Any]], client: AsyncWebClient
    ) -> None:
        try:
            command = await self._to_command(body, client)
            reply = await self._service.handle(command)
        except Exception:
            # The user already got the ack; a crash must still end in a readable answer, never silence.
            log.exception("slack: /papers failed")
            reply = Reply(
                "Sorry, that command failed on our side. It has been logged; please try again later.",
                is_error=True,
            )
        await self._respond(respond, reply)

    async def _to_command(self, body: Mapping[str, Any], client: AsyncWebClient) -> Command:
        name, args = parse_line(str(body.get("text") or ""))
        team_id = str(body.get("team_id") or "")
        user_id = str(body.get("user_id") or "")
        channel_id = str(body.get("channel_id") or "")
        is_dm = channel_id.startswith("D") or body.get("channel_name") == "directmessage"
        user = UserRef(PLATFORM, user_id, str(body.get("user_name") or ""), team_id)
        channel = (
            ChannelRef(
                PLATFORM,
                channel_id,
                team_id,
                kind="dm" if is_dm else "text",
                name=str(body.get("channel_name") or ""),
            )
            if channel_id
            else None
        )
        return Command(
            name=name or "help",
            args=args,
            user=user,
            channel=channel,
            is_admin=await self.is_admin(team_id, user_id, client),
            received_at=datetime.now(UTC),
        )

    async def is_admin(self, team_id: str, user_id: str, client: AsyncWebClient | None = None) -> bool:
        """Workspace admin/owner per users.info (cached briefly), or listed in PAPERBOY_ADMINS."""
        if self._settings.is_listed_admin(PLATFORM, user_id):
            return True
        key = (team_id, user_id)
        cached = self._admin_cache.get(key)
        now = self._clock()
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            if client is not None and client.token:
                response = await client.users_info(user=user_id)
            else:
                token = await self._tokens.bot_token(team_id)
                if token is None:
                    return False
                response = await self.client.users_info(token=token, user=user_id)
            info = response.get("user") or {}
            admin = bool(info.get("is_admin") or info.get("is_owner") or info.get("is_primary_owner"))
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            # Unknown means "not admin" (fail closed), and is not cached so the next try asks again.
            log.warning("slack: users.info for %s failed: %s", user_id, scrub(_describe(exc)))
            return False
        self._admin_cache[key] = (now + self._admin_ttl, admin)
        return admin

    async def _respond(self, respond: Callable[..., Awaitable[Any]], reply: Reply) -> None:
        messages = render_reply(reply)
        if len(messages) > MAX_RESPONSES:
            log.warning("slack: reply of %d messages cut to %d (response_url budget)", len(messages), MAX_RESPONSES)
            messages = messages[:MAX_RESPONSES]
        response_type = "ephemeral" if reply.private else "in_channel"
        for message in messages:
            try:
                result = await respond(
                    text=message.text,
                    blocks=list(message.blocks),
                    response_type=response_type,
                    replace_original=False,
                )
                status = getattr(result, "status_code", 200)
                if status != 200:
                    log.warning("slack: response_url answered %s: %s", status, getattr(result, "body", ""))
            except Exception:
                log.exception("slack: respond() failed")
                return

    # ------------------------------------------------------------------ sending (threads, DMs)

    async def send(
        self, delivery: Delivery, reply: Reply, *, thread_name: str | None, parent_id: str | None
    ) -> SendOutcome:
        try:
            target = SlackTarget.parse(delivery.target)
        except ValueError as exc:
            return SendOutcome(ok=False, error=str(exc), permanent=True)
        if delivery.kind == "post" and not parent_id:
            return SendOutcome(ok=False, error="a thread post needs its opener's ts", permanent=False)
        if delivery.kind not in ("opener", "post", "dm"):
            return SendOutcome(ok=False, error=f"unknown delivery kind {delivery.kind!r}", permanent=True)
        try:
            token = await self._tokens.bot_token(target.team_id)
            if token is None:
                return SendOutcome(ok=False, error=f"not installed in workspace {target.team_id}", permanent=True)
            channel = await self._dm_channel(target, token) if delivery.kind == "dm" else target.id
            messages = render_reply(reply, header=thread_name if delivery.kind == "opener" else None)
            existing: dict[int, str] = {}
            if delivery.attempts > 1:
                try:
                    existing = await self._reconcile(delivery, token, channel, parent_id)
                except SlackApiError as exc:
                    # Without the read-back we cannot rule out a duplicate, so nothing is posted (reading a
                    # DM back needs im:history, channels need channels:history / groups:history).
                    failed = self._outcome(exc)
                    return replace(failed, error=f"could not check for an earlier attempt: {failed.error}")
            first_ts = existing.get(0)
            for part, message in enumerate(messages):
                if part in existing:
                    continue
                thread_ts = (
                    parent_id
                    if delivery.kind == "post"
                    else (first_ts if part > 0 and delivery.kind == "opener" else None)
                )
                ts = await self._post(token, channel, message, thread_ts, self._metadata(delivery, part, len(messages)))
                if part == 0:
                    first_ts = ts
            if existing:
                log.info(
                    "slack: %s reconciled, %d of %d parts were already posted",
                    delivery.key,
                    len(existing),
                    len(messages),
                )
            return SendOutcome(ok=True, message_id=first_ts)
        except SlackApiError as exc:
            return self._outcome(exc)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return SendOutcome(ok=False, error=scrub(f"network error talking to Slack: {_describe(exc)}"))

    @staticmethod
    def _metadata(delivery: Delivery, part: int, parts: int) -> dict[str, Any]:
        payload: dict[str, Any] = {"ledger_key": delivery.key, "ledger_id": delivery.id}
        if parts > 1:
            payload.update(part=part, parts=parts)
        return {"event_type": METADATA_EVENT, "event_payload": payload}

    async def _post(
        self, token: str, channel: str, message: SlackMessage, thread_ts: str | None, metadata: dict[str, Any]
    ) -> str:
        await self._pace(channel)
        response = await self.client.chat_postMessage(
            token=token,
            channel=channel,
            text=message.text,
            blocks=list(message.blocks),
            thread_ts=thread_ts,
            metadata=metadata,
            unfurl_links=False,
            unfurl_media=False,
        )
        return str(response["ts"])

    async def _pace(self, channel: str) -> None:
        """About one message per second per channel, as chat.postMessage asks."""
        if self._post_interval <= 0:
            return
        lock = self._channel_locks.setdefault(channel, asyncio.Lock())
        async with lock:
            wait = self._last_post.get(channel, float("-inf")) + self._post_interval - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last_post[channel] = self._clock()

    async def _dm_channel(self, target: SlackTarget, token: str) -> str:
        key = (target.team_id, target.id)
        channel = self._dm_channels.get(key)
        if channel is None:
            response = await self.client.conversations_open(token=token, users=target.id)
            channel = str((response.get("channel") or {})["id"])
            self._dm_channels[key] = channel
        return channel

    async def _reconcile(self, delivery: Delivery, token: str, channel: str, parent_id: str | None) -> dict[int, str]:
        """Parts of this delivery already in Slack: {part: ts}. Reads the thread (posts) or recent history."""
        found: dict[int, str] = {}
        if delivery.kind == "post" and parent_id:
            await self._scan(found, delivery, "conversations_replies", token=token, channel=channel, ts=parent_id)
            return found
        oldest = self._oldest(delivery)
        await self._scan(found, delivery, "conversations_history", token=token, channel=channel, oldest=f"{oldest:.6f}")
        if 0 in found and delivery.kind == "opener":
            # An opener's further parts live in its own thread.
            await self._scan(found, delivery, "conversations_replies", token=token, channel=channel, ts=found[0])
        return found

    def _oldest(self, delivery: Delivery) -> float:
        """Where the history read-back starts: the row's creation, with an hour of margin for clock skew (the
        ledger's clock is ours, the ts is Slack's), never later than an hour ago, never before the window."""
        now = time.time()
        oldest = now - self._reconcile_window
        if delivery.created is not None:
            created = delivery.created if delivery.created.tzinfo else delivery.created.replace(tzinfo=UTC)
            oldest = max(oldest, created.timestamp() - 3600)
        return min(oldest, now - 3600)

    async def _scan(self, found: dict[int, str], delivery: Delivery, method: str, **args: Any) -> None:
        call = getattr(self.client, method)
        cursor: str | None = None
        for _ in range(50):  # bounded: a thread or a few days of a channel, 200 at a time
            response = await call(include_all_metadata=True, limit=200, cursor=cursor, **args)
            for message in response.get("messages") or ():
                meta = message.get("metadata") or {}
                payload = meta.get("event_payload") or {}
                if meta.get("event_type") == METADATA_EVENT and payload.get("ledger_key") == delivery.key:
                    found.setdefault(int(payload.get("part", 0)), str(message["ts"]))
            cursor = ((response.get("response_metadata") or {}).get("next_cursor")) or None
            if not cursor:
                return

    @staticmethod
    def _outcome(exc: SlackApiError) -> SendOutcome:
        response = exc.response
        error = str(response.get("error") or "unknown_error")
        status = int(getattr(response, "status_code", 200) or 200)
        if error in UNREACHABLE_ERRORS:
            return SendOutcome(
                ok=False, error=f"{error}: {UNREACHABLE_ERRORS[error]}", permanent=True, unreachable_user=True
            )
        if error in PERMANENT_ERRORS:
            return SendOutcome(ok=False, error=f"{error}: {PERMANENT_ERRORS[error]}", permanent=True)
        retry_after: float | None = None
        headers = getattr(response, "headers", None) or {}
        raw = headers.get("Retry-After") or headers.get("retry-after")
        if isinstance(raw, list):
            raw = raw[0] if raw else None
        if raw is not None:
            try:
                retry_after = float(raw)
            except ValueError:
                retry_after = None
        if status == 429 or error == "ratelimited":
            return SendOutcome(
                ok=False,
                error="ratelimited: Slack asked us to slow down",
                retry_after=30.0 if retry_after is None else retry_after,
            )
        if status >= 500:
            return SendOutcome(ok=False, error=f"Slack server error (HTTP {status}): {error}", retry_after=retry_after)
        return SendOutcome(ok=False, error=scrub(f"Slack error: {error}"), retry_after=retry_after)


class _DropTokenFromEnvWarning(logging.Filter):
    """bolt reads SLACK_BOT_TOKEN from the environment on its own and then warns that it ignores it in favour of
    our client and authorize function. That is the intended setup, so the warning would only confuse operators."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return (
            "`token` will be unused" not in message and "SLACK_BOT_TOKEN env variable) will be ignored" not in message
        )


def _bolt_logger() -> logging.Logger:
    logger = logging.getLogger("paperboy.slack.bolt")
    if not any(isinstance(f, _DropTokenFromEnvWarning) for f in logger.filters):
        logger.addFilter(_DropTokenFromEnvWarning())
    return logger


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SlackApiError):
        return str(exc.response.get("error") or "unknown_error")
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
