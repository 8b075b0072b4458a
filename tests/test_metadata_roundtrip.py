"""Titles, authors and chapter titles reach M4B and MP3 files exactly as the report shows them.

Issue 14, item 1: a title ending in a backslash made ffmpeg's FFMETADATA1
reader take the next line into the value (a chapter lost, the artist tag
swallowed by the title).  Hostile text of every kind goes through the merge's
own path here -- the plan (:func:`plan_book` cleans the titles), then
:class:`PartEncoder` and :func:`finish_file` -- and is read back with
mutagen: same chapter count and start times, titles equal to the plan's
(the report's), no tag merged into another.
"""

from __future__ import annotations

import re
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import load_report, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebook2audio_dask.audio import (
    TAG_MAX_BYTES,
    BookTags,
    ChapterMark,
    OutputSpec,
    PartEncoder,
    clean_tag,
    finish_file,
)
from ebook2audio_dask.engines.base import EngineSpec
from ebook2audio_dask.model import Book, Chapter
from ebook2audio_dask.text import plan_book

mutagen = pytest.importorskip("mutagen")
mutagen_mp4 = pytest.importorskip("mutagen.mp4")
mutagen_id3 = pytest.importorskip("mutagen.id3")

RATE = 22050
AUDIO_SECONDS = 1.2  # room for four chapters of up to 0.3 s
SPEC = EngineSpec.make("espeak", "en")
FORMATS = ("m4b", "mp3", "opus", "flac")  # the formats with chapters

#: Pieces that broke (or could break) a text metadata format, a container or a terminal.
HOSTILE = [
    "\\", "\\\\", "=", ";", "#", "\n", "\r", "\r\n", "\0", "\t", "\x0b", "\x1f", "\x7f", "\x85",
    "\x9b", "\u2028", "\x1b]52;c;aGk=\x07", "\u200f", "\u202e", "\u2066", "\ufeff", "\ud800",
    "[CHAPTER]", "title=", "END=9", ";FFMETADATA1", "artist=", " ", "\u00a0", "é", "漢字", "🎧",
    "e\u0301", "/",
]  # fmt: skip
_pieces = st.lists(
    st.one_of(st.sampled_from(HOSTILE), st.text(st.characters(exclude_categories=()), max_size=6)),
    max_size=10,
).map("".join)


def _long(seed: str) -> str:
    """A 2,000-character string built from *seed* (cut to whole code points)."""
    seed = seed or "ü\\"
    return (seed * (2000 // len(seed) + 1))[:2000]


values = st.one_of(_pieces, _pieces.map(lambda s: s + "\\"), _pieces.map(_long))


def check_clean(value: str) -> None:
    cleaned = clean_tag(value)
    assert clean_tag(cleaned) == cleaned
    assert len(cleaned.encode("utf-8")) <= TAG_MAX_BYTES
    assert not re.search("[\x00-\x1f\x7f-\x9f\ud800-\udfff]", cleaned)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(values)
def test_clean_tag_is_idempotent_bounded_and_container_safe(value):
    check_clean(value)
    plain = value.isprintable() and value == value.strip() and "  " not in value
    if plain and len(value.encode("utf-8")) <= TAG_MAX_BYTES:
        assert clean_tag(value) == value  # nothing to clean: kept as it is, ``=;#\\`` included


def test_clean_tag_rules():
    assert clean_tag(" A\tB \r\n C\0\x1b[31m\u2028D\\ ") == "A B C[31m D\\"
    assert clean_tag("one\r\ntwo\n\n\x07three", multiline=True) == "one\ntwo\n\nthree"
    assert clean_tag("\u200fשלום\u200f") == "\u200fשלום\u200f"  # bidi marks are text
    cut = clean_tag("é" * 200)  # 400 bytes: whole characters up to 252 bytes, then "…"
    assert cut == "é" * 126 + "…" and len(cut.encode()) == 255
    assert (
        clean_tag("a" * 250 + "🎧bc") == "a" * 250 + "…"
    )  # 256 bytes: the 4-byte character is not split


@pytest.fixture(scope="module")
def pass1(tmp_path_factory) -> dict[str, Path]:
    """The merge's pass 1 (:class:`PartEncoder`): 1.2 s of tone per format, encoded once."""
    folder = tmp_path_factory.mktemp("pass1")
    t = np.arange(int(AUDIO_SECONDS * RATE)) / RATE
    pcm = (3000 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()
    paths = {}
    for fmt in FORMATS:
        encoder = PartEncoder(OutputSpec(format=fmt), RATE, folder / f"audio.{fmt}")
        encoder.write(pcm)
        encoder.close()
        paths[fmt] = encoder.path
    return paths


def read_back(fmt: str, path: Path) -> tuple[list[tuple[float, str]], dict[str, list[str]]]:
    """(chapter start seconds, title) and the book tags of *path*, read with mutagen."""
    if fmt == "m4b":
        mp4 = mutagen_mp4.MP4(str(path))
        chapters = [(c.start, c.title) for c in mp4.chapters]
        names = {
            "title": "\xa9nam",
            "artist": "\xa9ART",
            "album_artist": "aART",
            "album": "\xa9alb",
        }
        return chapters, {k: list(mp4.tags.get(v, [])) for k, v in names.items()}
    if fmt in ("opus", "flac"):
        comments = mutagen.File(str(path)).tags
        chapters = []
        while f"CHAPTER{len(chapters):03d}" in comments:
            key = f"CHAPTER{len(chapters):03d}"
            h, m, sec = comments[key][0].split(":")
            start = int(h) * 3600 + int(m) * 60 + float(sec)
            chapters.append((start, comments.get(key + "NAME", [""])[0]))
        names = {
            "title": "title",
            "artist": "artist",
            "album_artist": "albumartist",
            "album": "album",
        }
        return chapters, {k: list(comments.get(v, [])) for k, v in names.items()}
    id3 = mutagen_id3.ID3(str(path))
    chaps = {c.element_id: c for c in id3.getall("CHAP")}
    [toc] = id3.getall("CTOC")
    assert sorted(toc.child_element_ids) == sorted(chaps)
    chapters = []
    for element_id in toc.child_element_ids:
        sub = chaps[element_id].sub_frames.getall("TIT2")
        chapters.append((chaps[element_id].start_time / 1000, str(sub[0]) if sub else ""))
    names = {"title": "TIT2", "artist": "TPE1", "album_artist": "TPE2", "album": "TALB"}
    return chapters, {k: (list(id3[v].text) if v in id3 else []) for k, v in names.items()}


@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=30, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
@given(
    title=values,
    authors=st.lists(values, max_size=3),
    chapters=st.lists(
        st.tuples(values, st.integers(int(0.05 * RATE), int(0.3 * RATE))), min_size=1, max_size=4
    ),  # (title, length in samples)
)
def test_hostile_titles_round_trip(pass1, fmt, title, authors, chapters):
    """The file holds the plan's (the report's) titles, chapter starts and tags, nothing merged."""
    parsed = tuple(Chapter(i + 1, t, ("Some text.",)) for i, (t, _) in enumerate(chapters))
    book = Book(
        source="hostile.epub", title=title, authors=tuple(authors), language="en", chapters=parsed
    )
    plan = plan_book(book, SPEC, sample_rate=RATE, max_chars=200, language="en", speak_titles=False)
    assert [c.title for c in plan.chapters] == [clean_tag(t) for t, _ in chapters]
    assert plan.title == clean_tag(title)
    assert plan.authors == tuple(a for a in map(clean_tag, authors) if a)
    for value in (title, *authors, *(t for t, _ in chapters)):
        check_clean(value)
    # the merge's marks and tags, made from the plan as pipeline.tasks makes them
    starts = np.cumsum([0] + [n for _, n in chapters]).tolist()
    marks = [ChapterMark(ch.title, a, b) for ch, a, b in zip(plan.chapters, starts, starts[1:])]
    tags = BookTags(title=plan.title, authors=plan.authors, language=plan.language)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"book.{fmt}"
        finish_file(
            OutputSpec(format=fmt),
            pass1[fmt],
            out,
            sample_rate=RATE,
            chapters=marks,
            tags=tags,
            cover_path=None,
            workdir=Path(tmp),
        )
        got_chapters, got_tags = read_back(fmt, out)

    assert [t for _, t in got_chapters] == [c.title for c in plan.chapters]
    for (start, _), want in zip(got_chapters, starts):
        assert abs(start - want / RATE) <= 0.001
    artist = clean_tag(", ".join(plan.authors))
    want = {"title": plan.title, "artist": artist, "album_artist": artist, "album": plan.title}
    assert got_tags == {k: [v] if v else [] for k, v in want.items()}


# --------------------------------------------------------------------------
# End to end: the CLI, espeak, a generated EPUB


def _xhtml(title: str, body: str) -> str:
    return ('<?xml version="1.0" encoding="utf-8"?><html xmlns="http://www.w3.org/1999/xhtml" '
            f'xmlns:epub="http://www.idpf.org/2007/ops"><head><title>{title}</title></head>'
            f"<body>{body}</body></html>")  # fmt: skip


def backslash_epub(path: Path, title: str, author: str, chapters: list[str]) -> Path:
    """An EPUB 3 whose title and chapter titles are *title*, *chapters* (XML-escaped by the
    caller)."""
    names = [f"c{i}.xhtml" for i in range(len(chapters))]
    manifest = "".join(
        f'<item id="c{i}" href="{n}" media-type="application/xhtml+xml"/>'
        for i, n in enumerate(names)
    )
    manifest += (
        '<item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>'
    )
    spine = "".join(f'<itemref idref="c{i}"/>' for i in range(len(names)))
    nav = "".join(f'<li><a href="{n}">{t}</a></li>' for n, t in zip(names, chapters))
    files = {
        "META-INF/container.xml": '<?xml version="1.0"?><container version="1.0" '
        'xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles><rootfile '
        'full-path="OEBPS/content.opf" '
        'media-type="application/oebps-package+xml"/></rootfiles></container>',
        "OEBPS/content.opf": '<?xml version="1.0"?>'
        '<package xmlns="http://www.idpf.org/2007/opf" version="3.0" '
        'unique-identifier="id"><metadata xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f'<dc:identifier id="id">urn:test:backslash</dc:identifier><dc:title>{title}</dc:title>'
        f"<dc:creator>{author}</dc:creator><dc:language>en</dc:language></metadata>"
        f"<manifest>{manifest}</manifest><spine>{spine}</spine></package>",
        "OEBPS/nav.xhtml": _xhtml("Contents", f'<nav epub:type="toc"><ol>{nav}</ol></nav>'),
    }
    for n, (name, chapter) in enumerate(zip(names, chapters), 1):
        files[f"OEBPS/{name}"] = _xhtml(chapter, f"<h1>{chapter}</h1><p>Chapter {n} is short.</p>")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip")
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def test_cli_backslash_titles_reach_m4b_and_mp3(tmp_path):
    """A book and chapter title ending in a backslash: every chapter the report lists is in the
    file, with the report's title, and the title tag does not swallow the artist."""
    chapters = ["Part One\\", "Two = 2; #2", "Three \u200f\\\\"]
    book = backslash_epub(
        tmp_path / "slash.epub", "Back\\slash Book\\", "Ann = Author; #1", chapters
    )
    cache = str(tmp_path / "chunks")
    for fmt in ("m4b", "mp3"):
        out = tmp_path / fmt
        proc = run_cli("convert", str(book), "-o", str(out), "--engine", "espeak", "--format", fmt,
                       "--cache", cache, "--no-progress")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        report = load_report(out / "slash.report.json")
        assert [c["title"] for c in report["chapters"]] == chapters
        assert report["title"] == "Back\\slash Book\\" and report["authors"] == ["Ann = Author; #1"]
        got_chapters, got_tags = read_back(fmt, out / f"slash.{fmt}")
        assert len(got_chapters) == len(report["chapters"])
        assert [t for _, t in got_chapters] == chapters
        for (start, _), want in zip(got_chapters, report["chapters"]):
            assert abs(start - want["start_s"]) <= 0.002
        assert got_tags["title"] == [report["title"]]
        assert got_tags["artist"] == ["Ann = Author; #1"]
