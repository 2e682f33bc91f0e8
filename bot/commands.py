"""The one command table, the text parser and the router. Every platform builds its commands from here."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.models import Command, Reply

if TYPE_CHECKING:
    from bot.deps import Deps

log = logging.getLogger(__name__)

MAX_ARGS_CHARS = 1000  # longer input is refused with a message, never passed on


@dataclass(frozen=True, slots=True)
class ArgSpec:
    name: str
    help: str
    required: bool = False
    keyword: bool = False  # in text form written as `name value` (settings time 09:00)
    autocomplete: str | None = None  # what a platform may offer: "subscriptions"
    choices: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CommandSpec:
    name: str
    summary: str  # <= 100 characters: Discord's description limit
    usage: str
    help: str
    args: tuple[ArgSpec, ...] = ()
    admin: bool = False
    examples: tuple[str, ...] = ()
    shared: bool = False  # the answer is useful to the whole channel (search results), not only the caller


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(
        "search",
        "Search papers: words, \"phrases\", OR, -not, prefix*, ti: abs: au: cat: since:",
        "search QUERY",
        "Ranked search over titles, abstracts and authors. Plain words must all match (stemmed); "
        '"a phrase" matches exactly; `a OR b`; `-word` or `NOT word` excludes; `transform*` is a prefix; '
        "`ti:` `abs:` `au:` restrict to title, abstract or authors; `cat:cs.LG` filters by category; "
        "`since:2026-01-01` filters by date.",
        (ArgSpec("query", "what to look for", required=True),),
        examples=('search "graph neural network" -survey', "search au:hinton cat:cs.LG since:2026-01-01"),
        shared=True,
    ),
    CommandSpec("today", "Papers announced today for this channel's topic", "today", "The papers of the latest "
                "announcement that match this channel's follow rule (or all of today's papers when it follows "
                "nothing).", shared=True),
    CommandSpec(
        "show",
        "Show one paper by arXiv id or URL",
        "show ARXIV_ID|URL",
        "One paper with its abstract and links. Accepts 2401.01234, 2401.01234v2, hep-th/9901001 or an "
        "arxiv.org or huggingface.co URL.",
        (ArgSpec("paper", "arXiv id or URL", required=True),),
        examples=("show 2401.01234",),
        shared=True,
    ),
    CommandSpec(
        "subscribe",
        "Get a DM when a new paper matches a query (shows a 30-day preview)",
        "subscribe QUERY",
        "Alerts use the same query language as search. The answer shows how many papers of the last 30 days "
        "would have matched and the latest three, so you can tighten or widen the query before it fires.",
        (ArgSpec("query", "the alert query, as in search", required=True),),
        examples=('subscribe "diffusion model" -survey', "subscribe au:lecun OR au:bengio"),
    ),
    CommandSpec(
        "unsubscribe",
        "Remove one of your alerts by number or by its query",
        "unsubscribe QUERY|NUMBER",
        "Remove an alert. Use the number shown by `subscriptions`, or the query text itself.",
        (ArgSpec("subscription", "number or query", required=True, autocomplete="subscriptions"),),
    ),
    CommandSpec("subscriptions", "List your alerts", "subscriptions", "Your alerts, numbered, with their queries."),
    CommandSpec("status", "Sources, queue and delivery health", "status",
                "When each source was last fetched and how it went, papers today, queued papers and pending "
                "messages, and recent failures."),
    CommandSpec(
        "why",
        "Explain whether and why a paper was or was not delivered here",
        "why ARXIV_ID",
        "Explains the delivery decision for this channel and for you: the channel's follow rule, your alerts "
        "that match or not, the delivery ledger state and the failure if any.",
        (ArgSpec("paper", "arXiv id or URL", required=True),),
    ),
    CommandSpec(
        "help",
        "How to use paperboy",
        "help [COMMAND]",
        "Lists the commands, or explains one.",
        (ArgSpec("command", "a command name"),),
    ),
    CommandSpec(
        "follow",
        "Admins: post a daily thread here for categories or a query",
        "follow CATEGORIES|QUERY",
        "Make this channel follow a topic: categories (`cs.LG cs.CL`) and/or a query "
        '(`cat:cs.LG "large language model"`). New matching papers are posted once a day in a thread.',
        (ArgSpec("topic", "categories like cs.LG cs.AI, or a query", required=True),),
        admin=True,
        examples=("follow cs.LG cs.AI", 'follow cat:cs.CL "machine translation"'),
    ),
    CommandSpec("unfollow", "Admins: stop the daily thread in this channel", "unfollow",
                "Stops the daily thread here. Queued papers are dropped; nothing already posted changes.",
                admin=True),
    CommandSpec(
        "settings",
        "Admins: daily post time, timezone, cap, weekends",
        "settings [time HH:MM] [timezone Area/City] [cap N] [weekends on|off]",
        "Show or change when this channel's thread is posted (local time and IANA timezone), how many papers "
        "it lists at most, and whether to post on days without an arXiv announcement.",
        (
            ArgSpec("time", "local post time, HH:MM", keyword=True),
            ArgSpec("timezone", "IANA timezone, e.g. Europe/Berlin", keyword=True),
            ArgSpec("cap", "at most this many papers per thread (1-100)", keyword=True),
            ArgSpec("weekends", "post on non-announcement days too", keyword=True, choices=("on", "off")),
        ),
        admin=True,
        examples=("settings time 08:30 timezone Europe/Berlin", "settings cap 20"),
    ),
    CommandSpec("post", "Admins: post this channel's pending thread now", "post",
                "Posts the queued papers as today's thread now, for setting up and checking a channel. "
                "Each paper is still posted at most once.", admin=True),
)

COMMANDS_BY_NAME: dict[str, CommandSpec] = {c.name: c for c in COMMANDS}
ALIASES = {"find": "search", "s": "search", "sub": "subscribe", "unsub": "unsubscribe", "subs": "subscriptions",
           "list": "subscriptions", "?": "help", "info": "show"}
PREFIXES = ("/papers", "!papers", "papers")


def parse_line(text: str) -> tuple[str, str]:
    """`/papers search gnn` or `search gnn` -> ('search', 'gnn'). Unknown names are kept for the router."""
    stripped = text.strip()
    for prefix in PREFIXES:
        if stripped.lower().startswith(prefix) and (len(stripped) == len(prefix) or stripped[len(prefix)].isspace()):
            stripped = stripped[len(prefix):].strip()
            break
    name, _, rest = stripped.partition(" ")
    name = name.strip().lower()
    name = ALIASES.get(name, name)
    return name, rest.strip()


def join_options(spec: CommandSpec, values: Mapping[str, str | None]) -> str:
    """Build the text form from named options (Discord), so every platform feeds the same parser."""
    parts: list[str] = []
    for arg in spec.args:
        value = values.get(arg.name)
        if value is None or str(value).strip() == "":
            continue
        parts.append(f"{arg.name} {value}" if arg.keyword else str(value))
    return " ".join(parts)


Handler = Callable[[Command, "Deps"], Awaitable[Reply]]


class RateLimiter:
    """Per-user sliding window, so one user cannot flood the bot (or the platform on its behalf)."""

    def __init__(self, limit: int = 20, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window_s
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}

    def allow(self, key: str) -> bool:
        now = self._clock()
        hits = self._hits.setdefault(key, deque())
        while hits and now - hits[0] > self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            return False
        hits.append(now)
        if len(self._hits) > 10_000:  # forget idle users so memory stays bounded
            for k in [k for k, v in self._hits.items() if not v or now - v[-1] > self.window]:
                del self._hits[k]
        return True


class Router:
    def __init__(self, handlers: Mapping[str, Handler], rate_limiter: RateLimiter | None = None) -> None:
        missing = set(COMMANDS_BY_NAME) - set(handlers)
        if missing:
            raise ValueError(f"no handler for {sorted(missing)}")
        self._handlers = dict(handlers)
        self._limiter = rate_limiter or RateLimiter()

    async def dispatch(self, command: Command, deps: Deps) -> Reply:
        from bot import replies  # local: replies imports models only, but keeps this module light

        if not self._limiter.allow(command.user.key):
            return replies.error("You are sending commands too fast; please wait a minute and try again.")
        spec = COMMANDS_BY_NAME.get(command.name)
        if spec is None:
            return replies.unknown_command(command.name)
        if len(command.args) > MAX_ARGS_CHARS:
            return replies.error(f"That is {len(command.args)} characters; `{spec.name}` takes at most "
                                 f"{MAX_ARGS_CHARS}.")
        if spec.admin and not command.is_admin:
            return replies.error(f"`{spec.name}` is for server/workspace admins (Manage Server or Manage "
                                 "Channels on Discord, admin or owner on Slack, or PAPERBOY_ADMINS).")
        required = [a for a in spec.args if a.required]
        if required and not command.args.strip():
            return replies.error(f"`{spec.name}` needs {required[0].help}. Usage: `{spec.usage}`"
                                 + (f" — e.g. `{spec.examples[0]}`" if spec.examples else ""))
        try:
            reply = await self._handlers[spec.name](command, deps)
        except Exception:
            # A bug must never take the bot down or leak a traceback into chat; it goes to the log.
            log.exception("command %s failed", spec.name)
            return replies.error(f"Sorry, `{spec.name}` failed on our side. It has been logged; please try "
                                 "again later.")
        try:
            notice = await deps.subscriptions.take_notice(command.user)
        except Exception:
            # The answer matters more than the notice, which stays owed and comes with a later command.
            log.exception("taking the notice for %s failed", command.user.key)
            notice = None
        if notice:
            reply = replies.with_notice(reply, notice)
        if command.is_admin and command.channel is not None:
            try:
                paused = await _pause_notice(command, deps)
            except Exception:
                log.exception("checking the pause notice for %s failed", command.channel.key)
                paused = None
            if paused:
                reply = replies.with_notice(reply, paused)
        return reply


async def _pause_notice(command: Command, deps: Deps) -> str | None:
    """Once per pause, the next admin command in a paused channel says why posting stopped there."""
    assert command.channel is not None
    rule = await deps.channels.get_rule(command.channel)
    if rule is None or not rule.paused_reason:
        return None
    key = f"pause-told:{command.channel.key}"
    if await deps.status.get_meta(key) == rule.paused_reason:
        return None
    await deps.status.set_meta(key, rule.paused_reason)
    return (f"Daily posts in this channel are paused: {rule.paused_reason}. Fix that (permissions, channel) and "
            "use `follow` again to resume; nothing queued is lost.")
