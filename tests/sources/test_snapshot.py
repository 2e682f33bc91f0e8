"""Streaming the arXiv metadata snapshot (JSON lines): offsets, resume, bad lines."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.sources.detect import load_file
from adapters.sources.snapshot import SnapshotStats, iter_snapshot

RECORD = {
    "id": "0704.0001",
    "submitter": "Pavel Nadolsky",
    "authors": "C. Bal\\'azs, E. L. Berger, P. M. Nadolsky, C.-P. Yuan",
    "title": "Calculation of prompt diphoton production cross sections at Tevatron and\n  LHC energies",
    "comments": "37 pages, 15 figures; published version",
    "journal-ref": "Phys.Rev.D76:013009,2007",
    "doi": "10.1103/PhysRevD.76.013009",
    "report-no": None,
    "categories": "hep-ph",
    "license": None,
    "abstract": "  A fully differential calculation in perturbative quantum chromodynamics is\npresented.\n",
    "versions": [
        {"version": "v1", "created": "Mon, 2 Apr 2007 19:18:42 GMT"},
        {"version": "v2", "created": "Tue, 24 Jul 2007 20:10:27 GMT"},
    ],
    "update_date": "2008-11-13",
    "authors_parsed": [
        ["Balázs", "C.", ""],
        ["Berger", "E. L.", ""],
        ["Nadolsky", "P. M.", ""],
        ["Yuan", "C. -P.", ""],
    ],
}


def _write(path: Path, records: list[object]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _rec(arxiv_id: str, cats: str = "cs.LG stat.ML") -> dict[str, object]:
    return {**RECORD, "id": arxiv_id, "categories": cats}


def test_snapshot_record_fields(tmp_path: Path) -> None:
    path = _write(tmp_path / "s.json", [RECORD, _rec("math/0406594", "math.GT math.AT")])
    items = list(iter_snapshot(path))
    (_, first), (end, second) = items
    assert first.arxiv_id == "0704.0001" and first.version == 2
    assert first.submitted == datetime(2007, 4, 2, 19, 18, 42, tzinfo=UTC)
    assert first.updated == datetime(2007, 7, 24, 20, 10, 27, tzinfo=UTC)
    assert first.authors == ("C. Balázs", "E. L. Berger", "P. M. Nadolsky", "C. -P. Yuan")
    assert first.title == "Calculation of prompt diphoton production cross sections at Tevatron and LHC energies"
    assert first.abstract == "A fully differential calculation in perturbative quantum chromodynamics is presented."
    assert (first.doi, first.journal_ref, first.source) == (
        "10.1103/PhysRevD.76.013009",
        "Phys.Rev.D76:013009,2007",
        "snapshot",
    )
    assert second.arxiv_id == "math/0406594"
    assert second.categories == ("math.GT", "math.AT") and second.primary_category == "math.GT"
    assert end == path.stat().st_size


def test_snapshot_resumes_from_an_offset_and_skips_bad_lines(tmp_path: Path) -> None:
    records: list[object] = [_rec(f"2401.{i:05d}") for i in range(5)]
    records.insert(2, '{"id": "2401.99999", "title": "cut off')  # a truncated line
    records.insert(4, '{"title": "no id"}')
    records.insert(5, "")  # blank lines are not errors
    path = _write(tmp_path / "s.json", records)

    stats = SnapshotStats()
    everything = list(iter_snapshot(path, stats=stats))
    assert [p.arxiv_id for _, p in everything] == [f"2401.{i:05d}" for i in range(5)]
    assert (stats.papers, stats.bad, stats.lines) == (5, 2, 7)

    # Stop after the second paper, resume from its offset: the rest comes once, nothing repeats.
    resume_at = everything[1][0]
    resumed_stats = SnapshotStats()
    rest = list(iter_snapshot(path, resume_at, stats=resumed_stats))
    assert [p.arxiv_id for _, p in rest] == ["2401.00002", "2401.00003", "2401.00004"]
    assert [o for o, _ in rest] == [o for o, _ in everything[2:]]
    assert resumed_stats.bad == 2


def test_snapshot_is_detected_and_loaded(tmp_path: Path) -> None:
    path = _write(tmp_path / "arxiv-metadata-oai-snapshot.json", [RECORD, "garbage", _rec("2401.00001")])
    kind, papers, note = load_file(path)
    assert kind == "arxiv-snapshot" and len(papers) == 2
    assert note == "arXiv metadata snapshot: 2 papers, 1 bad lines skipped"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"hello world", "neither XML nor JSON"),
        (b'{"a": 1}', "JSON, but not a known paper payload"),
        (b"[1, 2]", "a JSON array, but not Hugging Face daily papers"),
        (b'[{"paper": {"id": "2401.0', "truncated or malformed JSON"),
        (b"<html><head><title>502 Bad Gateway</title></head></html>", "got an HTML page instead of XML"),
        (b"<?xml version='1.0'?><rss><channel><item><title>cut", "truncated or malformed XML"),
        (b"<catalog/>", "XML with root <catalog>, not a known paper feed"),
    ],
)
def test_load_file_rejects_unknown_payloads(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "payload.bin"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"^payload\.bin: not a recognised paper feed: ") as info:
        load_file(path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_load_file_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        load_file(tmp_path / "nope.xml")
