"""The Block Kit renderer: limits, splitting and escaping, checked with slack_sdk's own block models."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from slack_sdk.models.blocks import Block

from adapters.slack.render import (
    MAX_BLOCK_CHARS,
    MAX_BLOCKS,
    MAX_FALLBACK,
    SlackMessage,
    clamp,
    escape,
    link,
    mrkdwn,
    render_reply,
)
from bot.models import Card, Field, Reply, Visibility


def _validate(message: SlackMessage) -> None:
    """slack_sdk's per-block validation plus the message-level limits Slack enforces."""
    assert 1 <= len(message.blocks) <= MAX_BLOCKS
    assert 0 < len(message.text) <= MAX_FALLBACK
    assert message.block_chars() <= MAX_BLOCK_CHARS
    for raw in message.blocks:
        block = Block.parse(raw)
        assert block is not None
        block.validate_json()
        assert block.to_dict() == raw


def _all_mrkdwn(message: SlackMessage) -> list[str]:
    texts = [message.text]
    for b in message.blocks:
        if b["type"] == "section":
            texts.append(b["text"]["text"])
        if b["type"] == "context":
            texts.extend(e["text"] for e in b["elements"])
    return texts


def _paper_card(i: int, title: str = "A paper", body: str = "Abstract text.") -> Card:
    return Card(
        title=f"{title} {i}",
        url=f"https://arxiv.org/abs/2401.{i:05d}",
        body=body,
        fields=(Field("Authors", "Ada Lovelace, Alan Turing"), Field("Categories", "cs.LG · cs.AI")),
        footer="arXiv 2401.00001",
        links=(("PDF", f"https://arxiv.org/pdf/2401.{i:05d}"), ("HF", "https://huggingface.co/papers/x")),
        paper_id=f"2401.{i:05d}",
    )


def test_card_renders_header_link_context_and_divider() -> None:
    reply = Reply("Found **2** papers", cards=(_paper_card(1), _paper_card(2)), visibility=Visibility.CHANNEL)
    [message] = render_reply(reply, header="cs.LG — 2026-11-27")
    _validate(message)
    types = [b["type"] for b in message.blocks]
    assert types == ["header", "section", "divider", "section", "context", "divider", "section", "context"]
    assert message.blocks[0]["text"] == {"type": "plain_text", "text": "cs.LG — 2026-11-27", "emoji": True}
    assert message.blocks[1]["text"]["text"] == "Found *2* papers"
    assert message.blocks[3]["text"]["text"].startswith("*<https://arxiv.org/abs/2401.00001|A paper 1>*\nAbstract")
    assert "<https://arxiv.org/pdf/2401.00001|PDF>" in message.blocks[3]["text"]["text"]
    context = [e["text"] for e in message.blocks[4]["elements"]]
    assert context == [
        "*Authors:* Ada Lovelace, Alan Turing",
        "*Categories:* cs.LG · cs.AI",
        "arXiv 2401.00001",
    ]
    assert "A paper 1" in message.text and "A paper 2" in message.text


def test_hostile_strings_never_become_mentions_or_links() -> None:
    evil = "<!channel> <@U123> <#C1|x> <https://evil.example|click> &amp; <!here>"
    card = Card(
        title=evil,
        url="https://arxiv.org/abs/1|<!channel>",
        body=evil,
        fields=(Field(evil, evil),),
        footer=evil,
        links=((evil, "javascript:alert(1)"),),
    )
    for message in render_reply(Reply(evil, cards=(card,)), header=evil):
        _validate(message)
        for text in _all_mrkdwn(message):
            # Only our own links may open a `<`; each must be an http(s) URL with no `<` inside.
            for m in re.finditer(r"<([^>]*)>", text):
                assert re.fullmatch(r"https?://[^<>|\s]+\|[^<>]*", m.group(1)), text
            assert "<!" not in text and "<@" not in text and "<#" not in text
        assert "&amp;amp;" in message.blocks[1]["text"]["text"]  # an already-escaped entity stays literal


def test_non_http_urls_are_not_linked() -> None:
    assert link("javascript:alert(1)", "x") == "x"
    assert link(None, "a<b") == "a&lt;b"
    assert link("https://a.example/?q=1&r=2", "t") == "<https://a.example/?q=1&amp;r=2|t>"


def test_markdown_links_become_slack_links() -> None:
    assert mrkdwn("see [the paper](https://arxiv.org/abs/2401.00001) <now>") == (
        "see <https://arxiv.org/abs/2401.00001|the paper> &lt;now&gt;"
    )


def test_clamp_never_cuts_an_entity() -> None:
    text = escape("a" * 9 + "&&&&")
    for limit in range(1, len(text) + 1):
        out = clamp(text, limit)
        assert len(out) <= limit
        assert not re.search(r"&[a-z]*…$", out), out


def test_many_cards_split_into_several_messages_and_keep_every_card() -> None:
    cards = tuple(_paper_card(i, body="word " * 400) for i in range(60))
    messages = render_reply(Reply("Today", cards=cards), header="Daily")
    assert len(messages) > 1
    for m in messages:
        _validate(m)
    assert messages[0].blocks[0]["type"] == "header"
    assert all(b["type"] != "header" for m in messages[1:] for b in m.blocks)
    titles = [
        b["text"]["text"]
        for m in messages
        for b in m.blocks
        if b["type"] == "section" and b["text"]["text"].startswith("*<")
    ]
    assert len(titles) == 60
    assert all(m.blocks[0]["type"] != "divider" for m in messages)


def test_long_text_is_split_into_sections_under_3000() -> None:
    text = "\n".join(f"line {i} " + "x" * 200 for i in range(100)) + "\n" + "y" * 7000
    messages = render_reply(Reply(text))
    for m in messages:
        _validate(m)
    joined = "".join(b["text"]["text"] for m in messages for b in m.blocks)
    assert joined.count("line ") == 100
    assert joined.count("y") == 7000


def test_header_is_clamped_to_150() -> None:
    [message] = render_reply(Reply("x"), header="h" * 400)
    _validate(message)
    assert len(message.blocks[0]["text"]["text"]) == 150


def test_huge_card_fields_are_clamped() -> None:
    card = Card(
        title="t" * 5000,
        url="https://arxiv.org/abs/2401.00001",
        body="b" * 10_000,
        fields=tuple(Field(f"f{i}", "v" * 5000) for i in range(30)),
        footer="z" * 5000,
        links=tuple(("l" * 500, "https://x.example/" + "p" * 1900) for _ in range(20)),
    )
    for m in render_reply(Reply("", cards=(card,))):
        _validate(m)
        for b in m.blocks:
            if b["type"] == "context":
                assert len(b["elements"]) <= 10


def test_empty_reply_still_renders_a_block() -> None:
    [message] = render_reply(Reply(""))
    _validate(message)


def test_error_reply_is_marked() -> None:
    [message] = render_reply(Reply("Nope", is_error=True))
    assert message.blocks[0]["text"]["text"].startswith(":warning: ")


_text = st.text(alphabet=st.sampled_from("ab <>&|*_[]()!@#\n:/."), max_size=400)


@settings(max_examples=60, deadline=None)
@given(
    text=st.text(max_size=5000) | _text,
    titles=st.lists(_text, max_size=70),
    body=_text,
    header=st.none() | st.text(max_size=300),
)
def test_any_reply_renders_within_limits(text: str, titles: list[str], body: str, header: str | None) -> None:
    cards = tuple(
        Card(title=t, url="https://arxiv.org/abs/2401.00001", body=body * 5, fields=(Field("Authors", t),))
        for t in titles
    )
    messages = render_reply(Reply(text, cards=cards), header=header)
    for m in messages:
        _validate(m)
        for chunk in _all_mrkdwn(m):
            assert "<!" not in chunk and "<@" not in chunk
    sections = sum(1 for m in messages for b in m.blocks if b["type"] == "section")
    assert sections >= len(cards)
