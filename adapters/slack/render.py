"""Reply -> Slack Block Kit messages. Pure: no I/O, no slack_sdk import; every limit is clamped here.

Slack parses `<...>` in mrkdwn as links and mentions (`<!channel>`, `<@U123>`), so every dynamic string is
escaped (`&`, `<`, `>`) before it enters a mrkdwn text object, and only this module writes `<url|label>`.
Plain-text objects (the header) are never parsed for mentions or links, so they carry the raw text: escaping
them would show a literal `&lt;` to the reader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bot.models import Card, Reply

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_HEADER_TEXT = 150
MAX_CONTEXT_ELEMENTS = 10
MAX_TEXT = 40_000
# Slack rejects messages whose blocks add up to roughly 12-13k characters (`msg_blocks_too_long`) although no
# single block is over its limit; stay well under it.
MAX_BLOCK_CHARS = 10_000
# The fallback `text` is what notifications and screen readers show; a summary is enough.
MAX_FALLBACK = 3000
MAX_TITLE = 300
MAX_CONTEXT_TEXT = 500  # 10 of them plus a full section stay under MAX_BLOCK_CHARS
ELLIPSIS = "…"

Block = dict[str, Any]

_ENTITY_TAIL = re.compile(r"&[a-z]{0,4}$")
_MD_LINK = re.compile(r"\[([^\]\n]{1,300})\]\((https?://[^\s)]{1,2000})\)")
_MD_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")


@dataclass(frozen=True, slots=True)
class SlackMessage:
    """One chat.postMessage / respond() body: fallback text plus blocks."""

    text: str
    blocks: tuple[Block, ...]

    def block_chars(self) -> int:
        return sum(_block_chars(b) for b in self.blocks)


def escape(text: str) -> str:
    """Slack's three control characters; nothing else is escaped (Slack says so)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clamp(text: str, limit: int) -> str:
    """Cut escaped text to `limit` characters with an ellipsis, never inside an `&amp;` entity."""
    if len(text) <= limit:
        return text
    if limit <= len(ELLIPSIS):
        return ELLIPSIS[:limit]
    cut = text[: limit - len(ELLIPSIS)]
    cut = _ENTITY_TAIL.sub("", cut)
    return cut.rstrip() + ELLIPSIS


def _safe_url(url: str | None) -> str | None:
    """Only http(s) URLs become links; `|`, `<`, `>` and spaces would break the `<url|label>` syntax."""
    if not url:
        return None
    url = url.strip()
    if not re.match(r"https?://", url, re.IGNORECASE) or len(url) > 2000:
        return None
    return escape(url.replace("|", "%7C").replace(" ", "%20"))


def link(url: str | None, label: str, *, limit: int = MAX_TITLE) -> str:
    """`<url|label>` with the label escaped and clamped; the escaped label alone when the URL is unusable."""
    shown = clamp(escape(label.replace("|", "¦")), limit)
    safe = _safe_url(url)
    return f"<{safe}|{shown}>" if safe else shown


def mrkdwn(text: str) -> str:
    """Escape user/core text and translate the little Markdown the core writes (**bold**, [label](url))."""
    out: list[str] = []
    pos = 0
    for m in _MD_LINK.finditer(text):
        out.append(_inline(text[pos : m.start()]))
        out.append(link(m.group(2), m.group(1)))
        pos = m.end()
    out.append(_inline(text[pos:]))
    return "".join(out)


def _inline(text: str) -> str:
    return _MD_BOLD.sub(r"*\1*", escape(text))


def _plain(text: str, limit: int) -> dict[str, Any]:
    text = " ".join(text.split()) or " "
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + ELLIPSIS
    return {"type": "plain_text", "text": text, "emoji": True}


def _section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clamp(text, MAX_SECTION_TEXT)}}


def _split_text(text: str, limit: int) -> list[str]:
    """Split escaped mrkdwn into chunks of at most `limit`, at line breaks, else at spaces, else hard."""
    chunks: list[str] = []
    current = ""
    for line in text.split("\n"):
        while len(line) > limit:
            cut = line.rfind(" ", 0, limit)
            if cut < limit // 2:
                cut = limit
                tail = _ENTITY_TAIL.search(line[:cut])
                if tail:
                    cut = tail.start()
            if current:
                chunks.append(current)
                current = ""
            chunks.append(line[:cut].rstrip())
            line = line[cut:].lstrip(" ")
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > limit:
            chunks.append(current)
            current = line
        else:
            current = candidate
    if current.strip():
        chunks.append(current)
    return [c for c in chunks if c.strip()]


def card_blocks(card: Card) -> list[Block]:
    """One card: a section (linked title, body, extra links) and a context line (authors, categories, ...)."""
    title = f"*{link(card.url, card.title)}*"
    links = " · ".join(link(u, label, limit=80) for label, u in card.links[:8])
    room = MAX_SECTION_TEXT - len(title) - len(links) - 2
    body = clamp(mrkdwn(card.body.strip()), max(room, 0)) if card.body.strip() else ""
    parts = [title] + ([body] if body else []) + ([links] if links else [])
    blocks: list[Block] = [_section("\n".join(parts))]
    elements: list[dict[str, Any]] = []
    for f in card.fields:
        if len(elements) >= MAX_CONTEXT_ELEMENTS - 1:  # keep one slot for the footer
            break
        value = f"*{clamp(escape(f.name), 80)}:* {mrkdwn(f.value)}" if f.name else mrkdwn(f.value)
        elements.append({"type": "mrkdwn", "text": clamp(value, MAX_CONTEXT_TEXT)})
    if card.footer.strip():
        elements.append({"type": "mrkdwn", "text": clamp(mrkdwn(card.footer), MAX_CONTEXT_TEXT)})
    if elements:
        blocks.append({"type": "context", "elements": elements[:MAX_CONTEXT_ELEMENTS]})
    return blocks


def _block_chars(block: Block) -> int:
    total = 0
    text = block.get("text")
    if isinstance(text, dict):
        total += len(str(text.get("text", "")))
    for element in block.get("elements", ()):
        if isinstance(element, dict):
            total += len(str(element.get("text", "")))
    return total


def _fallback(parts: list[str]) -> str:
    joined = "\n".join(p for p in parts if p.strip())
    return clamp(joined, MAX_FALLBACK) or " "


def render_reply(reply: Reply, *, header: str | None = None) -> list[SlackMessage]:
    """A Reply as one or more Slack messages, each within every Block Kit limit.

    The header (a daily thread's name) goes on the first message only; cards are never split across messages.
    """
    pending: list[tuple[list[Block], str]] = []  # (blocks of one unit, its fallback text)
    prefix = ":warning: " if reply.is_error else ""
    text = mrkdwn(reply.text.strip())
    if text:
        for i, chunk in enumerate(_split_text(text, MAX_SECTION_TEXT - len(prefix))):
            body = prefix + chunk if i == 0 else chunk
            pending.append(([_section(body)], body))
    for card in reply.cards:
        pending.append(([{"type": "divider"}, *card_blocks(card)], clamp(escape(card.title), MAX_TITLE)))

    messages: list[SlackMessage] = []
    blocks: list[Block] = []
    fallback: list[str] = []
    chars = 0
    if header and header.strip():
        blocks.append({"type": "header", "text": _plain(header, MAX_HEADER_TEXT)})
        fallback.append(escape(header.strip()))
        chars += len(blocks[0]["text"]["text"])
    for unit, unit_text in pending:
        unit_chars = sum(_block_chars(b) for b in unit)
        if blocks and (len(blocks) + len(unit) > MAX_BLOCKS or chars + unit_chars > MAX_BLOCK_CHARS):
            messages.append(SlackMessage(_fallback(fallback), _strip_lead_divider(blocks)))
            blocks, fallback, chars = [], [], 0
        blocks.extend(unit)
        fallback.append(unit_text)
        chars += unit_chars
    if blocks or not messages:
        if not blocks:  # an empty reply still needs something to say
            blocks = [_section(prefix + "(nothing to show)")]
            fallback = ["(nothing to show)"]
        messages.append(SlackMessage(_fallback(fallback), _strip_lead_divider(blocks)))
    return messages


def _strip_lead_divider(blocks: list[Block]) -> tuple[Block, ...]:
    return tuple(blocks[1:] if blocks and blocks[0]["type"] == "divider" else blocks)


def plain_fallback(reply: Reply) -> str:
    """The whole reply as one escaped mrkdwn string (for places without blocks), within the text limit."""
    parts = [mrkdwn(reply.text.strip())]
    parts += [link(c.url, c.title) for c in reply.cards]
    return clamp("\n".join(p for p in parts if p), MAX_TEXT)
