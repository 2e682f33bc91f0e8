"""Bad input: hypothesis over every command and argument through the shared parser and router, on the real App
and SQLite store with papers in it. 0 exceptions (raised or logged), a helpful reply each time, no live mention
on Discord or Slack (tests/reliability/fuzzing.py has the strategies and the checks)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.console import CONSOLE_CHANNEL
from bot.app import App
from bot.commands import parse_line
from bot.models import ChannelRef, ChannelRule, Command, FetchResult, UserRef
from bot.sample import load_sample
from tests.reliability.fuzzing import any_args, check_reply, command_names, error_log, examples, fuzzed
from tests.reliability.support import settings_for


@dataclass
class Bot:
    loop: asyncio.AbstractEventLoop
    app: App


@pytest.fixture(scope="module")
def bot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bot]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    loop = asyncio.new_event_loop()
    app = loop.run_until_complete(App(settings_for(tmp / "p.db", PAPERBOY_COMMANDS_PER_MINUTE=10**9,
                                                   PAPERBOY_MAX_SUBSCRIPTIONS=10**6), out=io.StringIO()).open())
    loop.run_until_complete(app.d.channels.set_rule(ChannelRule(CONSOLE_CHANNEL, categories=("cs.LG",))))
    loop.run_until_complete(app.ingest_papers(FetchResult("sample", tuple(load_sample()))))
    yield Bot(loop, app)
    loop.run_until_complete(app.close())
    loop.close()


CHANNELS = [None, CONSOLE_CHANNEL, ChannelRef("discord", "900000000000000101", "900000000000000100"),
            ChannelRef("slack", "C0GENERAL", "T0FAKE")]
USERS = [UserRef("console", "fuzzer", "fuzzer", "local"), UserRef("discord", "900000000000000201", "u", "900"),
         UserRef("slack", "UFUZZ", "f", "T0FAKE")]


@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=command_names, args=any_args, channel=st.sampled_from(CHANNELS), user=st.sampled_from(USERS),
       admin=st.booleans())
def test_every_command_survives_hostile_arguments(bot: Bot, name: str, args: str, channel: ChannelRef | None,
                                                  user: UserRef, admin: bool) -> None:
    assert bot.app.service is not None
    command = Command(name, args, user, channel, is_admin=admin)
    with error_log() as errors:
        reply = bot.loop.run_until_complete(bot.app.service.handle(command))
    assert not errors.records, errors.describe()
    check_reply(reply)
    fuzzed("router: command x arguments x channel x user x admin")


@settings(max_examples=examples(300), deadline=None)
@given(line=st.one_of(any_args, st.builds(lambda p, n, a: f"{p}{n} {a}", st.sampled_from(["/papers ", "!papers ",
       "papers ", "", "/PAPERS\t", " "]), command_names, any_args)))
def test_the_text_parser_never_raises_and_the_console_line_gets_a_reply(bot: Bot, line: str) -> None:
    name, args = parse_line(line)
    assert isinstance(name, str) and isinstance(args, str)
    assert " " not in name
    assert bot.app.service is not None
    with error_log() as errors:
        reply = bot.loop.run_until_complete(bot.app.service.handle(
            Command(name or "help", args, USERS[0], CONSOLE_CHANNEL, is_admin=True)))
    assert not errors.records, errors.describe()
    check_reply(reply)
    fuzzed("parser: whole console lines")


@pytest.mark.parametrize("name", ["search", "subscribe", "follow", "show", "why", "unsubscribe", "settings"])
def test_ten_thousand_characters_are_refused_politely(bot: Bot, name: str) -> None:
    assert bot.app.service is not None
    reply = bot.loop.run_until_complete(bot.app.service.handle(
        Command(name, "x" * 10_000, USERS[0], CONSOLE_CHANNEL, is_admin=True)))
    assert reply.is_error and "10000 characters" in reply.text


def test_mass_mentions_in_a_query_are_echoed_inert(bot: Bot) -> None:
    assert bot.app.service is not None
    for text in ("<!channel> @everyone <@U123>", "@here <@123456789012345678>"):
        reply = bot.loop.run_until_complete(bot.app.service.handle(
            Command("search", text, USERS[0], CONSOLE_CHANNEL)))
        check_reply(reply)
