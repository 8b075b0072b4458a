"""Chapter selection UX: ``inspect`` shows what a conversion skips and why;
``--chapters`` takes titles as well as numbers (issue 8, item 5)."""

from __future__ import annotations

import json

import pytest
from helpers import load_report, run_cli

import ebook2audio_dask as e2a
from ebook2audio_dask.cli import parse_chapters
from ebook2audio_dask.errors import UsageError

CAROL = "christmas-carol-gutenberg-epub2.epub"


def test_inspect_lists_skipped_matter_with_reasons(corpus):
    proc = run_cli("inspect", str(corpus / CAROL), "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert [c["index"] for c in info["chapters"]] == [1, 2, 3, 4, 5]
    skipped = {c["title"][:30]: (c["kind"], c["reason"]) for c in info["skipped"]}
    assert skipped["CONTENTS"] == (
        "front",
        "the book's landmarks/guide or file name mark it as front matter",
    )
    assert skipped["CHARLES DICKENS WITH ILLUSTRAT"] == (
        "front",
        "a title-page line (the author's name)",
    )
    assert skipped["ILLUSTRATIONS"] == ("front", "its title names front matter")
    assert skipped["THE FULL PROJECT GUTENBERG LIC"] == (
        "back",
        "Project Gutenberg header or licence",
    )
    # reading order: the skipped sections sit where they are in the book
    order = [c["index"] for c in info["listing"]]
    assert order[:6] == [None] * 6 and order[6:11] == [1, 2, 3, 4, 5] and order[11:] == [None, None]

    table = run_cli("inspect", str(corpus / CAROL)).stdout
    assert "Chapters: 5 (+8 front/back matter, skipped unless --include-matter)" in table
    assert (
        "  -  CONTENTS  (167 chars, 34 words)  [skipped: front matter, the book's landmarks/guide"
        in table
    )
    assert "  1. STAVE ONE. MARLEY’S GHOST.  (35760 chars" in table
    # --include-matter numbers everything, as convert --include-matter does
    full = json.loads(run_cli("inspect", str(corpus / CAROL), "--json", "--include-matter").stdout)
    assert len(full["chapters"]) == 13 and full["skipped"] == []
    book = e2a.read_book(str(corpus / CAROL), include_matter=True)
    assert [(c["index"], c["title"]) for c in full["chapters"]] == [
        (c.index, c.title) for c in book.chapters
    ]


def test_childrens_literature_bibliography_is_marked_by_its_epub_type(corpus):
    book = e2a.read_book(str(corpus / "childrens-literature.epub"), include_matter=True)
    matter = {c.title: c.reason for c in book.chapters if c.kind != "body"}
    assert matter["BIBLIOGRAPHY"] == "epub:type bibliography"
    assert matter["INTRODUCTORY"] == "its title names front matter"
    assert all(c.reason == "" for c in book.chapters if c.kind == "body")


def test_parse_chapters_numbers_and_titles():
    assert parse_chapters(("1-3,7",)) == (range(1, 4), 7)  # a range stays a range
    assert parse_chapters(("2", "The Real Princess", "4-5")) == (
        2,
        "The Real Princess",
        range(4, 6),
    )
    assert parse_chapters(("4-4",)) == (4,)
    assert parse_chapters(("Stave One, Marley's Ghost",)) == ("Stave One, Marley's Ghost",)
    assert parse_chapters(()) is None
    with pytest.raises(UsageError):
        parse_chapters(("3-1",))


def test_find_chapters_by_title_part_or_pattern(corpus):
    book = e2a.read_book(str(corpus / CAROL))
    assert [c.index for c in book.find_chapters("stave one marley's ghost")] == [
        1
    ]  # case/punctuation
    assert [c.index for c in book.find_chapters("THE LAST OF THE SPIRITS")] == [4]  # a unique part
    assert [c.index for c in book.find_chapters("Stave T*")] == [2, 3]  # a pattern
    assert [c.index for c in book.select([5, "marley"]).chapters] == [1, 5]  # book order
    with pytest.raises(
        UsageError, match=r"chapter title 'spirits' matches 3 chapters \(2 'STAVE TWO"
    ):
        book.find_chapters("spirits")
    with pytest.raises(UsageError, match="no chapter titled 'Stave Six'"):
        book.find_chapters("Stave Six")


@pytest.mark.slow
def test_convert_chapters_by_title(corpus, tmp_path, cache_dir):
    out = tmp_path / "out"
    proc = run_cli(
        "convert",
        str(corpus / "childrens-literature.epub"),
        "-o",
        str(out),
        "--engine",
        "espeak",
        "--chapters",
        "real princess",
        "--chapters",
        "2",
        "--cache",
        cache_dir,
        "--no-progress",
        "--workers",
        "1",
    )
    assert proc.returncode == 0, proc.stderr
    report = load_report(out / "childrens-literature.report.json")
    assert [(c["index"], c["title"]) for c in report["chapters"]] == [
        (2, "191 THE LORD HELPETH MAN AND BEAST"),
        (3, "192 THE REAL PRINCESS"),
    ]
    # an ambiguous title is a usage error: one line naming the book, exit 2, nothing written
    proc = run_cli(
        "convert",
        str(corpus / CAROL),
        "-o",
        str(tmp_path / "out2"),
        "--engine",
        "espeak",
        "--chapters",
        "spirits",
        "--cache",
        cache_dir,
        "--no-progress",
        "--workers",
        "1",
    )
    assert proc.returncode == 2
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: {corpus / CAROL}: chapter title 'spirits' matches 3 chapters")
    assert (
        "Traceback" not in proc.stderr
        and not (tmp_path / "out2" / "christmas-carol-gutenberg-epub2.m4b").exists()
    )
