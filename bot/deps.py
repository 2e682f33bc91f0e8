"""What handlers and the core flows need, bundled once by the composition root."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

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

    def today(self) -> date:
        return self.clock.now().date()

    def parse(self, text: str) -> Query:
        """Parse user text with today's date (for relative `since:`); raises QueryError."""
        return parse(text, today=self.today())


__all__ = ["Config", "Deps", "QueryError"]
