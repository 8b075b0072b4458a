"""A plain EPUB 3 made from a book read from TXT, HTML, FB2, PDF or Markdown.

A read-along EPUB needs content documents to carry the Media Overlays; books
that are not EPUBs have none, so :func:`generate_epub` writes them: one XHTML 5
document per chapter (front and back matter included, marked as such), a
navigation document listing every chapter, the metadata (title, authors,
language, identifier, modification time) and the cover.  The text is the
book's paragraphs, one ``<p>`` each, unchanged but for XML escaping, so the
sentences the plan speaks are found in it word for word.  The result is valid
EPUB 3 (epubcheck: no errors, no warnings); the overlays are then added by
:func:`ebook2audio_dask.readalong.overlays.write_readalong`.
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
import zipfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from ..audio.cover import prepare_cover
from ..errors import BookError
from ..model import Book, Chapter, Cover
from ..text.chunk import heading_paragraphs
from ..text.normalize import normalize_text

__all__ = ["CONTENT_DIR", "generate_epub", "text_direction"]

#: Folder of the package document and the content inside the archive.
CONTENT_DIR = "OEBPS"

#: Primary language subtags written right to left.
_RTL_LANGUAGES = frozenset(
    {"ar", "arc", "ckb", "dv", "fa", "he", "iw", "ji", "ks", "ps", "sd", "syr", "ug", "ur", "yi"}
)
#: Script subtags written right to left (they override the language's default).
_RTL_SCRIPTS = frozenset({"arab", "hebr", "syrc", "thaa", "nkoo", "adlm", "rohg", "mand", "samr"})

#: A well-formed BCP 47 tag, near enough for the package document's checks.
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8})*")

#: Characters XML 1.0 does not allow (C0 controls but tab/newline/CR,
#: surrogates, U+FFFE/U+FFFF).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

#: epub:type of a chapter's ``<body>``, by :attr:`Chapter.kind`.
_MATTER = {"front": "frontmatter", "body": "bodymatter", "back": "backmatter"}

#: File suffix -> media type of the covers :func:`prepare_cover` gives.
_COVER_TYPES = {".jpeg": "image/jpeg", ".jpg": "image/jpeg", ".png": "image/png"}

_XHTML_HEAD = (
    '<?xml version="1.0" encoding="utf-8"?>\n<!DOCTYPE html>\n'
    '<html xmlns="http://www.w3.org/1999/xhtml" xmlns:epub="http://www.idpf.org/2007/ops" '
)


def text_direction(language: str | None) -> str:
    """``"rtl"`` for a language written right to left, else ``"ltr"``.

    Parameters
    ----------
    language : str or None
        A BCP 47 tag (``"ar"``, ``"fa-IR"``, ``"az-Arab"``); a script subtag
        decides over the language (``"ku-Latn"`` is left to right).

    Returns
    -------
    str
        ``"rtl"`` or ``"ltr"``.
    """
    parts = (language or "").replace("_", "-").casefold().split("-")
    for part in parts[1:]:
        if len(part) == 4 and part.isalpha():
            return "rtl" if part in _RTL_SCRIPTS else "ltr"
    return "rtl" if parts[0] in _RTL_LANGUAGES else "ltr"


def _language(book: Book) -> str:
    """The book's language as a tag the package document accepts; ``"und"`` when unknown."""
    tag = (book.language or "").strip().replace("_", "-")
    return tag if _LANGUAGE_TAG.fullmatch(tag) else "und"


def _text(value: str) -> str:
    """*value* as XML character data: invalid characters dropped, markup escaped."""
    return escape(_NOT_XML.sub("", value))


def _attr(value: str) -> str:
    """*value* as a quoted XML attribute value."""
    return quoteattr(_NOT_XML.sub("", value))


def _heading_count(chapter: Chapter) -> int:
    """How many of *chapter*'s leading paragraphs spell its title, as the plan decides it.

    The plan (:func:`~ebook2audio_dask.text.chunk.plan_book`) judges the
    normalised, non-empty paragraphs; the count is mapped back onto the
    chapter's own paragraphs (empty ones in between count too).
    """
    kept = [(n, p) for n, p in enumerate(map(normalize_text, chapter.paragraphs[:16])) if p]
    heads = heading_paragraphs([p for _, p in kept], normalize_text(chapter.title))
    return kept[heads - 1][0] + 1 if heads else 0


def _chapter_document(chapter: Chapter, title: str, language: str, direction: str) -> str:
    """The XHTML 5 content document of one chapter."""
    heads = _heading_count(chapter)
    if heads:  # the chapter's own heading lines are its title: one <h1>, a line each
        heading = "<br/>".join(_text(p) for p in chapter.paragraphs[:heads])
    else:
        heading = _text(chapter.title)
    body = [f"<h1>{heading}</h1>"] if heading else []
    body += [f"<p>{_text(p)}</p>" for p in chapter.paragraphs[heads:]]
    section = ' epub:type="chapter"' if chapter.kind == "body" else ""
    lines = "\n".join(body)
    return _xhtml(
        title,
        language,
        direction,
        f' epub:type="{_MATTER.get(chapter.kind, "bodymatter")}"',
        f"<section{section}>\n{lines}\n</section>\n",
    )


def _xhtml(title: str, language: str, direction: str, body_attrs: str, content: str) -> str:
    """An XHTML 5 document: *title*, the language (and ``dir="rtl"``), the body's *content*."""
    rtl = ' dir="rtl"' if direction == "rtl" else ""
    return (
        f'{_XHTML_HEAD}xml:lang="{language}" lang="{language}"{rtl}>\n'
        f"<head>\n<title>{_text(title)}</title>\n</head>\n"
        f"<body{body_attrs}>\n{content}</body>\n</html>\n"
    )


def _nav_document(
    book_title: str, titles: Sequence[str], hrefs: Sequence[str], body: str | None, language: str,
    direction: str,
) -> str:  # fmt: skip
    """The navigation document: the table of contents (every chapter) and landmarks."""
    toc = "\n".join(
        f'<li><a href="{href}">{_text(title)}</a></li>' for title, href in zip(titles, hrefs)
    )
    landmarks = ""
    if body is not None:  # where the body starts (a landmark must name a spine item)
        landmarks = (
            '<nav epub:type="landmarks" id="landmarks" hidden="hidden">\n<h2>Landmarks</h2>\n'
            f'<ol>\n<li><a epub:type="bodymatter" href="{body}">Start of Content</a></li>\n'
            "</ol>\n</nav>\n"
        )
    return _xhtml(
        book_title,
        language,
        direction,
        "",
        f'<nav epub:type="toc" id="toc">\n<h1>{_text(book_title)}</h1>\n<ol>\n{toc}\n</ol>\n'
        f"</nav>\n{landmarks}",
    )


def _identifier(book: Book, title: str) -> str:
    """A stable ``urn:uuid:`` for the book: the same source and title give the same one."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"ebook2audio:{book.source}\n{title}").urn


def _package_document(
    book: Book, title: str, language: str, direction: str, items: Sequence[str],
    spine: Sequence[str], cover: tuple[str, str] | None,
) -> str:  # fmt: skip
    """The package document (``content.opf``)."""
    modified = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    meta = [
        f'<dc:identifier id="bookid">{_identifier(book, title)}</dc:identifier>',
        f"<dc:title>{_text(title)}</dc:title>",
    ]
    authors = [a for a in (" ".join(_NOT_XML.sub("", a).split()) for a in book.authors) if a]
    meta += [
        f'<dc:creator id="creator{n}">{escape(a)}</dc:creator>' for n, a in enumerate(authors, 1)
    ]
    meta += [
        f"<dc:language>{language}</dc:language>",
        f'<meta property="dcterms:modified">{modified}</meta>',
    ]
    manifest = [
        '<item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>'
    ]
    if cover is not None:
        meta.append('<meta name="cover" content="cover-image"/>')
        manifest.append(
            f'<item id="cover-image" href="{cover[0]}" media-type="{cover[1]}" '
            'properties="cover-image"/>'
        )
    manifest += [
        f'<item id="{ident}" href="{href}" media-type="application/xhtml+xml"/>'
        for ident, href in zip(spine, items)
    ]
    progression = ' page-progression-direction="rtl"' if direction == "rtl" else ""
    newline = "\n"
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<package xmlns="http://www.idpf.org/2007/opf" version="3.0" '
        f'unique-identifier="bookid" xml:lang="{language}">\n'
        f'<metadata xmlns:dc="http://purl.org/dc/elements/1.1/">\n{newline.join(meta)}\n'
        f"</metadata>\n<manifest>\n{newline.join(manifest)}\n</manifest>\n"
        f"<spine{progression}>\n"
        + "".join(f'<itemref idref="{ident}"/>\n' for ident in spine)
        + "</spine>\n</package>\n"
    )


_CONTAINER = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">\n'
    f'<rootfiles><rootfile full-path="{CONTENT_DIR}/content.opf" '
    'media-type="application/oebps-package+xml"/></rootfiles>\n</container>\n'
)


def _cover_file(cover: Cover) -> tuple[bytes, str] | None:
    """The cover as a JPEG or PNG a reader shows (bytes, media type), or None.

    :func:`~ebook2audio_dask.audio.cover.prepare_cover` recognises the image by
    its content and converts other formats, so the declared media type always
    matches the bytes.
    """
    with tempfile.TemporaryDirectory(prefix="e2a-cover-") as tmp:
        path = prepare_cover(cover.data, cover.media_type, Path(tmp))
        if path is None:
            return None
        return path.read_bytes(), _COVER_TYPES[path.suffix.lower()]


def generate_epub(book: Book, target: str, *, cover: Cover | None = None) -> list[str]:
    """Write *book* as a plain EPUB 3 at *target*; return each chapter's document.

    Parameters
    ----------
    book : Book
        The book, read with its front and back matter
        (``read_book(src, include_matter=True)``): every chapter becomes a
        content document, matter marked ``frontmatter``/``backmatter``.
    target : str
        Local path of the EPUB to write.  It is written to a temporary file
        in the same folder, then renamed: *target* is never half-written.
    cover : Cover, optional
        The cover image; the book's own (:attr:`Book.cover`) when not given.
        One that cannot be decoded is left out with a logged warning.

    Returns
    -------
    list of str
        The archive path of each chapter's content document
        (``"OEBPS/text/ch001.xhtml"``), in ``book.chapters`` order.

    Raises
    ------
    BookError
        The book has no chapters.
    OSError
        *target* cannot be written (nothing is left behind).
    """
    if not book.chapters:
        raise BookError(book.source, "no chapters to write into a read-along EPUB")
    language = _language(book)
    direction = text_direction(language)
    title = " ".join(_NOT_XML.sub("", book.title).split()) or Path(book.source).stem or "Untitled"
    width = max(3, len(str(len(book.chapters))))
    idents = [f"ch{n:0{width}d}" for n in range(1, len(book.chapters) + 1)]
    hrefs = [f"text/{ident}.xhtml" for ident in idents]
    titles = [
        " ".join(_NOT_XML.sub("", c.title).split()) or f"Chapter {n}"
        for n, c in enumerate(book.chapters, 1)
    ]
    body = next((h for h, c in zip(hrefs, book.chapters) if c.kind == "body"), None)
    cover = cover if cover is not None else book.cover
    image = _cover_file(cover) if cover is not None else None
    cover_item = None
    if image is not None:
        cover_item = ("images/cover" + (".png" if image[1] == "image/png" else ".jpg"), image[1])
    members = [
        ("META-INF/container.xml", _CONTAINER.encode()),
        (
            f"{CONTENT_DIR}/content.opf",
            _package_document(book, title, language, direction, hrefs, idents, cover_item).encode(),
        ),
        (
            f"{CONTENT_DIR}/nav.xhtml",
            _nav_document(title, titles, hrefs, body, language, direction).encode(),
        ),
    ]
    if image is not None and cover_item is not None:
        members.append((f"{CONTENT_DIR}/{cover_item[0]}", image[0]))
    for chapter, href, name in zip(book.chapters, hrefs, titles):
        document = _chapter_document(chapter, name, language, direction)
        members.append((f"{CONTENT_DIR}/{href}", document.encode()))
    _write_zip(target, members)
    return [f"{CONTENT_DIR}/{href}" for href in hrefs]


def _write_zip(target: str, members: Sequence[tuple[str, bytes]]) -> None:
    """Write the EPUB archive (``mimetype`` first, stored) to a temporary file, then rename it."""
    folder, name = os.path.split(os.path.abspath(target))
    tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
    try:  # "x": a new file, with the permissions the umask gives (mkstemp's are 0600)
        with open(tmp, "xb") as fh, zipfile.ZipFile(fh, "w") as archive:
            archive.writestr(
                zipfile.ZipInfo("mimetype"), b"application/epub+zip", zipfile.ZIP_STORED
            )
            for name, data in members:
                archive.writestr(name, data, zipfile.ZIP_DEFLATED)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
