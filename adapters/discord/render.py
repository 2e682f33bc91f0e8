"""Reply -> Discord message payloads. Pure: no I/O, no client; everything is clamped to Discord's limits.

Contract with the core: `Reply.text` is core-authored and may use light markdown (`code`, **bold**), so
only mentions are neutralised in it. Everything inside a `Card` (titles, abstracts, author names, field
values, footers) is treated as untrusted plain text: markdown is escaped and mentions neutralised.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import discord

from bot.models import Card, Reply

CONTENT_MAX = 2000
TITLE_MAX = 256
DESCRIPTION_MAX = 4096
FIELDS_MAX = 25
FIELD_NAME_MAX = 256
FIELD_VALUE_MAX = 1024
FOOTER_MAX = 2048
AUTHOR_MAX = 256
EMBEDS_PER_MESSAGE = 10
EMBED_TOTAL_MAX = 6000
THREAD_NAME_MAX = 100
URL_MAX = 2048
ELLIPSIS = "…"
EMBED_COLOUR = 0xB31B1B  # arXiv red, so paper cards are recognisable at a glance

# A zero-width space after the trigger character keeps the text readable but stops Discord from
# parsing a mention; allowed_mentions=none is the second line of defence.
_ZWSP = "\u200b"
_MASS_MENTION = re.compile(r"@(everyone|here)", re.IGNORECASE)
_ID_MENTION = re.compile(r"<(@[!&]?|#|/[^>\s:]{1,32}:)(\d{1,25})>")
_MARKDOWN_CHARS = frozenset("\\_*~`|>#[]")
_LINE_START = re.compile(r"^(\s*)([-+]|\d+\.)(?=\s)", re.MULTILINE)
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class MessagePayload:
    """One Discord message: what `channel.send(content, embeds=...)` or a followup takes."""

    content: str
    embeds: tuple[discord.Embed, ...] = ()


def neutralise_mentions(text: str) -> str:
    """Make @everyone, @here, <@id>, <@!id>, <@&id>, <#id> and command mentions inert (still readable)."""
    text = _MASS_MENTION.sub(lambda m: "@" + _ZWSP + m.group(1), text)
    return _ID_MENTION.sub(lambda m: "<" + m.group(1) + _ZWSP + m.group(2) + ">", text)


def escape_markdown(text: str) -> str:
    """Escape Discord markdown so untrusted text renders literally.

    A backslash before any markdown character (and before another backslash) is how Discord shows the
    character itself, so `$x_i^*$` still reads as `$x_i^*$` and `\\alpha` as `\\alpha`: LaTeX stays readable
    and an abstract cannot turn into italics, spoilers, headings, quotes or masked links.
    """
    out = "".join("\\" + ch if ch in _MARKDOWN_CHARS else ch for ch in text)
    # List markers only matter at the start of a line.
    return _LINE_START.sub(lambda m: m.group(1) + "\\" + m.group(2), out)


def safe_text(text: str) -> str:
    """Untrusted plain text -> inert Discord markdown."""
    # Mentions first: escaping would put a backslash before the closing `>` and hide the pattern.
    return escape_markdown(neutralise_mentions(text))


def truncate(text: str, limit: int) -> str:
    """Cut to `limit` characters, marking the cut with an ellipsis (never splitting a backslash escape)."""
    if len(text) <= limit:
        return text
    if limit <= 0:
        return ""
    cut = text[: limit - 1]
    # A trailing lone backslash would escape the ellipsis; an odd count means it was half of an escape.
    trailing = len(cut) - len(cut.rstrip("\\"))
    if trailing % 2:
        cut = cut[:-1]
    return cut + ELLIPSIS


def clamp_thread_name(name: str) -> str:
    """A valid thread name: one line, 1..100 characters."""
    flat = _SPACES.sub(" ", name).strip()
    if not flat:
        return "papers"
    return truncate(flat, THREAD_NAME_MAX)


def _safe_url(url: str | None) -> str | None:
    """Only http(s) URLs of sane length: Discord rejects the whole message for a bad embed URL."""
    if not url:
        return None
    url = url.strip().replace(" ", "%20").replace(")", "%29").replace("(", "%28")
    if not url.startswith(("https://", "http://")) or len(url) > URL_MAX:
        return None
    return url


def _links_line(card: Card) -> str:
    parts = []
    for label, url in card.links:
        safe = _safe_url(url)
        if safe is None:
            continue
        label_text = safe_text(_SPACES.sub(" ", label).strip()) or "link"
        parts.append(f"[{truncate(label_text, 80)}]({safe})")
    return " · ".join(parts)


def embed_length(embed: discord.Embed) -> int:
    """The characters Discord counts toward the 6000 total (title, description, fields, footer, author)."""
    return len(embed)


def card_to_embed(card: Card) -> discord.Embed:
    """One card -> one embed within every per-embed limit, including the 6000 total."""
    title = truncate(safe_text(_SPACES.sub(" ", card.title).strip()) or "(untitled)", TITLE_MAX)
    description = truncate(safe_text(card.body), DESCRIPTION_MAX)
    fields: list[tuple[str, str, bool]] = []
    for f in card.fields:
        name = truncate(safe_text(f.name.strip()), FIELD_NAME_MAX) or "\u200b"
        value = truncate(safe_text(f.value.strip()), FIELD_VALUE_MAX) or "\u200b"
        fields.append((name, value, f.inline))
    links = _links_line(card)
    if links:
        # Keep the links even when the card has many fields: they are what the reader clicks.
        fields = fields[: FIELDS_MAX - 1]
        fields.append(("Links", _clamp_links(links), False))
    else:
        fields = fields[:FIELDS_MAX]
    footer = truncate(safe_text(card.footer.strip()), FOOTER_MAX)

    # Over 6000 in total (one card alone): shrink the least important parts first, with floors, so the
    # card keeps a readable abstract, its field names and its links.
    def excess() -> int:
        return _size(title, description, fields, footer) - EMBED_TOTAL_MAX

    if excess() > 0:
        footer = truncate(footer, 200)
    while excess() > 0:
        longest = max((i for i, f in enumerate(fields) if f[0] != "Links"), key=lambda i: len(fields[i][1]),
                      default=None)
        if longest is None or len(fields[longest][1]) <= 100:
            break
        n, v, inline = fields[longest]
        fields[longest] = (n, truncate(v, max(100, len(v) - excess())), inline)
    if excess() > 0:
        description = truncate(description, max(1000, len(description) - excess()))
    if excess() > 0:
        fields = [(truncate(n, 64), v, inline) for n, v, inline in fields]
    while excess() > 0 and any(f[0] != "Links" for f in fields):
        # Pathological cards (25 huge fields): drop trailing fields, keeping the links.
        drop = max(i for i, f in enumerate(fields) if f[0] != "Links")
        del fields[drop]
    if excess() > 0:
        description = truncate(description, max(0, len(description) - excess()))

    embed = discord.Embed(title=title, url=_safe_url(card.url), description=description or None,
                          colour=EMBED_COLOUR)
    for n, v, inline in fields:
        embed.add_field(name=n, value=v, inline=inline)
    if footer:
        embed.set_footer(text=footer)
    return embed


def _size(title: str, description: str, fields: list[tuple[str, str, bool]], footer: str) -> int:
    return len(title) + len(description) + len(footer) + sum(len(n) + len(v) for n, v, _ in fields)


def _clamp_links(links: str) -> str:
    if len(links) <= FIELD_VALUE_MAX:
        return links
    # Never cut inside a masked link: drop whole links from the end instead.
    parts = links.split(" · ")
    while parts and len(" · ".join(parts)) > FIELD_VALUE_MAX:
        parts.pop()
    return " · ".join(parts) or ELLIPSIS


def split_text(text: str, limit: int = CONTENT_MAX) -> list[str]:
    """Split long text into chunks of at most `limit`, preferring line breaks, then spaces."""
    chunks: list[str] = []
    rest = text
    while len(rest) > limit:
        cut = rest.rfind("\n", 0, limit + 1)
        if cut < limit // 2:
            cut = rest.rfind(" ", 0, limit + 1)
        if cut < limit // 2:
            cut = limit
        head = rest[:cut]
        # Do not leave a dangling escape backslash at the end of a chunk.
        if (len(head) - len(head.rstrip("\\"))) % 2:
            head = head[:-1]
        chunks.append(head.rstrip() or head)
        rest = rest[len(head):].lstrip("\n")
    if rest or not chunks:
        chunks.append(rest)
    return chunks


def render_reply(reply: Reply) -> list[MessagePayload]:
    """A reply -> one or more messages, each within Discord's limits; never drops a card.

    The text leads; cards follow as embeds, packed 10 per message and at most 6000 characters per message.
    """
    text_chunks = [c for c in split_text(neutralise_mentions(reply.text.strip())) if c.strip()]
    embeds = [card_to_embed(card) for card in reply.cards]

    batches: list[list[discord.Embed]] = []
    current: list[discord.Embed] = []
    current_len = 0
    for embed in embeds:
        size = embed_length(embed)
        if current and (len(current) >= EMBEDS_PER_MESSAGE or current_len + size > EMBED_TOTAL_MAX):
            batches.append(current)
            current, current_len = [], 0
        current.append(embed)
        current_len += size
    if current:
        batches.append(current)

    messages: list[MessagePayload] = [MessagePayload(content=c) for c in text_chunks[:-1]]
    last_text = text_chunks[-1] if text_chunks else ""
    if batches:
        messages.append(MessagePayload(content=last_text, embeds=tuple(batches[0])))
        messages.extend(MessagePayload(content="", embeds=tuple(b)) for b in batches[1:])
    elif last_text:
        messages.append(MessagePayload(content=last_text))
    if not messages:
        # Discord refuses an empty message; an empty reply still has to answer the interaction.
        messages.append(MessagePayload(content="(nothing to show)"))
    return messages
