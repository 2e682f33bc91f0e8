"""Parsers fail only with their own ParseError, whatever bytes arrive (random, truncated, corrupted)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.sources.arxiv_api import parse_api_feed
from adapters.sources.arxiv_rss import parse_announcements
from adapters.sources.detect import load_file
from adapters.sources.hf_daily import parse_daily_papers
from adapters.sources.http import ParseError
from adapters.sources.oai_pmh import parse_oai
from adapters.sources.snapshot import parse_snapshot_line
from bot.models import Paper
from tests.sources.conftest import arxivpy_body, fixture_bytes

PARSERS: dict[str, tuple[Callable[[bytes], object], bytes]] = {
    "api": (parse_api_feed, fixture_bytes("arxiv_api_query_cat_cs.LG_OR_cs.AI.xml")),
    "api-old": (parse_api_feed, arxivpy_body("arxiv_api_id_astro-ph_0601001_affiliations.arxivpy.json")[0]),
    "rss": (parse_announcements, fixture_bytes("arxiv_rss_cs.LG+cs.AI+cs.CL+stat.ML.xml")),
    "hf": (parse_daily_papers, fixture_bytes("hf_daily_papers.json")),
    "oai": (parse_oai, fixture_bytes("oai_pmh_listrecords_arxivRaw.xml")),
    "snapshot": (
        parse_snapshot_line,
        b'{"id": "0704.0001", "title": "T", "authors": "A, B", "categories": "hep-ph", '
        b'"versions": [{"version": "v1", "created": "Mon, 2 Apr 2007 19:18:42 GMT"}], "abstract": "x"}',
    ),
}
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _only_parse_errors(parse: Callable[[bytes], object], data: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse(data)


@pytest.mark.parametrize("name", sorted(PARSERS))
@FAST
@given(data=st.binary(max_size=400))
def test_random_bytes(name: str, data: bytes) -> None:
    _only_parse_errors(PARSERS[name][0], data)


@pytest.mark.parametrize("name", sorted(PARSERS))
@FAST
@given(cut=st.floats(min_value=0.0, max_value=1.0))
def test_truncated_payloads(name: str, cut: float) -> None:
    parse, payload = PARSERS[name]
    _only_parse_errors(parse, payload[: int(len(payload) * cut)])


@pytest.mark.parametrize("name", sorted(PARSERS))
@FAST
@given(st.data())
def test_corrupted_payloads(name: str, data: st.DataObject) -> None:
    parse, payload = PARSERS[name]
    position = data.draw(st.integers(min_value=0, max_value=len(payload) - 1))
    junk = data.draw(st.binary(min_size=1, max_size=8))
    corrupted = payload[:position] + junk + payload[position + len(junk) :]
    try:
        result = parse(corrupted)
    except ParseError:
        return
    # Whatever survived the corruption is still well-typed papers.
    papers = getattr(result, "papers", None) or ([result] if isinstance(result, Paper) else [])
    assert all(isinstance(p, Paper) and p.arxiv_id and "v" not in p.arxiv_id[-3:] for p in papers)


@FAST
@given(data=st.binary(max_size=300))
def test_load_file_raises_only_value_error(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path: Path = tmp_path_factory.mktemp("fuzz") / "payload"
    path.write_bytes(data)
    try:
        load_file(path)
    except ValueError as exc:
        assert "\n" not in str(exc)


def test_parse_error_is_a_value_error() -> None:
    assert issubclass(ParseError, ValueError)
