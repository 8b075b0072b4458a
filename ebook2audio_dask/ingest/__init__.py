"""Ingest (parse) stage: read an ebook into a :class:`~ebook2audio_dask.model.Book`.

Supported inputs are EPUB 2 / EPUB 3, plain text (``.txt``) and single-file
HTML.  The format is recognised from the content, not only the file name:
a zip archive is read as EPUB, text that looks like HTML as HTML, other
text as plain text, and anything else is rejected.

Every problem with an input is reported as :class:`~ebook2audio_dask.errors.BookError`
with a one-line message naming the file.  The rules used to find chapters
and to recognise front/back matter are described in ``docs/ingest.md``.

Examples
--------
>>> from ebook2audio_dask.ingest import read_book
>>> book = read_book("books/christmas-carol.epub")      # doctest: +SKIP
>>> [c.title for c in book.chapters][:2]                # doctest: +SKIP
['STAVE ONE. MARLEY’S GHOST.', 'STAVE TWO. THE FIRST OF THE THREE SPIRITS.']
"""

from __future__ import annotations

import codecs
import logging
import posixpath
import re

import fsspec

from ..errors import BookError, StorageError
from ..model import Book
from ..storage.fs import options_for
from ..storage.retry import with_retries
from ._sections import assemble

__all__ = ["read_book", "detect_format", "FORMATS"]

log = logging.getLogger(__name__)

#: Formats :func:`read_book` understands.
FORMATS = ("epub", "txt", "html")

_HTML_EXTS = (".html", ".htm", ".xhtml", ".xht")
_HTML_SNIFF_RE = re.compile(rb"<(?:!doctype\s+html|html[\s>]|head[\s>]|body[\s>])", re.IGNORECASE)
_TAG_SNIFF_RE = re.compile(rb"<(?:p|div|h[1-6]|br|span)[\s/>]", re.IGNORECASE)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")


def _name(url: str) -> str:
    path = str(url).split("?", 1)[0].rstrip("/")
    return posixpath.basename(path.replace("\\", "/"))


def _stem(url: str) -> str:
    name = _name(url)
    stem, _ext = posixpath.splitext(name)
    return stem or name or str(url)


def _decode_text(data: bytes) -> str | None:
    """Decode *data* as text, or return ``None`` when it is binary."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            return None
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        try:
            return data.decode("utf-32")
        except UnicodeDecodeError:
            return None
    if b"\x00" in data:
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")
        if text.count("\ufffd") > max(8, len(text) // 200):
            text = data.decode("latin-1")
    sample = text[:65536]
    controls = sum(1 for c in sample if ord(c) < 32 and c not in "\t\n\r\f\v\x1a")
    controls += sum(1 for c in sample if 0x7F <= ord(c) < 0xA0)
    if controls > max(2, len(sample) // 100):
        return None
    return text


def detect_format(data: bytes, name: str = "") -> str | None:
    """Recognise an ebook's format from its bytes.

    Parameters
    ----------
    data : bytes
        The file's content (the first few kilobytes are enough for text).
    name : str
        File name; only used to break ties (``.html`` text with a few tags).

    Returns
    -------
    {"epub", "html", "txt"} or None
        ``None`` when the content is not a supported ebook.
    """
    if data.startswith(_ZIP_MAGIC):
        return "epub"
    if name.lower().endswith((".epub", ".kepub")):
        # an EPUB is always a zip: text inside a .epub is a broken download, not a book
        return None
    head = data[:8192]
    if _decode_text(head) is None:
        return None
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if _HTML_SNIFF_RE.search(head) or (stripped.startswith(b"<?xml") and b"<html" in head.lower()):
        return "html"
    if name.lower().endswith(_HTML_EXTS) and _TAG_SNIFF_RE.search(head):
        return "html"
    return "txt"


def _read_bytes(url: str, storage_options: dict | None) -> bytes:
    def read() -> bytes:
        with fsspec.open(url, "rb", **options_for(url, storage_options)) as fh:
            return fh.read()

    try:  # transient storage errors (throttling, resets) are retried
        return with_retries(read, url=url, action="read the book", translate=False)
    except StorageError as exc:
        raise BookError(url, str(exc).removeprefix(f"{url}: ")) from exc
    except FileNotFoundError as exc:
        raise BookError(url, "file not found") from exc
    except IsADirectoryError as exc:
        raise BookError(url, "is a directory, not an ebook") from exc
    except PermissionError as exc:
        raise BookError(url, "permission denied") from exc
    except (OSError, ValueError, ImportError) as exc:
        raise BookError(url, f"cannot read file: {exc}") from exc


def read_book(url, *, include_matter: bool = False, storage_options: dict | None = None) -> Book:
    """Read an ebook (EPUB, plain text or HTML) into a :class:`Book`.

    Parameters
    ----------
    url : str or os.PathLike
        Local path or fsspec URL (``s3://bucket/book.epub``...).
    include_matter : bool, default False
        Also return front matter (title page, contents, preface,
        Gutenberg header...) and back matter (colophon, licence,
        glossary...) as chapters, with ``kind`` ``"front"``/``"back"``.
        By default only body chapters are returned.
    storage_options : dict, optional
        Passed to :func:`fsspec.open` (credentials, endpoint...).

    Returns
    -------
    Book
        Metadata and chapters numbered 1..N in reading order.

    Raises
    ------
    BookError
        The file cannot be read, is not a supported ebook, is a damaged
        EPUB, or holds no readable text.  The message names the file.
    """
    source = str(url)
    data = _read_bytes(source, storage_options)
    if not data.strip():
        raise BookError(source, "no readable text")
    fmt = detect_format(data, _name(source))
    if fmt is None:
        if _name(source).lower().endswith((".epub", ".kepub")):
            raise BookError(source, "not a valid EPUB: not a zip archive")
        raise BookError(source, "not an ebook (unrecognised content)")
    try:
        if fmt == "epub":
            from .epub import read_epub

            content = read_epub(data, source)
            cover = content.cover
        elif fmt == "html":
            from .html import read_html

            content = read_html(data, source)
            cover = None
        else:
            from .txt import read_txt

            text = _decode_text(data)
            if text is None:
                raise BookError(source, "not an ebook (unrecognised content)")
            content = read_txt(text, source)
            cover = None
        title = content.title or _stem(source)
        chapters = assemble(
            content.sections,
            authors=content.authors,
            include_matter=include_matter,
        )
    except BookError:
        raise
    except RecursionError as exc:
        raise BookError(source, f"cannot parse {fmt.upper()}: document nested too deeply") from exc
    except Exception as exc:  # a parser bug must not escape as a raw error
        log.debug("unexpected error while reading %s", source, exc_info=True)
        raise BookError(source, f"cannot parse {fmt.upper()}: {type(exc).__name__}: {exc}") from exc
    if not chapters:
        raise BookError(source, "no readable text")
    return Book(
        source=source,
        title=title,
        authors=tuple(content.authors),
        language=content.language,
        chapters=chapters,
        cover=cover,
        format=fmt,
    )
