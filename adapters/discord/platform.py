"""Discord through discord.py: `/papers` slash commands, daily threads (text channel or forum) and DM alerts.

The adapter only translates. Commands go to the shared `CommandService` (admin rights are computed here
from the member's real permissions and enforced by the core Router); replies are rendered by
`render.py`; deliveries come from the ledger and go out idempotently (a nonce per message derived from
the ledger key, plus thread reconciliation on retries).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import json
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Literal

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.http import Route, handle_message_parameters
from discord.utils import MISSING

from adapters.discord.render import MessagePayload, clamp_thread_name, render_reply, truncate
from bot.commands import COMMANDS, CommandSpec, join_options
from bot.models import ChannelRef, Command, Delivery, Reply, UserRef
from bot.ports import CommandService, SendOutcome, StatusStore
from bot.settings import Settings

log = logging.getLogger(__name__)

COMMANDS_HASH_KEY = "discord:commands_hash"
THREAD_ARCHIVE_MINUTES: Literal[60, 1440, 4320, 10080] = 1440  # a day: the next daily thread replaces it

# Discord JSON error codes the adapter reacts to.
UNKNOWN_CHANNEL = 10003
UNKNOWN_MESSAGE = 10008
MISSING_ACCESS = 50001
CANNOT_DM_USER = 50007
MISSING_PERMISSIONS = 50013
THREAD_ARCHIVED = 50083
NO_MUTUAL_GUILD = 50278
THREAD_ALREADY_EXISTS = 160004

_FORUM_TYPES = (discord.ChannelType.forum, discord.ChannelType.media)
_THREAD_TYPES = (discord.ChannelType.public_thread, discord.ChannelType.private_thread,
                 discord.ChannelType.news_thread)
_DM_TYPES = (discord.ChannelType.private, discord.ChannelType.group)


class DiscordStartError(RuntimeError):
    """Login or gateway connection failed; the message is safe to show (never contains the token)."""


def message_nonce(key: str, index: int) -> str:
    """A stable nonce (<= 25 characters, Discord's limit) for message `index` of ledger row `key`.

    Sent with enforce_nonce, Discord returns the existing message for a repeated nonce instead of posting
    it again, so a retry after a crash between "sent" and "marked sent" does not duplicate.
    """
    return hashlib.sha256(f"{key}#{index}".encode()).hexdigest()[:25]


def parse_target(target: str) -> tuple[str, int]:
    """`discord:<guild_id>:<channel_or_user_id>` -> (guild id or "", id)."""
    platform, sep, rest = target.partition(":")
    workspace, sep2, ident = rest.rpartition(":")
    if platform != "discord" or not sep or not sep2 or not ident.isdigit():
        raise ValueError(f"not a Discord target: {target!r}")
    return workspace, int(ident)


def command_payload(tree: app_commands.CommandTree[Any], guild: discord.abc.Snowflake | None) -> list[dict[str, Any]]:
    """What `tree.sync()` would PUT, so the adapter can tell whether the table changed."""
    return [cmd.to_dict(tree) for cmd in tree.get_commands(guild=guild)]


class DiscordPlatform:
    name = "discord"

    def __init__(
        self,
        settings: Settings,
        service: CommandService,
        meta: StatusStore,
        *,
        ready_timeout: float = 60.0,
        send_timeout: float = 120.0,
        max_ratelimit_timeout: float = 60.0,
        guild_ready_timeout: float = 2.0,
    ) -> None:
        self._settings = settings
        self._service = service
        self._meta = meta
        self._ready_timeout = ready_timeout
        self._send_timeout = send_timeout
        self._token = Settings.secret(settings.discord_token) or ""
        self._client = discord.Client(
            intents=discord.Intents.default(),
            max_ratelimit_timeout=max(30.0, max_ratelimit_timeout),  # discord.py refuses less than 30 s
            allowed_mentions=discord.AllowedMentions.none(),
            guild_ready_timeout=guild_ready_timeout,
        )
        self._tree: app_commands.CommandTree[discord.Client] = app_commands.CommandTree(self._client)
        self._tree.add_command(self._build_group())
        self._tree.error(self._on_tree_error)
        self._task: asyncio.Task[None] | None = None
        self._saved_endpoints: tuple[str, yarl.URL] | None = None

    @property
    def client(self) -> discord.Client:
        return self._client

    @property
    def tree(self) -> app_commands.CommandTree[discord.Client]:
        return self._tree

    # ---- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        if not self._token:
            raise DiscordStartError("DISCORD_TOKEN is not set")
        # discord.py keeps these as class attributes: the only switch it offers for another endpoint.
        self._saved_endpoints = (Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
        if self._settings.discord_api_base:
            Route.BASE = self._settings.discord_api_base.rstrip("/")
        if self._settings.discord_gateway_url:
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self._settings.discord_gateway_url)
        try:
            await asyncio.wait_for(self._client.login(self._token), self._ready_timeout)
        except discord.LoginFailure as exc:
            await self.stop()
            raise DiscordStartError("Discord rejected the bot token (401); check DISCORD_TOKEN") from exc
        except (discord.HTTPException, aiohttp.ClientError, OSError, TimeoutError) as exc:
            await self.stop()
            raise DiscordStartError(f"could not log in to Discord: {self._scrub(str(exc)) or type(exc).__name__}") \
                from exc
        await self._sync_commands()
        self._task = asyncio.create_task(self._client.connect(reconnect=True), name="discord-gateway")
        ready = asyncio.create_task(self._client.wait_until_ready())
        done, _ = await asyncio.wait({ready, self._task}, timeout=self._ready_timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if ready in done:
            return
        ready.cancel()
        reason = "timed out"
        if self._task in done:
            error = self._task.exception()
            reason = self._scrub(f"{type(error).__name__}: {error}") if error else "the gateway closed"
        await self.stop()
        raise DiscordStartError(f"Discord gateway not ready within {self._ready_timeout:g} s ({reason})")

    async def stop(self) -> None:
        await self._client.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._saved_endpoints is not None:
            Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = self._saved_endpoints
            self._saved_endpoints = None

    async def _sync_commands(self) -> None:
        """PUT the command table only when it changed: Discord caps command creates per day."""
        guild = discord.Object(id=self._settings.discord_guild_id) if self._settings.discord_guild_id else None
        if guild is not None:
            self._tree.copy_global_to(guild=guild)
        scope = f"guild:{guild.id}" if guild else "global"
        blob = json.dumps({"app": self._client.application_id, "scope": scope,
                           "commands": command_payload(self._tree, guild)}, sort_keys=True)
        digest = hashlib.sha256(blob.encode()).hexdigest()
        if await self._meta.get_meta(COMMANDS_HASH_KEY) == digest:
            log.info("discord: command table unchanged, not syncing")
            return
        try:
            await self._tree.sync(guild=guild)
        except discord.HTTPException as exc:
            # Existing commands keep working; the next start tries again because the hash was not stored.
            log.warning("discord: command sync failed (%s); will retry on next start", self._scrub(str(exc)))
            return
        await self._meta.set_meta(COMMANDS_HASH_KEY, digest)
        log.info("discord: synced %d commands (%s)", len(COMMANDS), scope)

    # ---- slash commands --------------------------------------------------------------------------

    def _build_group(self) -> app_commands.Group:
        group = app_commands.Group(name="papers", description="Research papers: search, daily threads, alerts")
        for spec in COMMANDS:
            group.add_command(self._build_command(spec))
        return group

    def _build_command(self, spec: CommandSpec) -> app_commands.Command[Any, ..., None]:
        async def callback(interaction: discord.Interaction, **values: str | None) -> None:
            await self._run_command(interaction, spec, values)

        # discord.py reads options from the callback's signature; one generated signature per spec keeps
        # the command table in bot/commands.py the single source of truth.
        params = [inspect.Parameter("interaction", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                    annotation=discord.Interaction)]
        for arg in sorted(spec.args, key=lambda a: not a.required):
            default = inspect.Parameter.empty if arg.required else None
            params.append(inspect.Parameter(arg.name, inspect.Parameter.KEYWORD_ONLY, annotation=str,
                                            default=default))
        callback.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        callback.__discord_app_commands_param_description__ = {  # type: ignore[attr-defined]
            a.name: truncate(a.help, 100) for a in spec.args}
        choices = {a.name: [app_commands.Choice(name=c, value=c) for c in a.choices] for a in spec.args if a.choices}
        if choices:
            callback.__discord_app_commands_param_choices__ = choices  # type: ignore[attr-defined]
        command: app_commands.Command[Any, ..., None] = app_commands.Command(
            name=spec.name, description=truncate(spec.summary, 100), callback=callback)
        for arg in spec.args:
            if arg.autocomplete:
                command.autocomplete(arg.name)(self._autocompleter(arg.name))
        return command

    def _autocompleter(
        self, arg_name: str
    ) -> Callable[[discord.Interaction, str], Coroutine[Any, Any, list[app_commands.Choice[str]]]]:
        async def complete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
            try:
                items = await self._service.complete(self._user_ref(interaction), arg_name, current)
            except Exception:
                log.exception("discord: autocomplete for %s failed", arg_name)
                return []
            return [app_commands.Choice(name=truncate(label, 100) or value[:100], value=value[:100])
                    for label, value in items[:25]]

        return complete

    async def _run_command(self, interaction: discord.Interaction, spec: CommandSpec,
                           values: Mapping[str, str | None]) -> None:
        ephemeral = not spec.shared
        try:
            # Acknowledge first: the 3-second deadline covers only this call.
            await interaction.response.defer(ephemeral=ephemeral, thinking=True)
        except discord.HTTPException as exc:
            log.warning("discord: could not acknowledge /papers %s: %s", spec.name, self._scrub(str(exc)))
            return
        try:
            command = self.command_from(interaction, spec, values)
            reply = await self._service.handle(command)
        except Exception:
            log.exception("discord: /papers %s failed", spec.name)
            reply = Reply(text=f"Sorry, `{spec.name}` failed on our side. It has been logged; please try again "
                               "later.", is_error=True)
        await self._answer(interaction, reply, deferred_ephemeral=ephemeral)

    async def _answer(self, interaction: discord.Interaction, reply: Reply, *, deferred_ephemeral: bool) -> None:
        """Followups after a defer. The first one replaces the "thinking" message and keeps its visibility,
        so a private reply to a public defer first removes that message."""
        ephemeral = deferred_ephemeral or reply.private
        try:
            messages = render_reply(reply)
        except Exception:
            log.exception("discord: could not render a reply")
            messages = [MessagePayload(content="Sorry, the answer could not be shown; it has been logged.")]
        try:
            if reply.private and not deferred_ephemeral:
                await interaction.delete_original_response()
            for message in messages:
                await interaction.followup.send(
                    content=message.content or MISSING, embeds=list(message.embeds), ephemeral=ephemeral,
                    allowed_mentions=discord.AllowedMentions.none())
        except discord.HTTPException as exc:
            log.warning("discord: could not answer an interaction: %s", self._scrub(str(exc)))

    async def _on_tree_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        log.error("discord: command error: %s", self._scrub(repr(error)))
        text = "Sorry, that command could not run. Please try again, or see `/papers help`."
        with contextlib.suppress(discord.HTTPException):
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True, allowed_mentions=discord.AllowedMentions.none())
            else:
                await interaction.response.send_message(text, ephemeral=True)

    def command_from(self, interaction: discord.Interaction, spec: CommandSpec,
                     values: Mapping[str, str | None]) -> Command:
        return Command(
            name=spec.name,
            args=join_options(spec, values),
            user=self._user_ref(interaction),
            channel=self._channel_ref(interaction),
            is_admin=self._is_admin(interaction),
            received_at=interaction.created_at,
        )

    @staticmethod
    def _user_ref(interaction: discord.Interaction) -> UserRef:
        user = interaction.user
        return UserRef("discord", str(user.id), user.name, str(interaction.guild_id or ""))

    @staticmethod
    def _channel_ref(interaction: discord.Interaction) -> ChannelRef | None:
        channel = interaction.channel
        workspace = str(interaction.guild_id or "")
        if channel is None:
            return None
        ctype = getattr(channel, "type", None)
        name = getattr(channel, "name", None) or ""
        if ctype in _DM_TYPES or interaction.guild_id is None:
            return ChannelRef("discord", str(channel.id), "", kind="dm")
        if ctype in _THREAD_TYPES and isinstance(channel, discord.Thread):
            # A command typed in a thread (a forum post, yesterday's daily thread) is about the channel the
            # daily threads live in: follow rules and queues belong to the parent.
            parent = channel.parent
            kind = "forum" if parent is not None and parent.type in _FORUM_TYPES else "text"
            return ChannelRef("discord", str(channel.parent_id), workspace, kind=kind,
                              name=parent.name if parent is not None else "")
        kind = "forum" if ctype in _FORUM_TYPES else "text"
        return ChannelRef("discord", str(channel.id), workspace, kind=kind, name=name)

    def _is_admin(self, interaction: discord.Interaction) -> bool:
        if self._settings.is_listed_admin("discord", str(interaction.user.id)):
            return True
        if interaction.guild_id is None:
            return False
        perms = interaction.permissions
        return bool(perms.manage_guild or perms.manage_channels or perms.administrator)

    # ---- delivery --------------------------------------------------------------------------------

    async def send(self, delivery: Delivery, reply: Reply, *, thread_name: str | None,
                   parent_id: str | None) -> SendOutcome:
        """Deliver one ledger row. Returns the thread id for openers (posts go into it), else the id of the
        first message the reply rendered to."""
        if self._client.user is None:
            # Not logged in (yet, or any more): nothing is wrong with the row, so leave it pending.
            return SendOutcome(ok=False, error="Discord is not connected; will retry")
        try:
            async with asyncio.timeout(self._send_timeout):
                message_id = await self._deliver(delivery, reply, thread_name, parent_id)
            return SendOutcome(ok=True, message_id=message_id)
        except discord.RateLimited as exc:
            return SendOutcome(ok=False, error=f"rate limited for {exc.retry_after:.0f} s", retry_after=exc.retry_after)
        except discord.HTTPException as exc:
            return self._outcome_for(exc, delivery)
        except ValueError as exc:
            return SendOutcome(ok=False, error=self._scrub(str(exc)), permanent=True)
        except (TimeoutError, aiohttp.ClientError, OSError, discord.ClientException) as exc:
            detail = self._scrub(str(exc)) or type(exc).__name__
            return SendOutcome(ok=False, error=f"Discord unreachable ({detail}); will retry")

    def _outcome_for(self, exc: discord.HTTPException, delivery: Delivery) -> SendOutcome:
        text = self._scrub(f"{exc.status} {exc.text or exc.response.reason}".strip())
        code = exc.code
        if delivery.kind == "dm" and (code in (CANNOT_DM_USER, NO_MUTUAL_GUILD) or exc.status == 403):
            return SendOutcome(ok=False, error=f"user does not accept DMs from the bot ({code or exc.status})",
                               permanent=True, unreachable_user=True)
        if exc.status == 401:
            # A revoked or rotated token is the operator's problem, not the channel's: keep the row pending.
            return SendOutcome(ok=False, error="Discord rejected the bot token (401); check DISCORD_TOKEN")
        if code == UNKNOWN_CHANNEL or (exc.status == 404 and code != UNKNOWN_MESSAGE):
            return SendOutcome(ok=False, error=f"channel no longer exists ({text})", permanent=True)
        if code in (MISSING_ACCESS, MISSING_PERMISSIONS) or exc.status == 403:
            return SendOutcome(ok=False, error=f"bot lacks access or permission in the channel ({text})",
                               permanent=True)
        if code == THREAD_ARCHIVED:
            return SendOutcome(ok=False, error=f"thread is archived and locked ({text})", permanent=True)
        if exc.status >= 500 or exc.status == 429:
            return SendOutcome(ok=False, error=f"Discord error {text}; will retry")
        # Any other 4xx means our request is wrong; repeating it cannot help.
        return SendOutcome(ok=False, error=f"Discord refused the message ({text})", permanent=True)

    async def _deliver(self, delivery: Delivery, reply: Reply, thread_name: str | None,
                       parent_id: str | None) -> str:
        _, target_id = parse_target(delivery.target)
        messages = render_reply(reply)
        nonces = [message_nonce(delivery.key, i) for i in range(len(messages))]
        http = self._client.http
        resuming = delivery.attempts > 1
        if delivery.kind == "dm":
            data = await http.start_private_message(target_id)
            ids = await self._post_all(int(data["id"]), messages, nonces, resuming=resuming)
            return ids[0]
        if delivery.kind == "post":
            if not parent_id:
                raise ValueError(f"post {delivery.key} has no thread id (its opener was not sent)")
            ids = await self._post_all(int(parent_id), messages, nonces, resuming=resuming)
            return ids[0]
        if delivery.kind != "opener":
            raise ValueError(f"unknown delivery kind {delivery.kind!r}")
        name = clamp_thread_name(thread_name or "papers")
        if resuming:
            existing = await self._find_thread(delivery, target_id, name)
            if existing is not None:
                return existing
        if await self._is_forum(target_id):
            return await self._forum_post(target_id, name, messages, nonces)
        first_id = (await self._post_all(target_id, messages[:1], nonces[:1], resuming=resuming))[0]
        try:
            thread = await http.start_thread_with_message(
                target_id, first_id, name=name, auto_archive_duration=THREAD_ARCHIVE_MINUTES)
            thread_id = str(thread["id"])
        except discord.HTTPException as exc:
            if exc.code != THREAD_ALREADY_EXISTS:
                raise
            # A resumed opener: the message exists and already has its thread, which bears its id.
            thread_id = first_id
        await self._post_all(int(thread_id), messages[1:], nonces[1:], resuming=resuming)
        return thread_id

    async def _forum_post(self, channel_id: int, name: str, messages: Sequence[MessagePayload],
                          nonces: Sequence[str]) -> str:
        first = messages[0]
        with handle_message_parameters(
            content=first.content or MISSING, embeds=list(first.embeds),
            allowed_mentions=discord.AllowedMentions.none(),
            channel_payload={"name": name, "auto_archive_duration": THREAD_ARCHIVE_MINUTES},
        ) as params:
            data = await self._client.http.start_thread_in_forum(channel_id, params=params)
        thread_id = str(data["id"])
        await self._post_all(int(thread_id), messages[1:], nonces[1:])
        return thread_id

    async def _find_thread(self, delivery: Delivery, channel_id: int, name: str) -> str | None:
        """On a retry, an earlier attempt may have created the thread: reuse an active one of ours with the
        same name in the same channel (forum posts take no nonce, so this is their only guard)."""
        guild, _ = parse_target(delivery.target)
        if not guild.isdigit():
            return None
        data = await self._client.http.get_active_threads(int(guild))
        me = self._client.user.id if self._client.user else None
        for thread in data.get("threads", []):
            if (str(thread.get("parent_id")) == str(channel_id) and thread.get("name") == name
                    and str(thread.get("owner_id")) == str(me)):
                return str(thread["id"])
        return None

    async def _is_forum(self, channel_id: int) -> bool:
        channel = self._client.get_channel(channel_id)
        if channel is not None:
            return getattr(channel, "type", None) in _FORUM_TYPES
        data = await self._client.http.get_channel(channel_id)
        return discord.enums.try_enum(discord.ChannelType, data["type"]) in _FORUM_TYPES

    async def _post_all(self, channel_id: int, messages: Sequence[MessagePayload], nonces: Sequence[str], *,
                        resuming: bool = False) -> list[str]:
        found = await self._already_posted(channel_id, messages) if resuming and messages else {}
        ids = []
        for i, (m, n) in enumerate(zip(messages, nonces, strict=True)):
            ids.append(found[i] if i in found else await self._post(channel_id, m, n))
        return ids

    async def _already_posted(self, channel_id: int, messages: Sequence[MessagePayload]) -> dict[int, str]:
        """Messages of ours in the channel's recent history that match what we are about to send.

        Discord honours a nonce for a few minutes only; a restart after a longer outage still must not
        post twice, so a retry (attempts > 1) compares with what is already there.
        """
        try:
            recent = await self._client.http.logs_from(channel_id, limit=50)
        except discord.HTTPException as exc:
            if exc.status >= 500:
                raise
            return {}  # no history access: fall back to the nonce alone
        me = str(self._client.user.id) if self._client.user else ""
        ours = [m for m in recent if str(m.get("author", {}).get("id")) == me]
        found: dict[int, str] = {}
        for i, message in enumerate(messages):
            want = _fingerprint(message.content, [e.to_dict() for e in message.embeds])
            for m in ours:
                if str(m["id"]) not in found.values() and _fingerprint(m.get("content") or "",
                                                                      list(m.get("embeds") or [])) == want:
                    found[i] = str(m["id"])
                    break
        return found

    async def _post(self, channel_id: int, message: MessagePayload, nonce: str) -> str:
        async def create() -> str:
            # With a nonce, discord.py also sets enforce_nonce: Discord then answers a repeat with the
            # message it already created.
            with handle_message_parameters(
                content=message.content or MISSING, embeds=list(message.embeds), nonce=nonce,
                allowed_mentions=discord.AllowedMentions.none(),
            ) as params:
                data = await self._client.http.send_message(channel_id, params=params)
            return str(data["id"])

        try:
            return await create()
        except discord.HTTPException as exc:
            if exc.code != THREAD_ARCHIVED:
                raise
        # Archived and locked: unlocking needs Manage Threads. Try once; if refused, the error is permanent.
        await self._client.http.edit_channel(channel_id, archived=False, locked=False)
        return await create()

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "[token]") if self._token else text


def _fingerprint(content: str, embeds: Sequence[Mapping[str, Any]]) -> tuple[str, tuple[tuple[str, str, str], ...]]:
    """What identifies a message we sent: its text and its embeds' titles, descriptions and URLs (two papers
    can share a title and an abstract; their URLs differ)."""
    return content, tuple((str(e.get("title") or ""), str(e.get("description") or ""), str(e.get("url") or ""))
                          for e in embeds)
