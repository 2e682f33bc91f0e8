"""`/papers` over Socket Mode: envelopes through the fake websocket, acks back, answers via response_url."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.models import Reply, Visibility
from tests.adapters.slack.conftest import PlatformFactory, RecordingService, command_form, post_signed
from tests.adapters.slack.fake_slack import APP_TOKEN, FakeSlack


def envelope(fake: FakeSlack, envelope_id: str, text: str, **form: str) -> dict[str, Any]:
    return {
        "envelope_id": envelope_id,
        "type": "slash_commands",
        "accepts_response_payload": True,
        "payload": command_form(fake, text, response=envelope_id, **form),
    }


async def test_socket_mode_command_is_acked_and_answered(
    fake: FakeSlack, service: RecordingService, make_platform: PlatformFactory
) -> None:
    service.answer = lambda c: Reply(f"results for {c.args}", visibility=Visibility.CHANNEL)
    platform = await make_platform(http=False, socket=True)
    assert platform.http_port is None
    [opened] = fake.method_calls("apps.connections.open")
    assert opened == {} or APP_TOKEN not in str(opened)  # the app token travels in the header only
    ack = await fake.inject(envelope(fake, "env-1", "search diffusion"))
    assert ack["envelope_id"] == "env-1"
    await fake.wait_for(lambda: len(fake.responses) == 1)
    assert fake.responses[0]["response_type"] == "in_channel"
    assert fake.responses[0]["_path"] == "/response/env-1"
    [command] = service.commands
    assert (command.name, command.args, command.user.id) == ("search", "diffusion", "UMEMBER")


async def test_socket_mode_admin_flag_and_errors(
    fake: FakeSlack, service: RecordingService, make_platform: PlatformFactory
) -> None:
    await make_platform(http=False, socket=True)
    await fake.inject(envelope(fake, "env-a", "follow cs.LG", user_id="UOWNER"))
    await fake.inject(envelope(fake, "env-b", "follow cs.LG", user_id="UMEMBER"))
    await fake.wait_for(lambda: len(fake.responses) == 2)
    assert sorted((c.user.id, c.is_admin) for c in service.commands) == [("UMEMBER", False), ("UOWNER", True)]
    service.fail = True
    await fake.inject(envelope(fake, "env-c", "status"))
    await fake.wait_for(lambda: len(fake.responses) == 3)
    assert "failed on our side" in fake.responses[2]["text"]


async def test_http_and_socket_mode_run_together_and_stop_cleanly(
    fake: FakeSlack, service: RecordingService, make_platform: PlatformFactory
) -> None:
    platform = await make_platform(http=True, socket=True)
    assert platform.http_port
    status, _ = await post_signed(platform.http_port, command_form(fake, "today", response="http-1"))
    assert status == 200
    await fake.inject(envelope(fake, "sock-1", "status"))
    await fake.wait_for(lambda: len(fake.responses) == 2)
    assert sorted(c.name for c in service.commands) == ["status", "today"]
    await platform.stop()
    await fake.wait_for(lambda: fake.connected == 0)


async def test_disconnect_frame_reconnects(
    fake: FakeSlack, service: RecordingService, make_platform: PlatformFactory
) -> None:
    await make_platform(http=False, socket=True)
    await fake.wait_for(lambda: fake.connected == 1)
    await fake._sockets[-1].send_json({"type": "disconnect", "reason": "refresh_requested"})
    await fake.wait_for(lambda: len(fake.method_calls("apps.connections.open")) >= 2, timeout=10)
    await fake.wait_for(lambda: fake.connected >= 1)
    await asyncio.sleep(0.1)
    ack = await fake.inject(envelope(fake, "env-after", "help"))
    assert ack["envelope_id"] == "env-after"
    await fake.wait_for(lambda: len(fake.responses) == 1)
    assert service.commands[-1].name == "help"
