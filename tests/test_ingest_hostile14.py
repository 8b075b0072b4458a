"""Odd and hostile inputs for the readers (issue 14, items 3, 8, 9 and 11).

Every book is generated here, in the test's ``tmp_path``: EPUBs and DOCX/ODT
archives built with :mod:`zipfile`, FB2 documents written as XML.  Calibre's
``ebook-convert`` is the real program (the tests that need it skip without it,
as ``tests/test_formats.py`` does).
"""

from __future__ import annotations

import base64
import logging
import os
import zipfile
from pathlib import Path

import pytest

import ebook2audio_dask.ingest.epub as epub_reader
from ebook2audio_dask.errors import BookError
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


# ==========================================================================
# Item 9: FB2 text nodes over libxml2's default 10 MB
# ==========================================================================
_WORDS = "the lamp was lit nobody came to the door that night and snow kept falling".split()


def _long_paragraph(n_bytes: int) -> str:
    """A paragraph of about *n_bytes* of words (a sentence end now and then)."""
    words, size, k = ["FIRSTWORD"], 9, 0
    while size < n_bytes:
        word = _WORDS[k % len(_WORDS)] + ("." if k % 23 == 22 else "")
        words.append(word)
        size += len(word) + 1
        k += 1
    words.append("LASTWORD")
    return " ".join(words)


def _fb2(path: Path, paragraph: str, cover: bytes | None = None) -> Path:
    coverpage = binary = ""
    if cover is not None:
        coverpage = '<coverpage><image l:href="#cover.jpg"/></coverpage>'
        data = base64.encodebytes(cover).decode("ascii")  # 76-character lines, as writers do
        binary = f'<binary id="cover.jpg" content-type="image/jpeg">{data}</binary>'
    path.write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<FictionBook xmlns="http://www.gribuser.ru/xml/fictionbook/2.0" '
        'xmlns:l="http://www.w3.org/1999/xlink"><description><title-info>'
        "<author><first-name>Ann</first-name><last-name>Writer</last-name></author>"
        f"<book-title>Long</book-title>{coverpage}<lang>en</lang></title-info></description>"
        "<body><section><title><p>The Long Chapter</p></title>"
        f"<p>{paragraph}</p></section>"
        "<section><title><p>The Short Chapter</p></title><p>After the long one the night was "
        "quiet again, and the lamp burned down slowly while nobody at all came to the door.</p>"
        "</section>"
        f"</body>{binary}</FictionBook>",
        encoding="utf-8",
    )
    return path


def test_fb2_paragraph_over_10_mb_is_read_whole(tmp_path, caplog):
    paragraph = _long_paragraph(11 * 1024 * 1024)
    with caplog.at_level(logging.WARNING, logger="ebook2audio_dask.ingest"):
        book = read_book(str(_fb2(tmp_path / "long.fb2", paragraph)))
    assert [c.title for c in book.chapters] == ["The Long Chapter", "The Short Chapter"]
    pieces = book.chapters[0].paragraphs[1:]  # cut at MAX_PARAGRAPH_CHARS, nothing dropped
    assert pieces[0].startswith("FIRSTWORD ") and pieces[-1].endswith(" LASTWORD")
    assert sum(len(p.split()) for p in pieces) == len(paragraph.split())
    assert sum(len(p) for p in pieces) + len(pieces) - 1 == len(paragraph)
    assert not [r for r in caplog.records if "well-formed" in r.getMessage()]


def test_fb2_cover_over_10_mb_of_base64_is_the_cover(tmp_path, caplog):
    image = b"\xff\xd8\xff\xe0" + os.urandom(9 * 1024 * 1024) + b"\xff\xd9"  # 12 MiB as base64
    with caplog.at_level(logging.WARNING, logger="ebook2audio_dask.ingest"):
        book = read_book(str(_fb2(tmp_path / "cover.fb2", "A short chapter.", cover=image)))
    assert book.cover is not None and book.cover.media_type == "image/jpeg"
    assert book.cover.data == image
    assert not caplog.records, [r.getMessage() for r in caplog.records]


def test_fb2_over_the_parsers_own_limit_fails_in_one_line(tmp_path):
    nested = "<cite>" * 2100 + "<p>Deep.</p>" + "</cite>" * 2100  # libxml2 stops at 2048 levels
    path = _fb2(tmp_path / "deep.fb2", "Shallow.").read_text(encoding="utf-8")
    deep = tmp_path / "deep.fb2"
    deep.write_text(path.replace("<p>Shallow.</p>", nested), encoding="utf-8")
    with pytest.raises(BookError) as info:
        read_book(str(deep))
    assert str(info.value) == (
        f"{deep}: not a readable FB2: elements nested deeper than the XML parser's limit "
        "(libxml2: 2048 levels)"
    )
