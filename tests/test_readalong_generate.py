"""The plain EPUB 3 made for read-along books from TXT, HTML, FB2, PDF and Markdown inputs.

Books of the shared corpus (the French text book, the Dutch HTML) and the
Christmas Carol written as FB2, PDF and Markdown (as tests/test_formats.py makes
them) are read with their matter and written by
:func:`~ebook2audio_dask.readalong.generate.generate_epub`; Debian's epubcheck
(Java) must report no error and no warning, the archive's documents must hold
the book's paragraphs exactly, every chapter (matter included) in order, the
metadata and the cover.  The generated EPUB read back by our own EPUB reader
gives the same chapters.
"""

from __future__ import annotations

import os
import subprocess
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import epubcheck
from lxml import etree
from test_formats import CAROL, _split_title, write_fb2, write_pdf

from ebook2audio_dask.errors import BookError
from ebook2audio_dask.ingest import read_book
from ebook2audio_dask.model import Book, Chapter, Cover
from ebook2audio_dask.readalong.generate import generate_epub, text_direction

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
NS = {
    "x": "http://www.w3.org/1999/xhtml",
    "epub": "http://www.idpf.org/2007/ops",
    "opf": "http://www.idpf.org/2007/opf",
    "dc": "http://purl.org/dc/elements/1.1/",
}
EPUB_TYPE = "{http://www.idpf.org/2007/ops}type"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
KIND_TYPES = {"front": "frontmatter", "body": "bodymatter", "back": "backmatter"}


# ==========================================================================
# Helpers
# ==========================================================================
def assert_valid(path: Path) -> None:
    """epubcheck: no fatal error, no error, no warning."""
    bad = [m for m in epubcheck(path) if m["severity"] in ("FATAL", "ERROR", "WARNING")]
    shown = [(m["severity"], m["ID"], m["message"], m["locations"][:1]) for m in bad[:10]]
    assert not bad, shown


def package(archive: zipfile.ZipFile) -> tuple[str, etree._Element]:
    """(the package document's folder, its root element)."""
    container = etree.fromstring(archive.read("META-INF/container.xml"))
    full = container.find(".//{*}rootfile").get("full-path")
    return full.rpartition("/")[0], etree.fromstring(archive.read(full))


def document_paragraphs(data: bytes) -> list[str]:
    """The paragraphs a chapter document holds: its ``<h1>``'s lines, then each ``<p>``."""
    root = etree.fromstring(data)
    section = root.find("x:body/x:section", NS)
    out: list[str] = []
    for element in section:
        if element.tag == f"{{{NS['x']}}}h1":  # its lines, cut at each <br/>
            for br in element.iter(f"{{{NS['x']}}}br"):
                br.tail = "\ue000" + (br.tail or "")  # a private-use mark
            out += "".join(element.itertext()).split("\ue000")
        else:
            assert element.tag == f"{{{NS['x']}}}p", element.tag
            out.append("".join(element.itertext()))
    return out


def heading_and_text(data: bytes) -> tuple[str | None, list[str]]:
    """(the ``<h1>``'s text, or None; the ``<p>`` texts) of a chapter document."""
    root = etree.fromstring(data)
    h1 = root.find("x:body/x:section/x:h1", NS)
    paragraphs = ["".join(p.itertext()) for p in root.iterfind("x:body/x:section/x:p", NS)]
    return (None if h1 is None else "".join(h1.itertext())), paragraphs


def check_epub(book: Book, path: Path, sources: list[str]) -> None:
    """The EPUB at *path* is valid and holds *book*: metadata, nav, every chapter's text."""
    assert_valid(path)
    with zipfile.ZipFile(path) as archive:
        first = archive.infolist()[0]
        assert (first.filename, first.compress_type, first.extra) == ("mimetype", 0, b"")
        assert archive.read("mimetype") == b"application/epub+zip"
        folder, opf = package(archive)
        manifest = {item.get("id"): item for item in opf.iterfind("opf:manifest/opf:item", NS)}
        spine = [
            manifest[ref.get("idref")].get("href")
            for ref in opf.iterfind("opf:spine/opf:itemref", NS)
        ]
        # one document per chapter, in book order: the sources returned name them
        assert sources == [f"{folder}/{href}" for href in spine]
        assert len(sources) == len(book.chapters)
        meta = opf.find("opf:metadata", NS)
        assert meta.findtext("dc:title", namespaces=NS) == book.title
        assert [c.text for c in meta.iterfind("dc:creator", NS)] == list(book.authors)
        language = book.language or "und"
        assert meta.findtext("dc:language", namespaces=NS) == language
        assert meta.findtext("dc:identifier", namespaces=NS).startswith("urn:uuid:")
        # the nav's table of contents lists every chapter, matter included, in order
        nav_item = next(i for i in manifest.values() if i.get("properties") == "nav")
        nav = etree.fromstring(archive.read(f"{folder}/{nav_item.get('href')}"))
        links = nav.findall(".//x:nav[@id='toc']/x:ol/x:li/x:a", NS)
        assert [a.get("href") for a in links] == spine
        assert [a.text for a in links] == [c.title for c in book.chapters]
        for chapter, source in zip(book.chapters, sources):
            data = archive.read(source)
            assert data.startswith(b'<?xml version="1.0" encoding="utf-8"?>\n<!DOCTYPE html>\n')
            root = etree.fromstring(data)
            assert root.get(XML_LANG) == root.get("lang") == language
            assert root.findtext("x:head/x:title", namespaces=NS) == chapter.title
            assert root.find("x:body", NS).get(EPUB_TYPE) == KIND_TYPES[chapter.kind]
            # an <h1> of the title then every paragraph, or the heading lines as the <h1>
            got = document_paragraphs(data)
            assert got in ([chapter.title, *chapter.paragraphs], list(chapter.paragraphs)), got[:3]
            assert heading_and_text(data)[0], chapter.title


def markdown_book(carol: Book, folder: Path) -> Path:
    """The Carol as Markdown (front matter, a ``##`` heading and 5 paragraphs per stave)."""
    lines = [f"---\ntitle: {carol.title}\nauthor: {carol.authors[0]}\nlang: en\n---\n"]
    for chapter in carol.chapters:
        _, text = _split_title(chapter)
        lines.append(f"## {chapter.title}\n")
        lines += [p.replace("*", "\\*").replace("_", "\\_") + "\n" for p in text[:5]]
    path = folder / "carol.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


# ==========================================================================
# Fixtures
# ==========================================================================
@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """The books to generate from: two of the corpus, and the Carol as FB2, PDF and Markdown."""
    folder = tmp_path_factory.mktemp("inputs")
    carol = read_book(str(CAROL))
    write_fb2(carol, folder / "carol.fb2")
    write_pdf(carol, folder / "carol.pdf")
    return {
        "txt": CORPUS / "entre-nous-lectures-francaises.txt",
        "html": CORPUS / "ontboezemingen-dutch.html",
        "fb2": folder / "carol.fb2",
        "pdf": folder / "carol.pdf",
        "md": markdown_book(carol, folder),
    }


# ==========================================================================
# Tests
# ==========================================================================
@pytest.mark.parametrize("fmt", ["txt", "html", "fb2", "pdf", "md"])
def test_generated_epub_is_valid_and_holds_the_book(inputs, fmt, tmp_path):
    book = read_book(str(inputs[fmt]), include_matter=True)
    assert book.format == fmt
    target = tmp_path / "book.epub"
    sources = generate_epub(book, str(target))
    check_epub(book, target, sources)
    assert sorted(os.listdir(tmp_path)) == ["book.epub", "book.epubcheck.json"]  # no temp left
    if fmt in ("txt", "html", "fb2"):  # their matter is found, and kept, marked as matter
        kinds = {c.kind for c in book.chapters}
        assert {"front", "body"} <= kinds, kinds
    if fmt == "fb2":  # the FB2's cover, with the cover-image property
        with zipfile.ZipFile(target) as archive:
            folder, opf = package(archive)
            item = opf.find("opf:manifest/opf:item[@properties='cover-image']", NS)
            assert item.get("media-type") == book.cover.media_type == "image/jpeg"
            assert archive.read(f"{folder}/{item.get('href')}") == book.cover.data
    # read back by the EPUB reader: the same chapters, kinds and text (an <h1>'s lines are
    # one heading paragraph there)
    again = read_book(str(target), include_matter=True)
    assert (again.title, again.authors) == (book.title, book.authors)
    assert [(c.title, c.kind) for c in again.chapters] == [(c.title, c.kind) for c in book.chapters]
    for ours, back in zip(book.chapters, again.chapters):
        assert " ".join(back.paragraphs).split() == " ".join(ours.paragraphs).split() or (
            " ".join(back.paragraphs).split() == f"{ours.title} {ours.text}".split()
        ), ours.title


def test_heading_rule_follows_the_plan(inputs, tmp_path):
    """An <h1> of the title, unless the first paragraphs already spell it (then those)."""
    book = read_book(str(inputs["fb2"]), include_matter=True)
    sources = generate_epub(book, str(tmp_path / "carol.epub"))
    with zipfile.ZipFile(tmp_path / "carol.epub") as archive:
        stave = archive.read(sources[1])
        notes = archive.read(sources[-1])
    # "STAVE ONE." and "MARLEY'S GHOST." are the chapter's own heading lines
    assert book.chapters[1].paragraphs[:2] == ("STAVE ONE.", "MARLEY’S GHOST.")
    assert b"<h1>STAVE ONE.<br/>MARLEY\xe2\x80\x99S GHOST.</h1>" in stave
    assert heading_and_text(stave)[1] == list(book.chapters[1].paragraphs[2:])
    # the notes' first paragraph is not its title: the title is the <h1>, every paragraph a <p>
    assert book.chapters[-1].kind == "back"
    heading, text = heading_and_text(notes)
    if book.chapters[-1].paragraphs[0] == book.chapters[-1].title:
        assert text == list(book.chapters[-1].paragraphs[1:])
    else:
        assert (heading, text) == (book.chapters[-1].title, list(book.chapters[-1].paragraphs))


def test_hostile_text_rtl_and_unknown_language(tmp_path):
    """Markup characters are escaped, characters XML forbids dropped; Arabic is right to left."""
    cover = read_book(str(CAROL)).cover  # a real JPEG
    assert cover is not None
    chapters = (
        Chapter(1, '<b>Title</b> & "quotes"', ("a < b && c > d", "<script>x</script>"), "front"),
        Chapter(2, "", ("نص عربي", "x\x00y\x1b z \ufffe"), "body"),
        Chapter(3, "Colophon", (), "back"),
    )
    book = Book("mem://x.txt", "A <Title> & more", ("A & B", "C <D>"), "ar", chapters,
                format="txt")  # fmt: skip
    target = tmp_path / "x.epub"
    sources = generate_epub(book, str(target), cover=cover)
    assert_valid(target)
    with zipfile.ZipFile(target) as archive:
        folder, opf = package(archive)
        assert opf.find("opf:spine", NS).get("page-progression-direction") == "rtl"
        assert [c.text for c in opf.iterfind("opf:metadata/dc:creator", NS)] == ["A & B", "C <D>"]
        first = etree.fromstring(archive.read(sources[0]))
        assert first.get("dir") == "rtl"
        assert document_paragraphs(archive.read(sources[0])) == [
            chapters[0].title,
            *chapters[0].paragraphs,
        ]
        assert document_paragraphs(archive.read(sources[1])) == ["نص عربي", "xy z "]
        nav = archive.read(f"{folder}/nav.xhtml").decode()
        assert ">Chapter 2</a>" in nav  # an untitled chapter still has a name in the toc
    # no language, or one that is no BCP 47 tag: "und"; left to right
    for language in (None, "English (UK)"):
        plain = replace(book, language=language, chapters=chapters[2:])
        generate_epub(plain, str(target))
        with zipfile.ZipFile(target) as archive:
            _, opf = package(archive)
            assert opf.findtext("opf:metadata/dc:language", namespaces=NS) == "und"
            assert opf.find("opf:spine", NS).get("page-progression-direction") is None
    assert_valid(target)


def test_identifier_is_stable_and_cover_checked(tmp_path, caplog):
    book = read_book(str(CORPUS / "entre-nous-lectures-francaises.txt"), include_matter=True)
    book = replace(book, chapters=book.chapters[:3])
    ids = []
    for name in ("a.epub", "b.epub"):
        generate_epub(book, str(tmp_path / name))
        with zipfile.ZipFile(tmp_path / name) as archive:
            ids.append(package(archive)[1].findtext(".//dc:identifier", namespaces=NS))
    assert ids[0] == ids[1]
    generate_epub(replace(book, title="Autre"), str(tmp_path / "c.epub"))
    with zipfile.ZipFile(tmp_path / "c.epub") as archive:
        assert package(archive)[1].findtext(".//dc:identifier", namespaces=NS) != ids[0]
    # a cover that is no image is left out (with a warning), the EPUB is still written
    generate_epub(book, str(tmp_path / "d.epub"), cover=Cover(b"not an image", "image/jpeg"))
    with zipfile.ZipFile(tmp_path / "d.epub") as archive:
        _, opf = package(archive)
        assert opf.find(".//opf:item[@properties='cover-image']", NS) is None
    assert "not a recognised image" in caplog.text


def test_direction_of_languages():
    assert [text_direction(t) for t in ("ar", "fa-IR", "he", "ur", "yi", "az-Arab")] == ["rtl"] * 6
    assert [text_direction(t) for t in ("en", "fr", "ku-Latn", "und", "", None)] == ["ltr"] * 6


def test_target_never_half_written(tmp_path):
    """A failed write leaves what was at the target, and no temporary file."""
    book = read_book(str(CORPUS / "entre-nous-lectures-francaises.txt"), include_matter=True)
    target = tmp_path / "out.epub"
    target.mkdir()  # a folder where the EPUB should go: the rename fails
    (target / "keep").write_text("kept")
    with pytest.raises(OSError):
        generate_epub(book, str(target))
    assert sorted(os.listdir(tmp_path)) == ["out.epub"]
    assert (target / "keep").read_text() == "kept"
    with pytest.raises(FileNotFoundError):
        generate_epub(book, str(tmp_path / "missing" / "out.epub"))
    with pytest.raises(BookError, match=r"^mem://empty\.txt: no chapters"):
        generate_epub(Book("mem://empty.txt", "Empty", (), "en", ()), str(tmp_path / "e.epub"))


# ==========================================================================
# With the overlays
# ==========================================================================
def clock(value: str) -> float:
    """Seconds of a SMIL clock value (``"0:01:02.500"``, ``"02:03.5"``, ``"1.5s"``, ``"20ms"``)."""
    if value.endswith("ms"):
        return float(value[:-2]) / 1000
    for unit, factor in (("h", 3600), ("min", 60), ("s", 1)):
        if value.endswith(unit):
            return float(value[: -len(unit)]) * factor
    seconds = 0.0
    for part in value.split(":"):
        seconds = seconds * 60 + float(part)
    return round(seconds, 3)


def silent_m4a(path: Path, seconds: float) -> None:
    """A real AAC-in-MP4 file of *seconds* of silence, made by imageio_ffmpeg's ffmpeg."""
    import imageio_ffmpeg

    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
         "anullsrc=r=22050:cl=mono", "-t", f"{seconds:.3f}", "-c:a", "aac", "-b:a", "32k",
         "-y", str(path)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize("fmt", ["txt", "fb2", "pdf"])
def test_readalong_over_a_generated_epub(inputs, fmt, tmp_path):
    """The book planned (2 chapters), timed 1 s per sentence, overlaid on its generated EPUB:
    epubcheck finds no error and no warning, every spoken sentence has exactly one <par>.

    The French text book; the Carol as FB2 (heading lines, an epigraph, a note) and as PDF
    (no language: "und")."""
    from ebook2audio_dask.engines.base import EngineSpec
    from ebook2audio_dask.readalong import (
        AudioFile,
        ChapterText,
        TimedSentence,
        spoken_sentences,
        write_readalong,
    )
    from ebook2audio_dask.text.chunk import plan_book

    src = str(inputs[fmt])
    full = read_book(src, include_matter=True)
    sources = generate_epub(full, str(tmp_path / "generated.epub"))
    book = read_book(src).select([2, 5] if fmt == "txt" else [1, 3])  # as --chapters selects
    language = full.language or "en"
    plan = plan_book(book, EngineSpec.make("espeak", language), sample_rate=22050,
                     max_chars=200, language=language, sentences=True)  # fmt: skip
    # plan chapter n is the n-th body chapter of the read with the matter
    body = [src_ for c, src_ in zip(full.chapters, sources) if c.kind == "body"]
    chapters = [ChapterText(ch.index, body[ch.index - 1]) for ch in plan.chapters]
    assert [c.index for c in plan.chapters] == ([2, 5] if fmt == "txt" else [1, 3])
    spoken = spoken_sentences(plan)
    assert len(spoken) > 20
    timed = [TimedSentence(s, 0, float(n), float(n + 1)) for n, s in enumerate(spoken)]
    audio = tmp_path / "book.m4a"
    silent_m4a(audio, len(spoken))
    target = tmp_path / "readalong.epub"
    stats = write_readalong(
        str(tmp_path / "generated.epub"), chapters, timed,
        [AudioFile(str(audio), "audio/mp4", float(len(spoken)), "book.m4a")], str(target),
        language=full.language,
    )  # fmt: skip
    assert (stats.sentences, stats.overlaid, stats.unmatched) == (len(spoken), len(spoken), 0)
    assert stats.documents == 2
    assert_valid(target)
    with zipfile.ZipFile(target) as archive:
        folder, opf = package(archive)
        smils = [
            f"{folder}/{i.get('href')}"
            for i in opf.iterfind("opf:manifest/opf:item", NS)
            if i.get("media-type") == "application/smil+xml"
        ]
        pars = [
            par for name in smils for par in etree.fromstring(archive.read(name)).iter("{*}par")
        ]
        refs = [par.find("{*}text").get("src").rpartition("#")[2] for par in pars]
        assert len(pars) == len(spoken) and len(set(refs)) == len(refs)
        # in book order, sentence n plays from n s to n + 1 s of the one audio file
        clips = [par.find("{*}audio") for par in pars]
        assert {c.get("src").rpartition("/")[2] for c in clips} == {"book.m4a"}
        spans = [(clock(c.get("clipBegin")), clock(c.get("clipEnd"))) for c in clips]
        assert spans == [(float(n), float(n + 1)) for n in range(len(spoken))]
        # the overlaid documents are the two chapters'; the others keep their text unchanged
        overlaid = {
            f"{folder}/{i.get('href')}"
            for i in opf.iterfind("opf:manifest/opf:item", NS)
            if i.get("media-overlay")
        }
        assert overlaid == {chapters[0].source, chapters[1].source}
        generated = zipfile.ZipFile(tmp_path / "generated.epub")
        for source in sources:
            if source not in overlaid:
                assert archive.read(source) == generated.read(source)
            else:  # with the wrappers removed, the same paragraphs
                assert document_paragraphs(archive.read(source)) == document_paragraphs(
                    generated.read(source)
                )
