"""The Discord renderer: limits, packing, escaping. Pure functions, so plain and property tests."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.discord.render import (
    CONTENT_MAX,
    EMBED_TOTAL_MAX,
    EMBEDS_PER_MESSAGE,
    MessagePayload,
    card_to_embed,
    clamp_thread_name,
    escape_markdown,
    neutralise_mentions,
    render_reply,
    safe_text,
)
from bot.models import Card, Field, Reply

MENTION = re.compile(r"@(everyone|here)|<@[!&]?\d+>|<#\d+>")


def check_limits(messages: list[MessagePayload]) -> None:
    assert messages
    for m in messages:
        assert len(m.content) <= CONTENT_MAX
        assert m.content or m.embeds, "Discord rejects an empty message"
        assert len(m.embeds) <= EMBEDS_PER_MESSAGE
        assert sum(len(e) for e in m.embeds) <= EMBED_TOTAL_MAX
        for e in m.embeds:
            d = e.to_dict()
            assert 1 <= len(d.get("title", "x")) <= 256
            assert len(d.get("description", "")) <= 4096
            assert len(d.get("fields", [])) <= 25
            for f in d.get("fields", []):
                assert 1 <= len(f["name"]) <= 256
                assert 1 <= len(f["value"]) <= 1024
            assert len(d.get("footer", {}).get("text", "")) <= 2048


def paper_card(i: int, body: str = "An abstract.") -> Card:
    return Card(
        title=f"Paper {i}",
        url=f"https://arxiv.org/abs/2401.{i:05d}",
        body=body,
        fields=(Field("Authors", "Ada Lovelace, Alan Turing"), Field("Categories", "cs.LG")),
        footer=f"arXiv:2401.{i:05d}",
        links=(("PDF", f"https://arxiv.org/pdf/2401.{i:05d}"), ("HF", "https://huggingface.co/papers/x")),
        paper_id=f"2401.{i:05d}",
    )


def test_card_becomes_linked_embed_with_fields_links_and_footer() -> None:
    e = card_to_embed(paper_card(7)).to_dict()
    assert e["title"] == "Paper 7"
    assert e["url"] == "https://arxiv.org/abs/2401.00007"
    assert e["description"] == "An abstract."
    names = [f["name"] for f in e["fields"]]
    assert names == ["Authors", "Categories", "Links"]
    assert e["fields"][2]["value"] == "[PDF](https://arxiv.org/pdf/2401.00007) · [HF](https://huggingface.co/papers/x)"
    assert e["footer"]["text"] == "arXiv:2401.00007"


def test_bad_urls_are_dropped_not_sent() -> None:
    card = Card(title="t", url="javascript:alert(1)", links=(("x", "ftp://nope"), ("ok", "https://a.b/c d")))
    e = card_to_embed(card).to_dict()
    assert "url" not in e
    assert e["fields"][0]["value"] == "[ok](https://a.b/c%20d)"


def test_many_cards_split_into_messages_not_dropped() -> None:
    reply = Reply(text="Today's papers", cards=tuple(paper_card(i) for i in range(23)))
    messages = render_reply(reply)
    check_limits(messages)
    assert [len(m.embeds) for m in messages] == [10, 10, 3]
    assert messages[0].content == "Today's papers"
    assert [m.content for m in messages[1:]] == ["", ""]
    titles = [e.title for m in messages for e in m.embeds]
    assert titles == [f"Paper {i}" for i in range(23)]


def test_6000_total_splits_before_10_embeds() -> None:
    reply = Reply(text="", cards=tuple(paper_card(i, body="x" * 2500) for i in range(5)))
    messages = render_reply(reply)
    check_limits(messages)
    assert [len(m.embeds) for m in messages] == [2, 2, 1]
    # Whole abstracts: splitting across messages means no card needed truncating.
    assert all(e.description == "x" * 2500 for m in messages for e in m.embeds)


def test_one_oversized_card_is_truncated_with_ellipsis() -> None:
    card = Card(title="T" * 400, body="b" * 9000, fields=tuple(Field(f"f{i}", "v" * 2000) for i in range(30)),
                footer="z" * 3000)
    messages = render_reply(Reply(text="", cards=(card,)))
    check_limits(messages)
    e = messages[0].embeds[0]
    assert e.title is not None and e.title.endswith("…") and len(e.title) == 256
    assert e.description is not None and e.description.endswith("…")


def test_long_text_is_split_at_line_breaks() -> None:
    text = "\n".join(f"line {i} " + "w" * 90 for i in range(60))
    messages = render_reply(Reply(text=text))
    check_limits(messages)
    assert len(messages) == 3
    joined = "\n".join(m.content for m in messages)
    assert joined == text


def test_empty_reply_still_renders_a_message() -> None:
    assert render_reply(Reply(text="   ")) == [MessagePayload(content="(nothing to show)")]


def test_mass_and_id_mentions_are_neutralised_everywhere() -> None:
    hostile = "hi @everyone and @here <@123> <@!456> <@&789> <#42> </papers search:99>"
    reply = Reply(text=hostile, cards=(Card(title=hostile, body=hostile, fields=(Field(hostile, hostile),),
                                            footer=hostile),))
    m = render_reply(reply)[0]
    e = m.embeds[0].to_dict()
    texts = [m.content, e["title"], e["description"], e["fields"][0]["name"], e["fields"][0]["value"],
             e["footer"]["text"]]
    for t in texts:
        assert not MENTION.search(t), t
        assert "everyone" in t and "123" in t  # still readable


def test_markdown_in_untrusted_text_is_escaped_but_latex_reads_the_same() -> None:
    title = "$x_i^*$ and **bold** ~~s~~ ||spoiler|| `code` > quote # head [a](http://evil)"
    escaped = escape_markdown(title)
    # Removing the escapes gives back exactly the original text: that is what Discord displays.
    assert re.sub(r"\\(.)", r"\1", escaped) == title
    for raw in ("**", "~~", "||", "`", "_i"):
        assert raw not in escaped.replace("\\" + raw[0], "")
    assert escape_markdown(r"$\alpha_1$") == r"$\\alpha\_1$"
    assert escape_markdown("- item\n1. first") == "\\- item\n\\1. first"


def test_reply_text_keeps_core_markdown() -> None:
    m = render_reply(Reply(text="Use `search QUERY` — **tip**"))[0]
    assert m.content == "Use `search QUERY` — **tip**"


def test_thread_names() -> None:
    assert clamp_thread_name("") == "papers"
    assert clamp_thread_name("  a\n\nb\t c ") == "a b c"
    long = clamp_thread_name("x" * 300)
    assert len(long) == 100 and long.endswith("…")


@settings(max_examples=150, deadline=None)
@given(
    text=st.text(max_size=5000),
    cards=st.lists(
        st.builds(
            Card,
            title=st.text(max_size=400),
            url=st.one_of(st.none(), st.just("https://arxiv.org/abs/1"), st.text(max_size=30)),
            body=st.text(max_size=6000),
            fields=st.lists(st.builds(Field, name=st.text(max_size=300), value=st.text(max_size=1500),
                                      inline=st.booleans()), max_size=30).map(tuple),
            footer=st.text(max_size=2500),
            links=st.lists(st.tuples(st.text(max_size=20), st.just("https://e.org/x")), max_size=3).map(tuple),
        ),
        max_size=14,
    ),
)
def test_any_reply_renders_within_limits_and_keeps_every_card(text: str, cards: list[Card]) -> None:
    messages = render_reply(Reply(text=text, cards=tuple(cards)))
    check_limits(messages)
    assert sum(len(m.embeds) for m in messages) == len(cards)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_safe_text_never_leaves_a_mention(text: str) -> None:
    out = safe_text(text)
    assert not MENTION.search(out)
    assert not MENTION.search(neutralise_mentions(text))


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_thread_name_always_valid(name: str) -> None:
    out = clamp_thread_name(name)
    assert 1 <= len(out) <= 100
    assert "\n" not in out


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_escaping_only_adds_backslashes(text: str) -> None:
    # Discord drops a backslash before punctuation, so this is exactly what readers see.
    assert re.sub(r"\\(.)", r"\1", escape_markdown(text), flags=re.DOTALL) == text
