"""Input formats beyond EPUB/TXT/HTML: FB2, PDF, Markdown and the Calibre formats.

Every input is generated from a real corpus book (A Christmas Carol, EPUB 2),
so the expected chapter list is the EPUB's:

* FB2, RTF and ODT are written by small writers below from the EPUB's chapters
  (nested sections, a poem, a cover, a notes body; word-processor headings);
* MOBI, AZW3 and DOCX are made by Calibre's ``ebook-convert`` from the EPUB;
* PDFs are made with fpdf2 (no Calibre): an outline, a running header, a
  footer with page numbers, so the pypdf reader is tested on every machine.

The Calibre tests skip when ``ebook-convert`` is missing, but fail under
``CI=true`` (``.ci/install-dev.sh`` installs Debian's ``calibre``).
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

import dask
import pytest
from helpers import check_m4b_against_report, load_report, run_cli

from ebook2audio_dask.errors import BookError
from ebook2audio_dask.ingest import FORMATS, detect_format, read_book
from ebook2audio_dask.ingest._text import clean

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
CAROL = CORPUS / "christmas-carol-gutenberg-epub2.epub"

pytestmark = pytest.mark.skipif(not CAROL.is_file(), reason=f"corpus not found at {CORPUS}")

POEM = ["The ghost of Marley walks tonight,", "With chains of iron, cold and white;"]
NOTE = "A door-nail is the nail on which a door-knocker strikes."
HEADER = "A CHRISTMAS CAROL — Charles Dickens"


def _calibre() -> str:
    program = shutil.which("ebook-convert")
    if program is None:
        message = "Calibre's ebook-convert is not installed: .ci/install-dev.sh installs it as root"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return program


def _ebook_convert(src: Path, dst: Path) -> subprocess.Popen:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    return subprocess.Popen(
        [_calibre(), str(src), str(dst)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )


# ==========================================================================
# Writers
# ==========================================================================
def _split_title(chapter) -> tuple[list[str], list[str]]:
    """(heading paragraphs, text paragraphs) of a chapter whose paragraphs start with its title."""
    for k in (1, 2, 3):
        if clean(" ".join(chapter.paragraphs[:k])) == chapter.title:
            return list(chapter.paragraphs[:k]), list(chapter.paragraphs[k:])
    return [chapter.title], list(chapter.paragraphs)


def write_fb2(book, path: Path, *, parts: bool = False, keep: int | None = None) -> None:
    """An FB2 of *book*: chapters as sections (each cut into two untitled scene
    sections), an epigraph poem in the first, a note, a cover; with *parts*, the
    chapters are grouped under PART ONE / PART TWO sections."""
    e = escape
    author = book.authors[0].split()
    cover = ""
    binaries = ""
    if book.cover is not None:
        cover = '<coverpage><image l:href="#cover.jpg"/></coverpage>'
        data = base64.encodebytes(book.cover.data).decode("ascii")
        binaries = f'<binary id="cover.jpg" content-type="{book.cover.media_type}">{data}</binary>'

    def section(i, chapter) -> str:
        heads, text = _split_title(chapter)
        text = text[:keep] if keep else text
        half = max(1, len(text) // 2)
        title = "".join(f"<p>{e(h)}</p>" for h in heads)
        extra = ""
        if i == 0:
            stanza = "".join(f"<v>{e(v)}</v>" for v in POEM)
            extra = (
                f"<epigraph><poem><stanza>{stanza}</stanza></poem>"
                "<text-author>Anon.</text-author></epigraph>"
            )
        first = "".join(f"<p>{e(p)}</p>" for p in text[:half])
        if i == 0:
            first = first.replace("</p>", '<a l:href="#n1" type="note">[1]</a></p>', 1)
        rest = "".join(f"<p>{e(p)}</p>" for p in text[half:])
        return (
            f'<section id="ch{i + 1}"><title>{title}</title>{extra}'
            f"<section>{first}</section><empty-line/><section>{rest}</section></section>"
        )

    chapters = [section(i, c) for i, c in enumerate(book.chapters)]
    if parts:
        chapters = [
            f"<section><title><p>PART ONE</p></title>{''.join(chapters[:2])}</section>",
            f"<section><title><p>PART TWO</p></title>{''.join(chapters[2:])}</section>",
        ]
    path.write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<FictionBook xmlns="http://www.gribuser.ru/xml/fictionbook/2.0" '
        'xmlns:l="http://www.w3.org/1999/xlink">'
        f"<description><title-info><genre>prose</genre><author><first-name>{e(author[0])}</first-name>"
        f"<last-name>{e(author[-1])}</last-name></author><book-title>{e(book.title)}</book-title>"
        f"{cover}<lang>en</lang></title-info></description>"
        f"<body><title><p>{e(book.title)}</p><p>{e(book.authors[0])}</p></title>{''.join(chapters)}</body>"
        f'<body name="notes"><title><p>Notes</p></title><section id="n1"><title><p>1</p></title>'
        f"<p>{e(NOTE)}</p></section></body>{binaries}</FictionBook>",
        encoding="utf-8",
    )


def write_odt(book, path: Path) -> None:
    """An OpenDocument text of *book*: one level-1 heading per chapter, then paragraphs."""
    body = []
    for chapter in book.chapters:
        _, text = _split_title(chapter)
        body.append(f'<text:h text:outline-level="1">{escape(chapter.title)}</text:h>')
        body += [f"<text:p>{escape(p)}</text:p>" for p in text]
    ns = (
        'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
        'xmlns:meta="urn:oasis:names:tc:opendocument:xmlns:meta:1.0" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/"'
    )
    content = (
        f'<?xml version="1.0" encoding="UTF-8"?><office:document-content {ns} office:version="1.2">'
        f"<office:body><office:text>{''.join(body)}</office:text></office:body></office:document-content>"
    )
    meta = (
        f'<?xml version="1.0" encoding="UTF-8"?><office:document-meta {ns} '
        f'office:version="1.2"><office:meta><dc:title>{escape(book.title)}</dc:title><meta:initial-creator>{escape(book.authors[0])}</meta:initial-creator><dc:creator>{escape(book.authors[0])}</dc:creator><dc:language>en</dc:language></office:meta></office:document-meta>'
    )
    manifest = (
        '<?xml version="1.0" encoding="UTF-8"?><manifest:manifest '
        'xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" '
        'manifest:version="1.2"><manifest:file-entry manifest:full-path="/" '
        'manifest:media-type="application/vnd.oasis.opendocument.text"/><manifest:file-entry '
        'manifest:full-path="content.xml" manifest:media-type="text/xml"/><manifest:file-entry '
        'manifest:full-path="meta.xml" manifest:media-type="text/xml"/></manifest:manifest>'
    )
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), "application/vnd.oasis.opendocument.text")
        z.writestr("META-INF/manifest.xml", manifest, zipfile.ZIP_DEFLATED)
        z.writestr("content.xml", content, zipfile.ZIP_DEFLATED)
        z.writestr("meta.xml", meta, zipfile.ZIP_DEFLATED)


def _rtf_text(text: str) -> str:
    out = []
    for ch in text:
        if ch in "\\{}":
            out.append("\\" + ch)
        elif ord(ch) < 128:
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\u{code if code < 32768 else code - 65536}?")
    return "".join(out)


def write_rtf(book, path: Path) -> None:
    """An RTF of *book* as a word processor writes it: "heading 1" paragraphs (outline level 0)."""
    parts = [
        r"{\rtf1\ansi\deff0{\fonttbl{\f0 Times New Roman;}}",
        r"{\stylesheet{\s0 Normal;}{\s1\outlinelevel0\b\fs32 heading 1;}}",
        rf"{{\info{{\title {_rtf_text(book.title)}}}{{\author {_rtf_text(book.authors[0])}}}}}",
    ]
    for chapter in book.chapters:
        _, text = _split_title(chapter)
        parts.append(rf"{{\pard\s1\outlinelevel0\b\fs32 {_rtf_text(chapter.title)}\par}}")
        parts += [rf"{{\pard\s0 {_rtf_text(p)}\par}}" for p in text]
    path.write_text("\n".join(parts) + "}\n", encoding="ascii")


def _pdf_font(pdf) -> bool:
    """DejaVu when installed (Unicode); else the core font (Latin-1 text only)."""
    for folder in ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu"):
        font = Path(folder) / "DejaVuSerif.ttf"
        if font.is_file():
            pdf.add_font("DejaVu", "", str(font))
            pdf.set_font("DejaVu", size=11)
            return True
    pdf.set_font("Times", size=11)
    return False


_LATIN1 = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "—": "-", "–": "-", "…": "..."})


def pdf_text(text: str, unicode: bool) -> str:
    return (
        text if unicode else text.translate(_LATIN1).encode("latin-1", "replace").decode("latin-1")
    )


def write_pdf(book, path: Path, *, outline: bool = True) -> bool:
    """A PDF of *book* made with fpdf2: title page, then each chapter on a new page
    (a bookmark per chapter), a running header and a "Page N" footer."""
    from fpdf import FPDF

    class Book(FPDF):
        def header(self):
            if self.page_no() > 1:
                self.set_font(size=8)
                self.cell(0, 6, pdf_text(HEADER, unicode), align="C")
                self.ln(10)
                self.set_font(size=11)

        def footer(self):
            if self.page_no() > 1:
                self.set_y(-15)
                self.set_font(size=8)
                self.cell(0, 10, f"Page {self.page_no()}", align="C")
                self.set_font(size=11)

    pdf = Book(format=(148, 210))
    pdf.set_title(book.title)
    pdf.set_author(book.authors[0])
    pdf.set_margins(15, 15, 15)
    unicode = _pdf_font(pdf)
    pdf.add_page()
    pdf.ln(40)
    pdf.multi_cell(0, 8, pdf_text(book.title, unicode), align="C")
    for chapter in book.chapters:
        heads, text = _split_title(chapter)
        pdf.add_page()
        if outline:
            pdf.start_section(pdf_text(chapter.title, unicode))
        for h in heads:
            pdf.multi_cell(0, 8, pdf_text(h, unicode), align="C", new_x="LMARGIN", new_y="NEXT")
        pdf.ln(4)
        for p in text:
            pdf.multi_cell(0, 5, "    " + pdf_text(p, unicode), new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))
    return unicode


# ==========================================================================
# Fixtures
# ==========================================================================
@pytest.fixture(scope="session")
def carol():
    return read_book(str(CAROL))


@pytest.fixture(scope="session")
def files(tmp_path_factory, carol):
    folder = tmp_path_factory.mktemp("formats")
    write_fb2(carol, folder / "carol.fb2")
    write_fb2(carol, folder / "carol-parts.fb2", parts=True)
    unicode = write_pdf(carol, folder / "carol.pdf")
    write_pdf(carol, folder / "carol-no-outline.pdf", outline=False)
    return {"folder": folder, "pdf_unicode": unicode}


@pytest.fixture(scope="session")
def calibre_files(tmp_path_factory, carol):
    _calibre()
    folder = tmp_path_factory.mktemp("calibre")
    write_odt(carol, folder / "carol.odt")
    write_rtf(carol, folder / "carol.rtf")
    procs = [
        (ext, _ebook_convert(CAROL, folder / f"carol.{ext}")) for ext in ("mobi", "azw3", "docx")
    ]
    for ext, proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, (ext, err.decode(errors="replace")[-2000:])
    return folder


def titles(book) -> list[str]:
    return [c.title for c in book.chapters]


# ==========================================================================
# FB2
# ==========================================================================
def test_fb2_chapters_metadata_cover(files, carol):
    book = read_book(str(files["folder"] / "carol.fb2"))
    assert book.format == "fb2"
    assert titles(book) == titles(carol)
    assert (book.title, book.authors, book.language) == (carol.title, carol.authors, "en")
    assert book.cover is not None and book.cover.data == carol.cover.data
    assert book.cover.media_type == carol.cover.media_type
    first = book.chapters[0]
    # heading lines, then the epigraph's poem (one paragraph per stanza) and its author
    assert first.paragraphs[:4] == (*carol.chapters[0].paragraphs[:2], " ".join(POEM), "Anon.")
    # the untitled scene sections stay in their chapter; the note reference is not read
    assert first.paragraphs[4:] == carol.chapters[0].paragraphs[2:]
    for got, want in zip(book.chapters[1:], carol.chapters[1:]):
        assert got.paragraphs == want.paragraphs
    # the notes body is back matter; the body's title is front matter
    full = read_book(str(files["folder"] / "carol.fb2"), include_matter=True)
    assert [(c.kind, c.title) for c in full.chapters if c.kind != "body"] == [
        ("front", f"{carol.title} {carol.authors[0]}"),
        ("back", "Notes"),
    ]
    assert NOTE in full.chapters[-1].paragraphs


def test_fb2_parts_are_folded_into_their_first_chapter(files, carol):
    book = read_book(str(files["folder"] / "carol-parts.fb2"))
    want = titles(carol)
    want[0], want[2] = f"PART ONE {want[0]}", f"PART TWO {want[2]}"
    assert titles(book) == want
    assert book.chapters[2].paragraphs[0] == "PART TWO"


def test_fb2_zip_and_sniffing(files, carol, tmp_path):
    data = (files["folder"] / "carol.fb2").read_bytes()
    bare = tmp_path / "carol"  # no extension: FB2 from its root element
    bare.write_bytes(data)
    assert detect_format(data[:4096]) == "fb2"
    assert titles(read_book(str(bare))) == titles(carol)
    zipped = tmp_path / "carol.fb2.zip"
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("carol.fb2", data)
    book = read_book(str(zipped))
    assert book.format == "fb2" and titles(book) == titles(carol)
    inside = tmp_path / "archive.zip"  # the same zip under another name: found from its member
    inside.write_bytes(zipped.read_bytes())
    assert read_book(str(inside)).format == "fb2"


def test_fb2_hostile_input_fails_cleanly(tmp_path):
    bomb = tmp_path / "bomb.fb2"
    bomb.write_text(
        '<?xml version="1.0"?><!DOCTYPE FictionBook [<!ENTITY a "aaaaaaaaaa">'
        '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">'
        '<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        "<FictionBook><body><section><title><p>One</p></title><p>Safe text here. &c; &x;</p>"
        "</section></body></FictionBook>",
        encoding="utf-8",
    )
    book = read_book(str(bomb))
    text = " ".join(book.chapters[0].paragraphs)
    assert "Safe text here." in text and "aaaa" not in text and "root:" not in text
    empty = tmp_path / "empty.fb2"
    empty.write_text("<FictionBook><description/></FictionBook>", encoding="utf-8")
    with pytest.raises(BookError, match=r"empty\.fb2: not a valid FB2: no <body>$"):
        read_book(str(empty))


# ==========================================================================
# PDF (pypdf, no Calibre)
# ==========================================================================
def _norm(text: str, unicode: bool) -> str:
    return clean(pdf_text(text, unicode))


def test_pdf_outline_chapters_and_clean_text(files, carol):
    book = read_book(str(files["folder"] / "carol.pdf"))
    unicode = files["pdf_unicode"]
    assert book.format == "pdf"
    assert (book.title, book.authors) == (carol.title, carol.authors)
    assert titles(book) == [_norm(t, unicode) for t in titles(carol)]
    everything = "\n".join(p for c in book.chapters for p in c.paragraphs)
    # running header, footer and page numbers are gone
    assert "CHRISTMAS CAROL —" not in everything and "Page " not in everything
    for got, want in zip(book.chapters, carol.chapters):
        heads, text = _split_title(want)
        assert got.paragraphs[: len(heads)] == tuple(_norm(h, unicode) for h in heads)
        # paragraphs are rebuilt: the first and last paragraphs of the text come back whole
        assert got.paragraphs[len(heads)] == _norm(text[0], unicode)
        assert got.paragraphs[-1] == _norm(text[-1], unicode)
        # nearly all paragraphs are found again (words hyphenated at a line end may differ)
        want_set = {_norm(p, unicode) for p in text}
        found = sum(1 for p in got.paragraphs if p in want_set)
        assert found >= 0.9 * len(text), (got.title, found, len(text))


def test_pdf_without_outline_uses_heading_rules(files, carol):
    book = read_book(str(files["folder"] / "carol-no-outline.pdf"))
    unicode = files["pdf_unicode"]
    assert titles(book) == [_norm(t, unicode) for t in titles(carol)]


def test_pdf_sniffed_and_damaged(files, tmp_path):
    data = (files["folder"] / "carol.pdf").read_bytes()
    renamed = tmp_path / "carol.epub"  # content wins over the extension
    renamed.write_bytes(data)
    assert read_book(str(renamed)).format == "pdf"
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7\n" + os.urandom(2000))
    with pytest.raises(BookError) as info:
        read_book(str(broken))
    assert str(info.value).startswith(f"{broken}: ") and "\n" not in str(info.value)


def test_pdf_encrypted_with_password(tmp_path):
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_encryption(owner_password="owner", user_password="secret")
    pdf.add_page()
    pdf.set_font("Times", size=12)
    pdf.multi_cell(0, 6, "A secret chapter that nobody may read without the password.")
    path = tmp_path / "locked.pdf"
    pdf.output(str(path))
    with pytest.raises(BookError, match=r"locked\.pdf: encrypted PDF"):
        read_book(str(path))


# ==========================================================================
# Markdown
# ==========================================================================
def test_markdown_chapters(carol, tmp_path):
    lines = [f"---\ntitle: {carol.title}\nauthor: {carol.authors[0]}\nlang: en\n---\n"]
    for chapter in carol.chapters:
        _, text = _split_title(chapter)
        lines.append(f"## {chapter.title}\n")
        lines += [p.replace("*", "\\*").replace("_", "\\_") + "\n" for p in text[:5]]
    path = tmp_path / "carol.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    book = read_book(str(path))
    assert book.format == "md"
    assert (book.title, book.authors, book.language) == (carol.title, carol.authors, "en")
    assert titles(book) == titles(carol)
    assert book.chapters[0].paragraphs[1] == _split_title(carol.chapters[0])[1][0]


# ==========================================================================
# Calibre formats
# ==========================================================================
@pytest.mark.parametrize("ext", ["azw3", "docx", "odt", "rtf"])
def test_calibre_formats_keep_chapters(calibre_files, carol, ext):
    book = read_book(str(calibre_files / f"carol.{ext}"))
    assert book.format == ext and book.source == str(calibre_files / f"carol.{ext}")
    assert titles(book) == titles(carol)
    assert (book.title, book.authors) == (carol.title, carol.authors)
    first_text = _split_title(carol.chapters[0])[1][0]
    assert first_text in book.chapters[0].paragraphs
    assert book.chapters[-1].paragraphs[-1] == carol.chapters[-1].paragraphs[-1]


def test_calibre_mobi(calibre_files, carol):
    book = read_book(str(calibre_files / "carol.mobi"))
    assert book.format == "mobi"
    # MOBI 6 keeps the first heading line of each chapter as the TOC label
    assert [c.title for c in book.chapters] == [_split_title(c)[0][0] for c in carol.chapters]
    assert (book.title, book.authors, book.language) == (carol.title, carol.authors, "en")
    assert book.cover is not None
    text = "\n".join(book.chapters[0].paragraphs)
    assert _split_title(carol.chapters[0])[1][1] in text
    assert book.chapters[-1].paragraphs[-1] == carol.chapters[-1].paragraphs[-1]


def test_calibre_sniffing_and_errors(calibre_files, carol, tmp_path):
    docx = (calibre_files / "carol.docx").read_bytes()
    disguised = tmp_path / "carol.txt"  # a DOCX named .txt is still converted as a DOCX
    disguised.write_bytes(docx)
    assert detect_format(docx[:65536], "carol.txt") == "docx"
    book = read_book(str(disguised))
    assert book.format == "docx" and titles(book) == titles(carol)
    epub_as_txt = tmp_path / "epub.txt"
    epub_as_txt.write_bytes(CAROL.read_bytes())
    assert read_book(str(epub_as_txt)).format == "epub"
    for name in ("carol.mobi", "carol.azw3", "carol.odt", "carol.rtf"):
        head = (calibre_files / name).read_bytes()[:65536]
        assert detect_format(head, "x.bin") == name.split(".")[1]
    # a damaged MOBI: Calibre's own complaint, on one line
    bad = tmp_path / "bad.mobi"
    bad.write_bytes((calibre_files / "carol.mobi").read_bytes()[:300])
    with pytest.raises(BookError) as info:
        read_book(str(bad))
    message = str(info.value)
    assert message.startswith(f"{bad}: Calibre's ebook-convert could not convert the MOBI file")
    assert "\n" not in message


def test_missing_calibre_is_named(tmp_path, carol):
    odt = tmp_path / "carol.odt"
    write_odt(carol, odt)
    with dask.config.set({"ebook2audio.ingest.calibre": "/nonexistent/ebook-convert"}):
        with pytest.raises(BookError) as info:
            read_book(str(odt))
    assert str(info.value) == (
        f"{odt}: reading ODT needs Calibre's ebook-convert, which is not installed "
        "(ingest.calibre: /nonexistent/ebook-convert) (Debian/Ubuntu: apt install calibre; "
        "or https://calibre-ebook.com)"
    )
    assert not list(tmp_path.glob("ebook2audio-calibre-*"))


def test_pdf_through_calibre_when_configured(files):
    _calibre()
    with dask.config.set({"ebook2audio.ingest.pdf": "calibre"}):
        book = read_book(str(files["folder"] / "carol.pdf"))
    assert book.format == "pdf"
    assert "Marley was dead" in " ".join(p for c in book.chapters for p in c.paragraphs)


# ==========================================================================
# End to end: FB2 and MOBI to M4B
# ==========================================================================
@pytest.mark.slow
def test_cli_converts_fb2_and_mobi(tmp_path, carol):
    fb2 = tmp_path / "short.fb2"
    write_fb2(carol, fb2, keep=1)  # a paragraph per scene section: short chapters
    mobi = tmp_path / "short-mobi.mobi"
    proc = _ebook_convert(fb2, mobi)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    out = tmp_path / "out"
    result = run_cli(
        "convert",
        str(fb2),
        str(mobi),
        "-o",
        str(out),
        "--engine",
        "espeak",
        "--chapters",
        "5",
        "--cache",
        str(tmp_path / "cache"),
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr
    full, first_line = titles(carol)[4], _split_title(carol.chapters[4])[0][0]
    for stem, allowed in (("short", {full}), ("short-mobi", {full, first_line})):
        report = load_report(out / f"{stem}.report.json")
        assert len(report["chapters"]) == 1 and report["chapters"][0]["title"] in allowed
        check_m4b_against_report(out / f"{stem}.m4b", report, expect_cover=True)


def test_formats_listed():
    assert {"fb2", "pdf", "md", "mobi", "azw3", "docx", "rtf", "odt"} <= set(FORMATS)
