"""Ports: what the core needs from the outside world. Implementations satisfy them structurally.

Naming: `<Tech><Port>` for real implementations (`SqlitePaperStore`, `ArxivRssSource`, `DiscordPlatform`),
`Fake<Port>` for test doubles.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Protocol

from bot.models import (
    ChannelRef,
    ChannelRule,
    Command,
    Delivery,
    FetchResult,
    Paper,
    Reply,
    SearchResult,
    SourceStatus,
    Subscription,
    UserRef,
)

if TYPE_CHECKING:
    from bot.query import Query


class Clock(Protocol):
    def now(self) -> datetime:
        """Timezone-aware current time."""
        ...


@dataclass(frozen=True, slots=True)
class UpsertResult:
    new: tuple[str, ...]  # ids seen for the first time, announcement-type records only
    updated: tuple[str, ...]  # ids already stored whose row changed (new version, HF data, ...)
    unchanged: int = 0


class PaperStore(Protocol):
    async def upsert(
        self, papers: Sequence[Paper], *, source: str, seen_at: datetime, route: bool = True
    ) -> UpsertResult:
        """Store papers in one transaction. Dedup on the versionless id; a new version updates in place.
        With `route`, first-seen announcements are marked unrouted (to be queued for channels and alerts)."""
        ...

    async def unrouted(self, limit: int = 5000) -> list[Paper]:
        """New announcements not yet queued for channels and alerts (survives a crash between the two)."""
        ...

    async def latest_announced(self) -> date | None: ...

    async def get(self, arxiv_id: str) -> Paper | None: ...

    async def get_many(self, arxiv_ids: Sequence[str]) -> list[Paper]: ...

    async def search(
        self, query: Query, *, limit: int = 10, offset: int = 0, order: str = "rank", count: bool = False
    ) -> SearchResult:
        """Ranked (`rank`, BM25) or newest-first (`recent`) hits for a compiled query."""
        ...

    async def count(self) -> int: ...

    async def count_announced(self, day: date) -> int: ...

    async def sources_of(self, arxiv_id: str) -> list[tuple[str, datetime]]: ...


class ChannelStore(Protocol):
    async def set_rule(self, rule: ChannelRule) -> None: ...

    async def get_rule(self, channel: ChannelRef) -> ChannelRule | None: ...

    async def remove_rule(self, channel: ChannelRef) -> bool: ...

    async def rules(self, platform: str | None = None) -> list[ChannelRule]: ...

    async def enqueue(self, channel: ChannelRef, arxiv_ids: Sequence[str], *, at: datetime) -> int:
        """Queue papers for a channel; a paper already queued or posted there is ignored. Returns how many."""
        ...

    async def queued(self, channel: ChannelRef) -> list[str]:
        """Ids queued for the channel and not yet claimed by a thread, in queue order."""
        ...

    async def queue_state(self, channel: ChannelRef, arxiv_id: str) -> str | None:
        """None (never queued), 'queued', or the thread day it went out with."""
        ...

    async def set_paused(self, channel: ChannelRef, reason: str | None) -> None: ...


class SubscriptionStore(Protocol):
    async def add(self, user: UserRef, query: str, *, at: datetime) -> Subscription: ...

    async def remove(self, user: UserRef, sub_id: int) -> bool: ...

    async def for_user(self, user: UserRef) -> list[Subscription]: ...

    async def count_for(self, user: UserRef) -> int: ...

    def all(self) -> AsyncIterator[Subscription]: ...

    async def set_unreachable(self, user: UserRef, reason: str | None) -> None: ...

    async def unreachable(self, user: UserRef) -> str | None: ...

    async def take_notice(self, user: UserRef) -> str | None:
        """The one-time notice owed to a user (e.g. 'your DMs are closed'); cleared when taken."""
        ...


class DeliveryLedger(Protocol):
    async def plan(
        self, rows: Sequence[Delivery], *, claim: tuple[ChannelRef, date, Sequence[str]] | None = None
    ) -> int:
        """Insert pending rows whose key is new, in one transaction (optionally claiming queued papers for
        a thread day at the same time). Returns how many rows were new."""
        ...

    async def commit_routing(
        self,
        enqueue: Sequence[tuple[ChannelRef, Sequence[str]]],
        rows: Sequence[Delivery],
        routed: Sequence[str],
        *,
        at: datetime,
    ) -> int:
        """Queue papers for channels, plan alert DMs, mark the papers routed: one transaction."""
        ...

    async def pending(self, platform: str | None = None, limit: int = 1000) -> list[Delivery]:
        """Pending and retryable failed rows, oldest first, openers before their posts."""
        ...

    async def get(self, key: str) -> Delivery | None: ...

    async def begin_attempt(self, delivery_id: int) -> None:
        """Count an attempt durably before sending, so a resume knows a message may already be out."""
        ...

    async def mark_sent(self, delivery_id: int, message_id: str) -> None: ...

    async def mark_failed(self, delivery_id: int, error: str, *, permanent: bool) -> None: ...

    async def counts(self) -> dict[str, int]: ...

    async def for_target(self, target: str, limit: int = 50) -> list[Delivery]: ...

    async def failures(self, limit: int = 10) -> list[Delivery]: ...

    async def find(self, target_prefix: str, paper_id: str) -> list[Delivery]:
        """Rows about a paper for a target (channel key or user key)."""
        ...


class StatusStore(Protocol):
    async def record_fetch(self, status: SourceStatus) -> None: ...

    async def fetch_statuses(self) -> list[SourceStatus]: ...

    async def get_meta(self, key: str) -> str | None: ...

    async def set_meta(self, key: str, value: str) -> None: ...


class PaperSource(Protocol):
    name: str

    async def fetch(self, now: datetime) -> FetchResult: ...


@dataclass(frozen=True, slots=True)
class SendOutcome:
    ok: bool
    message_id: str | None = None
    error: str | None = None
    permanent: bool = False  # do not retry (deleted channel, closed DMs, missing permission)
    unreachable_user: bool = False
    retry_after: float | None = None


class ChatPlatform(Protocol):
    name: str  # the platform id used in ChannelRef/UserRef ("discord", "slack", "console")

    async def start(self) -> None:
        """Connect and begin serving commands; returns once connected (serving goes on in tasks)."""
        ...

    async def stop(self) -> None: ...

    async def send(
        self, delivery: Delivery, reply: Reply, *, thread_name: str | None, parent_id: str | None
    ) -> SendOutcome:
        """Deliver one ledger row. `delivery.kind` is opener, post or dm; `delivery.target` is a channel key
        or user key; `parent_id` is the opener's message id for posts. `delivery.attempts > 1` means an
        earlier attempt may have gone out: the platform must reconcile before sending again."""
        ...


class CommandService(Protocol):
    """What a chat adapter calls: the shared router behind one door. Adapters ack first, then call this."""

    async def handle(self, command: Command) -> Reply: ...

    async def complete(self, user: UserRef, arg: str, current: str) -> list[tuple[str, str]]:
        """Autocomplete choices (label, value) for an argument, e.g. the user's own subscriptions."""
        ...
