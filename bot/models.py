"""Values that flow through paperboy. Frozen and slotted: nothing mutates a paper or a reply in flight."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum

# New style ids since 0704 (YYMM.NNNN or YYMM.NNNNN), old style archive[.SC]/YYMMNNN.
_NEW_ID = re.compile(r"(\d{4}\.\d{4,5})(?:v(\d+))?")
_OLD_ID = re.compile(r"([a-zA-Z-]+(?:\.[a-zA-Z-]{2})?/\d{7})(?:v(\d+))?")
_ID_PREFIXES = (
    "oai:arxiv.org:",
    "arxiv:",
    "https://arxiv.org/abs/",
    "http://arxiv.org/abs/",
    "https://arxiv.org/pdf/",
    "http://arxiv.org/pdf/",
    "https://export.arxiv.org/abs/",
    "http://export.arxiv.org/abs/",
    "https://huggingface.co/papers/",
    "https://www.arxiv.org/abs/",
    "10.48550/arxiv.",
)


def split_arxiv_id(raw: str) -> tuple[str, int | None]:
    """Normalise any arXiv reference to (id without version, version or None).

    Raises ValueError with a user-facing message when the text is no arXiv id.
    """
    text = raw.strip()
    lowered = text.lower()
    for prefix in _ID_PREFIXES:
        if lowered.startswith(prefix):
            text = text[len(prefix) :]
            break
    text = text.removesuffix(".pdf").strip("/ ")
    m = _NEW_ID.fullmatch(text)
    if m:
        return m.group(1), int(m.group(2)) if m.group(2) else None
    m = _OLD_ID.fullmatch(text)
    if m:
        archive, number = m.group(1).split("/")
        # The archive is case-insensitive, the subject class keeps its case (math.GT).
        head, _, sub = archive.partition(".")
        norm = head.lower() + ("." + sub.upper() if sub else "")
        return f"{norm}/{number}", int(m.group(2)) if m.group(2) else None
    raise ValueError(f"'{raw[:60]}' is not an arXiv id (try 2401.01234 or https://arxiv.org/abs/2401.01234)")


@dataclass(frozen=True, slots=True)
class Paper:
    arxiv_id: str  # without version
    title: str
    abstract: str = ""
    authors: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()  # primary first when known
    version: int = 1
    primary_category: str | None = None
    submitted: datetime | None = None  # v1 submission time
    updated: datetime | None = None  # this version's time
    announced: date | None = None  # the arXiv announcement day (mailing), when known
    comment: str | None = None
    doi: str | None = None
    journal_ref: str | None = None
    announce_type: str | None = None  # new, cross, replace, replace-cross (RSS only)
    upvotes: int | None = None  # Hugging Face; None = unknown, not zero
    ai_summary: str | None = None
    ai_keywords: tuple[str, ...] = ()
    github_repo: str | None = None
    hf_day: date | None = None
    source: str = ""  # which source produced this record

    @property
    def abs_url(self) -> str:
        return f"https://arxiv.org/abs/{self.arxiv_id}"

    @property
    def pdf_url(self) -> str:
        return f"https://arxiv.org/pdf/{self.arxiv_id}"

    @property
    def hf_url(self) -> str | None:
        return f"https://huggingface.co/papers/{self.arxiv_id}" if self.hf_day or self.upvotes is not None else None

    @property
    def published(self) -> date | None:
        """The day we date the paper by: announcement, else first submission, else this version."""
        if self.announced:
            return self.announced
        if self.submitted:
            return self.submitted.date()
        if self.updated:
            return self.updated.date()
        return None

    @property
    def is_announcement(self) -> bool:
        return self.announce_type in (None, "new", "cross")


class Platform(StrEnum):
    CONSOLE = "console"
    DISCORD = "discord"
    SLACK = "slack"


@dataclass(frozen=True, slots=True)
class UserRef:
    platform: str
    id: str
    name: str = ""
    workspace: str = ""  # guild id / team id

    @property
    def key(self) -> str:
        return f"{self.platform}:{self.workspace}:{self.id}"


@dataclass(frozen=True, slots=True)
class ChannelRef:
    platform: str
    id: str
    workspace: str = ""  # guild id / team id
    kind: str = "text"  # text, forum, dm, console
    name: str = ""

    @property
    def key(self) -> str:
        return f"{self.platform}:{self.workspace}:{self.id}"


@dataclass(frozen=True, slots=True)
class Command:
    """A parsed chat command, independent of where it was typed."""

    name: str
    args: str
    user: UserRef
    channel: ChannelRef | None
    is_admin: bool = False
    received_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    value: str
    inline: bool = True


@dataclass(frozen=True, slots=True)
class Card:
    """One paper (or one item) as a platform-neutral rich block; renderers turn it into embeds or Block Kit."""

    title: str
    url: str | None = None
    body: str = ""
    fields: tuple[Field, ...] = ()
    footer: str = ""
    links: tuple[tuple[str, str], ...] = ()  # (label, url)
    paper_id: str | None = None


class Visibility(StrEnum):
    PRIVATE = "private"  # only the caller sees it (ephemeral)
    CHANNEL = "channel"


@dataclass(frozen=True, slots=True)
class Reply:
    text: str
    cards: tuple[Card, ...] = ()
    visibility: Visibility = Visibility.PRIVATE
    is_error: bool = False

    @property
    def private(self) -> bool:
        return self.visibility is Visibility.PRIVATE


@dataclass(frozen=True, slots=True)
class ThreadPost:
    """One message of a daily thread; `key` is unique within the thread and names its ledger row."""

    key: str
    reply: Reply
    paper_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DailyThread:
    channel: ChannelRef
    day: date
    title: str  # thread name, clamped by the renderer
    opener: Reply
    posts: tuple[ThreadPost, ...]

    @property
    def thread_key(self) -> str:
        return f"thread:{self.channel.key}:{self.day.isoformat()}"


@dataclass(frozen=True, slots=True)
class Subscription:
    id: int
    user: UserRef
    query: str
    created: datetime | None = None


@dataclass(frozen=True, slots=True)
class ChannelRule:
    """What a followed channel receives and when."""

    channel: ChannelRef
    categories: tuple[str, ...] = ()
    query: str | None = None
    post_time: str = "09:00"  # HH:MM local
    timezone: str = "UTC"
    cap: int = 30
    weekends: bool = False  # post on non-announcement days too
    paused_reason: str | None = None


class DeliveryState(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"  # parked, with a reason; retried on the next run unless permanent
    SKIPPED = "skipped"  # permanent: unreachable user, deleted channel


@dataclass(frozen=True, slots=True)
class Delivery:
    """One ledger row: one message to send, recorded before it is sent."""

    id: int
    key: str  # unique: what this message is (thread opener, thread post, DM)
    platform: str
    target: str  # channel key or user key
    kind: str  # opener, post, dm
    state: DeliveryState
    payload: str = ""  # JSON of what to send, so a resume sends the same thing
    message_id: str | None = None
    parent_key: str | None = None  # a post's opener
    attempts: int = 0
    error: str | None = None
    created: datetime | None = None
    updated: datetime | None = None
    paper_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Alert:
    """A DM for one user in one run: the papers and the subscription terms that matched each."""

    user: UserRef
    papers: tuple[Paper, ...]
    matched: tuple[tuple[str, tuple[str, ...]], ...]  # (arxiv_id, subscription queries)


@dataclass(frozen=True, slots=True)
class SourceStatus:
    source: str
    last_run: datetime | None
    outcome: str  # ok, quiet, stale, error: ...
    papers: int = 0
    detail: str = ""


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What a source produced in one run: papers, and a one-line outcome users can read in `status`."""

    source: str
    papers: tuple[Paper, ...] = ()
    outcome: str = "ok"  # ok, quiet, stale, unchanged, error
    detail: str = ""
    feed_day: date | None = None
    retry_after: float | None = None  # seconds, when the source asked us to come back later

    @property
    def ok(self) -> bool:
        return self.outcome in ("ok", "quiet", "unchanged")


@dataclass(frozen=True, slots=True)
class SearchHit:
    paper: Paper
    score: float


@dataclass(frozen=True, slots=True)
class SearchResult:
    hits: tuple[SearchHit, ...]
    total: int | None = None  # None = not counted
    error: str | None = None  # user-facing explanation when the query could not run
    notes: tuple[str, ...] = field(default=())
