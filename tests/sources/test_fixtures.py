"""Every shared recording parses into the papers it holds, with the fields we rely on."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from adapters.sources.arxiv_api import parse_api_feed
from adapters.sources.arxiv_rss import parse_announcements
from adapters.sources.detect import load_file
from adapters.sources.hf_daily import parse_daily_papers
from adapters.sources.oai_pmh import parse_oai
from tests.sources.conftest import FIXTURES, arxivpy_body, fixture_bytes

API = "arxiv_api_query_cat_cs.LG_OR_cs.AI.xml"
RSS = "arxiv_rss_cs.LG+cs.AI+cs.CL+stat.ML.xml"
HF = "hf_daily_papers.json"
OAI = "oai_pmh_listrecords_arxivRaw.xml"
API_ERROR = "arxiv_api_error_400_id_abc.arxivpy.json"
API_OLD_ID = "arxiv_api_id_astro-ph_0601001_affiliations.arxivpy.json"


def test_fixtures_folder_is_found_beside_the_repo() -> None:
    assert (FIXTURES / "README.md").is_file()


def test_api_query_current_backend() -> None:
    page = parse_api_feed(fixture_bytes(API))
    assert page.error is None
    assert (page.total_results, page.start_index, page.items_per_page) == (364218, 0, 20)
    assert len(page.papers) == 20 and page.skipped == 0
    first = page.papers[0]
    assert first.arxiv_id == "2604.26951" and first.version == 1
    assert first.title == "Turning the TIDE: Cross-Architecture Distillation for Diffusion Large Language Models"
    assert first.authors == ("Gongbo Zhang", "Wen Wang", "Ye Tian", "Li Yuan")
    assert first.primary_category == "cs.CL"
    assert first.categories == ("cs.CL", "cs.AI", "cs.LG")  # primary first, no duplicate
    assert first.submitted == datetime(2026, 4, 29, 17, 59, 1, tzinfo=UTC) == first.updated
    assert first.comment == "15 pages, 3 figures. Code: https://github.com/PKU-YuanGroup/TIDE"
    assert first.doi is None and first.journal_ref is None
    assert first.source == "api"
    assert first.abs_url == "https://arxiv.org/abs/2604.26951"
    for paper in page.papers:
        assert "v" not in paper.arxiv_id
        assert "\n" not in paper.abstract and "  " not in paper.abstract
        assert paper.categories[0] == paper.primary_category
    # cat: matches cross-lists, so primaries outside the queried categories show up
    primaries = {p.primary_category for p in page.papers}
    assert {"math.OC", "eess.SP", "cs.CV"} <= primaries


def test_api_non_ascii_journal_ref_and_doi() -> None:
    page = parse_api_feed(fixture_bytes(API))
    mann = next(p for p in page.papers if p.arxiv_id == "2604.26888")
    assert mann.journal_ref is not None and mann.journal_ref.startswith("In: Bäck, T. et al. (eds.)")
    assert mann.doi == "10.1007/978-3-031-85252-7_10"
    assert mann.authors == ("Janis Mohr", "Jörg Frochte")


def test_api_error_feed_gives_no_paper() -> None:
    body, status = arxivpy_body(API_ERROR)
    assert status == 400
    page = parse_api_feed(body, status=status)
    assert page.papers == ()
    assert page.error == "incorrect id format for abc"
    # the error entry alone (even with a 200) is recognised by its /api/errors# id
    assert parse_api_feed(body, status=200).papers == ()


def test_api_old_style_id_with_affiliations() -> None:
    body, status = arxivpy_body(API_OLD_ID)
    page = parse_api_feed(body, status=status)
    (paper,) = page.papers
    assert paper.arxiv_id == "astro-ph/0601001" and paper.version == 1
    assert paper.authors == ("Andrew Gould", "Susan Dorsher", "B. Scott Gaudi", "Andrzej Udalski")
    assert paper.journal_ref == "ActaAstron.56:1-50,2006"
    assert paper.comment is not None and "http://www.astronomy.ohio-state.edu/" in paper.comment
    assert paper.abstract.startswith("We derive")  # leading whitespace gone
    assert "Gould & Morgan (2003)" in paper.abstract and "V_max<17.5" in paper.abstract
    assert paper.primary_category == "astro-ph"


def test_arxivpy_wrapper_is_reencoded_as_latin1(tmp_path: Path) -> None:
    # The recorder decoded UTF-8 bytes as latin-1: "Wübben" was stored as "WÃ¼bben".
    body = fixture_bytes(API_OLD_ID).decode()
    data = json.loads(body)
    data["body"] = data["body"].replace("Andrew Gould", "Dirk W\u00c3\u00bcbben")
    path = tmp_path / "wubben.arxivpy.json"
    path.write_text(json.dumps(data))
    kind, papers, _ = load_file(path)
    assert kind == "arxiv-api"
    assert papers[0].authors[0] == "Dirk Wübben"


def test_rss_feed() -> None:
    feed = parse_announcements(fixture_bytes(RSS))
    assert feed.format == "rss"
    assert feed.feed_day == date(2026, 9, 24)
    assert feed.counts() == {"new": 2, "cross": 1, "replace": 1}
    assert feed.describe() == "RSS feed for Thu 24 Sep 2026: 2 new, 1 cross, 1 replace"
    ids = [(p.arxiv_id, p.version, p.announce_type) for p in feed.papers]
    assert ids == [
        ("2609.26811", 1, "new"),
        ("2609.26820", 1, "new"),
        ("2205.06398", 2, "cross"),
        ("2009.13987", 3, "replace"),
    ]
    new = feed.papers[1]
    assert new.authors == ("Naser Mansour", "Sidahmed Benabderrahmane", "Ameer Rahwan")
    assert new.categories == ("cs.LG", "cs.AI") and new.primary_category is None
    assert new.abstract.startswith("Physiological time series such as electrocardiograms")
    assert "Announce Type" not in new.abstract and "arXiv:" not in new.abstract[:10]
    assert new.announced == date(2026, 9, 24) and new.source == "rss"
    cross = feed.papers[2]
    assert cross.categories == ("stat.ME", "stat.AP", "stat.ML")
    assert cross.doi == "10.1093/bioinformatics/btac431"
    assert cross.is_announcement
    replace = feed.papers[3]
    assert not replace.is_announcement
    assert replace.authors == ("Michael Joswig", "Marek Kaluba", "Lukas Ruff")


def test_hf_daily_papers() -> None:
    page = parse_daily_papers(fixture_bytes(HF))
    assert page.items == 30 and len(page.papers) == 30 and page.skipped == 0
    first = page.papers[0]
    assert first.arxiv_id == "2606.00467"
    assert first.authors == ("Etienne Casanova", "Rafal Kocielnik", "R. Michael Alvarez")
    assert first.upvotes == 0  # zero is a count, not "unknown"
    assert first.hf_day == date(2026, 6, 12)
    assert first.submitted == datetime(2026, 5, 30, tzinfo=UTC)
    assert first.ai_summary is not None and first.ai_summary.startswith("Large language models exhibit")
    assert "decision stickiness" in first.ai_keywords
    assert first.github_repo is None and first.source == "hf"
    assert first.hf_url == "https://huggingface.co/papers/2606.00467"
    second = page.papers[1]
    assert second.upvotes == 5
    assert second.github_repo == "https://github.com/psychology-of-AI/Rethinking-Pyschometric-Eval-LLMs"
    risk = next(p for p in page.papers if p.arxiv_id == "2606.11409")
    assert risk.upvotes == 8
    assert sum(1 for p in page.papers if p.github_repo) >= 5
    assert all(p.hf_day == date(2026, 6, 12) for p in page.papers)


def test_oai_pmh_arxivraw() -> None:
    page = parse_oai(fixture_bytes(OAI))
    assert page.ok and page.error_code is None
    assert page.resumption_token == "726959|1001" and page.has_more
    assert page.response_date == datetime(2015, 1, 6, 20, 49, 59, tzinfo=UTC)
    assert [p.arxiv_id for p in page.papers] == [
        "0704.0471",
        "0704.0716",
        "0704.0874",
        "0704.1109",
        "0704.1114",
        "0704.1586",
    ]
    first = page.papers[0]
    assert first.authors == ("D.V. Shetty", "S.J. Yennello", "G.A. Souliotis")
    assert first.categories == ("nucl-ex", "nucl-th") and first.primary_category == "nucl-ex"
    assert first.doi == "10.1103/PhysRevC.76.024606"
    assert first.title == (
        "Density dependence of the symmetry energy and the nuclear equation of state: "
        "A Dynamical and Statistical model perspective"
    )
    assert first.version == 1 and first.source == "oai"
    richard = page.papers[1]
    assert richard.version == 4
    assert richard.submitted == datetime(2007, 4, 5, 12, 45, 3, tzinfo=UTC)
    assert richard.updated == datetime(2008, 11, 14, 9, 7, 25, tzinfo=UTC)
    assert richard.journal_ref is not None and richard.journal_ref.startswith("Polygons, polyominoes")
    assert richard.comment is not None and "\n" not in richard.comment


@pytest.mark.parametrize(
    ("name", "kind", "count", "note"),
    [
        (API, "arxiv-api", 20, "arXiv API response: 20 papers of 364218"),
        (API_ERROR, "arxiv-api", 0, "arXiv API error: incorrect id format for abc"),
        (API_OLD_ID, "arxiv-api", 1, "arXiv API response: 1 paper of 1"),
        (RSS, "arxiv-rss", 4, "RSS feed for Thu 24 Sep 2026: 2 new, 1 cross, 1 replace"),
        (HF, "hf-daily", 30, "Hugging Face daily papers for 2026-06-12: 30 papers"),
        (OAI, "oai-pmh", 6, "OAI-PMH ListRecords: 6 records; resumption token 726959|1001"),
    ],
)
def test_load_file_detects_every_fixture(name: str, kind: str, count: int, note: str) -> None:
    got_kind, papers, got_note = load_file(FIXTURES / name)
    assert (got_kind, len(papers), got_note) == (kind, count, note)
