"""The polite client against hand-made faulty servers (httpx.MockTransport), with a fake clock."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from adapters.sources.http import SourceError, parse_retry_after
from tests.sources.conftest import FakeTime, MakeClient

API = "https://export.arxiv.org/api/query"
HF = "https://huggingface.co/api/daily_papers"


async def test_429_then_200_honours_retry_after(make_client: MakeClient, fake_time: FakeTime) -> None:
    answers = [
        httpx.Response(429, text="Rate exceeded.", headers={"Retry-After": "7"}),
        httpx.Response(200, text="ok"),
    ]
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    async with make_client(handler) as client:
        result = await client.get(API, {"id_list": "2401.00001"})
    assert result.status == 200 and result.content == b"ok"
    assert len(seen) == 2
    assert 7.0 in fake_time.sleeps  # waited what the server asked for
    assert seen[0].headers["user-agent"].startswith("paperboy/")


async def test_retry_after_as_http_date(make_client: MakeClient, fake_time: FakeTime) -> None:
    answers = [
        httpx.Response(503, headers={"Retry-After": "Thu, 24 Sep 2026 12:00:20 GMT"}),
        httpx.Response(200, text="ok"),
    ]
    async with make_client(lambda r: answers.pop(0)) as client:
        result = await client.get(HF)
    assert result.ok
    assert fake_time.sleeps == [20.0]


async def test_repeated_503_raises_a_readable_source_error(make_client: MakeClient, fake_time: FakeTime) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(503, text="<html>busy</html>", headers={"Retry-After": "5"})

    async with make_client(handler, max_tries=4) as client:
        with pytest.raises(SourceError) as info:
            await client.get(API)
    assert calls == 4
    assert str(info.value) == "arXiv API answered 503 after 4 tries; retrying at 12:00 UTC"
    assert info.value.retry_after == 5.0 and info.value.status == 503
    assert fake_time.sleeps.count(5.0) == 3


async def test_backoff_grows_when_no_retry_after(make_client: MakeClient, fake_time: FakeTime) -> None:
    async with make_client(lambda r: httpx.Response(502), max_tries=4, backoff=2.0) as client:
        with pytest.raises(SourceError):
            await client.get(HF)
    assert fake_time.sleeps == [2.0, 4.0, 8.0]


async def test_retry_after_zero_falls_back_to_backoff(make_client: MakeClient, fake_time: FakeTime) -> None:
    answers = [httpx.Response(503, headers={"Retry-After": "0"}), httpx.Response(200)]
    async with make_client(lambda r: answers.pop(0), backoff=30.0) as client:
        await client.get(HF)
    assert fake_time.sleeps == [30.0]


async def test_long_retry_after_is_handed_back_not_slept(make_client: MakeClient, fake_time: FakeTime) -> None:
    async with make_client(lambda r: httpx.Response(429, headers={"Retry-After": "3600"})) as client:
        with pytest.raises(SourceError) as info:
            await client.get(HF)
    assert info.value.retry_after == 3600.0
    assert "retrying at 13:00 UTC" in str(info.value)
    assert fake_time.sleeps == []


async def test_timeouts_are_retried_then_reported(make_client: MakeClient) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise httpx.ReadTimeout("slow", request=request)
        return httpx.Response(200, text="late")

    async with make_client(handler) as client:
        assert (await client.get(HF)).content == b"late"

    def always(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with make_client(always, max_tries=2) as client:
        with pytest.raises(SourceError, match=r"^Hugging Face could not be reached \(ConnectError\) after 2 tries"):
            await client.get(HF)


async def test_client_errors_are_returned_not_retried(make_client: MakeClient) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(404, text="nope")

    async with make_client(handler) as client:
        result = await client.get(HF)
    assert (result.status, calls, result.ok) == (404, 1, False)


async def test_conditional_get_sends_etag_and_reports_304(make_client: MakeClient) -> None:
    url = "https://rss.arxiv.org/rss/cs.LG"
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.headers.get("if-none-match") == '"abc"':
            return httpx.Response(304)
        return httpx.Response(200, text="<rss/>", headers={"ETag": '"abc"', "Last-Modified": "Thu, 24 Sep 2026"})

    async with make_client(handler, min_interval=0) as client:
        first = await client.get(url, conditional=True)
        second = await client.get(url, conditional=True)
        client.forget(url)
        third = await client.get(url, conditional=True)
    assert first.status == 200 and not first.not_modified
    assert second.not_modified and second.status == 304
    assert seen[1].headers["if-modified-since"] == "Thu, 24 Sep 2026"
    assert "if-none-match" not in seen[0].headers and "if-none-match" not in seen[2].headers
    assert third.status == 200


async def test_arxiv_requests_are_spaced_and_others_are_not(make_client: MakeClient, fake_time: FakeTime) -> None:
    stamps: list[tuple[str, float]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        stamps.append((request.url.host, fake_time.now))
        return httpx.Response(200)

    async with make_client(handler) as client:
        await client.get(API)
        await client.get("https://rss.arxiv.org/rss/cs.LG")  # another arXiv host: same budget
        await client.get(HF)
        await client.get(HF)
    (_, t1), (_, t2), (_, t3), (_, t4) = stamps
    assert t2 - t1 >= 3.0
    assert t3 == t2 and t4 == t3  # Hugging Face is not delayed
    assert fake_time.sleeps == [3.0]


async def test_no_two_arxiv_requests_in_flight(make_client: MakeClient) -> None:
    in_flight = 0
    peak: dict[str, int] = {}

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight
        in_flight += 1
        peak[request.url.host] = max(peak.get(request.url.host, 0), in_flight)
        for _ in range(5):
            await asyncio.sleep(0)
        in_flight -= 1
        return httpx.Response(200)

    async with make_client(handler, min_interval=0) as client:
        await asyncio.gather(*(client.get(API) for _ in range(4)))
        await asyncio.gather(*(client.get(HF) for _ in range(4)))
    assert peak["export.arxiv.org"] == 1
    assert peak["huggingface.co"] > 1  # the lock is what keeps arXiv serial, not the test harness


def test_parse_retry_after_garbage_is_none(fake_time: FakeTime) -> None:
    assert parse_retry_after("soon", fake_time.wall) is None
    assert parse_retry_after(None, fake_time.wall) is None
    assert parse_retry_after("-4", fake_time.wall) == 0.0
