"""Odd and hostile inputs for the readers (issue 14, items 3, 8, 9 and 11).

Every book is generated here, in the test's ``tmp_path``: EPUBs and DOCX/ODT
archives built with :mod:`zipfile`, FB2 documents written as XML.  Calibre's
``ebook-convert`` is the real program (the tests that need it skip without it,
as ``tests/test_formats.py`` does).
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import pytest

import ebook2audio_dask.ingest.epub as epub_reader
from ebook2audio_dask.ingest import read_book
from test_hostile import OPF_PATH, book_files, opf_xml, write_epub

# ==========================================================================
# Item 8: a spine listing the same document many times
# ==========================================================================
_LONG_CHAPTER = "<h1>The Only Chapter</h1>" + "".join(
    f"<p>Paragraph {i}: the lamp was lit and nobody came to the door that night.</p>"
    for i in range(200)
)


def _repeated_spine_epub(path: Path, repeats: int) -> Path:
    files = book_files(
        '<?xml version="1.0" encoding="utf-8"?>'
        '<html xmlns="http://www.w3.org/1999/xhtml"><head><title>C</title></head>'
        f"<body>{_LONG_CHAPTER}</body></html>"
    )
    items = [
        ("nav", "nav.xhtml", "application/xhtml+xml", "nav"),
        ("ch1", "chapter.xhtml", "application/xhtml+xml", ""),
    ]
    files[OPF_PATH] = opf_xml(items, ["ch1"] * repeats)
    return write_epub(path, files)


def _count_parses(monkeypatch) -> list[int]:
    """Count the content documents the EPUB reader parses."""
    calls = [0]
    parse = epub_reader.read_document

    def counting(raw):
        calls[0] += 1
        return parse(raw)

    monkeypatch.setattr(epub_reader, "read_document", counting)
    return calls


def test_repeated_spine_document_is_parsed_once(tmp_path, monkeypatch, caplog):
    calls = _count_parses(monkeypatch)
    counts, texts = [], []
    for repeats in (250, 1000):
        calls[0] = 0
        with caplog.at_level(logging.WARNING, logger="ebook2audio_dask.ingest"):
            book = read_book(str(_repeated_spine_epub(tmp_path / f"r{repeats}.epub", repeats)))
        counts.append(calls[0])
        texts.append([c.paragraphs for c in book.chapters])
    assert counts[0] == counts[1] <= 2, counts  # the chapter (and the nav), whatever the repeats
    assert texts[0] == texts[1]
    (chapter,) = texts[1]
    assert chapter.count("Paragraph 7: the lamp was lit and nobody came to the door that night.") == 1
    repeats_logged = [r for r in caplog.records if "more than once" in r.getMessage()]
    assert len(repeats_logged) == 2  # one warning per book, not one per repeat
    assert "1000 times" in repeats_logged[1].getMessage()
