"""send(): daily threads, DM alerts, errors, 429s and resume-after-crash reconciliation, against the fake."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from adapters.slack.platform import METADATA_EVENT, SingleTokenSource, SlackPlatform
from bot.models import Card, Delivery, DeliveryState, Reply, Visibility
from tests.adapters.slack.conftest import PlatformFactory, RecordingService, make_settings
from tests.adapters.slack.fake_slack import BOT_TOKEN, TEAM_ID, Failure, FakeSlack, Posted

CHANNEL = "C0PAPERS"
CHANNEL_KEY = f"slack:{TEAM_ID}:{CHANNEL}"


def delivery(key: str, kind: str, target: str = CHANNEL_KEY, *, id: int = 1, attempts: int = 1) -> Delivery:
    return Delivery(
        id=id,
        key=key,
        platform="slack",
        target=target,
        kind=kind,
        state=DeliveryState.PENDING,
        attempts=attempts,
        created=datetime.now(UTC),
    )


def paper_reply(i: int) -> Reply:
    return Reply(
        "",
        cards=(Card(f"Paper {i}", f"https://arxiv.org/abs/2611.{i:05d}", body="An abstract."),),
        visibility=Visibility.CHANNEL,
    )


def with_key(fake: FakeSlack, key: str) -> list[Posted]:
    return [m for m in fake.messages if m.metadata and m.metadata["event_payload"]["ledger_key"] == key]


async def test_daily_thread_opener_and_replies(fake: FakeSlack, make_platform: PlatformFactory) -> None:
    platform = await make_platform(http=False)
    opener = await platform.send(
        delivery("thread:o", "opener", id=10),
        Reply("3 new papers in cs.LG"),
        thread_name="cs.LG — 27 Nov 2026",
        parent_id=None,
    )
    assert opener.ok and opener.message_id
    outcomes = [
        await platform.send(
            delivery(f"thread:p{i}", "post", id=11 + i),
            paper_reply(i),
            thread_name=None,
            parent_id=opener.message_id,
        )
        for i in range(3)
    ]
    assert all(o.ok for o in outcomes)
    first, *rest = fake.posts_in(CHANNEL)
    assert first.ts == opener.message_id and first.thread_ts is None
    assert first.blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "cs.LG — 27 Nov 2026", "emoji": True},
    }
    assert first.metadata == {
        "event_type": METADATA_EVENT,
        "event_payload": {"ledger_key": "thread:o", "ledger_id": 10},
    }
    assert [m.thread_ts for m in rest] == [opener.message_id] * 3
    assert [m.ts for m in rest] == [o.message_id for o in outcomes]
    assert [m.metadata["event_payload"] for m in rest if m.metadata] == [
        {"ledger_key": f"thread:p{i}", "ledger_id": 11 + i} for i in range(3)
    ]
    assert "<https://arxiv.org/abs/2611.00001|Paper 1>" in str(rest[1].blocks)
    assert all(m.text for m in fake.messages)
    assert fake.violations == []
    # chat.postMessage went out as JSON with the bot token; no call needed a second auth.
    assert all(call.get("channel") == CHANNEL for call in fake.method_calls("chat.postMessage"))


async def test_dm_alert_opens_a_conversation_and_caches_it(fake: FakeSlack, make_platform: PlatformFactory) -> None:
    platform = await make_platform(http=False)
    target = f"slack:{TEAM_ID}:UMEMBER"
    for i in range(2):
        outcome = await platform.send(
            delivery(f"dm:UMEMBER:{i}", "dm", target, id=i), paper_reply(i), thread_name=None, parent_id=None
        )
        assert outcome.ok and outcome.message_id
    assert [c["users"] for c in fake.method_calls("conversations.open")] == ["UMEMBER"]
    dms = fake.posts_in("DUMEMBER")
    assert len(dms) == 2 and all(m.thread_ts is None for m in dms)
    assert dms[0].metadata == {
        "event_type": METADATA_EVENT,
        "event_payload": {"ledger_key": "dm:UMEMBER:0", "ledger_id": 0},
    }


@pytest.mark.parametrize(
    ("user", "error"),
    [
        ("UBOT", "cannot_dm_bot"),
        ("UGHOST", "user_not_found"),
    ],
)
async def test_dm_to_unreachable_user_is_permanent(
    fake: FakeSlack, make_platform: PlatformFactory, user: str, error: str
) -> None:
    platform = await make_platform(http=False)
    outcome = await platform.send(
        delivery("dm:x", "dm", f"slack:{TEAM_ID}:{user}"), paper_reply(1), thread_name=None, parent_id=None
    )
    assert not outcome.ok and outcome.permanent and outcome.unreachable_user
    assert outcome.error and outcome.error.startswith(error)
    assert fake.messages == []


@pytest.mark.parametrize("error", ["account_inactive", "user_disabled"])
async def test_scripted_unreachable_errors(fake: FakeSlack, make_platform: PlatformFactory, error: str) -> None:
    fake.user_errors["UMEMBER"] = error
    platform = await make_platform(http=False)
    outcome = await platform.send(
        delivery("dm:y", "dm", f"slack:{TEAM_ID}:UMEMBER"), paper_reply(1), thread_name=None, parent_id=None
    )
    assert outcome.unreachable_user and outcome.permanent and outcome.error and error in outcome.error


@pytest.mark.parametrize("error", ["channel_not_found", "not_in_channel", "is_archived", "missing_scope"])
async def test_channel_errors_are_permanent_with_a_reason(
    fake: FakeSlack, make_platform: PlatformFactory, error: str
) -> None:
    fake.channel_errors[CHANNEL] = error
    platform = await make_platform(http=False)
    outcome = await platform.send(delivery("thread:o", "opener"), Reply("hi"), thread_name="t", parent_id=None)
    assert not outcome.ok and outcome.permanent and not outcome.unreachable_user
    assert outcome.error and outcome.error.startswith(f"{error}: ") and len(outcome.error) > len(error) + 10


async def test_invalid_auth_is_permanent_and_never_leaks_the_token(
    fake: FakeSlack, make_platform: PlatformFactory
) -> None:
    platform = await make_platform(http=False, bot_token="xoxb-wrong-secret-token")
    outcome = await platform.send(delivery("thread:o", "opener"), Reply("hi"), thread_name="t", parent_id=None)
    assert not outcome.ok and outcome.permanent
    assert outcome.error and "invalid_auth" in outcome.error
    assert "xoxb" not in outcome.error and BOT_TOKEN not in outcome.error


@pytest.mark.slow
async def test_429_with_retry_after_is_retried_and_posts_once(fake: FakeSlack, make_platform: PlatformFactory) -> None:
    fake.failures.append(Failure("chat.postMessage", status=429, retry_after=1))
    platform = await make_platform(http=False)
    started = time.monotonic()
    outcome = await platform.send(delivery("thread:o", "opener"), Reply("hi"), thread_name="t", parent_id=None)
    assert outcome.ok
    assert time.monotonic() - started >= 1.0  # Retry-After was honoured
    assert len(fake.method_calls("chat.postMessage")) == 2
    assert len(with_key(fake, "thread:o")) == 1


async def test_persistent_429_is_a_retryable_failure(fake: FakeSlack, make_platform: PlatformFactory) -> None:
    fake.failures.append(Failure("chat.postMessage", status=429, retry_after=0, count=10))
    platform = await make_platform(http=False, retries=1)
    outcome = await platform.send(delivery("thread:o", "opener"), Reply("hi"), thread_name="t", parent_id=None)
    assert not outcome.ok and not outcome.permanent
    assert outcome.retry_after is not None
    assert len(fake.method_calls("chat.postMessage")) == 2  # tried, retried once, then gave up
    assert fake.messages == []


async def test_429_retry_after_is_reported_to_the_caller(fake: FakeSlack, make_platform: PlatformFactory) -> None:
    fake.failures.append(Failure("chat.postMessage", status=429, retry_after=7, count=10))
    platform = await make_platform(http=False, retries=0)
    outcome = await platform.send(
        delivery("dm:z", "dm", f"slack:{TEAM_ID}:UMEMBER"), Reply("hi"), thread_name=None, parent_id=None
    )
    assert (outcome.ok, outcome.permanent, outcome.retry_after) == (False, False, 7.0)
    assert outcome.error and "ratelimited" in outcome.error


async def test_ok_false_ratelimited_is_retryable(fake: FakeSlack, make_platform: PlatformFactory) -> None:
    fake.failures.append(Failure("chat.postMessage", status=200, error="ratelimited", retry_after=None))
    platform = await make_platform(http=False)
    outcome = await platform.send(delivery("thread:o", "opener"), Reply("hi"), thread_name="t", parent_id=None)
    assert not outcome.ok and not outcome.permanent and outcome.error and "ratelimited" in outcome.error


async def test_server_errors_are_retried_then_reported_as_transient(
    fake: FakeSlack, make_platform: PlatformFactory
) -> None:
    fake.failures.append(Failure("chat.postMessage", status=503, error="service_unavailable", retry_after=None))
    platform = await make_platform(http=False, retries=1, retry_backoff=0.01)
    first = await platform.send(delivery("thread:a", "opener"), Reply("hi"), thread_name="t", parent_id=None)
    assert first.ok and len(with_key(fake, "thread:a")) == 1
    fake.failures.append(Failure("chat.postMessage", status=500, error="fatal_error", retry_after=None, count=5))
    second = await platform.send(delivery("thread:b", "opener"), Reply("hi"), thread_name="t", parent_id=None)
    assert not second.ok and not second.permanent and second.error and "500" in second.error
    assert with_key(fake, "thread:b") == []


async def test_network_error_is_transient(fake: FakeSlack, make_platform: PlatformFactory) -> None:
    platform = await make_platform(http=False, retry_backoff=0.01)
    await fake.stop()
    outcome = await platform.send(delivery("thread:o", "opener"), Reply("hi"), thread_name="t", parent_id=None)
    assert not outcome.ok and not outcome.permanent and outcome.error


async def test_resumed_post_that_already_went_out_is_reconciled(
    fake: FakeSlack, make_platform: PlatformFactory
) -> None:
    platform = await make_platform(http=False)
    opener = await platform.send(delivery("thread:o", "opener"), Reply("opener"), thread_name="t", parent_id=None)
    assert opener.message_id
    post = delivery("thread:p1", "post", id=2)
    first = await platform.send(post, paper_reply(1), thread_name=None, parent_id=opener.message_id)
    # The process "crashed" before mark_sent: the ledger retries the same row with attempts=2.
    again = await platform.send(
        delivery("thread:p1", "post", id=2, attempts=2),
        paper_reply(1),
        thread_name=None,
        parent_id=opener.message_id,
    )
    assert again.ok and again.message_id == first.message_id
    assert len(with_key(fake, "thread:p1")) == 1
    [replies_call] = fake.method_calls("conversations.replies")
    assert replies_call["ts"] == opener.message_id and replies_call["include_all_metadata"] in (
        "1",
        "true",
        True,
    )


async def test_resumed_opener_and_dm_are_reconciled_from_history(
    fake: FakeSlack, make_platform: PlatformFactory
) -> None:
    platform = await make_platform(http=False)
    fake.page_size = 2  # make the reconcile read several pages
    for i in range(5):
        await platform.send(
            delivery(f"other:{i}", "opener", id=100 + i), Reply("noise"), thread_name=None, parent_id=None
        )
    opener = await platform.send(delivery("thread:o", "opener"), Reply("o"), thread_name="t", parent_id=None)
    for i in range(5):
        await platform.send(
            delivery(f"later:{i}", "opener", id=200 + i), Reply("noise"), thread_name=None, parent_id=None
        )
    again = await platform.send(delivery("thread:o", "opener", attempts=2), Reply("o"), thread_name="t", parent_id=None)
    assert again.ok and again.message_id == opener.message_id
    assert len(with_key(fake, "thread:o")) == 1
    assert len(fake.method_calls("conversations.history")) > 1

    dm_target = f"slack:{TEAM_ID}:UMEMBER"
    dm = await platform.send(delivery("dm:a", "dm", dm_target, id=7), paper_reply(1), thread_name=None, parent_id=None)
    dm_again = await platform.send(
        delivery("dm:a", "dm", dm_target, id=7, attempts=3), paper_reply(1), thread_name=None, parent_id=None
    )
    assert dm_again.message_id == dm.message_id and len(with_key(fake, "dm:a")) == 1


async def test_resume_when_nothing_went_out_posts_exactly_once(fake: FakeSlack, make_platform: PlatformFactory) -> None:
    platform = await make_platform(http=False)
    opener = await platform.send(
        delivery("thread:o", "opener", attempts=2), Reply("o"), thread_name="t", parent_id=None
    )
    post = await platform.send(
        delivery("thread:p", "post", attempts=2),
        paper_reply(1),
        thread_name=None,
        parent_id=opener.message_id,
    )
    assert opener.ok and post.ok
    assert len(with_key(fake, "thread:o")) == 1 and len(with_key(fake, "thread:p")) == 1


async def test_multi_message_reply_resumes_only_the_missing_parts(
    fake: FakeSlack, make_platform: PlatformFactory
) -> None:
    platform = await make_platform(http=False)
    opener = await platform.send(delivery("thread:o", "opener"), Reply("o"), thread_name="t", parent_id=None)
    big = Reply(
        "",
        cards=tuple(Card(f"P{i}", f"https://arxiv.org/abs/2611.{i:05d}", body="word " * 500) for i in range(12)),
    )
    first = await platform.send(
        delivery("thread:big", "post", id=5), big, thread_name=None, parent_id=opener.message_id
    )
    parts = len(with_key(fake, "thread:big"))
    assert first.ok and parts >= 2
    # A crash right after part 0 went out leaves only part 0 in Slack: forget the later parts.
    fake.messages = [
        m
        for m in fake.messages
        if not (
            m.metadata
            and m.metadata["event_payload"]["ledger_key"] == "thread:big"
            and m.metadata["event_payload"].get("part", 0) > 0
        )
    ]
    again = await platform.send(
        delivery("thread:big", "post", id=5, attempts=2), big, thread_name=None, parent_id=opener.message_id
    )
    assert again.ok and again.message_id == first.message_id
    posted = with_key(fake, "thread:big")
    assert sorted(m.metadata["event_payload"]["part"] for m in posted if m.metadata) == list(range(parts))
    assert fake.violations == []


async def test_posts_are_paced_per_channel(fake: FakeSlack, make_platform: PlatformFactory) -> None:
    platform = await make_platform(http=False, post_interval=0.25)
    started = time.monotonic()
    for i in range(3):
        await platform.send(delivery(f"a:{i}", "opener", id=i), Reply("x"), thread_name=None, parent_id=None)
    assert time.monotonic() - started >= 0.5
    other = f"slack:{TEAM_ID}:C0OTHER"
    started = time.monotonic()
    await platform.send(delivery("b:0", "opener", other, id=9), Reply("x"), thread_name=None, parent_id=None)
    assert time.monotonic() - started < 0.2


async def test_bad_targets_are_refused(fake: FakeSlack, make_platform: PlatformFactory) -> None:
    platform = await make_platform(http=False)
    bad = await platform.send(delivery("x", "opener", "discord:1:2"), Reply("x"), thread_name=None, parent_id=None)
    assert not bad.ok and bad.permanent
    orphan = await platform.send(delivery("y", "post"), Reply("x"), thread_name=None, parent_id=None)
    assert not orphan.ok
    assert fake.messages == []


async def test_long_opener_continues_in_its_own_thread(fake: FakeSlack, make_platform: PlatformFactory) -> None:
    platform = await make_platform(http=False)
    big = Reply(
        "", cards=tuple(Card(f"P{i}", f"https://arxiv.org/abs/2611.{i:05d}", body="word " * 500) for i in range(12))
    )
    outcome = await platform.send(delivery("thread:o", "opener"), big, thread_name="Daily", parent_id=None)
    first, *rest = with_key(fake, "thread:o")
    assert outcome.message_id == first.ts and first.thread_ts is None and rest
    assert all(m.thread_ts == first.ts for m in rest)
    assert fake.violations == []


class OneTeamTokens(SingleTokenSource):
    """What a multi-workspace store looks like to the platform: a token for known teams, None otherwise."""

    def __init__(self, team_id: str, token: str) -> None:
        super().__init__(token)
        self.team_id = team_id
        self.asked: list[str] = []

    async def bot_token(self, team_id: str) -> str | None:
        self.asked.append(team_id)
        return await super().bot_token(team_id) if team_id == self.team_id else None


async def test_token_source_decides_per_workspace(fake: FakeSlack, make_platform: PlatformFactory) -> None:
    tokens = OneTeamTokens(TEAM_ID, BOT_TOKEN)
    platform = await make_platform(http=False, tokens=tokens)
    ok = await platform.send(delivery("a", "opener"), Reply("x"), thread_name=None, parent_id=None)
    other = await platform.send(
        delivery("b", "opener", "slack:TOTHER:C1"), Reply("x"), thread_name=None, parent_id=None
    )
    assert ok.ok
    assert not other.ok and other.permanent and other.error and "TOTHER" in other.error
    assert tokens.asked == [TEAM_ID, "TOTHER"]
    assert len(fake.messages) == 1


async def test_resume_that_cannot_read_back_posts_nothing(fake: FakeSlack, make_platform: PlatformFactory) -> None:
    platform = await make_platform(http=False)
    fake.failures.append(Failure("conversations.history", status=200, error="missing_scope", retry_after=None))
    outcome = await platform.send(
        delivery("dm:q", "dm", f"slack:{TEAM_ID}:UMEMBER", attempts=2), Reply("x"), thread_name=None, parent_id=None
    )
    assert not outcome.ok and outcome.permanent
    assert outcome.error and outcome.error.startswith("could not check for an earlier attempt: missing_scope")
    assert fake.messages == []


async def test_reconcile_survives_a_skewed_or_naive_ledger_clock(
    fake: FakeSlack, make_platform: PlatformFactory
) -> None:
    platform = await make_platform(http=False)
    ahead = datetime(2099, 1, 1)  # naive and far ahead of Slack's clock, as a frozen test clock may be
    row = Delivery(
        id=3,
        key="thread:skew",
        platform="slack",
        target=CHANNEL_KEY,
        kind="opener",
        state=DeliveryState.PENDING,
        attempts=1,
        created=ahead,
    )
    first = await platform.send(row, Reply("o"), thread_name="t", parent_id=None)
    again = await platform.send(replace(row, attempts=2), Reply("o"), thread_name="t", parent_id=None)
    assert again.message_id == first.message_id and len(with_key(fake, "thread:skew")) == 1


async def test_no_bolt_token_warning_when_the_token_is_in_the_environment(
    fake: FakeSlack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    with caplog.at_level(logging.WARNING):
        platform = SlackPlatform(make_settings(fake, http=False), RecordingService(), post_interval=0)
    assert [r.getMessage() for r in caplog.records if "token" in r.getMessage()] == []
    outcome = await platform.send(delivery("a", "opener"), Reply("x"), thread_name=None, parent_id=None)
    assert outcome.ok
