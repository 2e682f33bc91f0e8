"""Hypothesis strategies for hostile chat input, and the checks every reply must pass on every platform."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hypothesis import strategies as st

from bot.commands import ALIASES, COMMANDS
from bot.models import Reply

# What people (and attackers) actually type: mentions and mass pings in both platforms' syntaxes, bidi and
# zero-width characters, emoji sequences, markdown/mrkdwn, SQL- and FTS5-looking text, control characters,
# format strings, ids and URLs, and the keywords of `settings`.
SPECIALS = (
    "<!channel>", "<!here>", "<!everyone>", "<!subteam^S123>", "@everyone", "@here", "@EVERYONE", "<@U123>",
    "<@W0ABC|bob>", "<@123456789012345678>", "<@!123456789012345678>", "<@&123456789012345678>", "<#C0123>",
    "<#123456789012345678>", "</papers search:123456789012345678>", "\u202e", "\u202d", "\u2066", "\u200d",
    "\u200b", "\ufeff", "👨\u200d👩\u200d👧", "🧪", "🇺🇦", "e\u0301", "'; DROP TABLE papers; --", "' OR 1=1 --",
    '"', '""', "*", "**", "NEAR(", "NEAR(a b, 2)", "AND", "OR", "NOT", "-", "--", "(", ")", "((", "{", "}", "^",
    "ti:", "au:", "abs:", "cat:", "cat:cs.LG", "since:", "since:2026-13-45", "since:-1", "title:", "papers_fts:",
    "rank", "\x00", "\x07", "\x1b[31m", "\r\n", "\n", "\t", "**bold**", "*b*", "_i_", "~s~", "`code`", "```",
    "> quote", "[x](https://evil.example)", "<https://evil.example|click>", "%s", "%(x)s", "{0}", "{}", "\\",
    "\\u0000", "2401.01234", "2401.01234v9", "hep-th/9901001", "https://arxiv.org/abs/2401.01234", "time",
    "timezone", "cap", "weekends", "on", "off", "25:99", "09:00", "Mars/Olympus", "Europe/Berlin", "-1", "0",
    "999999999999999999999", "1e309", "NaN", "null", "None", "help", "search", "/papers", "|", "&amp;", "&lt;",
)

words = st.one_of(st.sampled_from(SPECIALS), st.text(max_size=24))
args_text = st.lists(words, max_size=12).map(" ".join)
long_text = st.builds(lambda chunk, n: (chunk * n)[:n],
                      st.sampled_from(["a", "é", "🧪", "\u202e", '"', "(", "*", "<!channel> ", "a OR ", "\x00"]),
                      st.integers(min_value=900, max_value=10_000))
any_args = st.one_of(args_text, args_text, args_text, long_text)
_REAL = st.sampled_from([c.name for c in COMMANDS])
# Mostly real commands (where the arguments matter); aliases and garbage names now and then.
command_names = st.one_of(_REAL, _REAL, _REAL, _REAL, st.sampled_from(sorted(ALIASES)), st.text(max_size=12))


FUZZED: dict[str, int] = {}  # inputs run per fuzz test in this session (tests/reliability/conftest.py reports them)


def fuzzed(name: str) -> None:
    FUZZED[name] = FUZZED.get(name, 0) + 1


def examples(default: int) -> int:
    """`PAPERBOY_FUZZ_EXAMPLES` scales every fuzz test (the full run); CI uses the defaults."""
    raw = os.environ.get("PAPERBOY_FUZZ_EXAMPLES", "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else default


_SLACK_LIVE = re.compile(r"<[!@#]")  # <!channel>, <@U123>, <#C1>: only ever written escaped
_DISCORD_MASS = re.compile(r"@(everyone|here)", re.IGNORECASE)
_DISCORD_ID = re.compile(r"<(@[!&]?|#|/[^>\s:]{1,32}:)\d+>")


def _slack_texts(value: Any) -> Iterator[str]:
    """Every mrkdwn string inside Block Kit (plain_text objects are never parsed for mentions)."""
    if isinstance(value, dict):
        if value.get("type") == "mrkdwn" and isinstance(value.get("text"), str):
            yield value["text"]
        for v in value.values():
            yield from _slack_texts(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _slack_texts(v)


def check_reply(reply: Reply) -> None:
    """A helpful reply that no platform renders as a live mention, within every platform limit."""
    from adapters.discord.render import render_reply as discord_render
    from adapters.slack.render import render_reply as slack_render

    assert isinstance(reply, Reply)
    assert reply.text.strip() or reply.cards, "an empty reply"
    assert "Traceback" not in reply.text
    for message in slack_render(reply):
        for text in [message.text, *_slack_texts(list(message.blocks))]:
            assert not _SLACK_LIVE.search(text), f"live Slack mention in {text[:200]!r}"
    for payload in discord_render(reply):
        texts = [payload.content]
        for embed in payload.embeds:
            d: dict[str, Any] = dict(embed.to_dict())
            footer: dict[str, Any] = d.get("footer") or {}
            texts += [str(d.get("title") or ""), str(d.get("description") or ""), str(footer.get("text") or "")]
            texts += [str(f.get("name")) + " " + str(f.get("value")) for f in d.get("fields") or []]
        assert len(payload.content) <= 2000
        for text in texts:
            assert not _DISCORD_MASS.search(text), f"live Discord mass mention in {text[:200]!r}"
            assert not _DISCORD_ID.search(text), f"live Discord mention in {text[:200]!r}"


class ErrorLog(logging.Handler):
    """Collects ERROR records: the router turns a handler's exception into a polite reply and logs it, so a
    fuzz test must look here to see an unhandled exception."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def describe(self) -> str:
        return "\n".join(self.format(r) + ("\n" + logging.Formatter().formatException(r.exc_info)
                                           if r.exc_info else "") for r in self.records[:3])


@contextmanager
def error_log() -> Iterator[ErrorLog]:
    handler = ErrorLog()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
