"""Tests of the ingest (parse) stage: corpus books and generated edge cases."""

from __future__ import annotations

import functools
import logging
import pickle
import re
import zipfile
from pathlib import Path

import pytest

from ebook2audio_dask.errors import BookError
from ebook2audio_dask.ingest import detect_format, read_book
from ebook2audio_dask.model import Book

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"

CAROL = "christmas-carol-gutenberg-epub2.epub"
CHILDREN = "childrens-literature.epub"
SHERLOCK = "adventures-of-sherlock-holmes-standardebooks.epub"
GEORGIA = "georgia-britannica-pls-ssml.epub"
ARABIC = "regime-anticancer-arabic.epub"
BROKEN = "broken-xhtml-epubsample007.epub"
ENTRE_NOUS = "entre-nous-lectures-francaises.txt"
ONTBOEZEMINGEN = "ontboezemingen-dutch.html"
ALL_BOOKS = [CAROL, CHILDREN, SHERLOCK, GEORGIA, ARABIC, BROKEN, ENTRE_NOUS, ONTBOEZEMINGEN]

needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"corpus not found at {CORPUS}")


@functools.cache
def book(name: str, include_matter: bool = False) -> Book:
    return read_book(str(CORPUS / name), include_matter=include_matter)


def body(b: Book):
    return [c for c in b.chapters if c.kind == "body"]


def text_of(chapter) -> str:
    return "\n".join(chapter.paragraphs)


# ==========================================================================
# Properties every corpus book must have
# ==========================================================================
@needs_corpus
@pytest.mark.parametrize("name", ALL_BOOKS)
@pytest.mark.parametrize("include_matter", [False, True])
def test_corpus_invariants(name, include_matter):
    b = book(name, include_matter)
    assert b.source == str(CORPUS / name)
    assert b.chapters, "no chapters"
    assert [c.index for c in b.chapters] == list(range(1, len(b.chapters) + 1))
    if not include_matter:
        assert {c.kind for c in b.chapters} == {"body"}
    for c in b.chapters:
        assert c.kind in ("body", "front", "back")
        assert c.title and c.title == " ".join(c.title.split())
        assert c.paragraphs
        for p in c.paragraphs:
            assert p and p == " ".join(p.split()), repr(p[:80])
            assert "\ufeff" not in p and "\u2060" not in p and "\u00ad" not in p
    # body chapters are the same with or without matter, in the same order
    plain = book(name, False)
    assert [c.paragraphs for c in body(book(name, True))] == [c.paragraphs for c in plain.chapters]
    pickle.loads(pickle.dumps(b))  # travels to Dask workers


# ==========================================================================
# A Christmas Carol (EPUB 2, NCX only, staves across files)
# ==========================================================================
@needs_corpus
def test_christmas_carol_five_staves():
    b = book(CAROL)
    assert b.format == "epub"
    assert b.title == "A Christmas Carol in Prose; Being a Ghost Story of Christmas"
    assert b.authors == ("Charles Dickens",)
    assert b.language == "en"
    assert [c.title for c in b.chapters] == [
        "STAVE ONE. MARLEY’S GHOST.",
        "STAVE TWO. THE FIRST OF THE THREE SPIRITS.",
        "STAVE THREE. THE SECOND OF THE THREE SPIRITS.",
        "STAVE FOUR. THE LAST OF THE SPIRITS.",
        "STAVE FIVE. THE END OF IT.",
    ]
    openings = [
        "Marley was dead",
        "When Scrooge awoke",
        "Awaking in the middle of a prodigiously",
        "The Phantom slowly, gravely, silently, approached",
        "Yes! and the bedpost was his own",
    ]
    headings = ["STAVE ONE.", "STAVE TWO.", "STAVE THREE.", "STAVE FOUR.", "STAVE FIVE."]
    for i, c in enumerate(b.chapters):
        assert c.paragraphs[0] == headings[i]
        assert any(p.startswith(openings[i]) for p in c.paragraphs[:4]), c.paragraphs[:4]
        txt = text_of(c)
        for j, other in enumerate(openings):
            if j != i:
                assert other not in txt, (i, other)
        for j, h in enumerate(headings):
            if j != i:
                assert h not in c.paragraphs
    # Stave One runs from file 0 into file 1; Stave Five from file 2 into file 3.
    assert b.chapters[0].paragraphs[-1].endswith("fell asleep upon the instant.")
    assert b.chapters[4].paragraphs[-1].endswith("God bless Us, Every One!")
    assert b.chapters[0].source.endswith("#pgepubid00009")
    # picture captions are neither chapters nor read in the text
    assert "Marley’s Ghost" not in b.chapters[0].paragraphs
    for c in b.chapters:
        assert "Gutenberg" not in text_of(c)
        assert "PREFACE" not in c.paragraphs


@needs_corpus
def test_christmas_carol_matter_and_cover():
    b = book(CAROL, True)
    kinds = [c.kind for c in b.chapters]
    assert kinds.count("body") == 5
    first_body = kinds.index("body")
    assert set(kinds[:first_body]) == {"front"}
    assert set(kinds[first_body + 5 :]) == {"back"}
    front = " ".join(c.title for c in b.chapters if c.kind == "front")
    assert "CONTENTS" in front and "ILLUSTRATIONS" in front and "A CHRISTMAS CAROL" in front
    back = [c for c in b.chapters if c.kind == "back"]
    assert any("LICENSE" in c.title for c in back)
    assert "*** START OF THE PROJECT GUTENBERG EBOOK" in text_of(b.chapters[0])
    assert b.cover is not None and b.cover.media_type == "image/jpeg"
    assert b.cover.data[:3] == b"\xff\xd8\xff"


# ==========================================================================
# Children's Literature (one XHTML, nested nav with unlinked spans)
# ==========================================================================
STORIES = [
    "A FOUR-LEAVED CLOVER",
    "THE LORD HELPETH MAN AND BEAST",
    "THE REAL PRINCESS",
    "THE EMPEROR'S NEW CLOTHES",
    "THE NIGHTINGALE",
    "THE FIR TREE",
    "THE TINDER-BOX",
    "THE HARDY TIN SOLDIER",
    "THE UGLY DUCKLING",
    "THE STORY OF FAIRYFOOT",
    "THE HAPPY PRINCE",
    "THE KNIGHTS OF THE SILVER SHIELD",
    "THE PRINCE'S DREAM",
    "OLD PIPES AND THE DRYAD",
]


@needs_corpus
def test_childrens_literature_fifteen_stories():
    b = book(CHILDREN)
    assert len(b.chapters) == 15
    assert [c.title for c in b.chapters[:14]] == [f"{190 + i} {t}" for i, t in enumerate(STORIES)]
    assert b.chapters[14].title.startswith("204 THE KING OF THE GOLDEN RIVER")
    assert all(c.source.startswith("s04.xhtml#") for c in b.chapters)
    for i, c in enumerate(b.chapters):
        assert c.paragraphs[0] == str(190 + i)  # the story's number heading
        txt = text_of(c)
        for j, title in enumerate(STORIES):
            if j != i:
                assert title not in c.paragraphs, (c.title, title)
        assert "BIBLIOGRAPHY" not in txt and "INTRODUCTORY" not in c.paragraphs
        assert "Transcriber's Note" not in txt  # <aside epub:type="annotation">
        assert not any(re.fullmatch(r"\d{3}", p) for p in c.paragraphs[1:])  # page breaks
    clover = b.chapters[0]
    assert "1. The Rabbi and The Diadem" in clover.paragraphs  # hidden sub-entries folded in
    assert "4. An Eastern Garden" in clover.paragraphs
    # an annotation reference keeps its word
    assert "Emperor's New Clothes\" came into being" in text_of(b.chapters[3]).replace("\n", " ")
    assert b.cover is not None and b.cover.media_type == "image/png"
    assert b.authors == ("Charles Madison Curry", "Erle Elsworth Clippinger")


@needs_corpus
def test_childrens_literature_matter():
    b = book(CHILDREN, True)
    front = [c for c in b.chapters if c.kind == "front"]
    assert len(body(b)) == 15
    assert [c.title for c in front][-1] == "INTRODUCTORY"
    assert any("BIBLIOGRAPHY" in c.title for c in front)
    assert all(c.index < body(b)[0].index for c in front)


# ==========================================================================
# Sherlock Holmes (Standard Ebooks, nav only, SVG cover)
# ==========================================================================
@needs_corpus
def test_sherlock_twelve_stories():
    b = read_book(str(CORPUS / SHERLOCK))
    assert len(b.chapters) == 12
    assert b.chapters[0].title == "A Scandal in Bohemia"
    assert b.chapters[-1].title == "The Adventure of the Copper Beeches"
    scandal = b.chapters[0]
    for part in ("I", "II", "III"):
        assert part in scandal.paragraphs  # sub-parts folded into their story
    assert scandal.paragraphs[2].startswith("To Sherlock Holmes she is always the woman.")
    assert b.language == "en-GB"
    assert b.authors == ("Arthur Conan Doyle",)
    assert b.cover is not None and b.cover.media_type == "image/svg+xml"
    assert b.cover.data.lstrip().startswith(b"<")


@needs_corpus
def test_sherlock_matter_kinds():
    b = book(SHERLOCK, True)
    kinds = {c.title: c.kind for c in b.chapters}
    assert kinds["Imprint"] == "front"
    assert kinds["Colophon"] == "back" and kinds["Uncopyright"] == "back"
    assert b.chapters[0].kind == "front"  # title page
    assert len(b.chapters) == 16


# ==========================================================================
# Georgia (nav chapters, noterefs, rear notes, page breaks)
# ==========================================================================
@needs_corpus
def test_georgia_chapters_and_notes():
    b = book(GEORGIA)
    assert [c.title for c in b.chapters] == [
        "GEORGIA",
        "Climate and Soils",
        "Minerals",
        "Agriculture",
        "Manufactures",
        "Population",
        "Government",
        "Education",
        "Finance",
        "History",
    ]
    everything = "\n".join(text_of(c) for c in b.chapters)
    assert "the upper Savannah was formerly part of the Chattahoochee" in everything
    assert "In that year there were 67 mills" in everything
    assert "assessed for taxation" in everything  # <span epub:type="pagebreak">754</span>
    assert "According to the usual nomenclature" not in everything  # rear notes
    assert "amended from overriden" not in everything  # <aside>
    glued = re.findall(r"[A-Za-z]{3,}\d+\b", everything)
    assert not glued, glued[:5]
    assert b.language == "en-US"


# ==========================================================================
# Arabic (EPUB 2 cover meta, translator, footnote link)
# ==========================================================================
@needs_corpus
def test_arabic():
    b = book(ARABIC)
    assert b.language == "ar"
    assert b.title == "Le Vrai Régime anti-cancer"
    assert b.authors == ("Pr David Khayat", "Nathalie Hutter-Lardeau")  # translator left out
    assert len(b.chapters) == 1
    ch = b.chapters[0]
    assert re.search(r"[\u0600-\u06FF]{4}", text_of(ch))
    assert ch.title == "الفصل الثاني ما هو السرطان؟"  # heading, not "Commencer la lecture"
    assert "[1]" not in text_of(ch)  # footnote link
    assert "لمزيد من المعلومات حول هذا الفصل" not in text_of(ch)  # footnote body in <aside>
    assert "السرطان." in ch.paragraphs[3]  # marker removed, full stop kept
    assert b.cover is not None and b.cover.media_type == "image/jpeg"
    assert b.cover.data[:2] == b"\xff\xd8"


# ==========================================================================
# Broken XHTML: recovered with the HTML parser
# ==========================================================================
@needs_corpus
def test_broken_xhtml_is_recovered(caplog):
    with caplog.at_level(logging.WARNING, logger="ebook2audio_dask"):
        b = read_book(str(CORPUS / BROKEN))
    assert len(b.chapters) == 1
    assert "1. main" in b.chapters[0].paragraphs
    assert b.cover is None
    assert any("HTML parser" in r.getMessage() for r in caplog.records)


# ==========================================================================
# Entre Nous (plain text, French, BOM, CRLF, PG header)
# ==========================================================================
ROMAN = [
    "I",
    "II",
    "III",
    "IV",
    "V",
    "VI",
    "VII",
    "VIII",
    "IX",
    "X",
    "XI",
    "XII",
    "XIII",
    "XIV",
    "XV",
    "XVI",
    "XVII",
    "XVIII",
    "XIX",
    "XX",
    "XXI",
    "XXII",
    "XXIII",
    "XXIV",
    "XXV",
    "XXVI",
    "XXVII",
    "XXVIII",
    "XXIX",
    "XXX",
    "XXXI",
    "XXXII",
    "XXXIII",
    "XXXIV",
    "XXXV",
    "XXXVI",
    "XXXVII",
    "XXXVIII",
    "XXXIX",
    "XL",
]


@needs_corpus
def test_entre_nous_forty_chapters():
    b = book(ENTRE_NOUS)
    assert b.format == "txt"
    assert b.language == "fr"
    assert b.title == "Entre Nous"
    assert b.authors == ("Lucie Vos",)
    assert len(b.chapters) == 40
    assert [c.title.split(".")[0] for c in b.chapters] == ROMAN
    assert b.chapters[0].title == "I. Deux Parents et Deux Enfants"  # from the contents list
    assert b.chapters[1].title == "II. Papa se fâche."
    assert b.chapters[0].paragraphs[1] == "Marie. «Je suis Marie."
    for c in b.chapters:
        txt = text_of(c)
        assert "[Illustration" not in txt and "\r" not in txt
        assert not re.search(r"(?<!\w)_\w|\w_(?!\w)|(?<![\w=])=\w", txt), c.title
        assert "Gutenberg" not in txt
        assert "ondeugend" not in txt  # the Dutch glossary is back matter
        assert "Chap." not in c.paragraphs[0]  # the contents list is not a chapter
    assert "_" not in b.chapters[15].text
    assert b.chapters[-1].paragraphs[-1].endswith("Maintenant faisons les fous. }")


@needs_corpus
def test_entre_nous_matter():
    b = book(ENTRE_NOUS, True)
    front = [c.title for c in b.chapters if c.kind == "front"]
    back = [c.title for c in b.chapters if c.kind == "back"]
    assert "INDEX." in front and "PRÉFACE." in front
    assert front[0].startswith("The Project Gutenberg EBook of Entre Nous")
    assert any("MOTS ET EXPRESSIONS" in t for t in back)
    assert back[-1].startswith("End of the Project Gutenberg EBook")
    assert len(body(b)) == 40


# ==========================================================================
# Ontboezemingen (single HTML, Dutch, [Pg n], footnotes, contents table)
# ==========================================================================
@needs_corpus
def test_ontboezemingen_html():
    b = book(ONTBOEZEMINGEN)
    assert b.format == "html"
    assert b.language == "nl"
    assert b.title == "Ontboezemingen"
    titles = [c.title for c in b.chapters]
    assert len(titles) == 19
    assert titles[0] == "BEREISDE LIEDEN." and titles[15] == "EEN SCHEEPSTAFEL."
    assert titles[14] == "OM DEN ZUID."  # footnote anchor removed from the heading
    assert titles[-1] == "DE GETERGDE ZACHTMOEDIGHEID, »'T SOP WAS DE KOOL NIET WAARD.\""
    assert "INHOUD." not in titles and "ERRATA." not in titles
    everything = "\n".join(text_of(c) for c in b.chapters)
    assert "Ik weet niet, onder welke namen Cuvier" not in everything  # footnote body
    assert not re.search(r"\[\d+\]", everything)  # footnote markers
    assert "gelijk een gewoon mensch" in everything  # page number removed mid-sentence
    for c in book(ONTBOEZEMINGEN, True).chapters:
        assert "[Pg" not in text_of(c)


@needs_corpus
def test_ontboezemingen_matter():
    b = book(ONTBOEZEMINGEN, True)
    kinds = {c.title: c.kind for c in b.chapters}
    assert kinds["INHOUD."] == "front"
    assert kinds["ERRATA."] == "back" and kinds["Transcriber's Notes"] == "back"
    assert b.chapters[0].kind == "front" and "Gutenberg" in b.chapters[0].title
    assert b.chapters[-1].kind == "back" and "Gutenberg" in b.chapters[-1].title


# ==========================================================================
# Generated EPUBs
# ==========================================================================
CONTAINER = """<?xml version="1.0"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
  <rootfiles>
    <rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>
  </rootfiles>
</container>"""


def xhtml(body: str, title: str = "t") -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<html xmlns="http://www.w3.org/1999/xhtml" xmlns:epub="http://www.idpf.org/2007/ops">'
        f"<head><title>{title}</title></head><body>{body}</body></html>"
    )


def nav(items: list[tuple[str, str]]) -> str:
    lis = "".join(f'<li><a href="{h}">{t}</a></li>' for h, t in items)
    return xhtml(f'<nav epub:type="toc"><ol>{lis}</ol></nav>')


def make_epub(
    path: Path,
    docs: dict[str, str],
    *,
    nav_items: list[tuple[str, str]] | None = None,
    nav_doc: str | None = None,
    extra_manifest: str = "",
    extra_meta: str = "",
    extra_files: dict[str, bytes] | None = None,
    container: bool = True,
    metadata: str = "<dc:title>Generated</dc:title><dc:language>en</dc:language>",
) -> Path:
    """Write a small EPUB 3 (files under OEBPS/) and return its path."""
    manifest = "".join(
        f'<item id="d{i}" href="{name}" media-type="application/xhtml+xml"/>'
        for i, name in enumerate(docs)
    )
    spine = "".join(f'<itemref idref="d{i}"/>' for i in range(len(docs)))
    files = dict(docs)
    if nav_items is not None or nav_doc is not None:
        manifest += (
            '<item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>'
        )
        files["nav.xhtml"] = nav_doc if nav_doc is not None else nav(nav_items)
    opf = (
        '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0">'
        f'<metadata xmlns:dc="http://purl.org/dc/elements/1.1/">{metadata}{extra_meta}</metadata>'
        f"<manifest>{manifest}{extra_manifest}</manifest><spine>{spine}</spine></package>"
    )
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip")
        if container:
            zf.writestr("META-INF/container.xml", CONTAINER)
        zf.writestr("OEBPS/content.opf", opf)
        for name, content in files.items():
            zf.writestr(f"OEBPS/{name}", content)
        for name, data in (extra_files or {}).items():
            zf.writestr(f"OEBPS/{name}", data)
    return path


def test_chapter_starting_mid_file_continues_into_next_file(tmp_path):
    docs = {
        "a.xhtml": xhtml(
            '<h1 id="c1">Chapter One</h1><p>One, first.</p><p>One, second.</p>'
            '<section id="c2"><h1>Chapter Two</h1><p>Two, in file a.</p></section>'
        ),
        "b.xhtml": xhtml(
            '<p>Two, continued in file b.</p><h1 id="c3">Chapter Three</h1><p>Three.</p>'
        ),
    }
    path = make_epub(
        tmp_path / "mid.epub",
        docs,
        nav_items=[
            ("a.xhtml#c1", "Chapter One"),
            ("a.xhtml#c2", "Chapter Two"),
            ("b.xhtml#c3", "Chapter Three"),
        ],
    )
    b = read_book(str(path))
    assert [c.title for c in b.chapters] == ["Chapter One", "Chapter Two", "Chapter Three"]
    assert b.chapters[0].paragraphs == ("Chapter One", "One, first.", "One, second.")
    assert b.chapters[1].paragraphs == (
        "Chapter Two",
        "Two, in file a.",
        "Two, continued in file b.",
    )
    assert b.chapters[2].paragraphs == ("Chapter Three", "Three.")
    assert [c.source for c in b.chapters] == ["a.xhtml#c1", "a.xhtml#c2", "b.xhtml#c3"]


def test_ncx_only_epub2_with_nested_points(tmp_path):
    ncx = """<?xml version="1.0"?>
    <ncx xmlns="http://www.daisy.org/z3986/2005/ncx/" version="2005-1"><navMap>
      <navPoint id="p1">
        <navLabel><text>Part One</text></navLabel><content src="a.xhtml"/>
        <navPoint id="p2">
          <navLabel><text>A picture</text></navLabel><content src="a.xhtml#fig"/>
        </navPoint>
      </navPoint>
      <navPoint id="p3">
        <navLabel><text>Part Two</text></navLabel><content src="a.xhtml#two"/>
      </navPoint>
    </navMap></ncx>"""
    long = " ".join(["word"] * 30) + "."
    docs = {
        "a.xhtml": xhtml(
            f'<h2>Part One</h2><p>{long}</p><div><img src="x.png" alt="A picture"/></div>'
            f'<h4 id="fig">A picture</h4><p>After the picture. {long}</p>'
            f'<h2 id="two">Part Two</h2><p>{long}</p>'
        )
    }
    path = tmp_path / "ncx.epub"
    make_epub(
        path,
        docs,
        extra_manifest='<item id="ncx" href="toc.ncx" media-type="application/x-dtbncx+xml"/>',
        extra_files={"toc.ncx": ncx.encode()},
    )
    b = read_book(str(path))
    assert [c.title for c in b.chapters] == ["Part One", "Part Two"]
    assert "A picture" not in b.chapters[0].paragraphs  # caption repeating the alt text
    assert b.chapters[0].paragraphs[2].startswith("After the picture.")


def test_parts_made_of_chapters_become_chapters(tmp_path):
    long = " ".join(["word"] * 60) + "."
    docs = {
        "p1.xhtml": xhtml("<h1>Part One</h1>"),
        "c1.xhtml": xhtml(f"<h2>Chapter 1</h2><p>{long}</p>"),
        "c2.xhtml": xhtml(f"<h2>Chapter 2</h2><p>{long}</p>"),
        "p2.xhtml": xhtml("<h1>Part Two</h1>"),
        "c3.xhtml": xhtml(f"<h2>Chapter 3</h2><p>{long}</p>"),
        "c4.xhtml": xhtml(f"<h2>Chapter 4</h2><p>{long}</p>"),
    }
    nav_doc = xhtml(
        '<nav epub:type="toc"><ol>'
        '<li><a href="p1.xhtml">Part One</a><ol><li><a href="c1.xhtml">Chapter 1</a></li>'
        '<li><a href="c2.xhtml">Chapter 2</a></li></ol></li>'
        '<li><a href="p2.xhtml">Part Two</a><ol><li><a href="c3.xhtml">Chapter 3</a></li>'
        '<li><a href="c4.xhtml">Chapter 4</a></li></ol></li></ol></nav>'
    )
    path = make_epub(tmp_path / "parts.epub", docs, nav_doc=nav_doc)
    b = read_book(str(path))
    assert [c.title for c in b.chapters] == [
        "Part One Chapter 1",
        "Chapter 2",
        "Part Two Chapter 3",
        "Chapter 4",
    ]
    assert b.chapters[2].paragraphs[:2] == ("Part Two", "Chapter 3")


def test_noise_is_not_read(tmp_path):
    body = (
        "<h1>Chapter</h1>"
        '<p>Word<a epub:type="noteref" href="#n1">1</a> and <a href="#n2">[2]</a>more'
        '<sup><a href="#n3">3</a></sup>, ten m<sup>2</sup>.</p>'
        '<p>Page<span epub:type="pagebreak" id="p7" title="7">7</span> break and [Pg 8] marker'
        '<span class="pagenum">[Pg 9]</span>.</p>'
        "<script>var x = 1;</script><style>p { color: red }</style>"
        '<p><img src="i.png" alt="An image description"/>Caption-free text.</p>'
        '<aside epub:type="footnote" id="n1"><p>Footnote body.</p></aside>'
        '<p hidden="hidden">Hidden text.</p>'
        '<section epub:type="endnotes"><p id="n2">Endnote body.</p></section>'
        "<table><tr><td>Cell one</td><td>cell two</td></tr></table>"
        "<p>Zero\u200bwidth\u00a0space and\n   newlines   inside.</p>"
    )
    path = make_epub(tmp_path / "noise.epub", {"c.xhtml": xhtml(body)})
    text = read_book(str(path)).chapters[0].paragraphs
    assert text == (
        "Chapter",
        "Word and more, ten m2.",
        "Page break and marker.",
        "Caption-free text.",
        "Cell one, cell two",
        "Zerowidth space and newlines inside.",
    )


def test_matter_rules_and_include_matter(tmp_path):
    long = " ".join(["text"] * 50) + "."
    docs = {
        "cover.xhtml": xhtml('<div><img src="c.png" alt="Cover"/></div>'),
        "titlepage.xhtml": xhtml("<h1>My Book</h1><p>By Somebody</p>"),
        "toc.xhtml": xhtml(
            '<h1>Contents</h1><p><a href="ch1.xhtml">One</a></p>'
            '<p><a href="ch2.xhtml">Two</a></p><p><a href="ch3.xhtml">Three</a></p>'
        ),
        "ch1.xhtml": xhtml(f"<h1>One</h1><p>{long}</p>"),
        "ch2.xhtml": xhtml(f"<h1>Two</h1><p>{long}</p>"),
        "part.xhtml": xhtml("<h1>Part Two</h1>"),
        "ch3.xhtml": xhtml(f"<h1>Three</h1><p>{long}</p>"),
        "colophon.xhtml": xhtml(f"<h1>Colophon</h1><p>{long}</p>"),
    }
    path = make_epub(tmp_path / "matter.epub", docs)  # no TOC at all: one section per file
    b = read_book(str(path))
    assert [c.title for c in b.chapters] == ["One", "Two", "Part Two Three"]
    assert [c.index for c in b.chapters] == [1, 2, 3]
    assert b.chapters[2].paragraphs[:2] == ("Part Two", "Three")
    full = read_book(str(path), include_matter=True)
    assert [(c.index, c.kind, c.title) for c in full.chapters] == [
        (1, "front", "My Book"),
        (2, "front", "Contents"),
        (3, "body", "One"),
        (4, "body", "Two"),
        (5, "body", "Part Two Three"),
        (6, "back", "Colophon"),
    ]


def test_epub3_creators_with_roles(tmp_path):
    meta = (
        '<dc:title id="t">Main</dc:title><meta refines="#t" property="title-type">main</meta>'
        '<dc:title id="s">Sub</dc:title><meta refines="#s" property="title-type">subtitle</meta>'
        '<dc:creator id="tr">Tess Translator</dc:creator>'
        '<meta refines="#tr" property="role">trl</meta>'
        '<dc:creator id="a2">Bea Second</dc:creator>'
        '<meta refines="#a2" property="display-seq">2</meta>'
        '<dc:creator id="a1">Ann First</dc:creator><meta refines="#a1" property="role">aut</meta>'
        '<meta refines="#a1" property="display-seq">1</meta>'
    )
    path = make_epub(
        tmp_path / "roles.epub", {"c.xhtml": xhtml("<p>Some text here.</p>")}, metadata=meta
    )
    b = read_book(str(path))
    assert b.title == "Main"
    assert b.authors == ("Ann First", "Bea Second")
    assert b.language is None


def test_title_falls_back_to_file_stem(tmp_path):
    path = make_epub(tmp_path / "no-title.epub", {"c.xhtml": xhtml("<p>Text.</p>")}, metadata="")
    assert read_book(str(path)).title == "no-title"


def test_missing_cover_image_does_not_fail(tmp_path, caplog):
    path = make_epub(
        tmp_path / "nocover.epub",
        {"c.xhtml": xhtml("<p>Some text.</p>")},
        extra_manifest=(
            '<item id="img" href="images/cover.jpg" media-type="image/jpeg"'
            ' properties="cover-image"/>'
        ),
    )
    with caplog.at_level(logging.WARNING):
        b = read_book(str(path))
    assert b.cover is None
    assert b.chapters[0].paragraphs == ("Some text.",)


def test_epub2_cover_meta(tmp_path):
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
    path = make_epub(
        tmp_path / "cover2.epub",
        {"c.xhtml": xhtml("<p>Some text.</p>")},
        extra_manifest='<item id="cov" href="img/c.png" media-type="image/png"/>',
        extra_meta='<meta name="cover" content="cov"/>',
        extra_files={"img/c.png": png},
    )
    cover = read_book(str(path)).cover
    assert cover is not None and cover.media_type == "image/png" and cover.data == png


def test_entities_are_not_expanded(tmp_path):
    evil = (
        '<?xml version="1.0"?><!DOCTYPE html [<!ENTITY a "ha">'
        '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">'
        '<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        '<html xmlns="http://www.w3.org/1999/xhtml"><head><title>x</title></head>'
        "<body><p>Safe &b; &xxe; text&nbsp;here.</p></body></html>"
    )
    path = make_epub(tmp_path / "ent.epub", {"c.xhtml": evil})
    text = read_book(str(path)).chapters[0].text
    assert "root:" not in text and "hahaha" not in text
    assert "Safe" in text and "text here." in text


# ==========================================================================
# Bad inputs
# ==========================================================================
def _problem(path: Path, **kw) -> str:
    with pytest.raises(BookError) as info:
        read_book(str(path), **kw)
    err = info.value
    message = str(err)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert err.source == str(path)
    return err.problem


def test_random_bytes_and_png_are_not_ebooks(tmp_path):
    import random

    rnd = tmp_path / "random.bin"
    rnd.write_bytes(random.Random(1).randbytes(4096))
    assert _problem(rnd) == "not an ebook (unrecognised content)"
    # text (or anything else) named .epub is a broken EPUB, not a plain-text book
    text_epub = tmp_path / "download.epub"
    text_epub.write_bytes(b"<html>404 Not Found</html>")
    assert _problem(text_epub) == "not a valid EPUB: not a zip archive"
    png = tmp_path / "picture.txt"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    assert _problem(png) == "not an ebook (unrecognised content)"


def test_truncated_epub(tmp_path):
    good = make_epub(tmp_path / "good.epub", {"c.xhtml": xhtml("<p>" + "text " * 2000 + "</p>")})
    bad = tmp_path / "truncated.epub"
    bad.write_bytes(good.read_bytes()[:400])
    assert _problem(bad) == "not a valid EPUB: unreadable zip archive"


def test_epub_without_container(tmp_path):
    path = make_epub(tmp_path / "nocontainer.epub", {"c.xhtml": xhtml("<p>x</p>")}, container=False)
    assert _problem(path) == "not a valid EPUB: META-INF/container.xml missing"


def test_epub_with_missing_package_document(tmp_path):
    path = tmp_path / "noopf.epub"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mimetype", "application/epub+zip")
        zf.writestr("META-INF/container.xml", CONTAINER)
    assert "package document OEBPS/content.opf missing" in _problem(path)


def test_epub_with_broken_container(tmp_path):
    path = tmp_path / "badcontainer.epub"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mimetype", "application/epub+zip")
        zf.writestr("META-INF/container.xml", "<container><rootfiles></container>")
    assert _problem(path).startswith("not a valid EPUB")


def test_empty_books(tmp_path):
    path = make_epub(
        tmp_path / "empty.epub",
        {
            "a.xhtml": xhtml("<div><img src='x.png' alt='only a picture'/></div>"),
            "b.xhtml": xhtml("<p>   </p><script>text()</script>"),
        },
        nav_items=[("a.xhtml", "Chapter 1"), ("b.xhtml", "Chapter 2")],
    )
    assert _problem(path) == "no readable text"
    empty_txt = tmp_path / "empty.txt"
    empty_txt.write_bytes(b"")
    assert _problem(empty_txt) == "no readable text"
    blank_txt = tmp_path / "blank.txt"
    blank_txt.write_bytes(b"\xef\xbb\xbf\r\n  \r\n")
    assert _problem(blank_txt, include_matter=True) == "no readable text"


def test_drm_encrypted_epub(tmp_path):
    enc = (
        '<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container" '
        'xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData>'
        '<enc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>'
        '<enc:CipherData><enc:CipherReference URI="OEBPS/c.xhtml"/></enc:CipherData>'
        "</enc:EncryptedData></encryption>"
    )
    path = make_epub(tmp_path / "drm.epub", {"c.xhtml": xhtml("<p>x</p>")})
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("META-INF/encryption.xml", enc)
    assert "DRM" in _problem(path)


def test_missing_file(tmp_path):
    assert _problem(tmp_path / "nope.epub") == "file not found"


# ==========================================================================
# Plain text and HTML details, format detection, fsspec
# ==========================================================================
def test_txt_rules(tmp_path):
    text = (
        "\ufeffThe Project Gutenberg EBook of Tiny, by Some One\r\n\r\nTitle: Tiny\r\n\r\n"
        "Author: Some One\r\n\r\nLanguage: German\r\n\r\n"
        "*** START OF THIS PROJECT GUTENBERG EBOOK TINY ***\r\n\r\n"
        "Produced by Volunteers\r\n\r\n\r\n\r\n\r\n"
        "CONTENTS\r\n\r\n  I. The Start   1\r\n  II. The End   5\r\n  III. Nothing   9"
        "\r\n\r\n\r\n\r\n\r\n"
        "CHAPTER I.\r\n\r\nTHE START\r\n\r\nIt was _very_ dark and =stormy= -- really.\r\n"
        "[Illustration: A storm]\r\nSecond line.\r\n\r\n[Illustration]\r\n\r\n\r\n\r\n"
        "CHAPTER II.\r\n\r\nThe end came[1] soon.\r\n\r\n\r\n\r\n"
        "CHAPTER III.\r\n\r\nNothing more.\r\n\r\n"
        "End of the Project Gutenberg EBook of Tiny\r\n\r\n"
        "*** END OF THIS PROJECT GUTENBERG EBOOK TINY ***\r\n"
        "Licence text.\r\n"
    )
    path = tmp_path / "tiny.txt"
    path.write_bytes(text.encode("utf-8"))
    b = read_book(str(path))
    assert (b.format, b.title, b.authors, b.language) == ("txt", "Tiny", ("Some One",), "de")
    assert [c.title for c in b.chapters] == ["CHAPTER I. THE START", "CHAPTER II.", "CHAPTER III."]
    assert b.chapters[0].paragraphs == (
        "CHAPTER I.",
        "THE START",
        "It was very dark and stormy — really. Second line.",
    )
    assert b.chapters[1].paragraphs == ("CHAPTER II.", "The end came soon.")
    full = read_book(str(path), include_matter=True)
    assert [c.kind for c in full.chapters] == ["front", "front", "body", "body", "body", "back"]
    assert "Licence text." in full.chapters[-1].text


def test_txt_parts_and_spaced_contents_list(tmp_path):
    para = "It was a dark and stormy night; the rain fell in torrents. " * 4
    text = (
        "MY NOVEL\n\nCONTENTS\n\nCHAPTER I. The Start\n\nCHAPTER II. The Middle\n\n"
        "CHAPTER III. The End\n\n\n\n\nBOOK ONE\n\n\n\n\nCHAPTER I.\n\nThe Start\n\n"
        f"{para}\n\n\n\n\nCHAPTER II.\n\nThe Middle\n\n{para}\n\n\n\n\n"
        f"BOOK TWO\n\n\n\n\nCHAPTER I.\n\nThe End\n\n{para}\n"
    )
    path = tmp_path / "novel.txt"
    path.write_text(text, encoding="utf-8")
    b = read_book(str(path))
    assert [c.title for c in b.chapters] == [
        "BOOK ONE CHAPTER I. The Start",
        "CHAPTER II. The Middle",
        "BOOK TWO CHAPTER I. The End",
    ]
    assert b.chapters[0].paragraphs[:3] == ("BOOK ONE", "CHAPTER I.", "The Start")
    full = read_book(str(path), include_matter=True)
    assert [c.kind for c in full.chapters] == ["front", "body", "body", "body"]


def test_html_detected_from_content_and_cleaned(tmp_path):
    filler = "<p>" + "Du texte assez long pour faire un vrai chapitre. " * 5 + "</p>"
    html = (
        "<!DOCTYPE html><html lang='fr'><head><title>Livre</title><style>h2{}</style></head><body>"
        "<h1>Livre</h1><h2 id='c1'>Un</h2><p>Premier <span class='pagenum'>[Pg 3]</span>texte"
        "<a href='#fn1' class='fnanchor'>[1]</a>.</p>"
        f"{filler}<div class='footnote'><p>Note.</p></div>"
        f"<h2 id='c2'>Deux</h2>{filler}"
        "</body></html>"
    )
    path = tmp_path / "book.txt"  # wrong extension: detected from content
    path.write_text(html, encoding="utf-8")
    b = read_book(str(path))
    assert b.format == "html" and b.language == "fr" and b.title == "Livre"
    assert [c.title for c in b.chapters] == ["Un", "Deux"]
    assert b.chapters[0].paragraphs[:2] == ("Un", "Premier texte.")
    assert "Note." not in b.chapters[0].paragraphs
    assert read_book(str(path), include_matter=True).chapters[0].title == "Livre"
    assert [c.source for c in b.chapters] == ["#c1", "#c2"]


def test_detect_format():
    assert detect_format(b"PK\x03\x04rest") == "epub"
    assert detect_format(b"<?xml version='1.0'?><html><body/></html>") == "html"
    assert detect_format("Plain words, café.".encode()) == "txt"
    assert detect_format("Plain words".encode("cp1252") + b"\xe9") == "txt"
    assert detect_format(b"<p>fragment</p>", "page.html") == "html"
    assert detect_format(b"\x89PNG\r\n\x1a\n\x00\x00") is None
    assert detect_format(b"%PDF-1.4\n\x00\x01\x02\x03") == "pdf"  # read by ingest/pdf.py


def test_reads_through_fsspec(tmp_path):
    import fsspec

    src = make_epub(tmp_path / "mem.epub", {"c.xhtml": xhtml("<h1>Hi</h1><p>From memory.</p>")})
    fs = fsspec.filesystem("memory")
    fs.pipe("/books/mem.epub", src.read_bytes())
    try:
        b = read_book("memory://books/mem.epub")
    finally:
        fs.rm("/books", recursive=True)
    assert b.source == "memory://books/mem.epub"
    assert b.chapters[0].paragraphs == ("Hi", "From memory.")
    assert read_book(src.as_uri()).chapters[0].paragraphs == ("Hi", "From memory.")


def test_deeply_nested_document(tmp_path):
    depth = 3000
    body = "<div>" * depth + "<p>Deep text.</p>" + "</div>" * depth
    path = make_epub(tmp_path / "deep.epub", {"c.xhtml": xhtml(body)})
    try:
        b = read_book(str(path))
    except BookError as err:  # acceptable: a clear error, never a raw RecursionError
        assert str(err).startswith(str(path))
    else:
        assert "Deep text." in b.chapters[0].text


# --------------------------------------------------------------------------- the format table
def test_docs_formats_table_is_the_registry():
    """docs/formats.md's input table is :func:`formats_table`'s output (regenerate it)."""
    from ebook2audio_dask.ingest.registry import formats_table

    docs = (Path(__file__).resolve().parents[1] / "docs" / "formats.md").read_text("utf-8")
    assert formats_table() in docs


def test_registry_drives_formats_suffixes_and_calibre():
    from ebook2audio_dask.ingest import CALIBRE_FORMATS, FORMATS
    from ebook2audio_dask.ingest.registry import BOOK_SUFFIXES, INPUT_FORMATS, get_format
    from ebook2audio_dask.pipeline.api import BOOK_SUFFIXES as API_SUFFIXES

    assert set(FORMATS) == {f.name for f in INPUT_FORMATS}
    assert set(FORMATS) == {"epub", "txt", "html", "fb2", "pdf", "md", "mobi", "azw3", "docx"} | {
        "rtf",
        "odt",
    }
    assert set(CALIBRE_FORMATS) == {"mobi", "azw3", "docx", "rtf", "odt"}
    assert API_SUFFIXES is BOOK_SUFFIXES
    assert set(BOOK_SUFFIXES) == {
        ".epub", ".txt", ".html", ".htm", ".xhtml", ".fb2", ".fb2.zip", ".pdf", ".mobi",
        ".azw3", ".docx", ".rtf", ".odt", ".md",
    }  # fmt: skip
    assert get_format("rtf").calibre_options == get_format("odt").calibre_options
    assert get_format("rtf").calibre_options[0] == "--level1-toc"
    assert get_format("docx").calibre_options == ()


def test_registry_rows_are_checked():
    from ebook2audio_dask.ingest.registry import InputFormat

    with pytest.raises(ValueError, match="container"):
        InputFormat("x", "X", "tar", sniff=lambda head, name: True, calibre=True)
    with pytest.raises(ValueError, match="takes"):
        InputFormat("x", "X", "text", sniff=lambda head, name: True, read=print, takes="lines")
    with pytest.raises(ValueError, match="reader"):
        InputFormat("x", "X", "text", sniff=lambda head, name: True)


def test_uses_calibre_reads_the_switch_at_call_time():
    import dask

    from ebook2audio_dask.errors import UsageError
    from ebook2audio_dask.ingest.registry import get_format, uses_calibre

    assert uses_calibre(get_format("mobi")) and not uses_calibre(get_format("epub"))
    assert not uses_calibre(get_format("pdf"))
    with dask.config.set({"ebook2audio.ingest.pdf": "calibre"}):
        assert uses_calibre(get_format("pdf"))
    with dask.config.set({"ebook2audio.ingest.pdf": "ocr"}):
        with pytest.raises(UsageError, match="'pypdf' or 'calibre', not 'ocr'"):
            uses_calibre(get_format("pdf"))


def test_zip_without_signature_is_recognised_from_its_members():
    from ebook2audio_dask.ingest.registry import zip_format_by_members

    assert zip_format_by_members(["word/document.xml", "[Content_Types].xml"]) == "docx"
    assert zip_format_by_members(["book.fb2"]) == "fb2"
    assert zip_format_by_members(["a.fb2", "b.fb2"]) == "epub"
    assert zip_format_by_members(["META-INF/container.xml", "x.fb2"]) == "epub"
    assert zip_format_by_members([]) == "epub"


# --------------------------------------------------------------------------- shared helpers
def test_roman_value_rules_of_both_callers():
    """One parser: text normalisation reads up to 3999, chapter headings up to 4999."""
    from ebook2audio_dask.numerals import roman_value

    assert roman_value("MMMCMXCIX") == 3999
    assert roman_value("MMMM") is None and roman_value("mmmm") is None
    assert roman_value("MMMM", max_thousands=4) == 4000
    assert roman_value("mmmmcmxcix", max_thousands=4) == 4999
    assert roman_value("MMMMM", max_thousands=4) is None
    for word in ("", "IIII", "DID", "CIVIL", "VX", "IC"):
        assert roman_value(word) is None and roman_value(word, max_thousands=4) is None


def test_txt_heading_numbers_read_up_to_4999():
    from ebook2audio_dask.ingest.txt import _number

    assert _number("MMMM") == 4000 and _number("xiv") == 14 and _number("twelve") == 12
    assert _number("MMMMM") is None and _number("IIII") is None


def test_local_name():
    from ebook2audio_dask.safexml import local_name

    assert local_name("{http://www.idpf.org/2007/opf}Meta") == "Meta"
    assert local_name("{http://www.idpf.org/2007/opf}Meta", lower=True) == "meta"
    assert local_name("p") == "p"
    assert local_name(None) == "" and local_name(object()) == ""


def test_text_and_ingest_do_not_import_each_other():
    import ast

    root = Path(__file__).resolve().parents[1] / "ebook2audio_dask"
    for package, other in (("text", "ingest"), ("ingest", "text")):
        for path in (root / package).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text("utf-8"))):
                if isinstance(node, ast.ImportFrom):
                    module = "." * node.level + (node.module or "")
                    assert other not in module.split("."), f"{path.name} imports {module}"
