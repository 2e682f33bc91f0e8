"""Formats we have no real recording of, written from the published specifications (arXiv Atom announcement
feed, OAI-PMH `arXiv` format, replace-cross). Kept small and clearly hand-made."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from adapters.sources.arxiv_rss import parse_announcements
from adapters.sources.detect import load_file
from adapters.sources.oai_pmh import parse_oai

ATOM_FEED = b"""<?xml version='1.0' encoding='UTF-8'?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:arxiv="http://arxiv.org/schemas/atom"
      xmlns:dc="http://purl.org/dc/elements/1.1/" xml:lang="en-us">
  <id>http://rss.arxiv.org/atom/cs.LG</id>
  <title>cs.LG updates on arXiv.org</title>
  <updated>2026-09-25T04:31:07.000000+00:00</updated>
  <link href="http://rss.arxiv.org/atom/cs.LG" rel="self" type="application/atom+xml"/>
  <entry>
    <id>oai:arXiv.org:2609.30001v1</id>
    <title>A  New
      Paper</title>
    <updated>2026-09-25T04:31:07.000000+00:00</updated>
    <link href="https://arxiv.org/abs/2609.30001" rel="alternate" type="text/html"/>
    <summary>arXiv:2609.30001v1 Announce Type: new
Abstract: We show things.</summary>
    <category term="cs.LG" scheme="http://arxiv.org/schemas/atom"/>
    <published>2026-09-25T00:00:00-04:00</published>
    <arxiv:announce_type>new</arxiv:announce_type>
    <author><name>Ada Lovelace</name></author>
    <author><name>Alan Turing</name></author>
  </entry>
  <entry>
    <id>oai:arXiv.org:hep-th/9901001v7</id>
    <title>Old Paper</title>
    <summary>arXiv:hep-th/9901001v7 Announce Type: replace-cross
Abstract: Old results.</summary>
    <category term="hep-th"/>
    <category term="cs.LG"/>
    <published>2026-09-25T00:00:00-04:00</published>
    <dc:creator>Emmy Noether, David Hilbert</dc:creator>
    <arxiv:DOI>10.1000/xyz</arxiv:DOI>
  </entry>
</feed>"""

OAI_ARXIV_FORMAT = b"""<?xml version="1.0" encoding="UTF-8"?>
<OAI-PMH xmlns="http://www.openarchives.org/OAI/2.0/">
<responseDate>2026-09-25T03:00:00Z</responseDate>
<request verb="ListRecords" metadataPrefix="arXiv">https://oaipmh.arxiv.org/oai</request>
<ListRecords>
<record><header><identifier>oai:arXiv.org:2609.30002</identifier><datestamp>2026-09-24</datestamp>
<setSpec>cs:cs:LG</setSpec></header>
<metadata><arXiv xmlns="http://arxiv.org/OAI/arXiv/">
<id>2609.30002</id><created>2026-09-22</created><updated>2026-09-23</updated>
<authors><author><keyname>Lovelace</keyname><forenames>Ada</forenames></author>
<author><keyname>Babbage</keyname><forenames>Charles</forenames><suffix>Jr</suffix></author></authors>
<title>Engines</title><categories>cs.LG math.HO</categories><comments>5 pages</comments>
<doi>10.1000/engines</doi><abstract>  Analytical
engines.</abstract></arXiv></metadata></record>
<resumptionToken expirationDate="2026-09-26T00:00:00Z">opaque-token</resumptionToken>
</ListRecords></OAI-PMH>"""


def test_atom_announcement_feed() -> None:
    feed = parse_announcements(ATOM_FEED)
    assert feed.format == "atom" and feed.feed_day == date(2026, 9, 25)
    new, old = feed.papers
    assert (new.arxiv_id, new.version, new.announce_type) == ("2609.30001", 1, "new")
    assert new.title == "A New Paper" and new.abstract == "We show things."
    assert new.authors == ("Ada Lovelace", "Alan Turing")
    assert (old.arxiv_id, old.version, old.announce_type) == ("hep-th/9901001", 7, "replace-cross")
    assert old.authors == ("Emmy Noether", "David Hilbert")
    assert old.doi == "10.1000/xyz" and not old.is_announcement
    assert feed.describe() == "Atom feed for Fri 25 Sep 2026: 1 new, 1 replace-cross"


def test_atom_announcement_feed_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "feed.atom"
    path.write_bytes(ATOM_FEED)
    kind, papers, note = load_file(path)
    assert (kind, len(papers)) == ("arxiv-atom", 2)
    assert note.startswith("Atom feed for Fri 25 Sep 2026")


def test_oai_arxiv_format() -> None:
    page = parse_oai(OAI_ARXIV_FORMAT)
    (paper,) = page.papers
    assert paper.arxiv_id == "2609.30002"
    assert paper.authors == ("Ada Lovelace", "Charles Babbage Jr")
    assert paper.categories == ("cs.LG", "math.HO") and paper.primary_category == "cs.LG"
    assert paper.submitted == datetime(2026, 9, 22, tzinfo=UTC)
    assert paper.updated == datetime(2026, 9, 23, tzinfo=UTC)
    assert paper.abstract == "Analytical engines." and paper.doi == "10.1000/engines"
    assert page.resumption_token == "opaque-token"
