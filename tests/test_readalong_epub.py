"""Read-along EPUB 3 made from EPUB books: :func:`ebook2audio_dask.readalong.write_readalong`.

Real corpus books are planned (``plan_book(..., sentences=True)``), each
spoken sentence is given 1 s of a real audio file (silence encoded by
imageio_ffmpeg's ffmpeg as AAC in MP4 or as MP3), and the read-along EPUB
is checked by Debian's epubcheck and read back with lxml, independently of
the writer: one ``<par>`` per sentence, clips contiguous inside the audio,
every ``text`` reference resolving, ``media:duration`` sums, and each
content document equal to the original once the wrappers are removed.  No
Dask, no synthesis.
"""

from __future__ import annotations

import itertools
import os
import posixpath
import re
import subprocess
import zipfile
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

import pytest
from conftest import CORPUS
from helpers import epubcheck
from lxml import etree

from ebook2audio_dask.audio.ffmpeg import ffmpeg_exe
from ebook2audio_dask.engines.base import EngineSpec
from ebook2audio_dask.errors import BookError
from ebook2audio_dask.ingest import read_book
from ebook2audio_dask.readalong import (
    AudioFile,
    ChapterText,
    SpokenSentence,
    TimedSentence,
    spoken_sentences,
    write_readalong,
)
from ebook2audio_dask.readalong.overlays import archive_name
from ebook2audio_dask.text.chunk import plan_book, sentence_ends
from ebook2audio_dask.text.segment import split_sentences

OPF = "http://www.idpf.org/2007/opf"
NS = {"opf": OPF, "smil": "http://www.w3.org/ns/SMIL", "x": "http://www.w3.org/1999/xhtml"}
EPUB_TYPE = "{http://www.idpf.org/2007/ops}type"
TEXTREF = "{http://www.idpf.org/2007/ops}textref"
SPAN_ID = re.compile(r"^e2a-(\d+)(?:-(\d+))?$")


# ==========================================================================
# Helpers (independent of the writer)
# ==========================================================================
def check_epub(path: Path, allowed_warnings: set[str] = frozenset()) -> Counter:
    """epubcheck: no fatal error, no error, no overlay (MED) warning, no warning beyond
    *allowed_warnings*; returns the warnings' ids."""
    messages = epubcheck(path)
    bad = [m for m in messages if m["severity"] in ("FATAL", "ERROR")]
    warnings = [m for m in messages if m["severity"] == "WARNING"]
    shown = [(m["severity"], m["ID"], m["message"], m["locations"][:1]) for m in bad[:10]]
    assert not bad, shown
    med = [(m["ID"], m["message"]) for m in warnings if m["ID"].upper().startswith("MED")]
    assert not med, med
    others = [(m["ID"], m["message"]) for m in warnings if m["ID"] not in allowed_warnings]
    assert not others, others
    return Counter(m["ID"] for m in warnings)


def silence(path: Path, seconds: float) -> None:
    """A real audio file of *seconds* of silence (AAC in MP4 or MP3, by its suffix)."""
    codec = ["-c:a", "aac", "-b:a", "24k"] if path.suffix == ".m4a" else ["-c:a", "libmp3lame"]
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono",
         "-t", f"{seconds:.3f}", *codec, "-b:a", "24k", "-y", str(path)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip


def decoded_seconds(path: Path) -> float:
    """The file's duration as ffmpeg reads it from the file itself."""
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True, timeout=60
    )
    m = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", proc.stderr)
    assert m, proc.stderr[-1000:]
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))


def clock(value: str) -> float:
    """A SMIL clock value in seconds (``"0:01:02.500"``, ``"62.5s"``, ``"500ms"``)."""
    value = value.strip()
    if value.endswith("ms"):
        return float(value[:-2]) / 1000
    if value.endswith("s") and ":" not in value:
        return float(value[:-1])
    seconds = 0.0
    for part in value.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


def xml(data: bytes) -> etree._Element:
    """Parse a document as it is (comments and PIs kept, no DTD, no entities)."""
    parser = etree.XMLParser(resolve_entities=False, load_dtd=False, no_network=True)
    return etree.fromstring(data, parser)


def unwrap(root: etree._Element) -> etree._Element:
    """Remove the read-along wrappers (``span.e2a-s``) and the added stylesheet link."""
    for link in list(root.iter("{*}link")):
        if link.get("href", "").endswith("e2a/readalong.css"):
            drop(link, keep_content=False)
    for span in [s for s in root.iter("{*}span") if s.get("class") == "e2a-s"]:
        drop(span, keep_content=True)
    return root


def drop(el: etree._Element, *, keep_content: bool) -> None:
    """Take *el* out of the tree, its text and children (if kept) and tail staying in place."""
    parent = el.getparent()
    pieces: list = []
    if keep_content:
        pieces = [el.text, *[c for c in el]]
    pieces.append(el.tail)
    at = parent.index(el)
    prev = el.getprevious()
    parent.remove(el)

    def add_text(text: str | None, after) -> None:
        if not text:
            return
        if after is None:
            parent.text = (parent.text or "") + text
        else:
            after.tail = (after.tail or "") + text

    after = prev
    for piece in pieces:
        if piece is None or isinstance(piece, str):
            add_text(piece, after)
        else:
            tail, piece.tail = piece.tail, None
            parent.insert(at, piece)
            at += 1
            after = piece
            add_text(tail, after)


def c14n(root: etree._Element) -> bytes:
    return etree.tostring(root, method="c14n")


def body_text(root: etree._Element) -> str:
    """The text of the document's body (comments and PIs left out)."""
    return "".join(next(root.iter("{*}body")).itertext(etree.Element))


def package(archive: zipfile.ZipFile) -> tuple[str, etree._Element]:
    """(the package document's path, its root element)."""
    container = xml(archive.read("META-INF/container.xml"))
    path = next(container.iter("{*}rootfile")).get("full-path")
    return path, xml(archive.read(path))


def plan_of(name: str, chapters=None, language: str = "en"):
    book = read_book(str(CORPUS / name))
    if chapters is not None:
        book = book.select(chapters)
    plan = plan_book(
        book, EngineSpec.make("espeak", language), sample_rate=22050, max_chars=300,
        language=language, sentences=True,
    )  # fmt: skip
    return book, plan


# ==========================================================================
# spoken_sentences
# ==========================================================================
def test_spoken_sentences_cut_as_the_subtitles_cut():
    """The plan's sentences, in order: each chunk's written text cut where the subtitles
    cut it; a plan without sentence ends gives the same sentences."""
    from ebook2audio_dask.audio.subtitles import sentence_cues

    book = read_book(str(CORPUS / "georgia-britannica-pls-ssml.epub")).select([1, 2])
    with_ends = plan_book(
        book, EngineSpec.make("espeak", "en"), sample_rate=22050, max_chars=300,
        language="en-US", sentences=True,
    )  # fmt: skip
    without = plan_book(
        book, EngineSpec.make("espeak", "en"), sample_rate=22050, max_chars=300,
        language="en-US",
    )  # fmt: skip
    spoken = spoken_sentences(with_ends)
    cues = [
        cue.text
        for chunk in with_ends.chunks
        for cue in sentence_cues(chunk.display or chunk.text, chunk.sentences, 0.0, 1.0)
    ]
    assert [s.text for s in spoken] == cues
    assert spoken_sentences(without) == spoken
    assert [s.chunk for s in spoken] == sorted(s.chunk for s in spoken)
    assert {s.chapter for s in spoken} == {1, 2}
    assert all(s.text == " ".join(s.text.split()) and s.text for s in spoken)
    # a chunk with several sentences gives several, with its own index
    many = next(n for n, c in enumerate(with_ends.chunks) if len(c.sentences) > 1)
    text = with_ends.chunks[many].display or with_ends.chunks[many].text
    assert [s.text for s in spoken if s.chunk == many] == [
        " ".join(s.split()) for s in split_sentences(" ".join(text.split()), "en-US")
    ]
    assert len(sentence_ends(text, "en-US")) == len([s for s in spoken if s.chunk == many])


# ==========================================================================
# corpus books
# ==========================================================================
CASES = {
    # name: (file, chapters selected, audio suffix, one audio file per chapter, warnings allowed)
    "childrens-literature": ("childrens-literature.epub", None, ".m4a", False, set()),
    "sherlock": ("adventures-of-sherlock-holmes-standardebooks.epub", [2, 5], ".mp3", True, set()),
    "georgia": ("georgia-britannica-pls-ssml.epub", None, ".m4a", False, set()),
    # EPUB 2: Gutenberg's documents named *.html are renamed *.xhtml (else HTM-014a warnings)
    "carol-epub2": ("christmas-carol-gutenberg-epub2.epub", [1, 2], ".mp3", True, set()),
}


@pytest.mark.parametrize("case", list(CASES))
def test_readalong_from_corpus_epub(case, tmp_path):
    name, selection, suffix, per_chapter, allowed = CASES[case]
    src = CORPUS / name
    book, plan = plan_of(name, selection)
    spoken = spoken_sentences(plan)
    assert len(spoken) > 50
    media_type = "audio/mp4" if suffix == ".m4a" else "audio/mpeg"

    # 1 s per sentence, contiguous; one file for the book or one per chapter
    groups: dict[int, list[SpokenSentence]] = {}
    for s in spoken:
        groups.setdefault(s.chapter if per_chapter else 0, []).append(s)
    audio: list[AudioFile] = []
    timed: list[TimedSentence] = []
    for n, (key, sentences) in enumerate(groups.items()):
        file_name = f"{n + 1:02d} - Chapter {key}{suffix}" if per_chapter else f"book{suffix}"
        path = tmp_path / f"audio{n}{suffix}"
        silence(path, len(sentences) + 0.5)
        audio.append(AudioFile(str(path), media_type, len(sentences) + 0.5, file_name))
        timed += [TimedSentence(s, n, float(i), float(i + 1)) for i, s in enumerate(sentences)]

    chapters = [ChapterText(c.index, c.source) for c in book.chapters]
    target = tmp_path / "book.readalong.epub"
    stats = write_readalong(str(src), chapters, timed, audio, str(target), language="en")
    assert (stats.sentences, stats.overlaid, stats.unmatched) == (len(spoken), len(spoken), 0)
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["book.readalong.epub", *(f"audio{n}{suffix}" for n in range(len(audio)))]
    )  # no temporary file left

    # (epubcheck 4.2.6 finds nothing at all in any of the four originals)
    assert set(check_epub(target, allowed)) <= allowed

    original = zipfile.ZipFile(src)
    with zipfile.ZipFile(target) as archive:
        infos = archive.infolist()
        assert infos[0].filename == "mimetype" and infos[0].compress_type == zipfile.ZIP_STORED
        assert archive.read("mimetype") == b"application/epub+zip"
        opf_path, opf = package(archive)
        folder = posixpath.dirname(opf_path)
        assert opf.get("version") == "3.0"
        items = {i.get("id"): i for i in opf.iterfind("opf:manifest/opf:item", NS)}

        def member(href: str, base: str = folder) -> str:
            return posixpath.normpath(posixpath.join(base, unquote(href)))

        # metadata: modified, active class, durations
        meta = {
            (m.get("property"), m.get("refines")): (m.text or "").strip()
            for m in opf.iterfind("opf:metadata/opf:meta", NS)
            if m.get("property")
        }
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["dcterms:modified", None])
        assert meta["media:active-class", None] == "-epub-media-overlay-active"
        css = [i for i in items.values() if i.get("media-type") == "text/css"]
        assert any(
            b".-epub-media-overlay-active" in archive.read(member(i.get("href"))) for i in css
        )

        # the audio files: as given, stored, in the manifest under their names
        audio_items = [i for i in items.values() if i.get("media-type") == media_type]
        assert sorted(posixpath.basename(unquote(i.get("href"))) for i in audio_items) == sorted(
            archive_name(a.name) for a in audio
        )
        assert all(" " not in archive_name(a.name) for a in audio)
        by_name = {archive_name(a.name): a for a in audio}
        for item in audio_items:
            path = member(item.get("href"))
            assert archive.getinfo(path).compress_type == zipfile.ZIP_STORED
            given = by_name[posixpath.basename(path)]
            assert archive.read(path) == Path(given.path).read_bytes()

        # every overlay: its document, its pars, its clips
        par_ids: list[int] = []
        clips: dict[str, list[tuple[float, float]]] = {}
        total = 0.0
        overlaid_docs = set()
        for item in items.values():
            if not item.get("media-overlay"):
                continue
            doc_path = member(item.get("href"))
            overlaid_docs.add(doc_path)
            smil_item = items[item.get("media-overlay")]
            assert smil_item.get("media-type") == "application/smil+xml"
            smil_path = member(smil_item.get("href"))
            smil = xml(archive.read(smil_path))
            assert smil.tag == "{http://www.w3.org/ns/SMIL}smil" and smil.get("version") == "3.0"
            body = smil.find("smil:body", NS)
            assert member(body.get(TEXTREF).partition("#")[0], posixpath.dirname(smil_path)) == (
                doc_path
            )
            doc = xml(archive.read(doc_path))
            ids = [el.get("id") for el in doc.iter() if isinstance(el.tag, str) and el.get("id")]
            assert len(ids) == len(set(ids)), "ids unique in the document"
            by_id = {el.get("id"): el for el in doc.iter() if isinstance(el.tag, str)}
            fragments: dict[int, list] = {}  # sentence -> its wrappers, in document order
            for el in doc.iter("{*}span"):
                if m := SPAN_ID.match(el.get("id") or ""):
                    fragments.setdefault(int(m.group(1)), []).append(el)
            length = 0.0
            previous = -1
            for par in body.iter("{*}par"):
                text, clip = par.find("smil:text", NS), par.find("smil:audio", NS)
                ref, _, frag = text.get("src").partition("#")
                assert member(ref, posixpath.dirname(smil_path)) == doc_path
                assert frag in by_id, f"{frag} not in {doc_path}"
                span = by_id[frag]
                assert span.get("class") == "e2a-s" and span.tag.endswith("span")
                ordinal = int(SPAN_ID.match(frag).group(1))
                assert ordinal > previous, "pars in document order"
                previous = ordinal
                par_ids.append(ordinal)
                begin, end = clock(clip.get("clipBegin")), clock(clip.get("clipEnd"))
                assert end > begin
                audio_path = member(clip.get("src"), posixpath.dirname(smil_path))
                clips.setdefault(audio_path, []).append((begin, end))
                length += end - begin
                # the sentence's text is in its wrapper(s), in order
                frags = fragments[ordinal]
                assert frags[0] is span and all(
                    f.get("id") == f"{frag}-{n}" for n, f in enumerate(frags[1:], 2)
                )
                said = "".join(t for el in frags for t in el.itertext(etree.Element))
                sentence = spoken[ordinal - 1].text
                # (the document may hold more: a page number, a note reference)
                assert within(norm(sentence), norm(said)), (said, sentence)
            assert meta["media:duration", f"#{smil_item.get('id')}"]
            assert clock(meta["media:duration", f"#{smil_item.get('id')}"]) == pytest.approx(
                length, abs=0.002
            )
            total += length
        assert clock(meta["media:duration", None]) == pytest.approx(total, abs=0.002)
        assert stats.documents == len(overlaid_docs)

        # one par per spoken sentence
        assert sorted(par_ids) == list(range(1, len(spoken) + 1))
        # clips of each file: contiguous, not overlapping, inside the audio
        for path, spans in clips.items():
            spans.sort()
            real = by_name[posixpath.basename(path)]
            seconds = decoded_seconds(Path(real.path))
            assert spans[0][0] >= 0 and spans[-1][1] <= seconds + 0.05
            for (_b0, e0), (b1, _e1) in itertools.pairwise(spans):
                assert b1 == pytest.approx(e0, abs=0.0005)

        # the documents: unwrapped, equal to the original's
        upgraded = case == "carol-epub2"
        opf0_path = package(original)[0]
        _, opf0 = package(original)
        spine = [
            (item.get("id"), item.get("href"))
            for ref in opf0.iterfind("opf:spine/opf:itemref", NS)
            for item in opf0.iterfind("opf:manifest/opf:item", NS)
            if item.get("id") == ref.get("idref")
            and item.get("media-type") == "application/xhtml+xml"
        ]
        for ident, href in spine:
            path = member(href, posixpath.dirname(opf0_path))
            now = member(items[ident].get("href"))  # renamed *.xhtml in an EPUB 2 book
            assert now == path or (upgraded and now == re.sub(r"\.html$", ".xhtml", path))
            assert path not in archive.namelist() or now == path
            before, after = original.read(path), archive.read(now)
            path = now
            if upgraded:
                assert after.lstrip().startswith(b"<?xml") and b"<!DOCTYPE html>" in after[:300]
                assert body_text(unwrap(xml(after))) == body_text(xml(before))
            elif path in overlaid_docs:
                assert c14n(unwrap(xml(after))) == c14n(xml(before)), path
                if before.startswith(b"<?xml"):  # the declaration as it was written
                    assert after.split(b"?>", 1)[0] == before.split(b"?>", 1)[0]
                doctype = re.compile(rb"<!DOCTYPE[^>]*>", re.IGNORECASE)
                assert doctype.findall(after[:2000]) == doctype.findall(before[:2000])
            else:  # left as it was: not spoken (matter, unselected chapters)
                assert after == before, path
        if selection is not None and not upgraded:
            assert len(overlaid_docs) == len(selection)
        if upgraded:
            nav = [i for i in items.values() if "nav" in (i.get("properties") or "").split()]
            assert len(nav) == 1
            nav_doc = xml(archive.read(member(nav[0].get("href"))))
            toc = next(n for n in nav_doc.iter("{*}nav") if n.get(EPUB_TYPE) == "toc")
            labels = [" ".join("".join(a.itertext()).split()) for a in toc.iter("{*}a")]
            assert any("STAVE ONE" in label.upper() for label in labels)


def norm(text: str) -> str:
    return "".join(c for c in text.casefold() if c.isalnum())


def within(sentence: str, wrapped: str) -> bool:
    """*sentence* spelled by *wrapped* in order, from its first character to its last,
    with at most a few extra characters."""
    if sentence == wrapped:
        return True
    it = iter(wrapped)
    return (
        wrapped[:1] == sentence[:1]
        and wrapped[-1:] == sentence[-1:]
        and all(ch in it for ch in sentence)
        and len(wrapped) <= len(sentence) + 12
    )


# ==========================================================================
# a small hand-made EPUB 3: fragments, note references, ids, unmatched text
# ==========================================================================
CHAPTER = b"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE html>
<html xmlns="http://www.w3.org/1999/xhtml" xmlns:epub="http://www.idpf.org/2007/ops" lang="en"
 xml:lang="en">
<head><title>One</title><!-- a comment in the head --></head>
<body>
<section id="c1" epub:type="chapter">
<h1>Chapter One</h1>
<p>He said <em>no. Then</em> he left.<a epub:type="noteref" href="#n1" id="r1">1</a> Done!</p>
<p>It was cold<sup><a epub:type="noteref" href="#n2" id="r2">2</a></sup> outside,
<?pi x?>very<!-- c --> cold.</p>
<p id="e2a-0001">&#8220;An existing id that looks like ours.&#8221;</p>
</section>
<aside epub:type="footnote" id="n1"><p>Note one.</p></aside>
<aside epub:type="footnote" id="n2"><p>Note two.</p></aside>
</body>
</html>
"""
NAV = b"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE html>
<html xmlns="http://www.w3.org/1999/xhtml" xmlns:epub="http://www.idpf.org/2007/ops" lang="en"
 xml:lang="en"><head><title>Contents</title></head>
<body><nav epub:type="toc"><ol><li><a href="ch1.xhtml#c1">Chapter One</a></li></ol></nav></body>
</html>
"""
PACKAGE = b"""<?xml version="1.0" encoding="UTF-8"?>
<package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="uid">
<metadata xmlns:dc="http://purl.org/dc/elements/1.1/">
<dc:identifier id="uid">urn:uuid:5b0e4c6a-2f0e-4a59-9a39-1d0b7c2f7e11</dc:identifier>
<dc:title>A small book</dc:title>
<dc:language>en</dc:language>
<meta property="dcterms:modified">2020-01-01T00:00:00Z</meta>
</metadata>
<manifest>
<item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>
<item id="ch1" href="ch1.xhtml" media-type="application/xhtml+xml"/>
</manifest>
<spine><itemref idref="ch1"/></spine>
</package>
"""
CONTAINER = b"""<?xml version="1.0"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
<rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>
</rootfiles></container>
"""


def small_epub(path: Path, chapter: bytes = CHAPTER) -> None:
    with zipfile.ZipFile(path, "w") as out:
        out.writestr("mimetype", b"application/epub+zip", zipfile.ZIP_STORED)
        out.writestr("META-INF/container.xml", CONTAINER, zipfile.ZIP_DEFLATED)
        out.writestr("OEBPS/content.opf", PACKAGE, zipfile.ZIP_DEFLATED)
        out.writestr("OEBPS/nav.xhtml", NAV, zipfile.ZIP_DEFLATED)
        out.writestr("OEBPS/ch1.xhtml", chapter, zipfile.ZIP_DEFLATED)


def test_wrappers_fragments_and_unmatched_sentences(tmp_path):
    """A sentence crossing an inline element is wrapped in fragments (the first has the id);
    a note reference the reader dropped stays inside its sentence's wrapper; ids never
    collide with the book's; a sentence not in the text gives its time to the next par
    (or the last one's), so the clips stay contiguous."""
    src = tmp_path / "small.epub"
    small_epub(src)
    said = [
        "Chapter One",
        "He said no.",
        "Then he left.",
        "Something the text does not hold at all.",  # unmatched: joins the next par
        "Done!",
        "It was cold outside, very cold.",  # the note reference "2" left out by the reader
        '"An existing id that looks like ours."',
        "Nor this one, which is not there either.",  # unmatched at the end: joins the last
    ]
    timed = [
        TimedSentence(SpokenSentence(chunk=n, chapter=1, text=t), 0, float(n), float(n + 1))
        for n, t in enumerate(said)
    ]
    audio = tmp_path / "a.m4a"
    silence(audio, len(said))
    target = tmp_path / "out" / "small.readalong.epub"
    target.parent.mkdir()
    stats = write_readalong(
        str(src), [ChapterText(1, "ch1.xhtml#c1")], timed,
        [AudioFile(str(audio), "audio/mp4", float(len(said)), "a.m4a")], str(target),
    )  # fmt: skip
    assert (stats.sentences, stats.overlaid, stats.unmatched, stats.documents) == (8, 6, 2, 1)
    assert os.listdir(target.parent) == ["small.readalong.epub"]
    assert not set(check_epub(target))
    with zipfile.ZipFile(target) as archive:
        doc = xml(archive.read("OEBPS/ch1.xhtml"))
        smil_name = next(n for n in archive.namelist() if n.endswith(".smil"))
        smil = xml(archive.read(smil_name))
        assert c14n(unwrap(xml(archive.read("OEBPS/ch1.xhtml")))) == c14n(xml(CHAPTER))
        assert archive.read("OEBPS/nav.xhtml") == NAV
        _, opf = package(archive)
        modified = [m for m in opf.iter("{*}meta") if m.get("property") == "dcterms:modified"]
        assert len(modified) == 1 and modified[0].text != "2020-01-01T00:00:00Z"
    spans = {s.get("id"): s for s in doc.iter("{*}span")}
    # the book has an id "e2a-0001": ours take another prefix
    assert (
        all(i.startswith("e2a2-") for i in spans) and doc.find(".//*[@id='e2a-0001']") is not None
    )
    text = {i: "".join(s.itertext(etree.Element)) for i, s in spans.items()}
    assert text["e2a2-0002"] == "He said" and text["e2a2-0002-2"] == "no."
    assert spans["e2a2-0002-2"].getparent().tag.endswith("em")
    assert text["e2a2-0003"] == "Then" and text["e2a2-0003-2"] == "he left."
    assert spans["e2a2-0003-2"].getnext().get("id") == "r1"  # the note mark stays outside
    assert text["e2a2-0005"] == "Done!"
    cold = spans["e2a2-0006"]
    assert " ".join(text["e2a2-0006"].split()) == "It was cold2 outside, very cold."
    assert cold.find("{*}sup") is not None  # the whole note reference inside one wrapper
    assert text["e2a2-0007"] == "\u201cAn existing id that looks like ours.\u201d"
    assert "e2a2-0004" not in spans and "e2a2-0008" not in spans
    pars = [
        (
            p.find("smil:text", NS).get("src").partition("#")[2],
            clock(p.find("smil:audio", NS).get("clipBegin")),
            clock(p.find("smil:audio", NS).get("clipEnd")),
        )
        for p in smil.iter("{*}par")
    ]
    assert pars == [
        ("e2a2-0001", 0.0, 1.0),
        ("e2a2-0002", 1.0, 2.0),
        ("e2a2-0003", 2.0, 3.0),
        ("e2a2-0005", 3.0, 5.0),  # with the unmatched sentence's second
        ("e2a2-0006", 5.0, 6.0),
        ("e2a2-0007", 6.0, 8.0),  # with the last, unmatched, one's
    ]


def test_a_sentence_without_time_gets_no_par(tmp_path):
    """A sentence whose clip would be empty (under a millisecond) has no par: SMIL clips
    must not be empty; it counts as not overlaid."""
    src = tmp_path / "small.epub"
    small_epub(src)
    timed = [
        TimedSentence(SpokenSentence(0, 1, "Chapter One"), 0, 0.0, 1.0),
        TimedSentence(SpokenSentence(1, 1, "He said no."), 0, 1.0, 1.0002),
        TimedSentence(SpokenSentence(1, 1, "Then he left."), 0, 1.0002, 2.0),
    ]
    audio = tmp_path / "a.mp3"
    silence(audio, 2.0)
    target = tmp_path / "small.readalong.epub"
    stats = write_readalong(
        str(src), [ChapterText(1, "ch1.xhtml#c1")], timed,
        [AudioFile(str(audio), "audio/mpeg", 2.0, "a.mp3")], str(target),
    )  # fmt: skip
    assert (stats.sentences, stats.overlaid, stats.unmatched) == (3, 2, 1)
    with zipfile.ZipFile(target) as archive:
        smil = xml(archive.read(next(n for n in archive.namelist() if n.endswith(".smil"))))
    clips = [
        (p.find("smil:text", NS).get("src").partition("#")[2], p.find("smil:audio", NS))
        for p in smil.iter("{*}par")
    ]
    assert [(i, clock(c.get("clipBegin")), clock(c.get("clipEnd"))) for i, c in clips] == [
        ("e2a2-0001", 0.0, 1.0),
        ("e2a2-0003", 1.0, 2.0),
    ]


def test_a_book_in_one_element_between_line_breaks(tmp_path):
    """Thousands of sentences in one <div>, between <br/>s: each wrapped, in a time that
    grows with the book (the writer walks siblings from the sentence, not the whole
    <div> each time), and the document unchanged once unwrapped."""
    n = 3000
    lines = [f"Line {i} of the book, said {'ABCDEFG'[i % 7]}.<br/>" for i in range(n)]
    head = CHAPTER.split(b"<body>")[0]
    chapter = head + b'<body><div id="c1">' + "\n".join(lines).encode() + b"</div></body></html>"
    src = tmp_path / "lines.epub"
    small_epub(src, chapter)
    timed = [
        TimedSentence(SpokenSentence(i, 1, f"Line {i} of the book, said {'ABCDEFG'[i % 7]}."),
                      0, float(i), float(i + 1))
        for i in range(n)
    ]  # fmt: skip
    audio = tmp_path / "a.mp3"
    silence(audio, 1.0)
    target = tmp_path / "lines.readalong.epub"
    stats = write_readalong(
        str(src), [ChapterText(1, "ch1.xhtml#c1")], timed,
        [AudioFile(str(audio), "audio/mpeg", float(n), "a.mp3")], str(target),
    )  # fmt: skip
    assert (stats.overlaid, stats.unmatched) == (n, 0)
    with zipfile.ZipFile(target) as archive:
        doc = archive.read("OEBPS/ch1.xhtml")
    spans = list(xml(doc).iter("{*}span"))
    assert len(spans) == n and spans[7].text == "Line 7 of the book, said A."
    assert spans[7].get("id") == "e2a-0008"  # no id of the book looks like ours here
    assert c14n(unwrap(xml(doc))) == c14n(xml(chapter))


# ==========================================================================
# bad input
# ==========================================================================
@pytest.mark.parametrize("damage", ["garbage", "truncated", "no-package"])
def test_damaged_epub_is_refused_naming_it(damage, tmp_path):
    """A damaged EPUB: BookError naming the file, nothing written at the target."""
    src = tmp_path / "bad.epub"
    if damage == "garbage":
        src.write_bytes(b"this is not a zip file at all" * 10)
    elif damage == "truncated":
        src.write_bytes((CORPUS / "georgia-britannica-pls-ssml.epub").read_bytes()[:5000])
    else:
        with zipfile.ZipFile(src, "w") as out:
            out.writestr("mimetype", b"application/epub+zip")
            out.writestr("META-INF/container.xml", CONTAINER)
    audio = tmp_path / "a.mp3"
    silence(audio, 1.0)
    target = tmp_path / "out" / "bad.readalong.epub"
    target.parent.mkdir()
    sentence = TimedSentence(SpokenSentence(0, 1, "Hello."), 0, 0.0, 1.0)
    with pytest.raises(BookError) as err:
        write_readalong(
            str(src), [ChapterText(1, "ch1.xhtml")], [sentence],
            [AudioFile(str(audio), "audio/mpeg", 1.0, "a.mp3")], str(target),
        )  # fmt: skip
    assert str(src) in str(err.value) and "not a valid EPUB" in str(err.value)
    assert "\n" not in str(err.value)
    assert os.listdir(target.parent) == []
