"""The one HTTP door for every paper source: polite to arXiv, retrying, conditional, and quiet about failure.

Also home of the two error types and the small text/XML helpers the parsers share, so every source module
depends on this one and nothing else of ours.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from lxml import etree  # type: ignore[import-untyped]

from bot.settings import Settings

log = logging.getLogger(__name__)

# Statuses worth another try: throttling and the transient 5xx arXiv and HF answer under load.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_MAX_RETRY_AFTER = 7 * 24 * 3600.0


class SourceError(Exception):
    """A source could not be reached or kept failing. `str()` is one line a user can read in `status`."""

    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.status = status

    def __str__(self) -> str:
        return self.message


class ParseError(ValueError):
    """A payload is not what its parser expects (empty, truncated, HTML, wrong JSON shape); one line."""


@dataclass(frozen=True, slots=True)
class HttpResult:
    url: str
    status: int
    content: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-cased names
    not_modified: bool = False  # a 304 to our conditional GET: nothing changed since last time

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def snippet(self, limit: int = 120) -> str:
        """The body as one short line of text (HTML tags dropped), for error messages."""
        return one_line(re.sub(rb"<[^>]*>", b" ", self.content[:4000]).decode("utf-8", "replace"), limit)


def host_label(url: str) -> str:
    """A human name for a service, used in one-line error messages."""
    host = httpx.URL(url).host
    if host.startswith("export.arxiv.org") or "/api/query" in url:
        return "arXiv API"
    if host.startswith("rss.arxiv.org"):
        return "arXiv RSS"
    if host.startswith("oaipmh.") or "/oai" in url:
        return "arXiv OAI-PMH"
    if "huggingface.co" in host:
        return "Hugging Face"
    if "arxiv.org" in host:
        return "arXiv"
    return host or url


def is_arxiv_host(host: str) -> bool:
    return "arxiv.org" in host


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After in seconds from `now` (delta-seconds or an HTTP date), clamped to [0, one week];
    None when absent or garbled."""
    if not value:
        return None
    value = value.strip()
    seconds: float | None
    try:
        seconds = float(value)
    except ValueError:
        when = parse_http_datetime(value)
        seconds = (when - now).total_seconds() if when else None
    if seconds is None or not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), _MAX_RETRY_AFTER)


Sleep = Callable[[float], Awaitable[None]]


class PoliteClient:
    """One shared httpx.AsyncClient with the manners arXiv's terms ask for.

    - at most one request every `min_interval` seconds to arXiv, and never two at once: all arXiv hosts
      share one budget and one lock, because the terms count requests across the API, RSS and OAI-PMH;
    - retries with exponential backoff and jitter on 429/5xx and transport errors, honouring Retry-After
      up to `max_retry_after` (longer waits are handed back to the scheduler via SourceError.retry_after);
    - conditional GET: ETag/Last-Modified remembered per URL, a 304 comes back as `not_modified`.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        user_agent: str | None = None,
        min_interval: float | None = None,
        timeout: float = 30.0,
        max_tries: int = 4,
        backoff: float = 5.0,
        max_backoff: float = 120.0,
        max_retry_after: float = 300.0,
        sleep: Sleep | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        jitter: Callable[[], float] = random.random,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        settings = settings or Settings()
        self.min_interval = settings.arxiv_min_interval if min_interval is None else min_interval
        self.max_tries = max(1, max_tries)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self._sleep: Sleep = sleep or asyncio.sleep
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self._jitter = jitter
        all_headers = {"User-Agent": user_agent or settings.user_agent}
        all_headers.update(headers or {})
        self._client = httpx.AsyncClient(
            transport=transport,
            headers=all_headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            follow_redirects=False,
        )
        self._locks: dict[str, asyncio.Lock] = {}
        self._last_done: dict[str, float] = {}
        self._validators: dict[str, tuple[str | None, str | None]] = {}
        self.requests_sent = 0

    async def __aenter__(self) -> PoliteClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    def forget(self, url: str, params: Mapping[str, Any] | None = None) -> None:
        """Drop the validators for a URL, so the next GET fetches the body even if it did not change
        (used when a fetched body was stale or could not be processed)."""
        self._validators.pop(str(httpx.URL(url, params=params)), None)

    @staticmethod
    def _budget_key(host: str) -> str | None:
        return "arxiv.org" if is_arxiv_host(host) else None

    async def get(
        self,
        url: str,
        params: Mapping[str, Any] | None = None,
        *,
        conditional: bool = False,
        label: str | None = None,
    ) -> HttpResult:
        """GET with spacing and retries. Returns any non-retryable answer (2xx, 304, 4xx) for the caller to
        judge; raises SourceError when retries run out or the server asks us to come back much later."""
        full = httpx.URL(url, params=params)
        key = self._budget_key(full.host)
        name = label or host_label(str(full))
        if key is None:
            return await self._get_with_retries(full, conditional, name, key)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            return await self._get_with_retries(full, conditional, name, key)

    async def _space(self, key: str | None) -> None:
        if key is None or self.min_interval <= 0:
            return
        last = self._last_done.get(key)
        if last is None:
            return
        wait = last + self.min_interval - self._monotonic()
        if wait > 0:
            await self._sleep(wait)

    def _backoff_delay(self, attempt: int) -> float:
        base = min(self.max_backoff, self.backoff * float(2 ** (attempt - 1)))
        return base * (1.0 + 0.25 * self._jitter())

    def _retry_at(self, seconds: float) -> str:
        return (self._wall_clock() + timedelta(seconds=seconds)).strftime("%H:%M UTC")

    async def _get_with_retries(self, url: httpx.URL, conditional: bool, name: str, key: str | None) -> HttpResult:
        url_key = str(url)
        problem = ""
        retry_after: float | None = None
        for attempt in range(1, self.max_tries + 1):
            headers: dict[str, str] = {}
            if conditional and url_key in self._validators:
                etag, modified = self._validators[url_key]
                if etag:
                    headers["If-None-Match"] = etag
                if modified:
                    headers["If-Modified-Since"] = modified
            await self._space(key)
            status: int | None = None
            try:
                self.requests_sent += 1
                response = await self._client.get(url, headers=headers)
                status = response.status_code
            except httpx.TimeoutException:
                problem = "timed out"
            except httpx.RequestError as exc:  # connection resets, protocol and decoding errors
                problem = f"could not be reached ({type(exc).__name__})"
            finally:
                if key is not None:
                    self._last_done[key] = self._monotonic()
            retry_after = None
            if status is not None:
                resp_headers = {k.lower(): v for k, v in response.headers.items()}
                if status == 304:
                    return HttpResult(url_key, status, b"", resp_headers, not_modified=True)
                if status not in RETRY_STATUSES:
                    if 200 <= status < 300 and conditional:
                        etag = resp_headers.get("etag")
                        modified = resp_headers.get("last-modified")
                        if etag or modified:
                            self._validators[url_key] = (etag, modified)
                    return HttpResult(url_key, status, response.content, resp_headers)
                problem = f"answered {status}"
                retry_after = parse_retry_after(resp_headers.get("retry-after"), self._wall_clock())
                if retry_after is not None and retry_after > self.max_retry_after:
                    # Asked to come back much later: do not block the loop, let the scheduler wait.
                    raise SourceError(
                        f"{name} {problem} and asked us to wait {retry_after:.0f} s; retrying at "
                        f"{self._retry_at(retry_after)}",
                        retry_after=retry_after,
                        status=status,
                    )
            if attempt == self.max_tries:
                break
            # Retry-After: 0 (seen from OAI-PMH after a first-byte timeout) means "whenever": use backoff.
            delay = retry_after if retry_after else self._backoff_delay(attempt)
            log.info("%s %s (try %d/%d); waiting %.1f s", name, problem, attempt, self.max_tries, delay)
            await self._sleep(delay)
        later = retry_after if retry_after else self._backoff_delay(self.max_tries)
        tries = "try" if self.max_tries == 1 else "tries"
        raise SourceError(
            f"{name} {problem} after {self.max_tries} {tries}; retrying at {self._retry_at(later)}",
            retry_after=later,
            status=status,
        )


# --- helpers shared by the parsers -------------------------------------------------------------------



def collapse(text: str | None) -> str:
    # str.split() is ~5x faster than a regex here and splits on the same Unicode whitespace; backfill parses
    # millions of abstracts through this.
    return " ".join((text or "").split())


def one_line(text: str, limit: int = 160) -> str:
    text = collapse(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def optional_text(text: str | None) -> str | None:
    value = collapse(text)
    return value or None


def _looks_like_html(head: bytes) -> bool:
    lowered = head.lstrip().lower()
    return lowered.startswith((b"<!doctype html", b"<html")) or b"<html" in lowered[:300]


def parse_xml(content: bytes, what: str) -> Any:
    """Parse an XML payload safely (no network, no external entities) or raise ParseError in one line."""
    if not content or not content.strip():
        raise ParseError(f"{what}: empty body")
    head = content[:1024]
    if _looks_like_html(head):
        title = re.search(rb"<title[^>]*>(.*?)</title>", content[:8000], re.IGNORECASE | re.DOTALL)
        hint = f" ({one_line(title.group(1).decode('utf-8', 'replace'), 80)})" if title else ""
        raise ParseError(f"{what}: got an HTML page instead of XML{hint}")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        root = etree.fromstring(content, parser)
    except etree.XMLSyntaxError as exc:
        raise ParseError(f"{what}: truncated or malformed XML ({one_line(str(exc), 100)})") from None
    except ValueError as exc:  # lxml refuses some inputs (e.g. unicode with an encoding declaration)
        raise ParseError(f"{what}: unreadable XML ({one_line(str(exc), 100)})") from None
    if root is None:
        raise ParseError(f"{what}: no XML document")
    return root


def parse_iso_datetime(text: str | None) -> datetime | None:
    """ISO 8601 (with Z or an offset) as tz-aware UTC; a naive time is taken as UTC. None when unparsable."""
    value = collapse(text)
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return _as_utc(parsed)


def _as_utc(parsed: datetime) -> datetime | None:
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 with an offset: garbage, not a date worth keeping
        return None


def parse_http_datetime(text: str | None) -> datetime | None:
    """RFC 2822 dates (`Tue, 3 Apr 2007 22:04:11 GMT`, RSS pubDate) as tz-aware UTC datetimes, or None."""
    value = collapse(text)
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return _as_utc(parsed)


_AFFILIATION = re.compile(r"\([^()]*\)")
_AUTHOR_SPLIT = re.compile(r"\s*,\s*(?:and\s+)?|\s+and\s+")


def split_authors(flat: str | None) -> tuple[str, ...]:
    """A flat author string (`A. B, C. D, and E. F (MIT)`) as names; affiliations in parentheses dropped."""
    text = collapse(flat)
    previous = None
    while previous != text:  # nested parentheses: peel the innermost until none is left
        previous = text
        text = _AFFILIATION.sub(" ", text)
    names = (collapse(part) for part in _AUTHOR_SPLIT.split(text))
    return tuple(name for name in names if name and name.lower() not in ("et al", "et al."))
