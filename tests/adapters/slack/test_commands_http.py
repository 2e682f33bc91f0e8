"""`/papers` over HTTP mode: signed requests into the real bolt endpoint, answers through response_url."""

from __future__ import annotations

import asyncio
import time

import pytest

from bot.commands import COMMANDS
from bot.models import Card, Reply, Visibility
from tests.adapters.slack.conftest import PlatformFactory, RecordingService, command_form, post_signed
from tests.adapters.slack.fake_slack import TEAM_ID, FakeSlack


async def test_signed_command_is_acked_then_answered_in_channel(
    fake: FakeSlack, service: RecordingService, make_platform: PlatformFactory
) -> None:
    service.answer = lambda c: Reply(
        "2 papers",
        cards=(Card("Graph nets", "https://arxiv.org/abs/2401.00001"),),
        visibility=Visibility.CHANNEL,
    )
    platform = await make_platform()
    assert platform.http_port
    started = time.monotonic()
    status, _ = await post_signed(platform.http_port, command_form(fake, "search graph neural"))
    assert status == 200
    assert time.monotonic() - started < 3.0
    await fake.wait_for(lambda: len(fake.responses) == 1)
    [response] = fake.responses
    assert response["response_type"] == "in_channel"
    assert response["replace_original"] is False
    assert "<https://arxiv.org/abs/2401.00001|Graph nets>" in str(response["blocks"])
    assert response["text"]
    [command] = service.commands
    assert (command.name, command.args) == ("search", "graph neural")
    assert (command.user.platform, command.user.id, command.user.workspace) == ("slack", "UMEMBER", TEAM_ID)
    assert command.channel is not None
    assert (command.channel.id, command.channel.workspace, command.channel.kind) == (
        "C0GENERAL",
        TEAM_ID,
        "text",
    )
    assert command.is_admin is False
    assert command.received_at is not None
    assert len(fake.method_calls("auth.test")) == 1
    assert fake.violations == []


async def test_private_reply_is_ephemeral(
    fake: FakeSlack, service: RecordingService, make_platform: PlatformFactory
) -> None:
    service.answer = lambda c: Reply("your alerts: none")
    platform = await make_platform()
    assert platform.http_port
    status, _ = await post_signed(platform.http_port, command_form(fake, "subscriptions"))
    assert status == 200
    await fake.wait_for(lambda: len(fake.responses) == 1)
    assert fake.responses[0]["response_type"] == "ephemeral"
    assert "your alerts: none" in fake.responses[0]["blocks"][0]["text"]["text"]


async def test_bad_signature_is_401_and_nothing_runs(
    fake: FakeSlack, service: RecordingService, make_platform: PlatformFactory
) -> None:
    platform = await make_platform()
    assert platform.http_port
    status, _ = await post_signed(platform.http_port, command_form(fake, "search x"), secret="wrong-secret")
    assert status == 401
    await asyncio.sleep(0.2)
    assert service.commands == []
    assert fake.responses == []
    assert fake.method_calls("auth.test") == []


async def test_stale_timestamp_is_401(
    fake: FakeSlack, service: RecordingService, make_platform: PlatformFactory
) -> None:
    platform = await make_platform()
    assert platform.http_port
    status, _ = await post_signed(platform.http_port, command_form(fake, "search x"), age=400)
    assert status == 401
    await asyncio.sleep(0.2)
    assert service.commands == []


async def test_every_command_name_reaches_the_service(
    fake: FakeSlack, service: RecordingService, make_platform: PlatformFactory
) -> None:
    platform = await make_platform()
    assert platform.http_port
    for i, spec in enumerate(COMMANDS):
        status, _ = await post_signed(platform.http_port, command_form(fake, f"{spec.name} arg{i}", response=f"r{i}"))
        assert status == 200, spec.name
    await fake.wait_for(lambda: len(fake.responses) == len(COMMANDS))
    assert sorted((c.name, c.args) for c in service.commands) == sorted(
        (spec.name, f"arg{i}") for i, spec in enumerate(COMMANDS)
    )
    paths = sorted(r["_path"] for r in fake.responses)
    assert paths == sorted(f"/response/r{i}" for i in range(len(COMMANDS)))


async def test_empty_text_asks_for_help_and_prefix_and_aliases_are_parsed(
    fake: FakeSlack, service: RecordingService, make_platform: PlatformFactory
) -> None:
    platform = await make_platform()
    assert platform.http_port
    for i, text in enumerate(("", "   ", "/papers find gnn", "SUB  diffusion")):
        status, _ = await post_signed(platform.http_port, command_form(fake, text, response=f"r{i}"))
        assert status == 200
    await fake.wait_for(lambda: len(fake.responses) == 4)
    assert sorted((c.name, c.args) for c in service.commands) == sorted(
        [("help", ""), ("help", ""), ("search", "gnn"), ("subscribe", "diffusion")]
    )


async def test_hostile_query_text_reaches_the_service_verbatim_and_echo_is_escaped(
    fake: FakeSlack, service: RecordingService, make_platform: PlatformFactory
) -> None:
    hostile = '"<!channel>" \'; DROP TABLE papers; -- NEAR( * <@U123> & <https://evil|x> ünïcödé 🦀'
    service.answer = lambda c: Reply(f"No results for {c.args}", visibility=Visibility.CHANNEL)
    platform = await make_platform()
    assert platform.http_port
    status, _ = await post_signed(platform.http_port, command_form(fake, f"search {hostile}"))
    assert status == 200
    await fake.wait_for(lambda: len(fake.responses) == 1)
    assert service.commands[0].args == hostile
    shown = fake.responses[0]["blocks"][0]["text"]["text"]
    assert "&lt;!channel&gt;" in shown and "&lt;@U123&gt;" in shown and "&amp;" in shown
    assert "<!channel>" not in shown and "<@U123>" not in shown and "<https://evil" not in shown
    assert "<!channel>" not in fake.responses[0]["text"]


@pytest.mark.parametrize(
    ("user_id", "admins", "expected"),
    [
        ("UMEMBER", "", False),
        ("UADMIN", "", True),
        ("UOWNER", "", True),
        ("UMEMBER", "slack:UMEMBER", True),
        ("UMEMBER", "discord:UMEMBER", False),
        ("UNOBODY", "", False),  # users.info fails: fail closed
    ],
)
async def test_follow_carries_the_admin_flag(
    fake: FakeSlack,
    service: RecordingService,
    make_platform: PlatformFactory,
    user_id: str,
    admins: str,
    expected: bool,
) -> None:
    platform = await make_platform(admins=admins)
    assert platform.http_port
    status, _ = await post_signed(platform.http_port, command_form(fake, "follow cs.LG", user_id=user_id))
    assert status == 200
    await fake.wait_for(lambda: len(fake.responses) == 1)
    [command] = service.commands
    assert command.name == "follow" and command.is_admin is expected


async def test_admin_lookup_is_cached(
    fake: FakeSlack, service: RecordingService, make_platform: PlatformFactory
) -> None:
    platform = await make_platform()
    assert platform.http_port
    for i in range(3):
        await post_signed(platform.http_port, command_form(fake, "post", user_id="UADMIN", response=f"r{i}"))
    await fake.wait_for(lambda: len(fake.responses) == 3)
    assert [c.is_admin for c in service.commands] == [True, True, True]
    assert len(fake.method_calls("users.info")) == 1


async def test_a_failing_service_still_answers(
    fake: FakeSlack, service: RecordingService, make_platform: PlatformFactory
) -> None:
    service.fail = True
    platform = await make_platform()
    assert platform.http_port
    status, _ = await post_signed(platform.http_port, command_form(fake, "status"))
    assert status == 200
    await fake.wait_for(lambda: len(fake.responses) == 1)
    assert fake.responses[0]["response_type"] == "ephemeral"
    assert "failed on our side" in fake.responses[0]["text"]


async def test_command_in_a_dm_has_a_dm_channel(
    fake: FakeSlack, service: RecordingService, make_platform: PlatformFactory
) -> None:
    platform = await make_platform()
    assert platform.http_port
    await post_signed(platform.http_port, command_form(fake, "subscriptions", channel_id="DUMEMBER"))
    await fake.wait_for(lambda: len(fake.responses) == 1)
    channel = service.commands[0].channel
    assert channel is not None and channel.kind == "dm" and channel.id == "DUMEMBER"


async def test_long_reply_is_split_across_responses_within_limits(
    fake: FakeSlack, service: RecordingService, make_platform: PlatformFactory
) -> None:
    cards = tuple(Card(f"Paper {i}", f"https://arxiv.org/abs/2401.{i:05d}", body="abstract " * 300) for i in range(30))
    service.answer = lambda c: Reply("Results", cards=cards, visibility=Visibility.CHANNEL)
    platform = await make_platform()
    assert platform.http_port
    await post_signed(platform.http_port, command_form(fake, "search abstract"))
    await fake.wait_for(lambda: len(fake.responses) >= 2)
    await asyncio.sleep(0.3)
    assert 2 <= len(fake.responses) <= 5
    assert fake.violations == []
    assert all(r["response_type"] == "in_channel" for r in fake.responses)


async def test_ack_leaves_before_a_slow_service_answers(
    fake: FakeSlack, service: RecordingService, make_platform: PlatformFactory
) -> None:
    service.gate = asyncio.Event()
    platform = await make_platform()
    assert platform.http_port
    status, _ = await post_signed(platform.http_port, command_form(fake, "search slow"))
    assert status == 200  # acked while the service is still working
    assert fake.responses == [] and len(service.commands) == 1
    service.gate.set()
    await fake.wait_for(lambda: len(fake.responses) == 1)
