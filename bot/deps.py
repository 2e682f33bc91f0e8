"""What handlers and the core flows need, bundled once by the composition root."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date

from bot.matching import Matcher, Standing
from bot.ports import ChannelStore, Clock, DeliveryLedger, PaperStore, StatusStore, SubscriptionStore
from bot.query import Query, QueryError, parse


@dataclass(frozen=True, slots=True)
class Config:
    """The few settings the core reads, copied out of Settings so bot/ never needs pydantic at run time."""

    default_categories: tuple[str, ...] = ("cs.LG", "cs.AI", "cs.CL", "stat.ML")
    default_post_time: str = "09:00"
    default_timezone: str = "UTC"
    max_subscriptions: int = 50
    search_results: int = 5
    preview_days: int = 30
    max_attempts: int = 8  # a message that failed this often is parked with its reason
    pause_after_failures: int = 5  # consecutive permanent failures before a channel is paused


def _noop() -> None:
    return None


class QueryCache:
    """Parsed standing queries and the compiled matcher, kept across routing runs.

    Parsing a million alerts and compiling them takes seconds; between two runs usually nothing changed, so the
    matcher is rebuilt only when the set of (key, query) pairs differs from last time.
    """

    def __init__(self, limit: int = 2_000_000) -> None:
        self._parsed: dict[str, Query] = {}
        self._limit = limit
        self._signature: int | None = None
        self._matcher: Matcher | None = None

    def get(self, text: str) -> Query | None:
        return self._parsed.get(text)

    def put(self, text: str, query: Query) -> None:
        if len(self._parsed) >= self._limit:
            self._parsed.clear()
        self._parsed[text] = query

    def matcher(self, standing: Sequence[Standing]) -> Matcher:
        signature = hash(tuple((s.key, s.query.text, s.query.root is None) for s in standing))
        if self._matcher is None or signature != self._signature:
            self._matcher = Matcher(standing)
            self._signature = signature
        return self._matcher


@dataclass(slots=True)
class Deps:
    papers: PaperStore
    channels: ChannelStore
    subscriptions: SubscriptionStore
    ledger: DeliveryLedger
    status: StatusStore
    clock: Clock
    config: Config = field(default_factory=Config)
    kick: Callable[[], None] = _noop  # wakes the delivery loop after a command planned messages
    queries: QueryCache = field(default_factory=QueryCache)

    def today(self) -> date:
        return self.clock.now().date()

    def parse(self, text: str) -> Query:
        """Parse user text with today's date (for relative `since:`); raises QueryError."""
        return parse(text, today=self.today())


__all__ = ["Config", "Deps", "QueryError"]
