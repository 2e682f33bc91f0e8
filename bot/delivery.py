"""The delivery loop: send pending ledger rows through their platform, exactly once each.

Each row is written (pending) before it is sent, counted as attempted before the call, and marked sent with the
platform's message id after. A crash between the call and the mark leaves the row pending with attempts > 0;
the platform then reconciles (Discord nonce, Slack metadata) instead of posting again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from bot import replies
from bot.deps import Deps
from bot.models import ChannelRef, Delivery, DeliveryState, UserRef
from bot.ports import ChatPlatform, SendOutcome

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    waiting: int = 0


def parse_key(key: str) -> tuple[str, str, str]:
    platform, workspace, ident = key.split(":", 2)
    return platform, workspace, ident


def channel_of(target: str) -> ChannelRef:
    platform, workspace, ident = parse_key(target)
    return ChannelRef(platform, ident, workspace)


def user_of(target: str) -> UserRef:
    platform, workspace, ident = parse_key(target)
    return UserRef(platform, ident, workspace=workspace)


async def deliver_pending(
    deps: Deps, platforms: Mapping[str, ChatPlatform], *, stop: Callable[[], bool] | None = None
) -> DeliveryReport:
    """Send what is pending. `stop` is checked between messages: SIGTERM ends the run after the message in
    flight, never in the middle of one."""
    sent = failed = skipped = waiting = 0
    blocked: set[str] = set()  # targets that failed in this run: keep their order, let the others go on
    # Per configured platform: rows for a platform that is not running (a token removed) stay pending, and
    # must not fill the page and starve the platforms that are.
    rows = [row for name in platforms for row in await deps.ledger.pending(name)]
    for row in rows:
        if stop is not None and stop():
            break
        platform = platforms.get(row.platform)
        if platform is None or row.target in blocked:
            waiting += 1
            continue
        parent_id: str | None = None
        if row.kind == "post" and row.parent_key:
            parent = await deps.ledger.get(row.parent_key)
            if parent is None or parent.state is DeliveryState.SKIPPED:
                await deps.ledger.mark_failed(row.id, "the thread's opener could not be posted", permanent=True)
                skipped += 1
                continue
            if parent.state is not DeliveryState.SENT or not parent.message_id:
                waiting += 1
                continue
            parent_id = parent.message_id
        if row.kind == "dm":
            reason = await deps.subscriptions.unreachable(user_of(row.target))
            if reason:
                await deps.ledger.mark_failed(row.id, f"user unreachable: {reason}", permanent=True)
                skipped += 1
                continue
        else:
            rule = await deps.channels.get_rule(channel_of(row.target))
            if rule is not None and rule.paused_reason:
                waiting += 1
                continue
        if row.attempts >= deps.config.max_attempts:
            await deps.ledger.mark_failed(row.id, f"gave up after {row.attempts} attempts: {row.error}",
                                          permanent=True)
            skipped += 1
            continue
        outcome = await _send(deps, platform, row, parent_id)
        if outcome.ok and outcome.message_id is not None:
            await deps.ledger.mark_sent(row.id, outcome.message_id)
            sent += 1
            continue
        error = outcome.error or "unknown error"
        await deps.ledger.mark_failed(row.id, error, permanent=outcome.permanent)
        blocked.add(row.target)
        if outcome.permanent:
            skipped += 1
            if outcome.unreachable_user:
                await deps.subscriptions.set_unreachable(user_of(row.target), error)
            elif row.kind != "dm":
                await deps.channels.set_paused(channel_of(row.target), error)
        else:
            failed += 1
    return DeliveryReport(sent, failed, skipped, waiting)


async def _send(deps: Deps, platform: ChatPlatform, row: Delivery, parent_id: str | None) -> SendOutcome:
    await deps.ledger.begin_attempt(row.id)
    row = replace(row, attempts=row.attempts + 1)
    try:
        reply, extra = replies.reply_from_json(row.payload)
        thread_name = extra.get("thread_name")
        return await platform.send(row, reply, thread_name=thread_name if isinstance(thread_name, str) else None,
                                   parent_id=parent_id)
    except Exception as exc:  # an adapter bug stays a failed row with its reason, never a dead loop
        log.exception("sending %s failed", row.key)
        return SendOutcome(ok=False, error=f"{type(exc).__name__}: {str(exc)[:200]}")
