"""Odd and hostile inputs for the readers (issue 14, items 3, 8, 9 and 11).

Every book is generated here, in the test's ``tmp_path``: EPUBs and DOCX/ODT
archives built with :mod:`zipfile`, FB2 documents written as XML.  Calibre's
``ebook-convert`` is the real program (the tests that need it skip without it,
as ``tests/test_formats.py`` does).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import dask
import psutil
import pytest
from helpers import load_report, run_cli
from test_hostile import (
    OPF_PATH,
    book_files,
    container_xml,
    inflating_stream,
    opf_xml,
    stored,
    write_epub,
    write_raw_zip,
)

import ebook2audio_dask.ingest.epub as epub_reader
from ebook2audio_dask.errors import BookError
from ebook2audio_dask.ingest import read_book
from ebook2audio_dask.ingest._sections import BEFORE_BODY_CHARS
from ebook2audio_dask.ingest.calibre import MAX_MEMBERS
from ebook2audio_dask.pipeline.report import skipped_summary

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
    paragraph = "Paragraph 7: the lamp was lit and nobody came to the door that night."
    assert chapter.count(paragraph) == 1
    repeats_logged = [r for r in caplog.records if "more than once" in r.getMessage()]
    assert len(repeats_logged) == 2  # one warning per book, not one per repeat
    assert "1000 times" in repeats_logged[1].getMessage()


# ==========================================================================
# Item 9: FB2 text nodes over libxml2's default 10 MB
# ==========================================================================
_WORDS = [
    "the",
    "lamp",
    "was",
    "lit",
    "nobody",
    "came",
    "to",
    "the",
    "door",
    "that",
    "night",
    "and",
    "snow",
    "kept",
    "falling",
]


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


# ==========================================================================
# Item 3: Calibre formats within the archive limits; Calibre's folder capped
# ==========================================================================
_W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
_DOCX_PARTS = {
    "[Content_Types].xml": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" '
        'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/word/document.xml" ContentType="application/'
        'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>'
    ),
    "_rels/.rels": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
        'relationships/officeDocument" Target="word/document.xml"/></Relationships>'
    ),
}
_DOC_HEAD = (
    f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document xmlns:w="{_W}"><w:body>'
)
_DOC_TAIL = "</w:body></w:document>"


def _docx_paragraphs(paragraphs: list[str]) -> str:
    return "".join(f"<w:p><w:r><w:t>{p}</w:t></w:r></w:p>" for p in paragraphs)


def write_docx(path: Path, paragraphs: list[str]) -> Path:
    """A small real DOCX, as a word processor writes its minimum."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", _DOCX_PARTS["[Content_Types].xml"])
        zf.writestr("_rels/.rels", _DOCX_PARTS["_rels/.rels"])
        zf.writestr("word/document.xml", _DOC_HEAD + _docx_paragraphs(paragraphs) + _DOC_TAIL)
    return path


def bomb_docx(path: Path, blocks: int) -> Path:
    """A DOCX whose word/document.xml inflates to *blocks* × 16 MiB (declared truly)."""
    head = (_DOC_HEAD + "<w:p><w:r><w:t>Boom").encode()
    stream, crc, size = inflating_stream(head, blocks, b"</w:t></w:r></w:p>" + _DOC_TAIL.encode())
    members = [stored(name, data) for name, data in _DOCX_PARTS.items()]
    members.append(("word/document.xml", stream, 8, crc, size, 0))
    return write_raw_zip(path, members)


def bomb_odt(path: Path, members: int, size: int) -> Path:
    """An ODT with *members* pictures of *size* bytes each (deflated to almost nothing)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(zipfile.ZipInfo("mimetype"), "application/vnd.oasis.opendocument.text")
        zf.writestr("content.xml", "<office:document-content/>")
        picture = b"\0" * size
        for k in range(members):
            zf.writestr(f"Pictures/{k:05d}.png", picture)
    return path


@pytest.fixture
def calibre(tmp_path, monkeypatch) -> dict:
    """``ingest.calibre`` set to a wrapper that notes each run, then runs the real
    ``ebook-convert``; Calibre's private folders made under a temp dir of the test's own."""
    real = shutil.which("ebook-convert")
    runs = tmp_path / "calibre-runs"
    wrapper = tmp_path / "ebook-convert"
    wrapper.write_text(f'#!/bin/sh\necho run >> "{runs}"\nexec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    with dask.config.set({"ebook2audio.ingest.calibre": str(wrapper)}):
        yield {"real": real, "runs": runs, "temp": temp, "wrapper": wrapper}


def _calibre_ran(calibre) -> int:
    return len(calibre["runs"].read_text().split()) if calibre["runs"].exists() else 0


def _needs_calibre(calibre) -> None:
    if calibre["real"] is None:
        message = "Calibre's ebook-convert is not installed: .ci/install-dev.sh installs it as root"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _calibre_processes(folder: Path) -> list:
    """Processes still running with *folder* (Calibre's private folders) in their command line."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(str(folder) in part for part in proc.info["cmdline"] or ()):
            found.append(proc)
    return found


def test_docx_zip_bomb_is_refused_before_calibre_runs(calibre, tmp_path):
    book = bomb_docx(tmp_path / "bomb.docx", blocks=32)  # 0.5 MB that inflates to 512 MiB
    assert book.stat().st_size < 1024 * 1024
    with pytest.raises(BookError) as info:
        read_book(str(book))
    assert str(info.value) == (
        f"{book}: archive member word/document.xml inflates to 512.00 MiB, which exceeds the "
        "256.00 MiB limit per member (ingest.max-member-size); a zip bomb?"
    )
    assert _calibre_ran(calibre) == 0
    assert not list(calibre["temp"].iterdir())


def test_odt_over_the_total_and_member_count_is_refused_before_calibre_runs(calibre, tmp_path):
    many_mib = bomb_odt(tmp_path / "total.odt", members=12, size=1024 * 1024)
    with dask.config.set({"ebook2audio.ingest.max-total-size": "8MiB"}):
        with pytest.raises(BookError) as info:
            read_book(str(many_mib))
    assert str(info.value) == (
        f"{many_mib}: the archive's members inflate to 12.00 MiB, over the 8.00 MiB limit "
        "per book (ingest.max-total-size); a zip bomb?"
    )
    crowded = bomb_odt(tmp_path / "crowded.odt", members=MAX_MEMBERS - 1, size=0)  # + 2 parts
    with pytest.raises(BookError) as info:
        read_book(str(crowded))
    assert str(info.value) == (
        f"{crowded}: the archive holds {MAX_MEMBERS + 1} members, over the {MAX_MEMBERS} "
        "a book may have; a zip bomb?"
    )
    assert _calibre_ran(calibre) == 0
    assert not list(calibre["temp"].iterdir())


def test_calibre_output_over_the_cap_is_stopped_and_removed(calibre, tmp_path):
    _needs_calibre(calibre)
    words = "The lamp was lit and nobody came to the door that night."
    docx = write_docx(tmp_path / "small.docx", [f"{words} ({k})" for k in range(200)])
    with dask.config.set({"ebook2audio.ingest.calibre-max-output-size": "64kB"}):
        with pytest.raises(BookError) as info:
            read_book(str(docx))
    assert str(info.value) == (
        f"{docx}: Calibre's ebook-convert wrote more than 62.50 kiB converting the DOCX file, "
        "over the limit ingest.calibre-max-output-size; stopped"
    )
    assert _calibre_ran(calibre) == 1
    assert not list(calibre["temp"].iterdir())
    assert not _calibre_processes(calibre["temp"])
    # the same book within the default cap converts
    book = read_book(str(docx))
    assert book.format == "docx" and f"{words} (199)" in book.chapters[-1].paragraphs
    assert not list(calibre["temp"].iterdir())


def test_ctrl_c_during_calibre_removes_its_folder(calibre, tmp_path):
    _needs_calibre(calibre)
    docx = write_docx(tmp_path / "book.docx", ["Nobody came to the door that night."] * 2000)
    script = (
        "import dask, sys\n"
        "from ebook2audio_dask.ingest import read_book\n"
        f"dask.config.set({{'ebook2audio.ingest.calibre': {str(calibre['wrapper'])!r}}})\n"
        "read_book(sys.argv[1])\n"
        "print('converted')\n"
    )
    env = dict(os.environ, TMPDIR=str(calibre["temp"]))
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(docx)],
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        # Calibre has started and is writing in its folder: a terminal's Ctrl-C now
        for _ in range(1200):
            if (
                _calibre_ran(calibre)
                and list(calibre["temp"].glob("ebook2audio-calibre-*/tmp"))
                and _calibre_processes(calibre["temp"])
            ):
                break
            assert child.poll() is None, child.communicate()
            time.sleep(0.05)
        os.killpg(child.pid, signal.SIGINT)  # to the process group, as a terminal sends it
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert b"converted" not in out and b"KeyboardInterrupt" in err
    assert not list(calibre["temp"].iterdir())
    for _ in range(40):  # Calibre's process group was killed
        if not _calibre_processes(calibre["temp"]):
            break
        time.sleep(0.05)
    assert not _calibre_processes(calibre["temp"])


# ==========================================================================
# Item 11: real content skipped as front matter
# ==========================================================================
_SENTENCE = "The lamp was lit and nobody came to the door that night, so she read on. "


def _xhtml(body: str, title: str = "t") -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<html xmlns="http://www.w3.org/1999/xhtml" xmlns:epub="http://www.idpf.org/2007/ops">'
        f"<head><title>{title}</title></head><body>{body}</body></html>"
    )


def _prose(tag: str, paragraphs: int, sentences: int = 4) -> str:
    return "".join(f"<p>{tag} {k}: {_SENTENCE * sentences}</p>" for k in range(paragraphs))


def landmark_epub(path: Path, *, chapter_paragraphs: int, note_paragraphs: int = 0) -> Path:
    """An EPUB 3 whose landmarks point ``bodymatter`` at ``ch1.xhtml#start``, an anchor
    a few paragraphs into chapter one; before it a title page, a contents page and (with
    *note_paragraphs*) an untitled-looking "A Note" section of its own file."""
    docs = {
        "title.xhtml": _xhtml("<h1>A Quiet House</h1><p>by A. Writer</p>"),
        "contents.xhtml": _xhtml(
            '<h1>Contents</h1><p><a href="ch1.xhtml">Chapter One</a></p>'
            '<p><a href="ch2.xhtml">Chapter Two</a></p>'
        ),
    }
    toc = [("title.xhtml", "Title Page"), ("contents.xhtml", "Contents")]
    if note_paragraphs:
        docs["note.xhtml"] = _xhtml("<h1>A Note</h1>" + _prose("Note", note_paragraphs))
        toc.append(("note.xhtml", "A Note"))
    docs["ch1.xhtml"] = _xhtml(
        "<h1>Chapter One</h1>" + _prose("Opening", 2)
        + f'<p id="start">{_SENTENCE}</p>' + _prose("One", chapter_paragraphs)
    )  # fmt: skip
    docs["ch2.xhtml"] = _xhtml("<h1>Chapter Two</h1>" + _prose("Two", 3))
    toc += [("ch1.xhtml", "Chapter One"), ("ch2.xhtml", "Chapter Two")]
    lis = "".join(f'<li><a href="{h}">{t}</a></li>' for h, t in toc)
    nav = _xhtml(
        f'<nav epub:type="toc"><ol>{lis}</ol></nav><nav epub:type="landmarks"><ol>'
        '<li><a epub:type="bodymatter" href="ch1.xhtml#start">Start</a></li></ol></nav>'
    )
    xhtml_type = 'media-type="application/xhtml+xml"'
    manifest = "".join(f'<item id="d{i}" href="{n}" {xhtml_type}/>' for i, n in enumerate(docs))
    manifest += f'<item id="nav" href="nav.xhtml" {xhtml_type} properties="nav"/>'
    spine = "".join(f'<itemref idref="d{i}"/>' for i in range(len(docs)))
    opf = (
        '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0">'
        '<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>A Quiet House</dc:title>'
        "<dc:creator>A. Writer</dc:creator><dc:language>en</dc:language></metadata>"
        f"<manifest>{manifest}</manifest><spine>{spine}</spine></package>"
    )
    files = {"META-INF/container.xml": container_xml(), OPF_PATH: opf, "OEBPS/nav.xhtml": nav}
    files.update({f"OEBPS/{name}": text for name, text in docs.items()})
    return write_epub(path, files)


def test_chapter_holding_the_bodymatter_target_is_body(tmp_path):
    epub = landmark_epub(tmp_path / "landmark.epub", chapter_paragraphs=100)
    book = read_book(str(epub))
    first = book.chapters[0]
    assert [c.title for c in book.chapters] == ["Chapter One", "Chapter Two"]
    assert first.chars > 30_000 and first.paragraphs[1].startswith("Opening 0:")
    skipped = [(s.title, s.kind) for s in book.skipped]
    assert skipped == [("Title Page", "front"), ("Contents", "front")]
    # inspect lists it as chapter 1, not as skipped matter
    proc = run_cli("inspect", "--json", str(epub))
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    listed = [(c["index"], c["title"]) for c in info["chapters"]]
    assert listed == [(1, "Chapter One"), (2, "Chapter Two")]
    assert [s["title"] for s in info["skipped"]] == ["Title Page", "Contents"]


def test_only_short_sections_are_skipped_for_their_position_alone(tmp_path):
    long_note = landmark_epub(tmp_path / "long.epub", chapter_paragraphs=3, note_paragraphs=12)
    book = read_book(str(long_note))  # "A Note", 3,700 characters: read, not skipped
    assert [c.title for c in book.chapters] == ["A Note", "Chapter One", "Chapter Two"]
    short_note = landmark_epub(tmp_path / "short.epub", chapter_paragraphs=3, note_paragraphs=2)
    book = read_book(str(short_note))  # 600 characters before the landmark: front matter
    assert [c.title for c in book.chapters] == ["Chapter One", "Chapter Two"]
    note = book.skipped[-1]
    assert (note.title, note.kind) == ("A Note", "front")
    assert note.reason == "a short section before the book's bodymatter landmark"
    assert 0 < note.chars < BEFORE_BODY_CHARS


def test_skipped_summary_is_one_safe_line():
    titles = ["Title Page", "Contents", "Evil\x1b]52;c;SGVsbG8=\x07Title", "A" * 300]
    titles += [f"Notice {k}" for k in range(30)]
    line = skipped_summary(
        [{"title": t, "kind": "front", "reason": "r", "chars": 1000} for t in titles]
    )
    assert line.startswith(
        "skipped 34 sections, 34,000 characters: Title Page, Contents, "
        "Evil\\x1b]52;c;SGVsbG8=\\x07Title, "
    )
    assert line.endswith(" more — use --include-matter")
    assert "\n" not in line and "\x1b" not in line
    assert len(line) < 250
    assert skipped_summary([]) == ""


def test_convert_says_what_it_skipped_and_the_report_lists_it(tmp_path, cache_dir):
    epub = landmark_epub(tmp_path / "quiet.epub", chapter_paragraphs=1, note_paragraphs=1)
    out = tmp_path / "out"
    proc = run_cli("convert", str(epub), "-o", str(out), "--engine", "espeak", "--cache", cache_dir,
                   "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = load_report(out / "quiet.report.json")
    assert [c["title"] for c in report["chapters"]] == ["Chapter One", "Chapter Two"]
    skipped = report["skipped"]
    assert [(s["title"], s["kind"]) for s in skipped] == [
        ("Title Page", "front"), ("Contents", "front"), ("A Note", "front")
    ]  # fmt: skip
    assert all(set(s) == {"title", "kind", "reason", "chars"} and s["reason"] for s in skipped)
    chars = sum(s["chars"] for s in skipped)
    [done] = [line for line in proc.stdout.splitlines() if line.startswith("done: ")]
    assert done.endswith(
        f"; skipped 3 sections, {chars:,} characters: Title Page, Contents, A Note "
        "— use --include-matter"
    )
